//! Evaluating conditions on hand-built evidence, and the rule-vote reasoner on the shipped
//! rule set. With ../shared/data/ravdess-3class present, also prints per-rule firing rate and
//! precision on actors 01–12 (figures for the refinement loop; the shipped set is not tuned
//! on them).

use std::collections::BTreeMap;
use std::path::Path;

use camxuc::rules::{Language, Rule, RuleSet, RuleVote, Statements, DEFAULT_RULES_PATH};
use camxuc::{Case, Evidence, LabelSet, Probs, Reasoner};

mod common;

fn evidence(values: &[(&str, f64)], z: &[(&str, f64)]) -> Evidence {
    Evidence {
        values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        z: z.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        baseline: "corpus:test".into(),
    }
}

/// A rule set with one rule per condition, ids r0, r1, …, all for `calm`.
fn set_of(conditions: &[&str]) -> RuleSet {
    let labels = LabelSet::default();
    let mut set = RuleSet::new("eval", 1, labels.clone(), Language::En, "").unwrap();
    for (i, c) in conditions.iter().enumerate() {
        set.push_rule(
            Rule::new(
                &format!("r{i}"),
                "calm",
                c,
                1.0,
                Statements::new("vi", "en"),
                "test",
                &labels,
            )
            .unwrap(),
        )
        .unwrap();
    }
    set
}

fn fired_ids(set: &RuleSet, e: &Evidence, p: &Probs) -> Vec<String> {
    set.evaluate(e, p).into_iter().map(|f| f.id).collect()
}

fn probs(values: [f32; 3]) -> Probs {
    Probs::new(&LabelSet::default(), values.to_vec())
}

#[test]
fn comparisons_on_absent_features_are_false() {
    let set = set_of(&[
        "hnr_db_z < -1",
        "hnr_db_z >= -1",
        "not hnr_db_z < -1",
        "hnr_db > 0",
        "jitter_local_pct_z > 0 or hnr_db > 0",
    ]);
    // HNR measured (raw value) but no baseline: the z-score is absent, the raw value is not.
    let e = evidence(&[("hnr_db", 12.0)], &[]);
    assert_eq!(
        fired_ids(&set, &e, &probs([0.4, 0.3, 0.3])),
        ["r2", "r3", "r4"]
    );
    // A NaN that slipped in is treated as absent too.
    let e = evidence(&[("hnr_db", f64::NAN)], &[("hnr_db", f64::NAN)]);
    assert_eq!(fired_ids(&set, &e, &probs([0.4, 0.3, 0.3])), ["r2"]);
}

#[test]
fn precedence_not_binds_tighter_than_and_than_or() {
    // a or b and c  ==  a or (b and c);  not a and b  ==  (not a) and b.
    let set = set_of(&[
        "f0_range_st_z > 1 or hnr_db_z > 1 and jitter_local_pct_z > 1",
        "not f0_range_st_z > 1 and hnr_db_z > 1",
        "(f0_range_st_z > 1 or hnr_db_z > 1) and jitter_local_pct_z > 1",
    ]);
    let e = evidence(
        &[],
        &[
            ("f0_range_st", 2.0),
            ("hnr_db", 0.0),
            ("jitter_local_pct", 0.0),
        ],
    );
    assert_eq!(fired_ids(&set, &e, &probs([0.4, 0.3, 0.3])), ["r0"]);
    let e = evidence(
        &[],
        &[
            ("f0_range_st", 0.0),
            ("hnr_db", 2.0),
            ("jitter_local_pct", 0.0),
        ],
    );
    assert_eq!(fired_ids(&set, &e, &probs([0.4, 0.3, 0.3])), ["r1"]);
    let e = evidence(
        &[],
        &[
            ("f0_range_st", 0.0),
            ("hnr_db", 2.0),
            ("jitter_local_pct", 2.0),
        ],
    );
    assert_eq!(
        fired_ids(&set, &e, &probs([0.4, 0.3, 0.3])),
        ["r0", "r1", "r2"]
    );
}

