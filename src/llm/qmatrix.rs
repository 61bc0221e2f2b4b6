//! Products with Q4_1, Q5_0 and Q8_0 weights, run on the GGUF's own blocks.
//!
//! candle 0.11.1 has no SIMD dot product for Q4_1 or Q5_0 (its `vec_dot` for them is the
//! scalar reference), so the loader used to re-quantise such matrices to Q8_0: time at load,
//! 1.06 instead of 0.625 (Q4_1) or 0.69 (Q5_0) bytes per weight to stream on every generated
//! token, and a second rounding of the weights. This runs the product the way ggml does
//! instead: the activations are quantised per 32-value block to 8 bits with a scale `d` and a
//! sum `s = d·Σq` (ggml's Q8_1), the 4- or 5-bit weights are widened in registers, and each
//! block adds `d_w·d_a·Σ q_w·q_a + m_w·s` (Q4_1) or `d_w·d_a·Σ (q_w − 16)·q_a` (Q5_0).
//! Q8_0 (SmolLM2's tied embedding, which is also its output projection: a fifth of a token's
//! multiply-adds) takes the same path with `d_w·d_a·Σ q_w·q_a`, so it can be split across
//! threads too and gives the same numbers in any pass.
//!
//! K-quant weights (Q4_K, Q5_K, Q6_K: what most downloadable GGUFs use) take candle's own dot
//! products (AVX2 or NEON where the build's target CPU has them, `.cargo/config.toml`; the
//! scalar reference elsewhere) on their blocks, with the activations quantised once per
//! product to Q8_K: what candle's `QMatMul` does, but on both of the model's threads, split by
//! weight rows like the Q4_1 path, where `QMatMul` ran them on one because the model pins
//! candle's pool to one thread.
//!
//! Every activation row gets exactly the same arithmetic whether it comes alone (a generated
//! token, which meets eight weight rows per pass) or with others (a prompt chunk, taken eight
//! rows per pass over a weight row), and whichever thread computes it, so a prompt fed in one
//! pass or in several gives the same projections.

use std::sync::Arc;

use candle_core::quantized::k_quants::{BlockQ4K, BlockQ5K, BlockQ6K, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{bail, Result, Tensor};
use half::f16;

use super::split::SplitPool;

/// Values per block (the same for Q4_1, Q8_0 and the Q8_1 activations).
const QK: usize = 32;

/// A weight block format as stored in GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// A format with this module's own kernels.
    Own(OwnFormat),
    /// A format whose dot product is candle's (see the module docs).
    Candle(CandleFormat),
}

/// The formats with this module's own kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnFormat {
    /// `d: f16, m: f16, qs: [u8; 16]`: value `j` in the low nibble of `qs[j]`, value `j + 16`
    /// in its high nibble; x = d·q + m.
    Q4_1,
    /// `d: f16, qs: [i8; 32]`; x = d·q.
    Q8_0,
    /// `d: f16, qh: u32, qs: [u8; 16]`: the low four bits of value `j` in the low nibble of
    /// `qs[j]` (of value `j + 16` in its high nibble), its fifth bit in bit `j` of `qh`;
    /// x = d·(q − 16). What llama.cpp's Q4_K_M uses for matrices whose width is not a multiple
    /// of 256 (all of Qwen2.5-0.5B's 896-wide projections).
    Q5_0,
}

impl OwnFormat {
    fn block_bytes(self) -> usize {
        match self {
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Q5_0 => 22,
        }
    }
}

/// The formats run through candle's dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CandleFormat {
    Q4K,
    Q5K,
    Q6K,
}

impl Format {
    fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_1 => Some(Self::Own(OwnFormat::Q4_1)),
            GgmlDType::Q8_0 => Some(Self::Own(OwnFormat::Q8_0)),
            GgmlDType::Q4K => Some(Self::Candle(CandleFormat::Q4K)),
            GgmlDType::Q5K => Some(Self::Candle(CandleFormat::Q5K)),
            GgmlDType::Q6K => Some(Self::Candle(CandleFormat::Q6K)),
            GgmlDType::Q5_0 => Some(Self::Own(OwnFormat::Q5_0)),
            _ => None,
        }
    }

    /// Bytes per block and values per block.
    fn block(self) -> (usize, usize) {
        match self {
            Self::Own(o) => (o.block_bytes(), QK),
            Self::Candle(c) => match c {
                CandleFormat::Q4K => (size_of::<BlockQ4K>(), BlockQ4K::BLCK_SIZE),
                CandleFormat::Q5K => (size_of::<BlockQ5K>(), BlockQ5K::BLCK_SIZE),
                CandleFormat::Q6K => (size_of::<BlockQ6K>(), BlockQ6K::BLCK_SIZE),
            },
        }
    }

    /// The memory alignment its blocks need to be read in place.
    fn align(self) -> usize {
        match self {
            Self::Own(_) => 1,
            Self::Candle(c) => match c {
                CandleFormat::Q4K => align_of::<BlockQ4K>(),
                CandleFormat::Q5K => align_of::<BlockQ5K>(),
                CandleFormat::Q6K => align_of::<BlockQ6K>(),
            },
        }
    }
}

