//! One decoder for the llama family as stored in GGUF: llama (SmolLM2, Llama 3.x), qwen2
//! (q/k/v biases) and qwen3 (per-head q/k RMS norms). Owned rather than taken from
//! candle-transformers because candle's versions cost too much here: they expand the token
//! embedding to f32 (+113 MB for SmolLM2, +545 MB for Qwen2.5-0.5B) where a quantised row
//! lookup serves, size rotary tables to the trained context (32k+ positions), and cannot take
//! re-quantised tensors at load time. A clone of [`Transformer`] is an independent snapshot:
//! the weights are shared, and the KV cache ([`KvCache`]) grows in place only for the holder
//! at its tip.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_transformers::quantized_nn::RmsNorm;

use super::attention::causal_attention;
use super::kv_cache::KvCache;
use super::qmatrix::QMatrix;
use super::split::SplitPool;

/// Where the decoder's tensors come from (the loader re-quantises on the way).
pub(crate) trait TensorSource {
    fn tensor(&mut self, name: &str) -> Result<QTensor>;
    fn has(&self, name: &str) -> bool;
}

/// Shape and variant of a llama-family model, read from GGUF metadata.
#[derive(Debug, Clone)]
pub(crate) struct Hyper {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub rope_dim: usize,
    pub rope_base: f32,
    /// NEOX rotary layout (pairs i, i+d/2; Qwen) rather than interleaved (pairs 2i, 2i+1; Llama).
    pub rope_neox: bool,
    pub rms_eps: f64,
    /// Positions the rotary table covers; the KV cache may not grow past it.
    pub max_positions: usize,
    /// Widen Q8_0 projections whose input width is not a multiple of 256 with zero columns
    /// (see [`Proj`]).
    pub pad_inputs: bool,
    /// Threads for Q4_1 products (`LoadOptions::product_threads`): 2 or more gives the model
    /// a helper thread that takes half of each product.
    pub product_threads: usize,
    /// That helper, made by [`Transformer::load`].
    pub split: Option<Arc<SplitPool>>,
}

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: RmsNorm,
    wq: Proj,
    wk: Proj,
    wv: Proj,
    wo: Proj,
    /// qwen2 only.
    bias_qkv: Option<(Tensor, Tensor, Tensor)>,
    /// qwen3 only: RMS norm over each head's q and k.
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    ffn_norm: RmsNorm,
    gate: Proj,
    up: Proj,
    down: Proj,
    kv: Option<KvCache>,
}

#[derive(Debug, Clone)]
pub(crate) struct Transformer {
    hyper: Hyper,
    /// Quantised token embedding; rows are dequantised on lookup.
    embedding: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Proj,
    cos: Tensor,
    sin: Tensor,
    /// When set, the final-normed hidden states of every fed token are summed here (the LLM
    /// as an encoder; research only).
    #[cfg(feature = "research")]
    pub(crate) hidden_sum: Option<HiddenSum>,
}

/// Running sum of final hidden states over fed tokens.
#[cfg(feature = "research")]
#[derive(Debug, Clone, Default)]
pub(crate) struct HiddenSum {
    sum: Option<Tensor>,
    tokens: usize,
}

#[cfg(feature = "research")]
impl HiddenSum {
    /// Adds hidden states of shape `(1, seq, dim)`.
    pub fn add(&mut self, h: &Tensor) -> Result<()> {
        let (_b, seq, _d) = h.dims3()?;
        let s = h.to_dtype(DType::F32)?.sum(1)?.squeeze(0)?;
        self.sum = Some(match self.sum.take() {
            Some(acc) => (acc + s)?,
            None => s,
        });
        self.tokens += seq;
        Ok(())
    }

    /// Mean hidden state (empty when no token was fed).
    pub fn mean(&self) -> Result<Vec<f32>> {
        match &self.sum {
            Some(s) => (s / self.tokens.max(1) as f64)?.to_vec1::<f32>(),
            None => Ok(Vec::new()),
        }
    }
}

/// Input widths candle 0.11.1's packed x86 kernels take (a Q8_K super-block).
const PACKED_K: usize = 256;

