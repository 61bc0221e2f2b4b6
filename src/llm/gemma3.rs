//! Gemma 3 decoder, owned because candle-transformers 0.11.1's `quantized_gemma3` precomputes
//! rotary tables for 131,072 positions in every layer (3.6 GB RSS, 8 s load), expands the
//! 262k-token embedding to f32 (+670 MB), gates the MLP with SiLU where Gemma uses tanh-GELU,
//! and builds a mask of mixed dtypes once a KV cache exists. Here: rotary tables for the
//! positions asked for (two tables, local and global, shared by all layers), a quantised
//! embedding lookup, tanh-GELU (vectorised, [`crate::math::gelu`]), and a causal +
//! sliding-window mask over cached positions.

use std::sync::Arc;

use super::error::LlmError;
use super::gguf::GgufFile;
use candle_core::quantized::QTensor;
use candle_core::{Device, IndexOp, Module, Result, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

use super::split::SplitPool;
#[cfg(feature = "research")]
use super::transformer::HiddenSum;
use super::transformer::{grouped_attention, rotary_tables, Proj, TensorSource};

#[derive(Debug, Clone)]
struct Layer {
    wq: Proj,
    wk: Proj,
    wv: Proj,
    wo: Proj,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    attn_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    post_ffn_norm: RmsNorm,
    gate: Proj,
    up: Proj,
    down: Proj,
    /// Local (sliding-window) layer: attends to the last `window` positions only.
    sliding: bool,
    kv: Option<(Tensor, Tensor)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Gemma3 {
    embedding: Arc<QTensor>,
    n_embd: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    window: usize,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Proj,
    /// (cos, sin) for global and for sliding layers (different rope bases).
    rope_global: (Tensor, Tensor),
    rope_local: (Tensor, Tensor),
    /// See [`super::transformer::HiddenSum`].
    #[cfg(feature = "research")]
    pub(crate) hidden_sum: Option<HiddenSum>,
}

/// Gemma 3's hyperparameters, read from the GGUF metadata (the one reader, [`GgufFile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma3Config {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub n_layer: usize,
    pub n_embd: usize,
    pub head_dim: usize,
    pub window: usize,
    pub eps: f64,
    /// Every `pattern`-th layer is global.
    pub pattern: usize,
    pub base_global: f32,
    pub base_local: f32,
}

impl Gemma3Config {
    pub fn from_gguf(file: &GgufFile) -> std::result::Result<Self, LlmError> {
        let cfg = Self {
            n_head: file.meta_usize("gemma3.attention.head_count")?,
            n_kv_head: file.meta_usize("gemma3.attention.head_count_kv")?,
            n_layer: file.meta_usize("gemma3.block_count")?,
            n_embd: file.meta_usize("gemma3.embedding_length")?,
            head_dim: file.meta_usize("gemma3.attention.key_length")?,
            window: file.meta_usize("gemma3.attention.sliding_window")?,
            eps: f64::from(
                file.meta_opt_f32("gemma3.attention.layer_norm_rms_epsilon")?
                    .unwrap_or(1e-6),
            ),
            // Every sixth layer is global, as in llama.cpp (the GGUF does not state the pattern).
            pattern: file
                .meta_opt_usize("gemma3.attention.sliding_window_type")?
                .unwrap_or(6)
                .max(1),
            base_global: file
                .meta_opt_f32("gemma3.rope.freq_base")?
                .unwrap_or(1_000_000.0),
            base_local: file
                .meta_opt_f32("gemma3.rope.local_freq_base")?
                .unwrap_or(10_000.0),
        };
        if cfg.n_kv_head == 0 || !cfg.n_head.is_multiple_of(cfg.n_kv_head) {
            return Err(LlmError::BadMetadata {
                path: file.path().to_path_buf(),
                key: "gemma3.attention.head_count_kv".into(),
                reason: format!(
                    "{} heads cannot share {} key/value heads",
                    cfg.n_head, cfg.n_kv_head
                ),
            });
        }
        Ok(cfg)
    }
}

impl Gemma3 {
    /// Load the weights; projections run on their own blocks ([`Proj::plain`]), half of each
    /// on `split`'s helper thread when given.
    pub fn load(
        cfg: &Gemma3Config,
        src: &mut dyn TensorSource,
        max_positions: usize,
        split: Option<Arc<SplitPool>>,
    ) -> Result<Self> {
        let Gemma3Config {
            n_head,
            n_kv_head,
            n_layer,
            n_embd,
            head_dim,
            window,
            eps,
            pattern,
            base_global,
            base_local,
        } = cfg.clone();
        let embedding = Arc::new(src.tensor("token_embd.weight")?);
        let output = if src.has("output.weight") {
            Proj::plain(Arc::new(src.tensor("output.weight")?), split.clone())?
        } else {
            // Tied embeddings: the same blocks serve as the output projection.
            Proj::plain(embedding.clone(), split.clone())?
        };
        let norm = RmsNorm::from_qtensor(src.tensor("output_norm.weight")?, eps)?;
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let p = format!("blk.{i}");
            let mut mm = |n: &str| {
                Proj::plain(
                    Arc::new(src.tensor(&format!("{p}.{n}.weight"))?),
                    split.clone(),
                )
            };
            let (wq, wk, wv, wo) = (
                mm("attn_q")?,
                mm("attn_k")?,
                mm("attn_v")?,
                mm("attn_output")?,
            );
            let (gate, up, down) = (mm("ffn_gate")?, mm("ffn_up")?, mm("ffn_down")?);
            let mut rn =
                |n: &str| RmsNorm::from_qtensor(src.tensor(&format!("{p}.{n}.weight"))?, eps);
            layers.push(Layer {
                wq,
                wk,
                wv,
                wo,
                q_norm: rn("attn_q_norm")?,
                k_norm: rn("attn_k_norm")?,
                attn_norm: rn("attn_norm")?,
                post_attn_norm: rn("post_attention_norm")?,
                ffn_norm: rn("ffn_norm")?,
                post_ffn_norm: rn("post_ffw_norm")?,
                gate,
                up,
                down,
                sliding: (i + 1) % pattern > 0,
                kv: None,
            });
        }
        Ok(Self {
            embedding,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            window,
            layers,
            norm,
            output,
            rope_global: rotary_tables(head_dim, base_global, max_positions)?,
            rope_local: rotary_tables(head_dim, base_local, max_positions)?,
            #[cfg(feature = "research")]
            hidden_sum: None,
        })
    }

    pub fn clear_kv_cache(&mut self) {
        for l in &mut self.layers {
            l.kv = None;
        }
    }

    /// Logits after the last of `tokens` (shape `(1, seq)`), fed at positions `pos..`.
    pub fn forward(&mut self, tokens: &Tensor, pos: usize) -> Result<Tensor> {
        let (_b, seq) = tokens.dims2()?;
        let dev = tokens.device();
        let mask_global = (seq > 1).then(|| mask(seq, pos, None, dev)).transpose()?;
        let mask_local = if seq > 1 || pos + seq > self.window {
            Some(mask(seq, pos, Some(self.window), dev)?)
        } else {
            None
        };
        let mut x = (self.embedding.embedding(tokens)? * (self.n_embd as f64).sqrt())?;
        let g = (
            self.rope_global.0.narrow(0, pos, seq)?,
            self.rope_global.1.narrow(0, pos, seq)?,
        );
        let l = (
            self.rope_local.0.narrow(0, pos, seq)?,
            self.rope_local.1.narrow(0, pos, seq)?,
        );
        let (n_head, n_kv, hd) = (self.n_head, self.n_kv_head, self.head_dim);
        for layer in &mut self.layers {
            let (rope, m) = if layer.sliding {
                (&l, mask_local.as_ref())
            } else {
                (&g, mask_global.as_ref())
            };
            let h = layer.attn_norm.forward(&x)?;
            let a = attention(layer, &h, m, rope, n_head, n_kv, hd)?;
            x = (x + layer.post_attn_norm.forward(&a)?)?;
            let h = layer.ffn_norm.forward(&x)?;
            let f = (crate::math::gelu::gelu_tanh(&layer.gate.forward(&h)?)?
                * layer.up.forward(&h)?)?;
            x = (x + layer.post_ffn_norm.forward(&layer.down.forward(&f)?)?)?;
        }
        #[cfg(feature = "research")]
        if let Some(acc) = self.hidden_sum.as_mut() {
            acc.add(&self.norm.forward(&x)?)?;
        }
        let last = self.norm.forward(&x.i((.., seq - 1, ..))?)?;
        self.output.forward(&last)?.squeeze(0)
    }
}

