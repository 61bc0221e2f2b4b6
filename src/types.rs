//! The plain structs the stages talk through (DESIGN.md, "Data flow").
//!
//! They are defined in one place so that audio, features, acoustic model, rules, LLM and
//! pipeline can be built and tested independently. `Decision` is the record every
//! `classify`/`eval` run writes; its JSON schema is versioned by [`DECISION_SCHEMA_VERSION`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Version of the [`Decision`] JSON schema. Bump it when a field changes meaning or is removed;
/// adding an optional field does not need a bump.
pub const DECISION_SCHEMA_VERSION: u32 = 3;

/// Mono audio at a known sample rate. After `audio::load` it is 16 kHz, mono, f32 in [-1, 1].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Where the samples came from, for error messages and reports.
    pub source: Option<PathBuf>,
    /// Start of these samples within the source recording, in seconds (non-zero for windows
    /// of a long recording and for trimmed clips).
    pub offset_s: f64,
    /// Non-fatal problems met while reading (e.g. "truncated after 2.1 s").
    pub warnings: Vec<String>,
}

impl Audio {
    pub fn new(samples: Vec<f32>, sample_rate: u32) -> Self {
        Self {
            samples,
            sample_rate,
            ..Self::default()
        }
    }

    pub fn duration_s(&self) -> f64 {
        if self.sample_rate == 0 {
            0.0
        } else {
            self.samples.len() as f64 / self.sample_rate as f64
        }
    }
}

/// The ordered label set of a model. The default is calm / angry / panic; a label set of
/// another size is a configuration, not a fork.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LabelSet(Vec<String>);

impl Default for LabelSet {
    fn default() -> Self {
        Self(vec!["calm".into(), "angry".into(), "panic".into()])
    }
}

impl LabelSet {
    /// A label set from names; names must be non-empty, lower-case-insensitive unique.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let names: Vec<String> = names
            .into_iter()
            .map(|s| s.into().trim().to_lowercase())
            .collect();
        if names.len() < 2 {
            return Err(format!(
                "a label set needs at least two labels, got {names:?}"
            ));
        }
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err("a label name is empty".into());
            }
            if names[..i].contains(n) {
                return Err(format!("label '{n}' appears twice"));
            }
        }
        Ok(Self(names))
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Index of a label, case-insensitive and ignoring surrounding spaces.
    pub fn index_of(&self, label: &str) -> Option<usize> {
        let l = label.trim();
        self.0.iter().position(|n| n.eq_ignore_ascii_case(l))
    }

    pub fn name(&self, index: usize) -> &str {
        &self.0[index]
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("|"))
    }
}

/// A probability (or score) per label, in label-set order. Serialised as an ordered JSON
/// object `{"calm": 0.7, "angry": 0.2, "panic": 0.1}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probs {
    pub labels: Vec<String>,
    pub values: Vec<f32>,
}

impl Probs {
    pub fn new(labels: &LabelSet, values: Vec<f32>) -> Self {
        debug_assert_eq!(labels.len(), values.len());
        Self {
            labels: labels.names().to_vec(),
            values,
        }
    }

    /// Uniform distribution over the label set.
    pub fn uniform(labels: &LabelSet) -> Self {
        let n = labels.len().max(1);
        Self::new(labels, vec![1.0 / n as f32; labels.len()])
    }

    pub fn get(&self, label: &str) -> Option<f32> {
        self.labels
            .iter()
            .position(|l| l == label)
            .map(|i| self.values[i])
    }

    /// Index and value of the most probable label (first one on ties).
    pub fn argmax(&self) -> (usize, f32) {
        let i = crate::math::argmax(&self.values);
        let v = self.values.get(i).copied().filter(|v| !v.is_nan());
        (i, v.unwrap_or(f32::NEG_INFINITY))
    }

    pub fn top_label(&self) -> &str {
        &self.labels[self.argmax().0]
    }

    /// Difference between the largest and the second-largest value.
    pub fn margin(&self) -> f32 {
        let mut v = self.values.clone();
        v.sort_by(|a, b| b.total_cmp(a));
        match v.as_slice() {
            [a, b, ..] => a - b,
            [a] => *a,
            [] => 0.0,
        }
    }
}

impl Serialize for Probs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.labels.len()))?;
        for (l, v) in self.labels.iter().zip(&self.values) {
            m.serialize_entry(l, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Probs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Probs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object mapping each label to a probability")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probs, A::Error> {
                let mut p = Probs::default();
                while let Some((k, v)) = map.next_entry::<String, f32>()? {
                    p.labels.push(k);
                    p.values.push(v);
                }
                Ok(p)
            }
        }
        d.deserialize_map(V)
    }
}

