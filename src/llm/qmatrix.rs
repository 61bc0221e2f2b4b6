//! Products with Q4_1, Q5_0, Q8_0 and K-quant weights, run on the GGUF's own blocks.
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
//! K-quant weights (Q4_K, Q5_K, Q6_K: what most downloadable GGUFs use) take the same passes
//! with their own kernels (`super::kquant`, activations quantised per 256 values as candle's
//! Q8_K); they used to take candle's `vec_dot`, which decodes a weight block's scales again for
//! every activation row.
//!
//! Every activation row gets exactly the same arithmetic whether it comes alone (a generated
//! token, which meets eight weight rows per pass) or with others (a prompt chunk: eight weight
//! rows widened once into a tile and met by four activation rows per pass where the CPU has
//! AVX-512 VNNI, else eight activation rows per pass over one widened weight row), and
//! whichever thread computes it, so a prompt fed in one
//! pass or in several gives the same projections. Each of the eight pairs of a pass is one
//! lane of a vector: a block's exact integer sum (AVX2 byte products, or AVX-512 VNNI's
//! `vpdpbusd` where the CPU has it, chosen at run time: the same integers) is scaled and added
//! in that lane, so no horizontal float sum is needed and every kernel equals the scalar
//! reference ([`scalar_pair`]) bit for bit. A prompt chunk widens its weight rows once and
//! meets all of its activation rows with them; a token pass prefetches the next eight rows.
//!
//! Measured on this project's 2-vCPU development machine by a temporary timing of one
//! product (not shipped; whole-model figures: `just llama-bench`) (one thread, a 4864 × 896 matrix
//! in cache, 128 activation rows): Q5_0 31 → 52, Q8_0 33 → 47, Q4_1 30 → 55 G multiply-adds
//! per second against the earlier kernel (one horizontal sum per pair, the weight block
//! widened again for every eight activation rows); candle's Q4_K / Q6_K products 29–31.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{bail, Result, Tensor};
use half::f16;

use super::kquant::{self, KFormat, Q8KRows, WideKRow, WideKTile, QK_K};
use super::split::SplitPool;

/// Values per block (the same for Q4_1, Q8_0 and the Q8_1 activations).
const QK: usize = 32;

/// A weight block format as stored in GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// A format with this module's own kernels.
    Own(OwnFormat),
    /// A format whose dot product is candle's (see the module docs).
    K(KFormat),
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

impl Format {
    fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_1 => Some(Self::Own(OwnFormat::Q4_1)),
            GgmlDType::Q8_0 => Some(Self::Own(OwnFormat::Q8_0)),
            GgmlDType::Q4K => Some(Self::K(KFormat::Q4K)),
            GgmlDType::Q5K => Some(Self::K(KFormat::Q5K)),
            GgmlDType::Q6K => Some(Self::K(KFormat::Q6K)),
            GgmlDType::Q5_0 => Some(Self::Own(OwnFormat::Q5_0)),
            _ => None,
        }
    }

    /// Bytes per block and values per block.
    fn block(self) -> (usize, usize) {
        match self {
            Self::Own(o) => (o.block_bytes(), QK),
            Self::K(k) => (k.block_bytes(), QK_K),
        }
    }
}

/// Pairs per pass, one per lane of an 8 × f32 vector: a generated token meets eight weight rows
/// at a time, a prompt chunk eight weight rows (the tiled form, [`Kernel::prompt_tile`]) or,
/// without AVX-512 VNNI, one weight row with eight activation rows. (Eight
/// activation rows measured faster than four on the prompt: Qwen2.5-0.5B at one thread 65-66
/// -> 68-71 tok/s, Gemma 3 187 -> 195, SmolLM2 163 -> 167.)
pub(super) const LANES: usize = 8;
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
        let kernel = Kernel::detect();
        // Blocks of the buffers a prompt chunk widens weight rows into: (one row, a tile),
        // only the one its kernel uses; a generated token's product needs neither.
        let widened_blocks = |per_block: usize| match (m > 1, kernel.tiles()) {
            (false, _) => (0, 0),
            (true, false) => (k / per_block, 0),
            (true, true) => (0, k / per_block),
        };
        match self.format {
            Format::Own(format) => {
                // The tiled prompt form reads activation rows as they are: no group layout.
                let acts = Q8Rows::quantize(&xs, k, !kernel.tiles());
                let (rows_blocks, tile_blocks) = widened_blocks(QK);
                self.product(m, &mut out, &|j0, dst| {
                    let mut passes = OwnPasses {
                        kernel,
                        format,
                        acts: &acts,
                        wide: WideRow::new(rows_blocks),
                        tile: WideTile::new(tile_blocks),
                    };
                    self.rows_product(&mut passes, &data, j0, dst)
                });
            }
            Format::K(format) => {
                let acts = Q8KRows::quantize(&xs, k, !kernel.tiles());
                let (rows_blocks, tile_blocks) = widened_blocks(QK_K);
                self.product(m, &mut out, &|j0, dst| {
                    let mut passes = KPasses {
                        kernel,
                        format,
                        acts: &acts,
                        wide: WideKRow::new(rows_blocks),
                        tile: WideKTile::new(tile_blocks),
                    };
                    self.rows_product(&mut passes, &data, j0, dst)
                });
            }
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

    /// Products of weight rows `j0..j0 + dst[r].len()` with every activation row `r`, for a
    /// format with this module's kernels (`own`) or a K-quant.
    fn rows_product(
        &self,
        kernels: &mut dyn Passes,
        data: &[u8],
        j0: usize,
        mut dst: Vec<&mut [f32]>,
    ) {
        let m = dst.len();
        let width = dst.first().map_or(0, |r| r.len());
        let (block_bytes, block_values) = self.format.block();
        let row_bytes = self.cols / block_values * block_bytes;
        let rows = &data[j0 * row_bytes..(j0 + width) * row_bytes];
        if m == 1 {
            // A generated token: LANES weight rows per pass over its activation row, so that
            // many streams of weights are in flight and the per-block set-up is shared (a
            // weight row of Gemma 3's 262k-row output projection is only 20 blocks).
            let pass = LANES * row_bytes;
            for (p, w) in rows.chunks(pass).enumerate() {
                let n = w.len() / row_bytes;
                let next = rows.get((p + 1) * pass..).unwrap_or(&[]);
                let sums = kernels.token(w, row_bytes, n, &next[..next.len().min(pass)]);
                dst[0][p * LANES..p * LANES + n].copy_from_slice(&sums[..n]);
            }
            return;
        }
        // A prompt chunk, LANES weight rows at a time: widened once as a tile and met by
        // every activation row where the kernel has a tiled form; else each weight row is
        // widened once (kept in L1) and met by every group of LANES activation rows.
        for (t, tile) in rows.chunks(LANES * row_bytes).enumerate() {
            let col = t * LANES;
            if kernels.tile(tile, row_bytes, &mut dst, col) {
                continue;
            }
            for (j, w) in tile.chunks_exact(row_bytes).enumerate() {
                kernels.widen(w);
                for g in 0..m.div_ceil(LANES) {
                    let sums = kernels.prompt(w, g);
                    for (r, v) in sums.iter().take(m - g * LANES).enumerate() {
                        dst[g * LANES + r][col + j] = *v;
                    }
                }
            }
        }
    }
}

