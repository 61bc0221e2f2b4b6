//! Human-guided rules (DESIGN.md, "Rules"): rule sets as TOML data, a small condition
//! language over evidence features and acoustic probabilities, and the rule-vote reasoner.
//!
//! - [`RuleSet::load`] / [`RuleSet::parse`] validate everything before any audio is read: a
//!   condition that does not parse, an unknown feature (with the nearest known name), an
//!   unknown label, a duplicate id or a bad weight is a [`RulesError`] naming the file, the
//!   rule id and the line.
//! - [`RuleSet::evaluate`] → the [`crate::FiredRule`]s of one clip; absent features make
//!   their comparisons false (see [`condition`]).
//! - [`RuleVote`] implements [`crate::Reasoner`] by a log-linear vote (see [`vote`]).
//! - [`RuleSet::to_toml_string`] / [`RuleSet::save`] write the canonical text that the
//!   refinement loop versions; [`RuleSet::sha256`] identifies it in results.

pub mod condition;
pub mod error;
pub mod names;
pub mod rule;
pub mod ruleset;
pub mod vote;

pub use condition::{CompareOp, Condition, Operand, ParseError};
pub use error::RulesError;
pub use names::{edit_distance, known_identifiers, nearest};
pub use rule::{Language, Rule, Statements};
pub use ruleset::{ChangelogEntry, RuleSet};
pub use vote::{rationale, RuleVote};

/// The shipped default rule set, relative to the repository root.
pub const DEFAULT_RULES_PATH: &str = "rules/vi-default.toml";

/// The shipped default rule set, embedded in the binary so a model works without the
/// repository beside it.
pub const DEFAULT_RULES_TEXT: &str = include_str!("../../rules/vi-default.toml");

/// Parse the embedded default rule set.
pub fn default_ruleset() -> Result<RuleSet, RulesError> {
    RuleSet::parse(DEFAULT_RULES_TEXT, DEFAULT_RULES_PATH)
}
