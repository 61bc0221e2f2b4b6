//! Refitting the routing threshold with the reasoner in the loop (`refine --refit-routing`).
//!
//! The default threshold routes a fixed share of clips (30 %), fitted without looking at the
//! reasoner. When the reasoner is worse than the acoustic model on uncertain clips, the right
//! move is to route fewer of them; when it is better, more. Candidates are route fractions on
//! a coarse grid; the choice is checked like a rule edit: chosen on all speaker folds but one,
//! applied to the left-out fold, compared with the current routing by a paired bootstrap.

use serde::Serialize;

use super::clips::RefineClip;
use super::search::Problem;
use crate::acoustic::train::fit_routing;
use crate::metrics::Confusion;
use crate::pipeline::fusion::FusionParams;
use crate::rules::RuleSet;

/// Route fractions tried.
pub const FRACTIONS: [f32; 7] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6];

#[derive(Clone, Debug, Serialize)]
pub struct RoutingRefit {
    pub threshold_before: f32,
    pub fraction_before: f64,
    /// Chosen on all refinement clips.
    pub threshold_after: f32,
    pub fraction_after: f64,
    /// The cross-fitted check, the same as for a rule edit.
    pub acceptance: super::Acceptance,
    pub kept: bool,
}

fn top(c: &RefineClip) -> f32 {
    c.probs.argmax().1
}

/// Routed-pipeline labels of `clips` with `rules` when clips below `threshold` are routed.
pub fn labels_at(
    clips: &[&RefineClip],
    rules: &RuleSet,
    fusion: &FusionParams,
    threshold: f32,
) -> Vec<usize> {
    let routed = clips.iter().map(|c| top(c) < threshold).collect();
    Problem::new(clips.to_vec(), routed, rules.labels(), fusion).labels_for(rules)
}

/// The grid threshold with the best routed-pipeline macro-F1 on `clips` (ties: the fraction
/// closest to `prefer`).
pub fn best_threshold(
    clips: &[&RefineClip],
    rules: &RuleSet,
    fusion: &FusionParams,
    prefer: f32,
) -> (f32, f64) {
    let k = rules.labels().len();
    let probs: Vec<Vec<f32>> = clips.iter().map(|c| c.probs.values.clone()).collect();
    let mut best: Option<(f64, f32, f32)> = None;
    for &f in &FRACTIONS {
        let t = fit_routing(&probs, f, &[]).threshold;
        let pred = labels_at(clips, rules, fusion, t);
        let f1 = Confusion::new(k, clips.iter().map(|c| c.truth).zip(pred)).macro_f1();
        let better = match best {
            None => true,
            Some((bf1, bf, _)) => {
                f1 > bf1 + 1e-9
                    || ((f1 - bf1).abs() <= 1e-9 && (f - prefer).abs() < (bf - prefer).abs())
            }
        };
        if better {
            best = Some((f1, f, t));
        }
    }
    best.map(|(f1, _, t)| (t, f1)).unwrap_or((0.0, 0.0))
}

/// Share of `clips` routed at `threshold`.
pub fn fraction_at(clips: &[&RefineClip], threshold: f32) -> f64 {
    clips.iter().filter(|c| top(c) < threshold).count() as f64 / clips.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refine::clips::Source;
    use crate::{Evidence, LabelSet, Probs};

    /// 60 clips: confident and right (top 0.9), or uncertain (top 0.4, acoustic says calm)
    /// with truth `uncertain_truth`; `jitter_local_pct_z` = 2 marks the uncertain ones.
    fn clips(uncertain_truth: usize) -> Vec<RefineClip> {
        let labels = LabelSet::default();
        (0..60)
            .map(|i| {
                let uncertain = i % 3 == 0;
                let truth = if uncertain { uncertain_truth } else { i % 2 };
                let mut p = vec![0.05f32; 3];
                if uncertain {
                    p = vec![0.4, 0.3, 0.3];
                } else {
                    p[truth] = 0.9;
                }
                let mut evidence = Evidence::default();
                evidence
                    .z
                    .insert("jitter_local_pct".into(), if uncertain { 2.0 } else { 0.0 });
                RefineClip {
                    file: format!("c{i}.wav"),
                    truth,
                    speaker: None,
                    evidence,
                    probs: Probs::new(&labels, p),
                    unfamiliarity: None,
                    source: Source::Validation,
                }
            })
            .collect()
    }

    fn rules(label: &str) -> RuleSet {
        RuleSet::parse(
            &format!(
                "[ruleset]\nname = \"t\"\nversion = 1\nlabels = [\"calm\", \"angry\", \"panic\"]\nlanguage = \"en\"\n\
                 [[rule]]\nid = \"r\"\nlabel = \"{label}\"\nwhen = \"jitter_local_pct_z > 1\"\nweight = 3.0\n\
                 statement_vi = \"x\"\nstatement_en = \"x\"\nsource = \"test\"\n"
            ),
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn routes_the_uncertain_clips_when_the_rules_fix_them_and_none_when_they_do_not() {
        // Uncertain clips are panic and the acoustic model says calm; the rule says panic:
        // routing them (a third of the clips) makes every decision right.
        let wrong_acoustic = clips(2);
        let refs: Vec<&RefineClip> = wrong_acoustic.iter().collect();
        let (t, f1) = best_threshold(&refs, &rules("panic"), &FusionParams::RULE_VOTE, 0.0);
        assert!(
            (fraction_at(&refs, t) - 1.0 / 3.0).abs() < 1e-9,
            "threshold {t}"
        );
        assert!((f1 - 1.0).abs() < 1e-9, "{f1}");
        // Uncertain clips are calm, as the acoustic model says, and the rule says angry:
        // routing can only break them, so nothing is routed even though 30 % is preferred.
        let right_acoustic = clips(0);
        let refs: Vec<&RefineClip> = right_acoustic.iter().collect();
        let (t, f1) = best_threshold(&refs, &rules("angry"), &FusionParams::RULE_VOTE, 0.3);
        assert_eq!(fraction_at(&refs, t), 0.0, "threshold {t}");
        // Every clip right (macro-F1 over three labels is 2/3 here: no clip is panic).
        let acoustic: Vec<usize> = refs.iter().map(|c| c.probs.argmax().0).collect();
        assert!(acoustic.iter().zip(&refs).all(|(l, c)| *l == c.truth));
        assert!((f1 - 2.0 / 3.0).abs() < 1e-9, "{f1}");
    }
}
