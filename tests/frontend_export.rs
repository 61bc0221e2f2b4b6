//! `camxuc models export-frontend`: an export holds only the encoder blocks asked for, gives
//! the same frames as the CTranslate2 model (Whisper base is stored in f16, so the f16 export
//! is exact too), the default model classifies through it with the same probabilities, and a
//! wrong request or a damaged export gets an error naming the folder or file.
//!
//! Skips with a printed reason when models/whisper-base/model.bin is absent.

use std::path::Path;
use std::process::Command;

mod common;

use camxuc::acoustic::frontend::Frontend;
use camxuc::acoustic::frontend_export::{
    export_frontend, load_exported, ExportDType, EXPORT_MANIFEST, EXPORT_WEIGHTS,
};
use camxuc::acoustic::whisper::{WhisperMel, MODEL_FILE};
use candle_core::Device;

const BIN: &str = env!("CARGO_BIN_EXE_camxuc");

/// A rising harmonic tone under a sin² envelope (2 s): speech-like input for the encoder.
fn voice() -> Vec<f32> {
    let sr = 16_000.0;
    let n = 32_000;
    (0..n)
        .map(|i| {
            let t = i as f64 / sr;
            let phase = 2.0 * std::f64::consts::PI * (140.0 * t + 15.0 * t * t);
            let x: f64 = (1..=6).map(|k| (k as f64 * phase).sin() / k as f64).sum();
            let env = (std::f64::consts::PI * t / 2.0).sin().powi(2);
            (0.2 * env * x) as f32
        })
        .collect()
}

fn frames(encoder_dir: &Path, blocks: usize) -> Vec<f32> {
    let dev = Device::Cpu;
    let Frontend::Whisper { encoder, .. } = Frontend::whisper(encoder_dir, blocks, -23.0, &dev)
        .unwrap_or_else(|e| panic!("{}: {e}", encoder_dir.display()))
    else {
        unreachable!("a Whisper folder gives a Whisper front end")
    };
    let mel = WhisperMel::new(80).log_mel(&voice());
    encoder
        .forward_to_block(&mel.to_tensor(&dev).unwrap(), blocks)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn an_export_gives_the_same_frames_at_a_sixth_of_the_size() {
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    let source = models.join("whisper-base");
    let tmp = tempfile::tempdir().unwrap();
    let reference = frames(&source, 3);
    for dtype in [ExportDType::F16, ExportDType::F32] {
        let out = tmp.path().join(format!("{dtype:?}"));
        let r = export_frontend(&source, 3, dtype, &out, false).unwrap();
        assert_eq!(r.manifest.blocks, 3);
        assert_eq!(r.manifest.source_blocks, 6);
        // Conv 1 and 2 (weight + bias each), the position encodings, 15 tensors per block
        // (k_proj has no bias), the final layer norm (2).
        assert_eq!(r.tensors, 4 + 1 + 3 * 15 + 2, "{dtype:?}");
        let bytes_per = if dtype == ExportDType::F16 { 2 } else { 4 };
        assert!(
            r.weights_bytes >= (r.parameters * bytes_per) as u64
                && r.weights_bytes < (r.parameters * bytes_per) as u64 + 64 * 1024,
            "{dtype:?}: {} bytes for {} parameters",
            r.weights_bytes,
            r.parameters
        );
        if dtype == ExportDType::F16 {
            assert!(
                (r.weights_bytes as f64) < r.source_bytes as f64 / 6.0,
                "{} of {} bytes",
                r.weights_bytes,
                r.source_bytes
            );
        }
        // The source stores f16, so both exports hold its values exactly.
        assert_eq!(frames(&out, 3), reference, "{dtype:?}: frames differ");
        // Fewer blocks than exported also load.
        assert_eq!(frames(&out, 2), frames(&source, 2), "{dtype:?}: 2 blocks");
        assert!(!out.join(format!("{EXPORT_WEIGHTS}.part")).exists());
    }
}

fn err<T>(r: Result<T, camxuc::acoustic::AcousticError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrong_requests_and_damaged_exports_are_refused_by_name() {
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    let source = models.join("whisper-base");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("edge");
    for blocks in [0, 7] {
        let e = err(export_frontend(
            &source,
            blocks,
            ExportDType::F16,
            &out,
            false,
        ));
        assert!(
            e.contains("whisper-base") && e.contains(&format!("--blocks {blocks}")),
            "{e}"
        );
    }
    let e = err(export_frontend(
        tmp.path(),
        3,
        ExportDType::F16,
        &out,
        false,
    ));
    assert!(e.contains(MODEL_FILE), "{e}");
    let e = err(export_frontend(&source, 3, ExportDType::F16, &source, true));
    assert!(e.contains("CTranslate2"), "{e}");

    export_frontend(&source, 2, ExportDType::F16, &out, false).unwrap();
    let e = err(export_frontend(&source, 3, ExportDType::F16, &out, false));
    assert!(e.contains("--force") && e.contains("edge"), "{e}");
    // A model needing more blocks than were exported.
    let e = err(load_exported(&out, 3, &Device::Cpu));
    assert!(
        e.contains("edge") && e.contains("exported with 2") && e.contains("--blocks 3"),
        "{e}"
    );
    export_frontend(&source, 3, ExportDType::F16, &out, true).unwrap();
    load_exported(&out, 3, &Device::Cpu).unwrap();

    // Truncated weights.
    let weights = out.join(EXPORT_WEIGHTS);
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(load_exported(&out, 3, &Device::Cpu));
    assert!(e.contains(EXPORT_WEIGHTS), "{e}");
    // A manifest that is not one.
    std::fs::write(&weights, &bytes).unwrap();
    std::fs::write(out.join(EXPORT_MANIFEST), b"{\"format\": 1}").unwrap();
    let e = err(load_exported(&out, 3, &Device::Cpu));
    assert!(e.contains(EXPORT_MANIFEST), "{e}");
}

/// The default model, its front end found in a models folder that holds only the export,
/// gives the same Decision probabilities as with the full CTranslate2 model.
#[test]
fn the_default_model_classifies_through_an_export_unchanged() {
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let edge = tmp.path().join("models");
    let out = Command::new(BIN)
        .args(["models", "export-frontend", "--out"])
        .arg(edge.join("whisper-base"))
        .env("CAMXUC_MODELS_DIR", &models)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clip =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio/speechlike_s16.wav");
    let probs = |dir: &Path| -> serde_json::Value {
        let o = Command::new(BIN)
            .args(["classify", "--llm", "none", "--format", "json"])
            .arg(&clip)
            .env("CAMXUC_MODELS_DIR", dir)
            .env_remove("CAMXUC_MODEL")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let d = if v.is_array() { v[0].clone() } else { v };
        d["acoustic_probs"].clone()
    };
    let full = probs(&models);
    assert!(full.is_object(), "{full}");
    assert_eq!(probs(&edge), full);
}
