//! The proposal search: greedy edits of a rule set scored with the rule-vote reasoner.
//!
//! Edits: scale every weight (how far the rules are trusted against the acoustic prior),
//! disable a rule that hurts, reverse its label, halve or double its weight, move one threshold
//! of its condition, or add a one-feature rule (a decision stump on a z-scored, gain-invariant
//! feature) for a confused class pair. Each candidate is scored on the refinement clips with
//! the routed pipeline (acoustic label for kept clips, the rule vote for routed ones). By
//! default ([`Objective::LogLikelihood`]) the search maximises the vote's mean ln p(truth) on
//! routed clips and refuses any edit that lowers macro-F1; [`Objective::MacroF1`] maximises
//! macro-F1 with the log-likelihood as tie-break. At most `max_edits` per round.
//!
//! Guards against fitting noise: mined rules must fire on enough clips and have a precision
//! on all clips clearly above their label's base rate; a reversed rule must be more precise
//! for its new label than for its old one; thresholds move on a coarse grid.

use super::clips::RefineClip;
use super::wording;
use crate::math::{argmax, log_softmax_at};
use crate::metrics::Confusion;
use crate::pipeline::fusion::{floored_logp, FusionParams};
use crate::rules::{CompareOp, Condition, Operand, Rule, RuleSet, Statements};
use crate::LabelSet;

/// What the greedy search maximises on the refinement clips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Routed-pipeline macro-F1 (a step function: a few flipped clips decide).
    MacroF1,
    /// Mean ln p(truth) of the rule vote on routed clips (smooth, a proper scoring rule), with
    /// no drop in macro-F1 allowed.
    LogLikelihood,
}

/// Knobs of the search (defaults are what the README's figures used).
#[derive(Clone, Debug)]
pub struct SearchConfig {
    pub objective: Objective,
    /// Smallest mean log-likelihood gain per edit (nats per routed clip) with `LogLikelihood`.
    pub min_log_likelihood_gain: f64,
    pub max_edits: usize,
    /// z thresholds tried for mined rules.
    pub stump_thresholds: Vec<f64>,
    /// A mined rule must fire on at least this share of the clips …
    pub min_support: f64,
    /// … and be right this much more often than its label's base rate.
    pub min_lift: f64,
    /// Provenance written into new and edited rules (e.g. `refinement round 2, 2026-11-26`).
    pub source: String,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            objective: Objective::LogLikelihood,
            min_log_likelihood_gain: 0.01,
            max_edits: 1,
            stump_thresholds: vec![-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5],
            min_support: 0.05,
            min_lift: 0.2,
            source: "refinement".into(),
        }
    }
}

/// Features never mined on their own: absolute pitch in Hz depends on the speaker's sex and
/// age (the semitone measures are relative), and the speech length depends on the script.
const NOT_MINED: &[&str] = &[
    "f0_mean_hz_z",
    "f0_median_hz_z",
    "f0_std_hz_z",
    "f0_range_hz_z",
    "speech_span_s_z",
];

/// One accepted edit, for the changelog and the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Edit {
    pub kind: &'static str,
    pub rule_id: String,
    /// What changed, in words (`hnr_db_z < -0.5 → hnr_db_z < 0`).
    pub description: String,
    /// Routed-pipeline macro-F1 before and after the edit, on the search clips.
    pub macro_f1_before: f64,
    pub macro_f1_after: f64,
}

/// The routed pipeline's score on a set of clips.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub macro_f1: f64,
    /// Mean ln p(truth) of the rule vote on routed clips (the tie-break).
    pub log_likelihood: f64,
}

const EPS: f64 = 1e-9;

impl Score {
    /// Ranks two candidates under `objective`.
    fn beats(&self, other: &Score, objective: Objective) -> bool {
        match objective {
            Objective::MacroF1 => {
                self.macro_f1 > other.macro_f1 + EPS
                    || ((self.macro_f1 - other.macro_f1).abs() <= EPS
                        && self.log_likelihood > other.log_likelihood + EPS)
            }
            Objective::LogLikelihood => self.log_likelihood > other.log_likelihood + EPS,
        }
    }

