//! 2-D convolution (groups 1, dilation 1, square kernel) as matrix products, per image:
//!
//! - forward: `Y_b (Cout x P) = W (Cout x C*K*K) x cols(X_b) (C*K*K x P)`;
//! - weight gradient: `dW = sum_b dY_b x cols(X_b)^T`;
//! - input gradient: `dX_b = col2im(W^T x dY_b)`.
//!
//! `P` is the number of output pixels. A 1x1 stride-1 convolution (most of ResNet-50) needs no
//! column buffer at all: `X_b` already is `cols(X_b)`. For the others the column buffer covers a
//! band of output rows at a time, sized to stay in the core's cache instead of materialising
//! the whole batch's columns as candle does (115 MB for ResNet's first layer at batch 16).
use super::dot_bf16::PackedLhs;
use super::{Float, MatRef, matmul_into, per_image};
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Target size of one column band; the L2 cache here is 1 MiB per core.
const BAND_BYTES: usize = 768 * 1024;
/// Fewer output pixels than this per band make the matrix products inefficient.
const MIN_BAND_PIXELS: usize = 256;

mod columns;
mod dot;
mod epilogue;
pub mod eval_bf16;
mod split;
mod stacked;
pub mod stored;
use columns::{col2im_add, im2col};
pub use dot::{DotWeights, lanes};
pub use epilogue::{Bf16Rounding, Epilogue};
use epilogue::{as_f32, as_f32_mut};
pub(crate) use split::Out as SharedOut;

/// A weight in a form a caller keeps between calls (a loaded model does), for [`forward`].
#[derive(Clone, Copy)]
pub enum Prepared<'a, T> {
    /// Only the weight itself: whatever form the product needs is made per call.
    None,
    /// Its Winograd transform ([`super::winograd::transform_weights`]), for a convolution that
    /// [`super::winograd::applies`] to: the products run in Winograd's domain.
    Winograd(&'a [T]),
    /// Packed for `vdpbf16ps` ([`DotWeights::new`]): used where `g.bf16_dot` asks for the
    /// kernel and the packing [`DotWeights::fits`] `g` (packed per call otherwise).
    Dot(&'a DotWeights),
}

/// How many tasks [`forward`] splits each image's output channels into: enough for every
/// thread to have one.
fn tasks_per_image(g: &ConvGeom) -> usize {
    rayon::current_num_threads().div_ceil(g.n.max(1))
}

/// The shapes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
    /// bf16 autocast's products on `vdpbf16ps` ([`super::dot_bf16`]): set by the bf16 op where
    /// [`super::dot_bf16::enabled`], for f32 operands holding bf16 values.
    pub bf16_dot: bool,
    /// With `bf16_dot`: the operands may not be bf16 values yet (evaluation's activations), so
    /// the kernel's packing rounds them; without, they are (training's) and it takes their top
    /// bits.
    pub bf16_round: bool,
}

impl ConvGeom {
    /// Checks the shapes the way PyTorch does and names what does not fit.
    pub fn new(x: &[usize], w: &[usize], stride: usize, pad: usize) -> candle_core::Result<Self> {
        let (&[n, c_in, h, wd], &[c_out, wc, k, k2]) = (x, w) else {
            candle_core::bail!("conv2d: expected input (N, C, H, W) and weight (Cout, C, K, K), got {x:?} and {w:?}")
        };
        if wc != c_in || k != k2 || k == 0 || stride == 0 {
            candle_core::bail!("conv2d: weight {w:?} does not fit input {x:?} (stride {stride})");
        }
        if h + 2 * pad < k || wd + 2 * pad < k {
            candle_core::bail!("conv2d: input {h}x{wd} with padding {pad} is smaller than the {k}x{k} kernel");
        }
        let (oh, ow) = ((h + 2 * pad - k) / stride + 1, (wd + 2 * pad - k) / stride + 1);
        Ok(Self { n, c_in, h, w: wd, c_out, k, stride, pad, oh, ow, bf16_dot: false, bf16_round: false })
    }

    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    fn ckk(&self) -> usize {
        self.c_in * self.k * self.k
    }

    fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.oh, self.ow]
    }

    /// Output rows per column band.
    fn band_rows<T>(&self) -> usize {
        let row_bytes = self.ckk() * self.ow * std::mem::size_of::<T>();
        let by_cache = BAND_BYTES / row_bytes.max(1);
        let by_width = MIN_BAND_PIXELS.div_ceil(self.ow);
        by_cache.max(by_width).clamp(1, self.oh)
    }

    /// The bands of output rows, as `(first row, row count)`.
    fn bands<T>(&self) -> impl Iterator<Item = (usize, usize)> {
        let rows = self.band_rows::<T>();
        let oh = self.oh;
        (0..oh).step_by(rows).map(move |r| (r, rows.min(oh - r)))
    }

    /// For kernel column `kj`: the output columns whose input column is inside the image.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        super::window::inside(self.w, self.ow, self.stride, self.pad, kj)
    }
}

/// The convolution of `x` (`N x C x H x W`) with `w` (`Cout x C x K x K`), then `epilogue`,
/// with the weight's `prepared` form where the caller keeps one.
///
/// Work is split into (image, block of output channels) tasks, each a single-threaded matrix
/// product: one task per image when the batch covers the threads, otherwise each image's output
/// channels are split between them. One synchronisation per layer, where letting `gemm` thread
/// each product itself costs several per product (a tenth of a batch-1 forward in `perf`,
/// spent in `sched_yield`), and it leaves the band buffer and the epilogue single-threaded.
pub fn forward<T: Float>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    prepared: Prepared<T>,
    epilogue: Option<&Epilogue<T>>,
) -> Vec<T> {
    let (p, ckk, img) = (g.pixels(), g.ckk(), g.c_in * g.h * g.w);
    let total = g.n * g.c_out * p;
    // Written in place by the matrix products, without zeroing it first (a memset of every
    // output was 7 % of a batch-1 forward).
    let mut y: Vec<T> = Vec::with_capacity(total);
    if total == 0 {
        return y;
    }
    if let Prepared::Winograd(u) = prepared {
        super::winograd::forward(g, x, u, &mut y.spare_capacity_mut()[..total], |b, m0, yc| {
            if let Some(e) = epilogue {
                e.apply(b, m0, yc, p);
            }
        });
        // SAFETY: `winograd::forward` writes every element of the first `total`.
        unsafe { y.set_len(total) };
        return y;
    }
    let block = g.c_out.div_ceil(tasks_per_image(g)).max(1);
    // The weight packed for `vdpbf16ps`: as kept, or packed now.
    let packed_now;
    let dot = match (g.bf16_dot, as_f32(w), prepared) {
        (true, Some(_), Prepared::Dot(d)) if d.fits(g) => Some(d),
        (true, Some(w), _) => {
            packed_now = DotWeights::new(g, w);
            Some(&packed_now)
        }
        _ => None,
    };
    let shared = match (dot, as_f32(w)) {
        (Some(d), _) if split::applies(g) => Some(split::Weights::Dot(d)),
        (None, Some(w)) if split::applies_f32(g) => Some(split::Weights::F32(w)),
        _ => None,
    };
    if let (Some(sw), Some(x32)) = (shared, as_f32(x)) {
        let y32 = f32_uninit(&mut y.spare_capacity_mut()[..total]).expect("T is f32: as_f32 succeeded");
        split::forward(g, x32, sw, y32, epilogue.and_then(Epilogue::as_f32).as_ref());
        // SAFETY: `split::forward` writes every element of the first `total`.
        unsafe { y.set_len(total) };
        return y;
    }
    let task = |b: usize, m0: usize, yb: &mut [MaybeUninit<T>]| {
        let rows_out = yb.len() / p;
        let xb = &x[b * img..][..img];
        if let (Some(DotWeights::Lanes(wp)), Some(xb), Some(yb)) = (dot, as_f32(xb), f32_uninit(yb)) {
            let e = epilogue.and_then(Epilogue::as_f32);
            return dot::forward_lanes(g, xb, wp, b, m0, yb, e.as_ref());
        }
        let weights = MatRef::rows(&w[m0 * ckk..], rows_out, ckk);
        let packed = match dot {
            Some(DotWeights::Rows(wp)) => Some((wp, m0..m0 + rows_out, g.bf16_round)),
            _ => None,
        };
        if g.pointwise() {
            product(packed, yb, p, false, weights, MatRef::rows(xb, g.c_in, p), Parallelism::None);
        } else {
            T::with_scratch(|cols| {
                // The bands' columns together cover every output pixel of every row.
                for (r0, rows) in g.bands::<T>() {
                    let band = rows * g.ow;
                    cols.resize(ckk * band, T::zero());
                    im2col(g, xb, r0, rows, cols);
                    let rhs = MatRef::rows(cols, ckk, band);
                    product(packed.clone(), &mut yb[r0 * g.ow..], p, false, weights, rhs, Parallelism::None);
                }
            });
        }
        // SAFETY: the products above wrote every element of `yb`.
        let yb = unsafe { &mut *(yb as *mut [MaybeUninit<T>] as *mut [T]) };
        if let Some(e) = epilogue {
            e.apply(b, m0, yb, p);
        }
    };
    y.spare_capacity_mut()[..total]
        .par_chunks_mut(g.c_out * p)
        .enumerate()
        .flat_map(|(b, yb)| yb.par_chunks_mut(block * p).enumerate().map(move |(j, yc)| (b, j * block, yc)))
        .for_each(|(b, m0, yc)| task(b, m0, yc));
    // SAFETY: the tasks cover the first `total` elements and each wrote all of its own.
    unsafe { y.set_len(total) };
    y
}

