//! Bad input through the real `camxuc` binary: every case gets a one-line `error:` naming the
//! file and the problem, a non-zero exit where the command cannot go on, and never a panic.
//! The library-level decode cases (hostile byte literals, worker crashes) are in
//! `audio_hostile.rs`; this file checks what a user sees. Inputs are written at test time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_camxuc");

/// `camxuc ARGS` in `cwd`, with a private models folder so no real model is touched.
fn camxuc(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("CAMXUC_MODELS_DIR", cwd.join("models"))
        .output()
        .expect("run camxuc")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The run failed with exit code `code` and exactly one `error:` line that contains every
/// one of `needles` (the file's name and the problem); no panic.
fn assert_one_line_error(o: &Output, code: i32, needles: &[&str]) -> String {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "panic:\n{err}");
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {:?}, stderr:\n{err}",
        o.status
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks '{n}': {}", lines[0]);
    }
    println!("{}", lines[0]);
    lines[0].to_string()
}

/// A 'speech-like' voice: harmonics of a gliding f0 with a 4 Hz syllable envelope, 0.2 s of
/// silence on each side.
fn speechlike(rate: u32, seconds: f64, f0: f64) -> Vec<f32> {
    let n = (seconds * rate as f64) as usize;
    let pad = (0.2 * rate as f64) as usize;
    let mut phase = 0.0f64;
    let mut out = vec![0.0f32; pad];
    for i in 0..n {
        let t = i as f64 / rate as f64;
        let f = f0 * (1.0 + 0.15 * (2.0 * std::f64::consts::PI * 0.7 * t).sin());
        phase += 2.0 * std::f64::consts::PI * f / rate as f64;
        let env = 0.55 + 0.45 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
        let mut v = 0.0;
        for k in 1..=12 {
            if f * k as f64 >= rate as f64 / 2.0 {
                break;
            }
            v += (k as f64 * phase).sin() / k as f64;
        }
        out.push((0.25 * env * v) as f32);
    }
    out.extend(std::iter::repeat_n(0.0, pad));
    out
}

/// 16-bit PCM WAV with `channels` copies of the signal (each a little quieter).
fn write_wav16(path: &Path, rate: u32, channels: u16, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        for c in 0..channels {
            let v = s * (1.0 - 0.1 * c as f32);
            w.write_sample((v.clamp(-1.0, 1.0) * 32_000.0) as i16)
                .unwrap();
        }
    }
    w.finalize().unwrap();
}

fn write_wav_f32(path: &Path, rate: u32, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// A WAV header for format tag `tag` (e.g. 0x0031, GSM 6.10: symphonia has no decoder).
fn wav_with_format_tag(tag: u16, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&tag.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // channels
    b.extend_from_slice(&8_000u32.to_le_bytes()); // rate
    b.extend_from_slice(&1_625u32.to_le_bytes()); // byte rate
    b.extend_from_slice(&65u16.to_le_bytes()); // block align
    b.extend_from_slice(&0u16.to_le_bytes()); // bits per sample
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    b
}

fn pseudo_random_bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (s >> 16) as u8
        })
        .collect()
}

#[test]
fn bad_audio_files_each_get_one_clear_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good.wav");
    write_wav16(&good, 16_000, 1, &speechlike(16_000, 1.0, 150.0));
    let good_bytes = std::fs::read(&good).unwrap();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.wav", vec![], "file is empty"),
        (
            "truncated_header.wav",
            good_bytes[..20].to_vec(),
            "not a readable audio file",
        ),
        (
            "random.wav",
            pseudo_random_bytes(4096, 7),
            "not a readable audio file",
        ),
        (
            "notes.txt",
            b"Calm speech, angry speech.\n".repeat(30),
            "not a readable audio file",
        ),
        ("gsm.wav", wav_with_format_tag(0x0031, &[0u8; 650]), ""),
    ];
    for (name, bytes, problem) in &cases {
        std::fs::write(d.join(name), bytes).unwrap();
        let o = camxuc(d, &["features", name]);
        let line = assert_one_line_error(&o, 1, &[name, problem]);
        if *name == "gsm.wav" {
            assert!(
                line.contains("unsupported audio codec")
                    || line.contains("not a readable audio file"),
                "{line}"
            );
        }
    }

    write_wav16(&d.join("zero.wav"), 16_000, 1, &[]);
    assert_one_line_error(
        &camxuc(d, &["features", "zero.wav"]),
        1,
        &["zero.wav", "zero length"],
    );
    write_wav16(&d.join("silent.wav"), 16_000, 1, &vec![0.0; 32_000]);
    assert_one_line_error(
        &camxuc(d, &["features", "silent.wav"]),
        1,
        &["silent.wav", "silent"],
    );
    assert_one_line_error(
        &camxuc(d, &["features", "absent.wav"]),
        1,
        &["absent.wav", "cannot read file"],
    );

    for (name, bad) in [
        ("nan.wav", f32::NAN),
        ("inf.wav", f32::INFINITY),
        ("neg_inf.wav", f32::NEG_INFINITY),
    ] {
        let mut x = speechlike(16_000, 1.0, 150.0);
        x[8_000] = bad;
        write_wav_f32(&d.join(name), 16_000, &x);
        assert_one_line_error(
            &camxuc(d, &["features", name]),
            1,
            &[name, "NaN/Inf", "0.500 s"],
        );
    }
}

