//! A reasoner whose decision is the LoRA-adapted model's label scores.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::types::{Case, LabelSet, Probs, Reasoner, ReasonerError, Verdict};

use super::super::gguf::GgufFile;
use super::super::prompt::RuleText;
use super::{LoraAdapters, LoraError, LoraTask, PROMPT_VERSION};

/// Label distribution = softmax of the adapted model's logits of each label's first answer
/// token after the prompt (no rationale: it would be the base model's text).
pub struct LoraReasoner {
    task: LoraTask,
    adapters: LoraAdapters,
    name: String,
}

impl LoraReasoner {
    /// Loads the base GGUF in f32 and adapters saved for it; the labels must be the ones the
    /// adapters were trained on, in the same order.
    pub fn from_paths(
        gguf: &Path,
        adapters: &Path,
        labels: &LabelSet,
        rules: &[RuleText],
        max_deviations: usize,
    ) -> Result<Self, LoraError> {
        let file = GgufFile::open(gguf)?;
        let adapters_loaded = LoraAdapters::load(adapters, &file)?;
        let task = LoraTask::new(&file, labels, rules, max_deviations)?;
        Self::new(task, adapters_loaded, adapters)
    }

    /// Checks that `adapters` fit `task` (labels, label tokens, prompt version).
    pub fn new(task: LoraTask, adapters: LoraAdapters, source: &Path) -> Result<Self, LoraError> {
        let h = adapters.header();
        let names: Vec<String> = task
            .labels()
            .names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mismatch = if h.labels != names {
            Some(format!("labels {:?}, task {:?}", h.labels, names))
        } else if h.label_tokens != task.label_tokens() {
            Some(format!(
                "label tokens {:?}, task {:?}",
                h.label_tokens,
                task.label_tokens()
            ))
        } else if h.prompt_version != PROMPT_VERSION {
            Some(format!(
                "prompt {}, this build {PROMPT_VERSION}",
                h.prompt_version
            ))
        } else if h.base_sha256 != task.base_sha256() {
            Some("another base model".to_string())
        } else {
            None
        };
        if let Some(reason) = mismatch {
            return Err(LoraError::Adapter {
                path: source.to_path_buf(),
                reason: format!("do not fit this task: {reason}"),
            });
        }
        let name = format!(
            "llm-lora:r{}-l{}-{}:{}",
            h.rank,
            h.layers.len(),
            h.targets
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(""),
            &h.base_sha256.get(..12).unwrap_or("")
        );
        Ok(Self {
            task,
            adapters,
            name,
        })
    }

    fn decide_inner(&self, case: &Case<'_>) -> Result<Verdict, LoraError> {
        let start = Instant::now();
        let suffix = self.task.suffix_ids(case)?;
        let cached = self
            .task
            .cache_prompt(&suffix, self.adapters.first_layer())?;
        let probs = self.task.probs(&cached, Some(&self.adapters))?;
        Ok(Verdict {
            contributions: None,
            probs: Probs::new(self.task.labels(), probs),
            rationale: None,
            rationale_language: None,
            llm_rationale: None,
            prompt_tokens: self.task.prefix_tokens() + suffix.len(),
            generated_tokens: 0,
            timings_ms: BTreeMap::from([(
                "llm_decision".to_string(),
                start.elapsed().as_secs_f64() * 1e3,
            )]),
        })
    }
}

impl Reasoner for LoraReasoner {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn llm_decides(&self) -> bool {
        true
    }

    fn decide(&mut self, case: &Case<'_>) -> Result<Verdict, ReasonerError> {
        self.decide_inner(case).map_err(|e| ReasonerError::Failed {
            reasoner: self.name.clone(),
            message: e.to_string(),
        })
    }
}
