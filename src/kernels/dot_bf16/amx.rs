//! The products of [`super`] on AMX-BF16 tiles (Intel Xeon 4th generation, Sapphire Rapids, and
//! later): one `tdpbf16ps` multiplies a 16 x 32 bf16 tile by a 32 x 16 one into a 16 x 16 f32
//! tile, 8,192 multiply-adds where `vdpbf16ps` does 64 (`bench isa_peak`: about 3 TFLOP/s on one
//! core against 0.2 for f32 FMA). Products are exact in f32 and accumulate in f32, pair by pair
//! along `k` as the vector kernel does, so the numbers are the same kind as its.
//!
//! Layouts: the right operand's packed panels (`[k / 2][NR]` pairs, see [`super::pack_panel`])
//! are the instruction's B layout already (a tile is 16 pairs of `k` by 16 columns, read with
//! the panel's row stride); its A layout wants each row's pairs adjacent, so the left operand
//! is laid out once per product as [`TiledLhs`], 16 x 16-pair tiles, zero beyond its rows and
//! its `k`, which every panel then reads as it is.
//!
//! Why inline assembly: Rust's AMX intrinsics are unstable (`x86_amx_intrinsics`), and no
//! maintained crate offers AMX products on stable Rust. The tile registers are never allocated
//! by the compiler (no code of ours or of the standard library uses them), so the kernel keeps
//! its accumulators in them between `asm!` statements, one instruction each. Linux hands the
//! tile state to a process only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which
//! [`available`] makes once.
use super::{LhsView, NR};
use rayon::prelude::*;
use std::arch::asm;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// Rows of a tile, and pairs of `k` in one.
const T: usize = 16;
/// u32 values (pairs, or f32) in one tile.
const TILE: usize = T * T;

/// Whether the CPU has AMX-TILE and AMX-BF16 and the kernel lets this process use them.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE; and AVX512-BF16 for the vector
        // kernel the edges fall back on.
        let cpu = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 22 | 1 << 24) == (1 << 22 | 1 << 24);
        cpu && request_tile_state()
    })
}

