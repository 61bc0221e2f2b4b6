//! The shipped default model: its files are the ones the model card names (sha256), it loads,
//! and it classifies a real clip.

mod common;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/acoustic/default")
}

/// `(file, sha256)` rows of the model card's hash table.
fn card_hashes() -> Vec<(String, String)> {
    let card = std::fs::read_to_string(default_dir().join("MODEL_CARD.md")).expect("MODEL_CARD.md");
    let a = card
        .find("<!-- hashes -->")
        .expect("hash table start marker");
    let b = card
        .find("<!-- /hashes -->")
        .expect("hash table end marker");
    card[a..b]
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            (cells.len() >= 3 && cells[2].len() == 64)
                .then(|| (cells[1].to_string(), cells[2].to_string()))
        })
        .collect()
}

#[test]
fn committed_files_match_the_hashes_in_the_model_card() {
    let rows = card_hashes();
    let names: Vec<&str> = rows.iter().map(|(f, _)| f.as_str()).collect();
    for required in [
        "model.safetensors",
        "routing.json",
        "fusion.json",
        "rules.toml",
    ] {
        assert!(
            names.contains(&required),
            "the card lists no hash of {required}: {names:?}"
        );
    }
    for (file, want) in rows {
        let bytes =
            std::fs::read(default_dir().join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let got = hex::encode(Sha256::digest(&bytes));
        assert_eq!(
            got, want,
            "{file}: sha256 differs from MODEL_CARD.md (rebuild with `just default-model`)"
        );
    }
    let meta = camxuc::acoustic::model_dir::read_meta(&default_dir()).expect("model.json reads");
    // The served classifier (chosen by `just generalise`) with its unfamiliarity reference.
    assert!(meta.ensemble.is_some() && meta.unfamiliarity.is_some());
    // Trained with outlier exposure on the actors' other-emotion clips.
    let oe = meta
        .outlier_exposure
        .expect("model.json records outlier exposure");
    assert!(oe.clips > 0 && oe.weight > 0.0, "{oe:?}");
    // The served design keeps its heads' temporal conv at the random initialisation.
    let tc = meta
        .head_training
        .expect("model.json records the head training");
    assert!(tc.freeze_temporal, "{tc:?}");
    // ... and serves the mixture with a linear member on the unfamiliarity reference's input.
    let lm = meta
        .linear_member
        .expect("model.json has the linear member");
    assert_eq!(
        Some(camxuc::acoustic::model::member_input(&lm.linear)),
        meta.unfamiliarity.and_then(|u| u.input)
    );
    assert_eq!(meta.temperature, 1.0);
}

#[test]
fn default_model_loads_and_classifies_a_real_clip() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    if !models.join("whisper-base/model.bin").is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch whisper-base"
        );
        eprintln!(
            "SKIPPED: models/whisper-base is not installed (camxuc models fetch whisper-base)"
        );
        return;
    }
    let Some(data) = common::ravdess_or_skip() else {
        return;
    };
    let dev = candle_core::Device::Cpu;
    let model =
        camxuc::acoustic::AcousticModel::load(&default_dir(), &models, &dev).expect("loads");
    let mut an = camxuc::clip::ClipAnalyser::new(&model.meta.features).unwrap();
    // An angry clip at strong intensity (actor 01, statement 1).
    let mut clip = an
        .analyse(&data.join("clips/03-01-05-02-01-01-01.wav"))
        .unwrap();
    let (p, u) = model
        .assess(std::slice::from_mut(&mut clip))
        .unwrap()
        .remove(0);
    assert!((p.values.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert!(u.expect("the default model scores unfamiliarity") >= 0.0);
    // A training clip of the model: it should get it right.
    assert_eq!(p.top_label(), "angry", "{p:?}");
}
