//! The SYNTHETIC Vietnamese demo corpus, made with espeak-ng (`camxuc synth`).
//!
//! Speakers are espeak-ng voice variants of the Vietnamese voice (`vi+m1`, `vi+f2`, …), each
//! with its own pitch offset. Each clip speaks an everyday Vietnamese sentence that is only
//! partly tied to its label ([`sentences`]) with prosody drawn from overlapping per-class
//! distributions ([`prosody`]), then gets tremor, harshness, a small room, noise and a random
//! level (`dsp`). Output: `<out>/clips/*.wav` (16-bit, 16 kHz, mono), `<out>/manifest.csv`
//! and `<out>/README.md`.
//!
//! All random choices are drawn up front from one ChaCha8 stream seeded with `seed`, and
//! espeak-ng is deterministic for the same input, so the same seed gives byte-identical WAVs
//! and manifest on the same machine, however many threads render them.

mod dsp;
mod espeak;
pub mod prosody;
pub mod sentences;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::DataError;
use crate::types::LabelSet;
use prosody::ClipParams;

/// Sample rate of the written clips.
pub const SYNTH_RATE: u32 = 16_000;

/// espeak-ng voice variants used as speakers, alternating male and female.
pub const VOICE_VARIANTS: &[&str] = &[
    "m1", "f2", "m3", "f4", "m2", "f1", "m4", "f3", "m5", "f5", "m6", "m7",
];

/// What to synthesise.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    /// Output folder (created if needed).
    pub out: PathBuf,
    /// Clips per class.
    pub per_class: usize,
    /// Number of speakers (voice variants), 1..=12.
    pub speakers: usize,
    pub seed: u64,
    /// Classes to synthesise; each needs a prosody profile (calm, angry, panic).
    pub labels: LabelSet,
    /// The espeak-ng program (default `espeak-ng` on PATH).
    pub espeak: PathBuf,
    /// Worker threads for rendering; 0 = all cores.
    pub threads: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from("data/synth"),
            per_class: 40,
            speakers: 6,
            seed: 7,
            labels: LabelSet::default(),
            espeak: PathBuf::from("espeak-ng"),
            threads: 0,
        }
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthReport {
    pub out: PathBuf,
    pub manifest: PathBuf,
    pub clips: usize,
    pub speakers: Vec<String>,
    pub seed: u64,
    /// Total duration of the written clips, seconds.
    pub audio_seconds: f64,
    pub espeak_version: String,
}

/// One clip to render, fully decided before any rendering starts.
#[derive(Clone, Debug)]
struct ClipPlan {
    file_name: String,
    label: String,
    speaker: String,
    voice: String,
    text: &'static str,
    text_leaning: String,
    params: ClipParams,
}

/// Synthesise the corpus. `progress(done, total)` is called on the calling thread after
/// each clip.
pub fn synthesize(
    opts: &SynthOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SynthReport, DataError> {
    let config = |message: String| DataError::SynthConfig { message };
    if opts.per_class == 0 {
        return Err(config("--per-class must be at least 1".into()));
    }
    if opts.speakers == 0 || opts.speakers > VOICE_VARIANTS.len() {
        return Err(config(format!(
            "--speakers must be 1..={}, got {}",
            VOICE_VARIANTS.len(),
            opts.speakers
        )));
    }
    for l in opts.labels.names() {
        if prosody::profile(l).is_none() {
            return Err(config(format!(
                "no prosody profile for label '{l}' (synth knows calm, angry, panic)"
            )));
        }
    }
    let espeak_version = espeak::version(&opts.espeak)?;
    let clips_dir = opts.out.join("clips");
    std::fs::create_dir_all(&clips_dir).map_err(|e| DataError::OutputNotWritable {
        path: clips_dir.clone(),
        source: e.into(),
    })?;

    let plans = plan(opts);
    let total = plans.len();
    let durations = render_all(opts, &clips_dir, &plans, progress)?;

    let manifest = opts.out.join("manifest.csv");
    write_manifest(&manifest, &plans)?;
    let speakers: Vec<String> = (0..opts.speakers)
        .map(|s| speaker_name(VOICE_VARIANTS[s]))
        .collect();
    write_readme(opts, &speakers, total, &espeak_version)?;
    Ok(SynthReport {
        out: opts.out.clone(),
        manifest,
        clips: total,
        speakers,
        seed: opts.seed,
        audio_seconds: durations.iter().sum(),
        espeak_version,
    })
}

fn speaker_name(variant: &str) -> String {
    format!("synth-{variant}")
}

/// Decide every clip: speaker, sentence and parameters, from one seeded stream.
fn plan(opts: &SynthOptions) -> Vec<ClipPlan> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    // A speaker's habitual pitch, on espeak's -p scale, on top of the variant's own.
    let offsets: Vec<f64> = (0..opts.speakers)
        .map(|_| rng.random_range(-8.0..8.0))
        .collect();
    let labels = opts.labels.names();
    let mut plans = Vec::with_capacity(labels.len() * opts.per_class);
    for (c, label) in labels.iter().enumerate() {
        let Some(profile) = prosody::profile(label) else {
            continue;
        };
        for j in 0..opts.per_class {
            // Round-robin over speakers, continued across classes so that speakers stay
            // balanced within ±1 clip per class and overall.
            let s = (c * opts.per_class + j) % opts.speakers;
            let variant = VOICE_VARIANTS[s];
            let (text, text_leaning) = sentences::pick(label, labels, &mut rng);
            let params = prosody::draw(&profile, offsets[s], &mut rng);
            let speaker = speaker_name(variant);
            plans.push(ClipPlan {
                file_name: format!("{speaker}_{label}_{j:03}.wav"),
                label: label.clone(),
                speaker,
                voice: format!("vi+{variant}"),
                text,
                text_leaning,
                params,
            });
        }
    }
    plans
}

