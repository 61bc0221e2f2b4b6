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
    #[error("{path}: cannot read the tokenizer: {source}")]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    /// Encoding or decoding text with a loaded tokenizer failed; `doing` says which.
    #[error("{path}: cannot read the tokenizer: {doing}: {source}")]
    TokenizerCodec {
        path: PathBuf,
        doing: String,
        #[source]
        source: tokenizers::Error,
    },
    #[error("{path}: not a multilingual Whisper model: {reason}")]
    WrongModel { path: PathBuf, reason: String },
    #[error("{path}: cannot build the Whisper network: {source}")]
    Build {
        path: PathBuf,
        /// Boxed: candle's error is large and would make every result large.
        #[source]
        source: Box<candle_core::Error>,
    },
    #[error("{path}: cannot build the Whisper network: thread pool: {source}")]
    ThreadPool {
        path: PathBuf,
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
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
    #[error("{clip}: cannot resample to 16 kHz: {source}")]
    Resample {
        clip: String,
        #[source]
        source: crate::audio::AudioError,
    },
    #[error("{clip}: Whisper inference failed: {source}")]
    Inference {
        clip: String,
        /// Boxed: candle's error is large and would make every result large.
        #[source]
        source: Box<candle_core::Error>,
    },
}