fn attention(
    layer: &mut Layer,
    x: &Tensor,
    mask: Option<&Tensor>,
    rope: &(Tensor, Tensor),
    n_head: usize,
    n_kv: usize,
    hd: usize,
) -> Result<Tensor> {
    let (b, seq, _) = x.dims3()?;
    let q = layer
        .wq
        .forward(x)?
        .reshape((b, seq, n_head, hd))?
        .transpose(1, 2)?;
    let k = layer
        .wk
        .forward(x)?
        .reshape((b, seq, n_kv, hd))?
        .transpose(1, 2)?;
    let v = layer
        .wv
        .forward(x)?
        .reshape((b, seq, n_kv, hd))?
        .transpose(1, 2)?
        .contiguous()?;
    let q = layer.q_norm.forward(&q.contiguous()?)?;
    let k = layer.k_norm.forward(&k.contiguous()?)?;
    let q = candle_nn::rotary_emb::rope(&q, &rope.0, &rope.1)?;
    let k = candle_nn::rotary_emb::rope(&k, &rope.0, &rope.1)?;
    let (k, v) = match &layer.kv {
        Some((kc, vc)) => (Tensor::cat(&[kc, &k], 2)?, Tensor::cat(&[vc, &v], 2)?),
        None => (k, v),
    };
    layer.kv = Some((k.clone(), v.clone()));
    let y = grouped_attention(&q, &k, &v, mask, n_kv)?
        .transpose(1, 2)?
        .reshape((b, seq, n_head * hd))?;
    layer.wo.forward(&y)
}

/// 1 where query `pos + i` may not see key `j`: the future, and for sliding layers keys more
/// than `window` positions back.
fn mask(seq: usize, pos: usize, window: Option<usize>, dev: &Device) -> Result<Tensor> {
    let kv = pos + seq;
    let data: Vec<u8> = (0..seq)
        .flat_map(|i| {
            let q = pos + i;
            (0..kv).map(move |j| u8::from(j > q || window.is_some_and(|w| j + w <= q)))
        })
        .collect();
    Tensor::from_vec(data, (seq, kv), dev)
}
