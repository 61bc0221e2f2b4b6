//! Site adaptation (`camxuc adapt`): a new model directory fitted to a site's recordings,
//! the way a clinic would do it — with the clips it has (unlabelled, plus a few labelled ones
//! when someone has labelled them). The source directory is only read, never written.
//!
//! ```text
//! source model ─┬─ site clips (any, labels ignored) ─► evidence baseline
//!               │                                    ─► linear input standardisation (AdaBN:
//!               │                                       site mean / std, weights unchanged)
//!               │                                    ─► unfamiliarity reference + unit
//!               ├─ labelled site clips ─► MAP refit of the linear head toward the source
//!               │     weights (λ/2 ‖W − W_src‖², λ by speaker-held-out NLL; "keep the source
//!               │     weights" is a candidate too) ─► temperature on the held-out predictions
//!               └─ site predictions (labelled ones out of fold) ─► routing threshold at the
//!                     source's route fraction
//! ```
//!
//! A model of attention heads gets the evidence baseline, the unfamiliarity reference (on the
//! pooled vector it reads, as a linear classifier's) and routing; with labels, also a MAP
//! refit of each head's output layer toward its source weights (the same λ for every head,
//! chosen by the speaker-held-out NLL of the heads' combined logits; keeping them is a
//! candidate) and the temperature; a mixture's linear member is refitted the same way
//! (its own λ) and both members' temperatures come from their out-of-fold predictions. Its
//! pooling layers are kept. With labelled clips, `before` / `after` compare the
//! source with a model adapted *without* a held-out part of the labels (by speaker when the
//! labelled manifest has two or more, else a seeded third of the clips), on that part.
//! Every random choice takes the seed, so the same inputs give the same directory.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::io_err;
use super::head::{combine_logits, EnsembleCombine};
use super::head_training::{argmax, View};
use super::linear::{fit, FitOptions, LinearHead, Scaler};
use super::model::{evidence_vector, LINEAR_MEMBER_PREFIX, LINEAR_PREFIX, UNFAMILIARITY_PREFIX};
use super::model_dir::{self, Adaptation, LinearMember, ModelDirError, RoutingConfig};
use super::temperature::mean_nll;
use super::temperature::{ece_at, fit_temperature, softmax_t};
use super::train::{fit_routing, HeldOutCondition, HeldOutPrediction};
use super::unfamiliar::{PooledInput, Unfamiliarity};
use super::{AcousticError, AcousticModel};
use crate::clip::ClipAnalyser;
use crate::data::manifest::{Manifest, ManifestRow};
use crate::data::split::{speaker_folds, speaker_split};
use crate::features::{Baseline, BaselineKind};
use crate::metrics::Confusion;
use crate::private_fs::create_private_dir_all;
use crate::Evidence;

/// File extensions taken from a `--unlabelled` folder (case-insensitive).
pub const AUDIO_EXTENSIONS: [&str; 4] = ["wav", "flac", "mp3", "ogg"];
/// Fewer usable site clips than this (all inputs together), or fewer labelled ones when
/// labels are given, cannot say much about a site.
pub const MIN_SITE_CLIPS: usize = super::calibrate::MIN_SITE_CLIPS;
/// Penalties toward the source weights tried by the MAP refit, largest first (each fit
/// warm-starts from the previous one); before them, "keep the source weights" (λ = ∞).
pub const PRIOR_LAMBDAS: [f64; 12] = [
    30.0, 10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001,
];
/// Share of the labelled clips held out to report `before` / `after`.
pub const HELD_OUT_FRACTION: f64 = 1.0 / 3.0;
/// Most folds used to choose λ and to set the unfamiliarity unit.
const MAX_FOLDS: usize = 5;
/// Site clips per principal direction of the site's unfamiliarity reference (at most the
/// source's number of directions).
const SITE_CLIPS_PER_COMPONENT: usize = 5;

#[derive(Clone, Debug)]
pub struct AdaptOptions {
    /// The source model directory (only read).
    pub model: PathBuf,
    /// The models folder (Whisper front end).
    pub models_dir: PathBuf,
    /// The new model directory.
    pub out: PathBuf,
    /// A folder of audio files (searched recursively) or a CSV manifest with a `path` column.
    pub unlabelled: Option<PathBuf>,
    /// A labelled manifest `path,label[,speaker]`.
    pub labelled: Option<PathBuf>,
    /// Replace an existing `out` (a model directory or an empty folder).
    pub force: bool,
    pub seed: u64,
}

impl AdaptOptions {
    pub fn new(model: PathBuf, models_dir: PathBuf, out: PathBuf) -> Self {
        Self {
            model,
            models_dir,
            out,
            unlabelled: None,
            labelled: None,
            force: false,
            seed: 1,
        }
    }
}

/// Progress of [`adapt`].
#[derive(Clone, Debug, PartialEq)]
pub enum AdaptEvent {
    /// Site clips decoded, measured and encoded so far.
    Analysed { done: usize, total: usize },
    /// A fitting stage began.
    Stage(String),
}

/// An input that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailedInput {
    pub file: String,
    pub reason: String,
}

/// Scores on the held-out labelled clips.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeldOutScores {
    pub macro_f1: f64,
    /// Expected calibration error (15 bins) of the top label.
    pub ece: f64,
    pub n: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdaptReport {
    pub out: PathBuf,
    pub refitted: Vec<String>,
    pub not_refitted: Vec<String>,
    pub failed: Vec<FailedInput>,
    /// Input files named (folder files and manifest rows, after removing unlabelled files
    /// that are also labelled).
    pub n_inputs: usize,
    /// Files of the `--unlabelled` folder skipped for their extension.
    pub n_ignored: usize,
    /// Usable site clips (labelled ones included).
    pub n_site: usize,
    pub n_labelled: usize,
    pub prior_lambda: Option<f64>,
    pub temperature_before: f32,
    pub temperature_after: f32,
    pub threshold_before: f32,
    pub threshold_after: f32,
    /// How the held-out part of the labels was chosen (absent without labels).
    pub held_out: Option<String>,
    /// The source model on the held-out labelled clips.
    pub before: Option<HeldOutScores>,
    /// A model adapted without the held-out clips, on them.
    pub after: Option<HeldOutScores>,
    /// The labelled clips as the adapted model predicts them out of fold (empty without a
    /// refit on labels): what [`crate::pipeline::fusion::refit_after_adapt`] fits the site's
    /// fusion on.
    #[serde(skip)]
    pub site_predictions: Vec<HeldOutPrediction>,
    /// How the fused decision of the new directory was set (filled by
    /// [`crate::pipeline::fusion::refit_after_adapt`]).
    pub fusion: Vec<String>,
}

fn err(path: &Path, message: impl Into<String>) -> AcousticError {
    AcousticError::Training {
        path: path.into(),
        message: message.into(),
    }
}

/// One input file: from the folder / unlabelled manifest (no label) or the labelled manifest.
struct Input {
    file: PathBuf,
    label: Option<usize>,
    speaker: Option<String>,
}

/// A usable site clip: what every refit needs, computed once.
struct SiteClip {
    file: PathBuf,
    evidence: Evidence,
    label: Option<usize>,
    speaker: Option<String>,
    /// The linear classifier's pooled encoder statistics (without the evidence part).
    pooled: Vec<f32>,
    /// The attention heads' frames (models without a linear classifier).
    frames: Option<Tensor>,
}

/// The source model and the pieces adaptation changes.
struct Source {
    model: AcousticModel,
    head: Option<LinearHead>,
    /// A mixture's linear member and its configuration.
    member: Option<(LinearHead, LinearMember)>,
    unfamiliarity: Option<Unfamiliarity>,
    tensors: HashMap<String, Tensor>,
}

