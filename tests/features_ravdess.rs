//! Evidence on real acted speech (../shared/data/ravdess-3class, CC BY-NC-SA, never copied
//! into the repository): class differences in the expected direction, gain invariance on a
//! real clip, and the angry-vs-panic effect sizes the acoustic model and rules rely on.
//! Skips with a printed reason when the corpus is absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use camxuc::features::{EvidenceExtractor, FeatureConfig, FEATURES};
use camxuc::{Audio, Evidence};

mod common;

fn corpus() -> Option<PathBuf> {
    common::ravdess_or_skip()
}

struct Clip {
    path: PathBuf,
    label: String,
    actor: u32,
}

fn manifest(dir: &Path) -> Vec<Clip> {
    let text = std::fs::read_to_string(dir.join("manifest.csv")).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split(',').collect();
            let actor = cols.get(2)?.trim_start_matches("actor").parse().ok()?;
            Some(Clip {
                path: dir.join(cols[0]),
                label: cols[1].to_string(),
                actor,
            })
        })
        .collect()
}

/// Reads a 16 kHz 16-bit mono RAVDESS WAV and trims leading/trailing silence with a simple
/// energy rule (10 ms frames within 35 dB of the loudest, 50 ms margin) — the audio stage's
/// VAD does this in the pipeline.
fn load_trimmed(path: &Path) -> Audio {
    let mut reader = hound::WavReader::open(path).unwrap();
    assert_eq!(reader.spec().sample_rate, 16_000, "{}", path.display());
    let x: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect();
    let frame = 160;
    let db: Vec<f32> = x
        .chunks(frame)
        .map(|c| 10.0 * (c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32 + 1e-12).log10())
        .collect();
    let max = db.iter().cloned().fold(f32::MIN, f32::max);
    let first = db.iter().position(|d| *d > max - 35.0).unwrap_or(0);
    let last = db
        .iter()
        .rposition(|d| *d > max - 35.0)
        .unwrap_or(db.len() - 1);
    let start = (first.saturating_sub(5)) * frame;
    let end = ((last + 6) * frame).min(x.len());
    let mut audio = Audio::new(x[start..end].to_vec(), 16_000);
    audio.source = Some(path.to_path_buf());
    audio
}

/// `per_class` clips per label, spread over actors 01–16.
fn sample(clips: &[Clip], per_class: usize) -> Vec<&Clip> {
    let mut out = Vec::new();
    for label in ["calm", "angry", "panic"] {
        let of_label: Vec<&Clip> = clips.iter().filter(|c| c.label == label).collect();
        let step = (of_label.len() / per_class).max(1);
        out.extend(of_label.iter().step_by(step).take(per_class).copied());
    }
    out
}

