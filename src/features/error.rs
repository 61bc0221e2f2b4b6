//! Errors of the features stage. Each names the clip (its source path when known) and what
//! is wrong with it, so a batch run can report the failing file and carry on.

use thiserror::Error;

/// Why features could not be computed for a clip, or why a configuration is unusable.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum FeatureError {
    #[error("{clip}: sample rate is {found} Hz but the feature configuration expects {expected} Hz (resample with audio::load first)")]
    SampleRate {
        clip: String,
        found: u32,
        expected: u32,
    },

    #[error("{clip}: the speech in the clip lasts {:.1} ms; features need at least {:.1} ms", duration_s * 1e3, min_s * 1e3)]
    TooShort {
        clip: String,
        duration_s: f64,
        min_s: f64,
    },

    #[error("{clip}: sample {index} is not a finite number ({value})")]
    NonFinite {
        clip: String,
        index: usize,
        value: f32,
    },

    #[error("invalid feature configuration: {field} = {value}: {reason}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        reason: String,
    },

    #[error("{clip}: {message}")]
    Internal { clip: String, message: String },
}

/// How an [`crate::Audio`] is named in errors: its source path, or `<memory>`.
pub(crate) fn clip_name(audio: &crate::Audio) -> String {
    match &audio.source {
        Some(p) => p.display().to_string(),
        None => "<memory>".to_string(),
    }
}
