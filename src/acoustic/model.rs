//! A trained acoustic model loaded from its directory: clips in, calibrated probabilities out.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::frontend::Frontend;
use super::head::{combine_logits, ln_mean_probs, EnsembleCombine, Head};
use super::head_training::{features_of_views, predict_views, View};
use super::linear::{LinearConfig, LinearHead, Scaler};
use super::model_dir::{self, LinearMember, ModelMeta, RoutingConfig};
use super::temperature::softmax_t;
use super::unfamiliar::PooledInput;
use super::unfamiliar::Unfamiliarity;
use super::AcousticError;
use crate::clip::AnalysedClip;
use crate::features::Baseline;
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

/// The pooled vector `input` describes, from the encoder states of its blocks (in order) and
/// the clip's evidence vector.
pub fn pooled_vector(
    states: &[candle_core::Tensor],
    input: &super::unfamiliar::PooledInput,
    evidence: &[f32],
) -> Result<Vec<f32>, AcousticError> {
    let mut x = super::linear::pool(states, true, input.utterance_norm)?;
    if input.evidence {
        x.extend_from_slice(evidence);
    }
    Ok(x)
}

/// Tensor name prefixes in model.safetensors.
pub const LINEAR_PREFIX: &str = "linear";
pub const UNFAMILIARITY_PREFIX: &str = "unfamiliarity";
/// The linear member of a mixture (model.json `linear_member`).
pub const LINEAR_MEMBER_PREFIX: &str = "linear_member";

/// A mixture's logits: the log of the mean of the heads' and the linear member's calibrated
/// probabilities (each at its own temperature), the formula the generalisation protocol chose
/// (README). A logit vector at temperature 1.
pub fn mix_logits(heads: &[f32], linear: &[f32], member: &LinearMember) -> Vec<f32> {
    ln_mean_probs(
        [
            softmax_t(heads, member.heads_temperature),
            softmax_t(linear, member.linear_temperature),
        ]
        .into_iter(),
    )
}

/// A mixture's logits of clips: [`mix_logits`] of each clip's heads' logits and `member`'s
/// logits of its pooled vector; the heads' logits unchanged without a member. `None` when a
/// clip lacks the pooled vector the member reads.
pub fn mix_clips(
    heads: Vec<Vec<f32>>,
    member: Option<(&LinearHead, &LinearMember)>,
    pooled: &[Option<Vec<f32>>],
) -> Option<Vec<Vec<f32>>> {
    let Some((head, m)) = member else {
        return Some(heads);
    };
    heads
        .iter()
        .zip(pooled)
        .map(|(h, x)| x.as_ref().map(|x| mix_logits(h, &head.logits(x), m)))
        .collect()
}

/// The pooled vector a linear member reads.
pub fn member_input(cfg: &LinearConfig) -> PooledInput {
    PooledInput {
        blocks: cfg.blocks.clone(),
        utterance_norm: cfg.utterance_norm,
        evidence: cfg.evidence_dim > 0,
    }
}

