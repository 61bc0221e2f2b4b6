//! The LLM reasoner: a constrained decision by label likelihood, debiased, plus a short
//! generated rationale.
//!
//! Each label is scored by the log-likelihood of its answer tokens after the prompt; free text
//! is never parsed for the label. Small models carry a strong label prior (SmolLM2 answered
//! "panic" for every clip, Qwen "calm"), so two corrections are applied:
//! - the labels are listed in several rotated orders and the scores averaged (position bias);
//! - contextual calibration: the score on an evidence-free prompt (same order) is subtracted,
//!   so only what the clip's evidence moves counts (Zhao et al. 2021).
//!
//! The guideline + rules prefix is processed once; its KV cache is restored for every clip.
//!
//! Measured on the RAVDESS validation actors (04, 06, 09; 22 routed clips, acoustic model
//! 0.864, rule vote 0.818; `cargo run --example llm_variants -- MODEL_DIR`): no label-scoring
//! variant of SmolLM2-135M, Qwen2.5-Coder-0.5B or Gemma 3 270M reached the rule vote (best:
//! Gemma 3 with every order and batch calibration, 0.727), and fusing the LLM's scores into
//! the rule vote with a weight fitted leave-one-speaker-out left its decisions unchanged.
//! Hence [`LlmExplains`]: the rule vote decides, the LLM writes the rationale.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::pipeline::fusion::{self, FusionParams};
use crate::types::{Case, LabelSet, Probs, Reasoner, ReasonerError, Verdict};

use super::chat::ChatTemplate;
use super::error::LlmError;
use super::gguf::GgufFile;
use super::model::{KvSnapshot, LlmModel, LoadOptions};
use super::prompt::{PromptBuilder, PromptLanguage, RuleText};
use super::tokenizer::GgufTokenizer;

/// How the reasoner decides.
#[derive(Debug, Clone)]
pub struct ReasonerOptions {
    pub language: PromptLanguage,
    /// Orders of the label list to average over: first the rotations of the label-set order,
    /// then the rotations of its reverse (for three labels, 6 = every permutation). 1 = the
    /// label-set order only. Each costs a question and its answers per clip.
    pub label_orders: usize,
    /// Subtract the evidence-free scores (contextual calibration).
    pub calibrate: bool,
    /// Content-free evidence texts averaged for the calibration (1 = "no measurements" only;
    /// more add a neutral-numbers prompt and "N/A", Zhao et al. 2021's ensemble).
    pub calibration_prompts: usize,
    /// Generate a rationale for the chosen label.
    pub rationale: bool,
    pub max_rationale_tokens: usize,
    /// Deviations listed in the evidence.
    pub max_deviations: usize,
    /// Fired rules with their statements rather than ids only.
    pub fired_statements: bool,
    /// Also return the mean final hidden state over the clip's evidence tokens
    /// ([`LabelScores::embedding`]): the LLM as an encoder, for a trained head (research).
    #[cfg(feature = "research")]
    pub embed_evidence: bool,
    /// The compact prompt ([`PromptBuilder::compact`]): the question is cached with the
    /// prefix and the evidence is terse, so a warm decision feeds about 40 tokens. Implies one
    /// label order (`label_orders` is ignored); `max_deviations` still applies.
    pub compact: bool,
}

impl Default for ReasonerOptions {
    fn default() -> Self {
        Self {
            language: PromptLanguage::English,
            label_orders: 3,
            calibrate: true,
            calibration_prompts: 1,
            rationale: true,
            max_rationale_tokens: 40,
            max_deviations: 4,
            fired_statements: false,
            #[cfg(feature = "research")]
            embed_evidence: false,
            compact: false,
        }
    }
}

/// Whether the product's LLM decision (`--llm-decides`) uses the compact prompt
/// ([`ReasonerOptions::compact`]); `models bench` times both.
pub const DECISION_PROMPT_COMPACT: bool = true;

impl ReasonerOptions {
    /// The full label-bias removal: every label order (permutations for three labels) and
    /// the three-prompt calibration ensemble. On an evidence-free prompt the label
    /// distribution is then near uniform by construction. Research: on SmolLM2-135M it turns
    /// a clear calm case angry (tests/llm_debias.rs).
    #[cfg(feature = "research")]
    pub fn debiased() -> Self {
        Self {
            label_orders: 6,
            calibrate: true,
            calibration_prompts: 3,
            ..Self::default()
        }
    }

