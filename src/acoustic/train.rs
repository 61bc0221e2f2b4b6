//! `camxuc train`: manifest → speaker-disjoint split → analysis → frames (clean + perturbed
//! views) → head training → temperature → routing threshold → model directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::augment;
use super::frontend::Frontend;
use super::head::{combine_logits, EnsembleCombine, HeadConfig};
use super::head_training::{
    argmax, predict_logits, train_heads, EpochStats, Example, HeadJob, TrainConfig, Trained, View,
};
use super::linear::{fit_path, FitOptions, LinearConfig, LinearHead};
use super::model::{evidence_vector, mix_clips};
use super::model_dir::{
    self, EnsembleConfig, FrontendConfig, LinearMember, ModelMeta, RoutingConfig, TrainingMetrics,
};
use super::temperature::{ece_at, fit_temperature, mean_nll, softmax_t};
use super::unfamiliar::{fit_held_out, PooledInput};
use super::AcousticError;
use crate::audio::field::FieldChain;
use crate::audio::TARGET_RATE;
use crate::catalog;
use crate::clip::{AnalysedClip, ClipAnalyser};
use crate::data::manifest::Manifest;
use crate::data::split::{filter_speakers, speaker_folds, speaker_split, Split};
use crate::features::{Baseline, BaselineKind, FeatureConfig, FEATURES};
use crate::{Audio, Evidence, LabelSet};

/// Which frames the head reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontendChoice {
    /// Frozen Whisper base encoder, stopped after this many blocks.
    Whisper {
        blocks: usize,
    },
    LogMel,
}

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub manifest: PathBuf,
    /// Keep only these speakers of `manifest` (e.g. `actor01-actor12`).
    pub speakers: Option<String>,
    pub val_manifest: Option<PathBuf>,
    pub out: PathBuf,
    pub force: bool,
    pub labels: LabelSet,
    pub frontend: FrontendChoice,
    pub models_dir: PathBuf,
    pub train: TrainConfig,
    pub hidden: usize,
    pub dropout: f32,
    /// Perturbed copies per training clip (besides the clean one).
    pub augment_views: usize,
    /// Validation share when no `val_manifest` is given (speaker-disjoint).
    pub val_fraction: f64,
    pub route_fraction: f32,
    /// Fuse the evidence z-scores into the head.
    pub use_evidence: bool,
    /// Speaker folds for out-of-fold predictions on the training clips (0 or 1: none). They
    /// are stored in train_evidence.jsonl for refinement, and calibrate the temperature and
    /// routing threshold together with the validation predictions.
    pub oof_folds: usize,
    /// Keep the out-of-fold heads and combine them with the main head at inference (`None`:
    /// throw them away after their out-of-fold predictions, one head as before).
    pub ensemble: Option<EnsembleCombine>,
    /// Which classifier reads the frames.
    pub classifier: Classifier,
    /// Labelled manifests of other corpora or sites, never trained on: the served model's
    /// predictions of their clips join the held-out predictions the fusion is fitted on.
    pub shifted: Vec<PathBuf>,
    /// Outlier exposure: a manifest (a `path` column; `speaker` recommended, other columns
    /// ignored) of speech outside the labels, e.g. other emotions, that the classifier is
    /// taught to be unsure on (uniform target, weight `train.outlier_weight`). A held-out
    /// speaker's outlier clips never train the model that scores that speaker.
    pub outliers: Option<PathBuf>,
    /// Attention classifier with the Whisper front end: also train a linear classifier on the
    /// pooled vector the unfamiliarity reference reads, and serve the mixture of the two
    /// (model.json `linear_member`; chosen by `just generalise`, README).
    pub linear_member: bool,
    /// Field-chain copies per training clip ([`FieldChain::random`] on the whole recording)
    /// that the linear member also trains on and chooses its penalty and temperature by; the
    /// heads do not see them (`just generalise`: field-chain copies made the attention head
    /// worse in every column, the member better across corpora).
    pub member_field_views: usize,
}

/// The classifier on the frozen front end.
#[derive(Clone, Debug, PartialEq)]
pub enum Classifier {
    /// Attention-pooling head(s) trained by gradient descent on frames (the earlier default).
    Attention,
    /// Pooled statistics + L2 logistic regression, with an unfamiliarity reference.
    Linear(super::train_linear::LinearChoice),
}

impl TrainOptions {
    pub fn new(manifest: PathBuf, out: PathBuf) -> Self {
        Self {
            manifest,
            speakers: None,
            val_manifest: None,
            out,
            force: false,
            labels: LabelSet::default(),
            frontend: FrontendChoice::Whisper { blocks: 3 },
            models_dir: catalog::models_dir(),
            train: TrainConfig {
                // Chosen by `just generalise`: the attention head with its temporal conv kept
                // at the seeded random initialisation has the best worst column (README).
                freeze_temporal: true,
                ..TrainConfig::default()
            },
            hidden: 64,
            dropout: 0.3,
            augment_views: 2,
            val_fraction: 0.25,
            route_fraction: 0.3,
            use_evidence: true,
            oof_folds: 3,
            ensemble: Some(EnsembleCombine::MeanLogits),
            // Chosen by `just generalise`: the best worst column (README).
            classifier: Classifier::Attention,
            shifted: Vec::new(),
            outliers: None,
            linear_member: true,
            member_field_views: 2,
        }
    }
}

/// Progress of a training run, for a progress bar.
pub enum TrainEvent<'a> {
    Analysed {
        done: usize,
        total: usize,
    },
    Encoded {
        done: usize,
        total: usize,
    },
    Epoch(&'a EpochStats),
    /// Out-of-fold head `fold` of `folds` is being trained.
    Fold {
        fold: usize,
        folds: usize,
    },
    Note(String),
}

pub struct TrainReport {
    pub dir: PathBuf,
    pub meta: ModelMeta,
    pub routing: RoutingConfig,
    /// Clips left out, each with its reason.
    pub skipped: Vec<String>,
    /// Predictions on clips (and perturbed copies of clips) whose speakers the predicting
    /// head never trained on: what the fusion of the reasoning stage is fitted on. Empty when
    /// the trainer made none.
    pub held_out: Vec<HeldOutPrediction>,
}

/// One held-out prediction of a trained model, with what the reasoning stage sees of the clip.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldOutPrediction {
    /// Calibrated probabilities (the served temperature).
    pub probs: crate::Probs,
    /// The clip's evidence with z-scores against the model's baseline.
    pub evidence: Evidence,
    /// Unfamiliarity scored by a reference fitted without the clip's speakers, in the served
    /// model's unit (`None` without a reference).
    pub unfamiliarity: Option<f32>,
    pub label: usize,
    /// Which held-out part predicted it: `val`, the speaker fold (`fold1`, …), or
    /// `corpus:<name>` for a clip of a `--shifted-manifest`.
    pub group: String,
    pub condition: HeldOutCondition,
}

/// What kind of held-out prediction it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HeldOutCondition {
    /// A clip as recorded, of a speaker the predicting head never trained on.
    Clean,
    /// A perturbed copy of such a clip (gain, noise, telephone band, echo; field chains for
    /// the linear classifier).
    Perturbed,
    /// A clip of another corpus or site (`TrainOptions::shifted`), predicted by the served
    /// model, which never trained on it.
    OtherCorpus,
}

