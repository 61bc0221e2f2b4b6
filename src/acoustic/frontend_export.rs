//! `camxuc models export-frontend`: just the Whisper encoder blocks a model uses, as one
//! safetensors file, for small edge devices.
//!
//! The acoustic model runs the encoder's two convolutions and its first few blocks (3 of 6
//! for the default model); the CTranslate2 `model.bin` also carries the other blocks and the
//! whole decoder (145 MB for Whisper base in f16). An export holds exactly the tensors
//! [`WhisperEncoder::load_blocks`] reads for the blocks asked for (found by loading the
//! encoder through a recording [`SimpleBackend`], so the list cannot drift from the model
//! code), under candle-transformers' names, in f16 or f32, beside a small manifest
//! ([`EXPORT_MANIFEST`]). Installed as `<models folder>/<front-end name>/` (e.g.
//! `models/whisper-base/`), [`Frontend::from_config`](super::frontend::Frontend::from_config)
//! loads it in place of the CTranslate2 folder. Whisper base's weights are f16 in
//! `model.bin`, so an f16 export gives the same frames bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use candle_transformers::models::whisper::Config;
use serde::{Deserialize, Serialize};

use super::error::io_err;
use super::whisper::{whisper_config, Ct2Backend, Ct2Model, WhisperEncoder, MODEL_FILE};
use super::AcousticError;

/// The exported weights inside an export folder.
pub const EXPORT_WEIGHTS: &str = "encoder.safetensors";
/// The export's manifest: what it holds and where it came from.
pub const EXPORT_MANIFEST: &str = "frontend.json";
/// Version of the manifest's layout.
pub const EXPORT_FORMAT: u32 = 1;

/// Storage type of the exported weights (the encoder always computes in f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportDType {
    F16,
    F32,
}

impl ExportDType {
    fn dtype(self) -> DType {
        match self {
            Self::F16 => DType::F16,
            Self::F32 => DType::F32,
        }
    }
}

impl std::fmt::Display for ExportDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F16 => "f16",
            Self::F32 => "f32",
        })
    }
}

impl std::str::FromStr for ExportDType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f16" => Ok(Self::F16),
            "f32" => Ok(Self::F32),
            other => Err(format!("dtype must be f16 or f32, not '{other}'")),
        }
    }
}

/// `frontend.json`: the encoder's shape and the export's origin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportManifest {
    pub format: u32,
    /// Name of the source folder (e.g. `whisper-base`).
    pub source: String,
    /// sha256 of the source's `model.bin`.
    pub source_sha256: String,
    /// Encoder blocks exported (the first ones); a model needing more cannot use it.
    pub blocks: usize,
    /// Encoder blocks of the source model.
    pub source_blocks: usize,
    pub dtype: ExportDType,
    pub num_mel_bins: usize,
    pub max_source_positions: usize,
    pub d_model: usize,
    pub encoder_attention_heads: usize,
}

