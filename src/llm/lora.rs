//! LoRA task adaptation of a small GGUF LLM on training-side prompts (issue 4).
//!
//! The base model (a llama-architecture GGUF, SmolLM2-135M by default) is dequantised to f32
//! and frozen; low-rank adapters on the attention projections of the top layers are trained
//! so that the logits of the labels' first answer tokens, read at the answer cue of the
//! reasoner's prompt, classify the clip (cross-entropy over the labels: the decision stays
//! "score each label", never parse text).
//!
//! Cost control on a 2-core CPU: the guideline + rules prefix is run once through the *base*
//! model and its keys/values are kept for every clip (adapters act on the clip's suffix only,
//! at training and at inference alike, so the prefix cache stays shared); and only the top
//! `k` layers carry adapters, so each training prompt's suffix is run through the frozen
//! lower layers once and their output is cached; an epoch then runs `k` layers forward and
//! backward over the suffix tokens.

mod adapters;
mod forward;
mod reasoner;

use std::path::PathBuf;

use candle_core::{Tensor, D};
use candle_nn::Optimizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use adapters::{sha256_of, LoraAdapters, LoraHeader};
pub use forward::{F32Llama, LlamaShape, PrefixKv};
pub use reasoner::LoraReasoner;

use super::chat::ChatTemplate;
use super::error::LlmError;
use super::gguf::GgufFile;
use super::prompt::{PromptBuilder, PromptLanguage, RuleText};
use super::tokenizer::GgufTokenizer;
use crate::types::{Case, LabelSet};

/// The prompt layout adapters are trained on: [`PromptBuilder`] in English, the base model's
/// KV cache for its prefix, the clip's evidence, the question with the labels in label-set
/// order, the logits read after the answer cue.
pub const PROMPT_VERSION: &str = "promptbuilder-en/base-prefix-kv/order-0/v1";

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("{path}: cannot read or write: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: model computation failed: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("{path}: bad LoRA adapters: {reason}")]
    Adapter { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Prompt { path: PathBuf, reason: String },
}

/// Which projection of the attention block an adapter updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    Q,
    K,
    V,
    O,
}

impl LoraTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            LoraTarget::Q => "q",
            LoraTarget::K => "k",
            LoraTarget::V => "v",
            LoraTarget::O => "o",
        }
    }
}

/// Adapter shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Adapters on the top this-many layers only.
    pub top_layers: usize,
    pub targets: Vec<LoraTarget>,
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            top_layers: 4,
            targets: vec![LoraTarget::Q, LoraTarget::V],
            seed: 7,
        }
    }
}

impl LoraConfig {
    /// The adapted layer indices of an `n_layer` model.
    pub fn layers(&self, n_layer: usize) -> Vec<usize> {
        (n_layer.saturating_sub(self.top_layers.max(1))..n_layer).collect()
    }
}

/// How adapters are trained.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub epochs: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Clips per optimiser step (their losses are averaged).
    pub batch: usize,
    /// Seeds the clip order of each epoch.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 4,
            learning_rate: 5e-4,
            weight_decay: 0.01,
            batch: 8,
            seed: 11,
        }
    }
}

/// A training prompt, run through the frozen lower layers once.
#[derive(Debug, Clone)]
pub struct CachedPrompt {
    /// Suffix hidden states at the input of the first adapted layer, `(seq, dim)`.
    pub hidden: Tensor,
    /// The layer `hidden` enters.
    pub from_layer: usize,
    pub tokens: usize,
}

/// The base model, tokenizer and prompt for one label set and rule list, with the prefix's
/// keys and values computed once.
pub struct LoraTask {
    model: F32Llama,
    tokenizer: GgufTokenizer,
    prompt: PromptBuilder,
    prefix: PrefixKv,
    question: Vec<u32>,
    label_tokens: Vec<u32>,
    labels: LabelSet,
    base_sha256: String,
    path: PathBuf,
}

