//! Manifest loading: every error names the manifest file and the problem; paths resolve
//! against the manifest's folder; extra columns survive a write/load round trip.

use std::path::Path;

use camxuc::data::{DataError, Manifest, ManifestRow};
use camxuc::LabelSet;

mod common;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn load_err(text: &str) -> (String, std::path::PathBuf, DataError) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.csv", text);
    let e = Manifest::load(&p, &LabelSet::default()).expect_err("manifest should be rejected");
    (e.to_string(), p, e)
}

#[test]
fn missing_manifest_names_the_file() {
    let e = Manifest::load(Path::new("/nonexistent/dir/m.csv"), &LabelSet::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("/nonexistent/dir/m.csv") && msg.contains("not found"),
        "{msg}"
    );
}

#[test]
fn bad_header_says_which_column_is_missing() {
    let (msg, p, e) = load_err("file,label\na.wav,calm\n");
    assert!(matches!(e, DataError::BadHeader { ref missing, .. } if missing == "path"));
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(
        msg.contains("'path'") && msg.contains("path,label"),
        "{msg}"
    );

    let (msg, _, _) = load_err("path,speaker\na.wav,s1\n");
    assert!(
        msg.contains("'label'") && msg.contains("found columns: path,speaker"),
        "{msg}"
    );
}

#[test]
fn unknown_label_lists_the_valid_ones_and_the_line() {
    let (msg, p, _) = load_err("path,label\na.wav,calm\nb.wav,fear\n");
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(
        msg.contains("line 3") && msg.contains("'fear'") && msg.contains("calm|angry|panic"),
        "{msg}"
    );
}

