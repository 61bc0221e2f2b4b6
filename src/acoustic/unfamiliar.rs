//! Unfamiliarity: how far a clip's pooled encoder features lie from the training clips'.
//!
//! The reference is a shrinkage Gaussian fitted on the training clips' standardised pooled
//! features: the covariance is its top `k` principal directions plus an isotropic remainder
//! (probabilistic PCA, Tipping & Bishop 1999) — a low-rank-plus-diagonal shrinkage estimate
//! that stays invertible with fewer clips than dimensions. A clip's raw distance is its
//! Mahalanobis distance under that covariance divided by √D (so a typical point of the
//! reference lies near 1 whatever D is); the score divides it by the median raw distance of
//! held-out clips (speakers the reference never saw) and is ≥ 0: about 1 for a clip as
//! familiar as a new speaker of the training corpus, larger the further out it lies.

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Small numbers of the reference, stored in model.json (the vectors go to model.safetensors).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnfamiliarityConfig {
    /// Principal directions kept.
    pub components: usize,
    pub dim: usize,
    /// Variance of the remainder outside the kept directions.
    pub residual_var: f64,
    /// Median raw distance of held-out clips: the score's unit.
    pub reference: f64,
    /// What the reference and its unit were fitted on.
    pub fitted_on: String,
    /// The pooled vector it reads; absent: the linear classifier's own input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<PooledInput>,
}

/// A pooled vector of a clip: [`super::linear::pool`] of encoder `blocks` (mean and standard
/// deviation), optionally normalised per utterance, then (with `evidence`) the evidence z-scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PooledInput {
    pub blocks: Vec<usize>,
    pub utterance_norm: bool,
    pub evidence: bool,
}