/// Render and write every clip on `opts.threads` workers; returns each clip's duration.
fn render_all(
    opts: &SynthOptions,
    clips_dir: &Path,
    plans: &[ClipPlan],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>, DataError> {
    let threads = match opts.threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
    .min(plans.len())
    .max(1);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut durations = vec![0.0; plans.len()];
    let mut first_error: Option<DataError> = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<f64, DataError>)>();
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= plans.len() || stop.load(Ordering::Relaxed) {
                    break;
                }
                let result = render_clip(&opts.espeak, &plans[i])
                    .and_then(|samples| write_wav(&clips_dir.join(&plans[i].file_name), &samples));
                if tx.send((i, result)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut done = 0;
        for (i, result) in rx {
            match result {
                Ok(d) => {
                    durations[i] = d;
                    done += 1;
                    progress(done, plans.len());
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
    });
    match first_error {
        Some(e) => Err(e),
        None => Ok(durations),
    }
}

/// espeak-ng → tremor → harshness → 16 kHz → padding → room → noise → level → 16-bit.
fn render_clip(espeak_program: &Path, plan: &ClipPlan) -> Result<Vec<i16>, DataError> {
    let p = &plan.params;
    let (raw, rate) = espeak::speak(espeak_program, &plan.voice, plan.text, p)?;
    let mut rng = ChaCha8Rng::seed_from_u64(p.noise_seed);
    let speech = dsp::trim_digital_silence(&raw);
    let phase = dsp::random_phase(&mut rng);
    let shaken = dsp::tremor(
        speech,
        rate,
        p.tremor_hz,
        p.tremor_cents,
        p.tremor_am,
        phase,
    );
    let harsh = dsp::harshen(&shaken, p.harshness);
    let resampled =
        resample_to(&harsh, rate, SYNTH_RATE).map_err(|source| DataError::Resample {
            clip: plan.file_name.clone(),
            source,
        })?;
    let lead = (p.lead_s * SYNTH_RATE as f64) as usize;
    let tail = (p.tail_s * SYNTH_RATE as f64) as usize;
    let mut padded = vec![0.0f32; lead];
    padded.extend_from_slice(&resampled);
    padded.extend(std::iter::repeat_n(0.0, tail));
    let mut room = dsp::reverb(&padded, SYNTH_RATE, p.reverb_rt60_s, p.reverb_wet, &mut rng);
    dsp::add_noise(&mut room, lead..lead + resampled.len(), p.snr_db, &mut rng);
    Ok(dsp::to_i16(
        &room,
        lead..lead + resampled.len(),
        p.level_dbfs,
    ))
}

/// Band-limited resampling through the audio stage's resampler.
fn resample_to(x: &[f32], from: u32, to: u32) -> Result<Vec<f32>, crate::audio::AudioError> {
    crate::audio::resample(x, from, to)
}

fn write_wav(path: &Path, samples: &[i16]) -> Result<f64, DataError> {
    let werr = |e: hound::Error| DataError::OutputNotWritable {
        path: path.to_path_buf(),
        source: e.into(),
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SYNTH_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(werr)?;
    for &s in samples {
        w.write_sample(s).map_err(werr)?;
    }
    w.finalize().map_err(werr)?;
    Ok(samples.len() as f64 / SYNTH_RATE as f64)
}

/// Extra manifest columns after `path,label,speaker,text,synthetic`.
const PARAM_COLUMNS: &[&str] = &[
    "text_leaning",
    "voice",
    "pitch",
    "range_pct",
    "rate_wpm",
    "amplitude",
    "word_gap",
    "tremor_hz",
    "tremor_cents",
    "tremor_am",
    "harshness",
    "snr_db",
    "reverb_rt60_s",
    "reverb_wet",
    "level_dbfs",
];

fn write_manifest(path: &Path, plans: &[ClipPlan]) -> Result<(), DataError> {
    let werr = |e: csv::Error| DataError::OutputNotWritable {
        path: path.to_path_buf(),
        source: e.into(),
    };
    let mut w = csv::Writer::from_path(path).map_err(werr)?;
    let mut header = vec!["path", "label", "speaker", "text", "synthetic"];
    header.extend_from_slice(PARAM_COLUMNS);
    w.write_record(&header).map_err(werr)?;
    for c in plans {
        let p = &c.params;
        w.write_record([
            format!("clips/{}", c.file_name),
            c.label.clone(),
            c.speaker.clone(),
            c.text.to_string(),
            "espeak-ng".into(),
            c.text_leaning.clone(),
            c.voice.clone(),
            p.pitch.to_string(),
            p.range_pct.to_string(),
            p.rate_wpm.to_string(),
            p.amplitude.to_string(),
            p.word_gap.to_string(),
            format!("{:.3}", p.tremor_hz),
            format!("{:.3}", p.tremor_cents),
            format!("{:.3}", p.tremor_am),
            format!("{:.3}", p.harshness),
            format!("{:.3}", p.snr_db),
            format!("{:.3}", p.reverb_rt60_s),
            format!("{:.3}", p.reverb_wet),
            format!("{:.3}", p.level_dbfs),
        ])
        .map_err(werr)?;
    }
    w.flush().map_err(|e| DataError::OutputNotWritable {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

fn write_readme(
    opts: &SynthOptions,
    speakers: &[String],
    clips: usize,
    espeak_version: &str,
) -> Result<(), DataError> {
    let path = opts.out.join("README.md");
    let text = format!(
        "# SYNTHETIC demo corpus (espeak-ng) — not real emotional speech\n\n\
         Every clip in this folder was made by a speech synthesiser, espeak-ng, with the\n\
         Vietnamese voice. Nobody recorded it and nobody felt anything: the \"emotion\" is a set\n\
         of prosody settings chosen by a program. It exists so that camxuc can be built, tested\n\
         and demonstrated without a real corpus. It **cannot stand in for real emotional speech**:\n\
         accuracy measured on it says nothing about accuracy on people.\n\n\
         ## How it was made\n\n\
         - Command: `camxuc synth --out <this folder> --per-class {per_class} --speakers {n_speakers} --seed {seed}`\n\
         - {clips} clips: {per_class} per class ({labels}), 16-bit 16 kHz mono WAV in `clips/`.\n\
         - Synthesiser: {espeak_version}; speakers are voice variants of `vi`: {speakers}.\n\
         - Sentences: everyday Vietnamese; a clip's sentence leans to its own class with\n\
           probability {own:.2}, to another class with {other:.2}, and is neutral otherwise\n\
           (`text` and `text_leaning` columns), so the words alone never give the label.\n\
         - Prosody per class from overlapping normal distributions: pitch (`-p`), pitch range\n\
           (SSML `<prosody range>`), rate (`-s`), amplitude (`-a`), word gap (`-g`); then tremor\n\
           (5–9 Hz vibrato + amplitude modulation, mostly on panic clips), harshness\n\
           (pre-emphasis + soft clipping, mostly angry), a synthetic room (decaying-noise\n\
           reverb), white noise at 12–35 dB SNR and a speech RMS level of −40…−16 dBFS. Room, noise and\n\
           level are drawn independently of the class, so loudness is not a shortcut. Every\n\
           drawn parameter is a column of `manifest.csv`.\n\
         - Deterministic: the same seed and espeak-ng version give byte-identical files.\n",
        per_class = opts.per_class,
        n_speakers = opts.speakers,
        seed = opts.seed,
        labels = opts.labels.names().join(", "),
        speakers = speakers.join(", "),
        own = sentences::OWN_CLASS_P,
        other = sentences::OTHER_CLASS_P,
    );
    std::fs::write(&path, text).map_err(|e| DataError::OutputNotWritable {
        path,
        source: e.into(),
    })
}