#[test]
fn duplicate_row_gives_both_line_numbers() {
    let (msg, p, e) = load_err("path,label\na.wav,calm\nb.wav,angry\na.wav,panic\n");
    assert!(
        matches!(
            e,
            DataError::DuplicateRow {
                first_line: 2,
                second_line: 4,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.contains(&p.display().to_string()) && msg.contains("'a.wav'"),
        "{msg}"
    );
    assert!(msg.contains("line 2") && msg.contains("line 4"), "{msg}");
}

#[test]
fn empty_manifest_is_an_error() {
    for text in ["", "path,label\n", "path,label\n\n\n"] {
        let (msg, p, e) = load_err(text);
        assert!(
            matches!(e, DataError::EmptyManifest { .. }),
            "{text:?}: {e:?}"
        );
        assert!(
            msg.contains(&p.display().to_string()) && msg.contains("no data rows"),
            "{msg}"
        );
    }
}

#[test]
fn ragged_csv_is_unreadable_with_its_line() {
    let (msg, p, e) = load_err("path,label\na.wav,calm\nb.wav,angry,extra\n");
    assert!(
        matches!(e, DataError::ManifestUnreadable { line: Some(3), .. }),
        "{e:?}"
    );
    assert!(
        msg.contains(&p.display().to_string()) && msg.contains("line 3"),
        "{msg}"
    );
}

#[test]
fn empty_path_or_label_cell_is_named() {
    let (msg, _, _) = load_err("path,label\n,calm\n");
    assert!(
        msg.contains("line 2") && msg.contains("'path' is empty"),
        "{msg}"
    );
    let (msg, _, _) = load_err("path,label\na.wav,\n");
    assert!(
        msg.contains("line 2") && msg.contains("'label' is empty"),
        "{msg}"
    );
}

#[test]
fn paths_resolve_against_the_manifest_folder_and_extras_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("corpus");
    std::fs::create_dir_all(sub.join("clips")).unwrap();
    std::fs::write(sub.join("clips/a.wav"), b"RIFF0000").unwrap();
    let p = write(
        &sub,
        "manifest.csv",
        "\u{feff}Path,Label,speaker,Intensity,text\nclips/a.wav, Angry ,s1,strong,Cứu tôi với!\nclips/b.wav,calm,,normal,\n",
    );
    let m = Manifest::load(&p, &LabelSet::default()).unwrap();
    assert_eq!(m.rows.len(), 2);
    let a = &m.rows[0];
    assert_eq!(a.line, 2);
    assert_eq!(a.rel_path, "clips/a.wav");
    assert_eq!(a.path, sub.join("clips/a.wav"));
    assert_eq!(
        a.label, "angry",
        "label normalised to the label set's spelling"
    );
    assert_eq!(a.speaker.as_deref(), Some("s1"));
    assert_eq!(a.extra.get("Intensity").map(String::as_str), Some("strong"));
    assert_eq!(
        a.extra.get("text").map(String::as_str),
        Some("Cứu tôi với!")
    );
    assert_eq!(
        m.rows[1].speaker, None,
        "an empty speaker cell is no speaker"
    );
    assert_eq!(m.extra_columns, vec!["Intensity", "text"]);

    // Missing audio does not stop loading; it is reported, all at once, on request.
    let missing = m.missing_files();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].rel_path, "clips/b.wav");
    let msg = m.require_files().unwrap_err().to_string();
    assert!(
        msg.contains(&p.display().to_string())
            && msg.contains("line 3")
            && msg.contains("clips/b.wav"),
        "{msg}"
    );

    // Written elsewhere, the manifest still points at the same files and keeps its columns.
    let out = dir.path().join("copy.csv");
    m.write(&out).unwrap();
    let back = Manifest::load(&out, &LabelSet::default()).unwrap();
    assert_eq!(back.rows[0].rel_path, "corpus/clips/a.wav");
    assert_eq!(back.rows[0].path, dir.path().join("corpus/clips/a.wav"));
    assert_eq!(back.rows[0].extra, a.extra);
    assert_eq!(back.extra_columns, m.extra_columns);
    // The hash covers the paths as written, so a copy beside the original hashes the same.
    let beside = sub.join("copy.csv");
    m.write(&beside).unwrap();
    let again = Manifest::load(&beside, &LabelSet::default()).unwrap();
    assert_eq!(
        again.rows,
        m.rows
            .iter()
            .map(|r| ManifestRow {
                line: r.line,
                ..r.clone()
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(
        again.data_hash(),
        m.data_hash(),
        "same files, labels and sizes → same hash"
    );
}

#[test]
fn data_hash_follows_labels_and_file_sizes_not_row_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.wav"), b"1234").unwrap();
    std::fs::write(dir.path().join("b.wav"), b"12345678").unwrap();
    let h = |text: &str| {
        let p = write(dir.path(), "m.csv", text);
        Manifest::load(&p, &LabelSet::default())
            .unwrap()
            .data_hash()
    };
    let base = h("path,label\na.wav,calm\nb.wav,angry\n");
    assert_eq!(base.len(), 64);
    assert_eq!(base, h("path,label\nb.wav,angry\na.wav,calm\n"));
    assert_ne!(base, h("path,label\na.wav,calm\nb.wav,panic\n"));
    std::fs::write(dir.path().join("b.wav"), b"123").unwrap();
    assert_ne!(base, h("path,label\na.wav,calm\nb.wav,angry\n"));
}

#[test]
fn unlabelled_manifest_needs_only_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.csv", "path\nx.wav\ny.mp3\n");
    let m = Manifest::load_unlabelled(&p).unwrap();
    assert_eq!(m.rows.len(), 2);
    assert!(m.labels.is_none() && m.rows[0].label.is_empty());
    assert_eq!(m.rows[1].path, dir.path().join("y.mp3"));
    // The labelled loader refuses it, naming the missing column.
    let msg = Manifest::load(&p, &LabelSet::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("'label'"), "{msg}");
}

#[test]
fn ravdess_manifest_loads_when_present() {
    let Some(dir) = common::ravdess_or_skip() else {
        return;
    };
    let m = Manifest::load(&dir.join("manifest.csv"), &LabelSet::default()).unwrap();
    assert_eq!(m.rows.len(), 384);
    assert_eq!(m.speakers().len(), 16);
    assert!(m.missing_files().is_empty());
    assert_eq!(
        m.label_indices()
            .unwrap()
            .iter()
            .filter(|&&i| i == 0)
            .count(),
        128
    );
}
