//! Character and word error rates of the Whisper recogniser on a manifest with a `text`
//! column (the SYNTHETIC espeak-ng corpus of `camxuc synth`), plus language detection.
//!
//! cargo run --release --example asr_cer -- MANIFEST OUT.json [--threads N] [--model DIR]
//! e.g. camxuc synth --out /tmp/asr-corpus --per-class 10 --seed 3, then
//!      cargo run --release --example asr_cer -- /tmp/asr-corpus/manifest.csv /tmp/asr.json
//!
//! Each clip is transcribed twice: with `vi` given (timed: the seconds per clip reported) and
//! with the language left to detection. Writes OUT.json (summary and every clip) and a
//! markdown summary beside it (OUT with extension .md).

use std::path::{Path, PathBuf};
use std::time::Instant;

use camxuc::asr::score::{char_errors, word_errors, ErrorCount};
use camxuc::asr::{AsrOptions, Transcriber};
use serde::Serialize;

mod common;

#[derive(Serialize)]
struct ClipResult {
    path: String,
    label: String,
    speaker: String,
    reference: String,
    hypothesis: String,
    cer: f64,
    wer: f64,
    tokens: usize,
    avg_logprob: f32,
    no_speech_prob: f32,
    seconds: f64,
    audio_s: f64,
    detected_language: String,
    detected_language_prob: f32,
}

#[derive(Serialize)]
struct Summary {
    manifest: String,
    model: String,
    threads: usize,
    clips: usize,
    cer_overall: f64,
    wer_overall: f64,
    cer_mean_per_clip: f64,
    wer_mean_per_clip: f64,
    seconds_per_clip_mean: f64,
    audio_s_mean: f64,
    detected_vi: usize,
    detected_languages: Vec<(String, usize)>,
    per_clip: Vec<ClipResult>,
}

fn main() -> anyhow::Result<()> {
    const USAGE: &str = "asr_cer MANIFEST OUT.json [--threads N] [--model DIR]";
    let args = common::Args::from_env();
    let threads: usize = args.value("--threads")?.unwrap_or(0);
    let model = PathBuf::from(
        args.value::<String>("--model")?
            .unwrap_or_else(|| "models/whisper-base".into()),
    );
    let positional = args.positional();
    let (Some(manifest), Some(out)) = (positional.first(), positional.get(1)) else {
        anyhow::bail!("usage: {USAGE}");
    };
    args.finish(USAGE)?;
    let manifest = PathBuf::from(manifest);
    let root = manifest.parent().unwrap_or(Path::new("."));

    let device = candle_core::Device::Cpu;
    let load_start = Instant::now();
    let options = AsrOptions {
        threads,
        ..AsrOptions::default()
    };
    let mut asr = Transcriber::load_with(&model, &device, options)?;
    eprintln!(
        "loaded {} in {:.1} s",
        model.display(),
        load_start.elapsed().as_secs_f64()
    );

    let load_options = camxuc::audio::LoadOptions {
        isolate: false,
        ..Default::default()
    };
    let mut reader = csv::Reader::from_path(&manifest)?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| anyhow::anyhow!("{}: no `{name}` column", manifest.display()))
    };
    let (path_col, text_col) = (column("path")?, column("text")?);
    let (label_col, speaker_col) = (column("label").ok(), column("speaker").ok());
    let mut per_clip = Vec::new();
    let (mut chars, mut words) = (ErrorCount::default(), ErrorCount::default());
    for record in reader.records() {
        let record = record?;
        let get = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").to_string();
        let rel = get(Some(path_col));
        let reference = get(Some(text_col));
        let audio = camxuc::audio::load(&root.join(&rel), &load_options)?;
        let start = Instant::now();
        let given = asr.transcribe(&audio, Some("vi"))?;
        let seconds = start.elapsed().as_secs_f64();
        let detected = asr.transcribe(&audio, None)?;
        let c = char_errors(&reference, &given.text);
        let w = word_errors(&reference, &given.text);
        chars = chars + c;
        words = words + w;
        eprintln!(
            "{rel}: CER {:.2} {:.1}s [{}] {} → {}",
            c.rate(),
            seconds,
            detected.language,
            reference,
            given.text
        );
        per_clip.push(ClipResult {
            path: rel,
            label: get(label_col),
            speaker: get(speaker_col),
            reference,
            hypothesis: given.text,
            cer: c.rate(),
            wer: w.rate(),
            tokens: given.tokens,
            avg_logprob: given.avg_logprob,
            no_speech_prob: given.no_speech_prob,
            seconds,
            audio_s: audio.duration_s(),
            detected_language: detected.language,
            detected_language_prob: detected.language_prob,
        });
    }
    anyhow::ensure!(!per_clip.is_empty(), "{}: no clips", manifest.display());
    let n = per_clip.len() as f64;
    let mean = |f: &dyn Fn(&ClipResult) -> f64| per_clip.iter().map(f).sum::<f64>() / n;
    let mut detected_languages: Vec<(String, usize)> = Vec::new();
    for clip in &per_clip {
        match detected_languages
            .iter_mut()
            .find(|(l, _)| *l == clip.detected_language)
        {
            Some((_, count)) => *count += 1,
            None => detected_languages.push((clip.detected_language.clone(), 1)),
        }
    }
    detected_languages.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    let summary = Summary {
        manifest: manifest.display().to_string(),
        model: model.display().to_string(),
        threads,
        clips: per_clip.len(),
        cer_overall: chars.rate(),
        wer_overall: words.rate(),
        cer_mean_per_clip: mean(&|c| c.cer),
        wer_mean_per_clip: mean(&|c| c.wer),
        seconds_per_clip_mean: mean(&|c| c.seconds),
        audio_s_mean: mean(&|c| c.audio_s),
        detected_vi: per_clip
            .iter()
            .filter(|c| c.detected_language == "vi")
            .count(),
        detected_languages,
        per_clip,
    };
    std::fs::write(out, serde_json::to_string_pretty(&summary)?)?;
    let markdown = Path::new(out).with_extension("md");
    std::fs::write(&markdown, render_markdown(&summary))?;
    println!("{}", render_markdown(&summary));
    eprintln!("wrote {out} and {}", markdown.display());
    Ok(())
}

fn render_markdown(s: &Summary) -> String {
    let mut md = format!(
        "# Whisper base on {} (SYNTHETIC espeak-ng speech)\n\n\
         | clips | CER overall | CER mean/clip | WER overall | WER mean/clip | s/clip (vi given) | mean audio s | detected vi |\n\
         |---|---|---|---|---|---|---|---|\n\
         | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {}/{} |\n\n\
         Detected languages: {}\n\n| clip | CER | reference | hypothesis |\n|---|---|---|---|\n",
        s.manifest,
        s.clips,
        s.cer_overall,
        s.cer_mean_per_clip,
        s.wer_overall,
        s.wer_mean_per_clip,
        s.seconds_per_clip_mean,
        s.audio_s_mean,
        s.detected_vi,
        s.clips,
        s.detected_languages
            .iter()
            .map(|(l, n)| format!("{l} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for c in &s.per_clip {
        md.push_str(&format!(
            "| {} | {:.2} | {} | {} |\n",
            c.path, c.cer, c.reference, c.hypothesis
        ));
    }
    md
}
