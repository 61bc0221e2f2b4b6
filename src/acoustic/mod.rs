//! Acoustic model: a trained head on the frozen Whisper encoder's intermediate frames (or on
//! log-mel frames, the light option), fused with the clip's evidence, with calibrated
//! probabilities.
//!
//! - [`whisper`]: the pretrained front end (CTranslate2 weights read into candle);
//! - [`head`], [`train`], [`calibrate`]: the model, its seeded training, temperature scaling;
//! - [`fit`]: `camxuc train` end to end; [`model`]: a trained model for inference;
//! - [`model_dir`]: the model directory format.

pub mod adapt;
pub mod augment;
pub mod calibrate;
pub mod embedded;
mod error;
pub mod fit;
pub mod fit_linear;
pub mod frontend;
pub mod head;
pub mod linear;
pub mod model;
pub mod model_dir;
pub mod site;
pub mod train;
pub mod unfamiliar;
pub mod whisper;

pub use error::AcousticError;
pub use fit::{
    default_device, train_model, FrontendChoice, HeldOutCondition, HeldOutPrediction, TrainEvent,
    TrainOptions, TrainReport,
};
pub use model::AcousticModel;
