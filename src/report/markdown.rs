//! The Markdown twin of the HTML page: the same tables, figures linked as `figures/*.svg`.

use std::fmt::Write;

use super::escape::markdown_cell as cell;
use super::figures::Figure;
use super::tables::Table;

pub fn table(t: &Table) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## {}\n", cell(&t.title));
    if let Some(n) = &t.note {
        let _ = writeln!(s, "{}\n", cell(n));
    }
    if t.rows.is_empty() {
        s.push_str("None.\n\n");
        return s;
    }
    let head: Vec<String> = t.header.iter().map(|h| cell(h)).collect();
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let rule: Vec<&str> = (0..t.header.len())
        .map(|i| {
            if t.numeric.get(i).copied().unwrap_or(false) {
                "---:"
            } else {
                "---"
            }
        })
        .collect();
    let _ = writeln!(s, "| {} |", rule.join(" | "));
    for row in &t.rows {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s.push('\n');
    s
}

pub fn page(
    title: &str,
    note: Option<&str>,
    summary: &str,
    figures: &[Figure],
    before: &[Table],
    after: &[Table],
) -> String {
    let mut s = format!("# {}\n\n", cell(title));
    if let Some(n) = note {
        let _ = writeln!(s, "> **Note:** {}\n", cell(n));
    }
    let _ = writeln!(s, "{}\n", cell(summary));
    for t in before {
        s.push_str(&table(t));
    }
    s.push_str("## Figures\n\n");
    for f in figures {
        let _ = writeln!(
            s,
            "![{}](figures/{}.svg)\n\n*{}*\n",
            cell(&f.caption),
            f.stem,
            cell(&f.caption)
        );
    }
    for t in after {
        s.push_str(&table(t));
    }
    s
}
