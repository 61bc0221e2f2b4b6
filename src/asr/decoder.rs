//! Whisper's text decoder, written the candle-transformers way but with the caches a greedy
//! decoder needs to be cheap on a CPU.
//!
//! Differences from `candle_transformers::models::whisper::model::TextDecoder`:
//! - self-attention keeps a KV cache, so each new token costs one position, not the whole
//!   prefix again (candle's caches only the cross-attention keys and values);
//! - the cross-attention keys and values of the audio are computed once per clip
//!   ([`TextDecoder::set_audio`]) and reused by every step;
//! - only the last position is projected onto the 51 865-token vocabulary;
//! - GELU is the exact erf form, as in Whisper and CTranslate2 (candle's uses the tanh form).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::whisper::Config;
use candle_transformers::utils::build_additive_causal_mask;

use crate::acoustic::whisper::encoder::layer_norm;

/// Multi-head attention weights; the caller decides where keys and values come from.
#[derive(Debug, Clone)]
struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    n_head: usize,
}

impl Attention {
    fn load(n_state: usize, n_head: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            query: candle_nn::linear(n_state, n_state, vb.pp("q_proj"))?,
            // Whisper's key projection has no bias (see acoustic::whisper::names).
            key: candle_nn::linear_no_bias(n_state, n_state, vb.pp("k_proj"))?,
            value: candle_nn::linear(n_state, n_state, vb.pp("v_proj"))?,
            out: candle_nn::linear(n_state, n_state, vb.pp("out_proj"))?,
            n_head,
        })
    }

    /// `[b, t, d]` → `[b, heads, t, head_dim]`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b, t, self.n_head, d / self.n_head))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `x`, split into heads.
    fn keys_values(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = self.split_heads(&self.key.forward(x)?)?;
        let v = self.split_heads(&self.value.forward(x)?)?;
        Ok((k, v))
    }

    /// Attention of the queries of `x` over `k`, `v` (`[b, heads, s, head_dim]`), with an
    /// additive `mask` of shape `[t, s]` when some keys must stay hidden.
    fn attend(&self, x: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let head_dim = d / self.n_head;
        let q = (self.split_heads(&self.query.forward(x)?)? * (head_dim as f64).powf(-0.5))?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights.matmul(v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.out.forward(&context)
    }
}

/// One decoder block: causal self-attention, cross-attention over the audio, MLP; each
/// pre-normed and residual.
#[derive(Debug, Clone)]
struct Block {
    self_attn: Attention,
    self_ln: LayerNorm,
    cross_attn: Attention,
    cross_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    mlp_ln: LayerNorm,
    /// Keys and values of every token decoded so far.
    self_cache: Option<(Tensor, Tensor)>,
    /// Keys and values of the current clip's encoder output.
    audio_kv: Option<(Tensor, Tensor)>,
}

impl Block {
    fn load(n_state: usize, n_head: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::load(n_state, n_head, vb.pp("self_attn"))?,
            self_ln: layer_norm(n_state, vb.pp("self_attn_layer_norm"))?,
            cross_attn: Attention::load(n_state, n_head, vb.pp("encoder_attn"))?,
            cross_ln: layer_norm(n_state, vb.pp("encoder_attn_layer_norm"))?,
            fc1: candle_nn::linear(n_state, 4 * n_state, vb.pp("fc1"))?,
            fc2: candle_nn::linear(4 * n_state, n_state, vb.pp("fc2"))?,
            mlp_ln: layer_norm(n_state, vb.pp("final_layer_norm"))?,
            self_cache: None,
            audio_kv: None,
        })
    }

    fn forward(&mut self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let normed = self.self_ln.forward(x)?;
        let (k_new, v_new) = self.self_attn.keys_values(&normed)?;
        let (k, v) = match &self.self_cache {
            Some((k, v)) => (Tensor::cat(&[k, &k_new], 2)?, Tensor::cat(&[v, &v_new], 2)?),
            None => (k_new, v_new),
        };
        let x = (x + self.self_attn.attend(&normed, &k, &v, mask)?)?;
        self.self_cache = Some((k, v));

        let (audio_k, audio_v) = match &self.audio_kv {
            Some(kv) => kv,
            None => candle_core::bail!("whisper decoder: no audio set (call set_audio first)"),
        };
        let normed = self.cross_ln.forward(&x)?;
        let x = (&x + self.cross_attn.attend(&normed, audio_k, audio_v, None)?)?;

        let hidden = crate::math::gelu::gelu_erf(&self.fc1.forward(&self.mlp_ln.forward(&x)?)?)?;
        x + self.fc2.forward(&hidden)?
    }
}

