//! The fused decision for routed clips: a log-linear combination of the acoustic model, the
//! fired rules, the LLM's label scores and the clip's unfamiliarity, with a handful of
//! parameters fitted on held-out and shifted predictions.
//!
//! ```text
//! ũ        = clamp(unfamiliarity − 1, 0, 4)        (0 for a clip as familiar as a new speaker)
//! a(ũ)     = acoustic_weight + unfamiliar_acoustic · ũ
//! b(ũ)     = rule_scale + unfamiliar_rules · ũ              (both floored at 0)
//! logit_l  = a(ũ) · ln max(p_l, 1e-6)  +  b(ũ) · Σ_{fired r → l} w_r  +  llm_weight · ln q_l
//! p'_l     = softmax(logit)_l
//! ```
//!
//! `p` is the acoustic model's calibrated probability, `w_r` a rule's hand-set weight (its
//! log-odds), `q` the LLM's label likelihoods. [`FusionParams::ACOUSTIC_ONLY`] (1, 0, 0, 0, 0)
//! leaves `p` as it is; [`FusionParams::RULE_VOTE`] (1, 1, 0, 0, 0) is the rule vote
//! ([`crate::rules::RuleVote`] computes the same logits; a test ties them). The fit
//! ([`fit`]) is a conditional-logit likelihood with a ridge toward acoustic-only, its
//! strength chosen by leave-one-group-out likelihood, so parameters the data do not support
//! shrink back to "trust the acoustic model".

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{FiredRule, Probs};

/// File in a model directory holding its fitted [`FusionParams`].
pub const FUSION_FILE: &str = "fusion.json";
/// Floor on acoustic probabilities before the logarithm (as in the rule vote).
pub const PROB_FLOOR: f64 = 1e-6;
/// Cap on the unfamiliarity excess ũ, so one far-out clip cannot drive the weights.
pub const MAX_EXCESS: f64 = 4.0;
/// Ridge strengths the leave-one-group-out fit chooses from (per 100 weighted clips).
pub const RIDGE_GRID: [f64; 6] = [0.25, 1.0, 4.0, 16.0, 64.0, 256.0];

/// The fusion's parameters (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FusionParams {
    /// Weight of the acoustic log-probabilities for a familiar clip.
    pub acoustic_weight: f64,
    /// Scale on the fired rules' weights for a familiar clip.
    pub rule_scale: f64,
    /// Change of the acoustic weight per unit of unfamiliarity excess.
    pub unfamiliar_acoustic: f64,
    /// Change of the rule scale per unit of unfamiliarity excess.
    pub unfamiliar_rules: f64,
    /// Weight of the LLM's label log-likelihoods (0: the LLM only explains).
    #[serde(default)]
    pub llm_weight: f64,
}

impl FusionParams {
    /// Trust the acoustic model alone: `probs == acoustic_probs`.
    pub const ACOUSTIC_ONLY: Self = Self {
        acoustic_weight: 1.0,
        rule_scale: 0.0,
        unfamiliar_acoustic: 0.0,
        unfamiliar_rules: 0.0,
        llm_weight: 0.0,
    };
    /// The unfitted rule vote: acoustic log-probabilities plus the rules' hand-set weights.
    pub const RULE_VOTE: Self = Self {
        acoustic_weight: 1.0,
        rule_scale: 1.0,
        unfamiliar_acoustic: 0.0,
        unfamiliar_rules: 0.0,
        llm_weight: 0.0,
    };

    fn to_vec(self) -> [f64; N_PARAMS] {
        [
            self.acoustic_weight,
            self.rule_scale,
            self.unfamiliar_acoustic,
            self.unfamiliar_rules,
            self.llm_weight,
        ]
    }

    fn from_vec(v: &[f64; N_PARAMS]) -> Self {
        Self {
            acoustic_weight: v[0],
            rule_scale: v[1],
            unfamiliar_acoustic: v[2],
            unfamiliar_rules: v[3],
            llm_weight: v[4],
        }
    }

    /// The acoustic weight and rule scale for a clip of this unfamiliarity (`None`: no
    /// reference, ũ = 0).
    pub fn weights_for(&self, unfamiliarity: Option<f32>) -> (f64, f64) {
        self.at(excess(unfamiliarity))
    }

    /// The acoustic weight and rule scale at unfamiliarity excess `excess`, never negative:
    /// an unfamiliar clip can lose its trust in a part down to ignoring it, never invert it.
    /// (The fit treats them as linear in ũ; the floor only matters where a fit extrapolates
    /// past the unfamiliarity it saw.)
    pub fn at(&self, excess: f64) -> (f64, f64) {
        (
            (self.acoustic_weight + self.unfamiliar_acoustic * excess).max(0.0),
            (self.rule_scale + self.unfamiliar_rules * excess).max(0.0),
        )
    }
}

const N_PARAMS: usize = 5;

/// The unfamiliarity excess ũ of a clip (0 without a reference).
pub fn excess(unfamiliarity: Option<f32>) -> f64 {
    match unfamiliarity {
        Some(u) if u.is_finite() => (f64::from(u) - 1.0).clamp(0.0, MAX_EXCESS),
        _ => 0.0,
    }
}

