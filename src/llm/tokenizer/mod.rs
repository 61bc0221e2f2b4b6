//! A tokenizer built from a GGUF file's `tokenizer.ggml.*` metadata alone (no tokenizer.json
//! is available offline). Written by hand after llama.cpp's `llama-vocab.cpp` rather than on
//! the `tokenizers` crate, because llama.cpp's exact behaviour (special tokens split out
//! longest-first before anything else, SentencePiece merges from scores, byte fallback) is what
//! the GGUF models were converted for, and the crate cannot express the score-based merge.
//!
//! Measured against candle-core's `quantized::tokenizer::TokenizerFromGguf` (a
//! `tokenizers::Tokenizer` built from the same metadata; `cargo bench --bench tokenizer`, the 18
//! reference cases of tests/fixtures/llm and a 3.9k-character prompt text): SmolLM2-135M, this
//! one 18 of 18 reference id sequences and 549 µs per encoding, candle's 2 of 18 and 852 µs;
//! Qwen2.5-Coder-0.5B, 18 and 492 µs against 18 and 889 µs; Gemma 3 (SentencePiece `llama`
//! tokenizer), 18 of 18 here, and candle's refuses it (`gpt2` only). So this one is kept.

mod bpe;
mod byte_level;
mod spm;
mod vocab;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;

use super::error::LlmError;
use super::gguf::{
    metadata_f32_array, metadata_i32_array, metadata_opt_bool, metadata_opt_u32, metadata_str,
    metadata_str_array,
};
use bpe::Bpe;
use spm::{Spm, SPACE_MARK};
use vocab::Vocab;

/// GGUF token types (the same numbering as SentencePiece's piece types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
    Undefined,
}

impl TokenType {
    fn from_gguf(v: i32) -> Self {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    /// Tokens matched whole in the input before the model's own algorithm runs, so chat
    /// markers such as `<|im_start|>` stay single tokens (llama.cpp's `cache_special_tokens`).
    fn is_special(self) -> bool {
        matches!(
            self,
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown
        )
    }
}

#[derive(Debug)]
enum Model {
    // Boxed: both hold fixed byte tables of a few KB; one tokenizer exists per model.
    Bpe(Box<Bpe>),
    Spm(Box<Spm>),
}

/// A tokenizer for one GGUF model: gpt2-style byte-level BPE or SentencePiece BPE.
#[derive(Debug)]
pub struct GgufTokenizer {
    path: PathBuf,
    model: Model,
    /// Every token's text and the index from text to id.
    vocab: Vocab,
    types: Vec<TokenType>,
    /// Special tokens, longest text first: the order llama.cpp partitions the input in.
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    unknown: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// SentencePiece: put a space before text that starts the input or follows a special token.
    add_space_prefix: bool,
}

/// A stretch of the input: raw text still to tokenize, or a special token already matched.
#[derive(Debug, Clone, Copy)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

impl GgufTokenizer {
    /// Builds the tokenizer from `content`'s metadata; `path` is only used in errors.
    pub fn from_gguf(content: &Content, path: &Path) -> Result<Self, LlmError> {
        let model_name = metadata_str(content, path, "tokenizer.ggml.model")?;
        let tokens = metadata_str_array(content, path, "tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let types = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(_) => metadata_i32_array(content, path, "tokenizer.ggml.token_type")?
                .into_iter()
                .map(TokenType::from_gguf)
                .collect::<Vec<_>>(),
            None => vec![TokenType::Normal; n],
        };
        check_len(path, "tokenizer.ggml.token_type", types.len(), n)?;
        let vocab = Vocab::new(tokens.iter().copied()).ok_or_else(|| LlmError::BadMetadata {
            path: path.to_path_buf(),
            key: "tokenizer.ggml.tokens".into(),
            reason: "the token texts together exceed 4 GiB".into(),
        })?;

        // Defaults follow llama.cpp when the converter wrote no explicit flag.
        let (model, default_bos, default_eos, default_unk, default_add_bos, default_space) =
            match model_name {
                "gpt2" => {
                    let merges = metadata_str_array(content, path, "tokenizer.ggml.merges")?;
                    let pre = match content.metadata.get("tokenizer.ggml.pre") {
                        Some(_) => metadata_str(content, path, "tokenizer.ggml.pre")?,
                        None => "default",
                    };
                    let bpe = Bpe::new(path, pre, &merges, &vocab)?;
                    let add_bos = matches!(pre, "llama3" | "llama-bpe" | "llama-v3" | "falcon3");
                    (
                        Model::Bpe(Box::new(bpe)),
                        Some(11),
                        Some(11),
                        None,
                        add_bos,
                        false,
                    )
                }
                "llama" => {
                    let scores = metadata_f32_array(content, path, "tokenizer.ggml.scores")?;
                    check_len(path, "tokenizer.ggml.scores", scores.len(), n)?;
                    (
                        Model::Spm(Box::new(Spm::new(scores, &tokens))),
                        Some(1),
                        Some(2),
                        Some(0),
                        true,
                        true,
                    )
                }
                other => {
                    return Err(LlmError::UnknownTokenizer {
                        path: path.to_path_buf(),
                        found: other.to_string(),
                    })
                }
            };
        let id_or = |key: &str, default: Option<u32>| -> Result<Option<u32>, LlmError> {
            Ok(match metadata_opt_u32(content, path, key)? {
                Some(id) if (id as usize) < n => Some(id),
                Some(_) => default,
                None => default,
            })
        };
        let bos = id_or("tokenizer.ggml.bos_token_id", default_bos)?;
        let eos = id_or("tokenizer.ggml.eos_token_id", default_eos)?;
        let unknown = id_or("tokenizer.ggml.unknown_token_id", default_unk)?;
        let add_bos = metadata_opt_bool(content, path, "tokenizer.ggml.add_bos_token")?
            .unwrap_or(default_add_bos);
        let add_eos =
            metadata_opt_bool(content, path, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let add_space_prefix = matches!(model, Model::Spm(_))
            && metadata_opt_bool(content, path, "tokenizer.ggml.add_space_prefix")?
                .unwrap_or(default_space);

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&id| types[id as usize].is_special() && !tokens[id as usize].is_empty())
            .collect();
        // Stable sort: among equal lengths the lower id is tried first.
        specials.sort_by_key(|&id| std::cmp::Reverse(tokens[id as usize].len()));

        Ok(Self {
            path: path.to_path_buf(),
            model,
            vocab,
            types,
            specials,
            bos,
            eos,
            unknown,
            add_bos,
            add_eos,
            add_space_prefix,
        })
    }

