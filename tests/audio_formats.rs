//! Decoding, mono mixing and resampling on real encoded files (tests/fixtures/audio) and on
//! tones written at test time. Decoding goes through the real `camxuc` decode worker.

use std::path::{Path, PathBuf};

use camxuc::audio::{self, LoadOptions, TARGET_RATE};

fn opts() -> LoadOptions {
    LoadOptions {
        worker_exe: Some(env!("CARGO_BIN_EXE_camxuc").into()),
        ..LoadOptions::default()
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audio")
        .join(name)
}

fn load(path: &Path) -> camxuc::Audio {
    let a = audio::load(path, &opts()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        a.warnings
            .iter()
            .all(|w| !w.contains("without process isolation")),
        "the decode worker did not run: {:?}",
        a.warnings
    );
    assert_eq!(a.sample_rate, TARGET_RATE);
    a
}

fn write_wav(path: &Path, rate: u32, channels: u16, frames: &[Vec<f32>]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for f in frames {
        for &s in f {
            w.write_sample((s * 32767.0).round() as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

fn sine(freq: f64, rate: u32, secs: f64, amp: f32) -> Vec<f32> {
    (0..(rate as f64 * secs) as usize)
        .map(|i| amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() as f32)
        .collect()
}

/// Frequency from rising zero crossings over the middle of the signal (edges skipped).
fn measured_freq(x: &[f32], rate: u32) -> f64 {
    let m = &x[x.len() / 10..x.len() * 9 / 10];
    let ups: Vec<f64> = m
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
        .map(|(i, w)| i as f64 + (-w[0] / (w[1] - w[0])) as f64)
        .collect();
    let (first, last) = (ups[0], ups[ups.len() - 1]);
    (ups.len() - 1) as f64 * rate as f64 / (last - first)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Best lag of `b` against `a` within ±max_lag, and the normalised correlation there.
fn align(a: &[f32], b: &[f32], max_lag: i64) -> (i64, f64) {
    let mut best = (0, f64::MIN);
    for lag in -max_lag..=max_lag {
        let (mut dot, mut ea, mut eb) = (0.0f64, 0.0f64, 0.0f64);
        for (i, &x) in a.iter().enumerate() {
            let j = i as i64 + lag;
            if j >= 0 && (j as usize) < b.len() {
                let y = b[j as usize] as f64;
                dot += x as f64 * y;
                ea += (x as f64).powi(2);
                eb += y * y;
            }
        }
        let c = dot / (ea.sqrt() * eb.sqrt() + 1e-12);
        if c > best.1 {
            best = (lag, c);
        }
    }
    best
}

#[test]
fn lossless_formats_decode_to_their_wav_twin() {
    let twin = load(&fixture("speechlike_s16.wav"));
    assert_eq!(twin.samples.len(), 16_000);
    // Tolerances: one 16-bit step for the finer formats; for u8, two 8-bit steps (sox dithers
    // when it reduces the bit depth).
    for (name, tol) in [
        ("speechlike_s24.wav", 1e-4),
        ("speechlike_s32.wav", 1e-4),
        ("speechlike_f32.wav", 1e-4),
        ("speechlike.flac", 1e-4),
        ("speechlike_u8.wav", 2.0 / 127.0),
    ] {
        let a = load(&fixture(name));
        assert_eq!(a.samples.len(), twin.samples.len(), "{name}");
        let d = max_abs_diff(&a.samples, &twin.samples);
        assert!(d <= tol, "{name}: max difference {d} > {tol}");
        assert!(a.warnings.is_empty(), "{name}: {:?}", a.warnings);
    }
}

#[test]
fn lossy_formats_match_their_wav_twin_after_alignment() {
    let twin = load(&fixture("speechlike_s16.wav"));
    for name in ["speechlike.mp3", "speechlike.ogg"] {
        let a = load(&fixture(name));
        // Encoders may add up to a frame of padding; the length must still be about 1 s.
        assert!(
            (a.duration_s() - 1.0).abs() < 0.1,
            "{name}: {} s",
            a.duration_s()
        );
        let (lag, corr) = align(&twin.samples, &a.samples, 2000);
        assert!(corr > 0.95, "{name}: correlation {corr:.3} at lag {lag}");
        println!("{name}: lag {lag} samples, correlation {corr:.4}");
    }
}

#[test]
fn stereo_fixture_is_the_average_of_its_channels() {
    let left = load(&fixture("speechlike_s16.wav"));
    let stereo = load(&fixture("speechlike_stereo_s16.wav"));
    // Right channel is a 440 Hz sine at -12 dB (amplitude 10^(-12/20)).
    let right = sine(440.0, 16_000, 1.0, 10f32.powf(-12.0 / 20.0));
    let expected: Vec<f32> = left
        .samples
        .iter()
        .zip(&right)
        .map(|(l, r)| (l + r) / 2.0)
        .collect();
    // sox dithered both channels to 16 bits, so allow a few LSBs per sample.
    let d = max_abs_diff(&stereo.samples, &expected);
    assert!(d < 4e-3, "stereo mix differs from (L+R)/2 by up to {d}");
    let rms = (stereo
        .samples
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f32>()
        / 16_000.0)
        .sqrt();
    assert!(rms < 1e-3, "stereo mix differs from (L+R)/2 by rms {rms}");
}

#[test]
fn six_channels_mix_to_their_mean() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("six.wav");
    // Channel k carries the same tone scaled by (k - 2.5) / 10: the mean is zero,
    // so any channel left out or weighted wrong shows up.
    let tone = sine(300.0, 16_000, 0.5, 0.8);
    let frames: Vec<Vec<f32>> = tone
        .iter()
        .map(|&s| (0..6).map(|k| s * (k as f32 - 2.5) / 10.0).collect())
        .collect();
    write_wav(&p, 16_000, 6, &frames);
    let a = load(&p);
    assert_eq!(a.samples.len(), 8000);
    let peak = a.samples.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(peak < 1e-3, "opposite channels did not cancel: peak {peak}");
    // And a stereo file with one silent channel gives half the signal.
    let q = dir.path().join("half.wav");
    write_wav(
        &q,
        16_000,
        2,
        &tone.iter().map(|&s| vec![s, 0.0]).collect::<Vec<_>>(),
    );
    let h = load(&q);
    let d = max_abs_diff(
        &h.samples,
        &tone.iter().map(|s| s / 2.0).collect::<Vec<_>>(),
    );
    assert!(d < 1e-3, "L+silence should be L/2, differs by {d}");
}

#[test]
fn resampling_preserves_a_1khz_tone() {
    let dir = tempfile::tempdir().unwrap();
    for rate in [8_000u32, 44_100, 48_000] {
        let p = dir.path().join(format!("tone_{rate}.wav"));
        write_wav(
            &p,
            rate,
            1,
            &sine(1000.0, rate, 1.0, 0.5)
                .into_iter()
                .map(|s| vec![s])
                .collect::<Vec<_>>(),
        );
        let a = load(&p);
        assert_eq!(
            a.samples.len(),
            16_000,
            "{rate} Hz: 1 s gives 16000 samples"
        );
        let f = measured_freq(&a.samples, TARGET_RATE);
        assert!(
            (f - 1000.0).abs() < 1.0,
            "{rate} Hz input: tone measured at {f:.3} Hz"
        );
        let mid = &a.samples[2000..14_000];
        let peak = mid.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            (peak - 0.5).abs() < 0.01,
            "{rate} Hz input: amplitude {peak}"
        );
    }
}

#[test]
fn worker_and_in_process_decoding_agree() {
    let in_proc = LoadOptions {
        isolate: false,
        ..LoadOptions::default()
    };
    for name in [
        "speechlike.flac",
        "speechlike.ogg",
        "speechlike_stereo_s16.wav",
    ] {
        let a = load(&fixture(name));
        let b = audio::load(&fixture(name), &in_proc).unwrap();
        assert_eq!(a.samples, b.samples, "{name}");
    }
}

#[test]
fn windows_cover_the_file_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("long.wav");
    let x = sine(250.0, 48_000, 5.0, 0.3);
    write_wav(
        &p,
        48_000,
        1,
        &x.iter().map(|&s| vec![s]).collect::<Vec<_>>(),
    );
    let whole = load(&p);
    let windows: Vec<camxuc::Audio> = audio::open_windows(&p, 2.0, &opts())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let lens: Vec<usize> = windows.iter().map(|w| w.samples.len()).collect();
    assert_eq!(lens, vec![32_000, 32_000, 16_000]);
    let offsets: Vec<f64> = windows.iter().map(|w| w.offset_s).collect();
    assert_eq!(offsets, vec![0.0, 2.0, 4.0]);
    let joined: Vec<f32> = windows
        .iter()
        .flat_map(|w| w.samples.iter().copied())
        .collect();
    assert_eq!(joined, whole.samples);
    // The whole-file cap does not apply to windows, and does apply to load().
    let capped = LoadOptions {
        max_duration_s: 3.0,
        ..opts()
    };
    assert!(matches!(
        audio::load(&p, &capped),
        Err(audio::AudioError::TooLong { .. })
    ));
    assert_eq!(audio::open_windows(&p, 2.0, &capped).unwrap().count(), 3);
    // A reader dropped half-way leaves the worker pool usable.
    let mut early = audio::open_windows(&p, 1.0, &opts()).unwrap();
    assert!(early.next().unwrap().is_ok());
    drop(early);
    assert_eq!(load(&p).samples, whole.samples);
}
