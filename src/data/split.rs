//! Train/validation splits and cross-validation folds that keep speakers apart.
//!
//! A model that has heard a speaker in training recognises the voice rather than the
//! emotion, so whenever speakers are known every split is speaker-disjoint (DESIGN.md,
//! "Manifests"). When no row has a speaker the splits fall back to stratified clip-level
//! splits and say so in [`Split::note`]. Rows without a speaker in a manifest that has
//! speakers are treated as one-clip speakers of their own.
//!
//! Every random choice takes a seed (ChaCha8), so a split is reproducible.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::error::DataError;
use super::manifest::Manifest;

/// Row indices of a manifest split in two.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    /// True when no speaker appears on both sides.
    pub speaker_disjoint: bool,
    /// Speakers in the validation part (empty for a clip-level split).
    pub val_speakers: Vec<String>,
    /// What a user should know about how the split was made (fallbacks, missing classes).
    pub note: Option<String>,
}

/// Speaker-disjoint train/validation split with about `val_fraction` of the clips in
/// validation, chosen so that every class appears in both parts and the class shares of the
/// validation part are as close to `val_fraction` as the speakers allow.
pub fn speaker_split(m: &Manifest, val_fraction: f64, seed: u64) -> Result<Split, DataError> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return Err(cannot(
            m,
            format!("validation fraction must be in (0, 1), got {val_fraction}"),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if !has_speakers(m) {
        let (train, val) = stratified_clip_split(m, val_fraction, &mut rng);
        return Ok(Split {
            train,
            val,
            speaker_disjoint: false,
            val_speakers: vec![],
            note: Some("no speaker column: fell back to a stratified clip-level split".into()),
        });
    }
    let groups = speaker_groups(m);
    if groups.len() < 2 {
        return Err(cannot(
            m,
            format!("needs at least two speakers, found {}", groups.len()),
        ));
    }
    let labels = class_keys(m);
    let n_val = ((groups.len() as f64 * val_fraction).round() as usize).clamp(1, groups.len() - 1);
    let names: Vec<&String> = groups.keys().collect();

    // Random search over speaker subsets of size n_val: cheap for corpora of dozens of
    // speakers and exact enough; the first best score wins, so it is deterministic.
    let mut best: Option<(f64, Vec<usize>)> = None;
    let mut order: Vec<usize> = (0..names.len()).collect();
    for _ in 0..512 {
        order.shuffle(&mut rng);
        let mut chosen = order[..n_val].to_vec();
        chosen.sort_unstable();
        let score = split_score(m, &groups, &names, &chosen, &labels, val_fraction);
        if best.as_ref().is_none_or(|(b, _)| score < *b) {
            best = Some((score, chosen));
        }
    }
    let Some((score, chosen)) = best else {
        return Err(cannot(m, "no speaker subset found".into()));
    };
    let val_speakers: Vec<String> = chosen.iter().map(|&i| names[i].clone()).collect();
    let (train, val) = partition(m, &groups, &val_speakers);
    let note = (score >= MISSING_CLASS_PENALTY)
        .then(|| "no speaker-disjoint split puts every class in both parts".to_string());
    Ok(Split {
        train,
        val,
        speaker_disjoint: true,
        val_speakers,
        note,
    })
}

/// `k` speaker-disjoint folds: each speaker is in the validation part of exactly one fold,
/// and folds hold about the same number of clips. Falls back to stratified clip-level folds
/// when no speakers are known.
pub fn speaker_folds(m: &Manifest, k: usize, seed: u64) -> Result<Vec<Split>, DataError> {
    if k < 2 {
        return Err(cannot(
            m,
            format!("cross-validation needs at least 2 folds, got {k}"),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if !has_speakers(m) {
        if m.rows.len() < k {
            return Err(cannot(m, format!("{k} folds need at least {k} clips")));
        }
        // Deal each class's shuffled clips round-robin over the folds.
        let mut fold_of = vec![0usize; m.rows.len()];
        let mut next = 0usize;
        for (_, mut idx) in by_class(m) {
            idx.shuffle(&mut rng);
            for i in idx {
                fold_of[i] = next % k;
                next += 1;
            }
        }
        let note = "no speaker column: fell back to stratified clip-level folds";
        return Ok((0..k)
            .map(|f| fold_split(&fold_of, f, false, vec![], Some(note.into())))
            .collect());
    }
    let groups = speaker_groups(m);
    if groups.len() < k {
        return Err(cannot(
            m,
            format!(
                "{k} speaker folds need at least {k} speakers, found {}",
                groups.len()
            ),
        ));
    }
    // Shuffle speakers, then give the largest remaining speaker to the lightest fold.
    let mut names: Vec<&String> = groups.keys().collect();
    names.shuffle(&mut rng);
    names.sort_by_key(|n| std::cmp::Reverse(groups[*n].len()));
    let mut load = vec![0usize; k];
    let mut fold_speakers: Vec<Vec<String>> = vec![vec![]; k];
    let mut fold_of = vec![0usize; m.rows.len()];
    for n in names {
        let f = (0..k).min_by_key(|&f| (load[f], f)).unwrap_or(0);
        load[f] += groups[n].len();
        fold_speakers[f].push(n.clone());
        for &i in &groups[n] {
            fold_of[i] = f;
        }
    }
    let labels = class_keys(m);
    Ok((0..k)
        .map(|f| {
            let mut s = fold_split(&fold_of, f, true, fold_speakers[f].clone(), None);
            let missing: Vec<&str> = labels
                .iter()
                .filter(|l| !s.val.iter().any(|&i| &m.rows[i].label == *l))
                .map(|l| l.as_str())
                .collect();
            if !missing.is_empty() {
                s.note = Some(format!(
                    "fold {f} validation has no clip of: {}",
                    missing.join(", ")
                ));
            }
            s
        })
        .collect())
}

/// The rows whose speaker is selected by `selectors`. Each selector is a speaker name
/// (exact) or a range `actor01-actor12` / `actor01..actor12`: both ends share a prefix and
/// end in a number, and every speaker with that prefix and a number in the range is taken.
/// A selector that matches no speaker is an error naming the known speakers.
pub fn filter_speakers(m: &Manifest, selectors: &[&str]) -> Result<Manifest, DataError> {
    let known = m.speakers();
    let mut keep = BTreeSet::new();
    for sel in selectors
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let hits: Vec<&String> = known.iter().filter(|k| selector_matches(sel, k)).collect();
        if hits.is_empty() {
            return Err(DataError::UnknownSpeaker {
                path: m.path.clone(),
                selector: sel.into(),
                known: known.join(", "),
            });
        }
        keep.extend(hits.into_iter().cloned());
    }
    let idx: Vec<usize> = (0..m.rows.len())
        .filter(|&i| m.rows[i].speaker.as_ref().is_some_and(|s| keep.contains(s)))
        .collect();
    Ok(m.subset(&idx))
}

fn selector_matches(sel: &str, speaker: &str) -> bool {
    if sel == speaker {
        return true;
    }
    let Some((prefix, lo, hi)) = parse_range(sel) else {
        return false;
    };
    match split_number(speaker) {
        Some((p, n)) => p == prefix && (lo..=hi).contains(&n),
        None => false,
    }
}

/// `actor01-actor12` or `actor01..actor12` → ("actor", 1, 12). Speaker names may contain
/// hyphens themselves (`synth-m1-synth-m3`), so every hyphen is tried as the separator.
fn parse_range(sel: &str) -> Option<(&str, u64, u64)> {
    let candidates: Vec<(&str, &str)> = match sel.split_once("..") {
        Some(pair) => vec![pair],
        None => sel
            .match_indices('-')
            .map(|(i, _)| (&sel[..i], &sel[i + 1..]))
            .collect(),
    };
    candidates.into_iter().find_map(|(a, b)| {
        let (pa, na) = split_number(a)?;
        let (pb, nb) = split_number(b)?;
        (pa == pb).then_some((pa, na.min(nb), na.max(nb)))
    })
}

/// "actor07" → ("actor", 7); None when the name does not end in digits.
fn split_number(s: &str) -> Option<(&str, u64)> {
    let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let (p, n) = s.split_at(s.len() - digits);
    n.parse().ok().map(|n| (p, n))
}

const MISSING_CLASS_PENALTY: f64 = 100.0;

/// Lower is better: a class missing from either part costs a penalty; otherwise the
/// distance of each class's validation share (and the overall share) from `val_fraction`.
fn split_score(
    m: &Manifest,
    groups: &BTreeMap<String, Vec<usize>>,
    names: &[&String],
    chosen: &[usize],
    labels: &[String],
    frac: f64,
) -> f64 {
    let mut val_count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &m.rows {
        *total.entry(r.label.as_str()).or_default() += 1;
    }
    let mut n_val = 0usize;
    for &c in chosen {
        for &i in &groups[names[c]] {
            *val_count.entry(m.rows[i].label.as_str()).or_default() += 1;
            n_val += 1;
        }
    }
    let mut score = (n_val as f64 / m.rows.len() as f64 - frac).abs();
    for l in labels {
        let t = total.get(l.as_str()).copied().unwrap_or(0);
        let v = val_count.get(l.as_str()).copied().unwrap_or(0);
        if t > 0 && (v == 0 || v == t) && t > 1 {
            score += MISSING_CLASS_PENALTY;
        }
        if t > 0 {
            score += (v as f64 / t as f64 - frac).abs();
        }
    }
    score
}

fn partition(
    m: &Manifest,
    groups: &BTreeMap<String, Vec<usize>>,
    val_speakers: &[String],
) -> (Vec<usize>, Vec<usize>) {
    let val_set: BTreeSet<usize> = val_speakers
        .iter()
        .flat_map(|s| groups[s].iter().copied())
        .collect();
    (0..m.rows.len()).partition(|i| !val_set.contains(i))
}

fn fold_split(
    fold_of: &[usize],
    f: usize,
    disjoint: bool,
    val_speakers: Vec<String>,
    note: Option<String>,
) -> Split {
    let (val, train): (Vec<usize>, Vec<usize>) = (0..fold_of.len()).partition(|&i| fold_of[i] == f);
    Split {
        train,
        val,
        speaker_disjoint: disjoint,
        val_speakers,
        note,
    }
}

fn stratified_clip_split(
    m: &Manifest,
    frac: f64,
    rng: &mut ChaCha8Rng,
) -> (Vec<usize>, Vec<usize>) {
    let mut val = Vec::new();
    for (_, mut idx) in by_class(m) {
        idx.shuffle(rng);
        // At least one clip on each side whenever the class has two or more.
        let n = idx.len();
        let k = if n >= 2 {
            ((n as f64 * frac).round() as usize).clamp(1, n - 1)
        } else {
            0
        };
        val.extend_from_slice(&idx[..k]);
    }
    val.sort_unstable();
    let vs: BTreeSet<usize> = val.iter().copied().collect();
    let train = (0..m.rows.len()).filter(|i| !vs.contains(i)).collect();
    (train, val)
}

fn has_speakers(m: &Manifest) -> bool {
    m.rows.iter().any(|r| r.speaker.is_some())
}

/// Row indices per speaker (sorted by name, for determinism); a row without a speaker is a
/// group of its own.
fn speaker_groups(m: &Manifest) -> BTreeMap<String, Vec<usize>> {
    let mut g: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in m.rows.iter().enumerate() {
        let key = r
            .speaker
            .clone()
            .unwrap_or_else(|| format!("(unknown speaker, line {})", r.line));
        g.entry(key).or_default().push(i);
    }
    g
}

fn by_class(m: &Manifest) -> BTreeMap<String, Vec<usize>> {
    let mut g: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in m.rows.iter().enumerate() {
        g.entry(r.label.clone()).or_default().push(i);
    }
    g
}

fn class_keys(m: &Manifest) -> Vec<String> {
    by_class(m).into_keys().collect()
}

fn cannot(m: &Manifest, reason: String) -> DataError {
    DataError::CannotSplit {
        path: m.path.clone(),
        reason,
    }
}