/// What one fired rule added to its label's logit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RulePush {
    pub id: String,
    pub label: String,
    /// The rule's weight times the rule scale at this clip's unfamiliarity.
    pub push: f64,
}

/// The LLM's term.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmTerm {
    /// Label log-likelihoods, per label.
    pub logp: BTreeMap<String, f64>,
    pub weight: f64,
}

/// How the clip's unfamiliarity moved the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnfamiliarityTerm {
    /// ũ = clamp(unfamiliarity − 1, 0, 4).
    pub excess: f64,
    /// Added to the acoustic weight (`unfamiliar_acoustic · ũ`).
    pub acoustic_weight_change: f64,
    /// Added to the rule scale (`unfamiliar_rules · ũ`).
    pub rule_scale_change: f64,
}

/// What each part contributed to a Decision's `probs` (Decision schema 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contributions {
    /// ln of the acoustic probabilities (floored at 1e-6), per label.
    pub acoustic_logp: BTreeMap<String, f64>,
    /// The weight they entered with (1 for a kept clip).
    pub acoustic_weight: f64,
    /// Every fired rule and what it added (empty when the rules did not take part).
    pub rules: Vec<RulePush>,
    /// The LLM's term; `null` when no LLM scored the labels.
    pub llm: Option<LlmTerm>,
    pub unfamiliarity_term: UnfamiliarityTerm,
    /// The fused log-probabilities per label (log-softmax of the sum of the terms).
    pub fused: BTreeMap<String, f64>,
}

impl Contributions {
    /// A kept clip: the acoustic model alone, weight 1.
    pub fn acoustic_only(acoustic: &Probs) -> Self {
        let logp = floored_logp(acoustic);
        Self {
            acoustic_logp: by_label(acoustic, &logp),
            acoustic_weight: 1.0,
            rules: Vec::new(),
            llm: None,
            unfamiliarity_term: UnfamiliarityTerm {
                excess: 0.0,
                acoustic_weight_change: 0.0,
                rule_scale_change: 0.0,
            },
            fused: by_label(acoustic, &log_softmax(&logp)),
        }
    }
}

fn by_label(p: &Probs, v: &[f64]) -> BTreeMap<String, f64> {
    p.labels.iter().cloned().zip(v.iter().copied()).collect()
}

/// ln p per label, floored at [`PROB_FLOOR`]: how the fusion takes the acoustic model's and
/// an LLM's label probabilities.
pub fn floored_logp(p: &Probs) -> Vec<f64> {
    p.values
        .iter()
        .map(|&v| f64::from(v).max(PROB_FLOOR).ln())
        .collect()
}

use crate::math::log_softmax;

/// Σ of fired rules' weights per label (a rule for a label the model lacks cannot vote).
pub fn rule_sums(labels: &[String], fired: &[FiredRule]) -> Vec<f64> {
    let mut r = vec![0.0; labels.len()];
    for rule in fired {
        if let Some(i) = labels
            .iter()
            .position(|l| l.eq_ignore_ascii_case(&rule.label))
        {
            r[i] += f64::from(rule.weight);
        }
    }
    r
}

/// The per-label feature rows φ (acoustic, rules, ũ·acoustic, ũ·rules, llm) of one clip.
fn features(logp: &[f64], rules: &[f64], llm: Option<&[f64]>, u: f64) -> Vec<[f64; N_PARAMS]> {
    (0..logp.len())
        .map(|l| {
            [
                logp[l],
                rules[l],
                u * logp[l],
                u * rules[l],
                llm.map_or(0.0, |q| q[l]),
            ]
        })
        .collect()
}

fn logits_of(phi: &[[f64; N_PARAMS]], theta: &[f64; N_PARAMS]) -> Vec<f64> {
    phi.iter()
        .map(|f| f.iter().zip(theta).map(|(a, b)| a * b).sum())
        .collect()
}

/// The fused probabilities and what each part contributed. `llm_logp` is the LLM's label
/// log-likelihoods in the order of `acoustic.labels`.
pub fn fuse(
    params: &FusionParams,
    acoustic: &Probs,
    fired: &[FiredRule],
    llm_logp: Option<&[f64]>,
    unfamiliarity: Option<f32>,
) -> (Probs, Contributions) {
    let logp = floored_logp(acoustic);
    let sums = rule_sums(&acoustic.labels, fired);
    let u = excess(unfamiliarity);
    let (a, b) = params.at(u);
    let logits: Vec<f64> = (0..logp.len())
        .map(|l| a * logp[l] + b * sums[l] + llm_logp.map_or(0.0, |q| params.llm_weight * q[l]))
        .collect();
    let fused = log_softmax(&logits);
    let probs = Probs {
        labels: acoustic.labels.clone(),
        values: fused.iter().map(|l| l.exp() as f32).collect(),
    };
    let contributions = Contributions {
        acoustic_logp: by_label(acoustic, &logp),
        acoustic_weight: a,
        rules: fired
            .iter()
            .map(|r| RulePush {
                id: r.id.clone(),
                label: r.label.clone(),
                push: b * f64::from(r.weight),
            })
            .collect(),
        llm: llm_logp.map(|q| LlmTerm {
            logp: by_label(acoustic, q),
            weight: params.llm_weight,
        }),
        unfamiliarity_term: UnfamiliarityTerm {
            excess: u,
            acoustic_weight_change: params.unfamiliar_acoustic * u,
            rule_scale_change: params.unfamiliar_rules * u,
        },
        fused: by_label(acoustic, &fused),
    };
    (probs, contributions)
}

