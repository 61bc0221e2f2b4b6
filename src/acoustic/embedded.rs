//! The shipped default model (`models/acoustic/default`, CC BY-NC-SA 4.0: derived from
//! RAVDESS, see its MODEL_CARD.md) compiled into the binary, so a command finds a model from
//! any working directory when none is installed. It is written once into the per-user cache
//! folder (`<cache>/camxuc/embedded-default-<hash>`, owner-only) and loaded from there like
//! any model directory.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::model_dir::ModelDirError;

/// Set to `0` to turn the embedded copy off (a site that must use its own model then gets
/// the "no acoustic model" error instead of the RAVDESS-trained default).
pub const EMBEDDED_ENV: &str = "CAMXUC_EMBEDDED_MODEL";

/// The files of the default model, as committed.
const FILES: [(&str, &[u8]); 6] = [
    (
        "model.json",
        include_bytes!("../../models/acoustic/default/model.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../../models/acoustic/default/model.safetensors"),
    ),
    (
        "routing.json",
        include_bytes!("../../models/acoustic/default/routing.json"),
    ),
    (
        "rules.toml",
        include_bytes!("../../models/acoustic/default/rules.toml"),
    ),
    (
        "fusion.json",
        include_bytes!("../../models/acoustic/default/fusion.json"),
    ),
    (
        "training_clips.txt",
        include_bytes!("../../models/acoustic/default/training_clips.txt"),
    ),
];

/// Whether the embedded copy may be used (`$CAMXUC_EMBEDDED_MODEL` is not `0`).
pub fn enabled(env: Option<std::ffi::OsString>) -> bool {
    env.is_none_or(|v| v != "0")
}

/// The embedded model's folder under `cache`, written there if it is not yet (complete).
pub fn materialise(cache: &Path) -> Result<PathBuf, ModelDirError> {
    let mut h = Sha256::new();
    for (name, bytes) in FILES {
        h.update(name.as_bytes());
        h.update(bytes);
    }
    let tag = hex::encode(h.finalize());
    let dir = cache.join(format!("embedded-default-{}", &tag[..12]));
    if FILES
        .iter()
        .all(|(name, bytes)| fs::read(dir.join(name)).is_ok_and(|b| b == *bytes))
    {
        return Ok(dir);
    }
    let io = |path: &Path, source: std::io::Error| ModelDirError::Embedded {
        path: path.into(),
        source,
    };
    // Written beside its final name, then renamed: another process never sees half a model.
    let tmp = cache.join(format!(
        ".embedded-default-{}.{}",
        &tag[..12],
        std::process::id()
    ));
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&tmp).map_err(|e| io(&tmp, e))?;
    for (name, bytes) in FILES {
        fs::write(tmp.join(name), bytes).map_err(|e| io(&tmp.join(name), e))?;
    }
    if dir.exists() {
        // An incomplete or stale copy: replace it.
        let _ = fs::remove_dir_all(&dir);
    }
    match fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process finished first: use its copy.
        Err(_) if dir.join(FILES[0].0).is_file() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(io(&dir, e)),
    }
}

/// The per-user cache folder for the embedded copy (`$XDG_CACHE_HOME/camxuc` on Linux), else
/// the system's temporary folder.
pub fn cache_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "camxuc")
        .map(|p| p.cache_dir().to_path_buf())
        .unwrap_or_else(|| std::env::temp_dir().join("camxuc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_once_loads_and_matches_the_committed_files() {
        let tmp = tempfile::tempdir().unwrap();
        let a = materialise(tmp.path()).unwrap();
        let b = materialise(tmp.path()).unwrap();
        assert_eq!(a, b);
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/acoustic/default");
        for (name, _) in FILES {
            assert_eq!(
                fs::read(a.join(name)).unwrap(),
                fs::read(committed.join(name)).unwrap(),
                "{name}"
            );
        }
        super::super::model_dir::read_meta(&a).expect("a readable model directory");
        // A damaged copy is rewritten.
        fs::write(a.join("routing.json"), "{").unwrap();
        let c = materialise(tmp.path()).unwrap();
        assert_eq!(
            fs::read(c.join("routing.json")).unwrap(),
            fs::read(committed.join("routing.json")).unwrap()
        );
        assert!(enabled(None) && !enabled(Some("0".into())) && enabled(Some("1".into())));
    }
}
