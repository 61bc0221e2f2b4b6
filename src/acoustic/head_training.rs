//! Training the head on precomputed frame features (the encoder is frozen, so each clip's
//! frames — and each augmented view of it — are computed once, then many cheap epochs run).
//!
//! Everything random (weight init, shuffling, view choice, time masks, dropout) comes from
//! one seeded ChaCha RNG: candle's CPU device cannot be seeded and candle-nn's init and
//! dropout are unseeded, so they are not used. Same seed → same weights → same metrics.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::head::{Head, HeadConfig};
use super::temperature::mean_nll;
use crate::metrics::Confusion;

/// One view of a clip: its frames [T, D] and its evidence vector (z-scores), both measured on
/// the same (clean or perturbed) audio.
#[derive(Clone, Debug)]
pub struct View {
    pub frames: Tensor,
    pub evidence: Vec<f32>,
}

/// One training clip: view 0 is the clean one, the others are perturbed copies.
#[derive(Clone, Debug)]
pub struct Example {
    pub views: Vec<View>,
    pub label: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Stop when validation macro-F1 has not improved for this many epochs.
    pub patience: usize,
    pub seed: u64,
    /// Fraction of frames hidden by random time masks during training (SpecAugment-style).
    pub time_mask_fraction: f32,
    /// Outlier exposure: weight of the cross-entropy to the uniform distribution on a batch
    /// of outlier clips (speech outside the labels) beside each training batch (0: none;
    /// see [`train_head_exposed`]). Absent from configurations serialised before it: 0.
    #[serde(default)]
    pub outlier_weight: f32,
    /// Keep the temporal convolution (the head's first layer, on the encoder frames) at its
    /// seeded random initialisation and train only the pooling and the output layer: a
    /// random projection of the frames, which fits less of the training corpus. Absent from
    /// configurations serialised before it: false.
    #[serde(default)]
    pub freeze_temporal: bool,
    /// The temporal convolution's learning rate as a share of `learning_rate` (1: the same;
    /// ignored when `freeze_temporal`): a conv that may move away from its random start, but
    /// slowly, so early stopping keeps it near. Absent from configurations serialised before
    /// it: 1.
    #[serde(default = "one")]
    pub temporal_lr_scale: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 60,
            batch_size: 16,
            learning_rate: 1e-3,
            weight_decay: 1e-2,
            patience: 12,
            seed: 1,
            time_mask_fraction: 0.15,
            outlier_weight: 0.0,
            freeze_temporal: false,
            temporal_lr_scale: 1.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_macro_f1: f64,
}

pub struct Trained {
    pub varmap: VarMap,
    pub head: Head,
    pub history: Vec<EpochStats>,
    pub best_epoch: usize,
}

/// Stack views (each [T_i, D]) into a zero-padded [B, T_max, D] batch and its [B, T_max] mask.
pub fn pad_batch(views: &[&Tensor], dev: &Device) -> Result<(Tensor, Tensor)> {
    let t_max = views
        .iter()
        .map(|v| v.dim(0))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(1)
        .max(1);
    let d = views.first().map(|v| v.dim(1)).transpose()?.unwrap_or(1);
    let mut padded = Vec::with_capacity(views.len());
    let mut mask = Vec::with_capacity(views.len() * t_max);
    for v in views {
        let t = v.dim(0)?;
        padded.push(if t < t_max {
            Tensor::cat(
                &[
                    (*v).clone(),
                    Tensor::zeros((t_max - t, d), DType::F32, dev)?,
                ],
                0,
            )?
        } else {
            (*v).clone()
        });
        mask.extend((0..t_max).map(|i| if i < t { 1f32 } else { 0.0 }));
    }
    Ok((
        Tensor::stack(&padded, 0)?,
        Tensor::from_vec(mask, (views.len(), t_max), dev)?,
    ))
}