/// One routed clip for fitting: what the fusion sees, its true label, a weight (e.g. so that
/// every condition counts equally) and a group (a speaker fold or a condition) for the
/// leave-one-group-out choice of the ridge.
#[derive(Clone, Debug)]
pub struct FusionSample {
    pub acoustic: Probs,
    pub fired: Vec<FiredRule>,
    pub llm_logp: Option<Vec<f64>>,
    pub unfamiliarity: Option<f32>,
    pub label: usize,
    pub weight: f64,
    pub group: String,
}

/// The fitted parameters with how they were chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FusionFit {
    pub params: FusionParams,
    /// The ridge strength chosen (per 100 weighted clips); `null` when acoustic-only won.
    pub ridge: Option<f64>,
    /// Leave-one-group-out mean negative log-likelihood per ridge, and of acoustic-only.
    pub held_out_nll: BTreeMap<String, f64>,
    pub n: usize,
    pub groups: Vec<String>,
    /// Whether the LLM term was fitted (every sample had LLM scores).
    pub with_llm: bool,
    /// What the samples were (written by whoever fitted it, e.g. `just default-model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted_on: Option<String>,
    /// The parameters fitted without each group, at the chosen ridge (the per-fold values;
    /// empty when acoustic-only won).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_group: BTreeMap<String, FusionParams>,
    /// How the fusion did on the routed clips of each condition, each group decided by the
    /// parameters fitted without it (written by [`fit_for_model`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<FusionCheck>,
    /// Why the fitted parameters were set back to acoustic-only after the checks (they lowered
    /// the routed clips' held-out accuracy of a condition by more than
    /// [`CHECK_TOLERANCE`]); `params` is then acoustic-only and `fitted_params` what was fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted_params: Option<FusionParams>,
}

/// How much held-out routed accuracy a condition may lose to the fusion before
/// [`fit_for_model`] withdraws it: fused decisions must not subtract.
pub const CHECK_TOLERANCE: f64 = 0.01;

/// Routed held-out clips of one condition: acoustic-only against the fusion fitted without
/// the clip's group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FusionCheck {
    /// `clean` (held-out speakers as recorded), `perturbed` (their perturbed copies) or
    /// `other_corpus` (clips of a `--shifted-manifest`).
    pub condition: String,
    pub clips: usize,
    pub routed: usize,
    pub accuracy_acoustic: f64,
    pub accuracy_fused: f64,
    /// ECE (15 bins) of the routed clips' top probability.
    pub ece_acoustic: f64,
    pub ece_fused: f64,
}

struct Prepared {
    phi: Vec<Vec<[f64; N_PARAMS]>>,
    y: Vec<usize>,
    w: Vec<f64>,
    group: Vec<usize>,
}

fn prepare(samples: &[FusionSample], groups: &[String]) -> Prepared {
    let mut p = Prepared {
        phi: Vec::new(),
        y: Vec::new(),
        w: Vec::new(),
        group: Vec::new(),
    };
    for s in samples {
        let logp = floored_logp(&s.acoustic);
        let sums = rule_sums(&s.acoustic.labels, &s.fired);
        p.phi.push(features(
            &logp,
            &sums,
            s.llm_logp.as_deref(),
            excess(s.unfamiliarity),
        ));
        p.y.push(s.label);
        p.w.push(s.weight.max(0.0));
        p.group
            .push(groups.iter().position(|g| *g == s.group).unwrap_or(0));
    }
    p
}

/// Weighted mean NLL of `theta` on the samples `keep` selects.
fn nll(p: &Prepared, theta: &[f64; N_PARAMS], keep: &dyn Fn(usize) -> bool) -> f64 {
    let (mut total, mut wsum) = (0.0, 0.0);
    for i in (0..p.y.len()).filter(|&i| keep(i)) {
        let ls = log_softmax(&logits_of(&p.phi[i], theta));
        total -= p.w[i] * ls[p.y[i]];
        wsum += p.w[i];
    }
    if wsum > 0.0 {
        total / wsum
    } else {
        0.0
    }
}

