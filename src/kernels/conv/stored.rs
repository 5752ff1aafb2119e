//! Training's convolutions under bf16 autocast on `vdpbf16ps`, reading the activations and
//! gradients where bf16 storage keeps them and writing bf16.
//!
//! The generic paths ([`super::forward`], [`super::input_grad`], [`super::weight_grad`]) take
//! f32 slices, so each bf16-stored operand was first widened into an f32 copy and each output
//! narrowed into bf16 afterwards: a write and a read of twice the data for every activation and
//! gradient, 12 % of a bf16 training step in `perf`. Here the column buffers copy bf16 values as
//! they are, the kernel's packing interleaves them into its pairs directly, and each task's f32
//! results are narrowed while they are still in cache. The products, their blocking and their
//! order are the generic paths', so the bits are too (the tests compare the two).
use super::dot::{self, DotWeights};
use super::{
    ConvGeom, MatRef, col2im_add, im2col, per_image, sum_into, summed_over_images, tasks_per_image, turned_and_swapped,
};
use crate::kernels::batch_norm::{PlaneSums, store_summed};
use crate::kernels::dot_bf16::{self, PackedLhs, PackedRhs, RowsLhs};
use crate::kernels::{Element, with_local};
use gemm::Parallelism;
use half::bf16;
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

