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
    /// Weights a later tile will read, fetched into L2 while this one runs, at a quarter of
    /// the rate this tile reads its own (so four tiles fetch a group's); null for none. Where
    /// a band of tiles passes over each group's weights, the first tile of the next group
    /// would otherwise wait for memory on every line (~105 MB of weights once per image).
    pub next: *const f32,
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

/// One multiply-add step of the tile: input channel `u` (of a group of four) from the pixel at
/// `addr`, broadcast into `zmm{bc}` and multiplied with the step's two weight vectors (zmm28,
/// zmm29) into accumulators `acc0` and `acc1`.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
macro_rules! pixel {
    ($u:literal, $addr:literal, $bc:literal, $acc0:literal, $acc1:literal) => {
        concat!(
            "vbroadcastss zmm", $bc, ", dword ptr [", $addr, " + ", $u, " * 4]\n",
            "vfmadd231ps zmm", $acc0, ", zmm", $bc, ", zmm28\n",
            "vfmadd231ps zmm", $acc1, ", zmm", $bc, ", zmm29\n",
        )
    };
}

/// The start of input channel `u` (of a group of four): its two weight vectors into zmm28 and
/// zmm29, and the first 7 pixels of a row, `{s}` bytes apart from `{p0}`, addressed as a base
/// (`{p0}`, `{p3}`, `{p6}`: pixels 0, 3, 6) plus `s`, `2s` or `4s`.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
macro_rules! first_seven {
    ($u:literal) => {
        concat!(
            "vmovups zmm28, [{w} + ", $u, " * 128]\n",
            "vmovups zmm29, [{w} + ", $u, " * 128 + 64]\n",
            pixel!($u, "{p0}", 30, 0, 1),
            pixel!($u, "{p0} + {s}", 31, 2, 3),
            pixel!($u, "{p0} + {s} * 2", 30, 4, 5),
            pixel!($u, "{p3}", 31, 6, 7),
            pixel!($u, "{p0} + {s} * 4", 30, 8, 9),
            pixel!($u, "{p3} + {s} * 2", 31, 10, 11),
            pixel!($u, "{p6}", 30, 12, 13),
        )
    };
}

/// Input channel `u` of a group of four for 14 pixels of one row: [`first_seven`], then pixels
/// 7 to 13 from the bases `{p6}`, `{p0}` (8s), `{p9}` and `{p12}`.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
macro_rules! step_row {
    ($u:literal) => {
        concat!(
            first_seven!($u),
            pixel!($u, "{p6} + {s}", 31, 14, 15),
            pixel!($u, "{p0} + {s} * 8", 30, 16, 17),
            pixel!($u, "{p9}", 31, 18, 19),
            pixel!($u, "{p9} + {s}", 30, 20, 21),
            pixel!($u, "{p9} + {s} * 2", 31, 22, 23),
            pixel!($u, "{p12}", 30, 24, 25),
            pixel!($u, "{p12} + {s}", 31, 26, 27),
        )
    };
}

/// As [`step_row`] for 7 pixels of each of two rows: [`first_seven`] for the first, the same
/// pattern from `{p9}` (bases `{p9}`, `{p12}`, `{p15}`) for the second.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
macro_rules! step_two_rows {
    ($u:literal) => {
        concat!(
            first_seven!($u),
            pixel!($u, "{p9}", 31, 14, 15),
            pixel!($u, "{p9} + {s}", 30, 16, 17),
            pixel!($u, "{p9} + {s} * 2", 31, 18, 19),
            pixel!($u, "{p12}", 30, 20, 21),
            pixel!($u, "{p9} + {s} * 4", 31, 22, 23),
            pixel!($u, "{p12} + {s} * 2", 30, 24, 25),
            pixel!($u, "{p15}", 31, 26, 27),
        )
    };
}

/// How far ahead of the multiply-adds the weights are fetched into L2, in bytes (16 steps).
/// The hardware's streamer stops at every 4 KiB page, and a layer's first tiles read their
/// weights from memory (ResNet-50's ~105 MB of them once per batch). `bench --child`, AMX Xeon,
/// medians of 5-8 alternating runs: one image on one thread 84.2 -> 75.6 ms, on two 54.9 ->
/// 49.5, 16 images on two 528 -> 506 ms (4 KiB: 51.5 and 496).
const WEIGHT_PREFETCH_BYTES: usize = 2048;

