//! The pooled linear head: statistics of the frozen encoder's frames pooled over the clip
//! (mean and standard deviation per dimension, per encoder block used), standardised with the
//! training clips' statistics, then a multinomial logistic regression with an L2 penalty.
//!
//! It has no randomness at all (full-batch L-BFGS from zero weights), so
//! the same clips give the same weights; it fits in seconds, so a site can retrain it.
//!
//! ```text
//! frames of block b [T, D] ─► mean ‖ std ─┐ (for each block used)
//! evidence z-scores (optional) ───────────┴► concat ─► (x − μ) / σ ─► W x + b ─► logits [K]
//! ```
//!
//! The products run on candle tensors in f64 (gemm underneath): the objective's two matrix
//! products per iteration are the whole cost.

use candle_core::{DType, Device, Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// What the linear head reads; stored in model.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearConfig {
    /// Encoder blocks whose frames are pooled (1-based), e.g. `[3]` or `[1, 2, 3]`.
    pub blocks: Vec<usize>,
    /// Pool the standard deviation over time as well as the mean.
    pub std: bool,
    /// Standardise each pooled block vector across its own dimensions (per utterance) before
    /// the corpus standardisation: removes an overall offset and scale a recording chain puts
    /// on the representation.
    pub utterance_norm: bool,
    /// Number of evidence z-scores appended (0 = none); their names are the model's
    /// `evidence_inputs`.
    pub evidence_dim: usize,
    /// L2 penalty on standardised inputs (objective: mean weighted cross-entropy + λ/2 ‖W‖²).
    pub lambda: f64,
    /// Width of the pooled input (before the evidence).
    pub pooled_dim: usize,
    pub n_labels: usize,
}

impl LinearConfig {
    /// Width of the full input vector.
    pub fn input_dim(&self) -> usize {
        self.pooled_dim + self.evidence_dim
    }
}

/// Pool one clip's frames: for each block's frames `[T, D]`, [`pool_block`], then (with
/// `utterance_norm`) [`utterance_normalise`] of that block's vector. Blocks in the order given.
pub fn pool(blocks: &[Tensor], std: bool, utterance_norm: bool) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for frames in blocks {
        let mut v = pool_block(frames, std)?;
        if utterance_norm {
            utterance_normalise(&mut v);
        }
        out.extend(v);
    }
    Ok(out)
}

/// The mean over time of frames `[T, D]` and, with `std`, the standard deviation after it.
pub fn pool_block(frames: &Tensor, std: bool) -> Result<Vec<f32>> {
    let frames = frames.to_dtype(DType::F64)?;
    let mean = frames.mean(0)?;
    let mut v: Vec<f64> = mean.to_vec1()?;
    if std {
        let var: Vec<f64> = frames.broadcast_sub(&mean)?.sqr()?.mean(0)?.to_vec1()?;
        v.extend(var.iter().map(|x| x.max(0.0).sqrt()));
    }
    Ok(v.into_iter().map(|x| x as f32).collect())
}

/// Standardise a pooled vector across its own dimensions (zero mean, unit variance).
pub fn utterance_normalise(v: &mut [f32]) {
    let n = v.len().max(1) as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let s = (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n)
        .sqrt()
        .max(1e-9);
    v.iter_mut().for_each(|x| *x = ((*x as f64 - m) / s) as f32);
}

/// Per-dimension standardisation fitted on training rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Scaler {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
}

