//! `camxuc eval --out/--resume` end to end through the real binary: a header and one record
//! per clip appended as it goes, failures recorded as lines, kill -9 or a cut last line followed
//! by --resume giving the same summary as an uninterrupted run, and a resume refused when the
//! rules differ.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use camxuc::acoustic::train_model;
use serde_json::Value;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_camxuc");

/// Clips in the test manifest: the 18 synthetic ones plus 2 that cannot be decoded.
const CLIPS: usize = 18;
const BAD: usize = 2;

/// The synthetic corpus, a light model trained on it, and an eval manifest of its clips with
/// a broken WAV and a missing file among them (paths relative to the corpus folder).
fn corpus_model_and_manifest(dir: &Path) -> (PathBuf, PathBuf) {
    let manifest = common::small_corpus(dir, 4);
    let model = dir.join("model");
    train_model(
        &common::light_options(manifest.clone(), model.clone(), 1, 0, 5),
        &mut |_| {},
    )
    .unwrap();
    let corpus = manifest.parent().unwrap();
    std::fs::write(corpus.join("broken.wav"), b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
    let mut reader = csv::Reader::from_path(&manifest).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (path, label, speaker) = (
        column("path").unwrap(),
        column("label").unwrap(),
        column("speaker").unwrap(),
    );
    let mut rows: Vec<String> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            format!("{},{},{}", &r[path], &r[label], &r[speaker])
        })
        .collect();
    assert_eq!(rows.len(), CLIPS);
    rows.insert(3, "broken.wav,angry,spk0".into());
    rows.insert(11, "nope.wav,calm,spk0".into());
    let eval_manifest = corpus.join("eval.csv");
    let text = format!("path,label,speaker\n{}\n", rows.join("\n"));
    std::fs::write(&eval_manifest, text).unwrap();
    (eval_manifest, model)
}

/// `eval` with field-condition robustness on, so the perturbed labels are resumed too.
fn eval(manifest: &Path, model: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["eval", "--llm", "none", "--robustness", "--manifest"])
        .arg(manifest)
        .arg("--model")
        .arg(model)
        .args(extra)
        .output()
        .unwrap()
}

fn json_file(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The summary without its timings (the only part allowed to differ between runs).
fn without_timings(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("timings_ms");
    v
}

/// The lines after the header, timings removed.
fn body(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("timings_ms");
            v
        })
        .collect()
}

