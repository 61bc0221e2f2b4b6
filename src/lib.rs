//! camxuc — offline speech-emotion recognition (calm / angry / panic) for Vietnamese speech.
//!
//! The crate follows the data flow in DESIGN.md: each folder owns one stage and exposes a
//! small typed API; stages talk through the plain structs in [`types`].
//!
//! ```text
//! audio ─► features ─► acoustic ─► rules ─► pipeline (route) ─► llm / rule vote ─► Decision
//! ```
//!
//! The front door: the default pipeline (the default acoustic model, its rules and fusion, no
//! LLM; the Whisper front end from `camxuc models fetch`) classifying one file.
//!
//! ```
//! let mut pipeline = camxuc::pipeline::Pipeline::open_default()?;
//! let decision = pipeline.classify_file("tests/fixtures/audio/speechlike_s16.wav")?;
//! println!("{}: {} ({:?})", decision.file, decision.label, decision.route);
//! assert!(["calm", "angry", "panic", "uncertain"].contains(&decision.label.as_str()));
//! # Ok::<(), camxuc::pipeline::decide::PipelineError>(())
//! ```

pub mod acoustic;
pub mod asr;
pub mod audio;
pub mod catalog;
pub mod clip;
pub mod data;
pub mod eval;
pub mod features;
pub mod llm;
pub mod math;
pub mod metrics;
pub mod pipeline;
pub mod private_fs;
pub mod refine;
pub mod report;
pub mod rules;
pub mod serve;
pub mod threads;
pub mod types;

pub use types::{
    Audio, Case, Decision, Evidence, FiredRule, LabelSet, Probs, Reasoner, ReasonerError, Route,
    Segment, Verdict, DECISION_SCHEMA_VERSION,
};