#[test]
fn acoustic_probabilities_and_margin() {
    let set = set_of(&[
        "p_angry > 0.5",
        "margin < 0.1",
        "p_panic > p_calm",
        "p_angry >= 0.6 and margin >= 0.3",
    ]);
    let e = Evidence::default();
    assert_eq!(fired_ids(&set, &e, &probs([0.2, 0.6, 0.2])), ["r0", "r3"]);
    assert_eq!(fired_ids(&set, &e, &probs([0.3, 0.34, 0.36])), ["r1", "r2"]);
}

#[test]
fn fired_rules_carry_label_weight_and_both_statements_and_disabled_rules_stay_silent() {
    let labels = LabelSet::default();
    let mut set = RuleSet::new("eval", 1, labels.clone(), Language::Vi, "").unwrap();
    let rule = Rule::new(
        "tremor",
        "panic",
        "f0_tremor_st_z > 1",
        1.25,
        Statements::new("Giọng run.", "Trembling voice."),
        "guideline",
        &labels,
    )
    .unwrap();
    set.push_rule(rule).unwrap();
    let e = evidence(&[], &[("f0_tremor_st", 1.5)]);
    let fired = set.evaluate(&e, &Probs::uniform(&labels));
    assert_eq!(fired.len(), 1);
    assert_eq!(
        (
            fired[0].label.as_str(),
            fired[0].weight,
            fired[0].statement_vi.as_deref()
        ),
        ("panic", 1.25, Some("Giọng run."))
    );
    assert!(set.set_enabled("tremor", false));
    assert!(set.evaluate(&e, &Probs::uniform(&labels)).is_empty());
}

fn shipped() -> RuleSet {
    RuleSet::load(Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_RULES_PATH)).unwrap()
}

/// z-scores that a listener would call clearly calm / angry / panic, written from the
/// shipped rules' own descriptions (low effort and slow tempo; effort, harshness and abrupt
/// loudness; tremor, raised pitch, hurried and unsteady voice). Raw `f0_slope_st_per_s` is
/// used by two rules.
fn profile(label: &str) -> Evidence {
    match label {
        "calm" => evidence(
            &[("f0_slope_st_per_s", -0.5)],
            &[
                ("alpha_ratio_db", -1.2),
                ("hammarberg_db", 1.0),
                ("articulation_rate_syl_per_s", -1.0),
                ("pause_ratio", 0.8),
                ("loudness_rise_db_per_s", -1.0),
                ("loudness_range_db", -0.5),
                ("f0_median_st27", -0.5),
                ("f0_range_st", -0.6),
                ("f0_tremor_st", -0.3),
                ("hnr_db", 0.8),
                ("jitter_local_pct", -0.5),
                ("spectral_flux", -0.7),
            ],
        ),
        "angry" => evidence(
            &[("f0_slope_st_per_s", -2.0)],
            &[
                ("alpha_ratio_db", 1.8),
                ("hammarberg_db", -1.2),
                ("hnr_db", -1.3),
                ("f0_aperiodicity", 0.5),
                ("loudness_rise_db_per_s", 1.6),
                ("loudness_range_db", 1.2),
                ("spectral_slope_500_1500_db_per_khz", 1.4),
                ("spectral_centroid_hz", 1.2),
                ("f0_range_st", 1.3),
                ("pause_ratio", -0.8),
                ("loudness_std_db", 1.3),
                ("f0_median_st27", 0.4),
                ("articulation_rate_syl_per_s", 0.6),
                ("jitter_local_pct", 0.3),
                ("shimmer_local_db", 0.4),
            ],
        ),
        _ => evidence(
            &[("f0_slope_st_per_s", 1.0)],
            &[
                ("f0_tremor_st", 1.6),
                ("f0_tremor_ratio", 1.0),
                ("f0_median_st27", 1.6),
                ("alpha_ratio_db", 0.3),
                ("articulation_rate_syl_per_s", 1.4),
                ("voiced_segment_mean_s", -0.8),
                ("jitter_local_pct", 1.3),
                ("shimmer_local_db", 0.9),
                ("f0_aperiodicity", 1.2),
                ("hnr_db", -0.7),
                ("pause_ratio", 0.7),
                ("f0_rise_rate_per_s", 1.8),
                ("hammarberg_db", -0.2),
            ],
        ),
    }
}

