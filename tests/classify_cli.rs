//! `camxuc classify` end to end through the real binary: decisions, recorded failures, exit
//! codes, private incremental output, and kill -9 followed by --resume.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use camxuc::acoustic::train_model;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_camxuc");

/// A small synthetic corpus and a light (log-mel) model trained on it.
fn corpus_and_model(dir: &Path) -> (Vec<PathBuf>, PathBuf) {
    let manifest = common::small_corpus(dir, 4);
    train_model(
        &common::light_options(manifest.clone(), dir.join("model"), 1, 0, 5),
        &mut |_| {},
    )
    .unwrap();
    let m = camxuc::data::manifest::Manifest::load_unlabelled(&manifest).unwrap();
    (
        m.rows.into_iter().map(|r| r.path).collect(),
        dir.join("model"),
    )
}

/// Decisions of a JSONL output without timings, in file order (header line dropped).
fn decisions(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("timings_ms");
            }
            v
        })
        .collect()
}

#[test]
fn batch_records_failures_and_resume_after_kill_gives_the_same_output() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (clips, model) = corpus_and_model(tmp.path());
    let bad = tmp.path().join("broken.wav");
    std::fs::write(&bad, b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
    let mut inputs: Vec<PathBuf> = clips.iter().take(17).cloned().collect();
    inputs.insert(5, bad.clone());

    // Uninterrupted run.
    let full = tmp.path().join("full.jsonl");
    let out = Command::new(BIN)
        .args(["classify", "--llm", "none", "--format", "jsonl", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&full)
        .args(&inputs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "some inputs failed → exit 2; stderr: {stderr}"
    );
    assert!(
        stderr.contains("broken.wav") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let all = decisions(&full);
    assert_eq!(all.len(), 18, "17 decisions and 1 recorded failure");
    assert_eq!(all.iter().filter(|d| d.get("error").is_some()).count(), 1);
    for d in all.iter().filter(|d| d.get("error").is_none()) {
        let p: f64 = d["probs"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((p - 1.0).abs() < 1e-4);
        assert!(["acoustic", "rules"].contains(&d["route"].as_str().unwrap()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&full).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "output must be readable by its owner only");
    }

    // Killed part-way, then resumed.
    let part = tmp.path().join("part.jsonl");
    let child = Command::new(BIN)
        .args(["classify", "--llm", "none", "--format", "jsonl", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&part)
        .args(&inputs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::kill_after_lines(child, &part, 4);
    let lines_at_kill = std::fs::read_to_string(&part).unwrap().lines().count();
    assert!(
        lines_at_kill < 1 + all.len(),
        "the kill must land mid-batch ({lines_at_kill} lines)"
    );
    let status = Command::new(BIN)
        .args([
            "classify", "--llm", "none", "--format", "jsonl", "--resume", "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(&part)
        .args(&inputs)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2), "the broken file still fails");
    assert_eq!(
        decisions(&part),
        all,
        "resumed output must equal the uninterrupted one"
    );

    // A review queue of every clip (everything is below confidence 1.01), owner-only; the
    // broken file is queued too, with its reason, and the batch goes on.
    let queue = tmp.path().join("queue.csv");
    let review_manifest = tmp.path().join("review.csv");
    let mut rows = String::from("path\n");
    for c in clips.iter().chain([&bad]) {
        rows.push_str(&format!("{}\n", c.display()));
    }
    std::fs::write(&review_manifest, rows).unwrap();
    let out = Command::new(BIN)
        .args(["review", "--below", "1.01", "--model"])
        .arg(&model)
        .arg("--manifest")
        .arg(&review_manifest)
        .arg("--out")
        .arg(&queue)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "one input failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&queue).unwrap();
    assert!(text.starts_with("path,given_label,predicted,confidence,route,strongest_evidence"));
    let records: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        records.len(),
        clips.len() + 1,
        "every clip queued, the broken one too"
    );
    let broken = records
        .iter()
        .find(|r| r[0].ends_with("broken.wav"))
        .expect("the broken file has a row");
    assert_eq!(&broken[4], "failed");
    assert!(
        broken[9].contains("broken.wav"),
        "reason names the file: {:?}",
        broken
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&queue).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // Resuming a file written by another model is refused.
    let header = std::fs::read_to_string(&part).unwrap();
    let tampered = header.replacen("rule-vote", "another-reasoner", 1);
    std::fs::write(&part, tampered).unwrap();
    let out = Command::new(BIN)
        .args(["classify", "--llm", "none", "--resume", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&part)
        .args(&inputs[..1])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot resume"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--format csv` on standard output and a CSV `--out` file are one schema: the same header
/// and the same rows, properly quoted (a file name with a comma stays one field).
#[test]
fn csv_on_stdout_and_a_csv_out_file_are_the_same_csv() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (clips, model) = corpus_and_model(tmp.path());
    let comma = tmp.path().join("a, b.wav");
    std::fs::copy(&clips[0], &comma).unwrap();
    let file = tmp.path().join("x.csv");
    let out = Command::new(BIN)
        .args(["classify", "--llm", "none", "--format", "csv", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&file)
        .arg(&comma)
        .args(&clips[1..3])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        stdout.lines().next(),
        written.lines().next(),
        "one header for both"
    );
    assert!(
        stdout.starts_with(
            "file,segment_start_s,segment_end_s,label,p_calm,p_angry,p_panic,route,unfamiliarity,fired_rules,rationale,error\n"
        ),
        "{stdout}"
    );
    assert_eq!(stdout, written, "the same rows on stdout and in the file");
    assert!(
        stdout.contains(&format!("\n\"{}\",", comma.display())),
        "a name with a comma is quoted: {stdout}"
    );
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(stdout.as_bytes())
        .records()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert_eq!(&rows[0][0], comma.display().to_string());
    assert!(rows.iter().all(|r| r.len() == 12), "{stdout}");
}

#[test]
fn transcribe_gives_routed_clips_their_words_and_a_bad_language_is_refused() {
    if !common::espeak_or_skip() {
        return;
    }
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (clips, model) = corpus_and_model(tmp.path());
    // Threshold above 1 routes every clip, so every clip is transcribed.
    let out = Command::new(BIN)
        .env("CAMXUC_MODELS_DIR", &models)
        .args(["classify", "--llm", "none", "--format", "jsonl"])
        .args(["--threshold", "1.01", "--transcribe", "--model"])
        .arg(&model)
        .args(&clips[..2])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let decisions: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.contains("\"schema_version\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(decisions.len(), 2, "{stdout}");
    for d in &decisions {
        assert_eq!(d["route"], "rules", "{d}");
        let words = d["transcript"].as_str().unwrap_or("");
        // Synthetic Vietnamese sentences: Whisper gets roughly half the characters right
        // (README), so only ask for a few letters of text.
        assert!(
            words.chars().filter(|c| c.is_alphabetic()).count() >= 5,
            "routed clip transcribed: {d}"
        );
        assert!(d["timings_ms"]["transcribe"].as_f64().unwrap() > 0.0);
    }

    let out = Command::new(BIN)
        .env("CAMXUC_MODELS_DIR", &models)
        .args([
            "classify",
            "--llm",
            "none",
            "--transcribe",
            "--asr-language",
            "xx",
        ])
        .arg("--model")
        .arg(&model)
        .args(&clips[..1])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xx") && err.contains("whisper-base"), "{err}");
}
