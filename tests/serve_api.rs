//! `camxuc serve` end to end through the real binary and its JSON API: health, classify a
//! spoken clip, label it into an owner-only labels.csv that adapt's reader accepts, restart
//! with the queue and labels kept, and every kind of bad input answered with a JSON error
//! while the server goes on.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::serve::{speech_clip, Server};

const BIN: &str = env!("CARGO_BIN_EXE_camxuc");

/// Status and JSON body of a response (4xx/5xx included).
fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let ct = resp.content_type().to_string();
    let body = resp.into_string().unwrap();
    assert!(ct.starts_with("application/json"), "{status} {ct}: {body}");
    (status, serde_json::from_str(&body).unwrap())
}

/// POST `bytes` as the multipart field `file` named `name`.
fn upload(url: &str, name: &str, bytes: &[u8]) -> (u16, Value) {
    let boundary = "camxuc-test-boundary-7f3a";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    answer(
        ureq::post(url)
            .set(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .send_bytes(&body),
    )
}

fn label(s: &Server, file: &str, label: &str) -> (u16, Value) {
    answer(
        ureq::post(&s.url("/api/label"))
            .send_json(serde_json::json!({ "file": file, "label": label })),
    )
}

fn review_files(s: &Server) -> Vec<String> {
    let (code, v) = answer(ureq::get(&s.url("/api/review")).call());
    assert_eq!(code, 200);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert!(
                i["decision"]["label"].is_string() && i["reason"].is_string(),
                "{i}"
            );
            i["file"].as_str().unwrap().to_string()
        })
        .collect()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn error_text(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error key: {v}"))
}