/// The three kinds of pass a product is made of, for one format's kernels: a generated
/// token's (`n` ≤ [`LANES`] weight rows with activation row 0, `next` the memory the
/// following pass reads), and a prompt chunk's (a weight row widened once, then met by each
/// group `g` of [`LANES`] activation rows).
///
/// `tile` is the tiled form of a prompt chunk where a kernel has one: the weight rows of `w`
/// (at most [`LANES`]) widened once and met by every activation row, their products written
/// to columns `col..` of each `dst` row; `false` (nothing done) where it has none.
trait Passes {
    fn token(&self, w: &[u8], row_bytes: usize, n: usize, next: &[u8]) -> [f32; LANES];
    fn widen(&mut self, w: &[u8]);
    fn prompt(&self, w: &[u8], g: usize) -> [f32; LANES];
    fn tile(&mut self, w: &[u8], row_bytes: usize, dst: &mut [&mut [f32]], col: usize) -> bool {
        let _ = (w, row_bytes, dst, col);
        false
    }
}

/// [`Passes`] for Q4_1 / Q5_0 / Q8_0.
struct OwnPasses<'a> {
    kernel: Kernel,
    format: OwnFormat,
    acts: &'a Q8Rows,
    wide: WideRow,
    tile: WideTile,
}

impl Passes for OwnPasses<'_> {
    fn token(&self, w: &[u8], row_bytes: usize, n: usize, next: &[u8]) -> [f32; LANES] {
        (self.kernel).token_pass(self.format, w, row_bytes, n, self.acts, 0, next)
    }

    fn widen(&mut self, w: &[u8]) {
        (self.kernel).widen_row(self.format, w, &mut self.wide);
    }

    fn prompt(&self, w: &[u8], g: usize) -> [f32; LANES] {
        (self.kernel).prompt_pass(self.format, w, &self.wide, self.acts, g)
    }

    fn tile(&mut self, w: &[u8], row_bytes: usize, dst: &mut [&mut [f32]], col: usize) -> bool {
        (self.kernel).prompt_tile(
            self.format,
            w,
            row_bytes,
            &mut self.tile,
            self.acts,
            dst,
            col,
        )
    }
}

/// [`Passes`] for the K-quants (`super::kquant`).
struct KPasses<'a> {
    kernel: Kernel,
    format: KFormat,
    acts: &'a Q8KRows,
    wide: WideKRow,
    tile: WideKTile,
}

impl Passes for KPasses<'_> {
    fn token(&self, w: &[u8], row_bytes: usize, n: usize, next: &[u8]) -> [f32; LANES] {
        let simd = self.kernel != Kernel::Scalar;
        kquant::token_pass(simd, self.format, w, row_bytes, n, self.acts, 0, next)
    }

    fn widen(&mut self, w: &[u8]) {
        self.wide.fill(self.format, w);
    }

    fn prompt(&self, w: &[u8], g: usize) -> [f32; LANES] {
        let simd = self.kernel != Kernel::Scalar;
        kquant::prompt_pass(simd, self.format, w, &self.wide, self.acts, g)
    }

    fn tile(&mut self, w: &[u8], row_bytes: usize, dst: &mut [&mut [f32]], col: usize) -> bool {
        let tiled = self.kernel.tiles();
        kquant::prompt_tile(
            tiled,
            self.format,
            w,
            row_bytes,
            &mut self.tile,
            self.acts,
            dst,
            col,
        )
    }
}

/// Activation rows quantised per block (ggml's Q8_1, scales kept in f32), row after row, and
/// (for more than one row) again by groups of [`LANES`] rows for a prompt pass.
struct Q8Rows {
    rows: usize,
    blocks_per_row: usize,
    /// Row-major: block `b` of row `r` at `(r·nb + b)·QK`.
    qs: Vec<i8>,
    /// Per block: the scale `d`, `s = d·Σq` and `Σq`.
    d: Vec<f32>,
    s: Vec<f32>,
    sum: Vec<i32>,
    /// The same by groups: lane `l` of group `g`, block `b` at `((g·nb + b)·LANES + l)·QK`
    /// (and `(g·nb + b)·LANES + l` in the per-block vectors), so a pass loads a group's
    /// blocks from one place; lanes past the last row are zero. Empty for a single row.
    qs_g: Vec<i8>,
    d_g: Vec<f32>,
    s_g: Vec<f32>,
    sum_g: Vec<i32>,
}

