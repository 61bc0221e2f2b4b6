//! A trainable f32 llama forward (SmolLM2 and other `llama` GGUFs), the weights dequantised
//! from the GGUF once and frozen; only the LoRA adapters are candle `Var`s.
//!
//! Written here rather than hooked into `transformer.rs` because training needs ops with a
//! backward pass: candle 0.11.1's fused rotary, softmax and RMS-norm kernels have none, so
//! the differentiable path uses their tensor-op forms (`rope_i_slow`, `softmax`,
//! `rms_norm_slow`), and because the quantised products there quantise activations too.
//!
//! Sequences are unbatched, `(seq, dim)`: prompts differ in length and training runs one
//! clip at a time.

use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};

use super::super::gguf::{Architecture, GgufFile};
use super::adapters::LoraAdapters;
use super::LoraError;

/// Shape of the decoder, from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaShape {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub rms_eps: f64,
    pub vocab: usize,
}

impl LlamaShape {
    pub fn from_gguf(file: &GgufFile) -> Result<Self, LoraError> {
        if file.architecture() != Architecture::Llama {
            return Err(LoraError::Unsupported {
                path: file.path().to_path_buf(),
                reason: format!(
                    "LoRA training supports llama-architecture GGUFs only, this one is {}",
                    file.architecture().as_str()
                ),
            });
        }
        let key = |k: &str| format!("llama.{k}");
        let n_embd = file.meta_usize(&key("embedding_length"))?;
        let n_head = file.meta_usize(&key("attention.head_count"))?;
        let n_kv_head = file.meta_usize(&key("attention.head_count_kv"))?;
        if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 || n_embd % n_head != 0 {
            return Err(LoraError::Unsupported {
                path: file.path().to_path_buf(),
                reason: format!("{n_head} heads / {n_kv_head} kv heads / width {n_embd}"),
            });
        }
        let vocab = file
            .content()
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .unwrap_or(0);
        Ok(Self {
            n_layer: file.meta_usize(&key("block_count"))?,
            n_embd,
            n_head,
            n_kv_head,
            head_dim: n_embd / n_head,
            rope_base: file
                .meta_opt_f32(&key("rope.freq_base"))?
                .unwrap_or(10_000.0),
            rms_eps: f64::from(
                file.meta_opt_f32(&key("attention.layer_norm_rms_epsilon"))?
                    .unwrap_or(1e-5),
            ),
            vocab,
        })
    }

    /// Output width of projection `target` (q/o: model width, k/v: the shared kv heads).
    pub fn out_dim(&self, target: super::LoraTarget) -> usize {
        match target {
            super::LoraTarget::K | super::LoraTarget::V => self.n_kv_head * self.head_dim,
            super::LoraTarget::Q | super::LoraTarget::O => self.n_embd,
        }
    }
}

