//! Whisper's log-mel front end, exactly as openai-whisper's `log_mel_spectrogram`:
//! 16 kHz, periodic Hann window of 400, hop 160, centred STFT with reflect padding, power
//! spectrum, the last frame dropped, Slaney mel filters (librosa's formula, as in
//! `mel_filters.npz`), log10 clamped at 1e-10, floored at (max − 8), then (x + 4) / 4.
//!
//! Whisper-specific on purpose: the encoder was trained on exactly these conventions, so
//! they are not shared with the project's general STFT in `features`.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use realfft::{RealFftPlanner, RealToComplex};

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP_LENGTH: usize = 160;
/// Mel frames in Whisper's 30 s window.
pub const N_FRAMES_30S: usize = 3000;
const N_BINS: usize = N_FFT / 2 + 1;

/// A log-mel spectrogram, mel-major: `data[mel * n_frames + frame]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperLogMel {
    pub n_mels: usize,
    pub n_frames: usize,
    pub data: Vec<f32>,
}

impl WhisperLogMel {
    /// `[1, n_mels, n_frames]`, the encoder's input layout.
    pub fn to_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_slice(&self.data, (1, self.n_mels, self.n_frames), device)
    }
}

/// One mel filter as its non-zero span of FFT bins (the filters are triangles, ~95 % zeros).
#[derive(Debug, Clone)]
struct SparseFilter {
    first_bin: usize,
    weights: Vec<f32>,
}

/// Computes Whisper log-mel spectrograms; build once, reuse for every clip.
pub struct WhisperMel {
    n_mels: usize,
    filters: Vec<SparseFilter>,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl WhisperMel {
    /// `n_mels` is 80 for Whisper base (128 for large-v3).
    pub fn new(n_mels: usize) -> Self {
        let dense = slaney_mel_filters(SAMPLE_RATE, N_FFT, n_mels);
        let filters = dense
            .chunks_exact(N_BINS)
            .map(|row| {
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |l| l + 1);
                SparseFilter {
                    first_bin: first,
                    weights: row[first..last.max(first)].to_vec(),
                }
            })
            .collect();
        let window = (0..N_FFT)
            .map(|i| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()) as f32
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        Self {
            n_mels,
            filters,
            window,
            fft,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// The dense filter bank, `[n_mels, 201]` row-major (for checks against `mel_filters.npz`).
    pub fn dense_filters(&self) -> Vec<f32> {
        let mut dense = vec![0.0; self.n_mels * N_BINS];
        for (row, filter) in dense.chunks_exact_mut(N_BINS).zip(&self.filters) {
            let span = filter.first_bin..filter.first_bin + filter.weights.len();
            row[span].copy_from_slice(&filter.weights);
        }
        dense
    }

    /// Log-mel of the samples as they are (no padding to 30 s): `len / 160` frames.
    pub fn log_mel(&self, samples: &[f32]) -> WhisperLogMel {
        self.compute(samples, samples.len() / HOP_LENGTH)
    }

    /// Log-mel as Whisper's 30 s decoding sees it: the samples followed by 30 s of zeros,
    /// first `n_frames` frames (3000 for the standard window). Longer input is cut.
    pub fn log_mel_padded(&self, samples: &[f32], n_frames: usize) -> WhisperLogMel {
        let mut padded = samples.to_vec();
        padded.resize(samples.len() + N_FRAMES_30S * HOP_LENGTH, 0.0);
        let mut mel = self.compute(&padded, n_frames.min(padded.len() / HOP_LENGTH));
        if mel.n_frames < n_frames {
            // Unreachable for n_frames ≤ 3000; kept so the contract (exactly n_frames) holds.
            mel = pad_frames(mel, n_frames);
        }
        mel
    }

    /// `n_frames` frames of the centred STFT of `samples` (frames past the signal see the
    /// reflect padding, as in torch.stft with center=True).
    fn compute(&self, samples: &[f32], n_frames: usize) -> WhisperLogMel {
        let mut log_spec = vec![0.0f32; self.n_mels * n_frames];
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f32; N_BINS];
        let half = (N_FFT / 2) as isize;
        for t in 0..n_frames {
            let start = (t * HOP_LENGTH) as isize - half;
            for (i, (slot, w)) in frame.iter_mut().zip(&self.window).enumerate() {
                *slot = w * sample_reflected(samples, start + i as isize);
            }
            // Lengths are fixed by the plan, so this cannot fail.
            if self
                .fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .is_err()
            {
                continue;
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, filter) in self.filters.iter().enumerate() {
                let bins = &power[filter.first_bin..filter.first_bin + filter.weights.len()];
                let energy: f32 = bins.iter().zip(&filter.weights).map(|(p, w)| p * w).sum();
                log_spec[m * n_frames + t] = energy.max(1e-10).log10();
            }
        }
        let max = log_spec.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let floor = max - 8.0;
        for v in &mut log_spec {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        WhisperLogMel {
            n_mels: self.n_mels,
            n_frames,
            data: log_spec,
        }
    }
}

fn pad_frames(mel: WhisperLogMel, n_frames: usize) -> WhisperLogMel {
    let floor = mel.data.iter().copied().fold(f32::INFINITY, f32::min);
    let floor = if floor.is_finite() { floor } else { 0.0 };
    let mut data = vec![floor; mel.n_mels * n_frames];
    for m in 0..mel.n_mels {
        let src = &mel.data[m * mel.n_frames..(m + 1) * mel.n_frames];
        data[m * n_frames..m * n_frames + mel.n_frames].copy_from_slice(src);
    }
    WhisperLogMel {
        n_mels: mel.n_mels,
        n_frames,
        data,
    }
}

/// `samples[i]` with reflect padding on both sides (numpy/torch "reflect": the edge sample is
/// not repeated); folds repeatedly for signals shorter than the pad; empty → 0.
fn sample_reflected(samples: &[f32], i: isize) -> f32 {
    let n = samples.len() as isize;
    match n {
        0 => 0.0,
        1 => samples[0],
        _ => {
            let period = 2 * (n - 1);
            let mut j = i.rem_euclid(period);
            if j >= n {
                j = period - j;
            }
            samples[j as usize]
        }
    }
}

/// Slaney-scale mel filters with Slaney area normalisation, as `librosa.filters.mel(sr,
/// n_fft, n_mels)` (htk=False, norm="slaney", fmin 0, fmax sr/2) — the formula behind
/// Whisper's `mel_filters.npz`. Row-major `[n_mels, n_fft/2 + 1]`.
pub fn slaney_mel_filters(sample_rate: usize, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_bins = n_fft / 2 + 1;
    let nyquist = sample_rate as f64 / 2.0;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|i| nyquist * i as f64 / (n_bins - 1) as f64)
        .collect();
    let (mel_lo, mel_hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let mel_freqs: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(mel_lo + (mel_hi - mel_lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut weights = vec![0.0f32; n_mels * n_bins];
    for m in 0..n_mels {
        let (left, centre, right) = (mel_freqs[m], mel_freqs[m + 1], mel_freqs[m + 2]);
        let norm = 2.0 / (right - left);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - left) / (centre - left);
            let upper = (right - f) / (right - centre);
            weights[m * n_bins + k] = (lower.min(upper).max(0.0) * norm) as f32;
        }
    }
    weights
}

// Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_padding_matches_numpy() {
        let x = [1.0, 2.0, 3.0, 4.0];
        // np.pad([1,2,3,4], 3, mode="reflect") = [4,3,2,1,2,3,4,3,2,1]
        let got: Vec<f32> = (-3..7).map(|i| sample_reflected(&x, i)).collect();
        assert_eq!(got, vec![4.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0, 1.0]);
    }

