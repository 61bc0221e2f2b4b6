//! The rule-vote reasoner: decides routed clips without an LLM (`--llm none`), by the fusion
//! of the acoustic model and the fired rules (`src/pipeline/fusion.rs`, the one formula):
//!
//! ```text
//! logit_l = a(ũ) · ln(max(p_l, 1e-6)) + b(ũ) · Σ weight of fired rules for l
//! p'_l    = softmax(logit)_l
//! ```
//!
//! A rule of weight w multiplies the odds of its label by e^(b·w). Unfitted (a model without
//! `fusion.json`), a = b = 1: the hand-set weights as written, the acoustic probabilities as
//! they are when no rule fires. A model's fitted fusion sets a, b and how unfamiliarity ũ
//! moves them. With no rule enabled, or fusion fitted to acoustic-only, the acoustic
//! probabilities are returned untouched (bit for bit).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::{Case, Probs, Reasoner, ReasonerError, Verdict};

use super::rule::Language;
use super::ruleset::RuleSet;
use crate::pipeline::fusion::{self, Contributions, FusionParams};

#[derive(Clone, Debug)]
pub struct RuleVote {
    rule_set_id: String,
    rule_set_sha: String,
    language: Language,
    params: FusionParams,
    /// Whether any rule of the set is enabled (else the fusion step is skipped).
    any_enabled: bool,
}

impl RuleVote {
    /// A reasoner that explains itself in `rules`' language; it scores `Case::fired`, which
    /// the pipeline fills with `rules.evaluate(..)`.
    pub fn new(rules: &RuleSet) -> Self {
        Self {
            rule_set_id: rules.id_string(),
            rule_set_sha: rules.sha256(),
            language: rules.language(),
            params: FusionParams::RULE_VOTE,
            any_enabled: rules.rules().iter().any(|r| r.enabled()),
        }
    }

    /// Decides by a model's fitted fusion instead of the unfitted vote.
    pub fn with_fusion(mut self, params: FusionParams) -> Self {
        self.params = params;
        self
    }

    pub fn fusion(&self) -> &FusionParams {
        &self.params
    }

    /// Sets the weight of the acoustic prior; negative or non-finite values become 0.
    pub fn with_prior_weight(mut self, prior_weight: f64) -> Self {
        self.params.acoustic_weight = if prior_weight.is_finite() {
            prior_weight.max(0.0)
        } else {
            0.0
        };
        self
    }

    pub fn prior_weight(&self) -> f64 {
        self.params.acoustic_weight
    }

    /// The fused log-probabilities per label, in the acoustic labels' order, of a familiar
    /// clip ([`combine`](Self::combine) is their exponential).
    pub fn logits(&self, acoustic: &Probs, fired: &[crate::FiredRule]) -> Vec<f64> {
        let fused = fusion::fuse(&self.params, acoustic, fired, None, None)
            .1
            .fused;
        acoustic.labels.iter().map(|l| fused[l]).collect()
    }

    /// The combined probabilities of a familiar clip (no rationale).
    pub fn combine(&self, acoustic: &Probs, fired: &[crate::FiredRule]) -> Probs {
        fusion::fuse(&self.params, acoustic, fired, None, None).0
    }

    /// Whether deciding would change nothing: no enabled rule, or an acoustic-only fusion.
    fn skips(&self) -> bool {
        !self.any_enabled || self.params == FusionParams::ACOUSTIC_ONLY
    }

    fn rationale(&self, probs: &Probs, c: &Contributions, fired: &[crate::FiredRule]) -> String {
        rationale(self.language, probs, c, fired)
    }
}