/// The gradient with respect to the weights, `Cout x C x K x K`.
pub fn weight_grad<T: Float>(g: &ConvGeom, x: &[T], dy: &[T]) -> Vec<T> {
    let (p, ckk, img) = (g.pixels(), g.ckk(), g.c_in * g.h * g.w);
    let size = g.c_out * ckk;
    let image_grad = |b: usize, acc: &mut Vec<T>, par: Parallelism| {
        let (xb, dyb) = (&x[b * img..][..img], &dy[b * g.c_out * p..][..g.c_out * p]);
        if g.pointwise() {
            grad_product(g, acc, ckk, MatRef::rows(dyb, g.c_out, p), MatRef::rows(xb, g.c_in, p), par);
            return;
        }
        T::with_scratch(|cols| {
            for (r0, rows) in g.bands::<T>() {
                let band = rows * g.ow;
                cols.resize(ckk * band, T::zero());
                im2col(g, xb, r0, rows, cols);
                let dy_band = MatRef::new(&dyb[r0 * g.ow..], g.c_out, band, p, 1);
                grad_product(g, acc, ckk, dy_band, MatRef::rows(cols, ckk, band), par);
            }
        });
    };
    let group = stacked::images_per_group(g);
    if let (true, Some(x32), Some(dy32)) = (group > 1, as_f32(x), as_f32(dy)) {
        return summed_over_images(g.n, size, group, |images, acc, par| {
            stacked::group_grad(g, x32, dy32, images, acc, par)
        });
    }
    summed_over_images(g.n, size, 1, |images, acc, par| image_grad(images.start, acc, par))
}

/// `sum_b image_grad(b)` of `size` values, the images in groups of `group` (whole groups per
/// thread), each group's gradient added into an accumulator by `group_grad(images, acc,
/// parallelism)` (through [`sum_into`]: an empty accumulator takes the first product as it is,
/// where zeroing it first was a memset of every weight per thread and step): one accumulator per
/// thread, summed at the end by both threads, when the batch covers the threads; otherwise one,
/// with multi-threaded products.
fn summed_over_images<T: Float>(
    n: usize,
    size: usize,
    group: usize,
    group_grad: impl Fn(Range<usize>, &mut Vec<T>, Parallelism) + Sync + Send,
) -> Vec<T> {
    let threads = rayon::current_num_threads();
    let group = group.max(1);
    if threads > 1 && n >= threads {
        // Each thread's share of the images, cut into groups.
        let per = n.div_ceil(threads);
        let groups: Vec<Range<usize>> = (0..n)
            .step_by(per)
            .flat_map(|t0| (t0..(t0 + per).min(n)).step_by(group).map(move |b| b..(b + group).min(t0 + per).min(n)))
            .collect();
        groups
            .into_par_iter()
            .with_min_len(per.div_ceil(group))
            .fold(Vec::new, |mut acc, images| {
                group_grad(images, &mut acc, Parallelism::None);
                acc
            })
            .reduce_with(|mut a, b| {
                if a.is_empty() {
                    return b;
                }
                if !b.is_empty() {
                    // Shared between the threads: one thread's pass over every weight was 1 %
                    // of a training step with the other waiting.
                    a.par_iter_mut().zip(&b).with_min_len(1 << 16).for_each(|(a, b)| *a += *b);
                }
                a
            })
            .filter(|acc| !acc.is_empty())
            .unwrap_or_else(|| zeros_written(size))
    } else {
        let par = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        let mut acc = Vec::new();
        for b in (0..n).step_by(group) {
            group_grad(b..(b + group).min(n), &mut acc, par);
        }
        // No images: nothing was summed.
        if acc.is_empty() { zeros_written(size) } else { acc }
    }
}

