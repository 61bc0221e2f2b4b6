//! Voice quality from the F0 track and the waveform: jitter (local, %), shimmer (local, dB)
//! and harmonics-to-noise ratio (dB).
//!
//! - Periods are measured on voiced runs by waveform cross-correlation from one period to the
//!   next (the idea of Praat's "To PointProcess (periodic, cc)"), searched within 0.8–1.25 of
//!   the tracked period, with sub-sample refinement. Jitter local = mean |T_i − T_{i+1}| / mean
//!   T (Praat/eGeMAPS `jitterLocal`, ×100). Shimmer local dB = mean |20·log10(A_{i+1}/A_i)| of
//!   the per-period peak amplitudes (Praat `Shimmer (local, dB)`; eGeMAPS reports shimmer in
//!   dB too).
//! - Graceful in noise: period pairs outside the F0 range or whose ratio exceeds 1.3 (Praat's
//!   maximum period factor), and amplitude pairs with a ratio above 1.6 (Praat's maximum
//!   amplitude factor), are skipped; fewer than [`MIN_PERIOD_PAIRS`] usable pairs → absent.
//! - HNR: Boersma (1993) autocorrelation method, as eGeMAPS `HNRdBACF`: Hann-windowed
//!   segment of three periods of the lowest F0, autocorrelation divided by the window's own
//!   autocorrelation, peak near the tracked period, HNR = 10·log10(r / (1 − r)), per voiced
//!   frame clamped to [−20, 40] dB, then averaged.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::pitch::PitchTrack;
use super::stft::hann;
use super::{FeatureConfig, FeatureError};

/// Fewest usable period pairs for jitter/shimmer to be reported.
pub const MIN_PERIOD_PAIRS: usize = 10;
const MAX_PERIOD_FACTOR: f64 = 1.3;
const MAX_AMPLITUDE_FACTOR: f64 = 1.6;
const HNR_MIN_DB: f64 = -20.0;
const HNR_MAX_DB: f64 = 40.0;

/// Voice-quality measures of one clip; `None` when not measurable.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VoiceQuality {
    pub jitter_local_pct: Option<f64>,
    pub shimmer_local_db: Option<f64>,
    pub hnr_db: Option<f64>,
    /// Period pairs jitter was computed from.
    pub n_period_pairs: usize,
}

pub struct VoiceAnalyzer {
    sample_rate: f64,
    hop: usize,
    centre_offset: usize,
    min_period: f64,
    max_period: f64,
    window: Vec<f32>,
    window_acf: Vec<f32>,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    buf: Vec<f32>,
    spec: Vec<Complex<f32>>,
    acf: Vec<f32>,
    scratch_f: Vec<Complex<f32>>,
    scratch_i: Vec<Complex<f32>>,
    /// (period in samples, peak amplitude, run id) per measured period.
    periods: Vec<(f64, f64, usize)>,
    hnr: Vec<f64>,
}

impl VoiceAnalyzer {
    pub fn new(cfg: &FeatureConfig) -> Result<Self, FeatureError> {
        cfg.validate()?;
        let sr = cfg.sample_rate as f64;
        let len = (3.0 * sr / cfg.f0_min_hz as f64).ceil() as usize;
        let n = (2 * len).next_power_of_two();
        let mut planner = RealFftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(n);
        let inverse = planner.plan_fft_inverse(n);
        let mut me = Self {
            sample_rate: sr,
            hop: cfg.hop_len(),
            centre_offset: cfg.window_len() / 2,
            min_period: sr / cfg.f0_max_hz as f64,
            max_period: sr / cfg.f0_min_hz as f64,
            window: hann(len),
            window_acf: Vec::new(),
            buf: forward.make_input_vec(),
            spec: forward.make_output_vec(),
            acf: inverse.make_output_vec(),
            scratch_f: forward.make_scratch_vec(),
            scratch_i: inverse.make_scratch_vec(),
            forward,
            inverse,
            periods: Vec::new(),
            hnr: Vec::new(),
        };
        let ones = vec![1.0f32; len];
        me.window_acf = me.normalised_acf(&ones).to_vec();
        Ok(me)
    }