fn class_means(items: &[(String, Evidence)]) -> BTreeMap<(String, &'static str), f64> {
    let mut sums: BTreeMap<(String, &'static str), (f64, usize)> = BTreeMap::new();
    for (label, ev) in items {
        for spec in FEATURES {
            if let Some(v) = ev.values.get(spec.name) {
                let e = sums.entry((label.clone(), spec.name)).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
    }
    sums.into_iter()
        .map(|(k, (s, n))| (k, s / n as f64))
        .collect()
}

#[test]
fn effort_and_pitch_separate_calm_from_angry_and_panic() {
    let Some(dir) = corpus() else { return };
    let clips = manifest(&dir);
    let mut ex = EvidenceExtractor::new(&FeatureConfig::default()).unwrap();
    let items: Vec<(String, Evidence)> = sample(&clips, 8)
        .into_iter()
        .map(|c| (c.label.clone(), ex.extract(&load_trimmed(&c.path)).unwrap()))
        .collect();
    let m = class_means(&items);
    for spec in FEATURES {
        let get = |l: &str| {
            m.get(&(l.to_string(), spec.name))
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!(
            "{:<36} calm {:>9.3}  angry {:>9.3}  panic {:>9.3}",
            spec.name,
            get("calm"),
            get("angry"),
            get("panic")
        );
    }
    let get = |l: &str, f: &'static str| m[&(l.to_string(), f)];
    for aroused in ["angry", "panic"] {
        assert!(
            get(aroused, "alpha_ratio_db") > get("calm", "alpha_ratio_db") + 2.0,
            "{aroused}: alpha ratio not above calm"
        );
        assert!(
            get(aroused, "hammarberg_db") < get("calm", "hammarberg_db") - 2.0,
            "{aroused}: Hammarberg index not below calm"
        );
        assert!(
            get(aroused, "spectral_slope_500_1500_db_per_khz")
                > get("calm", "spectral_slope_500_1500_db_per_khz"),
            "{aroused}: spectral tilt not flatter than calm"
        );
        assert!(
            get(aroused, "f0_median_st27") > get("calm", "f0_median_st27") + 2.0,
            "{aroused}: F0 not higher than calm"
        );
        assert!(
            get(aroused, "loudness_rise_db_per_s") > get("calm", "loudness_rise_db_per_s"),
            "{aroused}: loudness rises not faster than calm"
        );
    }
}

#[test]
fn louder_real_clip_changes_no_gain_invariant_feature() {
    let Some(dir) = corpus() else { return };
    let clips = manifest(&dir);
    let mut ex = EvidenceExtractor::new(&FeatureConfig::default()).unwrap();
    for clip in clips
        .iter()
        .filter(|c| c.label == "angry")
        .take(2)
        .chain(clips.iter().filter(|c| c.label == "calm").take(2))
    {
        let audio = load_trimmed(&clip.path);
        let gain = 10f32.powf(6.0 / 20.0);
        let mut louder = audio.clone();
        louder.samples.iter_mut().for_each(|x| *x *= gain);
        let (a, b) = (ex.extract(&audio).unwrap(), ex.extract(&louder).unwrap());
        let mut checked = 0;
        for spec in FEATURES.iter().filter(|f| f.gain_invariant) {
            match (a.values.get(spec.name), b.values.get(spec.name)) {
                (Some(x), Some(y)) => {
                    assert!(
                        (x - y).abs() <= spec.resolution,
                        "{}: {} changed with gain: {x} → {y}",
                        clip.path.display(),
                        spec.name
                    );
                    checked += 1;
                }
                (None, None) => {}
                (x, y) => panic!(
                    "{}: {} present in one copy only: {x:?} vs {y:?}",
                    clip.path.display(),
                    spec.name
                ),
            }
        }
        assert!(
            checked >= 25,
            "{}: only {checked} features measured",
            clip.path.display()
        );
    }
}

/// Cohen's d (pooled SD) of angry vs panic on actors 01–12, every clip: which evidence
/// separates the two high-arousal classes. Prints the ranked table (run with --nocapture).
#[test]
fn angry_vs_panic_effect_sizes_on_training_actors() {
    let Some(dir) = corpus() else { return };
    let clips = manifest(&dir);
    let mut ex = EvidenceExtractor::new(&FeatureConfig::default()).unwrap();
    let mut by_class: BTreeMap<&str, Vec<Evidence>> = BTreeMap::new();
    for c in clips
        .iter()
        .filter(|c| c.actor <= 12 && (c.label == "angry" || c.label == "panic"))
    {
        let ev = ex.extract(&load_trimmed(&c.path)).unwrap();
        by_class
            .entry(if c.label == "angry" { "angry" } else { "panic" })
            .or_default()
            .push(ev);
    }
    let mut table = Vec::new();
    for spec in FEATURES.iter().filter(|f| f.gain_invariant) {
        let vals = |l: &str| -> Vec<f64> {
            by_class[l]
                .iter()
                .filter_map(|e| e.values.get(spec.name).copied())
                .collect()
        };
        let (a, p) = (vals("angry"), vals("panic"));
        if a.len() < 10 || p.len() < 10 {
            continue;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let var = |v: &[f64]| {
            let m = mean(v);
            v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
        };
        let pooled = (((a.len() - 1) as f64 * var(&a) + (p.len() - 1) as f64 * var(&p))
            / (a.len() + p.len() - 2) as f64)
            .sqrt();
        let d = (mean(&p) - mean(&a)) / pooled.max(1e-12);
        table.push((spec.name, mean(&a), mean(&p), d, a.len(), p.len()));
    }
    table.sort_by(|x, y| y.3.abs().total_cmp(&x.3.abs()));
    println!("angry vs panic, actors 01–12 (d > 0: panic higher)");
    println!(
        "{:<36} {:>10} {:>10} {:>7} {:>5}",
        "feature", "angry", "panic", "d", "n"
    );
    for (name, a, p, d, na, np) in &table {
        println!("{name:<36} {a:>10.3} {p:>10.3} {d:>7.2} {na:>3}/{np}");
    }
    assert!(
        table.len() >= 25,
        "only {} features measured on both classes",
        table.len()
    );
    assert!(
        table[0].3.abs() > 0.5,
        "no evidence feature separates angry from panic (best |d| {:.2})",
        table[0].3
    );
}
