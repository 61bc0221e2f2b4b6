//! One clip to one `Decision`: acoustic model → rules → router → reasoner for ambiguous clips.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::faithful::{self, RationaleCheck};
use super::fusion::Contributions;
use super::route::Router;
use crate::acoustic::{AcousticError, AcousticModel};
use crate::audio::{self, AudioError};
use crate::clip::{AnalyseError, AnalysedClip, ClipAnalyser};
use crate::rules::{RuleSet, RulesError};
use crate::{
    Case, Decision, Evidence, FiredRule, LabelSet, Probs, Reasoner, ReasonerError, Route, Segment,
    Verdict, DECISION_SCHEMA_VERSION,
};

/// The label written when even the final decision is below `--abstain-below`.
pub const UNCERTAIN: &str = "uncertain";
/// Rules file a model directory may hold (written by `refine`); else the embedded default.
pub const MODEL_RULES_FILE: &str = "rules.toml";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Analyse(#[from] AnalyseError),
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Acoustic(#[from] AcousticError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Reasoner(#[from] ReasonerError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Llm(#[from] crate::llm::LlmError),
    #[error(transparent)]
    Asr(#[from] crate::asr::AsrError),
    #[error(transparent)]
    Fusion(#[from] super::fusion::FusionError),
    #[error("{}: the rule set's labels ({rules}) differ from the model's ({model})", path.display())]
    LabelMismatch {
        path: PathBuf,
        rules: String,
        model: String,
    },
}

/// The active rule set for a model directory: `explicit` if given, else `<model>/rules.toml`,
/// else the embedded default. Checked against the model's labels.
pub fn active_rules_for(
    model_dir: &Path,
    labels: &LabelSet,
    explicit: Option<&Path>,
) -> Result<RuleSet, PipelineError> {
    let in_model = model_dir.join(MODEL_RULES_FILE);
    let rules = match explicit {
        Some(p) => RuleSet::load(p)?,
        None if in_model.is_file() => RuleSet::load(&in_model)?,
        None => crate::rules::default_ruleset()?,
    };
    if rules.labels() != labels {
        return Err(PipelineError::LabelMismatch {
            path: rules.path().to_path_buf(),
            rules: rules.labels().to_string(),
            model: labels.to_string(),
        });
    }
    Ok(rules)
}

/// [`active_rules_for`] a loaded model.
pub fn active_rules(
    model: &AcousticModel,
    explicit: Option<&Path>,
) -> Result<RuleSet, PipelineError> {
    active_rules_for(&model.dir, &model.meta.labels, explicit)
}

pub struct Pipeline {
    pub analyser: ClipAnalyser,
    pub model: AcousticModel,
    pub rules: RuleSet,
    pub router: Router,
    reasoner: Box<dyn Reasoner>,
    /// Route recorded for clips the reasoner decides (`rules` or `llm`).
    reasoner_route: Route,
    pub abstain_below: Option<f32>,
    /// Transcribes the clips the reasoner is asked about (`--transcribe`).
    pub words: Option<super::Words>,
}

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl Pipeline {
    pub fn new(
        model: AcousticModel,
        rules: RuleSet,
        reasoner: Box<dyn Reasoner>,
        reasoner_route: Route,
        threshold: Option<f32>,
        abstain_below: Option<f32>,
    ) -> Result<Self, PipelineError> {
        let analyser =
            ClipAnalyser::new(&model.meta.features).map_err(|source| AcousticError::Features {
                path: model.dir.join(crate::acoustic::model_dir::META_FILE),
                source,
            })?;
        let mut router = Router::from_config(&model.routing);
        if let Some(t) = threshold {
            router.threshold = t;
        }
        Ok(Self {
            analyser,
            model,
            rules,
            router,
            reasoner,
            reasoner_route,
            abstain_below,
            words: None,
        })
    }

    pub fn reasoner_name(&self) -> String {
        self.reasoner.name()
    }

    /// The route recorded for clips the reasoner decides.
    pub fn reasoner_route(&self) -> Route {
        self.reasoner_route
    }

    /// Whether the reasoner's own label scores decide (an LLM under `--llm-decides`).
    pub fn llm_decides(&self) -> bool {
        self.reasoner.llm_decides()
    }

    /// Acoustic model → rules → router → reasoner on an analysed clip ([`assess`] with this
    /// pipeline's stages).
    pub fn assess_clip(
        &mut self,
        clip: &mut AnalysedClip,
        consult: Consult,
    ) -> Result<Assessment, PipelineError> {
        assess(
            &self.model,
            &self.rules,
            &self.router,
            self.reasoner.as_mut(),
            clip,
            consult,
            self.words.as_mut(),
        )
    }

    /// Decide one file as one clip, named by its file name.
    pub fn classify_file(&mut self, path: impl AsRef<Path>) -> Result<Decision, PipelineError> {
        let path = path.as_ref();
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        self.decide_file(path, &name)
    }

    /// Decide one file as one clip.
    pub fn decide_file(&mut self, path: &Path, name: &str) -> Result<Decision, PipelineError> {
        let t = Instant::now();
        let audio = audio::load(path, &self.analyser.load)?;
        let decode_ms = ms(t);
        let t = Instant::now();
        let clip = self.analyser.analyse_audio(audio)?;
        let mut d = self.decide_clip(clip, name, None)?;
        d.timings_ms.insert("decode".into(), decode_ms);
        d.timings_ms.insert(
            "features".into(),
            ms(t) - d.timings_ms.values().sum::<f64>(),
        );
        Ok(d)
    }

    /// Decide each utterance of a long recording (cut at pauses), window by window with
    /// bounded memory. Utterances that fail are returned as errors in place.
    pub fn decide_segments(
        &mut self,
        path: &Path,
        name: &str,
    ) -> Result<Vec<Result<Decision, PipelineError>>, PipelineError> {
        let mut out = Vec::new();
        let windows = audio::open_windows(path, audio::DEFAULT_WINDOW_S, &self.analyser.load)?;
        for window in windows {
            let window = window?;
            for utterance in audio::split_utterances(&window, &self.analyser.vad) {
                let seg = Segment {
                    start_s: utterance.offset_s,
                    end_s: utterance.offset_s + utterance.duration_s(),
                };
                let r = self
                    .analyser
                    .analyse_audio(utterance)
                    .map_err(PipelineError::from);
                out.push(r.and_then(|c| self.decide_clip(c, name, Some(seg))));
            }
        }
        Ok(out)
    }

    /// Decide an analysed clip.
    pub fn decide_clip(
        &mut self,
        mut clip: AnalysedClip,
        name: &str,
        segment: Option<Segment>,
    ) -> Result<Decision, PipelineError> {
        let assessment = self.assess_clip(&mut clip, Consult::RoutedOnly)?;
        Ok(assessment.into_decision(
            clip.evidence,
            name,
            segment,
            self.reasoner_route,
            self.abstain_below,
        ))
    }
}

/// When to ask the reasoner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consult {
    /// Only for clips the router finds ambiguous (`classify`).
    RoutedOnly,
    /// For every clip (`eval`: the LLM-only ablation and the accuracy-vs-coverage curve need
    /// the reasoner's opinion on kept clips too).
    Always,
}

/// What the stages after analysis say about one clip.
#[derive(Clone, Debug)]
pub struct Assessment {
    /// Calibrated probabilities of the acoustic model alone.
    pub acoustic: Probs,
    /// The clip's unfamiliarity (`None` for a model without a reference).
    pub unfamiliarity: Option<f32>,
    /// Whether it is above the model's unfamiliarity threshold.
    pub unfamiliar: bool,
    pub fired: Vec<FiredRule>,
    /// Whether the router sends the clip to the reasoner.
    pub ambiguous: bool,
    /// The reasoner's verdict; `None` only for a kept clip under [`Consult::RoutedOnly`].
    pub verdict: Option<Verdict>,
    /// The verdict's rationale checked against the fired rules and the evidence (routed
    /// clips only).
    pub rationale_check: Option<RationaleCheck>,
    /// What was said, when `words` transcribed the clip for the reasoner.
    pub transcript: Option<String>,
    /// Milliseconds of `acoustic`, `rules` and (when asked) `transcribe` and `reasoner`.
    pub timings_ms: BTreeMap<String, f64>,
}

/// Acoustic model → rules → router → reasoner on an analysed clip (its evidence gets
/// z-scores): the step `classify` and `eval` share. With `words`, a clip the reasoner is asked
/// about is transcribed first and the reasoner reads what was said.
pub fn assess(
    model: &AcousticModel,
    rules: &RuleSet,
    router: &Router,
    reasoner: &mut dyn Reasoner,
    clip: &mut AnalysedClip,
    consult: Consult,
    words: Option<&mut super::Words>,
) -> Result<Assessment, PipelineError> {
    let mut timings = BTreeMap::new();
    let t = Instant::now();
    let (acoustic, unfamiliarity) = model.assess(std::slice::from_mut(clip))?.remove(0);
    timings.insert("acoustic".to_string(), ms(t));
    let t = Instant::now();
    let fired = rules.evaluate(&clip.evidence, &acoustic);
    timings.insert("rules".to_string(), ms(t));
    let ambiguous = router.is_ambiguous(&acoustic, unfamiliarity);
    let unfamiliar = router.is_unfamiliar(unfamiliarity);
    let consulted = ambiguous || consult == Consult::Always;
    let transcript = match words {
        Some(w) if consulted => {
            let t = Instant::now();
            let text = match w.of(&clip.speech) {
                Ok(text) => Some(text),
                // The words are extra evidence: without them the clip is still decided.
                Err(e) => {
                    eprintln!("warning: {e}; deciding this clip without its words");
                    None
                }
            };
            timings.insert("transcribe".to_string(), ms(t));
            text
        }
        _ => None,
    };
    let verdict = if consulted {
        let t = Instant::now();
        let case = Case {
            evidence: &clip.evidence,
            acoustic: &acoustic,
            fired: &fired,
            transcript: transcript.as_deref(),
            unfamiliarity,
        };
        let verdict = reasoner.decide(&case)?;
        timings.insert("reasoner".to_string(), ms(t));
        Some(verdict)
    } else {
        None
    };
    // The LLM's words when an LLM wrote any, else the rule template's; only for a routed clip
    // (a kept clip's Decision does not carry the verdict's rationale).
    let rationale_check = verdict.as_ref().filter(|_| ambiguous).and_then(|v| {
        let (text, author) = match (&v.llm_rationale, &v.rationale) {
            (Some(t), _) => (t, faithful::Author::Llm),
            (None, Some(t)) => (t, faithful::Author::Rules),
            (None, None) => return None,
        };
        Some(faithful::check(text, author, rules, &fired, &clip.evidence))
    });
    Ok(Assessment {
        acoustic,
        unfamiliarity,
        unfamiliar,
        fired,
        ambiguous,
        verdict,
        rationale_check,
        transcript,
        timings_ms: timings,
    })
}

impl Assessment {
    /// The Decision: the reasoner's verdict for an ambiguous clip, else the acoustic model's.
    pub fn into_decision(
        self,
        evidence: Evidence,
        name: &str,
        segment: Option<Segment>,
        reasoner_route: Route,
        abstain_below: Option<f32>,
    ) -> Decision {
        let (probs, route, rationale, contributions, language, check) = match self.verdict {
            Some(v) if self.ambiguous => {
                let c = v
                    .contributions
                    .unwrap_or_else(|| Contributions::acoustic_only(&self.acoustic));
                let check = self.rationale_check;
                (
                    v.probs,
                    reasoner_route,
                    v.rationale,
                    c,
                    v.rationale_language,
                    check,
                )
            }
            _ => {
                let (i, p) = self.acoustic.argmax();
                let why = format!(
                    "acoustic model confident: {} at {:.2}",
                    self.acoustic.labels[i], p
                );
                let c = Contributions::acoustic_only(&self.acoustic);
                let en = Some("en".to_string());
                (
                    self.acoustic.clone(),
                    Route::Acoustic,
                    Some(why),
                    c,
                    en,
                    None,
                )
            }
        };
        let (best, p) = probs.argmax();
        // With --abstain-below, an unfamiliar clip is uncertain whatever its probability.
        let label = match abstain_below {
            Some(min) if p < min || self.unfamiliar => UNCERTAIN.to_string(),
            _ => probs.labels[best].clone(),
        };
        Decision {
            schema_version: DECISION_SCHEMA_VERSION,
            file: name.to_string(),
            segment,
            label,
            probs,
            acoustic_probs: self.acoustic,
            route,
            unfamiliarity: self.unfamiliarity,
            evidence,
            fired_rules: self.fired,
            contributions: Some(contributions),
            rationale,
            rationale_language: language,
            rationale_check: check,
            transcript: self.transcript,
            timings_ms: self.timings_ms,
        }
    }
}

/// Majority label (by summed duration) of a recording's segment decisions, for `--segments`.
pub fn summarise_segments(decisions: &[Decision]) -> Option<(String, f64)> {
    let mut by_label: BTreeMap<&str, f64> = BTreeMap::new();
    let mut total = 0.0;
    for d in decisions {
        let dur = d.segment.map(|s| s.end_s - s.start_s).unwrap_or(0.0);
        *by_label.entry(d.label.as_str()).or_default() += dur;
        total += dur;
    }
    by_label
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(l, d)| (l.to_string(), if total > 0.0 { d / total } else { 0.0 }))
}

/// Probabilities as a compact string, e.g. `calm 0.81 angry 0.12 panic 0.07`.
pub fn probs_text(p: &Probs) -> String {
    p.labels
        .iter()
        .zip(&p.values)
        .map(|(l, v)| format!("{l} {v:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LabelSet;

    fn assessment(p: Vec<f32>, unfamiliarity: Option<f32>, unfamiliar: bool) -> Assessment {
        Assessment {
            acoustic: Probs::new(&LabelSet::default(), p),
            unfamiliarity,
            unfamiliar,
            fired: Vec::new(),
            ambiguous: false,
            verdict: None,
            rationale_check: None,
            transcript: None,
            timings_ms: BTreeMap::new(),
        }
    }

    #[test]
    fn an_unfamiliar_clip_abstains_whatever_its_probability_and_says_how_unfamiliar() {
        let sure = vec![0.02, 0.96, 0.02];
        let d = assessment(sure.clone(), Some(3.5), true).into_decision(
            Evidence::default(),
            "x.wav",
            None,
            Route::Rules,
            Some(0.5),
        );
        assert_eq!(d.label, UNCERTAIN);
        assert_eq!(d.unfamiliarity, Some(3.5));
        // Familiar and confident: the label stands; without --abstain-below, too.
        let d = assessment(sure.clone(), Some(0.9), false).into_decision(
            Evidence::default(),
            "x.wav",
            None,
            Route::Rules,
            Some(0.5),
        );
        assert_eq!(d.label, "angry");
        let d = assessment(sure, Some(3.5), true).into_decision(
            Evidence::default(),
            "x.wav",
            None,
            Route::Rules,
            None,
        );
        assert_eq!(d.label, "angry");
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["unfamiliarity"], serde_json::json!(3.5));
        assert_eq!(
            json["schema_version"],
            serde_json::json!(DECISION_SCHEMA_VERSION)
        );
    }

    /// A kept (confident) clip never changes, whatever a reasoner would have said: its
    /// probabilities are the acoustic model's and its contributions are acoustic-only.
    #[test]
    fn kept_clips_never_change_and_routed_ones_carry_the_fusion() {
        let p = vec![0.1, 0.85, 0.05];
        let other = Verdict {
            probs: Probs::new(&LabelSet::default(), vec![0.7, 0.2, 0.1]),
            contributions: None,
            rationale: Some("x".into()),
            rationale_language: None,
            llm_rationale: None,
            prompt_tokens: 0,
            generated_tokens: 0,
            timings_ms: BTreeMap::new(),
        };
        let mut a = assessment(p.clone(), Some(1.0), false);
        a.verdict = Some(other.clone());
        let d = a.into_decision(Evidence::default(), "x.wav", None, Route::Rules, None);
        assert_eq!(d.probs, d.acoustic_probs);
        assert_eq!(d.route, Route::Acoustic);
        let c = d.contributions.unwrap();
        assert_eq!((c.acoustic_weight, c.rules.len()), (1.0, 0));
        let mut a = assessment(p, Some(1.0), false);
        a.ambiguous = true;
        a.verdict = Some(other.clone());
        let d = a.into_decision(Evidence::default(), "x.wav", None, Route::Rules, None);
        assert_eq!(d.probs, other.probs);
        assert_eq!(d.route, Route::Rules);
        let json = serde_json::to_value(&d).unwrap();
        assert!(json["contributions"]["acoustic_logp"].is_object(), "{json}");
    }
}
