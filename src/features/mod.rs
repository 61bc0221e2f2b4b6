//! Acoustic features and the named evidence record.
//!
//! - [`Stft`], [`MelExtractor`] → [`LogMel`] (the CNN input) and [`Mfcc`];
//! - [`PitchTracker`] → per-frame F0 with a voicing decision (FFT-based YIN + Viterbi);
//! - [`voice`] → jitter, shimmer, HNR;
//! - [`EvidenceExtractor`] → [`crate::Evidence`], every name documented in [`FEATURES`];
//! - [`Baseline`] → z-scores against a corpus (default) or one speaker (opt-in).
//!
//! Every extractor is built once from a [`FeatureConfig`] and reused across clips: plans and
//! buffers live in it, so the per-clip path does not allocate once buffers have grown.

pub mod baseline;
pub mod catalogue;
pub mod config;
pub mod error;
pub mod evidence;
pub mod measures;
pub mod mel;
pub mod pitch;
pub mod stats;
pub mod stft;
pub mod voice;

pub use baseline::{Baseline, BaselineKind, FeatureStat};
pub use config::FeatureConfig;
pub use error::FeatureError;
pub use evidence::{feature_spec, EvidenceExtractor, FeatureSpec, FEATURES};
pub use mel::{LogMel, MelExtractor, MelFilterbank, Mfcc};
pub use pitch::{PitchTrack, PitchTracker};
pub use stft::Stft;
