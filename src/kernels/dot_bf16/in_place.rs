//! A left operand read where bf16 storage keeps it: a matrix whose rows are contiguous holds
//! each row's pairs (values `2p`, `2p + 1`) as adjacent 16-bit halves already, so the kernel can
//! broadcast them from the rows themselves, `ldr` pairs apart, instead of from a packed copy.
//!
//! For a weight gradient `dW = dY cols(X)ᵀ`, summed over pixels, both operands were packed
//! (register transposes, pairs along the pixels): 5.7 % of a bf16 training step. Computed as
//! `dWᵀ = cols(X) dYᵀ` with `cols(X)` read in place, only `dY` (a ninth of the columns' size for
//! a 3 x 3 convolution) is transposed.
use super::{LhsView, MatRef, Operand, view_times_into};
use std::mem::MaybeUninit;

/// An `m x k` left operand of bf16 values, read in place.
pub struct RowsLhs<'a> {
    pairs: &'a [u32],
    m: usize,
    k: usize,
    /// Row stride, in pairs.
    ldr: usize,
}

impl<'a> RowsLhs<'a> {
    /// `a` read in place: `None` unless its rows are contiguous, of even length, an even number
    /// of values apart, and start on a 4-byte boundary (the pairs are read as `u32`).
    pub(crate) fn new(a: MatRef<'a, half::bf16>) -> Option<Self> {
        let aligned = (a.data.as_ptr() as usize).is_multiple_of(std::mem::align_of::<u32>());
        if a.cs != 1 || !a.cols.is_multiple_of(2) || !a.rs.is_multiple_of(2) || !aligned {
            return None;
        }
        // SAFETY: 4-byte aligned (checked above), within `a.data` (its first `len / 2` pairs),
        // and any bits are a valid `u32`; the view borrows `a.data` for `'a`.
        let pairs = unsafe { std::slice::from_raw_parts(a.data.as_ptr() as *const u32, a.data.len() / 2) };
        Some(Self { pairs, m: a.rows, k: a.cols, ldr: a.rs / 2 })
    }
}

/// `dst` (row stride `dst_rs`) `= [dst +] lhs x rhs`, as [`super::matmul_into`] (`rhs` packed per
/// panel, its values bf16 values already).
pub(crate) fn rows_times_into<E: Operand>(
    dst: &mut [MaybeUninit<f32>],
    dst_rs: usize,
    accumulate: bool,
    lhs: &RowsLhs,
    rhs: MatRef<E>,
    parallel: bool,
) {
    let view = LhsView { a: lhs.pairs, lda: 1, ldr: lhs.ldr, row: 0, m: lhs.m, k: lhs.k };
    view_times_into(dst, dst_rs, accumulate, &view, rhs, parallel, false)
}

#[cfg(test)]
mod tests {
    use super::super::{PackedLhs, matmul_into};
    use super::*;

    /// Read in place, a left operand gives the bits of the packed one, rows and columns at
    /// every edge of the kernel's blocks (and a row stride wider than the rows).
    #[test]
    fn rows_read_in_place_give_the_packed_products_bits() {
        for (m, k, rs, n) in [(13, 40, 40, 70), (6, 2, 8, 64), (1, 64, 100, 3), (20, 98, 98, 130)] {
            let a: Vec<half::bf16> =
                (0..m * rs).map(|i| half::bf16::from_f32(((i * 7919) % 2003) as f32 / 1001.0 - 1.0)).collect();
            let b: Vec<half::bf16> =
                (0..n * k).map(|i| half::bf16::from_f32(((i * 104729) % 997) as f32 / 500.0 - 1.0)).collect();
            let a = MatRef::new(&a, m, k, rs, 1);
            // The right operand as a weight gradient reads it: transposed (`n x k` stored).
            let b = MatRef::transposed(&b, k, n);
            let mut want = vec![MaybeUninit::new(0.25f32); m * n];
            matmul_into(&mut want, n, true, &PackedLhs::new(a), 0..m, b, false, false);
            let lhs = RowsLhs::new(a).expect("even rows, aligned");
            let mut got = vec![MaybeUninit::new(0.25f32); m * n];
            rows_times_into(&mut got, n, true, &lhs, b, true);
            // SAFETY: initialised above.
            let bits =
                |v: &[MaybeUninit<f32>]| v.iter().map(|v| unsafe { v.assume_init() }.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{m} x {k} (stride {rs}) x {n}");
        }
    }

    /// Odd rows, odd strides and a start between pairs are refused (the caller packs instead).
    #[test]
    fn rows_that_do_not_hold_whole_pairs_are_refused() {
        let v = vec![half::bf16::ONE; 64];
        assert!(RowsLhs::new(MatRef::new(&v, 4, 7, 8, 1)).is_none());
        assert!(RowsLhs::new(MatRef::new(&v, 4, 6, 7, 1)).is_none());
        assert!(RowsLhs::new(MatRef::new(&v[1..], 4, 6, 8, 1)).is_none());
        assert!(RowsLhs::new(MatRef::new(&v, 4, 6, 8, 1)).is_some());
    }
}