    /// Whether an edit scoring `self` is worth taking over the current `base`.
    fn improves_on(&self, base: &Score, cfg: &SearchConfig) -> bool {
        match cfg.objective {
            Objective::MacroF1 => self.macro_f1 > base.macro_f1 + EPS,
            Objective::LogLikelihood => {
                self.log_likelihood > base.log_likelihood + cfg.min_log_likelihood_gain
                    && self.macro_f1 >= base.macro_f1 - EPS
            }
        }
    }
}

/// The clips with what every candidate evaluation needs precomputed.
pub struct Problem<'a> {
    pub clips: Vec<&'a RefineClip>,
    pub routed: Vec<bool>,
    n_labels: usize,
    labels: &'a LabelSet,
    /// a · ln p per clip and label: the fused decision's starting logits
    /// ([`crate::pipeline::fusion::fuse`], the model's fusion parameters).
    prior: Vec<Vec<f64>>,
    /// The fusion's rule scale b per clip: a fired rule adds b · weight to its label.
    rule_scale: Vec<f64>,
    acoustic_pred: Vec<usize>,
}

/// A rule as the search scores it: label, weight and where it fires.
#[derive(Clone, Debug)]
struct Compiled {
    label: usize,
    weight: f64,
    fires: Vec<bool>,
}

impl<'a> Problem<'a> {
    /// The search problem on `clips`, scored with the fused decision of `fusion` (what
    /// `classify` serves), at each clip's unfamiliarity (stored held-out predictions carry
    /// none: the weights of a familiar clip, ũ = 0, apply).
    pub fn new(
        clips: Vec<&'a RefineClip>,
        routed: Vec<bool>,
        labels: &'a LabelSet,
        fusion: &FusionParams,
    ) -> Self {
        let weights: Vec<(f64, f64)> = clips
            .iter()
            .map(|c| fusion.weights_for(c.unfamiliarity))
            .collect();
        let prior = clips
            .iter()
            .zip(&weights)
            .map(|(c, (a, _))| floored_logp(&c.probs).iter().map(|l| a * l).collect())
            .collect();
        let rule_scale = weights.iter().map(|(_, b)| *b).collect();
        let acoustic_pred = clips.iter().map(|c| c.probs.argmax().0).collect();
        Self {
            clips,
            routed,
            n_labels: labels.len(),
            labels,
            prior,
            rule_scale,
            acoustic_pred,
        }
    }

    fn compile(&self, rule: &Rule) -> Option<Compiled> {
        if !rule.enabled() {
            return None;
        }
        let label = self.labels.index_of(rule.label())?;
        Some(Compiled {
            label,
            weight: rule.weight(),
            fires: self
                .clips
                .iter()
                .map(|c| rule.matches(&c.evidence, &c.probs))
                .collect(),
        })
    }

    fn compile_set(&self, rules: &RuleSet) -> Vec<Option<Compiled>> {
        rules.rules().iter().map(|r| self.compile(r)).collect()
    }

    /// Routed-pipeline labels for compiled rules (`extra` added, `skip` left out).
    fn predict(
        &self,
        compiled: &[Option<Compiled>],
        skip: Option<usize>,
        extra: Option<&Compiled>,
    ) -> (Vec<usize>, f64) {
        let mut pred = self.acoustic_pred.clone();
        let (mut ll, mut n_routed) = (0.0, 0usize);
        for i in (0..self.clips.len()).filter(|&i| self.routed[i]) {
            let mut logits = self.prior[i].clone();
            let active = compiled
                .iter()
                .enumerate()
                .filter(|(j, _)| Some(*j) != skip)
                .filter_map(|(_, c)| c.as_ref())
                .chain(extra);
            for c in active {
                if c.fires[i] {
                    logits[c.label] += self.rule_scale[i] * c.weight;
                }
            }
            ll += log_softmax_at(&logits, self.clips[i].truth);
            n_routed += 1;
            pred[i] = argmax(&logits);
        }
        (pred, ll / n_routed.max(1) as f64)
    }

