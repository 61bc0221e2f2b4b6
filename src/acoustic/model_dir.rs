//! The model directory: everything `eval` and `classify` need, with no other flag.
//!
//! ```text
//! model.safetensors     head weights (and frame normalisation); ensemble members other
//!                       than the main head under their prefix (`fold1.*`, …)
//! model.json            ModelMeta: format_version, labels, front end, feature config,
//!                       evidence inputs + corpus baseline, temperature, metrics, seed, data hash
//! routing.json          RoutingConfig: threshold, margin, target_route_fraction, fitted_on
//! train_evidence.jsonl  training clips' evidence, labels and held-out probabilities
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::head::{EnsembleCombine, HeadConfig};
use super::head_training::EpochStats;
use super::linear::LinearConfig;
use super::unfamiliar::UnfamiliarityConfig;
use crate::features::{Baseline, FeatureConfig};
use crate::LabelSet;

/// Bump when a file's meaning changes; a directory of another version is refused.
/// Version 2 added the pooled linear classifier and the unfamiliarity reference (both
/// optional, so a version-1 directory still loads: attention heads, no unfamiliarity).
pub const FORMAT_VERSION: u32 = 2;
/// Oldest version this camxuc still reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
pub const META_FILE: &str = "model.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const ROUTING_FILE: &str = "routing.json";
pub const TRAIN_EVIDENCE_FILE: &str = "train_evidence.jsonl";
/// File names of the training clips, one per line (the shipped default model, which does
/// not carry its training evidence).
pub const TRAINING_CLIPS_FILE: &str = "training_clips.txt";

/// The file names (without folders) of the clips a model was trained on, from its
/// `train_evidence.jsonl` or `training_clips.txt`; empty when it records neither. File names,
/// not paths: the same corpus is often reached through another folder.
pub fn training_clip_names(dir: &Path) -> std::collections::BTreeSet<String> {
    let base = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    };
    let mut names = std::collections::BTreeSet::new();
    // Only `path` is read, line by line, and a line that does not parse is skipped: this
    // guards against testing on training clips, so a damaged or older file still names what
    // it can (unlike `read_train_evidence`, which refuses it).
    if let Ok(text) = std::fs::read_to_string(dir.join(TRAIN_EVIDENCE_FILE)) {
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if let Some(n) = v["path"].as_str().and_then(base) {
                    names.insert(n);
                }
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(dir.join(TRAINING_CLIPS_FILE)) {
        names.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .filter_map(base),
        );
    }
    names
}

/// One line of train_evidence.jsonl: a training or validation clip's evidence and, when the
/// run had a held-out prediction for it, its calibrated held-out probabilities (the model's
/// for validation clips, the out-of-fold head's for training clips). Written by
/// `camxuc train`; read by refine and the research examples (`training_clip_names` reads only `path`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainEvidence {
    pub path: String,
    pub label: String,
    #[serde(default)]
    pub speaker: Option<String>,
    /// `train` or `val`.
    pub split: String,
    pub evidence: crate::Evidence,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probs: Option<crate::Probs>,
}

impl TrainEvidence {
    /// Whether the clip was a validation clip of the run (else a training clip).
    pub fn is_validation(&self) -> bool {
        self.split == "val"
    }
}

/// The records of `dir`'s train_evidence.jsonl (blank lines skipped), or `None` when the
/// directory has none (an older model, or one copied without it).
pub fn read_train_evidence(dir: &Path) -> Result<Option<Vec<TrainEvidence>>, ModelDirError> {
    let path = dir.join(TRAIN_EVIDENCE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path, e)),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec = serde_json::from_str(line).map_err(|source| ModelDirError::EvidenceLine {
            path: path.clone(),
            line: i + 1,
            source,
        })?;
        out.push(rec);
    }
    Ok(Some(out))
}

