//! Evaluation of a batch smaller than the thread count, each image's output pixels shared
//! between the threads: on `vdpbf16ps`, and in f32 for the layers whose columns outweigh their
//! weight.
//!
//! [`super::forward`] splits such an image's output channels between the threads, so each
//! thread built the whole image's column buffer and packed all of it into the kernel's pairs
//! for its half of the channels: at batch 1 a sixth of ResNet-50's bf16 forward pass in `perf`
//! (im2col 8 %, packing 8 %), done twice. Here each thread takes a range of output pixels (whole
//! output rows where there is a column buffer) and computes every channel of it, so each
//! column and pair is made once. The weights, packed once per layer, are read by both threads.
//! Maps below [`MIN_PIXELS`] keep the channel split: their columns are few, and 49 pixels in
//! the kernel's blocks of six would leave one thread a block more than the other.
//!
//! In f32 (`gemm`), each product packs its weight itself, so sharing pixels costs every thread a
//! packing of the whole weight: only layers with more output pixels than channels and a column
//! buffer, or for a 1x1 stride-1 layer more input channels than output ones, share them
//! ([`applies_f32`]: ResNet-50's stem, its first 3x3/2 and 1x1/2 layers, and the 1x1 layers
//! that narrow a 56 x 56 or 28 x 28 map).
use super::dot::{DotWeights, lanes_product};
use super::stored::with_results;
use super::{ConvGeom, Epilogue, MatRef, im2col};
use crate::kernels::Element;
use crate::kernels::dot_bf16::{self, PANEL_COLS};
use crate::kernels::matmul_into;
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Output pixels per image from which the pixels are shared out (14 x 14 maps and larger).
pub const MIN_PIXELS: usize = 196;
/// Target size of one chunk's f32 results before they are written out.
const RESULT_BYTES: usize = 512 * 1024;

/// Whether [`forward`] computes `g` on `vdpbf16ps` (evaluation, fewer images than threads).
pub fn applies(g: &ConvGeom) -> bool {
    g.bf16_dot && g.n < rayon::current_num_threads() && g.pixels() >= MIN_PIXELS
}

/// Whether [`forward`] computes `g` in f32: fewer images than threads, more output pixels than
/// channels, and a column buffer or, for a 1x1 stride-1 layer, more input channels than output
/// ones: where each thread building (or reading) the whole image's columns for half the
/// channels costs more than each packing the whole weight. (`bench eval_layers --layer`, batch
/// 1, three alternating runs: `256x56x56 -> 64` 1.16-1.26 -> 0.78 ms; `64x56x56 -> 256` and
/// `128x28x28 -> 512`, whose weights outweigh their inputs, 0.10 ms slower shared, so they
/// keep the channel split.)
pub fn applies_f32(g: &ConvGeom) -> bool {
    !g.bf16_dot
        && g.n < rayon::current_num_threads()
        && g.pixels() >= MIN_PIXELS
        && (!g.pointwise() || g.c_in > g.c_out)
        && g.pixels() > g.c_out
}

/// The weight as [`forward`] multiplies by it.
#[derive(Clone, Copy)]
pub enum Weights<'a> {
    /// Packed for `vdpbf16ps`.
    Dot(&'a DotWeights),
    /// The f32 weight itself (`Cout x C*K*K`), for `gemm`.
    F32(&'a [f32]),
}

/// The output of every image of `x` into `y` (every element written), then `epilogue`, the
/// pixels of each image shared between the threads.
pub fn forward(g: &ConvGeom, x: &[f32], w: Weights, y: &mut [MaybeUninit<f32>], epilogue: Option<&Epilogue<f32>>) {
    let (p, img) = (g.pixels(), g.c_in * g.h * g.w);
    assert!(x.len() == g.n * img && y.len() == g.n * g.c_out * p, "split conv: {g:?} with mismatched buffers");
    let parts = rayon::current_num_threads().div_ceil(g.n.max(1));
    let out = Out(y.as_mut_ptr() as *mut f32);
    let tasks: Vec<(usize, Range<usize>)> =
        (0..g.n).flat_map(|b| parts_of(g, parts).into_iter().map(move |r| (b, r))).collect();
    tasks.into_par_iter().for_each(|(b, pixels)| {
        let xb = &x[b * img..][..img];
        for chunk in chunks(g, pixels) {
            let n = chunk.len();
            with_results(g.c_out * n, false, |res| {
                product(g, xb, w, chunk.clone(), super::uninit(res));
                // SAFETY: tasks and chunks are disjoint ranges of pixels, so this span of image
                // `b`'s channel `c` is written by this task alone, and it lies in `y` (asserted
                // above); `y` outlives the loop.
                let dst = |c: usize| unsafe {
                    std::slice::from_raw_parts_mut(out.at((b * g.c_out + c) * p + chunk.start), n)
                };
                match epilogue {
                    Some(e) => e.apply_spans(b, res, n, chunk.start, p, dst),
                    None => res.chunks_exact(n).enumerate().for_each(|(c, row)| dst(c).copy_from_slice(row)),
                }
            })
        }
    });
}

/// An output's first element, shared by tasks that write disjoint elements of it (see the
/// `SAFETY` notes of [`forward`], `super::eval_bf16::forward` and `winograd::forward`).
pub(crate) struct Out<T>(pub(crate) *mut T);

impl<T> Clone for Out<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Out<T> {}

// SAFETY: the tasks write disjoint elements through it.
unsafe impl<T: Send> Send for Out<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Out<T> {}

impl<T> Out<T> {
    /// # Safety
    /// `i` is within the output.
    pub(crate) unsafe fn at(self, i: usize) -> *mut T {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(i) }
    }
}

