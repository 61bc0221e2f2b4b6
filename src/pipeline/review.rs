//! The review queue (`camxuc review`): the routed clips of a manifest, and with `below` the
//! low-confidence ones, with their strongest evidence, fired rules and rationale, as a CSV for
//! a person to label. Written and flushed per clip into an owner-only file, so an interrupted
//! review keeps its queue; a clip that cannot be decided is queued too, with its reason.

use std::fmt::Display;
use std::fs::File;
use std::path::Path;

use super::output::OutputError;
use super::Pipeline;
use crate::data::manifest::{Manifest, ManifestRow};
use crate::{Decision, Route};

/// The queue's columns, in order.
pub const QUEUE_COLUMNS: [&str; 10] = [
    "path",
    "given_label",
    "predicted",
    "confidence",
    "route",
    "strongest_evidence",
    "fired_rules",
    "rationale",
    "your_label",
    "error",
];

/// How many of the largest evidence deviations (|z|) a queued row shows.
pub const STRONGEST_EVIDENCE: usize = 4;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReviewOptions {
    /// Also queue clips whose final top probability is below this (0: routed clips only).
    pub below: f32,
}

/// What happened to the manifest's clips.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReviewSummary {
    /// Rows of the manifest.
    pub total: usize,
    /// Decided clips put in the queue.
    pub queued: usize,
    /// Clips that could not be decided (queued with their reason).
    pub failed: usize,
}

/// Progress of [`review`], for a progress bar.
#[derive(Clone, Copy, Debug)]
pub enum ReviewEvent<'a> {
    /// Clip `index` (0-based) of `total` is about to be decided.
    Clip { index: usize, total: usize },
    /// The clip could not be decided; it is queued with this reason.
    Failed { reason: &'a str },
}

