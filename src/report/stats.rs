//! The numbers behind the report's figures and tables, computed from the per-clip records only
//! (so the report shows exactly what the clips say, whatever summary the caller passes).
//!
//! Predictions outside the label set (`uncertain` from `--abstain-below`, `unusable`) count as
//! wrong: they get an extra "other" index `k` so they never match a true label and never add to
//! any class's predicted count.

use crate::eval::record::EvalRecord;
use crate::metrics::{bootstrap_ci, reliability_bins, ClassScores, Confusion, ReliabilityBin};
use crate::Route;

/// Index of `label` in `labels`, or `labels.len()` ("other") when absent: the metrics' one
/// mapping, which eval uses too.
pub use crate::metrics::label_index;

/// True label indices of the records.
pub fn truth_indices(labels: &[String], records: &[EvalRecord]) -> Vec<usize> {
    records
        .iter()
        .map(|r| label_index(labels, &r.truth))
        .collect()
}

/// One ablation's predictions, by index.
pub fn indices_of<'a>(labels: &[String], preds: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
    preds.into_iter().map(|p| label_index(labels, p)).collect()
}

/// Confusion of `k` labels plus one "other" row/column (`k + 1` square).
pub fn confusion_with_other(k: usize, truth: &[usize], pred: &[usize]) -> Confusion {
    Confusion::new(k + 1, truth.iter().copied().zip(pred.iter().copied()))
}

/// Per-class scores of the `k` real labels ("other" predictions lower recall only): the
/// metrics' confusion, as eval scores them.
pub fn per_class(k: usize, truth: &[usize], pred: &[usize]) -> Vec<ClassScores> {
    Confusion::new(k, truth.iter().copied().zip(pred.iter().copied())).per_class()
}

/// Macro F1 over the `k` real labels on the items `ix` (repeats allowed, as in a bootstrap).
pub fn macro_f1_on(k: usize, truth: &[usize], pred: &[usize], ix: &[usize]) -> f64 {
    let c = Confusion::new(k + 1, ix.iter().map(|&i| (truth[i], pred[i])));
    let pc = c.per_class();
    if k == 0 {
        return 0.0;
    }
    pc[..k].iter().map(|s| s.f1).sum::<f64>() / k as f64
}

pub fn accuracy_on(truth: &[usize], pred: &[usize], ix: &[usize]) -> f64 {
    if ix.is_empty() {
        return 0.0;
    }
    ix.iter().filter(|&&i| truth[i] == pred[i]).count() as f64 / ix.len() as f64
}

/// A metric with its 95 % bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WithCi {
    pub value: f64,
    pub ci95: [f64; 2],
}

/// One ablation's accuracy and macro-F1 on the records, and its paired-bootstrap difference
/// to the acoustic-only ablation (same resampled clips for both).
#[derive(Clone, Debug, PartialEq)]
pub struct AblationRow {
    pub name: &'static str,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// `None` for the acoustic-only row itself.
    pub accuracy_minus_acoustic: Option<WithCi>,
    pub macro_f1_minus_acoustic: Option<WithCi>,
    pub per_class_f1: Vec<f64>,
}

/// The ablations present in the records, in display order: acoustic only, rules only,
/// LLM only (when every record has it), routed.
pub fn ablation_predictions(records: &[EvalRecord]) -> Vec<(&'static str, Vec<&str>)> {
    let mut out = vec![
        (
            "acoustic only",
            records
                .iter()
                .map(|r| r.ablations.acoustic_only.as_str())
                .collect(),
        ),
        (
            "rules only",
            records
                .iter()
                .map(|r| r.ablations.rules_only.as_str())
                .collect(),
        ),
    ];
    let llm: Option<Vec<&str>> = records
        .iter()
        .map(|r| r.ablations.llm_only.as_deref())
        .collect();
    if let Some(llm) = llm.filter(|v| !v.is_empty()) {
        out.push(("LLM only", llm));
    }
    out.push((
        "routed",
        records
            .iter()
            .map(|r| r.ablations.routed.as_str())
            .collect(),
    ));
    out
}