impl ExportManifest {
    /// The candle Whisper configuration of the exported encoder (no decoder).
    pub fn config(&self) -> Config {
        Config {
            num_mel_bins: self.num_mel_bins,
            max_source_positions: self.max_source_positions,
            d_model: self.d_model,
            encoder_attention_heads: self.encoder_attention_heads,
            encoder_layers: self.blocks,
            vocab_size: 0,
            max_target_positions: 0,
            decoder_attention_heads: 0,
            decoder_layers: 0,
            suppress_tokens: Vec::new(),
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportReport {
    pub out: PathBuf,
    pub manifest: ExportManifest,
    pub tensors: usize,
    pub parameters: usize,
    pub weights_bytes: u64,
    pub source_bytes: u64,
}

/// A backend that hands out the inner backend's tensors and keeps a copy of each one asked
/// for (in `seen`, which the caller shares): loading the encoder through it lists exactly the
/// tensors the encoder uses.
struct Recording<B> {
    inner: B,
    seen: std::sync::Arc<Mutex<BTreeMap<String, Tensor>>>,
}

impl<B: SimpleBackend> Recording<B> {
    fn keep(&self, name: &str, t: candle_core::Result<Tensor>) -> candle_core::Result<Tensor> {
        let t = t?;
        self.seen
            .lock()
            .map_err(|_| candle_core::Error::Msg("recording lock poisoned".into()))?
            .insert(name.to_string(), t.clone());
        Ok(t)
    }
}

impl<B: SimpleBackend> SimpleBackend for Recording<B> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.keep(name, self.inner.get(s, name, h, dtype, dev))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.keep(name, self.inner.get_unchecked(name, dtype, dev))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Export the first `blocks` encoder blocks of the CTranslate2 Whisper folder `source` into
/// the folder `out` ([`EXPORT_WEIGHTS`] + [`EXPORT_MANIFEST`]). Refuses an `out` that already
/// holds an export unless `force`, and one that holds a CTranslate2 model.
pub fn export_frontend(
    source: &Path,
    blocks: usize,
    dtype: ExportDType,
    out: &Path,
    force: bool,
) -> Result<ExportReport, AcousticError> {
    let bad = |path: &Path, message: String| AcousticError::Export {
        path: path.to_path_buf(),
        message,
    };
    let model_file = source.join(MODEL_FILE);
    if !model_file.is_file() {
        return Err(bad(
            source,
            format!("no {MODEL_FILE} here: give the folder of a CTranslate2 Whisper model (e.g. models/whisper-base)"),
        ));
    }
    if out.join(MODEL_FILE).exists() {
        return Err(bad(
            out,
            format!("holds a CTranslate2 model ({MODEL_FILE}); export into another folder"),
        ));
    }
    if !force && (out.join(EXPORT_WEIGHTS).exists() || out.join(EXPORT_MANIFEST).exists()) {
        return Err(bad(
            out,
            "already holds an exported front end; add --force to replace it".into(),
        ));
    }
    let model = Ct2Model::read(&model_file)?;
    let cfg = whisper_config(&model, None)?;
    if blocks == 0 || blocks > cfg.encoder_layers {
        return Err(bad(
            source,
            format!(
                "--blocks {blocks}: the encoder has blocks 1 to {}",
                cfg.encoder_layers
            ),
        ));
    }
    let source_sha256 =
        crate::catalog::sha256_file(&model_file).map_err(|e| bad(&model_file, e.to_string()))?;
    let source_bytes = std::fs::metadata(&model_file)
        .map_err(io_err(&model_file))?
        .len();

    let seen = std::sync::Arc::new(Mutex::new(BTreeMap::new()));
    let recording = Recording {
        inner: Ct2Backend::new(model),
        seen: seen.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(recording), DType::F32, Device::Cpu);
    WhisperEncoder::load_blocks(&cfg, vb, blocks)?;
    let seen = std::mem::take(
        &mut *seen
            .lock()
            .map_err(|_| candle_core::Error::Msg("recording lock poisoned".into()))?,
    );
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut parameters = 0;
    for (name, t) in seen {
        parameters += t.elem_count();
        tensors.insert(name, t.to_dtype(dtype.dtype())?);
    }

    std::fs::create_dir_all(out).map_err(io_err(out))?;
    // Written beside, then renamed: a failed export never leaves a half file under the name.
    let weights = out.join(EXPORT_WEIGHTS);
    let part = out.join(format!("{EXPORT_WEIGHTS}.part"));
    candle_core::safetensors::save(&tensors, &part).map_err(|e| AcousticError::Tensors {
        path: part.clone(),
        source: Box::new(e),
    })?;
    std::fs::rename(&part, &weights).map_err(io_err(&weights))?;
    let manifest = ExportManifest {
        format: EXPORT_FORMAT,
        source: source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source_sha256,
        blocks,
        source_blocks: cfg.encoder_layers,
        dtype,
        num_mel_bins: cfg.num_mel_bins,
        max_source_positions: cfg.max_source_positions,
        d_model: cfg.d_model,
        encoder_attention_heads: cfg.encoder_attention_heads,
    };
    let manifest_path = out.join(EXPORT_MANIFEST);
    let json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| bad(&manifest_path, e.to_string()))?;
    std::fs::write(&manifest_path, json).map_err(io_err(&manifest_path))?;
    let weights_bytes = std::fs::metadata(&weights).map_err(io_err(&weights))?.len();
    Ok(ExportReport {
        out: out.to_path_buf(),
        manifest,
        tensors: tensors.len(),
        parameters,
        weights_bytes,
        source_bytes,
    })
}

/// Whether `dir` holds an exported front end (its manifest).
pub fn is_export(dir: &Path) -> bool {
    dir.join(EXPORT_MANIFEST).is_file()
}

/// Read an export's manifest, checking its layout.
pub fn read_manifest(dir: &Path) -> Result<ExportManifest, AcousticError> {
    let path = dir.join(EXPORT_MANIFEST);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let bad = |message: String| AcousticError::Export {
        path: path.clone(),
        message,
    };
    let m: ExportManifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not an export manifest: {e}")))?;
    if m.format != EXPORT_FORMAT {
        return Err(bad(format!(
            "export format {} (this camxuc reads {EXPORT_FORMAT})",
            m.format
        )));
    }
    if m.blocks == 0
        || m.d_model == 0
        || m.encoder_attention_heads == 0
        || !m.d_model.is_multiple_of(m.encoder_attention_heads)
        || m.num_mel_bins == 0
    {
        return Err(bad(format!(
            "inconsistent encoder shape: {} blocks, width {}, {} heads, {} mel bins",
            m.blocks, m.d_model, m.encoder_attention_heads, m.num_mel_bins
        )));
    }
    Ok(m)
}

/// Load an exported front end's encoder with `blocks` blocks (at most the number exported),
/// computing in f32 on `device`.
pub fn load_exported(
    dir: &Path,
    blocks: usize,
    device: &Device,
) -> Result<(WhisperEncoder, ExportManifest), AcousticError> {
    let m = read_manifest(dir)?;
    if blocks > m.blocks {
        return Err(AcousticError::Export {
            path: dir.to_path_buf(),
            message: format!(
                "exported with {} encoder blocks; the model needs {blocks}: export again with --blocks {blocks}",
                m.blocks
            ),
        });
    }
    let path = dir.join(EXPORT_WEIGHTS);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let wrap = |e: candle_core::Error| AcousticError::Tensors {
        path: path.clone(),
        source: Box::new(e),
    };
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device).map_err(wrap)?;
    let encoder = WhisperEncoder::load_blocks(&m.config(), vb, blocks).map_err(wrap)?;
    Ok((encoder, m))
}