impl Scaler {
    /// Weighted mean and standard deviation of each column (constant columns get σ = 1).
    pub fn fit(rows: &[Vec<f32>], weights: Option<&[f64]>) -> Self {
        let d = rows.first().map_or(0, |r| r.len());
        let w = |i: usize| weights.map_or(1.0, |w| w[i]);
        let total: f64 = (0..rows.len()).map(w).sum::<f64>().max(1e-12);
        let mut mean = vec![0f64; d];
        for (i, r) in rows.iter().enumerate() {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += w(i) * v as f64 / total;
            }
        }
        let mut var = vec![0f64; d];
        for (i, r) in rows.iter().enumerate() {
            for ((s, &v), m) in var.iter_mut().zip(r).zip(&mean) {
                *s += w(i) * (v as f64 - m).powi(2) / total;
            }
        }
        Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            inv_std: var
                .iter()
                .map(|&v| {
                    let s = v.sqrt();
                    if s > 1e-8 {
                        (1.0 / s) as f32
                    } else {
                        1.0
                    }
                })
                .collect(),
        }
    }

    pub fn apply(&self, row: &[f32]) -> Vec<f32> {
        row.iter()
            .zip(&self.mean)
            .zip(&self.inv_std)
            .map(|((v, m), s)| (v - m) * s)
            .collect()
    }
}

/// Multinomial logistic regression on standardised inputs: `logits = W x + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearHead {
    pub scaler: Scaler,
    /// [K × D], row-major.
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub n_labels: usize,
}

impl LinearHead {
    pub fn input_dim(&self) -> usize {
        self.scaler.mean.len()
    }

    /// Logits of one raw (unstandardised) input vector.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        let z = self.scaler.apply(x);
        let d = z.len();
        (0..self.n_labels)
            .map(|k| {
                self.b[k]
                    + self.w[k * d..(k + 1) * d]
                        .iter()
                        .zip(&z)
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
            })
            .collect()
    }

    /// The tensors stored in model.safetensors (under `prefix`, e.g. `linear`).
    pub fn tensors(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let dev = Device::Cpu;
        let d = self.input_dim();
        Ok(vec![
            (
                format!("{prefix}.x_mean"),
                Tensor::from_slice(&self.scaler.mean, d, &dev)?,
            ),
            (
                format!("{prefix}.x_inv_std"),
                Tensor::from_slice(&self.scaler.inv_std, d, &dev)?,
            ),
            (
                format!("{prefix}.weight"),
                Tensor::from_slice(&self.w, (self.n_labels, d), &dev)?,
            ),
            (
                format!("{prefix}.bias"),
                Tensor::from_slice(&self.b, self.n_labels, &dev)?,
            ),
        ])
    }

    /// Read back what [`Self::tensors`] wrote; shapes are checked against `cfg`.
    pub fn from_tensors(
        get: &dyn Fn(&str) -> Option<Tensor>,
        prefix: &str,
        cfg: &LinearConfig,
    ) -> std::result::Result<Self, String> {
        let d = cfg.input_dim();
        let k = cfg.n_labels;
        let read = |name: &str, len: usize| read_values(get, prefix, name, len);
        Ok(Self {
            scaler: Scaler {
                mean: read("x_mean", d)?,
                inv_std: read("x_inv_std", d)?,
            },
            w: read("weight", k * d)?,
            b: read("bias", k)?,
            n_labels: k,
        })
    }
}

/// The `len` finite values of tensor `prefix.name` (from a model directory's weights), or
/// why not: missing, unreadable, another size than model.json says, or a NaN / infinity.
pub fn read_values(
    get: &dyn Fn(&str) -> Option<Tensor>,
    prefix: &str,
    name: &str,
    len: usize,
) -> std::result::Result<Vec<f32>, String> {
    let full = format!("{prefix}.{name}");
    let t = get(&full).ok_or_else(|| format!("tensor '{full}' missing"))?;
    let v = t
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| format!("tensor '{full}': {e}"))?;
    if v.len() != len {
        return Err(format!(
            "tensor '{full}' has {} values, model.json says {len}",
            v.len()
        ));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(format!("tensor '{full}' holds a NaN or infinite value"));
    }
    Ok(v)
}