    /// The fast decision: the compact prompt, one label order, the evidence-free calibration
    /// (computed once at load, free per clip), the two strongest deviations.
    pub fn compact() -> Self {
        Self {
            compact: true,
            label_orders: 1,
            max_deviations: 2,
            ..Self::default()
        }
    }
}

/// Label orders to average over: rotations of the label-set order, then rotations of its
/// reverse, without repeats, at most `wanted` (at least one).
pub(crate) fn label_orders(n: usize, wanted: usize) -> Vec<Vec<usize>> {
    let forward: Vec<usize> = (0..n).collect();
    let backward: Vec<usize> = (0..n).rev().collect();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for base in [&forward, &backward] {
        for r in 0..n.max(1) {
            let o: Vec<usize> = (0..n).map(|i| base[(i + r) % n]).collect();
            if !out.contains(&o) {
                out.push(o);
            }
        }
    }
    out.truncate(wanted.max(1));
    out
}

/// Raw and debiased label scores of one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScores {
    /// Log-likelihood of each label's answer, per label order (rows) and label (columns).
    pub loglik: Vec<Vec<f32>>,
    /// Averaged over orders, calibration subtracted: what the probabilities are a softmax of.
    pub score: Vec<f32>,
    pub suffix_tokens: usize,
    /// Mean final hidden state over the evidence tokens (empty unless
    /// `ReasonerOptions::embed_evidence`; research).
    #[cfg(feature = "research")]
    pub embedding: Vec<f32>,
    /// Milliseconds for the evidence, then for each order's question and answers.
    pub evidence_ms: f64,
    pub order_ms: Vec<f64>,
}

/// What feeding one clip's suffix gave.
struct SuffixRun {
    /// Per order and label.
    loglik: Vec<Vec<f32>>,
    /// Suffix tokens fed.
    fed: usize,
    /// The cache after the first question (where the rationale continues).
    after_question: KvSnapshot,
    #[cfg(feature = "research")]
    embedding: Vec<f32>,
}

/// What a reasoner needs from its GGUF besides the weights: the tokenizer, the prompt for the
/// file's chat format and the token ids it uses again and again.
struct Prepared {
    tokenizer: GgufTokenizer,
    prompt: PromptBuilder,
    orders: Vec<Vec<usize>>,
    question_ids: Vec<Vec<u32>>,
    answer_ids: Vec<Vec<u32>>,
    cue_ids: Vec<u32>,
    stop_ids: Vec<u32>,
    prefix_ids: Vec<u32>,
    name: String,
}

impl Prepared {
    fn new(
        file: &GgufFile,
        labels: &LabelSet,
        rules: &[RuleText],
        options: &ReasonerOptions,
    ) -> Result<Self, LlmError> {
        let tokenizer = file.tokenizer()?;
        let build = if options.compact {
            PromptBuilder::compact
        } else {
            PromptBuilder::new
        };
        let mut prompt = build(
            ChatTemplate::for_file(file),
            options.language,
            labels,
            rules,
        );
        prompt.max_deviations = options.max_deviations;
        prompt.fired_statements = options.fired_statements;
        let n = labels.len();
        // The compact prompt asks its question once, in the prefix: one order.
        let wanted_orders = if options.compact {
            1
        } else {
            options.label_orders
        };
        let orders = label_orders(n, wanted_orders);
        let question_ids = orders
            .iter()
            .map(|o| tokenizer.encode(&prompt.question(o), false))
            .collect::<Result<Vec<_>, _>>()?;
        let answer_ids = (0..n)
            .map(|i| tokenizer.encode(&prompt.answer(i), false))
            .collect::<Result<Vec<_>, _>>()?;
        let cue_ids = tokenizer.encode(prompt.rationale_cue(), false)?;
        let mut stop_ids = tokenizer.end_of_turn_ids();
        stop_ids.extend(tokenizer.eos_token_id());
        stop_ids.extend(tokenizer.token_id("\n"));
        stop_ids.extend(tokenizer.token_id("Ċ"));
        let prefix_ids = tokenizer.encode(prompt.prefix(), true)?;
        let name = format!(
            "llm:{}",
            file.path()
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        Ok(Self {
            tokenizer,
            prompt,
            orders,
            question_ids,
            answer_ids,
            cue_ids,
            stop_ids,
            prefix_ids,
            name,
        })
    }
}

pub struct LlmReasoner {
    model: LlmModel,
    tokenizer: GgufTokenizer,
    prompt: PromptBuilder,
    options: ReasonerOptions,
    prefix_ids: Vec<u32>,
    prefix_cache: KvSnapshot,
    /// Label indices, one rotation per order.
    orders: Vec<Vec<usize>>,
    question_ids: Vec<Vec<u32>>,
    answer_ids: Vec<Vec<u32>>,
    cue_ids: Vec<u32>,
    stop_ids: Vec<u32>,
    /// Evidence-free log-likelihoods, per order and label (zeros without calibration).
    calibration: Vec<Vec<f32>>,
    name: String,
    prefix_ms: f64,
    /// Milliseconds of the last `loglik_after`: the evidence, then each order.
    timing: Vec<f64>,
}

impl LlmReasoner {
    /// Opens and loads a GGUF and prepares the prompt cache.
    pub fn from_path(
        path: &Path,
        labels: &LabelSet,
        rules: &[RuleText],
        options: ReasonerOptions,
        load: &LoadOptions,
    ) -> Result<Self, LlmError> {
        let file = GgufFile::open(path)?;
        let model = LlmModel::load(&file, load)?;
        Self::from_file(file, model, labels, rules, options)
    }

