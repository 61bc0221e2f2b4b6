//! Does LoRA task adaptation make the small LLM a useful reasoner for routed clips?
//!
//! ```sh
//! cargo run --release --example llm_lora -- MODEL_DIR [--gguf PATH] [--out DIR]
//!     [--folds 4] [--top-layers 4] [--rank 8] [--alpha 16] [--targets qv] [--epochs 4]
//!     [--lr 5e-4] [--batch 8] [--max-dev 5] [--train-on all|routed] [--max-clips N]
//! ```
//!
//! Every clip of `MODEL_DIR/train_evidence.jsonl` that has held-out acoustic probabilities
//! (validation, and out-of-fold training clips) is used. Speaker folds (speakers in sorted
//! order, speaker i in fold i mod F): adapters are trained on the other folds' clips and
//! tested on the held-out fold's ROUTED clips (the model's routing.json). Compared on the same
//! clips: the acoustic model, the rule vote, and the compact prompt without adapters
//! (zero-shot). Output: a table on stdout and `DIR/llm_lora.{json,md}`, adapters per fold in
//! `DIR/fold-N.safetensors`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use camxuc::acoustic::model_dir::read_routing;
use camxuc::catalog::{models_dir, ModelSpec};
use camxuc::llm::lora::{CachedPrompt, LoraConfig, LoraTarget, LoraTask, TrainOptions};
use camxuc::llm::{GgufFile, RuleText};
use camxuc::math::argmax;
use camxuc::metrics::{accuracy_on, bootstrap_ci, macro_f1};
use camxuc::pipeline::decide::active_rules_for;
use camxuc::pipeline::Router;

use camxuc::{Case, LabelSet};
use serde::Serialize;

mod common;
use common::Clip;

#[derive(Serialize)]
struct Row {
    variant: String,
    routed_n: usize,
    routed_accuracy: f64,
    routed_accuracy_ci95: [f64; 2],
    macro_f1_all: f64,
    seconds_per_routed_clip: f64,
    train_seconds: f64,
}

struct Args {
    model_dir: PathBuf,
    gguf: Option<PathBuf>,
    out: PathBuf,
    folds: usize,
    config: LoraConfig,
    train: TrainOptions,
    max_dev: usize,
    routed_only_training: bool,
    max_clips: Option<usize>,
}

const USAGE: &str = "llm_lora MODEL_DIR [--gguf F] [--out DIR] [--folds N] [--top-layers N] \
[--rank N] [--alpha X] [--seed N] [--targets qkvo] [--epochs N] [--lr X] [--batch N] [--max-dev N] \
[--train-on all|routed] [--max-clips N]";

