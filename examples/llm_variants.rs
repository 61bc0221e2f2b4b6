//! Does the LLM reasoner add accuracy? Each reasoner variant on the validation clips of a
//! trained model directory, without re-running audio: `train_evidence.jsonl` holds every
//! clip's evidence, label, speaker and (validation, and out-of-fold training when present)
//! held-out acoustic probabilities.
//!
//! ```sh
//! cargo run --example llm_variants -- /tmp/m-rav [--models smollm2-135m,qwen2.5-coder-0.5b]
//!     [--max-clips N] [--out DIR] [--threads N] [--routed-only]
//! ```
//!
//! For each model the LLM is run once per clip with every label order (6) and no built-in
//! calibration; the per-order log-likelihoods, the evidence-free scores and the evidence
//! embedding are cached in `DIR/scores-<model>.json`, and every variant is computed from
//! them. Anything fitted (batch-calibration means, the fusion weight, the encoder head) is
//! fitted on training-side clips only: out-of-fold training clips when the file has their
//! probabilities, else leave-one-speaker-out within validation (fit on the other validation
//! speakers, apply to the held-out one). Output: a table on stdout and
//! `DIR/llm_variants.{json,md}`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use camxuc::acoustic::model_dir::read_routing;
use camxuc::catalog::{models_dir, ModelSpec};
use camxuc::llm::{LlmReasoner, LoadOptions, ReasonerOptions, RuleText};
use camxuc::math::{argmax, log_softmax};
use camxuc::metrics::{accuracy_on, bootstrap_ci, macro_f1};
use camxuc::pipeline::decide::active_rules_for;
use camxuc::pipeline::Router;

use camxuc::{Case, LabelSet};
use serde::{Deserialize, Serialize};

mod common;
use common::Clip;

/// What one LLM gives for one clip (cached on disk).
#[derive(Serialize, Deserialize, Clone)]
struct ClipScores {
    /// Log-likelihood per order (rows, in `orders` order) and label.
    loglik: Vec<Vec<f32>>,
    embedding: Vec<f32>,
    evidence_ms: f64,
    order_ms: Vec<f64>,
}

#[derive(Serialize, Deserialize, Default)]
struct ModelScores {
    model: String,
    orders: Vec<Vec<usize>>,
    /// Evidence-free log-likelihoods per null prompt, order, label.
    null: Vec<Vec<Vec<f32>>>,
    clips: BTreeMap<String, ClipScores>,
}

#[derive(Serialize)]
struct Row {
    variant: String,
    routed_n: usize,
    routed_accuracy: f64,
    routed_accuracy_ci95: [f64; 2],
    macro_f1_all_val: f64,
    seconds_per_routed_clip: f64,
    fitted_on: String,
}

struct Args {
    model_dir: PathBuf,
    models: Vec<String>,
    max_clips: Option<usize>,
    out: PathBuf,
    threads: usize,
    /// Score only the routed validation clips (slow models); fitting then uses the other
    /// speakers' routed clips.
    routed_only: bool,
}

const USAGE: &str =
    "llm_variants MODEL_DIR [--models A,B] [--max-clips N] [--out DIR] [--threads N] [--routed-only]";

fn parse_args() -> Result<Args> {
    let it = common::Args::from_env();
    let a = Args {
        models: it.value::<String>("--models")?.map_or_else(
            || vec!["smollm2-135m".into()],
            |m| m.split(',').map(str::to_string).collect(),
        ),
        max_clips: it.value("--max-clips")?,
        out: it
            .value::<String>("--out")?
            .map_or_else(|| PathBuf::from("/tmp/llm_variants"), PathBuf::from),
        threads: it.value("--threads")?.unwrap_or(2),
        routed_only: it.flag("--routed-only"),
        model_dir: it
            .positional()
            .first()
            .map(PathBuf::from)
            .with_context(|| format!("usage: {USAGE}"))?,
    };
    it.finish(USAGE)?;
    Ok(a)
}

/// Training-side clips for validation clip `c`: the out-of-fold training clips when there
/// are any, else the other validation speakers' clips.
fn fit_pool<'a>(oof_train: bool, c: &Clip, pool: &[&'a Clip]) -> Vec<&'a Clip> {
    pool.iter()
        .copied()
        .filter(|o| {
            if oof_train {
                !o.val
            } else {
                o.val && o.speaker != c.speaker
            }
        })
        .collect()
}

