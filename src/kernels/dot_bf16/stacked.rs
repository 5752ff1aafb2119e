//! Operands whose inner dimension runs over several matrices side by side, and their product:
//! a weight gradient `dW = sum_b dY_b cols(X_b)ᵀ` of a small map as one product over the pixels
//! of several images.
//!
//! On a 7 x 7 map each image gives a product only 25 pairs deep, after which every thread's
//! `Cout x C*K*K` accumulator (9 MiB for the last stage's 3 x 3 convolutions) is read, added to
//! and written back: per image, a pass over memory far larger than the cache for 25 steps of the
//! kernel. Stacked, eight images are one product 200 pairs deep and one such pass.
//!
//! Each part is padded to an even length on its own (a 49-pixel image's last pair holds a zero),
//! in both operands alike, so the pairs of the two operands meet as in the parts' own products.
use super::product::Tiled;
use super::{
    LhsView, MatRef, NR, Operand, PackedLhs, PackedRhs, fill_pairs, for_each_panel, pack_panel, vector_kernel,
};
use std::mem::MaybeUninit;

/// The inner dimension of parts of `k` values each, each padded to even: their pairs.
fn stacked_pairs(ks: impl Iterator<Item = usize>) -> usize {
    ks.map(|k| k.div_ceil(2)).sum()
}

impl PackedLhs {
    /// The parts (`m x k_i` each, bf16 values) side by side: an `m x sum(k_i)` left operand, each
    /// part padded to even. [`PackedRhs::stacked`] of parts with the same `k_i` is its partner.
    #[cfg(test)]
    pub(crate) fn stacked<E: Operand>(parts: &[MatRef<E>]) -> Self {
        Self::stacked_in(parts, Vec::new())
    }

    /// [`Self::stacked`] in `pairs`' memory (a buffer kept from an earlier operand, see
    /// [`Self::into_pairs`]: a fresh one was zeroed, then overwritten, per group of images).
    pub(crate) fn stacked_in<E: Operand>(parts: &[MatRef<E>], mut pairs: Vec<u32>) -> Self {
        let m = parts.first().map_or(0, |a| a.rows);
        assert!(parts.iter().all(|a| a.rows == m), "bf16 stacked operand: parts with different row counts");
        let k2 = stacked_pairs(parts.iter().map(|a| a.cols));
        // Every pair is written by `fill_pairs` below: the buffer's old values need no zeroing
        // (only memory it grows by is zeroed, to size it).
        pairs.resize(k2 * m, 0);
        let mut start = 0;
        for a in parts {
            let len = a.cols.div_ceil(2) * m;
            super::super::isa::with_isa(
                #[inline(always)]
                || fill_pairs::<false, E>(a, 0..a.cols.div_ceil(2), &mut pairs[start..][..len]),
            );
            start += len;
        }
        Self {
            pairs,
            m,
            k: 2 * k2,
            #[cfg(target_arch = "x86_64")]
            tiles: Default::default(),
        }
    }
}

impl PackedRhs {
    /// The parts (`k_i x n` each, bf16 values) one above the other: a `sum(k_i) x n` right
    /// operand, each part padded to even (see [`PackedLhs::stacked`]).
    #[cfg(test)]
    pub(crate) fn stacked<E: Operand>(parts: &[MatRef<E>]) -> Self {
        Self::stacked_in(parts, Vec::new())
    }

    /// [`Self::stacked`] in `pairs`' memory (see [`PackedLhs::stacked_in`]): every pair is
    /// written by [`pack_panel`] (a narrow last panel's other columns zeroed by it), so a kept
    /// buffer's old values need no zeroing.
    pub(crate) fn stacked_in<E: Operand>(parts: &[MatRef<E>], mut pairs: Vec<u32>) -> Self {
        let n = parts.first().map_or(0, |b| b.cols);
        assert!(parts.iter().all(|b| b.cols == n), "bf16 stacked operand: parts with different column counts");
        let k2 = stacked_pairs(parts.iter().map(|b| b.rows));
        let len = k2 * NR;
        pairs.resize(n.div_ceil(NR) * len, 0);
        for (pi, panel) in pairs.chunks_mut(len.max(1)).enumerate() {
            let (j0, cols) = (pi * NR, NR.min(n - pi * NR));
            let mut at = 0;
            for b in parts {
                let part = b.rows.div_ceil(2) * NR;
                pack_panel::<false, E>(b, j0, cols, &mut panel[at..][..part]);
                at += part;
            }
        }
        Self { pairs, k: 2 * k2, n }
    }

    /// The buffer, for the next [`Self::stacked_in`].
    pub(crate) fn into_pairs(self) -> Vec<u32> {
        self.pairs
    }
}

