//! Errors of the LLM stage. Every variant names the GGUF file it is about, so a user who
//! points camxuc at the wrong file (or a half-copied one) sees which file and what is wrong.

use std::path::PathBuf;

/// Architectures the model runner can load (`general.architecture`).
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "gemma3"];

/// Tokenizer families understood from `tokenizer.ggml.model`.
pub const SUPPORTED_TOKENIZER_MODELS: &[&str] = &["gpt2", "llama"];

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{path}: cannot read the file: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: not a GGUF file (it does not start with the GGUF magic bytes)")]
    NotGguf { path: PathBuf },

    #[error("{path}: truncated or malformed GGUF: {reason}")]
    Malformed { path: PathBuf, reason: String },

    #[error(
        "{path}: truncated GGUF: tensor `{tensor}` ends at byte {needed} but the file has only \
         {file_size} bytes (an interrupted download or copy?)"
    )]
    Truncated {
        path: PathBuf,
        tensor: String,
        needed: u64,
        file_size: u64,
    },

    #[error(
        "{path}: unsupported architecture `{found}` in general.architecture (supported: {})",
        SUPPORTED_ARCHITECTURES.join(", ")
    )]
    UnsupportedArchitecture { path: PathBuf, found: String },

    #[error("{path}: missing metadata `{key}` (a GGUF without it cannot be used here)")]
    MissingMetadata { path: PathBuf, key: String },

    #[error("{path}: metadata `{key}` is malformed: {reason}")]
    BadMetadata {
        path: PathBuf,
        key: String,
        reason: String,
    },

    #[error(
        "{path}: unknown tokenizer model `{found}` in tokenizer.ggml.model (supported: {})",
        SUPPORTED_TOKENIZER_MODELS.join(", ")
    )]
    UnknownTokenizer { path: PathBuf, found: String },

    #[error(
        "{path}: unknown pre-tokenizer `{found}` in tokenizer.ggml.pre (supported: {supported})"
    )]
    UnknownPreTokenizer {
        path: PathBuf,
        found: String,
        supported: String,
    },

    #[error("{path}: token id {id} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfRange {
        path: PathBuf,
        id: u32,
        vocab_size: usize,
    },

    #[error("{path}: the pre-tokenizer regex failed on the input: {reason}")]
    PreTokenizer { path: PathBuf, reason: String },

    #[error("{path}: the model failed: {reason}")]
    Model { path: PathBuf, reason: String },

    /// candle failed while loading or running the model (a missing or misshapen tensor, a
    /// block with a non-finite scale, ...): its error kept as the source.
    #[error("{path}: the model failed: {source}")]
    Candle {
        path: PathBuf,
        /// Boxed: candle's error is large.
        #[source]
        source: Box<candle_core::Error>,
    },

    #[error("{path}: the prompt needs {needed} positions but the model is set up for {limit}")]
    ContextFull {
        path: PathBuf,
        needed: usize,
        limit: usize,
    },
}
