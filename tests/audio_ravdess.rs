//! The VAD on real recordings: RAVDESS clips (../shared/data/ravdess-3class) start and end
//! with about a second of room silence; trimming must cut it and keep the speech.
//! Skipped, with the reason printed, when the folder is absent.

use std::path::PathBuf;
use std::time::Instant;

use camxuc::audio::{self, LoadOptions, VadConfig};

mod common;

fn corpus() -> Option<PathBuf> {
    common::ravdess_or_skip()
}

fn clips(root: &std::path::Path, n: usize) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("clips"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    v.sort();
    // Spread the picks over the sorted list: different actors, emotions and intensities.
    let step = (v.len() / n).max(1);
    v.into_iter().step_by(step).take(n).collect()
}

fn rms_db(x: &[f32]) -> f64 {
    let ms = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64;
    10.0 * (ms + 1e-20).log10()
}

#[test]
fn vad_trims_leading_and_trailing_silence_of_real_clips() {
    let Some(root) = corpus() else { return };
    let opts = LoadOptions {
        worker_exe: Some(env!("CARGO_BIN_EXE_camxuc").into()),
        ..LoadOptions::default()
    };
    let cfg = VadConfig::default();
    let mut kept_fractions = Vec::new();
    for p in clips(&root, 12) {
        let a = audio::load(&p, &opts).unwrap();
        let t = audio::trim_silence(&a, &cfg);
        let frac = t.duration_s() / a.duration_s();
        let start = (t.offset_s * 16_000.0).round() as usize;
        let end = start + t.samples.len();
        let kept_db = rms_db(&t.samples);
        let removed: Vec<f32> = a.samples[..start]
            .iter()
            .chain(&a.samples[end..])
            .copied()
            .collect();
        let removed_db = rms_db(&removed);
        println!(
            "{}: {:.2} s -> {:.2} s ({:.0} %), kept {:.1} dB, removed {:.1} dB",
            p.file_name().unwrap().to_string_lossy(),
            a.duration_s(),
            t.duration_s(),
            100.0 * frac,
            kept_db,
            removed_db
        );
        assert!(
            t.offset_s > 0.2,
            "{}: leading silence not cut (starts at {:.2} s)",
            p.display(),
            t.offset_s
        );
        assert!(
            end < a.samples.len() - 3200,
            "{}: trailing silence not cut",
            p.display()
        );
        assert!(
            frac < 0.85,
            "{}: kept {:.0} % of the clip",
            p.display(),
            100.0 * frac
        );
        assert!(
            t.duration_s() > 0.7,
            "{}: kept only {:.2} s of speech",
            p.display(),
            t.duration_s()
        );
        assert!(
            kept_db - removed_db > 20.0,
            "{}: removed part is not quiet ({removed_db:.1} vs {kept_db:.1} dB)",
            p.display()
        );
        kept_fractions.push(frac);
    }
    let mean = kept_fractions.iter().sum::<f64>() / kept_fractions.len() as f64;
    println!("mean kept fraction {:.2}", mean);
    assert!(
        mean < 0.75,
        "on average the VAD kept {:.0} % of each clip",
        100.0 * mean
    );
}

/// Not a benchmark (no assertion on speed): prints decode throughput of this (test) build,
/// worker vs in-process, for the report.
#[test]
fn decode_throughput_is_printed() {
    let Some(root) = corpus() else { return };
    let files = clips(&root, 48);
    for (label, opts) in [
        (
            "worker",
            LoadOptions {
                worker_exe: Some(env!("CARGO_BIN_EXE_camxuc").into()),
                ..LoadOptions::default()
            },
        ),
        (
            "in-process",
            LoadOptions {
                isolate: false,
                ..LoadOptions::default()
            },
        ),
    ] {
        let _ = audio::load(&files[0], &opts).unwrap(); // start the worker outside the timing
        let t0 = Instant::now();
        let mut secs = 0.0;
        for p in &files {
            secs += audio::load(p, &opts).unwrap().duration_s();
        }
        let wall = t0.elapsed().as_secs_f64();
        println!(
            "decode {label}: {} clips, {secs:.1} s audio in {wall:.3} s = {:.0}x real time",
            files.len(),
            secs / wall
        );
        assert!(secs > 0.0);
    }
}
