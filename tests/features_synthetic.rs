//! Feature extraction on synthesised signals with known answers: pitch of harmonic tones,
//! jitter, gain invariance, the mel filterbank, noise robustness and error handling.

use camxuc::features::{
    Baseline, BaselineKind, EvidenceExtractor, FeatureConfig, FeatureError, MelExtractor,
    PitchTracker, Stft, FEATURES,
};
use camxuc::{Audio, Evidence};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

const SR: u32 = 16_000;

/// A harmonic tone whose period lengths are drawn one by one: `period_jitter` is the standard
/// deviation of each period relative to 1/f0 (0 = perfectly periodic). 12 harmonics, 1/k
/// amplitudes.
fn harmonic(f0: f64, seconds: f64, period_jitter: f64, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, period_jitter.max(1e-12)).unwrap();
    let n = (seconds * SR as f64) as usize;
    let mut out = Vec::with_capacity(n);
    let mut phase = 0.0f64; // in cycles
    let mut period = SR as f64 / f0;
    while out.len() < n {
        let cycle_phase = phase.fract();
        let mut v = 0.0;
        for k in 1..=12 {
            v += (std::f64::consts::TAU * k as f64 * cycle_phase).sin() / k as f64;
        }
        out.push((0.3 * v) as f32);
        let before = phase.floor();
        phase += 1.0 / period;
        if phase.floor() > before {
            let draw: f64 = if period_jitter > 0.0 {
                normal.sample(&mut rng)
            } else {
                0.0
            };
            period = SR as f64 / f0 * (1.0 + draw);
        }
    }
    out
}

/// Speech-like signal: syllables at ~4 Hz with gliding F0 (110–170 Hz), vowel-like formant
/// shaping, 150 ms pauses, a little breath noise. Deterministic.
fn speech_like(seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = (2.5 * SR as f64) as usize;
    let formants = [(700.0, 130.0), (1220.0, 70.0), (2600.0, 160.0)];
    let mut out = vec![0.0f32; n];
    let mut phase = 0.0f64;
    for (i, o) in out.iter_mut().enumerate() {
        let t = i as f64 / SR as f64;
        let syl = (t * 4.0).fract();
        let in_pause = (1.0..1.15).contains(&t) || !(0.1..=2.35).contains(&t);
        let env = if in_pause {
            0.0
        } else {
            (std::f64::consts::PI * syl).sin().powi(2) * (0.6 + 0.4 * (t * 1.3).sin())
        };
        let f0 = 140.0 + 30.0 * (std::f64::consts::TAU * 1.7 * t).sin();
        phase += f0 / SR as f64;
        let mut v = 0.0;
        for k in 1..=30 {
            let f = k as f64 * f0;
            if f > 7000.0 {
                break;
            }
            let gain: f64 = formants
                .iter()
                .map(|(fc, bw)| 1.0 / (1.0 + ((f - fc) / bw).powi(2)))
                .sum::<f64>()
                + 0.02;
            v += gain / (k as f64).sqrt() * (std::f64::consts::TAU * k as f64 * phase).sin();
        }
        let noise: f64 = rng.random_range(-1.0..1.0);
        *o = (0.1 * env * v + 0.002 * noise) as f32;
    }
    out
}

fn white_noise(n: usize, amp: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| amp * rng.random_range(-1.0f32..1.0))
        .collect()
}

fn extract(samples: Vec<f32>) -> Evidence {
    let mut ex = EvidenceExtractor::new(&FeatureConfig::default()).unwrap();
    ex.extract(&Audio::new(samples, SR)).unwrap()
}

