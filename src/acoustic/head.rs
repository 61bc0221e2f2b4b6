//! The trained classification head on top of frozen frame features (Whisper encoder frames
//! or log-mel frames), written the way candle-transformers writes models: a struct per
//! block, `load(cfg, vb)` + `forward`.
//!
//! ```text
//! frames [B,T,D] ─► standardise ─► conv1d(k=3) + GELU ─► attention pool ┐
//!                                                     └► masked mean ───┴► concat ─► dropout ─► linear ─► logits [B,K]
//! evidence [B,E] (gain-invariant z-scores) ─────────────────────────────┘
//! ```
//! Attention pooling over a masked time axis makes any clip length work.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{conv1d, linear, Conv1d, Conv1dConfig, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Shape of the head; stored in model.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Width of one input frame (512 for Whisper base, n_mels for log-mel).
    pub input_dim: usize,
    pub hidden: usize,
    /// Number of evidence features fused in (0 = none).
    pub evidence_dim: usize,
    pub n_labels: usize,
    pub dropout: f32,
}

/// How the heads of an ensemble are combined into one set of logits; stored in model.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsembleCombine {
    /// Mean of the members' logits.
    MeanLogits,
    /// Log of the mean of the members' probabilities (a log-probability vector, so
    /// temperature scaling applies to it like to logits).
    MeanProbs,
}

/// The log of the mean of probability vectors (a logit vector at temperature 1): how an
/// ensemble's heads, a mixture's members and the protocol's ensembles are combined.
pub fn ln_mean_probs(probs: impl ExactSizeIterator<Item = Vec<f32>>) -> Vec<f32> {
    let n = probs.len() as f32;
    let mut mean: Vec<f32> = Vec::new();
    for q in probs {
        mean.resize(q.len(), 0.0);
        for (a, b) in mean.iter_mut().zip(q) {
            *a += b / n;
        }
    }
    // Floor so a probability that underflowed to 0 keeps a finite log.
    mean.into_iter().map(|v| v.max(1e-30).ln()).collect()
}

/// Combine the logits of several heads on the same clips: `per_head[h][i]` is head `h`'s
/// logits of clip `i`. One head gives its own logits back unchanged.
pub fn combine_logits(per_head: &[Vec<Vec<f32>>], how: EnsembleCombine) -> Vec<Vec<f32>> {
    let Some(first) = per_head.first() else {
        return Vec::new();
    };
    if per_head.len() == 1 {
        return first.clone();
    }
    let members = per_head.len() as f32;
    (0..first.len())
        .map(|i| {
            let k = first[i].len();
            match how {
                EnsembleCombine::MeanLogits => (0..k)
                    .map(|j| per_head.iter().map(|h| h[i][j]).sum::<f32>() / members)
                    .collect(),
                EnsembleCombine::MeanProbs => ln_mean_probs(
                    per_head
                        .iter()
                        .map(|h| super::temperature::softmax_t(&h[i], 1.0)),
                ),
            }
        })
        .collect()
}

/// Temporal convolution block: a local view of a few frames.
#[derive(Debug, Clone)]
struct TemporalConv {
    conv: Conv1d,
}

