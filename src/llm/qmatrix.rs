//! Products with Q4_1 and Q8_0 weights, run on the GGUF's own blocks.
//!
//! candle 0.11.1 has no SIMD dot product for Q4_1 (its `vec_dot` is the scalar reference), so
//! the loader used to re-quantise every Q4_1 matrix to Q8_0: 0.7 s at load, 1.06 instead of
//! 0.625 bytes per weight to stream on every generated token, and a second rounding of the
//! weights. This runs the product the way ggml does instead: the activations are quantised per
//! 32-value block to 8 bits with a scale `d` and a sum `s = d·Σq` (ggml's Q8_1), the 4-bit
//! weights are widened in registers, and each block adds `d_w·d_a·Σ q_w·q_a + m_w·s`.
//! Q8_0 (SmolLM2's tied embedding, which is also its output projection: a fifth of a token's
//! multiply-adds) takes the same path with `d_w·d_a·Σ q_w·q_a`, so it can be split across
//! threads too and gives the same numbers in any pass.
//!
//! Every activation row gets exactly the same arithmetic whether it comes alone (a generated
//! token) or with others (a prompt chunk, taken four rows per pass over a weight block), and
//! whichever thread computes it, so a prompt fed in one pass or in several gives the same
//! projections.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{bail, Result, Tensor};
use half::f16;

use super::split::SplitPool;

/// Values per block (the same for Q4_1, Q8_0 and the Q8_1 activations).
const QK: usize = 32;

/// A weight block format as stored in GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `d: f16, m: f16, qs: [u8; 16]`: value `j` in the low nibble of `qs[j]`, value `j + 16`
    /// in its high nibble; x = d·q + m.
    Q4_1,
    /// `d: f16, qs: [i8; 32]`; x = d·q.
    Q8_0,
}

impl Format {
    fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_1 => Some(Self::Q4_1),
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            _ => None,
        }
    }

    fn block_bytes(self) -> usize {
        match self {
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }
}