impl LoraTask {
    /// Loads the base in f32 and runs the guideline + rules prefix once. `max_deviations`:
    /// evidence lines per clip (strongest |z| first).
    pub fn new(
        file: &GgufFile,
        labels: &LabelSet,
        rules: &[RuleText],
        max_deviations: usize,
    ) -> Result<Self, LoraError> {
        let path = file.path().to_path_buf();
        let model = F32Llama::load(file)?;
        let tokenizer = file.tokenizer()?;
        let mut prompt = PromptBuilder::new(
            ChatTemplate::for_file(file),
            PromptLanguage::English,
            labels,
            rules,
        );
        prompt.max_deviations = max_deviations;
        let order: Vec<usize> = (0..labels.len()).collect();
        let question = tokenizer.encode(&prompt.question(&order), false)?;
        let mut label_tokens = Vec::with_capacity(labels.len());
        for i in 0..labels.len() {
            let ids = tokenizer.encode(&prompt.answer(i), false)?;
            let first = ids.first().copied().ok_or_else(|| LoraError::Prompt {
                path: path.clone(),
                reason: format!("label {} encodes to no token", labels.name(i)),
            })?;
            if label_tokens.contains(&first) {
                return Err(LoraError::Prompt {
                    path: path.clone(),
                    reason: format!(
                        "labels share their first answer token {first}; their logits cannot be told apart"
                    ),
                });
            }
            label_tokens.push(first);
        }
        let prefix_ids = tokenizer.encode(prompt.prefix(), true)?;
        let prefix = model
            .prefix_kv(&prefix_ids)
            .map_err(|e| forward::candle_err(&path, "prefix", e))?;
        Ok(Self {
            model,
            tokenizer,
            prompt,
            prefix,
            question,
            label_tokens,
            labels: labels.clone(),
            base_sha256: sha256_of(&path)?,
            path,
        })
    }

