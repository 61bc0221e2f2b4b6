//! Whisper's vocabulary: the byte-level BPE of `tokenizer.json` for text, and the special
//! tokens that steer the decoder (`<|startoftranscript|>`, `<|vi|>`, `<|transcribe|>`,
//! `<|notimestamps|>`, `<|endoftext|>`, …).
//!
//! Token ids of the multilingual models: 0..50257 text, 50257 `<|endoftext|>`, 50258
//! `<|startoftranscript|>`, then the language tokens up to `<|translate|>`, the task and
//! control tokens, `<|notimestamps|>`, and the timestamp tokens after it up to the end of the
//! vocabulary (these are not listed in `tokenizer.json`).

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use super::error::AsrError;

pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The tokenizer and the ids of the tokens the decoding loop needs.
pub struct WhisperTokens {
    tokenizer: Tokenizer,
    path: PathBuf,
    pub end_of_text: u32,
    pub start_of_transcript: u32,
    pub transcribe: u32,
    pub translate: u32,
    pub no_speech: u32,
    pub no_timestamps: u32,
    /// `(code, id)` of every language token, e.g. `("vi", 50278)`, in id order.
    pub languages: Vec<(String, u32)>,
}

impl WhisperTokens {
    /// Reads `<model_dir>/tokenizer.json` and checks that it is a multilingual Whisper
    /// vocabulary that fits a decoder of `vocab_size` tokens.
    pub fn load(model_dir: &Path, vocab_size: usize) -> Result<Self, AsrError> {
        let path = model_dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            return Err(AsrError::MissingFile {
                path,
                what: "the Whisper tokenizer (tokenizer.json)",
            });
        }
        let tokenizer = Tokenizer::from_file(&path).map_err(|source| AsrError::Tokenizer {
            path: path.clone(),
            source,
        })?;
        let wrong = |reason: String| AsrError::WrongModel {
            path: path.clone(),
            reason,
        };
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .filter(|&id| (id as usize) < vocab_size)
                .ok_or_else(|| {
                    wrong(format!(
                        "no token {token} within the model's {vocab_size}-token vocabulary"
                    ))
                })
        };
        let end_of_text = id("<|endoftext|>")?;
        let start_of_transcript = id("<|startoftranscript|>")?;
        let transcribe = id("<|transcribe|>")?;
        let translate = id("<|translate|>")?;
        // Whisper's tokenizer calls it `no_speech`; the multilingual vocabulary spells it so.
        let no_speech = id("<|nocaptions|>").or_else(|_| id("<|nospeech|>"))?;
        let no_timestamps = id("<|notimestamps|>")?;
        let languages: Vec<(String, u32)> = (start_of_transcript + 1..translate)
            .filter_map(|id| {
                let token = tokenizer.id_to_token(id)?;
                let code = token.strip_prefix("<|")?.strip_suffix("|>")?;
                Some((code.to_string(), id))
            })
            .collect();
        if languages.is_empty() {
            return Err(wrong(
                "no language tokens (an English-only model cannot transcribe Vietnamese)".into(),
            ));
        }
        Ok(Self {
            tokenizer,
            path,
            end_of_text,
            start_of_transcript,
            transcribe,
            translate,
            no_speech,
            no_timestamps,
            languages,
        })
    }

    /// The id of the language token for `code` (`"vi"`, `"en"`, …).
    pub fn language_id(&self, code: &str) -> Option<u32> {
        self.languages
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(code))
            .map(|&(_, id)| id)
    }

    /// Text of the text tokens among `ids` (special and timestamp tokens are dropped).
    pub fn decode(&self, ids: &[u32]) -> Result<String, AsrError> {
        let text: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id < self.end_of_text)
            .collect();
        self.tokenizer
            .decode(&text, true)
            .map_err(|source| AsrError::TokenizerCodec {
                path: self.path.clone(),
                doing: format!("decoding {} tokens", text.len()),
                source,
            })
    }

    /// Ids of `text` without special tokens (for tests and prompts).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, AsrError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|source| AsrError::TokenizerCodec {
                path: self.path.clone(),
                doing: "encoding".into(),
                source,
            })
    }
}