pub fn ablation_rows(
    labels: &[String],
    records: &[EvalRecord],
    reps: usize,
    seed: u64,
) -> Vec<AblationRow> {
    let k = labels.len();
    let truth = truth_indices(labels, records);
    let n = truth.len();
    let all: Vec<usize> = (0..n).collect();
    let preds: Vec<(&'static str, Vec<usize>)> = ablation_predictions(records)
        .into_iter()
        .map(|(name, p)| (name, indices_of(labels, p)))
        .collect();
    let acoustic = preds[0].1.clone();
    preds
        .into_iter()
        .enumerate()
        .map(|(i, (name, pred))| {
            let diff = |metric: &dyn Fn(&[usize], &[usize]) -> f64| WithCi {
                value: metric(&all, &pred) - metric(&all, &acoustic),
                ci95: bootstrap_ci(n, reps, seed, |ix| {
                    metric(ix, &pred) - metric(ix, &acoustic)
                }),
            };
            let acc = |ix: &[usize], p: &[usize]| accuracy_on(&truth, p, ix);
            let f1 = |ix: &[usize], p: &[usize]| macro_f1_on(k, &truth, p, ix);
            AblationRow {
                name,
                accuracy: accuracy_on(&truth, &pred, &all),
                macro_f1: macro_f1_on(k, &truth, &pred, &all),
                accuracy_minus_acoustic: (i > 0).then(|| diff(&acc)),
                macro_f1_minus_acoustic: (i > 0).then(|| diff(&f1)),
                per_class_f1: per_class(k, &truth, &pred).iter().map(|s| s.f1).collect(),
            }
        })
        .collect()
}

/// Accuracy and macro F1 of the final (routed) decisions with 95 % bootstrap intervals;
/// `None` without records.
pub fn final_with_ci(
    labels: &[String],
    records: &[EvalRecord],
    reps: usize,
    seed: u64,
) -> Option<(WithCi, WithCi)> {
    if records.is_empty() {
        return None;
    }
    let k = labels.len();
    let truth = truth_indices(labels, records);
    let pred = indices_of(labels, records.iter().map(|r| r.ablations.routed.as_str()));
    let all: Vec<usize> = (0..truth.len()).collect();
    let acc = WithCi {
        value: accuracy_on(&truth, &pred, &all),
        ci95: bootstrap_ci(truth.len(), reps, seed, |ix| accuracy_on(&truth, &pred, ix)),
    };
    let f1 = WithCi {
        value: macro_f1_on(k, &truth, &pred, &all),
        ci95: bootstrap_ci(truth.len(), reps, seed, |ix| {
            macro_f1_on(k, &truth, &pred, ix)
        }),
    };
    Some((acc, f1))
}

/// Top-label confidence of the acoustic model and whether its label was right, per clip.
/// `before_calibration` undoes the temperature: p_raw = softmax(T · ln p_calibrated).
pub fn acoustic_confidence(
    records: &[EvalRecord],
    before_calibration: bool,
) -> (Vec<f64>, Vec<bool>) {
    records
        .iter()
        .map(|r| {
            let p: Vec<f64> = r
                .decision
                .acoustic_probs
                .values
                .iter()
                .map(|&v| v as f64)
                .collect();
            let p = if before_calibration {
                uncalibrate(&p, r.temperature as f64)
            } else {
                p
            };
            let (best, conf) =
                p.iter().enumerate().fold(
                    (0, f64::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                );
            let label = r
                .decision
                .acoustic_probs
                .labels
                .get(best)
                .map(String::as_str)
                .unwrap_or("");
            let conf = if conf.is_finite() { conf } else { 0.0 };
            (conf, label.eq_ignore_ascii_case(r.truth.trim()))
        })
        .unzip()
}

/// softmax(T · ln p): the model's probabilities before temperature scaling divided its logits
/// by T. Zero probabilities are floored so the logarithm stays finite.
pub fn uncalibrate(p: &[f64], temperature: f64) -> Vec<f64> {
    let t = if temperature.is_finite() && temperature > 0.0 {
        temperature
    } else {
        1.0
    };
    let logits: Vec<f64> = p.iter().map(|&v| t * v.max(1e-12).ln()).collect();
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|&z| (z - m).exp()).collect();
    let s: f64 = e.iter().sum();
    if s > 0.0 && s.is_finite() {
        e.iter().map(|v| v / s).collect()
    } else {
        p.to_vec()
    }
}

/// Reliability bins and ECE (same 15-bin ECE definition as `eval --json`).
pub struct Reliability {
    pub bins: Vec<ReliabilityBin>,
    pub ece: f64,
}

pub const RELIABILITY_BINS: usize = 10;
pub const ECE_BINS: usize = 15;

pub fn reliability(records: &[EvalRecord], before_calibration: bool) -> Reliability {
    let (conf, ok) = acoustic_confidence(records, before_calibration);
    Reliability {
        bins: reliability_bins(&conf, &ok, RELIABILITY_BINS),
        ece: crate::metrics::expected_calibration_error(&conf, &ok, ECE_BINS),
    }
}

/// Accuracy when the `i` least confident clips (acoustic top probability) go to the reasoner
/// and the others keep the acoustic label, for i = 0..=n. Point `i` is at coverage i / n.
pub fn coverage_curve(records: &[EvalRecord]) -> Vec<(f64, f64)> {
    let n = records.len();
    if n == 0 {
        return Vec::new();
    }
    let (conf, _) = acoustic_confidence(records, false);
    let mut order: Vec<usize> = (0..n).collect();
    // Ties keep input order so the curve is deterministic.
    order.sort_by(|&a, &b| conf[a].total_cmp(&conf[b]));
    let right = |label: &str, r: &EvalRecord| label.trim().eq_ignore_ascii_case(r.truth.trim());
    let mut correct = records
        .iter()
        .filter(|r| right(&r.ablations.acoustic_only, r))
        .count() as i64;
    let mut out = Vec::with_capacity(n + 1);
    out.push((0.0, correct as f64 / n as f64));
    for (i, &c) in order.iter().enumerate() {
        let r = &records[c];
        correct +=
            right(&r.ablations.reasoner, r) as i64 - right(&r.ablations.acoustic_only, r) as i64;
        out.push(((i + 1) as f64 / n as f64, correct as f64 / n as f64));
    }
    out
}

/// The actual router's point: (routed fraction, accuracy of the routed ablation).
pub fn operating_point(records: &[EvalRecord]) -> Option<(f64, f64)> {
    if records.is_empty() {
        return None;
    }
    let n = records.len() as f64;
    let routed = records
        .iter()
        .filter(|r| r.decision.route != Route::Acoustic)
        .count() as f64;
    let ok = records
        .iter()
        .filter(|r| {
            r.ablations
                .routed
                .trim()
                .eq_ignore_ascii_case(r.truth.trim())
        })
        .count() as f64;
    Some((routed / n, ok / n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::record::AblationLabels;
    use crate::{Decision, Evidence, LabelSet, Probs, DECISION_SCHEMA_VERSION};
    use std::collections::BTreeMap;

    fn rec(truth: &str, p: [f32; 3], acoustic: &str, reasoner: &str, routed: bool) -> EvalRecord {
        let labels = LabelSet::default();
        let probs = Probs::new(&labels, p.to_vec());
        EvalRecord {
            decision: Decision {
                schema_version: DECISION_SCHEMA_VERSION,
                file: "x.wav".into(),
                segment: None,
                label: if routed {
                    reasoner.into()
                } else {
                    acoustic.into()
                },
                probs: probs.clone(),
                acoustic_probs: probs,
                route: if routed {
                    Route::Rules
                } else {
                    Route::Acoustic
                },
                unfamiliarity: None,
                evidence: Evidence::default(),
                fired_rules: vec![],
                contributions: None,
                rationale: None,
                rationale_language: None,
                rationale_check: None,
                transcript: None,
                timings_ms: BTreeMap::new(),
            },
            truth: truth.into(),
            speaker: None,
            ablations: AblationLabels {
                acoustic_only: acoustic.into(),
                rules_only: reasoner.into(),
                llm_only: None,
                reasoner: reasoner.into(),
                routed: if routed {
                    reasoner.into()
                } else {
                    acoustic.into()
                },
            },
            perturbed_label: None,
            temperature: 1.5,
        }
    }

    fn sample() -> Vec<EvalRecord> {
        vec![
            rec("calm", [0.9, 0.05, 0.05], "calm", "calm", false),
            rec("angry", [0.5, 0.4, 0.1], "calm", "angry", true),
            rec("panic", [0.2, 0.3, 0.5], "panic", "angry", true),
            rec("angry", [0.1, 0.8, 0.1], "angry", "angry", false),
            rec("panic", [0.34, 0.33, 0.33], "calm", "panic", true),
            rec("calm", [0.6, 0.3, 0.1], "calm", "uncertain", false),
        ]
    }

    #[test]
    fn coverage_curve_ends_at_acoustic_and_reasoner_accuracy() {
        let r = sample();
        let c = coverage_curve(&r);
        assert_eq!(c.len(), r.len() + 1);
        let acoustic = r
            .iter()
            .filter(|x| x.ablations.acoustic_only == x.truth)
            .count() as f64
            / 6.0;
        let reasoner = r.iter().filter(|x| x.ablations.reasoner == x.truth).count() as f64 / 6.0;
        assert_eq!(c[0], (0.0, acoustic));
        assert_eq!(c[6], (1.0, reasoner));
        // The least confident clip (0.34) is routed first: it was wrong and the reasoner fixes it.
        assert!((c[1].1 - (acoustic + 1.0 / 6.0)).abs() < 1e-12);
    }

    #[test]
    fn reliability_bins_count_every_clip_once() {
        let r = sample();
        for before in [false, true] {
            let rel = reliability(&r, before);
            assert_eq!(rel.bins.len(), RELIABILITY_BINS);
            assert_eq!(rel.bins.iter().map(|b| b.count).sum::<usize>(), r.len());
            assert!((0.0..=1.0).contains(&rel.ece));
        }
    }

    #[test]
    fn uncalibrate_sharpens_with_temperature_above_one_and_is_identity_at_one() {
        let p = [0.6, 0.3, 0.1];
        let same = uncalibrate(&p, 1.0);
        for (a, b) in same.iter().zip(p) {
            assert!((a - b).abs() < 1e-9);
        }
        let sharp = uncalibrate(&p, 2.0);
        // p^2 / sum p^2 = 0.36 / 0.46.
        assert!((sharp[0] - 0.36 / 0.46).abs() < 1e-9);
        assert!((sharp.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn abstentions_lower_recall_but_not_other_classes_precision() {
        let labels: Vec<String> = ["calm", "angry", "panic"].map(String::from).to_vec();
        let truth = indices_of(&labels, ["calm", "calm", "angry"]);
        let pred = indices_of(&labels, ["calm", "uncertain", "angry"]);
        assert_eq!(pred[1], 3);
        let pc = per_class(3, &truth, &pred);
        assert_eq!(pc.len(), 3);
        assert_eq!(pc[0].recall, 0.5);
        assert_eq!(pc[0].precision, 1.0);
        assert_eq!(pc[1].f1, 1.0);
        assert_eq!(pc[0].support, 2);
    }

    #[test]
    fn ablation_rows_difference_is_zero_for_acoustic_and_matches_values() {
        let r = sample();
        let labels: Vec<String> = ["calm", "angry", "panic"].map(String::from).to_vec();
        let rows = ablation_rows(&labels, &r, 200, 7);
        assert_eq!(
            rows.iter().map(|x| x.name).collect::<Vec<_>>(),
            ["acoustic only", "rules only", "routed"]
        );
        assert!(rows[0].accuracy_minus_acoustic.is_none());
        let d = rows[2].accuracy_minus_acoustic.unwrap();
        assert!((d.value - (rows[2].accuracy - rows[0].accuracy)).abs() < 1e-12);
        assert!(d.ci95[0] <= d.ci95[1]);
        let (f, acc) = operating_point(&r).unwrap();
        assert_eq!(f, 0.5);
        assert!((acc - rows[2].accuracy).abs() < 1e-12);
    }
}
