//! The register tile of the blocked convolution: `R` output pixels of one row by `J` blocks of
//! 16 output channels, accumulated in `R * J` AVX-512 registers over every input channel and
//! kernel tap, then biased, added to the residual, rectified and stored once.
//!
//! Per input channel the tile loads `J` weight vectors (16 output channels each) and broadcasts
//! one input value per pixel: `R + J` loads for `R * J` fused multiply-adds. With `R = 14` and
//! `J = 2` that is 28 accumulators + 2 weights + 1 broadcast of the 32 registers, the largest
//! tile that fits (oneDNN's and MLAS's NCHWc kernels make the same choice for AVX-512). No crate
//! offers this on stable Rust: `gemm` multiplies packed matrices, which is what the blocked
//! layout exists to avoid.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per block of the blocked layout (one AVX-512 register of f32).
pub const LANES: usize = 16;
/// Output-channel blocks per tile (the tile below is written for two).
pub const J: usize = 2;

/// Where one tile reads and writes.
pub(super) struct Tile {
    /// The input at the first tap of the tile's first pixel.
    pub x: *const f32,
    /// Floats between two pixels of a tile's row in the input, and between the input rows of
    /// two output rows.
    pub x_step: usize,
    pub x_row: usize,
    /// Values summed per tap, contiguous from each pixel's start (a pixel's channels, or those of
    /// the pixels a kernel row covers).
    pub c_in: usize,
    /// Each kernel tap's offset from `x`, in floats.
    pub taps: *const usize,
    pub tap_n: usize,
    /// The packed weights of this tile's output channels: `[tap][c_in][J * 16]`.
    pub w: *const f32,
    /// `J * 16` biases.
    pub bias: *const f32,
    /// The output at the tile's first pixel and first channel.
    pub out: *mut f32,
    /// Floats between two pixels of a row in the output, and between two output rows.
    pub out_step: usize,
    pub out_row: usize,
    /// Pixels of each of the tile's rows, and rows, to store (the others were computed from
    /// the map's border or past its end, and are dropped).
    pub valid_cols: usize,
    pub valid_rows: usize,
    /// Whether `out` already holds the residual to add.
    pub residual: bool,
    pub relu: bool,
}

/// Runs one tile of `R` pixels, `PR` from each of `R / PR` output rows (two rows of 7 on a 7 x 7
/// map, where one would leave half the registers idle and read every weight twice as often).
/// A function of its own (not inlined into [`run`]'s loop): inlined
/// there, LLVM kept the accumulators in a stack array and stored each one after every
/// multiply-add (58 GFLOP/s on one core against 135 so).
///
/// # Safety
/// The CPU has AVX-512 F; every address the tile names is inside its buffer for all `R` pixels
/// (buffers carry slack past their end, see `Map`), and no other thread writes `out`'s pixels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline(never)]
// Indexed loops: see the comment on `acc`.
#[allow(clippy::needless_range_loop)]
pub(super) unsafe fn tile<const R: usize, const PR: usize>(t: &Tile) {
    unsafe {
        let (x, c_in, w, out) = (t.x, t.c_in, t.w, t.out);
        let x_at = |r: usize| (r / PR) * t.x_row + (r % PR) * t.x_step;
        let out_at = |r: usize| (r / PR) * t.out_row + (r % PR) * t.out_step;
        let valid = |r: usize| r % PR < t.valid_cols && r / PR < t.valid_rows;
        // Indexed loops of constant length only, so that every accumulator can be a register.
        let mut acc = [[_mm512_setzero_ps(); J]; R];
        let taps = std::slice::from_raw_parts(t.taps, t.tap_n);
        let mut w = w;
        for &off in taps {
            let xt = x.add(off);
            for ic in 0..c_in {
                let w0 = _mm512_loadu_ps(w);
                let w1 = _mm512_loadu_ps(w.add(LANES));
                w = w.add(J * LANES);
                for r in 0..R {
                    let b = _mm512_set1_ps(*xt.add(x_at(r) + ic));
                    acc[r][0] = _mm512_fmadd_ps(b, w0, acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(b, w1, acc[r][1]);
                }
            }
        }
        let bias = [_mm512_loadu_ps(t.bias), _mm512_loadu_ps(t.bias.add(LANES))];
        for r in 0..R {
            if valid(r) {
                for j in 0..J {
                    let o = out.add(out_at(r) + j * LANES);
                    let mut v = _mm512_add_ps(acc[r][j], bias[j]);
                    if t.residual {
                        v = _mm512_add_ps(v, _mm512_loadu_ps(o));
                    }
                    if t.relu {
                        v = _mm512_max_ps(v, _mm512_setzero_ps());
                    }
                    _mm512_storeu_ps(o, v);
                }
            }
        }
    }
}

/// [`tile`] for a run-time choice of pixels per tile row (14, or 7 in two rows).
///
/// # Safety
/// As [`tile`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run(tiles: &[Tile], per_row: usize) {
    unsafe {
        match per_row {
            14 => {
                for t in tiles {
                    tile::<14, 14>(t)
                }
            }
            7 => {
                for t in tiles {
                    tile::<14, 7>(t)
                }
            }
            _ => unreachable!("blocked conv: no tile of {per_row} pixels a row"),
        }
    }
}

/// Never called: [`super::enabled`] is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn run(_: &[Tile], _: usize) {
    unreachable!("blocked conv: no tiles on this architecture")
}
