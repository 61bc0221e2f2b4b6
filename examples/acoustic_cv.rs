//! Model selection for the acoustic head by speaker cross-validation on the TRAINING speakers
//! only (never the test speakers): frames are encoded once (clean + perturbed views), then
//! each head configuration is trained on k−1 speaker folds and scored on the held-out fold.
//! Scores are the last epoch's (no early stopping on the scored fold).
//!
//! cargo run --example acoustic_cv -- MANIFEST SPEAKERS [BLOCKS]
//! e.g. ../shared/data/ravdess-3class/manifest.csv actor01-actor12 3

use std::path::PathBuf;

use camxuc::acoustic::augment::perturb;
use camxuc::acoustic::frontend::Frontend;
use camxuc::acoustic::head::HeadConfig;
use camxuc::acoustic::model::evidence_vector;
use camxuc::acoustic::train::{train_head, Example, TrainConfig, View};
use camxuc::data::manifest::Manifest;
use camxuc::data::split::{filter_speakers, speaker_folds};
use camxuc::features::{Baseline, BaselineKind, FeatureConfig, FEATURES};
use camxuc::pipeline::analyse::ClipAnalyser;
use camxuc::{Audio, LabelSet};
use rand::SeedableRng;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(manifest), Some(speakers)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: acoustic_cv MANIFEST SPEAKERS [BLOCKS]");
    };
    let blocks: usize = args.get(3).map(|b| b.parse()).transpose()?.unwrap_or(3);
    let labels = LabelSet::default();
    let m = filter_speakers(
        &Manifest::load(&PathBuf::from(manifest), &labels)?,
        &[speakers.as_str()],
    )?;
    let dev = candle_core::Device::Cpu;
    let frontend = Frontend::whisper(&PathBuf::from("models/whisper-base"), blocks, -23.0, &dev)?;
    let mut an = ClipAnalyser::new(&FeatureConfig::default())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);

    // Analyse and encode once: clean view + 2 perturbed views per clip.
    let mut clips = Vec::new();
    for (i, row) in m.rows.iter().enumerate() {
        let clip = an.analyse(&row.path)?;
        let mut analysed = vec![clip.clone()];
        for _ in 0..2 {
            let x = perturb(&clip.speech.samples, 16_000, &mut rng);
            if let Ok(c) = an.analyse_audio(Audio::new(x, 16_000)) {
                analysed.push(c);
            }
        }
        clips.push((labels.index_of(&row.label).unwrap_or(0), analysed));
        if i % 24 == 0 {
            eprintln!("analysed {i}/{}", m.rows.len());
        }
    }
    let folds = speaker_folds(&m, 4, 1)?;
    let inputs_all: Vec<String> = FEATURES
        .iter()
        .filter(|f| f.gain_invariant)
        .map(|f| f.name.to_string())
        .collect();

    // Per fold: baseline on its training clips, views encoded with it.
    let mut fold_data = Vec::new();
    for (k, f) in folds.iter().enumerate() {
        let ev: Vec<_> = f
            .train
            .iter()
            .map(|&i| clips[i].1[0].evidence.clone())
            .collect();
        let baseline = Baseline::fit(BaselineKind::Corpus(format!("fold{k}")), &ev);
        let make = |idx: &[usize], all_views: bool| -> anyhow::Result<Vec<Example>> {
            idx.iter()
                .map(|&i| {
                    let (label, cs) = &clips[i];
                    let n = if all_views { cs.len() } else { 1 };
                    let views = cs[..n]
                        .iter()
                        .map(|c| {
                            let mut c = c.clone();
                            let evidence = evidence_vector(&baseline, &inputs_all, &mut c.evidence);
                            let frames = frontend.frames(&c.speech.samples, &c.log_mel, &dev)?;
                            Ok(View { frames, evidence })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    Ok(Example {
                        views,
                        label: *label,
                    })
                })
                .collect()
        };
        fold_data.push((make(&f.train, true)?, make(&f.val, false)?));
        eprintln!("encoded fold {k}");
    }

    type Variant = (&'static str, bool, usize, f32, usize);
    // name, evidence, augmented views used, dropout, hidden
    let variants: [Variant; 5] = [
        ("attn+evidence+aug", true, 2, 0.3, 64),
        ("attn+aug (no evidence)", false, 2, 0.3, 64),
        ("attn+evidence (no aug)", true, 0, 0.3, 64),
        (
            "attn+evidence+aug, hidden 32, dropout 0.5",
            true,
            2,
            0.5,
            32,
        ),
        ("attn (no evidence, no aug)", false, 0, 0.3, 64),
    ];
    for (name, use_ev, aug, dropout, hidden) in variants {
        let mut f1s = Vec::new();
        for (train, val) in &fold_data {
            let strip = |e: &Example, keep: usize| Example {
                views: e.views[..keep.min(e.views.len())]
                    .iter()
                    .map(|v| View {
                        frames: v.frames.clone(),
                        evidence: if use_ev { v.evidence.clone() } else { vec![] },
                    })
                    .collect(),
                label: e.label,
            };
            let tr: Vec<Example> = train.iter().map(|e| strip(e, 1 + aug)).collect();
            let va: Vec<Example> = val.iter().map(|e| strip(e, 1)).collect();
            let cfg = HeadConfig {
                input_dim: 512,
                hidden,
                evidence_dim: if use_ev { inputs_all.len() } else { 0 },
                n_labels: 3,
                dropout,
            };
            let tc = TrainConfig {
                epochs: 30,
                patience: 1000,
                seed: 1,
                ..Default::default()
            };
            let t = train_head(&cfg, &tc, &tr, &va, &dev, &mut |_| {})?;
            f1s.push(t.history.last().map(|h| h.val_macro_f1).unwrap_or(0.0));
        }
        let mean = f1s.iter().sum::<f64>() / f1s.len() as f64;
        println!("{name:<45} blocks {blocks}: CV macro-F1 {mean:.3}  folds {f1s:.3?}");
    }
    Ok(())
}
