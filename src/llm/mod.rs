//! The LLM stage: GGUF files, their tokenizers and prompt formats. The model runner and the
//! reasoner build on these (see issue 4).
//!
//! ```no_run
//! # fn main() -> Result<(), camxuc::llm::LlmError> {
//! use camxuc::llm::{ChatTemplate, GgufFile};
//! let file = GgufFile::open("models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf".as_ref())?;
//! let tokenizer = file.tokenizer()?;
//! let prompt = ChatTemplate::for_file(&file).render("You label emotions.", "Clip: loud.", "");
//! let ids = tokenizer.encode(&prompt, true)?;
//! # let _ = ids; Ok(()) }
//! ```

mod attention;
mod bench;
mod chat;
mod error;
mod gemma3;
mod gguf;
mod kquant;
mod kv_cache;
#[cfg(feature = "research")]
pub mod lora;
mod model;
mod prompt;
mod qmatrix;
mod reasoner;
mod split;
mod tokenizer;
mod transformer;

pub use bench::{
    bench, bench_evidence, bench_rules, bench_with, peak_rss_mb, BenchReport, BENCH_PROMPT,
};
pub use chat::ChatTemplate;
pub use error::{LlmError, SUPPORTED_ARCHITECTURES, SUPPORTED_TOKENIZER_MODELS};
pub use gguf::{Architecture, GgufFile};
pub use model::{KvSnapshot, LlmModel, LoadOptions, LoadStats};
pub use prompt::{PromptBuilder, PromptLanguage, RuleText};
pub use reasoner::{
    LabelScores, LlmExplains, LlmFused, LlmReasoner, ReasonerOptions, DECISION_PROMPT_COMPACT,
};
pub use tokenizer::{GgufTokenizer, TokenType};

impl GgufFile {
    /// The tokenizer described by this file's metadata.
    pub fn tokenizer(&self) -> Result<GgufTokenizer, LlmError> {
        GgufTokenizer::from_gguf(self.content(), self.path())
    }
}