#[test]
fn harmonic_tones_give_f0_within_two_percent() {
    let cfg = FeatureConfig::default();
    let mut ex = EvidenceExtractor::new(&cfg).unwrap();
    for f0 in [150.0, 300.0, 90.0, 500.0] {
        let ev = ex
            .extract(&Audio::new(harmonic(f0, 1.0, 0.0, 1), SR))
            .unwrap();
        let median = ev.values["f0_median_hz"];
        assert!(
            (median - f0).abs() / f0 < 0.02,
            "{f0} Hz tone: median F0 {median}"
        );
        let track = ex.last_pitch_track();
        let voiced: Vec<f32> = track
            .f0_hz
            .iter()
            .zip(&track.voiced)
            .filter(|(_, v)| **v)
            .map(|(f, _)| *f)
            .collect();
        assert!(
            voiced.len() as f64 > 0.9 * track.voiced.len() as f64,
            "{f0} Hz: only {} of {} frames voiced",
            voiced.len(),
            track.voiced.len()
        );
        // No octave errors anywhere in the track, not just on average.
        assert!(
            voiced.iter().all(|f| (*f as f64 - f0).abs() / f0 < 0.02),
            "{f0} Hz: frame F0s {voiced:?}"
        );
        assert!(
            ev.values["f0_std_st"] < 0.1,
            "{f0} Hz: steady tone has F0 std {} st",
            ev.values["f0_std_st"]
        );
        assert!(
            ev.values["hnr_db"] > 20.0,
            "{f0} Hz: clean tone HNR {}",
            ev.values["hnr_db"]
        );
    }
}

#[test]
fn period_jitter_raises_measured_jitter() {
    let clean = extract(harmonic(150.0, 1.5, 0.0, 2));
    let jittered = extract(harmonic(150.0, 1.5, 0.01, 2));
    let (jc, jj) = (
        clean.values["jitter_local_pct"],
        jittered.values["jitter_local_pct"],
    );
    println!("jitter clean {jc:.3} %, 1 % period jitter {jj:.3} %");
    assert!(jj > jc + 0.4, "jitter clean {jc} vs jittered {jj}");
    // Gaussian period noise with σ = 1 % gives E|T_i − T_{i+1}| / T = 2σ/√π ≈ 1.13 %.
    assert!((0.6..2.0).contains(&jj), "jittered signal reports {jj} %");
    assert!(jc < 0.2, "clean tone reports {jc} % jitter");
}

#[test]
fn louder_copy_changes_no_gain_invariant_feature() {
    let quiet = speech_like(3);
    let gain = 10f32.powf(6.0 / 20.0);
    let loud: Vec<f32> = quiet.iter().map(|x| x * gain).collect();
    let (a, b) = (extract(quiet), extract(loud));
    assert_gain_invariant(&a, &b);
    let level_change = b.values["loudness_mean_dbfs"] - a.values["loudness_mean_dbfs"];
    assert!(
        (level_change - 6.0).abs() < 0.1,
        "absolute level moved {level_change} dB"
    );
}

pub fn assert_gain_invariant(a: &Evidence, b: &Evidence) {
    let mut checked = 0;
    for spec in FEATURES.iter().filter(|f| f.gain_invariant) {
        match (a.values.get(spec.name), b.values.get(spec.name)) {
            (Some(x), Some(y)) => {
                assert!(
                    (x - y).abs() <= spec.resolution,
                    "{} changed with gain: {x} → {y} (tolerance {})",
                    spec.name,
                    spec.resolution
                );
                checked += 1;
            }
            (None, None) => {}
            (x, y) => panic!("{} present in one copy only: {x:?} vs {y:?}", spec.name),
        }
    }
    assert!(
        checked >= 25,
        "only {checked} gain-invariant features were measured"
    );
}

