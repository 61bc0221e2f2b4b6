//! What the experiment examples share: a small argument reader and the clips of a model
//! directory's train_evidence.jsonl with their fired rules and routing (research only).
#![allow(dead_code)] // each example uses part of it

use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use camxuc::acoustic::model_dir::read_train_evidence;
use camxuc::pipeline::Router;
use camxuc::rules::{RuleSet, RuleVote};
use camxuc::{Evidence, FiredRule, LabelSet, Probs};

/// The command line after the program name: `--name value` options, `--name` switches and
/// positional arguments, in any order.
pub struct Args {
    args: Vec<String>,
    /// Which arguments an option, a switch or `positional` took (read through `&self`, so
    /// closures can share the reader).
    used: std::cell::RefCell<Vec<bool>>,
}

impl Args {
    pub fn from_env() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let used = std::cell::RefCell::new(vec![false; args.len()]);
        Self { args, used }
    }

    /// The value after `--name`, parsed; `None` when the option is absent.
    pub fn value<T: FromStr>(&self, name: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        let Some(i) = self.args.iter().position(|a| a == name) else {
            return Ok(None);
        };
        let Some(v) = self.args.get(i + 1) else {
            bail!("{name} needs a value");
        };
        self.used.borrow_mut()[i] = true;
        self.used.borrow_mut()[i + 1] = true;
        v.parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{name} {v}: {e}"))
    }

    /// Whether the switch `--name` is given.
    pub fn flag(&self, name: &str) -> bool {
        match self.args.iter().position(|a| a == name) {
            Some(i) => {
                self.used.borrow_mut()[i] = true;
                true
            }
            None => false,
        }
    }

    /// The arguments no option or switch took, in order (call after reading those).
    pub fn positional(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (a, used) in self.args.iter().zip(self.used.borrow_mut().iter_mut()) {
            if !*used && !a.starts_with("--") {
                *used = true;
                out.push(a.clone());
            }
        }
        out
    }

    /// An error naming every argument nothing read (a mistyped option).
    pub fn finish(&self, usage: &str) -> Result<()> {
        let left: Vec<&str> = self
            .args
            .iter()
            .zip(self.used.borrow().iter())
            .filter(|(_, u)| !**u)
            .map(|(a, _)| a.as_str())
            .collect();
        if !left.is_empty() {
            bail!("unexpected argument(s) {left:?}; usage: {usage}");
        }
        Ok(())
    }
}

/// A labelled clip of train_evidence.jsonl with a held-out prediction.
pub struct Clip {
    pub path: String,
    pub truth: usize,
    pub speaker: String,
    /// A validation clip of the training run (else an out-of-fold training clip).
    pub val: bool,
    pub evidence: Evidence,
    pub acoustic: Probs,
    pub fired: Vec<FiredRule>,
    pub routed: bool,
    /// Rule-vote logits: ln acoustic + fired rule weights (as the rule vote combines them).
    pub vote_logits: Vec<f64>,
}

/// The clips of `dir`'s train_evidence.jsonl that have a label of `labels` and held-out
/// probabilities, with `rules` evaluated and `router`'s routing.
pub fn load_clips(
    dir: &Path,
    labels: &LabelSet,
    rules: &RuleSet,
    router: &Router,
) -> Result<Vec<Clip>> {
    let records = read_train_evidence(dir)?
        .with_context(|| format!("{}: no train_evidence.jsonl", dir.display()))?;
    let vote = RuleVote::new(rules);
    let mut clips = Vec::new();
    for r in records {
        let val = r.is_validation();
        let (Some(acoustic), Some(truth)) = (r.probs, labels.index_of(&r.label)) else {
            continue;
        };
        let fired = rules.evaluate(&r.evidence, &acoustic);
        let vote_logits = vote.logits(&acoustic, &fired);
        clips.push(Clip {
            path: r.path,
            truth,
            speaker: r.speaker.unwrap_or_default(),
            val,
            routed: router.is_ambiguous(&acoustic, None),
            evidence: r.evidence,
            acoustic,
            fired,
            vote_logits,
        });
    }
    Ok(clips)
}
