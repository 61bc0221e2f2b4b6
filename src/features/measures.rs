//! Clip-level measurements behind [`super::FEATURES`], computed from the F0 track, the frame
//! intensity contour and the power spectrogram. Every threshold on level is relative to the
//! clip's own loud frames, which is what keeps these features gain-invariant.

use super::pitch::PitchTrack;
use super::stats::{mean, percentile_of_sorted, slope, sorted_percentile, std_dev};
use super::FeatureConfig;

/// Intensity-peak nuclei and pauses use de Jong & Wempe's 25 dB below the loud frames.
const NUCLEUS_AND_PAUSE_BELOW_DB: f64 = 25.0;
/// A syllable nucleus must stand this far above the dip that follows it.
const NUCLEUS_MIN_DIP_DB: f64 = 2.0;
const MIN_PAUSE_S: f64 = 0.15;
/// A pitch rise counts once the smoothed contour climbs this far above its running minimum…
const RISE_ST: f64 = 1.5;
/// …and the next rise can start after the contour falls this far from its peak.
const RISE_RESET_ST: f64 = 0.5;
/// Voiced runs shorter than this carry too few F0 samples to see a 4 Hz modulation.
const TREMOR_MIN_RUN_S: f64 = 0.15;
const TREMOR_BAND_HZ: (f64, f64) = (4.0, 12.0);
/// Fewest voiced frames for F0 statistics.
const MIN_VOICED_FRAMES: usize = 5;

/// The speech span of a clip: first..=last frame within `silence_below_db` of its loud frames.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub first: usize,
    pub last: usize,
    /// 95th percentile of frame intensity, dB: the reference of every relative threshold.
    pub loud_db: f64,
    pub active_below_db: f64,
}

impl Span {
    fn len(&self) -> usize {
        self.last + 1 - self.first
    }
}

/// Reusable buffers and precomputed bin ranges.
pub struct Scratch {
    frame_rate: f64,
    bin_hz: f64,
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
    mag: Vec<f32>,
    prev_mag: Vec<f32>,
    slope_low: BandRegression,
    slope_mid: BandRegression,
}

/// Precomputed least-squares slope over a band of bins (x in kHz).
struct BandRegression {
    first: usize,
    x_centred: Vec<f64>,
    sxx: f64,
}

impl BandRegression {
    fn new(lo_hz: f64, hi_hz: f64, bin_hz: f64, n_bins: usize) -> Self {
        let first = (lo_hz / bin_hz).ceil() as usize;
        let last = ((hi_hz / bin_hz).floor() as usize).min(n_bins - 1);
        let xs: Vec<f64> = (first..=last).map(|k| k as f64 * bin_hz / 1000.0).collect();
        let mx = xs.iter().sum::<f64>() / xs.len().max(1) as f64;
        let x_centred: Vec<f64> = xs.iter().map(|x| x - mx).collect();
        let sxx = x_centred.iter().map(|x| x * x).sum();
        Self {
            first,
            x_centred,
            sxx,
        }
    }

    /// dB/kHz slope of 10·log10(power) in the band.
    fn slope(&self, power: &[f32]) -> Option<f64> {
        if self.sxx <= 0.0 {
            return None;
        }
        let sxy: f64 = self
            .x_centred
            .iter()
            .zip(&power[self.first..])
            .map(|(x, &p)| x * 10.0 * (p as f64 + 1e-20).log10())
            .sum();
        Some(sxy / self.sxx)
    }
}

impl Scratch {
    pub fn new(cfg: &FeatureConfig, n_bins: usize) -> Self {
        let bin_hz = cfg.sample_rate as f64 / cfg.n_fft as f64;
        Self {
            frame_rate: cfg.frame_rate(),
            bin_hz,
            a: Vec::new(),
            b: Vec::new(),
            c: Vec::new(),
            mag: vec![0.0; n_bins],
            prev_mag: vec![0.0; n_bins],
            slope_low: BandRegression::new(0.0, 500.0, bin_hz, n_bins),
            slope_mid: BandRegression::new(500.0, 1500.0, bin_hz, n_bins),
        }
    }

    fn bin(&self, hz: f64, n_bins: usize) -> usize {
        ((hz / self.bin_hz).round() as usize).min(n_bins - 1)
    }
}

pub fn speech_span(s: &mut Scratch, track: &PitchTrack, silence_below_db: f64) -> Option<Span> {
    s.a.clear();
    s.a.extend(track.energy_db.iter().map(|&e| e as f64));
    let loud_db = sorted_percentile(&mut s.a, 0.95)?;
    // Digital silence or a clip so quiet that nothing in it can be speech.
    if loud_db < -100.0 {
        return None;
    }
    let active = |e: &f32| *e as f64 >= loud_db - silence_below_db;
    let first = track.energy_db.iter().position(active)?;
    let last = track.energy_db.iter().rposition(active)?;
    Some(Span {
        first,
        last,
        loud_db,
        active_below_db: silence_below_db,
    })
}