#[test]
fn eval_out_records_every_clip_and_resume_after_kill_gives_the_same_summary() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, model) = corpus_model_and_manifest(tmp.path());
    let path = |name: &str| tmp.path().join(name);
    let s = |p: PathBuf| p.to_str().unwrap().to_string();

    // Uninterrupted run.
    let out = eval(
        &manifest,
        &model,
        &[
            "--out",
            &s(path("full.jsonl")),
            "--json",
            &s(path("full.json")),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "bad clips → exit 2: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let text = std::fs::read_to_string(path("full.jsonl")).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for key in ["camxuc_run", "model", "rules", "reasoner"] {
        assert!(
            header[key].as_str().is_some_and(|v| !v.is_empty()),
            "{header}"
        );
    }
    assert!(
        header["model"].as_str().unwrap().contains(' '),
        "model + hash"
    );
    assert_eq!(
        header["eval"]["model_config_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    let lines = body(&path("full.jsonl"));
    assert_eq!(lines.len(), CLIPS + BAD, "one line per manifest row");
    let failures: Vec<&Value> = lines.iter().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(failures.len(), BAD);
    assert_eq!(failures[0]["file"], "broken.wav");
    assert_eq!(failures[1]["file"], "nope.wav");
    assert_eq!(
        lines[3]["file"], "broken.wav",
        "lines follow the manifest order"
    );
    let records: Vec<&Value> = lines.iter().filter(|l| l.get("error").is_none()).collect();
    for r in &records {
        let ab = &r["ablations"];
        for key in ["acoustic_only", "rules_only", "reasoner", "routed"] {
            assert!(
                ["calm", "angry", "panic"].contains(&ab[key].as_str().unwrap()),
                "{r}"
            );
        }
        assert!(ab.get("llm_only").is_none(), "no LLM ran");
        assert_eq!(ab["routed"], r["label"]);
        assert_eq!(
            ab["acoustic_only"].as_str(),
            top(&r["acoustic_probs"]).as_deref()
        );
        let route = r["route"].as_str().unwrap();
        assert!(["acoustic", "rules"].contains(&route), "{route}");
        if route == "acoustic" {
            assert_eq!(r["label"], ab["acoustic_only"]);
        } else {
            assert_eq!(r["label"], ab["reasoner"]);
        }
        assert!(["calm", "angry", "panic"].contains(&r["truth"].as_str().unwrap()));
        assert!(r["temperature"].as_f64().unwrap() > 0.0);
        assert!(r["perturbed_label"].as_str().is_some(), "{r}");
        assert!(r["evidence"]["values"]
            .as_object()
            .is_some_and(|o| !o.is_empty()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path("full.jsonl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "records are health data: owner only");
    }
    let full = json_file(&path("full.json"));
    assert_eq!(full["n"], CLIPS);
    assert_eq!(full["n_failed"], BAD);
    assert!(full["ablations"]["llm_only"].is_null());
    assert!(full["robustness"]["perturbed"]["macro_f1"]
        .as_f64()
        .is_some());
    let routed = records.iter().filter(|r| r["route"] != "acoustic").count();
    let fraction = full["routing"]["routed_fraction"].as_f64().unwrap();
    assert!((fraction - routed as f64 / CLIPS as f64).abs() < 1e-9);
    let acoustic_right = records
        .iter()
        .filter(|r| r["ablations"]["acoustic_only"] == r["truth"])
        .count();
    let accuracy = full["ablations"]["acoustic_only"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!((accuracy - acoustic_right as f64 / CLIPS as f64).abs() < 1e-9);

    // Rerunning onto an existing file without --resume is refused, the file untouched.
    let again = eval(&manifest, &model, &["--out", &s(path("full.jsonl"))]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    assert_eq!(std::fs::read_to_string(path("full.jsonl")).unwrap(), text);

    // A crash mid-write: the header, 7 lines and half of the 8th; resumed.
    let cut: String = text.lines().take(8).map(|l| format!("{l}\n")).collect();
    let half = text.lines().nth(8).unwrap();
    std::fs::write(
        path("cut.jsonl"),
        format!("{cut}{}", &half[..half.len() / 2]),
    )
    .unwrap();
    let out = eval(
        &manifest,
        &model,
        &[
            "--out",
            &s(path("cut.jsonl")),
            "--resume",
            "--json",
            &s(path("cut.json")),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        body(&path("cut.jsonl")),
        lines,
        "same records, manifest order"
    );
    assert_eq!(
        without_timings(json_file(&path("cut.json"))),
        without_timings(full.clone()),
        "resumed summary must equal the uninterrupted one"
    );

    // Killed part-way (SIGKILL), then resumed.
    let part = path("part.jsonl");
    let child = Command::new(BIN)
        .args(["eval", "--llm", "none", "--robustness", "--manifest"])
        .arg(&manifest)
        .arg("--model")
        .arg(&model)
        .arg("--out")
        .arg(&part)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::kill_after_lines(child, &part, 5);
    let at_kill = std::fs::read_to_string(&part).unwrap().lines().count();
    assert!(
        at_kill < 1 + CLIPS + BAD,
        "the kill must land mid-run ({at_kill} lines)"
    );
    let out = eval(
        &manifest,
        &model,
        &[
            "--out",
            &s(part.clone()),
            "--resume",
            "--json",
            &s(path("part.json")),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(body(&part), lines);
    assert_eq!(
        without_timings(json_file(&path("part.json"))),
        without_timings(full),
        "resumed after kill -9 must equal the uninterrupted summary"
    );

    // Another rule set (one weight changed) writes other records: resuming is refused.
    let default_rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/vi-default.toml");
    let changed =
        std::fs::read_to_string(default_rules)
            .unwrap()
            .replacen("weight = 1.0", "weight = 1.5", 1);
    std::fs::write(path("other_rules.toml"), changed).unwrap();
    let before = std::fs::read_to_string(&part).unwrap();
    let out = eval(
        &manifest,
        &model,
        &[
            "--out",
            &s(part.clone()),
            "--resume",
            "--rules",
            &s(path("other_rules.toml")),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let message: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("cannot resume"))
        .collect();
    assert_eq!(message.len(), 1, "one line: {err}");
    assert!(message[0].contains("part.jsonl"), "names the file: {err}");
    assert_eq!(
        std::fs::read_to_string(&part).unwrap(),
        before,
        "left as it was"
    );
}

/// The label of the highest probability in a `{label: p}` object.
fn top(probs: &Value) -> Option<String> {
    probs
        .as_object()?
        .iter()
        .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
        .map(|(l, _)| l.clone())
}
