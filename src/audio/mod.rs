//! Audio in: decode (isolated), mono mix, resample to 16 kHz, trim silence.
//!
//! - [`load`] reads a whole file (up to [`LoadOptions::max_duration_s`]) as 16 kHz mono f32.
//! - [`open_windows`] reads a long recording in consecutive windows with bounded memory.
//! - [`trim_silence`], [`voiced_spans`], [`split_utterances`]: energy VAD (gain-invariant).
//! - [`resample`]: band-limited resampling of in-memory samples.
//!
//! Decoding runs in a worker process (see [`isolate`]) so a hostile file can only fail itself.
//! When no worker executable can be found or started, decoding falls back to this process
//! inside `catch_unwind` (panics are contained, aborts are not) and every result says so in
//! `Audio::warnings`.
//!
//! Formats: whatever symphonia 0.5.5 reads — WAV (PCM 8/16/24/32-bit, float), FLAC, MP3,
//! OGG/Vorbis, and more. Channels are averaged to mono (any count).

mod decode;
mod error;
pub mod field;
pub mod isolate;
mod resample;
mod vad;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::AudioError;
pub use isolate::serve_child_if_requested;
pub use resample::resample;
pub use vad::{split_utterances, trim_silence, voiced_spans, VadConfig};

use crate::types::Audio;
use decode::Stream16k;
use isolate::{Worker, WorkerStream};

/// The rate every loaded clip has.
pub const TARGET_RATE: u32 = 16_000;

/// Default analysis window for long recordings, seconds.
pub const DEFAULT_WINDOW_S: f64 = 30.0;

/// Files larger than this are never decoded in-process (the fallback's allocation guard).
const IN_PROCESS_MAX_FILE_BYTES: u64 = 1 << 30;

/// How to read a file.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// Decode in a worker process (default). Off: decode in this process (faster to start,
    /// but a decoder abort would take the caller down).
    pub isolate: bool,
    /// [`load`] refuses files longer than this (seconds); read those with [`open_windows`].
    pub max_duration_s: f64,
    /// Address-space limit of the worker process, bytes (0 = none).
    pub worker_memory_limit: u64,
    /// The worker is killed if it sends nothing for this long, seconds.
    pub timeout_s: f64,
    /// Worker executable; `None` = [`isolate::find_worker_exe`].
    pub worker_exe: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            isolate: true,
            max_duration_s: 600.0,
            worker_memory_limit: 1 << 30,
            timeout_s: 30.0,
            worker_exe: None,
        }
    }
}

/// Decode `path` to 16 kHz mono f32 with `Audio::source` set. Non-fatal problems (a truncated
/// file, skipped packets, no isolation) are in `Audio::warnings`.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Audio, AudioError> {
    let mut src = Source::open(path, opts, Some(opts.max_duration_s))?;
    let mut samples = Vec::new();
    while let Some(piece) = src.next_chunk()? {
        samples.extend_from_slice(&piece);
    }
    Ok(Audio {
        samples,
        sample_rate: TARGET_RATE,
        source: Some(path.to_path_buf()),
        offset_s: 0.0,
        warnings: src.take_warnings(),
    })
}

/// Read a recording of any length as consecutive `window_s`-second windows of 16 kHz mono
/// (the last one shorter), each with `offset_s` set. Memory stays around one window: the file
/// is decoded as the windows are taken. `opts.max_duration_s` does not apply. Warnings found
/// while decoding are attached to the window in which they are known (truncation: the last).
pub fn open_windows(
    path: &Path,
    window_s: f64,
    opts: &LoadOptions,
) -> Result<AudioWindows, AudioError> {
    if !(window_s.is_finite() && window_s > 0.0) {
        return Err(AudioError::Decode {
            path: path.to_path_buf(),
            detail: format!("bad window length {window_s} s"),
        });
    }
    let src = Source::open(path, opts, None)?;
    Ok(AudioWindows {
        path: path.to_path_buf(),
        src,
        window: ((window_s * TARGET_RATE as f64).round() as usize).max(1),
        buf: Vec::new(),
        emitted: 0,
        done: false,
    })
}

