//! Pretrained Whisper front end: a CTranslate2 `model.bin` reader, the name mapping into
//! candle-transformers' Whisper names, Whisper's log-mel, and an encoder that stops early
//! and runs over the real clip length.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use camxuc::acoustic::whisper::{load_ct2, WhisperEncoder, WhisperMel};
//! let device = candle_core::Device::Cpu;
//! let (cfg, vb) = load_ct2(std::path::Path::new("models/whisper-base"), &device)?;
//! let encoder = WhisperEncoder::load_blocks(&cfg, vb, 3)?;
//! let mel = WhisperMel::new(cfg.num_mel_bins).log_mel(&vec![0.0f32; 48_000]);
//! let frames = encoder.forward_to_block(&mel.to_tensor(&device)?, 3)?; // [1, 150, 512]
//! # Ok(()) }
//! ```

pub mod ct2;
pub mod encoder;
pub mod mel;
pub mod names;

pub use ct2::{Ct2DType, Ct2Error, Ct2Model, Ct2Variable};
pub use encoder::WhisperEncoder;
pub use mel::{slaney_mel_filters, WhisperLogMel, WhisperMel, N_FRAMES_30S};
pub use names::{ct2_source, load_ct2, whisper_config, Ct2Backend, Ct2Source, MODEL_FILE};

/// SHA-256 of faster-whisper-base's `model.bin` (the concatenated PyPI parts).
pub const WHISPER_BASE_SHA256: &str =
    "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9";
