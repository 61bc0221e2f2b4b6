//! One rule: the label it supports, its parsed condition, weight, statements and provenance.

use std::path::Path;

use crate::{Evidence, LabelSet, Probs};

use super::condition::{self, Condition};
use super::error::RulesError;
use super::names::{self, NameProblem};

/// Path used in errors about rules built in code rather than read from a file.
pub const IN_MEMORY: &str = "<memory>";

/// The language a statement is shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    Vi,
    En,
}

impl Language {
    pub fn code(self) -> &'static str {
        match self {
            Language::Vi => "vi",
            Language::En => "en",
        }
    }

    pub fn from_code(code: &str) -> Option<Language> {
        match code.trim().to_ascii_lowercase().as_str() {
            "vi" => Some(Language::Vi),
            "en" => Some(Language::En),
            _ => None,
        }
    }
}

/// What a rule says, for people: Vietnamese and English.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statements {
    pub vi: String,
    pub en: String,
}

impl Statements {
    pub fn new(vi: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            vi: vi.into(),
            en: en.into(),
        }
    }
}

/// A validated rule. Fields are private so that every rule in a [`super::RuleSet`] has a
/// condition that parses, names only known features, and a usable weight.
#[derive(Clone, Debug)]
pub struct Rule {
    id: String,
    label: String,
    condition_text: String,
    condition: Condition,
    weight: f64,
    statements: Statements,
    source: String,
    /// The study or textbook the cue comes from (`source` says who wrote the rule).
    reference: Option<String>,
    enabled: bool,
    /// Line of the rule's `id` in the file it was read from (for messages only).
    line: Option<usize>,
}

/// Two rules are equal when they say the same thing; where they were read from is ignored.
impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.label == other.label
            && self.condition_text == other.condition_text
            && self.weight == other.weight
            && self.statements == other.statements
            && self.source == other.source
            && self.reference == other.reference
            && self.enabled == other.enabled
    }
}

/// The fields of a rule before validation, with where they came from.
pub(crate) struct RuleDraft<'a> {
    pub id: &'a str,
    pub label: &'a str,
    pub condition_text: &'a str,
    pub weight: f64,
    pub statements: Statements,
    pub source: &'a str,
    pub enabled: bool,
    pub path: &'a Path,
    pub line: Option<usize>,
    /// Line of the `when` value, where syntax and name errors point.
    pub when_line: Option<usize>,
}

impl RuleDraft<'_> {
    pub(crate) fn validate(self, labels: &LabelSet) -> Result<Rule, RulesError> {
        let path = self.path.to_path_buf();
        let rule_id = self.id.trim().to_string();
        let bad = |message: String| RulesError::BadRule {
            path: path.clone(),
            rule_id: rule_id.clone(),
            line: self.line,
            message,
        };
        if rule_id.is_empty() || rule_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the id must be non-empty and contain no spaces".into()));
        }
        let Some(label_index) = labels.index_of(self.label) else {
            return Err(RulesError::UnknownLabel {
                path,
                rule_id,
                line: self.line,
                label: self.label.to_string(),
                known: labels.names().join(", "),
            });
        };
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(RulesError::BadWeight {
                path,
                rule_id,
                line: self.line,
                weight: self.weight,
            });
        }
        if self.statements.vi.trim().is_empty() || self.statements.en.trim().is_empty() {
            return Err(bad(
                "statement_vi and statement_en must both be non-empty".into()
            ));
        }
        let condition = condition::parse(self.condition_text).map_err(|e| RulesError::Syntax {
            path: path.clone(),
            rule_id: rule_id.clone(),
            line: self.when_line,
            column: e.column,
            token: e.token,
            message: e.message,
        })?;
        match names::check(&condition, labels) {
            None => {}
            Some(NameProblem::Unknown { name, suggestion }) => {
                return Err(RulesError::UnknownFeature {
                    path,
                    rule_id,
                    line: self.when_line,
                    name,
                    suggestion,
                })
            }
            Some(NameProblem::GainDependent { name }) => {
                return Err(RulesError::GainDependentFeature {
                    path,
                    rule_id,
                    line: self.when_line,
                    name,
                })
            }
        }
        Ok(Rule {
            id: rule_id,
            label: labels.name(label_index).to_string(),
            condition_text: self.condition_text.trim().to_string(),
            condition,
            weight: self.weight,
            statements: self.statements,
            source: self.source.trim().to_string(),
            reference: None,
            enabled: self.enabled,
            line: self.line,
        })
    }
}

impl Rule {
    /// Builds and validates a rule in code (the refinement loop): the condition must parse
    /// and name only features known for `labels`; errors name the path `<memory>`.
    pub fn new(
        id: &str,
        label: &str,
        condition_text: &str,
        weight: f64,
        statements: Statements,
        source: &str,
        labels: &LabelSet,
    ) -> Result<Rule, RulesError> {
        RuleDraft {
            id,
            label,
            condition_text,
            weight,
            statements,
            source,
            enabled: true,
            path: Path::new(IN_MEMORY),
            line: None,
            when_line: None,
        }
        .validate(labels)
    }

    /// The same rule with another condition (e.g. a retuned threshold), validated.
    pub fn with_condition(
        &self,
        condition_text: &str,
        labels: &LabelSet,
    ) -> Result<Rule, RulesError> {
        self.rebuild(condition_text, self.weight, labels)
    }

    /// The same rule with another weight, validated.
    pub fn with_weight(&self, weight: f64, labels: &LabelSet) -> Result<Rule, RulesError> {
        let text = self.condition_text.clone();
        self.rebuild(&text, weight, labels)
    }

    /// The same rule with another provenance (e.g. `refinement round 2`).
    pub fn with_source(mut self, source: &str) -> Rule {
        self.source = source.trim().to_string();
        self
    }

    /// The same rule citing `reference` (empty: none).
    pub fn with_reference(mut self, reference: Option<&str>) -> Rule {
        self.reference = reference
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        self
    }

    pub fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }

    pub fn with_enabled(mut self, enabled: bool) -> Rule {
        self.enabled = enabled;
        self
    }

    fn rebuild(
        &self,
        condition_text: &str,
        weight: f64,
        labels: &LabelSet,
    ) -> Result<Rule, RulesError> {
        let mut rule = Rule::new(
            &self.id,
            &self.label,
            condition_text,
            weight,
            self.statements.clone(),
            &self.source,
            labels,
        )?;
        rule.enabled = self.enabled;
        rule.reference = self.reference.clone();
        Ok(rule)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The label the rule supports, as spelled in the rule set's label list.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The condition as written in the file.
    pub fn condition_text(&self) -> &str {
        &self.condition_text
    }

    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    pub fn weight(&self) -> f64 {
        self.weight
    }

    pub fn statements(&self) -> &Statements {
        &self.statements
    }

    pub fn statement(&self, language: Language) -> &str {
        match language {
            Language::Vi => &self.statements.vi,
            Language::En => &self.statements.en,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Line of the rule in the file it was read from.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// Whether the condition holds on a clip (ignores `enabled`).
    pub fn matches(&self, evidence: &Evidence, probs: &Probs) -> bool {
        self.condition.evaluate(evidence, probs)
    }
}