/// `acc += product`, where `product(dst, accumulate)` writes every one of the `size` elements of
/// `dst` (adding to them with `accumulate`); an empty `acc` (nothing summed yet) takes the
/// product as it is.
fn sum_into<T>(acc: &mut Vec<T>, size: usize, product: impl FnOnce(&mut [MaybeUninit<T>], bool)) {
    if acc.is_empty() {
        acc.reserve_exact(size);
        product(&mut acc.spare_capacity_mut()[..size], false);
        // SAFETY: without `accumulate` the product wrote all `size` elements (its contract).
        unsafe { acc.set_len(size) };
    } else {
        assert_eq!(acc.len(), size, "weight gradient: accumulator of another size");
        product(uninit(acc), true)
    }
}

/// `size` zeros, written, where `vec![0; size]` asks for zeroed memory: a fresh block of it
/// maps the kernel's shared zero page, and the products then read each accumulator page before
/// writing it, so every page took a second, copy-on-write fault that flushed the other cores'
/// TLBs (2.5 % of a bf16 training step in `perf`: `do_wp_page`, `flush_tlb_mm_range`).
fn zeros_written<T: Float>(size: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(size);
    v.resize(size, T::zero());
    v
}

/// The gradient with respect to the input, `N x C x H x W`.
pub fn input_grad<T: Float>(g: &ConvGeom, w: &[T], dy: &[T]) -> Vec<T> {
    if super::winograd::applies(g)
        && let Ok(mut gt) = ConvGeom::new(&[g.n, g.c_out, g.oh, g.ow], &[g.c_in, g.c_out, 3, 3], 1, 1)
    {
        // For a 3x3, stride-1, padding-1 convolution the input gradient is itself one: of dY
        // with the weights turned half a circle and their input and output channels swapped.
        // So Winograd's method computes it too.
        let wt = turned_and_swapped(w, g.c_out, g.c_in);
        if g.bf16_dot {
            // On `vdpbf16ps` the direct method: twice f32's rate about matches Winograd's 2.25x
            // fewer multiplications, the output channels along the lanes beat it on 14 x 14 and
            // 7 x 7 maps (`bench conv_layers` under bf16), and autocast's numbers are exact
            // products summed in f32, without the transforms' roundings.
            gt.bf16_dot = true;
            return forward(&gt, dy, &wt, Prepared::None, None);
        }
        let u = super::winograd::transform_weights(g.c_in, g.c_out, &wt);
        return forward(&gt, dy, &wt, Prepared::Winograd(&u), None);
    }
    let (p, ckk, img) = (g.pixels(), g.ckk(), g.c_in * g.h * g.w);
    let mut dx = vec![T::zero(); g.n * img];
    if let (true, Some(w32), Some(dy32), Some(dx32)) =
        (dot::input_grad_lanes(g), as_f32(w), as_f32(dy), as_f32_mut(&mut dx))
    {
        let wp = super::dot_bf16::PackedRhs::new(MatRef::rows(w32, g.c_out, ckk));
        dx32.par_chunks_mut(img)
            .enumerate()
            .for_each(|(b, dxb)| dot::input_grad_image(g, &wp, &dy32[b * g.c_out * p..][..g.c_out * p], dxb));
        return dx;
    }
    let weights_t = MatRef::transposed(w, ckk, g.c_out);
    let packed = dot_operand(g, weights_t);
    let packed = packed.as_ref().map(|w| (w, 0..ckk, false));
    per_image(&mut dx, g.n, |b, dxb, par| {
        let dyb = &dy[b * g.c_out * p..][..g.c_out * p];
        if g.pointwise() {
            product(packed.clone(), uninit(dxb), p, false, weights_t, MatRef::rows(dyb, g.c_out, p), par);
            return;
        }
        T::with_scratch(|cols| {
            for (r0, rows) in g.bands::<T>() {
                let band = rows * g.ow;
                cols.resize(ckk * band, T::zero());
                let dy_band = MatRef::new(&dyb[r0 * g.ow..], g.c_out, band, p, 1);
                product(packed.clone(), uninit(cols), band, false, weights_t, dy_band, par);
                col2im_add(g, cols, r0, rows, dxb);
            }
        });
    });
    dx
}

