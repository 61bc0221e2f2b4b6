//! Field recording chains: how phone and clinic recordings arrive, simulated on clean clips,
//! deterministically from the caller's seeded RNG.
//!
//! A [`FieldChain`] applies its elements in the order of a real chain:
//!
//! 1. **reverb** (the room): convolution with a synthetic room impulse response
//!    ([`synthetic_rir`]): a unit direct path, then after 2 ms a Gaussian diffuse tail with a
//!    frequency-independent exponential decay of 60 dB over RT60, scaled to the requested
//!    direct-to-reverberant energy ratio;
//! 2. **noise** (room or line): white, pink (Paul Kellet's filter) or babble (other talkers:
//!    4–6 excerpts of a pool of speech clips, or, without a pool, speech-shaped noise modulated
//!    at syllable rate), added at an SNR measured against the signal's *active* RMS
//!    ([`active_rms`]: clips are about half silence, and a whole-clip RMS would put the noise
//!    3 dB too low);
//! 3. **gain** (microphone and input level);
//! 4. **clipping** (a hard limit at a linear amplitude, after the gain: an overdriven input);
//! 5. **telephone** (the line): 300–3400 Hz band-pass (4th-order Butterworth high-pass and
//!    low-pass as cascaded biquads), band-limited resampling to 8 kHz, 16-bit quantisation,
//!    ITU-T G.711 companding (μ-law or A-law, encoder and decoder as in the ITU-T G.191
//!    reference implementation), and resampling back to the input rate.
//!
//! Output has the length and rate of the input.
//!
//! Low-bitrate codecs are not simulated: the one pure-Rust Codec2 port on crates.io
//! (`codec2` 0.3.1) is licensed LGPL-2.1-only, which this MIT/Apache-2.0 binary would then have
//! to carry for a statically linked dependency, and it is a small single-author port without
//! tests; so the only codec here is G.711.

use std::f64::consts::{FRAC_1_SQRT_2, TAU};

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use realfft::RealFftPlanner;
use serde::{Deserialize, Serialize};

use super::resample;

/// The rate of the telephone line (G.711).
pub const TELEPHONE_RATE: u32 = 8_000;

/// Frame length of [`active_rms`], samples.
pub const ACTIVE_FRAME: usize = 256;

/// Frames quieter than this many dB below the loud frames (95th percentile) count as silence.
pub const ACTIVE_RANGE_DB: f64 = 30.0;

/// The kind of noise added by a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoiseKind {
    /// Gaussian white noise (electronic / line hiss).
    White,
    /// Pink noise, −3 dB per octave (ventilation, traffic, room noise).
    Pink,
    /// Other talkers (waiting room, street).
    Babble,
}

impl NoiseKind {
    fn name(self) -> &'static str {
        match self {
            NoiseKind::White => "white",
            NoiseKind::Pink => "pink",
            NoiseKind::Babble => "babble",
        }
    }
}

/// The telephone codec (ITU-T G.711 companding at 8 kHz, 8 bits a sample).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    /// G.711 μ-law (North America, Japan).
    MuLaw,
    /// G.711 A-law (Europe, most of the rest of the world, Vietnam included).
    ALaw,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::MuLaw => "μ-law",
            Codec::ALaw => "A-law",
        }
    }
}

/// Additive noise at an SNR against the signal's active RMS (see [`add_at_snr`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    pub kind: NoiseKind,
    pub snr_db: f32,
}

/// A room (see [`synthetic_rir`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reverb {
    /// Time for the diffuse tail to decay by 60 dB, seconds.
    pub rt60_s: f32,
    /// Energy of the direct path over energy of the tail, dB.
    pub direct_to_reverb_db: f32,
}

/// A telephone line: 300–3400 Hz band, 8 kHz, G.711 `codec` (see [`telephone`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Telephone {
    pub codec: Codec,
}

/// One field recording chain; [`FieldChain::apply`] runs it on a clip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChain {
    /// Gain applied after reverb and noise, dB.
    pub gain_db: f32,
    pub reverb: Option<Reverb>,
    pub noise: Option<Noise>,
    pub telephone: Option<Telephone>,
    /// Hard clip at this linear amplitude (full scale = 1), after the gain.
    pub clip_level: Option<f32>,
}

impl FieldChain {
    /// A random realistic chain: gain −18..+6 dB; noise with probability 0.8 (pink 40 %,
    /// babble 40 %, white 20 %) at 5–30 dB SNR; telephone with probability 0.3 (μ-law or A-law,
    /// 50/50); reverb with probability 0.3 (RT60 0.2–0.9 s, direct-to-reverberant 0–10 dB);
    /// clipping with probability 0.1 (at 0.1–0.5 of full scale).
    pub fn random(rng: &mut impl Rng) -> Self {
        let gain_db = rng.random_range(-18.0f32..=6.0);
        let noise = rng.random_bool(0.8).then(|| {
            let u: f32 = rng.random();
            let kind = if u < 0.4 {
                NoiseKind::Pink
            } else if u < 0.8 {
                NoiseKind::Babble
            } else {
                NoiseKind::White
            };
            Noise {
                kind,
                snr_db: rng.random_range(5.0f32..=30.0),
            }
        });
        let telephone = rng.random_bool(0.3).then(|| Telephone {
            codec: if rng.random_bool(0.5) {
                Codec::MuLaw
            } else {
                Codec::ALaw
            },
        });
        let reverb = rng.random_bool(0.3).then(|| Reverb {
            rt60_s: rng.random_range(0.2f32..=0.9),
            direct_to_reverb_db: rng.random_range(0.0f32..=10.0),
        });
        let clip_level = rng.random_bool(0.1).then(|| rng.random_range(0.1f32..=0.5));
        Self {
            gain_db,
            reverb,
            noise,
            telephone,
            clip_level,
        }
    }

