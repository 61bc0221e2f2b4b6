//! camxuc — offline speech-emotion recognition (calm / angry / panic) for Vietnamese speech.
//!
//! The crate follows the data flow in DESIGN.md: each folder owns one stage and exposes a
//! small typed API; stages talk through the plain structs in [`types`].
//!
//! ```text
//! audio ─► features ─► acoustic ─► rules ─► pipeline (route) ─► llm / rule vote ─► Decision
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
pub mod types;

pub use types::{
    Audio, Case, Decision, Evidence, FiredRule, LabelSet, Probs, Reasoner, ReasonerError, Route,
    Segment, Verdict, DECISION_SCHEMA_VERSION,
};