/// Asks Linux for the tile data state (`ARCH_REQ_XCOMP_PERM`, `XFEATURE_XTILEDATA`): without it
/// the first tile instruction raises SIGILL. Process-wide, once.
fn request_tile_state() -> bool {
    #[cfg(target_os = "linux")]
    {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a system call with integer arguments; it changes no memory of ours.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// 0: not decided; 1: off; 2: on.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Whether the products run on tiles: [`available`], AVX-512 the active ISA
/// (`ARTCULTURE_ISA=avx2` turns AMX off with the rest of the AVX-512 code), and not turned off by
/// `ARTCULTURE_AMX=0` (which leaves `vdpbf16ps`, or f32 FMA where that is slower).
pub fn enabled() -> bool {
    #[cfg(test)]
    if tests::OFF_HERE.with(|off| off.get()) {
        return false;
    }
    match ENABLED.load(Ordering::Relaxed) {
        0 => {
            let off = matches!(
                std::env::var("ARTCULTURE_AMX").map(|v| v.trim().to_ascii_lowercase()).as_deref(),
                Ok("0" | "off" | "false")
            );
            let on = !off && usable();
            ENABLED.store(1 + on as u8, Ordering::Relaxed);
            on
        }
        v => v == 2 && usable(),
    }
}

fn usable() -> bool {
    crate::kernels::isa::active() == crate::kernels::isa::Isa::Avx512 && available()
}

/// Turns tiles on or off for the rest of the process (on only where usable); the tests run
/// both kernels this way. Returns whether they are on.
pub fn set_enabled(on: bool) -> bool {
    let on = on && usable();
    ENABLED.store(1 + on as u8, Ordering::Relaxed);
    on
}

/// A left operand as tiles: row tile `rt`'s `k` tile `kt` at `tiles[(rt * kts + kt) * TILE..]`,
/// row `r`'s pair `p` at `[r * T + p]` within it (the A layout, rows 64 bytes apart).
pub(super) struct TiledLhs {
    tiles: Vec<u32>,
    m: usize,
    kts: usize,
}

thread_local! {
    /// The last product's tiles, kept for the next one's (a layer's left operand is megabytes:
    /// a fresh allocation per product was a page fault per 4 KiB).
    static KEPT: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// A panel's last, partial `k` tile, zero beyond the panel's `k`.
    static TAIL: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl TiledLhs {
    /// `view`'s rows as tiles (in parallel for large operands, outside the thread pool).
    pub(super) fn new(view: &LhsView) -> Self {
        let (m, k2) = (view.m, view.k.div_ceil(2));
        let (rts, kts) = (m.div_ceil(T), k2.div_ceil(T));
        let mut tiles = KEPT.with(|k| std::mem::take(&mut *k.borrow_mut()));
        // Every value is written below (zeros beyond the rows and `k`).
        tiles.resize(rts * kts * TILE, 0);
        let per_rt = kts * TILE;
        let fill = |(rt, dst): (usize, &mut [u32])| fill_row_tile(view, rt, k2, dst);
        if per_rt > 0 {
            if super::spread(tiles.len()) {
                tiles.par_chunks_mut(per_rt).enumerate().for_each(fill);
            } else {
                tiles.chunks_mut(per_rt).enumerate().for_each(fill);
            }
        }
        Self { tiles, m, kts }
    }

    fn tile(&self, rt: usize, kt: usize) -> *const u32 {
        self.tiles[(rt * self.kts + kt) * TILE..][..TILE].as_ptr()
    }
}

impl Drop for TiledLhs {
    fn drop(&mut self) {
        let tiles = std::mem::take(&mut self.tiles);
        KEPT.with(|k| {
            let mut k = k.borrow_mut();
            if k.capacity() < tiles.capacity() {
                *k = tiles;
            }
        });
    }
}

/// Row tile `rt` of `view` (rows `16 rt..16 rt + 16`, every `k` tile) into `dst`.
fn fill_row_tile(view: &LhsView, rt: usize, k2: usize, dst: &mut [u32]) {
    let rows = T.min(view.m - rt * T);
    let first = view.row + rt * T;
    for (kt, tile) in dst.chunks_exact_mut(TILE).enumerate() {
        let pairs = T.min(k2 - kt * T);
        if view.ldr == 1 && rows == T && pairs == T {
            // Packed (`[k / 2][m]`): sixteen pairs' rows, transposed in registers.
            let src = &view.a[(kt * T) * view.lda + first..];
            assert!((T - 1) * view.lda + T <= src.len());
            // SAFETY: the CPU has AVX-512 F and BW (`available`); the reads are in bounds
            // (asserted above) and the writes are the tile's 256 values.
            unsafe { transpose_tile(src.as_ptr(), view.lda, tile.as_mut_ptr()) };
            continue;
        }
        if view.lda == 1 && rows == T && pairs == T {
            // Read in place (rows of adjacent pairs): sixteen 64-byte rows, copied as such,
            // where the tile was zeroed and then `copy_from_slice` called `memcpy` per row (the
            // weight gradients' left operands).
            let src = &view.a[first * view.ldr + kt * T..];
            assert!((T - 1) * view.ldr + T <= src.len());
            // SAFETY: the CPU has AVX-512 F (`available`); the reads are in bounds (asserted
            // above) and the writes are the tile's 256 values.
            unsafe { copy_rows(src.as_ptr(), view.ldr, tile.as_mut_ptr()) };
            continue;
        }
        tile.fill(0);
        for r in 0..rows {
            let row = &mut tile[r * T..][..pairs];
            if view.lda == 1 {
                // Read in place: the row's pairs are adjacent.
                row.copy_from_slice(&view.a[(first + r) * view.ldr + kt * T..][..pairs]);
            } else {
                for (p, v) in row.iter_mut().enumerate() {
                    *v = view.a[(first + r) * view.ldr + (kt * T + p) * view.lda];
                }
            }
        }
    }
}

/// `dst[r * 16 + p] = src[r * ld + p]` for a 16 x 16 block of u32.
///
/// # Safety
/// The CPU has AVX-512 F; `src + r * ld + p` is readable and `dst` writable for 256 values.
#[target_feature(enable = "avx512f")]
unsafe fn copy_rows(src: *const u32, ld: usize, dst: *mut u32) {
    use std::arch::x86_64::*;
    // SAFETY: see the function's contract.
    unsafe {
        for r in 0..T {
            _mm512_storeu_si512(dst.add(r * T) as *mut _, _mm512_loadu_si512(src.add(r * ld) as *const _));
        }
    }
}

/// `dst[r * 16 + p] = src[p * ld + r]` for a 16 x 16 block of u32.
///
/// # Safety
/// The CPU has AVX-512 F; `src + p * ld + r` is readable and `dst` writable for 256 values.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_tile(src: *const u32, ld: usize, dst: *mut u32) {
    use std::arch::x86_64::*;
    // SAFETY: see the function's contract.
    unsafe {
        let rows: [__m512i; 16] = std::array::from_fn(|p| _mm512_loadu_si512(src.add(p * ld) as *const _));
        super::x86::transpose_into(rows, dst, T, T);
    }
}

/// The tile configuration: palette 1, every tile 16 rows of 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

const CONFIG: Config = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = T as u8;
        t += 1;
    }
    Config(c)
};