#[test]
fn shipped_rules_rank_clear_cases_first_with_a_uniform_prior() {
    let set = shipped();
    let labels = set.labels().clone();
    let uniform = Probs::uniform(&labels);
    let mut vote = RuleVote::new(&set);
    for expected in ["calm", "angry", "panic"] {
        let e = profile(expected);
        let fired = set.evaluate(&e, &uniform);
        assert!(
            fired.iter().all(|f| f.label == expected),
            "{expected}: off-label rules fired: {fired:?}"
        );
        assert!(
            fired.len() >= 3,
            "{expected}: only {} rules fired",
            fired.len()
        );
        let verdict = vote
            .decide(&Case {
                unfamiliarity: None,
                evidence: &e,
                acoustic: &uniform,
                fired: &fired,
                transcript: None,
            })
            .unwrap();
        assert_eq!(verdict.probs.top_label(), expected, "{:?}", verdict.probs);
        assert!(
            verdict.probs.argmax().1 > 0.8,
            "{expected}: {:?}",
            verdict.probs
        );
        // The rationale quotes the rules in the set's language (Vietnamese).
        let rationale = verdict.rationale.unwrap();
        for f in &fired {
            assert!(
                rationale.contains(f.statement_vi.as_deref().unwrap()),
                "{rationale}"
            );
        }
        println!("{expected}: {:?}\n{rationale}\n", verdict.probs.values);
    }
}

#[test]
fn rule_vote_is_log_linear_in_the_prior_and_the_weights() {
    let set = shipped();
    let labels = set.labels().clone();
    let acoustic = probs([0.5, 0.3, 0.2]);
    let mut vote = RuleVote::new(&set);
    // No rule fired: prior_weight 1 keeps the acoustic probabilities.
    let none = vote
        .decide(&Case {
            unfamiliarity: None,
            evidence: &Evidence::default(),
            acoustic: &acoustic,
            fired: &[],
            transcript: None,
        })
        .unwrap();
    for (a, b) in none.probs.values.iter().zip(&acoustic.values) {
        assert!((a - b).abs() < 1e-6, "{:?}", none.probs);
    }
    assert!(none
        .rationale
        .unwrap()
        .to_lowercase()
        .contains("không có quy tắc nào khớp"));
    // One angry rule of weight w multiplies the angry odds by e^w.
    let e = profile("angry");
    let fired: Vec<_> = set.evaluate(&e, &acoustic).into_iter().take(1).collect();
    let w = f64::from(fired[0].weight);
    let out = vote
        .decide(&Case {
            unfamiliarity: None,
            evidence: &e,
            acoustic: &acoustic,
            fired: &fired,
            transcript: None,
        })
        .unwrap();
    let odds_before = 0.3 / 0.5;
    let odds_after = f64::from(out.probs.values[1]) / f64::from(out.probs.values[0]);
    assert!(
        (odds_after / odds_before - w.exp()).abs() < 1e-4,
        "{odds_after} vs {odds_before}·e^{w}"
    );
    // Deterministic: the same case gives the same answer.
    let again = vote
        .decide(&Case {
            unfamiliarity: None,
            evidence: &e,
            acoustic: &acoustic,
            fired: &fired,
            transcript: None,
        })
        .unwrap();
    assert_eq!((again.probs, again.rationale), (out.probs, out.rationale));
    // prior_weight 0: the acoustic model is ignored, so no rule means a uniform answer.
    let mut rules_only = RuleVote::new(&set).with_prior_weight(0.0);
    let flat = rules_only
        .decide(&Case {
            unfamiliarity: None,
            evidence: &e,
            acoustic: &acoustic,
            fired: &[],
            transcript: None,
        })
        .unwrap();
    assert!(flat
        .probs
        .values
        .iter()
        .all(|p| (p - 1.0 / 3.0).abs() < 1e-6));
    assert!(vote.name().contains("vi-default v2"));
    let _ = labels;
}

