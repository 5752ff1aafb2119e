//! Weight gradients of small maps on `vdpbf16ps` as one product over several images' pixels
//! ([`crate::kernels::dot_bf16::matmul_packed_into`] of stacked operands), where one product per
//! image was only as deep as its pixels: 25 pairs on a 7 x 7 map, after which the thread's whole
//! `Cout x C*K*K` accumulator went through memory again (the last stage's weight gradients ran
//! at 55-65 % of their forward passes' rate, `bench conv_layers` under bf16).
use super::{ConvGeom, MatRef, f32_uninit, im2col, sum_into};
use crate::kernels::Float;
use crate::kernels::dot_bf16::{Operand, PackedLhs, PackedRhs, matmul_packed_into};
use gemm::Parallelism;
use std::cell::RefCell;
use std::ops::Range;

/// Pixels a group of images stacks up to: five 14 x 14 maps or a thread's eight 7 x 7 ones at
/// batch 16, a product 200-500 pairs deep, while a group's packed columns stay a few MiB. 1024
/// against 512 (two 14 x 14 maps): the 14 x 14 weight gradients 0-20 % faster, the 7 x 7 ones
/// level (`bench conv_layers`, two alternating runs).
const STACKED_PIXELS: usize = 1024;

/// How many images one weight-gradient product takes on `vdpbf16ps`: 1 (a product per image)
/// unless `g`'s maps are small enough for two or more to stack (see [`STACKED_PIXELS`]).
pub(super) fn images_per_group(g: &ConvGeom) -> usize {
    if !g.bf16_dot || g.pixels() == 0 { 1 } else { (STACKED_PIXELS / g.pixels().max(1)).max(1) }
}

/// `acc += sum over images of dY_b cols(X_b)ᵀ` (`Cout x C*K*K`, f32), the images' pixels
/// stacked along the inner dimension of one product. `x` and `dy` hold bf16 values (in bf16 or
/// f32 storage); `T` is f32 (the accumulator of the f32 path's generic code).
pub(super) fn group_grad<T: Float, E: Operand>(
    g: &ConvGeom,
    x: &[E],
    dy: &[E],
    images: Range<usize>,
    acc: &mut Vec<T>,
    par: Parallelism,
) {
    let (p, ckk, img) = (g.pixels(), g.ckk(), g.c_in * g.h * g.w);
    let (lhs_buf, rhs_buf) = BUFFERS.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let lhs = PackedLhs::stacked_in(
        &images.clone().map(|b| MatRef::rows(&dy[b * g.c_out * p..][..g.c_out * p], g.c_out, p)).collect::<Vec<_>>(),
        lhs_buf,
    );
    let rhs = if g.pointwise() {
        // The input is its own columns (`C x P` per image), read through its transpose.
        let parts: Vec<_> = images.map(|b| MatRef::transposed(&x[b * img..][..img], p, g.c_in)).collect();
        PackedRhs::stacked_in(&parts, rhs_buf)
    } else {
        E::with_scratch(|cols| {
            // Each image's columns whole (one band: the map is small).
            let one = ckk * p;
            cols.resize(images.len() * one, E::ZERO);
            for (b, c) in images.zip(cols.chunks_mut(one.max(1))) {
                im2col(g, &x[b * img..][..img], 0, g.oh, c);
            }
            let parts: Vec<_> = cols.chunks(one.max(1)).map(|c| MatRef::transposed(c, p, ckk)).collect();
            PackedRhs::stacked_in(&parts, rhs_buf)
        })
    };
    let parallel = !matches!(par, Parallelism::None);
    sum_into(acc, g.c_out * ckk, |dst, accumulate| {
        let dst = f32_uninit(dst).expect("weight gradient on vdpbf16ps: the accumulator is f32");
        matmul_packed_into(dst, ckk, accumulate, &lhs, &rhs, parallel)
    });
    BUFFERS.with(|b| *b.borrow_mut() = (lhs.into_pairs(), rhs.into_pairs()));
}

thread_local! {
    /// The packed operands' memory, kept between groups and layers: a fresh buffer was zeroed
    /// and then overwritten for every group (`memset` 0.75 % of a bf16 training step).
    static BUFFERS: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}