#[test]
fn speech_like_signal_gets_every_feature_and_no_nan() {
    let mut ex = EvidenceExtractor::new(&FeatureConfig::default()).unwrap();
    let ev = ex.extract(&Audio::new(speech_like(4), SR)).unwrap();
    let track = ex.last_pitch_track();
    assert!(
        track.n_voiced() > track.voiced.len() / 2,
        "speech-like signal mostly unvoiced"
    );
    for spec in FEATURES {
        let v = ev.values.get(spec.name);
        assert!(v.is_some(), "{} missing on a speech-like signal", spec.name);
        assert!(v.unwrap().is_finite());
    }
    for name in ev.values.keys() {
        assert!(
            FEATURES.iter().any(|f| f.name == name),
            "{name} not in the catalogue"
        );
    }
    let rate = ev.values["speech_rate_syl_per_s"];
    assert!(
        (2.5..5.5).contains(&rate),
        "4 Hz syllables measured as {rate} syl/s"
    );
    let f0 = ev.values["f0_median_hz"];
    assert!((125.0..155.0).contains(&f0), "median F0 {f0}");
    assert!(
        ev.values["pause_ratio"] > 0.02,
        "the 150 ms pause was not found: {}",
        ev.values["pause_ratio"]
    );
}

#[test]
fn mel_filterbank_puts_a_1khz_tone_in_the_right_band() {
    let cfg = FeatureConfig::default();
    let tone: Vec<f32> = (0..SR)
        .map(|i| (std::f64::consts::TAU * 1000.0 * i as f64 / SR as f64).sin() as f32 * 0.5)
        .collect();
    let mut mel = MelExtractor::new(&cfg).unwrap();
    let lm = mel.log_mel(&Audio::new(tone, SR)).unwrap();
    assert_eq!(lm.n_mels, 64);
    assert_eq!(lm.n_frames, Stft::new(&cfg).unwrap().n_frames(SR as usize));
    let frame = lm.frame(lm.n_frames / 2);
    let peak = (0..lm.n_mels)
        .max_by(|&a, &b| frame[a].total_cmp(&frame[b]))
        .unwrap();
    let centres = mel.filterbank().centres_hz();
    let nearest = (0..centres.len())
        .min_by(|&a, &b| {
            (centres[a] - 1000.0)
                .abs()
                .total_cmp(&(centres[b] - 1000.0).abs())
        })
        .unwrap();
    assert!(
        peak.abs_diff(nearest) <= 1,
        "peak band {peak} ({} Hz), expected {nearest} ({} Hz)",
        centres[peak],
        centres[nearest]
    );
    let mfcc = mel.mfcc(&Audio::new(vec![0.1; 8000], SR)).unwrap();
    assert_eq!(mfcc.n_mfcc, cfg.n_mfcc);
    assert!(mfcc.data.iter().all(|v| v.is_finite()));
}

#[test]
fn noise_and_silence_degrade_gracefully() {
    // Pure noise: little or no voicing and no absurd voice-quality numbers.
    let noise = extract(white_noise(SR as usize, 0.1, 5));
    assert!(
        noise.values.get("voiced_ratio").copied().unwrap_or(0.0) < 0.2,
        "noise voiced ratio {:?}",
        noise.values.get("voiced_ratio")
    );
    for v in noise.values.values() {
        assert!(v.is_finite());
    }
    // Silence: no pitch, no NaN, nothing claimed.
    let silence = extract(vec![0.0; SR as usize]);
    assert!(!silence.values.contains_key("f0_mean_hz"));
    assert!(silence.values.values().all(|v| v.is_finite()));
    // A tone in noise at 10 dB SNR: F0 still right, HNR lower than clean and sane, jitter
    // (when measured) bounded.
    let tone = harmonic(200.0, 1.5, 0.0, 6);
    let rms = (tone.iter().map(|x| x * x).sum::<f32>() / tone.len() as f32).sqrt();
    let noise_amp = rms / 10f32.powf(10.0 / 20.0) * 3f32.sqrt();
    let noisy: Vec<f32> = tone
        .iter()
        .zip(white_noise(tone.len(), noise_amp, 7))
        .map(|(a, b)| a + b)
        .collect();
    let (clean, noisy) = (extract(tone), extract(noisy));
    assert!(
        (noisy.values["f0_median_hz"] - 200.0).abs() < 4.0,
        "noisy F0 {}",
        noisy.values["f0_median_hz"]
    );
    let (hc, hn) = (clean.values["hnr_db"], noisy.values["hnr_db"]);
    assert!(
        hn < hc && (0.0..20.0).contains(&hn),
        "HNR clean {hc} noisy {hn}"
    );
    if let Some(j) = noisy.values.get("jitter_local_pct") {
        assert!(*j < 5.0, "jitter in noise {j} %");
    }
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let mut ex = EvidenceExtractor::new(&FeatureConfig::default()).unwrap();
    let mut a = Audio::new(vec![0.0; 44_100], 44_100);
    a.source = Some("clip.wav".into());
    let err = ex.extract(&a).unwrap_err();
    assert!(matches!(
        err,
        FeatureError::SampleRate { found: 44_100, .. }
    ));
    assert!(err.to_string().contains("clip.wav"), "{err}");
    assert!(matches!(
        ex.extract(&Audio::new(vec![0.0; 100], SR)),
        Err(FeatureError::TooShort { .. })
    ));
    let mut nan = vec![0.0; SR as usize];
    nan[10] = f32::NAN;
    assert!(matches!(
        ex.extract(&Audio::new(nan, SR)),
        Err(FeatureError::NonFinite { index: 10, .. })
    ));
    let bad = FeatureConfig {
        n_fft: 128,
        ..FeatureConfig::default()
    };
    let err = EvidenceExtractor::new(&bad).err().unwrap();
    assert!(err.to_string().contains("n_fft"), "{err}");
    assert!(PitchTracker::new(&FeatureConfig {
        f0_min_hz: 700.0,
        ..FeatureConfig::default()
    })
    .is_err());
}

