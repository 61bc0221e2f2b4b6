//! The synthetic corpus: decodes, has the requested counts, loads as a manifest, and is
//! byte-identical for a seed. Needs espeak-ng (CI installs it); skipped with a reason when
//! it is absent.

use std::collections::BTreeMap;
use std::path::Path;

use camxuc::data::{synthesize, DataError, Manifest, SynthOptions};
use camxuc::LabelSet;

fn espeak_present() -> bool {
    let ok = std::process::Command::new("espeak-ng")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        eprintln!("skipped: espeak-ng is not installed (apt-get install espeak-ng)");
    }
    ok
}

fn small(out: &Path, seed: u64) -> SynthOptions {
    SynthOptions {
        out: out.to_path_buf(),
        per_class: 3,
        speakers: 2,
        seed,
        ..SynthOptions::default()
    }
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    m.insert(
        "manifest.csv".into(),
        std::fs::read(dir.join("manifest.csv")).unwrap(),
    );
    m.insert(
        "README.md".into(),
        std::fs::read(dir.join("README.md")).unwrap(),
    );
    for e in std::fs::read_dir(dir.join("clips")).unwrap() {
        let e = e.unwrap();
        m.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    m
}

#[test]
fn small_corpus_decodes_counts_loads_and_is_deterministic() {
    if !espeak_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let mut calls = Vec::new();
    let report = synthesize(&small(&a, 11), &mut |done, total| calls.push((done, total))).unwrap();
    assert_eq!(report.clips, 9);
    assert_eq!(report.speakers, vec!["synth-m1", "synth-f2"]);
    assert_eq!(calls.last(), Some(&(9, 9)), "progress reaches the total");

    let m = Manifest::load(&report.manifest, &LabelSet::default()).unwrap();
    m.require_files().unwrap();
    assert_eq!(m.rows.len(), 9);
    for label in ["calm", "angry", "panic"] {
        let rows: Vec<_> = m.rows.iter().filter(|r| r.label == label).collect();
        assert_eq!(rows.len(), 3, "{label}");
        let spk: Vec<_> = rows.iter().filter_map(|r| r.speaker.as_deref()).collect();
        assert!(
            spk.contains(&"synth-m1") && spk.contains(&"synth-f2"),
            "{label}: both speakers speak it"
        );
    }
    for r in &m.rows {
        assert_eq!(
            r.extra.get("synthetic").map(String::as_str),
            Some("espeak-ng")
        );
        assert!(!r
            .extra
            .get("text")
            .map(String::as_str)
            .unwrap_or("")
            .is_empty());
        let mut wav = hound::WavReader::open(&r.path).unwrap();
        let spec = wav.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (1, 16_000, 16)
        );
        let samples: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
        let secs = samples.len() as f64 / 16_000.0;
        assert!((0.5..15.0).contains(&secs), "{}: {secs} s", r.rel_path);
        let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!(
            peak > 500,
            "{}: a clip with speech in it (peak {peak})",
            r.rel_path
        );
    }
    let readme = std::fs::read_to_string(a.join("README.md")).unwrap();
    assert!(readme.contains("SYNTHETIC") && readme.contains("--seed 11"));

    synthesize(&small(&b, 11), &mut |_, _| {}).unwrap();
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.len(), 11);
    for (name, bytes) in &fa {
        assert!(
            fb.get(name) == Some(bytes),
            "{name} differs between two runs with seed 11"
        );
    }

    synthesize(&small(&c, 12), &mut |_, _| {}).unwrap();
    let fc = files(&c);
    let differing = fa
        .iter()
        .filter(|(n, bytes)| fc.get(*n) != Some(*bytes))
        .count();
    assert!(
        differing >= 9,
        "another seed gives other clips ({differing} differ)"
    );
}

#[test]
fn missing_espeak_says_how_to_install_it() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        espeak: "/nonexistent/espeak-ng".into(),
        ..small(tmp.path(), 1)
    };
    let e = synthesize(&opts, &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, DataError::EspeakMissing { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("apt-get install espeak-ng") && msg.contains("brew install espeak-ng"),
        "{msg}"
    );
}

#[test]
fn unwritable_output_is_named() {
    if !espeak_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A file where the output folder should be: creating clips/ under it must fail.
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let e = synthesize(&small(&blocker, 1), &mut |_, _| {}).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::OutputNotWritable { .. }), "{e:?}");
    assert!(
        msg.contains(&blocker.display().to_string()) && msg.contains("not writable"),
        "{msg}"
    );
}

#[test]
fn bad_options_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        speakers: 13,
        ..small(tmp.path(), 1)
    };
    assert!(synthesize(&opts, &mut |_, _| {})
        .unwrap_err()
        .to_string()
        .contains("--speakers"));
    let opts = SynthOptions {
        labels: LabelSet::new(["calm", "sad"]).unwrap(),
        ..small(tmp.path(), 1)
    };
    let msg = synthesize(&opts, &mut |_, _| {}).unwrap_err().to_string();
    assert!(msg.contains("'sad'"), "{msg}");
}

/// Ad-hoc: `CAMXUC_SYNTH_OUT=/tmp/synth cargo test --test data_synth default_corpus -- --ignored --nocapture`
/// writes the default corpus (3 × 40 clips, 6 speakers) and prints how long it took.
#[test]
#[ignore = "ad-hoc: writes the full default corpus"]
fn default_corpus() {
    if !espeak_present() {
        return;
    }
    let out = std::env::var("CAMXUC_SYNTH_OUT").unwrap_or_else(|_| "/tmp/camxuc-synth".into());
    let t = std::time::Instant::now();
    let r = synthesize(
        &SynthOptions {
            out: out.into(),
            ..SynthOptions::default()
        },
        &mut |_, _| {},
    )
    .unwrap();
    println!(
        "{} clips, {:.1} s of audio, in {:.2} s",
        r.clips,
        r.audio_seconds,
        t.elapsed().as_secs_f64()
    );
    assert_eq!(r.clips, 120);
}