    pub fn analyze(&mut self, samples: &[f32], track: &PitchTrack) -> VoiceQuality {
        let (jitter, shimmer, pairs) = self.jitter_shimmer(samples, track);
        VoiceQuality {
            jitter_local_pct: jitter,
            shimmer_local_db: shimmer,
            hnr_db: self.hnr(samples, track),
            n_period_pairs: pairs,
        }
    }

    fn jitter_shimmer(
        &mut self,
        x: &[f32],
        track: &PitchTrack,
    ) -> (Option<f64>, Option<f64>, usize) {
        self.periods.clear();
        let mut run_id = 0;
        for std::ops::Range { start, end: t } in track.voiced_runs() {
            run_id += 1;
            let begin = (start * self.hop + self.centre_offset).saturating_sub(self.hop / 2);
            let end = ((t - 1) * self.hop + self.centre_offset + self.hop / 2).min(x.len());
            self.periods_in_run(x, track, begin, end, run_id);
        }
        let (mut jit_sum, mut jit_n, mut period_sum, mut period_n) = (0.0, 0usize, 0.0, 0usize);
        let (mut shim_sum, mut shim_n) = (0.0, 0usize);
        for w in self.periods.windows(2) {
            let ((p1, a1, r1), (p2, a2, r2)) = (w[0], w[1]);
            period_sum += p1;
            period_n += 1;
            if r1 != r2 {
                continue;
            }
            if p1.max(p2) / p1.min(p2) <= MAX_PERIOD_FACTOR {
                jit_sum += (p1 - p2).abs();
                jit_n += 1;
            }
            if a1 > 0.0 && a2 > 0.0 && a1.max(a2) / a1.min(a2) <= MAX_AMPLITUDE_FACTOR {
                shim_sum += (20.0 * (a2 / a1).log10()).abs();
                shim_n += 1;
            }
        }
        let jitter = (jit_n >= MIN_PERIOD_PAIRS && period_n > 0)
            .then(|| 100.0 * (jit_sum / jit_n as f64) / (period_sum / period_n as f64));
        let shimmer = (shim_n >= MIN_PERIOD_PAIRS).then(|| shim_sum / shim_n as f64);
        (jitter, shimmer, jit_n)
    }

    /// Walks one voiced run period by period, each next period found by normalised
    /// cross-correlation of the current period with the following samples.
    fn periods_in_run(
        &mut self,
        x: &[f32],
        track: &PitchTrack,
        begin: usize,
        end: usize,
        run_id: usize,
    ) {
        let mut pos = begin;
        loop {
            let frame = ((pos.saturating_sub(self.centre_offset) as f64 / self.hop as f64).round()
                as usize)
                .min(track.f0_hz.len() - 1);
            let f0 = track.f0_hz[frame] as f64;
            if f0 <= 0.0 {
                break;
            }
            let expected = self.sample_rate / f0;
            let t_len = expected.round() as usize;
            let lo = ((expected * 0.8).floor() as usize)
                .max(self.min_period.floor() as usize)
                .max(2);
            let hi = ((expected * 1.25).ceil() as usize).min(self.max_period.ceil() as usize);
            if lo >= hi || pos + hi + t_len + 1 > end {
                break;
            }
            let reference = &x[pos..pos + t_len];
            let e_ref: f64 = reference.iter().map(|&v| v as f64 * v as f64).sum();
            if e_ref <= 0.0 {
                break;
            }
            let ncc = |lag: usize| -> f64 {
                let other = &x[pos + lag..pos + lag + t_len];
                let (mut dot, mut e) = (0.0f64, 0.0f64);
                for (&a, &b) in reference.iter().zip(other) {
                    dot += a as f64 * b as f64;
                    e += b as f64 * b as f64;
                }
                if e > 0.0 {
                    dot / (e_ref * e).sqrt()
                } else {
                    0.0
                }
            };
            let mut best = (f64::NEG_INFINITY, lo);
            for lag in lo..=hi {
                let c = ncc(lag);
                if c > best.0 {
                    best = (c, lag);
                }
            }
            let (c0, lag) = best;
            if c0 < 0.5 {
                // Not periodic here (noise or a voicing error): restart one expected period on.
                pos += t_len;
                continue;
            }
            let mut period = lag as f64;
            if lag > lo && lag < hi {
                let (l, r) = (ncc(lag - 1), ncc(lag + 1));
                let denom = l - 2.0 * c0 + r;
                if denom < 0.0 {
                    period += (0.5 * (l - r) / denom).clamp(-0.5, 0.5);
                }
            }
            let amplitude = x[pos..pos + lag]
                .iter()
                .fold(0.0f32, |m, &v| m.max(v.abs())) as f64;
            if period >= self.min_period && period <= self.max_period {
                self.periods.push((period, amplitude, run_id));
            }
            pos += lag;
        }
    }