#[test]
fn config_round_trips_and_rejects_unknown_fields() {
    let cfg = FeatureConfig::default();
    let s = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<FeatureConfig>(&s).unwrap(), cfg);
    assert!(serde_json::from_str::<FeatureConfig>(r#"{"n_melz": 3}"#).is_err());
    // Missing fields take defaults, so a model file written before a new field still loads.
    assert_eq!(
        serde_json::from_str::<FeatureConfig>(r#"{"n_mels": 64}"#).unwrap(),
        cfg
    );
}

#[test]
fn baseline_z_scores_are_robust_and_labelled() {
    let clips: Vec<Evidence> = [100.0, 110.0, 120.0, 130.0, 10_000.0]
        .iter()
        .map(|&f| {
            let mut e = Evidence::default();
            e.values.insert("f0_mean_hz".into(), f);
            e.values.insert("loudness_mean_dbfs".into(), -20.0);
            e
        })
        .collect();
    let b = Baseline::fit(BaselineKind::Corpus("abc".into()), &clips);
    let stat = &b.features["f0_mean_hz"];
    // The outlier moves neither the median nor the MAD.
    assert_eq!(stat.center, 120.0);
    assert!((stat.scale - 1.4826 * 10.0).abs() < 1e-9);
    assert!(
        !b.features.contains_key("loudness_mean_dbfs"),
        "absolute level must get no z-score"
    );
    let mut e = clips[0].clone();
    b.apply(&mut e);
    assert_eq!(e.baseline, "corpus:abc");
    assert!((e.get("f0_mean_hz_z").unwrap() + 20.0 / 14.826).abs() < 1e-9);
    let mut outlier = clips[4].clone();
    b.apply(&mut outlier);
    assert_eq!(outlier.z["f0_mean_hz"], camxuc::features::baseline::Z_CLAMP);
    let json = serde_json::to_string(&b).unwrap();
    let back: Baseline = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (&back.kind, back.n, back.features.len()),
        (&b.kind, b.n, b.features.len())
    );
    assert!((back.features["f0_mean_hz"].scale - stat.scale).abs() < 1e-9);
    let speaker = Baseline::fit(BaselineKind::Speaker("actor03".into()), &clips);
    let mut e = clips[1].clone();
    speaker.apply(&mut e);
    assert_eq!(e.baseline, "speaker:actor03");
}