/// Iterator over the windows of a recording (see [`open_windows`]).
pub struct AudioWindows {
    path: PathBuf,
    src: Source,
    window: usize,
    buf: Vec<f32>,
    emitted: u64,
    done: bool,
}

impl Iterator for AudioWindows {
    type Item = Result<Audio, AudioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut ended = false;
        while self.buf.len() < self.window {
            match self.src.next_chunk() {
                Ok(Some(piece)) => self.buf.extend_from_slice(&piece),
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        if ended {
            self.done = true;
            if self.buf.is_empty() {
                return None;
            }
        }
        let take = self.buf.len().min(self.window);
        let rest = self.buf.split_off(take);
        let samples = std::mem::replace(&mut self.buf, rest);
        let offset_s = self.emitted as f64 / TARGET_RATE as f64;
        self.emitted += samples.len() as u64;
        Some(Ok(Audio {
            samples,
            sample_rate: TARGET_RATE,
            source: Some(self.path.clone()),
            offset_s,
            warnings: self.src.take_warnings(),
        }))
    }
}

/// A file being decoded to 16 kHz mono, by a worker or (fallback) in this process.
enum Source {
    Worker(WorkerStream),
    InProcess {
        path: PathBuf,
        stream: Option<Box<Stream16k>>,
        warnings: Vec<String>,
        reported: usize,
    },
}

impl Source {
    fn open(
        path: &Path,
        opts: &LoadOptions,
        max_duration_s: Option<f64>,
    ) -> Result<Source, AudioError> {
        let mut warnings = Vec::new();
        if opts.isolate {
            let exe = opts.worker_exe.clone().or_else(isolate::find_worker_exe);
            let why_not = match exe {
                Some(exe) => match Worker::acquire(&exe, opts.worker_memory_limit) {
                    Ok(w) => {
                        let max_out =
                            max_duration_s.map(|s| (s * TARGET_RATE as f64).ceil() as u64);
                        let timeout = Duration::from_secs_f64(opts.timeout_s.clamp(0.1, 86_400.0));
                        return WorkerStream::start(w, path, TARGET_RATE, max_out, timeout)
                            .map(Source::Worker);
                    }
                    Err(isolate::Unavailable(why)) => why,
                },
                None => "no camxuc executable found (set CAMXUC_DECODER_EXE)".into(),
            };
            warnings.push(format!("decoded without process isolation: {why_not}"));
        }
        // In-process fallback: refuse very large files up front (an allocation guard short of
        // a memory limit) and contain panics.
        let size = std::fs::metadata(path)
            .map_err(|source| AudioError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if size > IN_PROCESS_MAX_FILE_BYTES {
            return Err(AudioError::Decode {
                path: path.to_path_buf(),
                detail: format!("{size} bytes is too large to decode without isolation"),
            });
        }
        let stream = contain(path, || Stream16k::open(path, TARGET_RATE, max_duration_s))?;
        Ok(Source::InProcess {
            path: path.to_path_buf(),
            stream: Some(Box::new(stream)),
            warnings,
            reported: 0,
        })
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        match self {
            Source::Worker(w) => w.next_chunk(),
            Source::InProcess { path, stream, .. } => {
                let Some(s) = stream.as_mut() else {
                    return Ok(None);
                };
                let r = contain(path, || s.next_chunk());
                if r.is_err() {
                    // After a panic the decoder state is unknown; stop here.
                    *stream = None;
                }
                r
            }
        }
    }

    fn take_warnings(&mut self) -> Vec<String> {
        match self {
            Source::Worker(w) => std::mem::take(&mut w.warnings),
            Source::InProcess {
                stream,
                warnings,
                reported,
                ..
            } => {
                let mut out = std::mem::take(warnings);
                if let Some(s) = stream {
                    // The decoder keeps all its warnings; hand each out once.
                    out.extend(s.warnings().iter().skip(*reported).cloned());
                    *reported = s.warnings().len();
                }
                out
            }
        }
    }
}

/// Run decoder code, turning a panic into that file's error.
fn contain<T>(path: &Path, f: impl FnOnce() -> Result<T, AudioError>) -> Result<T, AudioError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(AudioError::DecoderCrashed {
                path: path.to_path_buf(),
                detail: format!("decoder panicked: {msg}"),
            })
        }
    }
}
