//! The audio stage's error type. Every variant names the file and says what is wrong with it,
//! so the CLI can print it as a one-line message.

use std::path::{Path, PathBuf};

/// Placeholder path for errors about in-memory samples (e.g. [`super::resample`]).
pub const IN_MEMORY: &str = "<in-memory samples>";

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{}: cannot read file: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}: file is empty (0 bytes)", path.display())]
    EmptyFile { path: PathBuf },

    /// No format reader recognised the file, its header is damaged, or it has no audio track.
    #[error("{}: not a readable audio file ({detail})", path.display())]
    NotAudio { path: PathBuf, detail: String },

    #[error("{}: unsupported audio codec ({detail})", path.display())]
    UnsupportedCodec { path: PathBuf, detail: String },

    #[error("{}: decoding failed: {detail}", path.display())]
    Decode { path: PathBuf, detail: String },

    /// The decoder panicked, aborted, ran out of its memory limit or timed out. With
    /// isolation on, this is contained in the decode worker process.
    #[error("{}: decoder crashed ({detail}); the file is damaged or hostile", path.display())]
    DecoderCrashed { path: PathBuf, detail: String },

    #[error("{}: contains no audio samples (zero length)", path.display())]
    ZeroLength { path: PathBuf },

    /// Audio whose every frame is below the silence threshold (see `audio::trim_silence`).
    #[error("{}: audio is silent (no voiced frames)", path.display())]
    AllSilent { path: PathBuf },

    /// Float files can hold NaN or infinity; they would poison every feature, so the file is
    /// rejected rather than silently patched.
    #[error("{}: contains NaN/Inf samples (first at {first_at_s:.3} s)", path.display())]
    NonFinite { path: PathBuf, first_at_s: f64 },

    #[error(
        "{}: {duration_s:.1} s is longer than the whole-file limit of {limit_s:.0} s; \
         read it in windows (audio::open_windows)",
        path.display()
    )]
    TooLong {
        path: PathBuf,
        duration_s: f64,
        limit_s: f64,
    },

    #[error("{}: cannot resample from {from_rate} Hz to {to_rate} Hz: {detail}", path.display())]
    Resample {
        path: PathBuf,
        from_rate: u32,
        to_rate: u32,
        detail: String,
    },

    /// The decode worker process could not be started or broke the protocol.
    #[error("{}: audio decode worker failed: {detail}", path.display())]
    Worker { path: PathBuf, detail: String },
}

impl AudioError {
    /// The file the error is about (`IN_MEMORY`, `"<in-memory samples>"`, for in-memory samples).
    pub fn path(&self) -> &Path {
        match self {
            AudioError::Io { path, .. }
            | AudioError::EmptyFile { path }
            | AudioError::NotAudio { path, .. }
            | AudioError::UnsupportedCodec { path, .. }
            | AudioError::Decode { path, .. }
            | AudioError::DecoderCrashed { path, .. }
            | AudioError::ZeroLength { path }
            | AudioError::AllSilent { path }
            | AudioError::NonFinite { path, .. }
            | AudioError::TooLong { path, .. }
            | AudioError::Resample { path, .. }
            | AudioError::Worker { path, .. } => path,
        }
    }

    /// The same error about another path (used to attach the file to in-memory errors).
    pub(crate) fn with_path(mut self, new: &Path) -> Self {
        match &mut self {
            AudioError::Io { path, .. }
            | AudioError::EmptyFile { path }
            | AudioError::NotAudio { path, .. }
            | AudioError::UnsupportedCodec { path, .. }
            | AudioError::Decode { path, .. }
            | AudioError::DecoderCrashed { path, .. }
            | AudioError::ZeroLength { path }
            | AudioError::AllSilent { path }
            | AudioError::NonFinite { path, .. }
            | AudioError::TooLong { path, .. }
            | AudioError::Resample { path, .. }
            | AudioError::Worker { path, .. } => *path = new.to_path_buf(),
        }
        self
    }

    /// Serialise for the worker protocol (the path travels separately).
    pub(crate) fn to_wire(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            AudioError::Io { source, .. } => json!({"k": "io", "d": source.to_string()}),
            AudioError::EmptyFile { .. } => json!({"k": "empty"}),
            AudioError::NotAudio { detail, .. } => json!({"k": "not_audio", "d": detail}),
            AudioError::UnsupportedCodec { detail, .. } => json!({"k": "codec", "d": detail}),
            AudioError::Decode { detail, .. } => json!({"k": "decode", "d": detail}),
            AudioError::DecoderCrashed { detail, .. } => json!({"k": "crashed", "d": detail}),
            AudioError::ZeroLength { .. } => json!({"k": "zero"}),
            AudioError::AllSilent { .. } => json!({"k": "silent"}),
            AudioError::NonFinite { first_at_s, .. } => json!({"k": "nonfinite", "t": first_at_s}),
            AudioError::TooLong {
                duration_s,
                limit_s,
                ..
            } => {
                json!({"k": "too_long", "t": duration_s, "l": limit_s})
            }
            AudioError::Resample {
                from_rate,
                to_rate,
                detail,
                ..
            } => {
                json!({"k": "resample", "f": from_rate, "r": to_rate, "d": detail})
            }
            AudioError::Worker { detail, .. } => json!({"k": "worker", "d": detail}),
        }
    }

    /// Inverse of [`AudioError::to_wire`]; anything unreadable becomes a `Worker` error.
    pub(crate) fn from_wire(path: &Path, v: &serde_json::Value) -> Self {
        let path = path.to_path_buf();
        let s = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
        let u = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0) as u32;
        match v.get("k").and_then(|k| k.as_str()).unwrap_or("") {
            "io" => AudioError::Io {
                path,
                source: std::io::Error::other(s("d")),
            },
            "empty" => AudioError::EmptyFile { path },
            "not_audio" => AudioError::NotAudio {
                path,
                detail: s("d"),
            },
            "codec" => AudioError::UnsupportedCodec {
                path,
                detail: s("d"),
            },
            "decode" => AudioError::Decode {
                path,
                detail: s("d"),
            },
            "crashed" => AudioError::DecoderCrashed {
                path,
                detail: s("d"),
            },
            "zero" => AudioError::ZeroLength { path },
            "silent" => AudioError::AllSilent { path },
            "nonfinite" => AudioError::NonFinite {
                path,
                first_at_s: f("t"),
            },
            "too_long" => AudioError::TooLong {
                path,
                duration_s: f("t"),
                limit_s: f("l"),
            },
            "resample" => AudioError::Resample {
                path,
                from_rate: u("f"),
                to_rate: u("r"),
                detail: s("d"),
            },
            "worker" => AudioError::Worker {
                path,
                detail: s("d"),
            },
            other => AudioError::Worker {
                path,
                detail: format!("unknown error kind '{other}' from worker"),
            },
        }
    }
}