    fn score_of(&self, pred: &[usize], ll: f64) -> Score {
        let truth = self.clips.iter().map(|c| c.truth);
        Score {
            macro_f1: Confusion::new(self.n_labels, truth.zip(pred.iter().copied())).macro_f1(),
            log_likelihood: ll,
        }
    }

    /// The routed pipeline's labels for a rule set (what `classify --llm none` would say).
    pub fn labels_for(&self, rules: &RuleSet) -> Vec<usize> {
        self.predict(&self.compile_set(rules), None, None).0
    }

    pub fn score(&self, rules: &RuleSet) -> Score {
        let (pred, ll) = self.predict(&self.compile_set(rules), None, None);
        self.score_of(&pred, ll)
    }

    /// Share of the clips where a compiled rule fires, and its precision there.
    fn support_precision(&self, c: &Compiled) -> (f64, f64) {
        let fired: Vec<usize> = (0..self.clips.len()).filter(|&i| c.fires[i]).collect();
        let right = fired
            .iter()
            .filter(|&&i| self.clips[i].truth == c.label)
            .count();
        (
            fired.len() as f64 / self.clips.len().max(1) as f64,
            right as f64 / fired.len().max(1) as f64,
        )
    }

    fn base_rate(&self, label: usize) -> f64 {
        self.clips.iter().filter(|c| c.truth == label).count() as f64
            / self.clips.len().max(1) as f64
    }
}

/// A candidate change to the rule set.
enum Change {
    Disable(usize),
    Replace(usize, Rule),
    Add(Rule),
    /// Every rule's weight times this (how far rules are trusted against the acoustic prior).
    Scale(f64),
}

struct Candidate {
    kind: &'static str,
    change: Change,
    description: String,
}

/// The numeric constants of a condition, in traversal order, with the feature they are
/// compared against.
fn constants(c: &Condition, out: &mut Vec<(String, f64)>) {
    match c {
        Condition::Compare { left, right, .. } => match (left, right) {
            (Operand::Feature(f), Operand::Number(x))
            | (Operand::Number(x), Operand::Feature(f)) => out.push((f.clone(), *x)),
            _ => {}
        },
        Condition::And(a, b) | Condition::Or(a, b) => {
            constants(a, out);
            constants(b, out);
        }
        Condition::Not(a) => constants(a, out),
    }
}

/// `c` with its `k`-th feature constant (as `constants` counts them) set to `value`.
fn with_constant(c: &Condition, k: &mut usize, value: f64) -> Condition {
    match c {
        Condition::Compare { left, op, right } => {
            let is_const = matches!(
                (left, right),
                (Operand::Feature(_), Operand::Number(_))
                    | (Operand::Number(_), Operand::Feature(_))
            );
            if !is_const {
                return c.clone();
            }
            let hit = *k == 0;
            *k = k.wrapping_sub(1);
            if !hit {
                return c.clone();
            }
            let swap = |o: &Operand| match o {
                Operand::Number(_) => Operand::Number(value),
                other => other.clone(),
            };
            Condition::Compare {
                left: swap(left),
                op: *op,
                right: swap(right),
            }
        }
        Condition::And(a, b) => {
            let a = with_constant(a, k, value);
            Condition::And(Box::new(a), Box::new(with_constant(b, k, value)))
        }
        Condition::Or(a, b) => {
            let a = with_constant(a, k, value);
            Condition::Or(Box::new(a), Box::new(with_constant(b, k, value)))
        }
        Condition::Not(a) => Condition::Not(Box::new(with_constant(a, k, value))),
    }
}

/// Rounds a threshold to two decimals so rule files stay readable.
fn tidy(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    sorted[pos.round() as usize]
}

/// Factors tried for every rule's weight at once. The grid reaches down to a quarter: when the
/// rules are written for other voices (the synthetic corpus, a new site) the right amount of
/// trust can be far below the hand-written weights, and halving twice costs two rounds, each
/// with its own acceptance test.
const SCALE_FACTORS: [f64; 5] = [0.25, 0.5, 0.75, 1.5, 2.0];

