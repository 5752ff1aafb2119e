//! Matrix products of bf16 values on `vdpbf16ps` (AVX512-BF16), for bf16 autocast's
//! convolutions where the CPU runs that instruction faster than f32 FMA.
//!
//! `vdpbf16ps` multiplies 16 pairs of bf16 values by 16 other pairs and adds both products of
//! each pair into one of 16 f32 lanes: four multiply-adds per lane where FMA does two. Whether
//! that is faster depends on the core: AMD Zen 4 retires it at FMA's instruction rate (twice the
//! multiply-adds; `bench isa_peak`: 234 against 117 GFLOP/s), Intel's cores without AMX at half
//! of it (0.49x on an Emerald Rapids Xeon), so [`enabled`] measures both for a millisecond and
//! uses it only where it wins. Products are exact in f32 and accumulate in f32 (as PyTorch's
//! oneDNN kernels do), so the numbers are those of the f32 path up to the order of the sums and
//! bf16's subnormals, which the instruction treats as zero.
//!
//! Why a kernel of our own: `gemm` (our f32 products) has no bf16 dot-product kernel (its f16
//! path converts to f32), and no maintained crate offers one on stable Rust. This one is the
//! textbook register-blocked form: the left operand packed once as pairs along `k`
//! ([`PackedLhs`]), the right operand packed per panel of [`NR`] columns as pairs along `k`
//! (the instruction's layout), a 6 x 64 block of outputs in 24 registers.
//!
//! On CPUs with AMX-BF16 the same products run on tiles instead ([`amx`], 15x the multiply-adds
//! of f32 FMA on one core); the packings stay, the panels being the tiles' B layout already.
use super::MatRef;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86_64")]
pub mod amx;
mod in_place;
pub mod peak;
mod product;
mod stacked;
pub(crate) use in_place::{RowsLhs, rows_times_into};
pub(crate) use product::matmul_into;
use product::{LhsView, for_each_panel, view_times_into};
pub(crate) use stacked::matmul_packed_into;

/// Output rows per kernel call.
const MR: usize = 6;
/// 16-lane registers per output row in a kernel call.
const NV: usize = 4;
/// Output columns per kernel call (and per packed panel of the right operand).
const NR: usize = 16 * NV;

/// A value the packing reads: an f32 (a bf16 value, or one it rounds) or a bf16 in bf16
/// storage (training's activations and gradients, read as they are stored instead of widened to
/// f32 first).
pub trait Operand: super::Element {
    /// Its value as f32 bits (a bf16's are its own bits, shifted up).
    fn bits(self) -> u32;

    /// [`x86::pairs_transposed`] for this type (`ROUND` changes no bf16 value).
    ///
    /// # Safety
    /// As [`x86::pairs_transposed`]'s.
    #[cfg(target_arch = "x86_64")]
    unsafe fn pairs_transposed<const ROUND: bool>(
        src: *const Self,
        cs: usize,
        n: usize,
        pairs: usize,
        dst: *mut u32,
        ld: usize,
    );
}

