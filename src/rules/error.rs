//! Why a rule set could not be loaded, built or written. Every variant names the rules file
//! (or `<memory>` for rules built in code) so a person can go straight to the faulty line.

use std::fmt;
use std::path::PathBuf;

/// ` (line N)` when the line is known, nothing for rules built in code.
pub struct AtLine(pub Option<usize>);

impl fmt::Display for AtLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

/// `; did you mean 'x'?` when a close known name exists.
pub struct Suggestion<'a>(pub &'a Option<String>);

impl fmt::Display for Suggestion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, "; did you mean '{name}'?"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{}: cannot read the rules file: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}: cannot write the rules file: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The file is not valid TOML, or a field has the wrong type or is missing.
    #[error("{}{}: invalid TOML{}: {message}", path.display(), AtLine(*line), rule_id.as_ref().map(|id| format!(" in rule '{id}'")).unwrap_or_default())]
    Toml {
        path: PathBuf,
        line: Option<usize>,
        rule_id: Option<String>,
        message: String,
    },

    /// `[ruleset]` metadata is wrong (labels, language, version, name).
    #[error("{}{}: [ruleset]: {message}", path.display(), AtLine(*line))]
    Metadata {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },

    /// A condition does not parse. `column` counts characters of the condition text from 1.
    #[error("{}{}: rule '{rule_id}': syntax error in `when` at column {column} (found {token}): {message}", path.display(), AtLine(*line))]
    Syntax {
        path: PathBuf,
        rule_id: String,
        line: Option<usize>,
        column: usize,
        token: String,
        message: String,
    },

    /// A condition names something that is neither a catalogue feature, its `_z`, a
    /// `p_<label>` of this rule set nor `margin`.
    #[error("{}{}: rule '{rule_id}': unknown feature '{name}'{}", path.display(), AtLine(*line), Suggestion(suggestion))]
    UnknownFeature {
        path: PathBuf,
        rule_id: String,
        line: Option<usize>,
        name: String,
        suggestion: Option<String>,
    },

    /// A condition uses a feature that changes with recording gain (absolute level): such a
    /// rule would learn the microphone, not the speaker.
    #[error("{}{}: rule '{rule_id}': feature '{name}' depends on recording gain and may not be used in rules", path.display(), AtLine(*line))]
    GainDependentFeature {
        path: PathBuf,
        rule_id: String,
        line: Option<usize>,
        name: String,
    },

    #[error("{}{}: rule '{rule_id}': unknown label '{label}' (this rule set's labels: {known})", path.display(), AtLine(*line))]
    UnknownLabel {
        path: PathBuf,
        rule_id: String,
        line: Option<usize>,
        label: String,
        known: String,
    },

    #[error("{}{}: rule id '{rule_id}' is used twice (first at line {})", path.display(), AtLine(*line), first_line.map(|l| l.to_string()).unwrap_or_else(|| "?".into()))]
    DuplicateId {
        path: PathBuf,
        rule_id: String,
        line: Option<usize>,
        first_line: Option<usize>,
    },

    #[error("{}{}: rule '{rule_id}': weight {weight} must be a finite number > 0", path.display(), AtLine(*line))]
    BadWeight {
        path: PathBuf,
        rule_id: String,
        line: Option<usize>,
        weight: f64,
    },

    /// A rule field other than the above is unusable (empty id, empty statement).
    #[error("{}{}: rule '{rule_id}': {message}", path.display(), AtLine(*line))]
    BadRule {
        path: PathBuf,
        rule_id: String,
        line: Option<usize>,
        message: String,
    },
}

impl RulesError {
    /// The rules file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            RulesError::Read { path, .. }
            | RulesError::Write { path, .. }
            | RulesError::Toml { path, .. }
            | RulesError::Metadata { path, .. }
            | RulesError::Syntax { path, .. }
            | RulesError::UnknownFeature { path, .. }
            | RulesError::GainDependentFeature { path, .. }
            | RulesError::UnknownLabel { path, .. }
            | RulesError::DuplicateId { path, .. }
            | RulesError::BadWeight { path, .. }
            | RulesError::BadRule { path, .. } => path,
        }
    }

    /// The 1-based line in the rules file, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            RulesError::Read { .. } | RulesError::Write { .. } => None,
            RulesError::Toml { line, .. }
            | RulesError::Metadata { line, .. }
            | RulesError::Syntax { line, .. }
            | RulesError::UnknownFeature { line, .. }
            | RulesError::GainDependentFeature { line, .. }
            | RulesError::UnknownLabel { line, .. }
            | RulesError::DuplicateId { line, .. }
            | RulesError::BadWeight { line, .. }
            | RulesError::BadRule { line, .. } => *line,
        }
    }
}
