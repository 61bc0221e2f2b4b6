//! Splits: speaker-disjoint, every class on both sides, deterministic for a seed; folds
//! partition the speakers; speaker selection by name and by range.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use camxuc::data::{filter_speakers, speaker_folds, speaker_split, Manifest, Split};
use camxuc::LabelSet;

mod common;

/// A manifest of `speakers` speakers × 3 classes × `per` clips (files need not exist).
fn corpus(dir: &Path, speakers: usize, per: usize, with_speaker: bool) -> Manifest {
    let mut text = String::from(if with_speaker {
        "path,label,speaker\n"
    } else {
        "path,label\n"
    });
    for s in 1..=speakers {
        for label in ["calm", "angry", "panic"] {
            for k in 0..per {
                if with_speaker {
                    text += &format!("a{s:02}_{label}_{k}.wav,{label},actor{s:02}\n");
                } else {
                    text += &format!("a{s:02}_{label}_{k}.wav,{label}\n");
                }
            }
        }
    }
    let p: PathBuf = dir.join("m.csv");
    std::fs::write(&p, text).unwrap();
    Manifest::load(&p, &LabelSet::default()).unwrap()
}

fn speakers_of(m: &Manifest, idx: &[usize]) -> BTreeSet<String> {
    idx.iter()
        .filter_map(|&i| m.rows[i].speaker.clone())
        .collect()
}

fn labels_of(m: &Manifest, idx: &[usize]) -> BTreeSet<String> {
    idx.iter().map(|&i| m.rows[i].label.clone()).collect()
}

fn assert_partition(m: &Manifest, s: &Split) {
    let mut all: Vec<usize> = s.train.iter().chain(&s.val).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..m.rows.len()).collect::<Vec<_>>(),
        "train + val is every row exactly once"
    );
}

#[test]
fn speaker_split_is_disjoint_covers_classes_and_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let m = corpus(dir.path(), 10, 2, true);
    let s = speaker_split(&m, 0.2, 42).unwrap();
    assert_partition(&m, &s);
    assert!(s.speaker_disjoint && s.note.is_none(), "{:?}", s.note);
    let (tr, va) = (speakers_of(&m, &s.train), speakers_of(&m, &s.val));
    assert!(
        tr.is_disjoint(&va),
        "speakers on both sides: {:?}",
        tr.intersection(&va).collect::<Vec<_>>()
    );
    assert_eq!(va.len(), 2);
    assert_eq!(va, s.val_speakers.iter().cloned().collect());
    assert_eq!(labels_of(&m, &s.train).len(), 3);
    assert_eq!(labels_of(&m, &s.val).len(), 3);

    assert_eq!(
        s,
        speaker_split(&m, 0.2, 42).unwrap(),
        "same seed, same split"
    );
    let others: Vec<Split> = (0..5)
        .map(|seed| speaker_split(&m, 0.2, seed).unwrap())
        .collect();
    assert!(
        others.iter().any(|o| o.val_speakers != s.val_speakers),
        "other seeds pick other speakers"
    );
}

#[test]
fn split_puts_every_class_on_both_sides_when_speakers_are_unbalanced() {
    // Speakers 1-3 only have calm, speaker 4 only angry/panic, 5-6 everything: a random
    // speaker pick would often leave a class out of one side.
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("path,label,speaker\n");
    let mut n = 0;
    let mut add = |text: &mut String, label: &str, spk: &str| {
        n += 1;
        *text += &format!("c{n}.wav,{label},{spk}\n");
    };
    for s in ["s1", "s2", "s3"] {
        add(&mut text, "calm", s);
        add(&mut text, "calm", s);
    }
    for l in ["angry", "panic", "angry"] {
        add(&mut text, l, "s4");
    }
    for s in ["s5", "s6"] {
        for l in ["calm", "angry", "panic"] {
            add(&mut text, l, s);
        }
    }
    let p = dir.path().join("m.csv");
    std::fs::write(&p, text).unwrap();
    let m = Manifest::load(&p, &LabelSet::default()).unwrap();
    for seed in 0..20 {
        let s = speaker_split(&m, 0.3, seed).unwrap();
        assert_partition(&m, &s);
        assert_eq!(labels_of(&m, &s.train).len(), 3, "seed {seed}");
        assert_eq!(labels_of(&m, &s.val).len(), 3, "seed {seed}");
        assert!(speakers_of(&m, &s.train).is_disjoint(&speakers_of(&m, &s.val)));
    }
}

