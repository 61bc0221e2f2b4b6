//! LoRA adapter weights: low-rank updates `W + (alpha / r) · B·A` on chosen projections of
//! chosen layers, the only trainable tensors; saved as safetensors whose header says which
//! base model, layers, label tokens and prompt they belong to.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::gguf::GgufFile;
use super::forward::{candle_err, LlamaShape};
use super::{LoraConfig, LoraError, LoraTarget};

/// Key of the JSON header in the safetensors metadata.
const HEADER_KEY: &str = "camxuc_lora";
const FORMAT: &str = "camxuc-lora/1";

/// What the adapters were trained for; saved with them and checked on load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraHeader {
    pub format: String,
    /// sha256 of the GGUF the adapters were trained on (the frozen base).
    pub base_sha256: String,
    pub rank: usize,
    pub alpha: f64,
    pub layers: Vec<usize>,
    pub targets: Vec<LoraTarget>,
    pub seed: u64,
    /// Labels in the order the answer tokens are scored.
    pub labels: Vec<String>,
    /// First token of each label's answer: where the classification logits are read.
    pub label_tokens: Vec<u32>,
    /// The prompt layout the adapters expect (see [`super::PROMPT_VERSION`]).
    pub prompt_version: String,
    /// Free text: what it was trained on.
    pub trained_on: String,
}

/// Trainable adapters over a frozen base.
pub struct LoraAdapters {
    header: LoraHeader,
    /// `(A: (r, in), B: (out, r))` per layer and projection.
    weights: BTreeMap<(usize, LoraTarget), (Var, Var)>,
    scale: f64,
}

impl LoraAdapters {
    /// Fresh adapters: A uniform in ±1/√in (seeded ChaCha8; candle's CPU RNG cannot be
    /// seeded), B zero, so the adapted model starts as the base model.
    pub fn new(
        shape: &LlamaShape,
        config: &LoraConfig,
        base_sha256: &str,
        labels: &[String],
        label_tokens: &[u32],
    ) -> Result<Self, LoraError> {
        let layers = config.layers(shape.n_layer);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut weights = BTreeMap::new();
        let dev = Device::Cpu;
        let r = config.rank.max(1);
        for &l in &layers {
            for &t in &config.targets {
                let (inp, out) = (shape.n_embd, shape.out_dim(t));
                let bound = 1.0 / (inp as f32).sqrt();
                let a: Vec<f32> = (0..r * inp)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                let a = Tensor::from_vec(a, (r, inp), &dev).map_err(mem_err)?;
                let b = Tensor::zeros((out, r), DType::F32, &dev).map_err(mem_err)?;
                weights.insert(
                    (l, t),
                    (
                        Var::from_tensor(&a).map_err(mem_err)?,
                        Var::from_tensor(&b).map_err(mem_err)?,
                    ),
                );
            }
        }
        Ok(Self {
            header: LoraHeader {
                format: FORMAT.into(),
                base_sha256: base_sha256.into(),
                rank: r,
                alpha: config.alpha,
                layers,
                targets: config.targets.clone(),
                seed: config.seed,
                labels: labels.to_vec(),
                label_tokens: label_tokens.to_vec(),
                prompt_version: super::PROMPT_VERSION.into(),
                trained_on: String::new(),
            },
            weights,
            scale: config.alpha / r as f64,
        })
    }

    pub fn header(&self) -> &LoraHeader {
        &self.header
    }

    pub fn set_trained_on(&mut self, text: &str) {
        self.header.trained_on = text.into();
    }

    /// The lowest adapted layer: layers below it are the base model's.
    pub fn first_layer(&self) -> usize {
        self.header
            .layers
            .iter()
            .copied()
            .min()
            .unwrap_or(usize::MAX)
    }

    /// The trainable tensors.
    pub fn vars(&self) -> Vec<Var> {
        self.weights
            .values()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect()
    }

    /// The update `scale · (h·Aᵀ)·Bᵀ` for input `h` `(seq, in)`, if this projection is adapted.
    pub fn delta(
        &self,
        layer: usize,
        target: LoraTarget,
        h: &Tensor,
    ) -> Option<candle_core::Result<Tensor>> {
        let (a, b) = self.weights.get(&(layer, target))?;
        Some(
            h.matmul(&a.as_tensor().t().ok()?)
                .and_then(|t| t.matmul(&b.as_tensor().t()?))
                .and_then(|t| t * self.scale),
        )
    }

