//! The `vdpbf16ps` kernel and the register transposes that pack its operands (AVX-512 on
//! x86-64).
use super::{Block, NR, NV};
use std::arch::x86_64::*;

/// `pairs` (at most 16) pairs of each of `n` (at most 16) columns, as [`super::pack_panel`] (with
/// `ld` its panel width) and [`super::PackedLhs`] (with `ld` its rows) lay them out: column
/// `c`'s `2 * pairs` values from `src + c * cs` (bf16 values in f32) become pairs
/// `dst[p * ld + c]`, `p < pairs`; columns from `n` to 16 get zeros. Fewer than 16 pairs (the
/// last of a 7 x 7 map's 24) are read under a mask, where a loop one value at a time was 2.5 %
/// of a bf16 training step. One permute per column
/// keeps the top halves (the bf16 bits) as sixteen pairs in a register, then a 16 x 16
/// transpose in four rounds of permutes turns the columns' registers into the pairs'
/// rows: a weight gradient's transposed operand was packed one value at a time, a tenth of
/// a bf16 training step in `perf`.
///
/// # Safety
/// The CPU has AVX-512 F and BW; `src + c * cs + i` is readable for `c < n`, `i < 2 * pairs`,
/// and `dst + p * ld + c` writable for `p < pairs`, `c < 16`.
///
/// With `ROUND`, each value is rounded to bf16 first (nearest, ties to even, NaNs quiet:
/// [`crate::kernels::bf16::round_bits`]): a model's f32 weights, packed once per training step,
/// where a loop one value at a time was 2.5 % of a bf16 step.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn pairs_transposed<const ROUND: bool>(
    src: *const f32,
    cs: usize,
    n: usize,
    pairs: usize,
    dst: *mut u32,
    ld: usize,
) {
    // SAFETY: see the function's contract; the masks keep the reads within `2 * pairs` values.
    unsafe {
        // The odd 16-bit halves of 32 floats: float i's top half is half 2i + 1.
        let tops = _mm512_loadu_si512(TOPS.as_ptr() as *const _);
        let (lo_mask, hi_mask) = (lanes(2 * pairs), lanes((2 * pairs).saturating_sub(16)));
        let load = |mask, p: *const f32| {
            let v = _mm512_maskz_loadu_epi32(mask, p as *const _);
            if ROUND { rounded(v) } else { v }
        };
        let r: [__m512i; 16] = std::array::from_fn(|c| {
            if c >= n {
                return _mm512_setzero_si512();
            }
            let p = src.add(c * cs);
            _mm512_permutex2var_epi16(load(lo_mask, p), tops, load(hi_mask, p.add(16)))
        });
        transpose_into(r, dst, ld, pairs)
    }
}

/// [`crate::kernels::bf16::round_bits`] of sixteen f32 values' bits.
#[inline]
#[target_feature(enable = "avx512f")]
fn rounded(b: __m512i) -> __m512i {
    let top = _mm512_set1_epi32(0xffff_0000u32 as i32);
    let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
    let bias = _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff));
    let rounded = _mm512_and_si512(_mm512_add_epi32(b, bias), top);
    let quiet_nan = _mm512_and_si512(_mm512_or_si512(b, _mm512_set1_epi32(0x0040_0000)), top);
    let magnitude = _mm512_and_si512(b, _mm512_set1_epi32(0x7fff_ffff));
    let nan = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7f80_0000));
    _mm512_mask_blend_epi32(nan, rounded, quiet_nan)
}

/// The first `n` (at most 16) of sixteen 32-bit lanes.
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 { !0 } else { (1u16 << n) - 1 }
}

/// [`pairs_transposed`] from bf16 storage: a column's 32 values are its 16 pairs already,
/// one load each.
///
/// # Safety
/// As [`pairs_transposed`]'s, with `src` pointing at bf16 values.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn pairs_transposed_bf16(src: *const u16, cs: usize, n: usize, pairs: usize, dst: *mut u32, ld: usize) {
    // SAFETY: see the function's contract; the mask keeps the reads within `pairs` pairs.
    unsafe {
        let mask = lanes(pairs);
        let r: [__m512i; 16] = std::array::from_fn(|c| {
            if c >= n { _mm512_setzero_si512() } else { _mm512_maskz_loadu_epi32(mask, src.add(c * cs) as *const _) }
        });
        transpose_into(r, dst, ld, pairs)
    }
}