#[test]
fn telephone_rate_and_six_channel_audio_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_wav16(
        &d.join("phone_8k.wav"),
        8_000,
        1,
        &speechlike(8_000, 1.5, 140.0),
    );
    write_wav16(
        &d.join("surround_6ch.wav"),
        48_000,
        6,
        &speechlike(48_000, 1.5, 140.0),
    );
    let o = camxuc(
        d,
        &[
            "features",
            "--format",
            "json",
            "phone_8k.wav",
            "surround_6ch.wav",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for clip in v.as_array().unwrap() {
        let dur = clip["duration_s"].as_f64().unwrap();
        assert!((dur - 1.9).abs() < 0.02, "{clip}");
        let f0 = clip["evidence"]["values"]["f0_median_hz"].as_f64().unwrap();
        assert!((f0 - 140.0).abs() < 15.0, "{} f0 {f0}", clip["file"]);
    }
}

#[test]
fn a_batch_of_20_with_5_bad_gives_15_results_5_failures_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut names = Vec::new();
    for i in 0..20 {
        let name = format!("clip{i:02}.wav");
        let p = d.join(&name);
        // Five bad ones of different kinds, spread through the batch (clip16 is missing).
        match i {
            0 => std::fs::write(&p, b"").unwrap(),
            4 => std::fs::write(&p, pseudo_random_bytes(2_000, i)).unwrap(),
            8 => write_wav16(&p, 16_000, 1, &vec![0.0; 16_000]),
            12 => std::fs::write(&p, b"not audio at all\n").unwrap(),
            16 => {}
            _ => write_wav16(
                &p,
                16_000,
                1,
                &speechlike(16_000, 0.8, 110.0 + 5.0 * i as f64),
            ),
        }
        names.push(name);
    }
    let mut args = vec!["features", "--format", "json"];
    args.extend(names.iter().map(String::as_str));
    let o = camxuc(d, &args);
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(2), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 20);
    // Input order is kept; the failures are recorded with their reason.
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["file"], names[i].as_str());
        if i % 4 == 0 {
            let e = item["error"].as_str().unwrap_or_else(|| panic!("{item}"));
            assert!(e.contains(&names[i]), "{e}");
        } else {
            assert!(
                item["evidence"]["values"]
                    .as_object()
                    .is_some_and(|m| !m.is_empty()),
                "{item}"
            );
        }
    }
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        5,
        "{err}"
    );
}

#[test]
fn a_one_hour_file_is_refused_up_front_by_features() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hour.wav");
    // 16 kHz 16-bit mono, one hour (115 MB), written streaming in one-second blocks.
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let second: Vec<i16> = speechlike(16_000, 0.6, 150.0)
        .iter()
        .map(|&v| (v * 32_000.0) as i16)
        .collect();
    let mut w = hound::WavWriter::create(&p, spec).unwrap();
    for _ in 0..3_600 {
        let mut block = w.get_i16_writer(second.len() as u32);
        for &s in &second {
            block.write_sample(s);
        }
        block.flush().unwrap();
    }
    w.finalize().unwrap();
    let (o, max_rss_kb) = run_measured(dir.path(), &["features", "hour.wav"]);
    assert_one_line_error(
        &o,
        1,
        &[
            "hour.wav",
            "3600.0 s is longer than the whole-file limit of 600 s",
            "windows",
        ],
    );
    // Refused from the header: nowhere near the 230 MB the decoded hour would take.
    assert!(max_rss_kb < 200_000, "peak RSS {max_rss_kb} kB");
}

