//! Rule files: good ones parse and round-trip, bad ones fail with a message that names the
//! file, the rule and the line.

use std::path::Path;

use camxuc::rules::{Language, Rule, RuleSet, RulesError, Statements, DEFAULT_RULES_PATH};
use camxuc::LabelSet;

const HEADER: &str = r#"# test rules
[ruleset]
name = "test"
version = 3
labels = ["calm", "angry", "panic"]
language = "en"
description = "hand-written for tests"

[[changelog]]
version = 3
date = 2025-06-01
note = "third"
"#;

/// A file with `HEADER` and one rule per `(id, label, when, weight)`.
fn file_with(rules: &[(&str, &str, &str, &str)]) -> String {
    let mut text = HEADER.to_string();
    for (id, label, when, weight) in rules {
        text.push_str(&format!(
            "\n[[rule]]\nid = \"{id}\"\nlabel = \"{label}\"\nwhen = \"{when}\"\nweight = {weight}\nstatement_vi = \"câu {id}\"\nstatement_en = \"statement {id}\"\nsource = \"guideline\"\n"
        ));
    }
    text
}

fn parse_err(text: &str) -> RulesError {
    match RuleSet::parse(text, "bad.toml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

/// Line (1-based) of the first occurrence of `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text[..text.find(needle).expect("needle present")]
        .matches('\n')
        .count()
        + 1
}

#[test]
fn good_file_parses_with_all_fields() {
    let text = file_with(&[
        (
            "a",
            "angry",
            "alpha_ratio_db_z > 1 and (hnr_db_z < -1.0 or f0_aperiodicity_z >= 0.5)",
            "1.5",
        ),
        ("b", "Panic", "not p_calm > 0.5 and margin < 0.2", "2"),
    ]) + "enabled = false\n";
    let set = RuleSet::parse(&text, "good.toml").unwrap();
    assert_eq!(
        (set.name(), set.version(), set.language()),
        ("test", 3, Language::En)
    );
    assert_eq!(set.labels(), &LabelSet::default());
    assert_eq!(set.changelog()[0].date, "2025-06-01");
    assert_eq!(set.rules().len(), 2);
    let b = set.rule("b").unwrap();
    // Labels are normalised to the set's spelling; integer weights are accepted.
    assert_eq!((b.label(), b.weight(), b.enabled()), ("panic", 2.0, false));
    assert_eq!(b.line(), Some(line_of(&text, "id = \"b\"")));
    assert_eq!(
        set.rule("a").unwrap().condition().to_string(),
        "alpha_ratio_db_z > 1 and (hnr_db_z < -1 or f0_aperiodicity_z >= 0.5)"
    );
    assert_eq!(set.header_comment(), "# test rules");
}

#[test]
fn canonical_text_round_trips_and_is_a_fixed_point() {
    let text = file_with(&[
        ("a", "calm", "f0_range_st_z < -0.5", "0.75"),
        ("b", "angry", "p_angry > 0.4", "1"),
    ]);
    let set = RuleSet::parse(&text, "good.toml").unwrap();
    let canonical = set.to_toml_string();
    let again = RuleSet::parse(&canonical, "canonical.toml").unwrap();
    assert_eq!(again, set);
    assert_eq!(again.to_toml_string(), canonical);
    assert_eq!(again.sha256(), set.sha256());
    assert_eq!(set.sha256().len(), 64);
}

#[test]
fn save_and_load_through_a_file_keep_the_set_and_new_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = RuleSet::parse(
        &file_with(&[("a", "calm", "f0_range_st_z < -0.5", "1")]),
        "x.toml",
    )
    .unwrap();
    let labels = set.labels().clone();
    let retuned = set
        .rule("a")
        .unwrap()
        .with_condition("f0_range_st_z < -1.0", &labels)
        .unwrap()
        .with_source("refinement round 1");
    set.replace_rule(retuned).unwrap();
    let new_rule = Rule::new(
        "c",
        "panic",
        "f0_tremor_st_z > 1.2",
        0.8,
        Statements::new("Giọng run.", "Trembling voice."),
        "refinement round 1",
        &labels,
    )
    .unwrap();
    set.push_rule(new_rule).unwrap();
    set.bump_version("2025-07-01", "round 1: retune a, add c");
    let path = dir.path().join("v4.toml");
    set.save(&path).unwrap();
    let back = RuleSet::load(&path).unwrap();
    assert_eq!(back, set);
    assert_eq!(back.version(), 4);
    assert_eq!(back.changelog().len(), 2);
    assert_eq!(back.rule("a").unwrap().source(), "refinement round 1");
    assert_eq!(back.path(), path.as_path());
}