fn candidates(rules: &RuleSet, p: &Problem, cfg: &SearchConfig) -> Vec<Candidate> {
    let labels = rules.labels();
    let mut out: Vec<Candidate> = SCALE_FACTORS
        .iter()
        .map(|&f| Candidate {
            kind: "scale",
            change: Change::Scale(f),
            description: format!("every rule's weight × {f}"),
        })
        .collect();
    for (j, rule) in rules.rules().iter().enumerate() {
        if !rule.enabled() {
            continue;
        }
        out.push(Candidate {
            kind: "disable",
            change: Change::Disable(j),
            description: format!(
                "disable `{}` ({} → {})",
                rule.id(),
                rule.condition_text(),
                rule.label()
            ),
        });
        for to in labels.names().iter().filter(|l| *l != rule.label()) {
            let statements = wording::relabelled(rule.statements(), rule.label(), to);
            if let Ok(r) = Rule::new(
                rule.id(),
                to,
                rule.condition_text(),
                rule.weight(),
                statements,
                &cfg.source,
                labels,
            ) {
                out.push(Candidate {
                    kind: "reverse",
                    change: Change::Replace(j, r),
                    description: format!("`{}`: label {} → {}", rule.id(), rule.label(), to),
                });
            }
        }
        for w in [rule.weight() / 2.0, rule.weight() * 2.0] {
            let w = tidy(w.clamp(0.1, 4.0));
            if (w - rule.weight()).abs() > 1e-9 {
                if let Ok(r) = rule.with_weight(w, labels) {
                    out.push(Candidate {
                        kind: "reweight",
                        change: Change::Replace(j, r.with_source(&cfg.source)),
                        description: format!("`{}`: weight {} → {w}", rule.id(), rule.weight()),
                    });
                }
            }
        }
        let mut consts = Vec::new();
        constants(rule.condition(), &mut consts);
        for (k, (feature, value)) in consts.iter().enumerate() {
            for v in retune_values(feature, *value, p) {
                let cond = with_constant(rule.condition(), &mut k.clone(), v);
                let text = cond.to_string();
                if let Ok(r) = rule.with_condition(&text, labels) {
                    out.push(Candidate {
                        kind: "retune",
                        change: Change::Replace(j, r.with_source(&cfg.source)),
                        description: format!(
                            "`{}`: {} → {}",
                            rule.id(),
                            rule.condition_text(),
                            text
                        ),
                    });
                }
            }
        }
    }
    out.extend(stumps(rules, p, cfg));
    out
}

/// New values tried for one threshold: a coarse grid around it for z-scores, the deciles of
/// the feature on the clips otherwise.
fn retune_values(feature: &str, value: f64, p: &Problem) -> Vec<f64> {
    let mut vals: Vec<f64> = if feature.ends_with("_z") {
        [-1.0, -0.5, -0.25, 0.25, 0.5, 1.0]
            .iter()
            .map(|d| tidy(value + d))
            .collect()
    } else {
        let mut xs: Vec<f64> = p
            .clips
            .iter()
            .filter_map(|c| c.evidence.get(feature))
            .filter(|x| x.is_finite())
            .collect();
        if xs.len() < 10 {
            return Vec::new();
        }
        xs.sort_by(f64::total_cmp);
        (1..10)
            .map(|d| {
                let q = quantile(&xs, d as f64 / 10.0);
                // Three significant digits.
                let scale = 10f64.powf(q.abs().max(1e-9).log10().floor() - 2.0);
                (q / scale).round() * scale
            })
            .collect()
    };
    vals.retain(|v| (v - value).abs() > 1e-9);
    vals.dedup();
    vals
}

