//! Bad GGUF input becomes a clear error naming the file, never a panic. The files are written
//! at test time: candle's own GGUF writer for well-formed headers, then damaged on purpose.

use std::path::{Path, PathBuf};

use camxuc::llm::{GgufFile, LlmError};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

fn write_gguf(path: &Path, metadata: &[(&str, Value)], with_tensor: bool) {
    let mut file = std::fs::File::create(path).unwrap();
    let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor = Tensor::ones((4, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let q = QTensor::quantize(&tensor, GgmlDType::Q8_0).unwrap();
    let tensors: Vec<(&str, &QTensor)> = if with_tensor {
        vec![("token_embd.weight", &q)]
    } else {
        vec![]
    };
    gguf_file::write(&mut file, &meta, &tensors).unwrap();
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn strings(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|x| s(x)).collect())
}

fn temp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

fn assert_names_file(err: &LlmError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name the file: {msg}"
    );
}

#[test]
fn a_file_that_is_not_gguf_is_rejected() {
    let (_dir, path) = temp("notes.gguf");
    std::fs::write(&path, "RIFF....WAVEfmt this is a wav file, not a model").unwrap();
    let err = GgufFile::open(&path).unwrap_err();
    assert!(matches!(err, LlmError::NotGguf { .. }), "{err}");
    assert_names_file(&err, &path);

    let (_dir, empty) = temp("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        GgufFile::open(&empty).unwrap_err(),
        LlmError::NotGguf { .. }
    ));

    let missing = _dir.path().join("absent.gguf");
    let err = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(err, LlmError::Io { .. }), "{err}");
    assert_names_file(&err, &missing);
}

#[test]
fn a_truncated_gguf_is_rejected() {
    let (_dir, path) = temp("model.gguf");
    write_gguf(&path, &[("general.architecture", s("llama"))], true);
    assert!(GgufFile::open(&path).is_ok(), "the intact file must open");
    let bytes = std::fs::read(&path).unwrap();

    // Cut inside the tensor data: the header reads, the tensor does not fit.
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = GgufFile::open(&path).unwrap_err();
    match &err {
        LlmError::Truncated {
            tensor,
            needed,
            file_size,
            ..
        } => {
            assert_eq!(tensor, "token_embd.weight");
            assert!(needed > file_size);
        }
        other => panic!("expected Truncated, got {other}"),
    }
    assert_names_file(&err, &path);

    // Cut inside the header: every prefix is an error, none panics.
    for cut in [4usize, 8, 20, 30, 45, 60, 80] {
        std::fs::write(&path, &bytes[..cut.min(bytes.len())]).unwrap();
        let err = GgufFile::open(&path).unwrap_err();
        assert!(
            matches!(
                err,
                LlmError::Malformed { .. } | LlmError::NotGguf { .. } | LlmError::Truncated { .. }
            ),
            "cut at {cut}: {err}"
        );
        assert_names_file(&err, &path);
    }
}

#[test]
fn an_unsupported_architecture_is_named_with_the_supported_ones() {
    let (_dir, path) = temp("mamba.gguf");
    write_gguf(&path, &[("general.architecture", s("mamba"))], true);
    let err = GgufFile::open(&path).unwrap_err();
    assert!(
        matches!(&err, LlmError::UnsupportedArchitecture { found, .. } if found == "mamba"),
        "{err}"
    );
    let msg = err.to_string();
    for arch in ["llama", "qwen2", "qwen3", "gemma3"] {
        assert!(msg.contains(arch), "{msg}");
    }
    assert_names_file(&err, &path);

    let (_dir, path) = temp("noarch.gguf");
    write_gguf(&path, &[("general.name", s("x"))], false);
    let err = GgufFile::open(&path).unwrap_err();
    assert!(
        matches!(&err, LlmError::MissingMetadata { key, .. } if key == "general.architecture"),
        "{err}"
    );
}

