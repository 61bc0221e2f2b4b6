//! `camxuc refine`: the iterative refinement loop of the rules.
//!
//! Each round: error analysis of the active rules on held-out predictions of the manifest's
//! clips ([`clips`]), a greedy proposal of rule edits scored with the rule-vote reasoner
//! ([`search`]), and an honest check of that proposal before anyone trusts it:
//!
//! **Cross-fitted acceptance.** The same clips cannot both choose the edits and judge them
//! (the search would always "improve"). The clips are split into speaker folds; for each fold
//! the search runs on the other folds and its proposal labels the held-out fold. The pooled
//! held-out labels are compared with the current rules' labels on the same clips by a paired
//! bootstrap of macro-F1. With `--accept` the round is kept when the improvement is positive
//! with bootstrap probability ≥ `confidence` and no class's F1 drops by more than
//! `class_tolerance`; the proposal made on all clips then becomes the model's `rules.toml`.
//! Without `--accept` every round's proposal is written for a person to review.
//!
//! Files (all in the model directory): `rules.v<N>.toml` per proposed version (with its
//! changelog entry), `refine-round-<r>.md` per round, and `rules.toml` when a round is kept.
//! With an LLM the chosen proposal is also checked on the routed clips by the LLM reasoner
//! (it must not do worse than with the current rules) — a confirmation on the same clips.

pub mod analysis;
pub mod clips;
pub mod report;
pub mod routing;
pub mod search;
pub mod wording;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::acoustic::{model_dir, AcousticError};
use crate::data::manifest::Manifest;
use crate::data::split::filter_speakers;
use crate::metrics::{paired_macro_f1_test, Confusion, Interval};
use crate::pipeline::decide::{active_rules_for, MODEL_RULES_FILE};
use crate::pipeline::fusion::FusionParams;
use crate::pipeline::{PipelineError, Router};
use crate::rules::{RuleSet, RulesError};
use crate::{Case, Reasoner};

pub use analysis::{ErrorAnalysis, RuleStats};
pub use clips::{Gathered, RefineClip, Source};
pub use search::{Edit, Problem, Score, SearchConfig};

