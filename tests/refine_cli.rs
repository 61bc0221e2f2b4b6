//! `camxuc refine` end to end through the real binary on SYNTHETIC speech: held-out
//! (out-of-fold) predictions are used, every round writes a versioned rule file and a report,
//! the active rules change only with --accept and a passed check, and bad inputs get clear
//! errors naming the file.

use std::path::Path;
use std::process::Command;

use camxuc::acoustic::train_model;
use camxuc::data::synth::{synthesize, SynthOptions};
use camxuc::rules::{RuleSet, DEFAULT_RULES_PATH};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_camxuc");

/// 36 synthetic clips of 3 speakers and a light model with out-of-fold predictions.
fn corpus_and_model(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let manifest = synthesize(
        &SynthOptions {
            out: dir.join("corpus"),
            per_class: 12,
            speakers: 3,
            seed: 11,
            ..Default::default()
        },
        &mut |_, _| {},
    )
    .unwrap()
    .manifest;
    let mut opts = common::light_options(manifest.clone(), dir.join("model"), 1, 0, 6);
    opts.oof_folds = 2;
    train_model(&opts, &mut |_| {}).unwrap();
    (manifest, dir.join("model"))
}

fn refine(args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("refine").args(args).output().unwrap()
}

#[test]
fn refine_uses_held_out_predictions_and_writes_versions_and_reports() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, model) = corpus_and_model(tmp.path());
    let (m, d) = (manifest.to_str().unwrap(), model.to_str().unwrap());
    let json = tmp.path().join("refine.json");
    // A shifted condition: other voices and sentences, predicted by the model, never searched.
    let shifted = synthesize(
        &SynthOptions {
            out: tmp.path().join("shifted"),
            per_class: 4,
            speakers: 2,
            seed: 23,
            ..Default::default()
        },
        &mut |_, _| {},
    )
    .unwrap()
    .manifest;

    // Without --accept: proposals only; the model's active rules stay the embedded default.
    let out = refine(&[
        "--manifest",
        m,
        "--model",
        d,
        "--rounds",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--shifted",
        shifted.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // Every clip of the manifest was in training (train or validation part) and all have
    // held-out predictions: none was predicted by a model that saw it.
    assert_eq!(v["clips"], 36, "{v}");
    assert_eq!(v["in_sample_skipped"], 0);
    // No fusion.json (a library-trained model): the unfitted rule vote gives the rules weight.
    assert_eq!(v["rules_inert"], false);
    assert!(v["by_source"]["out-of-fold"].as_u64().unwrap() > 0, "{v}");
    assert!(
        !model.join("rules.toml").exists(),
        "no --accept: nothing becomes active"
    );
    let rounds = v["rounds"].as_array().unwrap();
    let start = RuleSet::load(Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_RULES_PATH))
        .unwrap()
        .version() as u64;
    for (i, r) in rounds.iter().enumerate() {
        let version = r["version"].as_u64().unwrap();
        assert_eq!(version, start + i as u64 + 1);
        let file = model.join(format!("rules.v{version}.toml"));
        let set = RuleSet::load(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.version() as u64, version);
        // The changelog says what the round did and the header says where it may live.
        let last = set.changelog().last().unwrap();
        assert!(last.note.contains("refinement round"), "{}", last.note);
        assert!(set.header_comment().contains("never shipped in rules/"));
        let report =
            std::fs::read_to_string(model.join(format!("refine-round-{}.md", i + 1))).unwrap();
        for section in [
            "## Error analysis",
            "### Rules where they fire",
            "## Proposed edits",
            "## Cross-fitted check",
            "## Shifted conditions",
        ] {
            assert!(report.contains(section), "missing {section}:\n{report}");
        }
        let shift = &r["shifted"][0];
        assert_eq!(shift["clips"], 12, "{shift}");
        let (cur, new, diff) = (
            shift["macro_f1_current"].as_f64().unwrap(),
            shift["macro_f1_proposed"].as_f64().unwrap(),
            shift["difference"]["difference"].as_f64().unwrap(),
        );
        assert!((new - cur - diff).abs() < 1e-9, "{shift}");
        assert_eq!(shift["passes"], diff >= -0.01, "{shift}");
        let ac = &r["acceptance"];
        let (cur, crossed, diff) = (
            ac["macro_f1_current"].as_f64().unwrap(),
            ac["macro_f1_cross_fitted"].as_f64().unwrap(),
            ac["difference"].as_f64().unwrap(),
        );
        assert!((crossed - cur - diff).abs() < 1e-9, "{ac}");
        assert!(r["kept"] == false);
    }

    // With --accept and an impossible confidence, nothing can be kept.
    let out = refine(&[
        "--manifest",
        m,
        "--model",
        d,
        "--accept",
        "--confidence",
        "1.01",
    ]);
    assert!(out.status.success());
    assert!(!model.join("rules.toml").exists());
    if !rounds.is_empty() {
        assert!(String::from_utf8_lossy(&out.stdout).contains("rejected"));
    }

    // With --accept and no requirement beyond "not worse", a kept round becomes rules.toml,
    // which classify and eval then use.
    let out = refine(&[
        "--manifest",
        m,
        "--model",
        d,
        "--accept",
        "--confidence",
        "0",
        "--tolerance",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    if stdout.contains("KEPT") {
        let active = RuleSet::load(model.join("rules.toml")).unwrap();
        assert!(active.version() >= 2);
        assert!(
            stdout.contains(&format!("active rules: vi-default v{}", active.version())),
            "{stdout}"
        );
    }
}

#[test]
fn refine_rejects_bad_inputs_with_the_file_named() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, model) = corpus_and_model(tmp.path());
    let d = model.to_str().unwrap();

    // A rules file with a typo in a feature name: rejected before any clip is read.
    let bad_rules = tmp.path().join("typo.toml");
    let text = std::fs::read_to_string("rules/vi-default.toml")
        .unwrap()
        .replacen("hnr_db_z", "hnr_dbb_z", 1);
    std::fs::write(&bad_rules, text).unwrap();
    let out = refine(&[
        "--manifest",
        manifest.to_str().unwrap(),
        "--model",
        d,
        "--rules",
        bad_rules.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("typo.toml") && err.contains("hnr_dbb_z") && err.contains("hnr_db_z"),
        "{err}"
    );

    // A manifest naming a missing file.
    let missing = tmp.path().join("missing.csv");
    std::fs::write(&missing, "path,label,speaker\nnowhere.wav,calm,s1\n").unwrap();
    let out = refine(&["--manifest", missing.to_str().unwrap(), "--model", d]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nowhere.wav"), "{err}");
    // … also as a shifted condition.
    let out = refine(&[
        "--manifest",
        manifest.to_str().unwrap(),
        "--model",
        d,
        "--shifted",
        missing.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nowhere.wav"), "{err}");

    // Too few clips with held-out predictions to refine anything.
    let few = tmp.path().join("few.csv");
    let rows: Vec<String> = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .take(6)
        .map(String::from)
        .collect();
    std::fs::write(&few, rows.join("\n") + "\n").unwrap();
    // Paths in the manifest are relative to its folder: keep the copy beside the original.
    let few_beside = manifest.with_file_name("few.csv");
    std::fs::copy(&few, &few_beside).unwrap();
    let out = refine(&["--manifest", few_beside.to_str().unwrap(), "--model", d]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("few.csv") && err.contains("at least 20"),
        "{err}"
    );
}

/// A model whose fusion gives the rules no weight (an acoustic-only fit, what `camxuc train`
/// writes when the rules do not help on its held-out clips): refine says that no rule edit can
/// change a decision, searches nothing and writes no rule version.
#[test]
fn refine_says_so_when_the_fusion_gives_the_rules_no_weight() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, model) = corpus_and_model(tmp.path());
    std::fs::write(
        model.join("fusion.json"),
        r#"{"params": {"acoustic_weight": 1.0, "rule_scale": 0.0, "unfamiliar_acoustic": 0.0,
            "unfamiliar_rules": 0.0, "llm_weight": 0.0},
            "ridge": null, "held_out_nll": {}, "n": 0, "groups": [], "with_llm": false}"#,
    )
    .unwrap();
    let json = tmp.path().join("refine.json");
    let o = refine(&[
        "--manifest",
        manifest.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("gives the rules no weight"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["rules_inert"], true);
    assert_eq!(report["rounds"].as_array().unwrap().len(), 0);
    let written: Vec<_> = std::fs::read_dir(&model)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("rules.v") || n.starts_with("refine-round"))
        .collect();
    assert!(written.is_empty(), "{written:?}");
}