use std::mem::{align_of, size_of};

/// Bytes of weight rows a candle-format product keeps in cache while the activation rows
/// pass over them (about half of a typical 256 KB L2).
const CANDLE_TILE_BYTES: usize = 128 * 1024;
/// Activation rows that share one pass over a weight block. Eight measured faster than four on
/// the prompt (Qwen2.5-0.5B at one thread: 65-66 -> 68-71 tok/s, warm decision 692-728 ->
/// 613-660 ms; Gemma 3 187 -> 195, SmolLM2 163 -> 167), with AVX-512's 32 vector registers.
const ROWS_PER_PASS: usize = 8;
/// Weight rows that share one pass over a lone activation row (a generated token).
const WEIGHT_ROWS_PER_PASS: usize = 8;
/// Products at least this big (multiply-adds) are split with the helper thread: every
/// projection of SmolLM2 (the smallest, k and v, have 110 k). Below this the hand-off would
/// cost more than the half it saves.
const SPLIT_MIN_MACS: usize = 1 << 16;

/// A `rows × cols` quantised matrix (a projection's weight, one output per row).
#[derive(Debug)]
pub(crate) struct QMatrix {
    rows: usize,
    cols: usize,
    format: Format,
    /// The GGUF blocks, row after row (shared, e.g. with the token embedding it also is).
    tensor: Arc<QTensor>,
    /// The helper thread that takes half of each product (see [`SPLIT_MIN_MACS`]); shared by
    /// all the matrices of a model.
    split: Option<Arc<SplitPool>>,
}