pub fn pitch_features(
    s: &mut Scratch,
    track: &PitchTrack,
    span: Option<Span>,
    put: &mut impl FnMut(&'static str, Option<f64>),
) {
    let fr = s.frame_rate;
    let Some(span) = span else { return };
    let voiced_in_span = (span.first..=span.last)
        .filter(|&t| track.voiced[t])
        .count();
    put(
        "voiced_ratio",
        Some(voiced_in_span as f64 / span.len() as f64),
    );
    s.a.clear();
    s.a.extend(
        track
            .f0_hz
            .iter()
            .zip(&track.voiced)
            .filter(|(_, v)| **v)
            .map(|(f, _)| *f as f64),
    );
    if s.a.len() < MIN_VOICED_FRAMES {
        return;
    }
    put("f0_mean_hz", mean(&s.a));
    put("f0_std_hz", std_dev(&s.a));
    s.a.sort_unstable_by(|a, b| a.total_cmp(b));
    let median = percentile_of_sorted(&s.a, 0.5);
    put("f0_median_hz", Some(median));
    put(
        "f0_range_hz",
        Some(percentile_of_sorted(&s.a, 0.9) - percentile_of_sorted(&s.a, 0.1)),
    );
    put("f0_median_st27", Some(12.0 * (median / 27.5).log2()));
    // Semitones around the utterance median: what remains of pitch once the speaker's own
    // register is removed, so lexical tone and arousal are judged on the same footing.
    s.b.clear();
    s.c.clear();
    for t in 0..track.voiced.len() {
        if track.voiced[t] {
            s.b.push(12.0 * (track.f0_hz[t] as f64 / median).log2());
            s.c.push(t as f64 / fr);
        }
    }
    put("f0_std_st", std_dev(&s.b));
    put("f0_slope_st_per_s", slope(&s.c, &s.b));
    s.a.clear();
    s.a.extend_from_slice(&s.b);
    s.a.sort_unstable_by(|a, b| a.total_cmp(b));
    put(
        "f0_range_st",
        Some(percentile_of_sorted(&s.a, 0.9) - percentile_of_sorted(&s.a, 0.1)),
    );
    let aperiodicity: f64 = track
        .aperiodicity
        .iter()
        .zip(&track.voiced)
        .filter(|(_, v)| **v)
        .map(|(a, _)| *a as f64)
        .sum();
    put("f0_aperiodicity", Some(aperiodicity / s.b.len() as f64));

    // Per voiced run: rises, tremor, run lengths.
    let (mut rises, mut runs, mut run_frames) = (0usize, 0usize, 0usize);
    let (mut band_power, mut total_power, mut band_var_weighted, mut tremor_frames) =
        (0.0, 0.0, 0.0, 0usize);
    for std::ops::Range { start, end: t } in track.voiced_runs() {
        runs += 1;
        run_frames += t - start;
        s.b.clear();
        s.b.extend(
            track.f0_hz[start..t]
                .iter()
                .map(|&f| 12.0 * (f as f64 / median).log2()),
        );
        rises += count_rises(&s.b, &mut s.c);
        if (t - start) as f64 / fr >= TREMOR_MIN_RUN_S {
            if let Some((band, total, var)) = tremor(&mut s.b, fr) {
                band_power += band;
                total_power += total;
                band_var_weighted += if total > 0.0 {
                    band / total * var * (t - start) as f64
                } else {
                    0.0
                };
                tremor_frames += t - start;
            }
        }
    }
    put("f0_rise_count", Some(rises as f64));
    put(
        "f0_rise_rate_per_s",
        Some(rises as f64 / (span.len() as f64 / fr)),
    );
    put(
        "voiced_segment_mean_s",
        (runs > 0).then(|| run_frames as f64 / runs as f64 / fr),
    );
    if tremor_frames > 0 && total_power > 0.0 {
        put("f0_tremor_ratio", Some(band_power / total_power));
        put(
            "f0_tremor_st",
            Some((band_var_weighted / tremor_frames as f64).sqrt()),
        );
    }
}

/// Rises of at least [`RISE_ST`] in a semitone contour, smoothed over 5 frames (50 ms).
fn count_rises(st: &[f64], smooth: &mut Vec<f64>) -> usize {
    moving_average(st, 5, smooth);
    let Some(&first) = smooth.first() else {
        return 0;
    };
    let (mut rising, mut low, mut high, mut count) = (false, first, first, 0);
    for &y in smooth.iter() {
        if rising {
            high = high.max(y);
            if high - y >= RISE_RESET_ST {
                rising = false;
                low = y;
            }
        } else {
            low = low.min(y);
            if y - low >= RISE_ST {
                count += 1;
                rising = true;
                high = y;
            }
        }
    }
    count
}

/// (4–12 Hz power, 1–50 Hz power, variance) of a detrended, Hann-windowed contour sampled
/// at `fr` Hz, from its DTFT on a 1 Hz grid (a grid, not FFT bins, so runs of any length
/// measure the same band). Detrends `y` in place.
fn tremor(y: &mut [f64], fr: f64) -> Option<(f64, f64, f64)> {
    let n = y.len();
    if n < 8 {
        return None;
    }
    let xs_mean = (n - 1) as f64 / 2.0;
    let ys_mean = y.iter().sum::<f64>() / n as f64;
    let sxx: f64 = (0..n).map(|i| (i as f64 - xs_mean).powi(2)).sum();
    let sxy: f64 = y
        .iter()
        .enumerate()
        .map(|(i, v)| (i as f64 - xs_mean) * (v - ys_mean))
        .sum();
    let b = sxy / sxx;
    for (i, v) in y.iter_mut().enumerate() {
        *v -= ys_mean + b * (i as f64 - xs_mean);
    }
    let var = y.iter().map(|v| v * v).sum::<f64>() / n as f64;
    for (i, v) in y.iter_mut().enumerate() {
        *v *= 0.5 - 0.5 * (std::f64::consts::TAU * (i as f64 + 0.5) / n as f64).cos();
    }
    let (mut band, mut total) = (0.0, 0.0);
    let top = (fr / 2.0).floor().min(50.0) as usize;
    for f_hz in 1..=top {
        // Rotate a unit phasor instead of calling sin/cos per sample.
        let (ds, dc) = (std::f64::consts::TAU * f_hz as f64 / fr).sin_cos();
        let (mut c, mut s, mut re, mut im) = (1.0, 0.0, 0.0, 0.0);
        for v in y.iter() {
            re += v * c;
            im -= v * s;
            (c, s) = (c * dc - s * ds, s * dc + c * ds);
        }
        let p = re * re + im * im;
        total += p;
        if (TREMOR_BAND_HZ.0..=TREMOR_BAND_HZ.1).contains(&(f_hz as f64)) {
            band += p;
        }
    }
    Some((band, total, var))
}

fn moving_average(x: &[f64], width: usize, out: &mut Vec<f64>) {
    out.clear();
    let half = width / 2;
    for i in 0..x.len() {
        let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(x.len()));
        out.push(x[lo..hi].iter().sum::<f64>() / (hi - lo) as f64);
    }
}

