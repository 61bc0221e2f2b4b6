//! The rule-condition parser and the rule-file reader. Any panic is a bug: a bad condition or
//! rules file must come back as a `RulesError` / `ParseError`. A condition that parses must
//! print to canonical text that parses back to the same tree, and evaluate without panicking.

#![no_main]

use camxuc::rules::{condition, RuleSet};
use camxuc::{Evidence, LabelSet, Probs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = condition::parse(text) {
        let canonical = c.to_string();
        let again = condition::parse(&canonical).expect("canonical text must parse");
        assert_eq!(again, c, "canonical text {canonical:?} parses to another tree");
        let mut e = Evidence::default();
        e.values.insert("hnr_db".into(), 12.0);
        e.z.insert("hnr_db".into(), -1.5);
        let p = Probs::new(&LabelSet::default(), vec![0.2, 0.5, 0.3]);
        let _ = c.evaluate(&e, &p);
    }
    // The same bytes as a whole rules file.
    if let Ok(set) = RuleSet::parse(text, "fuzz.toml") {
        let written = set.to_toml_string();
        RuleSet::parse(&written, "fuzz.toml").expect("a written rule set must parse again");
    }
});