/// Fit options of [`fit`].
#[derive(Clone, Debug)]
pub struct FitOptions<'a> {
    pub lambda: f64,
    pub max_iter: usize,
    /// Stop when the largest gradient entry is below this.
    pub tolerance: f64,
    /// A source prior (MAP adaptation): the penalty pulls the weights toward this head's
    /// weights, λ/2 ‖W − W_prior‖², instead of toward zero. Its weights are read as they are
    /// (on the fitted head's standardised inputs; its scaler is not used); the bias stays
    /// unpenalised. `None`: the plain L2 penalty.
    pub prior: Option<&'a LinearHead>,
    /// Outlier exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019): rows of speech outside
    /// the labels (other emotions), each with the uniform distribution over the labels as its
    /// target, so the head learns to be unsure where it has no business being sure. They are
    /// standardised with the labelled rows' statistics and do not enter the scaler.
    pub outliers: &'a [Vec<f32>],
    /// The outliers' total weight as a share of the labelled rows' total weight (0: none).
    pub outlier_weight: f64,
}

impl Default for FitOptions<'_> {
    fn default() -> Self {
        Self {
            lambda: 1e-2,
            max_iter: 500,
            tolerance: 1e-5,
            prior: None,
            outliers: &[],
            outlier_weight: 0.0,
        }
    }
}

