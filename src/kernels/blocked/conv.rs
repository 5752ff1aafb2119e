//! A convolution with its batch norm folded in, weights packed once for [`super::kernel`], run
//! over one image's [`Map`].
use super::kernel::{self, J, LANES, Tile};
use super::{Aligned, Map};
use rayon::prelude::*;
use std::ops::Range;

/// Output channels per tile.
const TILE_CHANNELS: usize = J * LANES;
/// The input a group of tiles reads while every output-channel group passes over it: kept in
/// the core's L2 (2 MiB here) beside the weights streaming through.
const INPUT_BAND_BYTES: usize = 384 * 1024;

/// `relu?(bn(conv(x)) + residual?)` for evaluation: `scale * conv(x, w) + shift` computed as
/// `conv(x, scale * w) + shift`.
#[derive(Debug, Clone)]
pub struct BlockedConv {
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// `[c_out / 32][k][k][c_in][32]`.
    w: Aligned,
    bias: Vec<f32>,
}

/// Why a convolution has no blocked form.
#[derive(Debug, thiserror::Error)]
#[error(
    "blocked conv: {c_out}x{c_in}x{k}x{k} stride {stride} does not fit the blocked layout (needs \
     output channels in 32s, stride 1 or 2)"
)]
pub struct Unfit {
    c_out: usize,
    c_in: usize,
    k: usize,
    stride: usize,
}

impl BlockedConv {
    /// Folds `scale` and `shift` (one per output channel) into `weight` (`c_out x c_in x k x k`)
    /// and packs it.
    pub fn new(
        weight: &[f32],
        [c_out, c_in, k]: [usize; 3],
        stride: usize,
        pad: usize,
        scale: &[f32],
        shift: &[f32],
    ) -> Result<Self, Unfit> {
        if c_out % TILE_CHANNELS != 0 || c_in == 0 || !(1..=2).contains(&stride) || k == 0 {
            return Err(Unfit { c_out, c_in, k, stride });
        }
        assert_eq!(weight.len(), c_out * c_in * k * k, "blocked conv: weight length");
        assert!(scale.len() == c_out && shift.len() == c_out, "blocked conv: one scale and shift per channel");
        let mut w = Vec::with_capacity(weight.len());
        for g in 0..c_out / TILE_CHANNELS {
            for tap in 0..k * k {
                for ci in 0..c_in {
                    w.extend((0..TILE_CHANNELS).map(|o| {
                        let co = g * TILE_CHANNELS + o;
                        weight[(co * c_in + ci) * k * k + tap] * scale[co]
                    }));
                }
            }
        }
        Ok(Self { c_in, c_out, k, stride, pad, w: Aligned::from_slice(&w), bias: shift.to_vec() })
    }

    /// The output size for an input of `h x w`.
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        ((h + 2 * self.pad - self.k) / self.stride + 1, (w + 2 * self.pad - self.k) / self.stride + 1)
    }

    /// Evaluates into `out`, which the caller has shaped (`c_out` channels, [`Self::out_size`],
    /// any border) and, with `residual`, filled with the residual to add in place. With
    /// `parallel` the output-channel groups are shared between rayon's threads; without, all of
    /// this runs on the calling thread (the caller spreads images).
    pub fn forward(&self, x: &Map, out: &mut Map, residual: bool, relu: bool, parallel: bool) {
        assert!(x.c == self.c_in && x.pad >= self.pad, "blocked conv: input map");
        let (oh, ow) = self.out_size(x.h, x.w);
        assert!(out.c == self.c_out && out.h == oh && out.w == ow, "blocked conv: output map");
        let groups = self.c_out / TILE_CHANNELS;
        let out_ptr = SharedPtr(out.data.as_mut_ptr());
        let shape: &Map = out;
        let run = |gs: Range<usize>| {
            // SAFETY: maps are made only where `enabled()` found AVX-512; the tasks below write
            // disjoint groups of channel blocks of `out`.
            unsafe { self.run_groups(x, out_ptr, shape, gs, residual, relu) }
        };
        let tasks = if parallel { rayon::current_num_threads().min(groups) } else { 1 };
        if tasks <= 1 {
            run(0..groups);
        } else {
            (0..tasks).into_par_iter().for_each(|t| run(t * groups / tasks..(t + 1) * groups / tasks));
        }
    }

    /// # Safety
    /// AVX-512 F is available; no other thread writes groups `gs` of `out`.
    unsafe fn run_groups(&self, x: &Map, out: SharedPtr, shape: &Map, gs: Range<usize>, residual: bool, relu: bool) {
        let (oh, ow) = self.out_size(x.h, x.w);
        let (s, k, c_in) = (self.stride, self.k, self.c_in);
        let xwp = x.padded_w();
        // Where the map's border is wider than the padding, the rows and columns to skip.
        let skip = x.pad - self.pad;
        let taps: Vec<usize> = (0..k).flat_map(|kh| (0..k).map(move |kw| (kh * xwp + kw) * c_in)).collect();
        let (owp, op) = (shape.padded_w(), shape.pad);
        // A 1x1, stride-1 convolution between unpadded maps reads and writes the map as one row
        // of pixels: whole tiles except at its very end.
        let flat = k == 1 && s == 1 && x.pad == 0 && op == 0;
        let (rows, row_len) = if flat { (1, oh * ow) } else { (oh, ow) };
        let r = if row_len >= 14 { 14 } else { 7 };
        let tiles_per_row = row_len.div_ceil(r);
        let per_tile_bytes = r * s * k * c_in * 4;
        let band = (INPUT_BAND_BYTES / per_tile_bytes.max(1)).max(1);
        let per_group = k * k * c_in * TILE_CHANNELS;
        let all: Vec<(usize, usize)> = (0..rows).flat_map(|y| (0..tiles_per_row).map(move |t| (y, t * r))).collect();
        let mut tiles = Vec::with_capacity(band);
        for chunk in all.chunks(band) {
            for g in gs.clone() {
                tiles.clear();
                tiles.extend(chunk.iter().map(|&(y, x0)| {
                    let (xi, oi) = if flat {
                        (x0 * c_in, x0 * self.c_out)
                    } else {
                        (((y * s + skip) * xwp + x0 * s + skip) * c_in, ((y + op) * owp + x0 + op) * self.c_out)
                    };
                    Tile {
                        x: x.data.as_ptr().wrapping_add(xi),
                        x_step: s * c_in,
                        c_in,
                        taps: taps.as_ptr(),
                        tap_n: taps.len(),
                        w: self.w.as_ptr().wrapping_add(g * per_group),
                        bias: self.bias.as_ptr().wrapping_add(g * TILE_CHANNELS),
                        out: out.0.wrapping_add(oi + g * TILE_CHANNELS),
                        out_step: self.c_out,
                        valid: r.min(row_len - x0),
                        residual,
                        relu,
                    }
                }));
                // SAFETY: as this function's; tiles read inside `x` and its slack, and write
                // inside group `g`'s channels of `out`.
                unsafe { kernel::run(&tiles, r) };
            }
        }
    }
}

/// `out`'s buffer, written by several threads at disjoint channel blocks.
#[derive(Clone, Copy)]
struct SharedPtr(*mut f32);
// SAFETY: each thread writes only its own groups' channel blocks (see `forward`).
unsafe impl Send for SharedPtr {}
unsafe impl Sync for SharedPtr {}