impl HeldOutCondition {
    pub const ALL: [Self; 3] = [Self::Clean, Self::Perturbed, Self::OtherCorpus];

    pub fn name(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Perturbed => "perturbed",
            Self::OtherCorpus => "other_corpus",
        }
    }
}

/// Level every clip is scaled to before the Whisper encoder.
pub(crate) const WHISPER_LEVEL_DBFS: f32 = -23.0;

/// Principal directions of the unfamiliarity reference, and the share of held-out clean clips
/// above its threshold (shared by both classifiers' training).
pub(crate) const UNFAMILIARITY_COMPONENTS: usize = 32;
pub(crate) const UNFAMILIAR_FRACTION: f64 = 0.05;

pub(crate) struct Analysed {
    pub(crate) row: usize,
    pub(crate) clip: AnalysedClip,
}

/// Babble for the field chains of training copies: every (n/16)-th clip's speech, a fixed
/// small pool of the manifest's own voices.
pub(crate) fn babble_pool(clips: &[Analysed]) -> Vec<Vec<f32>> {
    clips
        .iter()
        .step_by((clips.len() / 16).max(1))
        .map(|a| a.clip.speech.samples.clone())
        .collect()
}

/// The whole recording of `a` (row `path`), decoded again: field chains act on it, silences
/// included, so the VAD sees the noise too. Its speech span when decoding fails now.
pub(crate) fn whole_recording(path: &Path, a: &AnalysedClip, an: &ClipAnalyser) -> Vec<f32> {
    crate::audio::load(path, &an.load)
        .map(|x| x.samples)
        .unwrap_or_else(|_| a.speech.samples.clone())
}

pub(crate) fn analyse_rows(
    m: &Manifest,
    rows: &[usize],
    an: &mut ClipAnalyser,
    skipped: &mut Vec<String>,
    progress: &mut dyn FnMut(usize),
) -> Vec<Analysed> {
    let mut out = Vec::with_capacity(rows.len());
    for &r in rows {
        match an.analyse(&m.rows[r].path) {
            Ok(clip) => out.push(Analysed { row: r, clip }),
            Err(e) => skipped.push(e.to_string()),
        }
        progress(1);
    }
    out
}

