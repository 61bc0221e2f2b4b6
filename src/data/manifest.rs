//! Manifest CSV files (DESIGN.md, "Manifests").
//!
//! A manifest has a header; `path,label` are required (`path` only for
//! [`Manifest::load_unlabelled`]), `speaker` is recommended, and every other column is kept
//! in [`ManifestRow::extra`]. `path` is relative to the manifest's own folder (absolute paths
//! are accepted too).
//!
//! Loading does **not** require the audio files to exist: a batch job should be able to go on
//! with the clips it has. [`Manifest::missing_files`] lists the absent ones and
//! [`Manifest::require_files`] turns them into one error that lists them all, for the
//! commands (train, eval) that need every clip.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::DataError;
use crate::types::LabelSet;

/// One clip of a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestRow {
    /// 1-based line number in the manifest file (the header is line 1).
    pub line: usize,
    /// The `path` column as written.
    pub rel_path: String,
    /// `rel_path` resolved against the manifest's folder.
    pub path: PathBuf,
    /// Normalised label (the label set's spelling); empty in an unlabelled manifest.
    pub label: String,
    pub speaker: Option<String>,
    /// Every other column, by header name.
    pub extra: BTreeMap<String, String>,
}

/// A loaded manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The manifest file itself.
    pub path: PathBuf,
    pub rows: Vec<ManifestRow>,
    /// The label set rows were validated against; `None` for an unlabelled manifest.
    pub labels: Option<LabelSet>,
    /// Names of the extra columns in the order of the file's header (kept for `write`).
    pub extra_columns: Vec<String>,
}

const REQUIRED_LABELLED: &str = "path,label";

impl Manifest {
    /// Load a labelled manifest: `path` and `label` columns required, labels validated
    /// against `labels` (case-insensitive; stored in the label set's spelling).
    pub fn load(path: &Path, labels: &LabelSet) -> Result<Manifest, DataError> {
        load_impl(path, Some(labels))
    }

    /// Load a manifest for classification: only `path` is required. A `label` column, if
    /// present, is not validated and is kept in `extra["label"]`.
    pub fn load_unlabelled(path: &Path) -> Result<Manifest, DataError> {
        load_impl(path, None)
    }

