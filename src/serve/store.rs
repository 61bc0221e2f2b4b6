//! What the workbench keeps under `--data`: uploaded clips (`clips/`), one decision record per
//! classified clip or segment (`decisions.jsonl`) and the labels people gave (`labels.csv`).
//!
//! `labels.csv` is a labelled manifest (`path,label,speaker,labelled_at`, paths relative to
//! the data folder) that `camxuc adapt --labelled` reads as it is, and `clips/` is a folder
//! `adapt --unlabelled` takes. Each label is one `write_all` of one row followed by a sync,
//! under a process-wide lock, so concurrent requests cannot interleave rows and a crash loses
//! at most the row being written. The review queue is rebuilt at start from the two files, so
//! it survives a restart. Everything is created owner-only (recordings are health data).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::private_fs;
use crate::Decision;

/// The labels file inside the data folder.
pub const LABELS_FILE: &str = "labels.csv";
/// Its header.
pub const LABELS_COLUMNS: [&str; 4] = ["path", "label", "speaker", "labelled_at"];
/// Decision records, one JSON line per classified clip (per utterance with segments).
pub const DECISIONS_FILE: &str = "decisions.jsonl";
/// Uploaded clips.
pub const CLIPS_DIR: &str = "clips";
/// Longest kept part of a client's file name.
const MAX_NAME: usize = 80;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {message}: {source}", path.display())]
    Io {
        path: PathBuf,
        message: &'static str,
        source: io::Error,
    },
    #[error("{}: line {line}: {source}", path.display())]
    Labels {
        path: PathBuf,
        line: u64,
        #[source]
        source: csv::Error,
    },
    #[error("{file}: already labelled {label}")]
    AlreadyLabelled { file: String, label: String },
    #[error("{file}: no such clip (classify it first)")]
    UnknownClip { file: String },
}

fn io_err<'a>(path: &'a Path, message: &'static str) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        message,
        source,
    }
}

/// One line of `decisions.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The stored clip's name in `clips/`.
    pub file: String,
    pub decision: Decision,
    /// Why it needs a person (`routed`, `low_confidence`, `unfamiliar`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Default)]
struct Inner {
    records: Vec<Record>,
    known: HashSet<String>,
    labelled: HashMap<String, String>,
}