#[test]
fn classify_label_restart_and_bad_input() {
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let Some(clip) = speech_clip(tmp.path()) else {
        return;
    };
    let audio = std::fs::read(&clip).unwrap();
    // Deep, so that a `../../` name could reach folders the test can look at.
    let data = tmp.path().join("a/b/data");
    // A routing threshold no clip reaches: every clip is routed into the review queue.
    let s = Server::start(&models, &data, &["--threshold", "0.99"]);

    let (code, health) = answer(ureq::get(&s.url("/api/health")).call());
    assert_eq!(code, 200);
    assert_eq!(health["status"], "ok");
    assert!(
        health["model"].as_str().unwrap().contains("default"),
        "{health}"
    );

    // A spoken clip → one Decision whose `file` is the stored name.
    let (code, d) = upload(&s.url("/api/classify"), "cau-noi.wav", &audio);
    assert_eq!(code, 200, "{d}; stderr: {}", s.stderr());
    let first = d["file"].as_str().unwrap().to_string();
    assert!(first.ends_with("-cau-noi.wav"), "{first}");
    assert!(["calm", "angry", "panic"].contains(&d["label"].as_str().unwrap()));
    assert_eq!(d["schema_version"], camxuc::DECISION_SCHEMA_VERSION);
    assert!(d["probs"].is_object() && d["evidence"]["z"].is_object());
    assert_eq!(d["route"], "rules", "threshold 0.99 routes it: {d}");
    let stored = data.join("clips").join(&first);
    assert_eq!(std::fs::read(&stored).unwrap(), audio);
    // The page's audio player gets the clip back.
    let r = ureq::get(&s.url(&format!("/api/clips/{first}")))
        .call()
        .unwrap();
    assert_eq!(r.content_type(), "audio/wav");

    // With segments: an array of Decisions with their time spans.
    let (code, segs) = upload(&s.url("/api/classify?segments=true"), "long.wav", &audio);
    assert_eq!(code, 200, "{segs}");
    let segs = segs.as_array().unwrap();
    assert!(!segs.is_empty());
    assert!(segs[0]["segment"]["end_s"].as_f64().unwrap() > 0.0);
    let second = segs[0]["file"].as_str().unwrap().to_string();

    // A name with path components is stored inside clips/ under a generated name.
    let (code, evil) = upload(&s.url("/api/classify"), "../../evil.wav", &audio);
    assert_eq!(code, 200, "{evil}");
    let third = evil["file"].as_str().unwrap().to_string();
    assert!(!third.contains('/') && !third.contains(".."), "{third}");
    assert!(data.join("clips").join(&third).is_file());
    for dir in [
        &data,
        &tmp.path().join("a/b"),
        &tmp.path().join("a"),
        &tmp.path().to_path_buf(),
    ] {
        assert!(
            !dir.join("evil.wav").exists(),
            "{} got evil.wav",
            dir.display()
        );
    }

    assert_eq!(
        review_files(&s),
        vec![first.clone(), second.clone(), third.clone()]
    );

    // Label the first one: one row in an owner-only labels.csv, gone from the queue.
    let (code, v) = label(&s, &first, "angry");
    assert_eq!(code, 200, "{v}");
    let labels_csv = data.join("labels.csv");
    let text = std::fs::read_to_string(&labels_csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "path,label,speaker,labelled_at");
    assert!(
        lines[1].starts_with(&format!("clips/{first},angry,,")),
        "{text}"
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&labels_csv), 0o600);
        assert_eq!(mode(&data.join("decisions.jsonl")), 0o600);
        assert_eq!(mode(&data.join("clips")), 0o700);
        assert_eq!(mode(&stored), 0o600);
    }
    assert_eq!(review_files(&s), vec![second.clone(), third.clone()]);

    // Bad input: JSON errors naming the problem, and the server goes on.
    let (code, v) = upload(&s.url("/api/classify"), "empty.wav", b"");
    assert_eq!(code, 400);
    assert!(error_text(&v).contains("empty"), "{v}");
    let (code, v) = upload(
        &s.url("/api/classify"),
        "notes.wav",
        b"these are not audio bytes at all",
    );
    assert_eq!(code, 400);
    assert!(error_text(&v).contains("not a readable audio file"), "{v}");
    assert!(
        !error_text(&v).contains(data.to_str().unwrap()),
        "no server paths: {v}"
    );
    let (code, v) = answer(
        ureq::post(&s.url("/api/classify"))
            .set("Content-Type", "text/plain")
            .send_string("hello"),
    );
    assert_eq!(code, 400, "{v}");
    let (code, v) = label(&s, &second, "happy");
    assert_eq!(code, 400);
    assert!(error_text(&v).contains("unknown label"), "{v}");
    let (code, v) = label(&s, "1700000000000-never-uploaded.wav", "calm");
    assert_eq!(code, 404);
    assert!(error_text(&v).contains("no such clip"), "{v}");
    let (code, _) = label(&s, "../decisions.jsonl", "calm");
    assert_eq!(code, 404);
    let (code, v) = answer(ureq::get(&s.url("/api/clips/..%2Fdecisions.jsonl")).call());
    assert_eq!(code, 404, "{v}");
    let (code, v) = answer(
        ureq::post(&s.url("/api/label"))
            .set("Content-Type", "application/json")
            .send_string("{not json"),
    );
    assert_eq!(code, 400, "{v}");
    let (code, v) = label(&s, &first, "calm");
    assert_eq!(code, 409, "labelled already: {v}");
    // Failed uploads are not kept (adapt --unlabelled reads the folder).
    assert_eq!(std::fs::read_dir(data.join("clips")).unwrap().count(), 3);
    let (code, _) = answer(ureq::get(&s.url("/api/health")).call());
    assert_eq!(code, 200, "still serving");
    assert!(!s.stderr().contains("panicked"), "{}", s.stderr());

    // A crash and a restart: the labels and the queue come back.
    s.kill();
    let s = Server::start(&models, &data, &["--threshold", "0.99"]);
    assert_eq!(review_files(&s), vec![second.clone(), third.clone()]);
    // The classify page lists what was classified before, newest first.
    let (code, recent) = answer(ureq::get(&s.url("/api/decisions")).call());
    assert_eq!(code, 200);
    let items = recent["items"].as_array().unwrap();
    let files: Vec<&str> = items.iter().map(|i| i["file"].as_str().unwrap()).collect();
    assert_eq!(files, vec![third.as_str(), second.as_str(), first.as_str()]);
    assert_eq!(items[1]["decisions"].as_array().unwrap().len(), segs.len());
    let (code, _) = label(&s, &first, "panic");
    assert_eq!(code, 409, "the label survived the restart");
    let (code, v) = answer(ureq::post(&s.url("/api/label")).send_json(
        serde_json::json!({ "file": third, "label": "calm", "speaker": "line\nbreak" }),
    ));
    assert_eq!(code, 400, "{v}");
    let (code, v) =
        answer(ureq::post(&s.url("/api/label")).send_json(
            serde_json::json!({ "file": third, "label": "calm", "speaker": "caller-7" }),
        ));
    assert_eq!(code, 200, "{v}");
    assert_eq!(review_files(&s), vec![second.clone()]);
    drop(s);

    // adapt's reader takes labels.csv as a labelled manifest, paths resolved inside data/.
    let m =
        camxuc::data::manifest::Manifest::load(&labels_csv, &camxuc::LabelSet::default()).unwrap();
    let rows: Vec<(String, String)> = m
        .rows
        .iter()
        .map(|r| {
            (
                r.path.file_name().unwrap().to_string_lossy().into(),
                r.label.clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (first.clone(), "angry".into()),
            (third.clone(), "calm".into())
        ]
    );
    assert!(m.rows.iter().all(|r| r.path.is_file()));
    assert_eq!(m.rows[1].speaker.as_deref(), Some("caller-7"));
}

