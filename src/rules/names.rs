//! The names a condition may use, and the nearest-name suggestion for typos.

use crate::features::{feature_spec, FEATURES};
use crate::LabelSet;

use super::condition::{Condition, Operand};

/// Why an identifier is not allowed.
#[derive(Clone, Debug, PartialEq)]
pub enum NameProblem {
    Unknown {
        name: String,
        suggestion: Option<String>,
    },
    GainDependent {
        name: String,
    },
}

/// Every identifier a rule set with these labels may use: gain-invariant catalogue features,
/// their `_z` variants, `p_<label>` and `margin`.
pub fn known_identifiers(labels: &LabelSet) -> Vec<String> {
    let mut names = Vec::new();
    for spec in FEATURES.iter().filter(|f| f.gain_invariant) {
        names.push(spec.name.to_string());
        names.push(format!("{}_z", spec.name));
    }
    names.extend(labels.names().iter().map(|l| format!("p_{l}")));
    names.push("margin".into());
    names
}

/// The first identifier of `condition` that is not allowed, if any.
pub fn check(condition: &Condition, labels: &LabelSet) -> Option<NameProblem> {
    for operand in condition.operands() {
        let problem = match operand {
            Operand::Number(_) | Operand::Margin => None,
            Operand::Prob(label) if labels.names().iter().any(|l| l == label) => None,
            Operand::Prob(_) => Some(unknown(&operand.to_string(), labels)),
            Operand::Feature(name) => {
                let base = name
                    .strip_suffix("_z")
                    .filter(|b| feature_spec(b).is_some())
                    .unwrap_or(name);
                match feature_spec(base) {
                    Some(spec) if spec.gain_invariant => None,
                    Some(_) => Some(NameProblem::GainDependent { name: name.clone() }),
                    None => Some(unknown(name, labels)),
                }
            }
        };
        if problem.is_some() {
            return problem;
        }
    }
    None
}

fn unknown(name: &str, labels: &LabelSet) -> NameProblem {
    NameProblem::Unknown {
        name: name.to_string(),
        suggestion: nearest(name, &known_identifiers(labels)),
    }
}

/// The known name closest to `name` by edit distance, when it is close enough to be a typo
/// (at most a third of the name's length, and at least 2 edits allowed). Ties go to the
/// name listed first, so the answer is deterministic.
pub fn nearest(name: &str, known: &[String]) -> Option<String> {
    let lowered = name.to_lowercase();
    // A name typed as a z-score should get a z-score back (`alpha_ratio_z` means
    // `alpha_ratio_db_z`, not `alpha_ratio_db`), and a raw name a raw one.
    let wants_z = lowered.ends_with("_z");
    let same_kind: Vec<String> = known
        .iter()
        .filter(|k| k.ends_with("_z") == wants_z)
        .cloned()
        .collect();
    nearest_in(&lowered, &same_kind).or_else(|| nearest_in(&lowered, known))
}

fn nearest_in(lowered: &str, known: &[String]) -> Option<String> {
    let limit = (lowered.chars().count() / 3).max(2);
    let mut best: Option<(usize, &String)> = None;
    for candidate in known {
        let d = edit_distance(lowered, candidate);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, candidate));
        }
    }
    if let Some((_, name)) = best {
        return Some(name.clone());
    }
    // A shortened name (`jitter_pct_z` for `jitter_local_pct_z`) is far in edits but
    // keeps every word: suggest the shortest known name that contains all of them in order.
    let words: Vec<&str> = lowered.split('_').filter(|w| !w.is_empty()).collect();
    known
        .iter()
        .filter(|candidate| words.len() >= 2 && contains_words_in_order(candidate, &words))
        .min_by_key(|candidate| candidate.len())
        .cloned()
}

fn contains_words_in_order(candidate: &str, words: &[&str]) -> bool {
    let mut parts = candidate.split('_');
    words.iter().all(|w| parts.any(|p| p == *w))
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_known_name() {
        let known = known_identifiers(&LabelSet::default());
        assert_eq!(nearest("hnr_bd_z", &known).as_deref(), Some("hnr_db_z"));
        assert_eq!(
            nearest("F0_range_st", &known).as_deref(),
            Some("f0_range_st")
        );
        assert_eq!(nearest("p_anger", &known).as_deref(), Some("p_angry"));
        assert_eq!(nearest("completely_unrelated_thing", &known), None);
        assert_eq!(
            nearest("jitter_pct_z", &known).as_deref(),
            Some("jitter_local_pct_z")
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
