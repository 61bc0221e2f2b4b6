//! The pipeline: one clip from file to `Decision` (analysis, acoustic model, rules, routing,
//! reasoner), and the incremental batch output.

pub mod analyse;
pub mod decide;
pub mod output;
pub mod route;
pub mod words;

pub use decide::{active_rules, Pipeline, PipelineError, UNCERTAIN};
pub use route::Router;
pub use words::Words;
