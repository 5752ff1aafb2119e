//! The products on the kernel with the right operand packed one panel at a time, as it is
//! read: [`matmul_into`] for a packed left operand, and the row blocks and panel loop the other
//! products share.
use super::{Block, MR, MatRef, NR, Operand, PackedLhs, pack_panel, vector_kernel};
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

thread_local! {
    static PANEL: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// `dst` (rows `rows` of `lhs` times `rhs`, row stride `dst_rs`) `= [dst +] lhs x rhs`, into
/// memory that may be uninitialised (every element of the view is written; with `accumulate`
/// it must be initialised). With `parallel`, the column panels are shared among the threads;
/// with `round`, `rhs`'s values are rounded to bf16 as they are packed (see [`super::pair`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_into<E: Operand>(
    dst: &mut [MaybeUninit<f32>],
    dst_rs: usize,
    accumulate: bool,
    lhs: &PackedLhs,
    rows: std::ops::Range<usize>,
    rhs: MatRef<E>,
    parallel: bool,
    round: bool,
) {
    assert!(rows.end <= lhs.m, "bf16 matmul: rows {rows:?} of a {}-row operand", lhs.m);
    let view = LhsView { a: &lhs.pairs, lda: lhs.m, ldr: 1, row: rows.start, m: rows.len(), k: lhs.k };
    let tiled = Tiled::of_packed(lhs, rows);
    tiled_view_times_into(dst, dst_rs, accumulate, &view, &tiled, rhs, parallel, round)
}

/// The left operand of one product as the kernel reads it: row `row + r`'s pair `p` at
/// `a[(row + r) * ldr + p * lda]` (packed: `ldr` 1, `lda` its rows; read in place: `lda` 1,
/// `ldr` its row stride in pairs), `m` rows of `k` values.
pub(super) struct LhsView<'a> {
    pub(super) a: &'a [u32],
    pub(super) lda: usize,
    pub(super) ldr: usize,
    pub(super) row: usize,
    pub(super) m: usize,
    pub(super) k: usize,
}

/// [`matmul_into`] of any [`LhsView`].
#[allow(clippy::too_many_arguments)]
pub(super) fn view_times_into<E: Operand>(
    dst: &mut [MaybeUninit<f32>],
    dst_rs: usize,
    accumulate: bool,
    lhs: &LhsView,
    rhs: MatRef<E>,
    parallel: bool,
    round: bool,
) {
    tiled_view_times_into(dst, dst_rs, accumulate, lhs, &Tiled::new(lhs), rhs, parallel, round)
}

/// [`view_times_into`] with `lhs`'s tiles laid out already.
#[allow(clippy::too_many_arguments)]
fn tiled_view_times_into<E: Operand>(
    dst: &mut [MaybeUninit<f32>],
    dst_rs: usize,
    accumulate: bool,
    lhs: &LhsView,
    tiled: &Tiled,
    rhs: MatRef<E>,
    parallel: bool,
    round: bool,
) {
    let (m, n) = (lhs.m, rhs.cols);
    assert_eq!(rhs.rows, lhs.k, "bf16 matmul: inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len() && n <= dst_rs, "bf16 matmul: destination out of bounds");
    let out = dst.as_mut_ptr() as usize;
    let vector = vector_kernel();
    let panel = |pi: usize| {
        let (j0, cols) = (pi * NR, NR.min(n - pi * NR));
        PANEL.with(|b| {
            let mut b = b.borrow_mut();
            b.resize(rhs.rows.div_ceil(2) * NR, 0);
            if round {
                pack_panel::<true, _>(&rhs, j0, cols, &mut b)
            } else {
                pack_panel::<false, _>(&rhs, j0, cols, &mut b)
            }
            // In bounds of `dst` (asserted above); panels write disjoint columns.
            tiled.panel_blocks(lhs, &b, out, dst_rs, j0, cols, accumulate, vector);
        })
    };
    for_each_panel(n.div_ceil(NR), parallel, panel);
}

/// `panel(pi)` for each of `panels` panels, shared among the threads with `parallel`.
pub(super) fn for_each_panel(panels: usize, parallel: bool, panel: impl Fn(usize) + Sync + Send) {
    if parallel && panels > 1 {
        (0..panels).into_par_iter().for_each(panel);
    } else {
        (0..panels).for_each(panel);
    }
}

/// A product's left operand as AMX tiles where the products run on them ([`super::amx`]):
/// laid out once for all the panels, or kept with a packed operand for all its products.
pub(super) enum Tiled<'a> {
    /// The vector kernel's products.
    None,
    /// Tiles of the view's rows.
    #[cfg(target_arch = "x86_64")]
    Owned(super::amx::TiledLhs),
    /// Rows from the given one (a multiple of 16) of an operand's kept tiles.
    #[cfg(target_arch = "x86_64")]
    Kept(&'a super::amx::TiledLhs, usize),
    #[cfg(not(target_arch = "x86_64"))]
    #[allow(dead_code)]
    Never(std::marker::PhantomData<&'a ()>),
}

impl<'a> Tiled<'a> {
    /// `lhs`'s rows laid out as tiles where the products run on them.
    pub(super) fn new(lhs: &LhsView) -> Self {
        #[cfg(target_arch = "x86_64")]
        if super::amx::enabled() {
            return Self::Owned(super::amx::TiledLhs::new(lhs));
        }
        let _ = lhs;
        Self::None
    }

    /// Rows `rows` of `lhs`: its kept tiles where they start on a tile's first row.
    pub(super) fn of_packed(lhs: &'a PackedLhs, rows: std::ops::Range<usize>) -> Self {
        #[cfg(target_arch = "x86_64")]
        if super::amx::enabled() {
            if rows.start.is_multiple_of(16) {
                return Self::Kept(lhs.tiles(), rows.start);
            }
            let view = LhsView { a: &lhs.pairs, lda: lhs.m, ldr: 1, row: rows.start, m: rows.len(), k: lhs.k };
            return Self::Owned(super::amx::TiledLhs::new(&view));
        }
        let _ = (lhs, rows);
        Self::None
    }

    /// Every block of `lhs`'s rows against one packed panel `b`: output columns
    /// `j0..j0 + cols` of the product at `out` (an `f32` pointer, row stride `dst_rs`), which
    /// the caller has bounds-checked for all of `lhs`'s rows. On the tiles where there are
    /// tiles, else on the vector kernel (`vector`) or the portable one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn panel_blocks(
        &self,
        lhs: &LhsView,
        b: &[u32],
        out: usize,
        dst_rs: usize,
        j0: usize,
        cols: usize,
        accumulate: bool,
        vector: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: within the output the caller checked.
            let c = unsafe { (out as *mut f32).add(j0) };
            let to = super::amx::Out { c, ldc: dst_rs, accumulate, transposed: false };
            match self {
                Self::Owned(t) => return super::amx::panel(t, 0..lhs.m, b, cols, &to),
                Self::Kept(t, first) => return super::amx::panel(t, *first..first + lhs.m, b, cols, &to),
                Self::None => {}
            }
        }
        for r0 in (0..lhs.m).step_by(MR) {
            let block = Block {
                a: lhs.a,
                lda: lhs.lda,
                ldr: lhs.ldr,
                row: lhs.row + r0,
                b,
                // SAFETY: within the output the caller checked (see above).
                c: unsafe { (out as *mut f32).add(r0 * dst_rs + j0) },
                ldc: dst_rs,
                cols,
                accumulate,
                transposed: false,
            };
            block.run(MR.min(lhs.m - r0), vector);
        }
    }
}
