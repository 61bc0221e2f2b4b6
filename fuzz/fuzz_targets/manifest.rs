//! The manifest reader (`Manifest::load` / `load_unlabelled` on a file) and what the CLI does
//! next with a loaded manifest: speakers, data hash, speaker split, writing it back.
//! Any panic is a bug: every bad manifest must come back as a `DataError` naming the file.

#![no_main]

use camxuc::data::{speaker_split, Manifest};
use camxuc::LabelSet;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch_file("manifest.csv", data);
    let labels = LabelSet::new(["calm", "angry", "panic"]).expect("default labels");
    for loaded in [Manifest::load(&path, &labels), Manifest::load_unlabelled(&path)] {
        let m = match loaded {
            Ok(m) => m,
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(&path.display().to_string()), "error does not name the manifest: {msg}");
                continue;
            }
        };
        assert!(!m.rows.is_empty());
        let _ = m.speakers();
        let _ = m.data_hash();
        let _ = m.missing_files();
        let _ = m.label_indices();
        let _ = speaker_split(&m, 0.25, 1);
        let out = path.with_file_name("written.csv");
        if m.write(&out).is_ok() {
            // What was written must load again with the same rows.
            let again = if m.labels.is_some() { Manifest::load(&out, &labels) } else { Manifest::load_unlabelled(&out) };
            if let Ok(again) = again {
                assert_eq!(again.rows.len(), m.rows.len());
            }
        }
    }
});