/// The data folder and its lock.
pub struct Store {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

impl Store {
    /// Create the folders (0700) and read back the decisions and labels of earlier runs.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let clips = dir.join(CLIPS_DIR);
        private_fs::create_private_dir_all(&clips)
            .map_err(io_err(&clips, "cannot create the clips folder"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // An existing folder may have been made by hand with the umask's mode.
            fs::set_permissions(&clips, fs::Permissions::from_mode(0o700))
                .map_err(io_err(&clips, "cannot make the clips folder owner-only"))?;
        }
        let mut inner = Inner::default();
        let decisions = dir.join(DECISIONS_FILE);
        if decisions.is_file() {
            let f = File::open(&decisions).map_err(io_err(&decisions, "cannot read"))?;
            for (i, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(io_err(&decisions, "cannot read"))?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Record>(&line) {
                    Ok(r) => {
                        inner.known.insert(r.file.clone());
                        inner.records.push(r);
                    }
                    // A line cut by a crash: the clip is re-classified if uploaded again.
                    Err(e) => eprintln!(
                        "warning: {}: line {} skipped: {e}",
                        decisions.display(),
                        i + 1
                    ),
                }
            }
        }
        let labels = dir.join(LABELS_FILE);
        if labels.is_file() {
            inner.labelled = read_labels(&labels)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Mutex::new(inner),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn clips_dir(&self) -> PathBuf {
        self.dir.join(CLIPS_DIR)
    }

    pub fn labels_path(&self) -> PathBuf {
        self.dir.join(LABELS_FILE)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the vectors whole (pushes only).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Create a new, empty, owner-only file for an upload named `client_name` by the client;
    /// its stored name is `<unix-ms>-<sanitised basename>` and never leaves `clips/`.
    pub fn new_clip(
        &self,
        client_name: Option<&str>,
    ) -> Result<(String, PathBuf, File), StoreError> {
        let base = sanitise(client_name.unwrap_or(""));
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let clips = self.clips_dir();
        for n in 0..1000u32 {
            let name = if n == 0 {
                format!("{ms}-{base}")
            } else {
                format!("{ms}-{n}-{base}")
            };
            let path = clips.join(&name);
            let mut o = OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            match o.open(&path) {
                Ok(f) => return Ok((name, path, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&path, "cannot store the upload")(e)),
            }
        }
        Err(StoreError::Io {
            path: clips,
            message: "cannot find a free name for the upload",
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }

    /// The stored clip `name`, if `name` is a plain stored name of a classified clip.
    pub fn clip_path(&self, name: &str) -> Option<PathBuf> {
        if !is_plain_name(name) || !self.lock().known.contains(name) {
            return None;
        }
        let p = self.clips_dir().join(name);
        p.is_file().then_some(p)
    }

    /// Append the records of a classified clip to `decisions.jsonl` (one write, synced).
    pub fn add_decisions(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let path = self.dir.join(DECISIONS_FILE);
        let mut buf = Vec::new();
        for r in &records {
            serde_json::to_writer(&mut buf, r).map_err(|e| StoreError::Io {
                path: path.clone(),
                message: "cannot encode a decision",
                source: e.into(),
            })?;
            buf.push(b'\n');
        }
        let mut inner = self.lock();
        append_synced(&path, &buf)?;
        for r in records {
            inner.known.insert(r.file.clone());
            inner.records.push(r);
        }
        Ok(())
    }

    /// The clips that need a person and have no label yet, oldest first; for a long recording
    /// its first segment that needs one stands for it.
    pub fn review_queue(&self) -> Vec<Record> {
        let inner = self.lock();
        let mut seen = HashSet::new();
        inner
            .records
            .iter()
            .filter(|r| r.reason.is_some() && !inner.labelled.contains_key(&r.file))
            .filter(|r| seen.insert(r.file.clone()))
            .cloned()
            .collect()
    }

    /// The decisions of the last `n` classified clips, newest first (all segments of each).
    pub fn recent(&self, n: usize) -> Vec<(String, Vec<Decision>)> {
        let inner = self.lock();
        let mut out: Vec<(String, Vec<Decision>)> = Vec::new();
        for r in inner.records.iter().rev() {
            if let Some((_, ds)) = out.last_mut().filter(|(f, _)| *f == r.file) {
                ds.insert(0, r.decision.clone());
            } else if out.len() == n {
                break;
            } else {
                out.push((r.file.clone(), vec![r.decision.clone()]));
            }
        }
        out
    }

    /// Append `clips/<file>,label,speaker,<now>` to `labels.csv` (header first when creating
    /// it). `label` must already be one of the model's labels; `speaker` may be empty (adapt
    /// then holds out a seeded third of the labels instead of whole speakers).
    pub fn add_label(&self, file: &str, label: &str, speaker: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !is_plain_name(file) || !inner.known.contains(file) {
            return Err(StoreError::UnknownClip { file: file.into() });
        }
        if let Some(old) = inner.labelled.get(file) {
            // A second row for the same clip would make the manifest invalid for adapt.
            return Err(StoreError::AlreadyLabelled {
                file: file.into(),
                label: old.clone(),
            });
        }
        let path = self.labels_path();
        let new = fs::metadata(&path).map(|m| m.len() == 0).unwrap_or(true);
        let mut w = csv::Writer::from_writer(Vec::new());
        let row = [
            format!("{CLIPS_DIR}/{file}"),
            label.to_string(),
            speaker.to_string(),
            rfc3339_utc(SystemTime::now()),
        ];
        let encoded = (|| {
            if new {
                w.write_record(LABELS_COLUMNS)?;
            }
            w.write_record(&row)?;
            w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
        })()
        .map_err(|e| StoreError::Io {
            path: path.clone(),
            message: "cannot encode the label",
            source: io::Error::other(e),
        })?;
        append_synced(&path, &encoded)?;
        inner.labelled.insert(file.into(), label.into());
        Ok(())
    }

    /// The labels given so far, by stored clip name.
    pub fn labels(&self) -> HashMap<String, String> {
        self.lock().labelled.clone()
    }
}

/// One `write_all` to an owner-only file opened for appending, then a sync.
fn append_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f =
        private_fs::append_private(path).map_err(io_err(path, "cannot open for appending"))?;
    f.write_all(bytes).map_err(io_err(path, "cannot write"))?;
    f.flush().map_err(io_err(path, "cannot write"))?;
    f.sync_data().map_err(io_err(path, "cannot sync"))
}

fn read_labels(path: &Path) -> Result<HashMap<String, String>, StoreError> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|source| StoreError::Labels {
            path: path.into(),
            line: 1,
            source,
        })?;
    let mut out = HashMap::new();
    for rec in r.records() {
        let rec = rec.map_err(|source| StoreError::Labels {
            path: path.into(),
            line: source.position().map_or(0, |p| p.line()),
            source,
        })?;
        let (Some(p), Some(label)) = (rec.get(0), rec.get(1)) else {
            continue;
        };
        let file = p.strip_prefix(&format!("{CLIPS_DIR}/")).unwrap_or(p);
        out.insert(file.to_string(), label.to_string());
    }
    Ok(out)
}

/// A stored name: no separators, not `.`/`..`, nothing hidden.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= MAX_NAME + 32
}

/// The client's file name reduced to a safe basename: the last path component, characters
/// outside `[A-Za-z0-9._-]` replaced by `_`, no leading dots, at most `MAX_NAME` bytes
/// (the extension kept, it tells the decoder the format); `upload` when nothing is left.
pub fn sanitise(client_name: &str) -> String {
    let base = client_name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut s: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    s = s.trim_start_matches('.').to_string();
    if s.len() > MAX_NAME {
        let ext = s
            .rfind('.')
            .map(|i| s[i..].to_string())
            .filter(|e| e.len() <= 8)
            .unwrap_or_default();
        s.truncate(MAX_NAME - ext.len());
        s.push_str(&ext);
    }
    if s.is_empty() || s.chars().all(|c| c == '.' || c == '_') {
        "upload".into()
    } else {
        s
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        crate::refine::civil_date(days),
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::manifest::Manifest;
    use crate::{LabelSet, DECISION_SCHEMA_VERSION};
    use std::time::Duration;

    /// A routed decision, built from JSON so that optional fields added to the schema later
    /// need no change here.
    fn decision(file: &str) -> Decision {
        serde_json::from_value(serde_json::json!({
            "schema_version": DECISION_SCHEMA_VERSION,
            "file": file,
            "label": "calm",
            "probs": {"calm": 0.4, "angry": 0.35, "panic": 0.25},
            "acoustic_probs": {"calm": 0.4, "angry": 0.35, "panic": 0.25},
            "route": "rules",
            "unfamiliarity": 1.0,
            "evidence": {"values": {}},
            "fired_rules": [],
            "timings_ms": {}
        }))
        .unwrap()
    }

    fn classified(store: &Store, client: &str) -> String {
        let (name, _, mut f) = store.new_clip(Some(client)).unwrap();
        f.write_all(b"RIFF").unwrap();
        store
            .add_decisions(vec![Record {
                file: name.clone(),
                decision: decision(&name),
                reason: Some("routed".into()),
            }])
            .unwrap();
        name
    }

    #[test]
    fn client_names_cannot_leave_the_clips_folder() {
        assert_eq!(sanitise("../../evil.wav"), "evil.wav");
        assert_eq!(sanitise("..\\..\\evil.wav"), "evil.wav");
        assert_eq!(sanitise("/etc/passwd"), "passwd");
        assert_eq!(sanitise(".."), "upload");
        assert_eq!(sanitise(""), "upload");
        assert_eq!(sanitise(".hidden.wav"), "hidden.wav");
        assert_eq!(sanitise("giọng nói.wav"), "gi_ng_n_i.wav");
        let long = format!("{}.flac", "a".repeat(300));
        let s = sanitise(&long);
        assert!(s.len() <= MAX_NAME && s.ends_with(".flac"), "{s}");
        assert!(!is_plain_name(".."));
        assert!(!is_plain_name("a/b"));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // a leap day
        assert_eq!(rfc3339_utc(t), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn labels_form_a_manifest_adapt_reads_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("site");
        let store = Store::open(&data).unwrap();
        let a = classified(&store, "a.wav");
        let b = classified(&store, "../b.wav");
        let c = classified(&store, "c.wav");
        assert_eq!(store.review_queue().len(), 3);
        store.add_label(&a, "angry", "").unwrap();
        store.add_label(&b, "calm", "site-1").unwrap();
        assert!(matches!(
            store.add_label(&a, "calm", ""),
            Err(StoreError::AlreadyLabelled { .. })
        ));
        assert!(matches!(
            store.add_label("nope.wav", "calm", ""),
            Err(StoreError::UnknownClip { .. })
        ));
        assert!(matches!(
            store.add_label("../decisions.jsonl", "calm", ""),
            Err(StoreError::UnknownClip { .. })
        ));
        drop(store);

        // adapt's reader (a labelled manifest) accepts the file as written.
        let m = Manifest::load(&data.join(LABELS_FILE), &LabelSet::default()).unwrap();
        assert_eq!(m.rows.len(), 2);
        assert_eq!(m.rows[0].label, "angry");
        assert_eq!(m.rows[0].path, data.join(CLIPS_DIR).join(&a));
        assert!(m.rows[0].path.is_file());
        assert!(m.rows[0].extra.contains_key("labelled_at"));
        assert_eq!(m.rows[0].speaker, None);
        assert_eq!(m.rows[1].speaker.as_deref(), Some("site-1"));

        let store = Store::open(&data).unwrap();
        let queue: Vec<String> = store.review_queue().into_iter().map(|r| r.file).collect();
        assert_eq!(queue, vec![c]);
        assert_eq!(store.labels().get(&b).map(String::as_str), Some("calm"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&data.join(LABELS_FILE)), 0o600);
            assert_eq!(mode(&data.join(DECISIONS_FILE)), 0o600);
            assert_eq!(mode(&data.join(CLIPS_DIR)), 0o700);
            assert_eq!(mode(&data.join(CLIPS_DIR).join(&a)), 0o600);
        }
    }

    #[test]
    fn concurrent_labels_give_whole_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let names: Vec<String> = (0..40)
            .map(|i| classified(&store, &format!("c{i}.wav")))
            .collect();
        std::thread::scope(|s| {
            for (i, n) in names.iter().enumerate() {
                let store = &store;
                s.spawn(move || {
                    store
                        .add_label(n, ["calm", "angry", "panic"][i % 3], "")
                        .unwrap()
                });
            }
        });
        let m = Manifest::load(&dir.path().join(LABELS_FILE), &LabelSet::default()).unwrap();
        assert_eq!(m.rows.len(), 40);
    }
}
