//! Per-class prosody and per-clip recording conditions, drawn from overlapping
//! distributions so that the classes differ on average while some clips are genuinely
//! ambiguous (a fast calm clip and a slow angry one can look alike).
//!
//! Recording conditions (peak level, noise, reverb) are drawn independently of the class,
//! so the file's level is never a shortcut to the label.

use rand::Rng;
use rand_distr::{Distribution, Normal};

/// Mean and standard deviation of each espeak-ng control for one class, plus the chance of
/// tremor and the harshness (spectral effort) of the post-processing.
#[derive(Clone, Copy, Debug)]
pub struct ClassProfile {
    /// `-p` (0..99), before the speaker's own offset.
    pub pitch: (f64, f64),
    /// SSML `<prosody range="N%">`.
    pub range_pct: (f64, f64),
    /// `-s`, words per minute.
    pub rate_wpm: (f64, f64),
    /// `-a` (0..200). The final level is re-drawn anyway; loud espeak input adds a little
    /// of its own distortion.
    pub amplitude: (f64, f64),
    /// `-g`, pause between words in units of 10 ms.
    pub word_gap: (f64, f64),
    pub tremor_p: f64,
    /// Vibrato depth in cents when tremor is on.
    pub tremor_cents: (f64, f64),
    /// 0 = clean, 1 = strong pre-emphasis and soft clipping.
    pub harshness: (f64, f64),
}

pub fn profile(label: &str) -> Option<ClassProfile> {
    match label {
        "calm" => Some(ClassProfile {
            pitch: (40.0, 9.0),
            range_pct: (70.0, 20.0),
            rate_wpm: (150.0, 18.0),
            amplitude: (90.0, 20.0),
            word_gap: (3.0, 1.5),
            tremor_p: 0.1,
            tremor_cents: (20.0, 8.0),
            harshness: (0.1, 0.1),
        }),
        "angry" => Some(ClassProfile {
            pitch: (52.0, 10.0),
            range_pct: (115.0, 30.0),
            rate_wpm: (175.0, 20.0),
            amplitude: (130.0, 25.0),
            word_gap: (1.0, 1.0),
            tremor_p: 0.2,
            tremor_cents: (25.0, 10.0),
            harshness: (0.55, 0.25),
        }),
        "panic" => Some(ClassProfile {
            pitch: (62.0, 10.0),
            range_pct: (150.0, 35.0),
            rate_wpm: (195.0, 22.0),
            amplitude: (115.0, 25.0),
            word_gap: (0.5, 1.0),
            tremor_p: 0.7,
            tremor_cents: (45.0, 15.0),
            harshness: (0.3, 0.2),
        }),
        _ => None,
    }
}

/// Everything drawn for one clip; written to the manifest as extra columns.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipParams {
    pub pitch: u32,
    pub range_pct: u32,
    pub rate_wpm: u32,
    pub amplitude: u32,
    pub word_gap: u32,
    /// Tremor rate in Hz and depth (0 when off).
    pub tremor_hz: f64,
    pub tremor_cents: f64,
    /// Amplitude-modulation depth of the tremor (0..1).
    pub tremor_am: f64,
    pub harshness: f64,
    /// Silence added before and after the speech, seconds.
    pub lead_s: f64,
    pub tail_s: f64,
    pub snr_db: f64,
    pub reverb_rt60_s: f64,
    pub reverb_wet: f64,
    /// RMS level of the speech in the written file, dBFS (lowered if the peak would clip).
    pub level_dbfs: f64,
    /// Seed of the clip's own noise (tremor phase, noise, reverb impulse response).
    pub noise_seed: u64,
}

fn normal<R: Rng>(rng: &mut R, (mean, sd): (f64, f64), lo: f64, hi: f64) -> f64 {
    // sd > 0 for every profile value, so Normal::new cannot fail; fall back to the mean.
    let v = Normal::new(mean, sd).map(|d| d.sample(rng)).unwrap_or(mean);
    v.clamp(lo, hi)
}

/// Draw one clip's parameters for class profile `p` and a speaker whose `-p` offset is
/// `speaker_pitch_offset`.
pub fn draw<R: Rng>(p: &ClassProfile, speaker_pitch_offset: f64, rng: &mut R) -> ClipParams {
    let pitch = normal(rng, p.pitch, 0.0, 99.0) + speaker_pitch_offset;
    let range_pct = normal(rng, p.range_pct, 20.0, 250.0);
    let rate_wpm = normal(rng, p.rate_wpm, 100.0, 260.0);
    let amplitude = normal(rng, p.amplitude, 40.0, 190.0);
    let word_gap = normal(rng, p.word_gap, 0.0, 8.0);
    let tremor_on = rng.random_bool(p.tremor_p);
    let (tremor_hz, tremor_cents, tremor_am) = if tremor_on {
        (
            rng.random_range(5.0..9.0),
            normal(rng, p.tremor_cents, 8.0, 90.0),
            rng.random_range(0.05..0.3),
        )
    } else {
        (0.0, 0.0, 0.0)
    };
    let harshness = normal(rng, p.harshness, 0.0, 1.0);
    ClipParams {
        pitch: pitch.clamp(0.0, 99.0).round() as u32,
        range_pct: range_pct.round() as u32,
        rate_wpm: rate_wpm.round() as u32,
        amplitude: amplitude.round() as u32,
        word_gap: word_gap.round() as u32,
        tremor_hz: round3(tremor_hz),
        tremor_cents: round3(tremor_cents),
        tremor_am: round3(tremor_am),
        harshness: round3(harshness),
        lead_s: round3(rng.random_range(0.1..0.6)),
        tail_s: round3(rng.random_range(0.1..0.6)),
        snr_db: round3(rng.random_range(12.0..35.0)),
        reverb_rt60_s: round3(rng.random_range(0.08..0.35)),
        reverb_wet: round3(rng.random_range(0.05..0.35)),
        level_dbfs: round3(rng.random_range(-40.0..-16.0)),
        noise_seed: rng.random(),
    }
}

/// Parameters are rounded to what the manifest records, so the manifest describes exactly
/// what was rendered.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
