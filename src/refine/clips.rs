//! The clips refinement learns from: held-out acoustic predictions, never training-set ones
//! (those are near perfect and would make every rule look useless).
//!
//! For each manifest row: a clip the model was trained on is taken from the model directory's
//! `train_evidence.jsonl` with its stored held-out probabilities (validation, or out-of-fold
//! from `train --oof-folds`); a training clip without them is left out and counted; a clip the
//! model never saw is analysed and predicted now.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::RefineError;
use crate::acoustic::model_dir::{self, TrainEvidence};
use crate::acoustic::{AcousticError, AcousticModel};
use crate::clip::ClipAnalyser;
use crate::data::manifest::Manifest;
use crate::{Evidence, LabelSet, Probs};

/// Where a clip's acoustic probabilities come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The model's own validation part.
    Validation,
    /// A training clip, predicted by the head of the fold that left its speaker out.
    OutOfFold,
    /// A clip outside the model's training data, predicted now.
    Unseen,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Validation => "validation",
            Source::OutOfFold => "out-of-fold",
            Source::Unseen => "not in training, predicted now",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RefineClip {
    /// The manifest's path column as written.
    pub file: String,
    /// Index of the true label in the label set.
    pub truth: usize,
    pub speaker: Option<String>,
    /// Evidence with z-scores against the model's baseline.
    pub evidence: Evidence,
    /// Calibrated held-out acoustic probabilities.
    pub probs: Probs,
    /// The clip's unfamiliarity when the model predicted it now (`None` for the stored
    /// held-out predictions of its training clips).
    pub unfamiliarity: Option<f32>,
    pub source: Source,
}

/// The usable clips and what was left out, with reasons.
#[derive(Debug, Default)]
pub struct Gathered {
    pub clips: Vec<RefineClip>,
    /// Training clips without held-out probabilities (train with `--oof-folds` to use them).
    pub in_sample: Vec<String>,
    /// Clips that could not be analysed, each with its error.
    pub failures: Vec<String>,
}

/// A path as a lookup key: canonical when the file exists, else as written.
fn key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn read_stored(dir: &Path) -> Result<HashMap<PathBuf, TrainEvidence>, RefineError> {
    // A model directory without it (older, or copied without it): everything is unseen.
    let records = model_dir::read_train_evidence(dir)
        .map_err(AcousticError::from)?
        .unwrap_or_default();
    Ok(records
        .into_iter()
        .map(|r| (key(Path::new(&r.path)), r))
        .collect())
}

/// Held-out predictions for every labelled row of `manifest` (see the module docs).
/// `progress(done, total)` is called as clips are predicted.
pub fn gather(
    manifest: &Manifest,
    model_dir: &Path,
    models_dir: &Path,
    labels: &LabelSet,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Gathered, RefineError> {
    let stored = read_stored(model_dir)?;
    let mut out = Gathered::default();
    let mut unseen = Vec::new();
    for row in &manifest.rows {
        let Some(truth) = labels.index_of(&row.label) else {
            out.failures
                .push(format!("{}: no label in the manifest", row.path.display()));
            continue;
        };
        match stored.get(&key(&row.path)) {
            Some(s) => match &s.probs {
                Some(p) => out.clips.push(RefineClip {
                    file: row.rel_path.clone(),
                    truth,
                    speaker: row.speaker.clone(),
                    evidence: s.evidence.clone(),
                    probs: p.clone(),
                    unfamiliarity: None,
                    source: if s.is_validation() {
                        Source::Validation
                    } else {
                        Source::OutOfFold
                    },
                }),
                None => out.in_sample.push(row.rel_path.clone()),
            },
            None => unseen.push((row, truth)),
        }
    }
    if unseen.is_empty() {
        return Ok(out);
    }
    // Clips outside the training data: analyse and predict them with the model.
    let device = crate::acoustic::default_device();
    let model = AcousticModel::load(model_dir, models_dir, &device)?;
    let mut analyser =
        ClipAnalyser::new(&model.meta.features).map_err(|source| RefineError::Analyser {
            path: model_dir.to_path_buf(),
            source,
        })?;
    let total = unseen.len();
    for (done, (row, truth)) in unseen.into_iter().enumerate() {
        progress(done, total);
        let mut clip = match analyser.analyse(&row.path) {
            Ok(c) => c,
            Err(e) => {
                out.failures.push(e.to_string());
                continue;
            }
        };
        let (probs, unfamiliarity) = model.assess(std::slice::from_mut(&mut clip))?.remove(0);
        out.clips.push(RefineClip {
            file: row.rel_path.clone(),
            truth,
            speaker: row.speaker.clone(),
            evidence: clip.evidence,
            probs,
            unfamiliarity,
            source: Source::Unseen,
        });
    }
    progress(total, total);
    Ok(out)
}