/// `dst` (`lhs.rows() x rhs.cols()`, row stride `dst_rs`) `= [dst +] lhs x rhs`, both operands
/// packed, into memory that may be uninitialised (every element of the view is written; with
/// `accumulate` it must be initialised). With `parallel`, the panels are shared among the threads.
pub(crate) fn matmul_packed_into(
    dst: &mut [MaybeUninit<f32>],
    dst_rs: usize,
    accumulate: bool,
    lhs: &PackedLhs,
    rhs: &PackedRhs,
    parallel: bool,
) {
    let (m, n) = (lhs.m, rhs.n);
    assert_eq!(lhs.k, rhs.k, "bf16 matmul: inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len() && n <= dst_rs, "bf16 matmul: destination out of bounds");
    let out = dst.as_mut_ptr() as usize;
    let vector = vector_kernel();
    let view = LhsView { a: &lhs.pairs, lda: m, ldr: 1, row: 0, m, k: lhs.k };
    let tiled = Tiled::of_packed(lhs, 0..m);
    let panel = |pi: usize| {
        let (j0, cols) = (pi * NR, NR.min(n - pi * NR));
        // In bounds of `dst` (asserted above); panels write disjoint columns.
        tiled.panel_blocks(&view, rhs.panel(pi), out, dst_rs, j0, cols, accumulate, vector);
    };
    for_each_panel(n.div_ceil(NR), parallel, panel);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<half::bf16> {
        (0..len).map(|i| half::bf16::from_f32(((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0 - 1.0)).collect()
    }

    /// Stacking parts of odd and even depth gives the sum of the parts' own products, each
    /// product exact in f32 (small integers' halves, so the order of the sums does not matter).
    #[test]
    fn a_stacked_product_is_the_sum_of_the_parts_products() {
        let (m, n) = (13, 70);
        let ks = [49, 50, 3, 1];
        let int = |len: usize, seed: usize| -> Vec<half::bf16> {
            (0..len).map(|i| half::bf16::from_f32(((i * 31 + seed * 17) % 9) as f32 - 4.0)).collect()
        };
        let a: Vec<Vec<half::bf16>> = ks.iter().enumerate().map(|(i, &k)| int(m * k, i)).collect();
        // Each right part as the transposed view a weight gradient reads (`n x k` stored).
        let b: Vec<Vec<half::bf16>> = ks.iter().enumerate().map(|(i, &k)| int(n * k, 10 + i)).collect();
        let a_parts: Vec<_> = a.iter().zip(ks).map(|(a, k)| MatRef::rows(a, m, k)).collect();
        let b_parts: Vec<_> = b.iter().zip(ks).map(|(b, k)| MatRef::transposed(b, k, n)).collect();
        let (lhs, rhs) = (PackedLhs::stacked(&a_parts), PackedRhs::stacked(&b_parts));
        let mut got = vec![MaybeUninit::new(0.5f32); m * n];
        matmul_packed_into(&mut got, n, true, &lhs, &rhs, true);
        for i in 0..m {
            for j in 0..n {
                let mut want = 0.5f32;
                for (p, &k) in ks.iter().enumerate() {
                    for t in 0..k {
                        want += a[p][i * k + t].to_f32() * b[p][j * k + t].to_f32();
                    }
                }
                // SAFETY: initialised above and written by the product.
                assert_eq!(unsafe { got[i * n + j].assume_init() }, want, "({i}, {j})");
            }
        }
    }

    /// Packed into a kept buffer full of old values (longer or shorter than needed), both
    /// operands come out as packed into fresh memory.
    #[test]
    fn a_kept_buffer_gives_the_fresh_pairs() {
        let (m, n, ks) = (7, 70, [49, 50]);
        let a: Vec<Vec<half::bf16>> = ks.iter().map(|&k| values(m * k, k)).collect();
        let b: Vec<Vec<half::bf16>> = ks.iter().map(|&k| values(n * k, k + 1)).collect();
        let a_parts: Vec<_> = a.iter().zip(ks).map(|(a, k)| MatRef::rows(a, m, k)).collect();
        let b_parts: Vec<_> = b.iter().zip(ks).map(|(b, k)| MatRef::transposed(b, k, n)).collect();
        for old in [vec![0xdead_beef_u32; 5], vec![0xdead_beef_u32; 100_000]] {
            let lhs = PackedLhs::stacked_in(&a_parts, old.clone());
            assert!(lhs.pairs == PackedLhs::stacked(&a_parts).pairs);
            let rhs = PackedRhs::stacked_in(&b_parts, old);
            assert!(rhs.pairs == PackedRhs::stacked(&b_parts).pairs);
        }
    }

    /// A single part is the unstacked product, bit for bit.
    #[test]
    fn one_part_is_the_plain_product() {
        let (m, k, n) = (20, 49, 130);
        let (a, b) = (values(m * k, 1), values(n * k, 2));
        let (a, b) = (MatRef::rows(&a, m, k), MatRef::transposed(&b, k, n));
        let mut want = vec![MaybeUninit::new(0f32); m * n];
        super::super::matmul_into(&mut want, n, false, &PackedLhs::new(a), 0..m, b, false, false);
        let mut got = vec![MaybeUninit::new(1f32); m * n];
        matmul_packed_into(&mut got, n, false, &PackedLhs::stacked(&[a]), &PackedRhs::stacked(&[b]), false);
        // SAFETY: both written in full by the products.
        let bits = |v: &[MaybeUninit<f32>]| v.iter().map(|v| unsafe { v.assume_init() }.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
    }
}
