//! The workbench in a real browser: the system's headless Chromium, driven over the DevTools
//! protocol, picks a spoken clip in the classify page, waits for the rendered decision, then
//! labels it `angry` with the key 2 on the review page; labels.csv must hold that row.
//! Skips when Chromium is missing, unless CAMXUC_REQUIRE_BROWSER=1 (then it fails).

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use headless_chrome::{Browser, LaunchOptions};

mod common;
use common::serve::{speech_clip, Server};

/// The system Chromium (never downloaded).
fn chromium_or_skip() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CAMXUC_REQUIRE_BROWSER").is_none_or(|v| v != "1"),
            "CAMXUC_REQUIRE_BROWSER=1 but there is no /usr/bin/chromium (apt-get install chromium)"
        );
        eprintln!("SKIPPED: no /usr/bin/chromium (apt-get install chromium)");
    }
    found
}

#[test]
fn pick_a_clip_see_its_decision_and_label_it_angry_with_the_keyboard() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let Some(clip) = speech_clip(tmp.path()) else {
        return;
    };
    let data = tmp.path().join("data");
    // Every clip is routed, so the one the browser uploads lands in the review queue.
    let s = Server::start(&models, &data, &["--threshold", "0.99"]);

    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium))
            .sandbox(false)
            .window_size(Some((1280, 900)))
            .idle_browser_timeout(Duration::from_secs(120))
            .args(vec![
                OsStr::new("--disable-gpu"),
                OsStr::new("--no-first-run"),
            ])
            .build()
            .unwrap(),
    )
    .expect("start headless Chromium");
    let tab = browser.new_tab().unwrap();

    // Classify page: pick the file, wait for the rendered decision.
    tab.navigate_to(&s.url("/")).unwrap();
    tab.wait_until_navigated().unwrap();
    tab.wait_for_element("#file-input")
        .unwrap()
        .set_input_files(&[clip.to_str().unwrap()])
        .unwrap();
    let decision = tab
        .wait_for_element_with_custom_timeout(
            ".clip-card.decided .decision",
            Duration::from_secs(90),
        )
        .unwrap_or_else(|e| panic!("no decision rendered: {e}; server stderr: {}", s.stderr()));
    let file = decision
        .get_attribute_value("data-file")
        .unwrap()
        .expect("the decision names its stored file");
    assert!(file.ends_with("-cau-noi.wav"), "{file}");
    let text = decision.get_inner_text().unwrap();
    assert!(
        ["bình tĩnh", "tức giận", "hoảng loạn"]
            .iter()
            .any(|l| text.contains(l)),
        "the Vietnamese label is shown: {text}"
    );
    assert!(
        tab.find_element(".decision audio").is_ok(),
        "an audio player"
    );

    // Review page: the clip is the current item; 2 labels it angry.
    tab.navigate_to(&s.url("/review")).unwrap();
    tab.wait_until_navigated().unwrap();
    tab.wait_for_element_with_custom_timeout(
        &format!(".review-item.current[data-file=\"{file}\"]"),
        Duration::from_secs(20),
    )
    .expect("the routed clip is in the review queue");
    tab.press_key("2").unwrap();

    let labels = data.join("labels.csv");
    let t0 = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&labels).unwrap_or_default();
        if text.contains(",angry,") || t0.elapsed() > Duration::from_secs(20) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("clips/{file},angry,"))),
        "labels.csv: {text:?}; server stderr: {}",
        s.stderr()
    );
    // The page took it off the queue.
    tab.wait_for_element_with_custom_timeout(".empty", Duration::from_secs(10))
        .expect("the queue is empty after labelling its only clip");
}
