//! The catalogue of evidence features: every name an [`crate::Evidence`] can hold, with its
//! unit, meaning, whether it survives a change of recording gain, and how it relates to
//! eGeMAPS (Eyben et al. 2016). Rules and the acoustic model may only use features with
//! `gain_invariant == true`: the RAVDESS classes differ by ~19 dB in average level, so
//! absolute level is a shortcut that fails on field recordings.

/// One documented evidence feature.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureSpec {
    /// snake_case name with a unit suffix, as used in `Evidence::values` and rule files.
    pub name: &'static str,
    pub unit: &'static str,
    pub doc: &'static str,
    /// True when scaling the waveform (e.g. +6 dB) leaves the value unchanged.
    pub gain_invariant: bool,
    /// The eGeMAPS counterpart, or "differs: …" / "not in eGeMAPS: …".
    pub egemaps: &'static str,
    /// Smallest meaningful difference; floors the baseline's scale so z-scores of
    /// near-constant features stay finite and sane.
    pub resolution: f64,
}

const fn spec(
    name: &'static str,
    unit: &'static str,
    doc: &'static str,
    gain_invariant: bool,
    egemaps: &'static str,
    resolution: f64,
) -> FeatureSpec {
    FeatureSpec {
        name,
        unit,
        doc,
        gain_invariant,
        egemaps,
        resolution,
    }
}