/// Weighted, L2-penalised multinomial logistic regression, fitted by L-BFGS. Rows are standardised with the (weighted) training statistics
/// first. `weights` (one per row, e.g. a site's clips weighted up) default to 1.
///
/// `init` warm-starts from a head of the same shape fitted with another λ (same scaler).
/// With `opts.prior` the penalty is λ/2 ‖W − W_prior‖² (a MAP refit around a source head).
pub fn fit(
    rows: &[Vec<f32>],
    labels: &[usize],
    n_labels: usize,
    weights: Option<&[f64]>,
    opts: &FitOptions,
    init: Option<&LinearHead>,
) -> Result<LinearHead> {
    let n = rows.len();
    if n == 0 {
        candle_core::bail!("no training rows");
    }
    let d = rows[0].len();
    let dev = Device::Cpu;
    let scaler = match init {
        Some(h) => h.scaler.clone(),
        None => Scaler::fit(rows, weights),
    };
    let outliers: &[Vec<f32>] = if opts.outlier_weight > 0.0 {
        opts.outliers
    } else {
        &[]
    };
    if let Some(r) = outliers.iter().find(|r| r.len() != d) {
        candle_core::bail!(
            "an outlier row has {} inputs, the labelled rows {d}",
            r.len()
        );
    }
    let n_all = n + outliers.len();
    let flat: Vec<f64> = rows
        .iter()
        .chain(outliers)
        .flat_map(|r| scaler.apply(r).into_iter().map(|v| v as f64))
        .collect();
    // Augment with a column of ones so the bias is the last weight row (not penalised).
    let x = Tensor::from_vec(flat, (n_all, d), &dev)?;
    let x = Tensor::cat(&[x, Tensor::ones((n_all, 1), DType::F64, &dev)?], 1)?;
    let mut w_raw: Vec<f64> = match weights {
        Some(w) => w.to_vec(),
        None => vec![1.0; n],
    };
    let labelled: f64 = w_raw.iter().sum::<f64>();
    if !outliers.is_empty() {
        let each = opts.outlier_weight * labelled / outliers.len() as f64;
        w_raw.extend(std::iter::repeat_n(each, outliers.len()));
    }
    let total: f64 = w_raw.iter().sum::<f64>().max(1e-12);
    let sw = Tensor::from_vec(
        w_raw.iter().map(|w| w / total).collect::<Vec<_>>(),
        (n_all, 1),
        &dev,
    )?;
    // Targets: one-hot for labelled rows, uniform for outliers (the cross-entropy and its
    // gradient p − y below hold for any target distribution).
    let mut target = vec![1.0 / n_labels as f64; n_all * n_labels];
    for (i, &y) in labels.iter().enumerate() {
        let row = &mut target[i * n_labels..(i + 1) * n_labels];
        row.iter_mut().for_each(|v| *v = 0.0);
        row[y] = 1.0;
    }
    let y = Tensor::from_vec(target, (n_all, n_labels), &dev)?;
    // Penalty mask: 1 for weight rows, 0 for the bias row.
    let mut pen = vec![1f64; (d + 1) * n_labels];
    pen[d * n_labels..].iter_mut().for_each(|v| *v = 0.0);
    let pen = Tensor::from_vec(pen, (d + 1, n_labels), &dev)?;

    // The prior's weights as a [(d + 1) × K] matrix like θ (its bias row is masked out of the
    // penalty anyway).
    let prior = match opts.prior {
        Some(h) => {
            if h.n_labels != n_labels || h.w.len() != n_labels * d {
                candle_core::bail!(
                    "prior head is {} × {}, the rows need {n_labels} × {d}",
                    h.n_labels,
                    h.w.len() / h.n_labels.max(1)
                );
            }
            Some(Tensor::from_vec(
                theta_of(h, d, n_labels),
                (d + 1, n_labels),
                &dev,
            )?)
        }
        None => None,
    };
    let lambda = opts.lambda;
    let objective = |theta: &Tensor| -> Result<(f64, Tensor)> {
        let z = x.matmul(theta)?;
        let lse = {
            let m = z.max_keepdim(D::Minus1)?;
            (z.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + m)?
        };
        let p = z.broadcast_sub(&lse)?.exp()?;
        let nll = (lse - (&z * &y)?.sum_keepdim(D::Minus1)?)?;
        let loss = (nll * &sw)?.sum_all()?.to_scalar::<f64>()?;
        let theta_pen = match &prior {
            Some(p0) => ((theta - p0)? * &pen)?,
            None => (theta * &pen)?,
        };
        let reg = theta_pen.sqr()?.sum_all()?.to_scalar::<f64>()?;
        let r = (p - &y)?.broadcast_mul(&sw)?;
        let g = (x.t()?.matmul(&r)? + (theta_pen * lambda)?)?;
        Ok((loss + 0.5 * lambda * reg, g))
    };
    let dot = |a: &Tensor, b: &Tensor| -> Result<f64> { (a * b)?.sum_all()?.to_scalar::<f64>() };

    let mut theta = match init {
        Some(h) => Tensor::from_vec(theta_of(h, d, n_labels), (d + 1, n_labels), &dev)?,
        None => Tensor::zeros((d + 1, n_labels), DType::F64, &dev)?,
    };
    // L-BFGS (Nocedal & Wright, algorithm 7.4; memory 10) with a backtracking Armijo line
    // search: the objective is smooth and strongly convex, so it converges in a few hundred
    // iterations where plain accelerated gradient needs thousands at small λ.
    const MEMORY: usize = 10;
    let (mut f, mut g) = objective(&theta)?;
    let mut hist: std::collections::VecDeque<(Tensor, Tensor, f64)> = Default::default();
    for _ in 0..opts.max_iter {
        let gmax = g.abs()?.max_all()?.to_scalar::<f64>()?;
        if gmax < opts.tolerance {
            break;
        }
        // Two-loop recursion: direction = −H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, yv, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q)?;
            q = (q - (yv * a)?)?;
            alphas.push(a);
        }
        let gamma = match hist.back() {
            Some((s, yv, _)) => dot(s, yv)? / dot(yv, yv)?.max(1e-300),
            None => 1.0 / g.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt().max(1e-12),
        };
        let mut r = (q * gamma)?;
        for ((s, yv, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(yv, &r)?;
            r = (r + (s * (a - b))?)?;
        }
        let mut dir = r.neg()?;
        let mut slope = dot(&g, &dir)?;
        if slope >= 0.0 {
            // Not a descent direction (curvature information went stale): steepest descent.
            hist.clear();
            dir = g.neg()?;
            slope = dot(&g, &dir)?;
        }
        let mut step = 1.0;
        let (next, f_next, g_next) = loop {
            let cand = (&theta + (&dir * step)?)?;
            let (fc, gc) = objective(&cand)?;
            if fc <= f + 1e-4 * step * slope || step < 1e-10 {
                break (cand, fc, gc);
            }
            step *= 0.5;
        };
        let s = (&next - &theta)?;
        let yv = (&g_next - &g)?;
        let sy = dot(&s, &yv)?;
        if sy > 1e-12 {
            if hist.len() == MEMORY {
                hist.pop_front();
            }
            hist.push_back((s, yv, 1.0 / sy));
        }
        let converged = (f - f_next).abs() <= 1e-12 * f.abs().max(1.0);
        theta = next;
        f = f_next;
        g = g_next;
        if converged {
            break;
        }
    }
    let th: Vec<Vec<f64>> = theta.to_vec2()?;
    let mut w = vec![0f32; n_labels * d];
    for (j, row) in th.iter().take(d).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            w[k * d + j] = v as f32;
        }
    }
    let b = th[d].iter().map(|&v| v as f32).collect();
    Ok(LinearHead {
        scaler,
        w,
        b,
        n_labels,
    })
}