    /// [`Self::new`] for a file that is not needed afterwards: its metadata (Qwen2.5: ~28 MB
    /// of token strings and merges, read by the tokenizer) is freed before the prefix's KV
    /// cache and activations are allocated, so it lowers the peak instead of adding to it.
    pub fn from_file(
        file: GgufFile,
        model: LlmModel,
        labels: &LabelSet,
        rules: &[RuleText],
        options: ReasonerOptions,
    ) -> Result<Self, LlmError> {
        let prepared = Prepared::new(&file, labels, rules, &options)?;
        drop(file);
        Self::start(prepared, model, labels.len(), options)
    }

    /// Builds the prompt for `file`'s chat format, processes the shared prefix once and, when
    /// calibrating, scores the evidence-free prompt.
    pub fn new(
        file: &GgufFile,
        model: LlmModel,
        labels: &LabelSet,
        rules: &[RuleText],
        options: ReasonerOptions,
    ) -> Result<Self, LlmError> {
        let prepared = Prepared::new(file, labels, rules, &options)?;
        Self::start(prepared, model, labels.len(), options)
    }

    /// Processes the shared prefix of a prepared prompt and, when calibrating, scores the
    /// evidence-free prompt.
    fn start(
        prepared: Prepared,
        mut model: LlmModel,
        n: usize,
        options: ReasonerOptions,
    ) -> Result<Self, LlmError> {
        let Prepared {
            tokenizer,
            prompt,
            orders,
            question_ids,
            answer_ids,
            cue_ids,
            stop_ids,
            prefix_ids,
            name,
        } = prepared;
        let start = Instant::now();
        model.reset();
        model.forward(&prefix_ids)?;
        let prefix_cache = model.snapshot();
        let prefix_ms = start.elapsed().as_secs_f64() * 1e3;
        let mut r = Self {
            model,
            tokenizer,
            prompt,
            calibration: vec![vec![0.0; n]; orders.len()],
            options,
            prefix_ids,
            prefix_cache,
            orders,
            question_ids,
            answer_ids,
            cue_ids,
            stop_ids,
            name,
            prefix_ms,
            timing: Vec::new(),
        };
        if r.options.calibrate {
            let nulls = r.prompt.null_evidences();
            let k = r.options.calibration_prompts.clamp(1, nulls.len());
            let mut sum = vec![vec![0.0f32; n]; r.orders.len()];
            for text in &nulls[..k] {
                let ids = r.tokenizer.encode(text, false)?;
                let rows = r.loglik_after(&ids, true)?.loglik;
                for (s, row) in sum.iter_mut().zip(rows) {
                    for (a, b) in s.iter_mut().zip(row) {
                        *a += b / k as f32;
                    }
                }
            }
            r.calibration = sum;
        }
        Ok(r)
    }

    pub fn prompt(&self) -> &PromptBuilder {
        &self.prompt
    }

    /// The tokenizer built from the model's GGUF metadata.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    pub fn model(&self) -> &LlmModel {
        &self.model
    }

    /// The label orders averaged over (indices into the label set), one per `loglik` row.
    pub fn orders(&self) -> &[Vec<usize>] {
        &self.orders
    }

    /// Evidence-free log-likelihoods subtracted per order and label (zeros without
    /// calibration).
    pub fn calibration(&self) -> &[Vec<f32>] {
        &self.calibration
    }

    /// Tokens in the shared prefix and the milliseconds its prefill took.
    pub fn prefix_cost(&self) -> (usize, f64) {
        (self.prefix_ids.len(), self.prefix_ms)
    }