impl Q8Rows {
    /// ggml's `quantize_row_q8_1`: per block, `d = max|x| / 127`, `q = round(x / d)`; with
    /// `grouped` (and more than one row) also laid out by groups for [`Kernel::prompt_pass`].
    fn quantize(xs: &[f32], k: usize, grouped: bool) -> Self {
        let blocks = xs.len() / QK;
        let mut qs = vec![0i8; xs.len()];
        let mut d = vec![0f32; blocks];
        let mut s = vec![0f32; blocks];
        let mut sum = vec![0i32; blocks];
        for (b, (x, q)) in xs.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).enumerate() {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale == 0.0 { 0.0 } else { 1.0 / scale };
            let mut total = 0i32;
            for (qv, xv) in q.iter_mut().zip(x) {
                let v = (xv * inv).round() as i8;
                *qv = v;
                total += v as i32;
            }
            d[b] = scale;
            s[b] = scale * total as f32;
            sum[b] = total;
        }
        let nb = k / QK;
        let rows = xs.len() / k;
        let mut me = Self {
            rows,
            blocks_per_row: nb,
            qs,
            d,
            s,
            sum,
            qs_g: Vec::new(),
            d_g: Vec::new(),
            s_g: Vec::new(),
            sum_g: Vec::new(),
        };
        if grouped && rows > 1 {
            let slots = me.groups() * nb * LANES;
            me.qs_g = vec![0; slots * QK];
            me.d_g = vec![0.0; slots];
            me.s_g = vec![0.0; slots];
            me.sum_g = vec![0; slots];
            for r in 0..rows {
                let (g, l) = (r / LANES, r % LANES);
                for b in 0..nb {
                    let (from, to) = (r * nb + b, (g * nb + b) * LANES + l);
                    me.qs_g[to * QK..][..QK].copy_from_slice(&me.qs[from * QK..][..QK]);
                    me.d_g[to] = me.d[from];
                    me.s_g[to] = me.s[from];
                    me.sum_g[to] = me.sum[from];
                }
            }
        }
        me
    }

    /// Groups of [`LANES`] rows (the last may be partial).
    fn groups(&self) -> usize {
        self.rows.div_ceil(LANES)
    }
}

/// A weight row widened once for a prompt pass: per block the unsigned weights the byte
/// products take (Q4_1 nibbles, Q5_0's `q` in 0..=31, Q8_0's `|q|`), Q8_0's signs, the scale
/// `d` and (Q4_1) the minimum `m`. (Only the SIMD kernels read it.)
#[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
struct WideRow {
    w: Vec<[u8; QK]>,
    sign: Vec<[u8; QK]>,
    d: Vec<f32>,
    m: Vec<f32>,
}

impl WideRow {
    fn new(blocks: usize) -> Self {
        Self {
            w: vec![[0; QK]; blocks],
            sign: vec![[0; QK]; blocks],
            d: vec![0.0; blocks],
            m: vec![0.0; blocks],
        }
    }
}

/// [`LANES`] weight rows widened once for the tiled prompt form ([`Kernel::prompt_tile`]):
/// per block `b` and 4-value step `s` (slot `b·8 + s`), the rows' unsigned weight bytes
/// `4s..4s + 4` side by side, one dword per lane (what `vpdpbusd` multiplies with four
/// broadcast activation bytes): Q4_1 nibbles, Q5_0's `q` in 0..=31, Q8_0's `q + 128`, the
/// offsets taken out through the activations' block sums; and the rows' scales (Q4_1: and
/// minimums) as lanes. Rows past the last are zero.
#[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
struct WideTile {
    w: Vec<[u32; LANES]>,
    d: Vec<[f32; LANES]>,
    m: Vec<[f32; LANES]>,
}