/// Where the product of a panel goes: column `j`, row `r` of the block at `c[r * ldc + j]`, or
/// with `transposed` at `c[j * ldc + r]`; with `accumulate`, added to what is there.
pub(super) struct Out {
    pub(super) c: *mut f32,
    pub(super) ldc: usize,
    pub(super) accumulate: bool,
    pub(super) transposed: bool,
}

/// Rows `rows` of `lhs` (from a multiple of 16) times one packed panel `b` (`[k / 2][NR]`
/// pairs), the panel's first `cols` columns into `out` (row `rows.start` first). The caller has
/// bounds-checked `out` for those rows and columns.
pub(super) fn panel(lhs: &TiledLhs, rows: Range<usize>, b: &[u32], cols: usize, out: &Out) {
    let k2 = b.len() / NR;
    assert!(k2.div_ceil(T) == lhs.kts && cols <= NR, "AMX product: panel of another shape");
    assert!(rows.start.is_multiple_of(T) && rows.end <= lhs.m, "AMX product: rows {rows:?} of {}", lhs.m);
    if rows.is_empty() || cols == 0 {
        return;
    }
    // The last `k` tile reads 16 pair rows: from a zero-padded copy where the panel ends first.
    let whole = k2 / T;
    TAIL.with(|tail| {
        let mut tail = tail.borrow_mut();
        let tail_ptr = if whole < lhs.kts {
            tail.clear();
            tail.extend_from_slice(&b[whole * T * NR..]);
            tail.resize(T * NR, 0);
            tail.as_ptr()
        } else {
            std::ptr::null()
        };
        let col_tiles = cols.div_ceil(T);
        let rts = rows.start / T..rows.end.div_ceil(T);
        // SAFETY: the CPU has AMX (`enabled`, checked by the caller); the tiles read are within
        // `lhs.tiles`, `b` (whole tiles) and the tail copy; `out` as the caller checked.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
            for rt in rts.clone().step_by(2) {
                for ct in (0..col_tiles).step_by(2) {
                    let blk =
                        BlockAt { lhs, rows: rows.clone(), rt, ct, b: b.as_ptr(), whole, tail: tail_ptr, cols, out };
                    match (rts.end - rt >= 2, col_tiles - ct >= 2) {
                        (true, true) => blk.run::<2, 2>(),
                        (true, false) => blk.run::<2, 1>(),
                        (false, true) => blk.run::<1, 2>(),
                        (false, false) => blk.run::<1, 1>(),
                    }
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    })
}

/// One block of `R` x `C` tiles (at most 2 x 2): rows from row tile `rt`, columns from column
/// tile `ct` of the panel.
struct BlockAt<'a> {
    lhs: &'a TiledLhs,
    rows: Range<usize>,
    rt: usize,
    ct: usize,
    b: *const u32,
    whole: usize,
    tail: *const u32,
    cols: usize,
    out: &'a Out,
}

/// The byte stride of a panel's rows.
const B_STRIDE: usize = NR * 4;
/// The byte stride of a tile's rows (A tiles, and f32 tiles stored densely).
const A_STRIDE: usize = T * 4;

macro_rules! tile_op {
    ($op:literal, $tmm:literal, $ptr:expr, $stride:expr) => {
        asm!(concat!($op, " ", $tmm, ", [{p} + {s}*1]"), p = in(reg) $ptr, s = in(reg) $stride, options(nostack, readonly))
    };
}

/// `op` (`tilezero`, `tileloadd` or `tilestored`) on accumulator `idx` (tmm0 to tmm3), at `p`
/// with row stride `stride` bytes.
///
/// # Safety
/// Tiles configured; `p` readable (or writable) for 16 rows of 64 bytes, `stride` apart.
#[inline(always)]
unsafe fn accumulator(idx: usize, op: &str, p: *mut f32, stride: usize) {
    macro_rules! on {
        ($tmm:literal) => {
            match op {
                "tilezero" => asm!(concat!("tilezero ", $tmm), options(nostack, nomem)),
                "tileloadd" => asm!(concat!("tileloadd ", $tmm, ", [{p} + {s}*1]"), p = in(reg) p, s = in(reg) stride, options(nostack, readonly)),
                _ => asm!(concat!("tilestored [{p} + {s}*1], ", $tmm), p = in(reg) p, s = in(reg) stride, options(nostack)),
            }
        };
    }
    // SAFETY: see the function's contract.
    unsafe {
        match idx {
            0 => on!("tmm0"),
            1 => on!("tmm1"),
            2 => on!("tmm2"),
            _ => on!("tmm3"),
        }
    }
}

impl BlockAt<'_> {
    /// # Safety
    /// Tiles configured; the block's tiles in bounds (see [`panel`]).
    unsafe fn run<const R: usize, const C: usize>(&self) {
        // SAFETY: see the function's contract.
        unsafe {
            // Accumulators: tmm0 (0, 0), tmm1 (0, 1), tmm2 (1, 0), tmm3 (1, 1). A whole tile of
            // a plain output is read and written where it lies (row stride `ldc`); the others
            // go through a dense copy on the stack.
            let ldc = self.out.ldc * 4;
            for (idx, (i, j)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                if i < R && j < C {
                    match self.in_place(self.rt + i, self.ct + j) {
                        Some(d) if self.out.accumulate => accumulator(idx, "tileloadd", d, ldc),
                        _ => accumulator(idx, "tilezero", std::ptr::null_mut(), 0),
                    }
                }
            }
            for kt in 0..self.lhs.kts {
                let b = if kt < self.whole { self.b.add(kt * T * NR) } else { self.tail }.add(self.ct * T);
                tile_op!("tileloadd", "tmm4", self.lhs.tile(self.rt, kt), A_STRIDE);
                tile_op!("tileloadd", "tmm6", b, B_STRIDE);
                asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem));
                if C == 2 {
                    tile_op!("tileloadd", "tmm7", b.add(T), B_STRIDE);
                    asm!("tdpbf16ps tmm1, tmm4, tmm7", options(nostack, nomem));
                }
                if R == 2 {
                    tile_op!("tileloadd", "tmm5", self.lhs.tile(self.rt + 1, kt), A_STRIDE);
                    asm!("tdpbf16ps tmm2, tmm5, tmm6", options(nostack, nomem));
                    if C == 2 {
                        asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem));
                    }
                }
            }
            for (idx, (i, j)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                if i >= R || j >= C {
                    continue;
                }
                if let Some(d) = self.in_place(self.rt + i, self.ct + j) {
                    accumulator(idx, "tilestored", d, ldc);
                } else {
                    // Only here: zeroing it for every block was a `memset` per block.
                    let mut acc = std::mem::MaybeUninit::<[f32; TILE]>::uninit();
                    accumulator(idx, "tilestored", acc.as_mut_ptr() as *mut f32, A_STRIDE);
                    // SAFETY: the tile store wrote all of its 256 values.
                    self.write(acc.assume_init_ref(), self.rt + i, self.ct + j);
                }
            }
        }
    }

    /// Where tile (`rt`, `ct`) of the output lies, if it is whole and not transposed.
    fn in_place(&self, rt: usize, ct: usize) -> Option<*mut f32> {
        let (r0, c0) = (rt * T - self.rows.start, ct * T);
        let whole = r0 + T <= self.rows.len() && c0 + T <= self.cols;
        // SAFETY: within the output the caller checked (`whole`).
        (whole && !self.out.transposed).then(|| unsafe { self.out.c.add(r0 * self.out.ldc + c0) })
    }

    /// One accumulator tile (dense, 16 x 16) into the output: row tile `rt`, column tile `ct`.
    ///
    /// # Safety
    /// As [`Self::run`]'s.
    unsafe fn write(&self, acc: &[f32; TILE], rt: usize, ct: usize) {
        let (r0, c0) = (rt * T - self.rows.start, ct * T);
        let rows = T.min(self.rows.len() - r0);
        let cols = T.min(self.cols - c0);
        let o = self.out;
        // SAFETY: rows `r0..r0 + rows` and columns `c0..c0 + cols` are within what the caller
        // checked.
        unsafe {
            if o.transposed {
                write_transposed(acc, rows, cols, o.c.add(c0 * o.ldc + r0), o.ldc, o.accumulate);
            } else {
                for r in 0..rows {
                    let d = std::slice::from_raw_parts_mut(o.c.add((r0 + r) * o.ldc + c0), cols);
                    let src = &acc[r * T..][..cols];
                    // Element by element: fewer than 16 values, where `copy_from_slice` calls memmove.
                    d.iter_mut().zip(src).for_each(|(d, s)| *d = if o.accumulate { *d + s } else { *s });
                }
            }
        }
    }
}