    /// The folder that relative paths are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new(""))
    }

    /// Rows whose audio file does not exist (or is not a file).
    pub fn missing_files(&self) -> Vec<&ManifestRow> {
        self.rows.iter().filter(|r| !r.path.is_file()).collect()
    }

    /// `Ok` when every audio file exists; otherwise one error listing all missing files
    /// (with their manifest line numbers).
    pub fn require_files(&self) -> Result<(), DataError> {
        let missing = self.missing_files();
        if missing.is_empty() {
            return Ok(());
        }
        const SHOWN: usize = 20;
        let mut listing: Vec<String> = missing
            .iter()
            .take(SHOWN)
            .map(|r| format!("line {}: {}", r.line, r.path.display()))
            .collect();
        if missing.len() > SHOWN {
            listing.push(format!("… and {} more", missing.len() - SHOWN));
        }
        Err(DataError::MissingAudio {
            path: self.path.clone(),
            count: missing.len(),
            listing: listing.join("; "),
        })
    }

    /// Label index of every row in the manifest's label set (`None` for an unlabelled one).
    pub fn label_indices(&self) -> Option<Vec<usize>> {
        let labels = self.labels.as_ref()?;
        self.rows
            .iter()
            .map(|r| labels.index_of(&r.label))
            .collect()
    }

    /// Distinct speakers in order of first appearance.
    pub fn speakers(&self) -> Vec<String> {
        let mut seen = Vec::<String>::new();
        for s in self.rows.iter().filter_map(|r| r.speaker.as_ref()) {
            if !seen.contains(s) {
                seen.push(s.clone());
            }
        }
        seen
    }

    /// A manifest with only the given rows (same file, labels and columns).
    pub fn subset(&self, indices: &[usize]) -> Manifest {
        Manifest {
            path: self.path.clone(),
            rows: indices
                .iter()
                .filter_map(|&i| self.rows.get(i).cloned())
                .collect(),
            labels: self.labels.clone(),
            extra_columns: self.extra_columns.clone(),
        }
    }

    /// Stable content hash for `model.json`: hex sha256 over one line per clip,
    /// `rel_path \t label \t file size in bytes (or "missing") \n`, with the lines sorted by
    /// `rel_path` so that reordering the manifest does not change the hash. File contents are
    /// not read (too slow for big corpora); the size catches re-encoded or truncated files.
    pub fn data_hash(&self) -> String {
        let mut lines: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                let size = std::fs::metadata(&r.path)
                    .map(|m| m.len().to_string())
                    .unwrap_or_else(|_| "missing".into());
                format!("{}\t{}\t{}\n", r.rel_path, r.label, size)
            })
            .collect();
        lines.sort();
        let mut h = Sha256::new();
        for l in &lines {
            h.update(l.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Write the manifest to `out`: `path,label,speaker` then the extra columns in their
    /// original order. Paths are written relative to `out`'s folder when the clip lies under
    /// it, otherwise absolute, so the written manifest resolves to the same files.
    pub fn write(&self, out: &Path) -> Result<(), DataError> {
        let werr = |source: csv::Error| DataError::ManifestWrite {
            path: out.to_path_buf(),
            source,
        };
        let out_dir = out.parent().unwrap_or(Path::new(""));
        let mut w = csv::Writer::from_path(out).map_err(werr)?;
        let mut header = vec!["path".to_string()];
        let labelled = self.labels.is_some();
        if labelled {
            header.push("label".into());
        }
        header.push("speaker".into());
        header.extend(self.extra_columns.iter().cloned());
        w.write_record(&header).map_err(werr)?;
        for r in &self.rows {
            let mut rec = vec![relative_to(&r.path, out_dir)];
            if labelled {
                rec.push(r.label.clone());
            }
            rec.push(r.speaker.clone().unwrap_or_default());
            for c in &self.extra_columns {
                rec.push(r.extra.get(c).cloned().unwrap_or_default());
            }
            w.write_record(&rec).map_err(werr)?;
        }
        w.flush().map_err(|e| werr(e.into()))
    }
}

fn load_impl(path: &Path, labels: Option<&LabelSet>) -> Result<Manifest, DataError> {
    let p = path.to_path_buf();
    if !path.is_file() {
        return Err(DataError::ManifestMissing { path: p });
    }
    let unreadable = |line: Option<usize>, source: csv::Error| DataError::ManifestUnreadable {
        path: p.clone(),
        line,
        source,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .flexible(false)
        .from_path(path)
        .map_err(|e| unreadable(None, e))?;
    // A UTF-8 byte-order mark (Excel exports) must not hide the first column's name.
    let header_raw: Vec<String> = reader
        .headers()
        .map_err(|e| unreadable(Some(1), e))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    // Required columns match case-insensitively; extra columns keep their spelling.
    let header: Vec<String> = header_raw.iter().map(|h| h.to_lowercase()).collect();
    if header.iter().all(|h| h.is_empty()) {
        return Err(DataError::EmptyManifest { path: p });
    }
    let col = |name: &str| header.iter().position(|h| h == name);
    let required = if labels.is_some() {
        REQUIRED_LABELLED
    } else {
        "path"
    };
    let missing_header = |missing: &str| DataError::BadHeader {
        path: p.clone(),
        missing: missing.into(),
        required: required.into(),
        found: header_raw.join(","),
    };
    let path_col = col("path").ok_or_else(|| missing_header("path"))?;
    let label_col = match labels {
        Some(_) => Some(col("label").ok_or_else(|| missing_header("label"))?),
        None => None,
    };
    let speaker_col = col("speaker");
    let extra_cols: Vec<(usize, String)> = header_raw
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            Some(*i) != Some(path_col) && Some(*i) != label_col && Some(*i) != speaker_col
        })
        .map(|(i, h)| (i, h.clone()))
        .collect();

    let base = path.parent().unwrap_or(Path::new(""));
    let mut rows = Vec::new();
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|pos| pos.line() as usize);
            unreadable(line, e)
        })?;
        let line = rec
            .position()
            .map(|pos| pos.line() as usize)
            .unwrap_or(rows.len() + 2);
        // Blank lines are skipped by the csv reader; a row of empty cells is skipped here.
        if rec.iter().all(|f| f.is_empty()) {
            continue;
        }
        let rel_path = rec.get(path_col).unwrap_or("").to_string();
        if rel_path.is_empty() {
            return Err(DataError::EmptyField {
                path: p,
                line,
                column: "path".into(),
            });
        }
        let label = match (labels, label_col) {
            (Some(set), Some(c)) => {
                let raw = rec.get(c).unwrap_or("");
                if raw.is_empty() {
                    return Err(DataError::EmptyField {
                        path: p,
                        line,
                        column: "label".into(),
                    });
                }
                match set.index_of(raw) {
                    Some(i) => set.name(i).to_string(),
                    None => {
                        return Err(DataError::UnknownLabel {
                            path: p,
                            line,
                            label: raw.into(),
                            valid: set.to_string(),
                        })
                    }
                }
            }
            _ => String::new(),
        };
        if let Some(&first_line) = first_seen.get(&rel_path) {
            return Err(DataError::DuplicateRow {
                path: p,
                rel_path,
                first_line,
                second_line: line,
            });
        }
        first_seen.insert(rel_path.clone(), line);
        let speaker = speaker_col
            .and_then(|c| rec.get(c))
            .filter(|s| !s.is_empty())
            .map(String::from);
        let extra = extra_cols
            .iter()
            .map(|(i, name)| (name.clone(), rec.get(*i).unwrap_or("").to_string()))
            .collect();
        rows.push(ManifestRow {
            line,
            path: base.join(&rel_path),
            rel_path,
            label,
            speaker,
            extra,
        });
    }
    if rows.is_empty() {
        return Err(DataError::EmptyManifest { path: p });
    }
    Ok(Manifest {
        path: p,
        rows,
        labels: labels.cloned(),
        extra_columns: extra_cols.into_iter().map(|(_, n)| n).collect(),
    })
}

/// `file` relative to `dir` when it lies under it, else absolute (canonical when possible).
fn relative_to(file: &Path, dir: &Path) -> String {
    if let Ok(rel) = file.strip_prefix(dir) {
        if !dir.as_os_str().is_empty() || file.is_relative() {
            return rel.to_string_lossy().into_owned();
        }
    }
    let canon_file = std::fs::canonicalize(file).or_else(|_| std::path::absolute(file));
    let canon_dir = std::fs::canonicalize(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    });
    if let (Ok(f), Ok(d)) = (&canon_file, &canon_dir) {
        if let Ok(rel) = f.strip_prefix(d) {
            return rel.to_string_lossy().into_owned();
        }
    }
    canon_file
        .unwrap_or_else(|_| file.to_path_buf())
        .to_string_lossy()
        .into_owned()
}