impl Source {
    /// The linear classifier's raw input of a clip with evidence z-scores against `baseline`.
    fn input(&self, c: &SiteClip, baseline: &Baseline) -> Vec<f32> {
        let mut x = c.pooled.clone();
        if self
            .model
            .meta
            .linear
            .as_ref()
            .is_some_and(|l| l.evidence_dim > 0)
        {
            let mut ev = c.evidence.clone();
            x.extend(evidence_vector(
                baseline,
                &self.model.meta.evidence_inputs,
                &mut ev,
            ));
        }
        x
    }

    /// The attention heads' combined logits of clips with evidence against `baseline`.
    fn head_logits(
        &self,
        clips: &[&SiteClip],
        baseline: &Baseline,
    ) -> Result<Vec<Vec<f32>>, AcousticError> {
        let views = self.views(clips, baseline);
        let refs: Vec<&View> = views.iter().collect();
        let heads = self.model.logits_of_views(&refs)?;
        let pooled: Vec<Option<Vec<f32>>> = clips
            .iter()
            .map(|c| self.member_input(c, baseline))
            .collect();
        self.model.mix(heads, &pooled)
    }

    /// The pooled vector a model with attention heads reads beside them: its unfamiliarity
    /// reference's input, else its linear member's (the same one when both exist: checked at
    /// load); `None` when it reads none.
    fn pooled_input(&self) -> Option<PooledInput> {
        let from_reference = self
            .unfamiliarity
            .as_ref()
            .and_then(|u| u.cfg.input.clone());
        from_reference.or_else(|| {
            self.model
                .meta
                .linear_member
                .as_ref()
                .map(|m| super::model::member_input(&m.linear))
        })
    }

    /// A clip's [`Self::pooled_input`] with its evidence z-scored against `baseline` (`None`
    /// when the model reads none).
    fn pooled_of(&self, c: &SiteClip, baseline: &Baseline) -> Option<Vec<f32>> {
        let input = self.pooled_input()?;
        let mut x = c.pooled.clone();
        if input.evidence {
            let mut ev = c.evidence.clone();
            x.extend(evidence_vector(
                baseline,
                &self.model.meta.evidence_inputs,
                &mut ev,
            ));
        }
        Some(x)
    }

    /// A mixture's linear member's input of a clip, its evidence z-scored against `baseline`
    /// (`None` without a member).
    fn member_input(&self, c: &SiteClip, baseline: &Baseline) -> Option<Vec<f32>> {
        self.model.meta.linear_member.as_ref()?;
        self.pooled_of(c, baseline)
    }

    /// Each attention head's output-layer inputs (`[head][clip]`) of clips with evidence
    /// against `baseline`.
    fn head_features(
        &self,
        clips: &[&SiteClip],
        baseline: &Baseline,
    ) -> Result<Vec<Vec<Vec<f32>>>, AcousticError> {
        let views = self.views(clips, baseline);
        let refs: Vec<&View> = views.iter().collect();
        self.model.head_features(&refs)
    }

    /// The attention heads' views of clips (frames, evidence z-scores against `baseline`).
    fn views(&self, clips: &[&SiteClip], baseline: &Baseline) -> Vec<View> {
        clips
            .iter()
            .map(|c| {
                let mut ev = c.evidence.clone();
                View {
                    frames: c
                        .frames
                        .clone()
                        .expect("frames of an attention model's clip"),
                    evidence: evidence_vector(baseline, &self.model.meta.evidence_inputs, &mut ev),
                }
            })
            .collect()
    }
}

/// Attention heads' output layers, each with its head's tensor-name prefix.
type HeadOutputs = Vec<(String, LinearHead)>;

/// What one adaptation fitted (on some of the site clips).
struct Adapted {
    baseline: Baseline,
    head: Option<LinearHead>,
    /// The attention heads' refitted output layers, with each head's tensor-name prefix
    /// (`None`: the heads are kept).
    head_outputs: Option<HeadOutputs>,
    /// A mixture's refitted linear member and temperatures (with `head_outputs`).
    member: Option<(LinearHead, LinearMember)>,
    unfamiliarity: Option<Unfamiliarity>,
    /// Whether `unfamiliarity` was refitted on the site (else the source's, or none).
    unfamiliarity_refitted: bool,
    /// The labelled clips' out-of-fold predictions (empty when no head was refitted).
    site_predictions: Vec<HeldOutPrediction>,
    temperature: f32,
    routing: RoutingConfig,
    prior_lambda: Option<f64>,
    refitted: Vec<String>,
    not_refitted: Vec<String>,
}

impl Adapted {
    /// Uncalibrated logits of clips under this adaptation.
    fn logits(&self, src: &Source, clips: &[&SiteClip]) -> Result<Vec<Vec<f32>>, AcousticError> {
        match (&self.head, &self.head_outputs) {
            (Some(h), _) => Ok(clips
                .iter()
                .map(|c| h.logits(&src.input(c, &self.baseline)))
                .collect()),
            (None, Some(outs)) => {
                let feats = src.head_features(clips, &self.baseline)?;
                let xs: Vec<Option<Vec<f32>>> = clips
                    .iter()
                    .map(|c| src.member_input(c, &self.baseline))
                    .collect();
                src.model.mix_with(
                    outputs_logits(outs, &feats, src.model.ensemble_combine()),
                    self.member.as_ref().map(|(h, m)| (h, m)),
                    &xs,
                )
            }
            (None, None) => src.head_logits(clips, &self.baseline),
        }
    }
}

/// How a refit's penalty was chosen, in words (for model.json `adaptation`).
fn refit_how(score: &str, by_speaker: bool, folds: usize, clips: usize) -> String {
    format!(
        "{} {score} ({folds} folds) on {clips} labelled clips",
        if by_speaker {
            "speaker-held-out"
        } else {
            "held-out (clip folds)"
        }
    )
}

/// The combined logits of refitted output layers on each head's features (`feats[h][i]`).
fn outputs_logits(
    outs: &[(String, LinearHead)],
    feats: &[Vec<Vec<f32>>],
    combine: EnsembleCombine,
) -> Vec<Vec<f32>> {
    let per: Vec<Vec<Vec<f32>>> = outs
        .iter()
        .zip(feats)
        .map(|((_, h), f)| f.iter().map(|x| h.logits(x)).collect())
        .collect();
    combine_logits(&per, combine)
}