/// Newton's method on the ridge-penalised weighted conditional-logit likelihood. The problem
/// is strictly convex (ridge > 0), 5 parameters: exact gradient and Hessian, a 5×5 solve and
/// a backtracking step converge in a few iterations, deterministically.
fn newton(
    p: &Prepared,
    keep: &dyn Fn(usize) -> bool,
    ridge: f64,
    active: &[bool; N_PARAMS],
) -> [f64; N_PARAMS] {
    let prior = FusionParams::ACOUSTIC_ONLY.to_vec();
    let wsum: f64 = (0..p.y.len()).filter(|&i| keep(i)).map(|i| p.w[i]).sum();
    // The ridge is per 100 weighted clips, so its pull does not fade as data grow unevenly.
    let lam = ridge * wsum / 100.0;
    let objective = |t: &[f64; N_PARAMS]| {
        nll(p, t, keep) * wsum
            + 0.5
                * lam
                * t.iter()
                    .zip(&prior)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
    };
    let mut theta = prior;
    let mut f = objective(&theta);
    for _ in 0..50 {
        let mut g = [0.0; N_PARAMS];
        let mut h = [[0.0; N_PARAMS]; N_PARAMS];
        for i in (0..p.y.len()).filter(|&i| keep(i)) {
            let phi = &p.phi[i];
            let ls = log_softmax(&logits_of(phi, &theta));
            let pr: Vec<f64> = ls.iter().map(|l| l.exp()).collect();
            let mut mean = [0.0; N_PARAMS];
            for (l, f) in phi.iter().enumerate() {
                for k in 0..N_PARAMS {
                    mean[k] += pr[l] * f[k];
                }
            }
            for k in 0..N_PARAMS {
                g[k] -= p.w[i] * (phi[p.y[i]][k] - mean[k]);
            }
            for (l, f) in phi.iter().enumerate() {
                for a in 0..N_PARAMS {
                    for b in 0..N_PARAMS {
                        h[a][b] += p.w[i] * pr[l] * (f[a] - mean[a]) * (f[b] - mean[b]);
                    }
                }
            }
        }
        for k in 0..N_PARAMS {
            g[k] += lam * (theta[k] - prior[k]);
            h[k][k] += lam;
        }
        // Inactive parameters stay at the prior: zero their rows and columns.
        for k in 0..N_PARAMS {
            if !active[k] {
                g[k] = 0.0;
                for row in h.iter_mut() {
                    row[k] = 0.0;
                }
                h[k] = [0.0; N_PARAMS];
                h[k][k] = 1.0;
            }
        }
        let Some(step) = solve(h, g) else { break };
        let mut t = 1.0;
        let mut improved = false;
        for _ in 0..30 {
            let mut cand = theta;
            for k in 0..N_PARAMS {
                cand[k] -= t * step[k];
            }
            let fc = objective(&cand);
            if fc <= f {
                let gain = f - fc;
                theta = cand;
                f = fc;
                improved = gain > 1e-10 * f.abs().max(1.0);
                break;
            }
            t *= 0.5;
        }
        if !improved {
            break;
        }
    }
    theta
}

/// Solve `h x = g` for a small symmetric positive-definite `h` (Gaussian elimination with
/// partial pivoting: five unknowns do not call for a linear-algebra crate).
fn solve(mut h: [[f64; N_PARAMS]; N_PARAMS], mut g: [f64; N_PARAMS]) -> Option<[f64; N_PARAMS]> {
    for c in 0..N_PARAMS {
        let piv = (c..N_PARAMS).max_by(|&a, &b| h[a][c].abs().total_cmp(&h[b][c].abs()))?;
        if h[piv][c].abs() < 1e-12 {
            return None;
        }
        h.swap(c, piv);
        g.swap(c, piv);
        let pivot_row = h[c];
        for r in c + 1..N_PARAMS {
            let f = h[r][c] / pivot_row[c];
            for (x, p) in h[r][c..].iter_mut().zip(&pivot_row[c..]) {
                *x -= f * p;
            }
            g[r] -= f * g[c];
        }
    }
    let mut x = [0.0; N_PARAMS];
    for c in (0..N_PARAMS).rev() {
        let s: f64 = (c + 1..N_PARAMS).map(|k| h[c][k] * x[k]).sum();
        x[c] = (g[c] - s) / h[c][c];
    }
    Some(x)
}

/// Fit the fusion on routed clips. The ridge toward acoustic-only is chosen by
/// leave-one-group-out likelihood among [`RIDGE_GRID`]; when no ridge beats acoustic-only
/// held out, acoustic-only is returned. The LLM term is fitted only when every sample has
/// LLM scores; the unfamiliarity terms only when some sample has an excess above 0.
pub fn fit(samples: &[FusionSample]) -> FusionFit {
    let mut groups: Vec<String> = samples.iter().map(|s| s.group.clone()).collect();
    groups.sort();
    groups.dedup();
    let p = prepare(samples, &groups);
    let with_llm = !samples.is_empty() && samples.iter().all(|s| s.llm_logp.is_some());
    let any_excess = samples.iter().any(|s| excess(s.unfamiliarity) > 0.0);
    let active = [true, true, any_excess, any_excess, with_llm];
    let all = |_: usize| true;
    let acoustic = FusionParams::ACOUSTIC_ONLY.to_vec();
    let mut held_out_nll = BTreeMap::new();
    let held = |theta_of: &dyn Fn(usize) -> [f64; N_PARAMS]| -> f64 {
        // Pooled held-out NLL: each group predicted by a fit without it.
        let (mut total, mut wsum) = (0.0, 0.0);
        for (gi, _) in groups.iter().enumerate() {
            let theta = theta_of(gi);
            let in_g = |i: usize| p.group[i] == gi;
            let w: f64 = (0..p.y.len()).filter(|&i| in_g(i)).map(|i| p.w[i]).sum();
            total += nll(&p, &theta, &in_g) * w;
            wsum += w;
        }
        if wsum > 0.0 {
            total / wsum
        } else {
            f64::INFINITY
        }
    };
    let base = held(&|_| acoustic);
    held_out_nll.insert("acoustic_only".to_string(), base);
    let mut best: Option<(f64, f64)> = None;
    if groups.len() >= 2 {
        for &ridge in &RIDGE_GRID {
            let score = held(&|gi| newton(&p, &|i| p.group[i] != gi, ridge, &active));
            held_out_nll.insert(format!("ridge_{ridge}"), score);
            if score < base && best.is_none_or(|(_, s)| score < s) {
                best = Some((ridge, score));
            }
        }
    }
    let params = match best {
        Some((ridge, _)) => FusionParams::from_vec(&newton(&p, &all, ridge, &active)),
        None => FusionParams::ACOUSTIC_ONLY,
    };
    let per_group = match best {
        Some((ridge, _)) => groups
            .iter()
            .enumerate()
            .map(|(gi, g)| {
                let theta = newton(&p, &|i| p.group[i] != gi, ridge, &active);
                (g.clone(), FusionParams::from_vec(&theta))
            })
            .collect(),
        None => BTreeMap::new(),
    };
    FusionFit {
        params,
        ridge: best.map(|(r, _)| r),
        held_out_nll,
        n: samples.len(),
        groups,
        with_llm,
        fitted_on: None,
        per_group,
        checks: Vec::new(),
        withdrawn: None,
        fitted_params: None,
    }
}