/// Frozen f32 weights of one decoder layer, `(out, in)` as stored.
struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// Per-layer keys and values (after rotary) of a shared prompt prefix, from the base model.
#[derive(Debug, Clone)]
pub struct PrefixKv {
    /// `(k, v)` per layer, each `(1, n_kv_head, len, head_dim)`.
    kv: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl PrefixKv {
    /// Tokens in the prefix.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The base model in f32.
pub struct F32Llama {
    shape: LlamaShape,
    embedding: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    cos: Tensor,
    sin: Tensor,
}

/// Longest prompt (prefix + suffix) the rotary tables cover.
const MAX_POSITIONS: usize = 4096;

impl F32Llama {
    /// Dequantises every tensor of a llama GGUF to f32 (SmolLM2-135M: ~540 MB).
    pub fn load(file: &GgufFile) -> Result<Self, LoraError> {
        let shape = LlamaShape::from_gguf(file)?;
        let path = file.path();
        let reader = File::open(path).map_err(|source| LoraError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(reader);
        let dev = Device::Cpu;
        let mut get = |name: &str| -> Result<Tensor, LoraError> {
            let q = file
                .content()
                .tensor(&mut reader, name, &dev)
                .map_err(|e| candle_err(path, &format!("tensor {name}"), e))?;
            q.dequantize(&dev)
                .map_err(|e| candle_err(path, &format!("dequantise {name}"), e))
        };
        let embedding = get("token_embd.weight")?;
        let norm = get("output_norm.weight")?;
        if file.content().tensor_infos.contains_key("output.weight") {
            return Err(LoraError::Unsupported {
                path: path.to_path_buf(),
                reason: "untied output projection (only tied embeddings are supported)".into(),
            });
        }
        let mut layers = Vec::with_capacity(shape.n_layer);
        for i in 0..shape.n_layer {
            let mut t = |n: &str| get(&format!("blk.{i}.{n}.weight"));
            layers.push(Layer {
                attn_norm: t("attn_norm")?,
                wq: t("attn_q")?,
                wk: t("attn_k")?,
                wv: t("attn_v")?,
                wo: t("attn_output")?,
                ffn_norm: t("ffn_norm")?,
                gate: t("ffn_gate")?,
                up: t("ffn_up")?,
                down: t("ffn_down")?,
            });
        }
        let (cos, sin) = super::super::transformer::rotary_tables(
            shape.head_dim,
            shape.rope_base,
            MAX_POSITIONS,
        )
        .map_err(|e| candle_err(path, "rotary tables", e))?;
        Ok(Self {
            shape,
            embedding,
            layers,
            norm,
            cos,
            sin,
        })
    }

    pub fn shape(&self) -> &LlamaShape {
        &self.shape
    }

    /// Token embeddings, `(seq, dim)`.
    pub fn embed(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(ids, &Device::Cpu)?;
        self.embedding.index_select(&ids, 0)
    }

    /// Runs the whole base model over a prefix (no adapters) and keeps its keys and values.
    pub fn prefix_kv(&self, ids: &[u32]) -> candle_core::Result<PrefixKv> {
        let mut x = self.embed(ids)?;
        let mut kv = Vec::with_capacity(self.layers.len());
        for l in 0..self.layers.len() {
            let (y, k, v) = self.layer(l, &x, 0, None, None, false)?;
            kv.push((k, v));
            x = y;
        }
        Ok(PrefixKv { kv, len: ids.len() })
    }

    /// Runs `x` (`(seq, dim)`, the input of layer `layers.start`, at positions after the
    /// prefix) through `layers`. Adapters apply where they have weights; `differentiable`
    /// picks the tensor-op forms of rotary/softmax/norm that have a backward pass.
    pub fn run_layers(
        &self,
        x: &Tensor,
        layers: Range<usize>,
        prefix: &PrefixKv,
        adapters: Option<&LoraAdapters>,
        differentiable: bool,
    ) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for l in layers {
            x = self
                .layer(l, &x, prefix.len, Some(prefix), adapters, differentiable)?
                .0;
        }
        Ok(x)
    }

    /// Logits of `token_ids` (e.g. the labels' first answer tokens) after the last row of
    /// the final hidden states `x` (`(seq, dim)`): final norm, then the tied embedding rows.
    pub fn logits_at_last(&self, x: &Tensor, token_ids: &[u32]) -> candle_core::Result<Tensor> {
        let seq = x.dim(0)?;
        let last = x.narrow(0, seq - 1, 1)?;
        let h = candle_nn::ops::rms_norm_slow(&last, &self.norm, self.shape.rms_eps as f32)?;
        let rows = self
            .embedding
            .index_select(&Tensor::new(token_ids, &Device::Cpu)?, 0)?;
        h.matmul(&rows.t()?)?.squeeze(0)
    }

    /// Next-token logits over the whole vocabulary after `ids`, base model, no cache (the
    /// reference the tests compare the quantised decoder against).
    pub fn next_token_logits(&self, ids: &[u32]) -> candle_core::Result<Vec<f32>> {
        let empty = self.empty_prefix()?;
        let x = self.run_layers(&self.embed(ids)?, 0..self.layers.len(), &empty, None, false)?;
        let seq = x.dim(0)?;
        let last = x.narrow(0, seq - 1, 1)?;
        let h = candle_nn::ops::rms_norm(&last, &self.norm, self.shape.rms_eps as f32)?;
        h.matmul(&self.embedding.t()?)?.squeeze(0)?.to_vec1()
    }

    fn empty_prefix(&self) -> candle_core::Result<PrefixKv> {
        let s = &self.shape;
        let z = Tensor::zeros((1, s.n_kv_head, 0, s.head_dim), DType::F32, &Device::Cpu)?;
        Ok(PrefixKv {
            kv: vec![(z.clone(), z); self.layers.len()],
            len: 0,
        })
    }

    /// One decoder layer over `x` at positions `pos..`; returns the output and this
    /// segment's keys and values (after rotary).
    fn layer(
        &self,
        l: usize,
        x: &Tensor,
        pos: usize,
        prefix: Option<&PrefixKv>,
        adapters: Option<&LoraAdapters>,
        differentiable: bool,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        use super::LoraTarget::{K, O, Q, V};
        let s = &self.shape;
        let w = &self.layers[l];
        let seq = x.dim(0)?;
        let norm = |x: &Tensor, a: &Tensor| {
            if differentiable {
                candle_nn::ops::rms_norm_slow(x, a, s.rms_eps as f32)
            } else {
                candle_nn::ops::rms_norm(x, a, s.rms_eps as f32)
            }
        };
        let proj = |h: &Tensor, wt: &Tensor, t| -> candle_core::Result<Tensor> {
            let base = h.matmul(&wt.t()?)?;
            match adapters.and_then(|a| a.delta(l, t, h)) {
                Some(d) => base + d?,
                None => Ok(base),
            }
        };
        let h = norm(x, &w.attn_norm)?;
        let heads = |t: Tensor, n: usize| -> candle_core::Result<Tensor> {
            t.reshape((seq, n, s.head_dim))?
                .transpose(0, 1)?
                .unsqueeze(0)?
                .contiguous()
        };
        let q = heads(proj(&h, &w.wq, Q)?, s.n_head)?;
        let k = heads(proj(&h, &w.wk, K)?, s.n_kv_head)?;
        let v = heads(proj(&h, &w.wv, V)?, s.n_kv_head)?;
        let cos = self.cos.narrow(0, pos, seq)?.contiguous()?;
        let sin = self.sin.narrow(0, pos, seq)?.contiguous()?;
        let (q, k) = if differentiable {
            (
                candle_nn::rotary_emb::rope_i_slow(&q, &cos, &sin)?,
                candle_nn::rotary_emb::rope_i_slow(&k, &cos, &sin)?,
            )
        } else {
            (
                candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
                candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
            )
        };
        let (k_all, v_all) = match prefix.filter(|p| p.len > 0) {
            Some(p) => (
                Tensor::cat(&[&p.kv[l].0, &k], 2)?,
                Tensor::cat(&[&p.kv[l].1, &v], 2)?,
            ),
            None => (k.clone(), v.clone()),
        };
        let y = attention(&q, &k_all, &v_all, pos, s.n_kv_head, differentiable)?;
        let y = y
            .squeeze(0)?
            .transpose(0, 1)?
            .reshape((seq, s.n_head * s.head_dim))?;
        let x = (x + proj(&y, &w.wo, O)?)?;
        let h = norm(&x, &w.ffn_norm)?;
        let g = h.matmul(&w.gate.t()?)?.silu()?;
        let u = h.matmul(&w.up.t()?)?;
        let x = (&x + (g * u)?.matmul(&w.down.t()?)?)?;
        Ok((x, k, v))
    }
}

/// Causal grouped-query attention of `q` `(1, n_head, seq, d)` at positions `pos..` against
/// `k`, `v` `(1, n_kv, pos + seq, d)`: the query heads sharing a kv head are stacked along
/// the sequence axis so the keys are not copied (as in `transformer.rs`).
fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pos: usize,
    n_kv: usize,
    differentiable: bool,
) -> candle_core::Result<Tensor> {
    let (b, n_head, seq, d) = q.dims4()?;
    let rep = n_head / n_kv;
    let kv_len = k.dim(2)?;
    let q = q.reshape((b, n_kv, rep * seq, d))?;
    let att = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let att = if seq > 1 {
        // Additive mask: 0 where visible, -inf after the query's own position.
        let mask: Vec<f32> = (0..seq)
            .flat_map(|i| {
                (0..kv_len).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (1, 1, 1, seq, kv_len), &Device::Cpu)?;
        att.reshape((b, n_kv, rep, seq, kv_len))?
            .broadcast_add(&mask)?
            .reshape((b, n_kv, rep * seq, kv_len))?
    } else {
        att
    };
    let att = if differentiable {
        candle_nn::ops::softmax(&att, D::Minus1)?
    } else {
        candle_nn::ops::softmax_last_dim(&att)?
    };
    att.matmul(&v.contiguous()?)?.reshape((b, n_head, seq, d))
}

pub(super) fn candle_err(path: &Path, what: &str, e: candle_core::Error) -> LoraError {
    LoraError::Model {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}