/// Adapt `opts.model` to the site's clips and write `opts.out`; see the module doc.
pub fn adapt(
    opts: &AdaptOptions,
    progress: &mut dyn FnMut(AdaptEvent),
) -> Result<AdaptReport, AcousticError> {
    if opts.unlabelled.is_none() && opts.labelled.is_none() {
        return Err(err(
            &opts.model,
            "adapt needs site clips: give --unlabelled (a folder or a manifest) and/or --labelled (a manifest)",
        ));
    }
    check_out(&opts.model, &opts.out, opts.force)?;
    let device = super::default_device();
    let src = load_source(&opts.model, &opts.models_dir, &device)?;
    let labels = src.model.meta.labels.clone();
    let source_sha = hex::encode(Sha256::digest(
        fs::read(opts.model.join(model_dir::META_FILE))
            .map_err(io_err(&opts.model.join(model_dir::META_FILE)))?,
    ));

    // Inputs: labelled rows first, then unlabelled files that are not also labelled.
    let mut inputs: Vec<Input> = Vec::new();
    let mut site_hash = Sha256::new();
    if let Some(path) = &opts.labelled {
        let m = Manifest::load(path, &labels)?;
        let classes: BTreeSet<&str> = m.rows.iter().map(|r| r.label.as_str()).collect();
        if classes.len() < 2 {
            return Err(err(
                path,
                format!(
                    "the labelled clips are all of one class ({}): refitting the classifier needs at least two of {labels}",
                    classes.into_iter().next().unwrap_or("none")
                ),
            ));
        }
        site_hash.update(format!("labelled {}\n", m.data_hash()));
        for r in &m.rows {
            inputs.push(Input {
                file: r.path.clone(),
                label: labels.index_of(&r.label),
                speaker: r.speaker.clone(),
            });
        }
    }
    let mut n_ignored = 0;
    if let Some(path) = &opts.unlabelled {
        let (files, ignored, hash) = unlabelled_files(path)?;
        n_ignored = ignored;
        site_hash.update(format!("unlabelled {hash}\n"));
        // A clip both labelled and in the unlabelled set (the same file, or a copy) counts
        // once, as labelled.
        let labelled: BTreeSet<String> = inputs
            .iter()
            .filter_map(|i| content_hash(&i.file))
            .collect();
        for (file, speaker) in files {
            if !content_hash(&file).is_some_and(|h| labelled.contains(&h)) {
                inputs.push(Input {
                    file,
                    label: None,
                    speaker,
                });
            }
        }
    }
    let site_id = hex::encode(site_hash.finalize())[..12].to_string();

    // Decode, measure and encode each clip once; failures are named and the rest go on.
    let mut an =
        ClipAnalyser::new(&src.model.meta.features).map_err(|source| AcousticError::Features {
            path: opts.model.clone(),
            source,
        })?;
    let mut site: Vec<SiteClip> = Vec::new();
    let mut failed: Vec<FailedInput> = Vec::new();
    let total = inputs.len();
    for (done, input) in inputs.iter().enumerate() {
        match analyse(&src, &mut an, input) {
            Ok(c) => site.push(c),
            Err(reason) => failed.push(FailedInput {
                file: input.file.display().to_string(),
                reason,
            }),
        }
        progress(AdaptEvent::Analysed {
            done: done + 1,
            total,
        });
    }
    let named = opts.labelled.as_ref().or(opts.unlabelled.as_ref()).unwrap();
    if site.len() < MIN_SITE_CLIPS {
        let why = failed
            .first()
            .map(|f| format!(" ({} failed, e.g. {}: {})", failed.len(), f.file, f.reason))
            .unwrap_or_default();
        return Err(err(
            named,
            format!(
                "adapt needs at least {MIN_SITE_CLIPS} usable site clips, got {}{why}",
                site.len()
            ),
        ));
    }
    let lab: Vec<usize> = (0..site.len())
        .filter(|&i| site[i].label.is_some())
        .collect();
    if let Some(path) = &opts.labelled {
        let classes: BTreeSet<usize> = lab.iter().filter_map(|&i| site[i].label).collect();
        if lab.len() < MIN_SITE_CLIPS || classes.len() < 2 {
            return Err(err(
                path,
                format!(
                    "refitting the classifier needs at least {MIN_SITE_CLIPS} usable labelled clips of at least two classes, got {} of {} class(es)",
                    lab.len(),
                    classes.len()
                ),
            ));
        }
    }

    // Held-out check: the source against a model adapted without the held-out labels.
    let (mut held_out, mut before, mut after) = (None, None, None);
    if !lab.is_empty() {
        progress(AdaptEvent::Stage("held-out check".into()));
        let m = site_manifest(&site, &lab, &labels, named);
        let n_speakers = m.speakers().len();
        let split = if n_speakers >= 2 {
            speaker_split(&m, HELD_OUT_FRACTION, opts.seed)?
        } else {
            speaker_split(&without_speakers(&m), HELD_OUT_FRACTION, opts.seed)?
        };
        let h: Vec<usize> = split.val.iter().map(|&i| lab[i]).collect();
        let hs: BTreeSet<usize> = h.iter().copied().collect();
        let keep: Vec<usize> = (0..site.len()).filter(|i| !hs.contains(i)).collect();
        let clips: Vec<&SiteClip> = h.iter().map(|&i| &site[i]).collect();
        let y: Vec<usize> = clips.iter().filter_map(|c| c.label).collect();
        let src_logits = match &src.head {
            Some(head) => clips
                .iter()
                .map(|c| head.logits(&src.input(c, &src.model.meta.evidence_baseline)))
                .collect(),
            None => src.head_logits(&clips, &src.model.meta.evidence_baseline)?,
        };
        before = Some(scores(
            &src_logits,
            &y,
            src.model.meta.temperature,
            labels.len(),
        ));
        let part = adapt_on(&src, &site, &keep, &site_id, opts.seed)?;
        after = Some(scores(
            &part.logits(&src, &clips)?,
            &y,
            part.temperature,
            labels.len(),
        ));
        held_out = Some(if split.speaker_disjoint {
            format!(
                "{} labelled clips of speaker(s) {} held out; `after` was adapted on the other {} site clips",
                h.len(),
                split.val_speakers.join(", "),
                keep.len()
            )
        } else {
            format!(
                "a seeded third of the labelled clips ({}) held out; `after` was adapted on the other {} site clips",
                h.len(),
                keep.len()
            )
        });
    }

    progress(AdaptEvent::Stage("fitting on every site clip".into()));
    let all: Vec<usize> = (0..site.len()).collect();
    let adapted = adapt_on(&src, &site, &all, &site_id, opts.seed)?;
    progress(AdaptEvent::Stage("writing".into()));
    write_dir(opts, &src, &adapted, &site, lab.len(), &source_sha)?;
    Ok(AdaptReport {
        out: opts.out.clone(),
        refitted: adapted.refitted.clone(),
        not_refitted: adapted.not_refitted.clone(),
        failed,
        n_inputs: total,
        n_ignored,
        n_site: site.len(),
        n_labelled: lab.len(),
        prior_lambda: adapted.prior_lambda,
        temperature_before: src.model.meta.temperature,
        temperature_after: adapted.temperature,
        threshold_before: src.model.routing.threshold,
        threshold_after: adapted.routing.threshold,
        held_out,
        before,
        after,
        site_predictions: adapted.site_predictions,
        fusion: Vec::new(),
    })
}

fn scores(logits: &[Vec<f32>], y: &[usize], temperature: f32, n_labels: usize) -> HeldOutScores {
    let conf = Confusion::new(
        n_labels,
        y.iter().copied().zip(logits.iter().map(|l| argmax(l))),
    );
    HeldOutScores {
        macro_f1: conf.macro_f1(),
        ece: ece_at(logits, y, temperature),
        n: y.len(),
    }
}

/// Refuse an `out` that is the source, lies inside it or holds it, or exists without `force`
/// (with `force`, only a model directory or an empty folder is replaced).
fn check_out(model: &Path, out: &Path, force: bool) -> Result<(), AcousticError> {
    let (m, o) = (absolute(model), absolute(out));
    if m == o {
        return Err(err(
            out,
            "--out is the source model directory; adapt writes a new directory and never changes the source: give another --out",
        ));
    }
    if o.starts_with(&m) {
        return Err(err(
            out,
            format!(
                "--out lies inside the source model {}: give a folder outside it",
                model.display()
            ),
        ));
    }
    if m.starts_with(&o) {
        return Err(err(
            out,
            format!(
                "--out holds the source model {}: give another folder",
                model.display()
            ),
        ));
    }
    if fs::symlink_metadata(out).is_ok() {
        if !force {
            return Err(ModelDirError::Exists {
                path: out.into(),
                what: "the output folder".into(),
            }
            .into());
        }
        let empty = fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !out.join(model_dir::META_FILE).is_file() && !empty {
            return Err(err(
                out,
                "exists and is not a model directory (no model.json) nor an empty folder; --force replaces only those",
            ));
        }
    }
    Ok(())
}