#[test]
fn uploads_over_the_limit_are_refused_with_413_and_cut_uploads_leave_nothing() {
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&models, &data, &["--max-upload-mb", "1"]);
    let big = vec![7u8; 1024 * 1024 + 4096];
    let (code, v) = upload(&s.url("/api/classify"), "big.wav", &big);
    assert_eq!(code, 413, "{v}");
    assert!(error_text(&v).contains("1 MB"), "{v}");
    assert_eq!(std::fs::read_dir(data.join("clips")).unwrap().count(), 0);

    // A client that goes away in the middle of an upload leaves nothing behind.
    {
        use std::io::Write;
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        let b = "cut-boundary";
        let head = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.wav\"\r\n\r\n"
        );
        write!(
            tcp,
            "POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={b}\r\nContent-Length: 500000\r\n\r\n{head}"
        )
        .unwrap();
        tcp.write_all(&[1u8; 100_000]).unwrap();
        tcp.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(
            std::fs::read_dir(data.join("clips")).unwrap().count(),
            1,
            "the upload is being stored"
        );
    }
    let t0 = std::time::Instant::now();
    while std::fs::read_dir(data.join("clips")).unwrap().count() > 0
        && t0.elapsed() < std::time::Duration::from_secs(5)
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_dir(data.join("clips")).unwrap().count(),
        0,
        "the cut upload was removed"
    );
    let (code, _) = answer(ureq::get(&s.url("/api/health")).call());
    assert_eq!(code, 200, "still serving");
}

#[test]
fn a_non_loopback_address_needs_allow_remote() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--port", "0", "--listen", "0.0.0.0", "--data"])
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing listened");
    assert!(
        !tmp.path().join("data").exists(),
        "refused before touching --data"
    );
}

#[test]
fn adapt_on_the_collected_labels_and_accept_the_new_model() {
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::small_corpus_of(tmp.path(), 2, 5, 5);
    let m =
        camxuc::data::manifest::Manifest::load(&manifest, &camxuc::LabelSet::default()).unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&models, &data, &[]);

    // Nothing labelled yet: adapt says why it cannot run.
    let (code, v) = answer(ureq::post(&s.url("/api/adapt")).call());
    assert_eq!(code, 400, "{v}");

    for row in &m.rows {
        let bytes = std::fs::read(&row.path).unwrap();
        let name = row.path.file_name().unwrap().to_string_lossy().to_string();
        let (code, d) = upload(&s.url("/api/classify"), &name, &bytes);
        assert_eq!(code, 200, "{d}");
        let (code, v) = label(&s, d["file"].as_str().unwrap(), &row.label);
        assert_eq!(code, 200, "{v}");
    }
    let (code, counts) = answer(ureq::get(&s.url("/api/labels")).call());
    assert_eq!(code, 200);
    assert_eq!(counts["total"], m.rows.len());

    let (code, v) = answer(ureq::post(&s.url("/api/adapt")).call());
    assert_eq!(code, 200, "{v}; stderr: {}", s.stderr());
    let name = v["model"].as_str().unwrap().to_string();
    assert!(name.starts_with("adapted-"), "{v}");
    let report = &v["report"];
    assert_eq!(report["n_labelled"], m.rows.len());
    assert!(report["before"]["macro_f1"].is_number(), "{report}");
    assert!(report["after"]["macro_f1"].is_number(), "{report}");
    let dir = data.join("models").join(&name);
    assert!(dir.join("model.json").is_file());

    // Not used until accepted.
    let (_, health) = answer(ureq::get(&s.url("/api/health")).call());
    assert!(!health["model"].as_str().unwrap().contains(&name));
    let (code, _) = answer(
        ureq::post(&s.url("/api/adapt/accept"))
            .send_json(serde_json::json!({"model": "adapted-0"})),
    );
    assert_eq!(code, 404);
    let (code, v) = answer(
        ureq::post(&s.url("/api/adapt/accept")).send_json(serde_json::json!({"model": name})),
    );
    assert_eq!(code, 200, "{v}");
    let (_, health) = answer(ureq::get(&s.url("/api/health")).call());
    assert!(
        health["model"].as_str().unwrap().ends_with(&name),
        "{health}"
    );
    let bytes = std::fs::read(&m.rows[0].path).unwrap();
    let (code, d) = upload(&s.url("/api/classify"), "again.wav", &bytes);
    assert_eq!(code, 200, "the adapted model classifies: {d}");
}