/// Each task's pixels: whole output rows where a column buffer is built, otherwise ranges on
/// the kernel's block size (whole panels where the pixels run along the lanes).
pub(super) fn parts_of(g: &ConvGeom, parts: usize) -> Vec<Range<usize>> {
    let p = g.pixels();
    if !g.pointwise() {
        let rows = g.oh.div_ceil(parts);
        return (0..g.oh).step_by(rows.max(1)).map(|r| r * g.ow..(r + rows).min(g.oh) * g.ow).collect();
    }
    let step = p.div_ceil(parts).next_multiple_of(align(g)).max(1);
    (0..p).step_by(step).map(|j| j..(j + step).min(p)).collect()
}

/// What a pixel range of a 1x1 convolution starts on: a panel where the pixels run along the
/// lanes, a block of the kernel's rows where they are its rows.
fn align(g: &ConvGeom) -> usize {
    if super::lanes(g) { 6 } else { PANEL_COLS }
}

/// A task's pixels in chunks whose f32 results stay in cache: bands of whole output rows whose
/// column buffer does too, where there is one.
pub(super) fn chunks(g: &ConvGeom, pixels: Range<usize>) -> Vec<Range<usize>> {
    let by_results = (RESULT_BYTES / (4 * g.c_out.max(1))).max(1);
    if !g.pointwise() {
        let rows = g.band_rows::<f32>().min(by_results.div_ceil(g.ow)).max(1);
        let (r0, r1) = (pixels.start / g.ow, pixels.end / g.ow);
        return (r0..r1).step_by(rows).map(|r| r * g.ow..(r + rows).min(r1) * g.ow).collect();
    }
    let step = by_results.next_multiple_of(align(g));
    pixels.clone().step_by(step).map(|j| j..(j + step).min(pixels.end)).collect()
}