/// One-feature rules for the labels routed clips were confused about.
fn stumps(rules: &RuleSet, p: &Problem, cfg: &SearchConfig) -> Vec<Candidate> {
    let labels = rules.labels();
    // Labels that routed clips truly had but the current vote missed.
    let current = p.predict(&p.compile_set(rules), None, None).0;
    let mut missed = vec![0usize; p.n_labels];
    for i in (0..p.clips.len()).filter(|&i| p.routed[i]) {
        if current[i] != p.clips[i].truth {
            missed[p.clips[i].truth] += 1;
        }
    }
    let features: Vec<String> = crate::rules::known_identifiers(labels)
        .into_iter()
        .filter(|n| n.ends_with("_z") && !NOT_MINED.contains(&n.as_str()))
        .collect();
    let mut out = Vec::new();
    for (l, label) in labels.names().iter().enumerate() {
        if missed[l] == 0 {
            continue;
        }
        for feature in &features {
            for &t in &cfg.stump_thresholds {
                for above in [true, false] {
                    let op = if above { CompareOp::Gt } else { CompareOp::Lt };
                    let cond = Condition::compare(feature, op, t);
                    let fires: Vec<bool> = p
                        .clips
                        .iter()
                        .map(|c| cond.evaluate(&c.evidence, &c.probs))
                        .collect();
                    let probe = Compiled {
                        label: l,
                        weight: 1.0,
                        fires,
                    };
                    let (support, precision) = p.support_precision(&probe);
                    if support < cfg.min_support || precision < p.base_rate(l) + cfg.min_lift {
                        continue;
                    }
                    let base = feature.trim_end_matches("_z").replace('_', "-");
                    let side = if above { "high" } else { "low" };
                    let id = unique_id(rules, &format!("mined-{label}-{base}-{side}"));
                    let w = naive_bayes_weight(p, &probe);
                    let statements: Statements = wording::stump(feature, above, t, label);
                    if let Ok(r) = Rule::new(
                        &id,
                        label,
                        &cond.to_string(),
                        w,
                        statements,
                        &cfg.source,
                        labels,
                    ) {
                        out.push(Candidate {
                            kind: "add",
                            change: Change::Add(r),
                            description: format!(
                                "`{id}`: {cond} → {label} (weight {w}; fires on {:.0} % of clips, right {:.0} % of the time)",
                                100.0 * support,
                                100.0 * precision
                            ),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The weight a mined rule gets: its log-likelihood ratio ln P(fires | label) / P(fires | other
/// labels) on the clips (smoothed), rounded to 0.1 and kept within [0.2, 3]. Derived, not
/// searched: one less knob for the search to fit noise with.
fn naive_bayes_weight(p: &Problem, c: &Compiled) -> f64 {
    let (mut fire_in, mut n_in, mut fire_out, mut n_out) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (i, clip) in p.clips.iter().enumerate() {
        let fired = if c.fires[i] { 1.0 } else { 0.0 };
        if clip.truth == c.label {
            fire_in += fired;
            n_in += 1.0;
        } else {
            fire_out += fired;
            n_out += 1.0;
        }
    }
    let llr = ((fire_in + 0.5) / (n_in + 1.0) / ((fire_out + 0.5) / (n_out + 1.0))).ln();
    (llr.clamp(0.2, 3.0) * 10.0).round() / 10.0
}

fn unique_id(rules: &RuleSet, base: &str) -> String {
    if rules.rule(base).is_none() {
        return base.to_string();
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| rules.rule(id).is_none())
        .unwrap_or_else(|| base.to_string())
}

/// Multiplies every rule's weight by `f` (exact: the search scored the unrounded product).
fn scale_weights(rules: &mut RuleSet, f: f64, source: &str) -> bool {
    let labels = rules.labels().clone();
    let scaled: Vec<Rule> = rules
        .rules()
        .iter()
        .filter_map(|r| r.with_weight(r.weight() * f, &labels).ok())
        .map(|r| r.with_source(source))
        .collect();
    scaled.into_iter().all(|r| rules.replace_rule(r).is_ok())
}

/// Checks the extra guard of a reversal: the rule must be more precise for its new label.
fn reversal_holds(p: &Problem, old: &Compiled, new_label: usize) -> bool {
    let moved = Compiled {
        label: new_label,
        ..old.clone()
    };
    p.support_precision(&moved).1 > p.support_precision(old).1
}

/// Greedy search from `rules`: the edited set and the edits taken, in order.
pub fn propose(rules: &RuleSet, p: &Problem, cfg: &SearchConfig) -> (RuleSet, Vec<Edit>) {
    let mut current = rules.clone();
    let mut edits = Vec::new();
    for _ in 0..cfg.max_edits {
        let compiled = p.compile_set(&current);
        let (pred, ll) = p.predict(&compiled, None, None);
        let base = p.score_of(&pred, ll);
        let mut best: Option<(Score, Candidate)> = None;
        for cand in candidates(&current, p, cfg) {
            let score = match &cand.change {
                Change::Disable(j) => {
                    let (pred, ll) = p.predict(&compiled, Some(*j), None);
                    p.score_of(&pred, ll)
                }
                Change::Replace(j, r) => {
                    let Some(c) = p.compile(r) else { continue };
                    if cand.kind == "reverse" {
                        match &compiled[*j] {
                            Some(old) if reversal_holds(p, old, c.label) => {}
                            _ => continue,
                        }
                    }
                    let (pred, ll) = p.predict(&compiled, Some(*j), Some(&c));
                    p.score_of(&pred, ll)
                }
                Change::Add(r) => {
                    let Some(c) = p.compile(r) else { continue };
                    let (pred, ll) = p.predict(&compiled, None, Some(&c));
                    p.score_of(&pred, ll)
                }
                Change::Scale(f) => {
                    let scaled: Vec<Option<Compiled>> = compiled
                        .iter()
                        .map(|c| {
                            c.as_ref().map(|c| Compiled {
                                weight: c.weight * f,
                                ..c.clone()
                            })
                        })
                        .collect();
                    let (pred, ll) = p.predict(&scaled, None, None);
                    p.score_of(&pred, ll)
                }
            };
            let better_than_best = best
                .as_ref()
                .is_none_or(|(s, _)| score.beats(s, cfg.objective));
            if score.improves_on(&base, cfg) && better_than_best {
                best = Some((score, cand));
            }
        }
        let Some((score, cand)) = best else { break };
        let rule_id = match &cand.change {
            Change::Disable(j) | Change::Replace(j, _) => current.rules()[*j].id().to_string(),
            Change::Add(r) => r.id().to_string(),
            Change::Scale(_) => "*".to_string(),
        };
        let applied = match cand.change {
            Change::Disable(_) => current.set_enabled(&rule_id, false),
            Change::Replace(_, r) => current.replace_rule(r).is_ok(),
            Change::Add(r) => current.push_rule(r).is_ok(),
            Change::Scale(f) => scale_weights(&mut current, f, &cfg.source),
        };
        if !applied {
            break;
        }
        edits.push(Edit {
            kind: cand.kind,
            rule_id,
            description: cand.description,
            macro_f1_before: base.macro_f1,
            macro_f1_after: score.macro_f1,
        });
    }
    (current, edits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refine::clips::Source;
    use crate::{Evidence, LabelSet, Probs};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A clip with z-scores for `hnr_db` and `jitter_local_pct` and the given acoustic probs.
    fn clip(truth: usize, hnr_z: f64, jitter_z: f64, probs: [f32; 3]) -> RefineClip {
        let labels = LabelSet::default();
        let mut evidence = Evidence::default();
        evidence.z.insert("hnr_db".into(), hnr_z);
        evidence.z.insert("jitter_local_pct".into(), jitter_z);
        evidence.baseline = "corpus:test".into();
        RefineClip {
            file: format!("clip{truth}.wav"),
            truth,
            speaker: None,
            evidence,
            probs: Probs::new(&labels, probs.to_vec()),
            unfamiliarity: None,
            source: Source::Validation,
        }
    }

    fn rules(text: &str) -> RuleSet {
        let head = "[ruleset]\nname = \"t\"\nversion = 1\nlabels = [\"calm\", \"angry\", \"panic\"]\nlanguage = \"en\"\n";
        RuleSet::parse(&format!("{head}{text}"), "test.toml").expect("test rules parse")
    }

    /// Routed clips are angry/panic ties; the truth follows `jitter_z` (high → panic), and a
    /// wrong guideline rule says high jitter means angry.
    fn confused_corpus() -> Vec<RefineClip> {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        (0..120)
            .map(|i| {
                let panic = i % 2 == 0;
                let jitter: f64 = if panic { 1.5 } else { -1.0 } + rng.random_range(-0.4..0.4);
                let hnr: f64 = rng.random_range(-1.0..1.0);
                let (truth, p) = if panic {
                    (2, [0.1, 0.46, 0.44])
                } else {
                    (1, [0.1, 0.44, 0.46])
                };
                clip(truth, hnr, jitter, p)
            })
            .collect()
    }

    /// Refinement scores a rule set with the decision `classify` serves: for fitted fusion
    /// parameters, the search's routed labels and mean ln p(truth) are those of
    /// `pipeline::fusion::fuse` on the rules that fire (one formula, two callers).
    #[test]
    fn the_search_scores_with_the_served_fused_decision() {
        let mut clips = confused_corpus();
        // Some clips unfamiliar: their weights move with the unfamiliarity terms.
        for (i, c) in clips.iter_mut().enumerate() {
            c.unfamiliarity = (i % 4 != 0).then_some(0.5 + (i % 4) as f32);
        }
        let labels = LabelSet::default();
        let set = rules(&format!(
            "{WRONG_RULE}[[rule]]\nid = \"panic-breathy\"\nlabel = \"panic\"\nwhen = \"hnr_db_z < 0\"\nweight = 0.8\nstatement_vi = \"x\"\nstatement_en = \"x\"\nsource = \"test\"\n"
        ));
        let fusion = FusionParams {
            acoustic_weight: 0.7,
            rule_scale: 0.4,
            unfamiliar_acoustic: -0.1,
            unfamiliar_rules: 0.2,
            llm_weight: 0.0,
        };
        let routed: Vec<bool> = (0..clips.len()).map(|i| i % 3 != 0).collect();
        let p = Problem::new(clips.iter().collect(), routed.clone(), &labels, &fusion);
        let got = p.labels_for(&set);
        let score = p.score(&set);
        let (mut ll, mut n) = (0.0, 0);
        for (i, c) in clips.iter().enumerate() {
            let want = if routed[i] {
                let fired = set.evaluate(&c.evidence, &c.probs);
                let (probs, _) =
                    crate::pipeline::fusion::fuse(&fusion, &c.probs, &fired, None, c.unfamiliarity);
                ll += f64::from(probs.values[c.truth]).ln();
                n += 1;
                probs.argmax().0
            } else {
                c.probs.argmax().0
            };
            assert_eq!(got[i], want, "clip {i}");
        }
        assert!(
            (score.log_likelihood - ll / n as f64).abs() < 1e-5,
            "{} vs {}",
            score.log_likelihood,
            ll / n as f64
        );
        // The weights matter: with the unfitted vote the same rules decide differently.
        let vote = Problem::new(
            clips.iter().collect(),
            routed,
            &labels,
            &FusionParams::RULE_VOTE,
        );
        assert_ne!(vote.score(&set).log_likelihood, score.log_likelihood);
    }

    const WRONG_RULE: &str = "[[rule]]\nid = \"angry-jitter\"\nlabel = \"angry\"\nwhen = \"jitter_local_pct_z > 1\"\nweight = 1.0\nstatement_vi = \"x\"\nstatement_en = \"x\"\nsource = \"test\"\n";

    #[test]
    fn a_rule_that_points_the_wrong_way_is_reversed_or_dropped() {
        let clips = confused_corpus();
        let labels = LabelSet::default();
        let refs: Vec<&RefineClip> = clips.iter().collect();
        let p = Problem::new(
            refs,
            vec![true; clips.len()],
            &labels,
            &FusionParams::RULE_VOTE,
        );
        let start = rules(WRONG_RULE);
        let before = p.score(&start);
        let (after_rules, edits) = propose(&start, &p, &SearchConfig::default());
        let after = p.score(&after_rules);
        assert_eq!(edits.len(), 1, "one edit per round by default: {edits:?}");
        assert!(
            after.macro_f1 > before.macro_f1 + 0.2,
            "{before:?} -> {after:?}"
        );
        // The fix touches the wrong rule (reverse or disable) or adds a jitter rule for panic.
        let e = &edits[0];
        assert!(
            e.rule_id == "angry-jitter" || e.description.contains("jitter_local_pct_z"),
            "{e:?}"
        );
    }

    #[test]
    fn mined_rules_come_with_both_statements_and_a_derived_weight() {
        let clips = confused_corpus();
        let labels = LabelSet::default();
        let refs: Vec<&RefineClip> = clips.iter().collect();
        let p = Problem::new(
            refs,
            vec![true; clips.len()],
            &labels,
            &FusionParams::RULE_VOTE,
        );
        let start = rules("");
        let (out, edits) = propose(&start, &p, &SearchConfig::default());
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0].kind, "add", "{edits:?}");
        let mined = &out.rules()[0];
        // Either side of the jitter split separates the pair: high → panic or low → angry.
        let (op, vi_label) = match mined.label() {
            "panic" => (">", "hoảng loạn"),
            "angry" => ("<", "tức giận"),
            other => panic!("mined a rule for {other}"),
        };
        let cond = mined.condition_text();
        assert!(cond.contains(&format!("jitter_local_pct_z {op}")), "{cond}");
        assert!(
            mined.statements().vi.contains("jitter") && mined.statements().vi.contains(vi_label)
        );
        assert!(mined
            .statements()
            .en
            .contains(&format!("more often {}", mined.label())));
        // Fires on one class only: the weight is the clamp's maximum.
        assert!((mined.weight() - 3.0).abs() < 1e-9, "{}", mined.weight());
        // The saved text parses back to the same rule set.
        let back = RuleSet::parse(&out.to_toml_string(), "back.toml").expect("round trip");
        assert_eq!(back, out);
    }

    #[test]
    fn nothing_is_proposed_when_no_edit_helps() {
        // The acoustic model is right on every routed clip and no rule fires.
        let clips: Vec<RefineClip> = (0..30)
            .map(|i| {
                clip(i % 3, 0.0, 0.0, {
                    let mut p = [0.2; 3];
                    p[i % 3] = 0.6;
                    p
                })
            })
            .collect();
        let labels = LabelSet::default();
        let p = Problem::new(
            clips.iter().collect(),
            vec![true; 30],
            &labels,
            &FusionParams::RULE_VOTE,
        );
        let (_, edits) = propose(&rules(""), &p, &SearchConfig::default());
        assert!(edits.is_empty(), "{edits:?}");
    }

    #[test]
    fn kept_clips_are_never_changed_by_rules() {
        let clips = confused_corpus();
        let labels = LabelSet::default();
        let p = Problem::new(
            clips.iter().collect(),
            vec![false; clips.len()],
            &labels,
            &FusionParams::RULE_VOTE,
        );
        let acoustic: Vec<usize> = clips.iter().map(|c| c.probs.argmax().0).collect();
        assert_eq!(p.labels_for(&rules(WRONG_RULE)), acoustic);
    }

    #[test]
    fn retuning_moves_exactly_one_threshold() {
        let c = crate::rules::condition::parse(
            "hnr_db_z > 1 and (jitter_local_pct_z < -0.5 or p_calm > 0.4)",
        )
        .expect("parses");
        let mut consts = Vec::new();
        constants(&c, &mut consts);
        assert_eq!(
            consts,
            vec![
                ("hnr_db_z".to_string(), 1.0),
                ("jitter_local_pct_z".to_string(), -0.5)
            ]
        );
        let moved = with_constant(&c, &mut 1, 0.25);
        assert_eq!(
            moved.to_string(),
            "hnr_db_z > 1 and (jitter_local_pct_z < 0.25 or p_calm > 0.4)"
        );
    }
}
