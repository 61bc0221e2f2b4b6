//! Incremental batch output: one record per clip, appended and flushed as it is decided, so a
//! crash or Ctrl-C loses nothing already done; `--resume` skips what the file already holds.
//! Files are created readable by their owner only: recordings and their labels are health data.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Decision;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output holds results already and `--resume` was not given.
    #[error("{}: exists; pass --resume to continue it, or choose another --out", path.display())]
    Exists { path: PathBuf },
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        /// What was being done (`cannot write`, `cannot create`, …).
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot encode a record: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: cannot write: {source}", path.display())]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("{}: cannot resume: {message}", path.display())]
    Resume { path: PathBuf, message: String },
}

pub use crate::private_fs::{append_private as open_private_append, write_private};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
}

/// A clip that could not be decided, recorded in the output with its reason.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    pub file: String,
    pub error: String,
}

/// The first JSONL line: what produced the file, so `--resume` can refuse a mismatch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunHeader {
    pub camxuc_run: String,
    pub model: String,
    pub rules: String,
    pub reasoner: String,
}

pub struct BatchWriter {
    path: PathBuf,
    file: File,
    format: Format,
    labels: Vec<String>,
}

const CSV_HEAD: [&str; 4] = ["file", "segment_start_s", "segment_end_s", "label"];

/// A first line that `--resume` compares with the run's own, refusing a mismatch.
pub trait ResumeHeader: Serialize + DeserializeOwned + PartialEq {
    /// Why the file's header `found` does not match this run's (one line).
    fn mismatch(&self, found: &Self) -> String;
}

impl ResumeHeader for RunHeader {
    fn mismatch(&self, h: &Self) -> String {
        format!(
            "it was written with another model, rule set or reasoner ({} / {} / {}); this run uses {} / {} / {}",
            h.model, h.rules, h.reasoner, self.model, self.rules, self.reasoner
        )
    }
}

/// Whether `path` already holds output: refused without `resume`; with it, a half-written
/// last line is cut first.
fn existing_output(path: &Path, resume: bool) -> Result<bool, OutputError> {
    let exists = path.is_file()
        && std::fs::metadata(path)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
    if exists && !resume {
        return Err(OutputError::Exists { path: path.into() });
    }
    if !exists {
        return Ok(false);
    }
    let io = |source: std::io::Error| OutputError::Io {
        path: path.into(),
        what: "cannot read",
        source,
    };
    drop_partial_last_line(path).map_err(io)?;
    // A run killed while writing its header leaves nothing to resume: start afresh.
    Ok(std::fs::metadata(path).map_err(io)?.len() > 0)
}

impl BatchWriter {
    /// Open the output. With `resume`, returns the files already recorded (decided or failed);
    /// a JSONL file whose header differs from `header` is refused.
    pub fn open(
        path: &Path,
        format: Format,
        labels: &[String],
        header: &RunHeader,
        resume: bool,
    ) -> Result<(Self, HashSet<String>), OutputError> {
        let io = |source: std::io::Error| OutputError::Io {
            path: path.into(),
            what: "cannot write",
            source,
        };
        let exists = existing_output(path, resume)?;
        let done = if exists {
            read_done(path, format, header)?
        } else {
            HashSet::new()
        };
        let mut w = Self::append(path, format, labels)?;
        if !exists {
            match format {
                Format::Jsonl => {
                    w.line(&serde_json::to_string(header).map_err(|e| io(e.into()))?)?
                }
                Format::Csv => w.line(&csv_line(&csv_header(labels)))?,
            }
        }
        Ok((w, done))
    }

    /// Open a JSONL output of any records (see [`BatchWriter::record`]) whose first line is
    /// `header`. With `resume`, returns the lines already written after the header (a line
    /// cut by a crash is dropped); a file whose header differs is refused.
    pub fn open_jsonl<H: ResumeHeader>(
        path: &Path,
        header: &H,
        resume: bool,
    ) -> Result<(Self, Vec<String>), OutputError> {
        let exists = existing_output(path, resume)?;
        let lines = if exists {
            read_jsonl_body(path, header)?
        } else {
            Vec::new()
        };
        let mut w = Self::append(path, Format::Jsonl, &[])?;
        if !exists {
            w.record(header)?;
        }
        Ok((w, lines))
    }

    fn append(path: &Path, format: Format, labels: &[String]) -> Result<Self, OutputError> {
        let file = open_private_append(path).map_err(|source| OutputError::Io {
            path: path.into(),
            what: "cannot open",
            source,
        })?;
        Ok(Self {
            path: path.into(),
            file,
            format,
            labels: labels.to_vec(),
        })
    }

    /// Append one JSON line and flush it (JSONL outputs).
    pub fn record<T: Serialize + ?Sized>(&mut self, r: &T) -> Result<(), OutputError> {
        let s = serde_json::to_string(r).map_err(|source| OutputError::Encode {
            path: self.path.clone(),
            source,
        })?;
        self.line(&s)
    }