/// Activation rows quantised per block (ggml's Q8_1, scales kept in f32).
struct Q8Rows {
    blocks_per_row: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl QMatrix {
    /// Takes a 2-D tensor of a format above on the CPU; `None` for any other type, shape (an empty
    /// row included) or device.
    /// With `split`, products are shared with its helper thread.
    pub fn from_qtensor(t: Arc<QTensor>, split: Option<Arc<SplitPool>>) -> Result<Option<Self>> {
        let Some(format) = Format::of(t.dtype()) else {
            return Ok(None);
        };
        let Ok((rows, cols)) = t.shape().dims2() else {
            return Ok(None);
        };
        let (block_bytes, block_values) = format.block();
        if cols == 0 || cols % block_values != 0 || !t.device().is_cpu() {
            return Ok(None);
        }
        let expected = rows * cols / block_values * block_bytes;
        let data = t.data()?;
        let held = data.len();
        if held != expected {
            bail!("{format:?} tensor of shape ({rows}, {cols}) holds {held} bytes, expected {expected}");
        }
        // candle keeps a tensor's blocks in a vector of its block type, so they are aligned;
        // anything else goes to candle's own product.
        if data.as_ptr() as usize % format.align() != 0 {
            return Ok(None);
        }
        drop(data);
        Ok(Some(Self {
            rows,
            cols,
            format,
            tensor: t,
            split,
        }))
    }

    /// `x` (…, cols) times the transpose of this matrix: (…, rows), like `QMatMul::forward`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let Some((&k, lead)) = dims.split_last() else {
            bail!("quantised product of a scalar");
        };
        if k != self.cols {
            bail!(
                "quantised product: input width {k}, weight width {}",
                self.cols
            );
        }
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let m = xs.len() / k;
        let mut out = vec![0f32; m * self.rows];
        let data = self.tensor.data()?;
        match self.format {
            Format::Own(own) => {
                let acts = Q8Rows::quantize(&xs, k);
                self.product(m, &mut out, &|j0, dst| {
                    self.rows_product(own, &data, &acts, j0, dst)
                });
            }
            Format::Candle(c) => match c {
                CandleFormat::Q4K => self.candle_product::<BlockQ4K>(&data, &xs, m, &mut out),
                CandleFormat::Q5K => self.candle_product::<BlockQ5K>(&data, &xs, m, &mut out),
                CandleFormat::Q6K => self.candle_product::<BlockQ6K>(&data, &xs, m, &mut out),
            },
        }
        let mut shape = lead.to_vec();
        shape.push(self.rows);
        Tensor::from_vec(out, shape, x.device())
    }

    /// out[r][j] = row r of the activations · weight row j (`out` is m × rows, row-major),
    /// with `rows_product(j0, dst)` filling weight rows `j0..j0 + dst[r].len()` of every
    /// activation row r: on this thread alone, or half on the helper thread.
    fn product(
        &self,
        m: usize,
        out: &mut [f32],
        rows_product: &(dyn Fn(usize, Vec<&mut [f32]>) + Sync),
    ) {
        let Some(split) = self
            .split
            .as_ref()
            .filter(|_| m * self.rows * self.cols >= SPLIT_MIN_MACS)
        else {
            rows_product(0, out.chunks_exact_mut(self.rows).collect());
            return;
        };
        // Half of the weight rows, i.e. half of the columns of every output row, each.
        let half = self.rows / 2;
        let mut mine = Vec::with_capacity(m);
        let mut theirs = Vec::with_capacity(m);
        for row in out.chunks_exact_mut(self.rows) {
            let (a, b) = row.split_at_mut(half);
            mine.push(a);
            theirs.push(b);
        }
        split.join(|| rows_product(0, mine), || rows_product(half, theirs));
    }

    /// The product for a format with candle's dot product: the activations quantised once to
    /// the type it pairs with, then one `vec_dot` per (weight row, activation row), weight row
    /// outside so it stays in cache (the same arithmetic for a row in any pass or thread).
    fn candle_product<T: GgmlType>(&self, data: &[u8], xs: &[f32], m: usize, out: &mut [f32]) {
        let per_row = self.cols / T::BLCK_SIZE;
        // SAFETY: `from_qtensor` checked the length (rows × per_row blocks of T) and the
        // alignment of these bytes, which are the tensor's own blocks of type T.
        let w: &[T] =
            unsafe { std::slice::from_raw_parts(data.as_ptr() as *const T, self.rows * per_row) };
        let dot_per_row = self.cols / <T::VecDotType as GgmlType>::BLCK_SIZE;
        let mut acts = vec![T::VecDotType::zeros(); m * dot_per_row];
        for (x, a) in xs
            .chunks_exact(self.cols)
            .zip(acts.chunks_exact_mut(dot_per_row))
        {
            T::VecDotType::from_float(x, a);
        }
        // Weight rows in tiles of about CANDLE_TILE_BYTES: a tile stays in cache while every
        // activation row passes over it (a prompt's activations do not fit in cache beside a
        // whole matrix; one weight row at a time re-read them all per row).
        let tile = (CANDLE_TILE_BYTES / (per_row * size_of::<T>())).max(1);
        self.product(m, out, &|j0, mut dst| {
            let width = dst.first().map_or(0, |r| r.len());
            let rows = &w[j0 * per_row..(j0 + width) * per_row];
            for (t, tile_rows) in rows.chunks(tile * per_row).enumerate() {
                for (r, a) in acts.chunks_exact(dot_per_row).enumerate() {
                    for (k, wr) in tile_rows.chunks_exact(per_row).enumerate() {
                        dst[r][t * tile + k] = T::vec_dot(self.cols, wr, a);
                    }
                }
            }
        });
    }

    /// Products of weight rows `j0..j0 + dst[r].len()` with every activation row `r`.
    fn rows_product(
        &self,
        own: OwnFormat,
        data: &[u8],
        acts: &Q8Rows,
        j0: usize,
        mut dst: Vec<&mut [f32]>,
    ) {
        let m = dst.len();
        let width = dst.first().map_or(0, |r| r.len());
        let row_bytes = self.cols / QK * own.block_bytes();
        let rows = &data[j0 * row_bytes..(j0 + width) * row_bytes];
        if m == 1 {
            // A generated token: eight weight rows per pass over its activation row, so eight
            // streams of weights are in flight and the per-row set-up is shared (a weight row
            // of Gemma 3's 262k-row output projection is only 20 blocks).
            let mut j = 0;
            for w in rows.chunks(WEIGHT_ROWS_PER_PASS * row_bytes) {
                let n = w.len() / row_bytes;
                let mut sums = [0f32; WEIGHT_ROWS_PER_PASS];
                dot_weight_rows(own, w, row_bytes, n, acts, 0, &mut sums);
                dst[0][j..j + n].copy_from_slice(&sums[..n]);
                j += n;
            }
            return;
        }
        // Weight row outside, activation rows inside: a weight row (a few hundred bytes) is
        // read from memory once and stays in L1 while every activation row uses it.
        for (j, w) in rows.chunks_exact(row_bytes).enumerate() {
            let mut r0 = 0;
            while r0 < m {
                let rows = (m - r0).min(ROWS_PER_PASS);
                let mut sums = [0f32; ROWS_PER_PASS];
                dot_rows(own, w, acts, r0, rows, &mut sums);
                for (r, v) in sums[..rows].iter().enumerate() {
                    dst[r0 + r][j] = *v;
                }
                r0 += rows;
            }
        }
    }
}

impl Q8Rows {
    /// ggml's `quantize_row_q8_1`: per block, `d = max|x| / 127`, `q = round(x / d)`.
    fn quantize(xs: &[f32], k: usize) -> Self {
        let blocks = xs.len() / QK;
        let mut qs = vec![0i8; xs.len()];
        let mut d = vec![0f32; blocks];
        let mut s = vec![0f32; blocks];
        for (b, (x, q)) in xs.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).enumerate() {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale == 0.0 { 0.0 } else { 1.0 / scale };
            let mut sum = 0i32;
            for (qv, xv) in q.iter_mut().zip(x) {
                let v = (xv * inv).round() as i8;
                *qv = v;
                sum += v as i32;
            }
            d[b] = scale;
            s[b] = scale * sum as f32;
        }
        Self {
            blocks_per_row: k / QK,
            qs,
            d,
            s,
        }
    }
}

