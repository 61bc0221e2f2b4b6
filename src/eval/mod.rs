//! Evaluation: the `eval` command (`run`), its records and the agreement statistics, on the
//! metrics of [`crate::metrics`] (a leaf module every stage may use).

pub mod agreement;
pub mod record;
pub mod run;
