//! Feature configuration. It is stored in `model.json`, so a model only ever sees features
//! computed the way it was trained; changing a field here is a model-format change.

use serde::{Deserialize, Serialize};

use super::FeatureError;

/// All knobs of the features stage, with the defaults of issue 2 (16 kHz, 25 ms / 10 ms,
/// 64 mel bands, F0 60–600 Hz).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureConfig {
    /// Sample rate the features expect; audio at another rate is refused, not resampled here.
    pub sample_rate: u32,
    /// Analysis window of the STFT (log-mel, MFCC, spectral evidence), milliseconds.
    pub window_ms: f32,
    /// Frame hop for every frame-level track (spectra, F0, loudness), milliseconds.
    pub hop_ms: f32,
    /// FFT length; at least the window length (the window is zero-padded to it).
    pub n_fft: usize,
    pub n_mels: usize,
    pub fmin_hz: f32,
    pub fmax_hz: f32,
    /// Number of cepstral coefficients kept by `mfcc` (c0 included).
    pub n_mfcc: usize,
    /// Lowest F0 the tracker searches, Hz. Sets the pitch window (two periods of it).
    pub f0_min_hz: f32,
    /// Highest F0 the tracker searches, Hz.
    pub f0_max_hz: f32,
    /// YIN aperiodicity (cumulative-mean-normalised difference) above which a frame is not
    /// voiced. 0.35 tolerates breathy and noisy voices; de Cheveigné & Kawahara use 0.1–0.2
    /// on clean speech.
    pub voicing_threshold: f32,
    /// Frames quieter than this many dB below the clip's loud frames (95th percentile) are
    /// treated as silence. Relative, so the decision does not depend on recording gain.
    pub silence_below_db: f32,
    /// Clips shorter than this are refused.
    pub min_duration_s: f32,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            window_ms: 25.0,
            hop_ms: 10.0,
            n_fft: 512,
            n_mels: 64,
            fmin_hz: 20.0,
            fmax_hz: 8_000.0,
            n_mfcc: 13,
            f0_min_hz: 60.0,
            f0_max_hz: 600.0,
            voicing_threshold: 0.35,
            silence_below_db: 30.0,
            min_duration_s: 0.1,
        }
    }
}

impl FeatureConfig {
    pub fn window_len(&self) -> usize {
        (self.window_ms as f64 * 1e-3 * self.sample_rate as f64).round() as usize
    }

    pub fn hop_len(&self) -> usize {
        (self.hop_ms as f64 * 1e-3 * self.sample_rate as f64).round() as usize
    }

    /// Frames per second of every frame-level track.
    pub fn frame_rate(&self) -> f64 {
        self.sample_rate as f64 / self.hop_len() as f64
    }

    /// Checks every field; a model file with a nonsensical configuration fails here, by name.
    pub fn validate(&self) -> Result<(), FeatureError> {
        fn bad(field: &'static str, value: impl ToString, reason: &str) -> FeatureError {
            FeatureError::InvalidConfig {
                field,
                value: value.to_string(),
                reason: reason.into(),
            }
        }
        let nyquist = self.sample_rate as f32 / 2.0;
        if !(4_000..=192_000).contains(&self.sample_rate) {
            return Err(bad(
                "sample_rate",
                self.sample_rate,
                "must be 4000..=192000 Hz",
            ));
        }
        if !(self.window_ms.is_finite() && self.window_ms >= 5.0 && self.window_ms <= 100.0) {
            return Err(bad("window_ms", self.window_ms, "must be 5..=100 ms"));
        }
        if !(self.hop_ms.is_finite() && self.hop_ms >= 1.0 && self.hop_ms <= self.window_ms) {
            return Err(bad("hop_ms", self.hop_ms, "must be 1 ms ..= window_ms"));
        }
        if self.n_fft < self.window_len() || self.n_fft > 65_536 {
            return Err(bad(
                "n_fft",
                self.n_fft,
                "must be >= the window length in samples and <= 65536",
            ));
        }
        if !(1..=512).contains(&self.n_mels) {
            return Err(bad("n_mels", self.n_mels, "must be 1..=512"));
        }
        if !(self.fmin_hz >= 0.0 && self.fmin_hz < self.fmax_hz && self.fmax_hz <= nyquist) {
            return Err(bad(
                "fmin_hz/fmax_hz",
                format!("{}/{}", self.fmin_hz, self.fmax_hz),
                "need 0 <= fmin < fmax <= sample_rate/2",
            ));
        }
        if !(1..=self.n_mels).contains(&self.n_mfcc) {
            return Err(bad("n_mfcc", self.n_mfcc, "must be 1..=n_mels"));
        }
        if !(self.f0_min_hz >= 20.0
            && self.f0_min_hz < self.f0_max_hz
            && self.f0_max_hz <= nyquist / 4.0)
        {
            return Err(bad(
                "f0_min_hz/f0_max_hz",
                format!("{}/{}", self.f0_min_hz, self.f0_max_hz),
                "need 20 <= f0_min < f0_max <= sample_rate/8",
            ));
        }
        if !(self.voicing_threshold > 0.0 && self.voicing_threshold < 1.0) {
            return Err(bad(
                "voicing_threshold",
                self.voicing_threshold,
                "must be in (0, 1)",
            ));
        }
        if !(self.silence_below_db > 0.0 && self.silence_below_db <= 90.0) {
            return Err(bad(
                "silence_below_db",
                self.silence_below_db,
                "must be in (0, 90]",
            ));
        }
        if !(self.min_duration_s.is_finite() && self.min_duration_s >= 0.0) {
            return Err(bad("min_duration_s", self.min_duration_s, "must be >= 0"));
        }
        Ok(())
    }
}
