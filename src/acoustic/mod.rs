//! Acoustic model. [`whisper`]: the pretrained Whisper encoder used as a frozen front end
//! (CTranslate2 weights read into candle); the trained head is built in a later step.

pub mod whisper;
pub mod head;
pub mod train;
pub mod calibrate;
pub mod model_dir;
