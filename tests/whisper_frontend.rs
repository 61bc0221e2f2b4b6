//! The Whisper front end against references computed by scripts/whisper_reference.py
//! (openai-whisper's mel filters and log-mel recipe, CTranslate2 4.x's Whisper encoder).
//!
//! Tests that need the weights skip with a printed reason when models/whisper-base/model.bin
//! is absent (fetch: see `camxuc models fetch`).

use std::path::{Path, PathBuf};

mod common;

use camxuc::acoustic::whisper::{load_ct2, WhisperEncoder, WhisperMel, N_FRAMES_30S};
use candle_core::{Device, IndexOp, Tensor};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/whisper");

fn model_dir() -> Option<PathBuf> {
    common::whisper_models_or_skip().map(|root| root.join("whisper-base"))
}

fn fixture(name: &str) -> Vec<f32> {
    let path = Path::new(FIXTURES).join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The reference script's signal: a rising-pitch (120 → 160 Hz) harmonic tone, 8 harmonics
/// at 1/k, under a sin² envelope, amplitude 0.25 — computed in f64 like numpy, then f32.
fn synthetic_voice(n_samples: usize) -> Vec<f32> {
    let sr = 16_000.0;
    let dur = n_samples as f64 / sr;
    (0..n_samples)
        .map(|n| {
            let t = n as f64 / sr;
            let phase = 2.0 * std::f64::consts::PI * (120.0 * t + 20.0 * t * t);
            let x: f64 = (1..=8).map(|k| (k as f64 * phase).sin() / k as f64).sum();
            let env = (std::f64::consts::PI * t / dur).sin().powi(2);
            (0.25 * env * x) as f32
        })
        .collect()
}

/// (max |a − b|, mean |a − b|)
fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    let max = d.iter().copied().fold(0.0, f32::max);
    (max, d.iter().sum::<f32>() / d.len() as f32)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// First `n` frames of a `[1, frames, d]` tensor, flattened.
fn head(x: &Tensor, n: usize) -> Vec<f32> {
    x.i((0, 0..n))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("head")
}

fn time_mean(x: &Tensor) -> Vec<f32> {
    x.mean(1)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("mean")
}

#[test]
fn mel_filters_equal_whisper_assets() {
    let reference = fixture("mel_filters_80.f32");
    let ours = WhisperMel::new(80).dense_filters();
    let (max, _) = diff(&ours, &reference);
    let peak = reference.iter().copied().fold(0.0, f32::max);
    println!("mel filters: max |diff| {max:.3e} (peak weight {peak:.4})");
    assert!(max <= 1e-6 * peak.max(1.0), "filters differ by {max}");
}

#[test]
fn log_mel_matches_whisper_recipe_unpadded() {
    let mel = WhisperMel::new(80).log_mel(&synthetic_voice(16_000));
    assert_eq!((mel.n_mels, mel.n_frames), (80, 100));
    let (max, mean) = diff(&mel.data, &fixture("mel_trimmed.f32"));
    println!("log-mel (100 frames): max |diff| {max:.3e}, mean {mean:.3e}");
    assert!(max < 2e-3 && mean < 1e-4, "max {max}, mean {mean}");
}

#[test]
fn log_mel_matches_whisper_recipe_padded_to_30s() {
    let mel = WhisperMel::new(80).log_mel_padded(&synthetic_voice(16_000), N_FRAMES_30S);
    assert_eq!(mel.n_frames, N_FRAMES_30S);
    // The fixture keeps the first 120 frames: the signal, its end and the start of the padding.
    let ours: Vec<f32> = (0..80)
        .flat_map(|m| mel.data[m * N_FRAMES_30S..m * N_FRAMES_30S + 120].to_vec())
        .collect();
    let (max, mean) = diff(&ours, &fixture("mel_padded_head.f32"));
    println!("log-mel (30 s, first 120 frames): max |diff| {max:.3e}, mean {mean:.3e}");
    assert!(max < 2e-3 && mean < 1e-4, "max {max}, mean {mean}");
}

#[test]
fn encoder_matches_ctranslate2_on_the_30s_input() {
    let Some(dir) = model_dir() else { return };
    let device = Device::Cpu;
    let (cfg, vb) = load_ct2(&dir, &device).expect("load model");
    assert_eq!(
        (
            cfg.vocab_size,
            cfg.d_model,
            cfg.encoder_layers,
            cfg.decoder_layers,
            cfg.num_mel_bins
        ),
        (51865, 512, 6, 6, 80)
    );
    let encoder = WhisperEncoder::load(&cfg, vb).expect("encoder");
    // Feed the reference script's own features so this compares the encoder alone.
    let mel = WhisperMel::new(80).log_mel_padded(&synthetic_voice(16_000), N_FRAMES_30S);
    let out = encoder
        .forward(&mel.to_tensor(&device).expect("tensor"))
        .expect("forward");
    assert_eq!(out.dims(), &[1, 1500, 512]);
    let (max_mean, _) = diff(&time_mean(&out), &fixture("encoder_full_mean.f32"));
    let (max_head, mean_head) = diff(&head(&out, 8), &fixture("encoder_full_head.f32"));
    println!(
        "encoder 30 s vs CTranslate2: time-mean max |diff| {max_mean:.3e}; first 8 frames max \
         {max_head:.3e}, mean {mean_head:.3e}"
    );
    // Weights are fp16 but both sides compute in f32; output values reach ~20.
    assert!(max_mean < 1e-2 && max_head < 5e-2 && mean_head < 5e-3);
}

#[test]
fn encoder_runs_over_the_real_length_like_ctranslate2() {
    let Some(dir) = model_dir() else { return };
    let device = Device::Cpu;
    let (cfg, vb) = load_ct2(&dir, &device).expect("load model");
    let encoder = WhisperEncoder::load(&cfg, vb).expect("encoder");
    let audio = synthetic_voice(16_000);
    let mel = WhisperMel::new(80).log_mel(&audio);
    let out = encoder
        .forward(&mel.to_tensor(&device).expect("tensor"))
        .expect("forward");
    assert_eq!(out.dims(), &[1, 50, 512]);
    let (max_mean, _) = diff(&time_mean(&out), &fixture("encoder_trimmed_mean.f32"));
    let (max_head, mean_head) = diff(&head(&out, 8), &fixture("encoder_trimmed_head.f32"));
    println!(
        "encoder 1 s unpadded vs CTranslate2: time-mean max |diff| {max_mean:.3e}; first 8 \
         frames max {max_head:.3e}, mean {mean_head:.3e}"
    );
    assert!(max_mean < 1e-2 && max_head < 5e-2 && mean_head < 5e-3);

    // Unpadded and padded runs see different context, so they differ, but stay alike.
    let padded = WhisperMel::new(80).log_mel_padded(&audio, N_FRAMES_30S);
    let block3_short = encoder
        .forward_to_block(&mel.to_tensor(&device).expect("tensor"), 3)
        .expect("block 3");
    let block3_padded = encoder
        .forward_to_block(&padded.to_tensor(&device).expect("tensor"), 3)
        .expect("block 3");
    let short_frames = block3_short.i((0, 0..50)).expect("frames");
    let padded_frames = block3_padded.i((0, 0..50)).expect("frames");
    let c = cosine(
        &time_mean(&short_frames.unsqueeze(0).expect("u")),
        &time_mean(&padded_frames.unsqueeze(0).expect("u")),
    );
    let (max, mean) = diff(&head(&block3_short, 50), &head(&block3_padded, 50));
    println!("block 3, 50 frames, unpadded vs padded: cosine of means {c:.4}, max |diff| {max:.3}, mean {mean:.3}");
    assert!(
        c > 0.9,
        "unpadded and padded block-3 features diverge: cosine {c}"
    );
}

#[test]
fn decoder_weights_load_into_candle_whisper_and_detect_language_like_ctranslate2() {
    use candle_transformers::models::whisper::model::Whisper;
    let Some(dir) = model_dir() else { return };
    let device = Device::Cpu;
    let (cfg, vb) = load_ct2(&dir, &device).expect("load model");
    let encoder = WhisperEncoder::load(&cfg, vb.clone()).expect("encoder");
    let mut whisper = Whisper::load(&vb, cfg.clone()).expect("candle-transformers Whisper");
    let mel = WhisperMel::new(80).log_mel(&synthetic_voice(16_000));
    let audio_features = encoder
        .forward(&mel.to_tensor(&device).expect("t"))
        .expect("enc");
    // Language detection, as CTranslate2 does it: the logits after <|startoftranscript|>
    // (50258), restricted to the language tokens, softmaxed.
    let tokens = Tensor::new(&[[50258u32]], &device).expect("tokens");
    let hidden = whisper
        .decoder
        .forward(&tokens, &audio_features, true)
        .expect("decoder");
    let logits = whisper.decoder.final_linear(&hidden).expect("logits");
    let (first_lang, n_langs) = (50259u32, 99);
    let lang_logits = logits
        .i((0, 0))
        .and_then(|l| l.narrow(0, first_lang as usize, n_langs));
    let probs: Vec<f32> = lang_logits
        .and_then(|l| candle_nn::ops::softmax_last_dim(&l))
        .and_then(|p| p.to_vec1())
        .expect("probabilities");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(FIXTURES).join("meta.json")).expect("meta.json"),
    )
    .expect("meta.json parses");
    for expected in meta["detected_languages_trimmed"]
        .as_array()
        .expect("languages")
    {
        let id = expected["id"].as_u64().expect("id") as u32;
        let want = expected["probability"].as_f64().expect("p") as f32;
        let got = probs[(id - first_lang) as usize];
        println!(
            "{}: ours {got:.4}, CTranslate2 {want:.4}",
            expected["token"]
        );
        assert!((got - want).abs() < 2e-3, "language {id}: {got} vs {want}");
    }
}

