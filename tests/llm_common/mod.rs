//! What the LLM tests on the real default GGUF share: finding the model (skip with a printed
//! reason, fail under CI), load options, and the three hand-written clear-cut cases.
#![allow(dead_code)]

use std::path::PathBuf;

use camxuc::catalog::{models_dir, ModelSpec};
use camxuc::llm::{LoadOptions, RuleText};
use camxuc::rules::{default_ruleset, Language};
use camxuc::{Case, Evidence, FiredRule, LabelSet, Probs};

pub fn default_model() -> Option<PathBuf> {
    installed("smollm2-135m")
}

/// A catalogued model's file, or None (with the reason printed) outside CI; under CI a missing
/// model is a failure.
pub fn installed(name: &str) -> Option<PathBuf> {
    let found = ModelSpec::parse(name)
        .ok()
        .and_then(|s| s.resolve(&models_dir()).ok().flatten())
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {name} is not installed (camxuc models fetch {name})"
        );
        eprintln!("skipped: {name} is not installed (camxuc models fetch {name})");
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

/// The shipped rules (rules/vi-default.toml) as the reasoner's prompt states them.
pub fn shipped_rules() -> Vec<RuleText> {
    RuleText::enabled(&default_ruleset().expect("the shipped rules parse"))
}

/// A shipped rule as fired on a clip (its label and statements from rules/vi-default.toml).
pub fn rule(id: &str) -> FiredRule {
    let rules = default_ruleset().expect("the shipped rules parse");
    let r = rules
        .rules()
        .iter()
        .find(|r| r.id() == id)
        .unwrap_or_else(|| panic!("{id} is not a shipped rule"));
    FiredRule {
        id: id.into(),
        label: r.label().into(),
        weight: 1.0,
        statement_en: r.statement(Language::En).into(),
        statement_vi: Some(r.statement(Language::Vi).into()),
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
    // Each clip's evidence meets the conditions of the shipped rules it fires.
    vec![
        clip(
            "calm",
            &[
                ("alpha_ratio_db", -1.1),
                ("hammarberg_db", 0.9),
                ("articulation_rate_syl_per_s", -0.8),
                ("pause_ratio", 0.6),
                ("loudness_rise_db_per_s", -1.3),
            ],
            [0.40, 0.31, 0.29],
            vec![rule("calm-low-effort"), rule("calm-unhurried-tempo")],
        ),
        clip(
            "angry",
            &[
                ("loudness_rise_db_per_s", 2.3),
                ("loudness_range_db", 1.4),
                ("alpha_ratio_db", 2.0),
                ("hammarberg_db", -1.6),
                ("f0_range_st", 0.9),
            ],
            [0.27, 0.40, 0.33],
            vec![rule("angry-high-effort"), rule("angry-abrupt-onsets")],
        ),
        clip(
            "panic",
            &[
                ("f0_median_st27", 2.2),
                ("f0_tremor_st", 1.8),
                ("f0_tremor_ratio", 2.0),
                ("alpha_ratio_db", 0.2),
                ("articulation_rate_syl_per_s", 1.5),
            ],
            [0.27, 0.33, 0.40],
            vec![rule("panic-tremor"), rule("panic-raised-pitch")],
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