/// Every output channel of pixels `px` of image `xb` into `res` (`Cout x px.len()`).
fn product(g: &ConvGeom, xb: &[f32], w: Weights, px: Range<usize>, res: &mut [MaybeUninit<f32>]) {
    let (p, ckk, n) = (g.pixels(), g.ckk(), px.len());
    let mut run = |cols: &[f32], cs: usize| match w {
        // The pixels as the kernel's rows, the channels along the lanes, stored transposed.
        Weights::Dot(DotWeights::Lanes(wp)) => {
            lanes_product(MatRef::new(cols, n, ckk, 1, cs), g.bf16_round, wp, 0..g.c_out, res, n)
        }
        Weights::Dot(DotWeights::Rows(wp)) => {
            let rhs = MatRef::new(cols, ckk, n, cs, 1);
            dot_bf16::matmul_into(res, n, false, wp, 0..g.c_out, rhs, false, g.bf16_round)
        }
        Weights::F32(w) => {
            let (lhs, rhs) = (MatRef::rows(w, g.c_out, ckk), MatRef::new(cols, ckk, n, cs, 1));
            matmul_into(res, n, false, lhs, rhs, Parallelism::None)
        }
    };
    if g.pointwise() {
        return run(&xb[px.start..], p);
    }
    f32::with_scratch(|cols| {
        cols.resize(ckk * n, f32::ZERO);
        im2col(g, xb, px.start / g.ow, n / g.ow, cols);
        run(cols, n)
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::values;
    use super::super::{Bf16Rounding, Prepared, forward as conv_forward};
    use super::*;

    /// One image with its pixels shared between two threads gives the bits of the same image
    /// computed whole by one thread (in a batch of two): both orientations of the products
    /// (pixels or channels along the lanes), 1x1, 3x3, strided and 7x7 layers, with and without
    /// the epilogue and its roundings.
    #[test]
    fn shared_pixels_give_the_bits_of_a_whole_image() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        // c_in, h (= w), c_out, k, stride, pad
        let cases = [
            (64, 14, 128, 1, 1, 0),
            (32, 14, 128, 3, 1, 1),
            (16, 16, 64, 1, 1, 0),
            (16, 32, 64, 3, 1, 1),
            (16, 32, 64, 3, 2, 1),
            (3, 40, 64, 7, 2, 3),
            (8, 48, 64, 1, 1, 0),
        ];
        for (c, h, o, k, s, p) in cases {
            let mut one = ConvGeom::new(&[1, c, h, h], &[o, c, k, k], s, p).unwrap();
            let mut two = ConvGeom::new(&[2, c, h, h], &[o, c, k, k], s, p).unwrap();
            (one.bf16_dot, one.bf16_round, two.bf16_dot, two.bf16_round) = (true, true, true, true);
            let (x, w) = (values(2 * c * h * h, 1), values(o * c * k * k, 2));
            let image = o * one.pixels();
            let residual = values(2 * image, 3);
            let (scale, shift) = (values(o, 4), values(o, 5));
            for (relu, rounding, with_residual) in [
                (true, Bf16Rounding::ConvAndOutput, true),
                (false, Bf16Rounding::Output, false),
                (true, Bf16Rounding::None, true),
            ] {
                let e = Epilogue {
                    scale: &scale,
                    shift: &shift,
                    residual: with_residual.then_some(&residual[..]),
                    relu,
                    rounding,
                };
                pool.install(|| {
                    assert!(applies(&one) && !applies(&two), "{one:?}");
                    for epilogue in [Some(&e), None] {
                        let shared = conv_forward(&one, &x[..x.len() / 2], &w, Prepared::None, epilogue);
                        let whole = conv_forward(&two, &x, &w, Prepared::None, epilogue);
                        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&shared),
                            bits(&whole[..image]),
                            "{one:?}, {rounding:?}, {}",
                            epilogue.is_some()
                        );
                    }
                });
            }
        }
    }

    /// In f32 (`gemm`), likewise: one image with its pixels shared gives the bits of the same
    /// image in a batch of two (one task per image), for the layers that share them, and the
    /// layers that do not (1x1 stride-1, fewer pixels than channels) are left to the channel split.
    #[test]
    fn f32_shared_pixels_give_the_bits_of_a_whole_image() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        // c_in, h (= w), c_out, k, stride, pad: the stem, a 3x3/2 and a 1x1/2 layer, an odd map,
        // a 1x1 stride-1 layer deeper in than out.
        let cases = [
            (3, 40, 16, 7, 2, 3),
            (16, 32, 24, 3, 2, 1),
            (32, 30, 48, 1, 2, 0),
            (8, 29, 8, 3, 1, 1),
            (64, 29, 16, 1, 1, 0),
        ];
        for (c, h, o, k, s, p) in cases {
            let one = ConvGeom::new(&[1, c, h, h], &[o, c, k, k], s, p).unwrap();
            let two = ConvGeom::new(&[2, c, h, h], &[o, c, k, k], s, p).unwrap();
            let (x, w) = (values(2 * c * h * h, 1), values(o * c * k * k, 2));
            let image = o * one.pixels();
            let residual = values(2 * image, 3);
            let (scale, shift) = (values(o, 4), values(o, 5));
            let e = Epilogue {
                scale: &scale,
                shift: &shift,
                residual: Some(&residual[..]),
                relu: true,
                rounding: Bf16Rounding::None,
            };
            pool.install(|| {
                assert!(applies_f32(&one) && !applies_f32(&two), "{one:?}");
                for epilogue in [Some(&e), None] {
                    let shared = conv_forward(&one, &x[..x.len() / 2], &w, Prepared::None, epilogue);
                    let whole = conv_forward(&two, &x, &w, Prepared::None, epilogue);
                    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&shared), bits(&whole[..image]), "{one:?}, {}", epilogue.is_some());
                }
            });
        }
        let pointwise = ConvGeom::new(&[1, 16, 32, 32], &[24, 16, 1, 1], 1, 0).unwrap();
        let deep = ConvGeom::new(&[1, 16, 32, 32], &[512, 16, 3, 3], 2, 1).unwrap();
        pool.install(|| assert!(!applies_f32(&pointwise) && !applies_f32(&deep)));
    }
}
