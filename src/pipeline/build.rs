//! Building the pipeline from its options, once, for every command that decides clips
//! (`classify`, `review`, `serve`; `eval` and `refine` build their reasoner here too).

use std::path::{Path, PathBuf};

use super::decide::{active_rules, Pipeline, PipelineError};
use super::fusion::{self, FusionParams};
use super::output::RunHeader;
use super::words::Words;
use crate::acoustic::model_dir::{self, ModelSource};
use crate::acoustic::{default_device, AcousticModel};
use crate::catalog;
use crate::llm::{LlmExplains, LlmFused, LlmReasoner, LoadOptions, ReasonerOptions, RuleText};
use crate::rules::{RuleSet, RuleVote};
use crate::{Reasoner, Route};

/// How the LLM's prompt is laid out.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptLayout {
    /// The question cached with the guideline and rules; the clip's evidence written tersely
    /// (about 40 tokens per decision).
    Compact,
    /// The question after worded evidence in three label orders (about 160 tokens).
    Full,
}

impl Default for PromptLayout {
    fn default() -> Self {
        if crate::llm::DECISION_PROMPT_COMPACT {
            Self::Compact
        } else {
            Self::Full
        }
    }
}

/// What decides routed clips.
#[derive(Clone, Debug)]
pub struct ReasonerSpec {
    /// `none`, a catalogue name, a GGUF path or `hf:OWNER/REPO/FILE`.
    pub llm: String,
    /// The LLM's own label scores decide routed clips (research); else the rule vote decides
    /// and the LLM writes the rationale.
    pub llm_decides: bool,
    /// Whether the LLM writes a rationale (an LLM that would only explain is then not loaded).
    pub rationale: bool,
    pub layout: PromptLayout,
}

impl Default for ReasonerSpec {
    fn default() -> Self {
        Self {
            llm: "none".into(),
            llm_decides: false,
            rationale: true,
            layout: PromptLayout::default(),
        }
    }
}

/// The reasoner for routed clips and the route recorded for the clips it decides.
/// `none`: the rule vote. An LLM: the rule vote decides and the LLM writes the rationale (on
/// validation no small LLM's label scores beat the rule vote; README, "Does the LLM help?"),
/// unless `llm_decides` asks for the LLM's own decision.
pub fn build_reasoner(
    spec: &ReasonerSpec,
    rules: &RuleSet,
    fusion: FusionParams,
    models_dir: &Path,
) -> Result<(Box<dyn Reasoner>, Route), PipelineError> {
    let vote = || Box::new(RuleVote::new(rules).with_fusion(fusion));
    // The LLM's label scores enter the fused decision only when the fit gave them a weight.
    let llm_term = fusion.llm_weight != 0.0 && !spec.llm_decides;
    if !spec.rationale && !spec.llm_decides && !llm_term {
        return Ok((vote(), Route::Rules));
    }
    let parsed = catalog::ModelSpec::parse(&spec.llm)?;
    let Some(path) = parsed.resolve(models_dir)? else {
        return Ok((vote(), Route::Rules));
    };
    let texts = RuleText::enabled(rules);
    eprintln!("loading the LLM reasoner {}", path.display());
    let options = match spec.layout {
        PromptLayout::Compact => ReasonerOptions::compact(),
        PromptLayout::Full => ReasonerOptions::default(),
    };
    let reasoner = LlmReasoner::from_path(
        &path,
        rules.labels(),
        &texts,
        ReasonerOptions {
            // The fused reasoner asks for the rationale itself, after the fusion decided.
            rationale: spec.rationale && !llm_term,
            ..options
        },
        &LoadOptions::default(),
    )?;
    if spec.llm_decides {
        return Ok((Box::new(reasoner), Route::Llm));
    }
    if llm_term {
        let fused = LlmFused {
            params: fusion,
            language: rules.language(),
            llm: reasoner,
            explain: spec.rationale,
        };
        return Ok((Box::new(fused), Route::Rules));
    }
    let explains = LlmExplains {
        decider: vote(),
        llm: reasoner,
    };
    Ok((Box::new(explains), Route::Rules))
}