fn evidence_batch(views: &[&View], dim: usize, dev: &Device) -> Result<Option<Tensor>> {
    if dim == 0 {
        return Ok(None);
    }
    let flat: Vec<f32> = views
        .iter()
        .flat_map(|v| v.evidence.iter().copied())
        .collect();
    Tensor::from_vec(flat, (views.len(), dim), dev).map(Some)
}

/// Per-dimension mean and 1/std of all frames of the clean views.
fn frame_statistics(train: &[Example], dim: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut sum = vec![0f64; dim];
    let mut sq = vec![0f64; dim];
    let mut n = 0usize;
    for ex in train {
        for row in ex.views[0].frames.to_vec2::<f32>()? {
            for (j, v) in row.iter().enumerate() {
                sum[j] += *v as f64;
                sq[j] += (*v as f64) * (*v as f64);
            }
            n += 1;
        }
    }
    let n = n.max(1) as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let inv_std: Vec<f32> = sq
        .iter()
        .zip(&sum)
        .map(|(q, s)| {
            let var = (q / n - (s / n).powi(2)).max(0.0);
            (1.0 / var.sqrt().max(1e-3)) as f32
        })
        .collect();
    Ok((mean, inv_std))
}

/// Re-initialise every trainable variable from the seeded RNG, in name order so the result
/// does not depend on hash-map iteration order.
fn seeded_init(varmap: &VarMap, rng: &mut ChaCha8Rng) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("var map lock poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("weight") && dims.len() >= 2 {
            // Uniform(±1/sqrt(fan_in)), fan_in = input features × kernel size.
            let fan_in: usize = dims[1..].iter().product();
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        } else if name.ends_with("bias") {
            vec![0.0; n]
        } else {
            continue; // normalisation statistics are set from data
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

fn snapshot(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("var map lock poisoned".into()))?;
    data.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}

fn restore(varmap: &VarMap, snap: &HashMap<String, Tensor>) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("var map lock poisoned".into()))?;
    for (k, v) in data.iter() {
        if let Some(t) = snap.get(k) {
            v.set(t)?;
        }
    }
    Ok(())
}

/// Class-weighted cross-entropy: each class counts as much as the others whatever its size.
fn weighted_cross_entropy(
    logits: &Tensor,
    labels: &[usize],
    class_weight: &[f32],
) -> Result<Tensor> {
    let dev = logits.device();
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let idx = Tensor::from_vec(
        labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
        (labels.len(), 1),
        dev,
    )?;
    let picked = logp.gather(&idx, 1)?.squeeze(1)?;
    let w: Vec<f32> = labels.iter().map(|&l| class_weight[l]).collect();
    let w = Tensor::from_vec(w, labels.len(), dev)?;
    let total_w: f32 = labels.iter().map(|&l| class_weight[l]).sum();
    (picked * w)?
        .sum_all()?
        .affine(-1.0 / total_w.max(1e-6) as f64, 0.0)
}

/// Mean cross-entropy of logits [B, K] to the uniform distribution over the K labels:
/// −mean over rows and labels of log-softmax (outlier exposure's term; 0 only when every row's
/// logits are equal).
fn uniform_cross_entropy(logits: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    logp.mean_all()?.neg()
}

/// Logits of the clean view of each example, in batches.
pub fn predict_logits(
    head: &Head,
    examples: &[Example],
    batch_size: usize,
    dev: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        let views: Vec<&View> = chunk.iter().map(|e| &e.views[0]).collect();
        out.extend(predict_views(head, &views, dev)?);
    }
    Ok(out)
}

/// Logits of a batch of views.
pub fn predict_views(head: &Head, views: &[&View], dev: &Device) -> Result<Vec<Vec<f32>>> {
    let (x, mask, ev) = view_batch(head, views, dev)?;
    head.forward(&x, &mask, ev.as_ref(), None)?.to_vec2::<f32>()
}

