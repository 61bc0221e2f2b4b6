//! Products with Q4_K, Q5_K and Q6_K weights (llama.cpp's "K-quants": 256-value super-blocks
//! with 6- or 8-bit sub-block scales), in the lane form of [`super::qmatrix`]: each of a pass's
//! eight (weight row, activation row) pairs is one vector lane, a super-block's exact integer
//! sum is formed with AVX2 byte products and scaled once in that lane, and every kernel and
//! pass shape gives [`scalar_pair`]'s bits.
//!
//! candle's K-quant `vec_dot` (what these tensors used to run through) decodes a weight
//! block's scales again for every activation row and ends every pair with a horizontal sum;
//! here a prompt chunk unpacks each weight row once and meets every activation row with it.
//! Activations are quantised per 256 values as candle's / ggml's Q8_K does (`d = max / −127`
//! with the signed maximum, 16-value sums kept), so the two products differ only in the order
//! of their float additions.

use half::f16;

/// Values per super-block.
pub(super) const QK_K: usize = 256;
use super::qmatrix::LANES;

/// The K-quant formats, as stored in GGUF (ggml's `block_q4_K`, `block_q5_K`, `block_q6_K`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KFormat {
    /// `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`: eight 32-value sub-blocks with
    /// 6-bit scale and minimum; x = d·sc·q − dmin·m.
    Q4K,
    /// Q4_K's layout with `qh: [u8; 32]` (a fifth bit per value) before `qs`.
    Q5K,
    /// `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`: sixteen 16-value sub-blocks,
    /// 6-bit values; x = d·sc·(q − 32).
    Q6K,
}

