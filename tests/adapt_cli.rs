//! `camxuc adapt` end to end on a small linear model (log-mel front end, SYNTHETIC espeak-ng
//! speech): a new directory, the source untouched, deterministic weights, what model.json
//! records, and the bad inputs (exit codes 0 / 2 / 1 with the file named).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use camxuc::acoustic::train::Classifier;
use camxuc::acoustic::train_linear::LinearChoice;
use camxuc::acoustic::{model_dir, train_model, AcousticModel};
use camxuc::clip::ClipAnalyser;
use camxuc::data::manifest::Manifest;
use camxuc::data::split::filter_speakers;
use camxuc::features::FeatureConfig;
use camxuc::LabelSet;

/// The corpus (4 synthetic voices, 12 clips each), a linear model trained on two of them,
/// and the other two as a site: their clips copied into a folder (half in a subfolder) and
/// their labelled manifest.
struct Fixture {
    dir: PathBuf,
    model: PathBuf,
    site_dir: PathBuf,
    site_csv: PathBuf,
    n_site: usize,
}

fn fixture(tmp: &Path, classifier: Classifier) -> Fixture {
    let manifest = common::small_corpus_of(tmp, 4, 16, 11);
    let model = tmp.join("source");
    let mut o = common::light_options(manifest.clone(), model.clone(), 1, 0, 1);
    o.speakers = Some("synth-m1,synth-f2".into());
    o.classifier = classifier;
    o.oof_folds = if matches!(o.classifier, Classifier::Linear(_)) {
        2
    } else {
        0
    };
    train_model(&o, &mut |_| {}).expect("train the source model");
    let m = Manifest::load(&manifest, &LabelSet::default()).unwrap();
    let site = filter_speakers(&m, &["synth-m3,synth-f4"]).unwrap();
    let site_csv = tmp.join("site.csv");
    site.write(&site_csv).unwrap();
    let site_dir = tmp.join("site-clips");
    std::fs::create_dir_all(site_dir.join("day2")).unwrap();
    for (i, r) in site.rows.iter().enumerate() {
        let sub = if i % 2 == 0 {
            site_dir.clone()
        } else {
            site_dir.join("day2")
        };
        std::fs::copy(&r.path, sub.join(r.path.file_name().unwrap())).unwrap();
    }
    // Not audio by extension: ignored, not a failure.
    std::fs::write(site_dir.join("notes.txt"), "recorded on the ward").unwrap();
    Fixture {
        dir: tmp.into(),
        model,
        site_dir,
        site_csv,
        n_site: site.rows.len(),
    }
}

fn linear_choice() -> Classifier {
    Classifier::Linear(LinearChoice {
        unfamiliarity_components: 8,
        field_views: 0,
        ..LinearChoice::default()
    })
}

