//! In-process decoding with symphonia: probe, decode packet by packet, mix to mono and
//! resample to the target rate as a stream ([`Stream16k`]).
//!
//! This code may panic or abort on hostile input (symphonia bugs); callers normally run it
//! inside the decode worker process (see `isolate`), which contains both.
//!
//! Damage policy, as sox: a file with no valid header is an error; a file that ends early
//! (fewer frames than its header declares, or a read error mid-stream) decodes up to the
//! damage and says so in a warning. NaN/Inf samples are an error (they would poison every
//! feature downstream, and a silent fix would hide a broken file).

use std::fs::File;
use std::path::{Path, PathBuf};

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::error::AudioError;
use super::resample::StreamResampler;

/// Give up after this many undecodable packets in a row: the stream is garbage, not damaged.
const MAX_CONSECUTIVE_BAD_PACKETS: usize = 64;

/// What the header says about the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct StreamInfo {
    pub sample_rate: u32,
    pub channels: u32,
    /// Frames the header declares, when it declares any.
    pub declared_frames: Option<u64>,
}

/// A file being decoded to mono at its native rate, one packet at a time.
pub(crate) struct NativeDecoder {
    path: PathBuf,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    pub info: StreamInfo,
    buf: Option<SampleBuffer<f32>>,
    pub frames: u64,
    pub warnings: Vec<String>,
    bad_in_a_row: usize,
    bad_total: usize,
    done: bool,
}

impl NativeDecoder {
    pub(crate) fn open(path: &Path) -> Result<Self, AudioError> {
        let io_err = |source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            return Err(AudioError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let fmt_opts = FormatOptions {
            enable_gapless: true,
            ..Default::default()
        };
        let probed = symphonia::default::get_probe()
            .format(&hint, mss, &fmt_opts, &MetadataOptions::default())
            .map_err(|e| AudioError::NotAudio {
                path: path.to_path_buf(),
                detail: probe_detail(&e),
            })?;
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| AudioError::NotAudio {
                path: path.to_path_buf(),
                detail: "no audio track".into(),
            })?;
        let params = track.codec_params.clone();
        let track_id = track.id;
        let decoder = symphonia::default::get_codecs()
            .make(&params, &DecoderOptions::default())
            .map_err(|e| {
                let name = symphonia::default::get_codecs()
                    .get_codec(params.codec)
                    .map(|d| d.short_name.to_string())
                    .unwrap_or_else(|| format!("codec {}", params.codec));
                AudioError::UnsupportedCodec {
                    path: path.to_path_buf(),
                    detail: format!("{name}: {e}"),
                }
            })?;
        let info = StreamInfo {
            sample_rate: params.sample_rate.unwrap_or(0),
            channels: params.channels.map(|c| c.count() as u32).unwrap_or(0),
            declared_frames: params.n_frames,
        };
        Ok(Self {
            path: path.to_path_buf(),
            format,
            decoder,
            track_id,
            info,
            buf: None,
            frames: 0,
            warnings: Vec::new(),
            bad_in_a_row: 0,
            bad_total: 0,
            done: false,
        })
    }

    /// Decode the next packet, mixed to mono; `None` at the end of the stream.
    pub(crate) fn next_mono(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        while !self.done {
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.end_of_stream();
                    break;
                }
                Err(SymError::ResetRequired) => {
                    self.warn(
                        "stream parameters change mid-file; decoded the first part only".into(),
                    );
                    self.end_of_stream();
                    break;
                }
                Err(e) => {
                    // A read error mid-stream is damage: keep what we have, as sox does.
                    if self.frames == 0 {
                        return Err(AudioError::Decode {
                            path: self.path.clone(),
                            detail: e.to_string(),
                        });
                    }
                    let at = self.seconds();
                    self.warn(format!(
                        "stream damaged after {at:.2} s ({e}); decoded up to there"
                    ));
                    self.end_of_stream();
                    break;
                }
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            match self.decoder.decode(&packet) {
                Ok(decoded) => {
                    self.bad_in_a_row = 0;
                    let spec = *decoded.spec();
                    if self.info.sample_rate == 0 {
                        self.info.sample_rate = spec.rate;
                    } else if spec.rate != self.info.sample_rate {
                        return Err(AudioError::Decode {
                            path: self.path.clone(),
                            detail: format!(
                                "sample rate changes mid-stream ({} → {} Hz)",
                                self.info.sample_rate, spec.rate
                            ),
                        });
                    }
                    let channels = spec.channels.count().max(1);
                    let frames = decoded.frames();
                    if frames == 0 {
                        continue;
                    }
                    let need = decoded.capacity() as u64;
                    if self
                        .buf
                        .as_ref()
                        .is_none_or(|b| (b.capacity() as u64) < need * channels as u64)
                    {
                        self.buf = Some(SampleBuffer::new(need, spec));
                    }
                    let Some(buf) = self.buf.as_mut() else {
                        continue;
                    };
                    buf.copy_interleaved_ref(decoded);
                    let mono = mix_to_mono(buf.samples(), channels);
                    if let Some(i) = mono.iter().position(|v| !v.is_finite()) {
                        let first_at_s =
                            (self.frames + i as u64) as f64 / self.info.sample_rate.max(1) as f64;
                        return Err(AudioError::NonFinite {
                            path: self.path.clone(),
                            first_at_s,
                        });
                    }
                    self.frames += mono.len() as u64;
                    return Ok(Some(mono));
                }
                Err(SymError::DecodeError(e)) => {
                    // Symphonia's advice: a corrupt packet is skipped, the stream goes on.
                    self.bad_in_a_row += 1;
                    self.bad_total += 1;
                    if self.bad_in_a_row >= MAX_CONSECUTIVE_BAD_PACKETS {
                        return Err(AudioError::Decode {
                            path: self.path.clone(),
                            detail: format!(
                                "{} undecodable packets in a row (last: {e})",
                                self.bad_in_a_row
                            ),
                        });
                    }
                }
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.end_of_stream();
                    break;
                }
                Err(e) => {
                    return Err(AudioError::Decode {
                        path: self.path.clone(),
                        detail: e.to_string(),
                    });
                }
            }
        }
        Ok(None)
    }

    fn seconds(&self) -> f64 {
        self.frames as f64 / self.info.sample_rate.max(1) as f64
    }

    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    fn end_of_stream(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if self.bad_total > 0 {
            let n = self.bad_total;
            self.warn(format!("skipped {n} undecodable packet(s)"));
        }
        if let Some(declared) = self.info.declared_frames {
            // Lossy codecs may trim a few hundred frames of padding; only a real shortfall counts.
            let rate = self.info.sample_rate.max(1) as u64;
            if declared > self.frames + rate / 10 {
                let (got, want) = (self.seconds(), declared as f64 / rate as f64);
                self.warn(format!(
                    "file is truncated: decoded {got:.2} s of the {want:.2} s its header declares"
                ));
            }
        }
    }
}

