//! The GGUF tokenizer against reference ids made by independent tokenizers
//! (scripts/llm_tokenizer_reference.py: Hugging Face `tokenizers` for gpt2-style BPE, Google's
//! `sentencepiece` for Gemma), for English and Vietnamese text and chat prompts.
//!
//! The GGUF files are not in git (`camxuc models fetch` installs them). Outside CI a missing
//! file skips its test with a printed reason; in CI (`CI` set) it fails.

use std::path::PathBuf;

use camxuc::llm::{Architecture, ChatTemplate, GgufFile, GgufTokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    tokenizer_model: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn models_dir() -> PathBuf {
    std::env::var_os("CAMXUC_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// The model file, or None (with the reason printed) when it is absent outside CI.
fn model(rel: &str) -> Option<GgufFile> {
    let path = models_dir().join(rel);
    if !path.exists() {
        let msg = format!(
            "{} is absent (install it with `camxuc models fetch`)",
            path.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; CI must have the model");
        }
        eprintln!("skipping: {msg}");
        return None;
    }
    Some(GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}")))
}

fn reference(name: &str) -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llm")
        .join(format!("{name}.tokens.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every reference case encodes to the same ids and decodes back to the same text; all
/// mismatches are listed before failing.
fn check_against_reference(tokenizer: &GgufTokenizer, reference: &Reference) {
    assert!(!reference.cases.is_empty());
    let mut failures = Vec::new();
    for case in &reference.cases {
        let ids = tokenizer.encode(&case.text, false).expect("encode");
        if ids != case.ids {
            failures.push(format!(
                "{:?}\n   got      {:?}\n   expected {:?}",
                case.text, ids, case.ids
            ));
        }
        let back = tokenizer.decode(&ids).expect("decode");
        if back != case.text {
            failures.push(format!("round trip {:?} -> {:?}", case.text, back));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_matches_reference_ids() {
    let Some(file) = model("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    assert_eq!(file.architecture(), Architecture::Llama);
    assert_eq!(file.context_length().unwrap(), 8192);
    let tok = file.tokenizer().unwrap();
    let reference = reference("smollm2-135m");
    assert_eq!(reference.tokenizer_model, "gpt2");
    check_against_reference(&tok, &reference);

    // Chat markers are single tokens; no BOS for this model (add_bos_token = false).
    let template = ChatTemplate::for_file(&file);
    assert_eq!(template, ChatTemplate::ChatMl);
    let prompt = template.render("Bạn là người gán nhãn.", "Giọng nói cao.", "Nhãn:");
    let ids = tok.encode(&prompt, true).unwrap();
    let im_start = tok.token_id("<|im_start|>").unwrap();
    let im_end = tok.token_id("<|im_end|>").unwrap();
    assert_eq!(ids[0], im_start);
    assert_eq!(ids.iter().filter(|&&i| i == im_start).count(), 3);
    assert_eq!(ids.iter().filter(|&&i| i == im_end).count(), 2);
    assert_eq!(tok.decode(&ids).unwrap(), prompt);
    assert_eq!(tok.eos_token_id(), Some(im_end));
    assert!(tok
        .decode_skip_special(&ids)
        .unwrap()
        .starts_with("system\nBạn"));
}

#[test]
fn qwen25_matches_reference_ids() {
    let Some(file) = model("qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct.gguf") else {
        return;
    };
    assert_eq!(file.architecture(), Architecture::Qwen2);
    let tok = file.tokenizer().unwrap();
    check_against_reference(&tok, &reference("qwen2.5-coder-0.5b"));
    assert_eq!(ChatTemplate::for_file(&file), ChatTemplate::ChatMl);
    assert_eq!(
        tok.encode("Hi", true).unwrap(),
        tok.encode("Hi", false).unwrap()
    );
}

#[test]
fn gemma3_matches_reference_ids() {
    let Some(file) = model("gemma3-270m/gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    assert_eq!(file.architecture(), Architecture::Gemma3);
    let tok = file.tokenizer().unwrap();
    let reference = reference("gemma3-270m");
    assert_eq!(reference.tokenizer_model, "llama");
    check_against_reference(&tok, &reference);

    // A base model: plain completion prompt; BOS first when special tokens are added.
    assert_eq!(ChatTemplate::for_file(&file), ChatTemplate::Plain);
    let with_bos = tok.encode("Xin chào", true).unwrap();
    assert_eq!(with_bos[0], tok.bos_token_id().unwrap());
    assert_eq!(
        &with_bos[1..],
        tok.encode("Xin chào", false).unwrap().as_slice()
    );
    let turn = tok
        .encode("<start_of_turn>user\nHi<end_of_turn>", false)
        .unwrap();
    assert_eq!(turn[0], tok.token_id("<start_of_turn>").unwrap());
    assert_eq!(
        *turn.last().unwrap(),
        tok.token_id("<end_of_turn>").unwrap()
    );
}

/// The real default model cut short: in the tensor data, then inside the vocabulary.
#[test]
fn a_truncated_copy_of_the_real_model_is_an_error() {
    let Some(file) = model("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let bytes = std::fs::read(file.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("half.gguf");
    for (cut, what) in [(bytes.len() / 2, "tensor data"), (100_000, "vocabulary")] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = GgufFile::open(&path).expect_err(what);
        let msg = err.to_string();
        assert!(
            msg.contains("half.gguf") && msg.contains("truncated"),
            "{what}: {msg}"
        );
    }
}
