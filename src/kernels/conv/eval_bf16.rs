//! bf16 autocast's evaluation on `vdpbf16ps` or AMX tiles with the activations in bf16
//! storage: each fused convolution (batch norm, residual, ReLU) reads its input as bf16 and
//! writes bf16, as PyTorch's autocast hands a bf16 tensor from layer to layer.
//!
//! The generic path ([`super::forward`]) keeps autocast's values in f32 storage: each layer wrote
//! its f32 output to memory, read it back for the epilogue, and the next layer's packing read it
//! again and rounded every value to bf16 on the way into the kernel's pairs (the roundings alone
//! were a fifth of a batch-16 bf16 evaluation in `perf`). Here each task's f32 results stay in a
//! cache-sized buffer, the epilogue narrows them into the bf16 output (an exact truncation: its
//! last rounding made them bf16 values), and the next layer's packing only interleaves bf16
//! values. The products, their blocking and their order are the generic path's, so the bits
//! are too (the tests compare the two).
use super::dot::{DotWeights, lanes_product};
use super::epilogue::value;
use super::split::{MIN_PIXELS, Out, chunks, parts_of};
use super::stored::with_results;
use super::{Bf16Rounding, ConvGeom, MatRef, im2col};
use crate::kernels::dot_bf16::{self, Operand};
use half::bf16;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// [`super::Epilogue`] for bf16 storage: batch norm's scale and shift (f32), a residual in bf16
/// storage, ReLU, and autocast's roundings (`Output` or `ConvAndOutput`: the output is a bf16
/// value either way).
pub struct StoredEpilogue<'a> {
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub residual: Option<&'a [bf16]>,
    pub relu: bool,
    pub rounding: Bf16Rounding,
}

/// The fused evaluation of `x` (bf16 storage, or the f32 image a network starts from, rounded as
/// it is packed) by the packed weight `w`, then `e`, into bf16 storage.
///
/// Tasks: whole images where the batch covers the threads; otherwise each image's pixels are
/// shared between the threads (14 x 14 maps and larger), or its output channels.
pub fn forward<E: Operand>(g: &ConvGeom, x: &[E], w: &DotWeights, e: &StoredEpilogue) -> Vec<bf16> {
    let (p, img) = (g.pixels(), g.c_in * g.h * g.w);
    let total = g.n * g.c_out * p;
    assert!(
        x.len() == g.n * img && e.scale.len() == g.c_out && e.shift.len() == g.c_out,
        "bf16 conv: {g:?} with mismatched buffers"
    );
    assert!(e.residual.is_none_or(|r| r.len() == total), "bf16 conv: residual of another shape than {g:?}'s output");
    assert!(e.rounding != Bf16Rounding::None, "bf16 conv: an epilogue without autocast's roundings");
    let mut y: Vec<bf16> = Vec::with_capacity(total);
    if total == 0 {
        return y;
    }
    let parts = rayon::current_num_threads().div_ceil(g.n);
    let (pixel_parts, channel_parts) = match parts {
        1 => (1, 1),
        _ if p >= MIN_PIXELS => (parts, 1),
        _ => (1, parts),
    };
    // Whole tiles of 16 rows each where the channels are split (AMX keeps tiles from there).
    let block = g.c_out.div_ceil(channel_parts).next_multiple_of(16).min(g.c_out);
    let tasks: Vec<(usize, Range<usize>, Range<usize>)> = (0..g.n)
        .flat_map(|b| {
            // One part is the whole image.
            parts_of(g, pixel_parts).into_iter().flat_map(move |px| {
                (0..g.c_out).step_by(block).map(move |m0| (b, px.clone(), m0..(m0 + block).min(g.c_out)))
            })
        })
        .collect();
    let out = Out(y.as_mut_ptr() as *mut MaybeUninit<bf16>);
    tasks.into_par_iter().for_each(|(b, pixels, channels)| {
        let xb = &x[b * img..][..img];
        for chunk in chunks(g, pixels) {
            let n = chunk.len();
            with_results(channels.len() * n, false, |res| {
                product(g, xb, w, chunk.clone(), channels.clone(), super::uninit(res));
                for (i, row) in res.chunks_exact(n).enumerate() {
                    let c = channels.start + i;
                    let at = (b * g.c_out + c) * p + chunk.start;
                    // SAFETY: tasks are disjoint (image, pixels, channels) blocks and chunks
                    // disjoint pixels within them, so this span is written by this task alone;
                    // it lies in `y`'s `total` elements, and `y` outlives the loop.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out.at(at), n) };
                    let residual = e.residual.map(|r| &r[at..][..n]);
                    span(row, dst, residual, e, c);
                }
            })
        }
    });
    // SAFETY: the tasks cover every (image, channel, pixel) and each wrote all of its own.
    unsafe { y.set_len(total) };
    y
}

/// Output channels `channels` of pixels `px` of image `xb` into `res` (one row of `px.len()`
/// per channel).
fn product<E: Operand>(
    g: &ConvGeom,
    xb: &[E],
    w: &DotWeights,
    px: Range<usize>,
    channels: Range<usize>,
    res: &mut [MaybeUninit<f32>],
) {
    let (p, ckk, n) = (g.pixels(), g.ckk(), px.len());
    let run = |cols: &[E], cs: usize, res: &mut [MaybeUninit<f32>]| match w {
        // The pixels as the kernel's rows, the channels along the lanes, stored transposed.
        DotWeights::Lanes(wp) => {
            lanes_product(MatRef::new(cols, n, ckk, 1, cs), g.bf16_round, wp, channels.clone(), res, n)
        }
        DotWeights::Rows(wp) => {
            let rhs = MatRef::new(cols, ckk, n, cs, 1);
            dot_bf16::matmul_into(res, n, false, wp, channels.clone(), rhs, false, g.bf16_round)
        }
    };
    if g.pointwise() {
        return run(&xb[px.start..], p, res);
    }
    E::with_scratch(|cols| {
        cols.resize(ckk * n, E::ZERO);
        im2col(g, xb, px.start / g.ow, n / g.ow, cols);
        run(cols, n, res)
    })
}