    /// Run the chain on mono `samples` at `rate` Hz: reverb → noise → gain → clipping →
    /// telephone. `babble` is an optional pool of other speech clips at the same rate for
    /// babble noise (a sum of 4–6 random excerpts); when it is empty, babble is synthesised
    /// (see [`babble_noise`]). The output has the input's length and rate.
    ///
    /// # Panics
    /// With a telephone stage, if `rate` is 0 or above 1 MHz (the resampler refuses those).
    pub fn apply(
        &self,
        samples: &[f32],
        rate: u32,
        babble: &[&[f32]],
        rng: &mut impl Rng,
    ) -> Vec<f32> {
        let n = samples.len();
        let mut x = samples.to_vec();
        if n == 0 {
            return x;
        }
        if let Some(r) = &self.reverb {
            let h = synthetic_rir(rate, r, rng);
            x = convolve(&x, &h);
            x.truncate(n);
        }
        if let Some(nz) = &self.noise {
            let noise = make_noise(nz.kind, n, rate, babble, rng);
            x = add_at_snr(&x, &noise, nz.snr_db);
        }
        let g = db_to_amp(self.gain_db);
        for v in x.iter_mut() {
            *v *= g;
        }
        if let Some(level) = self.clip_level {
            clip(&mut x, level);
        }
        if let Some(t) = &self.telephone {
            x = telephone(&x, rate, t.codec);
        }
        x
    }

    /// A short description in the order of application, e.g.
    /// "reverb RT60 0.45 s DRR 5 dB, pink noise 15 dB SNR, gain -12 dB, telephone μ-law".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.reverb {
            parts.push(format!(
                "reverb RT60 {:.2} s DRR {} dB",
                r.rt60_s,
                whole(r.direct_to_reverb_db)
            ));
        }
        if let Some(nz) = &self.noise {
            parts.push(format!(
                "{} noise {} dB SNR",
                nz.kind.name(),
                whole(nz.snr_db)
            ));
        }
        parts.push(format!("gain {} dB", whole(self.gain_db)));
        if let Some(level) = self.clip_level {
            parts.push(format!("clipped at {level:.2}"));
        }
        if let Some(t) = &self.telephone {
            parts.push(format!("telephone {}", t.codec.name()));
        }
        parts.join(", ")
    }
}

/// A value rounded to a whole number, without "-0".
fn whole(v: f32) -> String {
    let r = v.round();
    format!("{}", if r == 0.0 { 0.0 } else { r })
}

