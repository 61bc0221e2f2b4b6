//! The evidence record of one clip: named, documented acoustic measurements (see
//! [`FEATURES`]) computed by a reusable [`EvidenceExtractor`].

use std::collections::BTreeMap;

pub use super::catalogue::{feature_spec, FeatureSpec, FEATURES};
use super::measures::{self, Scratch};
use super::mel::{check_audio, log_mel_from_power, LogMel, MelFilterbank};
use super::pitch::{PitchTrack, PitchTracker};
use super::stft::Stft;
use super::voice::VoiceAnalyzer;
use super::{FeatureConfig, FeatureError};
use crate::{Audio, Evidence};

/// Computes [`Evidence`] (and, on request, the log-mel spectrogram from the same STFT).
/// Build once, call `extract` per clip: plans and buffers are reused.
pub struct EvidenceExtractor {
    cfg: FeatureConfig,
    stft: Stft,
    filterbank: MelFilterbank,
    pitch: PitchTracker,
    voice: VoiceAnalyzer,
    power: Vec<f32>,
    track: PitchTrack,
    scratch: Scratch,
}

impl EvidenceExtractor {
    pub fn new(cfg: &FeatureConfig) -> Result<Self, FeatureError> {
        let stft = Stft::new(cfg)?;
        let scratch = Scratch::new(cfg, stft.n_bins());
        Ok(Self {
            cfg: cfg.clone(),
            filterbank: MelFilterbank::new(cfg)?,
            pitch: PitchTracker::new(cfg)?,
            voice: VoiceAnalyzer::new(cfg)?,
            stft,
            power: Vec::new(),
            track: PitchTrack::default(),
            scratch,
        })
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    /// Evidence of one clip; `z` is empty and `baseline` is `none` until a
    /// [`super::Baseline`] is applied.
    pub fn extract(&mut self, audio: &Audio) -> Result<Evidence, FeatureError> {
        check_audio(&self.cfg, audio)?;
        let n_frames = self.stft.power_spectrogram(&audio.samples, &mut self.power);
        Ok(self.evidence_from_power(audio, n_frames))
    }

    /// Evidence and the log-mel spectrogram (into `log_mel`, reusing it) from one STFT pass:
    /// what the pipeline needs per clip.
    pub fn extract_with_log_mel(
        &mut self,
        audio: &Audio,
        log_mel: &mut LogMel,
    ) -> Result<Evidence, FeatureError> {
        check_audio(&self.cfg, audio)?;
        let n_frames = self.stft.power_spectrogram(&audio.samples, &mut self.power);
        log_mel_from_power(
            &self.filterbank,
            &self.power,
            self.stft.n_bins(),
            n_frames,
            log_mel,
        );
        Ok(self.evidence_from_power(audio, n_frames))
    }

    /// The F0 track of the last clip passed to `extract` (for plots and diagnostics).
    pub fn last_pitch_track(&self) -> &PitchTrack {
        &self.track
    }

    fn evidence_from_power(&mut self, audio: &Audio, n_frames: usize) -> Evidence {
        let x = &audio.samples;
        self.pitch.track_into(x, n_frames, &mut self.track);
        let mut values = BTreeMap::new();
        let mut put = |name: &'static str, v: Option<f64>| {
            debug_assert!(feature_spec(name).is_some(), "{name} missing from FEATURES");
            if let Some(v) = v.filter(|v| v.is_finite()) {
                values.insert(name.to_string(), v);
            }
        };
        let s = &mut self.scratch;
        let span = measures::speech_span(s, &self.track, self.cfg.silence_below_db as f64);
        measures::pitch_features(s, &self.track, span, &mut put);
        let vq = self.voice.analyze(x, &self.track);
        put("jitter_local_pct", vq.jitter_local_pct);
        put("shimmer_local_db", vq.shimmer_local_db);
        put("hnr_db", vq.hnr_db);
        measures::loudness_and_tempo(s, &self.track, span, &mut put);
        measures::spectral_features(
            s,
            &self.power,
            self.stft.n_bins(),
            &self.track,
            span,
            &mut put,
        );
        Evidence {
            values,
            z: BTreeMap::new(),
            baseline: "none".into(),
        }
    }
}