    pub fn model(&self) -> &F32Llama {
        &self.model
    }

    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }

    pub fn label_tokens(&self) -> &[u32] {
        &self.label_tokens
    }

    pub fn base_sha256(&self) -> &str {
        &self.base_sha256
    }

    /// Tokens of the shared prefix.
    pub fn prefix_tokens(&self) -> usize {
        self.prefix.len()
    }

    /// Fresh adapters for this task's base, labels and label tokens.
    pub fn new_adapters(&self, config: &LoraConfig) -> Result<LoraAdapters, LoraError> {
        let names: Vec<String> = self.labels.names().iter().map(|s| s.to_string()).collect();
        LoraAdapters::new(
            self.model.shape(),
            config,
            &self.base_sha256,
            &names,
            &self.label_tokens,
        )
    }

    /// The clip's suffix: evidence, then the question ending at the answer cue.
    pub fn suffix_ids(&self, case: &Case<'_>) -> Result<Vec<u32>, LoraError> {
        let mut ids = self.tokenizer.encode(&self.prompt.evidence(case), false)?;
        ids.extend_from_slice(&self.question);
        Ok(ids)
    }

    /// Runs a suffix through layers `0..from_layer` of the base (once per training prompt).
    pub fn cache_prompt(
        &self,
        suffix: &[u32],
        from_layer: usize,
    ) -> Result<CachedPrompt, LoraError> {
        let n = self.model.shape().n_layer;
        let from_layer = from_layer.min(n);
        let hidden = self
            .model
            .embed(suffix)
            .and_then(|x| {
                self.model
                    .run_layers(&x, 0..from_layer, &self.prefix, None, false)
            })
            .map_err(|e| self.err("lower layers", e))?;
        Ok(CachedPrompt {
            hidden,
            from_layer,
            tokens: suffix.len(),
        })
    }

    /// Label logits `(labels,)` of a cached prompt through the remaining layers.
    pub fn label_logits(
        &self,
        cached: &CachedPrompt,
        adapters: Option<&LoraAdapters>,
        differentiable: bool,
    ) -> candle_core::Result<Tensor> {
        let n = self.model.shape().n_layer;
        let x = self.model.run_layers(
            &cached.hidden,
            cached.from_layer..n,
            &self.prefix,
            adapters,
            differentiable,
        )?;
        self.model.logits_at_last(&x, &self.label_tokens)
    }

    /// Label probabilities of a cached prompt.
    pub fn probs(
        &self,
        cached: &CachedPrompt,
        adapters: Option<&LoraAdapters>,
    ) -> Result<Vec<f32>, LoraError> {
        self.label_logits(cached, adapters, false)
            .and_then(|l| candle_nn::ops::softmax(&l, D::Minus1))
            .and_then(|p| p.to_vec1())
            .map_err(|e| self.err("label scores", e))
    }

    /// Mean cross-entropy of `examples` (cached prompt, label index).
    pub fn loss(
        &self,
        examples: &[(&CachedPrompt, usize)],
        adapters: Option<&LoraAdapters>,
        differentiable: bool,
    ) -> candle_core::Result<Tensor> {
        let mut logits = Vec::with_capacity(examples.len());
        for (c, _) in examples {
            logits.push(
                self.label_logits(c, adapters, differentiable)?
                    .unsqueeze(0)?,
            );
        }
        let targets: Vec<u32> = examples.iter().map(|(_, y)| *y as u32).collect();
        let targets = Tensor::new(targets.as_slice(), &candle_core::Device::Cpu)?;
        candle_nn::loss::cross_entropy(&Tensor::cat(&logits, 0)?, &targets)
    }

    /// Trains `adapters` on `examples`; returns the mean training loss of each epoch (as the
    /// batches saw it, before their step). Prompts must be cached at or below the adapters'
    /// first layer.
    pub fn train(
        &self,
        adapters: &LoraAdapters,
        examples: &[(&CachedPrompt, usize)],
        options: &TrainOptions,
        mut progress: impl FnMut(usize, f32),
    ) -> Result<Vec<f32>, LoraError> {
        if let Some((c, _)) = examples
            .iter()
            .find(|(c, _)| c.from_layer > adapters.first_layer())
        {
            return Err(LoraError::Prompt {
                path: self.path.clone(),
                reason: format!(
                    "prompt cached at layer {} but adapters start at layer {}",
                    c.from_layer,
                    adapters.first_layer()
                ),
            });
        }
        let params = candle_nn::ParamsAdamW {
            lr: options.learning_rate,
            weight_decay: options.weight_decay,
            ..Default::default()
        };
        let mut opt =
            candle_nn::AdamW::new(adapters.vars(), params).map_err(|e| self.err("optimiser", e))?;
        let mut order: Vec<usize> = (0..examples.len()).collect();
        let mut losses = Vec::with_capacity(options.epochs);
        for epoch in 0..options.epochs {
            let mut rng = ChaCha8Rng::seed_from_u64(options.seed.wrapping_add(epoch as u64));
            order.shuffle(&mut rng);
            let (mut sum, mut n) = (0.0f64, 0usize);
            for chunk in order.chunks(options.batch.max(1)) {
                let batch: Vec<(&CachedPrompt, usize)> =
                    chunk.iter().map(|&i| examples[i]).collect();
                let loss = self
                    .loss(&batch, Some(adapters), true)
                    .map_err(|e| self.err("training loss", e))?;
                let v = loss
                    .to_scalar::<f32>()
                    .map_err(|e| self.err("training loss", e))?;
                sum += f64::from(v) * batch.len() as f64;
                n += batch.len();
                opt.backward_step(&loss)
                    .map_err(|e| self.err("backward", e))?;
            }
            let mean = (sum / n.max(1) as f64) as f32;
            progress(epoch, mean);
            losses.push(mean);
        }
        Ok(losses)
    }

    fn err(&self, what: &str, e: candle_core::Error) -> LoraError {
        forward::candle_err(&self.path, what, e)
    }
}
