//! `camxuc eval`: run a trained model over a labelled manifest and summarise, with the
//! ablations acoustic only / rules only / LLM only / routed (the LLM, or the rule vote with
//! `--llm none`, for ambiguous clips).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::metrics::{
    accuracy_and_f1_ci, accuracy_on, paired_accuracy_difference, paired_macro_f1_difference,
    ClassScores, Confusion, Interval, PairedDifference,
};
use crate::acoustic::augment::field_conditions;
use crate::acoustic::{AcousticError, AcousticModel};
use crate::audio;
use crate::data::manifest::Manifest;
use crate::data::split::filter_speakers;
use crate::pipeline::analyse::ClipAnalyser;
use crate::pipeline::Router;
use crate::rules::RuleVote;
use crate::{Case, Reasoner};

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub manifest: PathBuf,
    pub speakers: Option<String>,
    pub model_dir: PathBuf,
    pub models_dir: PathBuf,
    /// Rule set (default: the model's active rules).
    pub rules: Option<PathBuf>,
    pub bootstrap_reps: usize,
    pub seed: u64,
    /// Also score every clip under simulated field conditions (gain, noise, telephone band,
    /// echo; `acoustic::augment::field_conditions`) and compare on the same clips.
    pub robustness: bool,
}

/// Clean vs field-condition scores on the same clips, with a paired bootstrap interval.
#[derive(Clone, Debug, Serialize)]
pub struct Robustness {
    pub clean: Scores,
    pub perturbed: Scores,
    /// perturbed − clean macro-F1.
    pub macro_f1_difference: PairedDifference,
    pub conditions: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Scores {
    pub accuracy: f64,
    pub macro_f1: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RoutingSummary {
    pub threshold: f32,
    pub routed_fraction: f64,
    pub acoustic_accuracy_on_routed: Option<f64>,
    /// `null` until a reasoner decides routed clips.
    pub final_accuracy_on_routed: Option<f64>,
    pub acoustic_accuracy_on_kept: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ablations {
    pub acoustic_only: Scores,
    /// The rule vote alone (uniform prior, no acoustic model).
    pub rules_only: Option<Scores>,
    /// The LLM reasoner on every clip (`null` with `--llm none`).
    pub llm_only: Option<Scores>,
    /// Acoustic model for confident clips, the reasoner (LLM if given, else the rule vote)
    /// for routed ones.
    pub routed: Option<Scores>,
    /// routed − acoustic_only, paired bootstrap on the same clips.
    pub routed_minus_acoustic_macro_f1: Option<PairedDifference>,
    pub routed_minus_acoustic_accuracy: Option<PairedDifference>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Identifier {
    pub name: String,
    pub sha256: Option<String>,
}

/// The `--json` summary (all rates are fractions in 0..1).
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub n: usize,
    pub n_failed: usize,
    pub failures: Vec<String>,
    pub labels: Vec<String>,
    pub accuracy: f64,
    pub accuracy_ci95: Interval,
    pub macro_f1: f64,
    pub macro_f1_ci95: Interval,
    pub per_class: BTreeMap<String, ClassScores>,
    /// Rows = true label, columns = predicted, in `labels` order.
    pub confusion: Vec<Vec<u32>>,
    pub ece: f64,
    pub routing: RoutingSummary,
    pub ablations: Ablations,
    pub timings_ms: BTreeMap<String, f64>,
    pub model: Identifier,
    pub rules: Option<Identifier>,
    pub llm: Option<Identifier>,
    pub seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub robustness: Option<Robustness>,
}

/// Evaluate the model, its rules and (when `llm` is given) an LLM reasoner on a manifest.
/// With an LLM, routed clips go to it and `llm_only` runs it on every clip.
pub fn evaluate(
    opts: &EvalOptions,
    mut llm: Option<&mut dyn Reasoner>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport, AcousticError> {
    let device = crate::acoustic::default_device();
    let model = AcousticModel::load(&opts.model_dir, &opts.models_dir, &device)?;
    let labels = model.meta.labels.clone();
    let mut m = Manifest::load(&opts.manifest, &labels)?;
    if let Some(sel) = &opts.speakers {
        m = filter_speakers(&m, &[sel.as_str()])?;
    }
    let rules = crate::pipeline::active_rules(&model, opts.rules.as_deref()).map_err(|e| {
        AcousticError::Training {
            path: opts.rules.clone().unwrap_or_else(|| opts.model_dir.clone()),
            message: e.to_string(),
        }
    })?;
    let vote = RuleVote::new(&rules);
    let rules_alone = RuleVote::new(&rules).with_prior_weight(0.0);
    let router = Router::from_config(&model.routing);
    let mut analyser =
        ClipAnalyser::new(&model.meta.features).map_err(|e| AcousticError::Training {
            path: opts.model_dir.clone(),
            message: e.to_string(),
        })?;
    let mut truth = Vec::new();
    let mut pred = Vec::new();
    let mut routed_pred = Vec::new();
    let mut rules_pred = Vec::new();
    let mut llm_pred = Vec::new();
    let mut is_routed = Vec::new();
    let mut t_llm = 0.0;
    let mut top = Vec::new();
    let mut failures = Vec::new();
    let mut perturbed_pred = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xf1e1d);
    let (mut t_analyse, mut t_model) = (0.0, 0.0);
    for (i, row) in m.rows.iter().enumerate() {
        progress(i, m.rows.len());
        let t0 = Instant::now();
        let decoded = audio::load(&row.path, &analyser.load);
        let perturbed = match (&decoded, opts.robustness) {
            (Ok(a), true) => {
                let mut p = a.clone();
                p.samples = field_conditions(&a.samples, a.sample_rate, &mut rng);
                Some(p)
            }
            _ => None,
        };
        let clip = decoded
            .map_err(Into::into)
            .and_then(|a| analyser.analyse_audio(a));
        t_analyse += t0.elapsed().as_secs_f64();
        let mut clip = match clip {
            Ok(c) => c,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        let t1 = Instant::now();
        let probs = model.predict(std::slice::from_mut(&mut clip))?.remove(0);
        t_model += t1.elapsed().as_secs_f64();
        let (best, p) = probs.argmax();
        let fired = rules.evaluate(&clip.evidence, &probs);
        rules_pred.push(rules_alone.combine(&probs, &fired).argmax().0);
        let ambiguous = router.is_ambiguous(&probs);
        is_routed.push(ambiguous);
        if let Some(reasoner) = llm.as_deref_mut() {
            let case = Case {
                evidence: &clip.evidence,
                acoustic: &probs,
                fired: &fired,
                transcript: None,
            };
            let t = Instant::now();
            let verdict = reasoner
                .decide(&case)
                .map_err(|e| AcousticError::Training {
                    path: row.path.clone(),
                    message: e.to_string(),
                })?;
            t_llm += t.elapsed().as_secs_f64();
            let l = verdict.probs.argmax().0;
            llm_pred.push(l);
            routed_pred.push(if ambiguous { l } else { best });
        } else {
            routed_pred.push(if ambiguous {
                vote.combine(&probs, &fired).argmax().0
            } else {
                best
            });
        }
        if let Some(audio) = perturbed {
            // A clip that field conditions make unusable (e.g. VAD finds no speech) counts as
            // wrong: predict a label other than the truth.
            let wrong = (labels.index_of(&row.label).unwrap_or(0) + 1) % labels.len();
            let label = match analyser.analyse_audio(audio) {
                Ok(mut c) => {
                    model
                        .predict(std::slice::from_mut(&mut c))?
                        .remove(0)
                        .argmax()
                        .0
                }
                Err(_) => wrong,
            };
            perturbed_pred.push(label);
        }
        truth.push(labels.index_of(&row.label).unwrap_or(0));
        pred.push(best);
        top.push(p);
    }
    progress(m.rows.len(), m.rows.len());
    let k = labels.len();
    let conf = Confusion::new(k, truth.iter().copied().zip(pred.iter().copied()));
    let (acc_ci, f1_ci) = accuracy_and_f1_ci(k, &truth, &pred, opts.bootstrap_reps, opts.seed);
    let correct: Vec<bool> = truth.iter().zip(&pred).map(|(t, p)| t == p).collect();
    let conf64: Vec<f64> = top.iter().map(|&p| p as f64).collect();
    let routed: Vec<usize> = (0..truth.len()).filter(|&i| is_routed[i]).collect();
    let kept: Vec<usize> = (0..truth.len()).filter(|&i| !is_routed[i]).collect();
    let acc_on = |ix: &[usize], p: &[usize]| (!ix.is_empty()).then(|| accuracy_on(&truth, p, ix));
    let scores = |p: &[usize]| {
        let c = Confusion::new(k, truth.iter().copied().zip(p.iter().copied()));
        Scores {
            accuracy: c.accuracy(),
            macro_f1: c.macro_f1(),
        }
    };
    let n = truth.len().max(1) as f64;
    let per_class = labels
        .names()
        .iter()
        .cloned()
        .zip(conf.per_class())
        .collect();
    let timings_ms = BTreeMap::from([
        ("analyse_per_clip".to_string(), 1000.0 * t_analyse / n),
        ("acoustic_per_clip".to_string(), 1000.0 * t_model / n),
        ("llm_per_clip".to_string(), 1000.0 * t_llm / n),
    ]);
    let weights = opts
        .model_dir
        .join(crate::acoustic::model_dir::WEIGHTS_FILE);
    let robustness = opts.robustness.then(|| {
        let pc = Confusion::new(k, truth.iter().copied().zip(perturbed_pred.iter().copied()));
        Robustness {
            clean: Scores { accuracy: conf.accuracy(), macro_f1: conf.macro_f1() },
            perturbed: Scores { accuracy: pc.accuracy(), macro_f1: pc.macro_f1() },
            macro_f1_difference: paired_macro_f1_difference(k, &truth, &pred, &perturbed_pred, opts.bootstrap_reps, opts.seed),
            conditions: "gain U(-12,+12) dB and white noise at U(12,30) dB SNR on every clip; 300-3400 Hz telephone band on 50 %; one echo (50-150 ms, 0.2-0.4) on 50 %".into(),
        }
    });
    Ok(EvalReport {
        n: truth.len(),
        n_failed: failures.len(),
        failures,
        labels: labels.names().to_vec(),
        accuracy: conf.accuracy(),
        accuracy_ci95: acc_ci,
        macro_f1: conf.macro_f1(),
        macro_f1_ci95: f1_ci,
        per_class,
        confusion: conf.counts.clone(),
        ece: super::metrics::expected_calibration_error(&conf64, &correct, 15),
        routing: RoutingSummary {
            threshold: model.routing.threshold,
            routed_fraction: routed.len() as f64 / n,
            acoustic_accuracy_on_routed: acc_on(&routed, &pred),
            final_accuracy_on_routed: acc_on(&routed, &routed_pred),
            acoustic_accuracy_on_kept: acc_on(&kept, &pred),
        },
        ablations: Ablations {
            acoustic_only: scores(&pred),
            rules_only: Some(scores(&rules_pred)),
            llm_only: (!llm_pred.is_empty()).then(|| scores(&llm_pred)),
            routed: Some(scores(&routed_pred)),
            routed_minus_acoustic_macro_f1: Some(paired_macro_f1_difference(
                k,
                &truth,
                &pred,
                &routed_pred,
                opts.bootstrap_reps,
                opts.seed,
            )),
            routed_minus_acoustic_accuracy: Some(paired_accuracy_difference(
                &truth,
                &pred,
                &routed_pred,
                opts.bootstrap_reps,
                opts.seed,
            )),
        },
        timings_ms,
        model: Identifier {
            name: opts.model_dir.display().to_string(),
            sha256: crate::catalog::sha256_file(&weights).ok(),
        },
        rules: Some(Identifier {
            name: rules.id_string(),
            sha256: Some(rules.sha256()),
        }),
        llm: llm.as_ref().map(|r| Identifier {
            name: r.name(),
            sha256: None,
        }),
        seed: opts.seed,
        robustness,
    })
}

/// Human-readable summary.
pub fn print_summary(r: &EvalReport, manifest: &Path) {
    println!(
        "{}: {} clips ({} failed)",
        manifest.display(),
        r.n,
        r.n_failed
    );
    println!(
        "  accuracy {:.3} [{:.3}, {:.3}]   macro-F1 {:.3} [{:.3}, {:.3}]   ECE {:.3}",
        r.accuracy,
        r.accuracy_ci95[0],
        r.accuracy_ci95[1],
        r.macro_f1,
        r.macro_f1_ci95[0],
        r.macro_f1_ci95[1],
        r.ece
    );
    println!("  label    precision  recall      f1  support");
    for (l, s) in &r.per_class {
        println!(
            "  {:<8} {:>9.3} {:>7.3} {:>7.3} {:>8}",
            l, s.precision, s.recall, s.f1, s.support
        );
    }
    println!(
        "  confusion (rows = truth, columns = predicted, order {}):",
        r.labels.join(", ")
    );
    for (l, row) in r.labels.iter().zip(&r.confusion) {
        println!(
            "    {:<8} {}",
            l,
            row.iter().map(|c| format!("{c:>4}")).collect::<String>()
        );
    }
    println!(
        "  routing: threshold {:.3} sends {:.0} % to the reasoner (acoustic accuracy there {})",
        r.routing.threshold,
        100.0 * r.routing.routed_fraction,
        r.routing
            .acoustic_accuracy_on_routed
            .map(|a| format!("{a:.3}"))
            .unwrap_or_else(|| "-".into())
    );
    if let Some(rb) = &r.robustness {
        let d = &rb.macro_f1_difference;
        println!(
            "  field conditions: macro-F1 {:.3} -> {:.3} (difference {:+.3} [{:+.3}, {:+.3}], paired bootstrap)",
            rb.clean.macro_f1, rb.perturbed.macro_f1, d.difference, d.ci95[0], d.ci95[1]
        );
    }
    let ab = &r.ablations;
    let show = |s: &Option<Scores>| {
        s.as_ref()
            .map(|s| format!("accuracy {:.3}  macro-F1 {:.3}", s.accuracy, s.macro_f1))
            .unwrap_or_else(|| "not run".into())
    };
    println!("  ablations:");
    println!(
        "    acoustic only  accuracy {:.3}  macro-F1 {:.3}",
        ab.acoustic_only.accuracy, ab.acoustic_only.macro_f1
    );
    println!("    rules only     {}", show(&ab.rules_only));
    println!("    LLM only       {}", show(&ab.llm_only));
    println!("    routed         {}", show(&ab.routed));
    if let Some(d) = &ab.routed_minus_acoustic_macro_f1 {
        println!(
            "    routed − acoustic macro-F1 {:+.3} [{:+.3}, {:+.3}]",
            d.difference, d.ci95[0], d.ci95[1]
        );
    }
    if let (Some(a), Some(f)) = (
        r.routing.acoustic_accuracy_on_routed,
        r.routing.final_accuracy_on_routed,
    ) {
        println!("    on the routed clips: acoustic {a:.3} -> reasoner {f:.3}");
    }
}
