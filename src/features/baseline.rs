//! z-scores of evidence against a baseline: by default the training corpus (stored in
//! `model.json`), optionally one speaker's own earlier clips.
//!
//! The speaker baseline is an explicit opt-in: it needs labelled history of the same person,
//! which a headline evaluation on unseen speakers does not have, so headline figures always
//! use the corpus baseline.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::catalogue::{feature_spec, FEATURES};
use super::stats::{percentile_of_sorted, sorted_percentile};
use crate::Evidence;

/// |z| is clamped here: a z of 40 on a degenerate clip says nothing more than 8 does, and
/// unbounded values would dominate rule conditions and model inputs.
pub const Z_CLAMP: f64 = 8.0;
/// Consistency factor that makes the MAD estimate σ for normal data.
const MAD_TO_SIGMA: f64 = 1.4826;
/// A feature measured on fewer clips than this gets no baseline entry (and no z-score).
pub const MIN_CLIPS_PER_FEATURE: usize = 3;

/// What a baseline was fitted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum BaselineKind {
    /// A training corpus (id: the model or corpus hash). The default and the only kind used
    /// for headline figures.
    Corpus(String),
    /// One speaker's own clips (id: the speaker). Opt-in.
    Speaker(String),
}

impl fmt::Display for BaselineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaselineKind::Corpus(id) => write!(f, "corpus:{id}"),
            BaselineKind::Speaker(id) => write!(f, "speaker:{id}"),
        }
    }
}

/// Robust location and scale of one feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureStat {
    /// Median over the fitted clips.
    pub center: f64,
    /// 1.4826 × MAD, floored at the feature's resolution (see [`super::FeatureSpec`]).
    pub scale: f64,
    /// Clips the feature was measured on.
    pub n: usize,
}

/// Per-feature median / MAD of gain-invariant evidence features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub kind: BaselineKind,
    /// Clips fitted on.
    pub n: usize,
    pub features: BTreeMap<String, FeatureStat>,
}

impl Baseline {
    /// Fits on `clips`. Only gain-invariant catalogue features get an entry, so nothing
    /// downstream can take a z-score of absolute level.
    pub fn fit(kind: BaselineKind, clips: &[Evidence]) -> Baseline {
        let mut features = BTreeMap::new();
        let mut values = Vec::with_capacity(clips.len());
        let mut deviations = Vec::with_capacity(clips.len());
        for spec in FEATURES.iter().filter(|f| f.gain_invariant) {
            values.clear();
            values.extend(
                clips
                    .iter()
                    .filter_map(|e| e.values.get(spec.name))
                    .copied()
                    .filter(|v| v.is_finite()),
            );
            if values.len() < MIN_CLIPS_PER_FEATURE {
                continue;
            }
            let Some(center) = sorted_percentile(&mut values, 0.5) else {
                continue;
            };
            deviations.clear();
            deviations.extend(values.iter().map(|v| (v - center).abs()));
            deviations.sort_unstable_by(|a, b| a.total_cmp(b));
            let mad = percentile_of_sorted(&deviations, 0.5);
            let scale = (MAD_TO_SIGMA * mad).max(spec.resolution);
            features.insert(
                spec.name.to_string(),
                FeatureStat {
                    center,
                    scale,
                    n: values.len(),
                },
            );
        }
        Baseline {
            kind,
            n: clips.len(),
            features,
        }
    }

    /// Fills `evidence.z` for every feature that has both a value and a baseline entry
    /// (clamped to ±[`Z_CLAMP`]) and records which baseline it was.
    pub fn apply(&self, evidence: &mut Evidence) {
        evidence.z.clear();
        for (name, stat) in &self.features {
            if let Some(v) = evidence.values.get(name) {
                let z = ((v - stat.center) / stat.scale).clamp(-Z_CLAMP, Z_CLAMP);
                if z.is_finite() {
                    evidence.z.insert(name.clone(), z);
                }
            }
        }
        evidence.baseline = self.kind.to_string();
    }

    /// Feature names in this baseline that the catalogue does not know (e.g. a model file
    /// from another version): callers loading a model can refuse or warn.
    pub fn unknown_features(&self) -> Vec<&str> {
        self.features
            .keys()
            .map(String::as_str)
            .filter(|n| feature_spec(n).is_none())
            .collect()
    }
}
