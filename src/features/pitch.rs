//! F0 tracker: YIN (de Cheveigné & Kawahara 2002) with the difference function computed
//! through the FFT, several period candidates per frame and a Viterbi path through them
//! (as Praat's path finder does) so that octave jumps cost more than they gain, then a
//! three-frame median inside voiced runs.
//!
//! Frame `t` of the track is centred on the centre of STFT frame `t`
//! (`t * hop + window_len / 2`), so pitch, loudness and spectra line up frame by frame.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::{FeatureConfig, FeatureError};

/// Period candidates kept per frame (plus the unvoiced state).
const MAX_CANDIDATES: usize = 5;
/// Local minima of the normalised difference above this are not candidates at all.
const CANDIDATE_CEILING: f32 = 0.6;
/// Cost per octave above the shortest good candidate's period: breaks YIN's near-ties
/// between a period and its multiples in favour of the true (shortest) period.
const OCTAVE_COST: f32 = 0.1;
/// Cost per octave of F0 change between consecutive frames.
const JUMP_COST: f32 = 0.5;
/// Cost of switching between voiced and unvoiced.
const VOICING_SWITCH_COST: f32 = 0.15;
/// Voiced runs shorter than this many frames are dropped as spurious.
const MIN_VOICED_RUN: usize = 3;

/// Per-frame F0 track. Unvoiced frames have `f0_hz == 0`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PitchTrack {
    pub f0_hz: Vec<f32>,
    pub voiced: Vec<bool>,
    /// YIN aperiodicity of the chosen candidate (1 for unvoiced frames): 0 is perfectly
    /// periodic.
    pub aperiodicity: Vec<f32>,
    /// Frame energy in dB (mean square of the analysis segment), for voicing and evidence.
    pub energy_db: Vec<f32>,
    pub frame_rate: f64,
}

impl PitchTrack {
    pub fn n_voiced(&self) -> usize {
        self.voiced.iter().filter(|v| **v).count()
    }

    /// The voiced runs as frame ranges, in order.
    pub fn voiced_runs(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let n = self.voiced.len();
        let mut t = 0;
        std::iter::from_fn(move || {
            while t < n && !self.voiced[t] {
                t += 1;
            }
            let start = t;
            while t < n && self.voiced[t] {
                t += 1;
            }
            (start < t).then_some(start..t)
        })
    }
}

#[derive(Clone, Copy, Default)]
struct Candidate {
    f0: f32,
    aperiodicity: f32,
    cost: f32,
}

/// Reusable YIN tracker: FFT plans, buffers and Viterbi tables are made once.
pub struct PitchTracker {
    sample_rate: f32,
    hop: usize,
    centre_offset: usize,
    silence_below_db: f32,
    voicing_threshold: f32,
    /// Integration window W and largest lag; the analysis segment is W + max_lag samples.
    integration: usize,
    min_lag: usize,
    max_lag: usize,
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    buf_a: Vec<f32>,
    buf_b: Vec<f32>,
    spec_a: Vec<Complex<f32>>,
    spec_b: Vec<Complex<f32>>,
    scratch_f: Vec<Complex<f32>>,
    scratch_i: Vec<Complex<f32>>,
    corr: Vec<f32>,
    prefix_sq: Vec<f64>,
    cmnd: Vec<f32>,
    candidates: Vec<[Candidate; MAX_CANDIDATES]>,
    n_candidates: Vec<usize>,
    path_cost: Vec<f32>,
    back: Vec<u8>,
    sort_scratch: Vec<f64>,
}

impl PitchTracker {
    pub fn new(cfg: &FeatureConfig) -> Result<Self, FeatureError> {
        cfg.validate()?;
        let sr = cfg.sample_rate as f32;
        let max_lag = (sr / cfg.f0_min_hz).ceil() as usize;
        let min_lag = ((sr / cfg.f0_max_hz).floor() as usize).max(2);
        let integration = max_lag;
        // Circular correlation equals the linear one for lags <= max_lag when the FFT is at
        // least as long as the segment (see `difference`).
        let n = (integration + max_lag + 1).next_power_of_two();
        let mut planner = RealFftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(n);
        let inverse = planner.plan_fft_inverse(n);
        Ok(Self {
            sample_rate: sr,
            hop: cfg.hop_len(),
            centre_offset: cfg.window_len() / 2,
            silence_below_db: cfg.silence_below_db,
            voicing_threshold: cfg.voicing_threshold,
            integration,
            min_lag,
            max_lag,
            buf_a: forward.make_input_vec(),
            buf_b: forward.make_input_vec(),
            spec_a: forward.make_output_vec(),
            spec_b: forward.make_output_vec(),
            scratch_f: forward.make_scratch_vec(),
            scratch_i: inverse.make_scratch_vec(),
            corr: inverse.make_output_vec(),
            prefix_sq: Vec::with_capacity(integration + max_lag + 1),
            cmnd: vec![0.0; max_lag + 2],
            forward,
            inverse,
            candidates: Vec::new(),
            n_candidates: Vec::new(),
            path_cost: Vec::new(),
            back: Vec::new(),
            sort_scratch: Vec::new(),
        })
    }