/// `p` made absolute with symbolic links resolved as far as it exists.
fn absolute(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            absolute(parent).join(name)
        }
        _ => std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.into()),
    }
}

/// sha256 of a file's bytes (`None` when it cannot be read).
fn content_hash(p: &Path) -> Option<String> {
    fs::read(p).ok().map(|b| hex::encode(Sha256::digest(b)))
}

fn load_source(dir: &Path, models_dir: &Path, device: &Device) -> Result<Source, AcousticError> {
    let model = AcousticModel::load(dir, models_dir, device)?;
    let weights = dir.join(model_dir::WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&weights, &Device::Cpu).map_err(|source| {
        ModelDirError::Weights {
            path: weights.clone(),
            source: Box::new(source),
        }
    })?;
    let get = |name: &str| tensors.get(name).cloned();
    let mismatch = |message: String| ModelDirError::Mismatch {
        path: weights.clone(),
        message,
    };
    let head = match &model.meta.linear {
        Some(cfg) => Some(LinearHead::from_tensors(&get, LINEAR_PREFIX, cfg).map_err(mismatch)?),
        None => None,
    };
    let unfamiliarity = match &model.meta.unfamiliarity {
        Some(cfg) => {
            Some(Unfamiliarity::from_tensors(&get, UNFAMILIARITY_PREFIX, cfg).map_err(mismatch)?)
        }
        None => None,
    };
    let member = match &model.meta.linear_member {
        Some(m) => Some((
            LinearHead::from_tensors(&get, LINEAR_MEMBER_PREFIX, &m.linear).map_err(mismatch)?,
            m.clone(),
        )),
        None => None,
    };
    Ok(Source {
        model,
        head,
        member,
        unfamiliarity,
        tensors,
    })
}