    /// Writes the adapters as safetensors (`blk.L.T.lora_a` / `lora_b`) with the header as
    /// JSON under the metadata key `camxuc_lora`.
    pub fn save(&self, path: &Path) -> Result<(), LoraError> {
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for ((l, t), (a, b)) in &self.weights {
            for (suffix, v) in [("lora_a", a), ("lora_b", b)] {
                let data: Vec<f32> = v
                    .as_tensor()
                    .flatten_all()
                    .and_then(|x| x.to_vec1())
                    .map_err(|e| candle_err(path, "adapter tensor", e))?;
                let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
                owned.push((
                    format!("blk.{l}.{}.{suffix}", t.as_str()),
                    v.as_tensor().dims().to_vec(),
                    bytes,
                ));
            }
        }
        let views = owned
            .iter()
            .map(|(n, s, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| st_err(path, e))?;
        let header = serde_json::to_string(&self.header).map_err(|e| LoraError::Adapter {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let meta = HashMap::from([(HEADER_KEY.to_string(), header)]);
        safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| st_err(path, e))
    }

    /// Reads adapters saved by [`Self::save`] and checks them against `base`: same GGUF
    /// (sha256), layers and widths that exist in it.
    pub fn load(path: &Path, base: &GgufFile) -> Result<Self, LoraError> {
        let bytes = std::fs::read(path).map_err(|source| LoraError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| st_err(path, e))?;
        let header_json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(HEADER_KEY))
            .ok_or_else(|| LoraError::Adapter {
                path: path.to_path_buf(),
                reason: format!("no `{HEADER_KEY}` header: not camxuc LoRA adapters"),
            })?;
        let header: LoraHeader =
            serde_json::from_str(header_json).map_err(|e| LoraError::Adapter {
                path: path.to_path_buf(),
                reason: format!("header: {e}"),
            })?;
        let bad = |reason: String| LoraError::Adapter {
            path: path.to_path_buf(),
            reason,
        };
        if header.format != FORMAT {
            return Err(bad(format!("format {} (expected {FORMAT})", header.format)));
        }
        let sha = sha256_of(base.path())?;
        if sha != header.base_sha256 {
            return Err(bad(format!(
                "trained on base model {} but {} has sha256 {sha}",
                header.base_sha256,
                base.path().display()
            )));
        }
        let shape = LlamaShape::from_gguf(base)?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| st_err(path, e))?;
        let mut weights = BTreeMap::new();
        let r = header.rank;
        for &l in &header.layers {
            if l >= shape.n_layer {
                return Err(bad(format!(
                    "layer {l} but the base has {} layers",
                    shape.n_layer
                )));
            }
            for &t in &header.targets {
                let mut pair = Vec::with_capacity(2);
                for (suffix, dims) in [
                    ("lora_a", [r, shape.n_embd]),
                    ("lora_b", [shape.out_dim(t), r]),
                ] {
                    let name = format!("blk.{l}.{}.{suffix}", t.as_str());
                    let view = st.tensor(&name).map_err(|e| st_err(path, e))?;
                    if view.dtype() != safetensors::Dtype::F32 || view.shape() != dims {
                        return Err(bad(format!(
                            "{name}: {:?} {:?}, expected F32 {dims:?}",
                            view.dtype(),
                            view.shape()
                        )));
                    }
                    let data: Vec<f32> = view
                        .data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    let t = Tensor::from_vec(data, dims.to_vec(), &Device::Cpu)
                        .and_then(|t| Var::from_tensor(&t))
                        .map_err(|e| candle_err(path, &name, e))?;
                    pair.push(t);
                }
                let b = pair.pop();
                let a = pair.pop();
                if let (Some(a), Some(b)) = (a, b) {
                    weights.insert((l, t), (a, b));
                }
            }
        }
        Ok(Self {
            scale: header.alpha / r.max(1) as f64,
            header,
            weights,
        })
    }

    /// Every adapter value, in a fixed order (for comparisons).
    pub fn flat_values(&self) -> candle_core::Result<Vec<f32>> {
        let mut out = Vec::new();
        for (a, b) in self.weights.values() {
            out.extend(a.as_tensor().flatten_all()?.to_vec1::<f32>()?);
            out.extend(b.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

/// sha256 of a file, streamed, hex.
pub fn sha256_of(path: &Path) -> Result<String, LoraError> {
    let io = |source| LoraError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn st_err(path: &Path, e: safetensors::SafeTensorError) -> LoraError {
    LoraError::Adapter {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn mem_err(e: candle_core::Error) -> LoraError {
    LoraError::Model {
        path: Default::default(),
        reason: format!("adapter init: {e}"),
    }
}