/// A quantised projection.
///
/// Q4_1, Q5_0, Q8_0 and K-quant weights run through [`QMatrix`] (candle 0.11.1 has only a
/// scalar Q4_1 / Q5_0 product, and its products differ with the number of rows in a pass).
/// Otherwise candle's product, possibly on weights widened with zero input columns: candle
/// runs Q8_0 products through packed AVX512-VNNI kernels only when the input width is a
/// multiple of 256; SmolLM2's 576 is not, so padding the weights to 768 zero-filled columns
/// (and the input with zeros) costs a third more arithmetic on a kernel that is several times
/// faster (`LoadOptions::packed_kernels`, off by default).
#[derive(Debug, Clone)]
pub(crate) enum Proj {
    Candle {
        mm: QMatMul,
        /// Zero columns appended to the input.
        pad: usize,
    },
    Own(Arc<QMatrix>),
}

impl Proj {
    fn load(src: &mut dyn TensorSource, name: &str, hyper: &Hyper) -> Result<Self> {
        Self::from_qtensor(src.tensor(name)?, hyper)
    }

    /// A projection on `t`'s own blocks: [`QMatrix`] (sharing products with `split`) where it
    /// runs the type, else candle's product.
    pub(crate) fn plain(t: Arc<QTensor>, split: Option<Arc<SplitPool>>) -> Result<Self> {
        Ok(match QMatrix::from_qtensor(t.clone(), split)? {
            Some(m) => Self::Own(Arc::new(m)),
            None => Self::Candle {
                mm: QMatMul::from_arc(t)?,
                pad: 0,
            },
        })
    }

    fn from_qtensor(t: QTensor, hyper: &Hyper) -> Result<Self> {
        // The packed kernels take Q8_0 weights widened for candle; everything else that
        // QMatrix runs goes there.
        let t = Arc::new(t);
        if !(hyper.pad_inputs && t.dtype() == GgmlDType::Q8_0) {
            if let Some(m) = QMatrix::from_qtensor(t.clone(), hyper.split.clone())? {
                return Ok(Self::Own(Arc::new(m)));
            }
        }
        let (_n, k) = t.shape().dims2()?;
        let pad = (PACKED_K - k % PACKED_K) % PACKED_K;
        if !hyper.pad_inputs || pad == 0 || t.dtype() != GgmlDType::Q8_0 {
            return Ok(Self::Candle {
                mm: QMatMul::from_arc(t)?,
                pad: 0,
            });
        }
        let w = t.dequantize(&Device::Cpu)?.pad_with_zeros(1, 0, pad)?;
        Ok(Self::Candle {
            mm: QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?)?,
            pad,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Candle { mm, pad: 0 } => mm.forward(x),
            Self::Candle { mm, pad } => mm.forward(&x.pad_with_zeros(D::Minus1, 0, *pad)?),
            Self::Own(m) => m.forward(x),
        }
    }
}

