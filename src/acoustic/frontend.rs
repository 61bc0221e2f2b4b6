//! Frames for the head: the frozen Whisper encoder (default) or per-clip normalised log-mel
//! (the light option for the smallest machines).

use std::path::Path;

use candle_core::{Device, Tensor};

use super::AcousticError;

use super::frontend_export;
use super::model_dir::FrontendConfig;
use super::whisper::{load_ct2, WhisperEncoder, WhisperMel, MODEL_FILE, N_FRAMES_30S};
use crate::features::LogMel;

/// Frame width of each front end.
pub const WHISPER_BASE_DIM: usize = 512;

pub enum Frontend {
    Whisper {
        encoder: Box<WhisperEncoder>,
        mel: WhisperMel,
        blocks: usize,
        level_dbfs: f32,
    },
    LogMel,
}

impl Frontend {
    /// Load the Whisper encoder (only `blocks` blocks of it) from a CTranslate2 model folder,
    /// or from a folder written by `camxuc models export-frontend` (see [`frontend_export`]).
    pub fn whisper(
        model_dir: &Path,
        blocks: usize,
        level_dbfs: f32,
        device: &Device,
    ) -> Result<Self, AcousticError> {
        let (encoder, n_mels) =
            if !model_dir.join(MODEL_FILE).is_file() && frontend_export::is_export(model_dir) {
                let (encoder, m) = frontend_export::load_exported(model_dir, blocks, device)?;
                (encoder, m.num_mel_bins)
            } else {
                let (cfg, vb) = load_ct2(model_dir, device)?;
                (
                    WhisperEncoder::load_blocks(&cfg, vb, blocks)?,
                    cfg.num_mel_bins,
                )
            };
        Ok(Self::Whisper {
            encoder: Box::new(encoder),
            mel: WhisperMel::new(n_mels),
            blocks,
            level_dbfs,
        })
    }

    pub fn from_config(
        cfg: &FrontendConfig,
        models_dir: &Path,
        device: &Device,
    ) -> Result<Self, AcousticError> {
        match cfg {
            FrontendConfig::Whisper {
                model,
                blocks,
                level_dbfs,
                ..
            } => {
                let dir = models_dir.join(model);
                if !dir.join(MODEL_FILE).is_file() && !frontend_export::is_export(&dir) {
                    return Err(AcousticError::FrontendMissing {
                        path: dir,
                        model: model.clone(),
                    });
                }
                Self::whisper(&dir, *blocks, *level_dbfs, device)
            }
            FrontendConfig::LogMel => Ok(Self::LogMel),
        }
    }

    /// Frames [T, D] of one clip's voiced span. `log_mel` is the clip's own log-mel (used by
    /// the log-mel front end).
    pub fn frames(
        &self,
        speech: &[f32],
        log_mel: &LogMel,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self {
            // The head's block, by the one path that level-normalises and windows the span.
            Self::Whisper { blocks, .. } => {
                let mut states = self.block_frames(speech, log_mel, &[*blocks], device)?;
                Ok(states
                    .pop()
                    .expect("block_frames returns one state per block"))
            }
            Self::LogMel => {
                // Subtracting the clip's mean log energy removes the recording gain (a gain
                // is an additive constant in the log domain) and keeps the spectral shape.
                let n = log_mel.data.len().max(1) as f32;
                let mean = log_mel.data.iter().sum::<f32>() / n;
                let data: Vec<f32> = log_mel.data.iter().map(|v| v - mean).collect();
                Tensor::from_vec(data, (log_mel.n_frames.max(1), log_mel.n_mels), device)
            }
        }
    }

    /// Frames [T, D] of each of `blocks` (1-based encoder blocks, one encoder pass) of one
    /// clip's voiced span. The log-mel front end has one "block": its frames.
    pub fn block_frames(
        &self,
        speech: &[f32],
        log_mel: &LogMel,
        blocks: &[usize],
        device: &Device,
    ) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Self::Whisper {
                encoder,
                mel,
                level_dbfs,
                ..
            } => {
                // Per-clip level normalisation: the model never sees the recording's gain.
                let x = normalise_level(speech, *level_dbfs);
                let last = blocks.iter().copied().max().unwrap_or(0);
                let mut per_block = vec![Vec::new(); blocks.len()];
                for w in encoder_windows(&x) {
                    let m = mel.log_mel(w).to_tensor(device)?;
                    let states = encoder.forward_blocks(&m, last)?;
                    for (frames, &b) in per_block.iter_mut().zip(blocks) {
                        frames.push(states[b].squeeze(0)?);
                    }
                }
                per_block.iter().map(|f| Tensor::cat(f, 0)).collect()
            }
            Self::LogMel => Ok(vec![self.frames(speech, log_mel, device)?]),
        }
    }

    pub fn dim(&self, n_mels: usize) -> usize {
        match self {
            Self::Whisper { .. } => WHISPER_BASE_DIM,
            Self::LogMel => n_mels,
        }
    }
}

/// Samples in one encoder window: Whisper's 30 s, the longest its positions cover.
const WINDOW_SAMPLES: usize = N_FRAMES_30S * 160;

/// The pieces a voiced span is encoded in: the span itself up to 30 s; a longer one (a whole
/// recording classified as one clip) in the fewest windows of at most 30 s, of equal length,
/// so that every frame of the recording is pooled (it used to keep the first 30 s only). Each
/// window is encoded as a clip of its own would be; their frames follow one another. An empty
/// span is one (empty) window, as before.
fn encoder_windows(x: &[f32]) -> impl Iterator<Item = &[f32]> {
    let n = x.len().div_ceil(WINDOW_SAMPLES).max(1);
    let len = x.len().div_ceil(n).max(1);
    let empty = x.is_empty().then_some(x);
    x.chunks(len).chain(empty)
}

/// Scale to a fixed RMS level (dBFS); silence stays silence.
pub fn normalise_level(x: &[f32], level_dbfs: f32) -> Vec<f32> {
    let rms = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt();
    if rms < 1e-9 {
        return x.to_vec();
    }
    let g = (10f64.powf(level_dbfs as f64 / 20.0) / rms) as f32;
    x.iter().map(|v| v * g).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_up_to_30_s_is_one_window_and_a_longer_one_is_cut_evenly() {
        let n = |len: usize| {
            encoder_windows(&vec![0.0; len])
                .map(<[f32]>::len)
                .collect::<Vec<_>>()
        };
        assert_eq!(n(16_000), vec![16_000]);
        assert_eq!(n(WINDOW_SAMPLES), vec![WINDOW_SAMPLES]);
        // 30 s + 1 sample: two halves, not 30 s and one sample.
        assert_eq!(n(WINDOW_SAMPLES + 1), vec![240_001, 240_000]);
        // 65 s: three windows of 21.7 s, every sample in one of them.
        let w = n(65 * 16_000);
        assert_eq!(w.len(), 3);
        assert_eq!(w.iter().sum::<usize>(), 65 * 16_000);
        assert!(w.iter().all(|&l| l <= WINDOW_SAMPLES && l + 1 >= w[0]));
        assert_eq!(n(0), vec![0]);
    }
}