pub fn loudness_and_tempo(
    s: &mut Scratch,
    track: &PitchTrack,
    span: Option<Span>,
    put: &mut impl FnMut(&'static str, Option<f64>),
) {
    let Some(span) = span else { return };
    let fr = s.frame_rate;
    let e = &track.energy_db[span.first..=span.last];
    let active_floor = span.loud_db - span.active_below_db;
    s.a.clear();
    s.a.extend(e.iter().map(|&v| v as f64).filter(|&v| v >= active_floor));
    put("loudness_mean_dbfs", mean(&s.a));
    put("loudness_std_db", std_dev(&s.a));
    if let Some(p95) = sorted_percentile(&mut s.a, 0.95) {
        put(
            "loudness_range_db",
            Some(p95 - percentile_of_sorted(&s.a, 0.1)),
        );
    }
    s.b.clear();
    s.b.extend(e.iter().map(|&v| v as f64));
    moving_average(&s.b, 3, &mut s.c);
    let (mut rise, mut n_rise, mut fall, mut n_fall) = (0.0, 0usize, 0.0, 0usize);
    for i in 1..s.c.len() {
        if s.b[i] < active_floor && s.b[i - 1] < active_floor {
            continue;
        }
        let d = (s.c[i] - s.c[i - 1]) * fr;
        if d > 0.0 {
            rise += d;
            n_rise += 1;
        } else if d < 0.0 {
            fall -= d;
            n_fall += 1;
        }
    }
    put(
        "loudness_rise_db_per_s",
        (n_rise > 0).then(|| rise / n_rise as f64),
    );
    put(
        "loudness_fall_db_per_s",
        (n_fall > 0).then(|| fall / n_fall as f64),
    );

    // Pauses: long enough runs of quiet frames inside the span.
    let quiet = span.loud_db - NUCLEUS_AND_PAUSE_BELOW_DB;
    let min_pause = (MIN_PAUSE_S * fr).round() as usize;
    let (mut pause_frames, mut run) = (0usize, 0usize);
    for &v in e.iter().chain(std::iter::once(&f32::INFINITY)) {
        if (v as f64) < quiet {
            run += 1;
        } else {
            if run >= min_pause {
                pause_frames += run;
            }
            run = 0;
        }
    }
    let span_s = span.len() as f64 / fr;
    put("speech_span_s", Some(span_s));
    put("pause_ratio", Some(pause_frames as f64 / span.len() as f64));

    // Syllable nuclei on the 50 ms-smoothed intensity.
    moving_average(&s.b, 5, &mut s.c);
    let sm = &s.c;
    let voiced = &track.voiced[span.first..=span.last];
    let mut nuclei = 0usize;
    let mut i = 1;
    while i + 1 < sm.len() {
        let is_peak = sm[i] > sm[i - 1] && sm[i] >= sm[i + 1] && sm[i] >= quiet;
        if !is_peak {
            i += 1;
            continue;
        }
        // Dip: the lowest point before the contour climbs above this peak again.
        let mut j = i + 1;
        let mut dip = sm[i];
        while j < sm.len() && sm[j] <= sm[i] {
            dip = dip.min(sm[j]);
            j += 1;
        }
        let near_voiced = voiced[i.saturating_sub(2)..(i + 3).min(voiced.len())]
            .iter()
            .any(|v| *v);
        if sm[i] - dip >= NUCLEUS_MIN_DIP_DB && near_voiced {
            nuclei += 1;
        }
        i += 1;
    }
    put("speech_rate_syl_per_s", Some(nuclei as f64 / span_s));
    let phonation_s = (span.len() - pause_frames) as f64 / fr;
    put(
        "articulation_rate_syl_per_s",
        (phonation_s > 0.0).then(|| nuclei as f64 / phonation_s),
    );
}

pub fn spectral_features(
    s: &mut Scratch,
    power: &[f32],
    n_bins: usize,
    track: &PitchTrack,
    span: Option<Span>,
    put: &mut impl FnMut(&'static str, Option<f64>),
) {
    let Some(span) = span else { return };
    let active_floor = (span.loud_db - span.active_below_db) as f32;
    let (b50, b1k, b2k, b5k) = (
        s.bin(50.0, n_bins),
        s.bin(1000.0, n_bins),
        s.bin(2000.0, n_bins),
        s.bin(5000.0, n_bins),
    );
    let (mut centroid, mut n_centroid, mut flux, mut n_flux) = (0.0, 0usize, 0.0, 0usize);
    let (mut alpha, mut hamm, mut slope_low, mut slope_mid, mut n_voiced) =
        (0.0, 0.0, 0.0, 0.0, 0usize);
    let mut prev_valid = false;
    for t in span.first..=span.last {
        let p = &power[t * n_bins..(t + 1) * n_bins];
        if track.energy_db[t] < active_floor {
            prev_valid = false;
            continue;
        }
        let total: f64 = p.iter().map(|&v| v as f64).sum();
        if total <= 0.0 {
            prev_valid = false;
            continue;
        }
        let weighted: f64 = p
            .iter()
            .enumerate()
            .map(|(k, &v)| k as f64 * v as f64)
            .sum();
        centroid += weighted / total * s.bin_hz;
        n_centroid += 1;
        let norm = total.sqrt() as f32; // ‖|X|‖₂ = sqrt(Σ|X|²)
        for (m, &v) in s.mag.iter_mut().zip(p) {
            *m = v.sqrt() / norm;
        }
        if prev_valid {
            flux += s
                .mag
                .iter()
                .zip(&s.prev_mag)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
            n_flux += 1;
        }
        std::mem::swap(&mut s.mag, &mut s.prev_mag);
        prev_valid = true;

        if track.voiced[t] {
            let low: f64 = p[b50..b1k].iter().map(|&v| v as f64).sum();
            let high: f64 = p[b1k..b5k].iter().map(|&v| v as f64).sum();
            let peak_low = p[1..b2k].iter().fold(0.0f32, |m, &v| m.max(v)) as f64;
            let peak_high = p[b2k..=b5k].iter().fold(0.0f32, |m, &v| m.max(v)) as f64;
            if low > 0.0 && high > 0.0 && peak_low > 0.0 && peak_high > 0.0 {
                alpha += 10.0 * (high / low).log10();
                hamm += 10.0 * (peak_low / peak_high).log10();
                slope_low += s.slope_low.slope(p).unwrap_or(0.0);
                slope_mid += s.slope_mid.slope(p).unwrap_or(0.0);
                n_voiced += 1;
            }
        }
    }
    put(
        "spectral_centroid_hz",
        (n_centroid > 0).then(|| centroid / n_centroid as f64),
    );
    put("spectral_flux", (n_flux > 0).then(|| flux / n_flux as f64));
    if n_voiced >= MIN_VOICED_FRAMES {
        let n = n_voiced as f64;
        put("alpha_ratio_db", Some(alpha / n));
        put("hammarberg_db", Some(hamm / n));
        put("spectral_slope_0_500_db_per_khz", Some(slope_low / n));
        put("spectral_slope_500_1500_db_per_khz", Some(slope_mid / n));
    }
}