/// Fit a freshly trained model's fusion on its held-out predictions (what `camxuc train`
/// does): the clips `routing` routes — validation clips, out-of-fold training clips and their
/// perturbed copies, and the clips of any shifted corpus — with the rules that fire on each.
/// Every condition weighs the same in total, and each speaker fold (its clean clips with their
/// copies) and each shifted corpus is one group of the leave-one-group-out choice of the ridge, so the fit must predict speakers and
/// recording chains it did not see. The result says per condition how the held-out fusion
/// did against acoustic-only.
pub fn fit_for_model(
    held: &[crate::acoustic::HeldOutPrediction],
    rules: &crate::rules::RuleSet,
    routing: &crate::acoustic::model_dir::RoutingConfig,
) -> FusionFit {
    use crate::acoustic::HeldOutCondition;
    let router = super::Router::from_config(routing);
    let routed: Vec<bool> = held
        .iter()
        .map(|h| router.is_ambiguous(&h.probs, h.unfamiliarity))
        .collect();
    let mut routed_in: BTreeMap<HeldOutCondition, usize> = BTreeMap::new();
    for h in held
        .iter()
        .zip(&routed)
        .filter(|(_, r)| **r)
        .map(|(h, _)| h)
    {
        *routed_in.entry(h.condition).or_default() += 1;
    }
    let n_routed = |c: HeldOutCondition| routed_in.get(&c).copied().unwrap_or(0);
    let mut samples = Vec::new();
    let mut sample_of = Vec::new();
    for (i, h) in held.iter().enumerate() {
        if !routed[i] {
            continue;
        }
        samples.push(FusionSample {
            acoustic: h.probs.clone(),
            fired: rules.evaluate(&h.evidence, &h.probs),
            llm_logp: None,
            unfamiliarity: h.unfamiliarity,
            label: h.label,
            // Every condition weighs the same in total, however many of its clips are routed.
            weight: 100.0 / n_routed(h.condition).max(1) as f64,
            group: h.group.clone(),
        });
        sample_of.push(i);
    }
    let mut fitted = fit(&samples);
    let counts: Vec<String> = HeldOutCondition::ALL
        .iter()
        .filter(|&&c| held.iter().any(|h| h.condition == c))
        .map(|&c| format!("{} {}", n_routed(c), c.name()))
        .collect();
    fitted.fitted_on = Some(format!(
        "{} routed of {} held-out predictions of this model's training run ({}); rules {} v{}",
        samples.len(),
        held.len(),
        counts.join(", "),
        rules.name(),
        rules.version()
    ));
    for c in HeldOutCondition::ALL {
        let clips = held.iter().filter(|h| h.condition == c).count();
        if clips == 0 {
            continue;
        }
        let (mut conf_a, mut ok_a, mut conf_f, mut ok_f) = (vec![], vec![], vec![], vec![]);
        for (s, &i) in samples.iter().zip(&sample_of) {
            if held[i].condition != c {
                continue;
            }
            let params = fitted
                .per_group
                .get(&s.group)
                .copied()
                .unwrap_or(FusionParams::ACOUSTIC_ONLY);
            let (fused, _) = fuse(&params, &s.acoustic, &s.fired, None, s.unfamiliarity);
            for (p, conf, ok) in [
                (&s.acoustic, &mut conf_a, &mut ok_a),
                (&fused, &mut conf_f, &mut ok_f),
            ] {
                let (top, c) = p.argmax();
                conf.push(f64::from(c));
                ok.push(top == s.label);
            }
        }
        let accuracy =
            |ok: &[bool]| ok.iter().filter(|&&b| b).count() as f64 / ok.len().max(1) as f64;
        let ece =
            |conf: &[f64], ok: &[bool]| crate::metrics::expected_calibration_error(conf, ok, 15);
        fitted.checks.push(FusionCheck {
            condition: c.name().into(),
            clips,
            routed: ok_a.len(),
            accuracy_acoustic: accuracy(&ok_a),
            accuracy_fused: accuracy(&ok_f),
            ece_acoustic: ece(&conf_a, &ok_a),
            ece_fused: ece(&conf_f, &ok_f),
        });
    }
    withdraw_if_it_subtracts(&mut fitted);
    fitted
}

