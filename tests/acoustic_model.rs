//! The acoustic model end to end: train → model directory → load → calibrated probabilities.

mod common;

use std::path::{Path, PathBuf};

use camxuc::acoustic::{model_dir, train_model, AcousticModel, FrontendChoice, TrainOptions};
use camxuc::clip::ClipAnalyser;
use camxuc::eval::run::{evaluate, EvalOptions};
use camxuc::features::FeatureConfig;
use camxuc::pipeline::fusion;

#[test]
fn trained_directory_round_trips_and_training_is_deterministic() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::small_corpus(tmp.path(), 3);
    let light = |out: &str| common::light_options(manifest.clone(), tmp.path().join(out), 5, 1, 6);
    let a = train_model(&light("a"), &mut |_| {}).unwrap();
    let b = train_model(&light("b"), &mut |_| {}).unwrap();
    assert_eq!(
        a.meta.metrics.history, b.meta.metrics.history,
        "same seed, same training run"
    );
    assert_eq!(a.meta.temperature, b.meta.temperature);
    // The head training is recorded, with the product default: the conv stays random.
    let recorded = model_dir::read_meta(&a.dir).unwrap().head_training;
    assert_eq!(recorded.as_ref(), Some(&light("a").train));
    assert!(recorded.is_some_and(|t| t.freeze_temporal));

    // The held-out predictions the fusion of routed clips is fitted on: validation clips,
    // out-of-fold training clips and their perturbed copies, each tagged with the part that
    // held it out, with evidence z-scored against the model's baseline.
    use camxuc::acoustic::HeldOutCondition::{Clean, Perturbed};
    let has = |group: &str, condition| {
        a.held_out
            .iter()
            .any(|h| h.group.starts_with(group) && h.condition == condition)
    };
    assert!(has("val", Clean) && has("fold", Clean) && has("fold", Perturbed));
    assert!(
        !has("val", Perturbed),
        "validation clips have no perturbed copies"
    );
    assert!(a.held_out.iter().all(|h| !h.evidence.z.is_empty()));
    let rules = camxuc::rules::default_ruleset().unwrap();
    let fa = fusion::fit_for_model(&a.held_out, &rules, &a.routing);
    let fb = fusion::fit_for_model(&b.held_out, &rules, &b.routing);
    assert_eq!(fa, fb, "same seed, same fusion");
    let conditions: Vec<&str> = fa.checks.iter().map(|c| c.condition.as_str()).collect();
    assert_eq!(conditions, ["clean", "perturbed"]);

    // Refuses to overwrite without --force.
    let mut again = light("a");
    again.force = false; // the default: refuse to overwrite
    let e = train_model(&again, &mut |_| {}).err().expect("must refuse");
    assert!(e.to_string().contains("--force"), "{e}");

    // Load twice: identical probabilities that sum to one.
    let dev = candle_core::Device::Cpu;
    let models = tmp.path().join("no-models-needed");
    let m1 = AcousticModel::load(&a.dir, &models, &dev).unwrap();
    let m2 = AcousticModel::load(&a.dir, &models, &dev).unwrap();
    let mut an = ClipAnalyser::new(&FeatureConfig::default()).unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(manifest.parent().unwrap().join("clips"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .take(5)
        .collect();
    let mut clips: Vec<_> = files.iter().map(|f| an.analyse(f).unwrap()).collect();
    let mut clips2 = clips.clone();
    let p1 = m1.predict(&mut clips).unwrap();
    let p2 = m2.predict(&mut clips2).unwrap();
    assert_eq!(p1, p2);
    for p in &p1 {
        assert!((p.values.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");
        assert_eq!(p.labels, vec!["calm", "angry", "panic"]);
    }
    // The evidence got z-scores against the model's corpus baseline.
    assert!(clips[0].evidence.baseline.starts_with("corpus:"));
    assert!(!clips[0].evidence.z.is_empty());

    // Site calibration refits temperature, baseline and routing in place, keeping the old files.
    let site = camxuc::acoustic::calibrate::calibrate_site(&a.dir, &models, &manifest).unwrap();
    assert_eq!(site.n, 18);
    assert!(site.ece_after <= site.ece_before + 1e-9, "{site:?}");
    assert!(a.dir.join("model.json.prev").is_file() && a.dir.join("routing.json.prev").is_file());
    let recalibrated = AcousticModel::load(&a.dir, &models, &dev).unwrap();
    assert_eq!(recalibrated.meta.temperature, site.temperature_after);
    assert!(recalibrated
        .meta
        .evidence_baseline
        .kind
        .to_string()
        .starts_with("corpus:site:"));
    let too_few = tmp.path().join("few.csv");
    std::fs::write(&too_few, "path,label\n").unwrap();
    assert!(camxuc::acoustic::calibrate::calibrate_site(&a.dir, &models, &too_few).is_err());

    // A directory of another format version is refused with a clear message.
    let meta_path = a.dir.join(model_dir::META_FILE);
    let text = std::fs::read_to_string(&meta_path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["format_version"] = 99.into();
    std::fs::write(&meta_path, json.to_string()).unwrap();
    let e = AcousticModel::load(&a.dir, &models, &dev)
        .err()
        .expect("must refuse");
    let msg = e.to_string();
    assert!(
        msg.contains("format_version 99") && msg.contains("model.json"),
        "{msg}"
    );

    // Not a model directory at all.
    let e = AcousticModel::load(tmp.path(), &models, &dev)
        .err()
        .expect("must refuse");
    assert!(
        e.to_string().contains("not a camxuc model directory"),
        "{e}"
    );
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// A few epochs on a small real subset, Whisper front end: beats chance on held-out speakers.
#[test]
fn whisper_head_beats_chance_on_held_out_real_speakers() {
    let Some(manifest) = common::ravdess_or_skip().map(|d| d.join("manifest.csv")) else {
        return;
    };
    if !models_dir().join("whisper-base/model.bin").is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch whisper-base (camxuc models fetch)"
        );
        eprintln!(
            "SKIPPED: models/whisper-base is not installed (camxuc models fetch whisper-base)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut o = TrainOptions::new(manifest.clone(), tmp.path().join("m"));
    o.models_dir = models_dir();
    o.speakers = Some("actor01-actor08".into());
    o.frontend = FrontendChoice::Whisper { blocks: 2 };
    o.augment_views = 0;
    o.train.epochs = 25;
    o.train.seed = 2;
    // Out-of-fold heads are not what this test is about; they would triple its time.
    o.oof_folds = 0;
    let report = train_model(&o, &mut |_| {}).unwrap();
    let eval = evaluate(
        &EvalOptions {
            manifest,
            speakers: Some("actor09-actor10".into()),
            model_dir: report.dir.clone(),
            models_dir: models_dir(),
            rules: None,
            bootstrap_reps: 200,
            seed: 1,
            robustness: false,
            transcribe: None,
            reasoner: Default::default(),
        },
        &mut |_, _| {},
    )
    .unwrap()
    .report;
    assert_eq!(eval.n, 48);
    // The acoustic model alone (the headline scores the routed pipeline).
    let acoustic = &eval.ablations.acoustic_only;
    assert!(
        acoustic.macro_f1 > 0.5,
        "held-out macro-F1 {:.3} (chance is 0.33)",
        acoustic.macro_f1
    );
}

/// A model trained with out-of-fold heads keeps them: model.json lists the members, the
/// weights file holds each under its prefix, and the served logits are exactly the mean of
/// the members' logits (each member loaded alone from an edited copy of model.json). A
/// directory without the `ensemble` field (as written before ensembles) still loads, as one head.
#[test]
fn ensemble_serves_the_mean_of_its_heads_and_single_head_directories_still_load() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::small_corpus(tmp.path(), 3);
    let opts = common::light_options(manifest.clone(), tmp.path().join("ens"), 3, 0, 4);
    let report = train_model(&opts, &mut |_| {}).unwrap();
    let ens = report.meta.ensemble.clone().expect("fold heads kept");
    assert_eq!(ens.members[0], "", "main head first, unprefixed");
    assert!(ens.members.len() >= 3, "{:?}", ens.members);
    let tensors = candle_core::safetensors::load(
        report.dir.join(model_dir::WEIGHTS_FILE),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(tensors.contains_key("out.weight") && tensors.contains_key("fold1.out.weight"));

    let dev = candle_core::Device::Cpu;
    let models = tmp.path().join("no-models-needed");
    let mut an = ClipAnalyser::new(&FeatureConfig::default()).unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(manifest.parent().unwrap().join("clips"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .take(6)
        .collect();
    let clips: Vec<_> = files.iter().map(|f| an.analyse(f).unwrap()).collect();
    let served = AcousticModel::load(&report.dir, &models, &dev).unwrap();
    assert_eq!(served.n_heads(), ens.members.len());
    let combined = served.logits(&mut clips.clone()).unwrap();

    // Each member alone: a copy of the directory whose model.json names only that member.
    let member_logits: Vec<Vec<Vec<f32>>> = ens
        .members
        .iter()
        .enumerate()
        .map(|(i, prefix)| {
            let dir = tmp.path().join(format!("member{i}"));
            copy_dir(&report.dir, &dir);
            let mut meta = report.meta.clone();
            meta.ensemble.as_mut().unwrap().members = vec![prefix.clone()];
            model_dir::write_meta(&dir, &meta).unwrap();
            let m = AcousticModel::load(&dir, &models, &dev).unwrap();
            assert_eq!(m.n_heads(), 1);
            m.logits(&mut clips.clone()).unwrap()
        })
        .collect();
    for (c, row) in combined.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let mean =
                member_logits.iter().map(|m| m[c][j]).sum::<f32>() / member_logits.len() as f32;
            assert!((v - mean).abs() < 1e-5, "clip {c}: {row:?} vs mean {mean}");
        }
    }
    // The members disagree somewhere (otherwise the ensemble would be pointless).
    assert!(member_logits[0] != member_logits[1]);

    // A directory written before ensembles (no `ensemble` in model.json): the main head alone.
    let old = tmp.path().join("old");
    copy_dir(&report.dir, &old);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(old.join(model_dir::META_FILE)).unwrap())
            .unwrap();
    json.as_object_mut().unwrap().remove("ensemble");
    std::fs::write(old.join(model_dir::META_FILE), json.to_string()).unwrap();
    let single = AcousticModel::load(&old, &models, &dev).unwrap();
    assert_eq!(single.n_heads(), 1);
    assert_eq!(single.logits(&mut clips.clone()).unwrap(), member_logits[0]);

    // An ensemble that names a head the weights file lacks is refused, naming the head.
    let bad = tmp.path().join("bad");
    copy_dir(&report.dir, &bad);
    let mut meta = report.meta.clone();
    meta.ensemble.as_mut().unwrap().members.push("fold9".into());
    model_dir::write_meta(&bad, &meta).unwrap();
    let e = AcousticModel::load(&bad, &models, &dev)
        .err()
        .expect("must refuse");
    assert!(e.to_string().contains("fold9"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The default attention classifier with the Whisper front end is a mixture: model.json has
/// `linear_member`, the weights hold `linear_member.*`, the served logits are exactly
/// `mix_logits` of the heads' logits (the same directory without the member) and the member's
/// logits on the pooled vector, and the validation probabilities training wrote (computed
/// with the training code's mixture) equal the loaded model's predictions of those clips.
/// `linear_member: false` gives the heads alone.
#[test]
fn a_mixture_serves_the_mean_of_its_heads_and_linear_member_as_trained() {
    if !common::espeak_or_skip() {
        return;
    }
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::small_corpus_of(tmp.path(), 4, 5, 21);
    let mut o = TrainOptions::new(manifest.clone(), tmp.path().join("mix"));
    o.models_dir = models.clone();
    o.frontend = FrontendChoice::Whisper { blocks: 2 };
    o.augment_views = 1;
    o.train.epochs = 3;
    o.train.seed = 5;
    o.oof_folds = 2;
    o.force = true;
    let report = train_model(&o, &mut |_| {}).unwrap();
    let lm = report.meta.linear_member.clone().expect("a linear member");
    assert_eq!(report.meta.temperature, 1.0);
    assert_eq!(lm.linear.blocks, vec![1, 2]);
    // By default the member also trains on two field-chain copies of each training clip.
    assert_eq!(lm.field_views, 2);
    assert!(
        lm.fitted_on.contains("2 field-chain copies"),
        "{}",
        lm.fitted_on
    );

    let dev = candle_core::Device::Cpu;
    let served = AcousticModel::load(&report.dir, &models, &dev).unwrap();
    assert!(served.has_linear_member());
    // The heads alone: the same directory without the member (and at the heads' temperature).
    let heads_dir = tmp.path().join("heads");
    copy_dir(&report.dir, &heads_dir);
    let mut meta = report.meta.clone();
    meta.linear_member = None;
    model_dir::write_meta(&heads_dir, &meta).unwrap();
    let heads = AcousticModel::load(&heads_dir, &models, &dev).unwrap();
    let tensors =
        candle_core::safetensors::load(report.dir.join(model_dir::WEIGHTS_FILE), &dev).unwrap();
    let get = |n: &str| tensors.get(n).cloned();
    let member = camxuc::acoustic::linear::LinearHead::from_tensors(
        &get,
        camxuc::acoustic::model::LINEAR_MEMBER_PREFIX,
        &lm.linear,
    )
    .unwrap();

    // Validation clips: what training wrote for them.
    let evidence: Vec<model_dir::TrainEvidence> =
        std::fs::read_to_string(report.dir.join(model_dir::TRAIN_EVIDENCE_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &model_dir::TrainEvidence| r.split == "val")
            .collect();
    assert!(!evidence.is_empty());
    let base = manifest.parent().unwrap();
    let mut an = ClipAnalyser::new(&FeatureConfig::default()).unwrap();
    for rec in &evidence {
        let path = base.join(&rec.path);
        let path = if path.is_file() {
            path
        } else {
            PathBuf::from(&rec.path)
        };
        let clip = an.analyse(&path).unwrap();
        let mixed = served.logits(&mut [clip.clone()]).unwrap().remove(0);
        let h = heads.logits(&mut [clip.clone()]).unwrap().remove(0);
        let (_, pooled) = served.view_and_pooled(&mut clip.clone()).unwrap();
        let l = member.logits(&pooled.expect("a pooled vector"));
        assert_eq!(mixed, camxuc::acoustic::model::mix_logits(&h, &l, &lm));
        let p = served.predict(&mut [clip]).unwrap().remove(0);
        let written = rec.probs.as_ref().expect("validation probabilities");
        for (label, v) in p.labels.iter().zip(&p.values) {
            let w = written.get(label).unwrap();
            assert!(
                (v - w).abs() < 1e-5,
                "{}: {label} {v} served, {w} written",
                rec.path
            );
        }
    }

    // Without field-chain copies: the heads are bit for bit the same (the copies have their
    // own seed stream and never reach the heads), the member is not.
    let with_field = read_tensors(&report.dir);
    o.member_field_views = 0;
    o.out = tmp.path().join("no-field");
    let plain = train_model(&o, &mut |_| {}).unwrap();
    assert_eq!(plain.meta.linear_member.as_ref().unwrap().field_views, 0);
    let without = read_tensors(&plain.dir);
    assert_eq!(with_field.len(), without.len());
    for (name, bytes) in &with_field {
        let same = without.get(name) == Some(bytes);
        if name.starts_with(camxuc::acoustic::model::LINEAR_MEMBER_PREFIX) {
            if name.ends_with("weight") {
                assert!(!same, "{name}: the field-chain copies changed nothing");
            }
        } else {
            assert!(same, "{name} differs: field-chain copies reached the heads");
        }
    }

    // Opting out: the heads alone.
    o.linear_member = false;
    o.out = tmp.path().join("heads-only");
    let report = train_model(&o, &mut |_| {}).unwrap();
    assert!(report.meta.linear_member.is_none());
}

/// Every tensor of a model directory's weights file, as bytes (f32 little-endian).
fn read_tensors(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let t = candle_core::safetensors::load(
        dir.join(model_dir::WEIGHTS_FILE),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    t.into_iter()
        .map(|(name, v)| {
            let values: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
            (name, values.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect()
}
