//! Loading a quantised GGUF into a runnable decoder and running it: chunked prefill, KV-cache
//! snapshots (the prompt cache), a local thread pool.
//!
//! Tensor formats: Q4_1, Q5_0, Q8_0 and the K-quants (Q4_K, Q5_K, Q6_K) run on camxuc's own
//! SIMD products, split across the model's helper thread (src/llm/qmatrix.rs,
//! src/llm/kquant.rs). Other types go to candle's product; with `q4_1_kernel` or
//! `q5_0_kernel` off, those tensors are re-quantised to Q8_0 as they are read (dequantise,
//! quantise), which costs memory and a fraction of a second at load (measured in
//! `camxuc models bench`).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::error::LlmError;
use super::gemma3::{Gemma3, Gemma3Config};
use super::gguf::{Architecture, GgufFile};
use super::split::SplitPool;
#[cfg(feature = "research")]
use super::transformer::HiddenSum;
use super::transformer::{Hyper, TensorSource, Transformer};

/// How to load and run a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Re-quantise Q4_1 / Q5_0 / Q5_1 tensors to Q8_0 at load (candle has fast kernels for
    /// Q8_0 only among these). Q4_1 tensors are exempt while `q4_1_kernel` is on, Q5_0 ones
    /// while `q5_0_kernel` is.
    pub requantize_q8: bool,
    /// Run Q4_1 projections (SmolLM2's) on the GGUF's own blocks with camxuc's SIMD product
    /// instead of re-quantising them to Q8_0: no re-quantisation at load, 0.625 instead of
    /// 1.06 bytes per weight, and the file's own weights.
    pub q4_1_kernel: bool,
    /// The same for Q5_0 tensors (`QMatrix`'s Q5_0 product): 0.69 instead of 1.06 bytes per
    /// weight. Most of Qwen2.5-0.5B's weights are Q5_0 (its width, 896, is not a multiple of
    /// the K-quants' 256).
    pub q5_0_kernel: bool,
    /// Threads for the Q4_1 products: 1 runs them on the calling thread; 2 or more gives the
    /// model one helper thread that takes half of every product (more threads are not used:
    /// the hand-off is tuned for two). Default: 2 where the machine has two cores or more.
    pub product_threads: usize,
    /// Threads of the local rayon pool that runs candle's element-wise ops (norms, softmax,
    /// rotary), at most as many as the matmul pool has; 0 = no local pool (rayon's global
    /// one, RAYON_NUM_THREADS or all cores).
    pub threads: usize,
    /// Threads for candle's quantised matrix products. candle 0.11.1 splits every product
    /// across its own spin-waiting barrier pool, sized once per process from
    /// `CANDLE_NUM_THREADS` (else all cores) — the rayon pool above does not bound it. On the
    /// 2-vCPU build machine that pool made decoding 12x slower (3.4 vs 41 tok/s) and prefill
    /// 1.8x slower than one thread, even at nice -20: a decode step is ~210 small products,
    /// each paying a barrier. So the default is 1 (products run on the calling thread). Applied
    /// by setting `CANDLE_NUM_THREADS` before candle first builds the pool, unless the
    /// variable is already set (the user's choice wins); [`LoadStats::matmul_threads`] says
    /// what the pool really has.
    pub matmul_threads: usize,
    /// Longest context (prompt + generation) to prepare rotary tables for. The reasoner's
    /// prompts are a few hundred tokens; the models' trained contexts (8k–128k) would cost
    /// memory for nothing.
    pub max_context: usize,
    /// Widen Q8_0 projections whose input width is not a multiple of 256 (SmolLM2's 576) with
    /// zero columns so candle's packed AVX512-VNNI kernels take them (Q4_1 weights are then
    /// re-quantised to Q8_0 first). Measured on the 2-vCPU build machine (SmolLM2-135M, one
    /// thread) against the re-quantised Q8_0 path that was the default before `q4_1_kernel`:
    /// prompt 152 -> 396 tok/s, generation 40 -> 52 tok/s, warm decision 1049 -> 515 ms (full
    /// prompt), but peak RSS 315 -> 434 MB and less precise: those kernels quantise activations
    /// in 256-wide blocks (Q8_K), so outlier channels cost the others their resolution; the
    /// ten likeliest next tokens' log-probabilities move by up to 0.65 nats against today's
    /// default path (`tests/llm_reasoner.rs`). Today's default is as fast at generation, uses
    /// half the memory and keeps the file's weights, so this stays off, behind `research`.
    #[cfg(feature = "research")]
    pub packed_kernels: bool,
    /// Tokens per forward call during prefill: longer chunks amortise per-call overhead,
    /// shorter ones bound the attention matrix.
    pub prefill_chunk: usize,
}

