//! A one-hour recording read through the windowed API keeps memory bounded. Its own test
//! binary (one test) so the process's peak RSS is this test's alone. The 115 MB file is
//! written at test time in a temp dir, streaming.

use camxuc::audio::{self, LoadOptions, TARGET_RATE};

/// Peak resident set of this process, kB (Linux `VmHWM`).
fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_one_hour_file_is_read_in_windows_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hour.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    // One second of a 200 Hz tone whose level rises through the second, repeated.
    let second: Vec<i16> = (0..16_000)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            (8_000.0 * t * (2.0 * std::f32::consts::PI * 200.0 * t).sin()) as i16
        })
        .collect();
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for _ in 0..3_600 {
        let mut block = w.get_i16_writer(second.len() as u32);
        for &s in &second {
            block.write_sample(s);
        }
        block.flush().unwrap();
    }
    w.finalize().unwrap();

    // Whole-file loading refuses it and points at the windowed reader.
    let e = audio::load(&path, &LoadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("open_windows"), "{e}");

    let mut n = 0usize;
    let mut total = 0u64;
    let mut peak_abs = 0f32;
    for (i, win) in audio::open_windows(&path, 30.0, &LoadOptions::default())
        .unwrap()
        .enumerate()
    {
        let win = win.unwrap_or_else(|e| panic!("window {i}: {e}"));
        assert!(
            (win.offset_s - 30.0 * i as f64).abs() < 1e-6,
            "window {i} at {}",
            win.offset_s
        );
        assert!(win.samples.len() <= 30 * TARGET_RATE as usize);
        peak_abs = win.samples.iter().fold(peak_abs, |m, v| m.max(v.abs()));
        total += win.samples.len() as u64;
        n += 1;
    }
    assert_eq!(n, 120);
    assert_eq!(total, 3_600 * 16_000);
    assert!(peak_abs > 0.2, "decoded signal level {peak_abs}");
    // The decoded hour is 230 MB of f32; one window is 1.9 MB.
    match peak_rss_kb() {
        Some(kb) => {
            println!("peak RSS of the test process: {kb} kB");
            assert!(
                kb < 120_000,
                "peak RSS {kb} kB: the hour was held in memory"
            );
        }
        None => println!("SKIP memory check: /proc/self/status has no VmHWM"),
    }
}
