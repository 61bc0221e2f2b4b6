//! One evaluated clip: the pipeline's Decision plus what the ablations need (the true label and
//! each ablation's label). `eval --out` appends one of these per clip (a Decision with extra
//! keys), `--resume` reads them back, the summary and the report are computed from them.

use serde::{Deserialize, Serialize};

use crate::Decision;

/// `perturbed_label` of a clip that field conditions made unusable (e.g. no speech found).
pub const UNUSABLE: &str = "unusable";

/// The label each ablation gave this clip (names from the label set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblationLabels {
    pub acoustic_only: String,
    /// The rule vote alone (uniform prior, no acoustic model).
    pub rules_only: String,
    /// The LLM on this clip, when an LLM ran (`None` with `--llm none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_only: Option<String>,
    /// What the routed clips' reasoner (the LLM when given, else the rule vote with the acoustic
    /// prior) says about this clip, routed or not: the accuracy-vs-coverage curve needs it.
    pub reasoner: String,
    /// Acoustic for kept clips, the reasoner for routed ones (= `decision.label` unless
    /// `--abstain-below` replaced it with `uncertain`).
    pub routed: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// The full Decision (route, probabilities, evidence, fired rules, rationale, timings).
    #[serde(flatten)]
    pub decision: Decision,
    /// The manifest's label.
    pub truth: String,
    /// The manifest's speaker, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    pub ablations: AblationLabels,
    /// Acoustic label under simulated field conditions (`--robustness`); `None` when not run,
    /// [`UNUSABLE`] when the perturbed clip could not be analysed (it counts as wrong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perturbed_label: Option<String>,
    /// The model's temperature, so the report can show the reliability before calibration
    /// (uncalibrated p = softmax(T · ln p_calibrated)).
    pub temperature: f32,
}