/// Decide every clip of `manifest` with `pipeline` and write the queue to `out` (see the
/// module documentation).
pub fn review(
    pipeline: &mut Pipeline,
    manifest: &Manifest,
    out: &Path,
    options: &ReviewOptions,
    progress: &mut dyn FnMut(ReviewEvent<'_>),
) -> Result<ReviewSummary, OutputError> {
    write_queue(
        &manifest.rows,
        out,
        options,
        |row| pipeline.decide_file(&row.path, &row.rel_path),
        progress,
    )
}

/// [`review`] with any decider: `decide` gives each row's decision or why there is none.
pub fn write_queue<E: Display>(
    rows: &[ManifestRow],
    out: &Path,
    options: &ReviewOptions,
    mut decide: impl FnMut(&ManifestRow) -> Result<Decision, E>,
    progress: &mut dyn FnMut(ReviewEvent<'_>),
) -> Result<ReviewSummary, OutputError> {
    let file = crate::private_fs::create_private(out).map_err(|source| OutputError::Io {
        path: out.into(),
        what: "cannot create",
        source,
    })?;
    let mut w = csv::Writer::from_writer(file);
    let write = |w: &mut csv::Writer<File>, cols: &[&str]| -> Result<(), OutputError> {
        w.write_record(cols)
            .and_then(|()| w.flush().map_err(csv::Error::from))
            .map_err(|source| OutputError::Csv {
                path: out.into(),
                source,
            })
    };
    write(&mut w, &QUEUE_COLUMNS)?;
    let mut summary = ReviewSummary {
        total: rows.len(),
        ..Default::default()
    };
    for (index, row) in rows.iter().enumerate() {
        progress(ReviewEvent::Clip {
            index,
            total: rows.len(),
        });
        let given = row.extra.get("label").cloned().unwrap_or_default();
        let d = match decide(row) {
            Ok(d) => d,
            Err(e) => {
                // A clip that could not be analysed needs a person too: queue it with the reason.
                summary.failed += 1;
                let reason = e.to_string();
                progress(ReviewEvent::Failed { reason: &reason });
                let cols = [
                    row.rel_path.as_str(),
                    &given,
                    "",
                    "",
                    "failed",
                    "",
                    "",
                    "",
                    "",
                    &reason,
                ];
                write(&mut w, &cols)?;
                continue;
            }
        };
        let Some(cols) = queue_row(&d, options) else {
            continue;
        };
        summary.queued += 1;
        let mut record = vec![row.rel_path.as_str(), given.as_str()];
        record.extend(cols.iter().map(String::as_str));
        write(&mut w, &record)?;
    }
    Ok(summary)
}

/// The columns after `path` and `given_label` of a decided clip, or None when it is not
/// queued (decided on the acoustic route with a top probability of at least `below`).
fn queue_row(d: &Decision, options: &ReviewOptions) -> Option<[String; 8]> {
    let (_, p) = d.probs.argmax();
    if d.route == Route::Acoustic && p >= options.below {
        return None;
    }
    // The largest deviations from the training corpus, in z-scores.
    let strongest: Vec<String> = d
        .evidence
        .deviations()
        .into_iter()
        .take(STRONGEST_EVIDENCE)
        .map(|(n, v)| format!("{n} {v:+.1}"))
        .collect();
    let fired: Vec<&str> = d.fired_rules.iter().map(|r| r.id.as_str()).collect();
    Some([
        d.label.clone(),
        format!("{p:.2}"),
        d.route.to_string(),
        strongest.join("; "),
        fired.join(" "),
        d.rationale.clone().unwrap_or_default(),
        String::new(),
        String::new(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LabelSet, Probs};

    fn row(path: &str, label: &str) -> ManifestRow {
        ManifestRow {
            line: 2,
            rel_path: path.into(),
            path: path.into(),
            label: String::new(),
            speaker: None,
            extra: [("label".to_string(), label.to_string())].into(),
        }
    }

    /// A decision from its JSON (so fields added with a serde default need no change here).
    fn decision(route: Route, values: [f32; 3]) -> Decision {
        let labels = LabelSet::default();
        let probs = Probs::new(&labels, values.to_vec());
        serde_json::from_value(serde_json::json!({
            "schema_version": crate::types::DECISION_SCHEMA_VERSION,
            "file": "",
            "label": probs.top_label(),
            "probs": probs,
            "acoustic_probs": probs,
            "route": route,
            "evidence": {
                "values": {},
                "z": {"a": 0.5, "b": -3.0, "c": 2.0, "d": 1.0, "e": -1.5}
            },
            "fired_rules": [
                {"id": "loud", "label": "angry", "weight": 1.0, "statement_en": ""}
            ],
            "rationale": "Decision: angry, \"loud\"",
            "timings_ms": {},
        }))
        .unwrap()
    }

    #[test]
    fn routed_low_confidence_and_failed_clips_are_queued_with_their_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("queue.csv");
        let rows = [
            row("sure.wav", "calm"),
            row("routed.wav", "angry"),
            row("unsure.wav", ""),
            row("broken.wav", "panic"),
        ];
        let mut events = Vec::new();
        let summary = write_queue(
            &rows,
            &out,
            &ReviewOptions { below: 0.6 },
            |r| match r.rel_path.as_str() {
                "sure.wav" => Ok(decision(Route::Acoustic, [0.9, 0.05, 0.05])),
                "routed.wav" => Ok(decision(Route::Rules, [0.1, 0.8, 0.1])),
                "unsure.wav" => Ok(decision(Route::Acoustic, [0.3, 0.5, 0.2])),
                _ => Err("broken.wav: not audio"),
            },
            &mut |e| {
                events.push(match e {
                    ReviewEvent::Clip { index, total } => format!("{index}/{total}"),
                    ReviewEvent::Failed { reason } => reason.to_string(),
                })
            },
        )
        .unwrap();
        assert_eq!(
            summary,
            ReviewSummary {
                total: 4,
                queued: 2,
                failed: 1
            }
        );
        assert_eq!(
            events,
            ["0/4", "1/4", "2/4", "3/4", "broken.wav: not audio"]
        );
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            text.starts_with(&(QUEUE_COLUMNS.join(",") + "\n")),
            "{text}"
        );
        let records: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
            .records()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(records.len(), 3, "{text}");
        let routed = &records[0];
        assert_eq!(
            routed.iter().collect::<Vec<_>>(),
            [
                "routed.wav",
                "angry",
                "angry",
                "0.80",
                "rules",
                "b -3.0; c +2.0; e -1.5; d +1.0",
                "loud",
                "Decision: angry, \"loud\"",
                "",
                ""
            ]
        );
        assert_eq!(&records[1][0], "unsure.wav");
        assert_eq!(&records[1][4], "acoustic");
        let broken = &records[2];
        assert_eq!(
            broken.iter().collect::<Vec<_>>(),
            [
                "broken.wav",
                "panic",
                "",
                "",
                "failed",
                "",
                "",
                "",
                "",
                "broken.wav: not audio"
            ]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