/// The rationale of a fused decision, in `language`, from its contributions only: the
/// acoustic model's lean, what the fired rules pushed (with their statements), how
/// unfamiliarity moved the weights, and the conclusion.
pub fn rationale(
    language: Language,
    probs: &Probs,
    c: &Contributions,
    fired: &[crate::FiredRule],
) -> String {
    let vi = language == Language::Vi;
    let name = |label: &str| {
        let (v, e) = crate::refine::wording::label_names(label);
        if vi {
            v
        } else {
            e
        }
    };
    let (ai, ap) = c
        .acoustic_logp
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(l, v)| (l.clone(), v.exp()))
        .unwrap_or_default();
    let mut text = if vi {
        format!("Mô hình âm học nghiêng về {} ({ap:.2}", name(&ai))
    } else {
        format!("The acoustic model leans to {} ({ap:.2}", name(&ai))
    };
    if (c.acoustic_weight - 1.0).abs() > 1e-9 {
        text.push_str(&if vi {
            format!(", trọng số {:.2}", c.acoustic_weight)
        } else {
            format!(", weight {:.2}", c.acoustic_weight)
        });
    }
    text.push(')');
    // Said only when unfamiliarity did move the weights toward the rules.
    let shifted = c.unfamiliarity_term.rule_scale_change > 0.0
        || c.unfamiliarity_term.acoustic_weight_change < 0.0;
    if c.unfamiliarity_term.excess > 0.0 {
        text.push_str(&if vi {
            format!(
                "; đoạn ghi âm lạ so với dữ liệu huấn luyện (vượt {:.2}){}",
                c.unfamiliarity_term.excess,
                if shifted {
                    ", nên tin quy tắc hơn"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "; the clip is unfamiliar (excess {:.2}){}",
                c.unfamiliarity_term.excess,
                if shifted {
                    ", so the rules count for more"
                } else {
                    ""
                }
            )
        });
    }
    if let Some(llm) = c.llm.as_ref().filter(|l| l.weight != 0.0) {
        let (li, lp) = llm
            .logp
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(l, v)| (l.clone(), v.exp()))
            .unwrap_or_default();
        text.push_str(&if vi {
            format!(
                "; mô hình ngôn ngữ nghiêng về {} ({lp:.2}, trọng số {:.2})",
                name(&li),
                llm.weight
            )
        } else {
            format!(
                "; the language model leans to {} ({lp:.2}, weight {:.2})",
                name(&li),
                llm.weight
            )
        });
    }
    if fired.is_empty() {
        text.push_str(if vi {
            "; không có quy tắc nào khớp"
        } else {
            "; no rule fired"
        });
    } else if c.rules.is_empty() {
        // Rules fired, but this model's fusion gives them no weight (acoustic only).
        let ids: Vec<&str> = fired.iter().map(|r| r.id.as_str()).collect();
        text.push_str(&if vi {
            format!(
                "; các quy tắc khớp ({}) không có trọng số trong quyết định của mô hình này",
                ids.join(", ")
            )
        } else {
            format!(
                "; the rules that fired ({}) carry no weight in this model's decision",
                ids.join(", ")
            )
        });
    }
    let (best, p) = probs.argmax();
    text.push_str(&if vi {
        format!(
            "; kết luận: {} ({:.0}%).",
            name(&probs.labels[best]),
            p * 100.0
        )
    } else {
        format!(
            "; decision: {} ({:.0}%).",
            name(&probs.labels[best]),
            p * 100.0
        )
    });
    for (rule, push) in fired.iter().zip(&c.rules) {
        let statement = match (language, &rule.statement_vi) {
            (Language::Vi, Some(s)) if !s.trim().is_empty() => s.as_str(),
            _ => rule.statement_en.as_str(),
        };
        text.push_str(&format!(
            "\n- [{}] {} → {} ({:+.2})",
            rule.id,
            statement,
            name(&rule.label),
            push.push
        ));
    }
    text
}

impl Reasoner for RuleVote {
    fn name(&self) -> String {
        let sha = &self.rule_set_sha[..12.min(self.rule_set_sha.len())];
        if self.params == FusionParams::RULE_VOTE {
            return format!(
                "rule-vote ({}, sha256 {sha}, prior_weight 1)",
                self.rule_set_id
            );
        }
        let p = &self.params;
        format!(
            "fused ({}, sha256 {sha}, acoustic_weight {}, rule_scale {}, unfamiliar_acoustic {}, unfamiliar_rules {})",
            self.rule_set_id, p.acoustic_weight, p.rule_scale, p.unfamiliar_acoustic, p.unfamiliar_rules
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
        if self.skips() {
            // Nothing to fuse: the acoustic probabilities stand, bit for bit.
            let contributions = Contributions::acoustic_only(acoustic);
            let rationale = self.rationale(acoustic, &contributions, case.fired);
            return Ok(Verdict {
                probs: acoustic.clone(),
                contributions: Some(contributions),
                rationale: Some(rationale),
                rationale_language: Some(self.language.code().into()),
                llm_rationale: None,
                prompt_tokens: 0,
                generated_tokens: 0,
                timings_ms: BTreeMap::new(),
            });
        }
        let (probs, contributions) =
            fusion::fuse(&self.params, acoustic, case.fired, None, case.unfamiliarity);
        let rationale = self.rationale(&probs, &contributions, case.fired);
        Ok(Verdict {
            probs,
            contributions: Some(contributions),
            rationale: Some(rationale),
            rationale_language: Some(self.language.code().into()),
            llm_rationale: None,
            prompt_tokens: 0,
            generated_tokens: 0,
            timings_ms: BTreeMap::from([(
                "reasoner".to_string(),
                started.elapsed().as_secs_f64() * 1e3,
            )]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FiredRule, LabelSet};

    /// Rules that fired under an acoustic-only fusion are named as carrying no weight, not
    /// reported as absent; with none fired the rationale says so.
    #[test]
    fn an_acoustic_only_rationale_names_the_rules_that_fired_without_weight() {
        let probs = Probs::new(&LabelSet::default(), vec![0.2, 0.7, 0.1]);
        let c = Contributions::acoustic_only(&probs);
        let fired = [FiredRule {
            id: "angry-harsh-voice".into(),
            label: "angry".into(),
            weight: 1.0,
            statement_en: "harsh voice".into(),
            statement_vi: None,
        }];
        for (language, absent) in [
            (Language::Vi, "không có quy tắc nào khớp"),
            (Language::En, "no rule fired"),
        ] {
            let text = rationale(language, &probs, &c, &fired);
            assert!(
                text.contains("angry-harsh-voice") && !text.contains(absent),
                "{text}"
            );
            assert!(rationale(language, &probs, &c, &[]).contains(absent));
        }
    }
}
