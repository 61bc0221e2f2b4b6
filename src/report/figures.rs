//! The report's four figures as standalone SVG documents, drawn from the numbers in `stats`.

use super::stats::{self, AblationRow, Reliability};
use super::svg::{blue, Anchor, Frame, Svg, SERIES};
use crate::eval::record::EvalRecord;

/// One figure: its file stem (`figures/<stem>.svg`), caption and SVG text.
pub struct Figure {
    pub stem: &'static str,
    pub caption: String,
    pub svg: String,
}

/// Confusion matrix of one ablation: rows truth, columns predicted, counts with row-normalised
/// shading. A column "other" appears only when some prediction is outside the label set.
pub fn confusion(labels: &[String], records: &[EvalRecord], routed: bool) -> Figure {
    let k = labels.len();
    let truth = stats::truth_indices(labels, records);
    let pred = stats::indices_of(
        labels,
        records.iter().map(|r| {
            if routed {
                r.ablations.routed.as_str()
            } else {
                r.ablations.acoustic_only.as_str()
            }
        }),
    );
    let counts = stats::confusion_with_other(k, &truth, &pred).counts;
    let has_other_col = counts.iter().any(|row| row[k] > 0);
    let has_other_row = counts[k].iter().any(|&c| c > 0);
    let mut col_names: Vec<String> = labels.to_vec();
    if has_other_col {
        col_names.push("other".into());
    }
    let mut row_names: Vec<String> = labels.to_vec();
    if has_other_row {
        row_names.push("other".into());
    }
    let cell = 84.0;
    let (left, top) = (130.0, 92.0);
    let width = (left + cell * col_names.len() as f64 + 30.0).max(420.0);
    let height = top + cell * row_names.len() as f64 + 62.0;
    let mut svg = Svg::new(width, height);
    let which = if routed {
        "final (routed) decisions"
    } else {
        "acoustic model alone"
    };
    svg.title(&format!("Confusion matrix: {which}"));
    svg.text(
        left + cell * col_names.len() as f64 / 2.0,
        52.0,
        "predicted label",
        14.0,
        Anchor::Middle,
        r#"font-style="italic""#,
    );
    svg.vtext(
        24.0,
        top + cell * row_names.len() as f64 / 2.0,
        "true label",
        14.0,
    );
    for (j, name) in col_names.iter().enumerate() {
        svg.text(
            left + cell * (j as f64 + 0.5),
            top - 10.0,
            name,
            14.0,
            Anchor::Middle,
            r#"font-weight="bold""#,
        );
    }
    for (i, name) in row_names.iter().enumerate() {
        let row = &counts[i];
        let total: u32 = row.iter().sum();
        let y = top + cell * i as f64;
        svg.text(
            left - 10.0,
            y + cell / 2.0 + 5.0,
            name,
            14.0,
            Anchor::End,
            r#"font-weight="bold""#,
        );
        for (j, &count) in row.iter().take(col_names.len()).enumerate() {
            let x = left + cell * j as f64;
            let share = if total > 0 {
                count as f64 / total as f64
            } else {
                0.0
            };
            svg.rect(
                x,
                y,
                cell,
                cell,
                &format!(r##"fill="{}" stroke="#888" stroke-width="1""##, blue(share)),
            );
            let ink = if share > 0.55 {
                r##"fill="#ffffff""##
            } else {
                r##"fill="#111""##
            };
            svg.text(
                x + cell / 2.0,
                y + cell / 2.0,
                &count.to_string(),
                18.0,
                Anchor::Middle,
                &format!(r#"font-weight="bold" {ink}"#),
            );
            svg.text(
                x + cell / 2.0,
                y + cell / 2.0 + 20.0,
                &format!("{:.0} %", 100.0 * share),
                13.0,
                Anchor::Middle,
                ink,
            );
        }
    }
    let grey = r##"fill="#555""##;
    svg.text(
        left,
        height - 30.0,
        &format!("{} clips; the number is a count,", records.len()),
        12.0,
        Anchor::Start,
        grey,
    );
    svg.text(
        left,
        height - 14.0,
        "shading and % its share of the true-label row",
        12.0,
        Anchor::Start,
        grey,
    );
    let stem = if routed {
        "confusion_routed"
    } else {
        "confusion_acoustic"
    };
    let caption = format!("Confusion matrix of the {which}: rows are true labels, columns predicted labels; shading is the row share.");
    let svg = svg.finish(&caption);
    Figure { stem, caption, svg }
}

/// Reliability diagram of the acoustic model's top-label probability before and after
/// temperature scaling, with the diagonal of perfect calibration and each curve's ECE.
pub fn reliability(records: &[EvalRecord]) -> Figure {
    let after = stats::reliability(records, false);
    let before = stats::reliability(records, true);
    let temperature = records.first().map(|r| r.temperature).unwrap_or(1.0);
    let mut svg = Svg::new(560.0, 520.0);
    svg.title("Reliability of the acoustic model");
    let f = Frame {
        left: 80.0,
        top: 48.0,
        width: 440.0,
        height: 320.0,
        x_range: (0.0, 1.0),
        y_range: (0.0, 1.0),
    };
    f.draw_axes(
        &mut svg,
        0.1,
        0.2,
        "top-label probability (mean per bin)",
        "accuracy in bin",
    );
    svg.line(
        f.x(0.0),
        f.y(0.0),
        f.x(1.0),
        f.y(1.0),
        r##"stroke="#999" stroke-width="1.5" stroke-dasharray="6 4""##,
    );
    let n = records.len().max(1) as f64;
    let series = |svg: &mut Svg, rel: &Reliability, colour: &str, dashed: bool| {
        let pts: Vec<(f64, f64)> = rel
            .bins
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (f.x(b.confidence), f.y(b.accuracy)))
            .collect();
        let dash = if dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        svg.polyline(
            &pts,
            &format!(r#"stroke="{colour}" stroke-width="2.2"{dash}"#),
        );
        for b in rel.bins.iter().filter(|b| b.count > 0) {
            // Marker area grows with the bin's share of clips.
            let r = 3.0 + 9.0 * (b.count as f64 / n).sqrt();
            svg.circle(
                f.x(b.confidence),
                f.y(b.accuracy),
                r,
                &format!(
                    r##"fill="{colour}" fill-opacity="0.55" stroke="{colour}" stroke-width="1.5""##
                ),
            );
        }
    };
    series(&mut svg, &before, SERIES[1], true);
    series(&mut svg, &after, SERIES[0], false);
    let ly = f.bottom() + 66.0;
    let legend = [
        (
            SERIES[0],
            format!("after calibration: ECE {:.3}", after.ece),
            false,
        ),
        (
            SERIES[1],
            format!(
                "before calibration (T = {temperature:.2} undone): ECE {:.3}",
                before.ece
            ),
            true,
        ),
        ("#999", "perfect calibration".to_string(), true),
    ];
    for (i, (colour, text, dashed)) in legend.iter().enumerate() {
        let y = ly + 20.0 * i as f64;
        let dash = if *dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        svg.line(
            f.left,
            y - 4.0,
            f.left + 30.0,
            y - 4.0,
            &format!(r#"stroke="{colour}" stroke-width="2.5"{dash}"#),
        );
        svg.text(f.left + 38.0, y, text, 13.0, Anchor::Start, "");
    }
    svg.text(
        f.left,
        ly + 64.0,
        &format!(
            "{} bins; marker area ∝ clips; ECE over {} bins",
            stats::RELIABILITY_BINS,
            stats::ECE_BINS
        ),
        12.0,
        Anchor::Start,
        r##"fill="#555""##,
    );
    let caption = format!(
        "Reliability diagram: the acoustic model's top probability against accuracy, before (ECE {:.3}) and after (ECE {:.3}) temperature scaling.",
        before.ece, after.ece
    );
    let svg = svg.finish(&caption);
    Figure {
        stem: "reliability",
        caption,
        svg,
    }
}

/// Accuracy as the router sends more of the least confident clips to the reasoner, with the
/// actual operating point.
pub fn coverage(records: &[EvalRecord], routed_fraction: f64) -> Figure {
    let curve = stats::coverage_curve(records);
    let op = stats::operating_point(records);
    let mut svg = Svg::new(600.0, 480.0);
    svg.title("Accuracy vs. share of clips sent to the reasoner");
    let ys: Vec<f64> = curve.iter().map(|p| p.1).chain(op.map(|p| p.1)).collect();
    let lo = ys.iter().copied().fold(1.0, f64::min);
    let hi = ys.iter().copied().fold(0.0, f64::max);
    // A y range in whole tenths with some room, so small differences stay visible.
    let y0 = ((lo - 0.05) * 10.0).floor().max(0.0) / 10.0;
    let y1 = (((hi + 0.05) * 10.0).ceil() / 10.0).clamp(y0 + 0.1, 1.0);
    let f = Frame {
        left: 80.0,
        top: 48.0,
        width: 480.0,
        height: 300.0,
        x_range: (0.0, 1.0),
        y_range: (y0, y1),
    };
    let y_step = if y1 - y0 > 0.5 { 0.1 } else { 0.05 };
    f.draw_axes(
        &mut svg,
        0.1,
        y_step,
        "fraction of clips routed (least confident first)",
        "accuracy (all clips)",
    );
    let pts: Vec<(f64, f64)> = curve.iter().map(|&(x, y)| (f.x(x), f.y(y))).collect();
    svg.polyline(
        &pts,
        &format!(r#"stroke="{}" stroke-width="2.4""#, SERIES[0]),
    );
    let mut legend = vec![(
        SERIES[0].to_string(),
        "curve: the f least confident clips go to the reasoner".to_string(),
    )];
    if let (Some(first), Some(last)) = (curve.first(), curve.last()) {
        svg.circle(
            f.x(first.0),
            f.y(first.1),
            4.5,
            &format!(r#"fill="{}""#, SERIES[0]),
        );
        svg.circle(
            f.x(last.0),
            f.y(last.1),
            4.5,
            &format!(r#"fill="{}""#, SERIES[0]),
        );
        legend.push((
            SERIES[0].to_string(),
            format!(
                "f = 0 (acoustic only): {:.3};  f = 1 (reasoner on all): {:.3}",
                first.1, last.1
            ),
        ));
    }
    if let Some((x, y)) = op {
        let x_line = f.x(routed_fraction.clamp(0.0, 1.0));
        svg.line(
            x_line,
            f.top,
            x_line,
            f.bottom(),
            &format!(
                r#"stroke="{}" stroke-width="1.2" stroke-dasharray="4 3""#,
                SERIES[4]
            ),
        );
        svg.circle(
            f.x(x),
            f.y(y),
            7.0,
            &format!(r##"fill="{}" stroke="#fff" stroke-width="1.5""##, SERIES[4]),
        );
        legend.push((
            SERIES[4].to_string(),
            format!(
                "operating point (dashed): {:.1} % routed, accuracy {y:.3}",
                100.0 * x
            ),
        ));
    }
    let ly = f.bottom() + 66.0;
    for (i, (colour, text)) in legend.iter().enumerate() {
        let y = ly + 20.0 * i as f64;
        svg.circle(f.left + 8.0, y - 4.0, 5.0, &format!(r#"fill="{colour}""#));
        svg.text(f.left + 22.0, y, text, 13.0, Anchor::Start, "");
    }
    let caption = match op {
        Some((x, y)) => format!(
            "Accuracy-vs-coverage of the router: accuracy when the least confident clips go to the reasoner and the rest keep the acoustic label; operating point {:.1} % routed, accuracy {y:.3}.",
            100.0 * x
        ),
        None => "Accuracy-vs-coverage of the router (no clips).".to_string(),
    };
    let svg = svg.finish(&caption);
    Figure {
        stem: "coverage",
        caption,
        svg,
    }
}

/// Unfamiliarity of groups of clips as empirical cumulative distributions on one axis (share
/// of each group at or below a score), with the routing threshold dashed: how far apart the
/// groups lie and which share of each the router sends on as unfamiliar. Scores beyond the
/// right edge (the largest 98th percentile of the groups, rounded up) count there.
pub fn unfamiliarity_cdf(groups: &[(&str, &[f64])], threshold: Option<f64>) -> Figure {
    let mut svg = Svg::new(640.0, 470.0);
    svg.title("Unfamiliarity: clips of new speakers, recording chains and corpora");
    let p98 = |v: &[f64]| {
        let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        v.get((v.len() as f64 * 0.98) as usize)
            .or(v.last())
            .copied()
            .unwrap_or(1.0)
    };
    let hi = groups
        .iter()
        .map(|(_, v)| p98(v))
        .chain(threshold)
        .fold(1.0, f64::max);
    let x1 = hi.ceil().max(1.0);
    let f = Frame {
        left: 80.0,
        top: 48.0,
        width: 500.0,
        height: 280.0,
        x_range: (0.0, x1),
        y_range: (0.0, 1.0),
    };
    let x_step = if x1 > 6.0 { 1.0 } else { 0.5 };
    f.draw_axes(
        &mut svg,
        x_step,
        0.2,
        "unfamiliarity (1 = a typical new speaker's clip)",
        "share of clips at or below",
    );
    let mut legend = Vec::new();
    for (k, (name, values)) in groups.iter().enumerate() {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mut pts = vec![(f.x(0.0), f.y(0.0))];
        for (i, &x) in v.iter().enumerate() {
            let x = f.x(x.clamp(0.0, x1));
            pts.push((x, f.y(i as f64 / n)));
            pts.push((x, f.y((i + 1) as f64 / n)));
        }
        pts.push((f.x(x1), f.y(1.0)));
        let colour = SERIES[k % SERIES.len()];
        svg.polyline(&pts, &format!(r#"stroke="{colour}" stroke-width="2.2""#));
        let median = v[v.len() / 2];
        legend.push((
            colour,
            format!("{name}: {} clips, median {median:.2}", v.len()),
        ));
    }
    if let Some(t) = threshold {
        let x = f.x(t.clamp(0.0, x1));
        svg.line(
            x,
            f.top,
            x,
            f.bottom(),
            r##"stroke="#222" stroke-width="1.2" stroke-dasharray="4 3""##,
        );
        svg.text(
            x + 4.0,
            f.top + 14.0,
            &format!("routing threshold {t:.2}"),
            12.0,
            Anchor::Start,
            "",
        );
    }
    let ly = f.bottom() + 56.0;
    for (i, (colour, text)) in legend.iter().enumerate() {
        let y = ly + 19.0 * i as f64;
        svg.circle(f.left + 8.0, y - 4.0, 5.0, &format!(r#"fill="{colour}""#));
        svg.text(f.left + 22.0, y, text, 13.0, Anchor::Start, "");
    }
    let caption = format!(
        "Empirical distributions of the unfamiliarity score per group of clips; {}.",
        match threshold {
            Some(t) => format!("a clip above {t:.2} (dashed) is routed as unfamiliar"),
            None => "no routing threshold".into(),
        }
    );
    let svg = svg.finish(&caption);
    Figure {
        stem: "unfamiliarity",
        caption,
        svg,
    }
}

/// Grouped bars: per-class F1 (and macro F1) for each ablation.
pub fn per_class_f1(labels: &[String], rows: &[AblationRow]) -> Figure {
    let groups: Vec<String> = labels
        .iter()
        .cloned()
        .chain(["macro F1".to_string()])
        .collect();
    let mut svg = Svg::new(900.0, 470.0);
    svg.title("F1 per class for each ablation");
    let f = Frame {
        left: 80.0,
        top: 48.0,
        width: 780.0,
        height: 300.0,
        x_range: (0.0, groups.len() as f64),
        y_range: (0.0, 1.0),
    };
    // Axes by hand: the x axis carries group names, not numbers.
    let grid = r##"stroke="#e3e3e3" stroke-width="1""##;
    for i in 0..=5 {
        let v = i as f64 * 0.2;
        svg.line(f.left, f.y(v), f.left + f.width, f.y(v), grid);
        svg.text(
            f.left - 8.0,
            f.y(v) + 4.5,
            &format!("{v:.1}"),
            13.0,
            Anchor::End,
            "",
        );
    }
    svg.vtext(f.left - 44.0, f.top + f.height / 2.0, "F1", 14.0);
    let nb = rows.len().max(1) as f64;
    let group_w = f.width / groups.len() as f64;
    let bar_w = (group_w * 0.8 / nb).min(44.0);
    for (g, name) in groups.iter().enumerate() {
        let centre = f.left + group_w * (g as f64 + 0.5);
        svg.text(
            centre,
            f.bottom() + 20.0,
            name,
            14.0,
            Anchor::Middle,
            r#"font-weight="bold""#,
        );
        for (b, row) in rows.iter().enumerate() {
            let v = if g < labels.len() {
                row.per_class_f1.get(g).copied().unwrap_or(0.0)
            } else {
                row.macro_f1
            };
            let x = centre - bar_w * nb / 2.0 + bar_w * b as f64;
            svg.rect(
                x + 1.0,
                f.y(v),
                bar_w - 2.0,
                f.bottom() - f.y(v),
                &format!(r#"fill="{}""#, SERIES[b % SERIES.len()]),
            );
            svg.text(
                x + bar_w / 2.0,
                f.y(v) - 4.0,
                &format!("{:.2}", v),
                12.0,
                Anchor::Middle,
                "",
            );
        }
    }
    svg.line(
        f.left,
        f.bottom(),
        f.left + f.width,
        f.bottom(),
        r##"stroke="#444" stroke-width="1.2""##,
    );
    svg.line(
        f.left,
        f.top,
        f.left,
        f.bottom(),
        r##"stroke="#444" stroke-width="1.2""##,
    );
    // Legend in one row under the axis.
    let ly = f.bottom() + 56.0;
    let mut x = f.left;
    for (b, row) in rows.iter().enumerate() {
        svg.rect(
            x,
            ly - 12.0,
            14.0,
            14.0,
            &format!(r#"fill="{}""#, SERIES[b % SERIES.len()]),
        );
        svg.text(x + 20.0, ly, row.name, 13.0, Anchor::Start, "");
        x += 40.0 + 8.0 * row.name.len() as f64;
    }
    let caption = "Per-class F1 (and macro F1) of each ablation on the same clips.".to_string();
    let svg = svg.finish(&caption);
    Figure {
        stem: "per_class_f1",
        caption,
        svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfamiliarity_cdf_draws_one_step_curve_per_group_and_the_threshold() {
        let clean = [0.5, 0.8, 1.0, 1.2, 1.5];
        let far = [2.0, 2.5, 3.0];
        let fig = unfamiliarity_cdf(
            &[("clean", &clean), ("far", &far), ("empty", &[])],
            Some(1.3),
        );
        assert_eq!(fig.stem, "unfamiliarity");
        assert!(fig.svg.starts_with("<svg"));
        // Two non-empty groups: two curves; the empty one gets neither curve nor legend line.
        assert_eq!(fig.svg.matches("<polyline").count(), 2);
        assert!(
            fig.svg.contains("clean: 5 clips, median 1.00"),
            "{}",
            fig.svg
        );
        assert!(fig.svg.contains("far: 3 clips, median 2.50"));
        assert!(!fig.svg.contains("empty:"));
        assert!(fig.svg.contains("routing threshold 1.30"));
        // Each curve climbs from 0 to 1: its last point is at the top of the plot (y = 48).
        for line in fig.svg.lines().filter(|l| l.starts_with("<polyline")) {
            let pts = line.split('"').nth(1).unwrap();
            let last = pts.split(' ').next_back().unwrap();
            assert!(last.ends_with(",48.0"), "{last}");
            let first = pts.split(' ').next().unwrap();
            assert!(first.ends_with(",328.0"), "{first}");
        }
        assert!(fig.caption.contains("above 1.30"));
    }
}