/// Average the channels of interleaved samples (works for any channel count).
pub(crate) fn mix_to_mono(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    let scale = 1.0 / channels as f32;
    interleaved
        .chunks_exact(channels)
        .map(|f| f.iter().sum::<f32>() * scale)
        .collect()
}

fn probe_detail(e: &SymError) -> String {
    match e {
        SymError::Unsupported(_) => "unknown format or no valid header".into(),
        SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "no valid header before the end of the file".into()
        }
        other => format!("invalid header: {other}"),
    }
}

/// A file decoded, mixed and resampled to `to_rate`, pulled in pieces.
pub(crate) struct Stream16k {
    path: PathBuf,
    dec: NativeDecoder,
    rs: StreamResampler,
    max_out: Option<u64>,
    limit_s: f64,
    out_total: u64,
    to_rate: u32,
    finished: bool,
}

impl Stream16k {
    /// Open `path`. With `max_duration_s`, a longer file fails with `TooLong` (up front when
    /// the header declares its length, otherwise as soon as the limit is passed).
    pub(crate) fn open(
        path: &Path,
        to_rate: u32,
        max_duration_s: Option<f64>,
    ) -> Result<Self, AudioError> {
        let dec = NativeDecoder::open(path)?;
        let info = dec.info;
        if let (Some(limit_s), Some(n)) = (max_duration_s, info.declared_frames) {
            if info.sample_rate > 0 {
                let duration_s = n as f64 / info.sample_rate as f64;
                // A declared length far beyond the file's size is damage, not length: let the
                // decoder find out how much is really there.
                let plausible = declared_is_plausible(path, n, info.channels);
                if duration_s > limit_s && plausible {
                    return Err(AudioError::TooLong {
                        path: path.to_path_buf(),
                        duration_s,
                        limit_s,
                    });
                }
            }
        }
        let rate = if info.sample_rate == 0 {
            to_rate
        } else {
            info.sample_rate
        };
        let rs = StreamResampler::new(rate, to_rate).map_err(|e| e.with_path(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            dec,
            rs,
            max_out: max_duration_s.map(|s| (s * to_rate as f64).ceil() as u64),
            limit_s: max_duration_s.unwrap_or(f64::INFINITY),
            out_total: 0,
            to_rate,
            finished: false,
        })
    }

    pub(crate) fn warnings(&self) -> &[String] {
        &self.dec.warnings
    }

    /// Next resampled piece (possibly empty while the filter fills); `None` at the end.
    pub(crate) fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        if self.finished {
            return Ok(None);
        }
        let mut out = Vec::new();
        match self.dec.next_mono()? {
            Some(mono) => self
                .rs
                .push(&mono, &mut out)
                .map_err(|e| e.with_path(&self.path))?,
            None => {
                self.finished = true;
                self.rs
                    .finish(&mut out)
                    .map_err(|e| e.with_path(&self.path))?;
                if self.out_total + out.len() as u64 == 0 {
                    return Err(AudioError::ZeroLength {
                        path: self.path.clone(),
                    });
                }
            }
        }
        self.out_total += out.len() as u64;
        if let Some(max) = self.max_out {
            if self.out_total > max {
                return Err(AudioError::TooLong {
                    path: self.path.clone(),
                    duration_s: self.out_total as f64 / self.to_rate as f64,
                    limit_s: self.limit_s,
                });
            }
        }
        Ok(Some(out))
    }
}

/// Whether a header's frame count could fit in the file (assuming at least 1 byte per
/// sample per channel for PCM-like formats; compressed formats are always plausible since
/// their declared counts come from real stream data).
fn declared_is_plausible(path: &Path, frames: u64, channels: u32) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return true;
    };
    let is_pcm_container = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "wav" | "wave" | "aif" | "aiff" | "caf"
        )
    });
    !is_pcm_container || frames.saturating_mul(channels.max(1) as u64) <= meta.len()
}
