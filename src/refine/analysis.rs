//! Error analysis of the current rule set on the refinement clips: what the acoustic model
//! confuses, how routing splits the clips, and how each rule does where it fires.

use super::search::Problem;
use crate::metrics::Confusion;
use crate::rules::RuleSet;

/// How one rule does on the refinement clips.
#[derive(Clone, Debug)]
pub struct RuleStats {
    pub id: String,
    pub label: String,
    pub enabled: bool,
    /// Share of all clips where it fires.
    pub firing_rate: f64,
    /// Of those, the share whose true label is the rule's.
    pub precision: Option<f64>,
    /// Routed clips where it fires.
    pub fires_on_routed: usize,
    /// Routed-pipeline macro-F1 change when the rule alone is switched off (positive: it hurts).
    pub f1_without: f64,
}

#[derive(Clone, Debug)]
pub struct ErrorAnalysis {
    pub n: usize,
    pub labels: Vec<String>,
    /// Acoustic model alone (rows truth, columns predicted).
    pub acoustic_confusion: Vec<Vec<u32>>,
    /// (truth, predicted, count) of the acoustic model's errors, most frequent first.
    pub confused_pairs: Vec<(String, String, u32)>,
    pub routed: usize,
    pub acoustic_accuracy_routed: Option<f64>,
    pub acoustic_accuracy_kept: Option<f64>,
    pub rules_accuracy_routed: Option<f64>,
    pub acoustic_macro_f1: f64,
    pub routed_macro_f1: f64,
    pub rules: Vec<RuleStats>,
}

pub fn analyse(rules: &RuleSet, p: &Problem) -> ErrorAnalysis {
    let labels = rules.labels();
    let k = labels.len();
    let truth: Vec<usize> = p.clips.iter().map(|c| c.truth).collect();
    let acoustic: Vec<usize> = p.clips.iter().map(|c| c.probs.argmax().0).collect();
    let routed_pred = p.labels_for(rules);
    let conf = Confusion::new(k, truth.iter().copied().zip(acoustic.iter().copied()));
    let mut pairs = Vec::new();
    for (t, row) in conf.counts.iter().enumerate() {
        for (q, &c) in row.iter().enumerate() {
            if t != q && c > 0 {
                pairs.push((labels.names()[t].clone(), labels.names()[q].clone(), c));
            }
        }
    }
    pairs.sort_by_key(|p| std::cmp::Reverse(p.2));
    let acc_where = |pred: &[usize], routed: bool| {
        let ix: Vec<usize> = (0..truth.len())
            .filter(|&i| p.routed[i] == routed)
            .collect();
        (!ix.is_empty())
            .then(|| ix.iter().filter(|&&i| pred[i] == truth[i]).count() as f64 / ix.len() as f64)
    };
    let base_f1 = p.score(rules).macro_f1;
    let stats = rules
        .rules()
        .iter()
        .map(|r| {
            let fires: Vec<usize> = (0..p.clips.len())
                .filter(|&i| r.matches(&p.clips[i].evidence, &p.clips[i].probs))
                .collect();
            let right = fires
                .iter()
                .filter(|&&i| labels.names()[truth[i]] == r.label())
                .count();
            let f1_without = if r.enabled() {
                let mut without = rules.clone();
                without.set_enabled(r.id(), false);
                p.score(&without).macro_f1 - base_f1
            } else {
                0.0
            };
            RuleStats {
                id: r.id().to_string(),
                label: r.label().to_string(),
                enabled: r.enabled(),
                firing_rate: fires.len() as f64 / p.clips.len().max(1) as f64,
                precision: (!fires.is_empty()).then(|| right as f64 / fires.len() as f64),
                fires_on_routed: fires.iter().filter(|&&i| p.routed[i]).count(),
                f1_without,
            }
        })
        .collect();
    ErrorAnalysis {
        n: truth.len(),
        labels: labels.names().to_vec(),
        acoustic_confusion: conf.counts.clone(),
        confused_pairs: pairs,
        routed: p.routed.iter().filter(|&&r| r).count(),
        acoustic_accuracy_routed: acc_where(&acoustic, true),
        acoustic_accuracy_kept: acc_where(&acoustic, false),
        rules_accuracy_routed: acc_where(&routed_pred, true),
        acoustic_macro_f1: conf.macro_f1(),
        routed_macro_f1: base_f1,
        rules: stats,
    }
}
