//! The rule-vote reasoner: decides routed clips without an LLM (`--llm none`).
//!
//! Log-linear combination of the acoustic prior and the fired rules:
//!
//! ```text
//! logit_l = prior_weight · ln(max(p_l, 1e-6)) + Σ weight of fired rules for l
//! p'_l    = softmax(logit)_l
//! ```
//!
//! A rule of weight w multiplies the odds of its label by e^w. `prior_weight` (default 1)
//! says how far the acoustic model is trusted: 1 keeps its probabilities as they are when no
//! rule fires; 0 lets the rules alone decide (uniform when none fires). Routed clips are the
//! ones the acoustic model was unsure about, so its prior is nearly flat there anyway.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::{Case, Probs, Reasoner, ReasonerError, Verdict};

use super::rule::Language;
use super::ruleset::RuleSet;

/// Floor on acoustic probabilities before the logarithm, so a zero never vetoes a label.
pub(crate) const PROB_FLOOR: f64 = 1e-6;

/// Default trust in the acoustic prior (see the module docs).
pub const DEFAULT_PRIOR_WEIGHT: f64 = 1.0;

#[derive(Clone, Debug)]
pub struct RuleVote {
    rule_set_id: String,
    rule_set_sha: String,
    language: Language,
    prior_weight: f64,
}

impl RuleVote {
    /// A reasoner that explains itself in `rules`' language; it scores `Case::fired`, which
    /// the pipeline fills with `rules.evaluate(..)`.
    pub fn new(rules: &RuleSet) -> Self {
        Self {
            rule_set_id: rules.id_string(),
            rule_set_sha: rules.sha256(),
            language: rules.language(),
            prior_weight: DEFAULT_PRIOR_WEIGHT,
        }
    }

    /// Sets the weight of the acoustic prior; negative or non-finite values become 0.
    pub fn with_prior_weight(mut self, prior_weight: f64) -> Self {
        self.prior_weight = if prior_weight.is_finite() {
            prior_weight.max(0.0)
        } else {
            0.0
        };
        self
    }

    pub fn prior_weight(&self) -> f64 {
        self.prior_weight
    }

    /// The vote's logits per label: prior_weight · ln p(acoustic) plus the weight of every
    /// fired rule for that label ([`combine`](Self::combine) is their softmax).
    pub fn logits(&self, acoustic: &Probs, fired: &[crate::FiredRule]) -> Vec<f64> {
        let mut logits: Vec<f64> = acoustic
            .values
            .iter()
            .map(|&p| self.prior_weight * f64::from(p).max(PROB_FLOOR).ln())
            .collect();
        for rule in fired {
            // A rule for a label the model does not have cannot vote.
            if let Some(i) = acoustic
                .labels
                .iter()
                .position(|l| l.eq_ignore_ascii_case(&rule.label))
            {
                logits[i] += f64::from(rule.weight);
            }
        }
        logits
    }

    /// The combined probabilities (no rationale).
    pub fn combine(&self, acoustic: &Probs, fired: &[crate::FiredRule]) -> Probs {
        let logits = self.logits(acoustic, fired);
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exp.iter().sum();
        Probs {
            labels: acoustic.labels.clone(),
            values: exp.iter().map(|e| (e / total) as f32).collect(),
        }
    }

    fn rationale(&self, probs: &Probs, fired: &[crate::FiredRule]) -> String {
        let (best, p) = probs.argmax();
        let label = &probs.labels[best];
        let vi = self.language == Language::Vi;
        let mut text = if vi {
            format!("Kết luận: {label} ({:.0}%).", p * 100.0)
        } else {
            format!("Decision: {label} ({:.0}%).", p * 100.0)
        };
        if fired.is_empty() {
            text.push_str(if vi {
                " Không có quy tắc nào khớp; giữ nguyên xác suất âm học."
            } else {
                " No rule fired; the acoustic probabilities stand."
            });
        }
        for rule in fired {
            let statement = match (self.language, &rule.statement_vi) {
                (Language::Vi, Some(s)) if !s.trim().is_empty() => s.as_str(),
                _ => rule.statement_en.as_str(),
            };
            text.push_str(&format!(
                "\n- [{}] {} → {} (+{})",
                rule.id, statement, rule.label, rule.weight
            ));
        }
        text
    }
}

impl Reasoner for RuleVote {
    fn name(&self) -> String {
        format!(
            "rule-vote ({}, sha256 {}, prior_weight {})",
            self.rule_set_id,
            &self.rule_set_sha[..12.min(self.rule_set_sha.len())],
            self.prior_weight
        )
    }

    fn decide(&mut self, case: &Case<'_>) -> Result<Verdict, ReasonerError> {
        let started = Instant::now();
        let acoustic = case.acoustic;
        if acoustic.values.is_empty() || acoustic.values.len() != acoustic.labels.len() {
            return Err(ReasonerError::Failed {
                reasoner: self.name(),
                message: format!(
                    "acoustic probabilities have {} labels and {} values",
                    acoustic.labels.len(),
                    acoustic.values.len()
                ),
            });
        }
        let probs = self.combine(acoustic, case.fired);
        let rationale = self.rationale(&probs, case.fired);
        Ok(Verdict {
            probs,
            rationale: Some(rationale),
            prompt_tokens: 0,
            generated_tokens: 0,
            timings_ms: BTreeMap::from([(
                "reasoner".to_string(),
                started.elapsed().as_secs_f64() * 1e3,
            )]),
        })
    }
}