/// Fewest routed labelled site clips, and speaker groups, that [`refit_after_adapt`] fits a
/// fusion on; with fewer the adapted model's routed clips are decided acoustic-only.
pub const ADAPT_MIN_ROUTED: usize = 40;
pub const ADAPT_MIN_GROUPS: usize = 3;

/// After `camxuc adapt` (the command and the workbench): the new directory's fusion, fitted on
/// the labelled site clips' out-of-fold predictions the way [`fit_for_model`] fits a trained
/// model's on its held-out ones (ridge toward acoustic-only chosen by leaving one speaker out,
/// withdrawn when it lowers held-out routed accuracy, and with fewer than [`ADAPT_MIN_ROUTED`]
/// routed clips or [`ADAPT_MIN_GROUPS`] speakers: then acoustic-only). The source's fusion was
/// fitted on the source's data and describes neither the refitted model nor the site. Without
/// labelled predictions (no labels, or no refit) the source's fusion is kept. `report.fusion`
/// says which.
pub fn refit_after_adapt(
    report: &mut crate::acoustic::adapt::AdaptReport,
) -> Result<(), super::PipelineError> {
    use crate::acoustic::{model_dir, AcousticError};
    if report.site_predictions.is_empty() {
        report.fusion =
            vec!["fusion: kept from the source (no labelled site clips refitted the model)".into()];
        return Ok(());
    }
    let meta = model_dir::read_meta(&report.out).map_err(AcousticError::from)?;
    let routing = model_dir::read_routing(&report.out).map_err(AcousticError::from)?;
    let rules = super::decide::active_rules_for(&report.out, &meta.labels, None)?;
    let mut fit = fit_for_model(&report.site_predictions, &rules, &routing);
    // A site's few routed clips in two or three speakers let a fit swing (measured on a site of
    // real speech: 14 routed clips of 2 speakers gave the rules a scale of 0.9 and cost 6
    // points on the site's test speakers). Below these counts the refitted model decides
    // routed clips by its acoustic probabilities.
    if fit.ridge.is_some()
        && (fit.n < ADAPT_MIN_ROUTED || fit.groups.len() < ADAPT_MIN_GROUPS)
        && fit.withdrawn.is_none()
    {
        let why = format!(
            "too few labelled site clips for a fusion: {} routed in {} speaker groups (needs {ADAPT_MIN_ROUTED} in {ADAPT_MIN_GROUPS})",
            fit.n,
            fit.groups.len()
        );
        withdraw(&mut fit, why);
    }
    fit.fitted_on = Some(format!(
        "camxuc adapt: {} routed of {} labelled site clips, predicted out of fold by the adapted model; rules {} v{}",
        fit.n,
        report.site_predictions.len(),
        rules.name(),
        rules.version()
    ));
    write(&report.out, &fit)?;
    report.fusion = summary(&fit);
    Ok(())
}

/// A fusion that its own held-out checks show lowering routed accuracy in some condition by
/// more than [`CHECK_TOLERANCE`] is not shipped: the likelihood it was chosen by can improve
/// while decisions get worse. Its parameters go back to acoustic-only (kept in
/// `fitted_params`, with the reason in `withdrawn`).
fn withdraw_if_it_subtracts(fitted: &mut FusionFit) {
    if let Some(c) = fitted
        .checks
        .iter()
        .find(|c| c.accuracy_fused < c.accuracy_acoustic - CHECK_TOLERANCE)
    {
        let why = format!(
            "held-out routed accuracy of {} clips fell from {:.3} to {:.3} (tolerance {CHECK_TOLERANCE})",
            c.condition, c.accuracy_acoustic, c.accuracy_fused
        );
        withdraw(fitted, why);
    }
}

/// Back to acoustic-only, keeping what was fitted (`fitted_params`) and why (`withdrawn`).
fn withdraw(fitted: &mut FusionFit, why: String) {
    fitted.withdrawn = Some(why);
    fitted.fitted_params = Some(fitted.params);
    fitted.params = FusionParams::ACOUSTIC_ONLY;
}