/// Per-rule firing rate and precision on RAVDESS actors 01–12 with a corpus baseline fitted
/// on those clips. Printed for the refinement loop; nothing here feeds back into rules/.
#[test]
fn ravdess_actors_01_12_per_rule_figures() {
    let Some(root) = common::ravdess_or_skip() else {
        return;
    };
    let manifest_path = root.join("manifest.csv");
    let labels = LabelSet::default();
    let manifest = camxuc::data::Manifest::load(&manifest_path, &labels).unwrap();
    let train: Vec<_> = manifest
        .rows
        .iter()
        .filter(|r| {
            r.speaker
                .as_deref()
                .and_then(|s| s.strip_prefix("actor"))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| (1..=12).contains(&n))
        })
        .collect();
    let mut analyser =
        camxuc::clip::ClipAnalyser::new(&camxuc::features::FeatureConfig::default()).unwrap();
    let mut clips: Vec<(String, Evidence)> = Vec::new();
    for row in &train {
        match analyser.analyse(&row.path) {
            Ok(clip) => clips.push((row.label.clone(), clip.evidence)),
            Err(e) => println!("not analysed: {e}"),
        }
    }
    assert!(
        clips.len() * 10 >= train.len() * 9,
        "only {} of {} clips analysed",
        clips.len(),
        train.len()
    );
    let evidences: Vec<Evidence> = clips.iter().map(|(_, e)| e.clone()).collect();
    let baseline = camxuc::features::Baseline::fit(
        camxuc::features::BaselineKind::Corpus("ravdess-actors-01-12".into()),
        &evidences,
    );
    for (_, e) in &mut clips {
        baseline.apply(e);
    }

    let set = shipped();
    let uniform = Probs::uniform(&labels);
    let mut vote = RuleVote::new(&set).with_prior_weight(0.0);
    let mut per_rule: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut correct, mut none_fired, mut correct_when_fired) = (0, 0, 0);
    let mut confusion = [[0usize; 3]; 3];
    for (label, e) in &clips {
        let fired = set.evaluate(e, &uniform);
        none_fired += usize::from(fired.is_empty());
        for f in &fired {
            let entry = per_rule.entry(f.id.clone()).or_default();
            entry.0 += 1;
            entry.1 += usize::from(&f.label == label);
        }
        let verdict = vote
            .decide(&Case {
                unfamiliarity: None,
                evidence: e,
                acoustic: &uniform,
                fired: &fired,
                transcript: None,
            })
            .unwrap();
        let predicted = verdict.probs.argmax().0;
        let right = verdict.probs.labels[predicted] == *label;
        correct += usize::from(right);
        correct_when_fired += usize::from(right && !fired.is_empty());
        confusion[labels.index_of(label).unwrap()][predicted] += 1;
    }
    println!(
        "RAVDESS actors 01–12, {} clips, shipped rules {} (sha256 {}):",
        clips.len(),
        set.id_string(),
        &set.sha256()[..12]
    );
    println!(
        "{:<26} {:>6} {:>6} {:>9} {:>10}",
        "rule", "label", "fired", "rate", "precision"
    );
    for rule in set.rules() {
        let (fired, right) = per_rule.get(rule.id()).copied().unwrap_or_default();
        let precision = if fired > 0 {
            format!("{:.2}", right as f64 / fired as f64)
        } else {
            "-".into()
        };
        println!(
            "{:<26} {:>6} {:>6} {:>8.1}% {:>10}",
            rule.id(),
            rule.label(),
            fired,
            100.0 * fired as f64 / clips.len() as f64,
            precision
        );
        assert!(right <= fired && fired <= clips.len());
    }
    // With no rule fired the uniform answer's argmax is the first label (calm): the overall
    // figure flatters calm, so the figure on clips where some rule fired is printed too.
    println!(
        "no rule fired on {none_fired} clips; rules-only vote (uniform prior) accuracy {:.3} overall, {:.3} on the {} clips where a rule fired",
        correct as f64 / clips.len() as f64,
        correct_when_fired as f64 / (clips.len() - none_fired).max(1) as f64,
        clips.len() - none_fired
    );
    println!("confusion (rows true calm/angry/panic, cols predicted): {confusion:?}");
    assert!(
        per_rule.values().map(|(f, _)| f).sum::<usize>() > 0,
        "no rule fired on any clip"
    );
}