#[derive(Debug, thiserror::Error)]
pub enum ModelDirError {
    /// The embedded default model could not be written to its cache folder.
    #[error("{}: cannot write the embedded default model: {source}", path.display())]
    Embedded {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file or folder of the model directory could not be read, written or made.
    #[error("{}: {source}", path.display())]
    Fs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file of the model directory could not be encoded.
    #[error("{}: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: not a camxuc model directory (no {META_FILE}); train one with `camxuc train`", path.display())]
    NotAModel { path: PathBuf },
    /// A line of train_evidence.jsonl that does not parse.
    #[error("{}: line {line}: {source}", path.display())]
    EvidenceLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// A JSON file of the model directory is not what it should be.
    #[error("{}: cannot read: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The weights file (safetensors) cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Weights {
        path: PathBuf,
        /// Boxed, as in `HeadWeights`.
        #[source]
        source: Box<candle_core::Error>,
    },
    /// `model.json`'s feature configuration is unusable.
    #[error("{}: feature configuration: {source}", path.display())]
    Features {
        path: PathBuf,
        #[source]
        source: crate::features::FeatureError,
    },
    /// The weights of one head do not fit the architecture `model.json` describes.
    #[error("{}: weights of head '{head}' do not fit model.json: {source}", path.display())]
    HeadWeights {
        path: PathBuf,
        head: String,
        /// Boxed: candle's error is large, and unboxed beside a path it would make every
        /// result that carries this error (and the errors wrapping it) large.
        #[source]
        source: Box<candle_core::Error>,
    },
    #[error("{}: format_version {found}, but this camxuc reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}; retrain the model with this version", path.display())]
    FormatVersion { path: PathBuf, found: u32 },
    #[error("{}: {message}", path.display())]
    Mismatch { path: PathBuf, message: String },
    #[error("{}: {what} exists; pass --force to overwrite it", path.display())]
    Exists { path: PathBuf, what: String },
    #[error("no acoustic model: looked at --model (not given), ${MODEL_ENV} (not set), {} (no {META_FILE}) and the copy built into camxuc (turned off by CAMXUC_EMBEDDED_MODEL=0); train one with `camxuc train --manifest M --out {}`, or pass --model DIR", default.display(), default.display())]
    NoModel { default: PathBuf },
}

fn io(path: &Path, source: std::io::Error) -> ModelDirError {
    ModelDirError::Fs {
        path: path.into(),
        source,
    }
}

/// How frames are made from audio before the head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FrontendConfig {
    /// Frozen Whisper encoder, hidden states after `blocks` blocks.
    Whisper {
        model: String,
        sha256: String,
        blocks: usize,
        level_dbfs: f32,
    },
    /// The light option: per-clip mean-normalised log-mel frames.
    LogMel,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    pub n_train: usize,
    pub n_val: usize,
    pub val_speakers: Vec<String>,
    pub best_epoch: usize,
    pub val_accuracy: f64,
    pub val_macro_f1: f64,
    pub ece_before: f64,
    pub ece_after: f64,
    pub history: Vec<EpochStats>,
    pub seconds: f64,
    /// Wall seconds per phase: `analyse` (decode, trim, evidence), `encode` (front end over
    /// every view), `head` (the main head's epochs), `out_of_fold` (the fold heads); absent in
    /// directories written before it existed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub phase_seconds: std::collections::BTreeMap<String, f64>,
}

/// Several heads of the same shape on the same frames, combined at inference. The encoder is
/// shared, so the extra heads cost little; they come from the out-of-fold training that
/// `camxuc train` does anyway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleConfig {
    /// Tensor name prefix of each member in model.safetensors: "" is the main head (its names
    /// unprefixed, as in a single-head directory), "fold1" the first fold head (`fold1.out.weight`…).
    pub members: Vec<String>,
    pub combine: EnsembleCombine,
    /// Which held-out predictions fitted the temperature and routing (each clip's prediction
    /// comes only from members that did not train on it).
    pub calibrated_on: String,
    /// The combined model's accuracy and macro-F1 on the validation part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_macro_f1: Option<f64>,
}

