//! One clip from file to evidence: decode (isolated) → 16 kHz mono → trim silence → evidence
//! and log-mel. Shared by `features`, `train`, `eval` and `classify`.

use std::path::{Path, PathBuf};

use crate::audio::{self, AudioError, LoadOptions, VadConfig};
use crate::features::{EvidenceExtractor, FeatureConfig, FeatureError, LogMel};
use crate::{Audio, Evidence};

/// Why a clip could not be analysed; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum AnalyseError {
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error("{}", name_once(path, source))]
    Features { path: PathBuf, source: FeatureError },
}

/// `path: message`, without naming the file twice when the feature error already names it.
fn name_once(path: &std::path::Path, source: &FeatureError) -> String {
    let named = format!("{}: ", path.display());
    let message = source.to_string();
    if message.starts_with(&named) {
        message
    } else {
        named + &message
    }
}

/// A clip ready for the acoustic model and the rules.
#[derive(Clone, Debug)]
pub struct AnalysedClip {
    /// Duration of the whole decoded recording.
    pub duration_s: f64,
    /// The voiced span (leading/trailing silence trimmed); `offset_s` is its start.
    pub speech: Audio,
    pub evidence: Evidence,
    /// Log-mel of the voiced span (frames × mels), from the same STFT pass as the evidence.
    pub log_mel: LogMel,
}

/// Holds the decoder options, VAD settings and the reusable feature extractor.
pub struct ClipAnalyser {
    pub load: LoadOptions,
    pub vad: VadConfig,
    extractor: EvidenceExtractor,
}

impl ClipAnalyser {
    pub fn new(cfg: &FeatureConfig) -> Result<Self, FeatureError> {
        Ok(Self {
            load: LoadOptions::default(),
            vad: VadConfig::default(),
            extractor: EvidenceExtractor::new(cfg)?,
        })
    }

    pub fn config(&self) -> &FeatureConfig {
        self.extractor.config()
    }

    /// Decode, trim and measure one file.
    pub fn analyse(&mut self, path: &Path) -> Result<AnalysedClip, AnalyseError> {
        let audio = audio::load(path, &self.load)?;
        self.analyse_audio(audio)
    }

    /// Trim and measure audio already decoded at 16 kHz mono.
    pub fn analyse_audio(&mut self, audio: Audio) -> Result<AnalysedClip, AnalyseError> {
        let path = audio
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<memory>"));
        let duration_s = audio.duration_s();
        let speech = audio::trim_silence(&audio, &self.vad);
        if speech.samples.is_empty() {
            return Err(AudioError::AllSilent { path }.into());
        }
        let mut log_mel = LogMel::default();
        let evidence = self
            .extractor
            .extract_with_log_mel(&speech, &mut log_mel)
            .map_err(|source| AnalyseError::Features { path, source })?;
        Ok(AnalysedClip {
            duration_s,
            speech,
            evidence,
            log_mel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn too_short(clip: &str) -> AnalyseError {
        AnalyseError::Features {
            path: PathBuf::from("calls/a.wav"),
            source: FeatureError::TooShort {
                clip: clip.into(),
                duration_s: 0.099_937_5,
                min_s: 0.1,
            },
        }
    }

    #[test]
    fn a_feature_error_names_the_file_once_and_the_durations_do_not_round_together() {
        assert_eq!(
            too_short("calls/a.wav").to_string(),
            "calls/a.wav: the speech in the clip lasts 99.9 ms; features need at least 100.0 ms"
        );
        assert_eq!(
            too_short("<memory>").to_string(),
            "calls/a.wav: <memory>: the speech in the clip lasts 99.9 ms; features need at least 100.0 ms"
        );
    }
}
