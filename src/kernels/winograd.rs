//! Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016) for the 3x3, stride-1, padding-1 convolutions of evaluation.
//!
//! A 2x2 block of outputs needs a 4x4 block of inputs. Transformed (`V = Bᵀ d B`, `U = G g Gᵀ`),
//! the 36 multiplications of the direct method become 16 element-wise ones, `M = U ⊙ V`, and
//! `Y = Aᵀ M A` gives the 2x2 outputs back. Summed over input channels, each of the 16 points
//! is a matrix product, `M_ξ (Cout x tiles) = U_ξ (Cout x C) V_ξ (C x tiles)`: 2.25 times fewer
//! multiply-adds than the direct product on the same `gemm`. The transforms add and halve only
//! (entries 0, ±1, ±½), so the rounding error stays within a few units of the last place of the
//! direct method's (measured in the tests below and in `tests/parity.rs`).
//!
//! Training keeps the direct method, the one its gradients are checked against (PyTorch in f64,
//! the definition in the unit tests). No crate offers this on candle tensors (candle's own CPU
//! convolution is im2col + gemm), hence this file. F(4x4, 3x3) was tried as well (36 points for
//! 16 outputs, branch `wip-winograd-f4`): 0-8 % faster than this on 56x56 and 28x28 maps,
//! slower on smaller ones, 3x the rounding error; see BENCHMARKS.md.
use super::conv::{ConvGeom, SharedOut};
use super::{Float, MatRef, matmul};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Transformed points per tile (a 4x4 input block).
pub const POINTS: usize = 16;
/// Working-set target of one band of tiles (the transformed inputs and products together).
const BAND_BYTES: usize = 4 << 20;
/// Fewer tiles than this per band make the 16 matrix products inefficient.
const MIN_BAND_TILES: usize = 128;
/// Tile rows per image from which fewer images than threads share each image's tile rows
/// rather than its output channels (see [`forward`]): 28 x 28 maps and larger. (`bench
/// --child forward1 --reps 30`, five alternating rounds: median 43.5 ms with no map shared,
/// 42.1 from 28 x 28, 42.5 from 56 x 56 only; from 14 x 14 it was slower again. Measured on
/// two threads only: on many, each task's rows shrink to one or two tile rows.)
const MIN_SHARED_TILE_ROWS: usize = 14;

/// Whether F(2x2, 3x3) computes this convolution.
pub fn applies(g: &ConvGeom) -> bool {
    applies_to(g.k, g.stride, g.pad)
}

/// Whether F(2x2, 3x3) computes a convolution of this kernel size, stride and padding.
pub fn applies_to(k: usize, stride: usize, pad: usize) -> bool {
    k == 3 && stride == 1 && pad == 1 && enabled()
}

/// `ARTCULTURE_CONV=direct` turns this method off (to compare the two, or to rule it out when a
/// result looks wrong). Read once.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("ARTCULTURE_CONV").map_or(true, |v| !v.eq_ignore_ascii_case("direct")))
}

/// `G g Gᵀ` for each (output, input) channel pair: `Cout x 16 x C`, so that each output
/// channel's block is written by one task and each point's matrix `U_ξ` is a `Cout x C` view
/// (row stride `16 C`).
pub fn transform_weights<T: Float>(c_out: usize, c_in: usize, w: &[T]) -> Vec<T> {
    assert_eq!(w.len(), c_out * c_in * 9, "winograd: weight is not Cout x C x 3 x 3");
    let half = T::one() / (T::one() + T::one());
    // G applied to a 3-vector: [a0, (a0 + a1 + a2) / 2, (a0 - a1 + a2) / 2, a2].
    let g3 = |a: [T; 3]| [a[0], (a[0] + a[1] + a[2]) * half, (a[0] - a[1] + a[2]) * half, a[2]];
    let mut u = vec![T::zero(); c_out * POINTS * c_in];
    if c_in == 0 {
        return u;
    }
    u.par_chunks_mut(POINTS * c_in).zip(w.par_chunks(9 * c_in)).for_each(|(u, w)| {
        for (c, g) in w.chunks_exact(9).enumerate() {
            // Columns first (G g), then rows ((G g) Gᵀ).
            let cols: [[T; 4]; 3] = std::array::from_fn(|j| g3([g[j], g[3 + j], g[6 + j]]));
            for i in 0..4 {
                let row = g3([cols[0][i], cols[1][i], cols[2][i]]);
                for (j, v) in row.into_iter().enumerate() {
                    u[(i * 4 + j) * c_in + c] = v;
                }
            }
        }
    });
    u
}