/// Views as one batch for `head`: zero-padded frames, their mask and the evidence.
fn view_batch(
    head: &Head,
    views: &[&View],
    dev: &Device,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let frames: Vec<&Tensor> = views.iter().map(|v| &v.frames).collect();
    let (x, mask) = pad_batch(&frames, dev)?;
    let ev = evidence_batch(views, head.config().evidence_dim, dev)?;
    Ok((x, mask, ev))
}

/// The output layer's inputs (pooled embedding ‖ evidence) of views, one row per view: what
/// the head's last layer sees (see [`Head::features`]).
pub fn features_of_views(head: &Head, views: &[&View], dev: &Device) -> Result<Vec<Vec<f32>>> {
    let (x, mask, ev) = view_batch(head, views, dev)?;
    head.features(&x, &mask, ev.as_ref())?.to_vec2::<f32>()
}

/// Index of the largest logit (the first on ties).
pub(crate) use crate::math::argmax;

/// Train a head with AdamW and early stopping on validation macro-F1; returns the best epoch's
/// weights. `on_epoch` sees each epoch's statistics (for a progress bar).
pub fn train_head(
    cfg: &HeadConfig,
    tc: &TrainConfig,
    train: &[Example],
    val: &[Example],
    dev: &Device,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<Trained> {
    train_head_exposed(cfg, tc, train, val, &[], dev, on_epoch)
}

/// [`train_head`] with outlier exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019): beside
/// each training batch, a batch of `outliers` (views of speech outside the labels, e.g. other
/// emotions) is pushed toward the uniform distribution over the labels with weight
/// `tc.outlier_weight`, so the head learns to be unsure on such speech instead of confidently
/// calling it one of its labels. Empty `outliers` or weight 0: exactly [`train_head`].
pub fn train_head_exposed(
    cfg: &HeadConfig,
    tc: &TrainConfig,
    train: &[Example],
    val: &[Example],
    outliers: &[View],
    dev: &Device,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<Trained> {
    if train.is_empty() || val.is_empty() {
        candle_core::bail!("training needs clips in both the training and the validation part");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(tc.seed);
    let mut varmap = VarMap::new();
    let mut head = Head::load(cfg, VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
    if tc.freeze_temporal {
        head = head.with_frozen_temporal();
    }
    seeded_init(&varmap, &mut rng)?;
    let (mean, inv_std) = frame_statistics(train, cfg.input_dim)?;
    varmap.set_one("frame_mean", Tensor::from_vec(mean, cfg.input_dim, dev)?)?;
    varmap.set_one(
        "frame_inv_std",
        Tensor::from_vec(inv_std, cfg.input_dim, dev)?,
    )?;

    // Only the layers train; the normalisation statistics stay fixed. The temporal conv has
    // an optimiser of its own when its learning rate differs (one gradient pass feeds both).
    let (temporal, rest): (Vec<Var>, Vec<Var>) = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("var map lock poisoned".into()))?;
        let mut named: Vec<(&String, &Var)> = data
            .iter()
            .filter(|(k, _)| {
                let fixed =
                    k.starts_with("frame_") || (tc.freeze_temporal && k.starts_with("temporal."));
                !fixed
            })
            .collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let separate = tc.temporal_lr_scale != 1.0;
        let (t, r): (Vec<_>, Vec<_>) = named
            .into_iter()
            .partition(|(k, _)| separate && k.starts_with("temporal."));
        (
            t.into_iter().map(|(_, v)| v.clone()).collect(),
            r.into_iter().map(|(_, v)| v.clone()).collect(),
        )
    };
    let params = |lr: f64| ParamsAdamW {
        lr,
        weight_decay: tc.weight_decay,
        ..Default::default()
    };
    let mut opt = AdamW::new(rest, params(tc.learning_rate))?;
    let mut temporal_opt = if temporal.is_empty() {
        None
    } else {
        Some(AdamW::new(
            temporal,
            params(tc.learning_rate * tc.temporal_lr_scale),
        )?)
    };

    let mut counts = vec![0usize; cfg.n_labels];
    for e in train {
        counts[e.label] += 1;
    }
    let class_weight: Vec<f32> = counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                train.len() as f32 / (cfg.n_labels * c) as f32
            }
        })
        .collect();
    let val_labels: Vec<usize> = val.iter().map(|e| e.label).collect();
    let embed_dim = 2 * cfg.hidden + cfg.evidence_dim;

    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut history = Vec::new();
    let mut best: Option<(f64, f64, usize, HashMap<String, Tensor>)> = None;
    for epoch in 1..=tc.epochs.max(1) {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(tc.batch_size.max(1)) {
            let exs: Vec<&Example> = chunk.iter().map(|&i| &train[i]).collect();
            let views: Vec<&View> = exs
                .iter()
                .map(|e| &e.views[rng.random_range(0..e.views.len())])
                .collect();
            let frames: Vec<&Tensor> = views.iter().map(|v| &v.frames).collect();
            let (x, mask) = pad_batch(&frames, dev)?;
            let mask = time_mask(&mask, tc.time_mask_fraction, &mut rng)?;
            let ev = evidence_batch(&views, cfg.evidence_dim, dev)?;
            let keep = 1.0 - cfg.dropout;
            let drop: Vec<f32> = (0..exs.len() * embed_dim)
                .map(|_| {
                    if rng.random::<f32>() < keep {
                        1.0 / keep
                    } else {
                        0.0
                    }
                })
                .collect();
            let drop = Tensor::from_vec(drop, (exs.len(), embed_dim), dev)?;
            let logits = head.forward(&x, &mask, ev.as_ref(), Some(&drop))?;
            let labels: Vec<usize> = exs.iter().map(|e| e.label).collect();
            let mut loss = weighted_cross_entropy(&logits, &labels, &class_weight)?;
            if tc.outlier_weight > 0.0 && !outliers.is_empty() {
                let picked: Vec<&View> = (0..exs.len())
                    .map(|_| &outliers[rng.random_range(0..outliers.len())])
                    .collect();
                let frames: Vec<&Tensor> = picked.iter().map(|v| &v.frames).collect();
                let (ox, omask) = pad_batch(&frames, dev)?;
                let omask = time_mask(&omask, tc.time_mask_fraction, &mut rng)?;
                let oev = evidence_batch(&picked, cfg.evidence_dim, dev)?;
                let ologits = head.forward(&ox, &omask, oev.as_ref(), Some(&drop))?;
                let oe = uniform_cross_entropy(&ologits)?;
                loss = (loss + oe.affine(tc.outlier_weight as f64, 0.0)?)?;
            }
            match temporal_opt.as_mut() {
                None => opt.backward_step(&loss)?,
                Some(t) => {
                    let grads = loss.backward()?;
                    opt.step(&grads)?;
                    t.step(&grads)?;
                }
            }
            loss_sum += loss.to_scalar::<f32>()? as f64;
            batches += 1;
        }
        let val_logits = predict_logits(&head, val, 32, dev)?;
        let conf = Confusion::new(
            cfg.n_labels,
            val_labels
                .iter()
                .copied()
                .zip(val_logits.iter().map(|l| argmax(l))),
        );
        let stats = EpochStats {
            epoch,
            train_loss: loss_sum / batches.max(1) as f64,
            val_loss: mean_nll(&val_logits, &val_labels, 1.0),
            val_accuracy: conf.accuracy(),
            val_macro_f1: conf.macro_f1(),
        };
        on_epoch(&stats);
        let better = match &best {
            None => true,
            Some((f1, loss, _, _)) => {
                stats.val_macro_f1 > *f1 + 1e-9
                    || (stats.val_macro_f1 > *f1 - 1e-9 && stats.val_loss < *loss)
            }
        };
        if better {
            best = Some((
                stats.val_macro_f1,
                stats.val_loss,
                epoch,
                snapshot(&varmap)?,
            ));
        }
        history.push(stats);
        if let Some((_, _, best_epoch, _)) = &best {
            if epoch - best_epoch >= tc.patience {
                break;
            }
        }
    }
    let (_, _, best_epoch, snap) =
        best.ok_or_else(|| candle_core::Error::Msg("no epoch ran".into()))?;
    restore(&varmap, &snap)?;
    Ok(Trained {
        varmap,
        head,
        history,
        best_epoch,
    })
}