/// Linear amplitude of `db` decibels.
pub fn db_to_amp(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// Hard clip to ±`level` (its absolute value).
pub fn clip(x: &mut [f32], level: f32) {
    let l = level.abs();
    for v in x.iter_mut() {
        *v = v.clamp(-l, l);
    }
}

// ---------------------------------------------------------------------------------------------
// G.711 (ITU-T G.711; encoder and decoder as in the G.191 reference implementation, g711.c).
// Inputs are 16-bit linear; negative inputs are taken in ones' complement (!x = -x - 1), so the
// quantiser is symmetric about -0.5 and -1 maps to "negative zero".

/// G.711 μ-law encoder (bias 33 in 14-bit units, i.e. 0x84 in 16-bit units).
pub fn mulaw_encode(x: i16) -> u8 {
    let neg = x < 0;
    let mag = (if neg { !x } else { x }) as i32 >> 2; // 14-bit magnitude, 0..=8191
    let absno = (mag + 33).min(0x1FFF);
    let mut segno = 1;
    let mut i = absno >> 6;
    while i != 0 {
        segno += 1;
        i >>= 1;
    }
    let high = 8 - segno;
    let low = 0xF - ((absno >> segno) & 0xF);
    let code = (high << 4) | low;
    (if neg { code } else { code | 0x80 }) as u8
}

/// G.711 μ-law decoder (16-bit output, ±32124 at most).
pub fn mulaw_decode(c: u8) -> i16 {
    let sign = if c < 0x80 { -1 } else { 1 };
    let m = (!c) as i32;
    let exponent = (m >> 4) & 7;
    let mantissa = m & 0xF;
    let step = 4 << (exponent + 1);
    (sign * ((0x80 << exponent) + step * mantissa + step / 2 - 4 * 33)) as i16
}

/// G.711 A-law encoder (even bits inverted: XOR 0x55).
pub fn alaw_encode(x: i16) -> u8 {
    let neg = x < 0;
    let mut ix = (if neg { !x } else { x }) as i32 >> 4; // 12-bit magnitude, 0..=2047
    if ix > 15 {
        let mut iexp = 1;
        while ix > 16 + 15 {
            ix >>= 1;
            iexp += 1;
        }
        ix -= 16;
        ix += iexp << 4;
    }
    if !neg {
        ix |= 0x80;
    }
    (ix ^ 0x55) as u8
}

/// G.711 A-law decoder (16-bit output, ±32256 at most).
pub fn alaw_decode(c: u8) -> i16 {
    let ix = ((c ^ 0x55) & 0x7F) as i32;
    let iexp = ix >> 4;
    let mut mant = ix & 0xF;
    if iexp > 0 {
        mant += 16;
    }
    mant = (mant << 4) + 8;
    if iexp > 1 {
        mant <<= iexp - 1;
    }
    (if c > 127 { mant } else { -mant }) as i16
}

/// Quantise f32 samples (full scale ±1) to 16 bits, G.711-encode and decode them in place.
pub fn codec_round_trip(x: &mut [f32], codec: Codec) {
    for v in x.iter_mut() {
        let s = (*v * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        let d = match codec {
            Codec::MuLaw => mulaw_decode(mulaw_encode(s)),
            Codec::ALaw => alaw_decode(alaw_encode(s)),
        };
        *v = d as f32 / 32768.0;
    }
}

// ---------------------------------------------------------------------------------------------
// Filters.

/// Second-order section (RBJ audio-EQ cookbook), run in f64, direct form I.
#[derive(Clone, Copy, Debug)]
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
}

impl Biquad {
    fn new(highpass: bool, f0: f64, q: f64, rate: f64) -> Self {
        let w = TAU * f0 / rate;
        let (sin, cos) = w.sin_cos();
        let alpha = sin / (2.0 * q);
        let a0 = 1.0 + alpha;
        let (b0, b1) = if highpass {
            ((1.0 + cos) / 2.0, -(1.0 + cos))
        } else {
            ((1.0 - cos) / 2.0, 1.0 - cos)
        };
        Self {
            b: [b0 / a0, b1 / a0, b0 / a0],
            a: [-2.0 * cos / a0, (1.0 - alpha) / a0],
        }
    }

    fn run(&self, x: &mut [f32]) {
        let (mut x1, mut x2, mut y1, mut y2) = (0.0, 0.0, 0.0, 0.0);
        for v in x.iter_mut() {
            let x0 = *v as f64;
            let y0 =
                self.b[0] * x0 + self.b[1] * x1 + self.b[2] * x2 - self.a[0] * y1 - self.a[1] * y2;
            (x2, x1, y2, y1) = (x1, x0, y1, y0);
            *v = y0 as f32;
        }
    }
}

/// 4th-order Butterworth high-pass (`highpass`) or low-pass at `f0`: two cascaded sections
/// with Q = 1/(2 cos(π/8)) and 1/(2 cos(3π/8)). Does nothing unless 0 < f0 < rate/2.
fn butterworth4(x: &mut [f32], highpass: bool, f0: f64, rate: u32) {
    let rate = rate as f64;
    if !(f0 > 0.0 && f0 < rate / 2.0) {
        return;
    }
    for k in [1.0, 3.0] {
        let q = 1.0 / (2.0 * (k * std::f64::consts::PI / 8.0).cos());
        Biquad::new(highpass, f0, q, rate).run(x);
    }
}

/// One-pole low-pass at `fc` (−6 dB per octave above it).
fn one_pole_lowpass(x: &mut [f32], fc: f64, rate: u32) {
    let p = (-TAU * fc / rate as f64).exp();
    let mut y = 0.0f64;
    for v in x.iter_mut() {
        y = (1.0 - p) * *v as f64 + p * y;
        *v = y as f32;
    }
}

/// The telephone band in place: 4th-order Butterworth high-pass at 300 Hz and low-pass at
/// 3400 Hz (the low-pass only where 3400 Hz is below the Nyquist frequency).
pub fn telephone_band(x: &mut [f32], rate: u32) {
    butterworth4(x, true, 300.0, rate);
    butterworth4(x, false, 3400.0, rate);
}

/// A telephone line: [`telephone_band`], band-limited resampling to 8 kHz, G.711 `codec`
/// ([`codec_round_trip`]), and resampling back to `rate`. Same length as `x`.
///
/// # Panics
/// If `rate` is 0 or above 1 MHz.
pub fn telephone(x: &[f32], rate: u32, codec: Codec) -> Vec<f32> {
    let mut y = x.to_vec();
    telephone_band(&mut y, rate);
    let mut line = resample(&y, rate, TELEPHONE_RATE).expect("telephone: unsupported rate");
    codec_round_trip(&mut line, codec);
    let mut back = resample(&line, TELEPHONE_RATE, rate).expect("telephone: unsupported rate");
    back.resize(x.len(), 0.0);
    back
}

// ---------------------------------------------------------------------------------------------
// Noise.

/// `n` samples of Gaussian white noise, unit variance.
pub fn white_noise(n: usize, rng: &mut impl Rng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f64 = StandardNormal.sample(rng);
            v as f32
        })
        .collect()
}

/// `n` samples of pink noise (−3 dB per octave), unit RMS: Gaussian white noise through Paul
/// Kellet's refined pinking filter (within ±0.05 dB of 1/f from 0.0002 × the rate to Nyquist),
/// after a warm-up of 4096 samples so that the slow poles are settled.
pub fn pink_noise(n: usize, rng: &mut impl Rng) -> Vec<f32> {
    const WARMUP: usize = 4096;
    let mut b = [0.0f64; 7];
    let mut out = Vec::with_capacity(n);
    for i in 0..n + WARMUP {
        let w: f64 = StandardNormal.sample(rng);
        b[0] = 0.99886 * b[0] + w * 0.0555179;
        b[1] = 0.99332 * b[1] + w * 0.0750759;
        b[2] = 0.96900 * b[2] + w * 0.1538520;
        b[3] = 0.86650 * b[3] + w * 0.3104856;
        b[4] = 0.55000 * b[4] + w * 0.5329522;
        b[5] = -0.7616 * b[5] - w * 0.0168980;
        let pink = b.iter().sum::<f64>() + w * 0.5362;
        b[6] = w * 0.115926;
        if i >= WARMUP {
            out.push(pink as f32);
        }
    }
    normalise_rms(&mut out);
    out
}

