//! Energy voice-activity detection: trim leading/trailing silence and cut at pauses.
//!
//! Thresholds are relative to the clip itself, so the result does not depend on the recording
//! level. Two thresholds (hysteresis): speech *cores* are frames within `core_range_db` of the
//! clip's loud frames (95th percentile); each core is then extended to the neighbouring frames
//! that stay within `range_db` of them. Both must also be `floor_margin_db` above the quiet
//! frames (10th percentile, the noise floor). So a faint click or breath in the silence around
//! an utterance is not taken for speech, while soft onsets and decays next to speech are kept.
//! Only a clip whose loud frames are below `silence_dbfs` (essentially digital silence) is
//! judged silent by an absolute level.
//!
//! An energy VAD cannot tell speech from steady loud noise; on such a clip it keeps everything.

use crate::types::{Audio, Segment};

/// Settings of the energy VAD. The defaults suit speech at any rate.
#[derive(Clone, Debug, PartialEq)]
pub struct VadConfig {
    /// Analysis frame length, seconds.
    pub frame_s: f64,
    /// Hop between frames, seconds.
    pub hop_s: f64,
    /// A speech core frame is at most this far (dB) below the clip's loud frames.
    pub core_range_db: f64,
    /// Cores extend over neighbouring frames at most this far (dB) below the loud frames.
    pub range_db: f64,
    /// A voiced frame is at least this far (dB) above the clip's noise floor.
    pub floor_margin_db: f64,
    /// A clip whose loud frames are below this level (dBFS) is silent.
    pub silence_dbfs: f64,
    /// Speech cores shorter than this are clicks, not speech.
    pub min_voiced_s: f64,
    /// Kept around each voiced span so onsets and decays are not clipped.
    pub pad_s: f64,
    /// Gaps shorter than this do not split utterances ([`voiced_spans`]).
    pub min_pause_s: f64,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            frame_s: 0.025,
            hop_s: 0.010,
            core_range_db: 20.0,
            range_db: 40.0,
            floor_margin_db: 10.0,
            silence_dbfs: -70.0,
            min_voiced_s: 0.05,
            pad_s: 0.08,
            min_pause_s: 0.3,
        }
    }
}

/// Per-frame voicing decisions and the frame geometry in samples.
struct Frames {
    voiced: Vec<bool>,
    hop: usize,
    len: usize,
}

fn frame_decisions(samples: &[f32], rate: u32, cfg: &VadConfig) -> Frames {
    let len = ((cfg.frame_s * rate as f64).round() as usize).max(1);
    let hop = ((cfg.hop_s * rate as f64).round() as usize).max(1);
    if samples.len() < len {
        return Frames {
            voiced: Vec::new(),
            hop,
            len,
        };
    }
    let n = (samples.len() - len) / hop + 1;
    let db: Vec<f64> = (0..n)
        .map(|i| {
            let f = &samples[i * hop..i * hop + len];
            let ms = f.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / len as f64;
            10.0 * (ms + 1e-20).log10()
        })
        .collect();
    let mut sorted = db.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let (loud, floor) = (pct(0.95), pct(0.10));
    if loud < cfg.silence_dbfs {
        return Frames {
            voiced: vec![false; n],
            hop,
            len,
        };
    }
    if loud - floor <= cfg.floor_margin_db {
        // No frame stands out from the quiet ones: there is no silence to trim (a tightly
        // cropped utterance, or steady noise), so keep everything rather than call it silent.
        return Frames {
            voiced: vec![true; n],
            hop,
            len,
        };
    }
    let core_thr = (loud - cfg.core_range_db).max(floor + cfg.floor_margin_db);
    let edge_thr = (loud - cfg.range_db).max(floor + cfg.floor_margin_db);
    let core: Vec<bool> = db.iter().map(|&d| d > core_thr).collect();
    let min_run = (cfg.min_voiced_s / cfg.hop_s).ceil() as usize;
    let mut voiced = vec![false; n];
    for (start, end) in runs(&core) {
        if end - start < min_run {
            continue; // a click, not speech
        }
        let (mut s, mut e) = (start, end);
        while s > 0 && db[s - 1] > edge_thr {
            s -= 1;
        }
        while e < n && db[e] > edge_thr {
            e += 1;
        }
        voiced[s..e].iter_mut().for_each(|v| *v = true);
    }
    Frames { voiced, hop, len }
}

/// Start/end (exclusive) frame indices of the true runs.
fn runs(flags: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &f) in flags.iter().enumerate() {
        match (f, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, flags.len()));
    }
    out
}

/// Voiced sample ranges (padded, merged across pauses shorter than `min_pause_s`).
fn sample_spans(audio: &Audio, cfg: &VadConfig, min_pause_s: f64) -> Vec<(usize, usize)> {
    let fr = frame_decisions(&audio.samples, audio.sample_rate, cfg);
    let rate = audio.sample_rate as f64;
    let pad = (cfg.pad_s * rate).round() as usize;
    let max_gap = (min_pause_s * rate).round() as usize;
    let total = audio.samples.len();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (s, e) in runs(&fr.voiced) {
        let start = (s * fr.hop).saturating_sub(pad);
        let end = ((e - 1) * fr.hop + fr.len + pad).min(total);
        match spans.last_mut() {
            Some(last) if start <= last.1.saturating_add(max_gap) => last.1 = last.1.max(end),
            _ => spans.push((start, end)),
        }
    }
    spans
}

