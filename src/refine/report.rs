//! The Markdown report of one refinement round, written next to the proposed rule set so a
//! person can review what changed and why.

use std::fmt::Write;

use super::{Gathered, RefineOptions, RoundOutcome};

fn pct(x: f64) -> String {
    format!("{:.0} %", 100.0 * x)
}

fn opt3(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into())
}

pub fn round_markdown(
    r: &RoundOutcome,
    opts: &RefineOptions,
    gathered: &Gathered,
    routed_fraction: f64,
    verdict: &str,
) -> String {
    let a = &r.analysis;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Refinement round {} → rules version {}\n",
        r.round, r.version
    );
    let _ = writeln!(s, "**Outcome: {verdict}.** {}\n", r.acceptance.reason);
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(
        s,
        "- Manifest: `{}`{}",
        super::file_name(&opts.manifest),
        opts.speakers
            .as_deref()
            .map(|sp| format!(", speakers {sp}"))
            .unwrap_or_default()
    );
    let mut sources: std::collections::BTreeMap<&str, usize> = Default::default();
    for c in &gathered.clips {
        *sources.entry(c.source.name()).or_default() += 1;
    }
    let src: Vec<String> = sources.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(
        s,
        "- {} clips with held-out acoustic predictions: {}",
        a.n,
        src.join(", ")
    );
    if !gathered.in_sample.is_empty() {
        let _ = writeln!(
            s,
            "- {} training clips left out: no held-out prediction stored (train with `--oof-folds`)",
            gathered.in_sample.len()
        );
    }
    if !gathered.failures.is_empty() {
        let _ = writeln!(
            s,
            "- {} clips failed: {}",
            gathered.failures.len(),
            gathered.failures.join("; ")
        );
    }
    let _ = writeln!(
        s,
        "- Routed to the reasoner: {} ({} clips)\n",
        pct(routed_fraction),
        a.routed
    );

    let _ = writeln!(s, "## Error analysis (current rules)\n");
    let _ = writeln!(s, "| | macro-F1 | accuracy on routed | accuracy on kept |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| acoustic only | {:.3} | {} | {} |",
        a.acoustic_macro_f1,
        opt3(a.acoustic_accuracy_routed),
        opt3(a.acoustic_accuracy_kept)
    );
    let _ = writeln!(
        s,
        "| routed (rule vote on routed clips) | {:.3} | {} | {} |\n",
        a.routed_macro_f1,
        opt3(a.rules_accuracy_routed),
        opt3(a.acoustic_accuracy_kept)
    );
    let _ = writeln!(
        s,
        "Acoustic confusion (rows = truth, columns = predicted):\n"
    );
    let _ = writeln!(s, "| | {} |", a.labels.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(a.labels.len()));
    for (l, row) in a.labels.iter().zip(&a.acoustic_confusion) {
        let cells: Vec<String> = row.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(s, "| **{l}** | {} |", cells.join(" | "));
    }
    if !a.confused_pairs.is_empty() {
        let pairs: Vec<String> = a
            .confused_pairs
            .iter()
            .take(4)
            .map(|(t, p, c)| format!("{t} taken for {p} ({c})"))
            .collect();
        let _ = writeln!(s, "\nMost confused: {}.\n", pairs.join(", "));
    }
    let _ = writeln!(s, "### Rules where they fire\n");
    let _ = writeln!(
        s,
        "| rule | label | fires | precision | on routed | macro-F1 change if off |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for st in &a.rules {
        let _ = writeln!(
            s,
            "| `{}`{} | {} | {} | {} | {} | {:+.3} |",
            st.id,
            if st.enabled { "" } else { " (off)" },
            st.label,
            pct(st.firing_rate),
            st.precision.map(pct).unwrap_or_else(|| "–".into()),
            st.fires_on_routed,
            st.f1_without
        );
    }
    let _ = writeln!(s, "\n## Proposed edits (greedy, rule-vote scoring)\n");
    for (i, e) in r.edits.iter().enumerate() {
        let _ = writeln!(
            s,
            "{}. **{}** {} — macro-F1 {:.3} → {:.3}",
            i + 1,
            e.kind,
            e.description,
            e.macro_f1_before,
            e.macro_f1_after
        );
    }
    let _ = writeln!(
        s,
        "\nIn-sample macro-F1 of the proposal: {:.3} (the search saw these clips: optimistic).\n",
        r.macro_f1_in_sample
    );
    let ac = &r.acceptance;
    let _ = writeln!(s, "## Cross-fitted check\n");
    let _ = writeln!(
        s,
        "The search was rerun {} times, each time without one speaker fold, and its proposal labelled the left-out fold.\n",
        ac.folds
    );
    let _ = writeln!(s, "| | macro-F1 |\n|---|---:|");
    let _ = writeln!(s, "| current rules | {:.3} |", ac.macro_f1_current);
    let _ = writeln!(
        s,
        "| refined (cross-fitted) | {:.3} |",
        ac.macro_f1_cross_fitted
    );
    let _ = writeln!(
        s,
        "| difference (paired bootstrap 95 %) | {:+.3} [{:+.3}, {:+.3}] |",
        ac.difference, ac.difference_ci95[0], ac.difference_ci95[1]
    );
    let _ = writeln!(
        s,
        "\nBetter in {} of resamples (needs {} to be kept). Per-class F1 change: {}.\n",
        pct(ac.probability_of_improvement),
        pct(opts.confidence),
        ac.per_class_f1_change
            .iter()
            .map(|(l, d)| format!("{l} {d:+.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !r.shifted.is_empty() {
        let _ = writeln!(
            s,
            "## Shifted conditions\n\nNever searched on; a drop larger than {:.3} in macro-F1 on any of them rejects the round.\n\n| condition | clips (routed) | current | proposed | difference (95% CI) | |\n|---|---|---|---|---|---|",
            opts.shift_tolerance
        );
        for c in &r.shifted {
            let _ = writeln!(
                s,
                "| `{}` | {} ({}) | {:.3} | {:.3} | {:+.3} [{:+.3}, {:+.3}] | {} |",
                super::file_name(&c.manifest),
                c.clips,
                c.routed,
                c.macro_f1_current,
                c.macro_f1_proposed,
                c.difference.difference,
                c.difference.ci95[0],
                c.difference.ci95[1],
                if c.passes { "passes" } else { "**drop**" }
            );
        }
        let _ = writeln!(s);
    }
    if let Some(c) = &r.llm_check {
        let _ = writeln!(s, "## LLM confirmation\n");
        let _ = writeln!(
            s,
            "`{}` on the {} routed clips: accuracy {:.3} with the current rules, {:.3} with the proposal (same clips the search used).\n",
            c.reasoner, c.routed_clips, c.accuracy_current, c.accuracy_proposed
        );
    }
    let _ = writeln!(
        s,
        "## Files\n\n- Proposed rule set: `{}`{}\n",
        super::file_name(&r.rules_file),
        if r.kept {
            " (copied to `rules.toml`: active)"
        } else {
            ""
        }
    );
    s
}