/// The files of `--unlabelled` with their speaker (a manifest's `speaker` column), the number
/// of folder files skipped for their extension, and a content hash (paths and sizes).
#[allow(clippy::type_complexity)]
fn unlabelled_files(
    path: &Path,
) -> Result<(Vec<(PathBuf, Option<String>)>, usize, String), AcousticError> {
    if path.is_dir() {
        let mut files = Vec::new();
        let mut ignored = 0;
        walk(path, &mut files, &mut ignored)?;
        files.sort();
        if files.is_empty() {
            return Err(err(
                path,
                format!(
                    "no audio files ({}) in this folder or below it{}",
                    AUDIO_EXTENSIONS.join(", "),
                    if ignored > 0 {
                        format!(" ({ignored} other files)")
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        let mut h = Sha256::new();
        for f in &files {
            let size = fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            let rel = f.strip_prefix(path).unwrap_or(f);
            h.update(format!("{}\t{size}\n", rel.display()));
        }
        let hash = hex::encode(h.finalize());
        Ok((
            files.into_iter().map(|f| (f, None)).collect(),
            ignored,
            hash,
        ))
    } else if path.is_file() {
        let m = Manifest::load_unlabelled(path)?;
        if m.rows.is_empty() {
            return Err(err(path, "the manifest lists no clips"));
        }
        let hash = m.data_hash();
        Ok((
            m.rows.into_iter().map(|r| (r.path, r.speaker)).collect(),
            0,
            hash,
        ))
    } else {
        Err(err(
            path,
            "not found: --unlabelled takes a folder of audio files or a CSV manifest with a `path` column",
        ))
    }
}

/// Audio files under `dir` (symbolic links to folders are not followed).
fn walk(dir: &Path, files: &mut Vec<PathBuf>, ignored: &mut usize) -> Result<(), AcousticError> {
    let entries = fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let p = entry.path();
        let kind = entry.file_type().map_err(io_err(&p))?;
        if kind.is_dir() {
            walk(&p, files, ignored)?;
        } else if kind.is_file() || (kind.is_symlink() && p.is_file()) {
            let audio = p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if audio {
                files.push(p);
            } else {
                *ignored += 1;
            }
        }
    }
    Ok(())
}

/// Decode, measure and encode one input; the reason when it cannot be used.
fn analyse(src: &Source, an: &mut ClipAnalyser, input: &Input) -> Result<SiteClip, String> {
    if !input.file.is_file() {
        return Err("file not found".into());
    }
    let mut clip = an.analyse(&input.file).map_err(|e| e.to_string())?;
    let evidence = clip.evidence.clone();
    let (pooled, frames) = match &src.model.meta.linear {
        Some(cfg) => {
            let mut x = src
                .model
                .pooled_input(&mut clip)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            x.truncate(cfg.pooled_dim);
            (x, None)
        }
        None => {
            let (view, pooled) = src
                .model
                .view_and_pooled(&mut clip)
                .map_err(|e| e.to_string())?;
            // A mixture's linear member and the unfamiliarity reference read the same pooled
            // vector (checked at load): its blocks part is kept, its evidence part is
            // recomputed against the baseline in use.
            let pooled = match (src.pooled_input(), pooled) {
                (Some(input), Some(mut x)) => {
                    if input.evidence {
                        x.truncate(x.len().saturating_sub(view.evidence.len()));
                    }
                    x
                }
                _ => Vec::new(),
            };
            (pooled, Some(view.frames))
        }
    };
    Ok(SiteClip {
        file: input.file.clone(),
        evidence,
        label: input.label,
        speaker: input.speaker.clone(),
        pooled,
        frames,
    })
}

/// A manifest of site clips `ix` (for the split and fold helpers): unlabelled clips get an
/// empty label, clips without a speaker count as speakers of their own.
fn site_manifest(
    site: &[SiteClip],
    ix: &[usize],
    labels: &crate::LabelSet,
    path: &Path,
) -> Manifest {
    Manifest {
        path: path.into(),
        rows: ix
            .iter()
            .enumerate()
            .map(|(n, &i)| ManifestRow {
                line: n + 2,
                rel_path: site[i].file.display().to_string(),
                path: site[i].file.clone(),
                label: site[i]
                    .label
                    .map(|l| labels.name(l).to_string())
                    .unwrap_or_default(),
                speaker: site[i].speaker.clone(),
                extra: Default::default(),
            })
            .collect(),
        labels: Some(labels.clone()),
        extra_columns: Vec::new(),
    }
}

fn without_speakers(m: &Manifest) -> Manifest {
    let mut m = m.clone();
    m.rows.iter_mut().for_each(|r| r.speaker = None);
    m
}

/// Folds over the rows of `m`: by speaker when it names two or more (rows without one are
/// speakers of their own), else stratified clip folds. Returns the validation rows of each
/// fold and whether they are speaker folds.
fn folds(m: &Manifest, seed: u64) -> Result<(Vec<Vec<usize>>, bool), AcousticError> {
    let n_speakers = m.speakers().len();
    let (m, by_speaker) = if n_speakers >= 2 {
        (m.clone(), true)
    } else {
        (without_speakers(m), false)
    };
    let groups = if by_speaker {
        let unnamed = m.rows.iter().filter(|r| r.speaker.is_none()).count();
        n_speakers + unnamed
    } else {
        m.rows.len()
    };
    let k = MAX_FOLDS.min(groups);
    Ok((
        speaker_folds(&m, k, seed)?
            .into_iter()
            .map(|s| s.val)
            .collect(),
        by_speaker,
    ))
}

/// Every refit on the site clips `use_` (labelled ones among them refit the head).
fn adapt_on(
    src: &Source,
    site: &[SiteClip],
    use_: &[usize],
    site_id: &str,
    seed: u64,
) -> Result<Adapted, AcousticError> {
    let meta = &src.model.meta;
    let labels = &meta.labels;
    let n = use_.len();
    let mut refitted = Vec::new();
    let mut not_refitted = Vec::new();
    let lab: Vec<usize> = use_
        .iter()
        .copied()
        .filter(|&i| site[i].label.is_some())
        .collect();
    let y: Vec<usize> = lab.iter().filter_map(|&i| site[i].label).collect();
    let n_classes = y.iter().collect::<BTreeSet<_>>().len();
    let path = site.first().map(|c| c.file.clone()).unwrap_or_default();

    let evidences: Vec<Evidence> = use_.iter().map(|&i| site[i].evidence.clone()).collect();
    let baseline = Baseline::fit(BaselineKind::Corpus(format!("site:{site_id}")), &evidences);
    refitted.push(format!("evidence baseline: {n} site clips"));

    let mut prior_lambda = None;
    let mut temperature = meta.temperature;
    // Calibrated probabilities for routing: labelled clips' out of fold where the head was
    // refitted on them.
    let probs: Vec<Vec<f32>>;
    let mut n_out_of_fold = 0;
    let mut head_out = None;
    let mut head_outputs = None;
    let mut member_out = None;
    let reference: SiteReference;
    if let Some(h_src) = &src.head {
        let rows: Vec<Vec<f32>> = use_
            .iter()
            .map(|&i| src.input(&site[i], &baseline))
            .collect();
        let head0 = LinearHead {
            scaler: Scaler::fit(&rows, None),
            ..h_src.clone()
        };
        refitted.push(format!(
            "linear input standardisation (mean and std of each input): {n} site clips; weights kept"
        ));
        let pos: HashMap<usize, usize> = use_.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        let mut oof: HashMap<usize, Vec<f32>> = HashMap::new();
        let head = if n_classes >= 2 && lab.len() >= 3 {
            let lab_rows: Vec<Vec<f32>> = lab.iter().map(|&i| rows[pos[&i]].clone()).collect();
            let m = site_manifest(site, &lab, labels, &path);
            let (val_sets, by_speaker) = folds(&m, seed)?;
            let mut refit = refit_heads(
                std::slice::from_ref(&head0),
                &[lab_rows],
                &y,
                labels.len(),
                &val_sets,
                EnsembleCombine::MeanLogits,
            )?;
            temperature = refit.temperature;
            n_out_of_fold = lab.len();
            for (j, &i) in lab.iter().enumerate() {
                oof.insert(i, refit.oof[j].clone());
            }
            let how = refit_how("NLL", by_speaker, val_sets.len(), lab.len());
            match refit.lambda {
                Some(l) => {
                    prior_lambda = Some(l);
                    refitted.push(format!(
                        "linear head weights: MAP refit on the labelled site clips toward the source weights, λ = {l} chosen by {how}"
                    ));
                }
                None => not_refitted.push(format!(
                    "linear head weights: keeping the source weights gave the lowest {how} (λ = ∞ won)"
                )),
            }
            refitted.push(format!(
                "temperature {:.3} -> {:.3}: out-of-fold predictions of {} labelled clips",
                meta.temperature,
                refit.temperature,
                lab.len()
            ));
            refit.heads.swap_remove(0)
        } else {
            not_refitted.push(if lab.is_empty() {
                "linear head weights and temperature: no labelled clips".to_string()
            } else {
                format!(
                    "linear head weights and temperature: the {} labelled clips hold {n_classes} class(es)",
                    lab.len()
                )
            });
            head0
        };
        probs = use_
            .iter()
            .enumerate()
            .map(|(p, i)| match oof.get(i) {
                Some(l) => softmax_t(l, temperature),
                None => softmax_t(&head.logits(&rows[p]), temperature),
            })
            .collect();
        reference = site_unfamiliarity(
            src.unfamiliarity.as_ref(),
            &rows,
            (site, use_, labels, &path, seed),
            &mut refitted,
            &mut not_refitted,
        )?;
        head_out = Some(head);
    } else {
        not_refitted.push(
            "attention heads' pooling layers and input normalisation: kept (only their output layers are refitted, with labelled clips)"
                .into(),
        );
        // The reference reads a pooled vector of the same encoder pass (a mixture's member
        // reads it too); refitted on the site clips like a linear classifier's, so that the
        // site's own speech is not unfamiliar to the adapted model.
        let pooled: Option<Vec<Vec<f32>>> = use_
            .iter()
            .map(|&i| src.pooled_of(&site[i], &baseline))
            .collect();
        reference = match pooled {
            Some(rows) if src.unfamiliarity.is_some() => site_unfamiliarity(
                src.unfamiliarity.as_ref(),
                &rows,
                (site, use_, labels, &path, seed),
                &mut refitted,
                &mut not_refitted,
            )?,
            _ => {
                not_refitted.push(if src.unfamiliarity.is_some() {
                    "unfamiliarity reference: kept from the source (it reads no pooled vector)"
                        .into()
                } else {
                    "unfamiliarity reference: the source model has none".into()
                });
                SiteReference {
                    reference: src.unfamiliarity.clone(),
                    ..SiteReference::default()
                }
            }
        };
        let clips: Vec<&SiteClip> = use_.iter().map(|&i| &site[i]).collect();
        let mut outs = src.model.head_output_layers()?;
        let mut member = src.member.clone();
        // Out-of-fold logits of the labelled clips, by position in `use_`.
        let mut oof: HashMap<usize, Vec<f32>> = HashMap::new();
        let refit_any = n_classes >= 2 && lab.len() >= 3;
        // Every use_ clip's logits: the refitted members', or the model's own where nothing
        // was refitted.
        let logits;
        if refit_any {
            let feats = src.head_features(&clips, &baseline)?;
            let member_x: Vec<Option<Vec<f32>>> = clips
                .iter()
                .map(|c| src.member_input(c, &baseline))
                .collect();
            let combine = src.model.ensemble_combine();
            // Labelled positions within `use_`, and each head's inputs of those clips.
            let lab_pos: Vec<usize> = use_
                .iter()
                .enumerate()
                .filter(|(_, &i)| site[i].label.is_some())
                .map(|(p, _)| p)
                .collect();
            let rows: Vec<Vec<Vec<f32>>> = feats
                .iter()
                .map(|f| lab_pos.iter().map(|&p| f[p].clone()).collect())
                .collect();
            let m = site_manifest(site, &lab, labels, &path);
            let (val_sets, by_speaker) = folds(&m, seed)?;
            let heads0: Vec<LinearHead> = outs.iter().map(|(_, h)| h.clone()).collect();
            let refit = refit_heads(&heads0, &rows, &y, labels.len(), &val_sets, combine)?;
            let how = refit_how(
                "NLL of the combined heads",
                by_speaker,
                val_sets.len(),
                lab.len(),
            );
            match refit.lambda {
                Some(l) => {
                    prior_lambda = Some(l);
                    refitted.push(format!(
                        "attention heads' output layers ({} heads): MAP refit on the labelled site clips toward the source weights, λ = {l} chosen by {how}",
                        heads0.len()
                    ));
                    for ((_, h), new) in outs.iter_mut().zip(&refit.heads) {
                        *h = new.clone();
                    }
                }
                None => not_refitted.push(format!(
                    "attention heads' output layers: keeping the source weights gave the lowest {how} (λ = ∞ won)"
                )),
            }
            match member.as_mut() {
                // A mixture: its linear member is refitted the same way (toward its source
                // weights, its own λ), then both members' temperatures come from their
                // out-of-fold predictions and the mixture's from theirs.
                Some((mh, lm)) => {
                    let xs: Vec<Vec<f32>> = lab_pos
                        .iter()
                        .map(|&p| member_x[p].clone().unwrap_or_default())
                        .collect();
                    let mr = refit_heads(
                        std::slice::from_ref(mh),
                        &[xs],
                        &y,
                        labels.len(),
                        &val_sets,
                        EnsembleCombine::MeanLogits,
                    )?;
                    let how = refit_how("NLL", by_speaker, val_sets.len(), lab.len());
                    match mr.lambda {
                        Some(l) => {
                            refitted.push(format!(
                                "linear member: MAP refit on the labelled site clips toward the source weights, λ = {l} chosen by {how}"
                            ));
                            *mh = mr.heads[0].clone();
                        }
                        None => not_refitted.push(format!(
                            "linear member: keeping the source weights gave the lowest {how} (λ = ∞ won)"
                        )),
                    }
                    refitted.push(format!(
                        "mixture temperatures: heads {:.3} -> {:.3}, linear member {:.3} -> {:.3} (out-of-fold predictions of {} labelled clips)",
                        lm.heads_temperature,
                        refit.temperature,
                        lm.linear_temperature,
                        mr.temperature,
                        lab.len()
                    ));
                    lm.heads_temperature = refit.temperature;
                    lm.linear_temperature = mr.temperature;
                    let mixed: Vec<Vec<f32>> = refit
                        .oof
                        .iter()
                        .zip(&mr.oof)
                        .map(|(h, l)| super::model::mix_logits(h, l, lm))
                        .collect();
                    temperature = fit_temperature(&mixed, &y);
                    oof.extend(lab_pos.iter().copied().zip(mixed));
                }
                None => {
                    temperature = refit.temperature;
                    oof.extend(lab_pos.iter().copied().zip(refit.oof));
                }
            }
            refitted.push(format!(
                "temperature {:.3} -> {temperature:.3}: out-of-fold predictions of {} labelled clips",
                meta.temperature,
                lab.len()
            ));
            n_out_of_fold = lab.len();
            logits = src.model.mix_with(
                outputs_logits(&outs, &feats, combine),
                member.as_ref().map(|(h, m)| (h, m)),
                &member_x,
            )?;
        } else {
            logits = src.head_logits(&clips, &baseline)?;
            not_refitted.push(if lab.is_empty() {
                "attention heads' output layers and temperature: no labelled clips".to_string()
            } else {
                format!(
                    "attention heads' output layers and temperature: the {} labelled clips hold {n_classes} class(es)",
                    lab.len()
                )
            });
        }
        probs = logits
            .iter()
            .enumerate()
            .map(|(p, l)| softmax_t(oof.get(&p).unwrap_or(l), temperature))
            .collect();
        if refit_any {
            head_outputs = Some(outs);
            member_out = member;
        }
    }

    let speakers: Vec<String> = use_
        .iter()
        .filter_map(|&i| site[i].speaker.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut routing = fit_routing(&probs, src.model.routing.target_route_fraction, &speakers);
    routing.margin = src.model.routing.margin;
    routing.unfamiliarity_threshold = src.model.routing.unfamiliarity_threshold;
    routing.fitted_on = format!(
        "camxuc adapt: predictions of {n} site clips ({n_out_of_fold} labelled ones out of fold), route fraction {:.2}; unfamiliarity threshold kept from the source (in units of the site's own median)",
        src.model.routing.target_route_fraction
    );
    refitted.push(format!(
        "routing threshold {:.3} -> {:.3}: {n} site predictions at the source's route fraction {:.2}",
        src.model.routing.threshold, routing.threshold, src.model.routing.target_route_fraction
    ));
    // The labelled clips as the adapted model predicts them without having seen them (out of
    // fold, unfamiliarity by their fold's reference): what the site's fusion is fitted on.
    let site_predictions = if n_out_of_fold == 0 {
        Vec::new()
    } else {
        use_.iter()
            .enumerate()
            .filter_map(|(p, &i)| {
                let label = site[i].label?;
                let mut evidence = site[i].evidence.clone();
                baseline.apply(&mut evidence);
                Some(HeldOutPrediction {
                    probs: crate::Probs::new(labels, probs[p].clone()),
                    evidence,
                    unfamiliarity: reference.held_out.get(p).copied().flatten(),
                    label,
                    // Clips without a speaker: three groups, so that leaving one out still
                    // predicts clips the fit did not see.
                    group: site[i]
                        .speaker
                        .clone()
                        .unwrap_or_else(|| format!("clips-{}", p % 3)),
                    condition: HeldOutCondition::Clean,
                })
            })
            .collect()
    };
    Ok(Adapted {
        baseline,
        head: head_out,
        head_outputs,
        member: member_out,
        unfamiliarity: reference.reference,
        unfamiliarity_refitted: reference.refitted,
        site_predictions,
        temperature,
        routing,
        prior_lambda,
        refitted,
        not_refitted,
    })
}

/// The unfamiliarity reference refitted on site clips' pooled vectors (`rows`, by position in
/// `use_`): the source's number of directions at most, one per [`SITE_CLIPS_PER_COMPONENT`]
/// clips; the unit is the median distance of held-out site clips (speaker folds when the
/// clips name speakers), so the source's threshold keeps its meaning ("as far as a typical
/// new speaker of this site, times the threshold"). The source's reference is kept when
/// there are fewer than 4 clips; none when the source has none.
fn site_unfamiliarity(
    u_src: Option<&Unfamiliarity>,
    rows: &[Vec<f32>],
    (site, use_, labels, path, seed): (&[SiteClip], &[usize], &crate::LabelSet, &Path, u64),
    refitted: &mut Vec<String>,
    not_refitted: &mut Vec<String>,
) -> Result<SiteReference, AcousticError> {
    let n = rows.len();
    let Some(u_src) = u_src else {
        not_refitted.push("unfamiliarity reference: the source model has none".into());
        return Ok(SiteReference::default());
    };
    if n < 4 {
        not_refitted.push("unfamiliarity reference: too few site clips".into());
        return Ok(SiteReference::kept(u_src, rows));
    }
    let m = site_manifest(site, use_, labels, path);
    let (val_sets, by_speaker) = folds(&m, seed)?;
    // Few clips: with nearly as many directions as clips, the kept directions
    // hold almost all of a fold's variance and its residual variance collapses,
    // so held-out distances (the unit) would come out far larger than the final
    // reference's. At most one direction per SITE_CLIPS_PER_COMPONENT clips keeps
    // the fold and final fits alike.
    let components = u_src
        .cfg
        .components
        .min(n / SITE_CLIPS_PER_COMPONENT)
        .max(1);
    let mut held = Vec::new();
    let mut held_at: Vec<Option<f64>> = vec![None; n];
    for val in &val_sets {
        let vs: BTreeSet<usize> = val.iter().copied().collect();
        let train: Vec<Vec<f32>> = (0..n)
            .filter(|p| !vs.contains(p))
            .map(|p| rows[p].clone())
            .collect();
        if train.len() < 2 {
            continue;
        }
        let u = Unfamiliarity::fit(&train, components, String::new())?;
        for &p in val {
            let raw = u.raw(&rows[p]);
            held.push(raw);
            held_at[p] = Some(raw);
        }
    }
    let mut u = Unfamiliarity::fit(
        rows,
        components,
        format!(
            "camxuc adapt: {n} site clips, {components} directions; unit = median of {} held-out site clips ({} folds, {})",
            held.len(),
            val_sets.len(),
            if by_speaker { "by speaker" } else { "by clip" }
        ),
    )?;
    u.set_reference(&held);
    refitted.push(format!(
        "unfamiliarity reference: {n} site clips, {components} directions; unit = median distance of held-out site clips ({} folds, {})",
        val_sets.len(),
        if by_speaker { "by speaker" } else { "by clip" }
    ));
    // The new reference reads the same pooled vector as the source's.
    u.cfg.input = u_src.cfg.input.clone();
    let unit = u.cfg.reference.max(1e-9);
    Ok(SiteReference {
        held_out: held_at
            .into_iter()
            .map(|r| r.map(|r| (r / unit) as f32))
            .collect(),
        reference: Some(u),
        refitted: true,
    })
}

/// What [`site_unfamiliarity`] gives.
#[derive(Default)]
struct SiteReference {
    reference: Option<Unfamiliarity>,
    /// Whether `reference` was refitted on the site (else the source's, or none).
    refitted: bool,
    /// Each site clip's unfamiliarity by a reference that was not fitted on it (its fold's,
    /// in the final unit; the source's when it is kept); `None` where there is none.
    held_out: Vec<Option<f32>>,
}

impl SiteReference {
    fn kept(u: &Unfamiliarity, rows: &[Vec<f32>]) -> Self {
        Self {
            held_out: rows.iter().map(|x| Some(u.score(x))).collect(),
            reference: Some(u.clone()),
            refitted: false,
        }
    }
}

struct Refit {
    /// The refitted heads, in the order given.
    heads: Vec<LinearHead>,
    /// λ of the chosen fit; `None` when the source weights were kept.
    lambda: Option<f64>,
    temperature: f32,
    /// Out-of-fold combined logits of each labelled row at the chosen candidate.
    oof: Vec<Vec<f32>>,
}

/// The MAP refit of one or several heads whose logits are combined (`combine`, an ensemble's
/// rule): candidates "source weights" and [`PRIOR_LAMBDAS`] (each fold warm-starts down the
/// path; every head at the same λ), the one whose combined out-of-fold logits have the
/// lowest NLL after temperature scaling wins (ties go to the larger penalty), then the final
/// fit on every labelled row. `rows[h][i]` is head `h`'s input of labelled row `i`.
fn refit_heads(
    heads0: &[LinearHead],
    rows: &[Vec<Vec<f32>>],
    y: &[usize],
    n_labels: usize,
    val_sets: &[Vec<usize>],
    combine: EnsembleCombine,
) -> Result<Refit, AcousticError> {
    let n_cand = 1 + PRIOR_LAMBDAS.len();
    let n = y.len();
    // per[c][h][i]: candidate c, head h, row i (out of fold).
    let mut per: Vec<Vec<Vec<Vec<f32>>>> = vec![vec![vec![Vec::new(); n]; heads0.len()]; n_cand];
    for val in val_sets {
        let vs: BTreeSet<usize> = val.iter().copied().collect();
        let train: Vec<usize> = (0..n).filter(|i| !vs.contains(i)).collect();
        let ys: Vec<usize> = train.iter().map(|&i| y[i]).collect();
        for (h, head0) in heads0.iter().enumerate() {
            let xs: Vec<Vec<f32>> = train.iter().map(|&i| rows[h][i].clone()).collect();
            for &i in val {
                per[0][h][i] = head0.logits(&rows[h][i]);
            }
            let path = prior_path(head0, &xs, &ys, n_labels, PRIOR_LAMBDAS.len())?;
            for (c, fitted) in path.iter().enumerate() {
                for &i in val {
                    per[c + 1][h][i] = fitted.logits(&rows[h][i]);
                }
            }
        }
    }
    let mut oof: Vec<Vec<Vec<f32>>> = per.iter().map(|p| combine_logits(p, combine)).collect();
    let mut best = 0;
    let mut best_nll = f64::INFINITY;
    for (c, lg) in oof.iter().enumerate() {
        let nll = mean_nll(lg, y, fit_temperature(lg, y));
        if nll < best_nll - 1e-9 {
            best_nll = nll;
            best = c;
        }
    }
    let temperature = fit_temperature(&oof[best], y);
    let heads = heads0
        .iter()
        .zip(rows)
        .map(|(head0, xs)| {
            Ok(if best == 0 {
                head0.clone()
            } else {
                prior_path(head0, xs, y, n_labels, best)?
                    .pop()
                    .unwrap_or_else(|| head0.clone())
            })
        })
        .collect::<Result<Vec<_>, AcousticError>>()?;
    Ok(Refit {
        heads,
        lambda: (best > 0).then(|| PRIOR_LAMBDAS[best - 1]),
        temperature,
        oof: oof.swap_remove(best),
    })
}

/// Fits at the first `count` penalties of [`PRIOR_LAMBDAS`] toward `head0`'s weights (its
/// scaler standardises), each warm-started from the previous one.
fn prior_path(
    head0: &LinearHead,
    xs: &[Vec<f32>],
    ys: &[usize],
    n_labels: usize,
    count: usize,
) -> Result<Vec<LinearHead>, AcousticError> {
    let mut out: Vec<LinearHead> = Vec::with_capacity(count);
    for &lambda in &PRIOR_LAMBDAS[..count] {
        let opts = FitOptions {
            lambda,
            prior: Some(head0),
            ..FitOptions::default()
        };
        let h = fit(
            xs,
            ys,
            n_labels,
            None,
            &opts,
            Some(out.last().unwrap_or(head0)),
        )?;
        out.push(h);
    }
    Ok(out)
}

/// Write the new directory next to `out` under a temporary name, then move it into place:
/// the source's other files (rules, refinement rounds, training evidence) copied, the
/// weights, model.json and routing.json rewritten.
fn write_dir(
    opts: &AdaptOptions,
    src: &Source,
    a: &Adapted,
    site: &[SiteClip],
    n_labelled: usize,
    source_sha: &str,
) -> Result<(), AcousticError> {
    let out = absolute(&opts.out);
    let parent = out.parent().unwrap_or(Path::new("/")).to_path_buf();
    let name = out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "adapted".into());
    create_private_dir_all(&parent).map_err(io_err(&parent))?;
    let stage = parent.join(format!(".{name}.adapting-{}", std::process::id()));
    if stage.exists() {
        fs::remove_dir_all(&stage).map_err(io_err(&stage))?;
    }
    let result = (|| -> Result<(), AcousticError> {
        create_private_dir_all(&stage).map_err(io_err(&stage))?;
        let rewritten = [
            model_dir::META_FILE,
            model_dir::ROUTING_FILE,
            model_dir::WEIGHTS_FILE,
        ];
        copy_tree(&opts.model, &stage, &rewritten)?;

        let weights = stage.join(model_dir::WEIGHTS_FILE);
        match &a.head {
            Some(head) => {
                let mut tensors: HashMap<String, Tensor> = src
                    .tensors
                    .iter()
                    .filter(|(k, _)| {
                        !k.starts_with(&format!("{LINEAR_PREFIX}."))
                            && !k.starts_with(&format!("{UNFAMILIARITY_PREFIX}."))
                    })
                    .map(|(k, t)| (k.clone(), t.clone()))
                    .collect();
                tensors.extend(head.tensors(LINEAR_PREFIX)?);
                if let Some(u) = &a.unfamiliarity {
                    tensors.extend(u.tensors(UNFAMILIARITY_PREFIX)?);
                }
                candle_core::safetensors::save(&tensors, &weights).map_err(|source| {
                    AcousticError::Tensors {
                        path: weights.clone(),
                        source: Box::new(source),
                    }
                })?;
            }
            None if a.head_outputs.is_none() && a.member.is_none() && !a.unfamiliarity_refitted => {
                // Nothing in the weights changed: the source's file, byte for byte.
                fs::copy(opts.model.join(model_dir::WEIGHTS_FILE), &weights)
                    .map_err(io_err(&weights))?;
            }
            None => {
                // The attention heads' weights, with what was refitted replaced: the output
                // layers and a mixture's member (labelled clips), the unfamiliarity reference.
                let mut tensors: HashMap<String, Tensor> = src
                    .tensors
                    .iter()
                    .filter(|(k, _)| {
                        !a.unfamiliarity_refitted
                            || !k.starts_with(&format!("{UNFAMILIARITY_PREFIX}."))
                    })
                    .map(|(k, t)| (k.clone(), t.clone()))
                    .collect();
                if let (true, Some(u)) = (a.unfamiliarity_refitted, &a.unfamiliarity) {
                    tensors.extend(u.tensors(UNFAMILIARITY_PREFIX)?);
                }
                if let Some((mh, _)) = &a.member {
                    tensors.extend(mh.tensors(LINEAR_MEMBER_PREFIX)?);
                }
                for (prefix, h) in a.head_outputs.iter().flatten() {
                    let name = |part: &str| {
                        if prefix.is_empty() {
                            format!("out.{part}")
                        } else {
                            format!("{prefix}.out.{part}")
                        }
                    };
                    let d = h.input_dim();
                    tensors.insert(
                        name("weight"),
                        Tensor::from_vec(h.w.clone(), (h.n_labels, d), &Device::Cpu)?,
                    );
                    tensors.insert(
                        name("bias"),
                        Tensor::from_vec(h.b.clone(), h.n_labels, &Device::Cpu)?,
                    );
                }
                candle_core::safetensors::save(&tensors, &weights).map_err(|source| {
                    AcousticError::Tensors {
                        path: weights.clone(),
                        source: Box::new(source),
                    }
                })?;
            }
        }
        let mut meta = src.model.meta.clone();
        meta.format_version = model_dir::FORMAT_VERSION;
        meta.name = name.clone();
        meta.evidence_baseline = a.baseline.clone();
        meta.temperature = a.temperature;
        meta.unfamiliarity = a.unfamiliarity.as_ref().map(|u| u.cfg.clone());
        if let Some((_, lm)) = &a.member {
            meta.linear_member = Some(lm.clone());
        }
        meta.adaptation = Some(Adaptation {
            refitted: a.refitted.clone(),
            not_refitted: a.not_refitted.clone(),
            n_unlabelled: site.len() - n_labelled,
            n_labelled,
            source_model: opts.model.display().to_string(),
            source_model_json_sha256: source_sha.into(),
            prior_lambda: a.prior_lambda,
            seed: opts.seed,
        });
        model_dir::write_meta(&stage, &meta)?;
        model_dir::write_json(&stage.join(model_dir::ROUTING_FILE), &a.routing)?;
        // What was written must load.
        model_dir::read_meta(&stage)?;
        model_dir::read_routing(&stage)?;
        if opts.out.exists() {
            fs::remove_dir_all(&opts.out).map_err(io_err(&opts.out))?;
        }
        fs::rename(&stage, &opts.out).map_err(io_err(&opts.out))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&stage);
    }
    result
}

/// Copy the files under `from` into `to` (folders owner-only), except the top-level files
/// named in `skip` and `*.prev` backups.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> Result<(), AcousticError> {
    let mut entries: Vec<_> = fs::read_dir(from)
        .map_err(io_err(from))?
        .collect::<Result<_, _>>()
        .map_err(io_err(from))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name_s = name.to_string_lossy();
        if skip.contains(&name_s.as_ref()) || name_s.ends_with(".prev") {
            continue;
        }
        let p = e.path();
        let dest = to.join(&name);
        if p.is_dir() {
            create_private_dir_all(&dest).map_err(io_err(&dest))?;
            copy_tree(&p, &dest, &[])?;
        } else if p.is_file() {
            fs::copy(&p, &dest).map_err(io_err(&dest))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Rows of three Gaussian classes in 4 dimensions (class k centred at 2·e_k), `per` each.
    fn site_rows(per: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..3 * per {
            let k = i % 3;
            let x: Vec<f32> = (0..4)
                .map(|d| if d == k { 2.0 } else { 0.0 } + rng.random_range(-1.0..1.0))
                .collect();
            xs.push(x);
            ys.push(k);
        }
        (xs, ys)
    }

    /// A head reading class k from dimension `perm[k]`, on raw inputs.
    fn head(perm: [usize; 3]) -> LinearHead {
        let mut w = vec![0.0; 3 * 4];
        for (k, &d) in perm.iter().enumerate() {
            w[k * 4 + d] = 1.5;
        }
        LinearHead {
            scaler: Scaler {
                mean: vec![0.0; 4],
                inv_std: vec![1.0; 4],
            },
            w,
            b: vec![0.0; 3],
            n_labels: 3,
        }
    }

    fn accuracy(logits: &[Vec<f32>], y: &[usize]) -> f64 {
        logits
            .iter()
            .zip(y)
            .filter(|(l, &t)| argmax(l) == t)
            .count() as f64
            / y.len() as f64
    }

    /// Two heads whose output layers read the site's classes from the wrong dimensions (the
    /// site's recording chain moved the cues): the refit moves away from them and the
    /// combined out-of-fold predictions improve; heads that already fit the site are kept
    /// or barely moved (a large λ).
    #[test]
    fn refitting_several_heads_fixes_wrong_outputs_and_keeps_right_ones() {
        let (xs, y) = site_rows(12, 5);
        // Three folds, each with every class (row i is of class i % 3).
        let val_sets: Vec<Vec<usize>> = (0..3)
            .map(|f| (0..xs.len()).filter(|i| (i / 3) % 3 == f).collect())
            .collect();
        let rows = vec![xs.clone(), xs.clone()];
        let wrong = [head([1, 2, 0]), head([2, 0, 1])];
        let before: Vec<Vec<Vec<f32>>> = wrong
            .iter()
            .map(|h| xs.iter().map(|x| h.logits(x)).collect())
            .collect();
        let before = accuracy(&combine_logits(&before, EnsembleCombine::MeanProbs), &y);
        let r = refit_heads(&wrong, &rows, &y, 3, &val_sets, EnsembleCombine::MeanProbs).unwrap();
        assert!(r.lambda.is_some(), "the source weights were kept");
        let after = accuracy(&r.oof, &y);
        assert!(
            before < 0.2 && after > 0.8,
            "accuracy {before} before, {after} out of fold after"
        );
        assert_eq!(r.heads.len(), 2);
        assert_ne!(r.heads[0].w, wrong[0].w);

        let right = [head([0, 1, 2]), head([0, 1, 2])];
        let r = refit_heads(&right, &rows, &y, 3, &val_sets, EnsembleCombine::MeanProbs).unwrap();
        assert!(
            r.lambda.is_none_or(|l| l >= 1.0),
            "heads that fit the site moved with λ = {:?}",
            r.lambda
        );
        assert!(accuracy(&r.oof, &y) > 0.8);
        // Deterministic.
        let again =
            refit_heads(&right, &rows, &y, 3, &val_sets, EnsembleCombine::MeanProbs).unwrap();
        assert_eq!(again.oof, r.oof);
    }
}