/// Run camxuc and return its output and peak resident memory (kB, the worker included).
// Reaped with libc::wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_measured(cwd: &Path, args: &[&str]) -> (Output, i64) {
    use std::io::Read;
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("CAMXUC_MODELS_DIR", cwd.join("models"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        out_pipe.read_to_end(&mut v).map(|_| v)
    });
    let mut err = Vec::new();
    err_pipe.read_to_end(&mut err).unwrap();
    let out = out_reader.join().unwrap().unwrap();
    // wait4 (not Child::wait) to get this child's own rusage, not every child of the test.
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    let exit = std::process::ExitStatus::from_raw(status);
    (
        Output {
            status: exit,
            stdout: out,
            stderr: err,
        },
        usage.ru_maxrss,
    )
}

use std::os::unix::process::ExitStatusExt;

#[test]
fn synth_without_espeak_ng_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args([
            "synth",
            "--out",
            "corpus",
            "--per-class",
            "1",
            "--speakers",
            "1",
        ])
        .current_dir(dir.path())
        .env("PATH", dir.path().join("no-such-bin"))
        .output()
        .unwrap();
    assert_one_line_error(&o, 1, &["espeak-ng not found", "apt-get install espeak-ng"]);
}

/// Minimal GGUF v3: one string key and one f32 tensor of 1024 elements.
fn tiny_gguf() -> Vec<u8> {
    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // metadata keys
    string(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes()); // type: string
    string(&mut b, "llama");
    string(&mut b, "token_embd.weight");
    b.extend_from_slice(&1u32.to_le_bytes()); // dims
    b.extend_from_slice(&1024u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // F32
    b.extend_from_slice(&0u64.to_le_bytes()); // offset
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(std::iter::repeat_n(0u8, 4096));
    b
}

#[test]
fn models_add_refuses_truncated_and_non_gguf_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let whole = tiny_gguf();
    std::fs::write(d.join("whole.gguf"), &whole).unwrap();
    let ok = camxuc(d, &["models", "add", "whole.gguf"]);
    assert!(
        ok.status.success(),
        "the untruncated file must register: {}",
        stderr(&ok)
    );
    std::fs::write(d.join("half.gguf"), &whole[..whole.len() - 2048]).unwrap();
    assert_one_line_error(
        &camxuc(d, &["models", "add", "half.gguf"]),
        1,
        &["half.gguf", "truncated"],
    );
    std::fs::write(d.join("header_only.gguf"), &whole[..30]).unwrap();
    assert_one_line_error(
        &camxuc(d, &["models", "add", "header_only.gguf"]),
        1,
        &["header_only.gguf", "not a GGUF"],
    );
    std::fs::write(d.join("notes.gguf"), b"shopping list: rice, fish sauce\n").unwrap();
    assert_one_line_error(
        &camxuc(d, &["models", "add", "notes.gguf"]),
        1,
        &["notes.gguf", "not a GGUF"],
    );
    assert_one_line_error(
        &camxuc(d, &["models", "add", "absent.gguf"]),
        1,
        &["absent.gguf"],
    );
}

/// A small labelled corpus (3 speakers × 3 classes × 2 clips; class = pitch range) and a
/// logmel model trained on it once for every test that needs a real model directory.
struct Corpus {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn corpus() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("clips")).unwrap();
        let mut train = String::from("path,label,speaker\n");
        let mut val = String::from("path,label,speaker\n");
        for (ci, label) in ["calm", "angry", "panic"].iter().enumerate() {
            for s in 0..4 {
                for k in 0..2 {
                    let f0 = 110.0 + 70.0 * ci as f64 + 6.0 * s as f64 + 3.0 * k as f64;
                    let rel = format!("clips/{label}_s{s}_{k}.wav");
                    write_wav16(&root.join(&rel), 16_000, 1, &speechlike(16_000, 0.8, f0));
                    let row = format!("{rel},{label},spk{s}\n");
                    if s < 3 {
                        train.push_str(&row)
                    } else {
                        val.push_str(&row)
                    }
                }
            }
        }
        std::fs::write(root.join("train.csv"), train).unwrap();
        std::fs::write(root.join("val.csv"), val).unwrap();
        let o = camxuc(
            &root,
            &[
                "train",
                "--manifest",
                "train.csv",
                "--val-manifest",
                "val.csv",
                "--out",
                "model",
                "--frontend",
                "logmel",
                "--epochs",
                "3",
                "--augment",
                "0",
            ],
        );
        assert!(
            o.status.success(),
            "training the test model failed: {}",
            stderr(&o)
        );
        Corpus { _dir: dir, root }
    })
}

