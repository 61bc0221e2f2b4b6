//! Throughput of decode + trim + features per clip, as `camxuc` runs them: real RAVDESS clips
//! as they come (16 kHz WAV, about half silence) when ../shared/data/ravdess-3class is present,
//! otherwise the synthetic demo corpus (needs espeak-ng). One thread in this process; with
//! isolation on, decoding happens in the worker process (a second process, used sequentially).
//!
//! Real-time factor = seconds of input audio / seconds of wall time. Results are printed and
//! written to target/camxuc-bench/pipeline.json.
//!
//! With `CAMXUC_BENCH_MODEL=DIR` (a trained model directory) it also measures the whole acoustic
//! route (decode → features → encoder → head) per clip, one clip at a time, at the thread
//! counts in `CAMXUC_BENCH_THREADS` (default "1,2"). candle's element-wise ops run on a
//! process-wide pool sized once from `CANDLE_NUM_THREADS` (default: all cores), which a rayon
//! pool does not bound: for a true one-core figure run one process per thread count with
//! `CANDLE_NUM_THREADS` set to it, as `scripts/bench.sh` does (`CAMXUC_BENCH_ACOUSTIC_ONLY=1`
//! skips the decode stages, `CAMXUC_BENCH_JSON=FILE` writes elsewhere).

use std::path::{Path, PathBuf};
use std::time::Instant;

use camxuc::audio::LoadOptions;
use camxuc::clip::ClipAnalyser;
use camxuc::features::FeatureConfig;

fn ravdess_clips() -> Option<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/ravdess-3class/clips");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    Some(paths.into_iter().step_by(8).take(48).collect())
}

fn synthetic_clips() -> Vec<PathBuf> {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-synth");
    let opts = camxuc::data::synth::SynthOptions {
        out: out.clone(),
        per_class: 8,
        speakers: 2,
        seed: 5,
        ..Default::default()
    };
    match camxuc::data::synth::synthesize(&opts, &mut |_, _| {}) {
        Ok(r) => camxuc::data::manifest::Manifest::load_unlabelled(&r.manifest)
            .map(|m| m.rows.into_iter().map(|r| r.path).collect())
            .unwrap_or_default(),
        Err(e) => {
            eprintln!("no RAVDESS clips and no synthetic corpus ({e}); nothing to measure");
            Vec::new()
        }
    }
}

struct Run {
    label: String,
    threads: usize,
    clips: usize,
    audio_s: f64,
    wall_s: f64,
}

fn measure(label: &'static str, paths: &[PathBuf], isolate: bool, rounds: usize) -> Run {
    let mut an =
        ClipAnalyser::new(&FeatureConfig::default()).expect("default feature config is valid");
    an.load = LoadOptions {
        isolate,
        worker_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_camxuc"))),
        ..LoadOptions::default()
    };
    // Warm-up: worker start, buffers grown.
    for p in paths.iter().take(4) {
        let _ = an.analyse(p);
    }
    let mut audio_s = 0.0;
    let t0 = Instant::now();
    for _ in 0..rounds {
        for p in paths {
            match an.analyse(p) {
                Ok(c) => audio_s += c.duration_s,
                Err(e) => eprintln!("{e}"),
            }
        }
    }
    Run {
        label: label.to_string(),
        threads: 1,
        clips: paths.len() * rounds,
        audio_s,
        wall_s: t0.elapsed().as_secs_f64(),
    }
}

/// The whole acoustic route per clip with a trained model, on a rayon pool of `threads`.
fn measure_acoustic(model_dir: &Path, paths: &[PathBuf], threads: usize) -> Option<Run> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .ok()?;
    pool.install(|| {
        let models = camxuc::catalog::models_dir();
        let model = match camxuc::acoustic::AcousticModel::load(
            model_dir,
            &models,
            &candle_core::Device::Cpu,
        ) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{e}");
                return None;
            }
        };
        let mut an = ClipAnalyser::new(&model.meta.features).ok()?;
        an.load.worker_exe = Some(PathBuf::from(env!("CARGO_BIN_EXE_camxuc")));
        let mut one = |p: &PathBuf| -> Option<f64> {
            let mut c = an.analyse(p).ok()?;
            let d = c.duration_s;
            model.predict(std::slice::from_mut(&mut c)).ok()?;
            Some(d)
        };
        for p in paths.iter().take(2) {
            one(p);
        }
        let t0 = Instant::now();
        let audio_s: f64 = paths.iter().filter_map(&mut one).sum();
        let label = format!("acoustic route, {threads} thread(s)");
        Some(Run {
            label,
            threads,
            clips: paths.len(),
            audio_s,
            wall_s: t0.elapsed().as_secs_f64(),
        })
    })
}

fn main() {
    // `cargo bench` passes --bench; this harness takes no options.
    let (paths, corpus) = match ravdess_clips() {
        Some(p) if !p.is_empty() => (p, "ravdess-3class (real clips, untrimmed)"),
        _ => (synthetic_clips(), "synthetic demo corpus"),
    };
    if paths.is_empty() {
        return;
    }
    let mut runs = Vec::new();
    if std::env::var_os("CAMXUC_BENCH_ACOUSTIC_ONLY").is_none() {
        runs.push(measure("in-process decode", &paths, false, 3));
        runs.push(measure("isolated decode (worker)", &paths, true, 3));
    }
    if let Some(dir) = std::env::var_os("CAMXUC_BENCH_MODEL") {
        let threads = std::env::var("CAMXUC_BENCH_THREADS").unwrap_or_else(|_| "1,2".into());
        for t in threads
            .split(',')
            .filter_map(|t| t.trim().parse::<usize>().ok())
        {
            runs.extend(measure_acoustic(
                Path::new(&dir),
                &paths[..paths.len().min(24)],
                t,
            ));
        }
    }
    let mut json = Vec::new();
    println!("per clip, {corpus}:");
    for r in &runs {
        let rtf = r.audio_s / r.wall_s;
        let ms = 1000.0 * r.wall_s / r.clips as f64;
        let clips_per_s = r.clips as f64 / r.wall_s;
        println!(
            "  {:<26} {:>6.1} ms/clip  {:>6.0}x real time  ({} clips, {:.0} s audio)",
            r.label, ms, rtf, r.clips, r.audio_s
        );
        json.push(serde_json::json!({
            "stage": r.label, "corpus": corpus, "threads": r.threads, "clips": r.clips,
            "audio_s": r.audio_s, "wall_s": r.wall_s, "clips_per_s": clips_per_s,
            "ms_per_clip": ms, "real_time_factor": rtf,
        }));
    }
    let path = std::env::var_os("CAMXUC_BENCH_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/camxuc-bench/pipeline.json")
        });
    if path
        .parent()
        .is_none_or(|d| std::fs::create_dir_all(d).is_ok())
    {
        if let Ok(s) = serde_json::to_string_pretty(&json) {
            let _ = std::fs::write(&path, s);
            println!("written to {}", path.display());
        }
    }
}