/// `model.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    pub format_version: u32,
    pub name: String,
    pub camxuc_version: String,
    pub labels: LabelSet,
    pub frontend: FrontendConfig,
    pub features: FeatureConfig,
    pub head: HeadConfig,
    /// Evidence z-scores fused into the head, in input order.
    pub evidence_inputs: Vec<String>,
    /// Corpus baseline for evidence z-scores (fitted on the training clips).
    pub evidence_baseline: Baseline,
    pub temperature: f32,
    pub metrics: TrainingMetrics,
    pub seed: u64,
    pub data_hash: String,
    pub train_manifest: String,
    /// Default reasoner model SPEC.
    pub default_llm: String,
    /// Head ensemble; absent: one head (directories written before ensembles, or trained
    /// without fold heads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleConfig>,
    /// The pooled linear classifier (tensors `linear.*`); absent: the attention head(s) of
    /// `head` / `ensemble` classify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear: Option<LinearConfig>,
    /// The unfamiliarity reference (tensors `unfamiliarity.*`); absent in directories written
    /// before it existed (their decisions carry no unfamiliarity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfamiliarity: Option<UnfamiliarityConfig>,
    /// Present when `camxuc adapt` wrote this directory from another model: what was refitted
    /// on the site's clips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptation: Option<Adaptation>,
    /// Present when the classifier was trained with outlier exposure (`train --outliers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_exposure: Option<OutlierExposure>,
    /// How the attention heads were trained (epochs, learning rate, seed, whether the
    /// temporal conv was kept at its random initialisation, …); absent for the linear
    /// classifier and in directories written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_training: Option<crate::acoustic::head_training::TrainConfig>,
    /// A linear classifier beside the attention heads (tensors `linear_member.*`), on the
    /// pooled vector the unfamiliarity reference reads: the model's logits are then the log of
    /// the mean of the two members' calibrated probabilities ([`super::model::mix_logits`]),
    /// and `temperature` applies on top of them (1 as trained). Absent: the heads alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_member: Option<LinearMember>,
}

/// `model.json` `linear_member`: the linear member of a mixture and the two members'
/// temperatures inside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearMember {
    pub linear: LinearConfig,
    /// Temperature of the heads' combined logits inside the mixture.
    pub heads_temperature: f32,
    /// Temperature of the linear member's logits inside the mixture.
    pub linear_temperature: f32,
    /// How its penalty and temperature were chosen.
    pub fitted_on: String,
    /// Field-chain copies per training clip it also trained on (0: clean and perturbed copies
    /// only, as before 2026-12-05).
    #[serde(default)]
    pub field_views: usize,
}

/// Outlier exposure at training (model.json `outlier_exposure`): speech outside the labels
/// (e.g. other emotions) the classifier was taught to be unsure on, with the uniform
/// distribution over the labels as its target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierExposure {
    /// The manifest the outlier clips came from.
    pub manifest: String,
    /// Outlier clips analysed and used (a held-out speaker's own are left out of the models
    /// that score that speaker).
    pub clips: usize,
    /// Weight of the uniform-target term against the labelled term.
    pub weight: f32,
}

/// What `camxuc adapt` refitted on a site's clips (model.json `adaptation`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adaptation {
    /// What was refitted, each with the clips it was fitted on.
    pub refitted: Vec<String>,
    /// What was kept from the source model, and why.
    pub not_refitted: Vec<String>,
    /// Unlabelled site clips used (the label-free refits use the labelled ones too).
    pub n_unlabelled: usize,
    /// Labelled site clips used (a file given both ways counts here only).
    pub n_labelled: usize,
    /// The source model directory as given.
    pub source_model: String,
    /// sha256 of the source's model.json (hex).
    pub source_model_json_sha256: String,
    /// Penalty λ of the MAP refit toward the source head (absent: the head was not refitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_lambda: Option<f64>,
    pub seed: u64,
}