#[test]
fn missing_or_unknown_tokenizer_metadata_is_named() {
    let (_dir, path) = temp("notok.gguf");
    write_gguf(
        &path,
        &[
            ("general.architecture", s("llama")),
            ("llama.context_length", Value::U32(2048)),
        ],
        true,
    );
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.context_length().unwrap(), 2048);
    let err = file.tokenizer().unwrap_err();
    assert!(
        matches!(&err, LlmError::MissingMetadata { key, .. } if key == "tokenizer.ggml.model"),
        "{err}"
    );
    assert_names_file(&err, &path);

    // A BPE vocabulary without its merges.
    let (_dir, path) = temp("nomerges.gguf");
    write_gguf(
        &path,
        &[
            ("general.architecture", s("qwen2")),
            ("tokenizer.ggml.model", s("gpt2")),
            ("tokenizer.ggml.tokens", strings(&["a", "b"])),
        ],
        false,
    );
    let err = GgufFile::open(&path).unwrap().tokenizer().unwrap_err();
    assert!(
        matches!(&err, LlmError::MissingMetadata { key, .. } if key == "tokenizer.ggml.merges"),
        "{err}"
    );

    let (_dir, path) = temp("bert.gguf");
    write_gguf(
        &path,
        &[
            ("general.architecture", s("llama")),
            ("tokenizer.ggml.model", s("bert")),
            ("tokenizer.ggml.tokens", strings(&["[CLS]"])),
        ],
        false,
    );
    let err = GgufFile::open(&path).unwrap().tokenizer().unwrap_err();
    assert!(
        matches!(&err, LlmError::UnknownTokenizer { found, .. } if found == "bert"),
        "{err}"
    );
    assert!(err.to_string().contains("gpt2"));

    // A vocabulary of the wrong type is a metadata error, not a panic.
    let (_dir, path) = temp("badtype.gguf");
    write_gguf(
        &path,
        &[
            ("general.architecture", s("llama")),
            ("tokenizer.ggml.model", s("llama")),
            ("tokenizer.ggml.tokens", Value::U32(3)),
        ],
        false,
    );
    let err = GgufFile::open(&path).unwrap().tokenizer().unwrap_err();
    assert!(
        matches!(&err, LlmError::BadMetadata { key, .. } if key == "tokenizer.ggml.tokens"),
        "{err}"
    );
}

/// A tiny SentencePiece vocabulary: merges follow the scores, unknown characters fall back to
/// bytes, control tokens stay whole, and decoding inverts encoding.
#[test]
fn a_small_sentencepiece_vocabulary_follows_scores_and_byte_fallback() {
    let mut tokens: Vec<String> =
        vec!["<unk>".into(), "<s>".into(), "</s>".into(), "<turn>".into()];
    tokens.extend((0..=255).map(|b| format!("<0x{b:02X}>")));
    let words = ["▁", "a", "b", "c", "ab", "bc", "▁a", "▁ab", "▁abc"];
    tokens.extend(words.iter().map(|w| w.to_string()));
    let mut types = vec![2i32, 3, 3, 3];
    types.extend(std::iter::repeat_n(6, 256));
    types.extend(std::iter::repeat_n(1, words.len()));
    // "bc" outscores "ab": "abc" must become a + bc, then nothing joins them.
    let word_scores = [-1.0f32, -2.0, -2.0, -2.0, -5.0, -3.0, -4.0, -6.0, -7.0];
    let mut scores = vec![0.0f32; 4 + 256];
    scores.extend(word_scores);
    let (_dir, path) = temp("spm.gguf");
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    write_gguf(
        &path,
        &[
            ("general.architecture", s("gemma3")),
            ("tokenizer.ggml.model", s("llama")),
            ("tokenizer.ggml.tokens", strings(&token_refs)),
            (
                "tokenizer.ggml.scores",
                Value::Array(scores.into_iter().map(Value::F32).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(types.into_iter().map(Value::I32).collect()),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        ],
        false,
    );
    let tok = GgufFile::open(&path).unwrap().tokenizer().unwrap();
    let id = |t: &str| tok.token_id(t).unwrap();
    assert_eq!(tok.encode("abc", false).unwrap(), vec![id("a"), id("bc")]);
    assert_eq!(tok.encode(" a", false).unwrap(), vec![id("▁a")]);
    // "é" is not in the vocabulary: its two UTF-8 bytes.
    assert_eq!(
        tok.encode("é", false).unwrap(),
        vec![id("<0xC3>"), id("<0xA9>")]
    );
    let with_turn = tok.encode("<turn>ab", true).unwrap();
    assert_eq!(with_turn, vec![id("<s>"), id("<turn>"), id("ab")]);
    for text in ["abc ab é", "<turn>ab c", ""] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    assert_eq!(tok.decode_skip_special(&with_turn).unwrap(), "ab");
    let err = tok.decode(&[9999]).unwrap_err();
    assert!(
        matches!(err, LlmError::TokenOutOfRange { id: 9999, .. }),
        "{err}"
    );
}