fn parse_args() -> Result<Args> {
    let it = common::Args::from_env();
    let mut config = LoraConfig::default();
    let mut train = TrainOptions::default();
    config.top_layers = it.value("--top-layers")?.unwrap_or(config.top_layers);
    config.rank = it.value("--rank")?.unwrap_or(config.rank);
    config.alpha = it.value("--alpha")?.unwrap_or(config.alpha);
    config.seed = it.value("--seed")?.unwrap_or(config.seed);
    if let Some(t) = it.value::<String>("--targets")? {
        config.targets = t
            .chars()
            .map(|c| match c {
                'q' => Ok(LoraTarget::Q),
                'k' => Ok(LoraTarget::K),
                'v' => Ok(LoraTarget::V),
                'o' => Ok(LoraTarget::O),
                _ => bail!("--targets: letters of qkvo"),
            })
            .collect::<Result<_>>()?;
    }
    train.epochs = it.value("--epochs")?.unwrap_or(train.epochs);
    train.learning_rate = it.value("--lr")?.unwrap_or(train.learning_rate);
    train.batch = it.value("--batch")?.unwrap_or(train.batch);
    let routed_only_training = match it.value::<String>("--train-on")?.as_deref() {
        None | Some("all") => false,
        Some("routed") => true,
        Some(o) => bail!("--train-on all|routed, not {o}"),
    };
    let a = Args {
        gguf: it.value::<String>("--gguf")?.map(PathBuf::from),
        out: it
            .value::<String>("--out")?
            .map_or_else(|| PathBuf::from("/tmp/llm_lora"), PathBuf::from),
        folds: it.value("--folds")?.unwrap_or(4),
        config,
        train,
        max_dev: it.value("--max-dev")?.unwrap_or(5),
        routed_only_training,
        max_clips: it.value("--max-clips")?,
        model_dir: it
            .positional()
            .first()
            .map(PathBuf::from)
            .with_context(|| format!("usage: {USAGE}"))?,
    };
    it.finish(USAGE)?;
    Ok(a)
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
    if let Some(cap) = args.max_clips {
        clips.truncate(cap);
    }
    let speakers: Vec<String> = clips
        .iter()
        .map(|c| c.speaker.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let fold_of =
        |c: &Clip| speakers.iter().position(|s| *s == c.speaker).unwrap_or(0) % args.folds.max(1);
    let routed_n = clips.iter().filter(|c| c.routed).count();
    eprintln!(
        "{} clips, {} speakers, {routed_n} routed (threshold {:.3}, margin {:.3})",
        clips.len(),
        speakers.len(),
        router.threshold,
        router.margin
    );

    let gguf = match &args.gguf {
        Some(p) => p.clone(),
        None => ModelSpec::parse("smollm2-135m")?
            .resolve(&models_dir())?
            .context("smollm2-135m is not installed (camxuc models fetch)")?,
    };
    let t = Instant::now();
    let file = GgufFile::open(&gguf)?;
    let task = LoraTask::new(&file, &labels, &rule_texts, args.max_dev)?;
    let n_layer = task.model().shape().n_layer;
    let from_layer = n_layer.saturating_sub(args.config.top_layers.max(1));
    eprintln!(
        "base loaded in f32 and prefix ({} tokens) run in {:.1} s; adapters on layers {from_layer}..{n_layer}",
        task.prefix_tokens(),
        t.elapsed().as_secs_f64()
    );

    // Frozen lower layers, once per clip; timed as the first part of a routed decision.
    let t = Instant::now();
    // Training on routed clips only needs only the routed clips' prompts.
    let mut cached: Vec<Option<CachedPrompt>> = Vec::with_capacity(clips.len());
    let mut lower_s = Vec::with_capacity(clips.len());
    for c in &clips {
        if args.routed_only_training && !c.routed {
            cached.push(None);
            lower_s.push(0.0);
            continue;
        }
        let s = Instant::now();
        let case = Case {
            unfamiliarity: None,
            evidence: &c.evidence,
            acoustic: &c.acoustic,
            fired: &c.fired,
            transcript: None,
        };
        let ids = task.suffix_ids(&case)?;
        cached.push(Some(task.cache_prompt(&ids, from_layer)?));
        lower_s.push(s.elapsed().as_secs_f64());
    }
    let tokens: Vec<usize> = cached.iter().flatten().map(|c| c.tokens).collect();
    eprintln!(
        "cached {} prompts in {:.0} s; suffix tokens mean {:.1}, min {}, max {}",
        tokens.len(),
        t.elapsed().as_secs_f64(),
        tokens.iter().sum::<usize>() as f64 / tokens.len().max(1) as f64,
        tokens.iter().min().unwrap_or(&0),
        tokens.iter().max().unwrap_or(&0)
    );

    let n = clips.len();
    let n_labels = labels.len();
    // Zero-shot control: the same prompt, no adapters.
    let mut zero: Vec<Option<Vec<f32>>> = vec![None; n];
    let mut zero_s = 0.0;
    for i in (0..n).filter(|&i| clips[i].routed) {
        let s = Instant::now();
        zero[i] = cached[i]
            .as_ref()
            .map(|c| task.probs(c, None))
            .transpose()?;
        zero_s += s.elapsed().as_secs_f64() + lower_s[i];
    }
    // Cross-validation by speaker folds.
    let mut lora: Vec<Option<Vec<f32>>> = vec![None; n];
    let (mut train_s, mut lora_s, mut epoch_s) = (0.0, 0.0, Vec::new());
    for fold in 0..args.folds {
        let test: Vec<usize> = (0..n)
            .filter(|&i| fold_of(&clips[i]) == fold && clips[i].routed)
            .collect();
        if test.is_empty() {
            continue;
        }
        let train: Vec<(&CachedPrompt, usize)> = (0..n)
            .filter(|&i| fold_of(&clips[i]) != fold)
            .filter_map(|i| cached[i].as_ref().map(|c| (c, clips[i].truth)))
            .collect();
        let mut adapters = task.new_adapters(&args.config)?;
        let t = Instant::now();
        let losses = task.train(&adapters, &train, &args.train, |e, l| {
            eprintln!("fold {fold}: epoch {e} mean loss {l:.4}");
        })?;
        let secs = t.elapsed().as_secs_f64();
        train_s += secs;
        epoch_s.push(secs / args.train.epochs.max(1) as f64);
        let held_out: Vec<String> = speakers
            .iter()
            .enumerate()
            .filter(|(i, _)| i % args.folds == fold)
            .map(|(_, s)| s.clone())
            .collect();
        adapters.set_trained_on(&format!(
            "{} clips of {} (speakers other than {}), fold {fold} of {}",
            train.len(),
            args.model_dir.display(),
            held_out.join(" "),
            args.folds
        ));
        adapters.save(&args.out.join(format!("fold-{fold}.safetensors")))?;
        let mut right = 0;
        for &i in &test {
            let s = Instant::now();
            let Some(c) = &cached[i] else { continue };
            let p = task.probs(c, Some(&adapters))?;
            lora_s += s.elapsed().as_secs_f64() + lower_s[i];
            right += usize::from(argmax(&p) == clips[i].truth);
            lora[i] = Some(p);
        }
        eprintln!(
            "fold {fold} (held out {}): {} training clips, {:.0} s ({:.1} s/epoch), losses {:?}; routed test {right}/{}",
            held_out.join(" "),
            train.len(),
            secs,
            secs / args.train.epochs.max(1) as f64,
            losses,
            test.len()
        );
    }

    let truth: Vec<usize> = clips.iter().map(|c| c.truth).collect();
    let ix: Vec<usize> = (0..n).filter(|&i| clips[i].routed).collect();
    let mut rows = Vec::new();
    let mut measure = |name: &str, secs: f64, train: f64, decide: &dyn Fn(usize) -> usize| {
        let pred: Vec<usize> = (0..n)
            .map(|i| {
                if clips[i].routed {
                    decide(i)
                } else {
                    clips[i].acoustic.argmax().0
                }
            })
            .collect();
        let acc = accuracy_on(&truth, &pred, &ix);
        let ci = bootstrap_ci(ix.len(), 2000, 7, |b| {
            let sub: Vec<usize> = b.iter().map(|&k| ix[k]).collect();
            accuracy_on(&truth, &pred, &sub)
        });
        let f1 = macro_f1(n_labels, &truth, &pred);
        println!(
            "{name:<52} routed acc {acc:.3} [{:.3}, {:.3}] (n {})  macro-F1 {f1:.3}  {secs:.3} s/clip  train {train:.0} s",
            ci[0],
            ci[1],
            ix.len()
        );
        rows.push(Row {
            variant: name.into(),
            routed_n: ix.len(),
            routed_accuracy: acc,
            routed_accuracy_ci95: ci,
            macro_f1_all: f1,
            seconds_per_routed_clip: secs,
            train_seconds: train,
        });
    };
    let routed_count = ix.len().max(1) as f64;
    measure("acoustic model alone", 0.0, 0.0, &|i| {
        clips[i].acoustic.argmax().0
    });
    measure("rule vote", 0.0, 0.0, &|i| argmax(&clips[i].vote_logits));
    measure(
        "SmolLM2-135M compact prompt, zero-shot (no adapter)",
        zero_s / routed_count,
        0.0,
        &|i| zero[i].as_ref().map_or(0, |p| argmax(p)),
    );
    let desc = format!(
        "SmolLM2-135M + LoRA r{} top-{} {} ({} epochs, {})",
        args.config.rank,
        args.config.top_layers,
        args.config
            .targets
            .iter()
            .map(|t| t.as_str())
            .collect::<String>(),
        args.train.epochs,
        if args.routed_only_training {
            "routed clips"
        } else {
            "all clips"
        }
    );
    measure(&desc, lora_s / routed_count, train_s, &|i| {
        lora[i].as_ref().map_or(0, |p| argmax(p))
    });
    measure(
        "rule vote + ln p(LoRA) (fixed weight 1)",
        lora_s / routed_count,
        train_s,
        &|i| {
            let p = lora[i].clone().unwrap_or_else(|| vec![1.0; n_labels]);
            let z: Vec<f64> = clips[i]
                .vote_logits
                .iter()
                .zip(&p)
                .map(|(v, q)| v + f64::from(*q).max(1e-6).ln())
                .collect();
            argmax(&z)
        },
    );
    eprintln!(
        "training: {:.1} s per epoch on average (folds: {:?})",
        epoch_s.iter().sum::<f64>() / epoch_s.len().max(1) as f64,
        epoch_s
            .iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
    );
    std::fs::write(
        args.out.join("llm_lora.json"),
        serde_json::to_vec_pretty(&rows)?,
    )?;
    let mut f = std::fs::File::create(args.out.join("llm_lora.md"))?;
    writeln!(
        f,
        "| variant | routed-clip accuracy [95 % CI] (n) | macro-F1, all clips | s per routed clip | train s (all folds) |\n|---|---|---|---|---|"
    )?;
    for r in &rows {
        writeln!(
            f,
            "| {} | {:.3} [{:.3}, {:.3}] ({}) | {:.3} | {:.3} | {:.0} |",
            r.variant,
            r.routed_accuracy,
            r.routed_accuracy_ci95[0],
            r.routed_accuracy_ci95[1],
            r.routed_n,
            r.macro_f1_all,
            r.seconds_per_routed_clip,
            r.train_seconds
        )?;
    }
    eprintln!("wrote {}", args.out.join("llm_lora.md").display());
    Ok(())
}