    fn line(&mut self, s: &str) -> Result<(), OutputError> {
        let io = |source: std::io::Error| OutputError::Io {
            path: self.path.clone(),
            what: "cannot write",
            source,
        };
        writeln!(self.file, "{s}").map_err(io)?;
        self.file.flush().map_err(io)
    }

    pub fn decision(&mut self, d: &Decision) -> Result<(), OutputError> {
        let s = match self.format {
            Format::Jsonl => return self.record(d),
            Format::Csv => csv_line(&csv_decision(d, &self.labels)),
        };
        self.line(&s)
    }

    pub fn failure(&mut self, f: &Failure) -> Result<(), OutputError> {
        let s = match self.format {
            Format::Jsonl => return self.record(f),
            Format::Csv => csv_line(&csv_failure(f, &self.labels)),
        };
        self.line(&s)
    }
}

/// Decisions as CSV on any writer (standard output for `classify --format csv`): the header
/// and rows of a CSV [`BatchWriter`] file, one schema for both, each line flushed as it is
/// written.
pub struct CsvDecisions<W: Write> {
    out: W,
    labels: Vec<String>,
}

impl<W: Write> CsvDecisions<W> {
    /// Writes the header line (`labels` give the `p_<label>` columns, in this order).
    pub fn new(out: W, labels: &[String]) -> std::io::Result<Self> {
        let mut w = Self {
            out,
            labels: labels.to_vec(),
        };
        w.line(&csv_header(labels))?;
        Ok(w)
    }

    pub fn decision(&mut self, d: &Decision) -> std::io::Result<()> {
        let cols = csv_decision(d, &self.labels);
        self.line(&cols)
    }

    /// A row with only the file and the `error` column filled.
    pub fn failure(&mut self, f: &Failure) -> std::io::Result<()> {
        let cols = csv_failure(f, &self.labels);
        self.line(&cols)
    }

    fn line(&mut self, cols: &[String]) -> std::io::Result<()> {
        writeln!(self.out, "{}", csv_line(cols))?;
        self.out.flush()
    }
}

/// The CSV columns of a decision: file, segment start and end, label, one `p_<label>` per
/// label, route, fired rules, rationale, error.
pub fn csv_header(labels: &[String]) -> Vec<String> {
    let mut cols: Vec<String> = CSV_HEAD.iter().map(|s| s.to_string()).collect();
    cols.extend(labels.iter().map(|l| format!("p_{l}")));
    cols.extend(
        [
            "route",
            "unfamiliarity",
            "fired_rules",
            "rationale",
            "error",
        ]
        .map(String::from),
    );
    cols
}

fn csv_decision(d: &Decision, labels: &[String]) -> Vec<String> {
    let seg = |f: fn(&crate::Segment) -> f64| {
        d.segment
            .as_ref()
            .map(|s| format!("{:.3}", f(s)))
            .unwrap_or_default()
    };
    let mut cols = vec![
        d.file.clone(),
        seg(|s| s.start_s),
        seg(|s| s.end_s),
        d.label.clone(),
    ];
    cols.extend(labels.iter().map(|l| {
        d.probs
            .get(l)
            .map(|p| format!("{p:.4}"))
            .unwrap_or_default()
    }));
    cols.push(d.route.to_string());
    cols.push(
        d.unfamiliarity
            .map(|u| format!("{u:.3}"))
            .unwrap_or_default(),
    );
    cols.push(
        d.fired_rules
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    );
    cols.push(d.rationale.clone().unwrap_or_default());
    cols.push(String::new());
    cols
}

fn csv_failure(f: &Failure, labels: &[String]) -> Vec<String> {
    let mut cols = vec![f.file.clone(), String::new(), String::new(), String::new()];
    cols.extend(labels.iter().map(|_| String::new()));
    cols.extend([
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        f.error.clone(),
    ]);
    cols
}

/// A process killed mid-write can leave half a line; cut it so the next record starts on a
/// line of its own (that clip is then decided again).
fn drop_partial_last_line(path: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(path)?;
    if bytes.last().is_some_and(|&b| b != b'\n') {
        let keep = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(keep as u64)?;
    }
    Ok(())
}

fn csv_line(cols: &[String]) -> String {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = w.write_record(cols);
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).trim_end().to_string()
}

/// Files already recorded in an output being resumed. A last line cut by a crash is ignored
/// (that clip is done again).
fn read_done(
    path: &Path,
    format: Format,
    header: &RunHeader,
) -> Result<HashSet<String>, OutputError> {
    let resume = |m: String| OutputError::Resume {
        path: path.into(),
        message: m,
    };
    let mut done = HashSet::new();
    match format {
        Format::Jsonl => {
            for line in read_jsonl_body(path, header)? {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(file) = v.get("file").and_then(|f| f.as_str()) {
                        done.insert(file.to_string());
                    }
                }
            }
        }
        Format::Csv => {
            let f = File::open(path).map_err(|e| resume(e.to_string()))?;
            let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(f);
            for rec in r.records().flatten() {
                if let Some(file) = rec.get(0) {
                    done.insert(file.to_string());
                }
            }
        }
    }
    Ok(done)
}