    /// Label scores of one clip. `use_cache = false` re-processes the prefix from scratch
    /// (what every clip would pay without prompt caching).
    pub fn score(&mut self, case: &Case<'_>, use_cache: bool) -> Result<LabelScores, LlmError> {
        let text = self.prompt.evidence(case);
        self.score_text(&text, use_cache)
    }

    /// Label scores after an evidence text of the caller's (e.g. one of
    /// [`PromptBuilder::null_evidences`], to study the calibration).
    pub fn score_text(&mut self, text: &str, use_cache: bool) -> Result<LabelScores, LlmError> {
        let evidence = self.tokenizer.encode(text, false)?;
        self.timing.clear();
        let SuffixRun {
            loglik,
            fed: suffix_tokens,
            #[cfg(feature = "research")]
            embedding,
            ..
        } = self.loglik_after(&evidence, use_cache)?;
        let (evidence_ms, order_ms) = match self.timing.split_first() {
            Some((e, rest)) => (*e, rest.to_vec()),
            None => (0.0, Vec::new()),
        };
        let k = loglik.len() as f32;
        let n = self.answer_ids.len();
        let score = (0..n)
            .map(|l| {
                loglik
                    .iter()
                    .zip(&self.calibration)
                    .map(|(row, cal)| row[l] - cal[l])
                    .sum::<f32>()
                    / k
            })
            .collect();
        Ok(LabelScores {
            loglik,
            score,
            suffix_tokens,
            #[cfg(feature = "research")]
            embedding,
            evidence_ms,
            order_ms,
        })
    }

    /// Log-likelihood of every answer after prefix + `evidence` + each order's question.
    /// Returns them per order, the suffix tokens fed, and the cache after the first
    /// question (where the rationale continues), and the evidence embedding when asked for.
    fn loglik_after(&mut self, evidence: &[u32], use_cache: bool) -> Result<SuffixRun, LlmError> {
        #[cfg(feature = "research")]
        let mut embedding = Vec::new();
        let mut clock = Instant::now();
        let mut timing = Vec::with_capacity(self.orders.len() + 1);
        if use_cache {
            self.model.restore(&self.prefix_cache);
            #[cfg(feature = "research")]
            if self.options.embed_evidence {
                embedding = self.model.forward_mean_hidden(evidence)?.1;
            } else {
                self.model.forward(evidence)?;
            }
            #[cfg(not(feature = "research"))]
            self.model.forward(evidence)?;
        } else {
            self.model.reset();
            let mut all = self.prefix_ids.clone();
            all.extend_from_slice(evidence);
            self.model.forward(&all)?;
        }
        let mut fed = evidence.len();
        let after_evidence = self.model.snapshot();
        timing.push(clock.elapsed().as_secs_f64() * 1e3);
        clock = Instant::now();
        let mut rows = Vec::with_capacity(self.orders.len());
        let mut first_question = None;
        for q in 0..self.orders.len() {
            self.model.restore(&after_evidence);
            let logits = self.model.forward(&self.question_ids[q])?;
            fed += self.question_ids[q].len();
            let after_question = self.model.snapshot();
            let mut row = Vec::with_capacity(self.answer_ids.len());
            for a in 0..self.answer_ids.len() {
                let (ll, extra) = self.answer_loglik(&logits, a, &after_question)?;
                fed += extra;
                row.push(ll);
            }
            rows.push(row);
            timing.push(clock.elapsed().as_secs_f64() * 1e3);
            clock = Instant::now();
            if first_question.is_none() {
                first_question = Some(after_question);
            }
        }
        let snap = first_question.unwrap_or(after_evidence);
        self.timing = timing;
        Ok(SuffixRun {
            loglik: rows,
            fed,
            after_question: snap,
            #[cfg(feature = "research")]
            embedding,
        })
    }

    /// Sum of log-probabilities of answer `a`'s tokens; the first comes from `logits`, later
    /// ones need the earlier tokens fed (then the cache is put back).
    fn answer_loglik(
        &mut self,
        logits: &[f32],
        a: usize,
        after_question: &KvSnapshot,
    ) -> Result<(f32, usize), LlmError> {
        let ids = self.answer_ids[a].clone();
        let Some((&first, rest)) = ids.split_first() else {
            return Ok((f32::NEG_INFINITY, 0));
        };
        let mut ll = log_softmax_at(logits, first);
        let mut prev = first;
        for &t in rest {
            let l = self.model.forward(&[prev])?;
            ll += log_softmax_at(&l, t);
            prev = t;
        }
        if !rest.is_empty() {
            self.model.restore(after_question);
        }
        Ok((ll, rest.len()))
    }

