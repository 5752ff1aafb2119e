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

/// Target size of one column band; the L2 cache here is 1 MiB per core.
const BAND_BYTES: usize = 768 * 1024;
/// Fewer output pixels than this per band make the matrix products inefficient.
const MIN_BAND_PIXELS: usize = 256;

mod epilogue;
use epilogue::as_f32;
pub use epilogue::{Bf16Rounding, Epilogue};

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
        Ok(Self { n, c_in, h, w: wd, c_out, k, stride, pad, oh, ow, bf16_dot: false })
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
        let (s, p) = (self.stride, self.pad);
        // ix = ox * s + kj - p must be in [0, w).
        let lo = if kj >= p { 0 } else { (p - kj).div_ceil(s) };
        let hi = if self.w + p > kj { ((self.w + p - kj - 1) / s + 1).min(self.ow) } else { 0 };
        (lo.min(hi), hi)
    }
}

/// Writes the columns of output rows `[r0, r0 + rows)` of one image (`c_in x h x w`) into
/// `cols` (`C*K*K x rows*ow`, row-major), zero where the window leaves the image.
fn im2col<T: Float>(g: &ConvGeom, x: &[T], r0: usize, rows: usize, cols: &mut [T]) {
    if g.stride > 1 {
        return im2col_strided(g, x, r0, rows, cols);
    }
    let (k, s, ow, w) = (g.k, g.stride, g.ow, g.w);
    let band = rows * ow;
    for c in 0..g.c_in {
        let plane = &x[c * g.h * w..][..g.h * w];
        for ki in 0..k {
            for kj in 0..k {
                let (lo, hi) = g.valid_cols(kj);
                let row = &mut cols[((c * k + ki) * k + kj) * band..][..band];
                for (t, dst) in row.chunks_exact_mut(ow).enumerate() {
                    let iy = ((r0 + t) * s + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        dst.fill(T::zero());
                        continue;
                    }
                    let src = &plane[iy as usize * w..][..w];
                    dst[..lo].fill(T::zero());
                    dst[hi..].fill(T::zero());
                    let x0 = lo * s + kj - g.pad;
                    if s == 1 {
                        dst[lo..hi].copy_from_slice(&src[x0..x0 + hi - lo]);
                    } else {
                        for (d, i) in dst[lo..hi].iter_mut().zip((x0..).step_by(s)) {
                            *d = src[i];
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col`] for a stride `s` above 1. Each input row the band reads is first split into its
/// `s` phases (columns `q, q + s, q + 2s, ...`), so that every kernel column then copies a
/// contiguous run where it would gather every `s`-th value: the gather happens once per input
/// value instead of once per kernel column (`K` times). The stem's 7x7/2 and the 3x3/2 layers
/// spent 5 % of a batch-1 evaluation gathering.
fn im2col_strided<T: Float>(g: &ConvGeom, x: &[T], r0: usize, rows: usize, cols: &mut [T]) {
    let (k, s, ow, w, pad) = (g.k, g.stride, g.ow, g.w, g.pad as isize);
    let band = rows * ow;
    // The input rows the band reads, inside the image.
    let first = ((r0 * s) as isize - pad).max(0) as usize;
    let end = (((r0 + rows - 1) * s + k) as isize - pad).clamp(0, g.h as isize) as usize;
    let (in_rows, phase_w) = (end.saturating_sub(first), w.div_ceil(s));
    // phases[q][row][j] = x[first + row][j * s + q]
    let mut phases = vec![T::zero(); s * in_rows * phase_w];
    for c in 0..g.c_in {
        let plane = &x[c * g.h * w..][..g.h * w];
        for r in 0..in_rows {
            let src = &plane[(first + r) * w..][..w];
            if s == 2 {
                // Every strided layer of our models: one pass, which the compiler vectorises.
                let (even, odd) = phases.split_at_mut(in_rows * phase_w);
                let (even, odd) = (&mut even[r * phase_w..][..phase_w], &mut odd[r * phase_w..][..phase_w]);
                super::isa::with_isa(
                    #[inline(always)]
                    || {
                        for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(src.chunks_exact(2)) {
                            (*e, *o) = (pair[0], pair[1]);
                        }
                    },
                );
                if w % 2 == 1 {
                    even[phase_w - 1] = src[w - 1];
                }
                continue;
            }
            for q in 0..s {
                let dst = &mut phases[(q * in_rows + r) * phase_w..][..phase_w];
                for (d, v) in dst.iter_mut().zip(src.iter().skip(q).step_by(s)) {
                    *d = *v;
                }
            }
        }
        for ki in 0..k {
            for kj in 0..k {
                let (lo, hi) = g.valid_cols(kj);
                let row = &mut cols[((c * k + ki) * k + kj) * band..][..band];
                for (t, dst) in row.chunks_exact_mut(ow).enumerate() {
                    let iy = ((r0 + t) * s + ki) as isize - pad;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        dst.fill(T::zero());
                        continue;
                    }
                    dst[..lo].fill(T::zero());
                    dst[hi..].fill(T::zero());
                    // Output column ox reads input column ox * s + kj - pad: x0 + (ox - lo) * s.
                    let x0 = lo * s + kj - g.pad;
                    let r = iy as usize - first;
                    let run = &phases[((x0 % s) * in_rows + r) * phase_w + x0 / s..][..hi - lo];
                    dst[lo..hi].copy_from_slice(run);
                }
            }
        }
    }
}

/// Adds columns (the layout [`im2col`] writes) back into one image's gradient: the adjoint of
/// [`im2col`].
fn col2im_add<T: Float>(g: &ConvGeom, cols: &[T], r0: usize, rows: usize, dx: &mut [T]) {
    let (k, s, ow, w) = (g.k, g.stride, g.ow, g.w);
    let band = rows * ow;
    for c in 0..g.c_in {
        let plane = &mut dx[c * g.h * w..][..g.h * w];
        for ki in 0..k {
            for kj in 0..k {
                let (lo, hi) = g.valid_cols(kj);
                if lo >= hi {
                    continue;
                }
                let row = &cols[((c * k + ki) * k + kj) * band..][..band];
                for (t, src) in row.chunks_exact(ow).enumerate() {
                    let iy = ((r0 + t) * s + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * w..][..w];
                    let x0 = lo * s + kj - g.pad;
                    for (v, i) in src[lo..hi].iter().zip((x0..).step_by(s)) {
                        dst[i] += *v;
                    }
                }
            }
        }
    }
}

/// The convolution of `x` (`N x C x H x W`) with `w` (`Cout x C x K x K`), then `epilogue`.
/// With `winograd` (the weight's [`super::winograd::transform_weights`], for a convolution that
/// [`super::winograd::applies`] to), the products run in Winograd's domain instead.
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
    winograd: Option<&[T]>,
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
    if let Some(u) = winograd {
        super::winograd::forward(g, x, u, &mut y.spare_capacity_mut()[..total], |b, m0, yc| {
            if let Some(e) = epilogue {
                e.apply(b, m0, yc, p);
            }
        });
        // SAFETY: `winograd::forward` writes every element of the first `total`.
        unsafe { y.set_len(total) };
        return y;
    }
    let threads = rayon::current_num_threads();
    let block = g.c_out.div_ceil(threads.div_ceil(g.n)).max(1);
    let packed = dot_operand(g, MatRef::rows(w, g.c_out, ckk));
    let task = |b: usize, m0: usize, yb: &mut [MaybeUninit<T>]| {
        let rows_out = yb.len() / p;
        let xb = &x[b * img..][..img];
        let weights = MatRef::rows(&w[m0 * ckk..], rows_out, ckk);
        let packed = packed.as_ref().map(|w| (w, m0..m0 + rows_out));
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
    let threads = rayon::current_num_threads();
    if threads > 1 && g.n >= threads {
        // One accumulator per thread, summed at the end.
        (0..g.n)
            .into_par_iter()
            .with_min_len(g.n.div_ceil(threads))
            .fold(
                || vec![T::zero(); size],
                |mut acc, b| {
                    image_grad(b, &mut acc, Parallelism::None);
                    acc
                },
            )
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += *b);
                a
            })
            .unwrap_or_else(|| vec![T::zero(); size])
    } else {
        let par = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        let mut acc = vec![T::zero(); size];
        for b in 0..g.n {
            image_grad(b, &mut acc, par);
        }
        acc
    }
}

/// The gradient with respect to the input, `N x C x H x W`.
pub fn input_grad<T: Float>(g: &ConvGeom, w: &[T], dy: &[T]) -> Vec<T> {
    if super::winograd::applies(g)
        && let Ok(gt) = ConvGeom::new(&[g.n, g.c_out, g.oh, g.ow], &[g.c_in, g.c_out, 3, 3], 1, 1)
    {
        // For a 3x3, stride-1, padding-1 convolution the input gradient is itself one: of dY
        // with the weights turned half a circle and their input and output channels swapped.
        // So Winograd's method computes it too.
        let wt = turned_and_swapped(w, g.c_out, g.c_in);
        let u = super::winograd::transform_weights(g.c_in, g.c_out, &wt);
        return forward(&gt, dy, &wt, Some(&u), None);
    }
    let (p, ckk, img) = (g.pixels(), g.ckk(), g.c_in * g.h * g.w);
    let mut dx = vec![T::zero(); g.n * img];
    let weights_t = MatRef::transposed(w, ckk, g.c_out);
    let packed = dot_operand(g, weights_t);
    let packed = packed.as_ref().map(|w| (w, 0..ckk));
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
/// rows (from [`dot_operand`]), by `gemm` otherwise.
fn product<T: Float>(
    packed: Option<(&PackedLhs, std::ops::Range<usize>)>,
    dst: &mut [MaybeUninit<T>],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<T>,
    rhs: MatRef<T>,
    par: Parallelism,
) {
    if let (Some((packed, rows)), Some(rhs)) = (packed, f32_view(rhs)) {
        // SAFETY: `f32_view` succeeded, so `T` is f32 and the two slices have the same layout.
        let dst = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut MaybeUninit<f32>, dst.len()) };
        let parallel = !matches!(par, Parallelism::None);
        return super::dot_bf16::matmul_into(dst, dst_rs, accumulate, packed, rows, rhs, parallel);
    }
    matmul_into(dst, dst_rs, accumulate, lhs, rhs, par)
}

/// `acc (row stride acc_rs) += dy x cols^T` for a weight gradient: on `vdpbf16ps` where `g`
/// asks for it (see [`product`]), by `gemm` otherwise.
fn grad_product<T: Float>(
    g: &ConvGeom,
    acc: &mut [T],
    acc_rs: usize,
    dy: MatRef<T>,
    cols: MatRef<T>,
    par: Parallelism,
) {
    let cols_t = MatRef { data: cols.data, rows: cols.cols, cols: cols.rows, rs: cols.cs, cs: cols.rs };
    let packed = dot_operand(g, dy);
    product(packed.as_ref().map(|d| (d, 0..dy.rows)), uninit(acc), acc_rs, true, dy, cols_t, par)
}

/// `m` as an f32 view, when `T` is f32.
fn f32_view<T: Float>(m: MatRef<T>) -> Option<MatRef<f32>> {
    Some(MatRef { data: as_f32(m.data)?, rows: m.rows, cols: m.cols, rs: m.rs, cs: m.cs })
}

/// Initialised values viewed as possibly uninitialised ones (sound: only valid values are
/// written through the view).
fn uninit<T>(v: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: see above; `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(v as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// `w'[c][o][i][j] = w[o][c][2 - i][2 - j]` for a `Cout x C x 3 x 3` weight.
fn turned_and_swapped<T: Float>(w: &[T], c_out: usize, c_in: usize) -> Vec<T> {
    let mut out = vec![T::zero(); w.len()];
    for o in 0..c_out {
        for c in 0..c_in {
            let (src, dst) = (&w[(o * c_in + c) * 9..][..9], &mut out[(c * c_out + o) * 9..][..9]);
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output at a time, in f64.
    fn naive(g: &ConvGeom, x: &[f64], w: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; g.n * g.c_out * g.oh * g.ow];
        for b in 0..g.n {
            for o in 0..g.c_out {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut acc = 0.0;
                        for c in 0..g.c_in {
                            for ki in 0..g.k {
                                for kj in 0..g.k {
                                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                        continue;
                                    }
                                    let xi = ((b * g.c_in + c) * g.h + iy as usize) * g.w + ix as usize;
                                    acc += x[xi] * w[((o * g.c_in + c) * g.k + ki) * g.k + kj];
                                }
                            }
                        }
                        y[((b * g.c_out + o) * g.oh + oy) * g.ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn data(len: usize, seed: usize) -> Vec<f64> {
        (0..len).map(|i| (((i * 7919 + seed * 104729) % 2003) as f64 / 1001.0) - 1.0).collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(a, b)| a * b).sum()
    }

    /// n, c_in, h, w, c_out, k, stride, pad
    type Case = (usize, usize, usize, usize, usize, usize, usize, usize);
    const CASES: [Case; 8] = [
        (2, 3, 9, 11, 4, 3, 1, 1),
        (3, 2, 10, 9, 5, 3, 2, 1),
        (1, 3, 15, 13, 2, 7, 2, 3),
        (2, 6, 5, 5, 7, 1, 1, 0),
        (2, 4, 7, 8, 3, 1, 2, 0),
        (1, 2, 12, 12, 3, 11, 4, 2),
        // Batch 1 on maps of several bands (13 and 4), output channels split between threads.
        (1, 64, 64, 64, 2, 3, 1, 1),
        (1, 256, 48, 48, 3, 1, 1, 0),
    ];

    #[test]
    fn forward_matches_the_definition() {
        for &(n, c, h, w, o, k, s, p) in &CASES {
            let g = ConvGeom::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
            let (x, wt) = (data(n * c * h * w, 1), data(o * c * k * k, 2));
            let got = forward(&g, &x, &wt, None, None);
            let want = naive(&g, &x, &wt);
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-12, "{g:?}: max error {err}");
        }
    }

    /// The gradients are the adjoints of the forward map: <dY, conv(X, W)> is linear in X and in
    /// W, so <dW, W'> and <dX, X'> must equal <dY, conv(X, W')> and <dY, conv(X', W)>.
    #[test]
    fn gradients_are_the_adjoints_of_the_forward_pass() {
        for &(n, c, h, w, o, k, s, p) in &CASES {
            let g = ConvGeom::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
            let (x, wt) = (data(n * c * h * w, 3), data(o * c * k * k, 4));
            let dy = data(n * o * g.oh * g.ow, 5);
            let (x2, w2) = (data(x.len(), 6), data(wt.len(), 7));
            let dw = weight_grad(&g, &x, &dy);
            let dx = input_grad(&g, &wt, &dy);
            let lhs_w = dot(&dw, &w2);
            let rhs_w = dot(&dy, &naive(&g, &x, &w2));
            assert!((lhs_w - rhs_w).abs() < 1e-9 * rhs_w.abs().max(1.0), "{g:?}: dW {lhs_w} vs {rhs_w}");
            let lhs_x = dot(&dx, &x2);
            let rhs_x = dot(&dy, &naive(&g, &x2, &wt));
            assert!((lhs_x - rhs_x).abs() < 1e-9 * rhs_x.abs().max(1.0), "{g:?}: dX {lhs_x} vs {rhs_x}");
        }
    }

    /// F(2x2, 3x3) against the definition: odd and even maps (a last tile row or column half
    /// outside), batch 1 with its output channels split between threads, and a map of several
    /// bands of tiles.
    #[test]
    fn winograd_matches_the_definition() {
        for (n, c, h, w, o) in [(2, 3, 9, 11, 4), (1, 5, 7, 7, 6), (3, 2, 1, 1, 3), (1, 2, 2, 5, 1), (2, 64, 70, 66, 5)]
        {
            let g = ConvGeom::new(&[n, c, h, w], &[o, c, 3, 3], 1, 1).unwrap();
            let (x, wt) = (data(n * c * h * w, 11), data(o * c * 9, 12));
            let u = super::super::winograd::transform_weights(o, c, &wt);
            let got = forward(&g, &x, &wt, Some(&u), None);
            let want = naive(&g, &x, &wt);
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-12, "{g:?}: max error {err}");
        }
    }

    /// In f32 the transforms' extra additions cost a little accuracy; this bounds it at twice the
    /// direct method's error against the exact (f64) result, on a layer of ResNet-50's last stage.
    #[test]
    fn winograd_in_f32_is_about_as_accurate_as_the_direct_method() {
        let (c, h, o) = (512, 7, 16);
        let g = ConvGeom::new(&[1, c, h, h], &[o, c, 3, 3], 1, 1).unwrap();
        let (x, wt) = (data(c * h * h, 13), data(o * c * 9, 14));
        let exact = naive(&g, &x, &wt);
        let (x32, w32): (Vec<f32>, Vec<f32>) =
            (x.iter().map(|&v| v as f32).collect(), wt.iter().map(|&v| v as f32).collect());
        let u = super::super::winograd::transform_weights(o, c, &w32);
        let err = |y: Vec<f32>| y.iter().zip(&exact).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        let direct = err(forward(&g, &x32, &w32, None, None));
        let winograd = err(forward(&g, &x32, &w32, Some(&u), None));
        let scale = exact.iter().fold(0.0, |m: f64, v| m.max(v.abs()));
        assert!(winograd < 2.0 * direct.max(1e-7 * scale), "winograd {winograd:e}, direct {direct:e}, scale {scale}");
    }

    #[test]
    fn epilogue_applies_scale_shift_residual_and_relu() {
        // Batch 1 splits the output channels between threads (3 = 2 + 1 here), batch 2 does not;
        // the 40 x 40 map takes five bands.
        for (n, c, h) in [(1, 2, 4), (2, 2, 4), (1, 64, 40)] {
            let g = ConvGeom::new(&[n, c, h, h], &[3, c, 3, 3], 1, 1).unwrap();
            let p = h * h;
            let (x, wt) = (data(n * c * p, 8), data(27 * c, 9));
            let r = data(n * 3 * p, 10);
            let (scale, shift) = ([2.0, -1.0, 0.5], [0.1, 0.2, -0.3]);
            let e =
                Epilogue { scale: &scale, shift: &shift, residual: Some(&r), relu: true, rounding: Bf16Rounding::None };
            let got = forward(&g, &x, &wt, None, Some(&e));
            let plain = naive(&g, &x, &wt);
            for (i, (got, y)) in got.iter().zip(&plain).enumerate() {
                let c = (i / p) % 3;
                assert!((got - (y * scale[c] + shift[c] + r[i]).max(0.0)).abs() < 1e-12, "n {n}, output {i}");
            }
        }
    }

    #[test]
    fn bad_shapes_are_named() {
        let e = ConvGeom::new(&[1, 3, 8, 8], &[4, 2, 3, 3], 1, 1).unwrap_err().to_string();
        assert!(e.contains("does not fit"), "{e}");
        let e = ConvGeom::new(&[1, 3, 2, 2], &[4, 3, 7, 7], 1, 1).unwrap_err().to_string();
        assert!(e.contains("smaller than the 7x7 kernel"), "{e}");
    }
}