#[derive(Debug, thiserror::Error)]
pub enum RefineError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Analyser {
        path: PathBuf,
        #[source]
        source: crate::features::FeatureError,
    },
    #[error(transparent)]
    Acoustic(#[from] AcousticError),
    #[error(transparent)]
    Pipeline(Box<PipelineError>),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Manifest(#[from] crate::data::DataError),
    #[error("{}: {message}", path.display())]
    TooFew { path: PathBuf, message: String },
    #[error("LLM check: {0}")]
    Llm(String),
}

impl From<PipelineError> for RefineError {
    fn from(e: PipelineError) -> Self {
        RefineError::Pipeline(Box::new(e))
    }
}

impl RefineError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        RefineError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RefineOptions {
    pub manifest: PathBuf,
    /// Keep only these speakers of the manifest (never the test speakers).
    pub speakers: Option<String>,
    pub model_dir: PathBuf,
    pub models_dir: PathBuf,
    /// Starting rules (default: the model's active rules).
    pub rules: Option<PathBuf>,
    pub rounds: usize,
    pub accept: bool,
    /// Routing threshold override (default: the model's routing.json).
    pub threshold: Option<f32>,
    pub search: SearchConfig,
    /// Speaker folds of the cross-fitted acceptance check.
    pub folds: usize,
    /// Bootstrap probability of improvement a round needs to be kept.
    pub confidence: f64,
    /// Largest per-class F1 drop a kept round may cause.
    pub class_tolerance: f64,
    pub bootstrap_reps: usize,
    pub seed: u64,
    /// After the rounds, refit the routing threshold with the reasoner in the loop
    /// ([`routing`]); kept (routing.json rewritten, the old one as routing.json.prev) only
    /// with `accept` and a passed cross-fitted check.
    pub refit_routing: bool,
    /// Labelled clips of shifted conditions (another corpus, a site's recording chain): a
    /// round is kept only if it does not lower the routed pipeline's macro-F1 on any of them
    /// by more than `shift_tolerance` (predicted by the model, never searched on).
    pub shifted: Vec<PathBuf>,
    pub shift_tolerance: f64,
}

impl RefineOptions {
    pub fn new(manifest: PathBuf, model_dir: PathBuf) -> Self {
        Self {
            manifest,
            speakers: None,
            model_dir,
            models_dir: crate::catalog::models_dir(),
            rules: None,
            rounds: 1,
            accept: false,
            threshold: None,
            search: SearchConfig::default(),
            folds: 4,
            confidence: 0.9,
            class_tolerance: 0.05,
            bootstrap_reps: 2000,
            seed: 1,
            refit_routing: false,
            shifted: Vec::new(),
            shift_tolerance: 0.01,
        }
    }
}

/// The cross-fitted check of one round's proposal.
#[derive(Clone, Debug, Serialize)]
pub struct Acceptance {
    pub folds: usize,
    /// Routed-pipeline macro-F1 of the current rules on all clips.
    pub macro_f1_current: f64,
    /// … and of the fold proposals on their held-out folds, pooled.
    pub macro_f1_cross_fitted: f64,
    pub difference: f64,
    pub difference_ci95: Interval,
    /// Share of paired bootstrap resamples where the proposal is better.
    pub probability_of_improvement: f64,
    /// Per-class F1 change (cross-fitted − current).
    pub per_class_f1_change: BTreeMap<String, f64>,
    pub passes: bool,
    pub reason: String,
}

/// The LLM reasoner on the routed clips with the current and the proposed rules.
#[derive(Clone, Debug, Serialize)]
pub struct LlmCheck {
    pub reasoner: String,
    pub routed_clips: usize,
    pub accuracy_current: f64,
    pub accuracy_proposed: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RoundOutcome {
    pub round: usize,
    pub version: u32,
    #[serde(skip)]
    pub analysis: ErrorAnalysis,
    pub edits: Vec<Edit>,
    /// Macro-F1 of the proposal on all refinement clips (in-sample: the search saw them).
    pub macro_f1_in_sample: f64,
    pub acceptance: Acceptance,
    pub llm_check: Option<LlmCheck>,
    /// The proposal on each shifted condition (`RefineOptions::shifted`).
    pub shifted: Vec<ShiftCheck>,
    /// Kept and made the model's active rule set.
    pub kept: bool,
    pub rules_file: PathBuf,
    pub report_file: PathBuf,
}

/// A round's proposal against the current rules on one shifted condition.
#[derive(Clone, Debug, Serialize)]
pub struct ShiftCheck {
    pub manifest: PathBuf,
    pub clips: usize,
    pub routed: usize,
    pub macro_f1_current: f64,
    pub macro_f1_proposed: f64,
    /// proposed − current, paired bootstrap over the clips.
    pub difference: crate::metrics::PairedDifference,
    /// No drop larger than `shift_tolerance`.
    pub passes: bool,
}

/// Labelled clips of one shifted condition, predicted by the model.
struct Shifted {
    manifest: PathBuf,
    clips: Vec<RefineClip>,
    routed: Vec<bool>,
}

/// The proposal against `rules` on each shifted condition.
fn shift_checks(
    shifted: &[Shifted],
    rules: &RuleSet,
    proposal: &RuleSet,
    fusion: &FusionParams,
    opts: &RefineOptions,
) -> Vec<ShiftCheck> {
    let labels = rules.labels();
    shifted
        .iter()
        .map(|s| {
            let refs: Vec<&RefineClip> = s.clips.iter().collect();
            let problem = Problem::new(refs, s.routed.clone(), labels, fusion);
            let truth: Vec<usize> = s.clips.iter().map(|c| c.truth).collect();
            let (current, proposed) = (problem.labels_for(rules), problem.labels_for(proposal));
            let f1 = |pred: &[usize]| {
                Confusion::new(
                    labels.len(),
                    truth.iter().copied().zip(pred.iter().copied()),
                )
                .macro_f1()
            };
            let (difference, _) = paired_macro_f1_test(
                labels.len(),
                &truth,
                &current,
                &proposed,
                opts.bootstrap_reps,
                opts.seed,
            );
            ShiftCheck {
                manifest: s.manifest.clone(),
                clips: s.clips.len(),
                routed: s.routed.iter().filter(|&&r| r).count(),
                macro_f1_current: f1(&current),
                macro_f1_proposed: f1(&proposed),
                passes: difference.difference >= -opts.shift_tolerance,
                difference,
            }
        })
        .collect()
}

#[derive(Clone, Debug, Serialize)]
pub struct RefineOutcome {
    pub clips: usize,
    pub by_source: BTreeMap<String, usize>,
    pub in_sample_skipped: usize,
    pub failures: Vec<String>,
    pub routed_fraction: f64,
    pub starting_rules: String,
    pub rounds: Vec<RoundOutcome>,
    /// The model's active rule set after refinement.
    pub active_rules: String,
    /// The routing refit (`--refit-routing`), when asked for.
    pub routing: Option<routing::RoutingRefit>,
    /// The model's fusion gives the rules no weight on any routed clip (its rule scale is 0
    /// at every routed clip's unfamiliarity, e.g. an acoustic-only fit): no rule edit can
    /// change a decision, so no round was searched.
    pub rules_inert: bool,
}

/// Progress of a refinement run.
pub enum RefineEvent<'a> {
    Predicting { done: usize, total: usize },
    Round { round: usize, rounds: usize },
    Fold { fold: usize, folds: usize },
    Note(&'a str),
}

/// Builds the LLM reasoner for a rule set (its prompt carries the rules).
pub type ReasonerFactory<'a> = &'a mut dyn FnMut(&RuleSet) -> Result<Box<dyn Reasoner>, String>;

/// Today's date (UTC) as `YYYY-MM-DD`, for changelog entries.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    civil_date((secs / 86_400) as i64)
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (Howard Hinnant's civil-from-days).
pub(crate) fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Speaker folds of the clips (clip-level folds when speakers are unknown), seeded.
fn folds_of(clips: &[&RefineClip], k: usize, seed: u64) -> Vec<usize> {
    let mut speakers: Vec<String> = clips
        .iter()
        .filter_map(|c| c.speaker.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0f01d);
    if speakers.len() >= k {
        speakers.shuffle(&mut rng);
        let fold_of: BTreeMap<&str, usize> = speakers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i % k))
            .collect();
        clips
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.speaker
                    .as_deref()
                    .and_then(|s| fold_of.get(s).copied())
                    .unwrap_or(i % k)
            })
            .collect()
    } else {
        let mut order: Vec<usize> = (0..clips.len()).collect();
        order.shuffle(&mut rng);
        let mut fold = vec![0; clips.len()];
        for (pos, &i) in order.iter().enumerate() {
            fold[i] = pos % k;
        }
        fold
    }
}

