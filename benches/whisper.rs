//! Speed of the Whisper front end: log-mel and the first three encoder blocks on 3 s of audio
//! (and, in a direct line, all six: what the protocol's deeper candidates would cost)
//! (skipped with a printed reason when models/whisper-base is not installed), and whether Q8
//! would help: one encoder-sized linear layer in f32 against candle's Q8_0 `QMatMul`.
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench whisper` (candle's CPU matmul takes its
//! thread count from RAYON_NUM_THREADS). A direct line per figure is printed before
//! criterion's measurement.

use std::path::Path;
use std::time::Instant;

use camxuc::acoustic::whisper::{load_ct2, WhisperEncoder, WhisperMel};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SR: usize = 16_000;
const SECONDS: f64 = 3.0;
const BLOCKS: usize = 3;

fn bench_encoder(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/whisper-base");
    if !dir.join("model.bin").is_file() {
        eprintln!(
            "whisper encoder bench skipped: {} has no model.bin (camxuc models fetch whisper-base)",
            dir.display()
        );
        return;
    }
    let device = Device::Cpu;
    let started = Instant::now();
    let (cfg, vb) = load_ct2(&dir, &device).expect("load");
    let encoder = WhisperEncoder::load_blocks(&cfg, vb.clone(), BLOCKS).expect("encoder");
    println!(
        "load ({BLOCKS} blocks): {:.3} s",
        started.elapsed().as_secs_f64()
    );

    let audio: Vec<f32> = (0..(SECONDS * SR as f64) as usize)
        .map(|n| 0.2 * (2.0 * std::f32::consts::PI * 180.0 * n as f32 / SR as f32).sin())
        .collect();
    let mel = WhisperMel::new(80);
    let spec = mel.log_mel(&audio).to_tensor(&device).expect("tensor");
    encoder.forward_to_block(&spec, BLOCKS).expect("warm-up");

    // The direct real-time-factor line (mel + encoder), as before criterion's figures.
    let time = |reps: usize, f: &dyn Fn()| {
        let started = Instant::now();
        for _ in 0..reps {
            f();
        }
        started.elapsed().as_secs_f64() / reps as f64
    };
    let mel_s = time(20, &|| {
        std::hint::black_box(mel.log_mel(&audio));
    });
    let enc_s = time(5, &|| {
        std::hint::black_box(encoder.forward_to_block(&spec, BLOCKS).expect("forward"));
    });
    println!(
        "threads {}: log-mel {:.2} ms, encoder {BLOCKS} blocks {:.1} ms for {SECONDS} s of audio \
         ({:.0}x real time for mel + encoder)",
        candle_core::utils::get_num_threads(),
        mel_s * 1e3,
        enc_s * 1e3,
        SECONDS / (mel_s + enc_s)
    );

    // What a deeper front end would cost (the protocol's `--blocks 6` candidates): all six.
    let encoder6 = WhisperEncoder::load_blocks(&cfg, vb, 6).expect("encoder");
    encoder6.forward_to_block(&spec, 6).expect("warm-up");
    let enc6_s = time(5, &|| {
        std::hint::black_box(encoder6.forward_to_block(&spec, 6).expect("forward"));
    });
    println!(
        "threads {}: encoder 6 blocks {:.1} ms for {SECONDS} s of audio ({:.2}x the {BLOCKS} blocks)",
        candle_core::utils::get_num_threads(),
        enc6_s * 1e3,
        enc6_s / enc_s
    );

    let mut group = c.benchmark_group("whisper");
    group.sample_size(10);
    group.throughput(Throughput::Elements(audio.len() as u64));
    group.bench_function("log_mel/3s", |b| {
        b.iter(|| std::hint::black_box(mel.log_mel(&audio)))
    });
    group.bench_function(format!("encoder_{BLOCKS}_blocks/3s"), |b| {
        b.iter(|| std::hint::black_box(encoder.forward_to_block(&spec, BLOCKS).expect("forward")))
    });
    group.finish();
}

/// Would Q8 help? One encoder-sized linear layer ([150 frames, 512] × [512, 2048], the first
/// feed-forward matrix) in f32 against candle's Q8_0 `QMatMul`.
fn bench_linear_f32_against_q8(c: &mut Criterion) {
    let device = Device::Cpu;
    let weight = Tensor::randn(0f32, 0.05, (2048, 512), &device).expect("w");
    let x = Tensor::randn(0f32, 1.0, (1, 150, 512), &device).expect("x");
    let f32_layer = candle_nn::Linear::new(weight.clone(), None);
    let q8 = QMatMul::from_qtensor(QTensor::quantize(&weight, GgmlDType::Q8_0).expect("q8"))
        .expect("qmatmul");
    let reference = f32_layer.forward(&x).expect("f32");
    let err = (q8.forward(&x).expect("q8") - &reference)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("err");
    println!(
        "threads {}: linear 150x512x2048, Q8_0 max |diff| against f32 {err:.3}",
        candle_core::utils::get_num_threads()
    );

    let mut group = c.benchmark_group("linear_150x512x2048");
    group.bench_function("f32", |b| {
        b.iter(|| std::hint::black_box(f32_layer.forward(&x).expect("f32")))
    });
    group.bench_function("q8_0", |b| {
        b.iter(|| std::hint::black_box(q8.forward(&x).expect("q8")))
    });
    group.finish();
}

criterion_group!(benches, bench_encoder, bench_linear_f32_against_q8);
criterion_main!(benches);