    /// Length of the analysis segment in samples (two periods of the lowest F0).
    pub fn segment_len(&self) -> usize {
        self.integration + self.max_lag
    }

    /// Tracks `n_frames` frames of `samples` into `out`, reusing its buffers.
    pub fn track_into(&mut self, samples: &[f32], n_frames: usize, out: &mut PitchTrack) {
        out.frame_rate = self.sample_rate as f64 / self.hop as f64;
        for v in [&mut out.f0_hz, &mut out.aperiodicity, &mut out.energy_db] {
            v.clear();
            v.resize(n_frames, 0.0);
        }
        out.voiced.clear();
        out.voiced.resize(n_frames, false);
        self.candidates.clear();
        self.candidates
            .resize(n_frames, [Candidate::default(); MAX_CANDIDATES]);
        self.n_candidates.clear();
        self.n_candidates.resize(n_frames, 0);
        let seg_len = self.segment_len();
        if n_frames == 0 || samples.len() < seg_len {
            out.aperiodicity.fill(1.0);
            return;
        }
        for t in 0..n_frames {
            let centre = t * self.hop + self.centre_offset;
            let start = centre
                .saturating_sub(seg_len / 2)
                .min(samples.len() - seg_len);
            let energy = self.difference(&samples[start..start + seg_len]);
            out.energy_db[t] = (10.0 * (energy.max(1e-20)).log10()) as f32;
            self.collect_candidates(t);
        }
        // Silence gate relative to the clip's loud frames, so the gain of the recording does
        // not change which frames may be voiced.
        self.sort_scratch.clear();
        self.sort_scratch
            .extend(out.energy_db.iter().map(|&e| e as f64));
        let loud_db =
            super::stats::sorted_percentile(&mut self.sort_scratch, 0.95).unwrap_or(0.0) as f32;
        let gate_db = loud_db - self.silence_below_db;
        for t in 0..n_frames {
            if out.energy_db[t] < gate_db || out.energy_db[t] < -150.0 {
                self.n_candidates[t] = 0;
            }
        }
        self.viterbi(out);
        clean_voiced_runs(out);
    }

    /// Fills `self.cmnd` with YIN's cumulative-mean-normalised difference of `seg` and
    /// returns the segment's mean square (frame energy).
    fn difference(&mut self, seg: &[f32]) -> f64 {
        let (w, max_lag) = (self.integration, self.max_lag);
        self.buf_a.fill(0.0);
        self.buf_b.fill(0.0);
        self.buf_a[..w].copy_from_slice(&seg[..w]);
        self.buf_b[..seg.len()].copy_from_slice(seg);
        self.prefix_sq.clear();
        self.prefix_sq.push(0.0);
        let mut acc = 0.0f64;
        for &x in seg {
            acc += x as f64 * x as f64;
            self.prefix_sq.push(acc);
        }
        let ok = self
            .forward
            .process_with_scratch(&mut self.buf_a, &mut self.spec_a, &mut self.scratch_f)
            .is_ok()
            && self
                .forward
                .process_with_scratch(&mut self.buf_b, &mut self.spec_b, &mut self.scratch_f)
                .is_ok();
        if !ok {
            self.cmnd.fill(1.0);
            return acc / seg.len() as f64;
        }
        // r(τ) = Σ_j a_j b_{j+τ}  ⇔  R = conj(A)·B.
        for (a, b) in self.spec_a.iter_mut().zip(&self.spec_b) {
            *a = a.conj() * b;
        }
        let last = self.spec_a.len() - 1;
        self.spec_a[0].im = 0.0;
        self.spec_a[last].im = 0.0;
        if self
            .inverse
            .process_with_scratch(&mut self.spec_a, &mut self.corr, &mut self.scratch_i)
            .is_err()
        {
            self.cmnd.fill(1.0);
            return acc / seg.len() as f64;
        }
        let scale = 1.0 / self.corr.len() as f64;
        let e0 = self.prefix_sq[w];
        self.cmnd[0] = 1.0;
        let mut running = 0.0f64;
        for tau in 1..=max_lag {
            let e_tau = self.prefix_sq[tau + w] - self.prefix_sq[tau];
            let d = (e0 + e_tau - 2.0 * self.corr[tau] as f64 * scale).max(0.0);
            running += d;
            self.cmnd[tau] = if running > 0.0 {
                (d * tau as f64 / running) as f32
            } else {
                1.0
            };
        }
        self.cmnd[max_lag + 1] = 1.0;
        acc / seg.len() as f64
    }