fn per_class_f1(k: usize, truth: &[usize], pred: &[usize]) -> Vec<f64> {
    Confusion::new(k, truth.iter().copied().zip(pred.iter().copied()))
        .per_class()
        .iter()
        .map(|c| c.f1)
        .collect()
}

/// Every clip's label from a procedure that never saw the clip's fold: for each of `n_folds`
/// speaker folds, `fit_and_label(fit, held)` fits on the `fit` clip indices and labels the
/// `held` ones. A fold that cannot be fitted keeps its `current` labels.
fn cross_fitted_labels(
    clips: &[&RefineClip],
    current: &[usize],
    n_folds: usize,
    seed: u64,
    on_fold: &mut dyn FnMut(usize),
    mut fit_and_label: impl FnMut(&[usize], &[usize]) -> Vec<usize>,
) -> Vec<usize> {
    let fold = folds_of(clips, n_folds, seed);
    let mut crossed = current.to_vec();
    for f in 0..n_folds {
        on_fold(f);
        let (fit, held): (Vec<usize>, Vec<usize>) = (0..clips.len()).partition(|&i| fold[i] != f);
        if fit.is_empty() || held.is_empty() {
            continue;
        }
        for (&i, l) in held.iter().zip(fit_and_label(&fit, &held)) {
            crossed[i] = l;
        }
    }
    crossed
}

