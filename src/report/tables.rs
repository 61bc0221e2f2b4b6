//! The report's tables as plain text cells; `html` and `markdown` render the same tables.

use super::escape::{redact_paths, shown_path};
use super::stats::{self, AblationRow, WithCi};
use super::ReportOptions;
use crate::eval::record::EvalRecord;
use crate::eval::run::EvalReport;
use crate::Route;

pub struct Table {
    pub id: &'static str,
    pub title: String,
    /// A sentence under the title saying what the numbers are computed on.
    pub note: Option<String>,
    pub header: Vec<String>,
    /// Right-aligned (numeric) columns.
    pub numeric: Vec<bool>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn new(id: &'static str, title: &str, header: &[&str], numeric: &[bool]) -> Self {
        Self {
            id,
            title: title.into(),
            note: None,
            header: header.iter().map(|s| s.to_string()).collect(),
            numeric: numeric.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows.push(cells.into_iter().collect());
    }
}

fn f3(v: f64) -> String {
    format!("{v:.3}")
}

fn ci(v: [f64; 2]) -> String {
    format!("[{:.3}, {:.3}]", v[0], v[1])
}

fn opt(v: Option<f64>) -> String {
    v.map(f3).unwrap_or_else(|| "–".into())
}

fn signed(d: Option<WithCi>) -> String {
    match d {
        Some(d) => format!("{:+.3} [{:+.3}, {:+.3}]", d.value, d.ci95[0], d.ci95[1]),
        None => "–".into(),
    }
}

/// `final_ci`: the final (routed) decisions' accuracy and macro F1 with bootstrap intervals,
/// from the records. `rows` name which ablation the `--json` headline numbers belong to.
pub fn headline(
    report: &EvalReport,
    rows: &[AblationRow],
    final_ci: Option<(WithCi, WithCi)>,
    opts: &ReportOptions,
) -> Table {
    let mut t = Table::new(
        "headline",
        "Headline metrics",
        &["metric", "value", "95 % CI"],
        &[false, true, true],
    );
    t.note = Some(format!(
        "Intervals are percentile bootstraps over clips (seed {}).",
        report.seed
    ));
    t.row([
        "clips evaluated".into(),
        report.n.to_string(),
        String::new(),
    ]);
    t.row([
        "clips that failed".into(),
        report.n_failed.to_string(),
        String::new(),
    ]);
    if let Some((acc, f1)) = final_ci {
        t.row([
            "accuracy, final (routed) decisions".into(),
            f3(acc.value),
            ci(acc.ci95),
        ]);
        t.row([
            "macro F1, final (routed) decisions".into(),
            f3(f1.value),
            ci(f1.ci95),
        ]);
    }
    // Say whose numbers the `--json` headline holds (it is the acoustic model's today); a
    // summary that matches no ablation of these records is shown as it is.
    let same = |a: f64, b: f64| (a - b).abs() < 1e-9;
    let whose = rows
        .iter()
        .find(|r| same(r.accuracy, report.accuracy) && same(r.macro_f1, report.macro_f1))
        .map(|r| r.name)
        .unwrap_or("summary");
    if !(whose == "routed" && final_ci.is_some()) {
        t.row([
            format!("accuracy, {whose} (eval --json)"),
            f3(report.accuracy),
            ci(report.accuracy_ci95),
        ]);
        t.row([
            format!("macro F1, {whose} (eval --json)"),
            f3(report.macro_f1),
            ci(report.macro_f1_ci95),
        ]);
    }
    t.row([
        "ECE, final decisions (15 bins)".into(),
        f3(report.ece),
        String::new(),
    ]);
    t.row([
        "ECE, acoustic model alone (calibrated, 15 bins)".into(),
        f3(report.acoustic_ece),
        String::new(),
    ]);
    t.row([
        "routed fraction".into(),
        f3(report.routing.routed_fraction),
        String::new(),
    ]);
    let id = |name: &str, sha: &Option<String>| {
        let short = sha
            .as_deref()
            .map(|s| format!(" (sha256 {})", &s[..s.len().min(12)]))
            .unwrap_or_default();
        format!("{}{short}", redact_paths(name, opts.full_paths))
    };
    t.row([
        "model".into(),
        id(
            &shown_path(&report.model.name, opts.full_paths),
            &report.model.sha256,
        ),
        String::new(),
    ]);
    if let Some(r) = &report.rules {
        t.row(["rules".into(), id(&r.name, &r.sha256), String::new()]);
    }
    t.row([
        "LLM".into(),
        report
            .llm
            .as_ref()
            .map(|l| id(&l.name, &l.sha256))
            .unwrap_or_else(|| "none".into()),
        String::new(),
    ]);
    t.row(["seed".into(), report.seed.to_string(), String::new()]);
    t
}

pub fn per_class(labels: &[String], records: &[EvalRecord]) -> Table {
    let mut t = Table::new(
        "per_class",
        "Per-class scores of the final (routed) decisions",
        &["label", "precision", "recall", "F1", "support"],
        &[false, true, true, true, true],
    );
    let truth = stats::truth_indices(labels, records);
    let pred = stats::indices_of(labels, records.iter().map(|r| r.ablations.routed.as_str()));
    for (name, s) in labels
        .iter()
        .zip(stats::per_class(labels.len(), &truth, &pred))
    {
        t.row([
            name.clone(),
            f3(s.precision),
            f3(s.recall),
            f3(s.f1),
            s.support.to_string(),
        ]);
    }
    t
}

pub fn ablations(rows: &[AblationRow], reps: usize, seed: u64) -> Table {
    let mut t = Table::new(
        "ablations",
        "Ablations",
        &[
            "ablation",
            "accuracy",
            "macro F1",
            "Δ accuracy vs acoustic [95 % CI]",
            "Δ macro F1 vs acoustic [95 % CI]",
        ],
        &[false, true, true, true, true],
    );
    t.note = Some(format!(
        "Same clips for every ablation; differences use a paired bootstrap ({reps} resamples, seed {seed}): an interval that excludes 0 is a real difference on this test set."
    ));
    for r in rows {
        t.row([
            r.name.to_string(),
            f3(r.accuracy),
            f3(r.macro_f1),
            signed(r.accuracy_minus_acoustic),
            signed(r.macro_f1_minus_acoustic),
        ]);
    }
    t
}

pub fn routing(report: &EvalReport, records: &[EvalRecord]) -> Table {
    let r = &report.routing;
    let mut t = Table::new("routing", "Routing", &["quantity", "value"], &[false, true]);
    t.row(["confidence threshold".into(), format!("{:.3}", r.threshold)]);
    t.row(["routed fraction".into(), f3(r.routed_fraction)]);
    t.row([
        "acoustic accuracy on routed clips".into(),
        opt(r.acoustic_accuracy_on_routed),
    ]);
    t.row([
        "final accuracy on routed clips".into(),
        opt(r.final_accuracy_on_routed),
    ]);
    t.row([
        "acoustic accuracy on kept clips".into(),
        opt(r.acoustic_accuracy_on_kept),
    ]);
    for route in [Route::Acoustic, Route::Llm, Route::Rules] {
        let n = records.iter().filter(|x| x.decision.route == route).count();
        if n > 0 {
            t.row([format!("clips decided by: {route}"), n.to_string()]);
        }
    }
    t
}

pub fn timings(report: &EvalReport) -> Table {
    let mut t = Table::new("timings", "Time per clip", &["stage", "ms"], &[false, true]);
    for (stage, ms) in &report.timings_ms {
        t.row([stage.replace('_', " "), format!("{ms:.1}")]);
    }
    t
}

pub fn failures(report: &EvalReport, opts: &ReportOptions) -> Table {
    let mut t = Table::new(
        "failures",
        "Clips that could not be analysed",
        &["#", "error"],
        &[true, false],
    );
    t.note = (!opts.full_paths).then(|| "Folders are hidden; file names only.".to_string());
    for (i, f) in report.failures.iter().enumerate() {
        t.row([(i + 1).to_string(), redact_paths(f, opts.full_paths)]);
    }
    t
}

/// Routed clips to read, mixing outcomes: reasoner fixed the acoustic label, broke it, both
/// wrong, both right (in that order, round robin, file order within each).
pub fn routed_examples<'a>(
    labels: &[String],
    records: &'a [EvalRecord],
    max: usize,
) -> Vec<(&'static str, &'a EvalRecord)> {
    let right = |l: &str, r: &EvalRecord| {
        stats::label_index(labels, l) == stats::label_index(labels, &r.truth)
            && stats::label_index(labels, l) < labels.len()
    };
    let mut buckets: [(&'static str, Vec<&EvalRecord>); 4] = [
        ("fixed", vec![]),
        ("broken", vec![]),
        ("both wrong", vec![]),
        ("both right", vec![]),
    ];
    for r in records
        .iter()
        .filter(|r| r.decision.route != Route::Acoustic)
    {
        let a = right(&r.ablations.acoustic_only, r);
        let f = right(&r.ablations.routed, r);
        let b = match (a, f) {
            (false, true) => 0,
            (true, false) => 1,
            (false, false) => 2,
            (true, true) => 3,
        };
        buckets[b].1.push(r);
    }
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < max && buckets.iter().any(|b| i < b.1.len()) {
        for (name, b) in &buckets {
            if let Some(r) = b.get(i) {
                if out.len() < max {
                    out.push((*name, *r));
                }
            }
        }
        i += 1;
    }
    out
}

/// The `n` evidence features farthest from the baseline, as `name z=+1.9`.
pub fn strongest_evidence(r: &EvalRecord, n: usize) -> Vec<String> {
    r.decision
        .evidence
        .deviations()
        .into_iter()
        .take(n)
        .map(|(k, v)| format!("{k} z={v:+.1}"))
        .collect()
}

pub fn examples(labels: &[String], records: &[EvalRecord], opts: &ReportOptions) -> Table {
    let mut t = Table::new(
        "examples",
        "Example routed clips",
        &[
            "file",
            "truth",
            "acoustic probabilities",
            "final",
            "outcome",
            "strongest evidence (|z|)",
            "fired rules",
            "rationale",
        ],
        &[false; 8],
    );
    let picked = routed_examples(labels, records, opts.max_routed_examples);
    let total = records
        .iter()
        .filter(|r| r.decision.route != Route::Acoustic)
        .count();
    t.note = Some(format!(
        "{} of {total} routed clips, mixing outcomes (fixed = the reasoner corrected the acoustic label, broken = it overturned a right one).",
        picked.len()
    ));
    for (outcome, r) in picked {
        let p = &r.decision.acoustic_probs;
        let probs: Vec<String> = p
            .labels
            .iter()
            .zip(&p.values)
            .map(|(l, v)| format!("{l} {v:.2}"))
            .collect();
        let rules: Vec<String> = r
            .decision
            .fired_rules
            .iter()
            .map(|f| format!("{} → {}", f.id, f.label))
            .collect();
        t.row([
            shown_path(&r.decision.file, opts.full_paths),
            r.truth.clone(),
            probs.join("\n"),
            format!("{} ({})", r.decision.label, r.decision.route),
            outcome.to_string(),
            strongest_evidence(r, 4).join("\n"),
            if rules.is_empty() {
                "none".into()
            } else {
                rules.join("\n")
            },
            r.decision.rationale.clone().unwrap_or_default(),
        ]);
    }
    t
}
