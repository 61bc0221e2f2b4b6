//! A trained acoustic model loaded from its directory: clips in, calibrated probabilities out.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::calibrate::softmax_t;
use super::frontend::Frontend;
use super::head::Head;
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
    head: Head,
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
        let head = Head::load(&meta.head, vb).map_err(|e| model_dir::ModelDirError::Mismatch {
            path: weights.clone(),
            message: format!("weights do not fit model.json: {e}"),
        })?;
        let frontend = Frontend::from_config(&meta.frontend, models_dir, device)?;
        Ok(Self {
            dir: dir.into(),
            meta,
            routing,
            head,
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

    /// Uncalibrated logits of a batch of clips (their evidence gets z-scores).
    pub fn logits(&self, clips: &mut [AnalysedClip]) -> Result<Vec<Vec<f32>>, AcousticError> {
        let views = clips
            .iter_mut()
            .map(|c| self.view(c))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&View> = views.iter().collect();
        Ok(predict_views(&self.head, &refs, &self.device)?)
    }
}
