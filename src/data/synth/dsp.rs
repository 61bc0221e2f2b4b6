//! Post-processing of espeak-ng's output: tremor, vocal harshness, room, noise and level.
//!
//! espeak-ng's voice is steady and clean; these steps add what separates an aroused voice
//! (tremor, harsher spectral balance) and what separates a recording from a synthesiser
//! (reverb, noise, arbitrary level).

use std::f64::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use realfft::RealFftPlanner;

/// Vibrato and amplitude modulation at `hz`: vibrato through a time-varying fractional
/// delay (its derivative bends the pitch by up to `cents`), amplitude by `1 ± am`.
pub fn tremor(x: &[f32], rate: u32, hz: f64, cents: f64, am: f64, phase: f64) -> Vec<f32> {
    if hz <= 0.0 || (cents <= 0.0 && am <= 0.0) {
        return x.to_vec();
    }
    let sr = rate as f64;
    let w = 2.0 * PI * hz / sr;
    // Delay d(n) = D (1 + sin(w n)); the instantaneous pitch ratio is 1 - d'(n) = 1 - D w cos(),
    // so a peak deviation of 2^(cents/1200) - 1 needs D = deviation / w.
    let depth = (2f64.powf(cents / 1200.0) - 1.0) / w;
    (0..x.len())
        .map(|n| {
            let t = n as f64;
            let d = depth * (1.0 + (w * t + phase).sin());
            let pos = t - d;
            let sample = if pos < 0.0 {
                0.0
            } else {
                let i = pos.floor() as usize;
                let frac = (pos - i as f64) as f32;
                let a = x.get(i).copied().unwrap_or(0.0);
                let b = x.get(i + 1).copied().unwrap_or(0.0);
                a + (b - a) * frac
            };
            sample * (1.0 + am * (w * t + phase + 0.7).sin()) as f32
        })
        .collect()
}

/// Harsher spectral balance for effortful speech: pre-emphasis (more energy above 1 kHz)
/// and soft clipping (flattened peaks, added upper harmonics), both scaled by `h` in 0..1.
pub fn harshen(x: &[f32], h: f64) -> Vec<f32> {
    if h <= 0.0 {
        return x.to_vec();
    }
    let coef = (0.9 * h) as f32;
    let mut prev = 0.0f32;
    let emph: Vec<f32> = x
        .iter()
        .map(|&s| {
            let y = s - coef * prev;
            prev = s;
            y
        })
        .collect();
    let peak = peak_abs(&emph).max(1e-9);
    let drive = 1.0 + 5.0 * h as f32;
    let norm = drive.tanh();
    emph.iter()
        .map(|&s| (drive * s / peak).tanh() / norm)
        .collect()
}

/// Add a short synthetic room: the signal convolved with an exponentially decaying noise
/// impulse response (energy normalised, `rt60_s` to decay by 60 dB), mixed in at `wet`.
pub fn reverb(x: &[f32], rate: u32, rt60_s: f64, wet: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let len = ((rt60_s * rate as f64) as usize).max(2);
    let decay = 6.91 / len as f64; // ln(1000): 60 dB over `len` samples
    let mut ir: Vec<f32> = (0..len)
        .map(|n| {
            let g: f64 = StandardNormal.sample(rng);
            (g * (-decay * n as f64).exp()) as f32
        })
        .collect();
    let energy: f32 = ir.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-9);
    ir.iter_mut().for_each(|v| *v /= energy);
    let tail = convolve(x, &ir);
    x.iter()
        .zip(&tail)
        .map(|(&d, &r)| d + wet as f32 * r)
        .collect()
}

/// Linear convolution through one real FFT, truncated to `x.len()`.
fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
    let n = (x.len() + h.len()).next_power_of_two();
    let mut planner = RealFftPlanner::<f32>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let mut a = vec![0.0f32; n];
    a[..x.len()].copy_from_slice(x);
    let mut b = vec![0.0f32; n];
    b[..h.len()].copy_from_slice(h);
    let mut fa = fwd.make_output_vec();
    let mut fb = fwd.make_output_vec();
    // Lengths come from the planner itself, so these cannot fail; a failure leaves zeros.
    if fwd.process(&mut a, &mut fa).is_err() || fwd.process(&mut b, &mut fb).is_err() {
        return vec![0.0; x.len()];
    }
    fa.iter_mut().zip(&fb).for_each(|(p, q)| *p *= q);
    let mut out = vec![0.0f32; n];
    if inv.process(&mut fa, &mut out).is_err() {
        return vec![0.0; x.len()];
    }
    let scale = 1.0 / n as f32;
    out.truncate(x.len());
    out.iter_mut().for_each(|v| *v *= scale);
    out
}

/// Add white noise at `snr_db` below the speech power (measured on the speech span only,
/// so the silent padding does not dilute it).
pub fn add_noise(x: &mut [f32], speech: std::ops::Range<usize>, snr_db: f64, rng: &mut ChaCha8Rng) {
    let span = &x[speech.start.min(x.len())..speech.end.min(x.len())];
    let power =
        span.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / span.len().max(1) as f64;
    let sd = (power / 10f64.powf(snr_db / 10.0)).sqrt();
    for v in x.iter_mut() {
        let g: f64 = StandardNormal.sample(rng);
        *v += (g * sd) as f32;
    }
}