/// Where a block type keeps its f16 scales (and minimums): the block size in bytes and the
/// byte offsets inside a block. `None` for types without per-block scales (f32, f16, …).
fn scale_layout(dtype: GgmlDType) -> Option<(usize, &'static [usize])> {
    Some(match dtype {
        GgmlDType::Q4_0 => (18, &[0]),
        GgmlDType::Q4_1 => (20, &[0, 2]),
        GgmlDType::Q5_0 => (22, &[0]),
        GgmlDType::Q5_1 => (24, &[0, 2]),
        GgmlDType::Q8_0 => (34, &[0]),
        GgmlDType::Q2K => (84, &[80, 82]),
        GgmlDType::Q3K => (110, &[108]),
        GgmlDType::Q4K => (144, &[0, 2]),
        GgmlDType::Q5K => (176, &[0, 2]),
        GgmlDType::Q6K => (210, &[208]),
        _ => return None,
    })
}

/// The first block of a quantised tensor whose scale or minimum is not a finite number, with
/// that value: such a block turns every product it enters into NaN, so a loader refuses the
/// tensor by name instead of letting a model answer NaN.
pub(crate) fn non_finite_scale(t: &QTensor) -> Result<Option<(usize, f32)>> {
    let Some((block_bytes, offsets)) = scale_layout(t.dtype()) else {
        return Ok(None);
    };
    let data = t.data()?;
    for (b, block) in data.chunks_exact(block_bytes).enumerate() {
        for &at in offsets {
            let v = half_at(block, at);
            if !v.is_finite() {
                return Ok(Some((b, v)));
            }
        }
    }
    Ok(None)
}