impl KFormat {
    pub(super) fn block_bytes(self) -> usize {
        match self {
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    fn has_min(self) -> bool {
        self != Self::Q6K
    }
}

/// Activation rows quantised per 256 values (Q8_K), row after row and (for more than one
/// row) by groups of [`LANES`] rows, as [`super::qmatrix`]'s Q8 rows are.
pub(super) struct Q8KRows {
    rows: usize,
    blocks_per_row: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    /// Σ of each 16 values.
    bsums: Vec<i16>,
    /// By groups: lane `l` of group `g`, super-block `b` at `(g·nb + b)·LANES + l` (times 256
    /// values or 16 sums); zero past the last row. Empty for a single row.
    qs_g: Vec<i8>,
    d_g: Vec<f32>,
    bsums_g: Vec<i16>,
}

impl Q8KRows {
    /// candle's `BlockQ8K::from_float`: per super-block, with `max` the value of largest
    /// magnitude, `q = round(−127·x / max)` and `d = −max / 127`; with `grouped` (and more
    /// than one row) also laid out by groups for [`prompt_pass`].
    pub(super) fn quantize(xs: &[f32], k: usize, grouped: bool) -> Self {
        let blocks = xs.len() / QK_K;
        let mut qs = vec![0i8; xs.len()];
        let mut d = vec![0f32; blocks];
        let mut bsums = vec![0i16; blocks * 16];
        for (b, (x, q)) in xs
            .chunks_exact(QK_K)
            .zip(qs.chunks_exact_mut(QK_K))
            .enumerate()
        {
            let (mut max, mut amax) = (0f32, 0f32);
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                continue;
            }
            let iscale = -127f32 / max;
            for (qv, &xv) in q.iter_mut().zip(x) {
                *qv = (iscale * xv).round().clamp(-128.0, 127.0) as i8;
            }
            for (s, part) in bsums[b * 16..][..16].iter_mut().zip(q.chunks_exact(16)) {
                *s = part.iter().map(|&v| v as i32).sum::<i32>() as i16;
            }
            d[b] = 1.0 / iscale;
        }
        let nb = k / QK_K;
        let rows = xs.len() / k;
        let mut me = Self {
            rows,
            blocks_per_row: nb,
            qs,
            d,
            bsums,
            qs_g: Vec::new(),
            d_g: Vec::new(),
            bsums_g: Vec::new(),
        };
        if grouped && rows > 1 {
            let slots = me.groups() * nb * LANES;
            me.qs_g = vec![0; slots * QK_K];
            me.d_g = vec![0.0; slots];
            me.bsums_g = vec![0; slots * 16];
            for r in 0..rows {
                let (g, l) = (r / LANES, r % LANES);
                for b in 0..nb {
                    let (from, to) = (r * nb + b, (g * nb + b) * LANES + l);
                    me.qs_g[to * QK_K..][..QK_K].copy_from_slice(&me.qs[from * QK_K..][..QK_K]);
                    me.d_g[to] = me.d[from];
                    me.bsums_g[to * 16..][..16].copy_from_slice(&me.bsums[from * 16..][..16]);
                }
            }
        }
        me
    }

    /// Groups of [`LANES`] rows (the last may be partial).
    pub(super) fn groups(&self) -> usize {
        self.rows.div_ceil(LANES)
    }
}

fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// A super-block's scales: per 16 values the scale `s16` and (Q4_K, Q5_K) the minimum `m16`
/// (Q4_K's and Q5_K's 32-value sub-blocks give two equal entries each), `d` and `dmin`.
#[derive(Clone, Copy)]
struct Scales {
    s16: [i16; 16],
    m16: [i16; 16],
    d: f32,
    dmin: f32,
}

fn scales(format: KFormat, blk: &[u8]) -> Scales {
    let mut s = Scales {
        s16: [0; 16],
        m16: [0; 16],
        d: 0.0,
        dmin: 0.0,
    };
    match format {
        KFormat::Q4K | KFormat::Q5K => {
            let q = &blk[4..16];
            for j in 0..8 {
                // ggml's get_scale_min_k4.
                let (sc, m) = if j < 4 {
                    (q[j] & 63, q[j + 4] & 63)
                } else {
                    (
                        (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
                        (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
                    )
                };
                s.s16[2 * j] = sc as i16;
                s.s16[2 * j + 1] = sc as i16;
                s.m16[2 * j] = m as i16;
                s.m16[2 * j + 1] = m as i16;
            }
            s.d = half_at(blk, 0);
            s.dmin = half_at(blk, 2);
        }
        KFormat::Q6K => {
            for (g, v) in s.s16.iter_mut().enumerate() {
                *v = blk[192 + g] as i8 as i16;
            }
            s.d = half_at(blk, 208);
        }
    }
    s
}

/// A super-block's 256 values as unsigned bytes in their natural order (Q4_K 0..=15, Q5_K
/// 0..=31, Q6_K 0..=63: its −32 is applied to the sum).
fn values(format: KFormat, blk: &[u8]) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    match format {
        KFormat::Q4K | KFormat::Q5K => {
            let (qh, qs) = if format == KFormat::Q4K {
                (None, &blk[16..144])
            } else {
                (Some(&blk[16..48]), &blk[48..176])
            };
            for c in 0..4 {
                for l in 0..32 {
                    let byte = qs[32 * c + l];
                    let (mut lo, mut hi) = (byte & 0xF, byte >> 4);
                    if let Some(qh) = qh {
                        lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                        hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
                    }
                    q[64 * c + l] = lo;
                    q[64 * c + 32 + l] = hi;
                }
            }
        }
        KFormat::Q6K => {
            for n in 0..2 {
                let (ql, qh) = (&blk[64 * n..], &blk[128 + 32 * n..]);
                for l in 0..32 {
                    let base = 128 * n + l;
                    q[base] = (ql[l] & 0xF) | (qh[l] & 3) << 4;
                    q[base + 32] = (ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4;
                    q[base + 64] = (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4;
                    q[base + 96] = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4;
                }
            }
        }
    }
    q
}

/// The reference for one (weight row, activation row `r`) pair, and the definition every
/// kernel computes bit for bit. Per super-block in order, with exact integers
/// `sumi = Σ_g s16[g]·Σ q·a over the 16 values of g` (Q6_K: minus `32·Σ_g s16[g]·bsum[g]`)
/// and `summ = Σ_g m16[g]·bsum[g]`: `acc = fma(d_w·d_a, sumi, acc)`, then (Q4_K, Q5_K)
/// `acc = fma(−(dmin_w·d_a), summ, acc)`.
pub(super) fn scalar_pair(format: KFormat, w: &[u8], acts: &Q8KRows, r: usize) -> f32 {
    let nb = acts.blocks_per_row;
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(format.block_bytes()).enumerate() {
        let i = r * nb + b;
        let a = &acts.qs[i * QK_K..][..QK_K];
        let bs = &acts.bsums[i * 16..][..16];
        let sc = scales(format, blk);
        let q = values(format, blk);
        let mut sumi = 0i32;
        let mut summ = 0i32;
        for (g, &bsum) in bs.iter().enumerate() {
            let dot: i32 = (16 * g..16 * g + 16)
                .map(|j| q[j] as i32 * a[j] as i32)
                .sum();
            sumi += sc.s16[g] as i32 * dot;
            summ += sc.m16[g] as i32 * bsum as i32;
            if format == KFormat::Q6K {
                sumi -= 32 * sc.s16[g] as i32 * bsum as i32;
            }
        }
        acc = (sc.d * acts.d[i]).mul_add(sumi as f32, acc);
        if format.has_min() {
            acc = (-(sc.dmin * acts.d[i])).mul_add(summ as f32, acc);
        }
    }
    acc
}

/// A weight row unpacked once for a prompt pass: per super-block the 256 values, per 32-value
/// chunk the 16 scales its two halves take (the `vpmaddwd` operand), the scales and minimums
/// per 16 values, `d` and `dmin`.
pub(super) struct WideKRow {
    q: Vec<[u8; QK_K]>,
    chunk_scales: Vec<[[i16; 16]; 8]>,
    s16: Vec<[i16; 16]>,
    m16: Vec<[i16; 16]>,
    d: Vec<f32>,
    dmin: Vec<f32>,
}

impl WideKRow {
    pub(super) fn new(blocks: usize) -> Self {
        Self {
            q: vec![[0; QK_K]; blocks],
            chunk_scales: vec![[[0; 16]; 8]; blocks],
            s16: vec![[0; 16]; blocks],
            m16: vec![[0; 16]; blocks],
            d: vec![0.0; blocks],
            dmin: vec![0.0; blocks],
        }
    }

    /// Unpacks weight row `w` (whole super-blocks, one per slot).
    pub(super) fn fill(&mut self, format: KFormat, w: &[u8]) {
        for (b, blk) in w.chunks_exact(format.block_bytes()).enumerate() {
            let sc = scales(format, blk);
            self.q[b] = values(format, blk);
            for (c, v) in self.chunk_scales[b].iter_mut().enumerate() {
                v[..8].fill(sc.s16[2 * c]);
                v[8..].fill(sc.s16[2 * c + 1]);
            }
            self.s16[b] = sc.s16;
            self.m16[b] = sc.m16;
            self.d[b] = sc.d;
            self.dmin[b] = sc.dmin;
        }
    }
}

/// [`LANES`] weight rows unpacked once for the tiled prompt form ([`prompt_tile`]): per
/// super-block `b` and 4-value step `s` (slot `b·64 + s`) the rows' unsigned values `4s..4s
/// + 4` side by side, one dword per lane; per scale group `c` (Q6_K: 16 groups of 16 values;
/// Q4_K, Q5_K: 8 sub-blocks of 32, slot `b·16 + c`) the rows' scales and minimums as i32
/// lanes; `d` and `dmin` as lanes. Rows past the last are zero.
#[cfg_attr(not(target_feature = "avx2"), allow(dead_code))]
pub(super) struct WideKTile {
    w: Vec<[u32; LANES]>,
    s: Vec<[i32; LANES]>,
    m: Vec<[i32; LANES]>,
    d: Vec<[f32; LANES]>,
    dmin: Vec<[f32; LANES]>,
}

impl WideKTile {
    pub(super) fn new(blocks: usize) -> Self {
        Self {
            w: vec![[0; LANES]; blocks * QK_K / 4],
            s: vec![[0; LANES]; blocks * 16],
            m: vec![[0; LANES]; blocks * 16],
            d: vec![[0.0; LANES]; blocks],
            dmin: vec![[0.0; LANES]; blocks],
        }
    }
}

/// The tiled prompt form where `tiled` (AVX-512 VNNI): the weight rows in `w` (at most
/// [`LANES`]) unpacked once into `tile`, then every activation row against all of them, four
/// at a time (a step's four values of the eight rows are one vector, the activation's four
/// bytes a broadcast; per scale group one `vpmulld` by the rows' scales), products written to
/// columns `col..` of each `dst` row. Each lane is one pair doing [`scalar_pair`]'s steps
/// (the same exact integers, the same float operations in the same order), so the bits are
/// the scalar reference's. `false` (nothing done) where not `tiled`.
#[allow(clippy::too_many_arguments)]
pub(super) fn prompt_tile(
    tiled: bool,
    format: KFormat,
    w: &[u8],
    row_bytes: usize,
    tile: &mut WideKTile,
    acts: &Q8KRows,
    dst: &mut [&mut [f32]],
    col: usize,
) -> bool {
    if !tiled {
        return false;
    }
    #[cfg(target_feature = "avx2")]
    {
        // SAFETY: `tiled` is set only where AVX-512 VNNI/VL were detected at run time; `w`
        // holds at most eight rows of whole super-blocks and `tile` one slot per super-block
        // of a row.
        unsafe {
            match format {
                KFormat::Q4K => {
                    avx2::prompt_tile::<{ avx2::Q4K }>(w, row_bytes, tile, acts, dst, col)
                }
                KFormat::Q5K => {
                    avx2::prompt_tile::<{ avx2::Q5K }>(w, row_bytes, tile, acts, dst, col)
                }
                KFormat::Q6K => {
                    avx2::prompt_tile::<{ avx2::Q6K }>(w, row_bytes, tile, acts, dst, col)
                }
            }
        }
        true
    }
    #[cfg(not(target_feature = "avx2"))]
    {
        let _ = (format, w, row_bytes, tile, acts, dst, col);
        unreachable!("the tiled form needs an AVX2 build")
    }
}

/// Weight row `w` (unpacked in `wide`) with the activation rows of group `g`; lane `l` is row
/// `g·LANES + l` (lanes past the last row are meaningless).
pub(super) fn prompt_pass(
    simd: bool,
    format: KFormat,
    w: &[u8],
    wide: &WideKRow,
    acts: &Q8KRows,
    g: usize,
) -> [f32; LANES] {
    #[cfg(target_feature = "avx2")]
    if simd {
        // SAFETY: AVX2 is enabled at compile time; `wide` holds this row's super-blocks and
        // `acts` the group's (padded to LANES lanes).
        return unsafe {
            match format {
                KFormat::Q6K => avx2::prompt_pass::<true>(wide, acts, g),
                _ => avx2::prompt_pass::<false>(wide, acts, g),
            }
        };
    }
    let _ = (simd, wide);
    let mut out = [0f32; LANES];
    let rows = (acts.rows - g * LANES).min(LANES);
    for (l, o) in out[..rows].iter_mut().enumerate() {
        *o = scalar_pair(format, w, acts, g * LANES + l);
    }
    out
}

/// The `n` weight rows (n ≤ [`LANES`]) in `w` with activation row `r`; lane `k` is weight
/// row `k`. `next` (the following pass's rows, or empty) is prefetched a share per
/// super-block. A partial pass runs on a copy padded with zero blocks.
#[allow(clippy::too_many_arguments)]
pub(super) fn token_pass(
    simd: bool,
    format: KFormat,
    w: &[u8],
    row_bytes: usize,
    n: usize,
    acts: &Q8KRows,
    r: usize,
    next: &[u8],
) -> [f32; LANES] {
    debug_assert!(n <= LANES && w.len() == n * row_bytes);
    #[cfg(target_feature = "avx2")]
    if simd {
        let padded;
        let w = if n == LANES {
            w
        } else {
            padded = [w, &vec![0; (LANES - n) * row_bytes]].concat();
            &padded[..]
        };
        // SAFETY: AVX2 is enabled at compile time; `w` holds eight rows of whole
        // super-blocks.
        return unsafe {
            match format {
                KFormat::Q4K => avx2::token_pass::<{ avx2::Q4K }>(w, row_bytes, acts, r, next),
                KFormat::Q5K => avx2::token_pass::<{ avx2::Q5K }>(w, row_bytes, acts, r, next),
                KFormat::Q6K => avx2::token_pass::<{ avx2::Q6K }>(w, row_bytes, acts, r, next),
            }
        };
    }
    let _ = (simd, next);
    let mut out = [0f32; LANES];
    for (o, row) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
        *o = scalar_pair(format, row, acts, r);
    }
    out
}

#[cfg(target_feature = "avx2")]
mod avx2 {
    use super::super::qmatrix::avx2::{prefetch_share, reduce, store, tile_passes, transpose8};
    use super::{Q8KRows, WideKRow, WideKTile, LANES, QK_K};
    use std::arch::x86_64::*;

    pub(super) const Q4K: u8 = 0;
    pub(super) const Q5K: u8 = 1;
    pub(super) const Q6K: u8 = 2;

    const fn format(f: u8) -> super::KFormat {
        match f {
            Q4K => super::KFormat::Q4K,
            Q5K => super::KFormat::Q5K,
            _ => super::KFormat::Q6K,
        }
    }

    /// `Σ q·a` over 32 values, weighted by the i16 scales of `sc` (one per 2 × 2 bytes):
    /// exact (unsigned q ≤ 63 times |a| ≤ 128, pairwise, stays inside i16).
    #[inline(always)]
    unsafe fn chunk(sc: __m256i, q: __m256i, a: __m256i) -> __m256i {
        _mm256_madd_epi16(sc, _mm256_maddubs_epi16(q, a))
    }

    pub(super) unsafe fn prompt_pass<const Q6: bool>(
        wide: &WideKRow,
        acts: &Q8KRows,
        g: usize,
    ) -> [f32; LANES] {
        let nb = acts.blocks_per_row;
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let slot = (g * nb + b) * LANES;
            let a = acts.qs_g.as_ptr().add(slot * QK_K);
            let mut v = [_mm256_setzero_si256(); LANES];
            for c in 0..8 {
                let q = _mm256_loadu_si256(wide.q[b].as_ptr().add(32 * c) as *const __m256i);
                let sc = _mm256_loadu_si256(wide.chunk_scales[b][c].as_ptr() as *const __m256i);
                for (l, v) in v.iter_mut().enumerate() {
                    let al = _mm256_loadu_si256(a.add(l * QK_K + 32 * c) as *const __m256i);
                    *v = _mm256_add_epi32(*v, chunk(sc, q, al));
                }
            }
            let bs = acts.bsums_g.as_ptr().add(slot * 16);
            let scale = _mm256_loadu_ps(acts.d_g.as_ptr().add(slot));
            if Q6 {
                let s16 = _mm256_loadu_si256(wide.s16[b].as_ptr() as *const __m256i);
                for (l, v) in v.iter_mut().enumerate() {
                    let bl = _mm256_loadu_si256(bs.add(16 * l) as *const __m256i);
                    *v = _mm256_sub_epi32(*v, _mm256_slli_epi32(_mm256_madd_epi16(s16, bl), 5));
                }
                let t = reduce(&v);
                let s = _mm256_mul_ps(_mm256_set1_ps(wide.d[b]), scale);
                acc = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(t), acc);
            } else {
                let m16 = _mm256_loadu_si256(wide.m16[b].as_ptr() as *const __m256i);
                let mut vm = [_mm256_setzero_si256(); LANES];
                for (l, vm) in vm.iter_mut().enumerate() {
                    let bl = _mm256_loadu_si256(bs.add(16 * l) as *const __m256i);
                    *vm = _mm256_madd_epi16(m16, bl);
                }
                let t = reduce(&v);
                let tm = reduce(&vm);
                let s = _mm256_mul_ps(_mm256_set1_ps(wide.d[b]), scale);
                acc = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(t), acc);
                let sm = _mm256_mul_ps(_mm256_set1_ps(wide.dmin[b]), scale);
                acc = _mm256_fnmadd_ps(sm, _mm256_cvtepi32_ps(tm), acc);
            }
        }
        store(acc)
    }

