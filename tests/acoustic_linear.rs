//! The pooled linear classifier and its unfamiliarity reference, end to end: train → model
//! directory (format 2) → load → probabilities and unfamiliarity; older directories still load.

mod common;

use std::path::PathBuf;

use camxuc::acoustic::train::Classifier;
use camxuc::acoustic::train_linear::LinearChoice;
use camxuc::acoustic::{model_dir, train_model, AcousticModel, HeldOutCondition, TrainOptions};
use camxuc::audio::field::{Codec, FieldChain, Noise, NoiseKind, Telephone};
use camxuc::clip::ClipAnalyser;
use camxuc::features::FeatureConfig;
use camxuc::Audio;

fn linear(manifest: PathBuf, out: PathBuf) -> TrainOptions {
    let mut o = common::light_options(manifest, out, 3, 1, 1);
    o.classifier = Classifier::Linear(LinearChoice {
        unfamiliarity_components: 8,
        ..LinearChoice::default()
    });
    o
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

#[test]
fn linear_model_is_deterministic_routes_unfamiliar_clips_and_scores_shift_higher() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::small_corpus_of(tmp.path(), 4, 8, 5);
    let mut o = linear(manifest.clone(), tmp.path().join("a"));
    o.speakers = Some("synth-m1,synth-f2,synth-m3".into());
    let a = train_model(&o, &mut |_| {}).unwrap();
    let mut o2 = o.clone();
    o2.out = tmp.path().join("b");
    train_model(&o2, &mut |_| {}).unwrap();
    // Same clips and seed: byte-identical weights and routing.
    for f in [model_dir::WEIGHTS_FILE, model_dir::ROUTING_FILE] {
        assert_eq!(
            std::fs::read(a.dir.join(f)).unwrap(),
            std::fs::read(tmp.path().join("b").join(f)).unwrap(),
            "{f} differs between two runs with the same seed"
        );
    }
    // Every clip and its field-chain test copy is a held-out prediction for the fusion fit,
    // with a held-out unfamiliarity (higher on average for the copies).
    let clean: Vec<f32> = a
        .held_out
        .iter()
        .filter(|h| h.condition == HeldOutCondition::Clean)
        .filter_map(|h| h.unfamiliarity)
        .collect();
    let field: Vec<f32> = a
        .held_out
        .iter()
        .filter(|h| h.condition == HeldOutCondition::Perturbed)
        .filter_map(|h| h.unfamiliarity)
        .collect();
    assert_eq!(clean.len(), a.meta.metrics.n_train);
    assert!(!field.is_empty());
    assert!(a.held_out.iter().all(|h| h.group.starts_with("fold")));
    println!(
        "held-out unfamiliarity: clean {:.2}, field copies {:.2}",
        mean(&clean),
        mean(&field)
    );
    assert!(mean(&field) > mean(&clean));
    // Every training clip gets its out-of-fold probabilities for refinement.
    let evidence = std::fs::read_to_string(a.dir.join(model_dir::TRAIN_EVIDENCE_FILE)).unwrap();
    assert_eq!(evidence.lines().count(), a.meta.metrics.n_train);
    assert!(
        evidence.lines().all(|l| l.contains("\"probs\"")),
        "{evidence}"
    );
    let meta = model_dir::read_meta(&a.dir).unwrap();
    assert_eq!(meta.format_version, model_dir::FORMAT_VERSION);
    assert!(meta.linear.is_some() && meta.unfamiliarity.is_some());
    let t = a
        .routing
        .unfamiliarity_threshold
        .expect("an unfamiliarity threshold");
    assert!(t > 0.5 && t.is_finite(), "{t}");

    // The held-out speaker: clean clips against their field-chain copies.
    let dev = candle_core::Device::Cpu;
    let model = AcousticModel::load(&a.dir, &tmp.path().join("no-models"), &dev).unwrap();
    let m =
        camxuc::data::manifest::Manifest::load(&manifest, &camxuc::LabelSet::default()).unwrap();
    let mut an = ClipAnalyser::new(&FeatureConfig::default()).unwrap();
    let chain = FieldChain {
        gain_db: -6.0,
        reverb: None,
        noise: Some(Noise {
            kind: NoiseKind::Pink,
            snr_db: 5.0,
        }),
        telephone: Some(Telephone {
            codec: Codec::MuLaw,
        }),
        clip_level: None,
    };
    let (mut clean, mut field) = (Vec::new(), Vec::new());
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    for row in m
        .rows
        .iter()
        .filter(|r| r.speaker.as_deref() == Some("synth-f4"))
    {
        let audio = camxuc::audio::load(&row.path, &an.load).unwrap();
        let shifted = chain.apply(&audio.samples, 16_000, &[], &mut rng);
        let mut c = an.analyse_audio(audio).unwrap();
        let mut f = an.analyse_audio(Audio::new(shifted, 16_000)).unwrap();
        let (p, u) = model
            .assess(std::slice::from_mut(&mut c))
            .unwrap()
            .remove(0);
        assert!((p.values.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        clean.push(u.expect("a linear model scores unfamiliarity"));
        field.push(
            model.assess(std::slice::from_mut(&mut f)).unwrap()[0]
                .1
                .unwrap(),
        );
    }
    assert!(clean.iter().all(|u| *u >= 0.0));
    assert!(
        mean(&field) > 1.2 * mean(&clean),
        "field {:.2} vs clean {:.2}",
        mean(&field),
        mean(&clean)
    );
}

#[test]
fn format_1_directories_still_load_and_unknown_versions_are_named() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::small_corpus(tmp.path(), 2);
    let mut o = common::light_options(manifest, tmp.path().join("m"), 1, 0, 2);
    o.classifier = Classifier::Attention;
    o.oof_folds = 0;
    let r = train_model(&o, &mut |_| {}).unwrap();
    let path = r.dir.join(model_dir::META_FILE);
    let mut raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    raw["format_version"] = 1.into();
    std::fs::write(&path, raw.to_string()).unwrap();
    let dev = candle_core::Device::Cpu;
    AcousticModel::load(&r.dir, &tmp.path().join("no-models"), &dev).expect("version 1 loads");
    raw["format_version"] = 99.into();
    std::fs::write(&path, raw.to_string()).unwrap();
    let e = AcousticModel::load(&r.dir, &tmp.path().join("no-models"), &dev)
        .err()
        .expect("version 99 is refused")
        .to_string();
    assert!(
        e.contains("format_version 99") && e.contains("model.json"),
        "{e}"
    );
}

/// Top probability of each clip of `speaker` under `model`.
fn top_probabilities(model: &AcousticModel, manifest: &std::path::Path, speaker: &str) -> Vec<f32> {
    let m = camxuc::data::manifest::Manifest::load_unlabelled(manifest).unwrap();
    let mut an = ClipAnalyser::new(&FeatureConfig::default()).unwrap();
    m.rows
        .iter()
        .filter(|r| r.speaker.as_deref() == Some(speaker))
        .map(|r| {
            let mut c = an.analyse(&r.path).unwrap();
            let (p, _) = model
                .assess(std::slice::from_mut(&mut c))
                .unwrap()
                .remove(0);
            p.values.into_iter().fold(0.0, f32::max)
        })
        .collect()
}

#[test]
fn outlier_exposure_is_recorded_lowers_confidence_on_outliers_and_names_bad_manifests() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::small_corpus_of(tmp.path(), 4, 8, 5);
    // One voice's clips, without their labels, stand in for speech outside the labels.
    let m =
        camxuc::data::manifest::Manifest::load(&manifest, &camxuc::LabelSet::default()).unwrap();
    let mut csv = String::from("path,speaker\n");
    let mut n_out = 0;
    for r in m
        .rows
        .iter()
        .filter(|r| r.speaker.as_deref() == Some("synth-f4"))
    {
        csv += &format!("{},synth-f4\n", r.path.display());
        n_out += 1;
    }
    let outliers = tmp.path().join("outliers.csv");
    std::fs::write(&outliers, csv).unwrap();

    let dev = candle_core::Device::Cpu;
    let no_models = tmp.path().join("no-models");
    let mut plain = linear(manifest.clone(), tmp.path().join("plain"));
    plain.speakers = Some("synth-m1,synth-f2,synth-m3".into());
    let a = train_model(&plain, &mut |_| {}).unwrap();
    assert!(a.meta.outlier_exposure.is_none());
    let mut exposed = plain.clone();
    exposed.out = tmp.path().join("exposed");
    exposed.outliers = Some(outliers.clone());
    exposed.train.outlier_weight = 1.0;
    let b = train_model(&exposed, &mut |_| {}).unwrap();
    let rec = b
        .meta
        .outlier_exposure
        .clone()
        .expect("recorded in model.json");
    assert_eq!((rec.clips, rec.weight), (n_out, 1.0));
    assert_eq!(
        model_dir::read_meta(&b.dir).unwrap().outlier_exposure,
        Some(rec)
    );
    let pa = top_probabilities(
        &AcousticModel::load(&a.dir, &no_models, &dev).unwrap(),
        &outliers,
        "synth-f4",
    );
    let pb = top_probabilities(
        &AcousticModel::load(&b.dir, &no_models, &dev).unwrap(),
        &outliers,
        "synth-f4",
    );
    println!(
        "outliers' mean top probability: plain {:.3}, exposed {:.3}",
        mean(&pa),
        mean(&pb)
    );
    assert!(mean(&pb) < mean(&pa) - 0.05, "{pa:?} vs {pb:?}");

    // The attention classifier takes them too.
    let mut att = common::light_options(manifest.clone(), tmp.path().join("att"), 3, 0, 2);
    att.speakers = plain.speakers.clone();
    att.outliers = Some(outliers.clone());
    att.train.outlier_weight = 0.5;
    let c = train_model(&att, &mut |_| {}).unwrap();
    assert_eq!(c.meta.outlier_exposure.map(|o| o.clips), Some(n_out));

    // A manifest naming a missing file, and a weight of 0: errors naming the problem.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "path\nnot-there.wav\n").unwrap();
    let mut o = exposed.clone();
    o.out = tmp.path().join("bad-model");
    o.outliers = Some(bad);
    let e = train_model(&o, &mut |_| {})
        .err()
        .expect("an error")
        .to_string();
    assert!(e.contains("not-there.wav"), "{e}");
    // A manifest whose only clip is not audio: the error names it and why.
    let junk = tmp.path().join("junk.wav");
    std::fs::write(&junk, b"not audio").unwrap();
    let junk_csv = tmp.path().join("junk.csv");
    std::fs::write(&junk_csv, format!("path\n{}\n", junk.display())).unwrap();
    let mut o = exposed.clone();
    o.out = tmp.path().join("junk-model");
    o.outliers = Some(junk_csv);
    let e = train_model(&o, &mut |_| {})
        .err()
        .expect("an error")
        .to_string();
    assert!(
        e.contains("no usable outlier clip") && e.contains("junk.wav"),
        "{e}"
    );
    let mut o = exposed.clone();
    o.out = tmp.path().join("zero");
    o.train.outlier_weight = 0.0;
    let e = train_model(&o, &mut |_| {})
        .err()
        .expect("an error")
        .to_string();
    assert!(e.contains("outlier weight"), "{e}");
    assert!(!tmp
        .path()
        .join("zero")
        .join(model_dir::WEIGHTS_FILE)
        .exists());
}
