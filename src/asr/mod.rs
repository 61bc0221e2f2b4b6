//! Speech recognition (what was said), for the reasoner: the offline multilingual Whisper
//! base (CTranslate2 `model.bin` + `tokenizer.json`) with greedy decoding, in Vietnamese or
//! any of Whisper's languages.
//!
//! The encoder always runs on the 30 s padded log-mel, unlike the emotion front end in
//! `acoustic::whisper`, which runs over the clip's own length: Whisper's decoder was trained
//! only on 30 s windows (1500 encoder frames, speech followed by padding), so openai-whisper
//! and CTranslate2 always pad to 30 s, and so does this. A clip of up to 30 s costs one full
//! encoder pass; longer audio is an error ([`MAX_AUDIO_S`]) — cut it first.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use camxuc::asr::Transcriber;
//! let device = candle_core::Device::Cpu;
//! let mut asr = Transcriber::load(std::path::Path::new("models/whisper-base"), &device)?;
//! let audio = camxuc::Audio::new(vec![0.0; 32_000], 16_000);
//! let t = asr.transcribe(&audio, Some("vi"))?;
//! println!("{} ({}; no speech {:.2})", t.text, t.language, t.no_speech_prob);
//! # Ok(()) }
//! ```

pub mod decoder;
pub mod error;
pub mod greedy;
#[cfg(feature = "research")]
pub mod score;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::acoustic::whisper::{load_ct2, WhisperEncoder, WhisperMel, MODEL_FILE, N_FRAMES_30S};
use crate::types::Audio;
pub use decoder::TextDecoder;
pub use error::AsrError;
pub use tokens::{WhisperTokens, TOKENIZER_FILE};

/// Whisper's sample rate; other rates are resampled first.
pub const SAMPLE_RATE: u32 = 16_000;
/// Longest audio one transcription takes: Whisper's window.
pub const MAX_AUDIO_S: usize = 30;
/// Default bound on generated tokens: a 30 s Vietnamese utterance rarely needs more, and a
/// decoder stuck in a loop stops there.
pub const DEFAULT_MAX_TOKENS: usize = 100;

/// Default [`AsrOptions::no_speech_threshold`].
pub const DEFAULT_NO_SPEECH_THRESHOLD: f32 = 0.8;

/// What was said in a clip.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Transcript {
    /// The recognised text, trimmed (empty when nothing was recognised).
    pub text: String,
    /// Language code used for decoding (`"vi"`): the one asked for, else the detected one.
    pub language: String,
    /// Probability of that language among Whisper's languages (1.0 when it was given).
    pub language_prob: f32,
    /// Text tokens generated (after any repetition cut).
    pub tokens: usize,
    /// Mean log-probability of the generated tokens and `<|endoftext|>` (Whisper's
    /// `avg_logprob`; below about −1 the text is unreliable); 0 when the clip was taken as
    /// silence and nothing was decoded.
    pub avg_logprob: f32,
    /// Probability of `<|nocaptions|>` at the start of the transcript (Whisper's no-speech
    /// probability; above about 0.6 with a low `avg_logprob` there was no speech).
    pub no_speech_prob: f32,
}

/// How the recogniser runs.
#[derive(Debug, Clone)]
pub struct AsrOptions {
    /// Threads of a local rayon pool that runs candle's products and element-wise ops;
    /// 0 = rayon's global pool (RAYON_NUM_THREADS, else all cores).
    pub threads: usize,
    /// Most text tokens generated per clip.
    pub max_tokens: usize,
    /// Above this no-speech probability the clip is taken as silence: no text is decoded.
    /// Whisper base invents text on silence (3 s of zeros gave a 30-token YouTube outro with
    /// no-speech probability 0.93 and avg_logprob −0.41, so Whisper's own rule — skip only
    /// when avg_logprob < −1 too — keeps it). On the 30 synthetic Vietnamese clips the
    /// highest no-speech probability of real speech was 0.67, hence 0.8. `None` = always decode.
    pub no_speech_threshold: Option<f32>,
}

impl Default for AsrOptions {
    fn default() -> Self {
        Self {
            threads: 0,
            max_tokens: DEFAULT_MAX_TOKENS,
            no_speech_threshold: Some(DEFAULT_NO_SPEECH_THRESHOLD),
        }
    }
}