impl LoadOptions {
    /// Whether the zero-padded projections for candle's packed kernels are on (only a
    /// `research` build can turn them on).
    pub fn packed_kernels(&self) -> bool {
        #[cfg(feature = "research")]
        return self.packed_kernels;
        #[cfg(not(feature = "research"))]
        false
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            requantize_q8: true,
            q4_1_kernel: true,
            q5_0_kernel: true,
            product_threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(2),
            threads: 0,
            matmul_threads: 1,
            #[cfg(feature = "research")]
            packed_kernels: false,
            max_context: 4096,
            prefill_chunk: 128,
        }
    }
}

#[derive(Debug, Clone)]
enum Decoder {
    /// llama, qwen2, qwen3.
    Llama(Transformer),
    Gemma3(Gemma3),
}

/// A KV-cache state to come back to: a cheap clone (weights are shared, the cache tensors are
/// never written in place).
#[derive(Debug, Clone)]
pub struct KvSnapshot {
    decoder: Decoder,
    position: usize,
}

impl KvSnapshot {
    /// Tokens held in the cache.
    pub fn position(&self) -> usize {
        self.position
    }
}

/// What loading cost and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadStats {
    pub load_ms: f64,
    /// Tensors re-quantised to Q8_0 and the milliseconds that took (part of `load_ms`).
    pub requantized_tensors: usize,
    pub requantize_ms: f64,
    /// Threads of candle's quantised-matmul pool in this process (see
    /// [`LoadOptions::matmul_threads`]).
    pub matmul_threads: usize,
}

/// A loaded decoder with its position in the KV cache.
#[derive(Debug)]
pub struct LlmModel {
    decoder: Decoder,
    position: usize,
    path: PathBuf,
    architecture: Architecture,
    vocab: usize,
    pool: Option<Arc<rayon::ThreadPool>>,
    options: LoadOptions,
    stats: LoadStats,
    /// Decoder passes run so far (a prefill chunk counts one): what a decision costs besides
    /// its tokens.
    passes: usize,
}