#[test]
fn shipped_default_loads_and_round_trips() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_RULES_PATH);
    let set = RuleSet::load(&path).unwrap();
    assert_eq!(set.language(), Language::Vi);
    assert!(
        (12..=30).contains(&set.rules().len()),
        "{} rules",
        set.rules().len()
    );
    for label in ["calm", "angry", "panic"] {
        assert!(
            set.rules().iter().filter(|r| r.label() == label).count() >= 4,
            "too few {label} rules"
        );
    }
    for r in set.rules() {
        assert_eq!(r.source(), "guideline", "{}", r.id());
        // Vietnamese statements carry diacritics; a statement without any is a typing slip.
        assert!(
            !r.statements().vi.is_ascii(),
            "{}: {}",
            r.id(),
            r.statements().vi
        );
    }
    assert!(set.header_comment().contains("NEVER tuned on RAVDESS"));
    assert_eq!(
        RuleSet::parse(&set.to_toml_string(), "again.toml").unwrap(),
        set
    );
}

#[test]
fn unbalanced_parenthesis_names_file_rule_line_and_column() {
    let text = file_with(&[
        ("ok", "calm", "hnr_db_z > 1", "1"),
        (
            "open",
            "angry",
            "(alpha_ratio_db_z > 1 and hnr_db_z < 0",
            "1",
        ),
    ]);
    let e = parse_err(&text);
    let RulesError::Syntax {
        ref rule_id,
        line,
        column,
        ref token,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (rule_id.as_str(), line, column, token.as_str()),
        (
            "open",
            Some(line_of(&text, "when = \"(alpha")),
            39,
            "end of condition"
        )
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "bad.toml:{}: rule 'open'",
            line_of(&text, "when = \"(alpha")
        )),
        "{msg}"
    );
    assert!(msg.contains("expected ')'"), "{msg}");

    let e = parse_err(&file_with(&[("close", "angry", "hnr_db_z < 0)", "1")]));
    assert!(matches!(e, RulesError::Syntax { column: 13, .. }), "{e}");
}

#[test]
fn dangling_operator_is_a_syntax_error() {
    for (when, token) in [
        ("hnr_db_z > 1 and", "end of condition"),
        ("hnr_db_z > ", "end of condition"),
        ("hnr_db_z > 1 or or margin < 1", "'or'"),
        ("hnr_db_z >> 1", "'>'"),
    ] {
        let e = parse_err(&file_with(&[("dangling", "calm", when, "1")]));
        match &e {
            RulesError::Syntax {
                rule_id, token: t, ..
            } => assert_eq!(
                (rule_id.as_str(), t.as_str()),
                ("dangling", token),
                "{when}"
            ),
            other => panic!("{when}: {other}"),
        }
        assert!(e.to_string().contains("bad.toml:"), "{e}");
    }
    let e = parse_err(&file_with(&[(
        "amp",
        "calm",
        "hnr_db_z > 1 && margin < 1",
        "1",
    )]));
    assert!(e.to_string().contains("write 'and'"), "{e}");
}

