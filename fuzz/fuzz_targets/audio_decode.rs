//! The in-process audio decoder entry (`audio::load` with isolation off) and what follows it
//! on every clip: silence trimming and evidence extraction.
//!
//! Panics inside symphonia are the bug class the decode worker process contains (symphonia
//! #485, #488); they are let through to `audio`'s own catch_unwind and must come back as a
//! `DecoderCrashed` error. Any other panic — in camxuc's decode wrapper, resampler, VAD or
//! features — aborts, which libFuzzer records as a crash.

#![no_main]

use std::sync::{Mutex, Once};

use camxuc::audio::{self, AudioError, LoadOptions, VadConfig};
use camxuc::features::FeatureConfig;
use camxuc::pipeline::analyse::ClipAnalyser;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

/// The first byte picks the extension, which steers symphonia's probe and camxuc's
/// declared-length plausibility check.
const EXTENSIONS: [&str; 6] = ["wav", "flac", "mp3", "ogg", "aiff", "bin"];

static HOOK: Once = Once::new();
static ANALYSER: Mutex<Option<ClipAnalyser>> = Mutex::new(None);

fn install_hook() {
    // Replaces libfuzzer-sys's abort-on-any-panic hook (installed before the first input).
    HOOK.call_once(|| {
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_symphonia = info.location().is_some_and(|l| l.file().contains("symphonia"));
            if !in_symphonia {
                abort_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    install_hook();
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let ext = EXTENSIONS[selector as usize % EXTENSIONS.len()];
    let path = common::scratch_file(&format!("clip.{ext}"), bytes);
    let opts = LoadOptions {
        isolate: false,
        max_duration_s: 30.0,
        ..Default::default()
    };
    let audio = match audio::load(&path, &opts) {
        Ok(a) => a,
        Err(e) => {
            // Every error names the file (the CLI prints it as the one-line message).
            assert_eq!(e.path(), path.as_path(), "{e}");
            if let AudioError::DecoderCrashed { detail, .. } = &e {
                assert!(detail.contains("panicked"), "{e}");
            }
            return;
        }
    };
    assert_eq!(audio.sample_rate, audio::TARGET_RATE);
    assert!(audio.samples.iter().all(|s| s.is_finite()), "non-finite sample passed the decoder");
    let _ = audio::trim_silence(&audio, &VadConfig::default());
    let mut guard = ANALYSER.lock().unwrap_or_else(|p| p.into_inner());
    let analyser = guard.get_or_insert_with(|| ClipAnalyser::new(&FeatureConfig::default()).expect("default config"));
    if let Ok(clip) = analyser.analyse_audio(audio) {
        for (name, v) in &clip.evidence.values {
            assert!(v.is_finite(), "evidence {name} is {v}");
        }
    }
});