/// `routing.json`: when a clip goes to the reasoner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutingConfig {
    /// Route when the calibrated top probability is below this.
    pub threshold: f32,
    /// … or when top-1 minus top-2 is below this.
    pub margin: f32,
    /// … or when the clip's unfamiliarity is above this (absent: unfamiliarity does not
    /// route). With `--abstain-below`, such a clip is labelled `uncertain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfamiliarity_threshold: Option<f32>,
    pub target_route_fraction: f32,
    /// What the threshold was fitted on (e.g. "validation: 72 clips, speakers …").
    pub fitted_on: String,
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ModelDirError> {
    let s = fs::read_to_string(path).map_err(|e| io(path, e))?;
    serde_json::from_str(&s).map_err(|source| ModelDirError::Parse {
        path: path.into(),
        source,
    })
}

/// Copies `dir/file` to `dir/file.prev` before a command rewrites it (site calibration,
/// routing refit), so the previous version can be restored by hand.
pub(crate) fn keep_previous(dir: &Path, file: &str) -> Result<(), ModelDirError> {
    let (from, to) = (dir.join(file), dir.join(format!("{file}.prev")));
    fs::copy(&from, &to).map(|_| ()).map_err(|e| io(&to, e))
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ModelDirError> {
    let s = serde_json::to_string_pretty(value).map_err(|source| ModelDirError::Encode {
        path: path.into(),
        source,
    })?;
    fs::write(path, s + "\n").map_err(|e| io(path, e))
}

/// Read and check `model.json`: the version first (so an old directory gets the version
/// message, not a field error), then the whole record.
pub fn read_meta(dir: &Path) -> Result<ModelMeta, ModelDirError> {
    let path = dir.join(META_FILE);
    if !path.is_file() {
        return Err(ModelDirError::NotAModel { path: dir.into() });
    }
    let raw: serde_json::Value = read_json(&path)?;
    let found = raw
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
        return Err(ModelDirError::FormatVersion { path, found });
    }
    let meta: ModelMeta = serde_json::from_value(raw).map_err(|source| ModelDirError::Parse {
        path: path.clone(),
        source,
    })?;
    meta.features
        .validate()
        .map_err(|source| ModelDirError::Features {
            path: path.clone(),
            source,
        })?;
    if let Some(e) = &meta.ensemble {
        if e.members.is_empty() {
            return Err(ModelDirError::Mismatch {
                path,
                message: "ensemble lists no member heads".into(),
            });
        }
    }
    if meta.head.n_labels != meta.labels.len()
        || meta.head.evidence_dim != meta.evidence_inputs.len()
    {
        return Err(ModelDirError::Mismatch {
            path,
            message: "head shape does not match the label set or the evidence inputs".into(),
        });
    }
    Ok(meta)
}

pub fn write_meta(dir: &Path, meta: &ModelMeta) -> Result<(), ModelDirError> {
    write_json(&dir.join(META_FILE), meta)
}

pub fn read_routing(dir: &Path) -> Result<RoutingConfig, ModelDirError> {
    read_json(&dir.join(ROUTING_FILE))
}

/// The corpus evidence baseline of a model (for `camxuc features --model`).
pub fn load_evidence_baseline(dir: &Path) -> Result<Baseline, ModelDirError> {
    Ok(read_meta(dir)?.evidence_baseline)
}

/// Default output folder of `camxuc train`: `<models dir>/acoustic/<name>`.
pub fn default_out(models_dir: &Path, name: &str) -> PathBuf {
    models_dir.join("acoustic").join(name)
}

/// The environment variable that names the acoustic model directory.
pub const MODEL_ENV: &str = "CAMXUC_MODEL";

/// Why a command uses the acoustic model it uses (see [`resolve`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// `--model DIR`.
    Flag,
    /// `$CAMXUC_MODEL`.
    Env,
    /// `<models dir>/acoustic/default`: shared by every command, so `refine` and `calibrate`
    /// do not write into it.
    Default,
    /// The copy of the shipped default model compiled into the binary (see
    /// [`super::embedded`]); read-only like `Default`.
    Embedded,
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Flag => "from --model",
            Self::Env => "from CAMXUC_MODEL",
            Self::Default => "the default model in the models folder",
            Self::Embedded => "the default model built into camxuc, CC BY-NC-SA 4.0",
        })
    }
}

/// The default acoustic model: `<models dir>/acoustic/default`.
pub fn default_model(models_dir: &Path) -> PathBuf {
    models_dir.join("acoustic").join("default")
}