    fn collect_candidates(&mut self, t: usize) {
        let c = &self.cmnd;
        let mut found = [Candidate::default(); MAX_CANDIDATES];
        let mut n = 0;
        let mut shortest_lag = f32::INFINITY;
        for tau in self.min_lag.max(2)..=self.max_lag {
            let v = c[tau];
            if !(v < CANDIDATE_CEILING && v < c[tau - 1] && v <= c[tau + 1]) {
                continue;
            }
            // Parabolic interpolation of the minimum for sub-sample period resolution.
            let (l, r) = (c[tau - 1], c[tau + 1]);
            let denom = l - 2.0 * v + r;
            let shift = if denom > 1e-12 {
                (0.5 * (l - r) / denom).clamp(-0.5, 0.5)
            } else {
                0.0
            };
            let lag = tau as f32 + shift;
            let aperiodicity = (v - 0.25 * (l - r) * shift).clamp(0.0, 1.0);
            if aperiodicity < self.voicing_threshold {
                shortest_lag = shortest_lag.min(lag);
            }
            let cand = Candidate {
                f0: self.sample_rate / lag,
                aperiodicity,
                cost: 0.0,
            };
            if n < MAX_CANDIDATES {
                found[n] = cand;
                n += 1;
            } else if let Some(worst) =
                (0..n).max_by(|&i, &j| found[i].aperiodicity.total_cmp(&found[j].aperiodicity))
            {
                if cand.aperiodicity < found[worst].aperiodicity {
                    found[worst] = cand;
                }
            }
        }
        for cand in &mut found[..n] {
            let lag = self.sample_rate / cand.f0;
            let octaves_longer = if shortest_lag.is_finite() {
                (lag / shortest_lag).log2().max(0.0)
            } else {
                0.0
            };
            cand.cost = cand.aperiodicity + OCTAVE_COST * octaves_longer;
        }
        self.candidates[t] = found;
        self.n_candidates[t] = n;
    }

    /// Cheapest path through the candidates; state `MAX_CANDIDATES` is "unvoiced".
    fn viterbi(&mut self, out: &mut PitchTrack) {
        const S: usize = MAX_CANDIDATES + 1;
        const UNVOICED: usize = MAX_CANDIDATES;
        let n_frames = out.f0_hz.len();
        self.path_cost.clear();
        self.path_cost.resize(n_frames * S, f32::INFINITY);
        self.back.clear();
        self.back.resize(n_frames * S, UNVOICED as u8);
        let unvoiced_cost = self.voicing_threshold;
        for t in 0..n_frames {
            let n = self.n_candidates[t];
            for s in (0..n).chain(std::iter::once(UNVOICED)) {
                let local = if s == UNVOICED {
                    unvoiced_cost
                } else {
                    self.candidates[t][s].cost
                };
                if t == 0 {
                    self.path_cost[s] = local;
                    continue;
                }
                let mut best = (f32::INFINITY, UNVOICED);
                for p in (0..self.n_candidates[t - 1]).chain(std::iter::once(UNVOICED)) {
                    let prev = self.path_cost[(t - 1) * S + p];
                    let trans = match (p == UNVOICED, s == UNVOICED) {
                        (true, true) => 0.0,
                        (false, false) => {
                            JUMP_COST
                                * (self.candidates[t][s].f0 / self.candidates[t - 1][p].f0)
                                    .log2()
                                    .abs()
                        }
                        _ => VOICING_SWITCH_COST,
                    };
                    if prev + trans < best.0 {
                        best = (prev + trans, p);
                    }
                }
                self.path_cost[t * S + s] = best.0 + local;
                self.back[t * S + s] = best.1 as u8;
            }
        }
        if n_frames == 0 {
            return;
        }
        let last = &self.path_cost[(n_frames - 1) * S..];
        let mut state = (0..S)
            .min_by(|&a, &b| last[a].total_cmp(&last[b]))
            .unwrap_or(UNVOICED);
        for t in (0..n_frames).rev() {
            if state == UNVOICED {
                out.voiced[t] = false;
                out.f0_hz[t] = 0.0;
                out.aperiodicity[t] = 1.0;
            } else {
                let c = self.candidates[t][state];
                out.voiced[t] = true;
                out.f0_hz[t] = c.f0;
                out.aperiodicity[t] = c.aperiodicity;
            }
            state = self.back[t * S + state] as usize;
        }
    }
}

/// Drops voiced runs shorter than [`MIN_VOICED_RUN`] frames and median-filters F0 over three
/// frames inside the remaining runs.
fn clean_voiced_runs(out: &mut PitchTrack) {
    let n = out.voiced.len();
    let mut t = 0;
    while t < n {
        if !out.voiced[t] {
            t += 1;
            continue;
        }
        let start = t;
        while t < n && out.voiced[t] {
            t += 1;
        }
        if t - start < MIN_VOICED_RUN {
            for i in start..t {
                out.voiced[i] = false;
                out.f0_hz[i] = 0.0;
                out.aperiodicity[i] = 1.0;
            }
            continue;
        }
        let mut prev = out.f0_hz[start];
        for i in start + 1..t - 1 {
            let (a, b, c) = (prev, out.f0_hz[i], out.f0_hz[i + 1]);
            prev = b;
            out.f0_hz[i] = a.max(b).min(a.min(b).max(c));
        }
    }
}