#[test]
fn unknown_feature_suggests_the_nearest_name() {
    let text = file_with(&[(
        "typo",
        "angry",
        "alpha_ratio_db_z > 1 and hnr_bd_z < -1",
        "1",
    )]);
    let e = parse_err(&text);
    match &e {
        RulesError::UnknownFeature {
            rule_id,
            line,
            name,
            suggestion,
            ..
        } => {
            assert_eq!(rule_id, "typo");
            assert_eq!(*line, Some(line_of(&text, "when = \"alpha")));
            assert_eq!(name, "hnr_bd_z");
            assert_eq!(suggestion.as_deref(), Some("hnr_db_z"));
        }
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("bad.toml:")
            && msg.contains("'typo'")
            && msg.contains("did you mean 'hnr_db_z'"),
        "{msg}"
    );

    // `p_<label>` must name one of the set's labels.
    let e = parse_err(&file_with(&[("prob", "angry", "p_anger > 0.5", "1")]));
    assert!(
        matches!(&e, RulesError::UnknownFeature { suggestion: Some(s), .. } if s == "p_angry"),
        "{e}"
    );
    // Absolute level depends on the microphone gain and is refused with its own message.
    let e = parse_err(&file_with(&[(
        "level",
        "angry",
        "loudness_mean_dbfs > -20",
        "1",
    )]));
    assert!(matches!(e, RulesError::GainDependentFeature { .. }), "{e}");
}

#[test]
fn unknown_label_duplicate_id_and_bad_weight() {
    let text = file_with(&[("a", "fear", "hnr_db_z > 1", "1")]);
    let e = parse_err(&text);
    assert!(
        matches!(&e, RulesError::UnknownLabel { rule_id, label, line, .. } if rule_id == "a" && label == "fear" && *line == Some(line_of(&text, "id = \"a\""))),
        "{e}"
    );
    assert!(e.to_string().contains("calm, angry, panic"), "{e}");

    let text = file_with(&[
        ("same", "calm", "hnr_db_z > 1", "1"),
        ("same", "angry", "hnr_db_z < -1", "1"),
    ]);
    let e = parse_err(&text);
    let first = line_of(&text, "id = \"same\"");
    match &e {
        RulesError::DuplicateId {
            rule_id,
            line,
            first_line,
            ..
        } => {
            assert_eq!((rule_id.as_str(), *first_line), ("same", Some(first)));
            assert!(line.is_some_and(|l| l > first));
        }
        other => panic!("{other}"),
    }

    for weight in ["0", "-1.5", "nan", "inf"] {
        let e = parse_err(&file_with(&[("w", "calm", "hnr_db_z > 1", weight)]));
        assert!(
            matches!(&e, RulesError::BadWeight { rule_id, .. } if rule_id == "w"),
            "{weight}: {e}"
        );
        assert!(e.to_string().contains("must be a finite number > 0"), "{e}");
    }
}

#[test]
fn invalid_toml_gives_the_line_and_the_rule() {
    let text =
        file_with(&[("a", "calm", "hnr_db_z > 1", "1")]).replace("weight = 1", "weight = 1 1");
    let e = parse_err(&text);
    assert!(
        matches!(&e, RulesError::Toml { line: Some(l), .. } if *l == line_of(&text, "weight = 1 1")),
        "{e}"
    );
    assert!(e.to_string().starts_with("bad.toml:"), "{e}");

    // A misspelt key inside a rule names the rule.
    let text = file_with(&[("b", "calm", "hnr_db_z > 1", "1")]).replace("weight =", "wieght =");
    let e = parse_err(&text);
    assert!(
        matches!(&e, RulesError::Toml { rule_id: Some(id), line: Some(_), .. } if id == "b"),
        "{e}"
    );
    assert!(e.to_string().contains("wieght"), "{e}");

    // A missing field is reported at the rule's header, and names that rule, not the one before.
    let text = file_with(&[
        ("first", "calm", "hnr_db_z > 1", "1"),
        ("second", "calm", "hnr_db_z > 2", "1"),
    ]);
    let cut = text.rfind("source = \"guideline\"").unwrap();
    let text = format!(
        "{}{}",
        &text[..cut],
        &text[cut..].replacen("source = \"guideline\"\n", "", 1)
    );
    let e = parse_err(&text);
    assert!(
        matches!(&e, RulesError::Toml { rule_id: Some(id), line: Some(l), .. } if id == "second" && *l == line_of(&text, "id = \"second\"") - 1),
        "{e}"
    );
    assert!(e.to_string().contains("source"), "{e}");

    // Metadata problems point at the field.
    let e = parse_err(&HEADER.replace("language = \"en\"", "language = \"fr\""));
    assert!(
        matches!(&e, RulesError::Metadata { line: Some(6), .. }),
        "{e}"
    );
    let e = parse_err(&HEADER.replace("version = 3\nlabels", "version = 0\nlabels"));
    assert!(
        matches!(&e, RulesError::Metadata { line: Some(4), .. }),
        "{e}"
    );
}