impl LlmModel {
    /// Loads the weights of an opened GGUF (dispatching on `general.architecture`).
    pub fn load(file: &GgufFile, options: &LoadOptions) -> Result<Self, LlmError> {
        let start = Instant::now();
        let matmul_threads = size_candle_matmul_pool(options.matmul_threads);
        let path = file.path().to_path_buf();
        let model_err = |e: candle_core::Error| LlmError::Candle {
            path: path.clone(),
            source: Box::new(e),
        };
        let reader = File::open(&path).map_err(|source| LlmError::Io {
            path: path.clone(),
            source,
        })?;
        let mut src = GgufSource {
            file,
            reader: BufReader::new(reader),
            requantize: options.requantize_q8,
            // The packed kernels need Q8_0, so they take the re-quantised weights. Both decoders
            // run every projection through `Proj`, so both take the file's own blocks.
            keep_q4_1: options.q4_1_kernel && !options.packed_kernels(),
            keep_q5_0: options.q5_0_kernel && !options.packed_kernels(),
            requantized: 0,
            requantize_ms: 0.0,
        };
        let arch = file.architecture();
        let max_context = options.max_context.max(16);
        let decoder = match arch {
            Architecture::Llama | Architecture::Qwen2 | Architecture::Qwen3 => {
                let hyper = llama_hyper(
                    file,
                    max_context,
                    options.packed_kernels(),
                    options.product_threads,
                )?;
                Decoder::Llama(
                    Transformer::load(hyper, &mut src, arch == Architecture::Qwen2)
                        .map_err(model_err)?,
                )
            }
            Architecture::Gemma3 => {
                // The same helper thread as the llama family's products.
                let split = SplitPool::for_threads(options.product_threads).map_err(model_err)?;
                Decoder::Gemma3(
                    Gemma3::load(
                        &Gemma3Config::from_gguf(file)?,
                        &mut src,
                        max_context,
                        split,
                    )
                    .map_err(model_err)?,
                )
            }
        };
        let vocab = file
            .content()
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .unwrap_or(0);
        let stats = LoadStats {
            load_ms: start.elapsed().as_secs_f64() * 1e3,
            requantized_tensors: src.requantized,
            requantize_ms: src.requantize_ms,
            matmul_threads,
        };
        // The element-wise ops get no more threads than the products: with products on one
        // thread a second pool thread bought nothing (164 vs 168 prompt tok/s) and made the
        // forward hop between threads, each filling its own malloc arena (+50 MB peak RSS).
        let pool = if options.threads > 0 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(options.threads.min(matmul_threads))
                .build()
                .map_err(|e| LlmError::Model {
                    path: path.clone(),
                    reason: format!("thread pool: {e}"),
                })?;
            Some(Arc::new(pool))
        } else {
            None
        };
        Ok(Self {
            decoder,
            position: 0,
            path,
            architecture: arch,
            vocab,
            pool,
            options: LoadOptions {
                max_context,
                ..options.clone()
            },
            stats,
            passes: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    pub fn load_stats(&self) -> &LoadStats {
        &self.stats
    }

    /// Tokens in the KV cache: the position the next token gets.
    pub fn position(&self) -> usize {
        self.position
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Decoder passes run since loading (each prefill chunk and each single token counts one).
    pub fn passes(&self) -> usize {
        self.passes
    }

    /// Feeds `tokens` after what the cache holds and returns the next-token logits after the
    /// last of them. The prompt is processed in chunks of `prefill_chunk` tokens, not one by one.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LlmError> {
        if tokens.is_empty() {
            return Err(LlmError::Model {
                path: self.path.clone(),
                reason: "forward with no tokens".into(),
            });
        }
        let needed = self.position + tokens.len();
        if needed > self.options.max_context {
            return Err(LlmError::ContextFull {
                path: self.path.clone(),
                needed,
                limit: self.options.max_context,
            });
        }
        let chunk = self.options.prefill_chunk.max(1);
        let pool = self.pool.clone();
        let mut run = || -> candle_core::Result<Vec<f32>> {
            let mut logits = None;
            for part in tokens.chunks(chunk) {
                let input = Tensor::new(part, &Device::Cpu)?.unsqueeze(0)?;
                let out = match &mut self.decoder {
                    Decoder::Llama(m) => m.forward(&input, self.position)?,
                    Decoder::Gemma3(m) => m.forward(&input, self.position)?,
                };
                self.position += part.len();
                self.passes += 1;
                logits = Some(out);
            }
            match logits {
                Some(l) => l.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>(),
                None => candle_core::bail!("no tokens"),
            }
        };
        let result = match pool {
            Some(p) => p.install(run),
            None => run(),
        };
        result.map_err(|e| LlmError::Candle {
            path: self.path.clone(),
            source: Box::new(e),
        })
    }

    /// Feeds `tokens` like [`LlmModel::forward`] and returns the mean of their final (normed)
    /// hidden states as well: the LLM as an encoder of what was fed (research only).
    #[cfg(feature = "research")]
    pub fn forward_mean_hidden(
        &mut self,
        tokens: &[u32],
    ) -> Result<(Vec<f32>, Vec<f32>), LlmError> {
        self.set_hidden_capture(Some(HiddenSum::default()));
        let logits = self.forward(tokens);
        let mean = match &self.decoder {
            Decoder::Llama(m) => m.hidden_sum.as_ref().map(HiddenSum::mean),
            Decoder::Gemma3(m) => m.hidden_sum.as_ref().map(HiddenSum::mean),
        };
        self.set_hidden_capture(None);
        let mean = mean
            .unwrap_or_else(|| Ok(Vec::new()))
            .map_err(|e| LlmError::Candle {
                path: self.path.clone(),
                source: Box::new(e),
            })?;
        Ok((logits?, mean))
    }

    #[cfg(feature = "research")]
    fn set_hidden_capture(&mut self, h: Option<HiddenSum>) {
        match &mut self.decoder {
            Decoder::Llama(m) => m.hidden_sum = h,
            Decoder::Gemma3(m) => m.hidden_sum = h,
        }
    }

    /// The current cache, to come back to with [`LlmModel::restore`].
    pub fn snapshot(&self) -> KvSnapshot {
        KvSnapshot {
            decoder: self.decoder.clone(),
            position: self.position,
        }
    }

    pub fn restore(&mut self, snapshot: &KvSnapshot) {
        self.decoder = snapshot.decoder.clone();
        self.position = snapshot.position;
    }

    /// Empties the KV cache.
    pub fn reset(&mut self) {
        match &mut self.decoder {
            Decoder::Llama(m) => m.clear_kv_cache(),
            Decoder::Gemma3(m) => m.clear_kv_cache(),
        }
        self.position = 0;
    }
}

/// Sizes candle's process-wide quantised-matmul pool (unless `CANDLE_NUM_THREADS` is already
/// set or the pool already exists) and returns the threads it has, the caller's included.
fn size_candle_matmul_pool(threads: usize) -> usize {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Set once, before the first quantised product builds the pool; candle reads it only
        // then.
        std::env::set_var("CANDLE_NUM_THREADS", threads.max(1).to_string());
    }
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// Reads tensors from the GGUF, re-quantising the block types candle runs slowly.
struct GgufSource<'a> {
    file: &'a GgufFile,
    reader: BufReader<File>,
    requantize: bool,
    /// Leave Q4_1 / Q5_0 tensors as they are (the decoder runs them itself).
    keep_q4_1: bool,
    keep_q5_0: bool,
    requantized: usize,
    requantize_ms: f64,
}

impl TensorSource for GgufSource<'_> {
    fn tensor(&mut self, name: &str) -> candle_core::Result<QTensor> {
        let t = self
            .file
            .content()
            .tensor(&mut self.reader, name, &Device::Cpu)?;
        if let Some((block, value)) = super::qmatrix::non_finite_scale(&t)? {
            candle_core::bail!(
                "tensor {name} ({:?}): block {block} has a scale of {value}, not a finite number (a damaged file)",
                t.dtype()
            );
        }
        let slow = match t.dtype() {
            GgmlDType::Q4_1 => !self.keep_q4_1,
            GgmlDType::Q5_0 => !self.keep_q5_0,
            GgmlDType::Q5_1 => true,
            _ => false,
        };
        let row = t.shape().dims().last().copied().unwrap_or(0);
        if self.requantize && slow && row % GgmlDType::Q8_0.block_size() == 0 {
            let start = Instant::now();
            let q = QTensor::quantize(&t.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?;
            self.requantized += 1;
            self.requantize_ms += start.elapsed().as_secs_f64() * 1e3;
            return Ok(q);
        }
        Ok(t)
    }

    fn has(&self, name: &str) -> bool {
        self.file.content().tensor_infos.contains_key(name)
    }
}

fn llama_hyper(
    file: &GgufFile,
    max_positions: usize,
    pad_inputs: bool,
    product_threads: usize,
) -> Result<Hyper, LlmError> {
    let arch = file.architecture();
    let a = arch.as_str();
    let key = |k: &str| format!("{a}.{k}");
    let n_embd = file.meta_usize(&key("embedding_length"))?;
    let n_head = file.meta_usize(&key("attention.head_count"))?;
    let n_kv_head = file.meta_usize(&key("attention.head_count_kv"))?;
    if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
        return Err(LlmError::BadMetadata {
            path: file.path().to_path_buf(),
            key: key("attention.head_count_kv"),
            reason: format!("{n_head} heads cannot share {n_kv_head} key/value heads"),
        });
    }
    // qwen3 states its head size (it is not n_embd / n_head there).
    let head_dim = file
        .meta_opt_usize(&key("attention.key_length"))?
        .unwrap_or(n_embd / n_head);
    Ok(Hyper {
        n_layer: file.meta_usize(&key("block_count"))?,
        n_head,
        n_kv_head,
        head_dim,
        rope_dim: file
            .meta_opt_usize(&key("rope.dimension_count"))?
            .unwrap_or(head_dim)
            .min(head_dim),
        rope_base: file
            .meta_opt_f32(&key("rope.freq_base"))?
            .unwrap_or(10_000.0),
        rope_neox: arch != Architecture::Llama,
        rms_eps: file
            .meta_opt_f32(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5) as f64,
        max_positions,
        pad_inputs,
        product_threads,
        split: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{gguf_file, QStorage};

    /// A GGUF whose Q4_K tensor has a NaN super-block scale: reading it is an error that names
    /// the tensor and the block, not a model that answers NaN.
    #[test]
    fn a_k_quant_block_with_a_nan_scale_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged.gguf");
        let w = Tensor::from_vec(
            (0..8 * 512)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect(),
            (8, 512),
            &Device::Cpu,
        )
        .unwrap();
        let good = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
        let mut bytes = good.data().unwrap().to_vec();
        let block = 144; // bytes per Q4_K block; d is its first f16
        bytes[3 * block..3 * block + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
        let bad = QTensor::new(
            QStorage::from_data(std::borrow::Cow::Owned(bytes), &Device::Cpu, GgmlDType::Q4K)
                .unwrap(),
            (8, 512),
        )
        .unwrap();
        let arch = gguf_file::Value::String("llama".into());
        gguf_file::write(
            &mut File::create(&path).unwrap(),
            &[("general.architecture", &arch)],
            &[
                ("blk.0.attn_q.weight", &good),
                ("blk.0.attn_k.weight", &bad),
            ],
        )
        .unwrap();
        let file = GgufFile::open(&path).unwrap();
        let mut src = GgufSource {
            file: &file,
            reader: BufReader::new(File::open(&path).unwrap()),
            requantize: true,
            keep_q4_1: true,
            keep_q5_0: true,
            requantized: 0,
            requantize_ms: 0.0,
        };
        assert!(src.tensor("blk.0.attn_q.weight").is_ok());
        let err = src.tensor("blk.0.attn_k.weight").unwrap_err().to_string();
        assert!(
            err.contains("blk.0.attn_k.weight") && err.contains("block 3") && err.contains("NaN"),
            "{err}"
        );
    }
}