thread_local! {
    /// A task's f32 results before they are narrowed, kept between tasks and layers.
    static RESULTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` f32 values of this thread's result buffer (their contents unspecified;
/// zeroed with `zeroed`).
pub(super) fn with_results<R>(len: usize, zeroed: bool, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_local(&RESULTS, |v| {
        if v.len() < len {
            v.resize(len, 0.0);
        }
        let out = &mut v[..len];
        if zeroed {
            out.fill(0.0);
        }
        f(out)
    })
}

/// `out[i] = bf16(v[i])`, rounded to nearest (ties to even).
fn narrow_into(v: &[f32], out: &mut [MaybeUninit<bf16>]) {
    crate::kernels::isa::with_isa(
        #[inline(always)]
        || out.iter_mut().zip(v).for_each(|(o, &v)| _ = o.write(crate::kernels::bf16::to_bf16(v))),
    )
}

/// The forward pass of `x` (bf16 storage) with the f32 master weight `w` (rounded as it is
/// packed), in bf16 storage: autocast's output. `g` asks for the kernel (`g.bf16_dot`).
pub fn forward(g: &ConvGeom, x: &[bf16], w: &[f32]) -> Vec<bf16> {
    forward_summing(g, x, w, false).0
}

/// [`forward`] and, with `sums`, each output plane's [`PlaneSums`] (`[b * c_out + ch]`), taken
/// as each task narrows its results: the batch statistics of the batch norm that follows,
/// without a pass over the output of its own. Each plane is summed around its own first stored
/// value (`batch_norm::stats_from_planes` combines them), so every image's tasks run in one
/// pass: summed around the channel's first value, the first image had to run alone first, and
/// the other 15 of a batch of 16 then split 8 / 7 between two threads (one idle for 1.6 % of
/// a bf16 training step).
pub fn forward_summing(g: &ConvGeom, x: &[bf16], w: &[f32], sums: bool) -> (Vec<bf16>, Vec<PlaneSums>) {
    let (p, img) = (g.pixels(), g.c_in * g.h * g.w);
    let total = g.n * g.c_out * p;
    let mut y: Vec<bf16> = Vec::with_capacity(total);
    if total == 0 {
        return (y, Vec::new());
    }
    let weights = DotWeights::new(&ConvGeom { bf16_round: true, ..*g }, w);
    let g = &ConvGeom { bf16_round: false, ..*g };
    let block = g.c_out.div_ceil(tasks_per_image(g)).max(1);
    let planes: Vec<Vec<PlaneSums>> = y.spare_capacity_mut()[..total]
        .par_chunks_mut(g.c_out * p)
        .enumerate()
        .flat_map(|(b, yb)| yb.par_chunks_mut(block * p).enumerate().map(move |(j, yc)| (b, j * block, yc)))
        .map(|(b, m0, yc)| {
            let xb = &x[b * img..][..img];
            with_results(yc.len(), false, |out| {
                match &weights {
                    DotWeights::Lanes(wp) => dot::forward_lanes(g, xb, wp, b, m0, super::uninit(out), None),
                    DotWeights::Rows(wp) => forward_rows(g, xb, wp, m0, out),
                }
                if sums {
                    narrow_summed(out, yc, p)
                } else {
                    narrow_into(out, yc);
                    Vec::new()
                }
            })
        })
        .collect();
    // SAFETY: the tasks cover the first `total` elements and each wrote all of its own.
    unsafe { y.set_len(total) };
    // In order: image by image, each image's channel blocks in turn (rayon's `collect` keeps
    // the sequential order).
    (y, planes.into_iter().flatten().collect())
}

/// [`narrow_into`] of rows of `p` values, returning each stored row's [`PlaneSums`] around its
/// first stored value.
fn narrow_summed(v: &[f32], out: &mut [MaybeUninit<bf16>], p: usize) -> Vec<PlaneSums> {
    let mut sums = Vec::with_capacity(v.len() / p.max(1));
    crate::kernels::isa::with_isa(
        #[inline(always)]
        || {
            // A loop rather than `map().collect()`, whose out-of-line `fold` would be compiled
            // without the ISA's features (scalar code: 6 % of a training step).
            for (v, out) in v.chunks(p).zip(out.chunks_mut(p)) {
                sums.push(store_summed::<f32, bf16>(v, out));
            }
        },
    );
    sums
}

/// Output channels `m0..` of image `xb` into `out` (those channels' rows of pixels) with the
/// pixels along the lanes: [`super::forward`]'s products for [`DotWeights::Rows`].
fn forward_rows(g: &ConvGeom, xb: &[bf16], w: &PackedLhs, m0: usize, out: &mut [f32]) {
    let (p, ckk) = (g.pixels(), g.ckk());
    let rows = m0..m0 + out.len() / p;
    let out = super::uninit(out);
    if g.pointwise() {
        return dot_bf16::matmul_into(out, p, false, w, rows, MatRef::rows(xb, g.c_in, p), false, false);
    }
    bf16::with_scratch(|cols| {
        for (r0, band_rows) in g.bands::<bf16>() {
            let band = band_rows * g.ow;
            cols.resize(ckk * band, bf16::ZERO);
            im2col(g, xb, r0, band_rows, cols);
            let rhs = MatRef::rows(cols, ckk, band);
            dot_bf16::matmul_into(&mut out[r0 * g.ow..], p, false, w, rows.clone(), rhs, false, false);
        }
    })
}

/// The input gradient from `dy` (bf16 storage) and the f32 master weight `w`, in bf16 storage
/// (autocast hands a bf16 input's gradient back in bf16).
pub fn input_grad(g: &ConvGeom, w: &[f32], dy: &[bf16]) -> Vec<bf16> {
    if super::super::winograd::applies(g)
        && let Ok(mut gt) = ConvGeom::new(&[g.n, g.c_out, g.oh, g.ow], &[g.c_in, g.c_out, 3, 3], 1, 1)
    {
        // A 3x3, stride-1, padding-1 convolution's input gradient is one itself (see
        // `super::input_grad`), on `vdpbf16ps` by the direct method.
        gt.bf16_dot = true;
        return forward(&gt, dy, &turned_and_swapped(w, g.c_out, g.c_in));
    }
    let (p, ckk, img) = (g.pixels(), g.ckk(), g.c_in * g.h * g.w);
    let mut dx: Vec<bf16> = Vec::with_capacity(g.n * img);
    let spare = &mut dx.spare_capacity_mut()[..g.n * img];
    if dot::input_grad_lanes(g) {
        let wp = PackedRhs::new_rounding(MatRef::rows(w, g.c_out, ckk), true);
        spare.par_chunks_mut(img).enumerate().for_each(|(b, dxb)| {
            with_results(img, true, |grad| {
                dot::input_grad_image(g, &wp, &dy[b * g.c_out * p..][..g.c_out * p], grad);
                narrow_into(grad, dxb);
            })
        });
    } else {
        let weights_t = PackedLhs::new_in(MatRef::transposed(w, ckk, g.c_out), Vec::new(), true).tiled();
        let all = 0..ckk;
        per_image(spare, g.n, |b, dxb, par| {
            let dyb = &dy[b * g.c_out * p..][..g.c_out * p];
            let parallel = !matches!(par, Parallelism::None);
            with_results(img, !g.pointwise(), |grad| {
                if g.pointwise() {
                    let rhs = MatRef::rows(dyb, g.c_out, p);
                    dot_bf16::matmul_into(super::uninit(grad), p, false, &weights_t, all.clone(), rhs, parallel, false);
                } else {
                    <f32 as Element>::with_scratch(|cols| {
                        for (r0, rows) in g.bands::<f32>() {
                            let band = rows * g.ow;
                            cols.resize(ckk * band, 0.0);
                            let dy_band = MatRef::new(&dyb[r0 * g.ow..], g.c_out, band, p, 1);
                            let dst = super::uninit(cols);
                            dot_bf16::matmul_into(dst, band, false, &weights_t, all.clone(), dy_band, parallel, false);
                            col2im_add(g, cols, r0, rows, grad);
                        }
                    });
                }
                narrow_into(grad, dxb);
            })
        });
    }
    // SAFETY: every image's chunk of the first `g.n * img` elements was written above.
    unsafe { dx.set_len(g.n * img) };
    dx
}

/// The weight gradient (f32, unrounded) from `x` and `dy` (both bf16 storage):
/// [`super::weight_grad`]'s products, the same bits.
///
/// The larger of the two operands is read in place (`dot_bf16::RowsLhs`: the kernel broadcasts pairs
/// of pixels from its rows) and only the smaller goes through the register transposes that pair
/// values along the pixels; both were transposed before, 5.7 % of a bf16 training step. For
/// most layers the larger is the columns (nine times `dY` for a 3 x 3 convolution), so the
/// product is the transposed one, `dWᵀ = sum_b cols(X_b) dY_bᵀ` (`C*K*K x Cout`, turned once at
/// the end). Each element is the same sum of the same products in the same order (the kernel's
/// products commute), so the bits are those of either orientation.
pub fn weight_grad(g: &ConvGeom, x: &[bf16], dy: &[bf16]) -> Vec<f32> {
    let (p, ckk, img) = (g.pixels(), g.ckk(), g.c_in * g.h * g.w);
    let group = super::stacked::images_per_group(g);
    if group > 1 {
        return summed_over_images(g.n, g.c_out * ckk, group, |images, acc: &mut Vec<f32>, par| {
            super::stacked::group_grad(g, x, dy, images, acc, par)
        });
    }
    // The larger operand read in place where its rows hold whole pairs, the smaller one
    // transposed as it is packed: `acc_t += cols x dy^T` (`ckk x c_out`, turned at the end), or
    // where the output channels outnumber the columns' rows (a 1x1 widening 64 to 256 channels),
    // `acc += dy x cols^T`.
    let turned = ckk >= g.c_out;
    let product = |acc: &mut Vec<f32>, dy: MatRef<bf16>, cols: MatRef<bf16>, par: Parallelism| {
        let (lhs, rhs) = if turned { (cols, dy) } else { (dy, cols) };
        let rhs_t = MatRef { data: rhs.data, rows: rhs.cols, cols: rhs.rows, rs: rhs.cs, cs: rhs.rs };
        let parallel = !matches!(par, Parallelism::None);
        sum_into(acc, ckk * g.c_out, |dst, accumulate| match RowsLhs::new(lhs) {
            Some(a) => dot_bf16::rows_times_into(dst, rhs.rows, accumulate, &a, rhs_t, parallel),
            None => {
                let a = PackedLhs::new(lhs);
                dot_bf16::matmul_into(dst, rhs.rows, accumulate, &a, 0..lhs.rows, rhs_t, parallel, false)
            }
        });
    };
    let acc = summed_over_images(g.n, ckk * g.c_out, 1, |images, acc: &mut Vec<f32>, par| {
        let b = images.start;
        let (xb, dyb) = (&x[b * img..][..img], &dy[b * g.c_out * p..][..g.c_out * p]);
        if g.pointwise() {
            return product(acc, MatRef::rows(dyb, g.c_out, p), MatRef::rows(xb, g.c_in, p), par);
        }
        bf16::with_scratch(|cols| {
            for (r0, rows) in g.bands::<bf16>() {
                let band = rows * g.ow;
                cols.resize(ckk * band, bf16::ZERO);
                im2col(g, xb, r0, rows, cols);
                let dy_band = MatRef::new(&dyb[r0 * g.ow..], g.c_out, band, p, 1);
                product(acc, dy_band, MatRef::rows(cols, ckk, band), par);
            }
        });
    });
    if turned { transposed(&acc, ckk, g.c_out) } else { acc }
}

/// `m` (`rows x cols`, row-major) transposed, shared between the threads.
fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    /// Output rows per task: each task reads whole cache lines of `m`'s rows.
    const BLOCK: usize = 16;
    assert_eq!(m.len(), rows * cols, "transpose: {} values for {rows} x {cols}", m.len());
    let mut out: Vec<f32> = Vec::with_capacity(m.len());
    if rows > 0 {
        out.spare_capacity_mut()[..m.len()].par_chunks_mut(BLOCK * rows).enumerate().for_each(|(i, o)| {
            let c0 = i * BLOCK;
            for j in 0..rows {
                for (c, &v) in m[j * cols + c0..][..o.len() / rows].iter().enumerate() {
                    o[c * rows + j].write(v);
                }
            }
        });
    }
    // SAFETY: the tasks' chunks cover the first `rows * cols` elements and each wrote all of its
    // own (`BLOCK` output rows of `rows` values, or the last few).
    unsafe { out.set_len(m.len()) };
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::values;
    use super::super::{
        Prepared, forward as forward_f32, input_grad as input_grad_f32, weight_grad as weight_grad_f32,
    };
    use super::*;
    use crate::kernels::batch_norm::{plane_stats, stats_from_planes};
    use crate::kernels::bf16::{narrowed, rounded, widened};

    fn bits(v: &[bf16]) -> Vec<u16> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    /// Reading bf16 storage gives the bits of the f32 path on widened operands and rounded
    /// weights (what `conv_op` ran before), in both orientations of the products (channels or
    /// pixels along the lanes), for 1x1, strided and 3x3 layers, a stem-like 7x7/2, and batches
    /// below and above the thread count; weight gradients stacked over images (small maps) and
    /// transposed (larger ones).
    #[test]
    fn bf16_storage_gives_the_bits_of_the_widened_f32_path() {
        // n, c_in, h (= w), c_out, k, stride, pad
        let cases = [
            (3, 64, 7, 64, 1, 1, 0),
            (3, 64, 7, 128, 3, 1, 1),
            (2, 64, 8, 64, 1, 1, 0),
            (2, 32, 8, 16, 3, 2, 1),
            (1, 16, 9, 64, 3, 1, 1),
            (1, 24, 10, 8, 1, 2, 0),
            (2, 3, 23, 64, 7, 2, 3),
            // Maps stacked two at a time: a thread's second group added to its first, and a
            // group of odd total pixels (a lone 21 x 21 map).
            (6, 8, 20, 16, 3, 1, 1),
            (3, 8, 21, 16, 3, 1, 1),
            (6, 16, 20, 24, 1, 1, 0),
            // Maps too large to stack (weight gradients with the columns, or the output gradient
            // where it is the larger, read in place; packed where rows of an odd length leave
            // them without whole pairs).
            (2, 16, 24, 32, 3, 1, 1),
            (2, 16, 24, 70, 1, 1, 0),
            (3, 8, 48, 16, 3, 2, 1),
            (2, 8, 25, 16, 3, 1, 1),
            (2, 4, 25, 64, 1, 1, 0),
        ];
        for (n, c, h, o, k, s, p) in cases {
            let mut g = ConvGeom::new(&[n, c, h, h], &[o, c, k, k], s, p).unwrap();
            g.bf16_dot = true;
            let w = values(o * c * k * k, 2);
            let x = narrowed(&values(n * c * h * h, 1));
            let dy = narrowed(&values(n * o * g.oh * g.ow, 3));
            let (xf, dyf, wr) = (widened(&x), widened(&dy), rounded(&w));
            let want = narrowed(&forward_f32(&g, &xf, &wr, Prepared::None, None));
            let (y, sums) = forward_summing(&g, &x, &w, true);
            assert_eq!(bits(&y), bits(&want), "{g:?}: forward");
            assert_eq!(bits(&forward(&g, &x, &w)), bits(&want), "{g:?}: forward without sums");
            // The planes' sums taken while writing give the statistics of a pass over the output.
            let dims = g.out_shape();
            assert_eq!(stats_from_planes(&sums, &dims).unwrap(), plane_stats::<f32, _>(&y, &dims).unwrap(), "{g:?}");
            let want = narrowed(&input_grad_f32(&g, &wr, &dyf));
            assert_eq!(bits(&input_grad(&g, &w, &dy)), bits(&want), "{g:?}: input gradient");
            let want = weight_grad_f32(&g, &xf, &dyf);
            let got = weight_grad(&g, &x, &dy);
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{g:?}: weight gradient");
            // Both share the stacked and transposed products: against `gemm`'s f32 products of
            // the same values too (exact products, summed in another order).
            let gemm = weight_grad_f32(&ConvGeom { bf16_dot: false, ..g }, &xf, &dyf);
            let scale = gemm.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = got.iter().zip(&gemm).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-5 * scale, "{g:?}: weight gradient {diff:e} from gemm's (of {scale:e})");
        }
    }
}
