//! CTranslate2 Whisper names → the names candle-transformers' `whisper::model` asks for,
//! served lazily through a candle `VarBuilder` backend, plus the model `Config`.
//!
//! CTranslate2 fuses some projections that candle keeps apart:
//! - self-attention `linear_0` is q,k,v stacked on the output dimension ([3d, d]);
//! - decoder cross-attention keeps q alone (`linear_0`) and stacks k,v (`linear_1`, [2d, d]).
//!
//! Whisper's key projection has no bias (CTranslate2 stores zeros there), and a key bias
//! cannot change attention anyway (it adds the same constant to every score of a query), so
//! the k part of the fused bias is simply not used.

use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use candle_transformers::models::whisper::Config;

use super::ct2::{Ct2Error, Ct2Model};

/// Where one candle tensor comes from: a CT2 variable, or one equal slice of it along dim 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ct2Source {
    pub name: String,
    /// `(part, n_parts)`: rows `part·n/n_parts .. (part+1)·n/n_parts` of a fused matrix.
    pub split: Option<(usize, usize)>,
}

/// The CT2 source of a candle Whisper variable name, e.g.
/// `model.encoder.layers.2.self_attn.k_proj.weight` → rows 512..1024 of
/// `encoder/layer_2/self_attention/linear_0/weight`.
pub fn ct2_source(candle_name: &str) -> Option<Ct2Source> {
    let (side, rest) = if let Some(rest) = candle_name.strip_prefix("model.encoder.") {
        ("encoder", rest)
    } else {
        ("decoder", candle_name.strip_prefix("model.decoder.")?)
    };
    let whole = |name: String| Some(Ct2Source { name, split: None });
    match rest {
        "embed_positions.weight" => return whole(format!("{side}/position_encodings/encodings")),
        "embed_tokens.weight" if side == "decoder" => {
            return whole("decoder/embeddings/weight".to_string())
        }
        "layer_norm.weight" => return whole(format!("{side}/layer_norm/gamma")),
        "layer_norm.bias" => return whole(format!("{side}/layer_norm/beta")),
        _ => {}
    }
    if let Some(conv) = rest.strip_prefix("conv") {
        return (side == "encoder").then(|| Ct2Source {
            name: format!("encoder/conv{}", conv.replacen('.', "/", 1)),
            split: None,
        });
    }
    let rest = rest.strip_prefix("layers.")?;
    let (index, sub) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    let (module, param) = sub.rsplit_once('.')?;
    let norm_param = match param {
        "weight" => "gamma",
        "bias" => "beta",
        _ => return None,
    };
    let layer = format!("{side}/layer_{index}");
    let (name, split) = match module {
        "self_attn.q_proj" => (
            format!("{layer}/self_attention/linear_0/{param}"),
            Some((0, 3)),
        ),
        "self_attn.k_proj" => (
            format!("{layer}/self_attention/linear_0/{param}"),
            Some((1, 3)),
        ),
        "self_attn.v_proj" => (
            format!("{layer}/self_attention/linear_0/{param}"),
            Some((2, 3)),
        ),
        "self_attn.out_proj" => (format!("{layer}/self_attention/linear_1/{param}"), None),
        "self_attn_layer_norm" => (
            format!("{layer}/self_attention/layer_norm/{norm_param}"),
            None,
        ),
        "encoder_attn.q_proj" if side == "decoder" => {
            (format!("{layer}/attention/linear_0/{param}"), None)
        }
        "encoder_attn.k_proj" if side == "decoder" => {
            (format!("{layer}/attention/linear_1/{param}"), Some((0, 2)))
        }
        "encoder_attn.v_proj" if side == "decoder" => {
            (format!("{layer}/attention/linear_1/{param}"), Some((1, 2)))
        }
        "encoder_attn.out_proj" if side == "decoder" => {
            (format!("{layer}/attention/linear_2/{param}"), None)
        }
        "encoder_attn_layer_norm" if side == "decoder" => {
            (format!("{layer}/attention/layer_norm/{norm_param}"), None)
        }
        "fc1" => (format!("{layer}/ffn/linear_0/{param}"), None),
        "fc2" => (format!("{layer}/ffn/linear_1/{param}"), None),
        "final_layer_norm" => (format!("{layer}/ffn/layer_norm/{norm_param}"), None),
        _ => return None,
    };
    Some(Ct2Source { name, split })
}

