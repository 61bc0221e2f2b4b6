//! gpt2-style byte-level BPE (`tokenizer.ggml.model = "gpt2"`), following llama.cpp's
//! `llm_tokenizer_bpe`: split the text with the pre-tokenizer regexes named by
//! `tokenizer.ggml.pre`, map each piece's bytes to GPT-2's printable characters, then merge
//! adjacent symbols by merge rank (lowest rank first, leftmost on ties).

use std::collections::HashMap;
use std::path::Path;

use fancy_regex::Regex;

use super::byte_level::ByteLevel;
use super::vocab::Vocab;
use crate::llm::error::LlmError;

/// GPT-2's pattern; llama.cpp leaves off the final `\s+` because it keeps unmatched gaps as
/// pieces anyway, which gives the same split.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Qwen2's pattern with llama.cpp's case-insensitive contractions spelled out.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Pre-tokenizer names accepted in `tokenizer.ggml.pre`, for the error message.
pub const SUPPORTED_PRE: &str =
    "smollm, starcoder, refact, gpt-2, default, qwen2, deepseek-r1-qwen, llama3, llama-bpe, llama-v3";

/// The regex sequence llama.cpp applies for a `tokenizer.ggml.pre` name: each regex splits
/// every piece the previous one produced, keeping both matches and the gaps between them.
fn pre_tokenizer_patterns(pre: &str) -> Option<&'static [&'static str]> {
    Some(match pre {
        // SmolLM2 (and StarCoder's family): every digit is its own piece, then GPT-2's split.
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" => &[r"\p{N}", GPT2],
        "gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" => &[GPT2],
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" => &[QWEN2],
        "llama3" | "llama-bpe" | "llama-v3" | "falcon3" => &[LLAMA3],
        // llama.cpp's fallback sequence for "default" and unnamed BPE vocabularies.
        "default" => &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
        _ => return None,
    })
}

#[derive(Debug)]
pub struct Bpe {
    regexes: Vec<Regex>,
    /// (left id, right id) → (rank, merged id); ids rather than strings keep lookups cheap.
    merges: HashMap<(u32, u32), (u32, u32)>,
    byte_level: ByteLevel,
    /// llama3-style vocabularies use a whole piece as one token when the vocab has it.
    ignore_merges: bool,
}

impl Bpe {
    pub fn new(path: &Path, pre: &str, merges: &[&str], vocab: &Vocab) -> Result<Self, LlmError> {
        let patterns =
            pre_tokenizer_patterns(pre).ok_or_else(|| LlmError::UnknownPreTokenizer {
                path: path.to_path_buf(),
                found: pre.to_string(),
                supported: SUPPORTED_PRE.to_string(),
            })?;
        let regexes = patterns
            .iter()
            .map(|p| Regex::new(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LlmError::PreTokenizer {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, line) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first character: a left part
            // may itself be a space-like symbol.
            let split_at = line
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| i);
            let Some(i) = split_at else {
                return Err(LlmError::BadMetadata {
                    path: path.to_path_buf(),
                    key: "tokenizer.ggml.merges".into(),
                    reason: format!("merge {rank} `{line}` has no space separator"),
                });
            };
            let (left, right) = (&line[..i], &line[i + 1..]);
            let merged = format!("{left}{right}");
            // A merge whose parts or result are not tokens can never produce a token; skip it.
            if let (Some(l), Some(r), Some(m)) =
                (vocab.get(left), vocab.get(right), vocab.get(&merged))
            {
                merge_map.entry((l, r)).or_insert((rank as u32, m));
            }
        }
        Ok(Self {
            regexes,
            merges: merge_map,
            byte_level: ByteLevel::new(),
            ignore_merges: matches!(pre, "llama3" | "llama-bpe" | "llama-v3" | "falcon3"),
        })
    }

    pub fn byte_level(&self) -> &ByteLevel {
        &self.byte_level
    }

    /// Splits `text` into pre-tokenizer pieces (byte offsets into `text`).
    fn split(&self, path: &Path, text: &str) -> Result<Vec<(usize, usize)>, LlmError> {
        let mut pieces = vec![(0, text.len())];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for &(start, end) in &pieces {
                let piece = &text[start..end];
                let mut last = 0;
                for m in re.find_iter(piece) {
                    let m = m.map_err(|e| LlmError::PreTokenizer {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })?;
                    if m.start() > last {
                        next.push((start + last, start + m.start()));
                    }
                    if m.end() > m.start() {
                        next.push((start + m.start(), start + m.end()));
                    }
                    last = m.end();
                }
                if last < piece.len() {
                    next.push((start + last, end));
                }
            }
            pieces = next;
        }
        Ok(pieces)
    }

    /// Appends the ids of `text` (free of special tokens) to `out`.
    pub fn encode(
        &self,
        path: &Path,
        text: &str,
        vocab: &Vocab,
        unknown: Option<u32>,
        out: &mut Vec<u32>,
    ) -> Result<(), LlmError> {
        let mut word = String::new();
        for (start, end) in self.split(path, text)? {
            word.clear();
            self.byte_level
                .encode_into(&text.as_bytes()[start..end], &mut word);
            if self.ignore_merges {
                if let Some(id) = vocab.get(word.as_str()) {
                    out.push(id);
                    continue;
                }
            }
            self.merge_word(&word, vocab, unknown, out);
        }
        Ok(())
    }

    fn merge_word(&self, word: &str, vocab: &Vocab, unknown: Option<u32>, out: &mut Vec<u32>) {
        let mut buf = [0u8; 4];
        // Every mapped byte character is a token in a byte-level vocabulary; a vocabulary
        // that lacks one gets the unknown token there (llama.cpp drops it silently).
        let mut symbols: Vec<Option<u32>> = word
            .chars()
            .map(|c| vocab.get(c.encode_utf8(&mut buf)))
            .collect();
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..symbols.len().saturating_sub(1) {
                if let (Some(l), Some(r)) = (symbols[i], symbols[i + 1]) {
                    if let Some(&(rank, merged)) = self.merges.get(&(l, r)) {
                        if best.is_none_or(|(best_rank, _, _)| rank < best_rank) {
                            best = Some((rank, i, merged));
                        }
                    }
                }
            }
            let Some((_, i, merged)) = best else { break };
            symbols[i] = Some(merged);
            symbols.remove(i + 1);
        }
        out.extend(symbols.into_iter().filter_map(|s| s.or(unknown)));
    }
}
