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
use camxuc::acoustic::frontend::Frontend;
use camxuc::acoustic::head::HeadConfig;
use camxuc::acoustic::head_training::{predict_logits, train_head, Example, TrainConfig, View};
use camxuc::acoustic::model::evidence_vector;
use camxuc::acoustic::temperature::mean_nll;
use camxuc::acoustic::temperature::{ece_at, fit_temperature};
use camxuc::acoustic::train::evidence_inputs;
use camxuc::clip::ClipAnalyser;
use camxuc::data::manifest::Manifest;
use camxuc::data::split::{filter_speakers, speaker_folds, speaker_split};
use camxuc::features::{Baseline, BaselineKind, FeatureConfig};
use camxuc::math::{argmax, softmax};
use camxuc::metrics::{accuracy, macro_f1};
use camxuc::{Audio, Evidence, LabelSet};
use candle_core::Tensor;
use rand::SeedableRng;

/// One clip, analysed and encoded once: (frames, raw evidence) per view, view 0 clean.
struct Encoded {
    label: usize,
    views: Vec<(Tensor, Evidence)>,
    /// Per view: mean and standard deviation of its frames over time (all frames are real:
    /// the front end encodes only the clip's own length).
    pooled: Vec<(Vec<f32>, Vec<f32>)>,
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
        let pooled = views
            .iter()
            .map(|(f, _)| probe::mean_std(f))
            .collect::<anyhow::Result<Vec<_>>>()?;
        clips.push(Encoded {
            label: labels.index_of(&row.label).unwrap_or(0),
            views,
            pooled,
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
    // Linear probes first (seconds per fold), in the same outer folds as the heads below.
    let mut probe_folds: Vec<Vec<probe::ProbeFold>> = Vec::new();
    for (k, f) in outer.iter().enumerate() {
        let t0 = Instant::now();
        let per_variant = probe::VARIANTS
            .iter()
            .map(|v| probe::outer_fold(&m, &clips, &f.train, &f.val, *v))
            .collect::<anyhow::Result<Vec<_>>>()?;
        eprintln!(
            "probes, outer fold {k} (test {}): {:.0} s",
            f.val_speakers.join(" "),
            t0.elapsed().as_secs_f64()
        );
        probe_folds.push(per_variant);
    }
    probe::report(&probe_folds);
    let out_dir = PathBuf::from(std::env::var("CV_OUT").unwrap_or("/tmp/acoustic-cv".into()));
    std::fs::create_dir_all(&out_dir)?;
    probe::save(&probe_folds, &out_dir.join("probes.json"))?;
    if std::env::var("CV_PROBES_ONLY").is_ok() {
        return Ok(());
    }
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
    save_heads(&folds, &out_dir.join("heads.json"))?;
    if folds.len() == outer.len() {
        probe::compare(&probe_folds, &folds)?;
    }
    Ok(())
}

/// Per outer fold: test labels and the main / main+folds (mean logits) test logits, for
/// re-analysis without retraining.
fn save_heads(folds: &[FoldLogits], path: &std::path::Path) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = folds
        .iter()
        .map(|f| {
            let members: Vec<&Vec<Vec<f32>>> = (0..=OOF_FOLDS).map(|h| &f.test[h]).collect();
            serde_json::json!({
                "test_labels": f.test_labels,
                "main": f.test[0],
                "main_folds": combine(&members, Combine::Logits),
                "val_labels": f.val_labels,
                "val_main": f.val[0],
                "oof": f.oof,
                "oof_labels": f.oof_labels,
            })
        })
        .collect();
    std::fs::write(path, serde_json::to_string(&rows)?)?;
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
    let inputs = evidence_inputs(&baseline);
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
    // Fold heads exactly as `camxuc train` (src/acoustic/train.rs) makes them: speaker folds of the training part.
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

/// Linear probes on pooled encoder frames: multinomial logistic regression (L2) fitted by
/// full-batch accelerated gradient descent in f64 — deterministic, no RNG at all. The weight
/// decay is chosen by speaker cross-validation inside the outer fold's training speakers
/// (lowest pooled out-of-fold NLL), the temperature on those same out-of-fold logits, then
/// the probe is refitted on all of them and scores the outer fold.
mod probe {
    use super::{argmax, Encoded, FoldLogits, OOF_FOLDS};
    use camxuc::acoustic::model::evidence_vector;
    use camxuc::acoustic::temperature::mean_nll;
    use camxuc::acoustic::temperature::{ece_at, fit_temperature};
    use camxuc::acoustic::train::evidence_inputs;
    use camxuc::data::manifest::Manifest;
    use camxuc::data::split::speaker_folds;
    use camxuc::features::{Baseline, BaselineKind};
    use camxuc::metrics::{accuracy, macro_f1, paired_macro_f1_test};
    use camxuc::Evidence;
    use candle_core::Tensor;

    const INNER_FOLDS: usize = 3;
    /// L2 weight decay on standardised inputs (objective: mean cross-entropy + λ/2 ‖W‖²).
    pub const LAMBDAS: [f64; 9] = [1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4];

    #[derive(Clone, Copy, Debug)]
    pub struct Variant {
        pub name: &'static str,
        pub std: bool,
        pub evidence: bool,
    }

    pub const VARIANTS: [Variant; 4] = [
        Variant {
            name: "probe mean",
            std: false,
            evidence: false,
        },
        Variant {
            name: "probe mean+evidence",
            std: false,
            evidence: true,
        },
        Variant {
            name: "probe mean+std",
            std: true,
            evidence: false,
        },
        Variant {
            name: "probe mean+std+evidence",
            std: true,
            evidence: true,
        },
    ];

    /// Mean and standard deviation over time of frames [T, D].
    pub fn mean_std(frames: &Tensor) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        let rows = frames.to_vec2::<f32>()?;
        let d = rows.first().map_or(0, |r| r.len());
        let n = rows.len().max(1) as f64;
        let (mut s, mut q) = (vec![0f64; d], vec![0f64; d]);
        for r in &rows {
            for (j, &v) in r.iter().enumerate() {
                s[j] += v as f64;
                q[j] += (v as f64) * (v as f64);
            }
        }
        let mean: Vec<f32> = s.iter().map(|v| (v / n) as f32).collect();
        let std: Vec<f32> = q
            .iter()
            .zip(&s)
            .map(|(q, s)| ((q / n - (s / n) * (s / n)).max(0.0)).sqrt() as f32)
            .collect();
        Ok((mean, std))
    }

    /// One variant on one outer fold.
    pub struct ProbeFold {
        pub variant: &'static str,
        pub test_logits: Vec<Vec<f32>>,
        pub test_labels: Vec<usize>,
        pub lambda: f64,
        /// Pooled inner out-of-fold NLL (T = 1) per λ of [`LAMBDAS`].
        pub inner_nll: Vec<f64>,
        pub inner_f1: Vec<f64>,
        pub temperature: f32,
    }

    /// Logistic regression weights: `w` [K × D] row-major, `b` [K].
    #[derive(Clone)]
    struct Logreg {
        w: Vec<f64>,
        b: Vec<f64>,
        d: usize,
        k: usize,
    }

    impl Logreg {
        fn zeros(d: usize, k: usize) -> Self {
            Self {
                w: vec![0.0; d * k],
                b: vec![0.0; k],
                d,
                k,
            }
        }

        fn logits(&self, x: &[f64]) -> Vec<f64> {
            (0..self.k)
                .map(|c| {
                    let w = &self.w[c * self.d..(c + 1) * self.d];
                    self.b[c] + w.iter().zip(x).map(|(a, b)| a * b).sum::<f64>()
                })
                .collect()
        }
    }

    /// Objective and gradient (same layout as the weights) of mean CE + λ/2 ‖W‖².
    fn objective(m: &Logreg, x: &[f64], y: &[usize], lambda: f64) -> (f64, Logreg) {
        let (d, k) = (m.d, m.k);
        let n = y.len();
        let mut g = Logreg::zeros(d, k);
        let mut loss = 0.0;
        for (i, &yi) in y.iter().enumerate() {
            let xi = &x[i * d..(i + 1) * d];
            let z = m.logits(xi);
            let mx = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let e: Vec<f64> = z.iter().map(|v| (v - mx).exp()).collect();
            let s: f64 = e.iter().sum();
            loss += s.ln() + mx - z[yi];
            for (c, ec) in e.iter().enumerate() {
                let r = (ec / s - if c == yi { 1.0 } else { 0.0 }) / n as f64;
                g.b[c] += r;
                for (gw, xv) in g.w[c * d..(c + 1) * d].iter_mut().zip(xi) {
                    *gw += r * xv;
                }
            }
        }
        let mut reg = 0.0;
        for (gw, w) in g.w.iter_mut().zip(&m.w) {
            *gw += lambda * w;
            reg += w * w;
        }
        (loss / n as f64 + 0.5 * lambda * reg, g)
    }

    /// Largest eigenvalue of [X 1]ᵀ[X 1] / n by power iteration (for the step size).
    fn max_eigen(x: &[f64], n: usize, d: usize) -> f64 {
        let mut v = vec![1.0 / ((d + 1) as f64).sqrt(); d + 1];
        let mut lam = 1.0;
        for _ in 0..50 {
            let mut out = vec![0.0; d + 1];
            for i in 0..n {
                let xi = &x[i * d..(i + 1) * d];
                let u = v[d] + xi.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
                for (o, a) in out.iter_mut().zip(xi) {
                    *o += u * a / n as f64;
                }
                out[d] += u / n as f64;
            }
            lam = out.iter().map(|a| a * a).sum::<f64>().sqrt();
            if lam <= 0.0 {
                return 1.0;
            }
            v = out.iter().map(|a| a / lam).collect();
        }
        lam
    }

    /// Accelerated gradient descent (Nesterov, with restart when the objective rises), step
    /// 1/L from Böhning's bound on the softmax Hessian: L = λmax/2 + λ.
    fn fit(
        x: &[f64],
        y: &[usize],
        d: usize,
        k: usize,
        lambda: f64,
        init: Option<&Logreg>,
        eig: f64,
    ) -> Logreg {
        let step = 1.0 / (0.5 * eig + lambda);
        let mut theta = init.cloned().unwrap_or_else(|| Logreg::zeros(d, k));
        let mut prev = theta.clone();
        let mut t = 1.0f64;
        let mut last = f64::INFINITY;
        for _ in 0..3000 {
            let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
            let beta = (t - 1.0) / t_next;
            let mut look = theta.clone();
            for (l, (a, p)) in look.w.iter_mut().zip(theta.w.iter().zip(&prev.w)) {
                *l = a + beta * (a - p);
            }
            for (l, (a, p)) in look.b.iter_mut().zip(theta.b.iter().zip(&prev.b)) {
                *l = a + beta * (a - p);
            }
            let (f, g) = objective(&look, x, y, lambda);
            let gmax = g.w.iter().chain(&g.b).fold(0.0f64, |a, b| a.max(b.abs()));
            if gmax < 1e-6 {
                return look;
            }
            prev = theta;
            theta = look;
            for (w, gw) in theta.w.iter_mut().zip(&g.w) {
                *w -= step * gw;
            }
            for (b, gb) in theta.b.iter_mut().zip(&g.b) {
                *b -= step * gb;
            }
            if f > last {
                t = 1.0; // restart the momentum
                prev = theta.clone();
            } else {
                t = t_next;
            }
            last = f;
        }
        theta
    }

    /// Rows of inputs for `rows` (all views, or the clean one only).
    fn features(
        clips: &[Encoded],
        rows: &[usize],
        all_views: bool,
        v: Variant,
        ev: &(Baseline, Vec<String>),
    ) -> (Vec<Vec<f64>>, Vec<usize>) {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for &i in rows {
            let c = &clips[i];
            let n = if all_views { c.views.len() } else { 1 };
            for j in 0..n {
                let (mean, std) = &c.pooled[j];
                let mut x: Vec<f64> = mean.iter().map(|&a| a as f64).collect();
                if v.std {
                    x.extend(std.iter().map(|&a| a as f64));
                }
                if v.evidence {
                    let mut e: Evidence = c.views[j].1.clone();
                    x.extend(
                        evidence_vector(&ev.0, &ev.1, &mut e)
                            .iter()
                            .map(|&a| a as f64),
                    );
                }
                xs.push(x);
                ys.push(c.label);
            }
        }
        (xs, ys)
    }

    /// Standardise with the fitting rows' statistics; returns the flat fitted matrix and a
    /// function of the statistics for other rows.
    struct Scaler {
        mean: Vec<f64>,
        inv: Vec<f64>,
    }

    impl Scaler {
        fn fit(xs: &[Vec<f64>]) -> Self {
            let d = xs[0].len();
            let n = xs.len() as f64;
            let mut mean = vec![0.0; d];
            for x in xs {
                for (m, v) in mean.iter_mut().zip(x) {
                    *m += v / n;
                }
            }
            let mut var = vec![0.0; d];
            for x in xs {
                for ((s, v), m) in var.iter_mut().zip(x).zip(&mean) {
                    *s += (v - m) * (v - m) / n;
                }
            }
            let inv = var.iter().map(|v| 1.0 / v.sqrt().max(1e-6)).collect();
            Self { mean, inv }
        }

        fn apply(&self, xs: &[Vec<f64>]) -> Vec<f64> {
            xs.iter()
                .flat_map(|x| {
                    x.iter()
                        .zip(&self.mean)
                        .zip(&self.inv)
                        .map(|((v, m), s)| (v - m) * s)
                })
                .collect()
        }
    }

    /// Fit at each λ (warm-started from the larger one) on `fit_rows`, logits of `pred_rows`'
    /// clean views per λ.
    fn path(
        clips: &[Encoded],
        fit_rows: &[usize],
        pred_rows: &[usize],
        v: Variant,
        ev: &(Baseline, Vec<String>),
        lambdas: &[f64],
    ) -> Vec<Vec<Vec<f32>>> {
        let (xs, ys) = features(clips, fit_rows, true, v, ev);
        let scaler = Scaler::fit(&xs);
        let x = scaler.apply(&xs);
        let d = xs[0].len();
        let (ps, _) = features(clips, pred_rows, false, v, ev);
        let xp = scaler.apply(&ps);
        let eig = max_eigen(&x, ys.len(), d);
        let mut model: Option<Logreg> = None;
        lambdas
            .iter()
            .map(|&lam| {
                let m = fit(&x, &ys, d, 3, lam, model.as_ref(), eig);
                let out = (0..ps.len())
                    .map(|i| {
                        m.logits(&xp[i * d..(i + 1) * d])
                            .iter()
                            .map(|&a| a as f32)
                            .collect()
                    })
                    .collect();
                model = Some(m);
                out
            })
            .collect()
    }

    pub fn outer_fold(
        m: &Manifest,
        clips: &[Encoded],
        inner: &[usize],
        test: &[usize],
        v: Variant,
    ) -> anyhow::Result<ProbeFold> {
        // Evidence baseline from the inner speakers' clean clips, as `train` fits it.
        let evs: Vec<Evidence> = inner.iter().map(|&i| clips[i].views[0].1.clone()).collect();
        let baseline = Baseline::fit(BaselineKind::Corpus("cv".into()), &evs);
        let inputs = evidence_inputs(&baseline);
        let ev = (baseline, inputs);
        let inner_m = m.subset(inner);
        let mut oof: Vec<Vec<Vec<f32>>> = vec![Vec::new(); LAMBDAS.len()];
        let mut oof_y = Vec::new();
        for f in speaker_folds(&inner_m, INNER_FOLDS, 1)? {
            let fit_rows: Vec<usize> = f.train.iter().map(|&i| inner[i]).collect();
            let held: Vec<usize> = f.val.iter().map(|&i| inner[i]).collect();
            for (l, logits) in path(clips, &fit_rows, &held, v, &ev, &LAMBDAS)
                .into_iter()
                .enumerate()
            {
                oof[l].extend(logits);
            }
            oof_y.extend(held.iter().map(|&i| clips[i].label));
        }
        let inner_nll: Vec<f64> = oof.iter().map(|l| mean_nll(l, &oof_y, 1.0)).collect();
        let inner_f1: Vec<f64> = oof
            .iter()
            .map(|l| macro_f1(3, &oof_y, &l.iter().map(|r| argmax(r)).collect::<Vec<_>>()))
            .collect();
        let best = (0..LAMBDAS.len())
            .min_by(|&a, &b| inner_nll[a].total_cmp(&inner_nll[b]))
            .unwrap_or(0);
        let temperature = fit_temperature(&oof[best], &oof_y);
        // Refit on all inner speakers along the path down to the chosen λ (same warm starts).
        let mut test_path = path(clips, inner, test, v, &ev, &LAMBDAS[..=best]);
        Ok(ProbeFold {
            variant: v.name,
            test_logits: test_path.pop().unwrap_or_default(),
            test_labels: test.iter().map(|&i| clips[i].label).collect(),
            lambda: LAMBDAS[best],
            inner_nll,
            inner_f1,
            temperature,
        })
    }

    /// Pooled macro-F1, accuracy, per-fold F1, and ECE / NLL at T = 1 and at each fold's
    /// temperature, over the held-out outer folds.
    pub fn report(folds: &[Vec<ProbeFold>]) {
        println!(
            "{:<26} {:>8} {:>6} {:<32} {:<30} | {:>6} {:>6} {:>6} | {:>6} {:>6}",
            "variant",
            "pooledF1",
            "acc",
            "per-fold F1",
            "λ per fold",
            "T",
            "ECE",
            "NLL",
            "ECE@1",
            "NLL@1"
        );
        for v in 0..folds[0].len() {
            let (mut truth, mut pred, mut per_fold, mut lams) = (vec![], vec![], vec![], vec![]);
            let (mut ece, mut nll, mut ece1, mut nll1, mut tmean) = (0.0, 0.0, 0.0, 0.0, 0.0);
            let n: usize = folds.iter().map(|f| f[v].test_labels.len()).sum();
            for f in folds {
                let p = &f[v];
                let y = &p.test_labels;
                let pr: Vec<usize> = p.test_logits.iter().map(|l| argmax(l)).collect();
                per_fold.push(macro_f1(3, y, &pr));
                lams.push(p.lambda);
                truth.extend(y.iter().copied());
                pred.extend(pr);
                let w = y.len() as f64 / n as f64;
                ece += ece_at(&p.test_logits, y, p.temperature) * w;
                nll += mean_nll(&p.test_logits, y, p.temperature) * w;
                ece1 += ece_at(&p.test_logits, y, 1.0) * w;
                nll1 += mean_nll(&p.test_logits, y, 1.0) * w;
                tmean += p.temperature as f64 / folds.len() as f64;
            }
            println!(
                "{:<26} {:>8.3} {:>6.3} {:<32} {:<30} | {:>6.2} {:>6.3} {:>6.3} | {:>6.3} {:>6.3}",
                folds[0][v].variant,
                macro_f1(3, &truth, &pred),
                accuracy(&truth, &pred),
                format!("{per_fold:.3?}"),
                format!("{lams:?}"),
                tmean,
                ece,
                nll,
                ece1,
                nll1
            );
        }
        for (k, f) in folds.iter().enumerate() {
            for p in f {
                println!(
                    "  fold {k} {:<26} inner NLL per λ {:.3?}  inner F1 {:.3?}",
                    p.variant, p.inner_nll, p.inner_f1
                );
            }
        }
    }

    pub fn save(folds: &[Vec<ProbeFold>], path: &std::path::Path) -> anyhow::Result<()> {
        let rows: Vec<serde_json::Value> = folds
            .iter()
            .map(|f| {
                serde_json::json!(f
                    .iter()
                    .map(|p| serde_json::json!({
                        "variant": p.variant, "lambda": p.lambda, "temperature": p.temperature,
                        "inner_nll": p.inner_nll, "inner_f1": p.inner_f1,
                        "test_labels": p.test_labels, "test_logits": p.test_logits,
                    }))
                    .collect::<Vec<_>>())
            })
            .collect();
        std::fs::write(path, serde_json::to_string(&rows)?)?;
        Ok(())
    }

    /// Paired bootstrap (same 288 clips, 10 000 resamples) of each probe against `main` and
    /// `main+folds (logits)`.
    pub fn compare(probes: &[Vec<ProbeFold>], heads: &[FoldLogits]) -> anyhow::Result<()> {
        let mut truth = Vec::new();
        let (mut main, mut ens) = (Vec::new(), Vec::new());
        for h in heads {
            truth.extend(h.test_labels.iter().copied());
            main.extend(h.test[0].iter().map(|l| argmax(l)));
            let members: Vec<&Vec<Vec<f32>>> = (0..=OOF_FOLDS).map(|i| &h.test[i]).collect();
            ens.extend(
                super::combine(&members, super::Combine::Logits)
                    .iter()
                    .map(|l| argmax(l)),
            );
        }
        println!("paired bootstrap of macro-F1 (probe − head), 288 clips, 10000 resamples:");
        for v in 0..probes[0].len() {
            let mut pred = Vec::new();
            for (f, h) in probes.iter().zip(heads) {
                anyhow::ensure!(f[v].test_labels == h.test_labels, "fold clips differ");
                pred.extend(f[v].test_logits.iter().map(|l| argmax(l)));
            }
            for (name, base) in [("main", &main), ("main+folds", &ens)] {
                let (d, p) = paired_macro_f1_test(3, &truth, base, &pred, 10_000, 7);
                println!(
                    "  {:<26} vs {name:<11} {:+.3} [{:+.3}, {:+.3}]  P(better) {:.3}",
                    probes[0][v].variant, d.difference, d.ci95[0], d.ci95[1], p
                );
            }
        }
        Ok(())
    }
}
