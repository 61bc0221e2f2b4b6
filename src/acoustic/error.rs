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
    #[error("{}: {message}", path.display())]
    Training { path: PathBuf, message: String },
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