    /// Values `32c..32c + 32` of the weight super-block at `blk`, as unsigned bytes in their
    /// natural order (what [`super::values`] gives).
    #[inline(always)]
    unsafe fn chunk_values<const F: u8>(blk: *const u8, c: usize) -> __m256i {
        let m4 = _mm256_set1_epi8(0x0F);
        if F == Q6K {
            // Half n = c / 4 of the block; part i = c % 4: low or high nibbles of one of two
            // 32-byte runs, with bits 2i, 2i + 1 of the high-bit bytes above them.
            let (n, i) = (c / 4, c % 4);
            let l = _mm256_loadu_si256(blk.add(64 * n + 32 * (i & 1)) as *const __m256i);
            let h = _mm256_loadu_si256(blk.add(128 + 32 * n) as *const __m256i);
            let low = if i < 2 { l } else { _mm256_srli_epi16(l, 4) };
            let high = _mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * i as i32));
            let high = _mm256_and_si256(high, _mm256_set1_epi8(3));
            _mm256_or_si256(_mm256_and_si256(low, m4), _mm256_slli_epi16(high, 4))
        } else {
            let qs = blk.add(if F == Q4K { 16 } else { 48 });
            let bits = _mm256_loadu_si256(qs.add(32 * (c / 2)) as *const __m256i);
            let q = if c.is_multiple_of(2) {
                bits
            } else {
                _mm256_srli_epi16(bits, 4)
            };
            let mut q = _mm256_and_si256(q, m4);
            if F == Q5K {
                let hb = _mm256_loadu_si256(blk.add(16) as *const __m256i);
                let bit = _mm256_srl_epi16(hb, _mm_cvtsi32_si128(c as i32));
                let bit = _mm256_and_si256(bit, _mm256_set1_epi8(1));
                q = _mm256_or_si256(q, _mm256_slli_epi16(bit, 4));
            }
            q
        }
    }

    /// One weight super-block at `blk` with the activation block at `a`: the exact integer
    /// sum `Σ_g s16[g]·Σ q·a` as 8 partial i32 lanes, and the 16 i16 weights of the block's
    /// 16-value sums (Q4_K, Q5_K: the minimums; Q6_K: the scales, for its −32). Each chunk's
    /// values and scales are formed where they are used, so few registers stay live.
    #[inline(always)]
    unsafe fn block_sum<const F: u8>(blk: *const u8, a: *const i8) -> (__m256i, __m256i) {
        let act = |c: usize| _mm256_loadu_si256(a.add(32 * c) as *const __m256i);
        let mut sum = _mm256_setzero_si256();
        if F == Q6K {
            let sc = _mm_loadu_si128(blk.add(192) as *const __m128i);
            let scale = |c: usize| {
                let pick = _mm_set_epi64x(
                    0x0101_0101_0101_0101 * (2 * c as i64 + 1),
                    0x0101_0101_0101_0101 * (2 * c as i64),
                );
                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, pick))
            };
            for c in 0..8 {
                let q = chunk_values::<F>(blk, c);
                sum = _mm256_add_epi32(sum, chunk(scale(c), q, act(c)));
            }
            (sum, _mm256_cvtepi8_epi16(sc))
        } else {
            // ggml's unpacking of the twelve 6-bit scale / minimum bytes.
            const KMASK1: u32 = 0x3f3f3f3f;
            const KMASK2: u32 = 0x0f0f0f0f;
            const KMASK3: u32 = 0x03030303;
            let word = |i: usize| (blk.add(4 + 4 * i) as *const u32).read_unaligned().to_le();
            let (u0, u1, u2) = (word(0), word(1), word(2));
            let m_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
            let s_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
            let m_lo = u1 & KMASK1;
            let s_lo = u0 & KMASK1;
            let all = _mm256_cvtepu8_epi16(_mm_set_epi32(
                m_hi as i32,
                m_lo as i32,
                s_hi as i32,
                s_lo as i32,
            ));
            let sc = _mm256_castsi256_si128(all);
            let scales = _mm256_set_m128i(sc, sc);
            let scale = |c: usize| {
                let pick = _mm256_set1_epi16(i16::from_le_bytes([2 * c as u8, 2 * c as u8 + 1]));
                _mm256_shuffle_epi8(scales, pick)
            };
            for c in 0..8 {
                let q = chunk_values::<F>(blk, c);
                sum = _mm256_add_epi32(sum, chunk(scale(c), q, act(c)));
            }
            let m = _mm256_extracti128_si256(all, 1);
            (
                sum,
                _mm256_set_m128i(_mm_unpackhi_epi16(m, m), _mm_unpacklo_epi16(m, m)),
            )
        }
    }

    /// Activation rows `r0..r0 + R` against the eight weight rows of `tile`: lane `k` of
    /// entry `i` is (weight row k, activation row r0 + i).
    #[inline(always)]
    unsafe fn tile_rows<const F: u8, const R: usize>(
        tile: &WideKTile,
        acts: &Q8KRows,
        r0: usize,
    ) -> [__m256; R] {
        let nb = acts.blocks_per_row;
        let q6 = F == Q6K;
        // Scale groups per super-block and 4-value steps per group.
        let (groups, steps) = if q6 { (16, 4) } else { (8, 8) };
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let mut sumi = [_mm256_setzero_si256(); R];
            let mut summ = [_mm256_setzero_si256(); R];
            for c in 0..groups {
                let mut dot = [_mm256_setzero_si256(); R];
                let bsum = |i: usize, g: usize| acts.bsums[((r0 + i) * nb + b) * 16 + g] as i32;
                if q6 {
                    // Q6_K's −32, through the activations' 16-value sums.
                    for (i, v) in dot.iter_mut().enumerate() {
                        *v = _mm256_set1_epi32(-32 * bsum(i, c));
                    }
                }
                for t in 0..steps {
                    let s = c * steps + t;
                    let w = _mm256_loadu_si256(tile.w[b * 64 + s].as_ptr() as *const __m256i);
                    for (i, v) in dot.iter_mut().enumerate() {
                        let a = acts.qs.as_ptr().add(((r0 + i) * nb + b) * QK_K + 4 * s);
                        let a = _mm256_set1_epi32((a as *const i32).read_unaligned());
                        *v = _mm256_dpbusd_epi32(*v, w, a);
                    }
                }
                let sc = _mm256_loadu_si256(tile.s[b * 16 + c].as_ptr() as *const __m256i);
                for (i, v) in dot.iter().enumerate() {
                    sumi[i] = _mm256_add_epi32(sumi[i], _mm256_mullo_epi32(sc, *v));
                }
                if !q6 {
                    let m = _mm256_loadu_si256(tile.m[b * 16 + c].as_ptr() as *const __m256i);
                    for (i, v) in summ.iter_mut().enumerate() {
                        let bs = _mm256_set1_epi32(bsum(i, 2 * c) + bsum(i, 2 * c + 1));
                        *v = _mm256_add_epi32(*v, _mm256_mullo_epi32(m, bs));
                    }
                }
            }
            let dw = _mm256_loadu_ps(tile.d[b].as_ptr());
            let dmin = _mm256_loadu_ps(tile.dmin[b].as_ptr());
            for i in 0..R {
                let da = _mm256_set1_ps(acts.d[(r0 + i) * nb + b]);
                acc[i] =
                    _mm256_fmadd_ps(_mm256_mul_ps(dw, da), _mm256_cvtepi32_ps(sumi[i]), acc[i]);
                if !q6 {
                    let sm = _mm256_mul_ps(dmin, da);
                    acc[i] = _mm256_fnmadd_ps(sm, _mm256_cvtepi32_ps(summ[i]), acc[i]);
                }
            }
        }
        acc
    }

    /// Unpacks the weight rows of `w` (at most eight, `row_bytes` each) into `tile`
    /// ([`WideKTile`]'s layout): per 32-value chunk the rows' values, one vector each,
    /// transposed as dwords.
    #[inline(always)]
    unsafe fn fill_tile<const F: u8>(w: &[u8], row_bytes: usize, tile: &mut WideKTile) {
        let bytes = format(F).block_bytes();
        let n = w.len() / row_bytes;
        let per_group = if F == Q6K { 16 } else { 32 };
        for b in 0..row_bytes / bytes {
            tile.d[b] = [0.0; LANES];
            tile.dmin[b] = [0.0; LANES];
            for c in 0..16 {
                tile.s[b * 16 + c] = [0; LANES];
                tile.m[b * 16 + c] = [0; LANES];
            }
            for k in 0..n {
                let sc = super::scales(format(F), &w[k * row_bytes + b * bytes..][..bytes]);
                for c in 0..QK_K / per_group {
                    // Q4_K / Q5_K: both 16-value halves of sub-block c carry its scale.
                    let g = c * per_group / 16;
                    tile.s[b * 16 + c][k] = sc.s16[g] as i32;
                    tile.m[b * 16 + c][k] = sc.m16[g] as i32;
                }
                tile.d[b][k] = sc.d;
                tile.dmin[b][k] = sc.dmin;
            }
            for c in 0..8 {
                let mut v = [_mm256_setzero_si256(); LANES];
                for (k, v) in v.iter_mut().enumerate().take(n) {
                    *v = chunk_values::<F>(w.as_ptr().add(k * row_bytes + b * bytes), c);
                }
                for (j, t) in transpose8(v).into_iter().enumerate() {
                    let at = tile.w[b * 64 + 8 * c + j].as_mut_ptr() as *mut __m256i;
                    _mm256_storeu_si256(at, t);
                }
            }
        }
    }

    /// See `super::prompt_tile`.
    #[target_feature(enable = "avx512vnni,avx512vl")]
    pub(super) unsafe fn prompt_tile<const F: u8>(
        w: &[u8],
        row_bytes: usize,
        tile: &mut WideKTile,
        acts: &Q8KRows,
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

    pub(super) unsafe fn token_pass<const F: u8>(
        w: &[u8],
        row_bytes: usize,
        acts: &Q8KRows,
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
            let a = acts.qs.as_ptr().add(i * QK_K);
            let bs = _mm256_loadu_si256(acts.bsums.as_ptr().add(i * 16) as *const __m256i);
            let mut v = [_mm256_setzero_si256(); LANES];
            let mut vm = [_mm256_setzero_si256(); LANES];
            let mut dw = [0f32; LANES];
            let mut dm = [0f32; LANES];
            for k in 0..LANES {
                let blk = w.as_ptr().add(k * row_bytes + b * bytes);
                let (sum, sums_weights) = block_sum::<F>(blk, a);
                // The −32's (Q6_K) or the minimums' (Q4_K, Q5_K) term, exact in i32.
                let o = _mm256_madd_epi16(sums_weights, bs);
                if F == Q6K {
                    v[k] = _mm256_sub_epi32(sum, _mm256_slli_epi32(o, 5));
                    dw[k] = super::half_at(&w[k * row_bytes + b * bytes..], 208);
                } else {
                    v[k] = sum;
                    vm[k] = o;
                    dw[k] = super::half_at(&w[k * row_bytes + b * bytes..], 0);
                    dm[k] = super::half_at(&w[k * row_bytes + b * bytes..], 2);
                }
            }
            let t = reduce(&v);
            let da = _mm256_set1_ps(acts.d[i]);
            let dwv = _mm256_setr_ps(dw[0], dw[1], dw[2], dw[3], dw[4], dw[5], dw[6], dw[7]);
            acc = _mm256_fmadd_ps(_mm256_mul_ps(dwv, da), _mm256_cvtepi32_ps(t), acc);
            if F != Q6K {
                let tm = reduce(&vm);
                let dmv = _mm256_setr_ps(dm[0], dm[1], dm[2], dm[3], dm[4], dm[5], dm[6], dm[7]);
                acc = _mm256_fnmadd_ps(_mm256_mul_ps(dmv, da), _mm256_cvtepi32_ps(tm), acc);
            }
        }
        store(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::super::qmatrix::tests::values as values_of;
    use super::super::qmatrix::Kernel;
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    const FORMATS: [(GgmlDType, KFormat); 3] = [
        (GgmlDType::Q4K, KFormat::Q4K),
        (GgmlDType::Q5K, KFormat::Q5K),
        (GgmlDType::Q6K, KFormat::Q6K),
    ];

    #[test]
    fn the_unpacked_values_and_scales_are_the_dequantised_weights() -> candle_core::Result<()> {
        for (dtype, kf) in FORMATS {
            let w = Tensor::from_vec(values_of(2 * QK_K, 3), (2, QK_K), &Device::Cpu)?;
            let q = QTensor::quantize(&w, dtype)?;
            let want = q
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let data = q.data()?;
            for (b, blk) in data.chunks_exact(kf.block_bytes()).enumerate() {
                let (sc, v) = (scales(kf, blk), values(kf, blk));
                for j in 0..QK_K {
                    let g = j / 16;
                    let x = match kf {
                        KFormat::Q6K => sc.d * sc.s16[g] as f32 * (v[j] as f32 - 32.0),
                        _ => sc.d * sc.s16[g] as f32 * v[j] as f32 - sc.dmin * sc.m16[g] as f32,
                    };
                    let y = want[b * QK_K + j];
                    assert!(
                        (x - y).abs() <= 1e-6 * y.abs().max(1.0),
                        "{kf:?} {b}/{j}: {x} vs {y}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_simd_kernels_equal_the_scalar_reference_bit_for_bit() -> candle_core::Result<()> {
        // 3 super-blocks per row, 13 activation rows (a full group and a partial one), 11
        // weight rows (a full token pass and a partial one).
        let (rows, cols, m) = (11, 3 * QK_K, 13);
        let acts = Q8KRows::quantize(&values_of(m * cols, 5), cols, true);
        for (dtype, kf) in FORMATS {
            let w = Tensor::from_vec(values_of(rows * cols, 7), (rows, cols), &Device::Cpu)?;
            let q = QTensor::quantize(&w, dtype)?;
            let data = q.data()?;
            let row_bytes = cols / QK_K * kf.block_bytes();
            let oracle =
                |j: usize, r: usize| scalar_pair(kf, &data[j * row_bytes..][..row_bytes], &acts, r);
            for simd in [false, true] {
                let mut wide = WideKRow::new(cols / QK_K);
                for (j, w) in data.chunks_exact(row_bytes).enumerate() {
                    wide.fill(kf, w);
                    for g in 0..acts.groups() {
                        let got = prompt_pass(simd, kf, w, &wide, &acts, g);
                        for (l, v) in got.iter().take(m - g * LANES).enumerate() {
                            let r = g * LANES + l;
                            assert_eq!(
                                v.to_bits(),
                                oracle(j, r).to_bits(),
                                "{kf:?} {simd} {j}/{r}"
                            );
                        }
                    }
                }
                // The tiled prompt form (where the CPU has AVX-512 VNNI): a tile of eight
                // weight rows and a partial one of three, 13 activation rows (three passes
                // of four and one alone).
                let tiled = simd && Kernel::tiles_here();
                let mut tile = WideKTile::new(cols / QK_K);
                let mut out = vec![vec![f32::NAN; rows]; m];
                let mut dst: Vec<&mut [f32]> = out.iter_mut().map(|r| &mut r[..]).collect();
                for (t, w) in data.chunks(LANES * row_bytes).enumerate() {
                    let done = prompt_tile(
                        tiled,
                        kf,
                        w,
                        row_bytes,
                        &mut tile,
                        &acts,
                        &mut dst,
                        t * LANES,
                    );
                    assert_eq!(done, tiled);
                }
                if tiled {
                    for (r, row) in out.iter().enumerate() {
                        for (j, v) in row.iter().enumerate() {
                            assert_eq!(v.to_bits(), oracle(j, r).to_bits(), "tiled {kf:?} {j}/{r}");
                        }
                    }
                }
                for n in 1..=LANES {
                    for j0 in [0, rows - n] {
                        let w = &data[j0 * row_bytes..(j0 + n) * row_bytes];
                        for r in [0, 7, m - 1] {
                            let got = token_pass(simd, kf, w, row_bytes, n, &acts, r, &data);
                            for (k, v) in got[..n].iter().enumerate() {
                                assert_eq!(
                                    v.to_bits(),
                                    oracle(j0 + k, r).to_bits(),
                                    "{kf:?} {simd} {n}/{k}/{r}"
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
    fn extreme_super_blocks_do_not_saturate() -> candle_core::Result<()> {
        // Weights at the ends of their range (constant rows) against activations of ±127.
        let cols = 2 * QK_K;
        let acts = Q8KRows::quantize(
            &(0..cols)
                .map(|i| if (i / 3) % 2 == 0 { 1.0 } else { -1.0 })
                .collect::<Vec<_>>(),
            cols,
            true,
        );
        for (dtype, kf) in FORMATS {
            for sign in [1.0f32, -1.0] {
                let w = Tensor::from_vec(
                    (0..LANES * cols)
                        .map(|i| sign * (1.0 + (i % 3) as f32))
                        .collect(),
                    (LANES, cols),
                    &Device::Cpu,
                )?;
                let q = QTensor::quantize(&w, dtype)?;
                let data = q.data()?;
                let row_bytes = cols / QK_K * kf.block_bytes();
                let got = token_pass(true, kf, &data, row_bytes, LANES, &acts, 0, &[]);
                let mut tiled = [vec![0f32; LANES]];
                let mut dst: Vec<&mut [f32]> = tiled.iter_mut().map(|r| &mut r[..]).collect();
                let mut tile = WideKTile::new(cols / QK_K);
                let has_tile = Kernel::tiles_here();
                prompt_tile(
                    has_tile, kf, &data, row_bytes, &mut tile, &acts, &mut dst, 0,
                );
                for (k, v) in got.iter().enumerate() {
                    let want = scalar_pair(kf, &data[k * row_bytes..][..row_bytes], &acts, 0);
                    assert_eq!(v.to_bits(), want.to_bits(), "{kf:?} {sign} {k}");
                    if has_tile {
                        assert_eq!(tiled[0][k].to_bits(), want.to_bits(), "tiled {kf:?} {sign}");
                    }
                }
            }
        }
        Ok(())
    }
}
