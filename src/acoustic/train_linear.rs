//! `camxuc train --classifier linear`: the pooled linear classifier with its unfamiliarity
//! reference, fitted on every clip of the manifest (no validation part is held back: the
//! penalty, temperature, routing threshold and unfamiliarity unit all come from speaker folds).
//!
//! ```text
//! clips ─► analyse ─► views: clean, perturbed, field chain (training copies)
//!                     + one field-chain test copy per clip (only ever predicted)
//! speaker folds (K): fit the penalty path on the other folds' views ─► held-out clean and
//!                    field-test logits (out of fold) + unfamiliarity of held-out clean clips
//! penalty λ: lowest held-out NLL (clean + field) ─► temperature on the same logits
//! final fit on all clips at λ ─► routing threshold from the held-out probabilities,
//! unfamiliarity threshold = 95th percentile of held-out clean clips
//! ```

use std::path::Path;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::augment;
use super::frontend::Frontend;
use super::head::HeadConfig;
use super::head_training::argmax;
use super::linear::{self, fit_path, FitOptions, LinearConfig, LinearHead};
use super::model::{evidence_vector, LINEAR_PREFIX, UNFAMILIARITY_PREFIX};
use super::model_dir::{self, FrontendConfig, ModelMeta, TrainingMetrics};
use super::temperature::mean_nll;
use super::temperature::{ece_at, fit_temperature, softmax_t};
use super::train::{
    allowed_outliers, analyse_outliers, analyse_rows, babble_pool, evidence_inputs, fit_routing,
    label_of, model_name, whisper_frontend, whole_recording, write_evidence, HeldOutCondition,
    HeldOutPrediction, TrainEvent, TrainOptions, TrainReport,
};
use super::unfamiliar::{fit_held_out, Unfamiliarity};
use super::AcousticError;
use crate::audio::field::FieldChain;
use crate::audio::TARGET_RATE;
use crate::catalog;
use crate::clip::{AnalysedClip, ClipAnalyser};
use crate::data::manifest::Manifest;
use crate::data::split::{filter_speakers, speaker_folds};
use crate::features::{Baseline, BaselineKind, FeatureConfig};
use crate::Audio;

/// The linear classifier's settings (chosen by the generalisation protocol, README).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearChoice {
    pub blocks: Vec<usize>,
    pub utterance_norm: bool,
    /// Training copies through random field chains per clip.
    pub field_views: usize,
    /// Penalties tried, largest first.
    pub lambdas: Vec<f64>,
    /// Principal directions of the unfamiliarity reference.
    pub unfamiliarity_components: usize,
    /// Share of held-out clean clips above the unfamiliarity threshold.
    pub unfamiliar_fraction: f64,
}

impl Default for LinearChoice {
    fn default() -> Self {
        Self {
            blocks: vec![1, 2, 3],
            utterance_norm: true,
            field_views: 2,
            lambdas: vec![1.0, 0.3, 0.1, 0.03, 0.01, 0.003],
            unfamiliarity_components: super::train::UNFAMILIARITY_COMPONENTS,
            unfamiliar_fraction: super::train::UNFAMILIAR_FRACTION,
        }
    }
}

/// Pooled inputs of one clip's views: clean first, then training copies; and its field test copy.
struct Pooled {
    label: usize,
    /// Raw input vectors (before standardisation) of the training views; [0] is clean.
    train: Vec<Vec<f32>>,
    /// The field-chain test copy (predicted out of fold, never trained on).
    field: Option<Vec<f32>>,
    /// That copy's evidence (z-scored against the baseline), for the fusion fit.
    field_evidence: Option<crate::Evidence>,
}