/// A fit in a few lines for a person: the parameters, how they were chosen and, when
/// checked, what they did on held-out routed clips.
pub fn summary(fit: &FusionFit) -> Vec<String> {
    let p = fit.fitted_params.as_ref().unwrap_or(&fit.params);
    let mut lines = vec![match fit.ridge {
        Some(r) => format!(
            "fusion: acoustic weight {:.2}, rule scale {:.2}, unfamiliarity {:+.2} / {:+.2} (ridge {r}, {} routed clips, {} groups)",
            p.acoustic_weight,
            p.rule_scale,
            p.unfamiliar_acoustic,
            p.unfamiliar_rules,
            fit.n,
            fit.groups.len()
        ),
        None => format!(
            "fusion: acoustic only (no weighting of the rules beat it on held-out groups; {} routed clips, {} groups)",
            fit.n,
            fit.groups.len()
        ),
    }];
    if let Some(why) = &fit.withdrawn {
        lines.push(format!("  withdrawn, acoustic only is kept: {why}"));
    }
    for c in &fit.checks {
        lines.push(format!(
            "  {} held-out, {} of {} routed: accuracy {:.3} -> {:.3}, ECE {:.3} -> {:.3}",
            c.condition,
            c.routed,
            c.clips,
            c.accuracy_acoustic,
            c.accuracy_fused,
            c.ece_acoustic,
            c.ece_fused
        ));
    }
    lines
}

/// Errors reading or writing a model's fusion file.
#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a fusion file: {source}", path.display())]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {field} is {value}, not a finite number", path.display())]
    NotFinite {
        path: std::path::PathBuf,
        field: &'static str,
        value: f64,
    },
}

/// The fusion file of a model directory: `Ok(None)` when it has none.
pub fn read(model_dir: &Path) -> Result<Option<FusionFit>, FusionError> {
    let path = model_dir.join(FUSION_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(FusionError::Io { path, source }),
    };
    let fit: FusionFit = serde_json::from_slice(&bytes).map_err(|source| FusionError::Parse {
        path: path.clone(),
        source,
    })?;
    let p = fit.params;
    for (field, value) in [
        ("acoustic_weight", p.acoustic_weight),
        ("rule_scale", p.rule_scale),
        ("unfamiliar_acoustic", p.unfamiliar_acoustic),
        ("unfamiliar_rules", p.unfamiliar_rules),
        ("llm_weight", p.llm_weight),
    ] {
        if !value.is_finite() {
            return Err(FusionError::NotFinite { path, field, value });
        }
    }
    Ok(Some(fit))
}

