//! A rule set: metadata, changelog and rules; read from and written to TOML.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::{Evidence, FiredRule, LabelSet, Probs};

use super::error::RulesError;
use super::rule::{Language, Rule, RuleDraft, Statements, IN_MEMORY};

/// One `[[changelog]]` entry: what a version changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangelogEntry {
    pub version: u32,
    /// As written (`2025-06-01`); not interpreted.
    pub date: String,
    pub note: String,
}

/// A validated rule set. Every rule's condition parses and names only known features.
#[derive(Clone, Debug)]
pub struct RuleSet {
    path: PathBuf,
    /// The comment block at the top of the file, kept verbatim so new versions keep it.
    header: String,
    name: String,
    version: u32,
    labels: LabelSet,
    language: Language,
    description: String,
    changelog: Vec<ChangelogEntry>,
    rules: Vec<Rule>,
}

/// Equal when the canonical text is equal: the path and source lines do not count.
impl PartialEq for RuleSet {
    fn eq(&self, other: &Self) -> bool {
        self.header == other.header
            && self.name == other.name
            && self.version == other.version
            && self.labels == other.labels
            && self.language == other.language
            && self.description == other.description
            && self.changelog == other.changelog
            && self.rules == other.rules
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    ruleset: Spanned<RawMeta>,
    #[serde(default)]
    changelog: Vec<RawChange>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    name: Spanned<String>,
    version: Spanned<i64>,
    labels: Spanned<Vec<String>>,
    language: Spanned<String>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChange {
    version: Spanned<i64>,
    date: RawDate,
    #[serde(default)]
    note: String,
}

/// A changelog date may be a TOML date (`2025-06-01`) or a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDate {
    Text(String),
    Date(toml::value::Datetime),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    label: String,
    when: Spanned<String>,
    weight: f64,
    statement_vi: String,
    statement_en: String,
    source: String,
    /// The study or textbook the cue comes from (optional).
    #[serde(default)]
    reference: Option<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

impl RuleSet {
    /// An empty rule set (for the refinement loop and tests).
    pub fn new(
        name: &str,
        version: u32,
        labels: LabelSet,
        language: Language,
        description: &str,
    ) -> Result<RuleSet, RulesError> {
        let path = PathBuf::from(IN_MEMORY);
        check_name_and_version(&path, name, i64::from(version), None, None)?;
        Ok(RuleSet {
            path,
            header: String::new(),
            name: name.trim().to_string(),
            version,
            labels,
            language,
            description: description.to_string(),
            changelog: Vec::new(),
            rules: Vec::new(),
        })
    }

    /// Reads and validates a rules file.
    pub fn load(path: impl AsRef<Path>) -> Result<RuleSet, RulesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        RuleSet::parse(&text, path)
    }

    /// Parses and validates rule-set text; `path` is only used in messages and kept as
    /// [`RuleSet::path`].
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<RuleSet, RulesError> {
        let path = path.as_ref();
        let lines = LineIndex::new(text);
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start);
            RulesError::Toml {
                path: path.to_path_buf(),
                line: offset.map(|o| lines.line(o)),
                rule_id: offset.and_then(|o| rule_id_around(text, o)),
                message: e.message().trim().to_string(),
            }
        })?;

        let meta = raw.ruleset.into_inner();
        let line_of = |r: Range<usize>| Some(lines.line(r.start));
        check_name_and_version(
            path,
            meta.name.get_ref(),
            *meta.version.get_ref(),
            line_of(meta.name.span()),
            line_of(meta.version.span()),
        )?;
        let labels = LabelSet::new(meta.labels.get_ref().iter().cloned()).map_err(|message| {
            RulesError::Metadata {
                path: path.to_path_buf(),
                line: line_of(meta.labels.span()),
                message: format!("labels: {message}"),
            }
        })?;
        let language =
            Language::from_code(meta.language.get_ref()).ok_or_else(|| RulesError::Metadata {
                path: path.to_path_buf(),
                line: line_of(meta.language.span()),
                message: format!(
                    "language '{}' is not supported (use \"vi\" or \"en\")",
                    meta.language.get_ref()
                ),
            })?;

        let mut changelog = Vec::with_capacity(raw.changelog.len());
        for c in raw.changelog {
            let version = u32::try_from(*c.version.get_ref())
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| RulesError::Metadata {
                    path: path.to_path_buf(),
                    line: line_of(c.version.span()),
                    message: format!(
                        "changelog version {} must be a positive integer",
                        c.version.get_ref()
                    ),
                })?;
            let date = match c.date {
                RawDate::Text(s) => s,
                RawDate::Date(d) => d.to_string(),
            };
            changelog.push(ChangelogEntry {
                version,
                date,
                note: c.note,
            });
        }

        let mut set = RuleSet {
            path: path.to_path_buf(),
            header: leading_comment(text),
            name: meta.name.into_inner().trim().to_string(),
            // `check_name_and_version` has checked the range.
            version: u32::try_from(*meta.version.get_ref()).unwrap_or(1),
            labels,
            language,
            description: meta.description,
            changelog,
            rules: Vec::with_capacity(raw.rule.len()),
        };
        for r in raw.rule {
            let line = line_of(r.id.span());
            let rule = RuleDraft {
                id: r.id.get_ref(),
                label: &r.label,
                condition_text: r.when.get_ref(),
                weight: r.weight,
                statements: Statements::new(r.statement_vi, r.statement_en),
                source: &r.source,
                enabled: r.enabled,
                path,
                line,
                when_line: line_of(r.when.span()),
            }
            .validate(&set.labels)?
            .with_reference(r.reference.as_deref());
            set.push_rule(rule)?;
        }
        Ok(set)
    }

    /// Adds a rule; refuses a duplicate id or a label outside this set. A rule built for
    /// another label set is re-checked against this one.
    pub fn push_rule(&mut self, rule: Rule) -> Result<(), RulesError> {
        if let Some(first) = self.rules.iter().find(|r| r.id() == rule.id()) {
            return Err(RulesError::DuplicateId {
                path: self.path.clone(),
                rule_id: rule.id().to_string(),
                line: rule.line(),
                first_line: first.line(),
            });
        }
        let rule = self.revalidate(rule)?;
        self.rules.push(rule);
        Ok(())
    }

    /// Replaces the rule with the same id; returns the old one (`None` and no change when
    /// there was none).
    pub fn replace_rule(&mut self, rule: Rule) -> Result<Option<Rule>, RulesError> {
        let Some(index) = self.rules.iter().position(|r| r.id() == rule.id()) else {
            return Ok(None);
        };
        let rule = self.revalidate(rule)?;
        Ok(Some(std::mem::replace(&mut self.rules[index], rule)))
    }

    pub fn remove_rule(&mut self, id: &str) -> Option<Rule> {
        let index = self.rules.iter().position(|r| r.id() == id)?;
        Some(self.rules.remove(index))
    }

    /// Turns a rule on or off; false when no rule has that id.
    pub fn set_enabled(&mut self, id: &str, enabled: bool) -> bool {
        match self.rules.iter_mut().find(|r| r.id() == id) {
            Some(rule) => {
                *rule = rule.clone().with_enabled(enabled);
                true
            }
            None => false,
        }
    }

    /// Moves to the next version and records why, as refinement does for each round.
    pub fn bump_version(&mut self, date: &str, note: &str) {
        self.version += 1;
        self.changelog.push(ChangelogEntry {
            version: self.version,
            date: date.to_string(),
            note: note.to_string(),
        });
    }

    /// Checks a rule against this set's labels (a rule built in code may have been checked
    /// against another set); errors name this set's path.
    fn revalidate(&self, rule: Rule) -> Result<Rule, RulesError> {
        RuleDraft {
            id: rule.id(),
            label: rule.label(),
            condition_text: rule.condition_text(),
            weight: rule.weight(),
            statements: rule.statements().clone(),
            source: rule.source(),
            enabled: rule.enabled(),
            path: &self.path,
            line: rule.line(),
            when_line: rule.line(),
        }
        .validate(&self.labels)?;
        Ok(rule)
    }

    /// The rules whose conditions hold on a clip, in file order; disabled rules never fire.
    pub fn evaluate(&self, evidence: &Evidence, probs: &Probs) -> Vec<FiredRule> {
        self.rules
            .iter()
            .filter(|r| r.enabled() && r.matches(evidence, probs))
            .map(|r| FiredRule {
                id: r.id().to_string(),
                label: r.label().to_string(),
                weight: r.weight() as f32,
                statement_en: r.statements().en.clone(),
                statement_vi: Some(r.statements().vi.clone()),
            })
            .collect()
    }

    /// The canonical TOML text: the header comment, then metadata, changelog and rules in
    /// a fixed layout. Parsing it gives back an equal rule set.
    pub fn to_toml_string(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut out = String::new();
        if !self.header.is_empty() {
            out.push_str(&self.header);
            out.push('\n');
        }
        let labels: Vec<String> = self.labels.names().iter().map(|l| q(l)).collect();
        // `write!` into a String cannot fail.
        let _ = writeln!(
            out,
            "[ruleset]\nname = {}\nversion = {}\nlabels = [{}]\nlanguage = {}\ndescription = {}",
            q(&self.name),
            self.version,
            labels.join(", "),
            q(self.language.code()),
            q(&self.description)
        );
        for c in &self.changelog {
            let _ = writeln!(
                out,
                "\n[[changelog]]\nversion = {}\ndate = {}\nnote = {}",
                c.version,
                q(&c.date),
                q(&c.note)
            );
        }
        for r in &self.rules {
            let _ = writeln!(
                out,
                "\n[[rule]]\nid = {}\nlabel = {}\nwhen = {}\nweight = {}\nstatement_vi = {}\nstatement_en = {}\nsource = {}",
                q(r.id()),
                q(r.label()),
                q(r.condition_text()),
                toml::Value::Float(r.weight()),
                q(&r.statements().vi),
                q(&r.statements().en),
                q(r.source())
            );
            if let Some(reference) = r.reference() {
                let _ = writeln!(out, "reference = {}", q(reference));
            }
            if !r.enabled() {
                out.push_str("enabled = false\n");
            }
        }
        out
    }

    /// Writes the canonical text (via a temporary file in the same folder, so a crash never
    /// leaves half a rule set) and makes `path` this set's path.
    pub fn save(&mut self, path: impl AsRef<Path>) -> Result<(), RulesError> {
        let path = path.as_ref();
        let write_err = |source| RulesError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, self.to_toml_string()).map_err(write_err)?;
        std::fs::rename(&tmp, path).map_err(write_err)?;
        self.path = path.to_path_buf();
        Ok(())
    }

    /// SHA-256 (hex) of the canonical text: identifies the rule set in results files.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.to_toml_string().as_bytes()))
    }

    /// `name vN` for reports.
    pub fn id_string(&self) -> String {
        format!("{} v{}", self.name, self.version)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }

    pub fn language(&self) -> Language {
        self.language
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn header_comment(&self) -> &str {
        &self.header
    }

    pub fn set_header_comment(&mut self, header: &str) {
        // Only comment lines survive a round trip, so anything else is turned into one.
        self.header = header
            .lines()
            .map(|l| {
                if l.starts_with('#') {
                    l.to_string()
                } else {
                    format!("# {l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
    }

    pub fn changelog(&self) -> &[ChangelogEntry] {
        &self.changelog
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id() == id)
    }
}

fn check_name_and_version(
    path: &Path,
    name: &str,
    version: i64,
    name_line: Option<usize>,
    version_line: Option<usize>,
) -> Result<(), RulesError> {
    if name.trim().is_empty() {
        return Err(RulesError::Metadata {
            path: path.to_path_buf(),
            line: name_line,
            message: "name is empty".into(),
        });
    }
    if !(1..=i64::from(u32::MAX)).contains(&version) {
        return Err(RulesError::Metadata {
            path: path.to_path_buf(),
            line: version_line,
            message: format!("version {version} must be a positive integer"),
        });
    }
    Ok(())
}

/// The `#` comment block (and blank lines) before the first TOML statement, without the
/// trailing blank lines.
fn leading_comment(text: &str) -> String {
    let block: Vec<&str> = text
        .lines()
        .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        .collect();
    let end = block
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    block[..end]
        .iter()
        .map(|l| l.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Byte offset → 1-based line.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset).max(1)
    }
}

/// For TOML errors inside a `[[rule]]` table: the id of that rule, read from its `id = "…"`
/// line, so the message can name it. Best effort: `None` when the id itself is unreadable.
fn rule_id_around(text: &str, offset: usize) -> Option<String> {
    const HEADER: &str = "[[rule]]";
    let offset = offset.min(text.len());
    // Errors about a whole table (a missing field) point at its `[[rule]]` header itself.
    let mut end = (offset + HEADER.len()).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    let before = &text[..end];
    let table_start = before.rfind(HEADER)?;
    // The error must not be in a later, different table.
    let after_header = &text[table_start + "[[rule]]".len()..];
    let table_end = after_header
        .find("\n[")
        .map_or(text.len(), |i| table_start + "[[rule]]".len() + i);
    if offset > table_end {
        return None;
    }
    text[table_start..table_end].lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if key.trim() != "id" {
            return None;
        }
        let value: toml::Value = toml::from_str(&format!("v = {}", value.trim()))
            .ok()
            .and_then(|t: toml::Table| t.get("v").cloned())?;
        value.as_str().map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_and_header() {
        let idx = LineIndex::new("a\nbc\n\nd");
        assert_eq!(
            (idx.line(0), idx.line(2), idx.line(5), idx.line(6)),
            (1, 2, 3, 4)
        );
        assert_eq!(
            leading_comment("# one\n#two\n\n[ruleset]\n# not header"),
            "# one\n#two"
        );
    }
}