impl Transformer {
    pub fn load(mut hyper: Hyper, src: &mut dyn TensorSource, qwen2_bias: bool) -> Result<Self> {
        let device = Device::Cpu;
        if hyper.split.is_none() {
            hyper.split = SplitPool::for_threads(hyper.product_threads)?;
        }
        let embedding = Arc::new(src.tensor("token_embd.weight")?);
        let unpadded = Hyper {
            pad_inputs: false,
            ..hyper.clone()
        };
        let output = if src.has("output.weight") {
            Proj::load(src, "output.weight", &unpadded)?
        } else if let Some(m) = QMatrix::from_qtensor(embedding.clone(), hyper.split.clone())? {
            // Tied embeddings: the same blocks serve as the output projection.
            Proj::Own(Arc::new(m))
        } else {
            Proj::Candle {
                mm: QMatMul::from_arc(embedding.clone())?,
                pad: 0,
            }
        };
        let norm = RmsNorm::from_qtensor(src.tensor("output_norm.weight")?, hyper.rms_eps)?;
        let mut layers = Vec::with_capacity(hyper.n_layer);
        for i in 0..hyper.n_layer {
            let p = format!("blk.{i}");
            let bias_qkv = if qwen2_bias {
                let b = |src: &mut dyn TensorSource, n: &str| {
                    src.tensor(&format!("{p}.{n}.bias"))?.dequantize(&device)
                };
                Some((b(src, "attn_q")?, b(src, "attn_k")?, b(src, "attn_v")?))
            } else {
                None
            };
            let qk_norm = if src.has(&format!("{p}.attn_q_norm.weight")) {
                Some((
                    RmsNorm::from_qtensor(
                        src.tensor(&format!("{p}.attn_q_norm.weight"))?,
                        hyper.rms_eps,
                    )?,
                    RmsNorm::from_qtensor(
                        src.tensor(&format!("{p}.attn_k_norm.weight"))?,
                        hyper.rms_eps,
                    )?,
                ))
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: RmsNorm::from_qtensor(
                    src.tensor(&format!("{p}.attn_norm.weight"))?,
                    hyper.rms_eps,
                )?,
                wq: Proj::load(src, &format!("{p}.attn_q.weight"), &hyper)?,
                wk: Proj::load(src, &format!("{p}.attn_k.weight"), &hyper)?,
                wv: Proj::load(src, &format!("{p}.attn_v.weight"), &hyper)?,
                wo: Proj::load(src, &format!("{p}.attn_output.weight"), &hyper)?,
                bias_qkv,
                qk_norm,
                ffn_norm: RmsNorm::from_qtensor(
                    src.tensor(&format!("{p}.ffn_norm.weight"))?,
                    hyper.rms_eps,
                )?,
                gate: Proj::load(src, &format!("{p}.ffn_gate.weight"), &hyper)?,
                up: Proj::load(src, &format!("{p}.ffn_up.weight"), &hyper)?,
                down: Proj::load(src, &format!("{p}.ffn_down.weight"), &hyper)?,
                kv: None,
            });
        }
        let (cos, sin) = rotary_tables(hyper.rope_dim, hyper.rope_base, hyper.max_positions)?;
        Ok(Self {
            hyper,
            embedding,
            layers,
            norm,
            output,
            cos,
            sin,
            #[cfg(feature = "research")]
            hidden_sum: None,
        })
    }

    pub fn clear_kv_cache(&mut self) {
        for l in &mut self.layers {
            l.kv = None;
        }
    }

    /// Runs `tokens` (shape `(1, seq)`) at positions `pos..pos+seq` against the cache and
    /// returns the logits after the last token, shape `(vocab,)`.
    pub fn forward(&mut self, tokens: &Tensor, pos: usize) -> Result<Tensor> {
        let (_b, seq) = tokens.dims2()?;
        let mut x = self.embedding.embedding(tokens)?;
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        for layer in &mut self.layers {
            let h = layer.attn_norm.forward(&x)?;
            let a = attention(layer, &self.hyper, &h, &cos, &sin)?;
            x = (x + a)?;
            let h = layer.ffn_norm.forward(&x)?;
            let g = candle_nn::ops::silu(&layer.gate.forward(&h)?)?;
            let u = layer.up.forward(&h)?;
            x = (x + layer.down.forward(&(g * u)?)?)?;
        }
        #[cfg(feature = "research")]
        if let Some(acc) = self.hidden_sum.as_mut() {
            acc.add(&self.norm.forward(&x)?)?;
        }
        let last = x.i((.., seq - 1, ..))?;
        let last = self.norm.forward(&last)?;
        self.output.forward(&last)?.squeeze(0)
    }
}

fn attention(
    layer: &mut Layer,
    hp: &Hyper,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
) -> Result<Tensor> {
    let (b, seq, _) = x.dims3()?;
    let mut q = layer.wq.forward(x)?;
    let mut k = layer.wk.forward(x)?;
    let mut v = layer.wv.forward(x)?;
    if let Some((bq, bk, bv)) = &layer.bias_qkv {
        q = q.broadcast_add(bq)?;
        k = k.broadcast_add(bk)?;
        v = v.broadcast_add(bv)?;
    }
    let mut q = q.reshape((b, seq, hp.n_head, hp.head_dim))?;
    let mut k = k.reshape((b, seq, hp.n_kv_head, hp.head_dim))?;
    if let Some((qn, kn)) = &layer.qk_norm {
        q = qn.forward(&q.contiguous()?)?;
        k = kn.forward(&k.contiguous()?)?;
    }
    let q = rope(&q.transpose(1, 2)?.contiguous()?, hp, cos, sin)?;
    let k = rope(&k.transpose(1, 2)?.contiguous()?, hp, cos, sin)?;
    let v = v
        .reshape((b, seq, hp.n_kv_head, hp.head_dim))?
        .transpose(1, 2)?
        .contiguous()?;
    let cache = match layer.kv.take() {
        Some(mut cache) => {
            cache.append(&k, &v)?;
            cache
        }
        None => KvCache::new(&k, &v)?,
    };
    let (kb, vb) = cache.buffers();
    let y = causal_attention(&q, kb, vb, cache.len(), hp.n_kv_head, hp.split.as_deref())?;
    layer.kv = Some(cache);
    let y = y
        .transpose(1, 2)?
        .reshape((b, seq, hp.n_head * hp.head_dim))?;
    layer.wo.forward(&y)
}