/// Bad manifests, through both commands that read one: the error names the manifest (and the
/// line where there is one).
/// `camxuc train` fits the fusion of routed clips on its own held-out predictions and writes
/// it beside the model (fusion.json, with what it was fitted on and how it did per
/// condition); a rules file with a typo is refused before any training, naming the file.
#[test]
fn train_writes_a_fitted_fusion_and_refuses_a_bad_rules_file_up_front() {
    let c = corpus();
    let fusion: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.root.join("model/fusion.json")).unwrap())
            .unwrap();
    let fitted_on = fusion["fitted_on"].as_str().unwrap();
    assert!(fitted_on.contains("held-out predictions"), "{fitted_on}");
    assert!(fusion["params"]["acoustic_weight"]
        .as_f64()
        .unwrap()
        .is_finite());
    let conditions = |fusion: &serde_json::Value| -> Vec<String> {
        fusion["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["condition"].as_str().unwrap().to_string())
            .collect()
    };
    // The shared model is trained without perturbed copies (`--augment 0`).
    assert_eq!(conditions(&fusion), ["clean"]);

    let d = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/vi-default.toml"),
    )
    .unwrap();
    assert!(shipped.contains("alpha_ratio_db_z < -0.5"));
    std::fs::write(
        d.path().join("typo.toml"),
        shipped.replacen("alpha_ratio_db_z < -0.5", "alpha_ratoi_db_z < -0.5", 1),
    )
    .unwrap();
    let train = c.root.join("train.csv");
    let o = camxuc(
        d.path(),
        &[
            "train",
            "--manifest",
            train.to_str().unwrap(),
            "--out",
            "m",
            "--frontend",
            "logmel",
            "--rules",
            "typo.toml",
        ],
    );
    assert_one_line_error(&o, 1, &["typo.toml"]);
    assert!(!d.path().join("m").exists(), "nothing trained");

    // Another "site" as a shifted condition: its clips are predicted, never trained on; a
    // missing clip is skipped with its reason, a manifest with an unknown label is refused.
    std::fs::create_dir_all(d.path().join("site/clips")).unwrap();
    let mut site = String::from("path,label,speaker\n");
    for (ci, label) in ["calm", "angry", "panic"].iter().enumerate() {
        for k in 0..2 {
            let f0 = 100.0 + 75.0 * ci as f64 + 5.0 * k as f64;
            let rel = format!("clips/{label}_{k}.wav");
            write_wav16(
                &d.path().join("site").join(&rel),
                16_000,
                1,
                &speechlike(16_000, 0.8, f0),
            );
            site.push_str(&format!("{rel},{label},site{k}\n"));
        }
    }
    site.push_str("clips/gone.wav,calm,site0\n");
    std::fs::write(d.path().join("site/labels.csv"), site).unwrap();
    let val = c.root.join("val.csv");
    let o = camxuc(
        d.path(),
        &[
            "train",
            "--manifest",
            train.to_str().unwrap(),
            "--val-manifest",
            val.to_str().unwrap(),
            "--out",
            "m",
            "--frontend",
            "logmel",
            "--epochs",
            "3",
            "--augment",
            "1",
            "--shifted-manifest",
            "site/labels.csv",
        ],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("gone.wav"), "the missing clip is named: {err}");
    let fusion: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("m/fusion.json")).unwrap())
            .unwrap();
    assert_eq!(conditions(&fusion), ["clean", "perturbed", "other_corpus"]);
    let other = fusion["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["condition"] == "other_corpus")
        .expect("the site is a condition of the fit");
    assert_eq!(other["clips"], 6, "{other}");
    std::fs::write(
        d.path().join("site/bad.csv"),
        "path,label\nclips/calm_0.wav,happy\n",
    )
    .unwrap();
    let o = camxuc(
        d.path(),
        &[
            "train",
            "--manifest",
            train.to_str().unwrap(),
            "--out",
            "m2",
            "--frontend",
            "logmel",
            "--shifted-manifest",
            "site/bad.csv",
        ],
    );
    assert_one_line_error(&o, 1, &["bad.csv", "happy"]);
}