/// One head of [`train_heads`]: its training configuration (seed included) and data.
pub struct HeadJob<'a> {
    pub tc: TrainConfig,
    pub train: Vec<Example>,
    /// Clips that choose the stopping epoch.
    pub val: &'a [Example],
    pub outliers: Vec<View>,
}

/// Train independent heads at once on rayon's pool, e.g. an ensemble's main head and its
/// out-of-fold heads. Each is [`train_head_exposed`] with its own seed, so every head's weights
/// are the ones training it alone gives, whatever the number of threads or the order the jobs
/// run in. Returns the heads in job order (the first error, in job order, if any failed);
/// `on_epoch(job, stats)` runs on the calling thread as each epoch of any job ends.
///
/// Why: one head's training keeps about one core busy (small matrix products between many
/// single-threaded element-wise steps), so on 2 cores four heads trained two at a time take
/// about half the time of one after another.
pub fn train_heads(
    cfg: &HeadConfig,
    jobs: &[HeadJob],
    dev: &Device,
    on_epoch: &mut dyn FnMut(usize, &EpochStats),
) -> Result<Vec<Trained>> {
    use rayon::prelude::*;
    let (tx, rx) = std::sync::mpsc::channel::<(usize, EpochStats)>();
    let results = std::thread::scope(|s| {
        let worker = s.spawn(move || {
            jobs.par_iter()
                .enumerate()
                .map_with(tx, |tx, (i, job)| {
                    train_head_exposed(
                        cfg,
                        &job.tc,
                        &job.train,
                        job.val,
                        &job.outliers,
                        dev,
                        &mut |stats| {
                            // The receiver outlives every sender; a failed send cannot happen.
                            let _ = tx.send((i, stats.clone()));
                        },
                    )
                })
                .collect::<Vec<Result<Trained>>>()
        });
        // Ends when the last job's sender is dropped.
        for (job, stats) in rx {
            on_epoch(job, &stats);
        }
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    results.into_iter().collect()
}

/// Hide random spans of frames (SpecAugment-style time masks) by zeroing the pooling mask;
/// at least one frame per clip stays visible.
fn time_mask(mask: &Tensor, fraction: f32, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    if fraction <= 0.0 {
        return Ok(mask.clone());
    }
    let (b, t) = mask.dims2()?;
    let mut m = mask.to_vec2::<f32>()?;
    for row in m.iter_mut() {
        let valid = row.iter().filter(|&&v| v > 0.0).count();
        if valid < 4 {
            continue;
        }
        let hide = ((valid as f32) * fraction) as usize;
        // Two spans of about half the budget each.
        for _ in 0..2 {
            let len = hide / 2;
            if len == 0 {
                break;
            }
            let start = rng.random_range(0..valid.saturating_sub(len).max(1));
            for v in row.iter_mut().skip(start).take(len) {
                *v = 0.0;
            }
        }
        if row.iter().all(|&v| v == 0.0) {
            row[0] = 1.0;
        }
    }
    Tensor::from_vec(
        m.into_iter().flatten().collect::<Vec<_>>(),
        (b, t),
        mask.device(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clips of random length whose frames carry a weak class-dependent offset in a few
    /// dimensions, buried in noise: learnable, but not trivially.
    fn toy_examples(n: usize, seed: u64) -> Vec<Example> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let label = i % 3;
                let t = rng.random_range(6..20);
                let frames: Vec<f32> = (0..t * 8)
                    .map(|j| {
                        let d = j % 8;
                        let signal = if d == label || d == label + 3 {
                            0.8
                        } else {
                            0.0
                        };
                        signal + rng.random_range(-1.0f32..1.0)
                    })
                    .collect();
                let frames = Tensor::from_vec(frames, (t, 8), &Device::Cpu).unwrap();
                Example {
                    views: vec![View {
                        frames,
                        evidence: vec![rng.random_range(-1.0..1.0)],
                    }],
                    label,
                }
            })
            .collect()
    }

    fn toy_config() -> HeadConfig {
        HeadConfig {
            input_dim: 8,
            hidden: 8,
            evidence_dim: 1,
            n_labels: 3,
            dropout: 0.1,
        }
    }

    /// 25 epochs on the toy problem, with `outliers` at `weight`.
    fn train_toy(seed: u64, outliers: &[View], weight: f32) -> Trained {
        let tc = TrainConfig {
            epochs: 25,
            seed,
            patience: 25,
            outlier_weight: weight,
            ..Default::default()
        };
        train_head_exposed(
            &toy_config(),
            &tc,
            &toy_examples(90, 1),
            &toy_examples(45, 2),
            outliers,
            &Device::Cpu,
            &mut |_| {},
        )
        .unwrap()
    }

    fn train_once(seed: u64) -> Trained {
        train_toy(seed, &[], 0.0)
    }

    #[test]
    fn learns_a_toy_problem_and_is_deterministic_for_a_seed() {
        let a = train_once(7);
        let best = &a.history[a.best_epoch - 1];
        assert!(
            best.val_macro_f1 > 0.8,
            "validation macro-F1 {}",
            best.val_macro_f1
        );
        let b = train_once(7);
        assert_eq!(a.history, b.history, "same seed must give the same run");
        let test = toy_examples(30, 3);
        let la = predict_logits(&a.head, &test, 8, &Device::Cpu).unwrap();
        let lb = predict_logits(&b.head, &test, 8, &Device::Cpu).unwrap();
        assert_eq!(la, lb);
        let c = train_once(8);
        assert_ne!(a.history, c.history, "another seed should give another run");
    }

    /// Speech "outside the labels": a strong class-0 offset plus an offset in dimensions 6-7,
    /// which the labelled clips never use.
    #[test]
    fn a_frozen_temporal_conv_keeps_its_initial_weights_while_the_rest_learns() {
        let tc = TrainConfig {
            epochs: 25,
            seed: 3,
            patience: 25,
            freeze_temporal: true,
            ..Default::default()
        };
        let (train, val) = (toy_examples(90, 1), toy_examples(45, 2));
        let dev = Device::Cpu;
        let frozen =
            train_head_exposed(&toy_config(), &tc, &train, &val, &[], &dev, &mut |_| {}).unwrap();
        // The initial weights training starts from: the same seeded initialisation.
        let init = initial_weights(tc.seed);
        let weight = |vm: &VarMap, name: &str| -> Vec<f32> {
            vm.data().lock().unwrap()[name]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        for name in ["temporal.conv.weight", "temporal.conv.bias"] {
            assert_eq!(weight(&frozen.varmap, name), weight(&init, name), "{name}");
        }
        assert_ne!(
            weight(&frozen.varmap, "out.weight"),
            weight(&init, "out.weight")
        );
        let f1 = frozen.history[frozen.best_epoch - 1].val_macro_f1;
        assert!(f1 > 0.8, "validation macro-F1 with a frozen conv: {f1}");
    }

    /// The toy head's seeded initial weights (what training with `seed` starts from).
    fn initial_weights(seed: u64) -> VarMap {
        let init = VarMap::new();
        Head::load(
            &toy_config(),
            VarBuilder::from_varmap(&init, DType::F32, &Device::Cpu),
        )
        .unwrap();
        seeded_init(&init, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        init
    }

    /// A conv at a tenth of the learning rate moves, but far less than one at the full rate
    /// over the same steps (one epoch, so both keep their last weights).
    #[test]
    fn a_slowed_temporal_conv_moves_less_from_its_start() {
        let (train, val) = (toy_examples(90, 1), toy_examples(45, 2));
        let dev = Device::Cpu;
        let moved = |scale: f64| -> f64 {
            let tc = TrainConfig {
                epochs: 1,
                seed: 3,
                temporal_lr_scale: scale,
                ..Default::default()
            };
            let t = train_head_exposed(&toy_config(), &tc, &train, &val, &[], &dev, &mut |_| {})
                .unwrap();
            let init = initial_weights(tc.seed);
            let w = |vm: &VarMap| -> Vec<f32> {
                vm.data().lock().unwrap()["temporal.conv.weight"]
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            w(&t.varmap)
                .iter()
                .zip(w(&init))
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let (full, slow) = (moved(1.0), moved(0.1));
        assert!(slow > 0.0, "a slowed conv still learns");
        assert!(
            slow < 0.3 * full,
            "conv moved {slow} at a tenth of the rate, {full} at the full rate"
        );
    }

    fn toy_outliers(n: usize, seed: u64) -> Vec<View> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let t = rng.random_range(6..20);
                let frames: Vec<f32> = (0..t * 8)
                    .map(|j| {
                        let signal = if matches!(j % 8, 0 | 3 | 6 | 7) {
                            2.0
                        } else {
                            0.0
                        };
                        signal + rng.random_range(-1.0f32..1.0)
                    })
                    .collect();
                View {
                    frames: Tensor::from_vec(frames, (t, 8), &Device::Cpu).unwrap(),
                    evidence: vec![rng.random_range(-1.0..1.0)],
                }
            })
            .collect()
    }

    #[test]
    fn outlier_exposure_lowers_confidence_on_unseen_outliers_only() {
        let outliers = toy_outliers(60, 4);
        let run = |weight: f32| train_toy(7, &outliers, weight);
        let mean_top = |t: &Trained, views: &[View]| -> f32 {
            let refs: Vec<&View> = views.iter().collect();
            let logits = predict_views(&t.head, &refs, &Device::Cpu).unwrap();
            logits
                .iter()
                .map(|l| {
                    crate::math::softmax_t(l, 1.0)
                        .into_iter()
                        .fold(0.0, f32::max)
                })
                .sum::<f32>()
                / logits.len() as f32
        };
        let fresh = toy_outliers(30, 5);
        let plain = run(0.0);
        let exposed = run(1.0);
        let (p, e) = (mean_top(&plain, &fresh), mean_top(&exposed, &fresh));
        let inside: Vec<View> = toy_examples(30, 3)
            .into_iter()
            .map(|x| x.views[0].clone())
            .collect();
        let (pi, ei) = (mean_top(&plain, &inside), mean_top(&exposed, &inside));
        // The plain head is surer of the outliers than of its own classes (measured 0.96 vs
        // 0.78); exposed, it is near uniform (1/3) on fresh outliers (0.36) and nearly as
        // sure as before of its own classes (0.73).
        assert!(p > pi, "plain head: outliers {p}, own classes {pi}");
        assert!(
            e < 0.4 && e < p - 0.1,
            "exposed head on outliers: {e} (plain {p})"
        );
        assert!(
            ei > pi - 0.1,
            "exposed head on its own classes: {ei} (plain {pi})"
        );
        let f1 = exposed.history[exposed.best_epoch - 1].val_macro_f1;
        assert!(f1 > 0.8, "exposed head's validation macro-F1 {f1}");
        // Weight 0 is the plain run, outliers or not.
        assert_eq!(plain.history, train_once(7).history);
    }
}