impl Operand for f32 {
    #[inline(always)]
    fn bits(self) -> u32 {
        self.to_bits()
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn pairs_transposed<const ROUND: bool>(
        src: *const f32,
        cs: usize,
        n: usize,
        pairs: usize,
        dst: *mut u32,
        ld: usize,
    ) {
        // SAFETY: the caller's contract is the callee's.
        unsafe { x86::pairs_transposed::<ROUND>(src, cs, n, pairs, dst, ld) }
    }
}

impl Operand for half::bf16 {
    #[inline(always)]
    fn bits(self) -> u32 {
        (self.to_bits() as u32) << 16
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn pairs_transposed<const ROUND: bool>(
        src: *const half::bf16,
        cs: usize,
        n: usize,
        pairs: usize,
        dst: *mut u32,
        ld: usize,
    ) {
        // SAFETY: the caller's contract is the callee's.
        unsafe { x86::pairs_transposed_bf16(src as *const u16, cs, n, pairs, dst, ld) }
    }
}

/// Two consecutive `k` values of one row or column, as the instruction reads them: the first
/// in the low half. With `ROUND` each is rounded to bf16 (nearest, ties to even), for operands
/// that may not be bf16 values yet (evaluation's activations: rounding here saves a pass that
/// checked them). Without, the operands are bf16 values already (training's, which autocast
/// rounded), so their bf16 bits are their top 16 bits: two shifts and a mask, where rounding
/// made a training step 10 % slower. Both vectorise; from bf16 storage it is one interleave.
#[inline(always)]
fn pair<const ROUND: bool, E: Operand>(lo: E, hi: E) -> u32 {
    let bits = |v: E| if ROUND { super::bf16::round_bits(v.bits()) } else { v.bits() };
    bits(lo) >> 16 | bits(hi) & 0xffff_0000
}

/// 0: not decided; 1: off; 2: on.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Whether this CPU can run the kernel at all: AVX-512F and AVX512-BF16, with AVX-512 the
/// active ISA (`ARTCULTURE_ISA=avx2` turns it off with the rest of the AVX-512 code).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16") && super::isa::active() == super::isa::Isa::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether bf16 autocast's convolutions run on this module's products: the CPU has
/// `vdpbf16ps`, and has AMX tiles ([`amx::enabled`]) or retires more multiply-adds by
/// `vdpbf16ps` than by f32 FMA here (measured once, about a millisecond), and
/// `ARTCULTURE_BF16_DOT` (`0`/`off` or `1`/`on`) does not override the measurement.
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        0 => {
            let on = available()
                && match std::env::var("ARTCULTURE_BF16_DOT").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
                    Ok("0" | "off" | "false") => false,
                    Ok("1" | "on" | "true") => true,
                    _ => on_tiles() || faster_than_fma(),
                };
            ENABLED.store(1 + on as u8, Ordering::Relaxed);
            on
        }
        v => v == 2 && available(),
    }
}

/// Turns the kernel on or off for the rest of the process (on only where [`available`]); the
/// tests run both paths this way. Returns whether it is on.
pub fn set_enabled(on: bool) -> bool {
    let on = on && available();
    ENABLED.store(1 + on as u8, Ordering::Relaxed);
    on
}

/// Whether the products run on AMX tiles ([`amx::enabled`]; never off x86-64).
pub fn on_tiles() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::enabled()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn faster_than_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // 20,000 iterations: 0.3 M instructions per loop, a fraction of a millisecond.
        let (fma, dot) = peak::rates(20_000, 5);
        dot > 1.25 * fma
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A left operand (`m x k`) as the kernel reads it: `[k / 2][m]` pairs, `k` padded to even
/// with a zero. Packed once per weight and reused for every image and band.
pub struct PackedLhs {
    pairs: Vec<u32>,
    m: usize,
    k: usize,
    /// Its AMX tiles, laid out at its first product on them and kept for the others.
    #[cfg(target_arch = "x86_64")]
    tiles: std::sync::OnceLock<amx::TiledLhs>,
}

impl PackedLhs {
    /// `a`'s values must be bf16 values (see [`pair`]).
    pub(crate) fn new<E: Operand>(a: MatRef<E>) -> Self {
        Self::new_in(a, Vec::new(), false)
    }

    /// [`Self::new`] in `pairs`' memory (a buffer kept from an earlier operand, see
    /// [`Self::into_pairs`]); with `round`, `a`'s values are rounded to bf16 (see [`pair`]).
    pub(crate) fn new_in<E: Operand>(a: MatRef<E>, pairs: Vec<u32>, round: bool) -> Self {
        if round { Self::packed::<true, _>(a, pairs) } else { Self::packed::<false, _>(a, pairs) }
    }

    fn packed<const ROUND: bool, E: Operand>(a: MatRef<E>, mut pairs: Vec<u32>) -> Self {
        let (m, k) = (a.rows, a.cols);
        let k2 = k.div_ceil(2);
        // Every pair is written below: a reused buffer's old values need no zeroing first.
        pairs.resize(k2 * m, 0);
        let fill = |ps: Range<usize>, dst: &mut [u32]| {
            super::isa::with_isa(
                #[inline(always)]
                || fill_pairs::<ROUND, E>(&a, ps, dst),
            )
        };
        if spread(k2 * m) && m > 0 {
            // Blocks of whole 16-pair steps of the transpose, several per thread.
            let per = k2.div_ceil(4 * rayon::current_num_threads()).next_multiple_of(16);
            pairs.par_chunks_mut(per * m).enumerate().for_each(|(i, dst)| fill(i * per..(i * per + per).min(k2), dst));
        } else {
            fill(0..k2, &mut pairs);
        }
        Self {
            pairs,
            m,
            k,
            #[cfg(target_arch = "x86_64")]
            tiles: Default::default(),
        }
    }