#[test]
fn without_speakers_split_is_stratified_by_clip_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let m = corpus(dir.path(), 5, 2, false);
    let s = speaker_split(&m, 0.2, 1).unwrap();
    assert_partition(&m, &s);
    assert!(!s.speaker_disjoint);
    assert!(
        s.note.as_deref().unwrap_or("").contains("clip-level"),
        "{:?}",
        s.note
    );
    for label in ["calm", "angry", "panic"] {
        let n = s.val.iter().filter(|&&i| m.rows[i].label == label).count();
        assert_eq!(n, 2, "{label}: 20 % of 10 clips");
    }
}

#[test]
fn split_rejects_bad_fraction_and_single_speaker() {
    let dir = tempfile::tempdir().unwrap();
    let m = corpus(dir.path(), 1, 2, true);
    let msg = speaker_split(&m, 0.2, 0).unwrap_err().to_string();
    assert!(
        msg.contains("m.csv") && msg.contains("two speakers"),
        "{msg}"
    );
    let msg = speaker_split(&m, 1.5, 0).unwrap_err().to_string();
    assert!(msg.contains("(0, 1)"), "{msg}");
}

#[test]
fn folds_partition_the_speakers() {
    let dir = tempfile::tempdir().unwrap();
    let m = corpus(dir.path(), 8, 1, true);
    let folds = speaker_folds(&m, 4, 3).unwrap();
    assert_eq!(folds.len(), 4);
    let mut seen = BTreeSet::new();
    for f in &folds {
        assert_partition(&m, f);
        let va = speakers_of(&m, &f.val);
        assert!(speakers_of(&m, &f.train).is_disjoint(&va));
        assert_eq!(va.len(), 2);
        assert!(seen.is_disjoint(&va), "a speaker validated twice");
        seen.extend(va);
    }
    assert_eq!(seen.len(), 8, "every speaker validated once");
    assert_eq!(folds, speaker_folds(&m, 4, 3).unwrap());
    assert!((0..5).any(|seed| speaker_folds(&m, 4, seed).unwrap() != folds));
    let msg = speaker_folds(&m, 9, 0).unwrap_err().to_string();
    assert!(msg.contains("at least 9 speakers"), "{msg}");
}

#[test]
fn speaker_ranges_and_names_select_rows() {
    let dir = tempfile::tempdir().unwrap();
    let m = corpus(dir.path(), 16, 1, true);
    let train = filter_speakers(&m, &["actor01-actor12"]).unwrap();
    assert_eq!(train.speakers().len(), 12);
    assert_eq!(train.rows.len(), 36);
    let test = filter_speakers(&m, &["actor13..actor16"]).unwrap();
    assert!(test.speakers().iter().all(|s| s.as_str() >= "actor13"));
    assert_eq!(
        filter_speakers(&m, &["actor02,actor05", "actor07"])
            .unwrap()
            .speakers()
            .len(),
        3
    );
    let msg = filter_speakers(&m, &["actor99"]).unwrap_err().to_string();
    assert!(
        msg.contains("m.csv") && msg.contains("'actor99'") && msg.contains("actor01"),
        "{msg}"
    );
}

#[test]
fn hyphenated_speaker_names_take_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.csv");
    std::fs::write(
        &p,
        "path,label,speaker\na,calm,synth-m1\nb,calm,synth-f2\nc,calm,synth-m3\nd,calm,synth-m4\n",
    )
    .unwrap();
    let m = Manifest::load(&p, &LabelSet::default()).unwrap();
    let sel = filter_speakers(&m, &["synth-m1-synth-m3"]).unwrap();
    assert_eq!(sel.speakers(), vec!["synth-m1", "synth-m3"]);
    assert_eq!(filter_speakers(&m, &["synth-f2"]).unwrap().rows.len(), 1);
}

#[test]
fn ravdess_folds_are_disjoint_when_present() {
    let Some(dir) = common::ravdess_or_skip() else {
        return;
    };
    let m = Manifest::load(&dir.join("manifest.csv"), &LabelSet::default()).unwrap();
    let folds = speaker_folds(&m, 4, 0).unwrap();
    let mut seen = BTreeSet::new();
    for f in &folds {
        let va = speakers_of(&m, &f.val);
        assert!(speakers_of(&m, &f.train).is_disjoint(&va));
        assert_eq!(va.len(), 4);
        assert_eq!(f.val.len(), 96);
        assert_eq!(labels_of(&m, &f.val).len(), 3);
        assert!(seen.is_disjoint(&va));
        seen.extend(va);
    }
    assert_eq!(seen.len(), 16);
    let s = speaker_split(&m, 0.25, 0).unwrap();
    assert_eq!(s.val_speakers.len(), 4);
    let held_out = filter_speakers(&m, &["actor13-actor16"]).unwrap();
    assert_eq!(held_out.rows.len(), 96);
}