/// The multiply-add loop of one tap in assembly: `$step` over `{n4}` groups of four input
/// channels, then `{n1}` single ones, advancing the weights and every pixel base, the weights
/// [`WEIGHT_PREFETCH_BYTES`] ahead fetched into L2 on the way, and two lines of `{next}` (see
/// [`Tile::next`]) every four steps.
///
/// Why assembly: from the same loop in intrinsics LLVM computes each of the 14 pixels' addresses
/// with an integer add of its own every step (17 integer operations beside 28 multiply-adds,
/// some of them issued on the two ports the multiply-adds need); here the addresses are bases
/// plus scaled strides and the bases move once per four steps. A stand-alone loop over data in
/// L1 on the AMX Xeon: 155-163 GFLOP/s in intrinsics, 170-179 so (of 210 at peak).
#[cfg(target_arch = "x86_64")]
macro_rules! tap_loop {
    ($step:ident, $acc:ident, $w:ident, $next:ident, $n4:expr, $n1:expr, $s:expr, [$($base:ident = $at:expr),*]) => {{
        std::arch::asm!(
            "test {n4}, {n4}",
            "jz 3f",
            "2:",
            "prefetcht1 [{w} + {pf}]", "prefetcht1 [{w} + {pf} + 64]", "prefetcht1 [{w} + {pf} + 128]", "prefetcht1 [{w} + {pf} + 192]",
            $step!(0), $step!(1),
            "prefetcht1 [{w} + {pf} + 256]", "prefetcht1 [{w} + {pf} + 320]", "prefetcht1 [{w} + {pf} + 384]", "prefetcht1 [{w} + {pf} + 448]",
            $step!(2), "prefetcht1 [{next}]",
            $step!(3), "prefetcht1 [{next} + 64]",
            "add {w}, 512",
            "add {next}, 128",
            $(concat!("add {", stringify!($base), "}, 16"),)*
            "dec {n4}",
            "jnz 2b",
            "3:",
            "test {n1}, {n1}",
            "jz 5f",
            "4:",
            $step!(0),
            "add {w}, 128",
            $(concat!("add {", stringify!($base), "}, 4"),)*
            "dec {n1}",
            "jnz 4b",
            "5:",
            w = inout(reg) $w,
            next = inout(reg) $next,
            n4 = inout(reg) $n4 => _,
            n1 = inout(reg) $n1 => _,
            s = in(reg) $s,
            pf = const WEIGHT_PREFETCH_BYTES,
            $($base = inout(reg) $at => _,)*
            inout("zmm0") $acc[0][0], inout("zmm1") $acc[0][1],
            inout("zmm2") $acc[1][0], inout("zmm3") $acc[1][1],
            inout("zmm4") $acc[2][0], inout("zmm5") $acc[2][1],
            inout("zmm6") $acc[3][0], inout("zmm7") $acc[3][1],
            inout("zmm8") $acc[4][0], inout("zmm9") $acc[4][1],
            inout("zmm10") $acc[5][0], inout("zmm11") $acc[5][1],
            inout("zmm12") $acc[6][0], inout("zmm13") $acc[6][1],
            inout("zmm14") $acc[7][0], inout("zmm15") $acc[7][1],
            inout("zmm16") $acc[8][0], inout("zmm17") $acc[8][1],
            inout("zmm18") $acc[9][0], inout("zmm19") $acc[9][1],
            inout("zmm20") $acc[10][0], inout("zmm21") $acc[10][1],
            inout("zmm22") $acc[11][0], inout("zmm23") $acc[11][1],
            inout("zmm24") $acc[12][0], inout("zmm25") $acc[12][1],
            inout("zmm26") $acc[13][0], inout("zmm27") $acc[13][1],
            out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
            options(nostack, readonly),
        );
    }};
}

/// Runs one tile of 14 pixels, `PR` from each of `14 / PR` output rows (two rows of 7 on a 7 x 7
/// map, where one would leave half the registers idle and read every weight twice as often).
/// A function of its own (not inlined into [`run`]'s loop), so that the accumulators stay in
/// registers from tap to tap and into the epilogue.
///
/// # Safety
/// The CPU has AVX-512 F; every address the tile names is inside its buffer for all 14 pixels
/// (buffers carry slack past their end, see `Map`), and no other thread writes `out`'s pixels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline(never)]
// Indexed loops of constant length, so that every accumulator stays a register.
#[allow(clippy::needless_range_loop)]
pub(super) unsafe fn tile<const PR: usize>(t: &Tile) {
    const R: usize = 14;
    unsafe {
        let out = t.out;
        let out_at = |r: usize| (r / PR) * t.out_row + (r % PR) * t.out_step;
        let valid = |r: usize| r % PR < t.valid_cols && r / PR < t.valid_rows;
        let mut acc = [[_mm512_setzero_ps(); J]; R];
        let taps = std::slice::from_raw_parts(t.taps, t.tap_n);
        let mut w = t.w;
        // Without a later tile's weights, its own (in L1 by then): an idle fetch.
        let mut next = if t.next.is_null() { t.w } else { t.next };
        let s = t.x_step * 4;
        for &off in taps {
            let p = t.x.wrapping_add(off);
            let (n4, n1) = (t.c_in / 4, t.c_in % 4);
            let a = |r: usize| p.wrapping_add(r * t.x_step);
            if PR == 14 {
                tap_loop!(step_row, acc, w, next, n4, n1, s, [p0 = a(0), p3 = a(3), p6 = a(6), p9 = a(9), p12 = a(12)]);
            } else {
                let b = |r: usize| p.wrapping_add(t.x_row + r * t.x_step);
                tap_loop!(
                    step_two_rows,
                    acc,
                    w,
                    next,
                    n4,
                    n1,
                    s,
                    [p0 = a(0), p3 = a(3), p6 = a(6), p9 = b(0), p12 = b(3), p15 = b(6)]
                );
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
                    tile::<14>(t)
                }
            }
            7 => {
                for t in tiles {
                    tile::<7>(t)
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