/// Compares cross-fitted labels with the current ones on the same clips and says whether the
/// change may be kept (see the module docs for the rule).
fn judge(
    rules: &RuleSet,
    truth: &[usize],
    current: &[usize],
    crossed: &[usize],
    n_folds: usize,
    opts: &RefineOptions,
) -> Acceptance {
    let labels = rules.labels();
    let k = labels.len();
    let (paired, p) =
        paired_macro_f1_test(k, truth, current, crossed, opts.bootstrap_reps, opts.seed);
    let (difference, ci) = (paired.difference, paired.ci95);
    let before = per_class_f1(k, truth, current);
    let after = per_class_f1(k, truth, crossed);
    let per_class_f1_change: BTreeMap<String, f64> = labels
        .names()
        .iter()
        .cloned()
        .zip(after.iter().zip(&before).map(|(a, b)| a - b))
        .collect();
    let worst = per_class_f1_change
        .iter()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(l, d)| (l.clone(), *d));
    let (passes, reason) = if difference <= 0.0 {
        (
            false,
            format!("cross-fitted macro-F1 did not improve ({difference:+.3})"),
        )
    } else if p < opts.confidence {
        (
            false,
            format!(
                "improvement {difference:+.3} is not reliable: better in {:.0} % of paired bootstrap resamples (needs {:.0} %)",
                100.0 * p,
                100.0 * opts.confidence
            ),
        )
    } else if let Some((l, d)) = worst.filter(|(_, d)| *d < -opts.class_tolerance) {
        (
            false,
            format!(
                "class {l} F1 drops by {:.3} (tolerance {:.3})",
                -d, opts.class_tolerance
            ),
        )
    } else {
        (
            true,
            format!(
                "macro-F1 {difference:+.3} [{:+.3}, {:+.3}], better in {:.0} % of paired bootstrap resamples",
                ci[0],
                ci[1],
                100.0 * p
            ),
        )
    };
    let f1 = |pred: &[usize]| {
        Confusion::new(k, truth.iter().copied().zip(pred.iter().copied())).macro_f1()
    };
    Acceptance {
        folds: n_folds,
        macro_f1_current: f1(current),
        macro_f1_cross_fitted: f1(crossed),
        difference,
        difference_ci95: ci,
        probability_of_improvement: p,
        per_class_f1_change,
        passes,
        reason,
    }
}

/// The cross-fitted check of the search procedure from `rules` (see the module docs).
#[allow(clippy::too_many_arguments)]
fn cross_fit(
    rules: &RuleSet,
    fusion: &FusionParams,
    clips: &[&RefineClip],
    routed: &[bool],
    opts: &RefineOptions,
    round: usize,
    on_event: &mut dyn FnMut(RefineEvent),
) -> Acceptance {
    let labels = rules.labels();
    let n_folds = opts.folds.max(2);
    let truth: Vec<usize> = clips.iter().map(|c| c.truth).collect();
    let current = Problem::new(clips.to_vec(), routed.to_vec(), labels, fusion).labels_for(rules);
    let sub = |ix: &[usize]| {
        Problem::new(
            ix.iter().map(|&i| clips[i]).collect(),
            ix.iter().map(|&i| routed[i]).collect(),
            labels,
            fusion,
        )
    };
    let crossed = cross_fitted_labels(
        clips,
        &current,
        n_folds,
        opts.seed.wrapping_add(round as u64),
        &mut |f| {
            on_event(RefineEvent::Fold {
                fold: f + 1,
                folds: n_folds,
            })
        },
        |fit, held| {
            let (proposal, _) = search::propose(rules, &sub(fit), &opts.search);
            sub(held).labels_for(&proposal)
        },
    );
    judge(rules, &truth, &current, &crossed, n_folds, opts)
}