/// Activation rows that share one pass over a weight block.
const ROWS_PER_PASS: usize = 4;
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
    /// Takes a 2-D Q4_1 or Q8_0 tensor on the CPU; `None` for any other type, shape (an empty
    /// row included) or device.
    /// With `split`, products are shared with its helper thread.
    pub fn from_qtensor(t: Arc<QTensor>, split: Option<Arc<SplitPool>>) -> Result<Option<Self>> {
        let Some(format) = Format::of(t.dtype()) else {
            return Ok(None);
        };
        let Ok((rows, cols)) = t.shape().dims2() else {
            return Ok(None);
        };
        if cols == 0 || cols % QK != 0 || !t.device().is_cpu() {
            return Ok(None);
        }
        let expected = rows * cols / QK * format.block_bytes();
        let held = t.data()?.len();
        if held != expected {
            bail!("{format:?} tensor of shape ({rows}, {cols}) holds {held} bytes, expected {expected}");
        }
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
        let acts = Q8Rows::quantize(&xs, k);
        let mut out = vec![0f32; m * self.rows];
        let data = self.tensor.data()?;
        self.product(&data, &acts, m, &mut out);
        let mut shape = lead.to_vec();
        shape.push(self.rows);
        Tensor::from_vec(out, shape, x.device())
    }

    /// out[r][j] = row r of the activations · weight row j (`out` is m × rows, row-major).
    fn product(&self, data: &[u8], acts: &Q8Rows, m: usize, out: &mut [f32]) {
        let Some(split) = self
            .split
            .as_ref()
            .filter(|_| m * self.rows * self.cols >= SPLIT_MIN_MACS)
        else {
            self.rows_product(data, acts, 0, out.chunks_exact_mut(self.rows).collect());
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
        split.join(
            || self.rows_product(data, acts, 0, mine),
            || self.rows_product(data, acts, half, theirs),
        );
    }

    /// Products of weight rows `j0..j0 + dst[r].len()` with every activation row `r`.
    fn rows_product(&self, data: &[u8], acts: &Q8Rows, j0: usize, mut dst: Vec<&mut [f32]>) {
        let m = dst.len();
        let width = dst.first().map_or(0, |r| r.len());
        let row_bytes = self.cols / QK * self.format.block_bytes();
        // Weight row outside, activation rows inside: a weight row (a few hundred bytes) is
        // read from memory once and stays in L1 while every activation row uses it.
        for (j, w) in data[j0 * row_bytes..(j0 + width) * row_bytes]
            .chunks_exact(row_bytes)
            .enumerate()
        {
            let mut r0 = 0;
            while r0 < m {
                let rows = (m - r0).min(ROWS_PER_PASS);
                let mut sums = [0f32; ROWS_PER_PASS];
                dot_rows(self.format, w, acts, r0, rows, &mut sums);
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

#[inline]
fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dot products of weight row `w` with activation rows `r0..r0 + rows` (rows ≤ 4).
#[cfg(target_feature = "avx2")]
fn dot_rows(
    format: Format,
    w: &[u8],
    acts: &Q8Rows,
    r0: usize,
    rows: usize,
    sums: &mut [f32; ROWS_PER_PASS],
) {
    // SAFETY: the target feature is enabled at compile time; every load below reads inside
    // `w` (whole blocks) or `acts.qs` (32 values per block).
    unsafe {
        match format {
            Format::Q4_1 => avx2::dot_rows_q4_1(w, acts, r0, rows, sums),
            Format::Q8_0 => avx2::dot_rows_q8_0(w, acts, r0, rows, sums),
        }
    }
}

#[cfg(not(target_feature = "avx2"))]
fn dot_rows(
    format: Format,
    w: &[u8],
    acts: &Q8Rows,
    r0: usize,
    rows: usize,
    sums: &mut [f32; ROWS_PER_PASS],
) {
    scalar_dot_rows(format, w, acts, r0, rows, sums)
}

/// The reference form of [`dot_rows`] (the fallback without AVX2, and the tests' oracle).
#[cfg_attr(target_feature = "avx2", allow(dead_code))]
fn scalar_dot_rows(
    format: Format,
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
                Format::Q4_1 => {
                    let mut isum = 0i32;
                    for (j, &q) in blk[4..].iter().enumerate() {
                        isum +=
                            (q & 0x0F) as i32 * a[j] as i32 + (q >> 4) as i32 * a[j + 16] as i32;
                    }
                    acc += half_at(blk, 0) * acts.d[i] * isum as f32 + half_at(blk, 2) * acts.s[i];
                }
                Format::Q8_0 => {
                    let isum: i32 = blk[2..]
                        .iter()
                        .zip(a)
                        .map(|(&q, &x)| q as i8 as i32 * x as i32)
                        .sum();
                    acc += half_at(blk, 0) * acts.d[i] * isum as f32;
                }
            }
        }
        *sum = acc;
    }
}

#[cfg(target_feature = "avx2")]
mod avx2 {
    use super::{half_at, Format, Q8Rows, QK, ROWS_PER_PASS};
    use std::arch::x86_64::*;

    /// Σ over 32 lanes of u8 × i8, as 8 i32 partial sums. Pairs are summed to i16 first, so
    /// callers keep them small enough not to saturate: Q4_1 nibbles (≤ 15) × activations
    /// (2·15·128 < 32767), Q8_0's |w| (≤ 128) × activations (≤ 127 in size: 2·128·127 =
    /// 32512). (AVX512-VNNI's
    /// `vpdpbusd` does this in one instruction; measured no faster here, as the product
    /// waits on memory, so the AVX2 form serves every x86-64-v3 machine.)
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

    pub(super) unsafe fn dot_rows_q4_1(
        w: &[u8],
        acts: &Q8Rows,
        r0: usize,
        rows: usize,
        sums: &mut [f32; ROWS_PER_PASS],
    ) {
        let nb = acts.blocks_per_row;
        let low = _mm_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); ROWS_PER_PASS];
        let mut offsets = [0f32; ROWS_PER_PASS];
        for (b, blk) in w.chunks_exact(Format::Q4_1.block_bytes()).enumerate() {
            let dw = half_at(blk, 0);
            let mw = half_at(blk, 2);
            let q = _mm_loadu_si128(blk.as_ptr().add(4) as *const __m128i);
            let lo = _mm_and_si128(q, low);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
            let wq = _mm256_set_m128i(hi, lo);
            for r in 0..rows {
                let i = (r0 + r) * nb + b;
                let a = _mm256_loadu_si256(acts.qs.as_ptr().add(i * QK) as *const __m256i);
                let p = _mm256_cvtepi32_ps(block_isum(wq, a));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * acts.d[i]), p, acc[r]);
                offsets[r] += mw * acts.s[i];
            }
        }
        for r in 0..rows {
            sums[r] = hsum(acc[r]) + offsets[r];
        }
    }

    pub(super) unsafe fn dot_rows_q8_0(
        w: &[u8],
        acts: &Q8Rows,
        r0: usize,
        rows: usize,
        sums: &mut [f32; ROWS_PER_PASS],
    ) {
        let nb = acts.blocks_per_row;
        let mut acc = [_mm256_setzero_ps(); ROWS_PER_PASS];
        for (b, blk) in w.chunks_exact(Format::Q8_0.block_bytes()).enumerate() {
            let dw = half_at(blk, 0);
            let wq = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
            // `block_isum` takes unsigned × signed: |w| times a with w's sign (ggml's trick).
            let abs_w = _mm256_sign_epi8(wq, wq);
            for (r, acc_r) in acc[..rows].iter_mut().enumerate() {
                let i = (r0 + r) * nb + b;
                let a = _mm256_loadu_si256(acts.qs.as_ptr().add(i * QK) as *const __m256i);
                let signed_a = _mm256_sign_epi8(a, wq);
                let p = block_isum(abs_w, signed_a);
                *acc_r = _mm256_fmadd_ps(
                    _mm256_set1_ps(dw * acts.d[i]),
                    _mm256_cvtepi32_ps(p),
                    *acc_r,
                );
            }
        }
        for r in 0..rows {
            sums[r] = hsum(acc[r]);
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

    const FORMATS: [GgmlDType; 2] = [GgmlDType::Q4_1, GgmlDType::Q8_0];

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
        for dtype in FORMATS {
            let (_q, mine) = matrix(dtype, 64, 192)?;
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
            let (q, mine) = matrix(dtype, 8, 320)?;
            let xs = values(6 * 320, 5);
            let acts = Q8Rows::quantize(&xs, 320);
            let row_bytes = 320 / QK * mine.format.block_bytes();
            let data = q.data()?;
            for (j, w) in data.chunks_exact(row_bytes).enumerate() {
                for r0 in [0, 4] {
                    let rows = (6 - r0).min(ROWS_PER_PASS);
                    let (mut fast, mut slow) = ([0f32; 4], [0f32; 4]);
                    dot_rows(mine.format, w, &acts, r0, rows, &mut fast);
                    scalar_dot_rows(mine.format, w, &acts, r0, rows, &mut slow);
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
        }
        Ok(())
    }

    #[test]
    fn other_types_and_wrong_widths_are_declined_or_refused() -> Result<()> {
        let w = Tensor::from_vec(values(32 * 256, 1), (32, 256), &Device::Cpu)?;
        let q4k = Arc::new(QTensor::quantize(&w, GgmlDType::Q4K)?);
        assert!(QMatrix::from_qtensor(q4k, None)?.is_none());
        let (_q, mine) = matrix(GgmlDType::Q4_1, 32, 64)?;
        let x = Tensor::zeros((1, 63), candle_core::DType::F32, &Device::Cpu)?;
        assert!(mine.forward(&x).is_err());
        Ok(())
    }
}
