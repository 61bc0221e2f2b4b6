//! Escaping for the three output languages, and hiding recordings' folders.
//!
//! Recordings' paths can name a clinic, a patient or a user's home folder: unless the caller
//! asks for full paths, the report shows file names only, including inside error messages.

/// Escape text for HTML/SVG element content and double-quoted attributes.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escape text for one Markdown table cell: HTML-escaped (renderers pass raw HTML through),
/// pipes escaped, line breaks as `<br>` (a table row must stay on one line).
pub fn markdown_cell(s: &str) -> String {
    html(s)
        .replace('|', "\\|")
        .replace("\r\n", "\n")
        .replace(['\r', '\n'], "<br>")
}

/// The last component of a path written with `/` or `\` separators.
pub fn file_name(path: &str) -> &str {
    let trimmed = path.trim_end_matches(['/', '\\']);
    trimmed.rsplit(['/', '\\']).next().unwrap_or(trimmed)
}

/// `path` as the report shows it: the whole path when `full_paths`, else the file name.
pub fn shown_path(path: &str, full_paths: bool) -> String {
    if full_paths {
        path.to_string()
    } else {
        file_name(path).to_string()
    }
}

/// Free text (an error message) with every path-looking word cut to its file name, so an
/// error that quotes `/home/x/clinic/a.wav` shows `a.wav`. A word is path-looking when it
/// holds a separator and starts like a path (`/`, `~`, `.`, `\`, or a drive letter `C:`) or
/// ends in a file name with an extension.
pub fn redact_paths(text: &str, full_paths: bool) -> String {
    if full_paths {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(&redact_word(word));
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn redact_word(word: &str) -> String {
    // Keep quotes, brackets and trailing punctuation around the path.
    let is_wrap = |c: char| "\"'`()[]{}<>,;".contains(c);
    let core_start = word.find(|c: char| !is_wrap(c)).unwrap_or(word.len());
    let mut core_end = word.trim_end_matches(is_wrap).len().max(core_start);
    // A trailing ':' (as in "a.wav: bad header") is punctuation, not part of the path.
    while core_end > core_start
        && word[..core_end].ends_with([':', '.'])
        && !word[core_start..core_end].ends_with("..")
    {
        core_end -= 1;
    }
    let core = &word[core_start..core_end];
    let drive =
        core.len() > 2 && core.as_bytes()[1] == b':' && core.as_bytes()[0].is_ascii_alphabetic();
    let starts_like_path = core.starts_with(['/', '~', '.', '\\']) || drive;
    // A relative path to a file ("actor13/a.wav") names folders too; "calm/angry" does not.
    let names_a_file = file_name(core).contains('.');
    if core.contains(['/', '\\']) && (starts_like_path || names_a_file) {
        format!(
            "{}{}{}",
            &word[..core_start],
            file_name(core),
            &word[core_end..]
        )
    } else {
        word.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_markup_and_quotes() {
        assert_eq!(
            html(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn markdown_cells_keep_one_line_and_escape_pipes() {
        assert_eq!(markdown_cell("a|b\nc <d>"), "a\\|b<br>c &lt;d&gt;");
    }

    #[test]
    fn paths_are_cut_to_file_names_inside_messages() {
        assert_eq!(file_name("/home/ann/clinic/a b.wav"), "a b.wav");
        assert_eq!(file_name(r"C:\data\x.wav"), "x.wav");
        assert_eq!(shown_path("rel/dir/x.wav", false), "x.wav");
        assert_eq!(shown_path("rel/dir/x.wav", true), "rel/dir/x.wav");
        assert_eq!(
            redact_paths("decode '/home/ann/clinic/a.wav': bad header (calm/angry) in ./m/b.flac, p07/c.wav.", false),
            "decode 'a.wav': bad header (calm/angry) in b.flac, c.wav."
        );
        assert_eq!(redact_paths("/srv/x/a.wav: empty", false), "a.wav: empty");
        assert_eq!(
            redact_paths("/srv/x/a.wav: empty", true),
            "/srv/x/a.wav: empty"
        );
    }
}