/// Column `j < cols` of the dense tile `acc` (its first `rows` rows) into `d + j * ld`, added
/// to what is there with `accumulate`: one masked gather, add and store per column, where the
/// element-by-element loop was 2.7 % of a bf16 training step's samples (the input gradients'
/// products land transposed).
///
/// # Safety
/// The CPU has AVX-512F (every CPU with AMX does); `d + j * ld` is writable for `rows` values
/// for each `j < cols`; `rows, cols <= 16`.
#[target_feature(enable = "avx512f")]
unsafe fn write_transposed(acc: &[f32; TILE], rows: usize, cols: usize, d: *mut f32, ld: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    let mask: __mmask16 = ((1u32 << rows) - 1) as __mmask16;
    let rows_at = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240);
    for j in 0..cols {
        // SAFETY: the gather reads `acc[r * 16 + j]` for the masked rows, within `acc`; the
        // load and store touch `rows` values at `d + j * ld`, as the caller guarantees.
        unsafe {
            let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, rows_at, acc.as_ptr().add(j));
            let dst = d.add(j * ld);
            let v = if accumulate { _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, dst)) } else { v };
            _mm512_mask_storeu_ps(dst, mask, v);
        }
    }
}

/// Register-only tile products: four accumulators, two A and two B tiles loaded once, then
/// `iters` rounds of four `tdpbf16ps` (16 x 16 x 32 multiply-adds each). Returns a value of the
/// result, so that the loop is not removed. For `bench isa_peak`; `None` where tiles are off.
pub fn peak(iters: usize) -> Option<f32> {
    if !enabled() {
        return None;
    }
    let ones = vec![0x3f80_3f80u32; TILE];
    let mut out = [0f32; TILE];
    // SAFETY: the CPU has AMX (`enabled`); the loads read 1 KiB of `ones`, the store writes
    // `out`'s 1 KiB.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
        for idx in 0..4 {
            accumulator(idx, "tilezero", std::ptr::null_mut(), 0);
        }
        for tmm in ["tmm4", "tmm5", "tmm6", "tmm7"] {
            let p = ones.as_ptr();
            match tmm {
                "tmm4" => tile_op!("tileloadd", "tmm4", p, A_STRIDE),
                "tmm5" => tile_op!("tileloadd", "tmm5", p, A_STRIDE),
                "tmm6" => tile_op!("tileloadd", "tmm6", p, A_STRIDE),
                _ => tile_op!("tileloadd", "tmm7", p, A_STRIDE),
            }
        }
        for _ in 0..iters {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem)
            );
        }
        accumulator(0, "tilestored", out.as_mut_ptr(), A_STRIDE);
        asm!("tilerelease", options(nostack, nomem));
    }
    Some(out[0])
}