/// Accuracy of the LLM reasoner on the routed clips with `rules` in its prompt.
fn llm_accuracy(
    factory: ReasonerFactory,
    rules: &RuleSet,
    clips: &[&RefineClip],
    routed: &[bool],
) -> Result<(String, usize, f64), RefineError> {
    let mut reasoner = factory(rules).map_err(RefineError::Llm)?;
    let (mut n, mut right) = (0, 0);
    for (c, _) in clips.iter().zip(routed).filter(|(_, &r)| r) {
        let fired = rules.evaluate(&c.evidence, &c.probs);
        let case = Case {
            unfamiliarity: None,
            evidence: &c.evidence,
            acoustic: &c.probs,
            fired: &fired,
            transcript: None,
        };
        let v = reasoner
            .decide(&case)
            .map_err(|e| RefineError::Llm(e.to_string()))?;
        n += 1;
        right += usize::from(v.probs.argmax().0 == c.truth);
    }
    Ok((reasoner.name(), n, right as f64 / n.max(1) as f64))
}

/// Runs the refinement loop (see the module docs).
pub fn refine(
    opts: &RefineOptions,
    mut llm: Option<ReasonerFactory>,
    on_event: &mut dyn FnMut(RefineEvent),
) -> Result<RefineOutcome, RefineError> {
    let meta = model_dir::read_meta(&opts.model_dir).map_err(AcousticError::from)?;
    let labels = meta.labels.clone();
    let mut routing = model_dir::read_routing(&opts.model_dir).map_err(AcousticError::from)?;
    if let Some(t) = opts.threshold {
        routing.threshold = t;
    }
    let router = Router::from_config(&routing);
    let mut rules = active_rules_for(&opts.model_dir, &labels, opts.rules.as_deref())?;
    let starting_rules = rules.id_string();
    // Edits are scored with the decision `classify` serves: the model's fused decision.
    let fusion = crate::pipeline::build::model_fusion(&opts.model_dir)?;

    let mut m = Manifest::load(&opts.manifest, &labels)?;
    if let Some(sel) = &opts.speakers {
        m = filter_speakers(&m, &[sel.as_str()])?;
    }
    m.require_files()?;
    let gathered = clips::gather(
        &m,
        &opts.model_dir,
        &opts.models_dir,
        &labels,
        &mut |done, total| on_event(RefineEvent::Predicting { done, total }),
    )?;
    if gathered.clips.len() < 20 {
        return Err(RefineError::TooFew {
            path: opts.manifest.clone(),
            message: format!(
                "only {} clips with held-out predictions ({} training clips without them{}): refinement needs at least 20; train with --oof-folds or give clips of other speakers",
                gathered.clips.len(),
                gathered.in_sample.len(),
                if gathered.failures.is_empty() { String::new() } else { format!(", {} failed", gathered.failures.len()) }
            ),
        });
    }
    let clips: Vec<&RefineClip> = gathered.clips.iter().collect();
    // Routed as `classify` routes them (their unfamiliarity is known for clips predicted now).
    let routed_of = |clips: &[&RefineClip]| -> Vec<bool> {
        clips
            .iter()
            .map(|c| router.is_ambiguous(&c.probs, c.unfamiliarity))
            .collect()
    };
    let routed = routed_of(&clips);
    let mut shifted = Vec::new();
    for path in &opts.shifted {
        let m = Manifest::load(path, &labels)?;
        m.require_files()?;
        let g = clips::gather(
            &m,
            &opts.model_dir,
            &opts.models_dir,
            &labels,
            &mut |_, _| {},
        )?;
        if g.clips.is_empty() {
            return Err(RefineError::TooFew {
                path: path.clone(),
                message: "no usable clip in this shifted condition".into(),
            });
        }
        let routed = routed_of(&g.clips.iter().collect::<Vec<_>>());
        shifted.push(Shifted {
            manifest: path.clone(),
            clips: g.clips,
            routed,
        });
    }
    let mut by_source = BTreeMap::new();
    for c in &clips {
        *by_source.entry(c.source.name().to_string()).or_insert(0) += 1;
    }
    let routed_fraction = routed.iter().filter(|&&r| r).count() as f64 / clips.len() as f64;

    // Whether the served fusion lets the rules move any routed clip at all.
    let rule_scales: Vec<f64> = clips
        .iter()
        .zip(&routed)
        .map(|(c, r)| (c.unfamiliarity, *r))
        .chain(shifted.iter().flat_map(|s| {
            s.clips
                .iter()
                .zip(&s.routed)
                .map(|(c, r)| (c.unfamiliarity, *r))
        }))
        .filter(|(_, routed)| *routed)
        .map(|(u, _)| fusion.weights_for(u).1)
        .collect();
    let rules_inert = !rule_scales.is_empty() && rule_scales.iter().all(|&b| b == 0.0);

    let date = today();
    let mut outcomes = Vec::new();
    for round in (1..=opts.rounds.max(1)).filter(|_| !rules_inert) {
        on_event(RefineEvent::Round {
            round,
            rounds: opts.rounds.max(1),
        });
        let problem = Problem::new(clips.clone(), routed.clone(), &labels, &fusion);
        let analysis = analysis::analyse(&rules, &problem);
        let search_cfg = SearchConfig {
            source: format!("refinement round {round}, {date}"),
            ..opts.search.clone()
        };
        let (mut proposal, edits) = search::propose(&rules, &problem, &search_cfg);
        if edits.is_empty() {
            on_event(RefineEvent::Note(
                "no edit raises macro-F1 on these clips; stopping",
            ));
            break;
        }
        let macro_f1_in_sample = problem.score(&proposal).macro_f1;
        let mut opts_round = opts.clone();
        opts_round.search = search_cfg;
        let acceptance = cross_fit(
            &rules,
            &fusion,
            &clips,
            &routed,
            &opts_round,
            round,
            on_event,
        );
        let llm_check = match llm.as_deref_mut() {
            Some(factory) => {
                let (name, n, before) = llm_accuracy(factory, &rules, &clips, &routed)?;
                let (_, _, after) = llm_accuracy(factory, &proposal, &clips, &routed)?;
                Some(LlmCheck {
                    reasoner: name,
                    routed_clips: n,
                    accuracy_current: before,
                    accuracy_proposed: after,
                })
            }
            None => None,
        };
        let llm_ok = llm_check
            .as_ref()
            .is_none_or(|c| c.accuracy_proposed >= c.accuracy_current);
        let shift = shift_checks(&shifted, &rules, &proposal, &fusion, opts);
        let shift_ok = shift.iter().all(|c| c.passes);
        let kept = opts.accept && acceptance.passes && llm_ok && shift_ok;
        let verdict = match (opts.accept, kept) {
            (true, true) => "kept (now the model's active rules)",
            (true, false) => "rejected",
            (false, _) => "proposed for review (not active)",
        };
        let summary: Vec<String> = edits.iter().map(|e| e.description.clone()).collect();
        proposal.bump_version(
            &date,
            &format!(
                "refinement round {round} on {} ({} held-out clips): {}. Cross-fitted check: {}.{} {verdict}.",
                file_name(&opts.manifest),
                clips.len(),
                summary.join("; "),
                acceptance.reason,
                shift
                    .iter()
                    .map(|c| format!(
                        " {}: macro-F1 {:.3} -> {:.3}{}.",
                        file_name(&c.manifest),
                        c.macro_f1_current,
                        c.macro_f1_proposed,
                        if c.passes { "" } else { " (drop: rejected)" }
                    ))
                    .collect::<String>()
            ),
        );
        proposal.set_header_comment(&refined_header(rules.header_comment()));
        let version = proposal.version();
        let rules_file = opts.model_dir.join(format!("rules.v{version}.toml"));
        proposal.save(&rules_file)?;
        if kept {
            proposal.save(opts.model_dir.join(MODEL_RULES_FILE))?;
        }
        let report_file = opts.model_dir.join(format!("refine-round-{round}.md"));
        let outcome = RoundOutcome {
            round,
            version,
            analysis,
            edits,
            macro_f1_in_sample,
            acceptance,
            llm_check,
            shifted: shift,
            kept,
            rules_file,
            report_file: report_file.clone(),
        };
        let md = report::round_markdown(&outcome, opts, &gathered, routed_fraction, verdict);
        crate::private_fs::write_private(&report_file, md.as_bytes())
            .map_err(|e| RefineError::io(&report_file, e))?;
        outcomes.push(outcome);
        if opts.accept && !kept {
            break;
        }
        // Without --accept the next round builds on the proposal, for the reviewer to see
        // where the loop is heading; with it, only on what was kept.
        rules = proposal;
    }
    let active = active_rules_for(&opts.model_dir, &labels, None)?;
    let routing_refit = if opts.refit_routing {
        Some(refit_routing(opts, &active, &fusion, &clips, &mut routing)?)
    } else {
        None
    };
    Ok(RefineOutcome {
        clips: clips.len(),
        by_source,
        in_sample_skipped: gathered.in_sample.len(),
        failures: gathered.failures.clone(),
        routed_fraction,
        starting_rules,
        rounds: outcomes,
        active_rules: active.id_string(),
        routing: routing_refit,
        rules_inert,
    })
}

