//! A convolution with its batch norm folded in, weights packed once for [`super::kernel`], run
//! over one image's [`Map`].
use super::kernel::{self, J, LANES, Tile};
use super::winograd::{Form, WinogradConv};
use super::{Aligned, Map};
use crate::kernels::conv::SharedOut;
use crate::kernels::team::Team;
use std::ops::Range;

/// Output channels per tile.
const TILE_CHANNELS: usize = J * LANES;
/// The input a group of tiles reads while every output-channel group passes over it: kept in
/// the core's L2 (2 MiB here) beside the weights streaming through.
const INPUT_BAND_BYTES: usize = 384 * 1024;
/// Output pixels from which a layer of one image shares its pixels between the threads rather
/// than its output channels: 28 x 28 maps and larger.
const SHARED_PIXELS_FROM: usize = 28 * 28;
/// Input channels from which a 3x3 layer stays direct. ResNet-50's 512-channel ones run on
/// 7 x 7 maps, whose 16 Winograd blocks fill 16 of a register tile pair's 28 rows: no fewer
/// multiply-adds than the direct tiles, and 16/9 the weights (16.8 MB a layer) to read per
/// image. `bench --child`, two threads, medians of alternating runs: one image 34.0 -> 32.9 ms,
/// 16 images 444 -> 446 ms.
const WINOGRAD_BELOW_CHANNELS: usize = 512;
/// Input channels up to which a Winograd layer runs F(4x4, 3x3) rather than F(2x2, 3x3): in
/// ResNet-50 the 64- and 128-channel ones, on 56 x 56 and 28 x 28 maps. (The 256-channel ones
/// run on 14 x 14 maps, where 4 x 4 blocks reach two pixels past the edge, and read 9.4 MB of
/// transformed weights against F(2x2, 3x3)'s 4.2.) `bench eval_layers --layer 3x3/1`, batch
/// 16, three alternating runs: 64x56x56 7.9-8.8 -> 5.5-5.9 ms, 128x28x28 6.7-8.0 -> 5.2-5.3,
/// 256x14x14 6.9-7.9 -> 7.4-8.3 (slower, kept on F2).
const F4_UP_TO_CHANNELS: usize = 128;
/// Weights up to which a layer runs tile by tile rather than group by group (see `run_part`):
/// half the core's L2, so that they stay there beside a tile's input and output. From 256 KiB
/// to 1 MiB (the 14 x 14 layers' 1x1 convolutions, 1 MB each, join): `bench --child`, two
/// threads, alternating rounds, forward16 393 -> 383 ms (5 rounds) and 399 -> 385 ms (7),
/// forward1 29.9 -> 29.4 ms (8); 2 MiB 386 ms.
const TILE_MAJOR_WEIGHT_BYTES: usize = 1024 * 1024;

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
    /// For a 3x3, stride-1, padding-1 convolution, its Winograd form, used in place of `w`
    /// (then empty). `bench eval_layers`, batch 16: 64x56x56 12.5 -> 7.2 ms, 128x28x28 11.8 ->
    /// 6.4, 256x14x14 11.3 -> 7.3, 512x7x7 13.9 -> 13.1.
    winograd: Option<WinogradConv>,
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
        let scaled: Vec<f32> =
            weight.chunks(c_in * k * k).zip(scale).flat_map(|(w, &s)| w.iter().map(move |v| v * s)).collect();
        let winograd = (k == 3
            && stride == 1
            && pad == 1
            && c_in < WINOGRAD_BELOW_CHANNELS
            // The transforms move 16 input channels a register.
            && c_in.is_multiple_of(LANES)
            && crate::kernels::winograd::enabled())
        .then(|| {
            let form = if c_in <= F4_UP_TO_CHANNELS { Form::F4 } else { Form::F2 };
            WinogradConv::new(&scaled, c_out, c_in, shift, form)
        });
        let mut w = Vec::with_capacity(weight.len());
        for g in 0..(c_out / TILE_CHANNELS) * usize::from(winograd.is_none()) {
            for tap in 0..k * k {
                for ci in 0..c_in {
                    w.extend((0..TILE_CHANNELS).map(|o| {
                        let co = g * TILE_CHANNELS + o;
                        scaled[(co * c_in + ci) * k * k + tap]
                    }));
                }
            }
        }
        Ok(Self { c_in, c_out, k, stride, pad, w: Aligned::from_slice(&w), bias: shift.to_vec(), winograd })
    }

    /// The output size for an input of `h x w`.
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        ((h + 2 * self.pad - self.k) / self.stride + 1, (w + 2 * self.pad - self.k) / self.stride + 1)
    }

    /// Evaluates into `out`, which the caller has shaped (`c_out` channels, [`Self::out_size`],
    /// any border) and, with `residual`, filled with the residual to add in place, as one step
    /// of `team` (a team of one where the caller spreads images instead).
    ///
    /// # Panics
    /// Where the CPU cannot run the tiles ([`super::available`]; callers check it first).
    pub fn forward(&self, x: &Map, out: &mut Map, residual: bool, relu: bool, team: &Team) {
        assert!(super::available(), "blocked conv: the tiles need AVX-512");
        assert!(x.c == self.c_in && x.pad >= self.pad, "blocked conv: input map");
        let (oh, ow) = self.out_size(x.h, x.w);
        assert!(out.c == self.c_out && out.h == oh && out.w == ow, "blocked conv: output map");
        if let Some(wg) = &self.winograd {
            return wg.forward(x, out, residual, relu, team);
        }
        let groups = self.c_out / TILE_CHANNELS;
        let out_ptr = SharedOut(out.data.as_mut_ptr());
        let shape: &Map = out;
        let run = |gs: Range<usize>, part: (usize, usize)| {
            // SAFETY: AVX-512 checked above; the tasks below write disjoint groups of channels, or
            // disjoint pixels, of `out`.
            unsafe { self.run_part(x, out_ptr, shape, gs, part, residual, relu) }
        };
        if oh * ow >= SHARED_PIXELS_FROM {
            // Large maps: each thread takes a share of the pixels with every output channel, so
            // that it reads only its share of the input and writes its own lines of the output.
            team.run(&|part, parts| run(0..groups, (part, parts)));
        } else {
            // A part may get no group (more threads than groups).
            team.run(&|part, parts| run(part * groups / parts..(part + 1) * groups / parts, (0, 1)));
        }
    }

    /// Output-channel groups `gs` of the `part.0`-th of `part.1` equal shares of the tiles.
    ///
    /// # Safety
    /// AVX-512 F is available; no other thread writes these pixels' groups `gs` of `out`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_part(
        &self,
        x: &Map,
        out: SharedOut<f32>,
        shape: &Map,
        gs: Range<usize>,
        (part, parts): (usize, usize),
        residual: bool,
        relu: bool,
    ) {
        let (oh, ow) = self.out_size(x.h, x.w);
        let (s, k, c_in) = (self.stride, self.k, self.c_in);
        let xwp = x.padded_w();
        // Where the map's border is wider than the padding, the rows and columns to skip.
        let skip = x.pad - self.pad;
        // One tap per kernel row: along a row of the map, the `k` pixels a kernel row covers hold
        // their channels one after another, `k * c_in` contiguous values that the packed weights
        // (`[kh][kw][c_in]`) follow in the same order. (The stem's 49 taps of 3 channels become
        // 7 of 21.)
        let taps: Vec<usize> = (0..k).map(|kh| kh * xwp * c_in).collect();
        let (owp, op) = (shape.padded_w(), shape.pad);
        // A 1x1, stride-1 convolution between unpadded maps reads and writes the map as one row
        // of pixels: whole tiles except at its very end.
        let flat = k == 1 && s == 1 && x.pad == 0 && op == 0;
        let (rows, row_len) = if flat { (1, oh * ow) } else { (oh, ow) };
        // 14 pixels of a row, or 7 of each of two rows where rows are short.
        let (per_row, tile_rows) = if row_len >= 14 { (14, 1) } else { (7, 2) };
        let tiles_per_row = row_len.div_ceil(per_row);
        let per_tile_bytes = 14 * s * k * c_in * 4;
        let band = (INPUT_BAND_BYTES / per_tile_bytes.max(1)).max(1);
        let per_group = k * k * c_in * TILE_CHANNELS;
        let all: Vec<(usize, usize)> =
            (0..rows).step_by(tile_rows).flat_map(|y| (0..tiles_per_row).map(move |t| (y, t * per_row))).collect();
        let all = &all[part * all.len() / parts..(part + 1) * all.len() / parts];
        // Where a tile starts in the input and in the output.
        let at = |&(y, x0): &(usize, usize)| {
            if flat {
                (x0 * c_in, x0 * self.c_out)
            } else {
                (((y * s + skip) * xwp + x0 * s + skip) * c_in, ((y + op) * owp + x0 + op) * self.c_out)
            }
        };
        let tile = |t: &(usize, usize), g: usize, next: *const f32| {
            let (y, x0) = *t;
            let (xi, oi) = at(t);
            Tile {
                x: x.data.as_ptr().wrapping_add(xi),
                x_step: s * c_in,
                x_row: s * xwp * c_in,
                c_in: k * c_in,
                taps: taps.as_ptr(),
                tap_n: taps.len(),
                w: self.w.as_ptr().wrapping_add(g * per_group),
                next,
                bias: self.bias.as_ptr().wrapping_add(g * TILE_CHANNELS),
                out: out.0.wrapping_add(oi + g * TILE_CHANNELS),
                out_step: self.c_out,
                out_row: owp * self.c_out,
                valid_cols: per_row.min(row_len - x0),
                valid_rows: tile_rows.min(rows - y),
                residual,
                relu,
            }
        };
        // Where all the weights stay in L2, each tile's pixels get every output channel before
        // the next tile's: their input stays in L1 and each output pixel's lines are written
        // together, in order. Otherwise each group's weights stay in L2 while a band of tiles
        // passes over them.
        let tile_major = per_group * (self.c_out / TILE_CHANNELS) * 4 <= TILE_MAJOR_WEIGHT_BYTES;
        let mut tiles = Vec::with_capacity(band * gs.len());
        let chunks = all.len().div_ceil(band);
        for (c, chunk) in all.chunks(band).enumerate() {
            tiles.clear();
            if tile_major {
                // The weights stay in L2; what comes from memory is the maps. Each group of a
                // tile fetches its share of the next tile's input or output lines (whichever is
                // larger: the output's are read back as the residual or before being written).
                for (i, t) in chunk.iter().enumerate() {
                    let next = all.get(c * band + i + 1).map(|n| {
                        let (xi, oi) = at(n);
                        if self.c_out >= c_in * k * s {
                            out.0.cast_const().wrapping_add(oi)
                        } else {
                            x.data.as_ptr().wrapping_add(xi)
                        }
                    });
                    let share = per_group / 4;
                    tiles.extend(
                        gs.clone()
                            .enumerate()
                            .map(|(j, g)| tile(t, g, next.map_or(std::ptr::null(), |n| n.wrapping_add(j * share)))),
                    );
                }
            } else {
                for g in gs.clone() {
                    // The next group's weights, a quarter of them by each of this group's tiles
                    // after the first (which may wait on its own), or by each tile where there
                    // are only four (a 7 x 7 map's).
                    let next = if g + 1 < gs.end { Some(g + 1) } else { (c + 1 < chunks).then_some(gs.start) };
                    let from = usize::from(chunk.len() > 4);
                    tiles.extend(chunk.iter().enumerate().map(|(i, t)| {
                        let quarter = next
                            .filter(|_| (from..from + 4).contains(&i))
                            .map(|n| n * per_group + (i - from) * per_group / 4);
                        tile(t, g, quarter.map_or(std::ptr::null(), |at| self.w.as_ptr().wrapping_add(at)))
                    }));
                }
            }
            // SAFETY: as this function's; tiles read inside `x` and its slack, and write inside
            // their own pixels and groups of `out`.
            unsafe { kernel::run(&tiles, per_row) };
        }
    }
}