    /// Token ids of `text`. Special-token text (`<|im_start|>`, `<start_of_turn>`) is matched
    /// whole; `add_special` adds BOS/EOS where the model's metadata asks for them.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, LlmError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut prev_special = true;
        let mut escaped = String::new();
        for fragment in self.partition(text) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(start, end) => {
                    let piece = &text[start..end];
                    match &self.model {
                        Model::Bpe(bpe) => {
                            bpe.encode(&self.path, piece, &self.vocab, self.unknown, &mut out)?
                        }
                        Model::Spm(spm) => {
                            escaped.clear();
                            if self.add_space_prefix && prev_special {
                                escaped.push(SPACE_MARK);
                            }
                            escaped.extend(piece.chars().map(|c| {
                                if c == ' ' {
                                    SPACE_MARK
                                } else {
                                    c
                                }
                            }));
                            spm.encode(&escaped, &self.vocab, self.unknown, &mut out);
                        }
                    }
                    prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    /// Splits `text` around special tokens, longest special token first, as llama.cpp's
    /// `tokenizer_st_partition` does.
    fn partition(&self, text: &str) -> Vec<Fragment> {
        let mut fragments = vec![Fragment::Text(0, text.len())];
        if text.is_empty() {
            return Vec::new();
        }
        for &id in &self.specials {
            let needle = self.vocab.text(id).unwrap_or_default();
            // Cheap test first: most special tokens (Gemma has 6,000+) never occur.
            if !fragments
                .iter()
                .any(|f| matches!(*f, Fragment::Text(s, e) if text[s..e].contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut start, end) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(found) = text[start..end].find(needle) {
                    if found > 0 {
                        next.push(Fragment::Text(start, start + found));
                    }
                    next.push(Fragment::Token(id));
                    start += found + needle.len();
                }
                if start < end {
                    next.push(Fragment::Text(start, end));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// The text of `ids`, special tokens included as their text (so that
    /// `decode(encode(s, false)) == s`).
    pub fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.decode_impl(ids, false)
    }

    /// The text of `ids` without control tokens (BOS, EOS, turn markers): for generated text.
    pub fn decode_skip_special(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.decode_impl(ids, true)
    }

    fn decode_impl(&self, ids: &[u32], skip_control: bool) -> Result<String, LlmError> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut at_text_start = true;
        for &id in ids {
            let (text, kind) = self.token(id)?;
            if kind.is_special() {
                if !(skip_control && kind == TokenType::Control) {
                    bytes.extend_from_slice(text.as_bytes());
                }
                at_text_start = true;
                continue;
            }
            match &self.model {
                Model::Bpe(bpe) => {
                    let bl = bpe.byte_level();
                    for c in text.chars() {
                        match bl.byte_of(c) {
                            Some(b) => bytes.push(b),
                            None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        }
                    }
                }
                Model::Spm(_) if kind == TokenType::Byte => {
                    bytes.push(spm_byte(text).unwrap_or(b'?'))
                }
                Model::Spm(_) => {
                    let mut piece = text.replace(SPACE_MARK, " ");
                    // Undo the space the encoder put in front of this stretch of text.
                    if self.add_space_prefix && at_text_start && piece.starts_with(' ') {
                        piece.remove(0);
                    }
                    bytes.extend_from_slice(piece.as_bytes());
                }
            }
            at_text_start = false;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn token(&self, id: u32) -> Result<(&str, TokenType), LlmError> {
        match (self.vocab.text(id), self.types.get(id as usize)) {
            (Some(t), Some(&k)) => Ok((t, k)),
            _ => Err(LlmError::TokenOutOfRange {
                path: self.path.clone(),
                id,
                vocab_size: self.vocab.len(),
            }),
        }
    }

    /// The id of a token given its exact vocabulary text (e.g. `"<|im_end|>"`).
    pub fn token_id(&self, s: &str) -> Option<u32> {
        self.vocab.get(s)
    }

    /// The vocabulary text of a token.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.text(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `encode(_, true)` puts BOS first (`tokenizer.ggml.add_bos_token`).
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Tokens that end a generated turn: EOS plus the chat end markers the vocabulary has.
    pub fn end_of_turn_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos.into_iter().collect();
        for marker in ["<|im_end|>", "<end_of_turn>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(id) = self.token_id(marker) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// The GGUF file this tokenizer came from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn spm_byte(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

fn check_len(path: &Path, key: &str, found: usize, expected: usize) -> Result<(), LlmError> {
    if found == expected {
        return Ok(());
    }
    Err(LlmError::BadMetadata {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason: format!("{found} entries for {expected} tokens"),
    })
}