/// `n` samples of babble at `rate`, unit RMS: the sum of 4–6 talkers at levels within ±3 dB.
/// With a non-empty `pool` (speech clips at `rate`) each talker is an excerpt of a random pool
/// clip from a random start (wrapping around short clips), scaled to unit active RMS. Without
/// one each talker is speech-shaped noise (pink noise through a one-pole low-pass at 800 Hz,
/// so about −9 dB per octave above it, and a 100 Hz high-pass) whose amplitude is modulated at
/// a syllable rate of 3–6 Hz.
pub fn babble_noise(n: usize, rate: u32, pool: &[&[f32]], rng: &mut impl Rng) -> Vec<f32> {
    let pool: Vec<&[f32]> = pool.iter().copied().filter(|c| !c.is_empty()).collect();
    let talkers = rng.random_range(4..=6);
    let mut out = vec![0.0f32; n];
    for _ in 0..talkers {
        let level = db_to_amp(rng.random_range(-3.0f32..=3.0));
        let voice = if pool.is_empty() {
            synthetic_talker(n, rate, rng)
        } else {
            let clip = pool[rng.random_range(0..pool.len())];
            let start = rng.random_range(0..clip.len());
            let mut v: Vec<f32> = (0..n).map(|i| clip[(start + i) % clip.len()]).collect();
            let a = active_rms(&v);
            if a > 0.0 {
                v.iter_mut().for_each(|s| *s /= a);
            }
            v
        };
        for (o, s) in out.iter_mut().zip(&voice) {
            *o += level * s;
        }
    }
    normalise_rms(&mut out);
    out
}

/// Speech-shaped noise modulated at a syllable rate (one synthetic babble talker).
fn synthetic_talker(n: usize, rate: u32, rng: &mut impl Rng) -> Vec<f32> {
    let mut v = pink_noise(n, rng);
    one_pole_lowpass(&mut v, 800.0, rate);
    let r = rate as f64;
    if 100.0 < r / 2.0 {
        Biquad::new(true, 100.0, FRAC_1_SQRT_2, r).run(&mut v);
    }
    let f = rng.random_range(3.0..6.0);
    let phase = rng.random_range(0.0..TAU);
    for (i, s) in v.iter_mut().enumerate() {
        let syllable = 0.5 + 0.5 * (TAU * f * i as f64 / r + phase).sin();
        *s *= (syllable * syllable) as f32;
    }
    v
}

/// `n` samples of noise of `kind` (see [`white_noise`], [`pink_noise`], [`babble_noise`]).
pub fn make_noise(
    kind: NoiseKind,
    n: usize,
    rate: u32,
    babble: &[&[f32]],
    rng: &mut impl Rng,
) -> Vec<f32> {
    match kind {
        NoiseKind::White => white_noise(n, rng),
        NoiseKind::Pink => pink_noise(n, rng),
        NoiseKind::Babble => babble_noise(n, rate, babble, rng),
    }
}

fn normalise_rms(x: &mut [f32]) {
    let r = rms(x);
    if r > 0.0 {
        x.iter_mut().for_each(|v| *v /= r);
    }
}

/// Root mean square of `x` (0 for an empty slice).
pub fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt() as f32
}

/// RMS of the active (non-silent) part of `x`: the signal is cut into frames of
/// [`ACTIVE_FRAME`] samples (16 ms at 16 kHz; a last partial frame counts by its length), the
/// reference is the 95th percentile of the frame energies, and frames more than
/// [`ACTIVE_RANGE_DB`] below it are silence. The result is the RMS over the active frames (0
/// when all is silent). Gain-invariant: scaling `x` scales the result.
pub fn active_rms(x: &[f32]) -> f32 {
    let frames: Vec<(f64, usize)> = x
        .chunks(ACTIVE_FRAME)
        .map(|c| {
            let e = c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / c.len() as f64;
            (e, c.len())
        })
        .collect();
    if frames.is_empty() {
        return 0.0;
    }
    let mut energies: Vec<f64> = frames.iter().map(|f| f.0).collect();
    energies.sort_by(f64::total_cmp);
    let reference = energies[((energies.len() - 1) as f64 * 0.95).round() as usize];
    let threshold = reference * 10f64.powf(-ACTIVE_RANGE_DB / 10.0);
    let (mut sum, mut count) = (0.0, 0usize);
    for &(e, len) in &frames {
        if e > 0.0 && e >= threshold {
            sum += e * len as f64;
            count += len;
        }
    }
    if count == 0 {
        0.0
    } else {
        (sum / count as f64).sqrt() as f32
    }
}