/// One channel's span of results `src` into `dst`: [`value`] (the generic path's arithmetic),
/// narrowed exactly, in one loop compiled for the CPU's vector ISA.
fn span(src: &[f32], dst: &mut [MaybeUninit<bf16>], residual: Option<&[bf16]>, e: &StoredEpilogue, c: usize) {
    let (a, s) = (e.scale[c], e.shift[c]);
    crate::kernels::isa::with_isa(
        #[inline(always)]
        || match (e.relu, e.rounding == Bf16Rounding::ConvAndOutput) {
            (true, true) => span_as::<true, 2>(src, dst, residual, a, s),
            (true, false) => span_as::<true, 1>(src, dst, residual, a, s),
            (false, true) => span_as::<false, 2>(src, dst, residual, a, s),
            (false, false) => span_as::<false, 1>(src, dst, residual, a, s),
        },
    )
}

#[inline(always)]
fn span_as<const RELU: bool, const MODE: u8>(
    src: &[f32],
    dst: &mut [MaybeUninit<bf16>],
    residual: Option<&[bf16]>,
    a: f32,
    s: f32,
) {
    // `value` rounds its result to bf16 in both modes: its top half is the bf16 value.
    let narrow = |v: f32| bf16::from_bits((v.to_bits() >> 16) as u16);
    let widen = crate::kernels::bf16::to_f32;
    match residual {
        Some(r) => dst.iter_mut().zip(src.iter().zip(r)).for_each(|(d, (&v, &r))| {
            d.write(narrow(value::<RELU, MODE>(v, a, s, Some(widen(r)))));
        }),
        None => dst.iter_mut().zip(src).for_each(|(d, &v)| _ = d.write(narrow(value::<RELU, MODE>(v, a, s, None)))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::values;
    use super::super::{Epilogue, Prepared, forward as generic_forward};
    use super::*;
    use crate::kernels::bf16::{narrowed, to_f32};

    /// In bf16 storage, every layer shape ResNet-50 and AlexNet have (1x1, 3x3, strided, 7x7,
    /// 5x5 / 11x11 with a bias's `Output` rounding), every batch split (whole images, shared
    /// pixels, shared channels), with and without the residual and ReLU: the bits of the generic
    /// path's f32 storage, narrowed; from an f32 input (rounded as it is packed) and from the
    /// same values in bf16 storage alike.
    #[test]
    fn bf16_storage_gives_the_generic_paths_bits() {
        if !dot_bf16::enabled() {
            eprintln!("no vdpbf16ps path on this CPU: bf16 storage is not used");
            return;
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        // c_in, h (= w), c_out, k, stride, pad
        let cases = [
            (64, 14, 128, 1, 1, 0),
            (32, 14, 128, 3, 1, 1),
            (32, 7, 128, 3, 1, 1),
            (48, 7, 64, 1, 1, 0),
            (16, 32, 64, 3, 2, 1),
            (32, 30, 48, 1, 2, 0),
            (3, 40, 64, 7, 2, 3),
            (3, 45, 64, 11, 4, 2),
            (16, 13, 32, 5, 1, 2),
        ];
        for (c, h, o, k, s, pad) in cases {
            for n in [1, 2, 3] {
                let mut g = ConvGeom::new(&[n, c, h, h], &[o, c, k, k], s, pad).unwrap();
                (g.bf16_dot, g.bf16_round) = (true, true);
                let (x, wf) = (values(n * c * h * h, 1), values(o * c * k * k, 2));
                let residual = crate::kernels::bf16::rounded(&values(n * o * g.pixels(), 3));
                let (scale, shift) = (values(o, 4), values(o, 5));
                let x_bf16 = narrowed(&x);
                let x_rounded: Vec<f32> = x_bf16.iter().map(|&v| to_f32(v)).collect();
                for (relu, rounding, with_residual) in [
                    (true, Bf16Rounding::ConvAndOutput, true),
                    (false, Bf16Rounding::ConvAndOutput, false),
                    (true, Bf16Rounding::Output, false),
                ] {
                    let e = Epilogue {
                        scale: &scale,
                        shift: &shift,
                        residual: with_residual.then_some(&residual[..]),
                        relu,
                        rounding,
                    };
                    let residual_bf16 = narrowed(&residual);
                    let stored = StoredEpilogue {
                        scale: &scale,
                        shift: &shift,
                        residual: with_residual.then_some(&residual_bf16[..]),
                        relu,
                        rounding,
                    };
                    pool.install(|| {
                        let w = DotWeights::new(&g, &wf);
                        let want = narrowed(&generic_forward(&g, &x, &wf, Prepared::Dot(&w), Some(&e)));
                        let from_f32 = forward(&g, &x, &w, &stored);
                        let from_bf16 = forward(&ConvGeom { bf16_round: false, ..g }, &x_bf16, &w, &stored);
                        let from_rounded = forward(&g, &x_rounded, &w, &stored);
                        let bits = |v: &[bf16]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        let what = format!("{g:?}, {rounding:?}, relu {relu}, residual {with_residual}");
                        assert_eq!(bits(&from_f32), bits(&want), "from f32: {what}");
                        assert_eq!(bits(&from_bf16), bits(&want), "from bf16 storage: {what}");
                        assert_eq!(bits(&from_rounded), bits(&want), "from rounded f32: {what}");
                    });
                }
            }
        }
    }
}