/// The fusion a model decides routed clips by: its fitted `fusion.json`, else the unfitted
/// rule vote (acoustic weight 1, the rules' weights as written).
pub fn model_fusion(model_dir: &Path) -> Result<FusionParams, PipelineError> {
    Ok(fusion::read(model_dir)?.map_or(FusionParams::RULE_VOTE, |f| f.params))
}

/// Everything that makes a [`Pipeline`].
#[derive(Clone, Debug, Default)]
pub struct PipelineSpec {
    /// Model directory; `None` resolves `$CAMXUC_MODEL`, the default model, the embedded copy.
    pub model: Option<PathBuf>,
    /// Rule set; `None`: the model's active rules.
    pub rules: Option<PathBuf>,
    pub reasoner: ReasonerSpec,
    /// Transcribe routed clips in this Whisper language (`auto` detects).
    pub transcribe: Option<String>,
    /// Routing threshold overriding the model's `routing.json`.
    pub threshold: Option<f32>,
    /// Label `uncertain` below this final top probability.
    pub abstain_below: Option<f32>,
}

/// A built pipeline with what a run records about it.
pub struct Opened {
    pub pipeline: Pipeline,
    pub model_dir: PathBuf,
    pub source: ModelSource,
    pub header: RunHeader,
    /// sha256 of the model's weights file (also in `header.model`).
    pub weights_sha256: String,
}

impl Pipeline {
    /// The default pipeline, as `camxuc classify` builds it without flags: the model found
    /// the usual way (`$CAMXUC_MODEL`, the default model folder, the copy built into camxuc),
    /// its rules and fusion, no LLM, models from [`catalog::models_dir`].
    pub fn open_default() -> Result<Pipeline, PipelineError> {
        Ok(Self::open(&PipelineSpec::default(), &catalog::models_dir())?.pipeline)
    }

    /// Resolve the model (a line on stderr names it), load it, its rules and the reasoner.
    pub fn open(spec: &PipelineSpec, models_dir: &Path) -> Result<Opened, PipelineError> {
        let (model_dir, source) = model_dir::resolve(spec.model.as_deref(), models_dir)
            .map_err(crate::acoustic::AcousticError::from)?;
        eprintln!("model: {} ({source})", model_dir.display());
        Self::open_dir(spec, model_dir, source, models_dir)
    }

    /// [`open`](Self::open) on a model directory already resolved.
    pub fn open_dir(
        spec: &PipelineSpec,
        model_dir: PathBuf,
        source: ModelSource,
        models_dir: &Path,
    ) -> Result<Opened, PipelineError> {
        let model = AcousticModel::load(&model_dir, models_dir, &default_device())?;
        let rules = active_rules(&model, spec.rules.as_deref())?;
        let fusion = model_fusion(&model_dir)?;
        let (reasoner, route) = build_reasoner(&spec.reasoner, &rules, fusion, models_dir)?;
        let mut pipeline = Pipeline::new(
            model,
            rules,
            reasoner,
            route,
            spec.threshold,
            spec.abstain_below,
        )?;
        if let Some(language) = &spec.transcribe {
            pipeline.words = Some(Words::load(models_dir, Some(language))?);
        }
        let weights_sha256 = catalog::sha256_file(&model_dir.join(model_dir::WEIGHTS_FILE))?;
        let header = RunHeader {
            camxuc_run: env!("CARGO_PKG_VERSION").into(),
            model: format!("{} {weights_sha256}", model_dir.display()),
            rules: format!("{} {}", pipeline.rules.id_string(), pipeline.rules.sha256()),
            reasoner: pipeline.reasoner_name(),
        };
        Ok(Opened {
            pipeline,
            model_dir,
            source,
            header,
            weights_sha256,
        })
    }
}
