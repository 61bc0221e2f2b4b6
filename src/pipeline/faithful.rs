//! Is a rationale faithful to its Decision? Every rule id, rule statement and feature name a
//! rationale mentions must be in the Decision: the rule among the fired rules, the feature
//! among the measured evidence. An LLM that writes "`panic-tremor` fired" when it did not, or
//! cites `jitter_local_pct_z` for a clip where it was not measured, fails the check.
//!
//! What it can see: identifiers and statements written out (case-insensitive; a rule statement
//! counts when the rationale contains it whole). A paraphrase ("the voice shakes") is not a
//! mention; the check does not judge whether the reasoning is sound, only whether what it
//! names exists in the Decision.

use crate::features::FEATURES;
use crate::rules::RuleSet;
use crate::types::{Evidence, FiredRule};
// The check's outcome is part of the Decision, so its types live with the Decision's.
pub use crate::types::{Author, RationaleCheck};

/// Checks `rationale` against the rules of `rules` that fired (`fired`) and the clip's
/// `evidence`.
pub fn check(
    rationale: &str,
    author: Author,
    rules: &RuleSet,
    fired: &[FiredRule],
    evidence: &Evidence,
) -> RationaleCheck {
    let text = rationale.to_lowercase();
    let mut out = RationaleCheck {
        author,
        ..RationaleCheck::default()
    };
    let note = |mention: String, supported: bool, out: &mut RationaleCheck| {
        if out.mentions.contains(&mention) {
            return;
        }
        if !supported {
            out.unsupported.push(mention.clone());
        }
        out.mentions.push(mention);
    };
    let has_fired = |id: &str| fired.iter().any(|f| f.id == id);
    // Rule ids of the set, and any fired id the set no longer has.
    let ids = rules
        .rules()
        .iter()
        .map(|r| r.id().to_string())
        .chain(fired.iter().map(|f| f.id.clone()));
    for id in ids {
        if contains_word(&text, &id.to_lowercase()) {
            let ok = has_fired(&id);
            note(id, ok, &mut out);
        }
    }
    for rule in rules.rules() {
        let s = rule.statements();
        let said = [&s.vi, &s.en]
            .iter()
            .any(|st| !st.trim().is_empty() && text.contains(&st.trim().to_lowercase()));
        if said {
            note(
                format!("statement:{}", rule.id()),
                has_fired(rule.id()),
                &mut out,
            );
        }
    }
    for spec in FEATURES.iter() {
        for name in [format!("{}_z", spec.name), spec.name.to_string()] {
            if contains_word(&text, &name) {
                let ok = evidence.get(&name).is_some_and(f64::is_finite);
                note(name, ok, &mut out);
                break; // `x_z` found: `x` is inside it, not a second mention
            }
        }
    }
    out.faithful = out.unsupported.is_empty();
    out
}

/// Whether `needle` occurs in `text` as a whole identifier: not inside a longer one (the
/// characters on either side are not letters, digits, `_` or `-`).
fn contains_word(text: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let part = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let mut from = 0;
    while let Some(i) = text[from..].find(needle) {
        let start = from + i;
        let end = start + needle.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        if !before.is_some_and(part) && !after.is_some_and(part) {
            return true;
        }
        from = start + needle.chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RuleSet {
        RuleSet::parse(
            "[ruleset]\nname = \"t\"\nversion = 1\nlabels = [\"calm\", \"angry\", \"panic\"]\nlanguage = \"vi\"\n\
             [[rule]]\nid = \"panic-tremor\"\nlabel = \"panic\"\nwhen = \"jitter_local_pct_z > 1\"\nweight = 1.0\n\
             statement_vi = \"Giọng run\"\nstatement_en = \"The voice trembles\"\nsource = \"test\"\n\
             [[rule]]\nid = \"angry-loud\"\nlabel = \"angry\"\nwhen = \"hnr_db_z < -1\"\nweight = 1.0\n\
             statement_vi = \"Giọng gắt\"\nstatement_en = \"The voice is harsh\"\nsource = \"test\"\n",
            "t.toml",
        )
        .expect("test rules parse")
    }

    fn fired(id: &str) -> FiredRule {
        FiredRule {
            id: id.into(),
            label: "panic".into(),
            weight: 1.0,
            statement_en: String::new(),
            statement_vi: None,
        }
    }

    fn evidence() -> Evidence {
        let mut e = Evidence::default();
        e.values.insert("jitter_local_pct".into(), 2.1);
        e.z.insert("jitter_local_pct".into(), 1.8);
        e
    }

    #[test]
    fn a_rationale_naming_what_fired_and_was_measured_is_faithful() {
        let c = check(
            "Panic: panic-tremor fired (jitter_local_pct_z = 1.8); the voice trembles.",
            Author::Llm,
            &rules(),
            &[fired("panic-tremor")],
            &evidence(),
        );
        assert!(c.faithful, "{c:?}");
        assert_eq!(
            c.mentions,
            [
                "panic-tremor",
                "statement:panic-tremor",
                "jitter_local_pct_z"
            ]
        );
    }

    #[test]
    fn a_rule_that_did_not_fire_or_a_feature_not_measured_is_unsupported() {
        let c = check(
            "Angry because angry-loud fired; Giọng gắt; hnr_db is low.",
            Author::Llm,
            &rules(),
            &[fired("panic-tremor")],
            &evidence(),
        );
        assert!(!c.faithful);
        assert_eq!(
            c.unsupported,
            ["angry-loud", "statement:angry-loud", "hnr_db"]
        );
    }

    #[test]
    fn identifiers_inside_longer_words_are_not_mentions() {
        assert!(contains_word("x panic-tremor.", "panic-tremor"));
        assert!(!contains_word("panic-tremors", "panic-tremor"));
        assert!(!contains_word("hnr_db_zz", "hnr_db_z"));
        let c = check(
            "Nothing named here.",
            Author::Llm,
            &rules(),
            &[],
            &Evidence::default(),
        );
        assert!(c.faithful && c.mentions.is_empty());
    }
}