/// Runs (or loads from the cache) one LLM's scores for `clips`.
fn score_model(
    name: &str,
    clips: &[&Clip],
    labels: &LabelSet,
    rules: &[RuleText],
    args: &Args,
) -> Result<ModelScores> {
    // A PATH or hf: spec names folders: keep only its last part, made file-name safe.
    let stem: String = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cache = args.out.join(format!("scores-{stem}.json"));
    let mut scores: ModelScores = match std::fs::read(&cache) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => ModelScores::default(),
    };
    let todo: Vec<&&Clip> = clips
        .iter()
        .filter(|c| !scores.clips.contains_key(&c.path))
        .collect();
    if todo.is_empty() && !scores.orders.is_empty() {
        eprintln!(
            "{name}: all {} clips cached in {}",
            clips.len(),
            cache.display()
        );
        return Ok(scores);
    }
    let path = ModelSpec::parse(name)?
        .resolve(&models_dir())?
        .with_context(|| format!("model {name} is not installed"))?;
    let t = Instant::now();
    let options = ReasonerOptions {
        label_orders: 6,
        calibrate: false,
        rationale: false,
        embed_evidence: true,
        ..ReasonerOptions::default()
    };
    let load = LoadOptions {
        threads: args.threads,
        ..LoadOptions::default()
    };
    let mut r = LlmReasoner::from_path(&path, labels, rules, options, &load)?;
    eprintln!(
        "{name}: loaded in {:.1} s, prefix {} tokens",
        t.elapsed().as_secs_f64(),
        r.prefix_cost().0
    );
    scores.model = name.into();
    scores.orders = r.orders().to_vec();
    scores.null = r
        .prompt()
        .null_evidences()
        .iter()
        .map(|text| r.score_text(text, true).map(|s| s.loglik))
        .collect::<Result<_, _>>()?;
    let n = todo.len();
    for (i, c) in todo.into_iter().enumerate() {
        let case = Case {
            unfamiliarity: None,
            evidence: &c.evidence,
            acoustic: &c.acoustic,
            fired: &c.fired,
            transcript: None,
        };
        let s = r.score(&case, true)?;
        scores.clips.insert(
            c.path.clone(),
            ClipScores {
                loglik: s.loglik,
                embedding: s.embedding,
                evidence_ms: s.evidence_ms,
                order_ms: s.order_ms,
            },
        );
        if (i + 1) % 10 == 0 || i + 1 == n {
            eprintln!(
                "{name}: {}/{n} clips, {:.0} s",
                i + 1,
                t.elapsed().as_secs_f64()
            );
            std::fs::write(&cache, serde_json::to_vec(&scores)?)?;
        }
    }
    Ok(scores)
}

/// How a variant turns a clip's cached scores into label logits, given the clips it may fit
/// on.
type Decide<'a> = dyn Fn(&Clip, &[&Clip]) -> Vec<f64> + 'a;

/// Mean over the first `k` orders of loglik minus calibration (per order, label).
fn debiased(s: &ClipScores, cal: &[Vec<f32>], k: usize) -> Vec<f64> {
    let n = s.loglik[0].len();
    (0..n)
        .map(|l| {
            (0..k)
                .map(|o| f64::from(s.loglik[o][l] - cal.get(o).map_or(0.0, |c| c[l])))
                .sum::<f64>()
                / k as f64
        })
        .collect()
}

fn mean_null(null: &[Vec<Vec<f32>>], prompts: usize) -> Vec<Vec<f32>> {
    let k = prompts.min(null.len()).max(1);
    let mut out = vec![vec![0.0; null[0][0].len()]; null[0].len()];
    for p in &null[..k] {
        for (o, row) in p.iter().enumerate() {
            for (l, v) in row.iter().enumerate() {
                out[o][l] += v / k as f32;
            }
        }
    }
    out
}