fn camxuc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_camxuc"))
        .args(args)
        .env("CAMXUC_MODELS_DIR", "/nonexistent-models-dir")
        .output()
        .expect("run camxuc")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn tensor(dir: &Path, name: &str) -> Vec<f32> {
    let t = candle_core::safetensors::load(
        dir.join(model_dir::WEIGHTS_FILE),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    t[name].flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn adapt_writes_a_new_model_leaves_the_source_alone_and_is_deterministic() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture(tmp.path(), linear_choice());
    let before = snapshot(&f.model);
    let source_json = std::fs::read(f.model.join(model_dir::META_FILE)).unwrap();

    // Unlabelled clips only, twice.
    let (a1, a2) = (f.dir.join("a1"), f.dir.join("a2"));
    for out in [&a1, &a2] {
        let o = camxuc(&[
            "adapt",
            "--model",
            s(&f.model),
            "--out",
            s(out),
            "--unlabelled",
            s(&f.site_dir),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).contains("ignored 1 files"), "{}", stderr(&o));
    }
    assert_eq!(snapshot(&f.model), before, "the source directory changed");
    assert_eq!(
        std::fs::read(a1.join(model_dir::WEIGHTS_FILE)).unwrap(),
        std::fs::read(a2.join(model_dir::WEIGHTS_FILE)).unwrap(),
        "two adapts of the same inputs gave different weights"
    );
    // The standardisation moved to the site; the weights did not.
    assert_ne!(
        tensor(&a1, "linear.x_mean"),
        tensor(&f.model, "linear.x_mean")
    );
    assert_ne!(
        tensor(&a1, "linear.x_inv_std"),
        tensor(&f.model, "linear.x_inv_std")
    );
    assert_eq!(
        tensor(&a1, "linear.weight"),
        tensor(&f.model, "linear.weight")
    );
    let meta = model_dir::read_meta(&a1).unwrap();
    let ad = meta
        .adaptation
        .as_ref()
        .expect("model.json records the adaptation");
    assert!(
        ad.refitted
            .iter()
            .any(|r| r.contains("standardisation")
                && r.contains(&format!("{} site clips", f.n_site))),
        "{:?}",
        ad.refitted
    );
    assert!(ad
        .refitted
        .iter()
        .any(|r| r.starts_with("evidence baseline")));
    assert!(ad
        .refitted
        .iter()
        .any(|r| r.starts_with("unfamiliarity reference")));
    assert!(ad
        .refitted
        .iter()
        .any(|r| r.starts_with("routing threshold")));
    assert!(ad
        .not_refitted
        .iter()
        .any(|r| r.contains("no labelled clips")));
    assert_eq!((ad.n_unlabelled, ad.n_labelled), (f.n_site, 0));
    assert_eq!(ad.source_model, f.model.display().to_string());
    use sha2::Digest;
    assert_eq!(
        ad.source_model_json_sha256,
        hex::encode(sha2::Sha256::digest(&source_json))
    );
    let src_meta = model_dir::read_meta(&f.model).unwrap();
    assert!(src_meta.adaptation.is_none());
    assert_eq!(meta.temperature, src_meta.temperature);
    assert!(meta
        .evidence_baseline
        .kind
        .to_string()
        .starts_with("corpus:site:"));
    // The training files come along.
    assert!(a1.join(model_dir::TRAIN_EVIDENCE_FILE).is_file());

    // Labelled clips (the folder holds the same clips: they count once, as labelled).
    let (b1, b2) = (f.dir.join("b1"), f.dir.join("b2"));
    for out in [&b1, &b2] {
        let report = f.dir.join("b.json");
        let o = camxuc(&[
            "adapt",
            "--model",
            s(&f.model),
            "--out",
            s(out),
            "--unlabelled",
            s(&f.site_dir),
            "--labelled",
            s(&f.site_csv),
            "--json",
            s(&report),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let j = json(&report);
        for k in ["before", "after"] {
            let n = j[k]["n"].as_u64().unwrap_or(0);
            assert!(n > 0 && n < f.n_site as u64, "{k}: {}", j[k]);
            for m in ["macro_f1", "ece"] {
                let v = j[k][m].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&v), "{k}.{m} = {v}");
            }
        }
        assert!(
            j["held_out"].as_str().unwrap().contains("speaker"),
            "{}",
            j["held_out"]
        );
        assert_eq!(j["failed"].as_array().unwrap().len(), 0);
        assert!(!j["refitted"].as_array().unwrap().is_empty());
    }
    assert_eq!(snapshot(&f.model), before, "the source directory changed");
    assert_eq!(
        std::fs::read(b1.join(model_dir::WEIGHTS_FILE)).unwrap(),
        std::fs::read(b2.join(model_dir::WEIGHTS_FILE)).unwrap()
    );
    let meta = model_dir::read_meta(&b1).unwrap();
    let ad = meta.adaptation.unwrap();
    assert_eq!((ad.n_unlabelled, ad.n_labelled), (0, f.n_site));
    assert!(
        ad.refitted.iter().any(|r| r.starts_with("temperature")),
        "{:?}",
        ad.refitted
    );
    // The head was either refitted toward the source (λ recorded) or kept, and says which.
    let head_line = ad
        .refitted
        .iter()
        .chain(&ad.not_refitted)
        .find(|r| r.starts_with("linear head weights"))
        .expect("a line about the head");
    assert_eq!(ad.prior_lambda.is_some(), ad.refitted.contains(head_line));

    // The adapted directory is a model like any other.
    let dev = candle_core::Device::Cpu;
    let model = AcousticModel::load(&b1, &f.dir.join("no-models"), &dev).unwrap();
    let mut an = ClipAnalyser::new(&FeatureConfig::default()).unwrap();
    let m = Manifest::load(&f.site_csv, &LabelSet::default()).unwrap();
    let mut clip = an.analyse(&m.rows[0].path).unwrap();
    let (p, u) = model
        .assess(std::slice::from_mut(&mut clip))
        .unwrap()
        .remove(0);
    assert!((p.values.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert!(u.is_some_and(|u| u.is_finite() && u >= 0.0));
}

#[test]
fn adapt_names_bad_inputs_and_refuses_unsafe_outputs() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture(tmp.path(), linear_choice());
    let out = f.dir.join("out");
    let adapt = |extra: &[&str]| {
        let mut args = vec!["adapt", "--model", s(&f.model)];
        args.extend_from_slice(extra);
        camxuc(&args)
    };

    // No site clips at all.
    let o = adapt(&["--out", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--unlabelled") && stderr(&o).contains("--labelled"),
        "{}",
        stderr(&o)
    );
    // An empty folder.
    let empty = f.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = adapt(&["--out", s(&out), "--unlabelled", s(&empty)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no audio files") && stderr(&o).contains(s(&empty)),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());

    // A file that is not audio among the clips: named, counted, the rest go on, exit 2.
    let broken = f.site_dir.join("day2").join("broken.wav");
    std::fs::write(&broken, "this is not a wav file").unwrap();
    let report = f.dir.join("r.json");
    let o = adapt(&[
        "--out",
        s(&out),
        "--unlabelled",
        s(&f.site_dir),
        "--json",
        s(&report),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("broken.wav"), "{}", stderr(&o));
    let j = json(&report);
    let failed = j["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["file"].as_str().unwrap().ends_with("broken.wav"));
    assert!(!failed[0]["reason"].as_str().unwrap().is_empty());
    assert_eq!(
        model_dir::read_meta(&out)
            .unwrap()
            .adaptation
            .unwrap()
            .n_unlabelled,
        f.n_site
    );
    std::fs::remove_file(&broken).unwrap();

    // An existing --out: refused without --force, replaced with it.
    let o = adapt(&["--out", s(&out), "--unlabelled", s(&f.site_dir)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("exists") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    let o = adapt(&["--out", s(&out), "--unlabelled", s(&f.site_dir), "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A folder that is not a model is not replaced even with --force.
    let o = adapt(&[
        "--out",
        s(&f.site_dir),
        "--unlabelled",
        s(&f.site_dir),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a model directory"),
        "{}",
        stderr(&o)
    );

    // --out is the source (however it is spelled), or inside it.
    let before = snapshot(&f.model);
    let spelled = format!("{}/./", s(&f.model));
    for o in [s(&f.model), spelled.as_str()] {
        let r = adapt(&["--out", o, "--unlabelled", s(&f.site_dir), "--force"]);
        assert_eq!(r.status.code(), Some(1));
        assert!(
            stderr(&r).contains("source model directory"),
            "{}",
            stderr(&r)
        );
    }
    let inside = f.model.join("adapted");
    let r = adapt(&["--out", s(&inside), "--unlabelled", s(&f.site_dir)]);
    assert_eq!(r.status.code(), Some(1));
    assert!(stderr(&r).contains("inside the source"), "{}", stderr(&r));
    assert_eq!(snapshot(&f.model), before);

    // Labelled manifests: an unknown label, one class only.
    let text = std::fs::read_to_string(&f.site_csv).unwrap();
    let bad = f.dir.join("bad-label.csv");
    let label_is = |l: &str, label: &str| l.split(',').nth(1) == Some(label);
    let relabelled: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 3 {
                l.replacen(&format!(",{},", l.split(',').nth(1).unwrap()), ",happy,", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&bad, relabelled.join("\n") + "\n").unwrap();
    let o = adapt(&["--out", s(&f.dir.join("x")), "--labelled", s(&bad)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad-label.csv")
            && stderr(&o).contains("happy")
            && stderr(&o).contains("line 4"),
        "{}",
        stderr(&o)
    );
    let one = f.dir.join("one-class.csv");
    let mut lines = text.lines();
    let mut only_calm = vec![lines.next().unwrap().to_string()];
    only_calm.extend(lines.filter(|l| label_is(l, "calm")).map(String::from));
    std::fs::write(&one, only_calm.join("\n") + "\n").unwrap();
    let o = adapt(&["--out", s(&f.dir.join("x")), "--labelled", s(&one)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("one-class.csv") && stderr(&o).contains("one class"),
        "{}",
        stderr(&o)
    );
    assert!(!f.dir.join("x").exists());

    // An unlabelled manifest (path column only counts) with a missing file: exit 2.
    let unl = f.dir.join("unlabelled.csv");
    let mut rows = vec!["path,note".to_string()];
    rows.extend(
        Manifest::load(&f.site_csv, &LabelSet::default())
            .unwrap()
            .rows
            .iter()
            .map(|r| format!("{},x", r.path.display())),
    );
    rows.push("gone.wav,y".into());
    std::fs::write(&unl, rows.join("\n") + "\n").unwrap();
    let o = adapt(&["--out", s(&f.dir.join("y")), "--unlabelled", s(&unl)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("gone.wav"), "{}", stderr(&o));
}

#[test]
fn a_model_of_attention_heads_gets_the_baseline_and_routing_and_with_labels_its_output_layers() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture(tmp.path(), Classifier::Attention);
    let before = snapshot(&f.model);
    let out = f.dir.join("adapted");
    let o = camxuc(&[
        "adapt",
        "--model",
        s(&f.model),
        "--out",
        s(&out),
        "--unlabelled",
        s(&f.site_dir),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("kept: attention heads"), "{stdout}");
    assert_eq!(snapshot(&f.model), before);
    // Same weights, new baseline and routing.
    assert_eq!(
        std::fs::read(out.join(model_dir::WEIGHTS_FILE)).unwrap(),
        std::fs::read(f.model.join(model_dir::WEIGHTS_FILE)).unwrap()
    );
    let meta = model_dir::read_meta(&out).unwrap();
    // The unfamiliarity reference (when the source has one) is kept, not dropped.
    assert_eq!(
        meta.unfamiliarity,
        model_dir::read_meta(&f.model).unwrap().unfamiliarity
    );
    let ad = meta.adaptation.unwrap();
    assert_eq!(ad.refitted.len(), 2, "{:?}", ad.refitted);
    assert!(
        ad.refitted[0].starts_with("evidence baseline")
            && ad.refitted[1].starts_with("routing threshold")
    );
    let dev = candle_core::Device::Cpu;
    AcousticModel::load(&out, &f.dir.join("no-models"), &dev).unwrap();
    // Without labels nothing was refitted that the source's fusion (here: none) describes.
    assert!(stdout.contains("fusion: kept from the source"), "{stdout}");
    let fusion_file = camxuc::pipeline::fusion::FUSION_FILE;
    assert_eq!(
        out.join(fusion_file).exists(),
        f.model.join(fusion_file).exists()
    );

    // With labelled clips the heads' output layers are refitted toward the source (or kept,
    // when keeping them has the lowest held-out NLL); nothing else in the weights changes.
    let labelled = f.dir.join("adapted-labelled");
    let run = |to: &Path| {
        camxuc(&[
            "adapt",
            "--model",
            s(&f.model),
            "--out",
            s(to),
            "--labelled",
            s(&f.site_csv),
            "--json",
            s(&to.with_extension("json")),
        ])
    };
    let o = run(&labelled);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(snapshot(&f.model), before);
    let report = json(&labelled.with_extension("json"));
    let ad = model_dir::read_meta(&labelled).unwrap().adaptation.unwrap();
    let load = |dir: &Path| {
        candle_core::safetensors::load(dir.join(model_dir::WEIGHTS_FILE), &dev).unwrap()
    };
    let (src_t, new_t) = (load(&f.model), load(&labelled));
    assert_eq!(
        src_t.keys().collect::<std::collections::BTreeSet<_>>(),
        new_t.keys().collect::<std::collections::BTreeSet<_>>()
    );
    let changed: Vec<&String> = src_t
        .keys()
        .filter(|k| {
            let a = src_t[*k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = new_t[*k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            a != b
        })
        .collect();
    eprintln!(
        "attention adapt: λ {:?}, before {} after {}",
        ad.prior_lambda, report["before"], report["after"]
    );
    match ad.prior_lambda {
        Some(l) => {
            assert!(
                !changed.is_empty() && changed.iter().all(|k| k.contains("out.")),
                "λ = {l}; changed: {changed:?}"
            );
            assert!(
                ad.refitted
                    .iter()
                    .any(|r| r.starts_with("attention heads' output layers")),
                "{:?}",
                ad.refitted
            );
        }
        None => {
            assert!(changed.is_empty(), "kept, yet changed: {changed:?}");
            assert!(
                ad.not_refitted.iter().any(|r| r.contains("λ = ∞ won")),
                "{:?}",
                ad.not_refitted
            );
        }
    }
    assert!(ad.refitted.iter().any(|r| r.starts_with("temperature")));
    assert!(report["after"]["macro_f1"].is_number(), "{report}");
    // The refitted model gets a fusion of its own, fitted on the labelled clips' out-of-fold
    // predictions; this site's few clips cannot support one, so its routed clips are decided
    // acoustic-only (and the report says why).
    let fit = camxuc::pipeline::fusion::read(&labelled).unwrap().unwrap();
    assert!(
        fit.fitted_on
            .as_deref()
            .unwrap()
            .starts_with("camxuc adapt"),
        "{fit:?}"
    );
    assert_eq!(
        fit.params,
        camxuc::pipeline::fusion::FusionParams::ACOUSTIC_ONLY
    );
    assert!(
        report["fusion"][0]
            .as_str()
            .is_some_and(|l| l.starts_with("fusion:")),
        "{report}"
    );
    AcousticModel::load(&labelled, &f.dir.join("no-models"), &dev).unwrap();
    // Deterministic.
    let again = f.dir.join("adapted-labelled-again");
    assert_eq!(run(&again).status.code(), Some(0));
    for file in [model_dir::WEIGHTS_FILE, model_dir::ROUTING_FILE] {
        assert_eq!(
            std::fs::read(again.join(file)).unwrap(),
            std::fs::read(labelled.join(file)).unwrap(),
            "{file}"
        );
    }
}

/// The shipped default model (attention heads and a linear member, Whisper front end, an
/// unfamiliarity reference): adapting it refits its unfamiliarity reference on the site's clips
/// (the same pooled vector, the unit of the site's own held-out clips), so the site's speech is
/// no longer unfamiliar to the adapted model — before, every clip of a new corpus stayed
/// unfamiliar and was routed — and it stays a mixture.
#[test]
fn adapting_the_default_model_refits_its_unfamiliarity_reference_on_the_site() {
    if !common::espeak_or_skip() {
        return;
    }
    let Some(models) = common::whisper_models_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture(tmp.path(), Classifier::Attention);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/acoustic/default");
    let adapt_default = |to: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_camxuc"))
            .args(["adapt", "--model", s(&source), "--out", s(to)])
            .args(["--labelled", s(&f.site_csv)])
            .env("CAMXUC_MODELS_DIR", &models)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    };
    let out = f.dir.join("adapted-default");
    adapt_default(&out);
    let src = model_dir::read_meta(&source).unwrap();
    let new = model_dir::read_meta(&out).unwrap();
    let (u_src, u_new) = (src.unfamiliarity.unwrap(), new.unfamiliarity.unwrap());
    assert_eq!(u_new.input, u_src.input, "the same pooled vector");
    assert_ne!(u_new, u_src);
    assert!(u_new.fitted_on.starts_with("camxuc adapt"), "{u_new:?}");
    let ad = new.adaptation.as_ref().unwrap();
    assert!(
        ad.refitted
            .iter()
            .any(|r| r.starts_with("unfamiliarity reference")),
        "{ad:?}"
    );
    // A mixture stays one, its members refitted or kept (the temperatures come from the site).
    assert_eq!(new.linear_member.is_some(), src.linear_member.is_some());
    if src.linear_member.is_some() {
        assert!(
            ad.refitted
                .iter()
                .chain(&ad.not_refitted)
                .any(|r| r.starts_with("linear member")),
            "{ad:?}"
        );
    }
    AcousticModel::load(&out, &models, &candle_core::Device::Cpu).unwrap();
    // The site's clips (SYNTHETIC speech, far from RAVDESS) are less unfamiliar to the adapted
    // model than to the source.
    let clips: Vec<String> = Manifest::load_unlabelled(&f.site_csv)
        .unwrap()
        .rows
        .iter()
        .map(|r| r.path.display().to_string())
        .collect();
    let mean_unfamiliarity = |model: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_camxuc"))
            .args(["classify", "--model", s(model), "--llm", "none"])
            .args(["--format", "jsonl"])
            .args(&clips)
            .env("CAMXUC_MODELS_DIR", &models)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let u: Vec<f64> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|d| d["unfamiliarity"].as_f64())
            .collect();
        assert_eq!(u.len(), clips.len(), "one unfamiliarity per clip");
        u.iter().sum::<f64>() / u.len() as f64
    };
    let (before, after) = (mean_unfamiliarity(&source), mean_unfamiliarity(&out));
    eprintln!("site clips' mean unfamiliarity: source {before:.2}, adapted {after:.2}");
    assert!(after < before, "source {before:.3}, adapted {after:.3}");
    // Deterministic: the same inputs give the same weights (reference included), routing and
    // fusion.
    let again = f.dir.join("adapted-default-again");
    adapt_default(&again);
    for file in [
        model_dir::WEIGHTS_FILE,
        model_dir::ROUTING_FILE,
        camxuc::pipeline::fusion::FUSION_FILE,
    ] {
        assert_eq!(
            std::fs::read(again.join(file)).unwrap(),
            std::fs::read(out.join(file)).unwrap(),
            "{file}"
        );
    }
}