pub fn train_model(
    opts: &TrainOptions,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainReport, AcousticError> {
    if let Classifier::Linear(choice) = &opts.classifier {
        return super::train_linear::train_linear(opts, choice, on_event);
    }
    let started = Instant::now();
    let device = super::default_device();
    model_dir::prepare_out(&opts.out, opts.force)?;

    // Data: the training manifest, and validation either given or held out by speaker.
    let mut train_m = Manifest::load(&opts.manifest, &opts.labels)?;
    if let Some(sel) = &opts.speakers {
        train_m = filter_speakers(&train_m, &[sel.as_str()])?;
    }
    train_m.require_files()?;
    let (train_m, val_m, val_speakers) = match &opts.val_manifest {
        Some(v) => {
            let val_m = Manifest::load(v, &opts.labels)?;
            val_m.require_files()?;
            let speakers = val_m.speakers();
            (train_m, val_m, speakers)
        }
        None => {
            let split = speaker_split(&train_m, opts.val_fraction, opts.train.seed)?;
            if let Some(note) = &split.note {
                on_event(TrainEvent::Note(note.clone()));
            }
            (
                train_m.subset(&split.train),
                train_m.subset(&split.val),
                split.val_speakers,
            )
        }
    };
    let data_hash = train_m.data_hash();

    // Analysis: decode, trim, evidence, log-mel.
    let feature_cfg = FeatureConfig::default();
    let mut an = ClipAnalyser::new(&feature_cfg).map_err(|source| AcousticError::Features {
        path: opts.manifest.clone(),
        source,
    })?;
    let total = train_m.rows.len() + val_m.rows.len();
    let mut done = 0;
    let mut skipped = Vec::new();
    let mut tick = |n: usize, on_event: &mut dyn FnMut(TrainEvent)| {
        done += n;
        on_event(TrainEvent::Analysed { done, total });
    };
    let train_rows: Vec<usize> = (0..train_m.rows.len()).collect();
    let val_rows: Vec<usize> = (0..val_m.rows.len()).collect();
    let mut phase_seconds = std::collections::BTreeMap::new();
    let mut phase_start = Instant::now();
    let mut lap = |name: &str, phases: &mut std::collections::BTreeMap<String, f64>| {
        phases.insert(name.to_string(), phase_start.elapsed().as_secs_f64());
        phase_start = Instant::now();
    };
    let mut train_clips = analyse_rows(&train_m, &train_rows, &mut an, &mut skipped, &mut |n| {
        tick(n, on_event)
    });
    let mut val_clips = analyse_rows(&val_m, &val_rows, &mut an, &mut skipped, &mut |n| {
        tick(n, on_event)
    });
    if train_clips.is_empty() || val_clips.is_empty() {
        return Err(AcousticError::Training {
            path: opts.manifest.clone(),
            message: format!(
                "no usable clips in the training or validation part ({} skipped)",
                skipped.len()
            ),
        });
    }

    let mut shifted_sets = analyse_shifted(opts, &mut an, &mut skipped)?;
    let mut outlier_set = analyse_outliers(opts, &mut an, &mut skipped)?;
    lap("analyse", &mut phase_seconds);

    // Corpus evidence baseline from the training clips only.
    let evidences: Vec<Evidence> = train_clips
        .iter()
        .map(|a| a.clip.evidence.clone())
        .collect();
    let baseline = Baseline::fit(
        BaselineKind::Corpus(data_hash[..12.min(data_hash.len())].to_string()),
        &evidences,
    );
    let evidence_inputs = if opts.use_evidence {
        evidence_inputs(&baseline)
    } else {
        Vec::new()
    };

    // Front end.
    let (frontend, frontend_cfg) = match opts.frontend {
        FrontendChoice::Whisper { blocks } => {
            let cfg = whisper_frontend(blocks);
            (Frontend::from_config(&cfg, &opts.models_dir, &device)?, cfg)
        }
        FrontendChoice::LogMel => (Frontend::LogMel, FrontendConfig::LogMel),
    };

    // Views: clean for everyone, plus perturbed copies of training clips. With the Whisper
    // front end one encoder pass gives both the head's frames and the pooled blocks the
    // unfamiliarity reference reads (for every view: a perturbed copy's pooled vector scores
    // its held-out unfamiliarity for the fusion fit).
    let pooled_input = match opts.frontend {
        FrontendChoice::Whisper { blocks } => Some((PooledInput::for_blocks(blocks), blocks)),
        FrontendChoice::LogMel => None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(opts.train.seed ^ 0x5eed_a0d1);
    let member_field_views = match (&pooled_input, opts.linear_member) {
        (Some(_), true) => opts.member_field_views,
        _ => 0,
    };
    let n_views = train_clips.len() * (1 + opts.augment_views + member_field_views)
        + val_clips.len()
        + shifted_sets.iter().map(|s| s.clips.len()).sum::<usize>()
        + outlier_set.as_ref().map_or(0, |o| o.clips.len());
    let mut encoded = 0;
    // One view: its evidence vector, frames and (Whisper) pooled blocks. It depends on its
    // clip only, so views are encoded on rayon's pool; what is random (the perturbations) is
    // drawn beforehand in clip order, so the views are those of one pass in order.
    let encode_one = |clip: &mut AnalysedClip| -> Result<EncodedView, AcousticError> {
        let evidence = evidence_vector(&baseline, &evidence_inputs, &mut clip.evidence);
        let (frames, pooled) = match &pooled_input {
            Some((input, head_block)) => {
                let mut want = input.blocks.clone();
                want.push(*head_block);
                let mut states =
                    frontend.block_frames(&clip.speech.samples, &clip.log_mel, &want, &device)?;
                let frames = states
                    .pop()
                    .expect("block_frames returns one state per block");
                let pooled = super::model::pooled_vector(&states, input, &evidence)?;
                (frames, Some(pooled))
            }
            None => (
                frontend.frames(&clip.speech.samples, &clip.log_mel, &device)?,
                None,
            ),
        };
        Ok((View { frames, evidence }, pooled))
    };
    let mut encode = |clips: Vec<&mut AnalysedClip>,
                      on_event: &mut dyn FnMut(TrainEvent)|
     -> Result<Vec<EncodedView>, AcousticError> {
        use rayon::prelude::*;
        let views = clips
            .into_par_iter()
            .map(encode_one)
            .collect::<Result<Vec<_>, _>>()?;
        encoded += views.len();
        on_event(TrainEvent::Encoded {
            done: encoded,
            total: n_views,
        });
        Ok(views)
    };
    let mut train_examples = Vec::with_capacity(train_clips.len());
    // Per training clip: the pooled vector of each view, and the evidence of each perturbed one.
    let mut train_pooled: Vec<Vec<Option<Vec<f32>>>> = Vec::with_capacity(train_clips.len());
    let mut shifted_evidence: Vec<Vec<Evidence>> = Vec::with_capacity(train_clips.len());
    // Per training clip: the pooled vectors of its field-chain copies (the linear member's
    // only). Their chains come from their own seed stream, so the perturbed copies are those
    // of a run without them; babble is a fixed pool of the training clips' own speech.
    let mut field_pooled: Vec<Vec<Vec<f32>>> = Vec::with_capacity(train_clips.len());
    let mut field_rng = ChaCha8Rng::seed_from_u64(opts.train.seed ^ 0xf1e1_d0c0_b1e5);
    let babble = if member_field_views > 0 {
        babble_pool(&train_clips)
    } else {
        Vec::new()
    };
    let babble: Vec<&[f32]> = babble.iter().map(|b| b.as_slice()).collect();
    // A chunk of training clips at a time, so only a chunk's perturbed copies are held.
    for chunk in train_clips.chunks_mut(ENCODE_CHUNK) {
        let mut copies: Vec<Vec<AnalysedClip>> = Vec::with_capacity(chunk.len());
        let mut field_copies: Vec<Vec<AnalysedClip>> = Vec::with_capacity(chunk.len());
        for a in chunk.iter() {
            let mut views = Vec::with_capacity(opts.augment_views);
            for _ in 0..opts.augment_views {
                let perturbed = augment::perturb(&a.clip.speech.samples, TARGET_RATE, &mut rng);
                let audio = Audio {
                    samples: perturbed,
                    sample_rate: TARGET_RATE,
                    source: a.clip.speech.source.clone(),
                    ..Audio::default()
                };
                // A perturbation can make a clip unusable (e.g. all noise); the clean view
                // stays.
                if let Ok(c) = an.analyse_audio(audio) {
                    views.push(c);
                }
            }
            copies.push(views);
            let mut views = Vec::with_capacity(member_field_views);
            if member_field_views > 0 {
                let whole = whole_recording(&train_m.rows[a.row].path, &a.clip, &an);
                for _ in 0..member_field_views {
                    let copy = FieldChain::random(&mut field_rng).apply(
                        &whole,
                        TARGET_RATE,
                        &babble,
                        &mut field_rng,
                    );
                    // A chain can leave no speech: that copy is left out.
                    if let Ok(c) = an.analyse_audio(Audio::new(copy, TARGET_RATE)) {
                        views.push(c);
                    }
                }
            }
            field_copies.push(views);
        }
        let labels: Vec<usize> = chunk
            .iter()
            .map(|a| label_of(&opts.labels, &train_m.rows[a.row].label))
            .collect();
        let clips: Vec<&mut AnalysedClip> = chunk
            .iter_mut()
            .map(|a| &mut a.clip)
            .chain(copies.iter_mut().flatten())
            .chain(field_copies.iter_mut().flatten())
            .collect();
        let mut results = encode(clips, on_event)?.into_iter();
        let clean: Vec<_> = results.by_ref().take(chunk.len()).collect();
        for ((view, pooled), (label, copies)) in
            clean.into_iter().zip(labels.into_iter().zip(copies))
        {
            let (mut views, mut pooled_views) = (vec![view], vec![pooled]);
            for _ in 0..copies.len() {
                let (view, pooled) = results.next().expect("one result per encoded view");
                views.push(view);
                pooled_views.push(pooled);
            }
            train_examples.push(Example { views, label });
            train_pooled.push(pooled_views);
            // The copies' evidence, with z-scores set by their encoding.
            shifted_evidence.push(copies.into_iter().map(|c| c.evidence).collect());
        }
        for copies in &field_copies {
            // Only the pooled vector is kept (the heads do not train on these copies).
            let pooled: Vec<Vec<f32>> = (0..copies.len())
                .filter_map(|_| results.next().expect("one result per encoded view").1)
                .collect();
            field_pooled.push(pooled);
        }
    }
    let val_labels: Vec<usize> = val_clips
        .iter()
        .map(|a| label_of(&opts.labels, &val_m.rows[a.row].label))
        .collect();
    let val_views = encode(
        val_clips.iter_mut().map(|a| &mut a.clip).collect(),
        on_event,
    )?;
    let (val_examples, val_pooled): (Vec<Example>, Vec<Option<Vec<f32>>>) = val_views
        .into_iter()
        .zip(val_labels)
        .map(single_view)
        .unzip();
    let mut shifted_views = Vec::with_capacity(shifted_sets.len());
    for set in shifted_sets.iter_mut() {
        let labels: Vec<usize> = set
            .clips
            .iter()
            .map(|a| label_of(&opts.labels, &set.manifest.rows[a.row].label))
            .collect();
        let views = encode(
            set.clips.iter_mut().map(|a| &mut a.clip).collect(),
            on_event,
        )?;
        shifted_views.push(
            views
                .into_iter()
                .zip(labels)
                .map(single_view)
                .collect::<Vec<_>>(),
        );
    }
    // Outlier clips: their clean view, with their speaker.
    let mut outlier_views: Vec<(Option<String>, View)> = Vec::new();
    let mut outlier_pooled: Vec<(Option<String>, Vec<f32>)> = Vec::new();
    if let Some(set) = outlier_set.as_mut() {
        let speakers: Vec<Option<String>> = set
            .clips
            .iter()
            .map(|a| set.manifest.rows[a.row].speaker.clone())
            .collect();
        let views = encode(
            set.clips.iter_mut().map(|a| &mut a.clip).collect(),
            on_event,
        )?;
        for (speaker, (view, pooled)) in speakers.into_iter().zip(views) {
            if let Some(x) = pooled {
                outlier_pooled.push((speaker.clone(), x));
            }
            outlier_views.push((speaker, view));
        }
    }

    lap("encode", &mut phase_seconds);

    // Train the head.
    let head_cfg = HeadConfig {
        input_dim: frontend.dim(feature_cfg.n_mels),
        hidden: opts.hidden,
        evidence_dim: evidence_inputs.len(),
        n_labels: opts.labels.len(),
        dropout: opts.dropout,
    };
    // The main head and, for the training clips, out-of-fold heads (refinement needs
    // predictions on clips whose speaker the model never saw; training-set predictions are
    // near perfect), trained at once.
    let folds = fold_plans(opts, &train_m, &train_clips, on_event)?;
    let mut jobs = vec![HeadJob {
        tc: opts.train.clone(),
        train: train_examples.clone(),
        val: &val_examples,
        outliers: allowed_outliers(&outlier_views, &val_speakers),
    }];
    for plan in &folds {
        // Neither the validation speakers' outlier clips nor this fold's held-out speakers'.
        let held_out = [val_speakers.as_slice(), plan.val_speakers.as_slice()].concat();
        jobs.push(HeadJob {
            tc: TrainConfig {
                seed: opts.train.seed.wrapping_add(1 + plan.fold as u64),
                ..opts.train.clone()
            },
            train: plan
                .fit
                .iter()
                .map(|&i| train_examples[i].clone())
                .collect(),
            val: &val_examples,
            outliers: allowed_outliers(&outlier_views, &held_out),
        });
    }
    let n_folds = folds.len();
    let mut heads = train_heads(&head_cfg, &jobs, &device, &mut |job, s| {
        if job == 0 {
            on_event(TrainEvent::Epoch(s));
        } else if s.epoch == 1 {
            on_event(TrainEvent::Fold {
                fold: job,
                folds: n_folds,
            });
        }
    })?;
    drop(jobs);
    let trained = heads.remove(0);
    let mut fold_heads = out_of_fold_predictions(&folds, heads, &train_examples, &device)?;

    lap("heads", &mut phase_seconds);

    // The mixture's linear member, on the pooled vectors of the same encoder pass.
    let member = match (&pooled_input, opts.linear_member) {
        (Some((input, _)), true) => {
            let labels: Vec<usize> = train_examples.iter().map(|e| e.label).collect();
            let m = fit_linear_member(
                opts,
                &folds,
                &train_pooled,
                &field_pooled,
                &labels,
                &outlier_pooled,
                &val_speakers,
                input,
                evidence_inputs.len(),
            )?;
            if m.is_none() {
                on_event(TrainEvent::Note(
                    "no linear member: it needs speaker folds of the training part (at least 2 speakers and --oof-folds 2 or more)".into(),
                ));
            }
            m
        }
        _ => None,
    };
    lap("linear_member", &mut phase_seconds);

    // The served model: the main head, or the main head and the fold heads combined.
    let members: Vec<&Trained> = match opts.ensemble {
        Some(_) => std::iter::once(&trained)
            .chain(fold_heads.heads.iter().map(|(_, t)| t))
            .collect(),
        None => vec![&trained],
    };
    let combine = opts.ensemble.unwrap_or(EnsembleCombine::MeanLogits);

    // Calibration and routing on held-out predictions, each from members that never trained
    // on the clip: validation clips from the whole served model (no member trained on them;
    // they only chose each member's stopping epoch), training clips from the one fold head
    // that held their speaker out (every other member trained on them).
    let val_labels: Vec<usize> = val_examples.iter().map(|e| e.label).collect();
    let val_per_head = members
        .iter()
        .map(|t| predict_logits(&t.head, &val_examples, 32, &device))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let mut val_logits = combine_logits(&val_per_head, combine);
    let held = |val_logits: &[Vec<f32>], oof: &[Option<Vec<f32>>]| {
        let mut logits = val_logits.to_vec();
        let mut labels = val_labels.clone();
        for (l, e) in oof.iter().zip(&train_examples) {
            if let Some(l) = l {
                logits.push(l.clone());
                labels.push(e.label);
            }
        }
        (logits, labels)
    };
    let (mut held_logits, held_labels) = held(&val_logits, &fold_heads.oof);
    let mut temperature = fit_temperature(&held_logits, &held_labels);
    // A mixture: every held-out prediction becomes the mixture's (the heads at the temperature
    // just fitted, the member at its own), whose logits are calibrated at temperature 1.
    let linear_member = match &member {
        Some(m) => {
            let lm = LinearMember {
                linear: m.cfg.clone(),
                heads_temperature: temperature,
                linear_temperature: m.temperature,
                fitted_on: m.fitted_on.clone(),
                field_views: member_field_views,
            };
            val_logits = mix_clips(val_logits, Some((&m.head, &lm)), &val_pooled)
                .ok_or_else(|| no_pooled(&val_m.path))?;
            for (i, oof) in fold_heads.oof.iter_mut().enumerate() {
                *oof = match (oof.take(), &m.oof[i][0]) {
                    (Some(h), Some(l)) => Some(super::model::mix_logits(&h, l, &lm)),
                    _ => None,
                };
                let heads = std::mem::take(&mut fold_heads.shifted[i]);
                fold_heads.shifted[i] = heads
                    .iter()
                    .enumerate()
                    .filter_map(|(k, h)| {
                        m.oof[i]
                            .get(k + 1)
                            .and_then(|l| l.as_ref())
                            .map(|l| super::model::mix_logits(h, l, &lm))
                    })
                    .collect();
            }
            held_logits = held(&val_logits, &fold_heads.oof).0;
            temperature = 1.0;
            Some(lm)
        }
        None => None,
    };
    let oof_logits = &fold_heads.oof;
    let probs_of = |l: &Vec<f32>| softmax_t(l, temperature);
    let val_probs: Vec<Vec<f32>> = val_logits.iter().map(probs_of).collect();
    let oof_probs: Vec<Option<Vec<f32>>> = oof_logits
        .iter()
        .map(|l| l.as_ref().map(probs_of))
        .collect();
    let held_probs: Vec<Vec<f32>> = held_logits.iter().map(probs_of).collect();
    let n_oof = held_probs.len() - val_probs.len();
    let mut routing = fit_routing(&held_probs, opts.route_fraction, &val_speakers);
    if n_oof > 0 {
        routing.fitted_on = format!(
            "{} validation predictions (speakers {}) and {} out-of-fold predictions ({} speaker folds of the training part)",
            val_probs.len(),
            val_speakers.join(" "),
            n_oof,
            opts.oof_folds
        );
    }
    // Unfamiliarity reference on the clean clips' pooled encoder blocks (Whisper front end;
    // pooled when their views were encoded).
    let unfamiliar = match pooled_input {
        Some((input, _)) => {
            let rows: Vec<Vec<f32>> = train_pooled
                .iter()
                .map(|views| views[0].clone())
                .chain(val_pooled.iter().cloned())
                .collect::<Option<_>>()
                .expect("every view of a Whisper front end is pooled");
            // Held out: each speaker fold of the training part, and the validation speakers.
            let n_train = train_clips.len();
            let mut held: Vec<Vec<usize>> =
                match speaker_folds(&train_m, opts.oof_folds.max(2), opts.train.seed) {
                    Ok(folds) => in_positions(&folds, &train_m, &train_clips)
                        .into_iter()
                        .map(|(_, held)| held)
                        .collect(),
                    Err(_) => Vec::new(),
                };
            held.push((n_train..rows.len()).collect());
            let mut fitted = fit_held_out(
                &rows,
                &held,
                UNFAMILIARITY_COMPONENTS,
                UNFAMILIAR_FRACTION,
                format!("{} clean clips (training and validation parts)", rows.len()),
            )?;
            fitted.model.cfg.input = Some(input);
            routing.unfamiliarity_threshold = fitted.threshold;
            Some((fitted, rows))
        }
        None => None,
    };
    lap("unfamiliarity", &mut phase_seconds);

    // Held-out predictions for the reasoning stage's fusion: validation clips (whole model),
    // training clips and their perturbed copies (the fold head that held their speaker out).
    let held_unfamiliarity = |row: usize, x: Option<&Vec<f32>>| match (&unfamiliar, x) {
        (Some((f, _)), Some(x)) => f.held_out_score(row, x),
        _ => None,
    };
    let n_train = train_clips.len();
    let mut held_out = Vec::new();
    for (j, a) in val_clips.iter().enumerate() {
        held_out.push(HeldOutPrediction {
            probs: crate::Probs::new(&opts.labels, val_probs[j].clone()),
            evidence: a.clip.evidence.clone(),
            unfamiliarity: held_unfamiliarity(n_train + j, val_pooled[j].as_ref()),
            label: val_examples[j].label,
            group: "val".into(),
            condition: HeldOutCondition::Clean,
        });
    }
    for (i, a) in train_clips.iter().enumerate() {
        let (Some(probs), Some(fold)) = (&oof_probs[i], fold_heads.fold_of[i]) else {
            continue;
        };
        let group = format!("fold{}", fold + 1);
        let label = train_examples[i].label;
        held_out.push(HeldOutPrediction {
            probs: crate::Probs::new(&opts.labels, probs.clone()),
            evidence: a.clip.evidence.clone(),
            unfamiliarity: held_unfamiliarity(i, train_pooled[i][0].as_ref()),
            label,
            group: group.clone(),
            condition: HeldOutCondition::Clean,
        });
        for (k, logits) in fold_heads.shifted[i].iter().enumerate() {
            held_out.push(HeldOutPrediction {
                probs: crate::Probs::new(&opts.labels, probs_of(logits)),
                evidence: shifted_evidence[i][k].clone(),
                unfamiliarity: held_unfamiliarity(i, train_pooled[i][k + 1].as_ref()),
                label,
                group: group.clone(),
                condition: HeldOutCondition::Perturbed,
            });
        }
    }
    // Clips of other corpora: predicted by the served model (no member trained on them).
    for (set, views) in shifted_sets.iter().zip(&shifted_views) {
        let examples: Vec<Example> = views.iter().map(|(e, _)| e.clone()).collect();
        let per_head = members
            .iter()
            .map(|t| predict_logits(&t.head, &examples, 32, &device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pooled: Vec<Option<Vec<f32>>> = views.iter().map(|(_, p)| p.clone()).collect();
        let mixture = member.as_ref().zip(linear_member.as_ref());
        let logits = mix_clips(
            combine_logits(&per_head, combine),
            mixture.map(|(m, lm)| (&m.head, lm)),
            &pooled,
        )
        .ok_or_else(|| no_pooled(&set.manifest.path))?;
        for ((a, (e, pooled)), l) in set.clips.iter().zip(views).zip(&logits) {
            held_out.push(HeldOutPrediction {
                probs: crate::Probs::new(&opts.labels, probs_of(l)),
                evidence: a.clip.evidence.clone(),
                unfamiliarity: match (&unfamiliar, pooled) {
                    (Some((f, _)), Some(x)) => Some(f.model.score(x)),
                    _ => None,
                },
                label: e.label,
                group: format!("corpus:{}", set.name),
                condition: HeldOutCondition::OtherCorpus,
            });
        }
    }
    let unfamiliar = unfamiliar.map(|(f, _)| f.model);

    let ensemble = (members.len() > 1).then(|| {
        let conf = crate::metrics::Confusion::new(
            opts.labels.len(),
            val_labels.iter().copied().zip(val_logits.iter().map(|l| argmax(l))),
        );
        EnsembleConfig {
            members: std::iter::once(String::new())
                .chain(fold_heads.heads.iter().map(|(p, _)| p.clone()))
                .collect(),
            combine,
            calibrated_on: format!(
                "temperature and routing: {} validation clips predicted by all {} heads, {} training clips each predicted only by the fold head that held its speaker out",
                val_logits.len(),
                members.len(),
                n_oof
            ),
            val_accuracy: Some(conf.accuracy()),
            val_macro_f1: Some(conf.macro_f1()),
        }
    });
    let best = &trained.history[trained.best_epoch - 1];
    let metrics = TrainingMetrics {
        n_train: train_examples.len(),
        n_val: val_examples.len(),
        val_speakers,
        best_epoch: trained.best_epoch,
        val_accuracy: best.val_accuracy,
        val_macro_f1: best.val_macro_f1,
        ece_before: ece_at(&val_logits, &val_labels, 1.0),
        ece_after: ece_at(&val_logits, &val_labels, temperature),
        history: trained.history.clone(),
        seconds: started.elapsed().as_secs_f64(),
        phase_seconds,
    };
    let meta = ModelMeta {
        format_version: model_dir::FORMAT_VERSION,
        name: model_name(&opts.out),
        camxuc_version: env!("CARGO_PKG_VERSION").into(),
        labels: opts.labels.clone(),
        frontend: frontend_cfg,
        features: feature_cfg,
        head: head_cfg,
        evidence_inputs,
        evidence_baseline: baseline,
        temperature,
        metrics,
        seed: opts.train.seed,
        data_hash,
        train_manifest: opts.manifest.display().to_string(),
        default_llm: catalog::DEFAULT_LLM.into(),
        ensemble,
        linear: None,
        unfamiliarity: unfamiliar.as_ref().map(|u| u.cfg.clone()),
        adaptation: None,
        outlier_exposure: outlier_set
            .as_ref()
            .map(|o| o.record(opts.train.outlier_weight)),
        head_training: Some(opts.train.clone()),
        linear_member,
    };

    // Write the directory.
    let weights = opts.out.join(model_dir::WEIGHTS_FILE);
    let mut prefixed: Vec<(&str, &Trained)> = vec![("", &trained)];
    if meta.ensemble.is_some() {
        prefixed.extend(fold_heads.heads.iter().map(|(p, t)| (p.as_str(), t)));
    }
    let mut extra = match &unfamiliar {
        Some(u) => u.tensors(super::model::UNFAMILIARITY_PREFIX)?,
        None => Vec::new(),
    };
    if let Some(m) = &member {
        extra.extend(m.head.tensors(super::model::LINEAR_MEMBER_PREFIX)?);
    }
    save_heads(&weights, &prefixed, extra)?;
    model_dir::write_meta(&opts.out, &meta)?;
    model_dir::write_json(&opts.out.join(model_dir::ROUTING_FILE), &routing)?;
    write_evidence(
        &opts.out,
        &opts.labels,
        &train_m,
        &train_clips,
        &val_m,
        &val_clips,
        &val_probs,
        &oof_probs,
    )?;
    Ok(TrainReport {
        dir: opts.out.clone(),
        meta,
        routing,
        skipped,
        held_out,
    })
}

/// The analysed clips of one `--shifted-manifest`.
pub(crate) struct ShiftedSet {
    /// The corpus's name: the manifest's folder (or file stem).
    pub(crate) name: String,
    pub(crate) manifest: Manifest,
    pub(crate) clips: Vec<Analysed>,
}

/// Load and analyse every shifted manifest: a manifest that cannot be read, or names labels
/// outside the model's, is an error before any training; a clip that cannot be analysed is
/// skipped with its reason, like a training clip.
pub(crate) fn analyse_shifted(
    opts: &TrainOptions,
    an: &mut ClipAnalyser,
    skipped: &mut Vec<String>,
) -> Result<Vec<ShiftedSet>, AcousticError> {
    let mut sets = Vec::with_capacity(opts.shifted.len());
    for path in &opts.shifted {
        let manifest = Manifest::load(path, &opts.labels)?;
        let rows: Vec<usize> = (0..manifest.rows.len()).collect();
        let clips = analyse_rows(&manifest, &rows, an, skipped, &mut |_| {});
        let name = path
            .parent()
            .and_then(|p| p.file_name())
            .or_else(|| path.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "shifted".into());
        sets.push(ShiftedSet {
            name,
            manifest,
            clips,
        });
    }
    Ok(sets)
}

/// The analysed clips of `--outliers`.
pub(crate) struct OutlierSet {
    pub(crate) manifest: Manifest,
    pub(crate) clips: Vec<Analysed>,
}

impl OutlierSet {
    /// What model.json records.
    pub(crate) fn record(&self, weight: f32) -> model_dir::OutlierExposure {
        model_dir::OutlierExposure {
            manifest: self.manifest.path.display().to_string(),
            clips: self.clips.len(),
            weight,
        }
    }
}

/// Load and analyse the outlier manifest of `opts` (none: `Ok(None)`). A manifest that cannot
/// be read, names missing files, or leaves no usable clip is an error before any training; a
/// clip that cannot be analysed is skipped with its reason.
pub(crate) fn analyse_outliers(
    opts: &TrainOptions,
    an: &mut ClipAnalyser,
    skipped: &mut Vec<String>,
) -> Result<Option<OutlierSet>, AcousticError> {
    let Some(path) = &opts.outliers else {
        return Ok(None);
    };
    if !opts.train.outlier_weight.is_finite() || opts.train.outlier_weight <= 0.0 {
        return Err(AcousticError::Training {
            path: path.clone(),
            message: format!(
                "outlier weight must be above 0 (got {})",
                opts.train.outlier_weight
            ),
        });
    }
    let manifest = Manifest::load_unlabelled(path)?;
    manifest.require_files()?;
    let rows: Vec<usize> = (0..manifest.rows.len()).collect();
    let before = skipped.len();
    let clips = analyse_rows(&manifest, &rows, an, skipped, &mut |_| {});
    if clips.is_empty() {
        return Err(AcousticError::Training {
            path: path.clone(),
            message: format!(
                "no usable outlier clip among its {} rows ({} could not be analysed{})",
                rows.len(),
                skipped.len() - before,
                skipped[before..]
                    .first()
                    .map(|e| format!("; the first: {e}"))
                    .unwrap_or_default()
            ),
        });
    }
    Ok(Some(OutlierSet { manifest, clips }))
}

/// Whether an outlier clip of `speaker` may train a model that holds `held_out` out: not when
/// the speaker is one of them (a clip without a speaker always may).
fn outlier_allowed(speaker: Option<&str>, held_out: &[String]) -> bool {
    speaker.is_none_or(|s| !held_out.iter().any(|h| h == s))
}

/// The encoded outlier clips (each with its speaker) that may train a model holding
/// `held_out` out ([`outlier_allowed`]).
pub(crate) fn allowed_outliers<T: Clone>(
    outliers: &[(Option<String>, T)],
    held_out: &[String],
) -> Vec<T> {
    outliers
        .iter()
        .filter(|(s, _)| outlier_allowed(s.as_deref(), held_out))
        .map(|(_, x)| x.clone())
        .collect()
}

/// A clip of `manifest` without the pooled vector a linear member reads (only a front end
/// other than Whisper lacks it, and then no member is trained).
fn no_pooled(manifest: &Path) -> AcousticError {
    AcousticError::Training {
        path: manifest.to_path_buf(),
        message: "a clip has no pooled encoder vector for the linear member".into(),
    }
}

/// A mixture's linear member, fitted on the training part's pooled vectors (every view).
struct MemberFit {
    head: LinearHead,
    cfg: LinearConfig,
    temperature: f32,
    /// Per training clip, per view (clean first): logits from the fit that held its speaker
    /// out at the chosen penalty (`None` for a clip in no fold).
    oof: Vec<Vec<Option<Vec<f32>>>>,
    fitted_on: String,
}

/// Fit the linear member: the L2 penalty (the linear classifier's path, `LinearChoice`) and
/// its temperature by the speaker folds' held-out views (clean, perturbed and field-chain
/// copies: `field[i]` are clip i's field-chain copies' pooled vectors, which train and score
/// the member but have no heads' counterpart), then the fit on every training view at that
/// penalty, with outlier exposure as the heads have it (no
/// validation speaker's outlier clip; per fold, none of its held-out speakers' either).
/// `None` without folds.
#[allow(clippy::too_many_arguments)]
fn fit_linear_member(
    opts: &TrainOptions,
    folds: &[FoldPlan],
    pooled: &[Vec<Option<Vec<f32>>>],
    field: &[Vec<Vec<f32>>],
    labels: &[usize],
    outliers: &[(Option<String>, Vec<f32>)],
    val_speakers: &[String],
    input: &PooledInput,
    evidence_dim: usize,
) -> Result<Option<MemberFit>, AcousticError> {
    if folds.is_empty() {
        return Ok(None);
    }
    let lambdas = super::train_linear::LinearChoice::default().lambdas;
    let n_labels = opts.labels.len();
    let rows_of = |ix: &[usize]| -> (Vec<Vec<f32>>, Vec<usize>) {
        ix.iter()
            .flat_map(|&i| {
                pooled[i]
                    .iter()
                    .flatten()
                    .chain(&field[i])
                    .map(move |x| (x.clone(), labels[i]))
            })
            .unzip()
    };
    // oof[l][i][k]: penalty l, clip i, view k.
    let mut oof: Vec<Vec<Vec<Option<Vec<f32>>>>> =
        vec![pooled.iter().map(|v| vec![None; v.len()]).collect(); lambdas.len()];
    // field_oof[l][i]: penalty l, clip i, its field-chain copies (scoring only).
    let mut field_oof: Vec<Vec<Vec<Vec<f32>>>> =
        vec![vec![Vec::new(); pooled.len()]; lambdas.len()];
    // The folds' fits are independent: on rayon's pool (each is one thread's work; the
    // results are the same in any order).
    use rayon::prelude::*;
    let paths = folds
        .par_iter()
        .map(|plan| {
            let (xs, ys) = rows_of(&plan.fit);
            let held_out = [val_speakers, plan.val_speakers.as_slice()].concat();
            let out = allowed_outliers(outliers, &held_out);
            let base = FitOptions {
                outliers: &out,
                outlier_weight: opts.train.outlier_weight as f64,
                ..FitOptions::default()
            };
            fit_path(&xs, &ys, n_labels, None, &lambdas, &base)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    for (plan, path) in folds.iter().zip(paths) {
        for &i in &plan.held {
            for (k, x) in pooled[i].iter().enumerate() {
                if let Some(x) = x {
                    for (l, h) in path.iter().enumerate() {
                        oof[l][i][k] = Some(h.logits(x));
                    }
                }
            }
            for (l, h) in path.iter().enumerate() {
                field_oof[l][i] = field[i].iter().map(|x| h.logits(x)).collect();
            }
        }
    }
    let held = |l: usize| -> (Vec<Vec<f32>>, Vec<usize>) {
        oof[l]
            .iter()
            .zip(&field_oof[l])
            .enumerate()
            .flat_map(|(i, (views, copies))| {
                views
                    .iter()
                    .flatten()
                    .chain(copies)
                    .map(move |x| (x.clone(), labels[i]))
            })
            .unzip()
    };
    let mut best = 0;
    let mut best_nll = f64::INFINITY;
    for l in 0..lambdas.len() {
        let (lg, y) = held(l);
        let nll = mean_nll(&lg, &y, fit_temperature(&lg, &y));
        if nll < best_nll {
            best_nll = nll;
            best = l;
        }
    }
    let (lg, y) = held(best);
    let temperature = fit_temperature(&lg, &y);
    let all: Vec<usize> = (0..pooled.len()).collect();
    let (xs, ys) = rows_of(&all);
    let out = allowed_outliers(outliers, val_speakers);
    let base = FitOptions {
        outliers: &out,
        outlier_weight: opts.train.outlier_weight as f64,
        ..FitOptions::default()
    };
    let Some(head) = fit_path(&xs, &ys, n_labels, None, &lambdas[..=best], &base)?.pop() else {
        return Ok(None);
    };
    let evidence_dim = if input.evidence { evidence_dim } else { 0 };
    let cfg = LinearConfig {
        blocks: input.blocks.clone(),
        std: true,
        utterance_norm: input.utterance_norm,
        evidence_dim,
        lambda: lambdas[best],
        pooled_dim: head.input_dim() - evidence_dim,
        n_labels,
    };
    Ok(Some(MemberFit {
        head,
        cfg,
        temperature,
        oof: oof.swap_remove(best),
        fitted_on: format!(
            "penalty {} and temperature {temperature:.3} by the held-out NLL of {} views ({} speaker folds of the training part; clean, perturbed and {} field-chain copies per clip), then fitted on all {} training views",
            lambdas[best],
            y.len(),
            folds.len(),
            field.iter().map(Vec::len).max().unwrap_or(0),
            xs.len()
        ),
    }))
}

/// The fold heads (each with its tensor prefix) and the out-of-fold logits of the training
/// clips, in `train_examples` order (`None` for a clip in no fold, or for all when folds are
/// off or there are too few speakers). Each fold's head is trained on the other folds with the
/// same configuration and early stopping on the validation part as the main head, then
/// predicts its held-out speakers' clean views.
struct FoldHeads {
    heads: Vec<(String, Trained)>,
    oof: Vec<Option<Vec<f32>>>,
    /// The fold that held each training clip out.
    fold_of: Vec<Option<usize>>,
    /// The fold head's logits for each perturbed view of each held-out clip (views 1..).
    shifted: Vec<Vec<Vec<f32>>>,
}

/// One encoded view and, with the Whisper front end, its pooled encoder blocks.
type EncodedView = (View, Option<Vec<f32>>);

/// A clip of one (clean) view as an example, with its pooled blocks.
fn single_view(((view, pooled), label): (EncodedView, usize)) -> (Example, Option<Vec<f32>>) {
    (
        Example {
            views: vec![view],
            label,
        },
        pooled,
    )
}

/// Training clips whose perturbed copies are made and encoded together (bounds the memory
/// of copies in flight; large enough to keep the pool busy).
const ENCODE_CHUNK: usize = 16;

/// One out-of-fold head's part of the training clips (positions in the training examples).
struct FoldPlan {
    /// Index of the speaker fold (names the head `fold{fold + 1}` and offsets its seed).
    fold: usize,
    fit: Vec<usize>,
    held: Vec<usize>,
    val_speakers: Vec<String>,
}

/// Speaker folds of the training part for the out-of-fold heads; none with fewer than two
/// speakers (said in a note) or with `--oof-folds` below 2. A fold whose fitting or held-out
/// part has no usable clip is left out.
fn fold_plans(
    opts: &TrainOptions,
    train_m: &Manifest,
    train_clips: &[Analysed],
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<Vec<FoldPlan>, AcousticError> {
    let n_speakers = train_m.speakers().len();
    let k = opts.oof_folds.min(n_speakers);
    if k < 2 {
        if opts.oof_folds >= 2 {
            on_event(TrainEvent::Note(format!(
                "no out-of-fold predictions: the training part has {n_speakers} speaker(s)"
            )));
        }
        return Ok(Vec::new());
    }
    let folds = speaker_folds(train_m, k, opts.train.seed)?;
    Ok(in_positions(&folds, train_m, train_clips)
        .into_iter()
        .zip(&folds)
        .enumerate()
        .map(|(f, ((fit, held), fold))| FoldPlan {
            fold: f,
            fit,
            held,
            val_speakers: fold.val_speakers.clone(),
        })
        .filter(|p| !p.fit.is_empty() && !p.held.is_empty())
        .collect())
}

/// Each speaker fold's (fit, held) manifest rows as positions in the training clips (clips
/// that failed analysis have none, so a fold may come out empty).
fn in_positions(
    folds: &[Split],
    train_m: &Manifest,
    train_clips: &[Analysed],
) -> Vec<(Vec<usize>, Vec<usize>)> {
    let mut position = vec![None; train_m.rows.len()];
    for (i, a) in train_clips.iter().enumerate() {
        position[a.row] = Some(i);
    }
    let pick =
        |rows: &[usize]| -> Vec<usize> { rows.iter().filter_map(|&r| position[r]).collect() };
    folds
        .iter()
        .map(|f| (pick(&f.train), pick(&f.val)))
        .collect()
}

/// The fold heads' logits on the clips (and perturbed copies) their fold held out.
fn out_of_fold_predictions(
    folds: &[FoldPlan],
    heads: Vec<Trained>,
    train_examples: &[Example],
    device: &Device,
) -> Result<FoldHeads, AcousticError> {
    let mut out = FoldHeads {
        heads: Vec::new(),
        oof: vec![None; train_examples.len()],
        fold_of: vec![None; train_examples.len()],
        shifted: vec![Vec::new(); train_examples.len()],
    };
    for (plan, trained) in folds.iter().zip(heads) {
        let held: Vec<Example> = plan
            .held
            .iter()
            .map(|&i| train_examples[i].clone())
            .collect();
        let logits = predict_logits(&trained.head, &held, 32, device)?;
        for (&i, l) in plan.held.iter().zip(logits) {
            out.oof[i] = Some(l);
            out.fold_of[i] = Some(plan.fold);
        }
        // Their perturbed copies, one view each.
        let copies: Vec<(usize, Example)> = plan
            .held
            .iter()
            .flat_map(|&i| {
                let e = &train_examples[i];
                e.views[1..].iter().map(move |v| {
                    (
                        i,
                        Example {
                            views: vec![v.clone()],
                            label: e.label,
                        },
                    )
                })
            })
            .collect();
        let examples: Vec<Example> = copies.iter().map(|(_, e)| e.clone()).collect();
        let logits = predict_logits(&trained.head, &examples, 32, device)?;
        for ((i, _), l) in copies.iter().zip(logits) {
            out.shifted[*i].push(l);
        }
        out.heads.push((format!("fold{}", plan.fold + 1), trained));
    }
    Ok(out)
}

/// Write the heads' weights into one safetensors file, each head's tensors under its prefix
/// ("" keeps the names unprefixed, as a single-head directory has them).
fn save_heads(
    path: &Path,
    heads: &[(&str, &Trained)],
    extra: Vec<(String, candle_core::Tensor)>,
) -> Result<(), AcousticError> {
    let fail = |message: String| AcousticError::Training {
        path: path.into(),
        message,
    };
    let mut tensors = std::collections::HashMap::new();
    for (prefix, t) in heads {
        let data = t
            .varmap
            .data()
            .lock()
            .map_err(|_| fail("var map lock poisoned".into()))?;
        for (name, var) in data.iter() {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            tensors.insert(key, var.as_tensor().clone());
        }
    }
    tensors.extend(extra);
    candle_core::safetensors::save(&tensors, path).map_err(|e| AcousticError::Tensors {
        path: path.into(),
        source: Box::new(e),
    })
}

/// The Whisper front end every trainer writes into model.json: the catalogued Whisper base,
/// stopped after `blocks` blocks, clips levelled to [`WHISPER_LEVEL_DBFS`].
pub(crate) fn whisper_frontend(blocks: usize) -> FrontendConfig {
    FrontendConfig::Whisper {
        model: catalog::WHISPER_BASE.into(),
        sha256: crate::acoustic::whisper::WHISPER_BASE_SHA256.into(),
        blocks,
        level_dbfs: WHISPER_LEVEL_DBFS,
    }
}

/// A model's name in model.json: its directory's name.
pub(crate) fn model_name(out: &Path) -> String {
    out.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Label index of a manifest label (validated against the label set when the manifest loaded).
pub(crate) fn label_of(labels: &LabelSet, label: &str) -> usize {
    labels.index_of(label).unwrap_or(0)
}

/// The threshold below which `route_fraction` of the validation clips' top probability falls.
pub fn fit_routing(
    probs: &[Vec<f32>],
    route_fraction: f32,
    val_speakers: &[String],
) -> RoutingConfig {
    let mut top: Vec<f32> = probs
        .iter()
        .map(|p| p.iter().fold(0f32, |a, &b| a.max(b)))
        .collect();
    top.sort_by(f32::total_cmp);
    let k = ((route_fraction.clamp(0.0, 1.0) * top.len() as f32).round() as usize).min(top.len());
    let threshold = match k {
        0 => 0.0,
        k if k >= top.len() => 1.01,
        // Halfway between the last routed and the first kept clip.
        k => (top[k - 1] + top[k]) / 2.0,
    };
    RoutingConfig {
        threshold,
        margin: 0.0,
        unfamiliarity_threshold: None,
        target_route_fraction: route_fraction,
        fitted_on: format!(
            "validation predictions: {} clips, speakers {}",
            probs.len(),
            val_speakers.join(" ")
        ),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn write_evidence(
    dir: &Path,
    labels: &LabelSet,
    train_m: &Manifest,
    train: &[Analysed],
    val_m: &Manifest,
    val: &[Analysed],
    val_probs: &[Vec<f32>],
    oof_probs: &[Option<Vec<f32>>],
) -> Result<(), AcousticError> {
    let path = dir.join(model_dir::TRAIN_EVIDENCE_FILE);
    let io = |source: std::io::Error| model_dir::ModelDirError::Fs {
        path: path.clone(),
        source,
    };
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
    let parts = [(train_m, train, "train"), (val_m, val, "val")];
    for (m, clips, split) in parts {
        for (i, a) in clips.iter().enumerate() {
            let row = &m.rows[a.row];
            let probs = if split == "val" {
                Some(val_probs[i].clone())
            } else {
                oof_probs.get(i).cloned().flatten()
            }
            .map(|p| crate::Probs::new(labels, p));
            let rec = model_dir::TrainEvidence {
                path: row.path.display().to_string(),
                label: row.label.clone(),
                speaker: row.speaker.clone(),
                split: split.into(),
                evidence: a.clip.evidence.clone(),
                probs,
            };
            let line = serde_json::to_string(&rec).map_err(|e| io(e.into()))?;
            writeln!(w, "{line}").map_err(io)?;
        }
    }
    Ok(w.flush().map_err(io)?)
}

/// The evidence features a head reads beside the frames: the gain-invariant ones `baseline`
/// has statistics for (a level feature would let the head learn the recording's gain).
pub fn evidence_inputs(baseline: &Baseline) -> Vec<String> {
    FEATURES
        .iter()
        .filter(|f| f.gain_invariant && baseline.features.contains_key(f.name))
        .map(|f| f.name.to_string())
        .collect()
}

/// The compute device: CPU, or the first GPU when built with `cuda` / `metal`.
///
/// Chosen once per process and shared: every `Device::new_cuda` call opens a new device
/// with its own id, and candle refuses to mix tensors of two ids (a model loaded on one and
/// a batch made on another). A GPU build says on stderr which device it got, because a
/// missing or hidden GPU (`CUDA_VISIBLE_DEVICES=`) silently falls back to the CPU.
pub fn default_device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE.get_or_init(pick_device).clone()
}

#[cfg(not(any(feature = "cuda", feature = "metal")))]
fn pick_device() -> Device {
    Device::Cpu
}

#[cfg(any(feature = "cuda", feature = "metal"))]
fn pick_device() -> Device {
    #[cfg(feature = "cuda")]
    let gpu = Device::new_cuda(0).map(|d| (d, "CUDA GPU 0"));
    #[cfg(all(feature = "metal", not(feature = "cuda")))]
    let gpu = Device::new_metal(0).map(|d| (d, "Metal GPU 0"));
    match gpu {
        Ok((d, name)) => {
            eprintln!("compute device: {name}");
            d
        }
        Err(e) => {
            // candle appends a backtrace to the error under RUST_BACKTRACE: keep the cause.
            let e = e.to_string();
            let cause = e.lines().next().unwrap_or_default();
            eprintln!("compute device: CPU (no usable GPU: {cause})");
            Device::Cpu
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outlier_clip_never_trains_a_model_scoring_its_speaker() {
        let held = vec!["actor01".to_string(), "actor05".to_string()];
        assert!(!outlier_allowed(Some("actor05"), &held));
        assert!(outlier_allowed(Some("actor02"), &held));
        assert!(outlier_allowed(None, &held));
        assert!(outlier_allowed(Some("actor05"), &[]));
        let encoded = vec![
            (Some("actor05".to_string()), 5),
            (Some("actor02".to_string()), 2),
            (None, 0),
        ];
        assert_eq!(allowed_outliers(&encoded, &held), vec![2, 0]);
        assert_eq!(allowed_outliers(&encoded, &[]), vec![5, 2, 0]);
    }
}