/// Scale so the speech span has an RMS of `level_dbfs`, then quantise to 16-bit. The level
/// is set on RMS, not on the peak: soft-clipped (angry-leaning) clips have a low crest
/// factor, so peak normalisation would make them louder on average and hand the label to
/// any loudness feature. Gain is lowered if the peak would pass -0.5 dBFS.
pub fn to_i16(x: &[f32], speech: std::ops::Range<usize>, level_dbfs: f64) -> Vec<i16> {
    let span = &x[speech.start.min(x.len())..speech.end.min(x.len())];
    let rms = (span.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()
        / span.len().max(1) as f64)
        .sqrt();
    let peak = peak_abs(x).max(1e-9) as f64;
    let gain =
        (10f64.powf(level_dbfs / 20.0) / rms.max(1e-12)).min(10f64.powf(-0.5 / 20.0) / peak) as f32;
    x.iter()
        .map(|&v| (v * gain * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

pub fn peak_abs(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, &v| m.max(v.abs()))
}

/// Trim espeak-ng's own leading/trailing digital silence so the padding we add is the only
/// silence, with a known length.
pub fn trim_digital_silence(x: &[f32]) -> &[f32] {
    let thr = 1e-4;
    let start = x.iter().position(|v| v.abs() > thr).unwrap_or(0);
    let end = x
        .iter()
        .rposition(|v| v.abs() > thr)
        .map(|e| e + 1)
        .unwrap_or(x.len());
    &x[start..end.max(start)]
}

/// A random phase for tremor.
pub fn random_phase(rng: &mut ChaCha8Rng) -> f64 {
    rng.random_range(0.0..2.0 * PI)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn sine(hz: f64, rate: u32, secs: f64) -> Vec<f32> {
        (0..(secs * rate as f64) as usize)
            .map(|n| (2.0 * PI * hz * n as f64 / rate as f64).sin() as f32 * 0.5)
            .collect()
    }

    /// Frequency from upward zero crossings over a 50 ms window starting at `start`.
    fn local_freq(x: &[f32], rate: u32, start: usize) -> f64 {
        let w = (0.05 * rate as f64) as usize;
        let cross: Vec<f64> = (start + 1..start + w)
            .filter(|&n| x[n - 1] < 0.0 && x[n] >= 0.0)
            .map(|n| n as f64 - 1.0 + x[n - 1] as f64 / (x[n - 1] - x[n]) as f64)
            .collect();
        (cross.len() - 1) as f64 * rate as f64 / (cross[cross.len() - 1] - cross[0])
    }

    #[test]
    fn tremor_bends_pitch_by_the_requested_cents() {
        let rate = 22_050;
        let x = sine(200.0, rate, 2.0);
        let y = tremor(&x, rate, 5.0, 50.0, 0.0, 0.0);
        let freqs: Vec<f64> = (0..30)
            .map(|k| local_freq(&y, rate, 4000 + k * 1000))
            .collect();
        let (lo, hi) = freqs
            .iter()
            .fold((f64::MAX, 0.0f64), |(a, b), &f| (a.min(f), b.max(f)));
        let cents = 1200.0 * (hi / lo).log2();
        // ±50 cents peak, smeared a little by the 50 ms measuring window.
        assert!(
            (70.0..=105.0).contains(&cents),
            "peak-to-peak {cents:.1} cents ({lo:.1}..{hi:.1} Hz)"
        );
        assert_eq!(
            tremor(&x, rate, 0.0, 50.0, 0.2, 0.0),
            x,
            "no tremor at 0 Hz"
        );
    }

    #[test]
    fn harshness_shifts_energy_upwards() {
        let rate = 16_000;
        let x: Vec<f32> = sine(150.0, rate, 0.5)
            .iter()
            .zip(sine(2500.0, rate, 0.5))
            .map(|(a, b)| a + 0.1 * b)
            .collect();
        let hf_ratio = |v: &[f32]| {
            let d: f64 = v.windows(2).map(|w| ((w[1] - w[0]) as f64).powi(2)).sum();
            let e: f64 = v.iter().map(|&s| (s as f64).powi(2)).sum();
            d / e
        };
        assert!(hf_ratio(&harshen(&x, 0.8)) > 2.0 * hf_ratio(&x));
    }

    #[test]
    fn level_is_set_on_speech_rms_and_never_clips() {
        let x = sine(300.0, 16_000, 1.0);
        let y = to_i16(&x, 0..x.len(), -20.0);
        let rms =
            (y.iter().map(|&v| (v as f64 / 32767.0).powi(2)).sum::<f64>() / y.len() as f64).sqrt();
        assert!((20.0 * rms.log10() + 20.0).abs() < 0.1);
        let loud = to_i16(&x, 0..x.len(), 0.0);
        assert!(
            loud.iter().all(|&v| v.unsigned_abs() < 32767),
            "peak held below full scale"
        );
    }

    #[test]
    fn reverb_and_noise_are_seeded() {
        let x = sine(300.0, 16_000, 0.3);
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut y = reverb(&x, 16_000, 0.2, 0.3, &mut rng);
            add_noise(&mut y, 0..x.len(), 20.0, &mut rng);
            y
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let noisy = run(1);
        let err: f64 = noisy
            .iter()
            .zip(&x)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let sig: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
        assert!(err < sig, "reverb and noise stay below the direct signal");
    }
}
