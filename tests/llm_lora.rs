//! LoRA task adaptation on the real default GGUF (SmolLM2-135M): the f32 trainable forward
//! agrees with the quantised decoder, training lowers the loss deterministically, adapters
//! round-trip through safetensors bit-exactly.
#![cfg(feature = "research")] // LoRA is research (`--features research`)

mod llm_common;

use camxuc::llm::lora::{CachedPrompt, LoraAdapters, LoraConfig, LoraTask, TrainOptions};
use camxuc::llm::{bench_rules, ChatTemplate, GgufFile, LlmModel, LoadOptions};
use camxuc::math::{argmax, log_softmax};
use camxuc::LabelSet;
use llm_common::{case, clear_cases, default_model};

/// The f32 path (Q4_1 weights dequantised exactly, f32 activations) against the quantised
/// decoder on the same weights, as stored (Q4_1) and re-quantised to Q8_0 (the default),
/// which both quantise activations to 8 bits inside each product. Measured on this prompt
/// (the ten likeliest next tokens' log-probabilities): 0.29 nats (Q4_1) and 0.16 nats
/// (Q8_0) at most, the size the project measured for activation quantisation elsewhere
/// (0.41 nats for 256-wide blocks, `LoadOptions::packed_kernels`). The bound 0.6 nats with
/// the same next token still catches structural errors (a wrong rotary layout, head
/// grouping or norm moves them by whole nats and changes the token).
#[test]
fn f32_forward_matches_quantised_decoder() {
    let Some(path) = default_model() else { return };
    let file = GgufFile::open(&path).expect("open GGUF");
    let tokenizer = file.tokenizer().expect("tokenizer");
    let text = ChatTemplate::for_file(&file).render(
        "You label the emotion of short speech clips.",
        "Pitch much higher than usual, fast speech, trembling voice.",
        "Label:",
    );
    let ids = tokenizer.encode(&text, true).expect("encode");
    let lora = LoraTask::new(&file, &LabelSet::default(), &[], 4).expect("f32 model");
    let f32_logits = log_softmax(&lora.model().next_token_logits(&ids).expect("f32 forward"));
    let mut diffs = Vec::new();
    for (what, requantize) in [("Q4_1 as stored", false), ("re-quantised Q8_0", true)] {
        let options = LoadOptions {
            requantize_q8: requantize,
            ..llm_common::load_options()
        };
        let mut q = LlmModel::load(&file, &options).expect("load quantised");
        let q_logits = log_softmax(&q.forward(&ids).expect("quantised forward"));
        assert_eq!(f32_logits.len(), q_logits.len());
        let mut top: Vec<usize> = (0..q_logits.len()).collect();
        top.sort_by(|&a, &b| q_logits[b].total_cmp(&q_logits[a]));
        let diff = top[..10]
            .iter()
            .map(|&i| (f32_logits[i] - q_logits[i]).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{what}: max |Δ log p| over the 10 likeliest tokens = {diff:.4}");
        assert_eq!(argmax(&f32_logits), argmax(&q_logits), "{what}: next token");
        diffs.push((what, diff));
    }
    for (what, diff) in diffs {
        assert!(diff < 0.6, "{what}: log-probabilities differ by {diff}");
    }
}

/// The split the training relies on (prefix keys/values once, suffix from a cached lower
/// layer) gives the same label logits as the whole prompt in one pass: f32 against f32, so
/// only summation order differs.
#[test]
fn cached_prefix_and_lower_layers_equal_one_pass() {
    let Some(path) = default_model() else { return };
    let file = GgufFile::open(&path).expect("open GGUF");
    let tokenizer = file.tokenizer().expect("tokenizer");
    let labels = LabelSet::default();
    let task = LoraTask::new(&file, &labels, &bench_rules(), 4).expect("task");
    let c = &clear_cases()[2];
    let suffix = task.suffix_ids(&case(c)).expect("suffix");
    let n = task.model().shape().n_layer;
    let split = task.cache_prompt(&suffix, n - 2).expect("cache");
    let split = task.label_logits(&split, None, true).expect("logits");
    let split: Vec<f32> = split.to_vec1().expect("vec");
    let prompt = camxuc::llm::PromptBuilder::new(
        ChatTemplate::for_file(&file),
        camxuc::llm::PromptLanguage::English,
        &labels,
        &bench_rules(),
    );
    let mut all = tokenizer.encode(prompt.prefix(), true).expect("encode");
    all.extend_from_slice(&suffix);
    let whole = task.model().next_token_logits(&all).expect("one pass");
    for (i, &t) in task.label_tokens().iter().enumerate() {
        let d = (whole[t as usize] - split[i]).abs();
        assert!(
            d < 1e-3,
            "label {i}: one pass {} vs split {}",
            whole[t as usize],
            split[i]
        );
    }
}

fn tiny_config() -> (LoraConfig, TrainOptions) {
    (
        LoraConfig {
            rank: 4,
            alpha: 8.0,
            top_layers: 1,
            ..LoraConfig::default()
        },
        TrainOptions {
            epochs: 3,
            learning_rate: 5e-3,
            batch: 3,
            ..TrainOptions::default()
        },
    )
}

/// The three clear-cut clips, cached below the adapted layer.
fn cached_cases(task: &LoraTask, from_layer: usize) -> Vec<(CachedPrompt, usize)> {
    let labels = LabelSet::default();
    clear_cases()
        .iter()
        .map(|c| {
            let ids = task.suffix_ids(&case(c)).expect("suffix");
            let y = labels.index_of(c.label).expect("label");
            (task.cache_prompt(&ids, from_layer).expect("cache"), y)
        })
        .collect()
}

#[test]
fn training_lowers_the_loss_and_is_deterministic() {
    let Some(path) = default_model() else { return };
    let file = GgufFile::open(&path).expect("open GGUF");
    let task = LoraTask::new(&file, &LabelSet::default(), &bench_rules(), 4).expect("task");
    let (config, options) = tiny_config();
    let n = task.model().shape().n_layer;
    let cached = cached_cases(&task, n - config.top_layers);
    let examples: Vec<(&CachedPrompt, usize)> = cached.iter().map(|(c, y)| (c, *y)).collect();
    let run = || {
        let adapters = task.new_adapters(&config).expect("adapters");
        let before = task
            .loss(&examples, Some(&adapters), false)
            .and_then(|l| l.to_scalar::<f32>())
            .expect("loss");
        let epochs = task
            .train(&adapters, &examples, &options, |_, _| {})
            .expect("train");
        let after = task
            .loss(&examples, Some(&adapters), false)
            .and_then(|l| l.to_scalar::<f32>())
            .expect("loss");
        (before, epochs, after)
    };
    let (before, epochs, after) = run();
    eprintln!("loss before {before:.4}, per epoch {epochs:?}, after {after:.4}");
    // Fresh adapters (B = 0) are the base model: its loss on these clips, not a trained one.
    let base = task
        .loss(&examples, None, false)
        .and_then(|l| l.to_scalar::<f32>())
        .expect("loss");
    assert!(
        (before - base).abs() < 1e-5,
        "zero-B adapters change the model"
    );
    assert!(
        after < before,
        "training did not lower the loss: {before} -> {after}"
    );
    let (before2, epochs2, after2) = run();
    assert_eq!(
        (before.to_bits(), after.to_bits()),
        (before2.to_bits(), after2.to_bits()),
        "same seed, different loss"
    );
    assert_eq!(epochs, epochs2);
}

#[test]
fn adapters_round_trip_through_safetensors() {
    let Some(path) = default_model() else { return };
    let file = GgufFile::open(&path).expect("open GGUF");
    let task = LoraTask::new(&file, &LabelSet::default(), &bench_rules(), 4).expect("task");
    let (config, mut options) = tiny_config();
    options.epochs = 1;
    let n = task.model().shape().n_layer;
    let cached = cached_cases(&task, n - config.top_layers);
    let examples: Vec<(&CachedPrompt, usize)> = cached.iter().map(|(c, y)| (c, *y)).collect();
    let mut adapters = task.new_adapters(&config).expect("adapters");
    // One step, so that B is no longer zero and the round trip carries trained values.
    task.train(&adapters, &examples, &options, |_, _| {})
        .expect("train");
    adapters.set_trained_on("three hand-written clips (test)");
    let dir = tempfile::tempdir().expect("tempdir");
    let file_path = dir.path().join("adapters.safetensors");
    adapters.save(&file_path).expect("save");
    let loaded = LoraAdapters::load(&file_path, &file).expect("load");
    assert_eq!(loaded.header(), adapters.header());
    let (a, b) = (
        adapters.flat_values().expect("values"),
        loaded.flat_values().expect("values"),
    );
    assert!(a.iter().any(|&v| v != 0.0));
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let p1 = task.probs(&cached[0].0, Some(&adapters)).expect("probs");
    let p2 = task.probs(&cached[0].0, Some(&loaded)).expect("probs");
    assert_eq!(p1, p2, "loaded adapters score differently");
    // A file that is not adapters is refused with its path named.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").expect("write");
    let err = LoraAdapters::load(&junk, &file)
        .err()
        .expect("junk refused");
    assert!(err.to_string().contains("junk.safetensors"), "{err}");
}
