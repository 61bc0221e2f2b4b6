//! A trained acoustic model loaded from its directory: clips in, calibrated probabilities out.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::calibrate::softmax_t;
use super::frontend::Frontend;
use super::head::{combine_logits, EnsembleCombine, Head};
use super::model_dir::{self, ModelMeta, RoutingConfig};
use super::train::{predict_views, View};
use super::AcousticError;
use crate::features::Baseline;
use crate::pipeline::analyse::AnalysedClip;
use crate::{Evidence, Probs};

/// Fill `evidence.z` against the corpus baseline and return the head's evidence input
/// vector (z-scores in `inputs` order; a feature not measurable on the clip counts as 0 = typical).
pub fn evidence_vector(
    baseline: &Baseline,
    inputs: &[String],
    evidence: &mut Evidence,
) -> Vec<f32> {
    baseline.apply(evidence);
    inputs
        .iter()
        .map(|n| evidence.z.get(n).copied().unwrap_or(0.0) as f32)
        .collect()
}

pub struct AcousticModel {
    pub dir: PathBuf,
    pub meta: ModelMeta,
    pub routing: RoutingConfig,
    /// The main head first, then the other ensemble members (one head without an ensemble).
    heads: Vec<Head>,
    combine: EnsembleCombine,
    frontend: Frontend,
    device: Device,
}

impl AcousticModel {
    /// Load a model directory; the Whisper front end comes from `models_dir`.
    pub fn load(dir: &Path, models_dir: &Path, device: &Device) -> Result<Self, AcousticError> {
        let meta = model_dir::read_meta(dir)?;
        let routing = model_dir::read_routing(dir)?;
        let weights = dir.join(model_dir::WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&weights, device).map_err(|e| {
            model_dir::ModelDirError::Parse {
                path: weights.clone(),
                message: e.to_string(),
            }
        })?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let (members, combine) = match &meta.ensemble {
            Some(e) => (e.members.clone(), e.combine),
            None => (vec![String::new()], EnsembleCombine::MeanLogits),
        };
        let heads = members
            .iter()
            .map(|prefix| {
                let vb = if prefix.is_empty() {
                    vb.clone()
                } else {
                    vb.pp(prefix)
                };
                Head::load(&meta.head, vb).map_err(|e| model_dir::ModelDirError::Mismatch {
                    path: weights.clone(),
                    message: format!(
                        "weights of head '{}' do not fit model.json: {e}",
                        if prefix.is_empty() { "main" } else { prefix }
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let frontend = Frontend::from_config(&meta.frontend, models_dir, device)?;
        Ok(Self {
            dir: dir.into(),
            meta,
            routing,
            heads,
            combine,
            frontend,
            device: device.clone(),
        })
    }

    /// The clip's view: frames from the front end, evidence z-scores (also written into
    /// `clip.evidence.z`).
    pub fn view(&self, clip: &mut AnalysedClip) -> Result<View, AcousticError> {
        let evidence = evidence_vector(
            &self.meta.evidence_baseline,
            &self.meta.evidence_inputs,
            &mut clip.evidence,
        );
        let frames = self
            .frontend
            .frames(&clip.speech.samples, &clip.log_mel, &self.device)?;
        Ok(View { frames, evidence })
    }

    /// Calibrated probabilities of a batch of clips (their evidence gets z-scores).
    pub fn predict(&self, clips: &mut [AnalysedClip]) -> Result<Vec<Probs>, AcousticError> {
        Ok(self
            .logits(clips)?
            .iter()
            .map(|l| Probs::new(&self.meta.labels, softmax_t(l, self.meta.temperature)))
            .collect())
    }

    /// Uncalibrated logits of a batch of clips (their evidence gets z-scores): the heads'
    /// combined logits when the model is an ensemble (the encoder runs once per clip).
    pub fn logits(&self, clips: &mut [AnalysedClip]) -> Result<Vec<Vec<f32>>, AcousticError> {
        let views = clips
            .iter_mut()
            .map(|c| self.view(c))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&View> = views.iter().collect();
        self.logits_of_views(&refs)
    }

    /// Combined, uncalibrated logits of views already made with [`Self::view`].
    pub fn logits_of_views(&self, views: &[&View]) -> Result<Vec<Vec<f32>>, AcousticError> {
        let per_head = self
            .heads
            .iter()
            .map(|h| predict_views(h, views, &self.device))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(combine_logits(&per_head, self.combine))
    }

    /// Number of heads whose logits are combined (1 without an ensemble).
    pub fn n_heads(&self) -> usize {
        self.heads.len()
    }
}