/// Multiply-adds times 2 per round of [`peak`].
pub const PEAK_FLOPS_PER_ITER: usize = 4 * T * T * 2 * T * 2;

#[cfg(test)]
mod tests {
    use super::super::{MatRef, PackedLhs, PackedRhs, matmul_into, matmul_lanes_into, matmul_packed_into};
    use super::*;
    use std::cell::Cell;
    use std::mem::MaybeUninit;

    thread_local! {
        /// Tiles off on this thread only (a product decides on the thread that calls it), so
        /// that the tests running beside these ones keep the process's choice.
        pub(super) static OFF_HERE: Cell<bool> = const { Cell::new(false) };
    }

    /// Values on the bf16 grid below 3 in magnitude, of both signs.
    fn values(len: usize, seed: usize) -> Vec<f32> {
        super::super::tests::bf16_values(len, seed)
    }

    fn bits(v: &[MaybeUninit<f32>]) -> Vec<u32> {
        // SAFETY: every element is initialised by the callers.
        v.iter().map(|v| unsafe { v.assume_init() }.to_bits()).collect()
    }

    /// `f` on tiles and on the vector kernel, their results side by side (`None` where this CPU
    /// has no tiles).
    fn both<R>(f: impl Fn() -> R) -> Option<(R, R)> {
        if !enabled() {
            return None;
        }
        let tiles = f();
        OFF_HERE.with(|off| off.set(true));
        let vector = f();
        OFF_HERE.with(|off| off.set(false));
        Some((tiles, vector))
    }

