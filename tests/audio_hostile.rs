//! Bad and hostile inputs: each gives its own clear error naming the file (or, for damage
//! after a valid header, a decode up to the damage with a warning); none panics or aborts the
//! test process. Hostile files are byte literals written to a temp dir.

use std::path::{Path, PathBuf};

use camxuc::audio::{self, AudioError, LoadOptions};

fn worker() -> LoadOptions {
    LoadOptions {
        worker_exe: Some(env!("CARGO_BIN_EXE_camxuc").into()),
        ..LoadOptions::default()
    }
}

fn in_process() -> LoadOptions {
    LoadOptions {
        isolate: false,
        ..LoadOptions::default()
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A canonical 44-byte-header PCM WAV. `data_len` is what the header declares.
fn wav(
    rate: u32,
    channels: u16,
    bits: u16,
    format_tag: u16,
    data: &[u8],
    data_len: u32,
) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36u32.saturating_add(data_len)).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&format_tag.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * block as u32).to_le_bytes());
    v.extend_from_slice(&block.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    v.extend_from_slice(data);
    v
}

fn pcm16(seconds: f64, rate: u32) -> Vec<u8> {
    (0..(seconds * rate as f64) as usize)
        .flat_map(|i| ((0.3 * (i as f32 * 0.05).sin() * 32767.0) as i16).to_le_bytes())
        .collect()
}

/// A 33-byte ID3v2.4 tag whose extended header sets a "restrictions" byte that reaches
/// `unreachable!()` in symphonia-metadata 0.5.5 (symphonia #485).
fn id3_unreachable() -> Vec<u8> {
    let mut v = b"ID3\x04\x00\x40\x00\x00\x00\x17".to_vec(); // v2.4, extended header, size 23
    v.extend_from_slice(&[0, 0, 0, 6, 1, 0x10, 1, 0x40]); // ext header: restrictions = 0x40
    v.resize(33, 0);
    v
}

/// A WAV whose LIST/INFO entry declares 3.75 GiB: symphonia 0.5.5 allocates it up front
/// (like #497/#508), which aborts the process under a memory limit.
fn wav_allocation_bomb() -> Vec<u8> {
    let mut v = wav(16_000, 1, 16, 1, &[], 0);
    v.truncate(36); // keep RIFF + fmt, then a LIST chunk instead of data
    v[4..8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    v.extend_from_slice(b"LIST");
    v.extend_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    v.extend_from_slice(b"INFOINAM");
    v.extend_from_slice(&0xF000_0000u32.to_le_bytes());
    v.extend_from_slice(b"abcd");
    v
}

fn expect_err(p: &Path, opts: &LoadOptions) -> AudioError {
    match audio::load(p, opts) {
        Ok(a) => panic!(
            "{} decoded ({} samples, warnings {:?}) but should fail",
            p.display(),
            a.samples.len(),
            a.warnings
        ),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&*p.to_string_lossy()),
                "message does not name the file: {msg}"
            );
            assert!(!msg.contains('\n'), "message is not one line: {msg}");
            println!("{msg}");
            e
        }
    }
}

#[test]
fn bad_files_get_their_own_clear_error_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = wav(16_000, 1, 16, 1, &pcm16(0.5, 16_000), 16_000);
    let mut random = Vec::new();
    let mut s = 12345u32;
    for _ in 0..4096 {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        random.push((s >> 16) as u8);
    }
    for opts in [worker(), in_process()] {
        let empty = write(d, "empty.wav", b"");
        assert!(matches!(
            expect_err(&empty, &opts),
            AudioError::EmptyFile { .. }
        ));
        let header = write(d, "truncated_header.wav", &good[..20]);
        assert!(matches!(
            expect_err(&header, &opts),
            AudioError::NotAudio { .. }
        ));
        let noise = write(d, "random.wav", &random);
        assert!(matches!(
            expect_err(&noise, &opts),
            AudioError::NotAudio { .. }
        ));
        let text = write(
            d,
            "notes.wav",
            "This is a text file, not audio.\n".repeat(20).as_bytes(),
        );
        assert!(matches!(
            expect_err(&text, &opts),
            AudioError::NotAudio { .. }
        ));
        let missing = d.join("does_not_exist.wav");
        assert!(matches!(expect_err(&missing, &opts), AudioError::Io { .. }));
        let zero = write(d, "zero.wav", &wav(16_000, 1, 16, 1, &[], 0));
        assert!(matches!(
            expect_err(&zero, &opts),
            AudioError::ZeroLength { .. }
        ));
        let unknown_codec = write(d, "gsm.wav", &wav(8_000, 1, 16, 0x0031, &[0; 650], 650));
        let e = expect_err(&unknown_codec, &opts);
        assert!(
            matches!(
                e,
                AudioError::NotAudio { .. } | AudioError::UnsupportedCodec { .. }
            ),
            "{e:?}"
        );
        // NaN in a float WAV: rejected, with where it is.
        let mut f = Vec::new();
        for i in 0..1600 {
            let v = if i == 800 { f32::NAN } else { 0.1 };
            f.extend_from_slice(&v.to_le_bytes());
        }
        let nan = write(d, "nan.wav", &wav(16_000, 1, 32, 3, &f, f.len() as u32));
        match expect_err(&nan, &opts) {
            AudioError::NonFinite { first_at_s, .. } => assert!((first_at_s - 0.05).abs() < 1e-6),
            e => panic!("expected NonFinite, got {e:?}"),
        }
    }
}