impl TemporalConv {
    fn load(cfg: &HeadConfig, vb: VarBuilder) -> Result<Self> {
        let c = Conv1dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv: conv1d(cfg.input_dim, cfg.hidden, 3, c, vb.pp("conv"))?,
        })
    }

    /// The same conv with its tensors cut from gradient tracking (storage shared, values
    /// the same).
    fn detached(&self) -> Self {
        Self {
            conv: Conv1d::new(
                self.conv.weight().detach(),
                self.conv.bias().map(Tensor::detach),
                *self.conv.config(),
            ),
        }
    }

    /// `x`: [B, T, D] → [B, T, H]: the same cross-correlation as `Conv1d` with zero padding
    /// 1 (`y[t] = W₀·x[t−1] + W₁·x[t] + W₂·x[t+1] + b`), computed as one matrix product of the
    /// unfolded frames [B·T, 3D] with the kernel laid out as [3D, H]. The weights keep the
    /// conv's names and shape, so model files are unchanged.
    ///
    /// Why not `Conv1d::forward`: in candle 0.11.1 (CPU) the conv's backward pass gives a
    /// wrong kernel gradient for batches of more than one clip (off by more than the gradient
    /// itself against central differences; right for one clip), so heads trained through it learnt their first layer from a
    /// corrupted signal. It also always computes the gradient of its input, with a direct
    /// (non-GEMM) transposed convolution when the padding is non-zero: the input here is
    /// frozen encoder frames, so that work is thrown away, and it took most of the training
    /// time. Here the kernel's gradient is one GEMM and the input's another.
    /// `unfolded_conv_matches_candle_forward_and_the_finite_difference_gradient` checks both
    /// against candle's forward and against central differences.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let w = self.conv.weight(); // [H, D, 3]
        let h = w.dim(0)?;
        let zero = Tensor::zeros((b, 1, d), x.dtype(), x.device())?;
        let (prev, next) = if t > 1 {
            (
                Tensor::cat(&[&zero, &x.narrow(1, 0, t - 1)?], 1)?,
                Tensor::cat(&[&x.narrow(1, 1, t - 1)?, &zero], 1)?,
            )
        } else {
            (zero.clone(), zero)
        };
        let unfolded = Tensor::cat(&[&prev, x, &next], 2)?.reshape((b * t, 3 * d))?;
        // [H, D, 3] → [3, D, H] → [3D, H], rows in the unfolded order (tap, then channel).
        let kernel = w.permute((2, 1, 0))?.contiguous()?.reshape((3 * d, h))?;
        let mut y = unfolded.matmul(&kernel)?;
        if let Some(bias) = self.conv.bias() {
            y = y.broadcast_add(bias)?;
        }
        y.gelu_erf()?.reshape((b, t, h))
    }
}

/// Attention pooling: one learned score per frame, softmax over the valid frames.
#[derive(Debug, Clone)]
struct AttentionPool {
    score: Linear,
}

impl AttentionPool {
    fn load(cfg: &HeadConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            score: linear(cfg.hidden, 1, vb.pp("score"))?,
        })
    }

    /// `h`: [B, T, H], `mask`: [B, T] (1 valid, 0 padding) → [B, H]
    fn forward(&self, h: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let scores = self.score.forward(h)?.squeeze(D::Minus1)?;
        // Padding gets a large negative score so softmax gives it no weight.
        let penalty = ((mask - 1.0)? * 1e9)?;
        let w = candle_nn::ops::softmax_last_dim(&(scores + penalty)?)?;
        w.unsqueeze(2)?.broadcast_mul(h)?.sum(1)
    }
}

#[derive(Debug, Clone)]
pub struct Head {
    cfg: HeadConfig,
    /// Per-dimension mean and inverse std of the training frames: [D] each.
    frame_mean: Tensor,
    frame_inv_std: Tensor,
    temporal: TemporalConv,
    pool: AttentionPool,
    out: Linear,
}

