//! Model selection for the acoustic model by nested speaker cross-validation on the TRAINING
//! speakers only (never the test speakers). Frames are encoded once (clean + two perturbed
//! views per clip); then for each outer fold of speakers, the remaining speakers go through
//! the same steps as `camxuc train` (speaker-disjoint validation part for early stopping, a
//! main head, out-of-fold heads on speaker folds of the rest) and the held-out fold scores:
//!
//! - `main`: the main head alone (the model before head ensembles);
//! - `main+folds (logits|probs)`: the main head and the fold heads averaged;
//! - `folds`: the fold heads alone; `main x3 seeds`: three main heads of different seeds;
//! - `main x3 + folds`: all of them.
//!
//! Each ensemble's temperature is fitted two ways and scored on the held-out fold:
//! `T(val)` on the validation clips only (every member predicts them, none trained on them),
//! `T(val+oof)` also with each training clip's prediction from the one fold head that did not
//! train on it (the honest out-of-fold prediction, but of one head, not the ensemble).
//!
//! cargo run --release --example acoustic_cv -- MANIFEST SPEAKERS [OUTER_FOLDS] [seeds]
//!
//! Inference cost of a trained model's heads against its encoder, one clip at a time:
//! cargo run --release --example acoustic_cv -- --head-cost MODEL_DIR MANIFEST SPEAKERS
//! e.g. ../shared/data/ravdess-3class/manifest.csv actor01-actor12 4

use std::path::PathBuf;
use std::time::Instant;

use camxuc::acoustic::augment::perturb;
use camxuc::acoustic::calibrate::{ece_at, fit_temperature};
use camxuc::acoustic::frontend::Frontend;
use camxuc::acoustic::head::HeadConfig;
use camxuc::acoustic::model::evidence_vector;
use camxuc::acoustic::train::{mean_nll, predict_logits, train_head, Example, TrainConfig, View};
use camxuc::data::manifest::Manifest;
use camxuc::data::split::{filter_speakers, speaker_folds, speaker_split};
use camxuc::eval::metrics::{accuracy, macro_f1};
use camxuc::features::{Baseline, BaselineKind, FeatureConfig, FEATURES};
use camxuc::pipeline::analyse::ClipAnalyser;
use camxuc::{Audio, Evidence, LabelSet};
use candle_core::Tensor;
use rand::SeedableRng;

/// One clip, analysed and encoded once: (frames, raw evidence) per view, view 0 clean.
struct Encoded {
    label: usize,
    views: Vec<(Tensor, Evidence)>,
}

/// Logits of every head of one outer fold on the clips it scores.
#[derive(Default)]
struct FoldLogits {
    /// Per head (main, fold heads…, extra main seeds…): logits on the outer test clips.
    test: Vec<Vec<Vec<f32>>>,
    /// Per head: logits on the validation clips.
    val: Vec<Vec<Vec<f32>>>,
    /// Out-of-fold logits of the training clips (each from the one fold head not trained on it).
    oof: Vec<Vec<f32>>,
    test_labels: Vec<usize>,
    val_labels: Vec<usize>,
    oof_labels: Vec<usize>,
}

