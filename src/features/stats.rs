//! Small statistics helpers over reusable scratch buffers (no allocation once grown).

/// Percentile (q in 0..=1, linear interpolation) of `values`, using `scratch` for sorting.
pub fn percentile(
    scratch: &mut Vec<f64>,
    values: impl IntoIterator<Item = f64>,
    q: f64,
) -> Option<f64> {
    scratch.clear();
    scratch.extend(values.into_iter().filter(|v| v.is_finite()));
    sorted_percentile(scratch, q)
}

/// Sorts `v` in place and returns its q-percentile (linear interpolation).
pub fn sorted_percentile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(|a, b| a.total_cmp(b));
    Some(percentile_of_sorted(v, q))
}

pub fn percentile_of_sorted(v: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Population standard deviation.
pub fn std_dev(v: &[f64]) -> Option<f64> {
    let m = mean(v)?;
    Some((v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt())
}

/// Least-squares slope of y over x.
pub fn slope(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() < 2 || x.len() != y.len() {
        return None;
    }
    let (mx, my) = (mean(x)?, mean(y)?);
    let sxx: f64 = x.iter().map(|a| (a - mx) * (a - mx)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}