#[test]
fn missing_file_names_the_path() {
    let e = RuleSet::load("/nonexistent/rules.toml").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/rules.toml"), "{e}");
}

#[test]
fn rules_built_in_code_are_validated_too() {
    let labels = LabelSet::default();
    let e = Rule::new(
        "x",
        "calm",
        "jitter_pct_z > 1",
        1.0,
        Statements::new("a", "b"),
        "refinement round 1",
        &labels,
    )
    .unwrap_err();
    assert!(
        matches!(&e, RulesError::UnknownFeature { suggestion: Some(s), .. } if s == "jitter_local_pct_z"),
        "{e}"
    );
    assert!(e.to_string().starts_with("<memory>"), "{e}");
    let mut set = RuleSet::new("r", 1, labels.clone(), Language::En, "").unwrap();
    let rule = Rule::new(
        "x",
        "calm",
        "hnr_db_z > 1",
        1.0,
        Statements::new("a", "b"),
        "s",
        &labels,
    )
    .unwrap();
    set.push_rule(rule.clone()).unwrap();
    assert!(matches!(
        set.push_rule(rule),
        Err(RulesError::DuplicateId { .. })
    ));
    // A rule for `p_panic` does not fit a two-label set without panic.
    let two = LabelSet::new(["calm", "angry"]).unwrap();
    let mut small = RuleSet::new("r2", 1, two, Language::En, "").unwrap();
    let panic_rule = Rule::new(
        "y",
        "calm",
        "p_panic < 0.2",
        1.0,
        Statements::new("a", "b"),
        "s",
        &labels,
    )
    .unwrap();
    assert!(matches!(
        small.push_rule(panic_rule),
        Err(RulesError::UnknownFeature { .. })
    ));
}

/// A cue citing its study keeps the `reference` through a save and load; a new cue on a
/// feature name that does not exist gets the parser's error naming file, rule and line.
#[test]
fn reference_round_trips_and_a_new_cue_on_an_unknown_feature_is_named() {
    let mut text = file_with(&[("fear-narrow", "panic", "f0_median_st27_z > 0.8", "0.9")]);
    text.push_str("reference = \"Juslin & Laukka (2003), Psychological Bulletin 129(5)\"\n");
    let set = RuleSet::parse(&text, "refs.toml").unwrap();
    let rule = &set.rules()[0];
    assert_eq!(
        rule.reference(),
        Some("Juslin & Laukka (2003), Psychological Bulletin 129(5)")
    );
    let again = RuleSet::parse(&set.to_toml_string(), "refs.toml").unwrap();
    assert_eq!(again, set);
    assert_eq!(again.rules()[0].reference(), rule.reference());
    // Every fear-vs-anger cue of the shipped set cites its source.
    let shipped =
        RuleSet::load(Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_RULES_PATH)).unwrap();
    for id in [
        "panic-high-narrow-pitch",
        "panic-raised-pitch-soft-onsets",
        "panic-irregular-raised-voice",
        "angry-effort-sharp-onsets-wide-pitch",
    ] {
        let r = shipped.rules().iter().find(|r| r.id() == id).unwrap();
        assert!(r.reference().is_some_and(|s| s.contains("(20")), "{id}");
    }

    let mut text = file_with(&[(
        "fear-onsets",
        "panic",
        "f0_median_st27_z > 0.5 and voice_onset_speed_z < 0",
        "0.6",
    )]);
    text.push_str("reference = \"Scherer (2003)\"\n");
    let e = parse_err(&text);
    assert!(
        matches!(&e, RulesError::UnknownFeature { rule_id, name, .. } if rule_id == "fear-onsets" && name == "voice_onset_speed_z"),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("bad.toml:") && msg.contains("'fear-onsets'"),
        "{msg}"
    );
}
