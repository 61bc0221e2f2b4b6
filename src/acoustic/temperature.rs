//! Temperature scaling (Guo et al. 2017): one scalar T fitted on held-out logits so that
//! softmax(logits / T) gives probabilities that mean what they say.

use crate::metrics::expected_calibration_error;

/// Softmax of `logits / temperature` (the one softmax, [`crate::math::softmax_t`]).
pub use crate::math::softmax_t;

/// The temperature minimising the negative log-likelihood of `labels` (golden-section search
/// over log T in [ln 0.05, ln 20]; the NLL is unimodal in T).
pub fn fit_temperature(logits: &[Vec<f32>], labels: &[usize]) -> f32 {
    if logits.is_empty() {
        return 1.0;
    }
    let f = |log_t: f64| mean_nll(logits, labels, log_t.exp() as f32);
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    for _ in 0..60 {
        if f(c) < f(d) {
            b = d;
        } else {
            a = c;
        }
        c = b - g * (b - a);
        d = a + g * (b - a);
    }
    ((a + b) / 2.0).exp() as f32
}

/// ECE (15 bins) of the top-label confidence at a temperature.
pub fn ece_at(logits: &[Vec<f32>], labels: &[usize], temperature: f32) -> f64 {
    let mut conf = Vec::with_capacity(logits.len());
    let mut ok = Vec::with_capacity(logits.len());
    for (l, &y) in logits.iter().zip(labels) {
        let p = softmax_t(l, temperature);
        let (i, c) = p
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        conf.push(c as f64);
        ok.push(i == y);
    }
    expected_calibration_error(&conf, &ok, 15)
}

/// Mean cross-entropy of logits (unweighted), for reporting.
pub fn mean_nll(logits: &[Vec<f32>], labels: &[usize], temperature: f32) -> f64 {
    let mut total = 0.0;
    for (l, &y) in logits.iter().zip(labels) {
        let m = l
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b / temperature));
        let lse = m + l
            .iter()
            .map(|&x| (x / temperature - m).exp())
            .sum::<f32>()
            .ln();
        total += (lse - l[y] / temperature) as f64;
    }
    total / logits.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_temperature_of_overconfident_logits() {
        // Logits that are calibrated at T = 1, then scaled by 3 (over-confident): the fit
        // must find T ≈ 3 and lower the ECE.
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        for _ in 0..3000 {
            let base: Vec<f32> = (0..3).map(|_| (next() * 3.0) as f32).collect();
            let p = softmax_t(&base, 1.0);
            let u = next() as f32;
            let y = if u < p[0] {
                0
            } else if u < p[0] + p[1] {
                1
            } else {
                2
            };
            logits.push(base.iter().map(|v| v * 3.0).collect::<Vec<f32>>());
            labels.push(y);
        }
        let t = fit_temperature(&logits, &labels);
        assert!((t - 3.0).abs() < 0.35, "fitted T = {t}");
        assert!(ece_at(&logits, &labels, t) < ece_at(&logits, &labels, 1.0));
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax_t(&[1000.0, -5.0, 3.0], 0.7);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
