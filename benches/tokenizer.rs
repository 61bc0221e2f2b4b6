//! camxuc's GGUF tokenizer (src/llm/tokenizer) against candle-core's
//! `quantized::tokenizer::TokenizerFromGguf` (a `tokenizers::Tokenizer` built from the same
//! metadata): `cargo bench --bench tokenizer`.
//!
//! For every catalogued model that is installed: agreement of each tokenizer with the reference
//! ids of tests/fixtures/llm (made by Hugging Face `tokenizers` / Google `sentencepiece`), and
//! the encoding speed of the product's own prompt text (the reasoner's rules and evidence,
//! English and Vietnamese). candle's builder accepts only `gpt2` tokenizers; where it refuses a
//! model (Gemma's SentencePiece `llama` tokenizer) the report says so. Prints JSON.

use std::path::PathBuf;
use std::time::Instant;

use camxuc::catalog::{models_dir, ModelSpec};
use camxuc::llm::GgufFile;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

const MODELS: [&str; 3] = ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"];

/// Encodings per timing run.
const ROUNDS: usize = 200;

fn reference(name: &str) -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llm")
        .join(format!("{name}.tokens.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text timed: every reference case and the shipped rules' statements in both languages,
/// about what one reasoner prompt holds.
fn corpus(reference: &Reference) -> String {
    let rules = camxuc::rules::default_ruleset().expect("the shipped rules parse");
    let mut text: Vec<String> = reference.cases.iter().map(|c| c.text.clone()).collect();
    for r in rules.rules() {
        text.push(r.statement(camxuc::rules::Language::En).to_string());
        text.push(r.statement(camxuc::rules::Language::Vi).to_string());
    }
    text.join("\n")
}

/// Median of five timings of `ROUNDS` encodings, in microseconds per encoding.
fn time(mut encode: impl FnMut() -> usize) -> (f64, usize) {
    let mut runs = Vec::new();
    let mut tokens = 0;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..ROUNDS {
            tokens = encode();
        }
        runs.push(start.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64);
    }
    runs.sort_by(f64::total_cmp);
    (runs[2], tokens)
}

fn main() {
    let mut report = Vec::new();
    for name in MODELS {
        let path = match ModelSpec::parse(name).and_then(|s| s.resolve(&models_dir())) {
            Ok(Some(p)) if p.is_file() => p,
            _ => {
                eprintln!("{name}: not installed (camxuc models fetch {name}), skipped");
                continue;
            }
        };
        let file = GgufFile::open(&path).expect("the GGUF opens");
        let reference = reference(name);
        let text = corpus(&reference);

        let ours = file.tokenizer().expect("camxuc's tokenizer loads");
        let ours_agree = reference
            .cases
            .iter()
            .filter(|c| ours.encode(&c.text, false).ok().as_ref() == Some(&c.ids))
            .count();
        let (ours_us, ours_tokens) = time(|| ours.encode(&text, false).unwrap().len());

        let candle = match tokenizers::Tokenizer::from_gguf(file.content()) {
            Ok(tok) => {
                let agree = reference
                    .cases
                    .iter()
                    .filter(|c| {
                        tok.encode(c.text.as_str(), false)
                            .ok()
                            .is_some_and(|e| e.get_ids() == c.ids.as_slice())
                    })
                    .count();
                let (us, tokens) =
                    time(|| tok.encode(text.as_str(), false).unwrap().get_ids().len());
                json!({"loads": true, "reference_cases_agreeing": agree,
                       "encode_us": us, "tokens": tokens})
            }
            Err(e) => json!({"loads": false,
                             "error": e.to_string().lines().next().unwrap_or("").to_string()}),
        };
        report.push(json!({
            "model": name,
            "reference_cases": reference.cases.len(),
            "text_chars": text.chars().count(),
            "camxuc": {"reference_cases_agreeing": ours_agree, "encode_us": ours_us,
                       "tokens": ours_tokens},
            "candle_tokenizer_from_gguf": candle,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