impl WideTile {
    fn new(blocks: usize) -> Self {
        Self {
            w: vec![[0; LANES]; blocks * QK / 4],
            d: vec![[0.0; LANES]; blocks],
            m: vec![[0.0; LANES]; blocks],
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

/// The exact integer sum of one block pair: Σ q·a (Q4_1, Q8_0) or Σ (q − 16)·a (Q5_0).
fn block_isum(format: OwnFormat, blk: &[u8], a: &[i8]) -> i32 {
    match format {
        OwnFormat::Q4_1 => blk[4..]
            .iter()
            .enumerate()
            .map(|(j, &q)| (q & 0x0F) as i32 * a[j] as i32 + (q >> 4) as i32 * a[j + 16] as i32)
            .sum(),
        OwnFormat::Q8_0 => blk[2..]
            .iter()
            .zip(a)
            .map(|(&q, &x)| q as i8 as i32 * x as i32)
            .sum(),
        OwnFormat::Q5_0 => {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            blk[6..]
                .iter()
                .enumerate()
                .map(|(j, &q)| {
                    let lo = (q & 0x0F) as i32 | ((qh >> j) as i32 & 1) << 4;
                    let hi = (q >> 4) as i32 | ((qh >> (j + 16)) as i32 & 1) << 4;
                    (lo - 16) * a[j] as i32 + (hi - 16) * a[j + 16] as i32
                })
                .sum()
        }
    }
}

/// The reference for one (weight row, activation row `r`) pair, and the definition every
/// kernel computes bit for bit: block by block in order, `acc = fma(d_w·d_a, isum, acc)`
/// with the block's exact integer sum, then (Q4_1) `acc = fma(m_w, s_a, acc)`. Each kernel
/// lane is one pair doing exactly these steps, so a pair's bits do not depend on the pass
/// shape, the thread, or whether AVX2 or AVX-512 VNNI formed the integer sums.
fn scalar_pair(format: OwnFormat, w: &[u8], acts: &Q8Rows, r: usize) -> f32 {
    let nb = acts.blocks_per_row;
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(format.block_bytes()).enumerate() {
        let i = r * nb + b;
        let isum = block_isum(format, blk, &acts.qs[i * QK..][..QK]);
        acc = (half_at(blk, 0) * acts.d[i]).mul_add(isum as f32, acc);
        if format == OwnFormat::Q4_1 {
            acc = half_at(blk, 2).mul_add(acts.s[i], acc);
        }
    }
    acc
}

/// Which instructions form the products: chosen once per product at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    /// [`scalar_pair`] per pair: builds whose target lacks AVX2, and the tests' oracle.
    #[cfg_attr(target_feature = "avx2", allow(dead_code))]
    Scalar,
    /// 256-bit integer byte products (`vpmaddubsw` + `vpmaddwd`).
    #[cfg(target_feature = "avx2")]
    Avx2,
    /// The same with AVX-512 VNNI's `vpdpbusd` (one instruction per block pair instead of
    /// two) on 256-bit registers, where the CPU has it: the same integer sums.
    #[cfg(target_feature = "avx2")]
    Vnni,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_feature = "avx2")]
        {
            if std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                Self::Vnni
            } else {
                Self::Avx2
            }
        }
        #[cfg(not(target_feature = "avx2"))]
        Self::Scalar
    }

    /// Every kernel this CPU can run (for the tests).
    #[cfg(test)]
    #[cfg_attr(not(target_feature = "avx2"), allow(unused_mut))]
    fn available() -> Vec<Self> {
        let mut all = vec![Self::Scalar];
        #[cfg(target_feature = "avx2")]
        {
            all.push(Self::Avx2);
            if Self::detect() == Self::Vnni {
                all.push(Self::Vnni);
            }
        }
        all
    }

    /// Whether prompt chunks take the tiled form ([`Self::prompt_tile`]): with VNNI, whose
    /// `vpdpbusd` adds unsigned × signed byte products without the 16-bit saturation of
    /// AVX2's `vpmaddubsw` (which Q8_0's `q + 128` would reach).
    fn tiles(self) -> bool {
        #[cfg(target_feature = "avx2")]
        if self == Self::Vnni {
            return true;
        }
        false
    }

    /// The tiled prompt form: the weight rows in `w` (at most [`LANES`], `row_bytes` each)
    /// widened once into `tile`, then every activation row of `acts` against all of them at
    /// once (four activation rows per pass: each step's four weight bytes of the eight rows
    /// are one vector, each activation's four bytes a broadcast), products written to
    /// columns `col..` of each `dst` row. Each lane is still one (weight row, activation row)
    /// pair doing [`scalar_pair`]'s steps, so the bits are the scalar reference's. Measured
    /// against the row form (eight activation rows per pass over one widened weight row,
    /// eight `vpdpbusd` then a horizontal integer sum per block), `models bench`, one thread,
    /// prompt tok/s, two alternated runs each: Gemma 3 270M 379–404 → 513–528, Qwen2.5-0.5B
    /// 114–123 → 161–166, SmolLM2 325–331 → 444–450. Eight activation rows per pass instead
    /// of four: Qwen2.5 172–174 but Gemma 3 496–510, so four. `false` where the kernel has no
    /// tiled form.
    #[allow(clippy::too_many_arguments)]
    fn prompt_tile(
        self,
        format: OwnFormat,
        w: &[u8],
        row_bytes: usize,
        tile: &mut WideTile,
        acts: &Q8Rows,
        dst: &mut [&mut [f32]],
        col: usize,
    ) -> bool {
        if !self.tiles() {
            let _ = (format, w, row_bytes, tile, acts, dst, col);
            return false;
        }
        #[cfg(target_feature = "avx2")]
        // SAFETY: `tiles()` says AVX-512 VNNI/VL were detected; `w` holds at most eight rows
        // of whole blocks and `tile` one slot per block of a row.
        unsafe {
            match format {
                OwnFormat::Q4_1 => {
                    avx2::prompt_tile::<{ avx2::Q4_1 }>(w, row_bytes, tile, acts, dst, col)
                }
                OwnFormat::Q8_0 => {
                    avx2::prompt_tile::<{ avx2::Q8_0 }>(w, row_bytes, tile, acts, dst, col)
                }
                OwnFormat::Q5_0 => {
                    avx2::prompt_tile::<{ avx2::Q5_0 }>(w, row_bytes, tile, acts, dst, col)
                }
            }
        }
        true
    }

    /// Whether this CPU's kernel has the tiled prompt form (for the K-quant tests).
    #[cfg(test)]
    pub(super) fn tiles_here() -> bool {
        Self::detect().tiles()
    }

    /// Widens weight row `w` into `wide` for [`Self::prompt_pass`] (the scalar kernel reads
    /// the blocks as they are).
    fn widen_row(self, format: OwnFormat, w: &[u8], wide: &mut WideRow) {
        match self {
            Self::Scalar => {
                let _ = (format, w, wide);
            }
            // SAFETY: AVX2 is enabled at compile time; `w` holds whole blocks, one per slot
            // of `wide`.
            #[cfg(target_feature = "avx2")]
            Self::Avx2 | Self::Vnni => unsafe {
                match format {
                    OwnFormat::Q4_1 => avx2::widen_row::<{ avx2::Q4_1 }>(w, wide),
                    OwnFormat::Q8_0 => avx2::widen_row::<{ avx2::Q8_0 }>(w, wide),
                    OwnFormat::Q5_0 => avx2::widen_row::<{ avx2::Q5_0 }>(w, wide),
                }
            },
        }
    }

    /// Weight row `w` (widened in `wide`) with the [`LANES`] activation rows of group `g`:
    /// lane `l` is row `g·LANES + l` (lanes past the last row are meaningless).
    fn prompt_pass(
        self,
        format: OwnFormat,
        w: &[u8],
        wide: &WideRow,
        acts: &Q8Rows,
        g: usize,
    ) -> [f32; LANES] {
        match self {
            Self::Scalar => {
                let _ = wide;
                let mut out = [0f32; LANES];
                let rows = (acts.rows - g * LANES).min(LANES);
                for (l, o) in out[..rows].iter_mut().enumerate() {
                    *o = scalar_pair(format, w, acts, g * LANES + l);
                }
                out
            }
            // SAFETY: AVX2 (and, for Vnni, AVX-512 VNNI/VL, detected at run time) are there;
            // `wide` holds this row's blocks and `acts` the group's.
            #[cfg(target_feature = "avx2")]
            Self::Avx2 => unsafe {
                match format {
                    OwnFormat::Q4_1 => avx2::prompt_pass::<{ avx2::Q4_1 }, false>(wide, acts, g),
                    OwnFormat::Q8_0 => avx2::prompt_pass::<{ avx2::Q8_0 }, false>(wide, acts, g),
                    OwnFormat::Q5_0 => avx2::prompt_pass::<{ avx2::Q5_0 }, false>(wide, acts, g),
                }
            },
            #[cfg(target_feature = "avx2")]
            Self::Vnni => unsafe {
                match format {
                    OwnFormat::Q4_1 => avx2::prompt_pass_vnni::<{ avx2::Q4_1 }>(wide, acts, g),
                    OwnFormat::Q8_0 => avx2::prompt_pass_vnni::<{ avx2::Q8_0 }>(wide, acts, g),
                    OwnFormat::Q5_0 => avx2::prompt_pass_vnni::<{ avx2::Q5_0 }>(wide, acts, g),
                }
            },
        }
    }

    /// The `n` weight rows (n ≤ [`LANES`]) in `w`, `row_bytes` each, with activation row `r`:
    /// lane `k` is weight row `k`. A partial pass (the last of a matrix whose height is not a
    /// multiple of eight) runs on a copy padded with zero blocks, whose lanes are dropped.
    ///
    /// `next` is the memory the following pass will read (or empty): the SIMD kernels
    /// prefetch it a share per block. Measured on a 64 MB Q5_0 / Q8_0 matrix (64k × 1024,
    /// one token, one thread): without it 4.5 / 7.7 GB/s, while candle's one-row-at-a-time
    /// Q6_K product streamed 14.2 GB/s.
    #[allow(clippy::too_many_arguments)]
    fn token_pass(
        self,
        format: OwnFormat,
        w: &[u8],
        row_bytes: usize,
        n: usize,
        acts: &Q8Rows,
        r: usize,
        next: &[u8],
    ) -> [f32; LANES] {
        debug_assert!(n <= LANES && w.len() == n * row_bytes);
        #[cfg(target_feature = "avx2")]
        if self != Self::Scalar {
            let padded;
            let w = if n == LANES {
                w
            } else {
                padded = [w, &vec![0; (LANES - n) * row_bytes]].concat();
                &padded[..]
            };
            // SAFETY: AVX2 is enabled at compile time and VNNI/VL were detected at run time;
            // `w` holds eight rows of whole blocks.
            return unsafe {
                match (self, format) {
                    (Self::Vnni, OwnFormat::Q4_1) => {
                        avx2::token_pass_vnni::<{ avx2::Q4_1 }>(w, row_bytes, acts, r, next)
                    }
                    (Self::Vnni, OwnFormat::Q8_0) => {
                        avx2::token_pass_vnni::<{ avx2::Q8_0 }>(w, row_bytes, acts, r, next)
                    }
                    (Self::Vnni, OwnFormat::Q5_0) => {
                        avx2::token_pass_vnni::<{ avx2::Q5_0 }>(w, row_bytes, acts, r, next)
                    }
                    (_, OwnFormat::Q4_1) => {
                        avx2::token_pass::<{ avx2::Q4_1 }, false>(w, row_bytes, acts, r, next)
                    }
                    (_, OwnFormat::Q8_0) => {
                        avx2::token_pass::<{ avx2::Q8_0 }, false>(w, row_bytes, acts, r, next)
                    }
                    (_, OwnFormat::Q5_0) => {
                        avx2::token_pass::<{ avx2::Q5_0 }, false>(w, row_bytes, acts, r, next)
                    }
                }
            };
        }
        let _ = next; // prefetched by the SIMD kernels only
        let mut out = [0f32; LANES];
        for (o, row) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
            *o = scalar_pair(format, row, acts, r);
        }
        out
    }
}

