//! The `eval --report DIR` report: a self-contained HTML page (inline CSS and SVG, nothing
//! fetched), its Markdown twin and the figures as SVG files, all computed from the `--json`
//! summary and the per-clip records.
//!
//! ```text
//! DIR/report.html   DIR/report.md   DIR/figures/{confusion_routed,confusion_acoustic,
//!                                               reliability,coverage,per_class_f1}.svg
//! ```
//!
//! Recordings' paths may be private: unless `full_paths` is set, the report shows file names
//! only, in tables and inside error messages. Everything is created owner-only.

pub mod escape;
pub mod figures;
mod html;
mod markdown;
pub mod stats;
mod svg;
pub mod tables;

use std::path::{Path, PathBuf};

use crate::eval::record::EvalRecord;
use crate::eval::run::EvalReport;
use crate::private_fs::{create_private_dir_all, write_private};

#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub title: String,
    /// Show recordings' full paths instead of file names (off by default: paths may be private).
    pub full_paths: bool,
    /// Rows of the example routed clips table.
    pub max_routed_examples: usize,
    /// A line shown prominently at the top, e.g. where the data came from or "data is SYNTHETIC".
    pub note: Option<String>,
    /// Resamples of the paired bootstrap behind the ablation differences.
    pub bootstrap_reps: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            title: "camxuc evaluation report".into(),
            full_paths: false,
            max_routed_examples: 12,
            note: None,
            bootstrap_reps: 1000,
        }
    }
}

/// What `write_report` wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportFiles {
    pub html: PathBuf,
    pub markdown: PathBuf,
    pub figures: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report: cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("report: the evaluation has no labels, so there is nothing to draw")]
    NoLabels,
}

/// Write the report into `dir` (created if missing; existing report files are replaced).
pub fn write_report(
    dir: &Path,
    report: &EvalReport,
    records: &[EvalRecord],
    opts: &ReportOptions,
) -> Result<ReportFiles, ReportError> {
    let labels = &report.labels;
    if labels.is_empty() {
        return Err(ReportError::NoLabels);
    }
    let rows = stats::ablation_rows(labels, records, opts.bootstrap_reps, report.seed);
    let figs = vec![
        figures::confusion(labels, records, true),
        figures::confusion(labels, records, false),
        figures::reliability(records),
        figures::coverage(records, report.routing.routed_fraction),
        figures::per_class_f1(labels, &rows),
    ];
    let before = [
        tables::headline(
            report,
            &rows,
            stats::final_with_ci(labels, records, opts.bootstrap_reps, report.seed),
            opts,
        ),
        tables::ablations(&rows, opts.bootstrap_reps, report.seed),
    ];
    let after = [
        tables::per_class(labels, records),
        tables::routing(report, records),
        tables::examples(labels, records, opts),
        tables::failures(report, opts),
        tables::timings(report),
    ];
    let summary = format!(
        "{} clips ({} failed), labels {}, {} routed to the reasoner. Recording folders are {}.",
        records.len(),
        report.n_failed,
        labels.join(" / "),
        records
            .iter()
            .filter(|r| r.decision.route != crate::Route::Acoustic)
            .count(),
        if opts.full_paths {
            "shown"
        } else {
            "hidden (file names only)"
        }
    );
    let note = opts.note.as_deref();

    let fig_dir = dir.join("figures");
    create_private_dir_all(&fig_dir).map_err(|source| ReportError::Write {
        path: fig_dir.clone(),
        source,
    })?;
    let write = |path: PathBuf, text: &str| {
        write_private(&path, text).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
        Ok::<_, ReportError>(path)
    };
    let mut figure_paths = Vec::new();
    for f in &figs {
        figure_paths.push(write(fig_dir.join(format!("{}.svg", f.stem)), &f.svg)?);
    }
    let html = write(
        dir.join("report.html"),
        &html::page(&opts.title, note, &summary, &figs, &before, &after),
    )?;
    let markdown = write(
        dir.join("report.md"),
        &markdown::page(&opts.title, note, &summary, &figs, &before, &after),
    )?;
    Ok(ReportFiles {
        html,
        markdown,
        figures: figure_paths,
    })
}