#[inline]
fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dot products of weight row `w` with activation rows `r0..r0 + rows` (rows ≤
/// `ROWS_PER_PASS`): AVX2 where the build's target has it, else the scalar reference.
fn dot_rows(
    format: OwnFormat,
    w: &[u8],
    acts: &Q8Rows,
    r0: usize,
    rows: usize,
    sums: &mut [f32; ROWS_PER_PASS],
) {
    // SAFETY: the target feature is enabled at compile time; every load below reads inside
    // `w` (whole blocks) or `acts.qs` (32 values per block).
    #[cfg(target_feature = "avx2")]
    unsafe {
        match format {
            OwnFormat::Q4_1 => avx2::dot_rows::<{ avx2::Q4_1 }>(w, acts, r0, rows, sums),
            OwnFormat::Q8_0 => avx2::dot_rows::<{ avx2::Q8_0 }>(w, acts, r0, rows, sums),
            OwnFormat::Q5_0 => avx2::dot_rows::<{ avx2::Q5_0 }>(w, acts, r0, rows, sums),
        }
    }
    #[cfg(not(target_feature = "avx2"))]
    scalar_dot_rows(format, w, acts, r0, rows, sums)
}

/// Dot products of the `n` weight rows (n ≤ `WEIGHT_ROWS_PER_PASS`) in `w`, `row_bytes` each,
/// with activation row `r`: for each pair exactly the arithmetic of [`dot_rows`], so a token
/// alone gets the numbers it gets in a prompt chunk.
fn dot_weight_rows(
    format: OwnFormat,
    w: &[u8],
    row_bytes: usize,
    n: usize,
    acts: &Q8Rows,
    r: usize,
    sums: &mut [f32; WEIGHT_ROWS_PER_PASS],
) {
    debug_assert!(n <= WEIGHT_ROWS_PER_PASS && w.len() == n * row_bytes);
    // SAFETY: as for `dot_rows`; the rows are whole blocks inside `w`.
    #[cfg(target_feature = "avx2")]
    unsafe {
        match format {
            OwnFormat::Q4_1 => {
                avx2::dot_weight_rows::<{ avx2::Q4_1 }>(w, row_bytes, n, acts, r, sums)
            }
            OwnFormat::Q8_0 => {
                avx2::dot_weight_rows::<{ avx2::Q8_0 }>(w, row_bytes, n, acts, r, sums)
            }
            OwnFormat::Q5_0 => {
                avx2::dot_weight_rows::<{ avx2::Q5_0 }>(w, row_bytes, n, acts, r, sums)
            }
        }
    }
    #[cfg(not(target_feature = "avx2"))]
    for (k, row) in w.chunks_exact(row_bytes).take(n).enumerate() {
        let mut one = [0f32; ROWS_PER_PASS];
        scalar_dot_rows(format, row, acts, r, 1, &mut one);
        sums[k] = one[0];
    }
}

/// The reference form of [`dot_rows`] (the fallback without AVX2, and the tests' oracle).
#[cfg_attr(target_feature = "avx2", allow(dead_code))]
fn scalar_dot_rows(
    format: OwnFormat,
    w: &[u8],
    acts: &Q8Rows,
    r0: usize,
    rows: usize,
    sums: &mut [f32; ROWS_PER_PASS],
) {
    let nb = acts.blocks_per_row;
    for (r, sum) in sums[..rows].iter_mut().enumerate() {
        let row = r0 + r;
        let mut acc = 0f32;
        for (b, blk) in w.chunks_exact(format.block_bytes()).enumerate() {
            let a = &acts.qs[(row * nb + b) * QK..][..QK];
            let i = row * nb + b;
            match format {
                OwnFormat::Q4_1 => {
                    let mut isum = 0i32;
                    for (j, &q) in blk[4..].iter().enumerate() {
                        isum +=
                            (q & 0x0F) as i32 * a[j] as i32 + (q >> 4) as i32 * a[j + 16] as i32;
                    }
                    acc += half_at(blk, 0) * acts.d[i] * isum as f32 + half_at(blk, 2) * acts.s[i];
                }
                OwnFormat::Q8_0 => {
                    let isum: i32 = blk[2..]
                        .iter()
                        .zip(a)
                        .map(|(&q, &x)| q as i8 as i32 * x as i32)
                        .sum();
                    acc += half_at(blk, 0) * acts.d[i] * isum as f32;
                }
                OwnFormat::Q5_0 => {
                    let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                    let mut isum = 0i32;
                    for (j, &q) in blk[6..].iter().enumerate() {
                        let lo = (q & 0x0F) as i32 | ((qh >> j) as i32 & 1) << 4;
                        let hi = (q >> 4) as i32 | ((qh >> (j + 16)) as i32 & 1) << 4;
                        isum += (lo - 16) * a[j] as i32 + (hi - 16) * a[j + 16] as i32;
                    }
                    acc += half_at(blk, 0) * acts.d[i] * isum as f32;
                }
            }
        }
        *sum = acc;
    }
}

#[cfg(target_feature = "avx2")]
mod avx2 {
    use super::{half_at, OwnFormat, Q8Rows, QK, ROWS_PER_PASS, WEIGHT_ROWS_PER_PASS};
    use std::arch::x86_64::*;

    /// The formats as const parameters, so each kernel is compiled per format.
    pub(super) const Q4_1: u8 = 0;
    pub(super) const Q8_0: u8 = 1;
    pub(super) const Q5_0: u8 = 2;

    const fn format(f: u8) -> OwnFormat {
        match f {
            Q4_1 => OwnFormat::Q4_1,
            Q8_0 => OwnFormat::Q8_0,
            _ => OwnFormat::Q5_0,
        }
    }

    /// Σ over 32 lanes of u8 × i8, as 8 i32 partial sums. Pairs are summed to i16 first, so
    /// callers keep them small enough not to saturate: Q4_1 nibbles (≤ 15) × activations
    /// (2·15·128 < 32767), Q8_0's |w| (≤ 128) × activations (≤ 127 in size: 2·128·127 =
    /// 32512), Q5_0's |w| ≤ 16. (AVX512-VNNI's `vpdpbusd` does this in one instruction;
    /// measured no faster here, as the product waits on memory, so the AVX2 form serves every
    /// x86-64-v3 machine.)
    #[inline(always)]
    unsafe fn block_isum(w: __m256i, a: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// 0xFF in byte `j` where bit `j` of `bits` is set (ggml's `bytes_from_bits_32`).
    #[inline(always)]
    unsafe fn bytes_from_bits(bits: u32) -> __m256i {
        let shuffle = _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0x0000000000000000,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuffle);
        let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
        _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
    }

    /// One weight block widened to 32 bytes for [`block_isum`]: the unsigned weights, the
    /// signs to give the activations (signed formats: ggml's sign trick, |w| times a with w's
    /// sign), the scale d and (Q4_1) the minimum m.
    struct Block {
        w: __m256i,
        sign: __m256i,
        d: f32,
        m: f32,
    }

    #[inline(always)]
    unsafe fn widen<const F: u8>(blk: &[u8]) -> Block {
        let low = _mm_set1_epi8(0x0F);
        match format(F) {
            OwnFormat::Q4_1 => {
                let q = _mm_loadu_si128(blk.as_ptr().add(4) as *const __m128i);
                let lo = _mm_and_si128(q, low);
                let hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
                Block {
                    w: _mm256_set_m128i(hi, lo),
                    sign: _mm256_setzero_si256(),
                    d: half_at(blk, 0),
                    m: half_at(blk, 2),
                }
            }
            OwnFormat::Q8_0 => {
                let wq = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
                Block {
                    w: _mm256_sign_epi8(wq, wq),
                    sign: wq,
                    d: half_at(blk, 0),
                    m: 0.0,
                }
            }
            OwnFormat::Q5_0 => {
                // Signed bytes q − 16 in [−16, 15]: where the fifth bit is clear, set the
                // high nibble (0xF0 | n is n − 16).
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                let q = _mm_loadu_si128(blk.as_ptr().add(6) as *const __m128i);
                let lo = _mm_and_si128(q, low);
                let hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
                let fifth_clear = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(-16));
                let wq = _mm256_or_si256(_mm256_set_m128i(hi, lo), fifth_clear);
                Block {
                    w: _mm256_sign_epi8(wq, wq),
                    sign: wq,
                    d: half_at(blk, 0),
                    m: 0.0,
                }
            }
        }
    }

    /// One (weight block, activation block `i`) step of a pair's sum: the single definition
    /// both pass shapes use, so a pair gets the same bits in either.
    #[inline(always)]
    unsafe fn step<const F: u8>(
        b: &Block,
        acts: &Q8Rows,
        i: usize,
        acc: &mut __m256,
        off: &mut f32,
    ) {
        let a = _mm256_loadu_si256(acts.qs.as_ptr().add(i * QK) as *const __m256i);
        let p = if matches!(format(F), OwnFormat::Q4_1) {
            *off += b.m * acts.s[i];
            block_isum(b.w, a)
        } else {
            block_isum(b.w, _mm256_sign_epi8(a, b.sign))
        };
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(b.d * acts.d[i]), _mm256_cvtepi32_ps(p), *acc);
    }

    #[inline(always)]
    unsafe fn finish<const F: u8>(acc: __m256, off: f32) -> f32 {
        if matches!(format(F), OwnFormat::Q4_1) {
            hsum(acc) + off
        } else {
            hsum(acc)
        }
    }

    /// One weight row `w`, activation rows `r0..r0 + rows`.
    pub(super) unsafe fn dot_rows<const F: u8>(
        w: &[u8],
        acts: &Q8Rows,
        r0: usize,
        rows: usize,
        sums: &mut [f32; ROWS_PER_PASS],
    ) {
        let nb = acts.blocks_per_row;
        let mut acc = [_mm256_setzero_ps(); ROWS_PER_PASS];
        let mut off = [0f32; ROWS_PER_PASS];
        for (b, blk) in w.chunks_exact(format(F).block_bytes()).enumerate() {
            let block = widen::<F>(blk);
            for r in 0..rows {
                step::<F>(&block, acts, (r0 + r) * nb + b, &mut acc[r], &mut off[r]);
            }
        }
        for r in 0..rows {
            sums[r] = finish::<F>(acc[r], off[r]);
        }
    }

    /// Weight rows `0..n` of `w` (`row_bytes` each), activation row `r`.
    pub(super) unsafe fn dot_weight_rows<const F: u8>(
        w: &[u8],
        row_bytes: usize,
        n: usize,
        acts: &Q8Rows,
        r: usize,
        sums: &mut [f32; WEIGHT_ROWS_PER_PASS],
    ) {
        let nb = acts.blocks_per_row;
        let bytes = format(F).block_bytes();
        let mut acc = [_mm256_setzero_ps(); WEIGHT_ROWS_PER_PASS];
        let mut off = [0f32; WEIGHT_ROWS_PER_PASS];
        if n == WEIGHT_ROWS_PER_PASS {
            // The common case, with a constant trip count the compiler can unroll (this split
            // was not measured against one loop over `0..n`).
            for b in 0..nb {
                for k in 0..WEIGHT_ROWS_PER_PASS {
                    let block = widen::<F>(&w[k * row_bytes + b * bytes..][..bytes]);
                    step::<F>(&block, acts, r * nb + b, &mut acc[k], &mut off[k]);
                }
            }
        } else {
            for b in 0..nb {
                for k in 0..n {
                    let block = widen::<F>(&w[k * row_bytes + b * bytes..][..bytes]);
                    step::<F>(&block, acts, r * nb + b, &mut acc[k], &mut off[k]);
                }
            }
        }
        for k in 0..n {
            sums[k] = finish::<F>(acc[k], off[k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::{Device, Module};

    /// A deterministic, unevenly scaled test matrix (seeded LCG; no RNG crate needed).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                u * (1.0 + (i % 7) as f32)
            })
            .collect()
    }

    const FORMATS: [GgmlDType; 3] = [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q5_0];

    fn matrix(dtype: GgmlDType, rows: usize, cols: usize) -> Result<(Arc<QTensor>, QMatrix)> {
        let w = Tensor::from_vec(values(rows * cols, 7), (rows, cols), &Device::Cpu)?;
        let q = Arc::new(QTensor::quantize(&w, dtype)?);
        let m = QMatrix::from_qtensor(q.clone(), None)?.expect("a supported matrix");
        Ok((q, m))
    }

    #[test]
    fn product_matches_the_dequantised_weights_and_candles_product() -> Result<()> {
        for dtype in FORMATS {
            let (q, mine) = matrix(dtype, 96, 576)?;
            let x = Tensor::from_vec(values(5 * 576, 3), (1, 5, 576), &Device::Cpu)?;
            let got = mine.forward(&x)?;
            let exact = x.broadcast_matmul(&q.dequantize(&Device::Cpu)?.t()?)?;
            assert_eq!(got.dims(), &[1, 5, 96]);
            let err = (&got - &exact)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = exact.abs()?.max_all()?.to_scalar::<f32>()?;
            // 8-bit activations: about 0.4 % of one value per term, far less over 576 terms.
            assert!(err < 0.01 * scale, "{dtype:?}: error {err} against {scale}");
            // candle's own product (8-bit activations too) agrees closely.
            let candle = QMatMul::from_arc(q)?.forward(&x)?;
            let diff = (&got - &candle)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 0.002 * scale,
                "{dtype:?}: differs from candle's by {diff}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_row_gets_the_same_numbers_alone_or_in_a_batch() -> Result<()> {
        // 67 weight rows: a token alone takes them eight at a time, the last pass three.
        for dtype in FORMATS {
            let (_q, mine) = matrix(dtype, 67, 192)?;
            let xs = values(7 * 192, 11);
            let batch = mine
                .forward(&Tensor::from_vec(xs.clone(), (7, 192), &Device::Cpu)?)?
                .to_vec2::<f32>()?;
            for (r, want) in batch.iter().enumerate() {
                let alone =
                    Tensor::from_vec(xs[r * 192..(r + 1) * 192].to_vec(), (1, 192), &Device::Cpu)?;
                let got = mine.forward(&alone)?.to_vec2::<f32>()?;
                assert_eq!(&got[0], want, "{dtype:?} row {r}");
            }
        }
        Ok(())
    }

    #[test]
    fn a_product_split_across_threads_equals_one_thread() -> Result<()> {
        let pool = Arc::new(SplitPool::new().expect("a helper thread"));
        for dtype in FORMATS {
            let (q, one) = matrix(dtype, 256, 576)?;
            let two = QMatrix::from_qtensor(q, Some(pool.clone()))?.expect("a supported matrix");
            // A prompt chunk and a single token, both above the split threshold.
            for m in [32usize, 1] {
                assert!(m * 256 * 576 >= SPLIT_MIN_MACS);
                let x = Tensor::from_vec(values(m * 576, 9), (m, 576), &Device::Cpu)?;
                let a = one.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
                let b = two.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
                assert_eq!(a, b, "{dtype:?}, {m} rows");
            }
        }
        Ok(())
    }

    #[test]
    fn the_simd_path_equals_the_scalar_reference() -> Result<()> {
        for dtype in FORMATS {
            let (q, mine) = matrix(dtype, WEIGHT_ROWS_PER_PASS, 320)?;
            let xs = values(6 * 320, 5);
            let acts = Q8Rows::quantize(&xs, 320);
            let Format::Own(own) = mine.format else {
                unreachable!("{dtype:?} has its own kernels")
            };
            let row_bytes = 320 / QK * own.block_bytes();
            let data = q.data()?;
            for (j, w) in data.chunks_exact(row_bytes).enumerate() {
                for r0 in [0, 4] {
                    let rows = (6 - r0).min(ROWS_PER_PASS);
                    let (mut fast, mut slow) = ([0f32; ROWS_PER_PASS], [0f32; ROWS_PER_PASS]);
                    dot_rows(own, w, &acts, r0, rows, &mut fast);
                    scalar_dot_rows(own, w, &acts, r0, rows, &mut slow);
                    for r in 0..rows {
                        let tol = 1e-4 * slow[r].abs().max(1.0);
                        assert!(
                            (fast[r] - slow[r]).abs() < tol,
                            "{dtype:?} row {j}/{r}: {} vs {}",
                            fast[r],
                            slow[r]
                        );
                    }
                }
            }
            // The lone-token pass: every count of weight rows up to a full pass, each against
            // the scalar reference and bit for bit against the activation-row pass.
            for n in 1..=WEIGHT_ROWS_PER_PASS {
                let w = &data[..n * row_bytes];
                for r in 0..6 {
                    let mut fast = [0f32; WEIGHT_ROWS_PER_PASS];
                    dot_weight_rows(own, w, row_bytes, n, &acts, r, &mut fast);
                    for (k, row) in w.chunks_exact(row_bytes).enumerate() {
                        let (mut one, mut slow) = ([0f32; ROWS_PER_PASS], [0f32; ROWS_PER_PASS]);
                        dot_rows(own, row, &acts, r, 1, &mut one);
                        scalar_dot_rows(own, row, &acts, r, 1, &mut slow);
                        assert_eq!(fast[k].to_bits(), one[0].to_bits(), "{dtype:?} {n}/{k}/{r}");
                        let tol = 1e-4 * slow[0].abs().max(1.0);
                        assert!((fast[k] - slow[0]).abs() < tol, "{dtype:?} {n}/{k}/{r}");
                    }
                }
            }
        }
        Ok(())
    }

    /// Formats whose dot product is candle's, with an odd number of weight rows and a width
    /// of three K-quant super-blocks.
    const CANDLE_FORMATS: [GgmlDType; 3] = [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K];
    const K_ROWS: usize = 67;
    const K_COLS: usize = 768;

    #[test]
    fn k_quant_products_equal_candles_and_the_dequantised_weights() -> Result<()> {
        for dtype in CANDLE_FORMATS {
            let (q, mine) = matrix(dtype, K_ROWS, K_COLS)?;
            assert!(matches!(mine.format, Format::Candle(_)), "{dtype:?}");
            for m in [1usize, 3, 5] {
                let x = Tensor::from_vec(values(m * K_COLS, 3), (1, m, K_COLS), &Device::Cpu)?;
                let got = mine.forward(&x)?;
                assert_eq!(got.dims(), &[1, m, K_ROWS]);
                let exact = x.broadcast_matmul(&q.dequantize(&Device::Cpu)?.t()?)?;
                let scale = exact.abs()?.max_all()?.to_scalar::<f32>()?;
                let err = (&got - &exact)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(err < 0.01 * scale, "{dtype:?}: error {err} against {scale}");
                // candle's product quantises the activations the same way and calls the same
                // dot product: the same numbers up to summation order.
                let candle = QMatMul::from_arc(q.clone())?.forward(&x)?;
                let diff = (&got - &candle)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(
                    diff <= 1e-5 * scale,
                    "{dtype:?}, {m} rows: differs from candle's by {diff}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn k_quant_rows_are_the_same_alone_in_a_batch_and_on_two_threads() -> Result<()> {
        let pool = Arc::new(SplitPool::new().expect("a helper thread"));
        for dtype in CANDLE_FORMATS {
            let (q, one) = matrix(dtype, K_ROWS, K_COLS)?;
            let two = QMatrix::from_qtensor(q, Some(pool.clone()))?.expect("a supported matrix");
            let m = 7;
            assert!(m * K_ROWS * K_COLS >= SPLIT_MIN_MACS);
            let xs = values(m * K_COLS, 13);
            let x = Tensor::from_vec(xs.clone(), (m, K_COLS), &Device::Cpu)?;
            let batch = one.forward(&x)?.to_vec2::<f32>()?;
            assert_eq!(batch, two.forward(&x)?.to_vec2::<f32>()?, "{dtype:?}");
            for (r, want) in batch.iter().enumerate() {
                let alone = Tensor::from_vec(
                    xs[r * K_COLS..(r + 1) * K_COLS].to_vec(),
                    (1, K_COLS),
                    &Device::Cpu,
                )?;
                assert_eq!(
                    &two.forward(&alone)?.to_vec2::<f32>()?[0],
                    want,
                    "{dtype:?} row {r}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn a_non_finite_block_scale_is_found_in_every_scaled_format() -> Result<()> {
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let w = Tensor::from_vec(values(4 * 512, 2), (4, 512), &Device::Cpu)?;
            let q = QTensor::quantize(&w, dtype)?;
            assert_eq!(non_finite_scale(&q)?, None, "{dtype:?}");
            let (block_bytes, offsets) = scale_layout(dtype).expect("a scaled format");
            assert_eq!(block_bytes, dtype.type_size(), "{dtype:?}");
            for (bad, value) in [(f16::NAN, f32::NAN), (f16::INFINITY, f32::INFINITY)] {
                let mut bytes = q.data()?.to_vec();
                let at = 5 * block_bytes + offsets[offsets.len() - 1];
                bytes[at..at + 2].copy_from_slice(&bad.to_le_bytes());
                let broken = QTensor::new(
                    candle_core::quantized::QStorage::from_data(
                        std::borrow::Cow::Owned(bytes),
                        &Device::Cpu,
                        dtype,
                    )?,
                    (4, 512),
                )?;
                let (block, v) = non_finite_scale(&broken)?.expect("found");
                assert_eq!(block, 5, "{dtype:?}");
                assert_eq!(v.is_nan(), value.is_nan(), "{dtype:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn other_types_and_wrong_widths_are_declined_or_refused() -> Result<()> {
        let w = Tensor::from_vec(values(32 * 256, 1), (32, 256), &Device::Cpu)?;
        let q2k = Arc::new(QTensor::quantize(&w, GgmlDType::Q2K)?);
        assert!(QMatrix::from_qtensor(q2k, None)?.is_none());
        let (_q, mine) = matrix(GgmlDType::Q4_1, 32, 64)?;
        let x = Tensor::zeros((1, 63), candle_core::DType::F32, &Device::Cpu)?;
        assert!(mine.forward(&x).is_err());
        Ok(())
    }
}
