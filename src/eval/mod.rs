//! Evaluation: metrics (accuracy, macro-F1, confusion, kappa, calibration error, bootstrap
//! intervals). The `eval` command, ablations and reports build on it.

pub mod agreement;
pub mod metrics;
pub mod record;
pub mod run;
