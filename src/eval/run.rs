//! `camxuc eval`: run a trained model over a labelled manifest, one [`EvalRecord`] per clip
//! (appended to `--out` as it is decided, so `--resume` can pick up after a crash), then
//! summarise the records with the ablations acoustic only / rules only / LLM only / routed
//! (the LLM, or the rule vote with `--llm none`, for ambiguous clips).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::record::{AblationLabels, EvalHeader, EvalLine, EvalRecord, EvalSettings, UNUSABLE};
use crate::acoustic::model_dir::{ModelSource, META_FILE, ROUTING_FILE};
use crate::acoustic::AcousticError;
use crate::audio;
use crate::audio::field::FieldChain;
use crate::data::manifest::{Manifest, ManifestRow};
use crate::data::split::filter_speakers;
use crate::data::DataError;
use crate::metrics::{
    accuracy_and_f1_ci, accuracy_on, paired_accuracy_difference, paired_macro_f1_difference,
    ClassScores, Confusion, Interval, PairedDifference,
};
use crate::pipeline::decide::Consult;
use crate::pipeline::faithful::Author;
use crate::pipeline::output::{BatchWriter, Failure, OutputError, RunHeader};
use crate::pipeline::{Pipeline, PipelineError, PipelineSpec, ReasonerSpec};
use crate::rules::RuleVote;
use crate::{Decision, LabelSet, Route};

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub manifest: PathBuf,
    pub speakers: Option<String>,
    pub model_dir: PathBuf,
    pub models_dir: PathBuf,
    /// Rule set (default: the model's active rules).
    pub rules: Option<PathBuf>,
    pub bootstrap_reps: usize,
    pub seed: u64,
    /// Also score every clip through a random field recording chain, seeded by the clip's
    /// path ([`FieldChain::random`], the chains `just generalise` scores: gain, pink / babble /
    /// white noise, reverberation, telephone band with G.711, clipping) and compare on the same
    /// clips.
    pub robustness: bool,
    /// Transcribe the clips the reasoner is asked about, in this Whisper language (`auto`
    /// detects it), so an LLM reasoner reads what was said.
    pub transcribe: Option<String>,
    /// What decides routed clips, built as `classify` builds it (default: the model's fusion
    /// of the acoustic model and the rules, no LLM).
    pub reasoner: ReasonerSpec,
}