/// A head's weights and bias as θ of [`fit`]: [(d + 1) × K] row-major, row j < d holds input
/// j's weight for each label, row d the bias.
fn theta_of(h: &LinearHead, d: usize, n_labels: usize) -> Vec<f64> {
    let mut t = vec![0f64; (d + 1) * n_labels];
    for k in 0..n_labels {
        for j in 0..d {
            t[j * n_labels + k] = h.w[k * d + j] as f64;
        }
        t[d * n_labels + k] = h.b[k] as f64;
    }
    t
}

/// Fit along a path of penalties (largest first, each warm-started from the previous) and
/// return the head of each; `base` gives every option but λ.
pub fn fit_path(
    rows: &[Vec<f32>],
    labels: &[usize],
    n_labels: usize,
    weights: Option<&[f64]>,
    lambdas: &[f64],
    base: &FitOptions,
) -> Result<Vec<LinearHead>> {
    let mut out: Vec<LinearHead> = Vec::with_capacity(lambdas.len());
    for &lambda in lambdas {
        let opts = FitOptions {
            lambda,
            ..base.clone()
        };
        let h = fit(rows, labels, n_labels, weights, &opts, out.last())?;
        out.push(h);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn blobs(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let centres = [[3.0f32, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]];
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..n {
            let y = i % 3;
            let x: Vec<f32> = (0..5)
                .map(|j| {
                    let c = if j < 3 { centres[y][j] } else { 0.0 };
                    c * 10.0 + 7.0 + rng.random_range(-1.0..1.0) * 4.0
                })
                .collect();
            xs.push(x);
            ys.push(y);
        }
        (xs, ys)
    }

    #[test]
    fn separates_blobs_and_is_deterministic() {
        let (xs, ys) = blobs(90, 1);
        let h = fit(&xs, &ys, 3, None, &FitOptions::default(), None).unwrap();
        let (tx, ty) = blobs(60, 2);
        let right = tx
            .iter()
            .zip(&ty)
            .filter(|(x, &y)| crate::acoustic::head_training::argmax(&h.logits(x)) == y)
            .count();
        assert!(right >= 57, "{right} of 60");
        let again = fit(&xs, &ys, 3, None, &FitOptions::default(), None).unwrap();
        assert_eq!(h, again);
    }

    #[test]
    fn outlier_exposure_makes_the_head_unsure_on_outliers_only() {
        // Outliers lie beyond class 0 and off in inputs 3-4, which the labelled rows do not
        // use: a plain fit calls them class 0 with near certainty.
        let outliers = |n: usize, seed: u64| -> Vec<Vec<f32>> {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let centre = [52.0f32, 7.0, 7.0, 37.0, 37.0];
            (0..n)
                .map(|_| {
                    centre
                        .iter()
                        .map(|c| c + rng.random_range(-1.0..1.0) * 4.0)
                        .collect()
                })
                .collect()
        };
        let (xs, ys) = blobs(90, 1);
        let (tx, ty) = blobs(60, 2);
        let train_out = outliers(40, 5);
        let test_out = outliers(30, 6);
        let max_p = |h: &LinearHead, rows: &[Vec<f32>]| -> f32 {
            rows.iter()
                .map(|x| {
                    let p = crate::acoustic::temperature::softmax_t(&h.logits(x), 1.0);
                    p.into_iter().fold(0.0f32, f32::max)
                })
                .sum::<f32>()
                / rows.len() as f32
        };
        let right = |h: &LinearHead| {
            tx.iter()
                .zip(&ty)
                .filter(|(x, &y)| crate::acoustic::head_training::argmax(&h.logits(x)) == y)
                .count()
        };
        let plain = fit(&xs, &ys, 3, None, &FitOptions::default(), None).unwrap();
        let opts = FitOptions {
            outliers: &train_out,
            outlier_weight: 0.5,
            ..FitOptions::default()
        };
        let exposed = fit(&xs, &ys, 3, None, &opts, None).unwrap();
        assert!(
            max_p(&plain, &test_out) > 0.9,
            "{}",
            max_p(&plain, &test_out)
        );
        assert!(
            max_p(&exposed, &test_out) < 0.5,
            "{}",
            max_p(&exposed, &test_out)
        );
        assert!(right(&exposed) >= 57, "{} of 60", right(&exposed));
        assert!(max_p(&exposed, &tx) > 0.9, "{}", max_p(&exposed, &tx));
        // The outliers do not move the input standardisation, and weight 0 turns them off.
        assert_eq!(exposed.scaler, plain.scaler);
        let off = FitOptions {
            outliers: &train_out,
            outlier_weight: 0.0,
            ..FitOptions::default()
        };
        assert_eq!(fit(&xs, &ys, 3, None, &off, None).unwrap(), plain);
        let bad = FitOptions {
            outliers: &[vec![1.0; 4]],
            outlier_weight: 0.5,
            ..FitOptions::default()
        };
        assert!(fit(&xs, &ys, 3, None, &bad, None).is_err());
    }

    #[test]
    fn reaches_the_optimum_gradient_is_zero() {
        // At the optimum of mean CE + λ/2‖W‖², Σ_i (p_i − y_i) = 0 for the unpenalised bias.
        let (xs, ys) = blobs(60, 3);
        let h = fit(&xs, &ys, 3, None, &FitOptions::default(), None).unwrap();
        let mut g = [0f64; 3];
        for (x, &y) in xs.iter().zip(&ys) {
            let p = crate::acoustic::temperature::softmax_t(&h.logits(x), 1.0);
            for k in 0..3 {
                g[k] += (p[k] as f64 - if k == y { 1.0 } else { 0.0 }) / xs.len() as f64;
            }
        }
        assert!(g.iter().all(|v| v.abs() < 1e-4), "{g:?}");
    }

    #[test]
    fn stronger_penalty_shrinks_weights_and_weights_count() {
        let (xs, ys) = blobs(60, 4);
        let path = fit_path(&xs, &ys, 3, None, &[10.0, 0.01], &FitOptions::default()).unwrap();
        let norm = |h: &LinearHead| h.w.iter().map(|v| v * v).sum::<f32>();
        assert!(norm(&path[0]) < norm(&path[1]));
        // Weighting one class's rows up moves the bias toward it.
        let w: Vec<f64> = ys.iter().map(|&y| if y == 0 { 5.0 } else { 1.0 }).collect();
        let heavy = fit(
            &xs,
            &ys,
            3,
            Some(&w),
            &FitOptions {
                lambda: 10.0,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert!(heavy.b[0] - heavy.b[1] > path[0].b[0] - path[0].b[1]);
    }

    #[test]
    fn a_source_prior_pulls_the_weights_toward_it() {
        let (xs, ys) = blobs(90, 1);
        let src = fit(&xs, &ys, 3, None, &FitOptions::default(), None).unwrap();
        // A handful of new rows, where class 0 sits elsewhere (a "site").
        let (mut few, few_y) = blobs(9, 8);
        for (x, &y) in few.iter_mut().zip(&few_y) {
            if y == 0 {
                x[3] += 15.0;
            }
        }
        let dist = |a: &LinearHead, b: &LinearHead| {
            a.w.iter()
                .zip(&b.w)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f32>()
                .sqrt()
        };
        let norm = |h: &LinearHead| h.w.iter().map(|v| v * v).sum::<f32>().sqrt();
        let strong = |prior| FitOptions {
            lambda: 100.0,
            prior,
            ..Default::default()
        };
        // A strong penalty toward the source keeps its weights; toward zero it erases them.
        let kept = fit(&few, &few_y, 3, None, &strong(Some(&src)), Some(&src)).unwrap();
        let shrunk = fit(&few, &few_y, 3, None, &strong(None), Some(&src)).unwrap();
        assert!(
            dist(&kept, &src) < 0.05 * norm(&src),
            "{} vs {}",
            dist(&kept, &src),
            norm(&src)
        );
        assert!(
            norm(&shrunk) < 0.2 * norm(&src),
            "{} vs {}",
            norm(&shrunk),
            norm(&src)
        );
        // At the optimum: mean (p − y) z + λ (W − W_src) = 0 for every weight.
        let lambda = 0.05;
        let opts = FitOptions {
            lambda,
            prior: Some(&src),
            tolerance: 1e-7,
            max_iter: 2000,
            ..FitOptions::default()
        };
        let h = fit(&few, &few_y, 3, None, &opts, Some(&src)).unwrap();
        let d = h.input_dim();
        let mut g = vec![0f64; 3 * d];
        for (x, &y) in few.iter().zip(&few_y) {
            let p = crate::acoustic::temperature::softmax_t(&h.logits(x), 1.0);
            let z = h.scaler.apply(x);
            for k in 0..3 {
                let r = p[k] as f64 - if k == y { 1.0 } else { 0.0 };
                for j in 0..d {
                    g[k * d + j] += r * z[j] as f64 / few.len() as f64;
                }
            }
        }
        for (i, gi) in g.iter_mut().enumerate() {
            *gi += lambda * (h.w[i] - src.w[i]) as f64;
        }
        assert!(g.iter().all(|v| v.abs() < 1e-4), "{g:?}");
        // A prior of zero weights is the plain penalty, to the bit (its bias is not penalised).
        let zero = LinearHead {
            w: vec![0.0; src.w.len()],
            b: vec![5.0, -1.0, 2.0],
            ..src.clone()
        };
        let plain = fit(&xs, &ys, 3, None, &FitOptions::default(), None).unwrap();
        let with_zero = fit(
            &xs,
            &ys,
            3,
            None,
            &FitOptions {
                prior: Some(&zero),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(plain, with_zero);
        // A prior of the wrong shape is refused.
        let (narrow, _) = blobs(9, 9);
        let narrow: Vec<Vec<f32>> = narrow.iter().map(|r| r[..4].to_vec()).collect();
        assert!(fit(&narrow, &few_y, 3, None, &strong(Some(&src)), None).is_err());
    }

    #[test]
    fn pooling_and_round_trip() {
        let dev = Device::Cpu;
        let f = Tensor::from_vec(vec![1f32, 2.0, 3.0, 6.0], (2, 2), &dev).unwrap();
        let p = pool(std::slice::from_ref(&f), true, false).unwrap();
        assert_eq!(p, vec![2.0, 4.0, 1.0, 2.0]);
        let p = pool(&[f], true, true).unwrap();
        let m: f32 = p.iter().sum::<f32>() / 4.0;
        assert!(m.abs() < 1e-6);
        let (xs, ys) = blobs(30, 5);
        let h = fit(&xs, &ys, 3, None, &FitOptions::default(), None).unwrap();
        let cfg = LinearConfig {
            blocks: vec![3],
            std: true,
            utterance_norm: false,
            evidence_dim: 0,
            lambda: 0.01,
            pooled_dim: 5,
            n_labels: 3,
        };
        let map: std::collections::HashMap<String, Tensor> =
            h.tensors("linear").unwrap().into_iter().collect();
        let back = LinearHead::from_tensors(&|n| map.get(n).cloned(), "linear", &cfg).unwrap();
        assert_eq!(back, h);
        let bad = LinearConfig {
            pooled_dim: 6,
            ..cfg
        };
        let e = LinearHead::from_tensors(&|n| map.get(n).cloned(), "linear", &bad).unwrap_err();
        assert!(e.contains("linear.x_mean"), "{e}");
    }
}
