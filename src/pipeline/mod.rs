//! The pipeline: one clip from file to `Decision` (analysis, acoustic model, rules, routing,
//! reasoner), the incremental batch output and the review queue for people.

pub mod build;
pub mod decide;
pub mod faithful;
pub mod fusion;
pub mod output;
pub mod review;
pub mod route;
pub mod words;

pub use build::{build_reasoner, model_fusion, Opened, PipelineSpec, PromptLayout, ReasonerSpec};
pub use decide::{active_rules, Pipeline, PipelineError, UNCERTAIN};
pub use route::Router;
pub use words::Words;