#[cfg(target_feature = "avx2")]
pub(super) mod avx2 {
    use super::{half_at, OwnFormat, Q8Rows, WideRow, WideTile, LANES, QK};
    use std::arch::x86_64::*;

    /// Prefetches block step `b`'s share (of `nb`) of `next`, the memory of the following
    /// pass: eight short row streams are too short for the hardware prefetcher to ramp up
    /// on. Into L1 when a pass fits beside the one being read (measured best for 8 rows of
    /// 896–1024 Q5_0 / Q8_0 values), else into L2 (8 rows of 4864 Q6_K values, 32 KB, evicted
    /// the rows in use: 11 → 21 G multiply-adds per second on a 32 MB matrix with L2).
    #[inline(always)]
    pub(in crate::llm) unsafe fn prefetch_share(next: &[u8], b: usize, nb: usize) {
        let mut at = b * next.len() / nb;
        while at < (b + 1) * next.len() / nb {
            let p = next.as_ptr().add(at) as *const i8;
            if next.len() <= 16 * 1024 {
                _mm_prefetch::<_MM_HINT_T0>(p);
            } else {
                _mm_prefetch::<_MM_HINT_T1>(p);
            }
            at += 64;
        }
    }

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

    /// One weight block as 32 unsigned bytes (Q4_1 nibbles; Q5_0's q in 0..=31, its −16
    /// applied to the sum later; Q8_0's |q|) and, for Q8_0, the signs to give the
    /// activations (ggml's sign trick).
    #[inline(always)]
    unsafe fn widen<const F: u8>(blk: &[u8]) -> (__m256i, __m256i) {
        let low = _mm_set1_epi8(0x0F);
        match format(F) {
            OwnFormat::Q4_1 | OwnFormat::Q5_0 => {
                let at = if F == Q4_1 { 4 } else { 6 };
                let q = _mm_loadu_si128(blk.as_ptr().add(at) as *const __m128i);
                let lo = _mm_and_si128(q, low);
                let hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
                let w = _mm256_set_m128i(hi, lo);
                if F == Q4_1 {
                    (w, _mm256_setzero_si256())
                } else {
                    let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                    let fifth = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
                    (_mm256_or_si256(w, fifth), _mm256_setzero_si256())
                }
            }
            OwnFormat::Q8_0 => {
                let wq = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
                (_mm256_sign_epi8(wq, wq), wq)
            }
        }
    }