/// Every evidence feature. Pitch statistics use voiced frames only; "speech span" is the
/// stretch from the first to the last frame within 30 dB of the clip's loud frames.
pub const FEATURES: &[FeatureSpec] = &[
    // Pitch height and variability.
    spec("f0_mean_hz", "Hz", "Mean F0 over voiced frames.", true, "differs: eGeMAPS F0semitoneFrom27.5Hz_amean is in semitones", 1.0),
    spec("f0_median_hz", "Hz", "Median F0 over voiced frames.", true, "differs: eGeMAPS F0semitoneFrom27.5Hz_percentile50.0 is in semitones", 1.0),
    spec("f0_std_hz", "Hz", "Standard deviation of F0 over voiced frames.", true, "differs: eGeMAPS reports stddevNorm (coefficient of variation)", 0.5),
    spec("f0_range_hz", "Hz", "F0 p90 − p10 over voiced frames (robust range).", true, "differs: eGeMAPS pctlrange0-2 is p80 − p20 in semitones", 1.0),
    spec("f0_median_st27", "st", "Median F0 in semitones re 27.5 Hz (absolute pitch height).", true, "F0semitoneFrom27.5Hz_sma3nz_percentile50.0", 0.1),
    spec("f0_std_st", "st", "Standard deviation of F0 in semitones around the utterance median: tone-aware pitch variability.", true, "differs: eGeMAPS uses stddevNorm of the 27.5 Hz semitone contour", 0.1),
    spec("f0_range_st", "st", "F0 p90 − p10 in semitones around the utterance median.", true, "differs: eGeMAPS pctlrange0-2 is p80 − p20", 0.1),
    spec("f0_slope_st_per_s", "st/s", "Least-squares slope of the semitone contour over the clip (declination or rise).", true, "not in eGeMAPS (it has rising/falling slope means)", 0.1),
    spec("f0_rise_count", "count", "Pitch rises of at least 1.5 st inside voiced runs (hysteresis 0.5 st, 50 ms smoothing).", true, "not in eGeMAPS", 1.0),
    spec("f0_rise_rate_per_s", "1/s", "Pitch rises per second of speech span.", true, "not in eGeMAPS", 0.05),
    spec("f0_tremor_ratio", "ratio", "Share of detrended F0 modulation power at 4–12 Hz (of 1–50 Hz) in voiced runs of at least 150 ms (trembling voice). Syllable-rate tone movement also lands here; compare against a baseline.", true, "not in eGeMAPS", 0.01),
    spec("f0_tremor_st", "st", "RMS amplitude of the 4–12 Hz F0 modulation, semitones.", true, "not in eGeMAPS", 0.02),
    spec("voiced_ratio", "ratio", "Voiced frames / frames in the speech span.", true, "differs: eGeMAPS reports VoicedSegmentsPerSec and segment lengths", 0.01),
    spec("voiced_segment_mean_s", "s", "Mean length of voiced runs.", true, "MeanVoicedSegmentLengthSec", 0.01),
    // Voice quality.
    spec("jitter_local_pct", "%", "Mean absolute difference of consecutive glottal periods / mean period (cross-correlation period marks).", true, "jitterLocal_sma3nz_amean (×100)", 0.05),
    spec("shimmer_local_db", "dB", "Mean absolute dB difference of consecutive period peak amplitudes.", true, "shimmerLocaldB_sma3nz_amean", 0.02),
    spec("hnr_db", "dB", "Harmonics-to-noise ratio, Boersma autocorrelation method, mean over voiced frames.", true, "HNRdBACF_sma3nz_amean", 0.2),
    spec("f0_aperiodicity", "ratio", "Mean YIN aperiodicity of voiced frames (0 = perfectly periodic; breathy/harsh voices are higher).", true, "not in eGeMAPS", 0.005),
    // Loudness: within-clip dynamics only, plus the absolute level for reference.
    spec("loudness_mean_dbfs", "dBFS", "Mean frame intensity over the speech span. Depends on gain: never use in rules or models.", false, "differs: eGeMAPS loudness_sma3_amean is perceptual loudness (sone-like)", 0.5),
    spec("loudness_range_db", "dB", "Frame intensity p95 − p10 over the speech span.", true, "differs: eGeMAPS loudness pctlrange0-2 is in loudness units", 0.2),
    spec("loudness_std_db", "dB", "Standard deviation of frame intensity over the speech span.", true, "differs: eGeMAPS loudness_sma3_stddevNorm", 0.1),
    spec("loudness_rise_db_per_s", "dB/s", "Mean rate of intensity rise (positive frame-to-frame slopes of the 30 ms-smoothed contour).", true, "differs: eGeMAPS loudness_sma3_meanRisingSlope is in loudness units", 5.0),
    spec("loudness_fall_db_per_s", "dB/s", "Mean rate of intensity fall (magnitude of negative slopes).", true, "differs: eGeMAPS loudness_sma3_meanFallingSlope", 5.0),
    // Tempo and pauses.
    spec("speech_rate_syl_per_s", "syl/s", "Syllable nuclei per second of speech span (de Jong & Wempe 2009: intensity peaks ≥ 2 dB above the following dip, within 25 dB of the loud frames, voiced).", true, "differs: eGeMAPS uses loudnessPeaksPerSec", 0.1),
    spec("articulation_rate_syl_per_s", "syl/s", "Syllable nuclei per second of phonation time (speech span minus pauses).", true, "not in eGeMAPS", 0.1),
    spec("pause_ratio", "ratio", "Share of the speech span in pauses (runs ≥ 150 ms more than 25 dB below the loud frames).", true, "not in eGeMAPS", 0.01),
    spec("speech_span_s", "s", "Length of the speech span.", true, "not in eGeMAPS", 0.05),
    // Spectral balance and vocal effort.
    spec("spectral_centroid_hz", "Hz", "Mean power-weighted spectral centroid of speech-span frames.", true, "not in eGeMAPS (ComParE has it)", 10.0),
    spec("spectral_flux", "ratio", "Mean squared difference of consecutive L2-normalised magnitude spectra (speech-span frames).", true, "differs: eGeMAPS spectralFlux is not level-normalised", 0.005),
    spec("alpha_ratio_db", "dB", "Energy 1–5 kHz over energy 50 Hz–1 kHz, dB, mean over voiced frames (higher = more effort).", true, "alphaRatioV_sma3nz_amean", 0.2),
    spec("hammarberg_db", "dB", "Strongest peak 0–2 kHz minus strongest peak 2–5 kHz, dB, mean over voiced frames (lower = more effort).", true, "hammarbergIndexV_sma3nz_amean", 0.2),
    spec("spectral_slope_0_500_db_per_khz", "dB/kHz", "Regression slope of the dB power spectrum 0–500 Hz, mean over voiced frames.", true, "slopeV0-500_sma3nz_amean (units differ)", 0.5),
    spec("spectral_slope_500_1500_db_per_khz", "dB/kHz", "Regression slope of the dB power spectrum 500–1500 Hz, mean over voiced frames (spectral tilt; flatter = more effort).", true, "slopeV500-1500_sma3nz_amean (units differ)", 0.5),
];

/// The catalogue entry of a feature name, if it has one.
pub fn feature_spec(name: &str) -> Option<&'static FeatureSpec> {
    FEATURES.iter().find(|f| f.name == name)
}