/// The acoustic model a command uses, in this order: `explicit` (`--model DIR`), else
/// `$CAMXUC_MODEL` (when set and not empty), else [`default_model`] when it holds a
/// [`META_FILE`]. A directory given by the flag or the variable is taken as it is (loading it
/// names what is wrong with it); when none of the three gives a model, the error lists each
/// place looked at and how to get a model.
pub fn resolve(
    explicit: Option<&Path>,
    models_dir: &Path,
) -> Result<(PathBuf, ModelSource), ModelDirError> {
    match resolve_with(explicit, std::env::var_os(MODEL_ENV), models_dir) {
        Err(ModelDirError::NoModel { .. })
            if super::embedded::enabled(std::env::var_os(super::embedded::EMBEDDED_ENV)) =>
        {
            let dir = super::embedded::materialise(&super::embedded::cache_dir())?;
            Ok((dir, ModelSource::Embedded))
        }
        other => other,
    }
}

/// [`resolve`] with the variable's value given (tests run in parallel threads: they pass it
/// instead of setting the process's environment).
fn resolve_with(
    explicit: Option<&Path>,
    env: Option<std::ffi::OsString>,
    models_dir: &Path,
) -> Result<(PathBuf, ModelSource), ModelDirError> {
    if let Some(dir) = explicit {
        return Ok((dir.to_path_buf(), ModelSource::Flag));
    }
    if let Some(dir) = env.filter(|v| !v.is_empty()) {
        return Ok((PathBuf::from(dir), ModelSource::Env));
    }
    let default = default_model(models_dir);
    if default.join(META_FILE).is_file() {
        return Ok((default, ModelSource::Default));
    }
    // The copy built into the binary comes after this (in `resolve`).
    Err(ModelDirError::NoModel { default })
}

/// Make the output folder, refusing to overwrite an existing model unless `force`.
pub fn prepare_out(dir: &Path, force: bool) -> Result<(), ModelDirError> {
    if dir.join(META_FILE).exists() && !force {
        return Err(ModelDirError::Exists {
            path: dir.into(),
            what: "a trained model".into(),
        });
    }
    // The directory holds the training clips' labels and evidence (health data): folders it
    // creates are readable by their owner only.
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_order_is_flag_then_env_then_default() {
        let tmp = tempfile::tempdir().unwrap();
        let models = tmp.path().join("models");
        let flag = tmp.path().join("flag-model");
        let env = tmp.path().join("env-model");

        // Nothing anywhere: the error lists every place looked at and how to get a model.
        let e = resolve_with(None, None, &models).unwrap_err();
        let msg = e.to_string();
        let default = default_model(&models);
        for needle in [
            "--model (not given)",
            "$CAMXUC_MODEL (not set)",
            &default.display().to_string(),
            "camxuc train",
            "--model DIR",
        ] {
            assert!(msg.contains(needle), "lacks '{needle}': {msg}");
        }
        // An empty folder at the default place is not a model.
        fs::create_dir_all(&default).unwrap();
        assert!(resolve_with(None, Some("".into()), &models).is_err());

        // With a model at the default place, it is used…
        fs::write(default.join(META_FILE), "{}").unwrap();
        assert_eq!(
            resolve_with(None, None, &models).unwrap(),
            (default.clone(), ModelSource::Default)
        );
        // … an empty variable counts as unset …
        assert_eq!(
            resolve_with(None, Some("".into()), &models).unwrap().1,
            ModelSource::Default
        );
        // … the variable comes before it …
        assert_eq!(
            resolve_with(None, Some(env.clone().into()), &models).unwrap(),
            (env.clone(), ModelSource::Env)
        );
        // … and the flag before both.
        assert_eq!(
            resolve_with(Some(&flag), Some(env.into()), &models).unwrap(),
            (flag.clone(), ModelSource::Flag)
        );
        assert_eq!(
            resolve_with(Some(&flag), None, &models).unwrap(),
            (flag, ModelSource::Flag)
        );
    }
}