    #[test]
    fn a_tone_lights_the_mel_band_that_holds_its_frequency() {
        let mel = WhisperMel::new(80);
        let tone: Vec<f32> = (0..SAMPLE_RATE)
            .map(|n| (2.0 * std::f32::consts::PI * 1000.0 * n as f32 / SAMPLE_RATE as f32).sin())
            .collect();
        let spec = mel.log_mel(&tone);
        assert_eq!(spec.n_frames, 100);
        let frame = 50;
        let loudest = (0..80)
            .max_by(|&a, &b| spec.data[a * 100 + frame].total_cmp(&spec.data[b * 100 + frame]))
            .unwrap_or(0);
        // 1 kHz is 15 Slaney mels; filter m is centred on mel (m + 1) · 45.245 / 81.
        let centre_mel = |m: usize| (m + 1) as f64 * hz_to_mel(8000.0) / 81.0;
        assert!(
            (centre_mel(loudest) - hz_to_mel(1000.0)).abs() < 0.6,
            "band {loudest}"
        );
    }

    #[test]
    fn silence_and_empty_input_do_not_panic() {
        let mel = WhisperMel::new(80);
        assert_eq!(mel.log_mel(&[]).n_frames, 0);
        let quiet = mel.log_mel(&[0.0; 1600]);
        assert!(quiet.data.iter().all(|v| v.is_finite()));
        let padded = mel.log_mel_padded(&[0.1; 100], N_FRAMES_30S);
        assert_eq!(padded.data.len(), 80 * N_FRAMES_30S);
    }
}
