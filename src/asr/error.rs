//! What can go wrong loading the Whisper recogniser or transcribing a clip; every variant
//! names the model file or the clip it is about.

use std::path::PathBuf;

use thiserror::Error;

use crate::acoustic::whisper::Ct2Error;

#[derive(Debug, Error)]
pub enum AsrError {
    #[error("{path}: missing {what} (the Whisper model folder needs model.bin, config.json and tokenizer.json; see `camxuc models fetch`)")]
    MissingFile { path: PathBuf, what: &'static str },
    #[error(transparent)]
    Weights(#[from] Ct2Error),
    #[error("{path}: cannot read the tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{path}: not a multilingual Whisper model: {reason}")]
    WrongModel { path: PathBuf, reason: String },
    #[error("{path}: cannot build the Whisper network: {reason}")]
    Build { path: PathBuf, reason: String },
    #[error("{model_dir}: language `{language}` is not one of this Whisper model's languages")]
    UnknownLanguage {
        model_dir: PathBuf,
        language: String,
    },
    #[error("{clip}: no audio samples to transcribe")]
    EmptyAudio { clip: String },
    #[error("{clip}: {seconds:.1} s of audio; transcription takes at most {limit_s} s (Whisper's window): cut the recording first")]
    AudioTooLong {
        clip: String,
        seconds: f64,
        limit_s: usize,
    },
    #[error("{clip}: cannot resample to 16 kHz: {reason}")]
    Resample { clip: String, reason: String },
    #[error("{clip}: Whisper inference failed: {reason}")]
    Inference { clip: String, reason: String },
}
