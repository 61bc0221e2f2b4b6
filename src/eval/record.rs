//! One evaluated clip: the pipeline's Decision plus what the ablations need (the true label and
//! each ablation's label). `eval --out` appends one of these per clip (a Decision with extra
//! keys), `--resume` reads them back, the summary and the report are computed from them.

use serde::{Deserialize, Serialize};

use crate::pipeline::output::{Failure, ResumeHeader, RunHeader};
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

impl EvalRecord {
    /// Whether the router sent this clip to the reasoner.
    pub fn routed(&self) -> bool {
        self.decision.route != crate::Route::Acoustic
    }
}

/// One line of an `eval --out` file after the header: a clip's record, or why it failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EvalLine {
    // Tried first: a failure's two keys would also match a record's `file`.
    Record(Box<EvalRecord>),
    Failure(Failure),
}

impl EvalLine {
    pub fn file(&self) -> &str {
        match self {
            EvalLine::Record(r) => &r.decision.file,
            EvalLine::Failure(f) => &f.file,
        }
    }
}

/// First line of an `eval --out` file: classify's run header plus what else changes a
/// record, so `--resume` refuses to mix records of different runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalHeader {
    #[serde(flatten)]
    pub run: RunHeader,
    pub eval: EvalSettings,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalSettings {
    /// sha256 of the model's model.json and routing.json: `calibrate` changes the
    /// temperature, evidence baseline and threshold without touching the weights.
    pub model_config_sha256: String,
    /// Seed of the field-condition perturbations (`--robustness`), `None` when not run.
    pub perturbation_seed: Option<u64>,
}

impl ResumeHeader for EvalHeader {
    fn mismatch(&self, found: &Self) -> String {
        if found.run != self.run {
            return self.run.mismatch(&found.run);
        }
        let show = |s: &EvalSettings| {
            format!(
                "model configuration {}, perturbation seed {}",
                &s.model_config_sha256[..12.min(s.model_config_sha256.len())],
                s.perturbation_seed
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into())
            )
        };
        format!(
            "it was written with other settings ({}); this run uses {}",
            show(&found.eval),
            show(&self.eval)
        )
    }
}
