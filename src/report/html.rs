//! The self-contained HTML page: inline CSS and SVG, no scripts, fonts or network.

use std::fmt::Write;

use super::escape::html as esc;
use super::figures::Figure;
use super::tables::Table;

const CSS: &str = r#"
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 15px; line-height: 1.45;
       color: #1d1d1d; background: #f6f6f4; margin: 0; }
main { max-width: 1160px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 20px; margin: 32px 0 8px; border-bottom: 2px solid #e4e4e4; padding-bottom: 4px; }
.note { background: #fff6d6; border-left: 4px solid #e0b000; padding: 8px 12px; margin: 12px 0; }
.sub { color: #555; margin: 0 0 8px; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 18px; }
figure { margin: 0; border: 1px solid #e4e4e4; padding: 8px; background: #fff; }
figure svg { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figure.wide { grid-column: 1 / -1; }
figcaption { font-size: 13px; color: #444; margin-top: 4px; }
table { border-collapse: collapse; margin: 6px 0 4px; font-size: 14px; }
th, td { border: 1px solid #d6d6d6; padding: 5px 9px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.examples td { font-size: 13px; }
table.examples td:nth-child(1) { word-break: break-all; min-width: 120px; }
table.examples td:nth-child(8) { min-width: 220px; }
"#;

pub fn table(t: &Table) -> String {
    let mut s = String::new();
    let _ = writeln!(s, r#"<h2 id="{}">{}</h2>"#, t.id, esc(&t.title));
    if let Some(n) = &t.note {
        let _ = writeln!(s, r#"<p class="sub">{}</p>"#, esc(n));
    }
    if t.rows.is_empty() {
        s.push_str("<p>None.</p>\n");
        return s;
    }
    let _ = writeln!(s, r#"<table class="{}"><thead><tr>"#, t.id);
    for h in &t.header {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        s.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if t.numeric.get(i).copied().unwrap_or(false) {
                r#" class="num""#
            } else {
                ""
            };
            // Line breaks inside a cell separate list items (evidence, rules).
            let _ = write!(s, "<td{class}>{}</td>", esc(cell).replace('\n', "<br>"));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
    s
}

fn figure(f: &Figure) -> String {
    // The grouped bars need the width; the other figures sit two by two.
    let wide = if f.stem == "per_class_f1" {
        r#" class="wide""#
    } else {
        ""
    };
    format!(
        "<figure id=\"{}\"{wide}>\n{}<figcaption>{}</figcaption>\n</figure>\n",
        f.stem,
        f.svg,
        esc(&f.caption)
    )
}

/// The whole page: title, note, summary line, then figures and tables in reading order.
pub fn page(
    title: &str,
    note: Option<&str>,
    summary: &str,
    figures: &[Figure],
    before: &[Table],
    after: &[Table],
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
    if let Some(n) = note {
        let _ = writeln!(s, r#"<p class="note">{}</p>"#, esc(n));
    }
    let _ = writeln!(s, r#"<p class="sub">{}</p>"#, esc(summary));
    for t in before {
        s.push_str(&table(t));
    }
    s.push_str("<h2 id=\"figures\">Figures</h2>\n<div class=\"figures\">\n");
    for f in figures {
        s.push_str(&figure(f));
    }
    s.push_str("</div>\n");
    for t in after {
        s.push_str(&table(t));
    }
    s.push_str("</main>\n</body>\n</html>\n");
    s
}