/// A `VarBuilder` backend that converts CT2 variables on demand (f16 → f32 once, at load),
/// so building only the encoder never materialises the 26 M-entry token embedding.
pub struct Ct2Backend {
    model: Ct2Model,
}

impl Ct2Backend {
    pub fn new(model: Ct2Model) -> Self {
        Self { model }
    }

    fn load(&self, candle_name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let source = ct2_source(candle_name).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{}: no CTranslate2 variable maps to `{candle_name}`",
                self.model.path.display()
            ))
        })?;
        let variable = self
            .model
            .variable(&source.name)
            .map_err(candle_core::Error::wrap)?;
        let values = self
            .model
            .to_f32(&source.name)
            .map_err(candle_core::Error::wrap)?;
        let mut tensor = Tensor::from_vec(values, variable.shape.as_slice(), &Device::Cpu)?;
        if let Some((part, n_parts)) = source.split {
            let rows = tensor.dim(0)?;
            if rows % n_parts != 0 {
                return Err(candle_core::Error::Msg(format!(
                    "{}: `{}` has {rows} rows, not divisible into {n_parts} fused parts",
                    self.model.path.display(),
                    source.name
                )));
            }
            let len = rows / n_parts;
            tensor = tensor.narrow(0, part * len, len)?.contiguous()?;
        }
        tensor.to_dtype(dtype)?.to_device(dev)
    }
}

impl SimpleBackend for Ct2Backend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.load(name, dtype, dev)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name} in {}", self.model.path.display()),
                expected: s,
                got: tensor.shape().clone(),
            });
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        ct2_source(name).is_some_and(|s| self.model.variable(&s.name).is_ok())
    }
}