fn slice(audio: &Audio, start: usize, end: usize) -> Audio {
    Audio {
        samples: audio.samples[start..end].to_vec(),
        sample_rate: audio.sample_rate,
        source: audio.source.clone(),
        offset_s: audio.offset_s + start as f64 / audio.sample_rate.max(1) as f64,
        warnings: audio.warnings.clone(),
    }
}

/// Cut leading and trailing silence, keeping `pad_s` around the voiced span; `offset_s`
/// moves to where the kept part starts in the source.
///
/// An all-silent clip gives an **empty** `Audio` (no samples, same rate and source, a
/// warning added); callers that need speech turn that into [`super::AudioError::AllSilent`].
pub fn trim_silence(audio: &Audio, cfg: &VadConfig) -> Audio {
    let spans = sample_spans(audio, cfg, f64::INFINITY);
    match (spans.first(), spans.last()) {
        (Some(first), Some(last)) => slice(audio, first.0, last.1),
        _ => {
            let mut empty = slice(audio, 0, 0);
            empty
                .warnings
                .push("no voiced frames: the audio is silent".into());
            empty
        }
    }
}

/// Utterances: voiced spans separated by pauses of at least `min_pause_s`, as times in the
/// source recording (`offset_s` included). Empty for a silent clip.
pub fn voiced_spans(audio: &Audio, cfg: &VadConfig) -> Vec<Segment> {
    let rate = audio.sample_rate.max(1) as f64;
    sample_spans(audio, cfg, cfg.min_pause_s)
        .into_iter()
        .map(|(s, e)| Segment {
            start_s: audio.offset_s + s as f64 / rate,
            end_s: audio.offset_s + e as f64 / rate,
        })
        .collect()
}

/// [`voiced_spans`] cut out of the clip, each with its `offset_s` in the source.
pub fn split_utterances(audio: &Audio, cfg: &VadConfig) -> Vec<Audio> {
    sample_spans(audio, cfg, cfg.min_pause_s)
        .into_iter()
        .map(|(s, e)| slice(audio, s, e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Silence (faint noise) - tone burst - pause - tone burst - silence, at 16 kHz.
    fn bursts(gain: f32) -> Audio {
        let rate = 16_000;
        let mut x = Vec::new();
        let mut seed = 1u32;
        let mut noise = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let mut push = |secs: f64, amp: f32, x: &mut Vec<f32>| {
            for i in 0..(secs * rate as f64) as usize {
                let t = i as f32 / rate as f32;
                x.push(
                    gain * (amp * (2.0 * std::f32::consts::PI * 200.0 * t).sin()
                        + 0.0005 * noise()),
                );
            }
        };
        push(0.5, 0.0, &mut x);
        push(0.4, 0.5, &mut x);
        push(0.6, 0.0, &mut x);
        push(0.3, 0.3, &mut x);
        push(0.7, 0.0, &mut x);
        Audio::new(x, rate)
    }

    #[test]
    fn trims_to_the_voiced_span_at_any_gain() {
        for gain in [1.0, 0.05, 0.002] {
            let t = trim_silence(&bursts(gain), &VadConfig::default());
            // Voiced from 0.5 s to 1.8 s, plus 0.08 s padding on each side.
            assert!(
                (t.offset_s - 0.42).abs() < 0.03,
                "gain {gain}: start {}",
                t.offset_s
            );
            let end = t.offset_s + t.duration_s();
            assert!((end - 1.88).abs() < 0.04, "gain {gain}: end {end}");
        }
    }

    #[test]
    fn splits_at_pauses_with_source_times() {
        let mut a = bursts(1.0);
        a.offset_s = 10.0;
        let spans = voiced_spans(&a, &VadConfig::default());
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert!((spans[0].start_s - 10.42).abs() < 0.03 && (spans[1].end_s - 11.88).abs() < 0.04);
        let parts = split_utterances(&a, &VadConfig::default());
        assert_eq!(parts.len(), 2);
        assert!((parts[1].offset_s - spans[1].start_s).abs() < 1e-9);
        // A longer min_pause_s merges them.
        let cfg = VadConfig {
            min_pause_s: 1.0,
            ..VadConfig::default()
        };
        assert_eq!(voiced_spans(&a, &cfg).len(), 1);
    }

    #[test]
    fn a_clip_with_no_silence_is_kept_whole() {
        // A tightly cropped utterance: every frame is voiced, level varying by a few dB.
        let rate = 16_000;
        let x: Vec<f32> = (0..rate)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let tremolo = 0.7 + 0.3 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
                0.3 * tremolo * (2.0 * std::f32::consts::PI * 150.0 * t).sin()
            })
            .collect();
        let a = Audio::new(x, rate);
        let t = trim_silence(&a, &VadConfig::default());
        assert_eq!(t.samples.len(), a.samples.len());
        assert_eq!(voiced_spans(&a, &VadConfig::default()).len(), 1);
    }

    #[test]
    fn silent_and_tiny_clips_give_empty_audio() {
        let silent = Audio::new(vec![0.0; 16_000], 16_000);
        let t = trim_silence(&silent, &VadConfig::default());
        assert!(t.samples.is_empty() && !t.warnings.is_empty());
        assert!(voiced_spans(&silent, &VadConfig::default()).is_empty());
        let tiny = Audio::new(vec![0.5; 10], 16_000);
        assert!(trim_silence(&tiny, &VadConfig::default())
            .samples
            .is_empty());
    }
}