/// Weight `w` of `extra` added to the rule-vote logits, fitted by log-loss on `fit`.
fn fit_weight(fit: &[&Clip], extra: &dyn Fn(&Clip) -> Vec<f64>) -> f64 {
    let grid = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0];
    let loss = |w: f64| -> f64 {
        fit.iter()
            .map(|c| {
                let e = extra(c);
                let z: Vec<f64> = c
                    .vote_logits
                    .iter()
                    .zip(&e)
                    .map(|(a, b)| a + w * b)
                    .collect();
                -log_softmax(&z)[c.truth]
            })
            .sum::<f64>()
    };
    let mut best = (0.0, f64::INFINITY);
    for w in grid {
        let l = loss(w);
        if l < best.1 - 1e-9 {
            best = (w, l);
        }
    }
    best.0
}

/// Multinomial logistic regression on standardised features, L2-penalised, batch gradient
/// descent (small fitting sets: a few dozen clips).
fn fit_head(x: &[Vec<f64>], y: &[usize], n_labels: usize, l2: f64) -> impl Fn(&[f64]) -> Vec<f64> {
    let d = x.first().map_or(0, Vec::len);
    let n = x.len().max(1) as f64;
    let mut mean = vec![0.0; d];
    let mut sd = vec![0.0; d];
    for r in x {
        for j in 0..d {
            mean[j] += r[j] / n;
        }
    }
    for r in x {
        for j in 0..d {
            sd[j] += (r[j] - mean[j]).powi(2) / n;
        }
    }
    let sd: Vec<f64> = sd.iter().map(|v| v.sqrt().max(1e-6)).collect();
    let xs: Vec<Vec<f64>> = x
        .iter()
        .map(|r| (0..d).map(|j| (r[j] - mean[j]) / sd[j]).collect())
        .collect();
    let mut w = vec![vec![0.0; d]; n_labels];
    let mut b = vec![0.0; n_labels];
    let lr = 0.1;
    for _ in 0..300 {
        let mut gw = vec![vec![0.0; d]; n_labels];
        let mut gb = vec![0.0; n_labels];
        for (r, &t) in xs.iter().zip(y) {
            let z: Vec<f64> = (0..n_labels)
                .map(|k| b[k] + w[k].iter().zip(r).map(|(a, c)| a * c).sum::<f64>())
                .collect();
            let p: Vec<f64> = log_softmax(&z).iter().map(|v| v.exp()).collect();
            for k in 0..n_labels {
                let g = p[k] - if k == t { 1.0 } else { 0.0 };
                gb[k] += g / n;
                for j in 0..d {
                    gw[k][j] += g * r[j] / n;
                }
            }
        }
        for k in 0..n_labels {
            b[k] -= lr * gb[k];
            for j in 0..d {
                w[k][j] -= lr * (gw[k][j] + l2 * w[k][j]);
            }
        }
    }
    move |r: &[f64]| {
        let r: Vec<f64> = (0..d).map(|j| (r[j] - mean[j]) / sd[j]).collect();
        let z: Vec<f64> = (0..n_labels)
            .map(|k| b[k] + w[k].iter().zip(&r).map(|(a, c)| a * c).sum::<f64>())
            .collect();
        log_softmax(&z)
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.out)?;
    let routing = read_routing(&args.model_dir)?;
    let router = Router::from_config(&routing);
    let rules = active_rules_for(&args.model_dir, &LabelSet::default(), None)?;
    let labels = rules.labels().clone();
    let rule_texts = RuleText::enabled(&rules);
    let mut clips = common::load_clips(&args.model_dir, &labels, &rules, &router)?;
    let oof_train = clips.iter().any(|c| !c.val);
    if let Some(cap) = args.max_clips {
        // Keep every routed validation clip first, then fill up to the cap.
        clips.sort_by_key(|c| (!c.val, !c.routed));
        clips.truncate(cap);
    }
    let val: Vec<&Clip> = clips.iter().filter(|c| c.val).collect();
    let routed: Vec<&Clip> = val.iter().copied().filter(|c| c.routed).collect();
    let fitting_desc = if oof_train {
        format!(
            "out-of-fold training clips ({})",
            clips.iter().filter(|c| !c.val).count()
        )
    } else {
        "leave-one-speaker-out within validation".to_string()
    };
    eprintln!(
        "{} validation clips, {} routed (threshold {:.3}, margin {:.3}); fitting on {fitting_desc}",
        val.len(),
        routed.len(),
        router.threshold,
        router.margin
    );
    // Training-side clips for a validation clip: OOF training clips, else the other
    // validation speakers.

    let mut rows: Vec<Row> = Vec::new();
    let mut measure = |name: &str, secs: f64, fitted: &str, decide: &Decide| {
        let all: Vec<&Clip> = clips.iter().collect();
        let pred: Vec<usize> = val
            .iter()
            .map(|c| {
                if c.routed {
                    argmax(&decide(c, &all))
                } else {
                    c.acoustic.argmax().0
                }
            })
            .collect();
        let truth: Vec<usize> = val.iter().map(|c| c.truth).collect();
        let ix: Vec<usize> = (0..val.len()).filter(|&i| val[i].routed).collect();
        let acc = accuracy_on(&truth, &pred, &ix);
        let ci = bootstrap_ci(ix.len(), 2000, 7, |b| {
            let sub: Vec<usize> = b.iter().map(|&k| ix[k]).collect();
            accuracy_on(&truth, &pred, &sub)
        });
        let f1 = macro_f1(labels.len(), &truth, &pred);
        println!(
            "{name:<58} routed acc {acc:.3} [{:.3}, {:.3}]  macro-F1 {f1:.3}  {secs:.2} s/clip",
            ci[0], ci[1]
        );
        rows.push(Row {
            variant: name.into(),
            routed_n: ix.len(),
            routed_accuracy: acc,
            routed_accuracy_ci95: ci,
            macro_f1_all_val: f1,
            seconds_per_routed_clip: secs,
            fitted_on: fitted.into(),
        });
    };

    measure("acoustic model alone", 0.0, "-", &|c, _| {
        c.acoustic.values.iter().map(|&p| f64::from(p)).collect()
    });
    measure("rule vote (non-LLM baseline)", 0.0, "-", &|c, _| {
        c.vote_logits.clone()
    });

    // LLM models: only the routed clips (and the fitting pool) need scores.
    let need: Vec<&Clip> = clips
        .iter()
        .filter(|c| c.routed || (!args.routed_only && (!c.val || !oof_train)))
        .collect();
    for name in &args.models {
        let scores = match score_model(name, &need, &labels, &rule_texts, &args) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{name}: skipped: {e:#}");
                continue;
            }
        };
        let sc = |c: &Clip| scores.clips.get(&c.path);
        let secs = |k: usize| -> f64 {
            let t: Vec<f64> = routed
                .iter()
                .filter_map(|c| sc(c))
                .map(|s| s.evidence_ms + s.order_ms.iter().take(k).sum::<f64>())
                .collect();
            t.iter().sum::<f64>() / t.len().max(1) as f64 / 1e3
        };
        let null1 = mean_null(&scores.null, 1);
        let null3 = mean_null(&scores.null, 3);
        let zero = |c: &Clip| vec![0.0; c.vote_logits.len()];
        let raw = |c: &Clip| sc(c).map_or_else(|| zero(c), |s| debiased(s, &[], 1));
        let current = |c: &Clip| sc(c).map_or_else(|| zero(c), |s| debiased(s, &null1, 3));
        let deb = |c: &Clip| sc(c).map_or_else(|| zero(c), |s| debiased(s, &null3, 6));
        let perms_only = |c: &Clip| sc(c).map_or_else(|| zero(c), |s| debiased(s, &[], 6));
        measure(
            &format!("{name}: a. raw (1 order, no calibration)"),
            secs(1),
            "-",
            &|c, _| raw(c),
        );
        measure(
            &format!("{name}: a. shipped default (3 rotations, 1-prompt calibration)"),
            secs(3),
            "-",
            &|c, _| current(c),
        );
        measure(
            &format!("{name}: b. 6 orders, no calibration"),
            secs(6),
            "-",
            &|c, _| perms_only(c),
        );
        measure(
            &format!("{name}: b. debiased (6 orders, 3-prompt calibration)"),
            secs(6),
            "-",
            &|c, _| deb(c),
        );
        // Batch calibration: subtract the mean debiased score over training-side clips
        // (label-free), so the label prior on real evidence is flat.
        let batch = |c: &Clip, pool: &[&Clip]| -> Vec<f64> {
            let fit: Vec<&Clip> = fit_pool(oof_train, c, pool)
                .into_iter()
                .filter(|o| sc(o).is_some())
                .collect();
            let mut mean = vec![0.0; c.vote_logits.len()];
            for o in &fit {
                for (m, v) in mean.iter_mut().zip(perms_only(o)) {
                    *m += v / fit.len().max(1) as f64;
                }
            }
            perms_only(c)
                .iter()
                .zip(&mean)
                .map(|(a, b)| a - b)
                .collect()
        };
        measure(
            &format!("{name}: b. 6 orders + batch calibration"),
            secs(6),
            &fitting_desc,
            &batch,
        );
        // Fusion: rule-vote logits + w · debiased LLM score, w fitted by log-loss.
        let mut weights = Vec::new();
        let fused = |c: &Clip, pool: &[&Clip]| -> Vec<f64> {
            let fit: Vec<&Clip> = fit_pool(oof_train, c, pool)
                .into_iter()
                .filter(|o| sc(o).is_some())
                .collect();
            let w = fit_weight(&fit, &|o| batch(o, pool));
            let e = batch(c, pool);
            c.vote_logits
                .iter()
                .zip(&e)
                .map(|(a, b)| a + w * b)
                .collect()
        };
        for sp in routed
            .iter()
            .map(|c| c.speaker.clone())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if let Some(c) = routed.iter().find(|c| c.speaker == sp) {
                let all: Vec<&Clip> = clips.iter().collect();
                let fit: Vec<&Clip> = fit_pool(oof_train, c, &all)
                    .into_iter()
                    .filter(|o| sc(o).is_some())
                    .collect();
                weights.push(format!("{sp}: w={}", fit_weight(&fit, &|o| batch(o, &all))));
            }
        }
        eprintln!(
            "{name}: fusion weights held-out fold -> {}",
            weights.join(", ")
        );
        measure(
            &format!("{name}: c. fusion rule vote + w·LLM (batch-calibrated)"),
            secs(6),
            &format!("{fitting_desc}; {}", weights.join(", ")),
            &fused,
        );
        // Encoder: logistic head on the mean hidden state of the evidence tokens.
        let head = |c: &Clip, pool: &[&Clip]| -> Vec<f64> {
            let fit: Vec<&Clip> = fit_pool(oof_train, c, pool)
                .into_iter()
                .filter(|o| sc(o).is_some_and(|s| !s.embedding.is_empty()))
                .collect();
            let (Some(s), false) = (sc(c), fit.is_empty()) else {
                return zero(c);
            };
            let x: Vec<Vec<f64>> = fit
                .iter()
                .filter_map(|o| sc(o))
                .map(|s| s.embedding.iter().map(|&v| f64::from(v)).collect())
                .collect();
            let y: Vec<usize> = fit.iter().map(|o| o.truth).collect();
            let h = fit_head(&x, &y, labels.len(), 0.05);
            let e: Vec<f64> = s.embedding.iter().map(|&v| f64::from(v)).collect();
            h(&e)
        };
        measure(
            &format!("{name}: e. encoder (mean hidden state) + logistic head"),
            secs(0),
            &fitting_desc,
            &head,
        );
        measure(
            &format!("{name}: e. rule vote + encoder head (log-probs added)"),
            secs(0),
            &fitting_desc,
            &|c, pool| {
                let h = head(c, pool);
                c.vote_logits.iter().zip(&h).map(|(a, b)| a + b).collect()
            },
        );
    }

    let json = args.out.join("llm_variants.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&rows)?)?;
    let md = args.out.join("llm_variants.md");
    let mut f = std::fs::File::create(&md)?;
    writeln!(
        f,
        "| variant | routed-clip accuracy [95 % CI] (n) | macro-F1, all val clips | s per routed clip | fitted on |\n|---|---|---|---|---|"
    )?;
    for r in &rows {
        writeln!(
            f,
            "| {} | {:.3} [{:.3}, {:.3}] ({}) | {:.3} | {:.2} | {} |",
            r.variant,
            r.routed_accuracy,
            r.routed_accuracy_ci95[0],
            r.routed_accuracy_ci95[1],
            r.routed_n,
            r.macro_f1_all_val,
            r.seconds_per_routed_clip,
            r.fitted_on
        )?;
    }
    eprintln!("wrote {} and {}", json.display(), md.display());
    Ok(())
}