/// Builds candle's Whisper `Config` from the shapes and scalars stored in the model, and the
/// suppressed tokens from `config.json` beside it (when present).
pub fn whisper_config(model: &Ct2Model, config_json: Option<&Path>) -> Result<Config, Ct2Error> {
    const EXPECTED_SPEC: &str = "WhisperSpec";
    if model.spec_name != EXPECTED_SPEC {
        return Err(Ct2Error::WrongSpec {
            path: model.path.clone(),
            expected: EXPECTED_SPEC,
            found: model.spec_name.clone(),
        });
    }
    let dim = |name: &str, axis: usize| -> Result<usize, Ct2Error> {
        let variable = model.variable(name)?;
        variable
            .shape
            .get(axis)
            .copied()
            .ok_or_else(|| Ct2Error::BadVariable {
                path: model.path.clone(),
                name: name.to_string(),
                reason: format!("shape {:?} has no axis {axis}", variable.shape),
            })
    };
    let heads = |name: &str| -> Result<usize, Ct2Error> {
        let value = model.scalar_int(name)?;
        usize::try_from(value)
            .ok()
            .filter(|&h| h > 0)
            .ok_or_else(|| Ct2Error::BadVariable {
                path: model.path.clone(),
                name: name.to_string(),
                reason: format!("head count {value} is not positive"),
            })
    };
    let count_layers = |side: &str| {
        (0..)
            .take_while(|i| {
                model
                    .variables
                    .contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    };
    let suppress_tokens = match config_json {
        Some(path) if path.exists() => read_suppress_ids(path)?,
        _ => Vec::new(),
    };
    let config = Config {
        num_mel_bins: dim("encoder/conv1/weight", 1)?,
        max_source_positions: dim("encoder/position_encodings/encodings", 0)?,
        d_model: dim("encoder/conv1/weight", 0)?,
        encoder_attention_heads: heads("encoder/num_heads")?,
        encoder_layers: count_layers("encoder"),
        vocab_size: dim("decoder/embeddings/weight", 0)?,
        max_target_positions: dim("decoder/position_encodings/encodings", 0)?,
        decoder_attention_heads: heads("decoder/num_heads")?,
        decoder_layers: count_layers("decoder"),
        suppress_tokens,
    };
    if config.encoder_layers == 0
        || !config
            .d_model
            .is_multiple_of(config.encoder_attention_heads)
    {
        return Err(Ct2Error::Config {
            path: model.path.clone(),
            reason: format!("inconsistent encoder: {config:?}"),
        });
    }
    Ok(config)
}

fn read_suppress_ids(path: &Path) -> Result<Vec<u32>, Ct2Error> {
    let bad = |reason: String| Ct2Error::Config {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| Ct2Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    match json.get("suppress_ids") {
        None => Ok(Vec::new()),
        Some(ids) => {
            serde_json::from_value(ids.clone()).map_err(|e| bad(format!("suppress_ids: {e}")))
        }
    }
}

/// Name of the weights file inside a CTranslate2 model directory.
pub const MODEL_FILE: &str = "model.bin";

/// Loads a CTranslate2 Whisper model directory (`model.bin`, optional `config.json`) as a
/// candle `Config` and a `VarBuilder` serving candle-transformers' names in f32.
pub fn load_ct2(
    model_dir: &Path,
    device: &Device,
) -> Result<(Config, VarBuilder<'static>), Ct2Error> {
    let model = Ct2Model::read(&model_dir.join(MODEL_FILE))?;
    let config = whisper_config(&model, Some(&model_dir.join("config.json")))?;
    let vb = VarBuilder::from_backend(Box::new(Ct2Backend::new(model)), DType::F32, device.clone());
    Ok((config, vb))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str) -> (String, Option<(usize, usize)>) {
        let s = ct2_source(name).unwrap_or_else(|| panic!("no mapping for {name}"));
        (s.name, s.split)
    }

    #[test]
    fn fused_projections_are_split_in_q_k_v_order() {
        let fused = "encoder/layer_2/self_attention/linear_0/weight".to_string();
        assert_eq!(
            source("model.encoder.layers.2.self_attn.q_proj.weight"),
            (fused.clone(), Some((0, 3)))
        );
        assert_eq!(
            source("model.encoder.layers.2.self_attn.k_proj.weight"),
            (fused.clone(), Some((1, 3)))
        );
        assert_eq!(
            source("model.encoder.layers.2.self_attn.v_proj.weight"),
            (fused, Some((2, 3)))
        );
        let kv = "decoder/layer_5/attention/linear_1/bias".to_string();
        assert_eq!(
            source("model.decoder.layers.5.encoder_attn.v_proj.bias"),
            (kv, Some((1, 2)))
        );
        assert_eq!(
            source("model.decoder.layers.5.encoder_attn.q_proj.weight"),
            (
                "decoder/layer_5/attention/linear_0/weight".to_string(),
                None
            )
        );
    }

    #[test]
    fn norms_ffn_convs_and_embeddings_map_by_role() {
        assert_eq!(
            source("model.encoder.layers.0.final_layer_norm.weight").0,
            "encoder/layer_0/ffn/layer_norm/gamma"
        );
        assert_eq!(
            source("model.decoder.layers.1.self_attn_layer_norm.bias").0,
            "decoder/layer_1/self_attention/layer_norm/beta"
        );
        assert_eq!(
            source("model.encoder.layers.3.fc2.weight").0,
            "encoder/layer_3/ffn/linear_1/weight"
        );
        assert_eq!(source("model.encoder.conv2.bias").0, "encoder/conv2/bias");
        assert_eq!(
            source("model.encoder.layer_norm.weight").0,
            "encoder/layer_norm/gamma"
        );
        assert_eq!(
            source("model.decoder.embed_tokens.weight").0,
            "decoder/embeddings/weight"
        );
        assert_eq!(
            source("model.decoder.embed_positions.weight").0,
            "decoder/position_encodings/encodings"
        );
        assert!(ct2_source("model.encoder.layers.0.encoder_attn.q_proj.weight").is_none());
        assert!(ct2_source("model.encoder.layers.x.fc1.weight").is_none());
        assert!(ct2_source("something.else").is_none());
    }
}