const OOF_FOLDS: usize = 3;
/// Extra main-head seeds (each costs a main head's training time; none by default so that
/// the study fits the 2-core machine: pass `seeds` as the 4th argument to add two).
const EXTRA_SEEDS: [u64; 2] = [101, 102];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "--head-cost") {
        return head_cost(&args[2..]);
    }
    let (Some(manifest), Some(speakers)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: acoustic_cv MANIFEST SPEAKERS [OUTER_FOLDS]");
    };
    let outer_k: usize = args.get(3).map(|b| b.parse()).transpose()?.unwrap_or(4);
    let extra_seeds: &[u64] = if args.get(4).is_some_and(|a| a == "seeds") {
        &EXTRA_SEEDS
    } else {
        &[]
    };
    let labels = LabelSet::default();
    let m = filter_speakers(
        &Manifest::load(&PathBuf::from(manifest), &labels)?,
        &[speakers.as_str()],
    )?;
    let dev = candle_core::Device::Cpu;
    let models = camxuc::catalog::models_dir();
    let frontend = Frontend::whisper(&models.join("whisper-base"), 3, -23.0, &dev)?;
    let mut an = ClipAnalyser::new(&FeatureConfig::default())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);

    let started = Instant::now();
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
        let views = analysed
            .into_iter()
            .map(|c| {
                Ok((
                    frontend.frames(&c.speech.samples, &c.log_mel, &dev)?,
                    c.evidence,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        clips.push(Encoded {
            label: labels.index_of(&row.label).unwrap_or(0),
            views,
        });
        if i % 48 == 0 {
            eprintln!(
                "encoded {i}/{} ({:.0} s)",
                m.rows.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }

    let outer = speaker_folds(&m, outer_k, 1)?;
    let mut folds = Vec::new();
    for (k, f) in outer.iter().enumerate() {
        let t0 = Instant::now();
        folds.push(run_outer_fold(
            &m,
            &clips,
            &f.train,
            &f.val,
            extra_seeds,
            &dev,
        )?);
        // The table so far after every outer fold (the study is long on a loaded machine).
        println!(
            "== after outer fold {k} (test {}, {:.0} s)",
            f.val_speakers.join(" "),
            t0.elapsed().as_secs_f64()
        );
        report(&folds);
    }
    Ok(())
}

/// `camxuc train` on `inner` rows (validation split, main head, fold heads, extra seeds),
/// every head predicting the `test` rows.
fn run_outer_fold(
    m: &Manifest,
    clips: &[Encoded],
    inner: &[usize],
    test: &[usize],
    extra_seeds: &[u64],
    dev: &candle_core::Device,
) -> anyhow::Result<FoldLogits> {
    let inner_m = m.subset(inner);
    let split = speaker_split(&inner_m, 0.25, 1)?;
    let train_rows: Vec<usize> = split.train.iter().map(|&i| inner[i]).collect();
    let val_rows: Vec<usize> = split.val.iter().map(|&i| inner[i]).collect();
    let ev: Vec<Evidence> = train_rows
        .iter()
        .map(|&i| clips[i].views[0].1.clone())
        .collect();
    let baseline = Baseline::fit(BaselineKind::Corpus("cv".into()), &ev);
    let inputs: Vec<String> = FEATURES
        .iter()
        .filter(|f| f.gain_invariant && baseline.features.contains_key(f.name))
        .map(|f| f.name.to_string())
        .collect();
    let make = |rows: &[usize], all_views: bool| -> Vec<Example> {
        rows.iter()
            .map(|&i| {
                let c = &clips[i];
                let n = if all_views { c.views.len() } else { 1 };
                let views = c.views[..n]
                    .iter()
                    .map(|(frames, e)| View {
                        frames: frames.clone(),
                        evidence: evidence_vector(&baseline, &inputs, &mut e.clone()),
                    })
                    .collect();
                Example {
                    views,
                    label: c.label,
                }
            })
            .collect()
    };
    let (train, val, test_ex) = (
        make(&train_rows, true),
        make(&val_rows, false),
        make(test, false),
    );
    let cfg = HeadConfig {
        input_dim: 512,
        hidden: 64,
        evidence_dim: inputs.len(),
        n_labels: 3,
        dropout: 0.3,
    };
    let tc = |seed: u64| TrainConfig {
        seed,
        ..Default::default()
    };
    let mut out = FoldLogits {
        test_labels: test_ex.iter().map(|e| e.label).collect(),
        val_labels: val.iter().map(|e| e.label).collect(),
        ..Default::default()
    };
    let mut record = |head: &camxuc::acoustic::head::Head| -> anyhow::Result<()> {
        out.test.push(predict_logits(head, &test_ex, 32, dev)?);
        out.val.push(predict_logits(head, &val, 32, dev)?);
        Ok(())
    };
    let main = train_head(&cfg, &tc(1), &train, &val, dev, &mut |_| {})?;
    record(&main.head)?;
    // Fold heads exactly as fit.rs makes them: speaker folds of the training part.
    let train_m = m.subset(&train_rows);
    for (f, fold) in speaker_folds(&train_m, OOF_FOLDS, 1)?.iter().enumerate() {
        let fit: Vec<Example> = fold.train.iter().map(|&i| train[i].clone()).collect();
        let held: Vec<Example> = fold.val.iter().map(|&i| train[i].clone()).collect();
        let t = train_head(&cfg, &tc(2 + f as u64), &fit, &val, dev, &mut |_| {})?;
        record(&t.head)?;
        out.oof.extend(predict_logits(&t.head, &held, 32, dev)?);
        out.oof_labels.extend(held.iter().map(|e| e.label));
    }
    for &seed in extra_seeds {
        let t = train_head(&cfg, &tc(seed), &train, &val, dev, &mut |_| {})?;
        record(&t.head)?;
    }
    Ok(out)
}

/// How an ensemble combines its members' logits.
#[derive(Clone, Copy)]
enum Combine {
    Logits,
    /// Log of the mean probability (so temperature scaling still applies).
    Probs,
}

fn combine(per_head: &[&Vec<Vec<f32>>], how: Combine) -> Vec<Vec<f32>> {
    let n = per_head[0].len();
    (0..n)
        .map(|i| {
            let k = per_head[0][i].len();
            let members = per_head.len() as f32;
            match how {
                Combine::Logits => (0..k)
                    .map(|j| per_head.iter().map(|h| h[i][j]).sum::<f32>() / members)
                    .collect(),
                Combine::Probs => {
                    let mut p = vec![0f32; k];
                    for h in per_head {
                        for (a, b) in p.iter_mut().zip(softmax(&h[i])) {
                            *a += b / members;
                        }
                    }
                    p.into_iter().map(|v| v.max(1e-12).ln()).collect()
                }
            }
        })
        .collect()
}

fn softmax(l: &[f32]) -> Vec<f32> {
    let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f32> = l.iter().map(|&x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len())
        .fold((0, f32::NEG_INFINITY), |b, i| {
            if v[i] > b.1 {
                (i, v[i])
            } else {
                b
            }
        })
        .0
}

fn report(folds: &[FoldLogits]) {
    let n_heads = folds[0].test.len();
    let main = vec![0];
    let fold_heads: Vec<usize> = (1..=OOF_FOLDS).collect();
    let main_folds: Vec<usize> = (0..=OOF_FOLDS).collect();
    let seeds: Vec<usize> = std::iter::once(0).chain(OOF_FOLDS + 1..n_heads).collect();
    let all: Vec<usize> = (0..n_heads).collect();
    let mut variants: Vec<(&str, &Vec<usize>, Combine)> = vec![
        ("main (current)", &main, Combine::Logits),
        ("main+folds (logits)", &main_folds, Combine::Logits),
        ("main+folds (probs)", &main_folds, Combine::Probs),
        ("folds only (logits)", &fold_heads, Combine::Logits),
    ];
    if n_heads > OOF_FOLDS + 1 {
        variants.push(("main x3 seeds (logits)", &seeds, Combine::Logits));
        variants.push(("main x3 + folds (logits)", &all, Combine::Logits));
    }
    println!(
        "{:<26} {:>7} {:>6} {:<32} {:>6} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6}",
        "variant",
        "pooledF1",
        "acc",
        "per-fold F1",
        "valF1",
        "T(val)",
        "ECE",
        "NLL",
        "T(v+o)",
        "ECE",
        "NLL"
    );
    for (name, members, how) in variants {
        let (mut truth, mut pred) = (Vec::new(), Vec::new());
        let mut per_fold = Vec::new();
        let (mut val_f1, mut cal) = (0.0, [(0.0, 0.0, 0.0); 2]);
        let (mut test_all, mut test_y) = (Vec::new(), Vec::new());
        let mut temps = [Vec::new(), Vec::new()];
        for f in folds {
            let pick = |part: &Vec<Vec<Vec<f32>>>| -> Vec<Vec<f32>> {
                let refs: Vec<&Vec<Vec<f32>>> = members.iter().map(|&h| &part[h]).collect();
                combine(&refs, how)
            };
            let (test, val) = (pick(&f.test), pick(&f.val));
            let p: Vec<usize> = test.iter().map(|l| argmax(l)).collect();
            per_fold.push(macro_f1(3, &f.test_labels, &p));
            truth.extend(f.test_labels.iter().copied());
            pred.extend(p);
            let vp: Vec<usize> = val.iter().map(|l| argmax(l)).collect();
            val_f1 += macro_f1(3, &f.val_labels, &vp) / folds.len() as f64;
            // Temperature on validation only, or validation + the honest out-of-fold logits.
            let t_val = fit_temperature(&val, &f.val_labels);
            let mut vo = val.clone();
            vo.extend(f.oof.iter().cloned());
            let mut vo_y = f.val_labels.clone();
            vo_y.extend(f.oof_labels.iter().copied());
            let t_vo = fit_temperature(&vo, &vo_y);
            for (j, t) in [t_val, t_vo].into_iter().enumerate() {
                temps[j].push(t);
                cal[j].0 += t as f64 / folds.len() as f64;
            }
            test_all.push(test);
            test_y.push(f.test_labels.clone());
        }
        // ECE and NLL over the pooled held-out folds, each fold at its own temperature.
        for j in 0..2 {
            let (mut ece, mut nll) = (0.0, 0.0);
            let n: usize = test_y.iter().map(|y| y.len()).sum();
            for ((l, y), t) in test_all.iter().zip(&test_y).zip(&temps[j]) {
                ece += ece_at(l, y, *t) * y.len() as f64 / n as f64;
                nll += mean_nll(l, y, *t) * y.len() as f64 / n as f64;
            }
            cal[j].1 = ece;
            cal[j].2 = nll;
        }
        println!(
            "{name:<26} {:>7.3} {:>6.3} {:<32} {:>6.3} | {:>6.2} {:>6.3} {:>6.3} | {:>6.2} {:>6.3} {:>6.3}",
            macro_f1(3, &truth, &pred),
            accuracy(&truth, &pred),
            format!("{per_fold:.3?}"),
            val_f1,
            cal[0].0,
            cal[0].1,
            cal[0].2,
            cal[1].0,
            cal[1].1,
            cal[1].2
        );
    }
}

/// Milliseconds per clip for the encoder (one view per clip) and for the heads, one clip at a
/// time: the model as trained (all its heads), and its main head alone (a copy of the
/// directory whose model.json drops the ensemble).
fn head_cost(args: &[String]) -> anyhow::Result<()> {
    use camxuc::acoustic::{model_dir, AcousticModel};
    let [dir, manifest, speakers] = args else {
        anyhow::bail!("usage: acoustic_cv --head-cost MODEL_DIR MANIFEST SPEAKERS");
    };
    let labels = LabelSet::default();
    let m = filter_speakers(
        &Manifest::load(&PathBuf::from(manifest), &labels)?,
        &[speakers.as_str()],
    )?;
    let dev = candle_core::Device::Cpu;
    let models = camxuc::catalog::models_dir();
    let dir = PathBuf::from(dir);
    let model = AcousticModel::load(&dir, &models, &dev)?;
    let single_dir = tempfile_dir()?;
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), single_dir.join(e.file_name()))?;
        }
    }
    let mut meta = model.meta.clone();
    meta.ensemble = None;
    model_dir::write_meta(&single_dir, &meta)?;
    let single = AcousticModel::load(&single_dir, &models, &dev)?;
    let mut an = ClipAnalyser::new(&FeatureConfig::default())?;
    let (mut encode_s, mut views) = (0.0, Vec::new());
    for row in &m.rows {
        let mut clip = an.analyse(&row.path)?;
        let t = Instant::now();
        views.push(model.view(&mut clip)?);
        encode_s += t.elapsed().as_secs_f64();
    }
    let n = views.len() as f64;
    let time_heads = |mm: &AcousticModel| -> anyhow::Result<f64> {
        let t = Instant::now();
        for _ in 0..3 {
            for v in &views {
                mm.logits_of_views(&[v])?;
            }
        }
        Ok(t.elapsed().as_secs_f64() * 1000.0 / (3.0 * n))
    };
    let (all_ms, one_ms) = (time_heads(&model)?, time_heads(&single)?);
    println!(
        "{} clips, one at a time: encoder (front end) {:.1} ms/clip; heads: {} heads {all_ms:.2} ms/clip, main head alone {one_ms:.2} ms/clip",
        views.len(),
        encode_s * 1000.0 / n,
        model.n_heads()
    );
    let _ = std::fs::remove_dir_all(&single_dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("acoustic_cv-single-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