/// Rows `r` (one column's sixteen pairs each) turned into `dst[p * ld + c]`, `p < pairs`, by a
/// 16 x 16 transpose in four rounds of permutes.
///
/// # Safety
/// The CPU has AVX-512 F; `dst + p * ld + c` is writable for `p < pairs`, `c < 16`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose_into(mut r: [__m512i; 16], dst: *mut u32, ld: usize, pairs: usize) {
    // SAFETY: see the function's contract.
    unsafe {
        // Round `d` swaps bit `d` of the row index with bit `d` of the lane index.
        for (d, (lo_idx, hi_idx)) in [8usize, 4, 2, 1].into_iter().zip(TRANSPOSE) {
            let (lo_idx, hi_idx) =
                (_mm512_loadu_si512(lo_idx.as_ptr() as *const _), _mm512_loadu_si512(hi_idx.as_ptr() as *const _));
            for i in (0..16).filter(|i| i & d == 0) {
                let (a, b) = (r[i], r[i + d]);
                r[i] = _mm512_permutex2var_epi32(a, lo_idx, b);
                r[i + d] = _mm512_permutex2var_epi32(a, hi_idx, b);
            }
        }
        for (p, row) in r.iter().enumerate().take(pairs) {
            _mm512_storeu_si512(dst.add(p * ld) as *mut _, *row);
        }
    }
}

const TOPS: [u16; 32] = {
    let mut t = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = 2 * i as u16 + 1;
        i += 1;
    }
    t
};

/// Per round `d` (8, 4, 2, 1) of the transpose, the lanes of the lower and the upper row's
/// new values, from rows `a` (lanes 0-15) and `b` (16-31): the lower row keeps `a`'s lanes
/// whose bit `d` is clear and takes `b`'s lane `j - d` where it is set; the upper row takes
/// `a`'s lane `j + d` where it is clear and keeps `b`'s where it is set.
const TRANSPOSE: [([u32; 16], [u32; 16]); 4] = {
    let mut t = [([0u32; 16], [0u32; 16]); 4];
    let mut s = 0;
    while s < 4 {
        let d = 8 >> s;
        let mut j = 0;
        while j < 16 {
            if j & d == 0 {
                t[s].0[j] = j as u32;
                t[s].1[j] = (j + d) as u32;
            } else {
                t[s].0[j] = (16 + j - d) as u32;
                t[s].1[j] = (16 + j) as u32;
            }
            j += 1;
        }
        s += 1;
    }
    t
};

/// `R` rows x [`NR`] columns: per pair of `k`, [`NV`] panel loads, `R` broadcasts and
/// `R * NV` dot products into registers; the edge columns stored under a mask. The left
/// operand's rows are `blk.ldr` pairs apart with `STRIDED` (read where they lie, their pairs
/// adjacent), else adjacent (packed, their pairs `blk.lda` apart).
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn kernel<const R: usize, const STRIDED: bool>(blk: &Block, k2: usize) {
    // SAFETY: the caller guarantees the CPU features and that `blk`'s operands cover `R`
    // rows from `blk.row`, `k2` pairs and `blk.cols` columns of `c` (see `Block::run`).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        let b = blk.b.as_ptr();
        let a = blk.a.as_ptr().add(if STRIDED { blk.row * blk.ldr } else { blk.row });
        let rows: [*const u32; R] = std::array::from_fn(|r| a.add(r * blk.ldr));
        for p in 0..k2 {
            let bp = b.add(p * NR);
            let bv: [__m512bh; NV] =
                std::array::from_fn(|v| std::mem::transmute(_mm512_loadu_si512(bp.add(16 * v) as *const _)));
            let ap = a.add(p * blk.lda);
            for (r, acc) in acc.iter_mut().enumerate() {
                let pair = if STRIDED { *rows[r].add(p) } else { *ap.add(r) };
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
                for v in 0..NV {
                    acc[v] = _mm512_dpbf16_ps(acc[v], av, bv[v]);
                }
            }
        }
        if blk.transposed {
            // Through a tile on the stack: each output column's rows are adjacent in `c`.
            let mut tile = [[0f32; NR]; R];
            for (row, acc) in tile.iter_mut().zip(&acc) {
                for (v, &acc) in acc.iter().enumerate() {
                    _mm512_storeu_ps(row.as_mut_ptr().add(16 * v), acc);
                }
            }
            for j in 0..blk.cols {
                let d = blk.c.add(j * blk.ldc);
                for (r, row) in tile.iter().enumerate() {
                    *d.add(r) = if blk.accumulate { *d.add(r) + row[j] } else { row[j] };
                }
            }
            return;
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, &acc) in acc.iter().enumerate() {
                let lo = 16 * v;
                if lo >= blk.cols {
                    break;
                }
                let n = (blk.cols - lo).min(16);
                let mask: __mmask16 = if n == 16 { !0 } else { (1 << n) - 1 };
                let d = blk.c.add(r * blk.ldc + lo);
                let val = if blk.accumulate { _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mask, d)) } else { acc };
                _mm512_mask_storeu_ps(d, mask, val);
            }
        }
    }
}