pub struct AcousticModel {
    pub dir: PathBuf,
    pub meta: ModelMeta,
    pub routing: RoutingConfig,
    /// The main head first, then the other ensemble members (one head without an ensemble);
    /// empty when the pooled linear classifier classifies.
    heads: Vec<Head>,
    /// Each head's tensor-name prefix in the weights file ("" for a single head).
    head_prefixes: Vec<String>,
    linear: Option<LinearHead>,
    /// A mixture's linear member (beside the heads).
    member: Option<(LinearHead, LinearMember)>,
    unfamiliarity: Option<Unfamiliarity>,
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
        let tensors = candle_core::safetensors::load(&weights, device).map_err(|source| {
            model_dir::ModelDirError::Weights {
                path: weights.clone(),
                source: Box::new(source),
            }
        })?;
        let get = |name: &str| tensors.get(name).cloned();
        let mismatch = |message: String| model_dir::ModelDirError::Mismatch {
            path: weights.clone(),
            message,
        };
        let linear = match &meta.linear {
            Some(cfg) => {
                Some(LinearHead::from_tensors(&get, LINEAR_PREFIX, cfg).map_err(mismatch)?)
            }
            None => None,
        };
        let unfamiliarity = match &meta.unfamiliarity {
            Some(cfg) => Some(
                Unfamiliarity::from_tensors(&get, UNFAMILIARITY_PREFIX, cfg).map_err(mismatch)?,
            ),
            None => None,
        };
        let member = match &meta.linear_member {
            Some(m) => {
                if !m.linear.std || m.linear.n_labels != meta.labels.len() {
                    return Err(mismatch(format!(
                        "linear_member: a member must pool mean and std and have {} labels",
                        meta.labels.len()
                    ))
                    .into());
                }
                if let Some(input) = meta.unfamiliarity.as_ref().and_then(|u| u.input.as_ref()) {
                    if *input != member_input(&m.linear) {
                        return Err(mismatch(format!(
                            "linear_member reads {:?}, the unfamiliarity reference {input:?}: both must read the same pooled vector",
                            member_input(&m.linear)
                        ))
                        .into());
                    }
                }
                Some((
                    LinearHead::from_tensors(&get, LINEAR_MEMBER_PREFIX, &m.linear)
                        .map_err(mismatch)?,
                    m.clone(),
                ))
            }
            None => None,
        };
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let (members, combine) = match (&meta.ensemble, &linear) {
            (_, Some(_)) => (Vec::new(), EnsembleCombine::MeanLogits),
            (Some(e), None) => (e.members.clone(), e.combine),
            (None, None) => (vec![String::new()], EnsembleCombine::MeanLogits),
        };
        let heads = members
            .iter()
            .map(|prefix| {
                let vb = if prefix.is_empty() {
                    vb.clone()
                } else {
                    vb.pp(prefix)
                };
                Head::load(&meta.head, vb).map_err(|source| model_dir::ModelDirError::HeadWeights {
                    path: weights.clone(),
                    head: if prefix.is_empty() { "main" } else { prefix }.into(),
                    source: Box::new(source),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let frontend = Frontend::from_config(&meta.frontend, models_dir, device)?;
        Ok(Self {
            dir: dir.into(),
            meta,
            routing,
            heads,
            head_prefixes: if linear.is_some() {
                Vec::new()
            } else {
                members
            },
            linear,
            member,
            unfamiliarity,
            combine,
            frontend,
            device: device.clone(),
        })
    }

    /// The pooled input vector of the linear classifier for one clip (its evidence gets
    /// z-scores); `None` for a model of attention heads.
    pub fn pooled_input(&self, clip: &mut AnalysedClip) -> Result<Option<Vec<f32>>, AcousticError> {
        let Some(cfg) = &self.meta.linear else {
            return Ok(None);
        };
        let evidence = evidence_vector(
            &self.meta.evidence_baseline,
            &self.meta.evidence_inputs,
            &mut clip.evidence,
        );
        let blocks = self.frontend.block_frames(
            &clip.speech.samples,
            &clip.log_mel,
            &cfg.blocks,
            &self.device,
        )?;
        let mut x = super::linear::pool(&blocks, cfg.std, cfg.utterance_norm)?;
        if cfg.evidence_dim > 0 {
            x.extend(evidence);
        }
        Ok(Some(x))
    }

    /// Calibrated probabilities and unfamiliarity (when the model has a reference) of each
    /// clip (their evidence gets z-scores).
    pub fn assess(
        &self,
        clips: &mut [AnalysedClip],
    ) -> Result<Vec<(Probs, Option<f32>)>, AcousticError> {
        if self.linear.is_none() {
            let mut views = Vec::with_capacity(clips.len());
            let mut unfamiliar = Vec::with_capacity(clips.len());
            let mut pooled = Vec::with_capacity(clips.len());
            for c in clips.iter_mut() {
                let (v, x) = self.view_and_pooled(c)?;
                views.push(v);
                unfamiliar.push(x.as_ref().and_then(|x| self.unfamiliarity_of(x)));
                pooled.push(x);
            }
            let refs: Vec<&View> = views.iter().collect();
            let heads = self.logits_of_views(&refs)?;
            return Ok(self
                .mix(heads, &pooled)?
                .iter()
                .map(|l| Probs::new(&self.meta.labels, softmax_t(l, self.meta.temperature)))
                .zip(unfamiliar)
                .collect());
        }
        let mut out = Vec::with_capacity(clips.len());
        for clip in clips.iter_mut() {
            let x = self.pooled_input(clip)?.unwrap_or_default();
            let logits = self.linear_logits(&x);
            let p = Probs::new(&self.meta.labels, softmax_t(&logits, self.meta.temperature));
            out.push((p, self.unfamiliarity.as_ref().map(|u| u.score(&x))));
        }
        Ok(out)
    }

    fn linear_logits(&self, x: &[f32]) -> Vec<f32> {
        self.linear
            .as_ref()
            .map(|h| h.logits(x))
            .unwrap_or_default()
    }

    /// Unfamiliarity of a pooled input vector (`None` without a reference).
    pub fn unfamiliarity_of(&self, pooled: &[f32]) -> Option<f32> {
        self.unfamiliarity.as_ref().map(|u| u.score(pooled))
    }

    /// The clip's view: frames from the front end, evidence z-scores (also written into
    /// `clip.evidence.z`).
    pub fn view(&self, clip: &mut AnalysedClip) -> Result<View, AcousticError> {
        Ok(self.view_and_pooled(clip)?.0)
    }

    /// The view and, when the unfamiliarity reference or a linear member reads a pooled vector
    /// (the same one: checked at load), that vector (from the same encoder pass).
    pub fn view_and_pooled(
        &self,
        clip: &mut AnalysedClip,
    ) -> Result<(View, Option<Vec<f32>>), AcousticError> {
        let evidence = evidence_vector(
            &self.meta.evidence_baseline,
            &self.meta.evidence_inputs,
            &mut clip.evidence,
        );
        let member_input = self.member.as_ref().map(|(_, m)| member_input(&m.linear));
        let input = self
            .unfamiliarity
            .as_ref()
            .and_then(|u| u.cfg.input.as_ref())
            .or(member_input.as_ref());
        let (Some(input), super::model_dir::FrontendConfig::Whisper { blocks, .. }) =
            (input, &self.meta.frontend)
        else {
            let frames = self
                .frontend
                .frames(&clip.speech.samples, &clip.log_mel, &self.device)?;
            return Ok((View { frames, evidence }, None));
        };
        let mut wanted = input.blocks.clone();
        wanted.push(*blocks);
        let mut states = self.frontend.block_frames(
            &clip.speech.samples,
            &clip.log_mel,
            &wanted,
            &self.device,
        )?;
        let frames = states.pop().expect("one state per block asked for");
        let pooled = pooled_vector(&states, input, &evidence)?;
        Ok((View { frames, evidence }, Some(pooled)))
    }

    /// Calibrated probabilities of a batch of clips (their evidence gets z-scores).
    pub fn predict(&self, clips: &mut [AnalysedClip]) -> Result<Vec<Probs>, AcousticError> {
        if self.linear.is_some() {
            return Ok(self.assess(clips)?.into_iter().map(|(p, _)| p).collect());
        }
        Ok(self
            .logits(clips)?
            .iter()
            .map(|l| Probs::new(&self.meta.labels, softmax_t(l, self.meta.temperature)))
            .collect())
    }

    /// Uncalibrated logits of a batch of clips (their evidence gets z-scores): the heads'
    /// combined logits when the model is an ensemble (the encoder runs once per clip).
    pub fn logits(&self, clips: &mut [AnalysedClip]) -> Result<Vec<Vec<f32>>, AcousticError> {
        if self.linear.is_some() {
            return clips
                .iter_mut()
                .map(|c| Ok(self.linear_logits(&self.pooled_input(c)?.unwrap_or_default())))
                .collect();
        }
        let (views, pooled): (Vec<View>, Vec<Option<Vec<f32>>>) = clips
            .iter_mut()
            .map(|c| self.view_and_pooled(c))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let refs: Vec<&View> = views.iter().collect();
        let heads = self.logits_of_views(&refs)?;
        self.mix(heads, &pooled)
    }

    /// A mixture's logits from the heads' combined logits and each clip's pooled vector
    /// ([`mix_clips`] with this model's member); the heads' logits unchanged for a model
    /// without a linear member.
    pub fn mix(
        &self,
        heads: Vec<Vec<f32>>,
        pooled: &[Option<Vec<f32>>],
    ) -> Result<Vec<Vec<f32>>, AcousticError> {
        self.mix_with(heads, self.member.as_ref().map(|(h, m)| (h, m)), pooled)
    }

    /// [`Self::mix`] with another linear member (e.g. one refitted by `camxuc adapt`).
    pub fn mix_with(
        &self,
        heads: Vec<Vec<f32>>,
        member: Option<(&LinearHead, &LinearMember)>,
        pooled: &[Option<Vec<f32>>],
    ) -> Result<Vec<Vec<f32>>, AcousticError> {
        mix_clips(heads, member, pooled).ok_or_else(|| {
            model_dir::ModelDirError::Mismatch {
                path: self.dir.join(model_dir::META_FILE),
                message: "the linear member needs the Whisper front end's pooled blocks".into(),
            }
            .into()
        })
    }

    /// Whether the model is a mixture of its heads and a linear member.
    pub fn has_linear_member(&self) -> bool {
        self.member.is_some()
    }

    /// The heads' combined, uncalibrated logits of views already made with [`Self::view`]
    /// (for a mixture, [`Self::mix`] then adds the linear member).
    pub fn logits_of_views(&self, views: &[&View]) -> Result<Vec<Vec<f32>>, AcousticError> {
        let per_head = self
            .heads
            .iter()
            .map(|h| predict_views(h, views, &self.device))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(combine_logits(&per_head, self.combine))
    }

    /// Each attention head's output-layer inputs of the views (`[head][view]`); empty for the
    /// linear classifier.
    pub fn head_features(&self, views: &[&View]) -> Result<Vec<Vec<Vec<f32>>>, AcousticError> {
        Ok(self
            .heads
            .iter()
            .map(|h| features_of_views(h, views, &self.device))
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Each attention head's output layer as a linear head on [`Self::head_features`] (the
    /// identity standardisation), with the head's tensor-name prefix.
    pub fn head_output_layers(&self) -> Result<Vec<(String, LinearHead)>, AcousticError> {
        self.heads
            .iter()
            .zip(&self.head_prefixes)
            .map(|(h, prefix)| {
                let (w, b) = h.output_layer();
                let (k, d) = w.dims2()?;
                let b = match b {
                    Some(b) => b.to_vec1::<f32>()?,
                    None => vec![0.0; k],
                };
                Ok((
                    prefix.clone(),
                    LinearHead {
                        scaler: Scaler {
                            mean: vec![0.0; d],
                            inv_std: vec![1.0; d],
                        },
                        w: w.flatten_all()?.to_vec1::<f32>()?,
                        b,
                        n_labels: k,
                    },
                ))
            })
            .collect()
    }

    /// How the heads' logits are combined.
    pub fn ensemble_combine(&self) -> EnsembleCombine {
        self.combine
    }

    /// Number of heads whose logits are combined (1 without an ensemble or for the linear
    /// classifier).
    pub fn n_heads(&self) -> usize {
        self.heads.len().max(1)
    }
}
