//! The small numeric helpers every stage shares: argmax, softmax, log-softmax. One copy each
//! (the acoustic head, the LLM's label scores, the fusion, refinement and ASR decoding all
//! use these), generic over `f32` / `f64` through `num_traits::Float` (already built for
//! candle).

use num_traits::Float;

pub mod gelu;

/// Index of the largest value, the first one on ties; NaN never wins. 0 for an empty slice
/// or one that holds only −∞ / NaN (callers that must tell those apart check the value).
pub fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    let mut best: Option<(usize, T)> = None;
    for (i, &x) in v.iter().enumerate() {
        // `x > b` is false for NaN, so a NaN is never taken over a number.
        let better = match best {
            None => x.partial_cmp(&x).is_some(), // not NaN
            Some((_, b)) => x > b,
        };
        if better {
            best = Some((i, x));
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// softmax(v / temperature), stable (the maximum is subtracted first). The temperature is
/// floored at 1e-3.
pub fn softmax_t<T: Float>(v: &[T], temperature: T) -> Vec<T> {
    let t = temperature.max(T::from(1e-3).expect("1e-3 is representable"));
    let m = v
        .iter()
        .fold(T::neg_infinity(), |a, &b| if b / t > a { b / t } else { a });
    let e: Vec<T> = v.iter().map(|&x| (x / t - m).exp()).collect();
    let s = e.iter().fold(T::zero(), |a, &b| a + b);
    e.into_iter().map(|x| x / s).collect()
}

/// softmax(v).
pub fn softmax<T: Float>(v: &[T]) -> Vec<T> {
    softmax_t(v, T::one())
}

/// The maximum and ln Σ exp(v − max).
fn max_and_lse<T: Float>(v: &[T]) -> (T, T) {
    let max = v.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
    let lse = v.iter().fold(T::zero(), |a, &b| a + (b - max).exp()).ln();
    (max, lse)
}

/// ln softmax(v), stable: `v[i] − max − ln Σ exp(v − max)`.
pub fn log_softmax<T: Float>(v: &[T]) -> Vec<T> {
    let (max, lse) = max_and_lse(v);
    v.iter().map(|&x| x - max - lse).collect()
}

/// ln softmax(v)\[index\] without the whole vector (an LLM's vocabulary); −∞ for an index
/// past the end.
pub fn log_softmax_at<T: Float>(v: &[T], index: usize) -> T {
    match v.get(index) {
        Some(&x) => {
            let (max, lse) = max_and_lse(v);
            x - max - lse
        }
        None => T::neg_infinity(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_ties_and_never_nan() {
        assert_eq!(argmax(&[1.0f32, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, f32::NAN, 0.7]), 3);
        assert_eq!(argmax(&[f64::NEG_INFINITY, 2.0]), 1);
        assert_eq!(argmax::<f32>(&[]), 0);
        assert_eq!(argmax(&[2u32, 9, 4]), 1);
    }

    #[test]
    fn softmax_and_log_softmax_agree_and_survive_large_values() {
        let v = [1000.0f64, 999.0, 990.0];
        let p = softmax(&v);
        let lp = log_softmax(&v);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        for (a, b) in p.iter().zip(&lp) {
            assert!((a.ln() - b).abs() < 1e-12, "{a} {b}");
        }
        assert!((p[0] / p[1] - std::f64::consts::E).abs() < 1e-9);
        assert_eq!(log_softmax_at(&v, 2), lp[2]);
        assert_eq!(log_softmax_at(&v, 3), f64::NEG_INFINITY);
        let hot = softmax_t(&[1.0f32, 0.0], 0.5);
        assert!((hot[0] / hot[1] - (2.0f32).exp()).abs() < 1e-4);
    }
}
