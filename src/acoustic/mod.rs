//! Acoustic model: a trained head on the frozen Whisper encoder's intermediate frames (or on
//! log-mel frames, the light option), fused with the clip's evidence, with calibrated
//! probabilities.
//!
//! - [`whisper`]: the pretrained front end (CTranslate2 weights read into candle);
//!   [`frontend`]: Whisper or log-mel frames for the head; [`frontend_export`]: just the
//!   encoder blocks a model uses, for small devices (`camxuc models export-frontend`);
//! - [`head`], [`head_training`], [`temperature`]: the attention head, its seeded training,
//!   temperature scaling; [`linear`]: the linear classifier; [`unfamiliar`]: the
//!   unfamiliarity reference; [`augment`]: training-time perturbations;
//! - [`train`]: the `camxuc train` command for the attention classifier, [`train_linear`] for
//!   the linear one; [`adapt`]: `camxuc adapt`; [`calibrate`]: `camxuc calibrate` (a site's
//!   temperature and routing threshold);
//! - [`model`]: a trained model for inference; [`model_dir`]: the model directory format and
//!   which model a command uses; [`embedded`]: the default model built into the binary.

pub mod adapt;
pub mod augment;
pub mod calibrate;
pub mod embedded;
mod error;
pub mod frontend;
pub mod frontend_export;
pub mod head;
pub mod head_training;
pub mod linear;
pub mod model;
pub mod model_dir;
pub mod temperature;
pub mod train;
pub mod train_linear;
pub mod unfamiliar;
pub mod whisper;

pub use error::AcousticError;
pub use model::AcousticModel;
pub use train::{
    default_device, train_model, FrontendChoice, HeldOutCondition, HeldOutPrediction, TrainEvent,
    TrainOptions, TrainReport,
};
