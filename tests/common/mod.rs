//! Helpers shared by the end-to-end tests. Each test crate uses a subset of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub mod serve;

use camxuc::acoustic::{FrontendChoice, TrainOptions};
use camxuc::data::synth::{synthesize, SynthOptions};

/// Whether espeak-ng can run here. In CI it must (`.ci/run` installs it): a missing
/// espeak-ng fails there instead of skipping.
pub fn espeak_or_skip() -> bool {
    if std::process::Command::new("espeak-ng")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "espeak-ng must be installed in CI"
    );
    eprintln!("SKIPPED: espeak-ng is not installed");
    false
}

/// The models folder (`CAMXUC_MODELS_DIR`, else `models/`) when it holds the Whisper base
/// weights. Without them the test skips with a printed reason, except in CI (`.ci/run`
/// fetches them), where that is a failure.
pub fn whisper_models_or_skip() -> Option<PathBuf> {
    let root = std::env::var_os("CAMXUC_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    if root.join("whisper-base/model.bin").is_file() {
        return Some(root);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {} has no whisper-base/model.bin (camxuc models fetch whisper-base)",
        root.display()
    );
    eprintln!(
        "SKIPPED: {} has no whisper-base/model.bin (camxuc models fetch whisper-base)",
        root.display()
    );
    None
}

/// The RAVDESS subset beside the repository (`../shared/data/ravdess-3class`: CC BY-NC-SA,
/// never copied into it) when its manifest and clips are there. Without it the test skips
/// with a printed reason, except when `CAMXUC_REQUIRE_DATA=1` (`.ci/run` sets it), where a
/// missing corpus is a failure instead of a silent pass.
pub fn ravdess_or_skip() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/ravdess-3class");
    if dir.join("manifest.csv").is_file() && dir.join("clips").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CAMXUC_REQUIRE_DATA").is_none_or(|v| v != "1"),
        "CAMXUC_REQUIRE_DATA=1 but {} has no manifest.csv and clips/ (the RAVDESS subset)",
        dir.display()
    );
    eprintln!(
        "SKIPPED: {} has no manifest.csv and clips/ (the RAVDESS subset is not on this machine)",
        dir.display()
    );
    None
}

/// A small synthetic corpus (6 clips per class, 3 speakers); returns its manifest.
pub fn small_corpus(dir: &Path, seed: u64) -> PathBuf {
    small_corpus_of(dir, 3, 6, seed)
}

/// A synthetic corpus of `speakers` voices and `per_class` clips per class.
#[allow(dead_code)] // not every test binary uses it
pub fn small_corpus_of(dir: &Path, speakers: usize, per_class: usize, seed: u64) -> PathBuf {
    let opts = SynthOptions {
        out: dir.join("corpus"),
        per_class,
        speakers,
        seed,
        ..Default::default()
    };
    synthesize(&opts, &mut |_, _| {})
        .expect("synthesise")
        .manifest
}

/// Options for a light, quick model: log-mel front end, a few epochs.
pub fn light_options(
    manifest: PathBuf,
    out: PathBuf,
    seed: u64,
    augment_views: usize,
    epochs: usize,
) -> TrainOptions {
    let mut o = TrainOptions::new(manifest, out);
    // The attention head: these options are about its epochs and augmentation.
    o.classifier = camxuc::acoustic::train::Classifier::Attention;
    o.frontend = FrontendChoice::LogMel;
    o.augment_views = augment_views;
    o.train.epochs = epochs;
    o.train.seed = seed;
    o.force = true;
    o.val_fraction = 0.34;
    o
}

/// SIGKILL `child` once `path` holds at least `lines` lines (or after two minutes), as a crash
/// in the middle of a batch would, and reap it.
pub fn kill_after_lines(mut child: Child, path: &Path, lines: usize) {
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_to_string(path)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n >= lines || t0.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}