/// Clean vs field-condition scores on the same clips, with a paired bootstrap interval.
#[derive(Clone, Debug, Serialize)]
pub struct Robustness {
    pub clean: Scores,
    pub perturbed: Scores,
    /// perturbed − clean macro-F1.
    pub macro_f1_difference: PairedDifference,
    pub conditions: String,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Scores {
    pub accuracy: f64,
    pub macro_f1: f64,
    /// 95 % bootstrap intervals (ablations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_ci95: Option<Interval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macro_f1_ci95: Option<Interval>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RoutingSummary {
    pub threshold: f32,
    pub routed_fraction: f64,
    pub acoustic_accuracy_on_routed: Option<f64>,
    /// `null` until a reasoner decides routed clips.
    pub final_accuracy_on_routed: Option<f64>,
    pub acoustic_accuracy_on_kept: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ablations {
    pub acoustic_only: Scores,
    /// The rule vote alone (uniform prior, no acoustic model).
    pub rules_only: Option<Scores>,
    /// The LLM reasoner on every clip (`null` with `--llm none`).
    pub llm_only: Option<Scores>,
    /// Acoustic model for confident clips, the reasoner (LLM if given, else the rule vote)
    /// for routed ones.
    pub routed: Option<Scores>,
    /// routed − acoustic_only, paired bootstrap on the same clips.
    pub routed_minus_acoustic_macro_f1: Option<PairedDifference>,
    pub routed_minus_acoustic_accuracy: Option<PairedDifference>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Identifier {
    pub name: String,
    pub sha256: Option<String>,
}

/// The `--json` summary (all rates are fractions in 0..1).
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub n: usize,
    pub n_failed: usize,
    pub failures: Vec<String>,
    pub labels: Vec<String>,
    /// What the headline figures (accuracy … ece) score: the final decisions of the routed
    /// pipeline, as `classify` gives them (= `ablations.routed`).
    pub headline: String,
    pub accuracy: f64,
    pub accuracy_ci95: Interval,
    pub macro_f1: f64,
    pub macro_f1_ci95: Interval,
    pub per_class: BTreeMap<String, ClassScores>,
    /// Rows = true label, columns = predicted, in `labels` order.
    pub confusion: Vec<Vec<u32>>,
    /// Expected calibration error of the final decisions' probabilities.
    pub ece: f64,
    /// … and of the acoustic model's calibrated probabilities alone.
    pub acoustic_ece: f64,
    pub routing: RoutingSummary,
    pub ablations: Ablations,
    pub timings_ms: BTreeMap<String, f64>,
    pub model: Identifier,
    pub rules: Option<Identifier>,
    pub llm: Option<Identifier>,
    pub seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub robustness: Option<Robustness>,
    /// The rationale check (`Decision::rationale_check`) over routed clips; `null` when no
    /// routed clip has a checked rationale.
    pub rationale_faithfulness: Option<Faithfulness>,
}

/// How many routed clips' rationales name only what their Decision holds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Faithfulness {
    /// Whose words: `llm` when an LLM wrote rationales (then only those are counted), else
    /// `rules` (the template, faithful by construction: a check of the check).
    pub author: Author,
    /// Routed clips with a checked rationale by `author`.
    pub checked: usize,
    pub faithful: usize,
    pub pass_rate: f64,
    /// Rationales that name at least one rule id, statement or feature.
    pub with_mentions: usize,
    /// The rationale languages seen, with counts.
    pub languages: BTreeMap<String, usize>,
    /// Up to five failures: file and the unsupported mentions.
    pub examples: Vec<String>,
}

/// The rationale pass rate over routed clips' decisions.
pub fn faithfulness(records: &[EvalRecord]) -> Option<Faithfulness> {
    let by = |author: Author| -> Vec<&Decision> {
        records
            .iter()
            .map(|r| &r.decision)
            .filter(|d| d.route != Route::Acoustic)
            .filter(|d| {
                d.rationale_check
                    .as_ref()
                    .is_some_and(|c| c.author == author)
            })
            .collect()
    };
    let (author, routed) = match by(Author::Llm) {
        llm if !llm.is_empty() => (Author::Llm, llm),
        _ => (Author::Rules, by(Author::Rules)),
    };
    if routed.is_empty() {
        return None;
    }
    let mut languages = BTreeMap::new();
    let (mut faithful, mut with_mentions, mut examples) = (0, 0, Vec::new());
    for d in &routed {
        let c = d.rationale_check.as_ref().expect("filtered on is_some");
        faithful += usize::from(c.faithful);
        with_mentions += usize::from(!c.mentions.is_empty());
        if !c.faithful && examples.len() < 5 {
            examples.push(format!("{}: {}", d.file, c.unsupported.join(", ")));
        }
        let lang = d.rationale_language.clone().unwrap_or_else(|| "?".into());
        *languages.entry(lang).or_insert(0) += 1;
    }
    Some(Faithfulness {
        author,
        checked: routed.len(),
        faithful,
        pass_rate: faithful as f64 / routed.len() as f64,
        with_mentions,
        languages,
        examples,
    })
}

/// Where `eval --out` appends its records (JSONL: a header line, then one [`EvalLine`] per clip).
#[derive(Clone, Debug)]
pub struct EvalOutput {
    pub path: PathBuf,
    /// Continue an existing file: clips it already holds are read back, not redone.
    pub resume: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Acoustic(#[from] AcousticError),
    #[error(transparent)]
    Data(#[from] DataError),
    /// Boxed: the pipeline's error is large and this one travels on every clip's `Result`.
    #[error(transparent)]
    Pipeline(Box<PipelineError>),
    #[error(transparent)]
    Output(#[from] OutputError),
}

impl From<PipelineError> for EvalError {
    fn from(e: PipelineError) -> Self {
        EvalError::Pipeline(Box::new(e))
    }
}

/// The summary and the per-clip records it was computed from (manifest order).
#[derive(Clone, Debug)]
pub struct EvalOutcome {
    pub report: EvalReport,
    pub records: Vec<EvalRecord>,
    pub failures: Vec<Failure>,
}

/// What [`summarise`] needs besides the records: the run's identity and settings.
#[derive(Clone, Debug)]
pub struct SummaryContext {
    pub labels: LabelSet,
    pub threshold: f32,
    pub bootstrap_reps: usize,
    pub seed: u64,
    pub model: Identifier,
    pub rules: Option<Identifier>,
    /// `Some` when an LLM was the reasoner (then `llm_only` and `llm_per_clip` are filled).
    pub llm: Option<Identifier>,
    pub robustness: bool,
}

/// Evaluate the model, its rules and the reasoner of `opts.reasoner` on a manifest, through
/// the same [`Pipeline`] `classify` opens. With an LLM that decides, `llm_only` runs it on
/// every clip.
pub fn evaluate(
    opts: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalOutcome, EvalError> {
    evaluate_with_output(opts, None, progress)
}

/// [`evaluate`], appending each clip's record (or failure) to `output` as it is decided and,
/// with `output.resume`, reading back the clips the file already holds instead of redoing them.
pub fn evaluate_with_output(
    opts: &EvalOptions,
    output: Option<&EvalOutput>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalOutcome, EvalError> {
    let spec = PipelineSpec {
        model: Some(opts.model_dir.clone()),
        rules: opts.rules.clone(),
        reasoner: opts.reasoner.clone(),
        transcribe: opts.transcribe.clone(),
        threshold: None,
        abstain_below: None,
    };
    let opened = Pipeline::open_dir(
        &spec,
        opts.model_dir.clone(),
        ModelSource::Flag,
        &opts.models_dir,
    )?;
    let pipeline = opened.pipeline;
    let labels = pipeline.model.meta.labels.clone();
    let mut m = Manifest::load(&opts.manifest, &labels)?;
    if let Some(sel) = &opts.speakers {
        m = filter_speakers(&m, &[sel.as_str()])?;
    }
    let weights_sha = Some(opened.weights_sha256.clone());
    let with_llm = !opts.reasoner.llm.eq_ignore_ascii_case("none");
    let ctx = SummaryContext {
        labels: labels.clone(),
        threshold: pipeline.router.threshold,
        bootstrap_reps: opts.bootstrap_reps,
        seed: opts.seed,
        model: Identifier {
            name: opts.model_dir.display().to_string(),
            sha256: weights_sha.clone(),
        },
        rules: Some(Identifier {
            name: pipeline.rules.id_string(),
            sha256: Some(pipeline.rules.sha256()),
        }),
        llm: with_llm.then(|| Identifier {
            name: pipeline.reasoner_name(),
            sha256: None,
        }),
        robustness: opts.robustness,
    };
    let header = EvalHeader {
        run: RunHeader {
            camxuc_run: format!("{} eval", env!("CARGO_PKG_VERSION")),
            ..opened.header
        },
        eval: EvalSettings {
            model_config_sha256: model_config_sha256(&opts.model_dir),
            perturbation_seed: opts.robustness.then_some(opts.seed),
        },
    };
    let (mut writer, mut previous) = match output {
        Some(o) => {
            let (w, lines) = BatchWriter::open_jsonl(&o.path, &header, o.resume)?;
            (Some(w), parse_previous(&o.path, &lines)?)
        }
        None => (None, HashMap::new()),
    };
    // Kept clips' reasoner label (the coverage curve) and the rules-only ablation.
    let fusion = crate::pipeline::model_fusion(&opts.model_dir)?;
    let mut stages = Stages {
        rules_alone: RuleVote::new(&pipeline.rules).with_prior_weight(0.0),
        rules_with_prior: RuleVote::new(&pipeline.rules).with_fusion(fusion),
        temperature: pipeline.model.meta.temperature,
        pipeline,
        perturbation_seed: header.eval.perturbation_seed,
    };
    let (mut records, mut failures) = (Vec::new(), Vec::new());
    for (i, row) in m.rows.iter().enumerate() {
        progress(i, m.rows.len());
        let line = match previous.remove(&row.rel_path) {
            Some(line) => line,
            None => {
                let line = stages.clip(row)?;
                if let Some(w) = writer.as_mut() {
                    w.record(&line)?;
                }
                line
            }
        };
        match line {
            EvalLine::Record(mut r) => {
                // The manifest is the authority on labels, even for records read back.
                r.truth = row.label.clone();
                r.speaker = row.speaker.clone();
                records.push(*r);
            }
            EvalLine::Failure(f) => failures.push(f),
        }
    }
    progress(m.rows.len(), m.rows.len());
    Ok(EvalOutcome {
        report: summarise(&records, &failures, &ctx),
        records,
        failures,
    })
}
/// The pipeline of one evaluation, the ablations beside it, and how to run them on a
/// manifest row.
struct Stages {
    pipeline: Pipeline,
    /// The rule vote alone (uniform prior): the rules-only ablation.
    rules_alone: RuleVote,
    /// The model's fusion of the acoustic model and the rules (what decides routed clips
    /// without an LLM): the reasoner's label on clips it was not asked about. Built once
    /// (building one hashes the rule set).
    rules_with_prior: RuleVote,
    temperature: f32,
    perturbation_seed: Option<u64>,
}

impl Stages {
    /// One clip's record, or its failure when it cannot be decoded or analysed. Errors of the
    /// model or the reasoner stop the whole evaluation: they are not about this clip.
    fn clip(&mut self, row: &ManifestRow) -> Result<EvalLine, EvalError> {
        let failure = |e: &dyn std::fmt::Display| {
            EvalLine::Failure(Failure {
                file: row.rel_path.clone(),
                error: e.to_string(),
            })
        };
        let t = Instant::now();
        let decoded = match audio::load(&row.path, &self.pipeline.analyser.load) {
            Ok(a) => a,
            Err(e) => return Ok(failure(&e)),
        };
        let decode_ms = ms(t);
        let perturbed = self.perturbation_seed.map(|seed| {
            let mut p = decoded.clone();
            let mut rng = clip_rng(seed, &row.rel_path);
            // Babble is synthesised (no pool of other speech here).
            p.samples = FieldChain::random(&mut rng).apply(
                &decoded.samples,
                decoded.sample_rate,
                &[],
                &mut rng,
            );
            p
        });
        let t = Instant::now();
        let mut clip = match self.pipeline.analyser.analyse_audio(decoded) {
            Ok(c) => c,
            Err(e) => return Ok(failure(&e)),
        };
        let features_ms = ms(t);
        // An LLM that decides is scored on every clip (the llm_only ablation); other
        // reasoners (the fusion, an LLM that only explains) only where routed.
        let llm_decides = self.pipeline.llm_decides();
        let consult = if llm_decides {
            Consult::Always
        } else {
            Consult::RoutedOnly
        };
        let assessment = self.pipeline.assess_clip(&mut clip, consult)?;
        let acoustic_only = assessment.acoustic.top_label().to_string();
        let rules_only = self
            .rules_alone
            .combine(&assessment.acoustic, &assessment.fired)
            .top_label()
            .to_string();
        let reasoner = match &assessment.verdict {
            Some(v) => v.probs.top_label().to_string(),
            // Not consulted on a kept clip: the rule vote with the acoustic prior, which is
            // what decides routed clips unless an LLM does (the coverage curve needs it).
            None => self
                .rules_with_prior
                .combine(&assessment.acoustic, &assessment.fired)
                .top_label()
                .to_string(),
        };
        let route = self.pipeline.reasoner_route();
        let mut decision =
            assessment.into_decision(clip.evidence, &row.rel_path, None, route, None);
        decision.timings_ms.insert("decode".into(), decode_ms);
        decision.timings_ms.insert("features".into(), features_ms);
        let perturbed_label = match perturbed {
            None => None,
            // A clip that field conditions make unusable (e.g. VAD finds no speech) counts as
            // wrong in the robustness scores.
            Some(audio) => Some(match self.pipeline.analyser.analyse_audio(audio) {
                Ok(mut c) => self
                    .pipeline
                    .model
                    .predict(std::slice::from_mut(&mut c))?
                    .remove(0)
                    .top_label()
                    .to_string(),
                Err(_) => UNUSABLE.to_string(),
            }),
        };
        Ok(EvalLine::Record(Box::new(EvalRecord {
            ablations: AblationLabels {
                acoustic_only,
                rules_only,
                llm_only: llm_decides.then(|| reasoner.clone()),
                reasoner,
                routed: decision.label.clone(),
            },
            decision,
            truth: row.label.clone(),
            speaker: row.speaker.clone(),
            perturbed_label,
            temperature: self.temperature,
        })))
    }
}

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The perturbation stream of one clip, from the seed and the clip's name alone, so a resumed
/// run perturbs each clip exactly as an uninterrupted one.
fn clip_rng(seed: u64, file: &str) -> ChaCha8Rng {
    let digest = Sha256::digest(file.as_bytes());
    let mut stream = [0u8; 8];
    stream.copy_from_slice(&digest[..8]);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xf1e1d);
    rng.set_stream(u64::from_le_bytes(stream));
    rng
}

/// sha256 over the model's model.json and routing.json (a missing file hashes as empty).
fn model_config_sha256(dir: &Path) -> String {
    let mut h = Sha256::new();
    for f in [META_FILE, ROUTING_FILE] {
        h.update(std::fs::read(dir.join(f)).unwrap_or_default());
        // A separator, so moving bytes from one file to the other changes the hash.
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// The records and failures of a file being resumed, by clip name.
fn parse_previous(path: &Path, lines: &[String]) -> Result<HashMap<String, EvalLine>, EvalError> {
    let mut done = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        let parsed: EvalLine = serde_json::from_str(line).map_err(|e| OutputError::Resume {
            path: path.to_path_buf(),
            // +2: line numbers are 1-based and the header is line 1.
            message: format!(
                "line {} is neither an eval record nor a failure: {e}",
                i + 2
            ),
        })?;
        done.insert(parsed.file().to_string(), parsed);
    }
    Ok(done)
}

/// Every number of the report, from the records alone (in their order: the bootstrap
/// resamples clip indices, so the same records in the same order give the same intervals).
pub fn summarise(records: &[EvalRecord], failures: &[Failure], ctx: &SummaryContext) -> EvalReport {
    let labels = &ctx.labels;
    let k = labels.len();
    let truth: Vec<usize> = records
        .iter()
        .map(|r| labels.index_of(&r.truth).unwrap_or(0))
        .collect();
    // A label outside the set (`uncertain`, `unusable`, a missing one) counts as wrong and
    // toward no label's precision (index k), as in the report.
    let column = |get: &dyn Fn(&EvalRecord) -> Option<&str>| -> Vec<usize> {
        records
            .iter()
            .map(|r| get(r).map_or(k, |l| crate::metrics::label_index(labels.names(), l)))
            .collect()
    };
    let pred = column(&|r| Some(r.ablations.acoustic_only.as_str()));
    let routed_pred = column(&|r| Some(r.ablations.routed.as_str()));
    let rules_pred = column(&|r| Some(r.ablations.rules_only.as_str()));
    let llm_ran = ctx.llm.is_some()
        && !records.is_empty()
        && records.iter().all(|r| r.ablations.llm_only.is_some());
    let llm_pred = llm_ran.then(|| column(&|r| r.ablations.llm_only.as_deref()));
    let perturbed_pred = column(&|r| r.perturbed_label.as_deref());
    let is_routed: Vec<bool> = records.iter().map(EvalRecord::routed).collect();

    // Headline: the final (routed) decisions; `acoustic_conf` for the acoustic model alone.
    let conf = Confusion::new(k, truth.iter().copied().zip(routed_pred.iter().copied()));
    let acoustic_conf = Confusion::new(k, truth.iter().copied().zip(pred.iter().copied()));
    let top_of = |p: &crate::Probs| f64::from(p.argmax().1);
    let final_top: Vec<f64> = records.iter().map(|r| top_of(&r.decision.probs)).collect();
    let final_correct: Vec<bool> = truth
        .iter()
        .zip(&routed_pred)
        .map(|(t, p)| t == p)
        .collect();
    let top: Vec<f64> = records
        .iter()
        .map(|r| top_of(&r.decision.acoustic_probs))
        .collect();
    let correct: Vec<bool> = truth.iter().zip(&pred).map(|(t, p)| t == p).collect();
    let routed: Vec<usize> = (0..truth.len()).filter(|&i| is_routed[i]).collect();
    let kept: Vec<usize> = (0..truth.len()).filter(|&i| !is_routed[i]).collect();
    let acc_on = |ix: &[usize], p: &[usize]| (!ix.is_empty()).then(|| accuracy_on(&truth, p, ix));
    let scores = |p: &[usize]| {
        let c = Confusion::new(k, truth.iter().copied().zip(p.iter().copied()));
        let (acc_ci, f1_ci) = accuracy_and_f1_ci(k, &truth, p, ctx.bootstrap_reps, ctx.seed);
        Scores {
            accuracy: c.accuracy(),
            macro_f1: c.macro_f1(),
            accuracy_ci95: Some(acc_ci),
            macro_f1_ci95: Some(f1_ci),
        }
    };
    // The headline scores the routed decisions, so the routed ablation is the headline.
    let (acc_ci, f1_ci) = accuracy_and_f1_ci(k, &truth, &routed_pred, ctx.bootstrap_reps, ctx.seed);
    let routed_scores = Scores {
        accuracy: conf.accuracy(),
        macro_f1: conf.macro_f1(),
        accuracy_ci95: Some(acc_ci),
        macro_f1_ci95: Some(f1_ci),
    };
    let n = truth.len().max(1) as f64;
    let mean_ms = |stages: &[&str]| {
        let total: f64 = records
            .iter()
            .flat_map(|r| stages.iter().filter_map(|s| r.decision.timings_ms.get(*s)))
            .sum();
        total / n
    };
    let timings_ms = BTreeMap::from([
        (
            "analyse_per_clip".to_string(),
            mean_ms(&["decode", "features"]),
        ),
        ("acoustic_per_clip".to_string(), mean_ms(&["acoustic"])),
        ("rules_per_clip".to_string(), mean_ms(&["rules"])),
        (
            "llm_per_clip".to_string(),
            if ctx.llm.is_some() {
                mean_ms(&["reasoner"])
            } else {
                0.0
            },
        ),
    ]);
    let robustness = ctx.robustness.then(|| {
        let pc = Confusion::new(k, truth.iter().copied().zip(perturbed_pred.iter().copied()));
        Robustness {
            clean: Scores { accuracy: acoustic_conf.accuracy(), macro_f1: acoustic_conf.macro_f1(), ..Default::default() },
            perturbed: Scores { accuracy: pc.accuracy(), macro_f1: pc.macro_f1(), ..Default::default() },
            macro_f1_difference: paired_macro_f1_difference(k, &truth, &pred, &perturbed_pred, ctx.bootstrap_reps, ctx.seed),
            conditions: "gain U(-12,+12) dB and white noise at U(12,30) dB SNR on every clip; 300-3400 Hz telephone band on 50 %; one echo (50-150 ms, 0.2-0.4) on 50 %".into(),
        }
    });
    EvalReport {
        n: truth.len(),
        n_failed: failures.len(),
        failures: failures.iter().map(|f| f.error.clone()).collect(),
        labels: labels.names().to_vec(),
        headline: "final decisions of the routed pipeline (= ablations.routed)".into(),
        accuracy: conf.accuracy(),
        accuracy_ci95: acc_ci,
        macro_f1: conf.macro_f1(),
        macro_f1_ci95: f1_ci,
        per_class: labels
            .names()
            .iter()
            .cloned()
            .zip(conf.per_class())
            .collect(),
        confusion: conf.counts.clone(),
        ece: crate::metrics::expected_calibration_error(&final_top, &final_correct, 15),
        acoustic_ece: crate::metrics::expected_calibration_error(&top, &correct, 15),
        routing: RoutingSummary {
            threshold: ctx.threshold,
            routed_fraction: routed.len() as f64 / n,
            acoustic_accuracy_on_routed: acc_on(&routed, &pred),
            final_accuracy_on_routed: acc_on(&routed, &routed_pred),
            acoustic_accuracy_on_kept: acc_on(&kept, &pred),
        },
        ablations: Ablations {
            acoustic_only: scores(&pred),
            rules_only: Some(scores(&rules_pred)),
            llm_only: llm_pred.as_deref().map(scores),
            routed: Some(routed_scores),
            routed_minus_acoustic_macro_f1: Some(paired_macro_f1_difference(
                k,
                &truth,
                &pred,
                &routed_pred,
                ctx.bootstrap_reps,
                ctx.seed,
            )),
            routed_minus_acoustic_accuracy: Some(paired_accuracy_difference(
                &truth,
                &pred,
                &routed_pred,
                ctx.bootstrap_reps,
                ctx.seed,
            )),
        },
        timings_ms,
        model: ctx.model.clone(),
        rules: ctx.rules.clone(),
        llm: ctx.llm.clone(),
        seed: ctx.seed,
        robustness,
        rationale_faithfulness: faithfulness(records),
    }
}

/// Human-readable summary.
pub fn print_summary(r: &EvalReport, manifest: &Path) {
    println!(
        "{}: {} clips ({} failed)",
        manifest.display(),
        r.n,
        r.n_failed
    );
    println!("  final decisions (acoustic model; the reasoner for routed clips):");
    println!(
        "  accuracy {:.3} [{:.3}, {:.3}]   macro-F1 {:.3} [{:.3}, {:.3}]   ECE {:.3} (acoustic alone {:.3})",
        r.accuracy,
        r.accuracy_ci95[0],
        r.accuracy_ci95[1],
        r.macro_f1,
        r.macro_f1_ci95[0],
        r.macro_f1_ci95[1],
        r.ece,
        r.acoustic_ece
    );
    println!("  label    precision  recall      f1  support");
    for (l, s) in &r.per_class {
        println!(
            "  {:<8} {:>9.3} {:>7.3} {:>7.3} {:>8}",
            l, s.precision, s.recall, s.f1, s.support
        );
    }
    println!(
        "  confusion (rows = truth, columns = predicted, order {}):",
        r.labels.join(", ")
    );
    for (l, row) in r.labels.iter().zip(&r.confusion) {
        println!(
            "    {:<8} {}",
            l,
            row.iter().map(|c| format!("{c:>4}")).collect::<String>()
        );
    }
    println!(
        "  routing: threshold {:.3} sends {:.0} % to the reasoner (acoustic accuracy there {})",
        r.routing.threshold,
        100.0 * r.routing.routed_fraction,
        r.routing
            .acoustic_accuracy_on_routed
            .map(|a| format!("{a:.3}"))
            .unwrap_or_else(|| "-".into())
    );
    if let Some(rb) = &r.robustness {
        let d = &rb.macro_f1_difference;
        println!(
            "  field conditions: macro-F1 {:.3} -> {:.3} (difference {:+.3} [{:+.3}, {:+.3}], paired bootstrap)",
            rb.clean.macro_f1, rb.perturbed.macro_f1, d.difference, d.ci95[0], d.ci95[1]
        );
    }
    if let Some(f) = &r.rationale_faithfulness {
        println!(
            "  rationales ({}): {}/{} routed clips name only fired rules and measured features ({:.0} %; {} name any)",
            match f.author {
                Author::Llm => "the LLM's words",
                Author::Rules => "rule template",
            },
            f.faithful,
            f.checked,
            100.0 * f.pass_rate,
            f.with_mentions
        );
    }
    let ab = &r.ablations;
    let show = |s: &Option<Scores>| {
        s.as_ref()
            .map(|s| {
                let ci = s
                    .macro_f1_ci95
                    .map(|c| format!(" [{:.3}, {:.3}]", c[0], c[1]))
                    .unwrap_or_default();
                format!("accuracy {:.3}  macro-F1 {:.3}{ci}", s.accuracy, s.macro_f1)
            })
            .unwrap_or_else(|| "not run".into())
    };
    println!("  ablations:");
    println!(
        "    acoustic only  {}",
        show(&Some(ab.acoustic_only.clone()))
    );
    println!("    rules only     {}", show(&ab.rules_only));
    println!("    LLM only       {}", show(&ab.llm_only));
    println!("    routed         {}", show(&ab.routed));
    if let Some(d) = &ab.routed_minus_acoustic_macro_f1 {
        println!(
            "    routed − acoustic macro-F1 {:+.3} [{:+.3}, {:+.3}]",
            d.difference, d.ci95[0], d.ci95[1]
        );
    }
    if let (Some(a), Some(f)) = (
        r.routing.acoustic_accuracy_on_routed,
        r.routing.final_accuracy_on_routed,
    ) {
        println!("    on the routed clips: acoustic {a:.3} -> reasoner {f:.3}");
    }
}

/// How many of a manifest's clips (by file name) the model was trained on, of how many: a
/// figure on training clips is not a held-out figure. `None` when the manifest cannot be read
/// or the model records no training clips.
pub fn training_clip_overlap(model_dir: &Path, manifest: &Path) -> Option<(usize, usize)> {
    let names = crate::acoustic::model_dir::training_clip_names(model_dir);
    if names.is_empty() {
        return None;
    }
    let m = crate::data::manifest::Manifest::load_unlabelled(manifest).ok()?;
    let seen = m
        .rows
        .iter()
        .filter(|r| {
            r.path
                .file_name()
                .is_some_and(|n| names.contains(n.to_string_lossy().as_ref()))
        })
        .count();
    Some((seen, m.rows.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_counts_the_models_own_training_clips_in_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(
            &manifest,
            "path,label\nclips/a.wav,calm\nother/b.wav,angry\nc.wav,panic\n",
        )
        .unwrap();
        // A model that records no training clips: nothing to say.
        assert_eq!(training_clip_overlap(&model, &manifest), None);
        std::fs::write(
            model.join(crate::acoustic::model_dir::TRAINING_CLIPS_FILE),
            "a.wav\nb.wav\n",
        )
        .unwrap();
        assert_eq!(training_clip_overlap(&model, &manifest), Some((2, 3)));
        // train_evidence.jsonl paths count by file name too.
        std::fs::remove_file(model.join(crate::acoustic::model_dir::TRAINING_CLIPS_FILE)).unwrap();
        std::fs::write(
            model.join(crate::acoustic::model_dir::TRAIN_EVIDENCE_FILE),
            "{\"path\": \"/data/x/c.wav\", \"label\": \"panic\"}\n",
        )
        .unwrap();
        assert_eq!(training_clip_overlap(&model, &manifest), Some((1, 3)));
    }
    use crate::{Decision, Evidence, Probs, DECISION_SCHEMA_VERSION};

    /// A clip whose acoustic model says `acoustic` (at 0.6, or 0.9 when kept) and whose
    /// reasoner, when routed, says `reasoner`.
    fn record(file: &str, truth: &str, acoustic: &str, routed_to: Option<&str>) -> EvalRecord {
        let labels = LabelSet::default();
        let top = if routed_to.is_some() { 0.6 } else { 0.9 };
        let values = labels
            .names()
            .iter()
            .map(|l| {
                if l == acoustic {
                    top
                } else {
                    (1.0 - top) / 2.0
                }
            })
            .collect();
        let probs = Probs::new(&labels, values);
        let label = routed_to.unwrap_or(acoustic).to_string();
        EvalRecord {
            decision: Decision {
                schema_version: DECISION_SCHEMA_VERSION,
                file: file.into(),
                segment: None,
                label: label.clone(),
                probs: probs.clone(),
                acoustic_probs: probs,
                route: if routed_to.is_some() {
                    Route::Rules
                } else {
                    Route::Acoustic
                },
                unfamiliarity: None,
                evidence: Evidence::default(),
                fired_rules: Vec::new(),
                contributions: None,
                rationale: None,
                rationale_language: None,
                rationale_check: None,
                transcript: None,
                timings_ms: BTreeMap::from([("acoustic".to_string(), 2.0)]),
            },
            truth: truth.into(),
            speaker: None,
            ablations: AblationLabels {
                acoustic_only: acoustic.into(),
                rules_only: "calm".into(),
                llm_only: None,
                reasoner: routed_to.unwrap_or(acoustic).into(),
                routed: label,
            },
            perturbed_label: None,
            temperature: 1.0,
        }
    }

    fn context() -> SummaryContext {
        SummaryContext {
            labels: LabelSet::default(),
            threshold: 0.7,
            bootstrap_reps: 200,
            seed: 3,
            model: Identifier {
                name: "m".into(),
                sha256: None,
            },
            rules: None,
            llm: None,
            robustness: false,
        }
    }

    fn records() -> Vec<EvalRecord> {
        vec![
            record("a.wav", "calm", "calm", None),
            record("b.wav", "angry", "calm", Some("angry")),
            record("c.wav", "panic", "panic", None),
            record("d.wav", "angry", "panic", Some("panic")),
        ]
    }

    #[test]
    fn the_summary_counts_what_the_records_say() {
        let failures = [Failure {
            file: "x.wav".into(),
            error: "x.wav: not audio".into(),
        }];
        let r = summarise(&records(), &failures, &context());
        assert_eq!((r.n, r.n_failed), (4, 1));
        assert_eq!(r.failures, vec!["x.wav: not audio".to_string()]);
        assert_eq!(r.ablations.acoustic_only.accuracy, 0.5);
        assert_eq!(r.ablations.routed.as_ref().unwrap().accuracy, 0.75);
        assert_eq!(r.ablations.rules_only.as_ref().unwrap().accuracy, 0.25);
        assert!(r.ablations.llm_only.is_none(), "no LLM in the context");
        assert_eq!(r.routing.routed_fraction, 0.5);
        assert_eq!(r.routing.acoustic_accuracy_on_routed, Some(0.0));
        assert_eq!(r.routing.final_accuracy_on_routed, Some(0.5));
        assert_eq!(r.routing.acoustic_accuracy_on_kept, Some(1.0));
        // Headline = final decisions. Rows = truth (calm, angry, panic), columns = final label.
        assert_eq!(r.accuracy, 0.75);
        assert_eq!(
            r.confusion,
            vec![vec![1, 0, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        assert_eq!(r.timings_ms["acoustic_per_clip"], 2.0);
        assert_eq!(r.timings_ms["llm_per_clip"], 0.0);
    }

    /// `--json` (this summary) and the report score a decision outside the label set
    /// (`uncertain` from `--abstain-below`) the same way: wrong, and no label's prediction.
    #[test]
    fn a_decision_outside_the_labels_scores_as_in_the_report() {
        let mut records = records();
        records.push(record("e.wav", "calm", "angry", Some("uncertain")));
        let r = summarise(&records, &[], &context());
        let names = context().labels.names().to_vec();
        let truth = crate::report::stats::truth_indices(&names, &records);
        let pred = crate::report::stats::indices_of(
            &names,
            records.iter().map(|r| r.ablations.routed.as_str()),
        );
        let report_f1: Vec<f64> = crate::report::stats::per_class(3, &truth, &pred)
            .iter()
            .map(|c| c.f1)
            .collect();
        let ours: Vec<f64> = names.iter().map(|n| r.per_class[n].f1).collect();
        assert_eq!(ours, report_f1);
        assert!((r.macro_f1 - report_f1.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        // Wrong, and no label's prediction: calm's recall drops to 1/2, angry's precision
        // stays 1 (its one prediction, b.wav, is right).
        assert!((r.accuracy - 3.0 / 5.0).abs() < 1e-12);
        assert!((r.per_class["calm"].recall - 0.5).abs() < 1e-12);
        assert!((r.per_class["angry"].precision - 1.0).abs() < 1e-12);
    }

    #[test]
    fn records_read_back_from_jsonl_give_the_same_summary() {
        let records = records();
        let back: Vec<EvalRecord> = records
            .iter()
            .map(|r| {
                let line = serde_json::to_string(&EvalLine::Record(Box::new(r.clone()))).unwrap();
                match serde_json::from_str(&line).unwrap() {
                    EvalLine::Record(r) => *r,
                    EvalLine::Failure(f) => panic!("read back as a failure: {f:?}"),
                }
            })
            .collect();
        assert_eq!(back, records);
        let json = |r: &[EvalRecord]| serde_json::to_value(summarise(r, &[], &context())).unwrap();
        assert_eq!(json(&back), json(&records));
        let failure: EvalLine =
            serde_json::from_str(r#"{"file":"x.wav","error":"x.wav: not audio"}"#).unwrap();
        assert!(matches!(failure, EvalLine::Failure(_)));
    }

    #[test]
    fn a_clips_perturbation_depends_on_the_seed_and_its_name_only() {
        use rand::Rng;
        let draw = |seed, name| clip_rng(seed, name).random::<u64>();
        assert_eq!(draw(1, "a.wav"), draw(1, "a.wav"));
        assert_ne!(draw(1, "a.wav"), draw(1, "b.wav"));
        assert_ne!(draw(1, "a.wav"), draw(2, "a.wav"));
    }
}