/// Write a model directory's fusion file.
pub fn write(model_dir: &Path, fit: &FusionFit) -> Result<(), FusionError> {
    let path = model_dir.join(FUSION_FILE);
    let text = serde_json::to_string_pretty(fit).expect("a fusion fit serialises") + "\n";
    std::fs::write(&path, text).map_err(|source| FusionError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LabelSet;

    #[test]
    fn a_fusion_whose_held_out_checks_lose_accuracy_is_withdrawn() {
        let fitted = FusionParams {
            acoustic_weight: 0.3,
            rule_scale: 0.3,
            ..FusionParams::ACOUSTIC_ONLY
        };
        let check = |acoustic: f64, fused: f64| FusionCheck {
            condition: "clean".into(),
            clips: 100,
            routed: 50,
            accuracy_acoustic: acoustic,
            accuracy_fused: fused,
            ece_acoustic: 0.1,
            ece_fused: 0.1,
        };
        let fit = |checks: Vec<FusionCheck>| FusionFit {
            params: fitted,
            ridge: Some(1.0),
            held_out_nll: BTreeMap::new(),
            n: 50,
            groups: vec!["a".into(), "b".into()],
            with_llm: false,
            fitted_on: None,
            per_group: BTreeMap::new(),
            checks,
            withdrawn: None,
            fitted_params: None,
        };
        // Within the tolerance: kept.
        let mut kept = fit(vec![check(0.60, 0.595), check(0.5, 0.6)]);
        withdraw_if_it_subtracts(&mut kept);
        assert_eq!(kept.params, fitted);
        assert!(kept.withdrawn.is_none());
        // One condition loses more than the tolerance: acoustic-only, the fit kept aside.
        let mut lost = fit(vec![check(0.5, 0.6), check(0.509, 0.434)]);
        withdraw_if_it_subtracts(&mut lost);
        assert_eq!(lost.params, FusionParams::ACOUSTIC_ONLY);
        assert_eq!(lost.fitted_params, Some(fitted));
        assert!(lost.withdrawn.as_deref().unwrap().contains("0.434"));
        assert!(summary(&lost)[0].contains("acoustic weight 0.30"));
    }

    fn rule(id: &str, label: &str, weight: f32) -> FiredRule {
        FiredRule {
            id: id.into(),
            label: label.into(),
            weight,
            statement_en: format!("{id} statement"),
            statement_vi: None,
        }
    }

    fn probs(v: [f32; 3]) -> Probs {
        Probs::new(&LabelSet::default(), v.to_vec())
    }

    #[test]
    fn acoustic_only_leaves_the_probabilities_and_rule_vote_adds_the_weights() {
        let p = probs([0.2, 0.5, 0.3]);
        let fired = [rule("a", "panic", 1.0)];
        let (q, c) = fuse(&FusionParams::ACOUSTIC_ONLY, &p, &fired, None, Some(3.0));
        for (x, y) in q.values.iter().zip(&p.values) {
            assert!((x - y).abs() < 1e-6, "{q:?} vs {p:?}");
        }
        assert_eq!(c.rules[0].push, 0.0);
        let (q, c) = fuse(&FusionParams::RULE_VOTE, &p, &fired, None, None);
        // panic's odds against angry multiplied by e^1.
        let ratio = (q.values[2] / q.values[1]) as f64;
        assert!((ratio - 0.6 * 1f64.exp()).abs() < 1e-5, "{ratio}");
        assert_eq!(c.rules[0].push, 1.0);
        // The contributions add up to the fused log-probabilities (up to the normaliser).
        let sum: Vec<f64> = ["calm", "angry", "panic"]
            .iter()
            .map(|l| {
                c.acoustic_weight * c.acoustic_logp[*l]
                    + c.rules
                        .iter()
                        .filter(|r| r.label == *l)
                        .map(|r| r.push)
                        .sum::<f64>()
            })
            .collect();
        let shift = sum[0] - c.fused["calm"];
        assert!((sum[1] - c.fused["angry"] - shift).abs() < 1e-9);
        assert!((sum[2] - c.fused["panic"] - shift).abs() < 1e-9);
    }

    #[test]
    fn unfamiliarity_moves_the_weights_only_above_a_typical_clip() {
        let params = FusionParams {
            unfamiliar_rules: 0.5,
            unfamiliar_acoustic: -0.2,
            ..FusionParams::RULE_VOTE
        };
        assert_eq!(excess(Some(0.8)), 0.0);
        assert_eq!(excess(None), 0.0);
        assert_eq!(excess(Some(100.0)), MAX_EXCESS);
        let p = probs([0.2, 0.5, 0.3]);
        let fired = [rule("a", "panic", 1.0)];
        let (_, c) = fuse(&params, &p, &fired, None, Some(3.0));
        assert!((c.acoustic_weight - 0.6).abs() < 1e-12);
        assert!((c.rules[0].push - 2.0).abs() < 1e-12);
        assert!((c.unfamiliarity_term.excess - 2.0).abs() < 1e-12);
    }

    #[test]
    fn weights_never_turn_negative_for_a_far_out_clip() {
        let params = FusionParams {
            acoustic_weight: 0.7,
            unfamiliar_acoustic: -0.4,
            ..FusionParams::RULE_VOTE
        };
        let p = probs([0.2, 0.7, 0.1]);
        let (q, c) = fuse(&params, &p, &[], None, Some(10.0));
        assert_eq!(c.acoustic_weight, 0.0);
        // Ignored, not inverted: uniform without rules.
        for v in q.values {
            assert!((v - 1.0 / 3.0).abs() < 1e-6);
        }
    }

    /// Routed clips where a "panic" rule is right 80 % of the time: the fit gives the rules
    /// a positive scale; where the rule is noise it stays at (or near) acoustic-only.
    fn samples(informative: bool, n: usize) -> Vec<FusionSample> {
        let mut rng = 12345u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as f64 / (1u64 << 31) as f64
        };
        (0..n)
            .map(|i| {
                let y = i % 3;
                let fires = if informative {
                    (y == 2) == (next() < 0.8)
                } else {
                    next() < 0.3
                };
                // Routed clips: the acoustic model is unsure and here carries no information.
                let v = [0.3 + 0.1 * next() as f32, 0.3 + 0.1 * next() as f32, 0.3];
                let s: f32 = v.iter().sum();
                FusionSample {
                    acoustic: probs(v.map(|x| x / s)),
                    fired: if fires {
                        vec![rule("p", "panic", 1.0)]
                    } else {
                        vec![]
                    },
                    llm_logp: None,
                    unfamiliarity: Some(1.0),
                    label: y,
                    weight: 1.0,
                    group: format!("g{}", i % 4),
                }
            })
            .collect()
    }

    #[test]
    fn fit_trusts_informative_rules_and_is_deterministic() {
        let s = samples(true, 240);
        let f = fit(&s);
        assert!(f.params.rule_scale > 0.5, "{f:?}");
        assert!(f.ridge.is_some());
        assert_eq!(f, fit(&s), "same data, same fit");
        let (q, _) = fuse(&f.params, &s[0].acoustic, &s[0].fired, None, None);
        assert!(q.values.iter().all(|v| v.is_finite()));
        assert!(
            f.held_out_nll[&format!("ridge_{}", f.ridge.unwrap())]
                < f.held_out_nll["acoustic_only"]
        );
    }

    #[test]
    fn fit_shrinks_toward_acoustic_only_when_rules_are_noise() {
        let f = fit(&samples(false, 240));
        assert!(f.params.rule_scale.abs() < 0.3, "{f:?}");
        // No unfamiliarity excess in the data: those terms stay at the prior.
        assert_eq!(f.params.unfamiliar_rules, 0.0);
        assert_eq!(f.params.unfamiliar_acoustic, 0.0);
    }

    #[test]
    fn a_fusion_file_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let f = fit(&samples(true, 60));
        write(dir.path(), &f).unwrap();
        // Bit for bit (serde_json's float_roundtrip): a model decides as it was fitted.
        assert_eq!(read(dir.path()).unwrap().unwrap(), f);
        std::fs::write(dir.path().join(FUSION_FILE), "{\"params\": 3}").unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(FUSION_FILE) && e.contains("not a fusion file"),
            "{e}"
        );
    }
}
