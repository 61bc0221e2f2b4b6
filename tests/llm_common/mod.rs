//! What the LLM tests on the real default GGUF share: finding the model (skip with a printed
//! reason, fail under CI), load options, and the three hand-written clear-cut cases.
#![allow(dead_code)]

use std::path::PathBuf;

use camxuc::catalog::{models_dir, ModelSpec};
use camxuc::llm::{bench_rules, LoadOptions};
use camxuc::{Case, Evidence, FiredRule, LabelSet, Probs};

pub fn default_model() -> Option<PathBuf> {
    let found = ModelSpec::parse("smollm2-135m")
        .ok()
        .and_then(|s| s.resolve(&models_dir()).ok().flatten())
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the default LLM is not installed (camxuc models fetch smollm2-135m)"
        );
        eprintln!("skipped: default LLM smollm2-135m is not installed (camxuc models fetch)");
    }
    found
}

pub fn load_options() -> LoadOptions {
    LoadOptions {
        threads: 2,
        ..LoadOptions::default()
    }
}

pub struct Clip {
    pub label: &'static str,
    pub evidence: Evidence,
    pub acoustic: Probs,
    pub fired: Vec<FiredRule>,
}

pub fn rule(id: &str, label: &str) -> FiredRule {
    let statement = bench_rules()
        .into_iter()
        .find(|r| r.id == id)
        .map(|r| r.statement)
        .unwrap_or_default();
    FiredRule {
        id: id.into(),
        label: label.into(),
        weight: 1.0,
        statement_en: statement,
        statement_vi: None,
    }
}

pub fn clip(
    label: &'static str,
    z: &[(&str, f64)],
    probs: [f32; 3],
    fired: Vec<FiredRule>,
) -> Clip {
    let mut evidence = Evidence::default();
    for (n, v) in z {
        evidence.z.insert(n.to_string(), *v);
    }
    evidence.baseline = "corpus:test".into();
    Clip {
        label,
        evidence,
        acoustic: Probs::new(&LabelSet::default(), probs.to_vec()),
        fired,
    }
}

/// Hand-written clear-cut clips. The acoustic probabilities lean only mildly towards the
/// right label, as on a routed (ambiguous) clip; the evidence and the fired rules carry it.
pub fn clear_cases() -> Vec<Clip> {
    vec![
        clip(
            "calm",
            &[
                ("f0_std_st", -1.2),
                ("loudness_rise_db_per_s", -1.3),
                ("alpha_ratio_db", -1.1),
                ("speech_rate_syl_per_s", -0.8),
                ("hnr_db", 0.9),
            ],
            [0.40, 0.31, 0.29],
            vec![rule("G5", "calm"), rule("G6", "calm")],
        ),
        clip(
            "angry",
            &[
                ("loudness_rise_db_per_s", 2.3),
                ("alpha_ratio_db", 2.0),
                ("hammarberg_db", -1.6),
                ("hnr_db", -1.2),
                ("f0_std_st", 0.9),
            ],
            [0.27, 0.40, 0.33],
            vec![rule("G1", "angry"), rule("G2", "angry")],
        ),
        clip(
            "panic",
            &[
                ("f0_median_st27", 2.2),
                ("f0_tremor_ratio", 2.0),
                ("speech_rate_syl_per_s", 1.7),
                ("f0_slope_st_per_s", 1.5),
                ("pause_ratio", -1.2),
            ],
            [0.27, 0.33, 0.40],
            vec![rule("G3", "panic"), rule("G4", "panic")],
        ),
    ]
}

pub fn case(c: &Clip) -> Case<'_> {
    Case {
        unfamiliarity: None,
        evidence: &c.evidence,
        acoustic: &c.acoustic,
        fired: &c.fired,
        transcript: None,
    }
}