/// Training reads the head's frames and the pooled blocks of the unfamiliarity reference from
/// one encoder pass (`block_frames` with the head's block last): those frames are bit for bit
/// the ones `frames` gives at inference.
#[test]
fn one_pass_block_frames_give_the_frames_of_the_head() {
    let Some(dir) = model_dir() else { return };
    let device = Device::Cpu;
    let frontend =
        camxuc::acoustic::frontend::Frontend::whisper(&dir, 3, -23.0, &device).expect("front end");
    let audio = synthetic_voice(24_000);
    let log_mel = camxuc::features::LogMel {
        data: Vec::new(),
        n_frames: 0,
        n_mels: 80,
    };
    let alone = frontend.frames(&audio, &log_mel, &device).expect("frames");
    let mut states = frontend
        .block_frames(&audio, &log_mel, &[1, 2, 3, 3], &device)
        .expect("block frames");
    assert_eq!(states.len(), 4);
    let last = states.pop().unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(alone.dims(), last.dims());
    assert_eq!(flat(&alone), flat(&last));
    assert_eq!(flat(&states[2]), flat(&last));
    assert_ne!(flat(&states[0]), flat(&last));
}

/// A voiced span longer than Whisper's 30 s (a whole recording classified as one clip) is
/// encoded in equal windows of at most 30 s and every frame is kept: as many frames as its
/// windows give one by one, not the first 30 s only; `frames` and `block_frames` agree on it.
#[test]
fn a_span_longer_than_30_s_is_encoded_whole_in_windows() {
    let Some(dir) = model_dir() else { return };
    let device = Device::Cpu;
    let frontend =
        camxuc::acoustic::frontend::Frontend::whisper(&dir, 3, -23.0, &device).expect("front end");
    let log_mel = camxuc::features::LogMel {
        data: Vec::new(),
        n_frames: 0,
        n_mels: 80,
    };
    let audio = synthetic_voice(65 * 16_000);
    let whole = frontend.frames(&audio, &log_mel, &device).expect("frames");
    // Three windows of 65/3 s each.
    let per_window: usize = audio
        .chunks((65 * 16_000usize).div_ceil(3))
        .map(|w| {
            frontend
                .frames(w, &log_mel, &device)
                .expect("window")
                .dims()[0]
        })
        .sum();
    let first_30_s = frontend
        .frames(&audio[..30 * 16_000], &log_mel, &device)
        .expect("30 s")
        .dims()[0];
    assert_eq!(whole.dims()[0], per_window);
    assert!(
        whole.dims()[0] > 2 * first_30_s,
        "{whole:?} vs {first_30_s}"
    );
    let blocks = frontend
        .block_frames(&audio, &log_mel, &[1, 3], &device)
        .expect("block frames");
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(flat(&blocks[1]), flat(&whole));
    assert_eq!(blocks[0].dims(), whole.dims());
}