/// `lhs` packed for [`product`] on `vdpbf16ps`, where `g` asks for it and `T` is f32.
fn dot_operand<T: Float>(g: &ConvGeom, lhs: MatRef<T>) -> Option<PackedLhs> {
    g.bf16_dot.then(|| f32_view(lhs).map(PackedLhs::new)).flatten()
}

/// `dst = [dst +] lhs x rhs` (row stride `dst_rs`): on `vdpbf16ps` when `packed` holds `lhs`'s
/// rows (from [`dot_operand`]; with its flag, `rhs` is rounded to bf16 as it is packed, see
/// [`ConvGeom::bf16_round`]), by `gemm` otherwise.
fn product<T: Float>(
    packed: Option<(&PackedLhs, std::ops::Range<usize>, bool)>,
    dst: &mut [MaybeUninit<T>],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<T>,
    rhs: MatRef<T>,
    par: Parallelism,
) {
    if let (Some((packed, rows, round)), Some(rhs)) = (packed, f32_view(rhs)) {
        let dst = f32_uninit(dst).expect("T is f32: f32_view succeeded");
        let parallel = !matches!(par, Parallelism::None);
        return super::dot_bf16::matmul_into(dst, dst_rs, accumulate, packed, rows, rhs, parallel, round);
    }
    matmul_into(dst, dst_rs, accumulate, lhs, rhs, par)
}

/// `acc (row stride acc_rs) += dy x cols^T` for a weight gradient: on `vdpbf16ps` where `g`
/// asks for it (see [`product`]), by `gemm` otherwise.
fn grad_product<T: Float>(
    g: &ConvGeom,
    acc: &mut Vec<T>,
    acc_rs: usize,
    dy: MatRef<T>,
    cols: MatRef<T>,
    par: Parallelism,
) {
    let cols_t = MatRef { data: cols.data, rows: cols.cols, cols: cols.rows, rs: cols.cs, cs: cols.rs };
    let packed = dot_operand(g, dy);
    sum_into(acc, dy.rows * acc_rs, |dst, accumulate| {
        product(packed.as_ref().map(|d| (d, 0..dy.rows, false)), dst, acc_rs, accumulate, dy, cols_t, par)
    })
}

/// `m` as an f32 view, when `T` is f32.
fn f32_view<T: Float>(m: MatRef<T>) -> Option<MatRef<f32>> {
    Some(MatRef { data: as_f32(m.data)?, rows: m.rows, cols: m.cols, rs: m.rs, cs: m.cs })
}

/// `v` as f32 slots, when `T` is f32.
fn f32_uninit<T: Float>(v: &mut [MaybeUninit<T>]) -> Option<&mut [MaybeUninit<f32>]> {
    (T::DTYPE == candle_core::DType::F32)
        // SAFETY: `T` is f32 (its dtype says so), so the two slices have the same layout.
        .then(|| unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut MaybeUninit<f32>, v.len()) })
}

/// Initialised values viewed as possibly uninitialised ones (sound: only valid values are
/// written through the view).
fn uninit<T>(v: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: see above; `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(v as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// `w'[c][o][i][j] = w[o][c][2 - i][2 - j]` for a `Cout x C x 3 x 3` weight.
fn turned_and_swapped<T: Float>(w: &[T], c_out: usize, c_in: usize) -> Vec<T> {
    assert_eq!(w.len(), c_out * c_in * 9, "3x3 weight: {} values for {c_out} x {c_in} x 3 x 3", w.len());
    let mut out: Vec<T> = Vec::with_capacity(w.len());
    // Each new output channel `c` by a task of its own, written without zeroing first: on the
    // calling thread alone, the copy and its zero fill were ~0.2 % of a bf16 training step's
    // samples in `perf`, while the pool's threads waited.
    out.spare_capacity_mut()[..w.len()].par_chunks_mut((c_out * 9).max(1)).enumerate().for_each(|(c, dst)| {
        for (o, dst) in dst.chunks_mut(9).enumerate() {
            for (d, s) in dst.iter_mut().zip(w[(o * c_in + c) * 9..][..9].iter().rev()) {
                d.write(*s);
            }
        }
    });
    // SAFETY: the tasks' chunks cover the first `w.len()` elements, and each wrote all of its own.
    unsafe { out.set_len(w.len()) };
    out
}

#[cfg(test)]
mod tests;