    /// Greedy continuation after the chosen label: why it fits.
    fn rationale(
        &mut self,
        after_question: &KvSnapshot,
        label: usize,
    ) -> Result<(String, usize), LlmError> {
        self.model.restore(after_question);
        let mut feed = self.answer_ids[label].clone();
        feed.extend_from_slice(&self.cue_ids);
        let mut logits = self.model.forward(&feed)?;
        let mut out = Vec::new();
        for _ in 0..self.options.max_rationale_tokens {
            let next = argmax(&logits);
            if self.stop_ids.contains(&next) {
                break;
            }
            out.push(next);
            logits = self.model.forward(&[next])?;
        }
        let cue_tail = self
            .prompt
            .rationale_cue()
            .rsplit(':')
            .next()
            .unwrap_or("")
            .trim();
        let text = self.tokenizer.decode_skip_special(&out)?;
        Ok((format!("{cue_tail}{}", text.trim_end()), out.len()))
    }

    /// A rationale for a label chosen elsewhere (e.g. by the rule vote): the evidence and the
    /// first question are fed, the label is written as the answer, and the model explains it.
    /// Returns the text and the tokens generated.
    pub fn rationale_for(
        &mut self,
        case: &Case<'_>,
        label: usize,
    ) -> Result<(String, usize), LlmError> {
        if label >= self.answer_ids.len() {
            return Err(LlmError::Model {
                path: self.model.path().to_path_buf(),
                reason: format!(
                    "label index {label} is outside the {} labels",
                    self.answer_ids.len()
                ),
            });
        }
        let mut feed = self.tokenizer.encode(&self.prompt.evidence(case), false)?;
        feed.extend_from_slice(&self.question_ids[0]);
        self.model.restore(&self.prefix_cache);
        self.model.forward(&feed)?;
        let after_question = self.model.snapshot();
        self.rationale(&after_question, label)
    }

    fn decide_inner(&mut self, case: &Case<'_>) -> Result<Verdict, LlmError> {
        let start = Instant::now();
        let evidence = self.tokenizer.encode(&self.prompt.evidence(case), false)?;
        let SuffixRun {
            loglik,
            fed: suffix_tokens,
            after_question,
            ..
        } = self.loglik_after(&evidence, true)?;
        let n = self.answer_ids.len();
        let k = loglik.len() as f32;
        let score: Vec<f32> = (0..n)
            .map(|l| {
                loglik
                    .iter()
                    .zip(&self.calibration)
                    .map(|(row, cal)| row[l] - cal[l])
                    .sum::<f32>()
                    / k
            })
            .collect();
        let probs = softmax(&score);
        let decision_ms = start.elapsed().as_secs_f64() * 1e3;
        let mut timings = BTreeMap::from([("llm_decision".to_string(), decision_ms)]);
        let label = argmax(&probs) as usize;
        let (rationale, generated) = if self.options.rationale {
            let t = Instant::now();
            let r = self.rationale(&after_question, label)?;
            timings.insert("llm_rationale".into(), t.elapsed().as_secs_f64() * 1e3);
            (Some(r.0), r.1)
        } else {
            (None, 0)
        };
        Ok(Verdict {
            contributions: None,
            probs: Probs::new(self.prompt.labels(), probs),
            rationale_language: rationale
                .as_ref()
                .map(|_| self.options.language.code().into()),
            llm_rationale: rationale.clone(),
            rationale,
            prompt_tokens: self.prefix_ids.len() + suffix_tokens,
            generated_tokens: generated,
            timings_ms: timings,
        })
    }
}

impl Reasoner for LlmReasoner {
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

/// Another reasoner decides (the rule vote, which the validation measurements favour over
/// the small LLMs' label scores); the LLM only writes the rationale for that decision.
pub struct LlmExplains {
    pub decider: Box<dyn Reasoner>,
    pub llm: LlmReasoner,
}

impl Reasoner for LlmExplains {
    fn name(&self) -> String {
        format!("{}+rationale:{}", self.decider.name(), self.llm.name)
    }