#[test]
fn id3_unreachable_panic_is_that_files_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "id3_only.wav", &id3_unreachable());
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 33);
    for opts in [worker(), in_process()] {
        let e = expect_err(&p, &opts);
        // Fixed upstream after 0.5.5; then it is a plain "not audio" error.
        assert!(
            matches!(
                e,
                AudioError::DecoderCrashed { .. } | AudioError::NotAudio { .. }
            ),
            "{e:?}"
        );
    }
    // The worker pool recovers: the next file decodes.
    let good = write(
        dir.path(),
        "good.wav",
        &wav(16_000, 1, 16, 1, &pcm16(0.5, 16_000), 16_000),
    );
    assert_eq!(audio::load(&good, &worker()).unwrap().samples.len(), 8000);
}

#[test]
fn huge_allocation_kills_only_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = write(dir.path(), "bomb.wav", &wav_allocation_bomb());
    let opts = LoadOptions {
        worker_memory_limit: 512 << 20,
        ..worker()
    };
    let e = expect_err(&bomb, &opts);
    assert!(
        matches!(
            e,
            AudioError::DecoderCrashed { .. } | AudioError::NotAudio { .. }
        ),
        "{e:?}"
    );
    let good = write(
        dir.path(),
        "good.wav",
        &wav(16_000, 1, 16, 1, &pcm16(0.5, 16_000), 16_000),
    );
    let a = audio::load(&good, &opts).unwrap();
    assert_eq!(a.samples.len(), 8000);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
}

#[test]
fn truncated_and_overdeclared_wavs_decode_to_the_damage_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let full = wav(16_000, 1, 16, 1, &pcm16(1.0, 16_000), 32_000);
    // Cut at 0.6 s of the declared 1 s.
    let cut = write(dir.path(), "cut.wav", &full[..44 + 19_200]);
    // Declares ~1 GB of data but holds 0.25 s.
    let absurd = write(
        dir.path(),
        "absurd.wav",
        &wav(16_000, 1, 16, 1, &pcm16(0.25, 16_000), 0x3FFF_FFF0),
    );
    for opts in [worker(), in_process()] {
        let a = audio::load(&cut, &opts).unwrap();
        assert!((a.duration_s() - 0.6).abs() < 0.01, "{}", a.duration_s());
        assert!(
            a.warnings.iter().any(|w| w.contains("truncated")),
            "{:?}",
            a.warnings
        );
        let b = audio::load(&absurd, &opts).unwrap();
        assert!((b.duration_s() - 0.25).abs() < 0.01, "{}", b.duration_s());
        assert!(
            b.warnings.iter().any(|w| w.contains("truncated")),
            "{:?}",
            b.warnings
        );
    }
    // With nothing after the header, the absurd size is a zero-length error.
    let hollow = write(
        dir.path(),
        "hollow.wav",
        &wav(16_000, 1, 16, 1, &[], 0x3FFF_FFF0),
    );
    assert!(matches!(
        expect_err(&hollow, &worker()),
        AudioError::ZeroLength { .. }
    ));
}

#[cfg(unix)]
#[test]
fn a_hung_worker_is_killed_after_the_timeout_and_a_broken_one_falls_back() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "good.wav",
        &wav(16_000, 1, 16, 1, &pcm16(0.5, 16_000), 16_000),
    );
    // Says hello like a worker, then never answers.
    let hang = write(
        dir.path(),
        "hang.sh",
        b"#!/bin/sh\nprintf 'CXDEC\\000\\001\\n'\nexec sleep 30\n",
    );
    // Exits at once: not a worker at all.
    let broken = write(dir.path(), "broken.sh", b"#!/bin/sh\nexit 3\n");
    for p in [&hang, &broken] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let opts = LoadOptions {
        worker_exe: Some(hang),
        timeout_s: 1.0,
        ..LoadOptions::default()
    };
    match expect_err(&good, &opts) {
        AudioError::DecoderCrashed { detail, .. } => {
            assert!(detail.contains("no progress"), "{detail}")
        }
        e => panic!("expected a timeout, got {e:?}"),
    }
    let opts = LoadOptions {
        worker_exe: Some(broken),
        ..LoadOptions::default()
    };
    let a = audio::load(&good, &opts).unwrap();
    assert_eq!(a.samples.len(), 8000);
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("without process isolation")),
        "{:?}",
        a.warnings
    );
}
