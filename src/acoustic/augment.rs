//! Training-time perturbations of how field recordings arrive: gain over a wide range, noise
//! at a random SNR, telephone band-pass, a short echo, a small time shift. All from the
//! caller's seeded RNG.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Second-order section (RBJ cookbook), direct form I.
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
}

impl Biquad {
    fn new(kind: &str, f0: f64, q: f64, sr: f64) -> Self {
        let w = std::f64::consts::TAU * f0 / sr;
        let (sin, cos) = w.sin_cos();
        let alpha = sin / (2.0 * q);
        let a0 = 1.0 + alpha;
        let (b0, b1, b2) = if kind == "hp" {
            ((1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0)
        } else {
            ((1.0 - cos) / 2.0, 1.0 - cos, (1.0 - cos) / 2.0)
        };
        Self {
            b: [b0 / a0, b1 / a0, b2 / a0],
            a: [-2.0 * cos / a0, (1.0 - alpha) / a0],
        }
    }

    fn run(&self, x: &mut [f32]) {
        let (mut x1, mut x2, mut y1, mut y2) = (0.0, 0.0, 0.0, 0.0);
        for v in x.iter_mut() {
            let x0 = *v as f64;
            let y0 =
                self.b[0] * x0 + self.b[1] * x1 + self.b[2] * x2 - self.a[0] * y1 - self.a[1] * y2;
            (x2, x1, y2, y1) = (x1, x0, y1, y0);
            *v = y0 as f32;
        }
    }
}

/// Telephone channel: 300–3400 Hz band-pass (two sections each side).
pub fn telephone(x: &mut [f32], sr: u32) {
    for _ in 0..2 {
        Biquad::new("hp", 300.0, 0.707, sr as f64).run(x);
        Biquad::new("lp", 3400.0, 0.707, sr as f64).run(x);
    }
}

/// White noise at `snr_db` relative to the signal's RMS.
pub fn add_noise(x: &mut [f32], snr_db: f64, rng: &mut ChaCha8Rng) {
    let rms = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt();
    let sd = rms / 10f64.powf(snr_db / 20.0);
    if let Ok(n) = Normal::new(0.0, sd) {
        for v in x.iter_mut() {
            *v += n.sample(rng) as f32;
        }
    }
}

/// One echo `delay_s` later at `gain`.
pub fn echo(x: &[f32], sr: u32, delay_s: f64, gain: f32) -> Vec<f32> {
    let d = (delay_s * sr as f64) as usize;
    let mut y = x.to_vec();
    for i in d..x.len() {
        y[i] += gain * x[i - d];
    }
    y
}

/// Speed perturbation (Ko et al., "Audio augmentation for speech recognition", Interspeech
/// 2015): the clip played `factor` times faster — shorter by that factor and every frequency,
/// F0 included, raised by it — by band-limited resampling from `sr · factor` to `sr`.
pub fn speed(x: &[f32], sr: u32, factor: f64) -> Result<Vec<f32>, crate::audio::AudioError> {
    let from = (sr as f64 * factor).round() as u32;
    crate::audio::resample(x, from, sr)
}

/// A random perturbation of a clip (the clean clip is view 0 elsewhere; this makes the others).
pub fn perturb(x: &[f32], sr: u32, rng: &mut ChaCha8Rng) -> Vec<f32> {
    // Time shift: drop up to 80 ms at the start.
    let shift = rng
        .random_range(0..(0.08 * sr as f64) as usize + 1)
        .min(x.len() / 4);
    let mut y = x[shift..].to_vec();
    if rng.random_bool(0.3) {
        telephone(&mut y, sr);
    }
    if rng.random_bool(0.3) {
        y = echo(
            &y,
            sr,
            rng.random_range(0.04..0.2),
            rng.random_range(0.15..0.5),
        );
    }
    if rng.random_bool(0.7) {
        add_noise(&mut y, rng.random_range(12.0..30.0), rng);
    }
    let gain = 10f32.powf(rng.random_range(-12.0f32..12.0) / 20.0);
    for v in y.iter_mut() {
        *v = (*v * gain).clamp(-1.0, 1.0);
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn tone(f: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (std::f64::consts::TAU * f * i as f64 / 16_000.0).sin() as f32 * 0.5)
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn telephone_band_keeps_speech_band_and_cuts_low_and_high() {
        for (f, keep) in [(100.0, false), (1000.0, true), (6000.0, false)] {
            let mut x = tone(f, 16_000);
            telephone(&mut x, 16_000);
            let ratio = rms(&x[4000..]) / rms(&tone(f, 16_000)[4000..]);
            assert_eq!(ratio > 0.7, keep, "{f} Hz kept {ratio:.3}");
        }
    }

    /// Zero crossings per second of the middle half of `x` (two per period of a tone).
    fn crossing_rate(x: &[f32]) -> f64 {
        let mid = &x[x.len() / 4..3 * x.len() / 4];
        let n = mid
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        n as f64 / 2.0 / (mid.len() as f64 / 16_000.0)
    }

    #[test]
    fn speed_scales_length_and_pitch_by_the_factor() {
        let x = tone(200.0, 16_000);
        for factor in [0.9, 1.1] {
            let y = speed(&x, 16_000, factor).unwrap();
            let want = 16_000.0 / factor;
            assert!(
                (y.len() as f64 - want).abs() <= 2.0,
                "{factor}: {} samples",
                y.len()
            );
            let f = crossing_rate(&y);
            assert!((f - 200.0 * factor).abs() < 2.0, "{factor}: {f:.1} Hz");
            // Band-limited: the tone keeps its level.
            assert!((rms(&y) / rms(&x) - 1.0).abs() < 0.02);
        }
    }

    #[test]
    fn noise_is_at_the_requested_snr() {
        let clean = tone(440.0, 32_000);
        let mut noisy = clean.clone();
        add_noise(&mut noisy, 20.0, &mut ChaCha8Rng::seed_from_u64(1));
        let noise: Vec<f32> = noisy.iter().zip(&clean).map(|(a, b)| a - b).collect();
        let snr = 20.0 * (rms(&clean) / rms(&noise)).log10();
        assert!((snr - 20.0).abs() < 0.5, "snr {snr}");
    }
}