#[test]
fn bad_manifests_name_the_manifest_and_line_in_train_and_eval() {
    let c = corpus();
    let d = &c.root;
    let ok_rows =
        "path,label,speaker\nclips/calm_s0_0.wav,calm,spk0\nclips/angry_s0_0.wav,angry,spk0\n";
    let cases = [
        (
            "missing_files.csv",
            format!("{ok_rows}clips/nope.wav,panic,spk1\n"),
            vec!["missing_files.csv", "missing", "line 4", "clips/nope.wav"],
        ),
        (
            "unknown_label.csv",
            format!("{ok_rows}clips/calm_s1_0.wav,happy,spk1\n"),
            vec!["unknown_label.csv", "line 4", "unknown label 'happy'"],
        ),
        (
            "duplicate.csv",
            format!("{ok_rows}clips/calm_s0_0.wav,calm,spk0\n"),
            vec!["duplicate.csv", "duplicate row", "line 2", "line 4"],
        ),
        (
            "bad_csv.csv",
            format!("{ok_rows}\"clips/calm_s1_0.wav,calm\n"),
            vec!["bad_csv.csv", "CSV"],
        ),
        (
            "ragged.csv",
            format!("{ok_rows}clips/calm_s1_0.wav,calm,spk1,extra\n"),
            vec!["ragged.csv", "line 4"],
        ),
        (
            "no_label_column.csv",
            "path,speaker\nclips/calm_s0_0.wav,spk0\n".to_string(),
            vec!["no_label_column.csv", "'label' is missing"],
        ),
        (
            "header_only.csv",
            "path,label,speaker\n".to_string(),
            vec!["header_only.csv", "no data rows"],
        ),
    ];
    for (name, text, needles) in &cases {
        std::fs::write(d.join(name), text).unwrap();
        let train = camxuc(
            d,
            &[
                "train",
                "--manifest",
                name,
                "--out",
                "m_unused",
                "--frontend",
                "logmel",
                "--epochs",
                "1",
            ],
        );
        assert_one_line_error(&train, 1, needles);
        let eval = camxuc(d, &["eval", "--manifest", name, "--model", "model"]);
        if *name == "missing_files.csv" {
            // eval is a batch: it goes on past the missing clip, records it, and exits 2.
            let err = stderr(&eval);
            assert_eq!(eval.status.code(), Some(2), "{err}");
            assert!(!err.contains("panicked"), "{err}");
            let failed: Vec<&str> = err.lines().filter(|l| l.starts_with("failed:")).collect();
            assert_eq!(failed.len(), 1, "{err}");
            assert!(
                failed[0].contains("clips/nope.wav") && failed[0].contains("No such file"),
                "{err}"
            );
        } else {
            assert_one_line_error(&eval, 1, needles);
        }
    }
    assert_one_line_error(
        &camxuc(d, &["eval", "--manifest", "absent.csv", "--model", "model"]),
        1,
        &["absent.csv", "not found"],
    );
}

