//! Manifests, speaker-disjoint splits, and the synthetic demo corpus.
//!
//! - [`manifest`]: CSV manifests (`path,label` required, `speaker` recommended, other
//!   columns kept), paths relative to the manifest's folder, a content hash for model.json.
//! - [`split`]: seeded speaker-disjoint train/validation splits, actor-fold
//!   cross-validation, and speaker selection (`actor01-actor12`).
//! - [`synth`]: the SYNTHETIC Vietnamese demo corpus made with espeak-ng.

pub mod error;
pub mod manifest;
pub mod split;
pub mod synth;

pub use error::DataError;
pub use manifest::{Manifest, ManifestRow};
pub use split::{filter_speakers, speaker_folds, speaker_split, Split};
pub use synth::{synthesize, SynthOptions, SynthReport};