    fn hnr(&mut self, x: &[f32], track: &PitchTrack) -> Option<f64> {
        self.hnr.clear();
        let len = self.window.len();
        if x.len() < len {
            return None;
        }
        for t in 0..track.voiced.len() {
            if !track.voiced[t] || track.f0_hz[t] <= 0.0 {
                continue;
            }
            let centre = t * self.hop + self.centre_offset;
            let start = centre.saturating_sub(len / 2).min(x.len() - len);
            let expected = self.sample_rate / track.f0_hz[t] as f64;
            let seg = &x[start..start + len];
            let mean = seg.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
            self.buf.fill(0.0);
            for ((dst, &v), &w) in self.buf.iter_mut().zip(seg).zip(&self.window) {
                *dst = ((v as f64 - mean) as f32) * w;
            }
            if self.acf_of_buf().is_none() {
                continue;
            }
            let lo = ((expected * 0.8).floor() as usize).max(2);
            let hi = ((expected * 1.25).ceil() as usize).min(len / 2);
            if lo >= hi {
                continue;
            }
            let mut best = (f64::NEG_INFINITY, lo);
            for lag in lo..=hi {
                let r = self.acf[lag] as f64 / self.window_acf[lag].max(1e-6) as f64;
                if r > best.0 {
                    best = (r, lag);
                }
            }
            let r = best.0.clamp(1e-9, 1.0 - 1e-9);
            let db = (10.0 * (r / (1.0 - r)).log10()).clamp(HNR_MIN_DB, HNR_MAX_DB);
            self.hnr.push(db);
        }
        (!self.hnr.is_empty()).then(|| self.hnr.iter().sum::<f64>() / self.hnr.len() as f64)
    }

    /// Normalised autocorrelation (r(τ)/r(0)) of `seg` windowed by the Hann window.
    fn normalised_acf(&mut self, seg: &[f32]) -> &[f32] {
        self.buf.fill(0.0);
        for ((dst, &v), &w) in self.buf.iter_mut().zip(seg).zip(&self.window) {
            *dst = v * w;
        }
        if self.acf_of_buf().is_none() {
            self.acf.fill(0.0);
        }
        &self.acf
    }

    /// Autocorrelation of `self.buf` into `self.acf`, normalised by its lag-0 value.
    fn acf_of_buf(&mut self) -> Option<()> {
        self.forward
            .process_with_scratch(&mut self.buf, &mut self.spec, &mut self.scratch_f)
            .ok()?;
        for c in self.spec.iter_mut() {
            *c = Complex::new(c.norm_sqr(), 0.0);
        }
        self.inverse
            .process_with_scratch(&mut self.spec, &mut self.acf, &mut self.scratch_i)
            .ok()?;
        let r0 = self.acf[0];
        if r0 <= 0.0 {
            return None;
        }
        for v in self.acf.iter_mut() {
            *v /= r0;
        }
        Some(())
    }
}