#[test]
fn a_model_directory_of_another_configuration_is_refused_by_eval() {
    let c = corpus();
    let d = &c.root;
    let meta_text = std::fs::read_to_string(d.join("model/model.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta_text).unwrap();
    let variant = |name: &str, text: String| {
        let m = d.join(name);
        std::fs::create_dir_all(&m).unwrap();
        for f in std::fs::read_dir(d.join("model")).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), m.join(f.file_name())).unwrap();
        }
        std::fs::write(m.join("model.json"), text).unwrap();
    };
    let mut newer = meta.clone();
    newer["format_version"] = 99.into();
    variant("newer_model", newer.to_string());
    let mut relabelled = meta.clone();
    relabelled["labels"] = serde_json::json!(["calm", "angry", "panic", "sad"]);
    variant("relabelled_model", relabelled.to_string());
    variant("garbage_model", "{ this is not json".into());
    std::fs::create_dir_all(d.join("empty_dir")).unwrap();

    let run = |model: &str| camxuc(d, &["eval", "--manifest", "val.csv", "--model", model]);
    assert_one_line_error(
        &run("newer_model"),
        1,
        &["newer_model", "format_version 99", "retrain"],
    );
    assert_one_line_error(
        &run("relabelled_model"),
        1,
        &["relabelled_model", "model.json"],
    );
    assert_one_line_error(
        &run("garbage_model"),
        1,
        &["garbage_model", "model.json", "cannot read"],
    );
    assert_one_line_error(
        &run("empty_dir"),
        1,
        &["empty_dir", "not a camxuc model directory"],
    );
    assert_one_line_error(&run("absent_dir"), 1, &["absent_dir"]);
    // And the real one still works on the same manifest.
    let o = run("model");
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Offline guarantee: analysis needs no network. Runs `features` in a network namespace with
/// no interface but a downed loopback; skipped (with the reason) where unshare is not allowed.
#[test]
fn features_work_inside_a_network_namespace_with_no_network() {
    let probe = Command::new("unshare").args(["-n", "true"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "SKIP: `unshare -n` not permitted here: {}",
                stderr(&o).trim()
            );
            return;
        }
        Err(e) => {
            println!("SKIP: unshare not available: {e}");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    write_wav16(
        &dir.path().join("clip.wav"),
        16_000,
        1,
        &speechlike(16_000, 1.0, 150.0),
    );
    let o = Command::new("unshare")
        .args(["-n", BIN, "features", "--format", "json", "clip.wav"])
        .current_dir(dir.path())
        .env("CAMXUC_MODELS_DIR", dir.path().join("models"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v[0]["evidence"]["values"]["f0_median_hz"]
            .as_f64()
            .is_some(),
        "{v}"
    );
    assert!(
        !stderr(&o).contains("without process isolation"),
        "the decode worker must run offline too"
    );
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Labels and evidence are health data: the model directory `train` creates is closed to
/// other users (its files sit in a 0o700 folder).
#[test]
fn the_model_directory_is_readable_by_its_owner_only() {
    let c = corpus();
    let m = c.root.join("model");
    assert_eq!(mode(&m) & 0o077, 0, "model dir mode {:o}", mode(&m));
    assert!(m.join("train_evidence.jsonl").is_file());
}

/// `eval --json` output must be created 0o600. Known failure: src/main.rs writes it with
/// `std::fs::write` (mode 0o666 & ~umask); the fix is `camxuc::private_fs::write_private`.
#[test]
fn eval_json_is_readable_by_its_owner_only() {
    let c = corpus();
    let out = c.root.join("eval_report.json");
    let o = camxuc(
        &c.root,
        &[
            "eval",
            "--manifest",
            "val.csv",
            "--model",
            "model",
            "--json",
            "eval_report.json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&out) & 0o077, 0, "eval json mode {:o}", mode(&out));
}

/// Found by fuzz/gguf: a 65-byte GGUF whose tensor dimensions multiply past u64 made
/// `models add` panic (overflow) in its size check.
#[test]
fn models_add_on_a_gguf_with_overflowing_dimensions_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad/gguf_dims_overflow.gguf");
    std::fs::copy(&src, dir.path().join("overflow.gguf")).unwrap();
    assert_one_line_error(
        &camxuc(dir.path(), &["models", "add", "overflow.gguf"]),
        1,
        &["overflow.gguf"],
    );
}

/// Found by fuzz/gguf (session 2): a 61-byte GGUF whose tensor shape [.., 2^64-1, ..] passed
/// `models add`'s check but overflowed the element count in the LLM loader's extent check.
#[test]
fn loading_a_gguf_with_an_overflowing_shape_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bad/gguf_shape_overflow_open.gguf");
    std::fs::copy(&src, dir.path().join("shape.gguf")).unwrap();
    assert_one_line_error(
        &camxuc(dir.path(), &["models", "bench", "shape.gguf"]),
        1,
        &["shape.gguf"],
    );
}

/// Found by fuzz/audio_decode: a 2.3 KB FLAC whose metadata makes symphonia 0.5.5's FLAC
/// demuxer ask for 4.2 GB at probe time. The decode worker's memory limit turns that into
/// this file's error; the CLI goes on and says so in one line.
#[test]
fn a_flac_metadata_allocation_bomb_is_that_files_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bad/flac_metadata_alloc_bomb.flac");
    std::fs::copy(&src, dir.path().join("bomb.flac")).unwrap();
    assert_one_line_error(
        &camxuc(dir.path(), &["features", "bomb.flac"]),
        1,
        &["bomb.flac", "decoder crashed"],
    );
}