/// The routing refit with its cross-fitted check (see [`routing`]).
fn refit_routing(
    opts: &RefineOptions,
    rules: &RuleSet,
    fusion: &FusionParams,
    clips: &[&RefineClip],
    cfg: &mut model_dir::RoutingConfig,
) -> Result<routing::RoutingRefit, RefineError> {
    let truth: Vec<usize> = clips.iter().map(|c| c.truth).collect();
    let prefer = cfg.target_route_fraction;
    let current = routing::labels_at(clips, rules, fusion, cfg.threshold);
    let (t_all, _) = routing::best_threshold(clips, rules, fusion, prefer);
    let n_folds = opts.folds.max(2);
    let pick = |ix: &[usize]| ix.iter().map(|&i| clips[i]).collect::<Vec<_>>();
    let crossed = cross_fitted_labels(
        clips,
        &current,
        n_folds,
        opts.seed ^ 0x7007,
        &mut |_| {},
        |fit, held| {
            let (t, _) = routing::best_threshold(&pick(fit), rules, fusion, prefer);
            routing::labels_at(&pick(held), rules, fusion, t)
        },
    );
    let acceptance = judge(rules, &truth, &current, &crossed, n_folds, opts);
    let kept = acceptance.passes && opts.accept;
    let before = (cfg.threshold, routing::fraction_at(clips, cfg.threshold));
    if kept {
        let path = opts.model_dir.join(model_dir::ROUTING_FILE);
        model_dir::keep_previous(&opts.model_dir, model_dir::ROUTING_FILE)
            .map_err(AcousticError::from)?;
        cfg.threshold = t_all;
        cfg.fitted_on = format!(
            "refine --refit-routing on {} held-out clips of {} ({})",
            clips.len(),
            file_name(&opts.manifest),
            acceptance.reason
        );
        model_dir::write_json(&path, &*cfg).map_err(AcousticError::from)?;
    }
    Ok(routing::RoutingRefit {
        threshold_before: before.0,
        fraction_before: before.1,
        threshold_after: t_all,
        fraction_after: routing::fraction_at(clips, t_all),
        acceptance,
        kept,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// The header comment of a refined version: the original one plus where it came from.
fn refined_header(original: &str) -> String {
    let note = "# REFINED by `camxuc refine` from error analysis on held-out predictions. This file\n\
                # belongs to its model directory: rules refined on a corpus are never shipped in rules/.\n";
    if original.contains("REFINED by `camxuc refine`") {
        original.to_string()
    } else {
        format!("{}{note}", original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Evidence, LabelSet, Probs};

    /// A proposal that helps nowhere in particular but turns shifted clips wrong is caught:
    /// its shift check fails; an unchanged proposal passes.
    #[test]
    fn a_proposal_that_hurts_a_shifted_condition_fails_its_check() {
        let labels = LabelSet::default();
        let rules = |extra: &str| {
            RuleSet::parse(
                &format!(
                    "[ruleset]\nname = \"t\"\nversion = 1\nlabels = [\"calm\", \"angry\", \"panic\"]\nlanguage = \"en\"\n{extra}"
                ),
                "t.toml",
            )
            .unwrap()
        };
        let current = rules("");
        let wrong = rules(
            "[[rule]]\nid = \"w\"\nlabel = \"angry\"\nwhen = \"jitter_local_pct_z > 1\"\nweight = 3.0\nstatement_vi = \"x\"\nstatement_en = \"x\"\nsource = \"test\"\n",
        );
        // Panic clips the acoustic model gets right (barely); high jitter on all of them.
        let clips: Vec<RefineClip> = (0..40)
            .map(|i| {
                let mut evidence = Evidence::default();
                evidence.z.insert("jitter_local_pct".into(), 2.0);
                let truth = if i % 2 == 0 { 2 } else { 0 };
                let mut p = vec![0.3f32; 3];
                p[truth] = 0.4;
                RefineClip {
                    file: format!("s{i}.wav"),
                    truth,
                    speaker: None,
                    evidence,
                    probs: Probs::new(&labels, p),
                    unfamiliarity: Some(2.5),
                    source: Source::Unseen,
                }
            })
            .collect();
        let shifted = [Shifted {
            manifest: "shift.csv".into(),
            routed: vec![true; clips.len()],
            clips,
        }];
        let opts = RefineOptions {
            bootstrap_reps: 200,
            ..RefineOptions::new("m.csv".into(), "model".into())
        };
        let fusion = FusionParams::RULE_VOTE;
        let checks = shift_checks(&shifted, &current, &wrong, &fusion, &opts);
        assert_eq!(checks.len(), 1);
        assert!(!checks[0].passes, "{:?}", checks[0]);
        assert!(checks[0].macro_f1_proposed < checks[0].macro_f1_current);
        let same = shift_checks(&shifted, &current, &current, &fusion, &opts);
        assert!(same[0].passes && same[0].difference.difference == 0.0);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_783), "2026-11-26");
    }

    fn clip(speaker: Option<&str>) -> RefineClip {
        RefineClip {
            file: "a.wav".into(),
            truth: 0,
            speaker: speaker.map(String::from),
            evidence: Evidence::default(),
            probs: Probs::new(&LabelSet::default(), vec![0.4, 0.3, 0.3]),
            unfamiliarity: None,
            source: Source::Validation,
        }
    }

    #[test]
    fn folds_keep_each_speaker_in_one_fold() {
        let clips: Vec<RefineClip> = (0..40)
            .map(|i| clip(Some(["s1", "s2", "s3", "s4", "s5"][i % 5])))
            .collect();
        let refs: Vec<&RefineClip> = clips.iter().collect();
        let fold = folds_of(&refs, 4, 1);
        for s in ["s1", "s2", "s3", "s4", "s5"] {
            let f: std::collections::BTreeSet<usize> = (0..40)
                .filter(|&i| clips[i].speaker.as_deref() == Some(s))
                .map(|i| fold[i])
                .collect();
            assert_eq!(f.len(), 1, "speaker {s} in folds {f:?}");
        }
        assert_eq!(
            fold.iter().collect::<std::collections::BTreeSet<_>>().len(),
            4
        );
        // Without speakers: clip-level folds of near-equal size.
        let anon: Vec<RefineClip> = (0..40).map(|_| clip(None)).collect();
        let fold = folds_of(&anon.iter().collect::<Vec<_>>(), 4, 1);
        for f in 0..4 {
            assert_eq!(fold.iter().filter(|&&x| x == f).count(), 10);
        }
    }

    #[test]
    fn paired_bootstrap_sees_a_clear_improvement_and_no_change() {
        let truth: Vec<usize> = (0..60).map(|i| i % 3).collect();
        let mut worse = truth.clone();
        for w in worse.iter_mut().step_by(4) {
            *w = (*w + 1) % 3;
        }
        let (d, p) = paired_macro_f1_test(3, &truth, &worse, &truth, 500, 1);
        assert!(
            d.difference > 0.2 && d.ci95[0] > 0.0 && p > 0.99,
            "{d:?} {p}"
        );
        let (d, p) = paired_macro_f1_test(3, &truth, &worse, &worse, 500, 1);
        assert_eq!((d.difference, d.ci95, p), (0.0, [0.0, 0.0], 0.0));
    }
}
