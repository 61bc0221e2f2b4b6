//! Throughput of the features stage: evidence + log-mel from one STFT pass on 3 s clips
//! (real RAVDESS clips when ../shared/data/ravdess-3class is present, synthetic otherwise).
//! Criterion's throughput is in audio samples; real-time factor = samples/s ÷ 16 000, and a
//! direct real-time-factor line is printed before the measurement. Target (issue 2):
//! decode + features ≥ 300× real time on one core.

use std::path::Path;
use std::time::Instant;

use camxuc::features::{EvidenceExtractor, FeatureConfig, LogMel};
use camxuc::Audio;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SR: usize = 16_000;
const CLIP_S: usize = 3;

fn clips() -> (Vec<Audio>, &'static str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/ravdess-3class/clips");
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths.iter().step_by(37).take(8) {
            let Ok(mut reader) = hound::WavReader::open(p) else {
                continue;
            };
            let x: Vec<f32> = reader
                .samples::<i16>()
                .filter_map(Result::ok)
                .map(|s| s as f32 / 32768.0)
                .collect();
            // The middle 3 s, where the speech is.
            if x.len() >= CLIP_S * SR {
                let start = (x.len() - CLIP_S * SR) / 2;
                out.push(Audio::new(
                    x[start..start + CLIP_S * SR].to_vec(),
                    SR as u32,
                ));
            }
        }
    }
    if !out.is_empty() {
        return (out, "RAVDESS");
    }
    let synth = (0..4)
        .map(|k| {
            let f0 = 120.0 + 30.0 * k as f64;
            let x = (0..CLIP_S * SR)
                .map(|i| {
                    let t = i as f64 / SR as f64;
                    let env = (std::f64::consts::PI * (t * 4.0).fract()).sin().powi(2);
                    (1..=10)
                        .map(|h| (std::f64::consts::TAU * h as f64 * f0 * t).sin() / h as f64)
                        .sum::<f64>() as f32
                        * env as f32
                        * 0.2
                })
                .collect();
            Audio::new(x, SR as u32)
        })
        .collect();
    (synth, "synthetic")
}

fn bench_features(c: &mut Criterion) {
    let (clips, kind) = clips();
    let mut ex =
        EvidenceExtractor::new(&FeatureConfig::default()).expect("default config is valid");
    let mut log_mel = LogMel::default();
    // Warm up buffers, then a direct real-time-factor figure.
    for a in &clips {
        let _ = ex.extract_with_log_mel(a, &mut log_mel);
    }
    let rounds = 5;
    let t0 = Instant::now();
    for _ in 0..rounds {
        for a in &clips {
            let _ = ex.extract_with_log_mel(a, &mut log_mel);
        }
    }
    let audio_s = (rounds * clips.len() * CLIP_S) as f64;
    println!(
        "features ({kind} 3 s clips): {:.0}x real time on one core",
        audio_s / t0.elapsed().as_secs_f64()
    );

    let mut group = c.benchmark_group("features");
    group.throughput(Throughput::Elements((clips.len() * CLIP_S * SR) as u64));
    group.bench_function(format!("evidence+log_mel/{kind}/{}x3s", clips.len()), |b| {
        b.iter(|| {
            for a in &clips {
                let _ = ex.extract_with_log_mel(a, &mut log_mel);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_features);
criterion_main!(benches);