/// Scaled dot-product attention of `q` (b, n_head, seq, d) against the cache `k`, `v`
/// (b, n_kv, kv_len, d), causal `mask` (seq, kv_len; 1 = hidden) when feeding several tokens.
///
/// Grouped-query attention without copying the cache: the `n_head / n_kv` query heads that
/// share a key/value head are stacked along the sequence axis, (b, n_kv, rep * seq, d), so
/// each product reads the cache once. candle's `repeat_kv` would copy the whole cache `rep`
/// times per layer and token (3x for SmolLM2): about a tenth of a decoding step.
pub(crate) fn grouped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    n_kv: usize,
) -> Result<Tensor> {
    let (b, n_head, seq, d) = q.dims4()?;
    let rep = n_head / n_kv;
    let kv_len = k.dim(2)?;
    let q = q.contiguous()?.reshape((b, n_kv, rep * seq, d))?;
    let att = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let att = match mask {
        Some(m) => {
            let grouped = (b, n_kv, rep, seq, kv_len);
            let att = att.reshape(grouped)?;
            let neg = Tensor::new(f32::NEG_INFINITY, att.device())?.broadcast_as(grouped)?;
            m.broadcast_as(grouped)?.where_cond(&neg, &att)?.reshape((
                b,
                n_kv,
                rep * seq,
                kv_len,
            ))?
        }
        None => att,
    };
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    att.matmul(&v.contiguous()?)?.reshape((b, n_head, seq, d))
}

/// Rotary embedding on the first `rope_dim` channels of each head (all of them for the
/// catalogue models).
fn rope(x: &Tensor, hp: &Hyper, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let rot = |t: &Tensor| {
        if hp.rope_neox {
            candle_nn::rotary_emb::rope(t, cos, sin)
        } else {
            candle_nn::rotary_emb::rope_i(t, cos, sin)
        }
    };
    if hp.rope_dim == hp.head_dim {
        return rot(x);
    }
    let head = rot(&x.narrow(D::Minus1, 0, hp.rope_dim)?.contiguous()?)?;
    let tail = x.narrow(D::Minus1, hp.rope_dim, hp.head_dim - hp.rope_dim)?;
    Tensor::cat(&[&head, &tail], D::Minus1)
}

/// Rotary cos/sin tables [positions, dim/2] (shared by the llama/qwen and gemma3 decoders).
pub(crate) fn rotary_tables(dim: usize, base: f32, positions: usize) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| 1f32 / base.powf(i as f32 / dim as f32))
        .collect();
    let inv = Tensor::new(inv.as_slice(), &Device::Cpu)?;
    let t = Tensor::arange(0, positions as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?;
    let freqs = t.matmul(&inv.reshape((1, dim / 2))?)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook form: every query head against its own copy of the shared key/value head.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let rep = q.dim(1)? / k.dim(1)?;
        let k = candle_transformers::utils::repeat_kv(k.clone(), rep)?;
        let v = candle_transformers::utils::repeat_kv(v.clone(), rep)?;
        let att = (q.matmul(&k.t()?)? * (1.0 / (q.dim(3)? as f64).sqrt()))?;
        let att = match mask {
            Some(m) => {
                let neg =
                    Tensor::new(f32::NEG_INFINITY, att.device())?.broadcast_as(att.shape())?;
                m.broadcast_as(att.shape())?.where_cond(&neg, &att)?
            }
            None => att,
        };
        candle_nn::ops::softmax_last_dim(&att)?.matmul(&v.contiguous()?)
    }

    #[test]
    fn grouped_attention_equals_repeated_heads() -> Result<()> {
        let dev = Device::Cpu;
        // 9 query heads over 3 key/value heads, as SmolLM2-135M; a 7-token cache.
        let (heads, kv_heads, d, cached) = (9, 3, 16, 7);
        for seq in [1usize, 5] {
            let q = Tensor::randn(0f32, 1.0, (1, heads, seq, d), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (1, kv_heads, cached + seq, d), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (1, kv_heads, cached + seq, d), &dev)?;
            let mask = (seq > 1)
                .then(|| candle_transformers::utils::build_causal_mask(seq, cached, &dev))
                .transpose()?;
            let got = grouped_attention(&q, &k, &v, mask.as_ref(), kv_heads)?;
            let want = reference(&q, &k, &v, mask.as_ref())?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(
                diff < 1e-5,
                "seq {seq}: grouped attention differs by {diff}"
            );
        }
        Ok(())
    }
}