/// Whisper encoder + decoder + vocabulary, loaded once and reused for every clip.
pub struct Transcriber {
    model_dir: PathBuf,
    device: Device,
    mel: WhisperMel,
    encoder: WhisperEncoder,
    decoder: TextDecoder,
    tokens: WhisperTokens,
    /// Never generated: non-speech symbols from `config.json` and every special or
    /// timestamp token except `<|endoftext|>`.
    suppressed: Vec<u32>,
    /// Also not allowed as the first token: a blank and `<|endoftext|>` (an empty transcript
    /// is decided by `no_speech_prob`, not by stopping at once).
    suppressed_at_start: Vec<u32>,
    options: AsrOptions,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Transcriber {
    /// Loads `<model_dir>/model.bin`, `config.json` and `tokenizer.json` with default options.
    pub fn load(model_dir: &Path, device: &Device) -> Result<Self, AsrError> {
        Self::load_with(model_dir, device, AsrOptions::default())
    }

    pub fn load_with(
        model_dir: &Path,
        device: &Device,
        options: AsrOptions,
    ) -> Result<Self, AsrError> {
        let weights = model_dir.join(MODEL_FILE);
        if !weights.is_file() {
            return Err(AsrError::MissingFile {
                path: weights,
                what: "the Whisper weights (model.bin)",
            });
        }
        // Check the tokenizer before reading 145 MB of weights: a missing one fails fast.
        if !model_dir.join(TOKENIZER_FILE).is_file() {
            return Err(AsrError::MissingFile {
                path: model_dir.join(TOKENIZER_FILE),
                what: "the Whisper tokenizer (tokenizer.json)",
            });
        }
        let (config, vb) = load_ct2(model_dir, device)?;
        if config.decoder_layers == 0 {
            return Err(AsrError::WrongModel {
                path: weights,
                reason: "no decoder layers (an encoder-only export cannot transcribe)".into(),
            });
        }
        let tokens = WhisperTokens::load(model_dir, config.vocab_size)?;
        let build = |source: candle_core::Error| AsrError::Build {
            path: weights.clone(),
            source: Box::new(source),
        };
        let encoder = WhisperEncoder::load(&config, vb.clone()).map_err(build)?;
        let decoder = TextDecoder::load(&config, vb).map_err(build)?;

        let mut suppressed = config.suppress_tokens.clone();
        suppressed.extend(tokens.end_of_text + 1..config.vocab_size as u32);
        let blank = tokens.encode(" ")?;
        let mut suppressed_at_start = blank;
        suppressed_at_start.push(tokens.end_of_text);

        let pool = if options.threads > 0 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(options.threads)
                .build()
                .map_err(|source| AsrError::ThreadPool {
                    path: weights.clone(),
                    source,
                })?;
            Some(Arc::new(pool))
        } else {
            None
        };
        Ok(Self {
            model_dir: model_dir.to_path_buf(),
            device: device.clone(),
            mel: WhisperMel::new(config.num_mel_bins),
            encoder,
            decoder,
            tokens,
            suppressed,
            suppressed_at_start,
            options,
            pool,
        })
    }

    /// The model folder this recogniser was loaded from.
    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    /// Language codes this model knows (`"en"`, `"vi"`, …).
    pub fn languages(&self) -> impl Iterator<Item = &str> {
        self.tokens.languages.iter().map(|(c, _)| c.as_str())
    }

    /// Transcribes up to 30 s of `audio` greedily. `language` is a Whisper code (`"vi"`);
    /// `None` detects it from the language-token probabilities at the start of the
    /// transcript.
    pub fn transcribe(
        &mut self,
        audio: &Audio,
        language: Option<&str>,
    ) -> Result<Transcript, AsrError> {
        let clip = audio
            .source
            .as_ref()
            .map_or_else(|| "<in memory>".to_string(), |p| p.display().to_string());
        let language_id =
            match language {
                Some(code) => Some(self.tokens.language_id(code).ok_or_else(|| {
                    AsrError::UnknownLanguage {
                        model_dir: self.model_dir.clone(),
                        language: code.to_string(),
                    }
                })?),
                None => None,
            };
        let samples = self.samples_16k(audio, &clip)?;
        let infer = |source: candle_core::Error| AsrError::Inference {
            clip: clip.clone(),
            source: Box::new(source),
        };
        match self.pool.clone() {
            Some(pool) => pool.install(|| self.decode(&samples, language_id).map_err(infer)),
            None => self.decode(&samples, language_id).map_err(infer),
        }
        .and_then(|raw| self.finish(raw))
    }

