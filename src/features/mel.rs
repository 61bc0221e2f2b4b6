//! Mel filterbank, log-mel spectrogram (the CNN input) and MFCC.

use super::error::clip_name;
use super::stft::Stft;
use super::{FeatureConfig, FeatureError};
use crate::Audio;

/// Floor on mel energies before the logarithm, so digital silence gives a finite value.
pub const LOG_FLOOR: f32 = 1e-10;

/// A log-mel spectrogram: `data[t * n_mels + m]` is ln(mel energy) of frame `t`, band `m`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogMel {
    pub data: Vec<f32>,
    pub n_frames: usize,
    pub n_mels: usize,
}

impl LogMel {
    pub fn frame(&self, t: usize) -> &[f32] {
        &self.data[t * self.n_mels..(t + 1) * self.n_mels]
    }
}

/// MFCCs: `data[t * n_mfcc + k]` is coefficient `k` (c0 first) of frame `t`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mfcc {
    pub data: Vec<f32>,
    pub n_frames: usize,
    pub n_mfcc: usize,
}

/// Triangular filters on the HTK mel scale (2595·log10(1 + f/700)), peak 1, over power
/// spectrum bins. Stored as (first bin, weights) per band so applying it is a short dot
/// product per band.
#[derive(Clone, Debug)]
pub struct MelFilterbank {
    bands: Vec<(usize, Vec<f32>)>,
    centres_hz: Vec<f32>,
}

pub fn hz_to_mel(f: f32) -> f32 {
    2595.0 * (1.0 + f / 700.0).log10()
}

pub fn mel_to_hz(m: f32) -> f32 {
    700.0 * (10f32.powf(m / 2595.0) - 1.0)
}

impl MelFilterbank {
    pub fn new(cfg: &FeatureConfig) -> Result<Self, FeatureError> {
        cfg.validate()?;
        let n_bins = cfg.n_fft / 2 + 1;
        let bin_hz = cfg.sample_rate as f32 / cfg.n_fft as f32;
        let (lo, hi) = (hz_to_mel(cfg.fmin_hz), hz_to_mel(cfg.fmax_hz));
        let edges: Vec<f32> = (0..cfg.n_mels + 2)
            .map(|i| mel_to_hz(lo + (hi - lo) * i as f32 / (cfg.n_mels + 1) as f32))
            .collect();
        let mut bands = Vec::with_capacity(cfg.n_mels);
        for m in 0..cfg.n_mels {
            let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
            let mut first = None;
            let mut weights = Vec::new();
            for k in 0..n_bins {
                let f = k as f32 * bin_hz;
                let w = if f > left && f < centre {
                    (f - left) / (centre - left)
                } else if f >= centre && f < right {
                    (right - f) / (right - centre)
                } else {
                    0.0
                };
                if w > 0.0 {
                    first.get_or_insert(k);
                    weights.push(w);
                } else if first.is_some() {
                    break;
                }
            }
            // A band narrower than one bin (many bands, short FFT) takes its nearest bin,
            // so no band is identically zero.
            let first =
                first.unwrap_or_else(|| ((centre / bin_hz).round() as usize).min(n_bins - 1));
            if weights.is_empty() {
                weights.push(1.0);
            }
            bands.push((first, weights));
        }
        Ok(Self {
            bands,
            centres_hz: edges[1..=cfg.n_mels].to_vec(),
        })
    }

    pub fn n_mels(&self) -> usize {
        self.bands.len()
    }

    /// Centre frequency of each band, Hz.
    pub fn centres_hz(&self) -> &[f32] {
        &self.centres_hz
    }

    /// Mel energies of one power-spectrum frame into `out` (length n_mels).
    pub fn apply(&self, power: &[f32], out: &mut [f32]) {
        for ((first, w), dst) in self.bands.iter().zip(out.iter_mut()) {
            *dst = power[*first..].iter().zip(w).map(|(p, w)| p * w).sum();
        }
    }
}

/// Log-mel and MFCC extractor; owns the STFT plan, the filterbank and the buffers.
pub struct MelExtractor {
    cfg: FeatureConfig,
    stft: Stft,
    filterbank: MelFilterbank,
    dct: Vec<f32>,
    power: Vec<f32>,
}

