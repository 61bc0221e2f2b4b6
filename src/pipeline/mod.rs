//! The pipeline: one clip from file to `Decision` (analysis, acoustic model, rules, routing).

pub mod analyse;