    fn decide(&mut self, case: &Case<'_>) -> Result<Verdict, ReasonerError> {
        let mut v = self.decider.decide(case)?;
        let label = v.probs.argmax().0;
        let t = Instant::now();
        let (text, generated) =
            self.llm
                .rationale_for(case, label)
                .map_err(|e| ReasonerError::Failed {
                    reasoner: self.llm.name.clone(),
                    message: e.to_string(),
                })?;
        v.timings_ms
            .insert("llm_rationale".into(), t.elapsed().as_secs_f64() * 1e3);
        v.rationale = Some(match v.rationale.take() {
            Some(decider) if !decider.trim().is_empty() => format!("{decider}\n{text}"),
            _ => text.clone(),
        });
        v.llm_rationale = Some(text);
        v.generated_tokens += generated;
        v.rationale_language = Some(self.llm.options.language.code().into());
        Ok(v)
    }
}

fn log_softmax_at(logits: &[f32], index: u32) -> f32 {
    crate::math::log_softmax_at(logits, index as usize)
}

use crate::math::softmax;

fn argmax(v: &[f32]) -> u32 {
    crate::math::argmax(v) as u32
}

/// The fused decision with the LLM's term (`--llm SPEC` when the model's `fusion.json` gives
/// the LLM a weight): the LLM scores the labels, its label log-probabilities enter
/// [`fusion::fuse`] with the fitted `llm_weight` beside the acoustic model and the fired
/// rules, and the LLM then explains the fused decision. With weight 0 the pipeline uses
/// [`LlmExplains`] instead (nothing to score).
pub struct LlmFused {
    pub params: FusionParams,
    /// The rule set's language, for the rule-template part of the rationale.
    pub language: crate::rules::Language,
    /// Built without a rationale of its own; `explain` asks it for one after the fusion.
    pub llm: LlmReasoner,
    pub explain: bool,
}

impl Reasoner for LlmFused {
    fn name(&self) -> String {
        format!(
            "fused+llm:{} (llm_weight {})",
            self.llm.name, self.params.llm_weight
        )
    }

    fn decide(&mut self, case: &Case<'_>) -> Result<Verdict, ReasonerError> {
        let name = self.llm.name.clone();
        let failed = |e: LlmError| ReasonerError::Failed {
            reasoner: name.clone(),
            message: e.to_string(),
        };
        let scored = self.llm.decide_inner(case).map_err(failed)?;
        let logp = fusion::floored_logp(&scored.probs);
        let (probs, contributions) = fusion::fuse(
            &self.params,
            case.acoustic,
            case.fired,
            Some(&logp),
            case.unfamiliarity,
        );
        let mut rationale =
            crate::rules::rationale(self.language, &probs, &contributions, case.fired);
        let mut timings = scored.timings_ms;
        let (mut llm_rationale, mut generated, mut language) =
            (None, 0, self.language.code().to_string());
        if self.explain {
            let t = Instant::now();
            let (text, n) = self
                .llm
                .rationale_for(case, probs.argmax().0)
                .map_err(failed)?;
            timings.insert("llm_rationale".into(), t.elapsed().as_secs_f64() * 1e3);
            rationale = format!("{rationale}\n{text}");
            llm_rationale = Some(text);
            generated = n;
            language = self.llm.options.language.code().to_string();
        }
        Ok(Verdict {
            probs,
            contributions: Some(contributions),
            rationale: Some(rationale),
            rationale_language: Some(language),
            llm_rationale,
            prompt_tokens: scored.prompt_tokens,
            generated_tokens: generated,
            timings_ms: timings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_and_softmax_are_normalised() {
        let l = [1.0f32, 2.0, 3.0];
        let total: f32 = (0..3).map(|i| log_softmax_at(&l, i).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        let p = softmax(&[0.0, f32::ln(3.0)]);
        assert!((p[1] - 0.75).abs() < 1e-6);
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), 1);
        assert_eq!(log_softmax_at(&l, 9), f32::NEG_INFINITY);
    }

    #[test]
    fn six_orders_are_every_permutation_of_three_labels() {
        let six = label_orders(3, 6);
        assert_eq!(six.len(), 6);
        for o in &six {
            let mut s = o.clone();
            s.sort();
            assert_eq!(s, vec![0, 1, 2]);
        }
        let mut dedup = six.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 6);
        // The first three are the rotations the shipped default uses.
        assert_eq!(
            label_orders(3, 3),
            vec![vec![0, 1, 2], vec![1, 2, 0], vec![2, 0, 1]]
        );
        assert_eq!(label_orders(3, 99).len(), 6);
        assert_eq!(label_orders(2, 6), vec![vec![0, 1], vec![1, 0]]);
        assert_eq!(label_orders(3, 0).len(), 1);
    }
}