impl PooledInput {
    /// What the attention classifier's unfamiliarity reads: blocks 1 to `last`, per-utterance
    /// normalised, with the evidence (the linear classifier's default input).
    pub fn for_blocks(last: usize) -> Self {
        Self {
            blocks: (1..=last.max(1)).collect(),
            utterance_norm: true,
            evidence: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Unfamiliarity {
    pub cfg: UnfamiliarityConfig,
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    /// [components × dim], orthonormal rows.
    pub directions: Vec<f32>,
    /// Variance along each kept direction.
    pub variances: Vec<f32>,
}

impl Unfamiliarity {
    /// Fit on rows of pooled features; `reference` is left at 1 (see [`Self::set_reference`]).
    pub fn fit(rows: &[Vec<f32>], components: usize, fitted_on: String) -> Result<Self> {
        let n = rows.len();
        if n < 2 {
            candle_core::bail!("unfamiliarity reference needs at least 2 clips, got {n}");
        }
        let d = rows[0].len();
        let scaler = super::linear::Scaler::fit(rows, None);
        let dev = Device::Cpu;
        let flat: Vec<f64> = rows
            .iter()
            .flat_map(|r| scaler.apply(r).into_iter().map(|v| v as f64))
            .collect();
        let x = Tensor::from_vec(flat, (n, d), &dev)?;
        let trace = x.sqr()?.sum_all()?.to_scalar::<f64>()? / n as f64;
        let k = components.min(d.saturating_sub(1)).min(n - 1).max(1);
        let (dirs, vars) = if n < d {
            // Fewer clips than dimensions: the eigenvectors of the n × n Gram matrix X Xᵀ / n
            // give those of the covariance (v = Xᵀu / ‖Xᵀu‖, same eigenvalues) at a fraction
            // of the cost.
            let gram = (x.matmul(&x.t()?)? / n as f64)?;
            let (u, vars) = top_eigen(&gram, k)?;
            let u = Tensor::from_vec(u, (k, n), &dev)?;
            let v = u.matmul(&x)?; // [k, d]
            let norms = v.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            let v = v.broadcast_div(&norms)?;
            (v.flatten_all()?.to_vec1::<f64>()?, vars)
        } else {
            let cov = (x.t()?.matmul(&x)? / n as f64)?;
            top_eigen(&cov, k)?
        };
        let kept: f64 = vars.iter().sum();
        let residual_var = ((trace - kept) / (d - k).max(1) as f64).max(1e-6);
        Ok(Self {
            cfg: UnfamiliarityConfig {
                components: k,
                dim: d,
                residual_var,
                reference: 1.0,
                fitted_on,
                input: None,
            },
            mean: scaler.mean,
            inv_std: scaler.inv_std,
            directions: dirs.into_iter().map(|v| v as f32).collect(),
            variances: vars.into_iter().map(|v| v as f32).collect(),
        })
    }

    /// Mahalanobis distance / √D under the shrinkage covariance (before the reference unit).
    pub fn raw(&self, x: &[f32]) -> f64 {
        let d = self.cfg.dim;
        let z: Vec<f64> = x
            .iter()
            .zip(&self.mean)
            .zip(&self.inv_std)
            .map(|((v, m), s)| ((v - m) * s) as f64)
            .collect();
        let total: f64 = z.iter().map(|v| v * v).sum();
        let mut inside = 0.0;
        let mut m2 = 0.0;
        for (c, &var) in self.variances.iter().enumerate() {
            let p: f64 = self.directions[c * d..(c + 1) * d]
                .iter()
                .zip(&z)
                .map(|(a, b)| *a as f64 * b)
                .sum();
            inside += p * p;
            m2 += p * p / (var as f64).max(1e-9);
        }
        m2 += (total - inside).max(0.0) / self.cfg.residual_var;
        (m2 / d as f64).sqrt()
    }

    /// The score: raw distance in units of the held-out median (≥ 0).
    pub fn score(&self, x: &[f32]) -> f32 {
        (self.raw(x) / self.cfg.reference.max(1e-9)) as f32
    }

    /// Set the unit to the median raw distance of clips the reference was not fitted on.
    pub fn set_reference(&mut self, held_out_raw: &[f64]) {
        if let Some(m) = median(held_out_raw) {
            if m > 0.0 {
                self.cfg.reference = m;
            }
        }
    }

    pub fn tensors(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let dev = Device::Cpu;
        let (d, k) = (self.cfg.dim, self.cfg.components);
        Ok(vec![
            (
                format!("{prefix}.mean"),
                Tensor::from_slice(&self.mean, d, &dev)?,
            ),
            (
                format!("{prefix}.inv_std"),
                Tensor::from_slice(&self.inv_std, d, &dev)?,
            ),
            (
                format!("{prefix}.directions"),
                Tensor::from_slice(&self.directions, (k, d), &dev)?,
            ),
            (
                format!("{prefix}.variances"),
                Tensor::from_slice(&self.variances, k, &dev)?,
            ),
        ])
    }

    pub fn from_tensors(
        get: &dyn Fn(&str) -> Option<Tensor>,
        prefix: &str,
        cfg: &UnfamiliarityConfig,
    ) -> std::result::Result<Self, String> {
        let read = |name: &str, len: usize| super::linear::read_values(get, prefix, name, len);
        let (d, k) = (cfg.dim, cfg.components);
        Ok(Self {
            cfg: cfg.clone(),
            mean: read("mean", d)?,
            inv_std: read("inv_std", d)?,
            directions: read("directions", k * d)?,
            variances: read("variances", k)?,
        })
    }
}

/// The reference of a model and its routing threshold, fitted the one way every trainer does
/// it: the reference on all `rows`; its unit (the median raw distance) from each fold's
/// held-out rows scored by a reference fitted without them (`folds[i]` = the rows held out
/// by fold i, e.g. one per speaker fold); the threshold = the `1 − unfamiliar_fraction`
/// quantile of those held-out scores.
pub fn fit_with_threshold(
    rows: &[Vec<f32>],
    folds: &[Vec<usize>],
    components: usize,
    unfamiliar_fraction: f64,
    fitted_on: String,
) -> Result<(Unfamiliarity, Option<f32>)> {
    let f = fit_held_out(rows, folds, components, unfamiliar_fraction, fitted_on)?;
    Ok((f.model, f.threshold))
}

/// [`fit_with_threshold`] keeping what it fitted on the way: each fold's reference, so that a
/// held-out row, or a shifted copy of one (a field-chain view of a held-out clip), can be
/// scored by a reference that never saw its speakers, in the served model's unit.
pub struct HeldOutUnfamiliarity {
    pub model: Unfamiliarity,
    pub threshold: Option<f32>,
    /// Per fold: its held-out rows and the reference fitted without them.
    folds: Vec<(Vec<usize>, Unfamiliarity)>,
}

impl HeldOutUnfamiliarity {
    /// The held-out score of `x`, a vector of (or made from) row `row`: scored by the reference
    /// of the fold that held `row` out, in the served model's unit; `None` when no fold held
    /// it out.
    pub fn held_out_score(&self, row: usize, x: &[f32]) -> Option<f32> {
        let (_, u) = self.folds.iter().find(|(rows, _)| rows.contains(&row))?;
        Some((u.raw(x) / self.model.cfg.reference.max(1e-9)) as f32)
    }
}

/// See [`fit_with_threshold`] and [`HeldOutUnfamiliarity`].
pub fn fit_held_out(
    rows: &[Vec<f32>],
    folds: &[Vec<usize>],
    components: usize,
    unfamiliar_fraction: f64,
    fitted_on: String,
) -> Result<HeldOutUnfamiliarity> {
    let mut held = Vec::new();
    let mut fold_refs = Vec::new();
    for fold in folds {
        let keep: Vec<Vec<f32>> = (0..rows.len())
            .filter(|i| !fold.contains(i))
            .map(|i| rows[i].clone())
            .collect();
        if keep.len() < 2 || fold.is_empty() {
            continue;
        }
        let u = Unfamiliarity::fit(&keep, components, String::new())?;
        held.extend(fold.iter().map(|&i| u.raw(&rows[i])));
        fold_refs.push((fold.clone(), u));
    }
    let mut u = Unfamiliarity::fit(
        rows,
        components,
        format!(
            "{fitted_on}; unit = median of {} held-out clips ({} folds)",
            held.len(),
            folds.len()
        ),
    )?;
    u.set_reference(&held);
    let mut scores: Vec<f64> = held.iter().map(|r| r / u.cfg.reference).collect();
    scores.sort_by(f64::total_cmp);
    let q = ((1.0 - unfamiliar_fraction) * scores.len() as f64) as usize;
    let threshold = scores
        .get(q.min(scores.len().saturating_sub(1)))
        .map(|&t| t as f32);
    Ok(HeldOutUnfamiliarity {
        model: u,
        threshold,
        folds: fold_refs,
    })
}

/// Median of finite values (None when there are none).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// Top-`k` eigenpairs of a symmetric positive semi-definite matrix by block subspace
/// iteration with Rayleigh–Ritz (rows of the returned [k × D] are the directions, largest
/// variance first). Deterministic: starts from a fixed basis.
fn top_eigen(cov: &Tensor, k: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let d = cov.dim(0)?;
    // Fixed, well-spread start: cosines of different frequencies.
    let start: Vec<f64> = (0..d * k)
        .map(|i| {
            let (r, c) = (i / k, i % k);
            ((r as f64 + 0.5) * (c as f64 + 1.0) * std::f64::consts::PI / d as f64).cos()
                + if r % (k + 1) == c { 0.5 } else { 0.0 }
        })
        .collect();
    let mut q = orthonormal_columns(&Tensor::from_vec(start, (d, k), cov.device())?)?;
    for _ in 0..100 {
        q = orthonormal_columns(&cov.matmul(&q)?)?;
    }
    // Rayleigh–Ritz: eigen-decompose the small k × k projection with Jacobi rotations.
    let small: Vec<Vec<f64>> = q.t()?.matmul(&cov.matmul(&q)?)?.to_vec2()?;
    let (vals, vecs) = jacobi_eigen(small);
    let qv: Vec<Vec<f64>> = q.to_vec2()?;
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
    let mut dirs = Vec::with_capacity(k * d);
    for &c in &order {
        for row in qv.iter() {
            dirs.push((0..k).map(|j| row[j] * vecs[j][c]).sum::<f64>());
        }
    }
    let vars = order.iter().map(|&c| vals[c].max(0.0)).collect();
    Ok((dirs, vars))
}

/// Modified Gram–Schmidt on the columns of [D × k].
fn orthonormal_columns(m: &Tensor) -> Result<Tensor> {
    let (d, k) = m.dims2()?;
    let rows: Vec<Vec<f64>> = m.to_vec2()?;
    let mut cols: Vec<Vec<f64>> = (0..k)
        .map(|c| rows.iter().map(|r| r[c]).collect())
        .collect();
    for c in 0..k {
        for p in 0..c {
            let dot: f64 = cols[c].iter().zip(&cols[p]).map(|(a, b)| a * b).sum();
            let prev = cols[p].clone();
            cols[c]
                .iter_mut()
                .zip(&prev)
                .for_each(|(a, b)| *a -= dot * b);
        }
        let norm = cols[c].iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-12 {
            cols[c].iter_mut().for_each(|a| *a /= norm);
        } else {
            // A degenerate direction: replace it with a unit vector orthogonal to the rest.
            cols[c] = (0..d).map(|i| if i == c { 1.0 } else { 0.0 }).collect();
        }
    }
    let flat: Vec<f64> = (0..d)
        .flat_map(|r| cols.iter().map(move |c| c[r]))
        .collect();
    Tensor::from_vec(flat, (d, k), m.device())
}

/// Eigenvalues and eigenvectors (columns) of a small symmetric matrix by cyclic Jacobi.
fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (rp, rq) = (a[p].clone(), a[q].clone());
                for (k, (apk, aqk)) in rp.into_iter().zip(rq).enumerate() {
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    fn gaussian_rows(n: usize, d: usize, shift: f32, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let nd = Normal::new(0.0f32, 1.0).unwrap();
        (0..n)
            .map(|_| {
                // Strong correlation between the first two dimensions.
                let a = nd.sample(&mut rng);
                (0..d)
                    .map(|j| match j {
                        0 => a * 3.0,
                        1 => a * 3.0 + 0.1 * nd.sample(&mut rng),
                        _ => nd.sample(&mut rng),
                    } + shift)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn finds_the_leading_direction() {
        let rows = gaussian_rows(400, 6, 0.0, 1);
        let u = Unfamiliarity::fit(&rows, 2, "test".into()).unwrap();
        let d0 = &u.directions[..6];
        // The standardised first two dimensions move together: direction ≈ (1, 1, 0…)/√2.
        assert!(
            (d0[0].abs() - 0.707).abs() < 0.05 && (d0[1].abs() - 0.707).abs() < 0.05,
            "{d0:?}"
        );
        assert!(
            u.variances[0] > 1.8 && u.variances[0] < 2.1,
            "{:?}",
            u.variances
        );
    }

    #[test]
    fn shifted_and_decorrelated_points_score_higher() {
        let rows = gaussian_rows(300, 16, 0.0, 2);
        let mut u = Unfamiliarity::fit(&rows, 4, "test".into()).unwrap();
        let held: Vec<f64> = gaussian_rows(100, 16, 0.0, 3)
            .iter()
            .map(|r| u.raw(r))
            .collect();
        u.set_reference(&held);
        let same: f32 = gaussian_rows(100, 16, 0.0, 4)
            .iter()
            .map(|r| u.score(r))
            .sum::<f32>()
            / 100.0;
        let far: f32 = gaussian_rows(100, 16, 1.5, 5)
            .iter()
            .map(|r| u.score(r))
            .sum::<f32>()
            / 100.0;
        assert!((same - 1.0).abs() < 0.15, "{same}");
        assert!(far > 1.4 * same, "{far} vs {same}");
        // The centre of the training cloud is the most familiar point of all.
        assert!(u.score(&[0f32; 16]) < 0.5, "{}", u.score(&[0f32; 16]));
    }

    #[test]
    fn fewer_clips_than_dimensions_gives_eigenvectors_of_the_covariance() {
        let rows = gaussian_rows(20, 50, 0.0, 7);
        let u = Unfamiliarity::fit(&rows, 5, "test".into()).unwrap();
        let z: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .zip(&u.mean)
                    .zip(&u.inv_std)
                    .map(|((v, m), s)| ((v - m) * s) as f64)
                    .collect()
            })
            .collect();
        for c in 0..5 {
            let v = &u.directions[c * 50..(c + 1) * 50];
            // C v = (1/n) Σ z (z·v) should equal λ v.
            let mut cv = vec![0f64; 50];
            for r in &z {
                let p: f64 = r.iter().zip(v).map(|(a, b)| a * *b as f64).sum();
                for (o, a) in cv.iter_mut().zip(r) {
                    *o += a * p / 20.0;
                }
            }
            let lam = u.variances[c] as f64;
            let err: f64 = cv
                .iter()
                .zip(v)
                .map(|(a, b)| (a - lam * *b as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                err < 1e-3 * lam.max(1.0),
                "direction {c}: residual {err}, λ {lam}"
            );
        }
    }

    #[test]
    fn round_trip_through_tensors() {
        let rows = gaussian_rows(50, 8, 0.0, 6);
        let u = Unfamiliarity::fit(&rows, 3, "test".into()).unwrap();
        let map: std::collections::HashMap<String, Tensor> =
            u.tensors("unfamiliarity").unwrap().into_iter().collect();
        let back =
            Unfamiliarity::from_tensors(&|n| map.get(n).cloned(), "unfamiliarity", &u.cfg).unwrap();
        assert_eq!(back, u);
    }
}
