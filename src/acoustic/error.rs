use std::path::PathBuf;

use super::model_dir::ModelDirError;
use super::whisper::Ct2Error;
use crate::data::DataError;

/// What can go wrong training or running the acoustic model; each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum AcousticError {
    #[error(transparent)]
    ModelDir(#[from] ModelDirError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Whisper(#[from] Ct2Error),
    #[error("{}: the Whisper front end '{model}' is not installed; run `camxuc models fetch {model}`", path.display())]
    FrontendMissing { path: PathBuf, model: String },
    /// An exported front end (`camxuc models export-frontend`) cannot be written or used.
    #[error("{}: {message}", path.display())]
    Export { path: PathBuf, message: String },
    /// Why training or adapting cannot go on, in words (an underlying error is kept as a
    /// source by `Io`, `Features` and `Tensors` below).
    #[error("{}: {message}", path.display())]
    Training { path: PathBuf, message: String },
    /// A file or folder could not be read, written, copied or made.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The model's feature configuration cannot make a clip analyser.
    #[error("{}: {source}", path.display())]
    Features {
        path: PathBuf,
        #[source]
        source: crate::features::FeatureError,
    },
    /// Tensors could not be written to (or read from) the named file.
    #[error("{}: {source}", path.display())]
    Tensors {
        path: PathBuf,
        /// Boxed, as in `ModelDirError::Weights`.
        #[source]
        source: Box<candle_core::Error>,
    },
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// An [`AcousticError::Io`] naming `path`, for `map_err`.
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AcousticError + '_ {
    move |source| AcousticError::Io {
        path: path.into(),
        source,
    }
}