/// The fused decision: with every rule disabled (and no LLM), or a fusion fitted to
/// acoustic-only, `probs` is `acoustic_probs` bit for bit; the rationale names only the
/// rules that fired, and the contributions add up to the fused log-probabilities.
#[test]
fn fusion_skips_without_rules_and_explains_only_what_fired() {
    use camxuc::pipeline::fusion::FusionParams;
    let mut set = shipped();
    let acoustic = probs([0.41, 0.33, 0.26]);
    let e = profile("panic");
    let fired = set.evaluate(&e, &acoustic);
    assert!(!fired.is_empty());
    let case = |fired| Case {
        unfamiliarity: Some(2.5),
        evidence: &e,
        acoustic: &acoustic,
        fired,
        transcript: None,
    };
    // A fitted fusion that leans on the rules for an unfamiliar clip.
    let params = FusionParams {
        acoustic_weight: 0.8,
        rule_scale: 0.6,
        unfamiliar_acoustic: -0.1,
        unfamiliar_rules: 0.3,
        llm_weight: 0.0,
    };
    let v = RuleVote::new(&set)
        .with_fusion(params)
        .decide(&case(&fired))
        .unwrap();
    let c = v.contributions.clone().unwrap();
    assert!((c.unfamiliarity_term.excess - 1.5).abs() < 1e-6);
    assert!((c.acoustic_weight - 0.65).abs() < 1e-6);
    assert_eq!(c.rules.len(), fired.len());
    for (push, rule) in c.rules.iter().zip(&fired) {
        assert!((push.push - 1.05 * f64::from(rule.weight)).abs() < 1e-6);
    }
    let rationale = v.rationale.unwrap();
    let named: Vec<&str> = rationale
        .split('[')
        .skip(1)
        .filter_map(|s| s.split(']').next())
        .collect();
    assert_eq!(named.len(), fired.len(), "{rationale}");
    for id in named {
        assert!(
            fired.iter().any(|f| f.id == id),
            "{id} did not fire: {rationale}"
        );
    }
    assert!(
        rationale.contains("Mô hình âm học nghiêng về"),
        "{rationale}"
    );
    assert!(rationale.contains("kết luận"), "{rationale}");

    // Acoustic-only fusion: untouched.
    let v = RuleVote::new(&set)
        .with_fusion(FusionParams::ACOUSTIC_ONLY)
        .decide(&case(&fired))
        .unwrap();
    assert_eq!(v.probs, acoustic);
    // Every rule disabled: nothing fires and the probabilities stand, bit for bit, even
    // under a fusion that would otherwise re-weight the acoustic model.
    let ids: Vec<String> = set.rules().iter().map(|r| r.id().to_string()).collect();
    for id in &ids {
        set.set_enabled(id, false);
    }
    let none = set.evaluate(&e, &acoustic);
    assert!(none.is_empty());
    let v = RuleVote::new(&set)
        .with_fusion(params)
        .decide(&case(&none))
        .unwrap();
    assert_eq!(v.probs, acoustic);
    assert_eq!(v.contributions.unwrap().acoustic_weight, 1.0);
}
