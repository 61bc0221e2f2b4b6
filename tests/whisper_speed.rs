//! Timing of the Whisper front end, printed, never asserted (benchmarks own speed claims).
//! Run: `RAYON_NUM_THREADS=2 cargo test --test whisper_speed -- --ignored --nocapture`
//! (candle's CPU matmul takes its thread count from RAYON_NUM_THREADS).

use std::path::Path;
use std::time::Instant;

use camxuc::acoustic::whisper::{load_ct2, WhisperEncoder, WhisperMel};
use candle_core::Device;

#[test]
#[ignore = "timing report; run explicitly with --ignored --nocapture"]
fn encoder_time_for_three_seconds_at_three_blocks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/whisper-base");
    if !dir.join("model.bin").is_file() {
        eprintln!("SKIPPED: {} has no model.bin", dir.display());
        return;
    }
    let device = Device::Cpu;
    let started = Instant::now();
    let (cfg, vb) = load_ct2(&dir, &device).expect("load");
    let encoder = WhisperEncoder::load_blocks(&cfg, vb, 3).expect("encoder");
    println!("load (3 blocks): {:.3} s", started.elapsed().as_secs_f64());

    let seconds = 3.0;
    let audio: Vec<f32> = (0..(seconds * 16_000.0) as usize)
        .map(|n| 0.2 * (2.0 * std::f32::consts::PI * 180.0 * n as f32 / 16_000.0).sin())
        .collect();
    let mel = WhisperMel::new(80);
    let started = Instant::now();
    let reps = 20;
    for _ in 0..reps {
        std::hint::black_box(mel.log_mel(&audio));
    }
    let mel_s = started.elapsed().as_secs_f64() / reps as f64;
    let spec = mel.log_mel(&audio).to_tensor(&device).expect("tensor");
    encoder.forward_to_block(&spec, 3).expect("warm-up");
    let started = Instant::now();
    let reps = 5;
    for _ in 0..reps {
        std::hint::black_box(encoder.forward_to_block(&spec, 3).expect("forward"));
    }
    let enc_s = started.elapsed().as_secs_f64() / reps as f64;
    println!(
        "threads {}: log-mel {:.2} ms, encoder 3 blocks {:.1} ms for {seconds} s of audio \
         ({:.0}x real time for mel + encoder)",
        candle_core::utils::get_num_threads(),
        mel_s * 1e3,
        enc_s * 1e3,
        seconds / (mel_s + enc_s)
    );
}

/// Would Q8 help? One encoder-sized linear layer ([150 frames, 512] × [512, 2048], the first
/// feed-forward matrix) in f32 against candle's Q8_0 `QMatMul`.
#[test]
#[ignore = "timing report; run explicitly with --ignored --nocapture"]
fn linear_layer_f32_against_q8() {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Module, Tensor};
    let device = Device::Cpu;
    let weight = Tensor::randn(0f32, 0.05, (2048, 512), &device).expect("w");
    let x = Tensor::randn(0f32, 1.0, (1, 150, 512), &device).expect("x");
    let f32_layer = candle_nn::Linear::new(weight.clone(), None);
    let q8 = QMatMul::from_qtensor(QTensor::quantize(&weight, GgmlDType::Q8_0).expect("q8"))
        .expect("qmatmul");
    let time = |f: &dyn Fn() -> Tensor| {
        f();
        let started = Instant::now();
        for _ in 0..20 {
            std::hint::black_box(f());
        }
        started.elapsed().as_secs_f64() / 20.0 * 1e3
    };
    let t_f32 = time(&|| f32_layer.forward(&x).expect("f32"));
    let t_q8 = time(&|| q8.forward(&x).expect("q8"));
    let reference = f32_layer.forward(&x).expect("f32");
    let err = (q8.forward(&x).expect("q8") - &reference)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("err");
    println!(
        "threads {}: linear 150x512x2048 f32 {t_f32:.2} ms, Q8_0 {t_q8:.2} ms (max |diff| {err:.3})",
        candle_core::utils::get_num_threads()
    );
}
