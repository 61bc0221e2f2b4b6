//! A tiny hand-written SVG builder: no plotting crate, no fonts to find, nothing to fetch.
//! Every figure is a standalone `<svg>` with a viewBox, so it scales in the HTML page and
//! opens on its own from the Markdown report.

use std::fmt::Write;

use super::escape::html as esc;

pub const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";

/// Colours per ablation (colour-blind-friendly Tableau 10 hues), also used in tables' keys.
pub const SERIES: [&str; 5] = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756"];

pub struct Svg {
    pub width: f64,
    pub height: f64,
    body: String,
}

#[derive(Clone, Copy)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn as_str(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

impl Svg {
    pub fn new(width: f64, height: f64) -> Self {
        Self {
            width,
            height,
            body: String::new(),
        }
    }

    /// Text; `extra` is raw attributes (e.g. `font-weight="bold"`).
    pub fn text(&mut self, x: f64, y: f64, s: &str, size: f64, anchor: Anchor, extra: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{}" {extra}>{}</text>"#,
            anchor.as_str(),
            esc(s)
        );
    }

    /// Text rotated 90° counter-clockwise about its anchor (y-axis titles).
    pub fn vtext(&mut self, x: f64, y: f64, s: &str, size: f64) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="middle" transform="rotate(-90 {x:.1} {y:.1})">{}</text>"#,
            esc(s)
        );
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, style: &str) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#
        );
    }

    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, style: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" {style}/>"#,
            w.max(0.0),
            h.max(0.0)
        );
    }

    pub fn circle(&mut self, x: f64, y: f64, r: f64, style: &str) {
        let _ = writeln!(
            self.body,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" {style}/>"#
        );
    }

    pub fn polyline(&mut self, points: &[(f64, f64)], style: &str) {
        let pts: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}" fill="none" {style}/>"#,
            pts.join(" ")
        );
    }

    /// A tooltip-less title for screen readers and the figure's heading.
    pub fn title(&mut self, s: &str) {
        let x = self.width / 2.0;
        self.text(x, 24.0, s, 16.0, Anchor::Middle, r#"font-weight="bold""#);
    }

    pub fn finish(self, aria_label: &str) -> String {
        format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{label}" font-family="{FONT}" fill="#222">
<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>
{body}</svg>
"##,
            w = self.width,
            h = self.height,
            label = esc(aria_label),
            body = self.body
        )
    }
}

/// A plot area inside an `Svg`, mapping data coordinates (x in `x0..x1`, y in `y0..y1`) to
/// pixels, with axes, ticks and grid.
#[derive(Clone, Copy)]
pub struct Frame {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
}

impl Frame {
    pub fn x(&self, v: f64) -> f64 {
        let (a, b) = self.x_range;
        self.left + (v - a) / (b - a) * self.width
    }

    pub fn y(&self, v: f64) -> f64 {
        let (a, b) = self.y_range;
        self.top + self.height - (v - a) / (b - a) * self.height
    }

    pub fn bottom(&self) -> f64 {
        self.top + self.height
    }

    /// Grid, axes, tick labels and axis titles. Ticks every `x_step` / `y_step`.
    pub fn draw_axes(&self, svg: &mut Svg, x_step: f64, y_step: f64, x_title: &str, y_title: &str) {
        let grid = r##"stroke="#e3e3e3" stroke-width="1""##;
        for v in ticks(self.y_range, y_step) {
            let y = self.y(v);
            svg.line(self.left, y, self.left + self.width, y, grid);
            svg.text(
                self.left - 8.0,
                y + 4.5,
                &tick_label(v, y_step),
                13.0,
                Anchor::End,
                "",
            );
        }
        for v in ticks(self.x_range, x_step) {
            let x = self.x(v);
            svg.line(x, self.top, x, self.bottom(), grid);
            svg.text(
                x,
                self.bottom() + 18.0,
                &tick_label(v, x_step),
                13.0,
                Anchor::Middle,
                "",
            );
        }
        let axis = r##"stroke="#444" stroke-width="1.2""##;
        svg.line(
            self.left,
            self.bottom(),
            self.left + self.width,
            self.bottom(),
            axis,
        );
        svg.line(self.left, self.top, self.left, self.bottom(), axis);
        svg.text(
            self.left + self.width / 2.0,
            self.bottom() + 40.0,
            x_title,
            14.0,
            Anchor::Middle,
            "",
        );
        svg.vtext(
            self.left - 44.0,
            self.top + self.height / 2.0,
            y_title,
            14.0,
        );
    }
}

fn ticks((a, b): (f64, f64), step: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut i = (a / step).ceil() as i64;
    while (i as f64) * step <= b + 1e-9 {
        out.push(i as f64 * step);
        i += 1;
    }
    out
}

/// As many decimals as the step needs (0.05 → two), so neighbouring ticks never read the same.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10() - 1e-9).ceil() as usize
    };
    format!("{v:.decimals$}")
}

/// White → blue by `t` in 0..1 (cell shading of the confusion matrix).
pub fn blue(t: f64) -> String {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mix = |w: f64, c: f64| (w + (c - w) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(255.0, 33.0),
        mix(255.0, 94.0),
        mix(255.0, 168.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_include_both_ends() {
        assert_eq!(ticks((0.0, 1.0), 0.2).len(), 6);
        assert_eq!(tick_label(0.6000000001, 0.2), "0.6");
        assert_eq!(tick_label(0.85, 0.05), "0.85");
        assert_eq!(tick_label(0.9, 0.1), "0.9");
        assert_eq!(tick_label(3.0, 1.0), "3");
    }

    #[test]
    fn shading_goes_from_white_to_blue_and_text_is_escaped() {
        assert_eq!(blue(0.0), "#ffffff");
        assert_eq!(blue(1.0), "#215ea8");
        let mut s = Svg::new(10.0, 10.0);
        s.text(0.0, 0.0, "a<b & c", 12.0, Anchor::Start, "");
        let out = s.finish("x\"y");
        assert!(out.contains("a&lt;b &amp; c"));
        assert!(out.contains("aria-label=\"x&quot;y\""));
    }
}