    /// Σ over 32 lanes of unsigned weight × signed activation bytes, as 8 i32 partial sums;
    /// exact either way (AVX2 sums pairs to i16 first: at most 2·128·127 = 32512 for Q8_0's
    /// |q| ≤ 128, less for the others, so nothing saturates).
    #[inline(always)]
    unsafe fn isum<const F: u8, const VNNI: bool>(
        w: __m256i,
        sign: __m256i,
        a: __m256i,
    ) -> __m256i {
        let a = if F == Q8_0 {
            _mm256_sign_epi8(a, sign)
        } else {
            a
        };
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
        }
    }

    /// Lane `l` = the sum of the 8 lanes of `v[l]`.
    #[inline(always)]
    pub(in crate::llm) unsafe fn reduce(v: &[__m256i; LANES]) -> __m256i {
        let t0 = _mm256_hadd_epi32(v[0], v[1]);
        let t1 = _mm256_hadd_epi32(v[2], v[3]);
        let t2 = _mm256_hadd_epi32(v[4], v[5]);
        let t3 = _mm256_hadd_epi32(v[6], v[7]);
        // Low half: v0..v3's first four lanes summed, high half their last four; u1 for v4..v7.
        let u0 = _mm256_hadd_epi32(t0, t1);
        let u1 = _mm256_hadd_epi32(t2, t3);
        _mm256_add_epi32(
            _mm256_permute2x128_si256(u0, u1, 0x20),
            _mm256_permute2x128_si256(u0, u1, 0x31),
        )
    }

    #[inline(always)]
    pub(in crate::llm) unsafe fn store(acc: __m256) -> [f32; LANES] {
        let mut out = [0f32; LANES];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        out
    }

    pub(super) unsafe fn widen_row<const F: u8>(w: &[u8], wide: &mut WideRow) {
        let bytes = format(F).block_bytes();
        for (b, blk) in w.chunks_exact(bytes).enumerate() {
            let (u, sign) = widen::<F>(blk);
            _mm256_storeu_si256(wide.w[b].as_mut_ptr() as *mut __m256i, u);
            if F == Q8_0 {
                _mm256_storeu_si256(wide.sign[b].as_mut_ptr() as *mut __m256i, sign);
            }
            wide.d[b] = half_at(blk, 0);
            if F == Q4_1 {
                wide.m[b] = half_at(blk, 2);
            }
        }
    }

    #[inline(always)]
    pub(super) unsafe fn prompt_pass<const F: u8, const VNNI: bool>(
        wide: &WideRow,
        acts: &Q8Rows,
        g: usize,
    ) -> [f32; LANES] {
        let nb = acts.blocks_per_row;
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let w = _mm256_loadu_si256(wide.w[b].as_ptr() as *const __m256i);
            let sign = if F == Q8_0 {
                _mm256_loadu_si256(wide.sign[b].as_ptr() as *const __m256i)
            } else {
                _mm256_setzero_si256()
            };
            let slot = (g * nb + b) * LANES;
            let a = acts.qs_g.as_ptr().add(slot * QK);
            let mut v = [_mm256_setzero_si256(); LANES];
            for (l, v) in v.iter_mut().enumerate() {
                let al = _mm256_loadu_si256(a.add(l * QK) as *const __m256i);
                *v = isum::<F, VNNI>(w, sign, al);
            }
            let mut t = reduce(&v);
            if F == Q5_0 {
                let sums = _mm256_loadu_si256(acts.sum_g.as_ptr().add(slot) as *const __m256i);
                t = _mm256_sub_epi32(t, _mm256_slli_epi32(sums, 4));
            }
            let scale = _mm256_mul_ps(
                _mm256_set1_ps(wide.d[b]),
                _mm256_loadu_ps(acts.d_g.as_ptr().add(slot)),
            );
            acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(t), acc);
            if F == Q4_1 {
                let s = _mm256_loadu_ps(acts.s_g.as_ptr().add(slot));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(wide.m[b]), s, acc);
            }
        }
        store(acc)
    }

    /// Scale (or minimum) `at` of block `b` of the eight weight rows, as f32 lanes: built in
    /// registers (eight separate stores read back as one vector would stall the load).
    #[inline(always)]
    unsafe fn lane_halves(w: &[u8], row_bytes: usize, b: usize, bytes: usize, at: usize) -> __m256 {
        let h = |k: usize| {
            let o = k * row_bytes + b * bytes + at;
            i16::from_le_bytes([w[o], w[o + 1]])
        };
        _mm256_cvtph_ps(_mm_set_epi16(
            h(7),
            h(6),
            h(5),
            h(4),
            h(3),
            h(2),
            h(1),
            h(0),
        ))
    }

    /// Eight weight rows (`row_bytes` each) with activation row `r`.
    #[inline(always)]
    pub(super) unsafe fn token_pass<const F: u8, const VNNI: bool>(
        w: &[u8],
        row_bytes: usize,
        acts: &Q8Rows,
        r: usize,
        next: &[u8],
    ) -> [f32; LANES] {
        let nb = acts.blocks_per_row;
        let bytes = format(F).block_bytes();
        let w = &w[..LANES * row_bytes];
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            prefetch_share(next, b, nb);
            let i = r * nb + b;
            let a = _mm256_loadu_si256(acts.qs.as_ptr().add(i * QK) as *const __m256i);
            let mut v = [_mm256_setzero_si256(); LANES];
            for (k, v) in v.iter_mut().enumerate() {
                let (u, sign) = widen::<F>(&w[k * row_bytes + b * bytes..][..bytes]);
                *v = isum::<F, VNNI>(u, sign, a);
            }
            let mut t = reduce(&v);
            if F == Q5_0 {
                t = _mm256_sub_epi32(t, _mm256_set1_epi32(acts.sum[i] << 4));
            }
            let dw = lane_halves(w, row_bytes, b, bytes, 0);
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(acts.d[i]));
            acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(t), acc);
            if F == Q4_1 {
                let mw = lane_halves(w, row_bytes, b, bytes, 2);
                acc = _mm256_fmadd_ps(mw, _mm256_set1_ps(acts.s[i]), acc);
            }
        }
        store(acc)
    }

    /// Eight rows of eight dwords, transposed: lane `k` of output `j` is dword `j` of `v[k]`.
    #[inline(always)]
    pub(in crate::llm) unsafe fn transpose8(v: [__m256i; LANES]) -> [__m256i; LANES] {
        let lo = |a, b| _mm256_unpacklo_epi32(a, b);
        let hi = |a, b| _mm256_unpackhi_epi32(a, b);
        let t = [
            lo(v[0], v[1]),
            hi(v[0], v[1]),
            lo(v[2], v[3]),
            hi(v[2], v[3]),
            lo(v[4], v[5]),
            hi(v[4], v[5]),
            lo(v[6], v[7]),
            hi(v[6], v[7]),
        ];
        // Per 128-bit half: u[0] dwords 0 (and 4) of rows 0..4, u[1] dwords 1 (5), …
        let u = [
            _mm256_unpacklo_epi64(t[0], t[2]),
            _mm256_unpackhi_epi64(t[0], t[2]),
            _mm256_unpacklo_epi64(t[1], t[3]),
            _mm256_unpackhi_epi64(t[1], t[3]),
            _mm256_unpacklo_epi64(t[4], t[6]),
            _mm256_unpackhi_epi64(t[4], t[6]),
            _mm256_unpacklo_epi64(t[5], t[7]),
            _mm256_unpackhi_epi64(t[5], t[7]),
        ];
        [
            _mm256_permute2x128_si256(u[0], u[4], 0x20),
            _mm256_permute2x128_si256(u[1], u[5], 0x20),
            _mm256_permute2x128_si256(u[2], u[6], 0x20),
            _mm256_permute2x128_si256(u[3], u[7], 0x20),
            _mm256_permute2x128_si256(u[0], u[4], 0x31),
            _mm256_permute2x128_si256(u[1], u[5], 0x31),
            _mm256_permute2x128_si256(u[2], u[6], 0x31),
            _mm256_permute2x128_si256(u[3], u[7], 0x31),
        ]
    }

    /// Widens the weight rows of `w` (at most eight) into `tile` ([`WideTile`]'s layout): per
    /// block the rows' 32 unsigned bytes, one vector each, transposed as dwords.
    #[inline(always)]
    unsafe fn fill_tile<const F: u8>(w: &[u8], row_bytes: usize, tile: &mut WideTile) {
        let bytes = format(F).block_bytes();
        let n = w.len() / row_bytes;
        for b in 0..row_bytes / bytes {
            let mut v = [_mm256_setzero_si256(); LANES];
            tile.d[b] = [0.0; LANES];
            tile.m[b] = [0.0; LANES];
            for (k, v) in v.iter_mut().enumerate().take(n) {
                let blk = &w[k * row_bytes + b * bytes..][..bytes];
                *v = if F == Q8_0 {
                    let q = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
                    _mm256_xor_si256(q, _mm256_set1_epi8(-128))
                } else {
                    widen::<F>(blk).0
                };
                tile.d[b][k] = half_at(blk, 0);
                if F == Q4_1 {
                    tile.m[b][k] = half_at(blk, 2);
                }
            }
            for (j, t) in transpose8(v).into_iter().enumerate() {
                _mm256_storeu_si256(tile.w[b * (QK / 4) + j].as_mut_ptr() as *mut __m256i, t);
            }
        }
    }

    /// Activation rows `r0..r0 + R` against the eight weight rows of `tile`: lane `k` of
    /// entry `i` is (weight row k, activation row r0 + i).
    #[inline(always)]
    unsafe fn tile_rows<const F: u8, const R: usize>(
        tile: &WideTile,
        acts: &Q8Rows,
        r0: usize,
    ) -> [__m256; R] {
        let nb = acts.blocks_per_row;
        // The unsigned weights' offset, taken out through the activations' block sums.
        let bias = match F {
            Q5_0 => 16,
            Q8_0 => 128,
            _ => 0,
        };
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let mut isum = [_mm256_setzero_si256(); R];
            if bias != 0 {
                for (i, v) in isum.iter_mut().enumerate() {
                    *v = _mm256_set1_epi32(-bias * acts.sum[(r0 + i) * nb + b]);
                }
            }
            for s in 0..QK / 4 {
                let w = _mm256_loadu_si256(tile.w[b * (QK / 4) + s].as_ptr() as *const __m256i);
                for (i, v) in isum.iter_mut().enumerate() {
                    let a = acts.qs.as_ptr().add(((r0 + i) * nb + b) * QK + 4 * s) as *const i32;
                    *v = _mm256_dpbusd_epi32(*v, w, _mm256_set1_epi32(a.read_unaligned()));
                }
            }
            let dw = _mm256_loadu_ps(tile.d[b].as_ptr());
            for (i, v) in isum.iter().enumerate() {
                let at = (r0 + i) * nb + b;
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(acts.d[at]));
                acc[i] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(*v), acc[i]);
                if F == Q4_1 {
                    let mw = _mm256_loadu_ps(tile.m[b].as_ptr());
                    acc[i] = _mm256_fmadd_ps(mw, _mm256_set1_ps(acts.s[at]), acc[i]);
                }
            }
        }
        acc
    }

    /// See `Kernel::prompt_tile`.
    #[target_feature(enable = "avx512vnni,avx512vl")]
    pub(super) unsafe fn prompt_tile<const F: u8>(
        w: &[u8],
        row_bytes: usize,
        tile: &mut WideTile,
        acts: &Q8Rows,
        dst: &mut [&mut [f32]],
        col: usize,
    ) {
        fill_tile::<F>(w, row_bytes, tile);
        let tile = &*tile;
        let n = w.len() / row_bytes;
        tile_passes(
            acts.rows,
            n,
            dst,
            col,
            |r| tile_rows::<F, 4>(tile, acts, r),
            |r| tile_rows::<F, 1>(tile, acts, r),
        );
    }

    /// Every activation row of a prompt chunk (`rows` of them) against a filled tile of `n`
    /// real weight rows: `four(r)` gives rows `r..r + 4`, `one(r)` row `r` alone (the last
    /// `rows % 4`); lane `k` of each goes to column `col + k` of its `dst` row.
    #[inline(always)]
    pub(in crate::llm) unsafe fn tile_passes(
        rows: usize,
        n: usize,
        dst: &mut [&mut [f32]],
        col: usize,
        four: impl Fn(usize) -> [__m256; 4],
        one: impl Fn(usize) -> [__m256; 1],
    ) {
        let mut put = |r: usize, v: __m256| {
            let v = store(v);
            dst[r][col..col + n].copy_from_slice(&v[..n]);
        };
        let mut r = 0;
        while r + 4 <= rows {
            for (i, v) in four(r).into_iter().enumerate() {
                put(r + i, v);
            }
            r += 4;
        }
        while r < rows {
            put(r, one(r)[0]);
            r += 1;
        }
    }

    #[target_feature(enable = "avx512vnni,avx512vl")]
    pub(super) unsafe fn prompt_pass_vnni<const F: u8>(
        wide: &WideRow,
        acts: &Q8Rows,
        g: usize,
    ) -> [f32; LANES] {
        prompt_pass::<F, true>(wide, acts, g)
    }

    #[target_feature(enable = "avx512vnni,avx512vl")]
    pub(super) unsafe fn token_pass_vnni<const F: u8>(
        w: &[u8],
        row_bytes: usize,
        acts: &Q8Rows,
        r: usize,
        next: &[u8],
    ) -> [f32; LANES] {
        token_pass::<F, true>(w, row_bytes, acts, r, next)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::{Device, Module};

    /// A deterministic, unevenly scaled test matrix (seeded LCG; no RNG crate needed).
    pub(in crate::llm) fn values(n: usize, seed: u64) -> Vec<f32> {
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
            const { assert!(67 % LANES != 0) };
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
    fn every_kernel_equals_the_scalar_reference_bit_for_bit() -> Result<()> {
        // 11 blocks per row (an odd width), 13 activation rows (one full group of eight and
        // a partial one), 11 weight rows (a full token pass and a partial one).
        let (rows, cols, m) = (11, 352, 13);
        let kernels = Kernel::available();
        #[cfg(target_feature = "avx2")]
        assert!(kernels.len() >= 2, "an AVX2 build tests its SIMD kernel");
        for dtype in FORMATS {
            let (q, mine) = matrix(dtype, rows, cols)?;
            let Format::Own(own) = mine.format else {
                unreachable!("{dtype:?} has its own kernels")
            };
            let acts = Q8Rows::quantize(&values(m * cols, 5), cols, true);
            let row_bytes = cols / QK * own.block_bytes();
            let data = q.data()?;
            let oracle = |j: usize, r: usize| {
                scalar_pair(own, &data[j * row_bytes..][..row_bytes], &acts, r).to_bits()
            };
            for kernel in &kernels {
                let mut wide = WideRow::new(cols / QK);
                for (j, w) in data.chunks_exact(row_bytes).enumerate() {
                    kernel.widen_row(own, w, &mut wide);
                    for g in 0..acts.groups() {
                        let got = kernel.prompt_pass(own, w, &wide, &acts, g);
                        for (l, v) in got.iter().take(m - g * LANES).enumerate() {
                            let r = g * LANES + l;
                            assert_eq!(v.to_bits(), oracle(j, r), "{kernel:?} {dtype:?} {j}/{r}");
                        }
                    }
                }
                // The tiled prompt form (VNNI): tiles of eight weight rows and a partial one
                // of three, 13 activation rows (three passes of four and one alone).
                let mut tile = WideTile::new(cols / QK);
                let mut out = vec![vec![f32::NAN; rows]; m];
                let mut dst: Vec<&mut [f32]> = out.iter_mut().map(|r| &mut r[..]).collect();
                let mut tiled = true;
                for (t, w) in data.chunks(LANES * row_bytes).enumerate() {
                    tiled &= kernel.prompt_tile(
                        own,
                        w,
                        row_bytes,
                        &mut tile,
                        &acts,
                        &mut dst,
                        t * LANES,
                    );
                }
                assert_eq!(tiled, kernel.tiles(), "{kernel:?}");
                #[cfg(target_feature = "avx2")]
                assert_eq!(tiled, *kernel == Kernel::Vnni);
                if tiled {
                    for (r, row) in out.iter().enumerate() {
                        for (j, v) in row.iter().enumerate() {
                            assert_eq!(v.to_bits(), oracle(j, r), "tiled {dtype:?} {j}/{r}");
                        }
                    }
                }
                // The lone-token pass: every count of weight rows up to a full pass.
                for n in 1..=LANES {
                    for j0 in [0, rows - n] {
                        let w = &data[j0 * row_bytes..(j0 + n) * row_bytes];
                        for r in [0, 7, m - 1] {
                            let got = kernel.token_pass(own, w, row_bytes, n, &acts, r, &[]);
                            for (k, v) in got[..n].iter().enumerate() {
                                assert_eq!(
                                    v.to_bits(),
                                    oracle(j0 + k, r),
                                    "{kernel:?} {dtype:?} {n}/{k}/{r}"
                                );
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn extreme_blocks_do_not_saturate_the_byte_products() -> Result<()> {
        // Every weight at the end of its range against activations of ±127: the pairwise
        // 16-bit sums of the AVX2 form are at their largest here.
        let cols = 64;
        let acts = Q8Rows::quantize(
            &(0..2 * cols)
                .map(|i| if (i / 3) % 2 == 0 { 1.0 } else { -1.0 })
                .collect::<Vec<_>>(),
            cols,
            true,
        );
        for dtype in FORMATS {
            for sign in [1.0f32, -1.0] {
                let w = Tensor::from_vec(vec![sign; LANES * cols], (LANES, cols), &Device::Cpu)?;
                let q = QTensor::quantize(&w, dtype)?;
                let own = match Format::of(dtype) {
                    Some(Format::Own(own)) => own,
                    _ => unreachable!(),
                };
                let row_bytes = cols / QK * own.block_bytes();
                let data = q.data()?;
                for kernel in Kernel::available() {
                    let got = kernel.token_pass(own, &data, row_bytes, LANES, &acts, 1, &data);
                    let mut tiled = vec![vec![0f32; LANES]; 2];
                    let mut dst: Vec<&mut [f32]> = tiled.iter_mut().map(|r| &mut r[..]).collect();
                    let mut tile = WideTile::new(cols / QK);
                    let has_tile =
                        kernel.prompt_tile(own, &data, row_bytes, &mut tile, &acts, &mut dst, 0);
                    for (k, v) in got.iter().enumerate() {
                        let want = scalar_pair(own, &data[k * row_bytes..][..row_bytes], &acts, 1);
                        assert_eq!(v.to_bits(), want.to_bits(), "{kernel:?} {dtype:?} {sign}");
                        if has_tile {
                            assert_eq!(
                                tiled[1][k].to_bits(),
                                want.to_bits(),
                                "tiled {dtype:?} {sign}"
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The K-quant formats (`super::kquant`), with an odd number of weight rows and a width
    /// of three K-quant super-blocks.
    const K_FORMATS: [GgmlDType; 3] = [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K];
    const K_ROWS: usize = 67;
    const K_COLS: usize = 768;

    #[test]
    fn k_quant_products_equal_candles_and_the_dequantised_weights() -> Result<()> {
        for dtype in K_FORMATS {
            let (q, mine) = matrix(dtype, K_ROWS, K_COLS)?;
            assert!(matches!(mine.format, Format::K(_)), "{dtype:?}");
            for m in [1usize, 3, 5] {
                let x = Tensor::from_vec(values(m * K_COLS, 3), (1, m, K_COLS), &Device::Cpu)?;
                let got = mine.forward(&x)?;
                assert_eq!(got.dims(), &[1, m, K_ROWS]);
                let exact = x.broadcast_matmul(&q.dequantize(&Device::Cpu)?.t()?)?;
                let scale = exact.abs()?.max_all()?.to_scalar::<f32>()?;
                let err = (&got - &exact)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(err < 0.01 * scale, "{dtype:?}: error {err} against {scale}");
                // candle's product quantises the activations the same way (Q8_K): the same
                // numbers up to the order of the float additions.
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
        for dtype in K_FORMATS {
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