/// Whisper's text decoder with per-clip audio keys/values and a self-attention cache.
#[derive(Debug, Clone)]
pub struct TextDecoder {
    token_embedding: Embedding,
    positional_embedding: Tensor,
    blocks: Vec<Block>,
    ln: LayerNorm,
    /// Tokens fed since the last `set_audio`.
    position: usize,
}

impl TextDecoder {
    /// Loads the decoder from a root `VarBuilder` (names under `model.decoder.`).
    pub fn load(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("model.decoder");
        let d = cfg.d_model;
        let token_embedding = candle_nn::embedding(cfg.vocab_size, d, vb.pp("embed_tokens"))?;
        let positional_embedding =
            vb.get((cfg.max_target_positions, d), "embed_positions.weight")?;
        let blocks = (0..cfg.decoder_layers)
            .map(|i| Block::load(d, cfg.decoder_attention_heads, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding,
            positional_embedding,
            blocks,
            ln: layer_norm(d, vb.pp("layer_norm"))?,
            position: 0,
        })
    }

    /// The most tokens one sequence may hold (448 for Whisper).
    pub fn max_positions(&self) -> usize {
        self.positional_embedding.dim(0).unwrap_or(0)
    }

    /// Starts a new sequence over `audio_features` (`[1, frames, d_model]`, the encoder's
    /// output): computes the cross-attention keys and values once and empties the cache.
    pub fn set_audio(&mut self, audio_features: &Tensor) -> Result<()> {
        for block in &mut self.blocks {
            block.audio_kv = Some(block.cross_attn.keys_values(audio_features)?);
            block.self_cache = None;
        }
        self.position = 0;
        Ok(())
    }

    /// Feeds `tokens` after those already fed and returns the logits of the last one over
    /// the vocabulary (`[vocab]`, f32).
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Tensor> {
        let n = tokens.len();
        if n == 0 {
            candle_core::bail!("whisper decoder: no tokens to feed");
        }
        let max = self.max_positions();
        if self.position + n > max {
            candle_core::bail!(
                "whisper decoder: {} tokens exceed its {max} positions",
                self.position + n
            );
        }
        let device = self.positional_embedding.device().clone();
        let ids = Tensor::new(tokens, &device)?.unsqueeze(0)?;
        let positions = self.positional_embedding.narrow(0, self.position, n)?;
        let mut x = self
            .token_embedding
            .forward(&ids)?
            .broadcast_add(&positions)?;
        // Several tokens at once (the prompt) must not see the ones after them.
        let mask = if n > 1 {
            Some(build_additive_causal_mask(
                n,
                self.position,
                None,
                &device,
                DType::F32,
            )?)
        } else {
            None
        };
        for block in &mut self.blocks {
            x = block.forward(&x, mask.as_ref())?;
        }
        self.position += n;
        let last = self.ln.forward(&x.narrow(1, n - 1, 1)?)?.squeeze(0)?; // [1, d]
        let logits = last.matmul(&self.token_embedding.embeddings().t()?)?;
        logits.squeeze(0)?.to_dtype(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_hides_only_the_future() -> Result<()> {
        // The decoder relies on candle's mask being [1, 1, new, past + new], −∞ on the future.
        let mask = build_additive_causal_mask(2, 3, None, &candle_core::Device::Cpu, DType::F32)?
            .squeeze(0)?
            .squeeze(0)?
            .to_vec2::<f32>()?;
        assert_eq!(mask[0][..4], [0.0; 4]);
        assert!(mask[0][4].is_infinite());
        assert_eq!(mask[1], vec![0.0; 5]);
        Ok(())
    }
}