    /// With its AMX tiles laid out now (where the products run on tiles), by the calling thread
    /// and the pool together, rather than at the first product by the task that reaches it
    /// first while the others wait for it.
    pub(crate) fn tiled(self) -> Self {
        #[cfg(target_arch = "x86_64")]
        if amx::enabled() {
            let _ = self.tiles();
        }
        self
    }

    /// The buffer, for the next [`Self::new_in`].
    pub(crate) fn into_pairs(mut self) -> Vec<u32> {
        std::mem::take(&mut self.pairs)
    }

    /// Its AMX tiles (laid out at the first call, kept).
    #[cfg(target_arch = "x86_64")]
    fn tiles(&self) -> &amx::TiledLhs {
        self.tiles.get_or_init(|| {
            amx::TiledLhs::new(&product::LhsView { a: &self.pairs, lda: self.m, ldr: 1, row: 0, m: self.m, k: self.k })
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Columns: the inner dimension of a product.
    pub fn inner(&self) -> usize {
        self.k
    }
}

/// Whether packing `pairs` pairs is shared between the threads: a weight packed for a layer
/// (once per training step, from the thread that runs the layer while the others wait: 2 % of
/// a bf16 step). Inside a task that already has its own thread too: rayon hands the halves to
/// a thread that is free or runs them in place. (It once asked for a caller outside the pool,
/// until training steps and evaluation came to run on a worker: `--precision bf16 bench
/// train16`, ten alternating rounds, 1,084 ms with the pool's weights packed by one thread,
/// 1,064 ms shared with their tiles laid out up front, see [`PackedLhs::tiled`].)
fn spread(pairs: usize) -> bool {
    pairs >= 1 << 16 && rayon::current_num_threads() > 1
}

/// Pairs `ps` of every row of `a` into `dst` (`[ps.len()][m]`), as [`PackedLhs`] lays them out.
#[inline(always)]
fn fill_pairs<const ROUND: bool, E: Operand>(a: &MatRef<E>, ps: Range<usize>, dst: &mut [u32]) {
    let (m, k, base) = (a.rows, a.cols, ps.start);
    let at = |r: usize, c: usize| if c < k { a.data[r * a.rs + c * a.cs] } else { E::ZERO };
    if a.rs == 1 {
        // Columns contiguous (a transposed view): two columns at a time, down the rows.
        for p in ps.clone() {
            let d = &mut dst[(p - base) * m..][..m];
            if 2 * p + 1 < k {
                let (lo, hi) = (&a.data[2 * p * a.cs..][..m], &a.data[(2 * p + 1) * a.cs..][..m]);
                d.iter_mut().zip(lo.iter().zip(hi)).for_each(|(d, (&l, &h))| *d = pair::<ROUND, _>(l, h));
            } else {
                d.iter_mut().enumerate().for_each(|(r, d)| *d = pair::<ROUND, _>(at(r, 2 * p), E::ZERO));
            }
        }
        return;
    }
    // Rows contiguous or general: sixteen rows at a time, so that each write fills a cache line.
    // With rows contiguous a row's adjacent values are its pairs: sixteen pairs of sixteen rows
    // at a time by the register transpose (a weight gradient's output gradient, packed per
    // image: 6 % of a bf16 training step one at a time).
    let transpose = a.cs == 1 && transpose_kernel();
    // The pairs whose two values are both in the row.
    let whole = (k / 2).min(ps.end);
    for r0 in (0..m).step_by(16) {
        let rows = 16.min(m - r0);
        let mut first = base;
        #[cfg(target_arch = "x86_64")]
        if transpose && rows == 16 && whole > base {
            // Every whole pair: the last block of fewer than 16 under a mask.
            first = whole;
            for p0 in (base..whole).step_by(16) {
                let n = 16.min(whole - p0);
                let src = &a.data[r0 * a.rs + 2 * p0..];
                assert!(15 * a.rs + 2 * n <= src.len());
                let d = &mut dst[(p0 - base) * m + r0..];
                assert!((n - 1) * m + 16 <= d.len());
                // SAFETY: the CPU has the features (`transpose_kernel`); the reads and writes
                // are in bounds (asserted above).
                unsafe { E::pairs_transposed::<ROUND>(src.as_ptr(), a.rs, 16, n, d.as_mut_ptr(), m) };
            }
        }
        for p in first..ps.end {
            let d = &mut dst[(p - base) * m + r0..][..rows];
            for (i, v) in d.iter_mut().enumerate() {
                *v = pair::<ROUND, _>(at(r0 + i, 2 * p), at(r0 + i, 2 * p + 1));
            }
        }
    }
}

/// A right operand (`k x n`) packed once as all its panels, `[n / NR][k / 2][NR]` pairs: a
/// model's weights in evaluation, for [`matmul_lanes_into`], where the output channels run
/// along the vector lanes.
pub struct PackedRhs {
    pairs: Vec<u32>,
    k: usize,
    n: usize,
}

impl PackedRhs {
    /// `b`'s values must be bf16 values (see [`pair`]).
    pub(crate) fn new<E: Operand>(b: MatRef<E>) -> Self {
        Self::new_rounding(b, false)
    }

    /// With `round`, `b`'s values are rounded to bf16 as they are packed (see [`pair`]).
    pub(crate) fn new_rounding<E: Operand>(b: MatRef<E>, round: bool) -> Self {
        let (k2, panels) = (b.rows.div_ceil(2), b.cols.div_ceil(NR));
        let len = k2 * NR;
        let total = panels * len;
        let mut pairs: Vec<u32> = Vec::with_capacity(total);
        let pack = |(pi, out): (usize, &mut [MaybeUninit<u32>])| {
            // Zeroed panel by panel as it is packed, in cache, by the thread that packs it: the
            // whole buffer zeroed at once on the calling thread, while the others waited, was
            // ~0.25 % of a bf16 training step's samples (a weight packed per input gradient).
            out.fill(MaybeUninit::new(0));
            // SAFETY: every element was initialised just above.
            let out = unsafe { &mut *(out as *mut [MaybeUninit<u32>] as *mut [u32]) };
            let (j0, cols) = (pi * NR, NR.min(b.cols - pi * NR));
            if round { pack_panel::<true, _>(&b, j0, cols, out) } else { pack_panel::<false, _>(&b, j0, cols, out) }
        };
        if len > 0 {
            let spare = &mut pairs.spare_capacity_mut()[..total];
            if spread(total) {
                spare.par_chunks_mut(len).enumerate().for_each(pack);
            } else {
                spare.chunks_mut(len).enumerate().for_each(pack);
            }
            // SAFETY: the panels cover the first `total` elements, each initialised by `pack`.
            unsafe { pairs.set_len(total) };
        }
        Self { pairs, k: b.rows, n: b.cols }
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.n
    }

    /// Rows: the inner dimension of a product.
    pub fn inner(&self) -> usize {
        self.k
    }

    fn panel(&self, pi: usize) -> &[u32] {
        let len = self.k.div_ceil(2) * NR;
        &self.pairs[pi * len..][..len]
    }
}

/// Columns per packed panel of a [`PackedRhs`]: a column range handed to [`matmul_lanes_into`]
/// starts on a multiple of it.
pub const PANEL_COLS: usize = NR;

/// Asks for the next panel's part of a row (`data[start..]`, [`NR`] values) to be brought into
/// L2, so that it arrives while this panel is packed and multiplied. A panel takes 2 or 4 cache lines from each of its `k` rows,
/// one row's image plane (6 KiB for a 56 x 56 map in bf16) apart: more streams than the
/// hardware prefetchers follow, so packing waited on each row's lines (2 % of a bf16 training
/// step in `perf`, on the loads of the two-row interleave). A hint: nothing is read, no bounds
/// matter, the results are the same.
#[inline(always)]
fn prefetch_next_panel<E>(data: &[E], start: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let first = data.as_ptr().wrapping_add(start) as *const i8;
        for line in (0..NR * std::mem::size_of::<E>()).step_by(64) {
            // SAFETY: a prefetch neither reads nor faults, whatever the address; SSE is part
            // of x86_64.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(first.wrapping_add(line)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, start);
}

/// Columns `j0..j0 + cols` of `b` (`k x n`, bf16 values) as the kernel reads them into `out`
/// (`[k / 2][NR]` pairs), zero beyond `cols` and beyond `k`.
fn pack_panel<const ROUND: bool, E: Operand>(b: &MatRef<E>, j0: usize, cols: usize, out: &mut [u32]) {
    let (k, k2) = (b.rows, b.rows.div_ceil(2));
    assert_eq!(out.len(), k2 * NR, "bf16 panel: buffer of another size");
    // A full panel's pairs are all written below; a narrower one's other columns must be zero.
    if cols < NR {
        out.fill(0);
    }
    let transpose = b.cs != 1 && b.rs == 1 && transpose_kernel();
    super::isa::with_isa(
        #[inline(always)]
        || {
            if b.cs == 1 {
                // Rows contiguous: two rows at a time, across the panel.
                let next = (j0 + NR < b.cols).then_some(j0 + NR);
                for p in 0..k / 2 {
                    if let Some(next) = next {
                        prefetch_next_panel(b.data, 2 * p * b.rs + next);
                        prefetch_next_panel(b.data, (2 * p + 1) * b.rs + next);
                    }
                    let (lo, hi) = (&b.data[2 * p * b.rs + j0..][..cols], &b.data[(2 * p + 1) * b.rs + j0..][..cols]);
                    let dst = &mut out[p * NR..][..cols];
                    dst.iter_mut().zip(lo.iter().zip(hi)).for_each(|(d, (&l, &h))| *d = pair::<ROUND, _>(l, h));
                }
                if k % 2 == 1 {
                    let lo = &b.data[(k - 1) * b.rs + j0..][..cols];
                    out[(k2 - 1) * NR..][..cols]
                        .iter_mut()
                        .zip(lo)
                        .for_each(|(d, &l)| *d = pair::<ROUND, _>(l, E::ZERO));
                }
            } else {
                // Columns contiguous (a transposed view): adjacent values of a column are a pair
                // already; sixteen pairs of every column at a time keep the writes in 4 KiB.
                let col = |c: usize, r: usize| if r < k { b.data[r * b.rs + (j0 + c) * b.cs] } else { E::ZERO };
                let whole = if b.rs == 1 { k / 2 } else { 0 };
                for p0 in (0..whole).step_by(16) {
                    let ps = 16.min(whole - p0);
                    #[cfg(target_arch = "x86_64")]
                    if transpose {
                        for c0 in (0..cols).step_by(16) {
                            let n = 16.min(cols - c0);
                            // The columns' first values, and where their block of pairs goes.
                            let src = &b.data[(j0 + c0) * b.cs + 2 * p0..];
                            assert!((n - 1) * b.cs + 2 * ps <= src.len());
                            let dst = &mut out[p0 * NR + c0..];
                            assert!((ps - 1) * NR + 16 <= dst.len());
                            // SAFETY: the CPU has the features (`transpose_kernel`); the reads
                            // and writes are in bounds (asserted above).
                            unsafe { E::pairs_transposed::<ROUND>(src.as_ptr(), b.cs, n, ps, dst.as_mut_ptr(), NR) };
                        }
                        continue;
                    }
                    for c in 0..cols {
                        let src = &b.data[(j0 + c) * b.cs + 2 * p0..][..2 * ps];
                        for (i, two) in src.chunks_exact(2).enumerate() {
                            out[(p0 + i) * NR + c] = pair::<ROUND, _>(two[0], two[1]);
                        }
                    }
                }
                for p in whole..k2 {
                    for c in 0..cols {
                        out[p * NR + c] = pair::<ROUND, _>(col(c, 2 * p), col(c, 2 * p + 1));
                    }
                }
            }
        },
    )
}

/// Whether the CPU runs [`x86::pairs_transposed`].
fn transpose_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst = lhs x rhs[.., cols]`, stored transposed: element `(i, j)` of the product goes to
/// `dst[(j - cols.start) * ld + i]`. With `lhs` a convolution's pixels (the rows of a
/// transposed column buffer) and `rhs` its weights (output channels as columns), that is the
/// output in its own channels-by-pixels layout, computed with the output channels along the
/// vector lanes: a 7 x 7 or 14 x 14 map leaves a quarter of the lanes of its last pixel panel
/// idle in [`matmul_into`]'s orientation, where the channels (multiples of 64 in our models) fill
/// every panel. `cols.start` is a multiple of [`PANEL_COLS`]; every element of the view is
/// written.
pub(crate) fn matmul_lanes_into(
    dst: &mut [MaybeUninit<f32>],
    ld: usize,
    lhs: &PackedLhs,
    rhs: &PackedRhs,
    cols: std::ops::Range<usize>,
) {
    let (m, n) = (lhs.m, cols.len());
    assert_eq!(lhs.k, rhs.k, "bf16 matmul: inner dimensions differ");
    assert!(cols.start.is_multiple_of(NR) && cols.end <= rhs.n, "bf16 matmul: columns {cols:?} of {}", rhs.n);
    if m == 0 || n == 0 {
        return;
    }
    assert!((n - 1) * ld + m <= dst.len() && m <= ld, "bf16 matmul: destination out of bounds");
    let out = dst.as_mut_ptr() as *mut f32;
    #[cfg(target_arch = "x86_64")]
    if amx::enabled() {
        for j0 in cols.clone().step_by(NR) {
            // SAFETY: in bounds of `dst` (asserted above).
            let c = unsafe { out.add((j0 - cols.start) * ld) };
            let to = amx::Out { c, ldc: ld, accumulate: false, transposed: true };
            amx::panel(lhs.tiles(), 0..m, rhs.panel(j0 / NR), NR.min(cols.end - j0), &to);
        }
        return;
    }
    let vector = vector_kernel();
    for j0 in cols.clone().step_by(NR) {
        for r0 in (0..m).step_by(MR) {
            let block = Block {
                a: &lhs.pairs,
                lda: lhs.m,
                ldr: 1,
                row: r0,
                b: rhs.panel(j0 / NR),
                // SAFETY: in bounds of `dst` (asserted above).
                c: unsafe { out.add((j0 - cols.start) * ld + r0) },
                ldc: ld,
                cols: NR.min(cols.end - j0),
                accumulate: false,
                transposed: true,
            };
            block.run(MR.min(m - r0), vector);
        }
    }
}

/// One call of the kernel: up to [`MR`] rows from `row` of the packed left operand, against one
/// packed panel, into `c` (row `r`, column `j` at `c[r * ldc + j]`, or with `transposed` at
/// `c[j * ldc + r]`).
struct Block<'a> {
    a: &'a [u32],
    lda: usize,
    ldr: usize,
    row: usize,
    b: &'a [u32],
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
    transposed: bool,
}

/// Whether the CPU runs the vector kernel (else the portable one runs: the tests' case).
fn vector_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16") && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Block<'_> {
    /// With `vector` ([`vector_kernel`]: checked once per product, not per block), the
    /// `vdpbf16ps` kernel.
    fn run(&self, rows: usize, vector: bool) {
        let k2 = self.b.len() / NR;
        // The last pair read: row `row + rows - 1`'s pair `k2 - 1`.
        let last = (self.row + rows.max(1) - 1) * self.ldr + k2.saturating_sub(1) * self.lda;
        assert!((k2 == 0 || last < self.a.len()) && (self.ldr == 1 || self.lda == 1) && self.cols <= NR);
        #[cfg(target_arch = "x86_64")]
        if vector {
            // SAFETY: the CPU has the features (`vector_kernel`); the operands' bounds are
            // asserted above, and `c`'s by the caller.
            unsafe { if self.ldr == 1 { self.vector::<false>(rows, k2) } else { self.vector::<true>(rows, k2) } }
            return;
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = vector;
        self.portable(rows, k2)
    }

    /// The `vdpbf16ps` kernel for `rows` rows, the left operand's rows `ldr` pairs apart
    /// (`STRIDED`, read in place) or adjacent (packed).
    ///
    /// # Safety
    /// As [`x86::kernel`]'s.
    #[cfg(target_arch = "x86_64")]
    unsafe fn vector<const STRIDED: bool>(&self, rows: usize, k2: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match rows {
                1 => x86::kernel::<1, STRIDED>(self, k2),
                2 => x86::kernel::<2, STRIDED>(self, k2),
                3 => x86::kernel::<3, STRIDED>(self, k2),
                4 => x86::kernel::<4, STRIDED>(self, k2),
                5 => x86::kernel::<5, STRIDED>(self, k2),
                _ => x86::kernel::<MR, STRIDED>(self, k2),
            }
        }
    }

    /// The kernel's arithmetic in plain code (each pair's two products added to the lane in
    /// turn): what the tests check the packing and blocking with on CPUs without AVX512-BF16.
    fn portable(&self, rows: usize, k2: usize) {
        let half = |v: u32| f32::from_bits((v & 0xffff) << 16);
        for r in 0..rows {
            for c in 0..self.cols {
                let mut acc = 0.0f32;
                for p in 0..k2 {
                    let (a, b) = (self.a[p * self.lda + (self.row + r) * self.ldr], self.b[p * NR + c]);
                    acc += half(a) * half(b);
                    acc += half(a >> 16) * half(b >> 16);
                }
                // SAFETY: within the block's rows and columns (see `Block`).
                unsafe {
                    let d = if self.transposed { self.c.add(c * self.ldc + r) } else { self.c.add(r * self.ldc + c) };
                    *d = if self.accumulate { *d + acc } else { acc };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;