pub fn train_linear(
    opts: &TrainOptions,
    choice: &LinearChoice,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainReport, AcousticError> {
    let started = Instant::now();
    let device = super::default_device();
    model_dir::prepare_out(&opts.out, opts.force)?;
    let fail = |message: String| AcousticError::Training {
        path: opts.manifest.clone(),
        message,
    };

    let mut m = Manifest::load(&opts.manifest, &opts.labels)?;
    if let Some(sel) = &opts.speakers {
        m = filter_speakers(&m, &[sel.as_str()])?;
    }
    m.require_files()?;
    let data_hash = m.data_hash();
    let mut phase_seconds = std::collections::BTreeMap::new();
    let mut phase_start = Instant::now();
    let mut lap = |name: &str, phases: &mut std::collections::BTreeMap<String, f64>| {
        phases.insert(name.to_string(), phase_start.elapsed().as_secs_f64());
        phase_start = Instant::now();
    };

    let feature_cfg = FeatureConfig::default();
    let mut an = ClipAnalyser::new(&feature_cfg).map_err(|source| AcousticError::Features {
        path: opts.manifest.clone(),
        source,
    })?;
    let rows: Vec<usize> = (0..m.rows.len()).collect();
    let total = rows.len();
    let mut done = 0;
    let mut skipped = Vec::new();
    let mut clips = analyse_rows(&m, &rows, &mut an, &mut skipped, &mut |n| {
        done += n;
        on_event(TrainEvent::Analysed { done, total });
    });
    let speakers: std::collections::BTreeSet<&str> = clips
        .iter()
        .filter_map(|a| m.rows[a.row].speaker.as_deref())
        .collect();
    if speakers.len() < 2 {
        return Err(fail(format!(
            "the linear classifier needs clips of at least 2 speakers (found {}): its penalty, temperature and unfamiliarity unit come from speaker folds",
            speakers.len()
        )));
    }
    let mut shifted_sets = super::train::analyse_shifted(opts, &mut an, &mut skipped)?;
    let mut outlier_set = analyse_outliers(opts, &mut an, &mut skipped)?;
    lap("analyse", &mut phase_seconds);

    let evidences: Vec<_> = clips.iter().map(|a| a.clip.evidence.clone()).collect();
    let baseline = Baseline::fit(
        BaselineKind::Corpus(data_hash[..12.min(data_hash.len())].to_string()),
        &evidences,
    );
    let inputs = if opts.use_evidence {
        evidence_inputs(&baseline)
    } else {
        Vec::new()
    };

    let blocks = match opts.frontend {
        super::FrontendChoice::Whisper { blocks } => blocks,
        super::FrontendChoice::LogMel => 0,
    };
    let (frontend, frontend_cfg, block_list) = if blocks > 0 {
        let cfg = whisper_frontend(blocks);
        let list: Vec<usize> = choice
            .blocks
            .iter()
            .copied()
            .filter(|&b| b >= 1 && b <= blocks)
            .collect();
        if list.is_empty() {
            return Err(fail(format!(
                "none of the linear classifier's blocks {:?} is among the {blocks} encoder blocks run",
                choice.blocks
            )));
        }
        (
            Frontend::from_config(&cfg, &opts.models_dir, &device)?,
            cfg,
            list,
        )
    } else {
        (Frontend::LogMel, FrontendConfig::LogMel, vec![1])
    };

    // Views: clean, `augment_views` perturbed, `field_views` field-chain copies; plus one
    // field-chain test copy from a separate seed stream.
    let mut rng = ChaCha8Rng::seed_from_u64(opts.train.seed ^ 0x5eed_a0d1);
    let mut test_rng = ChaCha8Rng::seed_from_u64(opts.train.seed ^ 0xf1e1_d7e5);
    let per_clip = 2 + opts.augment_views + choice.field_views;
    let n_views = clips.len() * per_clip + outlier_set.as_ref().map_or(0, |o| o.clips.len());
    let mut encoded = 0;
    let mut encode = |clip: &mut AnalysedClip,
                      on_event: &mut dyn FnMut(TrainEvent)|
     -> Result<Vec<f32>, AcousticError> {
        encoded += 1;
        on_event(TrainEvent::Encoded {
            done: encoded,
            total: n_views,
        });
        let ev = evidence_vector(&baseline, &inputs, &mut clip.evidence);
        let frames =
            frontend.block_frames(&clip.speech.samples, &clip.log_mel, &block_list, &device)?;
        let mut x = linear::pool(&frames, true, choice.utterance_norm)?;
        x.extend(ev);
        Ok(x)
    };
    // Babble for the field chains: other clips of the manifest (a fixed, small pool).
    let babble = babble_pool(&clips);
    let babble: Vec<&[f32]> = babble.iter().map(|b| b.as_slice()).collect();
    let mut pooled = Vec::with_capacity(clips.len());
    for a in clips.iter_mut() {
        let label = label_of(&opts.labels, &m.rows[a.row].label);
        let mut train = vec![encode(&mut a.clip, on_event)?];
        // A perturbed copy can be unusable (e.g. all noise): that view is left out.
        for _ in 0..opts.augment_views {
            let p = augment::perturb(&a.clip.speech.samples, TARGET_RATE, &mut rng);
            if let Ok(mut c) = an.analyse_audio(Audio::new(p, TARGET_RATE)) {
                train.push(encode(&mut c, on_event)?);
            }
        }
        let whole = whole_recording(&m.rows[a.row].path, &a.clip, &an);
        for _ in 0..choice.field_views {
            let f = FieldChain::random(&mut rng).apply(&whole, TARGET_RATE, &babble, &mut rng);
            if let Ok(mut c) = an.analyse_audio(Audio::new(f, TARGET_RATE)) {
                train.push(encode(&mut c, on_event)?);
            }
        }
        let f =
            FieldChain::random(&mut test_rng).apply(&whole, TARGET_RATE, &babble, &mut test_rng);
        let (field, field_evidence) = match an.analyse_audio(Audio::new(f, TARGET_RATE)) {
            Ok(mut c) => (Some(encode(&mut c, on_event)?), Some(c.evidence)),
            Err(_) => (None, None),
        };
        pooled.push((
            a.row,
            Pooled {
                label,
                train,
                field,
                field_evidence,
            },
        ));
    }
    // Outlier clips: their clean view, with their speaker.
    let mut outliers: Vec<(Option<String>, Vec<f32>)> = Vec::new();
    if let Some(set) = outlier_set.as_mut() {
        for a in set.clips.iter_mut() {
            let x = encode(&mut a.clip, on_event)?;
            outliers.push((set.manifest.rows[a.row].speaker.clone(), x));
        }
    }
    lap("encode", &mut phase_seconds);

    // Speaker folds: out-of-fold logits per penalty, unfamiliarity of held-out clean clips.
    let kept_rows: Vec<usize> = pooled.iter().map(|(r, _)| *r).collect();
    let sub = m.subset(&kept_rows);
    let k = opts.oof_folds.max(2).min(speakers.len());
    let folds = speaker_folds(&sub, k, opts.train.seed)?;
    let n_l = choice.lambdas.len();
    let mut oof_clean: Vec<Vec<Option<Vec<f32>>>> = vec![vec![None; pooled.len()]; n_l];
    let mut oof_field: Vec<Vec<Option<Vec<f32>>>> = vec![vec![None; pooled.len()]; n_l];
    for (f, fold) in folds.iter().enumerate() {
        on_event(TrainEvent::Fold {
            fold: f + 1,
            folds: k,
        });
        let (xs, ys) = training_rows(&pooled, &fold.train);
        let out = allowed_outliers(&outliers, &fold.val_speakers);
        let base = FitOptions {
            outliers: &out,
            outlier_weight: opts.train.outlier_weight as f64,
            ..FitOptions::default()
        };
        let path = fit_path(&xs, &ys, opts.labels.len(), None, &choice.lambdas, &base)?;
        for &i in &fold.val {
            let p = &pooled[i].1;
            for (l, h) in path.iter().enumerate() {
                oof_clean[l][i] = Some(h.logits(&p.train[0]));
                oof_field[l][i] = p.field.as_ref().map(|x| h.logits(x));
            }
        }
    }
    let labels_of = |sel: &[Option<Vec<f32>>]| -> (Vec<Vec<f32>>, Vec<usize>) {
        sel.iter()
            .zip(&pooled)
            .filter_map(|(l, (_, p))| l.clone().map(|l| (l, p.label)))
            .unzip()
    };
    let mut best = 0;
    let mut best_nll = f64::INFINITY;
    for l in 0..n_l {
        let (mut lg, mut y) = labels_of(&oof_clean[l]);
        let (lf, yf) = labels_of(&oof_field[l]);
        lg.extend(lf);
        y.extend(yf);
        let nll = mean_nll(&lg, &y, fit_temperature(&lg, &y));
        if nll < best_nll {
            best_nll = nll;
            best = l;
        }
    }
    let lambda = choice.lambdas[best];
    let (clean_logits, clean_y) = labels_of(&oof_clean[best]);
    let (field_logits, field_y) = labels_of(&oof_field[best]);
    let mut both = clean_logits.clone();
    both.extend(field_logits.iter().cloned());
    let mut both_y = clean_y.clone();
    both_y.extend(field_y.iter().copied());
    let temperature = fit_temperature(&both, &both_y);
    lap("out_of_fold", &mut phase_seconds);

    // The served classifier and unfamiliarity reference, on every clip.
    let all: Vec<usize> = (0..pooled.len()).collect();
    let (xs, ys) = training_rows(&pooled, &all);
    let out = allowed_outliers(&outliers, &[]);
    let base = FitOptions {
        outliers: &out,
        outlier_weight: opts.train.outlier_weight as f64,
        ..FitOptions::default()
    };
    let head: LinearHead = fit_path(
        &xs,
        &ys,
        opts.labels.len(),
        None,
        &choice.lambdas[..=best],
        &base,
    )?
    .pop()
    .ok_or_else(|| fail("no penalty to fit".into()))?;
    let clean: Vec<Vec<f32>> = pooled.iter().map(|(_, p)| p.train[0].clone()).collect();
    let held_out: Vec<Vec<usize>> = folds.iter().map(|f| f.val.clone()).collect();
    let fitted = fit_held_out(
        &clean,
        &held_out,
        choice.unfamiliarity_components,
        choice.unfamiliar_fraction,
        format!("{} clean clips of {} speakers", clean.len(), speakers.len()),
    )?;
    let unfamiliar_threshold = fitted.threshold;
    lap("head", &mut phase_seconds);

    // Routing on the held-out clean probabilities.
    let clean_probs: Vec<Vec<f32>> = clean_logits
        .iter()
        .map(|l| softmax_t(l, temperature))
        .collect();
    let mut routing = fit_routing(&clean_probs, opts.route_fraction, &[]);
    routing.unfamiliarity_threshold = unfamiliar_threshold;
    routing.fitted_on = format!(
        "{} speaker-held-out predictions ({k} folds); unfamiliarity threshold: {:.0}th percentile of those clips",
        clean_probs.len(),
        100.0 * (1.0 - choice.unfamiliar_fraction)
    );

    // Clips of other corpora, predicted by the served classifier (never trained on them).
    let mut shifted_held = Vec::new();
    for set in shifted_sets.iter_mut() {
        for a in set.clips.iter_mut() {
            let x = encode(&mut a.clip, on_event)?;
            shifted_held.push(HeldOutPrediction {
                probs: crate::Probs::new(&opts.labels, softmax_t(&head.logits(&x), temperature)),
                evidence: a.clip.evidence.clone(),
                unfamiliarity: Some(fitted.model.score(&x)),
                label: label_of(&opts.labels, &set.manifest.rows[a.row].label),
                group: format!("corpus:{}", set.name),
                condition: HeldOutCondition::OtherCorpus,
            });
        }
    }
    let conf = crate::metrics::Confusion::new(
        opts.labels.len(),
        clean_y
            .iter()
            .copied()
            .zip(clean_logits.iter().map(|l| argmax(l))),
    );
    let field_conf = crate::metrics::Confusion::new(
        opts.labels.len(),
        field_y
            .iter()
            .copied()
            .zip(field_logits.iter().map(|l| argmax(l))),
    );
    let pooled_dim = head.input_dim() - inputs.len();
    let cfg = LinearConfig {
        blocks: block_list.clone(),
        std: true,
        utterance_norm: choice.utterance_norm,
        evidence_dim: inputs.len(),
        lambda,
        pooled_dim,
        n_labels: opts.labels.len(),
    };
    let mut phase = phase_seconds;
    phase.insert("field_macro_f1_out_of_fold".into(), field_conf.macro_f1());
    let metrics = TrainingMetrics {
        n_train: pooled.len(),
        n_val: 0,
        val_speakers: Vec::new(),
        best_epoch: 0,
        val_accuracy: conf.accuracy(),
        val_macro_f1: conf.macro_f1(),
        ece_before: ece_at(&clean_logits, &clean_y, 1.0),
        ece_after: ece_at(&clean_logits, &clean_y, temperature),
        history: Vec::new(),
        seconds: started.elapsed().as_secs_f64(),
        phase_seconds: phase,
    };
    let meta = ModelMeta {
        format_version: model_dir::FORMAT_VERSION,
        name: model_name(&opts.out),
        camxuc_version: env!("CARGO_PKG_VERSION").into(),
        labels: opts.labels.clone(),
        frontend: frontend_cfg,
        features: feature_cfg,
        head: HeadConfig {
            input_dim: pooled_dim,
            hidden: 0,
            evidence_dim: inputs.len(),
            n_labels: opts.labels.len(),
            dropout: 0.0,
        },
        evidence_inputs: inputs,
        evidence_baseline: baseline,
        temperature,
        metrics,
        seed: opts.train.seed,
        data_hash,
        train_manifest: opts.manifest.display().to_string(),
        default_llm: catalog::DEFAULT_LLM.into(),
        ensemble: None,
        linear: Some(cfg),
        unfamiliarity: Some(fitted.model.cfg.clone()),
        adaptation: None,
        outlier_exposure: outlier_set
            .as_ref()
            .map(|o| o.record(opts.train.outlier_weight)),
        head_training: None,
        linear_member: None,
    };

    let weights = opts.out.join(model_dir::WEIGHTS_FILE);
    save_tensors(&weights, &head, &fitted.model)?;
    model_dir::write_meta(&opts.out, &meta)?;
    model_dir::write_json(&opts.out.join(model_dir::ROUTING_FILE), &routing)?;
    // Out-of-fold probabilities for refinement (every clip is a training clip here; `pooled`
    // holds one entry per analysed clip, in the order of `clips`).
    let oof_probs: Vec<Option<Vec<f32>>> = oof_clean[best]
        .iter()
        .map(|l| l.as_ref().map(|l| softmax_t(l, temperature)))
        .collect();
    // Held-out predictions for the fusion: each clip and its field-chain test copy, predicted
    // by the fold that held its speaker out, unfamiliarity from that fold's reference.
    let mut held = Vec::new();
    for (f, fold) in folds.iter().enumerate() {
        for &i in &fold.val {
            let p = &pooled[i].1;
            let copies = [
                (
                    oof_clean[best][i].as_ref(),
                    Some(&p.train[0]),
                    Some(&clips[i].clip.evidence),
                    HeldOutCondition::Clean,
                ),
                (
                    oof_field[best][i].as_ref(),
                    p.field.as_ref(),
                    p.field_evidence.as_ref(),
                    HeldOutCondition::Perturbed,
                ),
            ];
            for (logits, x, evidence, condition) in copies {
                let (Some(logits), Some(x), Some(evidence)) = (logits, x, evidence) else {
                    continue;
                };
                held.push(HeldOutPrediction {
                    probs: crate::Probs::new(&opts.labels, softmax_t(logits, temperature)),
                    evidence: evidence.clone(),
                    unfamiliarity: fitted.held_out_score(i, x),
                    label: p.label,
                    group: format!("fold{}", f + 1),
                    condition,
                });
            }
        }
    }
    held.extend(shifted_held);
    let empty = m.subset(&[]);
    write_evidence(
        &opts.out,
        &opts.labels,
        &m,
        &clips,
        &empty,
        &[],
        &[],
        &oof_probs,
    )?;
    Ok(TrainReport {
        dir: opts.out.clone(),
        meta,
        routing,
        skipped,
        held_out: held,
    })
}

/// Inputs and labels of every training view of the clips `ix`.
fn training_rows(pooled: &[(usize, Pooled)], ix: &[usize]) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for &i in ix {
        let p = &pooled[i].1;
        for x in &p.train {
            xs.push(x.clone());
            ys.push(p.label);
        }
    }
    (xs, ys)
}

fn save_tensors(
    path: &Path,
    head: &LinearHead,
    unfam: &Unfamiliarity,
) -> Result<(), AcousticError> {
    let mut tensors = std::collections::HashMap::new();
    for (k, t) in head
        .tensors(LINEAR_PREFIX)?
        .into_iter()
        .chain(unfam.tensors(UNFAMILIARITY_PREFIX)?)
    {
        tensors.insert(k, t);
    }
    candle_core::safetensors::save(&tensors, path).map_err(|e| AcousticError::Tensors {
        path: path.into(),
        source: Box::new(e),
    })
}