impl MelExtractor {
    pub fn new(cfg: &FeatureConfig) -> Result<Self, FeatureError> {
        let stft = Stft::new(cfg)?;
        let filterbank = MelFilterbank::new(cfg)?;
        Ok(Self {
            cfg: cfg.clone(),
            stft,
            filterbank,
            dct: dct_ii_matrix(cfg.n_mfcc, cfg.n_mels),
            power: Vec::new(),
        })
    }

    pub fn filterbank(&self) -> &MelFilterbank {
        &self.filterbank
    }

    pub fn log_mel(&mut self, audio: &Audio) -> Result<LogMel, FeatureError> {
        let mut out = LogMel::default();
        self.log_mel_into(audio, &mut out)?;
        Ok(out)
    }

    /// Like [`Self::log_mel`] but reuses `out`'s allocation (the batch/streaming path).
    pub fn log_mel_into(&mut self, audio: &Audio, out: &mut LogMel) -> Result<(), FeatureError> {
        check_audio(&self.cfg, audio)?;
        let n_frames = self.stft.power_spectrogram(&audio.samples, &mut self.power);
        log_mel_from_power(
            &self.filterbank,
            &self.power,
            self.stft.n_bins(),
            n_frames,
            out,
        );
        Ok(())
    }

    /// MFCC: orthonormal DCT-II of the log-mel frames, first `n_mfcc` coefficients.
    pub fn mfcc(&mut self, audio: &Audio) -> Result<Mfcc, FeatureError> {
        let log_mel = self.log_mel(audio)?;
        let (n_mfcc, n_mels) = (self.cfg.n_mfcc, self.cfg.n_mels);
        let mut data = vec![0.0; log_mel.n_frames * n_mfcc];
        for t in 0..log_mel.n_frames {
            let frame = log_mel.frame(t);
            for k in 0..n_mfcc {
                let row = &self.dct[k * n_mels..(k + 1) * n_mels];
                data[t * n_mfcc + k] = row.iter().zip(frame).map(|(a, b)| a * b).sum();
            }
        }
        Ok(Mfcc {
            data,
            n_frames: log_mel.n_frames,
            n_mfcc,
        })
    }
}

/// Fills `out` from a power spectrogram (frames × n_bins).
pub(crate) fn log_mel_from_power(
    fb: &MelFilterbank,
    power: &[f32],
    n_bins: usize,
    n_frames: usize,
    out: &mut LogMel,
) {
    let n_mels = fb.n_mels();
    out.n_frames = n_frames;
    out.n_mels = n_mels;
    out.data.clear();
    out.data.resize(n_frames * n_mels, 0.0);
    for t in 0..n_frames {
        let row = &mut out.data[t * n_mels..(t + 1) * n_mels];
        fb.apply(&power[t * n_bins..(t + 1) * n_bins], row);
        for v in row.iter_mut() {
            *v = v.max(LOG_FLOOR).ln();
        }
    }
}

/// Orthonormal DCT-II basis, `n_out` rows × `n_in` columns.
fn dct_ii_matrix(n_out: usize, n_in: usize) -> Vec<f32> {
    let mut m = vec![0.0; n_out * n_in];
    for k in 0..n_out {
        let scale = if k == 0 {
            (1.0 / n_in as f64).sqrt()
        } else {
            (2.0 / n_in as f64).sqrt()
        };
        for n in 0..n_in {
            let angle = std::f64::consts::PI * k as f64 * (n as f64 + 0.5) / n_in as f64;
            m[k * n_in + n] = (scale * angle.cos()) as f32;
        }
    }
    m
}

/// Refuses audio the features cannot be computed on: wrong rate, too short, NaN/inf samples.
pub(crate) fn check_audio(cfg: &FeatureConfig, audio: &Audio) -> Result<(), FeatureError> {
    if audio.sample_rate != cfg.sample_rate {
        return Err(FeatureError::SampleRate {
            clip: clip_name(audio),
            found: audio.sample_rate,
            expected: cfg.sample_rate,
        });
    }
    let min_s = (cfg.min_duration_s as f64).max(cfg.window_len() as f64 / cfg.sample_rate as f64);
    if audio.duration_s() < min_s {
        return Err(FeatureError::TooShort {
            clip: clip_name(audio),
            duration_s: audio.duration_s(),
            min_s,
        });
    }
    if let Some((index, &value)) = audio
        .samples
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_finite())
    {
        return Err(FeatureError::NonFinite {
            clip: clip_name(audio),
            index,
            value,
        });
    }
    Ok(())
}