impl Head {
    /// Build from a VarBuilder holding `frame_mean`, `frame_inv_std`, `temporal.conv.*`,
    /// `pool.score.*` and `out.*`.
    pub fn load(cfg: &HeadConfig, vb: VarBuilder) -> Result<Self> {
        let frame_mean =
            vb.get_with_hints(cfg.input_dim, "frame_mean", candle_nn::Init::Const(0.0))?;
        let frame_inv_std =
            vb.get_with_hints(cfg.input_dim, "frame_inv_std", candle_nn::Init::Const(1.0))?;
        let temporal = TemporalConv::load(cfg, vb.pp("temporal"))?;
        let pool = AttentionPool::load(cfg, vb.pp("pool"))?;
        let out = linear(
            2 * cfg.hidden + cfg.evidence_dim,
            cfg.n_labels,
            vb.pp("out"),
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            frame_mean,
            frame_inv_std,
            temporal,
            pool,
            out,
        })
    }

    pub fn config(&self) -> &HeadConfig {
        &self.cfg
    }

    /// This head with its temporal conv (the first layer) cut from gradient tracking, for
    /// training with that layer frozen: backpropagation then stops above it instead of
    /// computing its gradients only to leave them unused. The tensors share the variables'
    /// storage, so values set on the variables still show, and the trained weights are the
    /// ones the unfrozen graph with that layer left out of the optimiser gives.
    pub fn with_frozen_temporal(mut self) -> Self {
        self.temporal = self.temporal.detached();
        self
    }

    /// Pooled clip embedding [B, 2H] (before evidence fusion and dropout).
    pub fn embed(&self, frames: &Tensor, mask: &Tensor) -> Result<Tensor> {
        // The statistics are fixed at training time: detached, so backpropagation does not
        // reduce gradients over every frame for them.
        let x = frames
            .broadcast_sub(&self.frame_mean.detach())?
            .broadcast_mul(&self.frame_inv_std.detach())?;
        // Zero the padding after standardising, so it looks like the conv's own zero padding.
        let x = x.broadcast_mul(&mask.unsqueeze(2)?)?;
        let h = self.temporal.forward(&x)?;
        let attn = self.pool.forward(&h, mask)?;
        let valid = mask.sum_keepdim(1)?.clamp(1.0, f64::MAX)?;
        let mean = h
            .broadcast_mul(&mask.unsqueeze(2)?)?
            .sum(1)?
            .broadcast_div(&valid)?;
        Tensor::cat(&[attn, mean], 1)
    }

    /// The output layer's input [B, 2H+E]: the pooled embedding with the evidence (zeros when
    /// none is given); `forward` without dropout is `out(features)`.
    pub fn features(
        &self,
        frames: &Tensor,
        mask: &Tensor,
        evidence: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut z = self.embed(frames, mask)?;
        if self.cfg.evidence_dim > 0 {
            let e = match evidence {
                Some(e) => e.clone(),
                None => Tensor::zeros((z.dim(0)?, self.cfg.evidence_dim), DType::F32, z.device())?,
            };
            z = Tensor::cat(&[z, e], 1)?;
        }
        Ok(z)
    }

    /// The output layer's weight `[K, 2H+E]` and bias `[K]`.
    pub fn output_layer(&self) -> (&Tensor, Option<&Tensor>) {
        (self.out.weight(), self.out.bias())
    }

    /// Logits [B, K]. `frames` [B, T, D] zero-padded, `mask` [B, T], `evidence` [B, E]
    /// (ignored when the head fuses no evidence). `dropout_mask`, when training, is a
    /// [B, 2H+E] tensor of 0 or 1/(1-p) values drawn from the caller's seeded RNG (candle's
    /// own dropout is unseeded).
    pub fn forward(
        &self,
        frames: &Tensor,
        mask: &Tensor,
        evidence: Option<&Tensor>,
        dropout_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut z = self.features(frames, mask, evidence)?;
        if let Some(m) = dropout_mask {
            z = (z * m)?;
        }
        self.out.forward(&z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn padding_does_not_change_the_output() {
        let dev = Device::Cpu;
        let cfg = HeadConfig {
            input_dim: 8,
            hidden: 6,
            evidence_dim: 2,
            n_labels: 3,
            dropout: 0.0,
        };
        let mut vm = candle_nn::VarMap::new();
        let head = Head::load(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        // A non-zero frame mean, as after training: padding must still be neutral.
        vm.set_one("frame_mean", Tensor::full(0.3f32, 8, &dev).unwrap())
            .unwrap();
        let frames: Vec<f32> = (0..5 * 8)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
            .collect();
        let x = Tensor::from_vec(frames.clone(), (1, 5, 8), &dev).unwrap();
        let ev = Tensor::new(&[[0.5f32, -1.0]], &dev).unwrap();
        let a = head
            .forward(
                &x,
                &Tensor::ones((1, 5), DType::F32, &dev).unwrap(),
                Some(&ev),
                None,
            )
            .unwrap();
        // The same clip padded with 3 zero frames and masked. The conv sees zeros beyond the
        // edge in both cases, so the result must be identical.
        let mut padded = frames;
        padded.extend(std::iter::repeat_n(0.0, 3 * 8));
        let xp = Tensor::from_vec(padded, (1, 8, 8), &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 1., 1., 1., 1., 0., 0., 0.]], &dev).unwrap();
        let b = head.forward(&xp, &mask, Some(&ev), None).unwrap();
        let diff = max_abs_diff(a, b);
        assert!(diff < 1e-5, "padding changed logits by {diff}");
    }

    fn max_abs_diff(a: Tensor, b: Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn reference_of(conv: &TemporalConv, x: &Tensor) -> Tensor {
        conv.conv
            .forward(&x.transpose(1, 2).unwrap().contiguous().unwrap())
            .unwrap()
            .gelu_erf()
            .unwrap()
            .transpose(1, 2)
            .unwrap()
    }

    /// The unfolded product is candle's padded `Conv1d` + GELU, on odd sizes and one frame.
    #[test]
    fn unfolded_conv_matches_candle_forward_and_the_finite_difference_gradient() {
        let dev = Device::Cpu;
        for (b, t, d, h) in [(3usize, 7usize, 5usize, 4usize), (1, 1, 6, 3), (2, 2, 9, 5)] {
            let cfg = HeadConfig {
                input_dim: d,
                hidden: h,
                evidence_dim: 0,
                n_labels: 3,
                dropout: 0.0,
            };
            let mut vm = candle_nn::VarMap::new();
            let conv =
                TemporalConv::load(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
            // A bias that is not zero, so its broadcast is checked too.
            vm.set_one(
                "conv.bias",
                Tensor::arange(0f32, h as f32, &dev)
                    .unwrap()
                    .affine(0.1, -0.2)
                    .unwrap(),
            )
            .unwrap();
            let x: Vec<f32> = (0..b * t * d)
                .map(|i| ((i * 53 % 17) as f32 - 8.0) / 7.0)
                .collect();
            let x = Tensor::from_vec(x, (b, t, d), &dev).unwrap();
            let ours = conv.forward(&x).unwrap();
            let reference = reference_of(&conv, &x);
            assert_eq!(ours.dims(), &[b, t, h]);
            let diff = max_abs_diff(ours, reference);
            assert!(diff < 1e-5, "b={b} t={t} d={d} h={h}: differs by {diff}");
            // And the kernel's gradient (what training uses) is the loss's slope, by central
            // differences on every kernel element, for a loss that weighs each output
            // differently. (candle 0.11.1's own `Conv1d` kernel gradient fails this check on
            // these shapes, by more than 1 here: the first reason the head does not use it.)
            let r = Tensor::arange(0f32, (b * t * h) as f32, &dev)
                .unwrap()
                .affine(0.01, -0.3)
                .unwrap()
                .reshape((b, t, h))
                .unwrap();
            let weight = conv.conv.weight().clone();
            let grads = (conv.forward(&x).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let grad = grads.get(&weight).unwrap().to_vec3::<f32>().unwrap();
            let w0 = weight.to_vec3::<f32>().unwrap();
            let mut loss_at = |w: &Vec<Vec<Vec<f32>>>| -> f64 {
                vm.set_one("conv.weight", Tensor::new(w.clone(), &dev).unwrap())
                    .unwrap();
                let y = conv.forward(&x).unwrap();
                (y * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            };
            let eps = 1e-2f32;
            for hi in 0..h {
                for di in 0..d {
                    for ki in 0..3 {
                        let (mut up, mut down) = (w0.clone(), w0.clone());
                        up[hi][di][ki] += eps;
                        down[hi][di][ki] -= eps;
                        let slope = (loss_at(&up) - loss_at(&down)) / (2.0 * eps as f64);
                        let g = grad[hi][di][ki] as f64;
                        assert!(
                            (g - slope).abs() < 2e-3 + 1e-2 * slope.abs(),
                            "b={b} t={t} d={d} h={h} [{hi},{di},{ki}]: gradient {g}, slope {slope}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn combining_heads_averages_logits_or_probabilities() {
        let a = vec![vec![2.0f32, 0.0, -2.0], vec![0.0, 1.0, 0.0]];
        let b = vec![vec![0.0f32, 2.0, -2.0], vec![0.0, 3.0, 0.0]];
        // One head: its own logits, unchanged.
        assert_eq!(
            combine_logits(std::slice::from_ref(&a), EnsembleCombine::MeanLogits),
            a
        );
        let mean = combine_logits(&[a.clone(), b.clone()], EnsembleCombine::MeanLogits);
        assert_eq!(mean, vec![vec![1.0, 1.0, -2.0], vec![0.0, 2.0, 0.0]]);
        // Mean of probabilities: exp of the result sums to one and is the average of the
        // members' softmax.
        let lp = combine_logits(&[a.clone(), b.clone()], EnsembleCombine::MeanProbs);
        for (i, row) in lp.iter().enumerate() {
            let p: Vec<f32> = row.iter().map(|v| v.exp()).collect();
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");
            let pa = crate::acoustic::temperature::softmax_t(&a[i], 1.0);
            let pb = crate::acoustic::temperature::softmax_t(&b[i], 1.0);
            for j in 0..3 {
                assert!((p[j] - (pa[j] + pb[j]) / 2.0).abs() < 1e-5);
            }
        }
        assert!(combine_logits(&[], EnsembleCombine::MeanLogits).is_empty());
    }

    /// Each row of a batch must get the logits it gets alone (a strided tensor once made every
    /// row after the first wrong, so training and single-clip inference disagreed).
    #[test]
    fn batch_rows_equal_single_clip_logits() {
        let dev = Device::Cpu;
        let cfg = HeadConfig {
            input_dim: 8,
            hidden: 6,
            evidence_dim: 2,
            n_labels: 3,
            dropout: 0.0,
        };
        let vm = candle_nn::VarMap::new();
        let head = Head::load(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let clip = |seed: usize, t: usize| -> Tensor {
            let v: Vec<f32> = (0..t * 8)
                .map(|i| (((i + seed) * 37 % 11) as f32 - 5.0) / 5.0)
                .collect();
            Tensor::from_vec(v, (t, 8), &dev).unwrap()
        };
        let clips = [clip(0, 5), clip(3, 7), clip(7, 7), clip(1, 4)];
        let evidence = [[0.5f32, -1.0], [0.0, 0.3], [-0.7, 1.2], [1.5, 0.1]];
        let refs: Vec<&Tensor> = clips.iter().collect();
        let (x, mask) = crate::acoustic::head_training::pad_batch(&refs, &dev).unwrap();
        let ev = Tensor::new(&evidence, &dev).unwrap();
        let batch = head
            .forward(&x, &mask, Some(&ev), None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (i, c) in clips.iter().enumerate() {
            let t = c.dim(0).unwrap();
            let single = head
                .forward(
                    &c.unsqueeze(0).unwrap(),
                    &Tensor::ones((1, t), DType::F32, &dev).unwrap(),
                    Some(&Tensor::new(&[evidence[i]], &dev).unwrap()),
                    None,
                )
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (a, b) in batch[i].iter().zip(&single[0]) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "row {i}: batch {:?} vs single {:?}",
                    batch[i],
                    single[0]
                );
            }
        }
    }
}