/// `signal` plus `noise` scaled so that 20·log10(active_rms(signal) / rms(added noise)) =
/// `snr_db`. The noise RMS is taken over the part added (the first `signal.len()` samples of
/// `noise`, which is repeated if shorter). A silent signal or noise returns `signal` unchanged.
pub fn add_at_snr(signal: &[f32], noise: &[f32], snr_db: f32) -> Vec<f32> {
    let n = signal.len();
    if noise.is_empty() || n == 0 {
        return signal.to_vec();
    }
    let seg: Vec<f32> = (0..n).map(|i| noise[i % noise.len()]).collect();
    let s = active_rms(signal) as f64;
    let r = rms(&seg) as f64;
    if s == 0.0 || r == 0.0 {
        return signal.to_vec();
    }
    let scale = s / r / 10f64.powf(snr_db as f64 / 20.0);
    signal
        .iter()
        .zip(&seg)
        .map(|(x, v)| (*x as f64 + scale * *v as f64) as f32)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reverb.

/// A synthetic room impulse response at `rate`: 1 at t = 0 (the direct path), then from 2 ms a
/// Gaussian diffuse tail whose amplitude decays by 60 dB over `rt60_s` (its length), scaled so
/// that direct energy / tail energy = `direct_to_reverb_db`. RT60 is taken as at least 10 ms.
pub fn synthetic_rir(rate: u32, reverb: &Reverb, rng: &mut impl Rng) -> Vec<f32> {
    let r = rate as f64;
    let rt60 = (reverb.rt60_s as f64).max(0.01);
    let onset = ((0.002 * r).round() as usize).max(1);
    let len = (rt60 * r).ceil() as usize;
    // Amplitude exp(-k t) is 60 dB down (a factor 1000) at t = RT60.
    let k = 1000f64.ln() / (rt60 * r);
    let tail: Vec<f64> = (0..len)
        .map(|i| {
            let g: f64 = StandardNormal.sample(rng);
            g * (-k * i as f64).exp()
        })
        .collect();
    let energy: f64 = tail.iter().map(|v| v * v).sum();
    let want = 10f64.powf(-reverb.direct_to_reverb_db as f64 / 10.0);
    let scale = if energy > 0.0 {
        (want / energy).sqrt()
    } else {
        0.0
    };
    let mut h = vec![0.0f32; onset + len];
    h[0] = 1.0;
    for (o, t) in h[onset..].iter_mut().zip(&tail) {
        *o = (t * scale) as f32;
    }
    h
}

/// Full linear convolution of `x` with `h` (length `x.len() + h.len() - 1`; empty if either is
/// empty), by FFT overlap-add in f64.
pub fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
    if x.is_empty() || h.is_empty() {
        return Vec::new();
    }
    let n_out = x.len() + h.len() - 1;
    let n_fft = (2 * h.len())
        .max(4096)
        .next_power_of_two()
        .min(n_out.next_power_of_two());
    let block = n_fft - h.len() + 1;
    let mut planner = RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n_fft);
    let inv = planner.plan_fft_inverse(n_fft);
    let mut buf = fwd.make_input_vec();
    let mut hf = fwd.make_output_vec();
    for (b, v) in buf.iter_mut().zip(h) {
        *b = *v as f64;
    }
    fwd.process(&mut buf, &mut hf).expect("fft lengths");
    let mut spec = fwd.make_output_vec();
    let mut out = vec![0.0f64; n_out];
    let norm = 1.0 / n_fft as f64;
    for (k, chunk) in x.chunks(block).enumerate() {
        let start = k * block;
        buf.fill(0.0);
        for (b, v) in buf.iter_mut().zip(chunk) {
            *b = *v as f64;
        }
        fwd.process(&mut buf, &mut spec).expect("fft lengths");
        for (s, f) in spec.iter_mut().zip(&hf) {
            *s *= *f;
        }
        // DC and Nyquist bins of a real signal are real.
        spec[0].im = 0.0;
        if let Some(last) = spec.last_mut() {
            last.im = 0.0;
        }
        inv.process(&mut spec, &mut buf).expect("fft lengths");
        let len = (chunk.len() + h.len() - 1).min(n_out - start);
        for (o, v) in out[start..start + len].iter_mut().zip(&buf) {
            *o += v * norm;
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const SR: u32 = 16_000;

    fn sine(f: f64, amp: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (amp * (TAU * f * i as f64 / rate as f64).sin()) as f32)
            .collect()
    }

    fn db(x: f64) -> f64 {
        20.0 * x.log10()
    }

    fn middle_rms(x: &[f32]) -> f64 {
        let n = x.len();
        rms(&x[n / 4..3 * n / 4]) as f64
    }

    /// A clip that is half silence: 0.5 s of silence, 1 s of a 440 Hz tone at 0.3, 0.5 s of silence.
    fn half_silent() -> Vec<f32> {
        let mut x = vec![0.0f32; 8000];
        x.extend(sine(440.0, 0.3, SR, 16_000));
        x.extend(vec![0.0f32; 8000]);
        x
    }

    // ---- telephone ----------------------------------------------------------------------

    #[test]
    fn telephone_passes_the_band_and_cuts_outside_it() {
        let n = SR as usize;
        for codec in [Codec::MuLaw, Codec::ALaw] {
            let level = |f: f64| db(middle_rms(&telephone(&sine(f, 0.3, SR, n), SR, codec)));
            let input = db(0.3 / 2f64.sqrt());
            let k1 = level(1000.0);
            assert!(
                (k1 - input).abs() <= 3.0,
                "{codec:?}: 1 kHz {k1:.2} dB vs input {input:.2} dB"
            );
            for f in [100.0, 5000.0] {
                let l = level(f);
                assert!(
                    k1 - l >= 20.0,
                    "{codec:?}: {f} Hz only {:.1} dB below 1 kHz",
                    k1 - l
                );
            }
        }
    }

    #[test]
    fn telephone_keeps_length_at_other_rates() {
        for rate in [8_000, 11_025, 22_050, 44_100, 48_000] {
            let x = sine(700.0, 0.2, rate, rate as usize / 3 + 7);
            let y = telephone(&x, rate, Codec::ALaw);
            assert_eq!(y.len(), x.len(), "rate {rate}");
            let (a, b) = (middle_rms(&x), middle_rms(&y));
            assert!((db(b) - db(a)).abs() < 3.0, "rate {rate}: {a} → {b}");
        }
    }

    // ---- G.711 --------------------------------------------------------------------------

    #[test]
    fn mulaw_matches_the_g711_table() {
        // Encoder: zero is 0xFF, -1 is "negative zero" 0x7F (ones' complement for negatives).
        assert_eq!(mulaw_encode(0), 0xFF);
        assert_eq!(mulaw_encode(-1), 0x7F);
        assert_eq!(mulaw_encode(i16::MAX), 0x80);
        assert_eq!(mulaw_encode(i16::MIN), 0x00);
        // Decoder: G.711 Table 2 reconstruction values are ±8031 at the ends (14-bit units,
        // ×4 here), 0 for both zero codes.
        assert_eq!(mulaw_decode(0x00), -32124);
        assert_eq!(mulaw_decode(0x80), 32124);
        assert_eq!(mulaw_decode(0xFF), 0);
        assert_eq!(mulaw_decode(0x7F), 0);
        // Second value of the first segment (2 in the table's units) and the first value of the
        // second segment (33).
        assert_eq!(mulaw_decode(0xFE), 8);
        assert_eq!(mulaw_decode(0xEF), 132);
        assert_eq!(mulaw_decode(0x6F), -132);
    }

    #[test]
    fn alaw_matches_the_g711_table() {
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        // G.711 Table 1 ends: ±4032 in 12-bit units (×8 here).
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_decode(0xAA), 32256);
        // First value of the third segment: 66 in the table's units.
        assert_eq!(alaw_decode((0x20 ^ 0x55) | 0x80), 528);
        assert_eq!(alaw_encode(528), (0x20 ^ 0x55) | 0x80);
    }

    /// The classic table-free μ-law encoder (segment end search), written independently of
    /// the one above; for x >= 0 both must agree, and negatives are mirrored through !x.
    fn mulaw_by_segment_search(x: i16) -> u8 {
        const SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
        let (v, mask) = if x < 0 {
            ((!x) as i32, 0x7F)
        } else {
            (x as i32, 0xFF)
        };
        let v = ((v >> 2).min(8159)) + 33;
        let seg = SEG_END.iter().position(|&e| v <= e).unwrap_or(8) as i32;
        let u = if seg >= 8 {
            0x7F
        } else {
            (seg << 4) | ((v >> (seg + 1)) & 0xF)
        };
        (u ^ mask) as u8
    }

    #[test]
    fn mulaw_agrees_with_segment_search_and_round_trips_within_half_a_step() {
        let mut prev = i16::MIN;
        for x in i16::MIN..=i16::MAX {
            let c = mulaw_encode(x);
            assert_eq!(c, mulaw_by_segment_search(x), "x = {x}");
            let y = mulaw_decode(c);
            assert!(y >= prev, "not monotonic at {x}");
            prev = y;
            let exponent = ((!c) >> 4) & 7;
            let step = 8i32 << exponent;
            let err = (x as i32 - y as i32).abs();
            // Above the last decision level (8159 in 14-bit units) the coder overloads.
            if (x as i32) > 32635 || (x as i32) < -32636 {
                assert_eq!(y.unsigned_abs(), 32124, "x = {x}");
            } else {
                assert!(err <= step / 2, "x = {x}: {y}, error {err} > {}", step / 2);
            }
        }
    }

    #[test]
    fn alaw_round_trips_within_half_a_step() {
        let mut prev = i16::MIN;
        for x in i16::MIN..=i16::MAX {
            let c = alaw_encode(x);
            let y = alaw_decode(c);
            assert!(y >= prev, "not monotonic at {x}");
            prev = y;
            let exponent = ((c ^ 0x55) >> 4) & 7;
            let step = 16i32 << (exponent.max(1) - 1);
            let err = (x as i32 - y as i32).abs();
            assert!(err <= step / 2, "x = {x}: {y}, error {err} > {}", step / 2);
            // The code space is used symmetrically: x and !x give mirrored codes.
            assert_eq!(c ^ 0x80, alaw_encode(!x), "x = {x}");
        }
    }

    // ---- noise --------------------------------------------------------------------------

    /// Welch PSD (Hann, 4096, half overlap), bin spacing rate / 4096.
    fn psd(x: &[f32]) -> Vec<f64> {
        const N: usize = 4096;
        let mut planner = RealFftPlanner::<f64>::new();
        let fft = planner.plan_fft_forward(N);
        let win: Vec<f64> = (0..N)
            .map(|i| 0.5 - 0.5 * (TAU * i as f64 / N as f64).cos())
            .collect();
        let mut acc = vec![0.0; N / 2 + 1];
        let mut buf = fft.make_input_vec();
        let mut spec = fft.make_output_vec();
        let mut start = 0;
        while start + N <= x.len() {
            for i in 0..N {
                buf[i] = x[start + i] as f64 * win[i];
            }
            fft.process(&mut buf, &mut spec).unwrap();
            for (a, s) in acc.iter_mut().zip(&spec) {
                *a += s.norm_sqr();
            }
            start += N / 2;
        }
        acc
    }

    fn band_mean(p: &[f64], lo: f64, hi: f64, rate: f64) -> f64 {
        let df = rate / 4096.0;
        let (a, b) = ((lo / df).ceil() as usize, (hi / df).floor() as usize);
        p[a..b].iter().sum::<f64>() / (b - a) as f64
    }

    #[test]
    fn pink_noise_falls_3_db_per_octave() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x = pink_noise(SR as usize * 16, &mut rng);
        assert!((rms(&x) - 1.0).abs() < 1e-4);
        let p = psd(&x);
        let edges = [125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0];
        let levels: Vec<f64> = edges
            .windows(2)
            .map(|w| 10.0 * band_mean(&p, w[0], w[1], SR as f64).log10())
            .collect();
        for (i, w) in levels.windows(2).enumerate() {
            let slope = w[1] - w[0];
            assert!(
                (slope + 3.0).abs() <= 1.0,
                "octave {} → {}: {slope:.2} dB (levels {levels:?})",
                edges[i],
                edges[i + 1]
            );
        }
        // White noise, by contrast, is flat.
        let w = white_noise(SR as usize * 4, &mut rng);
        let pw = psd(&w);
        let tilt = 10.0
            * (band_mean(&pw, 2000.0, 4000.0, 16e3) / band_mean(&pw, 125.0, 250.0, 16e3)).log10();
        assert!(tilt.abs() < 0.5, "white noise tilt {tilt:.2} dB");
    }

    #[test]
    fn synthetic_babble_is_speech_shaped_and_modulated() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let b = babble_noise(SR as usize * 8, SR, &[], &mut rng);
        let p = psd(&b);
        let low = band_mean(&p, 200.0, 500.0, 16e3);
        let high = band_mean(&p, 3000.0, 6000.0, 16e3);
        assert!(10.0 * (low / high).log10() > 15.0, "not speech-shaped");
        // Envelope fluctuates: 50 ms frame RMS varies more than for stationary noise.
        let frames: Vec<f64> = b.chunks(800).map(|c| rms(c) as f64).collect();
        let mean = frames.iter().sum::<f64>() / frames.len() as f64;
        let sd =
            (frames.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / frames.len() as f64).sqrt();
        assert!(sd / mean > 0.1, "babble envelope too flat: {}", sd / mean);
    }

    #[test]
    fn babble_from_a_pool_uses_the_pool() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let a = sine(300.0, 0.5, SR, 5000);
        let b = sine(1700.0, 0.1, SR, 7000);
        let pool: [&[f32]; 2] = [&a, &b];
        let x = babble_noise(SR as usize * 2, SR, &pool, &mut rng);
        assert!((rms(&x) - 1.0).abs() < 1e-3);
        // All energy is at the two pool frequencies.
        let p = psd(&x);
        let total: f64 = p.iter().sum();
        let near = |f: f64| band_mean(&p, f - 40.0, f + 40.0, 16e3) * (80.0 / 3.90625);
        assert!((near(300.0) + near(1700.0)) / total > 0.99);
    }

    #[test]
    fn active_rms_ignores_silence() {
        let x = half_silent();
        let a = active_rms(&x) as f64;
        assert!(
            (db(a) - db(0.3 / 2f64.sqrt())).abs() < 0.1,
            "active rms {a}"
        );
        // The whole-clip RMS would be 3 dB lower.
        assert!((db(a) - db(rms(&x) as f64) - 3.0).abs() < 0.2);
        assert_eq!(active_rms(&[0.0; 1000]), 0.0);
        assert_eq!(active_rms(&[]), 0.0);
    }

    #[test]
    fn noise_is_added_at_the_target_snr() {
        let x = half_silent();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for snr in [5.0f32, 15.0, 30.0] {
            for noise in [
                white_noise(x.len(), &mut rng),
                pink_noise(x.len() / 3, &mut rng), // shorter: repeated
            ] {
                let y = add_at_snr(&x, &noise, snr);
                assert_eq!(y.len(), x.len());
                let added: Vec<f32> = y.iter().zip(&x).map(|(a, b)| a - b).collect();
                let measured = db(active_rms(&x) as f64 / rms(&added) as f64);
                assert!(
                    (measured - snr as f64).abs() <= 0.2,
                    "target {snr}, measured {measured:.3}"
                );
            }
        }
        assert_eq!(add_at_snr(&[0.0; 100], &[1.0; 100], 10.0), vec![0.0; 100]);
    }

    // ---- reverb -------------------------------------------------------------------------

    /// RT60 from the Schroeder backward integral, by a least-squares line through its
    /// −5 … −35 dB part (T30 × 2).
    fn schroeder_rt60(h: &[f32], rate: u32) -> f64 {
        let mut edc = vec![0.0f64; h.len()];
        let mut acc = 0.0;
        for i in (0..h.len()).rev() {
            acc += (h[i] as f64).powi(2);
            edc[i] = acc;
        }
        let total = edc[0];
        let pts: Vec<(f64, f64)> = edc
            .iter()
            .enumerate()
            .map(|(i, e)| (i as f64 / rate as f64, 10.0 * (e / total).log10()))
            .filter(|(_, d)| *d <= -5.0 && *d >= -35.0)
            .collect();
        let n = pts.len() as f64;
        let (mt, md) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let slope = pts.iter().map(|p| (p.0 - mt) * (p.1 - md)).sum::<f64>()
            / pts.iter().map(|p| (p.0 - mt).powi(2)).sum::<f64>();
        -60.0 / slope
    }

    #[test]
    fn rir_decays_at_the_requested_rt60_with_the_requested_drr() {
        for (seed, rt60) in [(1u64, 0.2f32), (2, 0.45), (3, 0.9)] {
            for drr in [0.0f32, 6.0] {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let r = Reverb {
                    rt60_s: rt60,
                    direct_to_reverb_db: drr,
                };
                let h = synthetic_rir(SR, &r, &mut rng);
                let est = schroeder_rt60(&h, SR);
                assert!(
                    (est / rt60 as f64 - 1.0).abs() <= 0.2,
                    "RT60 {rt60}: Schroeder gives {est:.3}"
                );
                assert_eq!(h[0], 1.0);
                let tail: f64 = h[1..].iter().map(|v| (*v as f64).powi(2)).sum();
                assert!((10.0 * (1.0 / tail).log10() - drr as f64).abs() < 0.01);
            }
        }
    }

    #[test]
    fn convolve_matches_direct_convolution() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for (nx, nh) in [(300, 57), (1, 1), (5000, 4500), (9000, 3)] {
            let x = white_noise(nx, &mut rng);
            let h = white_noise(nh, &mut rng);
            let y = convolve(&x, &h);
            assert_eq!(y.len(), nx + nh - 1);
            let mut max_err = 0.0f64;
            for (n, yn) in y.iter().enumerate() {
                let lo = n.saturating_sub(nh - 1);
                let hi = n.min(nx - 1);
                let d: f64 = (lo..=hi).map(|k| x[k] as f64 * h[n - k] as f64).sum();
                max_err = max_err.max((d - *yn as f64).abs());
            }
            assert!(max_err < 1e-4, "({nx}, {nh}): max error {max_err}");
        }
        assert!(convolve(&[], &[1.0]).is_empty());
    }

    // ---- the chain ----------------------------------------------------------------------

    fn bare(gain_db: f32) -> FieldChain {
        FieldChain {
            gain_db,
            reverb: None,
            noise: None,
            telephone: None,
            clip_level: None,
        }
    }

    #[test]
    fn gain_is_exact() {
        let x = half_silent();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for g in [-18.0f32, -6.0, 0.0, 6.0] {
            let y = bare(g).apply(&x, SR, &[], &mut rng);
            let want = 10f64.powf(g as f64 / 20.0);
            for (a, b) in x.iter().zip(&y) {
                assert!((*b as f64 - *a as f64 * want).abs() <= 1e-6 * a.abs() as f64 + 1e-9);
            }
            let measured = db(rms(&y) as f64 / rms(&x) as f64);
            assert!((measured - g as f64).abs() < 1e-4, "{g} dB → {measured}");
        }
    }

    #[test]
    fn clipping_never_exceeds_the_level() {
        let x = half_silent();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let chain = FieldChain {
            clip_level: Some(0.25),
            noise: Some(Noise {
                kind: NoiseKind::White,
                snr_db: 10.0,
            }),
            ..bare(12.0)
        };
        let y = chain.apply(&x, SR, &[], &mut rng);
        let peak = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(peak, 0.25);
        assert!(y.iter().filter(|v| v.abs() == 0.25).count() > 1000);
    }

    #[test]
    fn apply_keeps_length_at_any_rate() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let pool_clip = sine(200.0, 0.2, SR, 3000);
        let pool: [&[f32]; 1] = [&pool_clip];
        for rate in [8_000u32, 16_000, 44_100] {
            for n in [0usize, 1, 333, rate as usize + 17] {
                let x = sine(440.0, 0.3, rate, n);
                let chain = FieldChain {
                    reverb: Some(Reverb {
                        rt60_s: 0.3,
                        direct_to_reverb_db: 3.0,
                    }),
                    noise: Some(Noise {
                        kind: NoiseKind::Babble,
                        snr_db: 10.0,
                    }),
                    telephone: Some(Telephone {
                        codec: Codec::MuLaw,
                    }),
                    clip_level: Some(0.5),
                    ..bare(-6.0)
                };
                assert_eq!(chain.apply(&x, rate, &pool, &mut rng).len(), n);
                assert_eq!(chain.apply(&x, rate, &[], &mut rng).len(), n);
            }
        }
        for _ in 0..40 {
            let chain = FieldChain::random(&mut rng);
            let x = half_silent();
            let y = chain.apply(&x, SR, &[], &mut rng);
            assert_eq!(y.len(), x.len(), "{}", chain.describe());
            assert!(y.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn same_seed_same_output_different_seed_different_chain() {
        let x = half_silent();
        let run = |seed: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let chain = FieldChain::random(&mut rng);
            let y = chain.apply(&x, SR, &[], &mut rng);
            (chain, y)
        };
        for seed in 0..8 {
            let (c1, y1) = run(seed);
            let (c2, y2) = run(seed);
            assert_eq!(c1, c2);
            assert_eq!(y1, y2, "seed {seed}: output differs");
            let (c3, _) = run(seed + 100);
            assert_ne!(
                c1,
                c3,
                "seeds {seed} and {} gave the same chain",
                seed + 100
            );
        }
        // The noise itself follows the RNG too.
        let chain = FieldChain {
            noise: Some(Noise {
                kind: NoiseKind::Pink,
                snr_db: 20.0,
            }),
            ..bare(0.0)
        };
        let a = chain.apply(&x, SR, &[], &mut ChaCha8Rng::seed_from_u64(1));
        let b = chain.apply(&x, SR, &[], &mut ChaCha8Rng::seed_from_u64(2));
        assert_ne!(a, b);
    }

    #[test]
    fn random_chains_have_the_documented_mix() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let chains: Vec<FieldChain> = (0..4000).map(|_| FieldChain::random(&mut rng)).collect();
        let frac = |f: &dyn Fn(&FieldChain) -> bool| {
            chains.iter().filter(|c| f(c)).count() as f64 / chains.len() as f64
        };
        assert!((frac(&|c| c.noise.is_some()) - 0.8).abs() < 0.03);
        assert!((frac(&|c| c.telephone.is_some()) - 0.3).abs() < 0.03);
        assert!((frac(&|c| c.reverb.is_some()) - 0.3).abs() < 0.03);
        assert!((frac(&|c| c.clip_level.is_some()) - 0.1).abs() < 0.02);
        for c in &chains {
            assert!((-18.0..=6.0).contains(&c.gain_db));
            if let Some(n) = &c.noise {
                assert!((5.0..=30.0).contains(&n.snr_db));
            }
            if let Some(r) = &c.reverb {
                assert!((0.2..=0.9).contains(&r.rt60_s));
            }
        }
        for kind in [NoiseKind::White, NoiseKind::Pink, NoiseKind::Babble] {
            assert!(chains
                .iter()
                .any(|c| c.noise.as_ref().is_some_and(|n| n.kind == kind)));
        }
    }

    #[test]
    fn describe_and_serde() {
        let chain = FieldChain {
            noise: Some(Noise {
                kind: NoiseKind::Pink,
                snr_db: 15.2,
            }),
            telephone: Some(Telephone {
                codec: Codec::MuLaw,
            }),
            ..bare(-12.0)
        };
        assert_eq!(
            chain.describe(),
            "pink noise 15 dB SNR, gain -12 dB, telephone μ-law"
        );
        let full = FieldChain {
            reverb: Some(Reverb {
                rt60_s: 0.45,
                direct_to_reverb_db: 5.0,
            }),
            clip_level: Some(0.3),
            ..bare(-0.2)
        };
        assert_eq!(
            full.describe(),
            "reverb RT60 0.45 s DRR 5 dB, gain 0 dB, clipped at 0.30"
        );
        let json = serde_json::to_string(&chain).unwrap();
        let back: FieldChain = serde_json::from_str(&json).unwrap();
        assert_eq!(back, chain);
    }
}
