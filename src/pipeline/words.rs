//! What was said, for the reasoner: the offline Whisper transcriber, run only on the clips the
//! reasoner is asked about (routed clips), because a transcript costs seconds per clip on CPU.
//!
//! The rule vote ignores the words; an LLM reasoner reads them (`Words: "…"` in its prompt).
//! A transcription failure never loses the clip: it is decided without the words and the
//! failure is reported on standard error.

use std::path::Path;

use crate::asr::{AsrError, Transcriber, MAX_AUDIO_S};
use crate::Audio;

/// Folder of the Whisper model under the models directory (the acoustic front end's).
pub const WHISPER_DIR: &str = "whisper-base";

pub struct Words {
    transcriber: Transcriber,
    /// Whisper language code (`vi`); `None` detects it per clip.
    language: Option<String>,
}

impl Words {
    /// Loads Whisper from `<models_dir>/whisper-base`. `language`: a Whisper code such as
    /// `vi`, or `None` (or `auto`) to detect it per clip — unreliable on short clips.
    pub fn load(models_dir: &Path, language: Option<&str>) -> Result<Self, AsrError> {
        let device = crate::acoustic::default_device();
        let transcriber = Transcriber::load(&models_dir.join(WHISPER_DIR), &device)?;
        let language = language
            .filter(|l| !l.eq_ignore_ascii_case("auto"))
            .map(str::to_string);
        if let Some(code) = &language {
            if !transcriber.languages().any(|l| l == code) {
                return Err(AsrError::UnknownLanguage {
                    model_dir: transcriber.model_dir().to_path_buf(),
                    language: code.clone(),
                });
            }
        }
        Ok(Self {
            transcriber,
            language,
        })
    }

    /// The words of a (trimmed) clip; a clip longer than Whisper's 30 s window is transcribed
    /// from its first 30 s (`--segments` cuts long recordings into utterances first).
    pub fn of(&mut self, speech: &Audio) -> Result<String, AsrError> {
        let max = MAX_AUDIO_S * speech.sample_rate as usize;
        let transcript = if speech.samples.len() > max {
            let mut head = speech.clone();
            head.samples.truncate(max);
            self.transcriber
                .transcribe(&head, self.language.as_deref())?
        } else {
            self.transcriber
                .transcribe(speech, self.language.as_deref())?
        };
        Ok(transcript.text)
    }
}