/// `Bᵀ d` for a 4-vector: [d0 - d2, d1 + d2, d2 - d1, d1 - d3].
#[inline(always)]
fn b4<T: Float>(d: [T; 4]) -> [T; 4] {
    [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
}

/// `Aᵀ m` for a 4-vector: [m0 + m1 + m2, m1 - m2 - m3].
#[inline(always)]
fn a4<T: Float>(m: [T; 4]) -> [T; 2] {
    [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
}

/// The convolution of `x` (`N x C x H x W`) into `y` (`N x Cout x OH x OW`), every element
/// written, then `finish(image, first channel, its block of channels)` on each finished block.
/// `u`: [`transform_weights`] of the whole weight.
///
/// With at least as many images as threads, each image is one task. With fewer, an image of
/// [`MIN_SHARED_TILE_ROWS`] tile rows or more is shared by its tile rows: each thread transforms,
/// multiplies and transforms back every channel of its own rows, where sharing the output
/// channels had both threads wait on one input transform and halved each product's rows (the
/// 64 x 56 x 56 layer at batch 1 ran slower on two threads than on one). Smaller maps, image by
/// image, split the input transform between the threads by channel and the products and output
/// transform by output channel: their few tiles would leave each thread's products too short.
pub fn forward<T: Float>(
    g: &ConvGeom,
    x: &[T],
    u: &[T],
    y: &mut [MaybeUninit<T>],
    finish: impl Fn(usize, usize, &mut [T]) + Sync,
) {
    // The tiles cover the output only for this geometry, and `assume_init` below relies on it.
    assert!(
        g.k == 3 && g.stride == 1 && g.pad == 1 && u.len() == g.c_out * POINTS * g.c_in,
        "winograd: {g:?} with {} transformed weight values",
        u.len()
    );
    let (p, img, img_out) = (g.oh * g.ow, g.c_in * g.h * g.w, g.c_out * g.oh * g.ow);
    // SAFETY (both `assume_init` below): the bands cover every tile row, and
    // `transform_output` writes every output of a band's rows for its channels.
    let assume_init = |y: &mut [MaybeUninit<T>]| unsafe { &mut *(y as *mut [MaybeUninit<T>] as *mut [T]) };
    let threads = rayon::current_num_threads();
    if g.n >= threads || threads == 1 {
        y.par_chunks_mut(img_out).enumerate().for_each(|(b, yb)| {
            let xb = &x[b * img..][..img];
            T::with_scratch(|scratch| {
                for (ty0, band_th) in bands::<T>(g, g.c_out, 0..g.oh.div_ceil(2)) {
                    let tiles = band_th * g.ow.div_ceil(2);
                    scratch.resize(POINTS * (g.c_in + g.c_out) * tiles, T::zero());
                    let (v, m) = scratch.split_at_mut(POINTS * g.c_in * tiles);
                    transform_input(g, xb, ty0, band_th, v, false);
                    products_and_output(g, u, v, m, 0, g.c_out, ty0, band_th, SharedOut(yb.as_mut_ptr()));
                }
            });
            finish(b, 0, assume_init(yb));
        });
        return;
    }
    let block = g.c_out.div_ceil(threads);
    let th = g.oh.div_ceil(2);
    if th >= MIN_SHARED_TILE_ROWS {
        let parts = threads.div_ceil(g.n);
        let per = th.div_ceil(parts);
        let tasks: Vec<(usize, Range<usize>)> =
            (0..g.n).flat_map(|b| (0..th).step_by(per).map(move |t0| (b, t0..(t0 + per).min(th)))).collect();
        let out = SharedOut(y.as_mut_ptr());
        tasks.into_par_iter().for_each(|(b, tile_rows)| {
            let xb = &x[b * img..][..img];
            // SAFETY: image `b`'s planes lie in `y`; the tasks of one image write disjoint
            // tile rows (so output rows) of them, and none reads them.
            let yb = SharedOut(unsafe { out.at(b * img_out) });
            T::with_scratch(|scratch| {
                for (ty0, band_th) in bands::<T>(g, g.c_out, tile_rows.clone()) {
                    let tiles = band_th * g.ow.div_ceil(2);
                    scratch.resize(POINTS * (g.c_in + g.c_out) * tiles, T::zero());
                    let (v, m) = scratch.split_at_mut(POINTS * g.c_in * tiles);
                    transform_input(g, xb, ty0, band_th, v, false);
                    products_and_output(g, u, v, m, 0, g.c_out, ty0, band_th, yb);
                }
            });
        });
        y.par_chunks_mut(img_out).enumerate().for_each(|(b, yb)| {
            yb.par_chunks_mut(block * p).enumerate().for_each(|(j, yc)| finish(b, j * block, assume_init(yc)))
        });
        return;
    }
    T::with_scratch(|v| {
        for (b, yb) in y.chunks_mut(img_out).enumerate() {
            let xb = &x[b * img..][..img];
            for (ty0, band_th) in bands::<T>(g, block, 0..g.oh.div_ceil(2)) {
                let tiles = band_th * g.ow.div_ceil(2);
                v.resize(POINTS * g.c_in * tiles, T::zero());
                transform_input(g, xb, ty0, band_th, v, true);
                let v = &*v;
                yb.par_chunks_mut(block * p).enumerate().for_each(|(j, yc)| {
                    let rows = yc.len() / p;
                    T::with_scratch(|m| {
                        m.resize(POINTS * rows * tiles, T::zero());
                        products_and_output(g, u, v, m, j * block, rows, ty0, band_th, SharedOut(yc.as_mut_ptr()));
                    })
                });
            }
            yb.par_chunks_mut(block * p).enumerate().for_each(|(j, yc)| finish(b, j * block, assume_init(yc)));
        }
    });
}

/// The bands of tile rows `tile_rows`, as `(first tile row, tile rows)`, for blocks of `rows`
/// output channels.
fn bands<T>(g: &ConvGeom, rows: usize, tile_rows: Range<usize>) -> impl Iterator<Item = (usize, usize)> {
    let tw = g.ow.div_ceil(2);
    let end = tile_rows.end;
    let tile_bytes = POINTS * (g.c_in + rows) * std::mem::size_of::<T>();
    let band_rows =
        (BAND_BYTES / (tile_bytes * tw).max(1)).max(MIN_BAND_TILES.div_ceil(tw)).clamp(1, tile_rows.len().max(1));
    tile_rows.step_by(band_rows).map(move |ty0| (ty0, band_rows.min(end - ty0)))
}

/// The output planes a band's output transform writes into, shared by the tasks that each
/// write their own rows of every plane.
type Planes<T> = SharedOut<MaybeUninit<T>>;

/// The 16 products `M_ξ = U_ξ V_ξ` for output channels `m0 .. m0 + rows` (into `m`), then their
/// output transform into the band's rows of `y` (those channels' planes).
#[allow(clippy::too_many_arguments)]
fn products_and_output<T: Float>(
    g: &ConvGeom,
    u: &[T],
    v: &[T],
    m: &mut [T],
    m0: usize,
    rows: usize,
    ty0: usize,
    band_th: usize,
    y: Planes<T>,
) {
    let tiles = band_th * g.ow.div_ceil(2);
    for p in 0..POINTS {
        let lhs = MatRef::new(&u[(m0 * POINTS + p) * g.c_in..], rows, g.c_in, POINTS * g.c_in, 1);
        let rhs = MatRef::new(&v[p * tiles..], g.c_in, tiles, POINTS * tiles, 1);
        matmul(&mut m[p * rows * tiles..][..rows * tiles], tiles, false, lhs, rhs, gemm::Parallelism::None);
    }
    transform_output(g, m, rows, ty0, band_th, y);
}

/// `V_ξ[c][t]` for the tiles of tile rows `ty0 .. ty0 + band_th`: `C x 16 x tiles`, each
/// channel's block written by one task (split between the threads with `parallel`).
fn transform_input<T: Float>(g: &ConvGeom, x: &[T], ty0: usize, band_th: usize, v: &mut [T], parallel: bool) {
    let tiles = band_th * g.ow.div_ceil(2);
    let chunks = v.par_chunks_mut(POINTS * tiles).with_min_len(if parallel { 1 } else { g.c_in.max(1) });
    chunks.enumerate().for_each_init(
        || InputRows::new(g, band_th),
        |rows, (c, vc)| rows.transform(g, &x[c * g.h * g.w..][..g.h * g.w], ty0, band_th, vc),
    );
}

/// One channel's input rows of a band, zero-padded, and its transformed rows split into even and
/// odd columns.
struct InputRows<T> {
    rows: Vec<T>,
    even: Vec<T>,
    odd: Vec<T>,
}

impl<T: Float> InputRows<T> {
    fn new(g: &ConvGeom, band_th: usize) -> Self {
        let tw = g.ow.div_ceil(2);
        // Input columns -1 .. 2 tw + 1 of rows 2 ty0 - 1 .. 2 (ty0 + band_th) + 1.
        let rows = vec![T::zero(); (2 * band_th + 2) * (2 * tw + 2)];
        Self { rows, even: vec![T::zero(); 4 * (tw + 1)], odd: vec![T::zero(); 4 * (tw + 1)] }
    }

    /// `V[ξ][t]` of one channel (`plane`: `H x W`) into `v` (`16 x tiles`).
    fn transform(&mut self, g: &ConvGeom, plane: &[T], ty0: usize, band_th: usize, v: &mut [T]) {
        let tw = g.ow.div_ceil(2);
        let tiles = band_th * tw;
        // Tile tx reads padded columns 2 tx .. 2 tx + 4.
        let width = 2 * tw + 2;
        // Bᵀ d for the four rows of a band row, each split into even and odd columns, so that
        // tile tx reads `even[tx]`, `odd[tx]`, `even[tx + 1]`, `odd[tx + 1]`: contiguous loads
        // the compiler vectorises.
        let half = tw + 1;
        let Self { rows, even, odd } = self;
        super::isa::with_isa(
            #[inline(always)]
            || {
                for (k, row) in rows.chunks_exact_mut(width).enumerate() {
                    let iy = (2 * ty0 + k) as isize - 1;
                    if (0..g.h as isize).contains(&iy) {
                        row[1..1 + g.w].copy_from_slice(&plane[iy as usize * g.w..][..g.w]);
                    } else {
                        row.fill(T::zero());
                    }
                }
                for ty in 0..band_th {
                    let rows = &rows[2 * ty * width..][..4 * width];
                    let (r0, rest) = rows.split_at(width);
                    let (r1, rest) = rest.split_at(width);
                    let (r2, r3) = rest.split_at(width);
                    let cols =
                        r0.chunks_exact(2).zip(r1.chunks_exact(2)).zip(r2.chunks_exact(2).zip(r3.chunks_exact(2)));
                    for (t, ((a, b), (c, d))) in cols.enumerate() {
                        let e = b4([a[0], b[0], c[0], d[0]]);
                        let o = b4([a[1], b[1], c[1], d[1]]);
                        for i in 0..4 {
                            even[i * half + t] = e[i];
                            odd[i * half + t] = o[i];
                        }
                    }
                    for i in 0..4 {
                        // Row i of (Bᵀ d) B, tile by tile: its four columns j.
                        let (ev, od) = (&even[i * half..][..half], &odd[i * half..][..half]);
                        let (e0, e1, o0, o1) = (&ev[..tw], &ev[1..], &od[..tw], &od[1..]);
                        let at = |j: usize| (i * 4 + j) * tiles + ty * tw;
                        let sub = |d: &mut [T], a: &[T], b: &[T]| {
                            d.iter_mut().zip(a.iter().zip(b)).for_each(|(d, (a, b))| *d = *a - *b)
                        };
                        sub(&mut v[at(0)..][..tw], e0, e1);
                        v[at(1)..][..tw].iter_mut().zip(o0.iter().zip(e1)).for_each(|(d, (a, b))| *d = *a + *b);
                        sub(&mut v[at(2)..][..tw], e1, o0);
                        sub(&mut v[at(3)..][..tw], o0, o1);
                    }
                }
            },
        )
    }
}

/// `Y = Aᵀ M A` for every tile of the band, into output rows `2 ty0 ..` of `y`.
fn transform_output<T: Float>(g: &ConvGeom, m: &[T], rows: usize, ty0: usize, band_th: usize, y: Planes<T>) {
    let tw = g.ow.div_ceil(2);
    let tiles = band_th * tw;
    let (oh, ow) = (g.oh, g.ow);
    // The four outputs of every tile of the band, by (row b, column a), before they are
    // interleaved into the output rows.
    let mut out = vec![T::zero(); 4 * tiles];
    super::isa::with_isa(
        #[inline(always)]
        || {
            for o in 0..rows {
                let m: [&[T]; POINTS] = std::array::from_fn(|p| &m[(p * rows + o) * tiles..][..tiles]);
                let (y00, rest) = out.split_at_mut(tiles);
                let (y01, rest) = rest.split_at_mut(tiles);
                let (y10, y11) = rest.split_at_mut(tiles);
                for t in 0..tiles {
                    // Aᵀ along each row of the 4x4 block, then down the two columns.
                    let h: [[T; 2]; 4] =
                        std::array::from_fn(|i| a4([m[i * 4][t], m[i * 4 + 1][t], m[i * 4 + 2][t], m[i * 4 + 3][t]]));
                    [y00[t], y10[t]] = a4([h[0][0], h[1][0], h[2][0], h[3][0]]);
                    [y01[t], y11[t]] = a4([h[0][1], h[1][1], h[2][1], h[3][1]]);
                }
                for ty in 0..band_th {
                    for (b, (left, right)) in [(&*y00, &*y01), (&*y10, &*y11)].into_iter().enumerate() {
                        let oy = 2 * (ty0 + ty) + b;
                        if oy >= oh {
                            continue;
                        }
                        let (left, right) = (&left[ty * tw..][..tw], &right[ty * tw..][..tw]);
                        // SAFETY: the caller's `y` holds `rows` planes and this band's
                        // output rows of them are written by this call alone.
                        let row = unsafe { std::slice::from_raw_parts_mut(y.at(o * oh * ow + oy * ow), ow) };
                        let mut pairs = row.chunks_exact_mut(2);
                        for (pair, (l, r)) in (&mut pairs).zip(left.iter().zip(right)) {
                            pair[0] = MaybeUninit::new(*l);
                            pair[1] = MaybeUninit::new(*r);
                        }
                        // An odd width: the last tile's left column only.
                        if let [last] = pairs.into_remainder() {
                            *last = MaybeUninit::new(left[tw - 1]);
                        }
                    }
                }
            }
        },
    )
}