/// Named acoustic measurements of one clip and their z-scores against a baseline.
///
/// A feature that cannot be measured on a clip (e.g. jitter on a clip with no voiced
/// frames) is absent from `values`, never NaN. Names and units are documented in
/// `features::evidence::FEATURES`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Raw measurement per feature name.
    pub values: BTreeMap<String, f64>,
    /// z-score per feature name against `baseline` (empty when no baseline was given).
    #[serde(default)]
    pub z: BTreeMap<String, f64>,
    /// What the z-scores are relative to: `corpus:<model hash>`, `speaker:<id>` or `none`.
    #[serde(default = "no_baseline")]
    pub baseline: String,
}

fn no_baseline() -> String {
    "none".into()
}

impl Evidence {
    /// The finite z-scores, farthest from the baseline first (ties by name): the one order
    /// of "strongest evidence" the review queue, the report and the LLM prompt show.
    pub fn deviations(&self) -> Vec<(&str, f64)> {
        let mut z: Vec<(&str, f64)> = self
            .z
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        z.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then_with(|| a.0.cmp(b.0)));
        z
    }

    /// Look a feature up by the name rules use: `pitch_mean_st` is the raw value and
    /// `pitch_mean_st_z` its z-score.
    pub fn get(&self, name: &str) -> Option<f64> {
        if let Some(v) = self.values.get(name) {
            return Some(*v);
        }
        name.strip_suffix("_z")
            .and_then(|base| self.z.get(base).copied())
    }
}

/// Where a decision came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Confident clip, decided by the acoustic model.
    Acoustic,
    /// Ambiguous clip, decided by the local LLM reasoner.
    Llm,
    /// Ambiguous clip, decided by the rule-vote reasoner (`--llm none`).
    Rules,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Route::Acoustic => "acoustic",
            Route::Llm => "llm",
            Route::Rules => "rules",
        })
    }
}

/// A rule whose condition held on a clip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FiredRule {
    pub id: String,
    /// The label the rule supports.
    pub label: String,
    pub weight: f32,
    /// Human-readable statement, English.
    pub statement_en: String,
    /// Human-readable statement, Vietnamese.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_vi: Option<String>,
}

/// A time span within the source recording (for `classify --segments`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub start_s: f64,
    pub end_s: f64,
}

/// The result for one clip (or one segment of a long recording).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub schema_version: u32,
    /// The input as the user named it (a path, or a manifest's `path` column).
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segment>,
    /// Final label, or `uncertain` when `--abstain-below` applied.
    pub label: String,
    /// Final probabilities (after the reasoner for routed clips).
    pub probs: Probs,
    /// Calibrated probabilities of the acoustic model alone.
    pub acoustic_probs: Probs,
    pub route: Route,
    /// How far the clip's pooled encoder features lie from the training clips' (≥ 0; about 1
    /// for a new speaker of the training corpus, larger further out); `null` for a model
    /// without an unfamiliarity reference. Added in schema version 2.
    #[serde(default)]
    pub unfamiliarity: Option<f32>,
    pub evidence: Evidence,
    pub fired_rules: Vec<FiredRule>,
    /// What each part contributed to `probs`: the acoustic log-probabilities and their
    /// weight, each fired rule's push, the LLM's term, how unfamiliarity moved the weights
    /// and the fused log-probabilities (`src/pipeline/fusion.rs`). A kept clip has the
    /// acoustic model alone (weight 1). Added in schema version 3 (`null` in older files).
    #[serde(default)]
    pub contributions: Option<crate::pipeline::fusion::Contributions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    /// The language of the rationale (`vi`, `en`): the rule set's for the rule-template
    /// rationale; the LLM's prompt language when an LLM wrote (part of) it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale_language: Option<String>,
    /// Whether every rule id, rule statement and feature name the rationale names is in this
    /// Decision (`src/pipeline/faithful.rs`); for clips a reasoner decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale_check: Option<RationaleCheck>,
    /// What was said, when the clip was transcribed for the reasoner (`--transcribe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// Milliseconds per stage (`decode`, `features`, `acoustic`, `rules`, `reasoner`, …).
    pub timings_ms: BTreeMap<String, f64>,
}

/// What a reasoner gets for one routed clip.
#[derive(Clone, Copy, Debug)]
pub struct Case<'a> {
    pub evidence: &'a Evidence,
    pub acoustic: &'a Probs,
    pub fired: &'a [FiredRule],
    /// What was said, when a speech recogniser ran.
    pub transcript: Option<&'a str>,
    /// The clip's unfamiliarity (see [`Decision::unfamiliarity`]); the fusion trusts the
    /// rules more and the acoustic model less for an unfamiliar clip.
    pub unfamiliarity: Option<f32>,
}