/// The lines after the header of a JSONL output being resumed, once the header matches.
fn read_jsonl_body<H: ResumeHeader>(path: &Path, header: &H) -> Result<Vec<String>, OutputError> {
    let resume = |m: String| OutputError::Resume {
        path: path.into(),
        message: m,
    };
    let f = File::open(path).map_err(|e| resume(e.to_string()))?;
    let mut lines = BufReader::new(f).lines();
    let first = lines
        .next()
        .transpose()
        .map_err(|e| resume(e.to_string()))?
        .unwrap_or_default();
    let found: H = serde_json::from_str(&first)
        .map_err(|_| resume("the first line is not a camxuc run header".into()))?;
    if &found != header {
        return Err(resume(header.mismatch(&found)));
    }
    lines
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| resume(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(rules: &str) -> RunHeader {
        RunHeader {
            camxuc_run: "test".into(),
            model: "m abc".into(),
            rules: rules.into(),
            reasoner: "rule-vote".into(),
        }
    }

    #[test]
    fn a_jsonl_output_resumes_its_whole_lines_and_refuses_another_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let (mut w, lines) = BatchWriter::open_jsonl(&path, &header("r1"), false).unwrap();
        assert!(lines.is_empty());
        w.record(&Failure {
            file: "a.wav".into(),
            error: "a.wav: not audio".into(),
        })
        .unwrap();
        drop(w);
        // A crash mid-write leaves half a record.
        let mut f = open_private_append(&path).unwrap();
        f.write_all(b"{\"file\":\"b.w").unwrap();
        drop(f);
        assert!(matches!(
            BatchWriter::open_jsonl(&path, &header("r1"), false),
            Err(OutputError::Exists { .. })
        ));
        let e = BatchWriter::open_jsonl(&path, &header("r2"), true)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("out.jsonl: cannot resume") && e.contains("r2"),
            "{e}"
        );
        let (_, lines) = BatchWriter::open_jsonl(&path, &header("r1"), true).unwrap();
        assert_eq!(
            lines,
            vec![r#"{"file":"a.wav","error":"a.wav: not audio"}"#]
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("not audio\"}\n"), "partial line cut: {text}");
    }

    /// A decision from its JSON (so fields added with a serde default need no change here).
    fn decision(file: &str) -> Decision {
        let probs = serde_json::json!({"calm": 0.2, "angry": 0.5, "panic": 0.3});
        serde_json::from_value(serde_json::json!({
            "schema_version": crate::types::DECISION_SCHEMA_VERSION,
            "file": file,
            "label": "angry",
            "probs": probs,
            "acoustic_probs": probs,
            "route": "rules",
            "evidence": {"values": {}},
            "fired_rules": [
                {"id": "r1", "label": "angry", "weight": 1.0, "statement_en": "loud"}
            ],
            "rationale": "Decision: angry (50%).\n- [r1] \"loud\", fast",
            "timings_ms": {},
        }))
        .unwrap()
    }

    #[test]
    fn stdout_csv_and_a_csv_output_file_share_one_schema_and_quote_commas() {
        let labels = crate::LabelSet::default().names().to_vec();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let (mut file, _) =
            BatchWriter::open(&path, Format::Csv, &labels, &header("r1"), false).unwrap();
        let mut stdout = CsvDecisions::new(Vec::new(), &labels).unwrap();
        let failure = Failure {
            file: "c.wav".into(),
            error: "c.wav: not audio".into(),
        };
        for d in [decision("a, b.wav"), decision("plain.wav")] {
            file.decision(&d).unwrap();
            stdout.decision(&d).unwrap();
        }
        file.failure(&failure).unwrap();
        stdout.failure(&failure).unwrap();
        drop(file);
        let written = std::fs::read_to_string(&path).unwrap();
        let printed = String::from_utf8(stdout.out).unwrap();
        assert_eq!(printed, written);
        assert!(
            written.starts_with("file,segment_start_s,segment_end_s,label,p_calm,p_angry,p_panic,route,unfamiliarity,fired_rules,rationale,error\n"),
            "{written}"
        );
        assert!(written.contains("\n\"a, b.wav\",,,angry,"), "{written}");
        let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(written.as_bytes())
            .records()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.len() == 12));
        assert_eq!(&rows[0][0], "a, b.wav");
        assert_eq!(
            &rows[0][10],
            "Decision: angry (50%).\n- [r1] \"loud\", fast"
        );
        assert_eq!(&rows[2][11], "c.wav: not audio");
    }

    #[test]
    fn a_run_killed_while_writing_its_header_starts_afresh_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"{\"camxuc_run\":\"te").unwrap();
        let (_, lines) = BatchWriter::open_jsonl(&path, &header("r1"), true).unwrap();
        assert!(lines.is_empty());
        let first = std::fs::read_to_string(&path).unwrap();
        let back: RunHeader = serde_json::from_str(first.trim_end()).unwrap();
        assert_eq!(back, header("r1"));
    }
}