    fn samples_16k(&self, audio: &Audio, clip: &str) -> Result<Vec<f32>, AsrError> {
        if audio.samples.is_empty() || audio.sample_rate == 0 {
            return Err(AsrError::EmptyAudio {
                clip: clip.to_string(),
            });
        }
        let seconds = audio.duration_s();
        // A few ms of slack: a clip cut at exactly 30 s may round one sample over.
        if seconds > MAX_AUDIO_S as f64 + 0.01 {
            return Err(AsrError::AudioTooLong {
                clip: clip.to_string(),
                seconds,
                limit_s: MAX_AUDIO_S,
            });
        }
        if audio.sample_rate == SAMPLE_RATE {
            return Ok(audio.samples.clone());
        }
        crate::audio::resample(&audio.samples, audio.sample_rate, SAMPLE_RATE).map_err(|source| {
            AsrError::Resample {
                clip: clip.to_string(),
                source,
            }
        })
    }

    /// Encoder once, then the decoder token by token with its caches.
    fn decode(&mut self, samples: &[f32], language: Option<u32>) -> candle_core::Result<Raw> {
        let mel = self
            .mel
            .log_mel_padded(samples, N_FRAMES_30S)
            .to_tensor(&self.device)?;
        let audio_features = self.encoder.forward(&mel)?;
        self.decoder.set_audio(&audio_features)?;

        // The logits after <|startoftranscript|> alone give both the no-speech probability
        // and the language: the causal decoder's first position sees nothing else.
        let first = logits_vec(&self.decoder.forward(&[self.tokens.start_of_transcript])?)?;
        let no_speech_prob =
            (first[self.tokens.no_speech as usize] - greedy::log_sum_exp(&first)).exp();
        let (language, language_prob) = match language {
            Some(id) => (id, 1.0),
            None => self.detect_language(&first),
        };

        let silent = self
            .options
            .no_speech_threshold
            .is_some_and(|threshold| no_speech_prob > threshold);
        if silent {
            return Ok(Raw {
                generated: Vec::new(),
                language,
                language_prob,
                avg_logprob: 0.0,
                no_speech_prob,
            });
        }

        let prompt = [language, self.tokens.transcribe, self.tokens.no_timestamps];
        let mut logits = logits_vec(&self.decoder.forward(&prompt)?)?;
        let room = self
            .decoder
            .max_positions()
            .saturating_sub(1 + prompt.len());
        let max_tokens = self.options.max_tokens.min(room);
        let mut generated: Vec<u32> = Vec::new();
        let mut sum_logprob = 0.0f64;
        let mut scored = 0usize;
        while generated.len() < max_tokens {
            greedy::suppress(&mut logits, &self.suppressed);
            if generated.is_empty() {
                greedy::suppress(&mut logits, &self.suppressed_at_start);
            }
            let Some(next) = greedy::argmax(&logits) else {
                break;
            };
            sum_logprob += f64::from(logits[next] - greedy::log_sum_exp(&logits));
            scored += 1;
            let next = next as u32;
            if next == self.tokens.end_of_text {
                break;
            }
            generated.push(next);
            if let Some(keep) = greedy::loop_cut(&generated) {
                generated.truncate(keep);
                break;
            }
            logits = logits_vec(&self.decoder.forward(&[next])?)?;
        }
        Ok(Raw {
            generated,
            language,
            language_prob,
            avg_logprob: (sum_logprob / scored.max(1) as f64) as f32,
            no_speech_prob,
        })
    }

    /// The most likely language token and its probability among the language tokens.
    fn detect_language(&self, logits: &[f32]) -> (u32, f32) {
        let language_logits: Vec<f32> = self
            .tokens
            .languages
            .iter()
            .map(|&(_, id)| logits[id as usize])
            .collect();
        let norm = greedy::log_sum_exp(&language_logits);
        let best = greedy::argmax(&language_logits).unwrap_or(0);
        let id = self.tokens.languages[best].1;
        (id, (language_logits[best] - norm).exp())
    }

    fn finish(&self, raw: Raw) -> Result<Transcript, AsrError> {
        let text = self.tokens.decode(&raw.generated)?.trim().to_string();
        let language = self
            .tokens
            .languages
            .iter()
            .find(|&&(_, id)| id == raw.language)
            .map(|(code, _)| code.clone())
            .unwrap_or_default();
        Ok(Transcript {
            text,
            language,
            language_prob: raw.language_prob,
            tokens: raw.generated.len(),
            avg_logprob: raw.avg_logprob,
            no_speech_prob: raw.no_speech_prob,
        })
    }
}

/// A decoding's token ids and scores, before detokenisation.
struct Raw {
    generated: Vec<u32>,
    language: u32,
    language_prob: f32,
    avg_logprob: f32,
    no_speech_prob: f32,
}

fn logits_vec(logits: &Tensor) -> candle_core::Result<Vec<f32>> {
    logits.to_vec1::<f32>()
}