#[test]
fn the_report_page_serves_the_eval_report_folder_and_nothing_outside_it() {
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&models, &data, &[]);
    let (code, v) = answer(ureq::get(&s.url("/api/report")).call());
    assert_eq!(code, 200);
    assert_eq!(v["available"], false, "{v}");
    drop(s);

    let report = tmp.path().join("report");
    std::fs::create_dir_all(report.join("figures")).unwrap();
    std::fs::write(report.join("report.html"), "<h1>eval</h1>").unwrap();
    std::fs::write(report.join("figures/c.svg"), "<svg/>").unwrap();
    std::fs::write(tmp.path().join("secret.txt"), "no").unwrap();
    let s = Server::start(&models, &data, &["--report", report.to_str().unwrap()]);
    let (_, v) = answer(ureq::get(&s.url("/api/report")).call());
    assert_eq!(v["available"], true, "{v}");
    let r = ureq::get(&s.url("/api/report/report.html")).call().unwrap();
    assert!(r.content_type().starts_with("text/html"));
    assert_eq!(r.into_string().unwrap(), "<h1>eval</h1>");
    let r = ureq::get(&s.url("/api/report/figures/c.svg"))
        .call()
        .unwrap();
    assert_eq!(r.content_type(), "image/svg+xml");
    for bad in [
        "/api/report/..%2Fsecret.txt",
        "/api/report/figures/..%2F..%2Fsecret.txt",
    ] {
        let (code, v) = answer(ureq::get(&s.url(bad)).call());
        assert_eq!(code, 404, "{bad}: {v}");
    }
    // The pages themselves are embedded.
    for page in ["/", "/review", "/adapt", "/report", "/app.js", "/style.css"] {
        let r = ureq::get(&s.url(page)).call().unwrap();
        assert_eq!(r.status(), 200, "{page}");
    }
}

#[test]
fn health_answers_while_a_long_recording_is_classified() {
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let long = tmp.path().join("long.wav");
    let text = "Xin chào, tôi muốn hỏi về kết quả xét nghiệm của tôi. ".repeat(12);
    let ok = Command::new("espeak-ng")
        .args(["-v", "vi", "-w"])
        .arg(&long)
        .arg(&text)
        .status()
        .unwrap()
        .success();
    assert!(ok, "espeak-ng failed");
    let audio = std::fs::read(&long).unwrap();
    let s = Server::start(&models, &tmp.path().join("data"), &[]);
    let url = s.url("/api/classify?segments=true");
    let job = std::thread::spawn(move || upload(&url, "long.wav", &audio));
    let mut slowest = std::time::Duration::ZERO;
    let mut answered = 0;
    while !job.is_finished() {
        let t = std::time::Instant::now();
        let (code, _) = answer(ureq::get(&s.url("/api/health")).call());
        assert_eq!(code, 200);
        slowest = slowest.max(t.elapsed());
        answered += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, v) = job.join().unwrap();
    assert_eq!(code, 200, "{v}");
    assert!(v.as_array().unwrap().len() >= 2, "several utterances: {v}");
    assert!(answered >= 1);
    assert!(
        slowest < std::time::Duration::from_secs(1),
        "health took {slowest:?} while a clip was classified"
    );
}

#[test]
fn allow_remote_listens_on_all_interfaces_with_a_warning() {
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let stderr = tmp.path().join("stderr.txt");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--port",
            "0",
            "--listen",
            "0.0.0.0",
            "--allow-remote",
            "--data",
        ])
        .arg(tmp.path().join("data"))
        .env("CAMXUC_MODELS_DIR", &models)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on http://0.0.0.0:"), "{line}");
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        err.contains("warning") && err.contains("no authentication"),
        "{err}"
    );
}