    /// Whether `got` and `want` agree to f32 accumulation's rounding of sums of `k` products of
    /// values below 3 in magnitude (the two kernels add the same exact products, but may round
    /// their partial sums at other points).
    fn close(got: &[u32], want: &[u32], k: usize) -> bool {
        let tol = 4.0 * f32::EPSILON * 9.0 * k as f32 + 1e-30;
        got.iter().zip(want).all(|(&g, &w)| g == w || (f32::from_bits(g) - f32::from_bits(w)).abs() <= tol)
    }

    #[test]
    fn tiles_give_the_vector_kernels_products_at_every_edge() {
        // Row counts around the 16- and 32-row blocks, columns around the 16- and 32-column
        // tiles and the 64-column panel, `k` around the 32-value tile (odd, one pair, ragged).
        for (m, n, k) in
            [(1, 1, 1), (15, 17, 31), (16, 64, 32), (17, 33, 33), (33, 70, 64), (48, 130, 147), (70, 64, 576)]
        {
            for accumulate in [false, true] {
                let a = values((m + 2) * k, 1);
                let b = values(k * n, 2);
                let start = values(m * (n + 3), 3);
                let run = || {
                    let lhs = PackedLhs::new(MatRef::rows(&a, m + 2, k));
                    let mut dst: Vec<_> = start.iter().map(|&v| MaybeUninit::new(v)).collect();
                    matmul_into(&mut dst, n + 3, accumulate, &lhs, 1..1 + m, MatRef::rows(&b, k, n), true, false);
                    bits(&dst)
                };
                let Some((tiles, vector)) = both(run) else { return };
                let same = tiles.iter().zip(&vector).filter(|(t, v)| t == v).count();
                eprintln!("{m} x {k} x {n}: {same} of {} the same bits", tiles.len());
                assert!(close(&tiles, &vector, k), "{m} x {k} x {n}, accumulate {accumulate}");
                // Columns beyond the product keep their values.
                for r in 0..m {
                    for c in n..n + 3 {
                        assert_eq!(tiles[r * (n + 3) + c], start[r * (n + 3) + c].to_bits());
                    }
                }
            }
        }
    }

    #[test]
    fn tiles_land_transposed_and_stacked_as_the_vector_kernels_do() {
        for (m, n, k, cols) in [(49, 128, 37, 64..128), (196, 130, 64, 0..130), (13, 200, 2, 128..200)] {
            let (a, b) = (values(k * m, 6), values(n * k, 7));
            let run = || {
                let (a, b) = (MatRef::transposed(&a, m, k), MatRef::transposed(&b, k, n));
                let mut dst = vec![MaybeUninit::new(f32::NAN); cols.len() * (m + 3)];
                matmul_lanes_into(&mut dst, m + 3, &PackedLhs::new(a), &PackedRhs::new(b), cols.clone());
                bits(&dst)
            };
            let Some((tiles, vector)) = both(run) else { return };
            assert!(close(&tiles, &vector, k), "lanes {m} x {k} x {n}");
        }
        let (m, n, ks) = (21, 70, [49usize, 50, 3]);
        let a: Vec<Vec<f32>> = ks.iter().enumerate().map(|(i, &k)| values(m * k, i)).collect();
        let b: Vec<Vec<f32>> = ks.iter().enumerate().map(|(i, &k)| values(n * k, 9 + i)).collect();
        let run = || {
            let ap: Vec<_> = a.iter().zip(ks).map(|(a, k)| MatRef::rows(a, m, k)).collect();
            let bp: Vec<_> = b.iter().zip(ks).map(|(b, k)| MatRef::transposed(b, k, n)).collect();
            let mut dst = vec![MaybeUninit::new(0.5f32); m * n];
            matmul_packed_into(&mut dst, n, true, &PackedLhs::stacked(&ap), &PackedRhs::stacked(&bp), true);
            bits(&dst)
        };
        if let Some((tiles, vector)) = both(run) {
            assert!(close(&tiles, &vector, 102), "stacked");
        }
    }
}