/// A reasoner's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub probs: Probs,
    /// What each part contributed to `probs` (the fusion's terms), when the reasoner fuses.
    pub contributions: Option<crate::pipeline::fusion::Contributions>,
    pub rationale: Option<String>,
    /// The rationale's language (`vi`, `en`), when there is one.
    pub rationale_language: Option<String>,
    /// The part of `rationale` an LLM wrote (what the faithfulness check reads; the
    /// rule-template part names only what fired by construction).
    pub llm_rationale: Option<String>,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub timings_ms: BTreeMap<String, f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReasonerError {
    #[error("reasoner {reasoner}: {message}")]
    Failed { reasoner: String, message: String },
}

/// Decides routed (ambiguous) clips: the rule vote (`--llm none`) and the LLM implement it.
pub trait Reasoner {
    /// Identifier with enough detail to reproduce (e.g. model name and hash).
    fn name(&self) -> String;
    fn decide(&mut self, case: &Case<'_>) -> Result<Verdict, ReasonerError>;
    /// True when an LLM's own label scores make the decision (then `eval` also scores it
    /// alone on every clip, the `llm_only` ablation). False for the rule vote, and for an LLM
    /// that only explains another reasoner's decision.
    fn llm_decides(&self) -> bool {
        false
    }
}

/// Who wrote the rationale text that `pipeline::faithful` checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Author {
    /// The rule template (from the fusion's contributions; faithful by construction).
    #[default]
    Rules,
    /// An LLM (only its own words are checked, not the template it follows).
    Llm,
}

/// The outcome of `pipeline::faithful::check`, recorded in the Decision (`rationale_check`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RationaleCheck {
    /// Whose words were checked.
    #[serde(default)]
    pub author: Author,
    /// No mention of something the Decision does not hold.
    pub faithful: bool,
    /// What the rationale names: rule ids, `statement:<rule id>` for a rule's statement, and
    /// feature names, each once, in the order first found.
    pub mentions: Vec<String>,
    /// The mentions the Decision does not support (a rule that did not fire, a feature that
    /// was not measured).
    pub unsupported: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probs_serialise_as_ordered_object_and_back() {
        let p = Probs::new(&LabelSet::default(), vec![0.2, 0.7, 0.1]);
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(s, r#"{"calm":0.2,"angry":0.7,"panic":0.1}"#);
        let back: Probs = serde_json::from_str(&s).unwrap();
        assert_eq!(back, p);
        assert_eq!(p.top_label(), "angry");
        assert!((p.margin() - 0.5).abs() < 1e-6);
    }

    #[test]
    fn evidence_lookup_by_rule_name() {
        let mut e = Evidence::default();
        e.values.insert("f0_range_st".into(), 7.5);
        e.z.insert("f0_range_st".into(), 1.25);
        assert_eq!(e.get("f0_range_st"), Some(7.5));
        assert_eq!(e.get("f0_range_st_z"), Some(1.25));
        assert_eq!(e.get("jitter_local_pct"), None);
    }

    #[test]
    fn label_set_rejects_duplicates_and_finds_case_insensitively() {
        assert!(LabelSet::new(["calm", "Calm"]).is_err());
        let l = LabelSet::default();
        assert_eq!(l.index_of(" PANIC "), Some(2));
        assert_eq!(l.index_of("fear"), None);
    }

    #[test]
    fn decision_round_trips_through_json() {
        let labels = LabelSet::default();
        let d = Decision {
            schema_version: DECISION_SCHEMA_VERSION,
            file: "a.wav".into(),
            segment: None,
            label: "calm".into(),
            probs: Probs::new(&labels, vec![0.8, 0.1, 0.1]),
            acoustic_probs: Probs::uniform(&labels),
            route: Route::Rules,
            unfamiliarity: Some(1.25),
            evidence: Evidence::default(),
            fired_rules: vec![],
            contributions: None,
            rationale: Some("low effort".into()),
            rationale_language: None,
            rationale_check: None,
            transcript: None,
            timings_ms: BTreeMap::from([("decode".into(), 1.5)]),
        };
        let s = serde_json::to_string(&d).unwrap();
        assert!(s.contains(r#""route":"rules""#));
        let back: Decision = serde_json::from_str(&s).unwrap();
        assert_eq!(back, d);
    }
}
