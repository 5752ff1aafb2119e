//! Winograd's F(2x2, 3x3) on channels-last maps (the method of `kernels::winograd`, which runs
//! it on `N x C x H x W` tensors): each 4x4 input block, 16 channels a register, is transformed
//! to `V = Bᵀ d B`; each of the 16 points is then a product `M_ξ (tiles x Cout) = V_ξ (tiles x
//! C) U_ξ (C x Cout)`, run by the register tiles of [`super::kernel`] as a 1x1 convolution whose
//! "pixels" are the 2x2 output blocks; `Aᵀ M A` gives the outputs back, biased and rectified.
//! 2.25 times fewer multiply-adds than the direct tiles for a 3x3, stride-1 convolution.
use super::kernel::{self, J, LANES, Tile};
use super::{Aligned, Map};
use crate::kernels::conv::SharedOut;
use crate::kernels::team::Team;
use std::ops::Range;

/// Transformed points per 2x2 output block.
const POINTS: usize = 16;
/// Output channels per register tile.
const TILE_CHANNELS: usize = J * LANES;
/// Transformed inputs and products of one band of block rows: kept within the core's L2.
const BAND_BYTES: usize = 1536 * 1024;

/// A 3x3, stride-1, padding-1 convolution with batch norm folded in, its weights transformed.
#[derive(Debug, Clone)]
pub struct WinogradConv {
    pub c_in: usize,
    pub c_out: usize,
    /// `U_ξ` packed for the tiles: `[ξ][c_out / 32][c_in][32]`.
    u: Aligned,
    bias: Vec<f32>,
}

impl WinogradConv {
    /// From the weight (`c_out x c_in x 3 x 3`) already scaled by batch norm, and its shift.
    pub fn new(scaled: &[f32], c_out: usize, c_in: usize, shift: &[f32]) -> Self {
        debug_assert!(c_out.is_multiple_of(TILE_CHANNELS));
        // `[co][ξ][ci]`.
        let t = crate::kernels::winograd::transform_weights(c_out, c_in, scaled);
        let mut u = Vec::with_capacity(t.len());
        for xi in 0..POINTS {
            for g in 0..c_out / TILE_CHANNELS {
                for ci in 0..c_in {
                    u.extend((0..TILE_CHANNELS).map(|o| t[((g * TILE_CHANNELS + o) * POINTS + xi) * c_in + ci]));
                }
            }
        }
        Self { c_in, c_out, u: Aligned::from_slice(&u), bias: shift.to_vec() }
    }

    /// `relu?(conv(x) + shift + residual?)` into `out` (same size as `x`, any border; with
    /// `residual` it holds the residual); `x` has a border of at least 1. One step of `team`:
    /// each part takes a share of the output channels, for which it transforms every block of
    /// the input itself (~1-5 % of the work over again), so that a part reads and writes only
    /// buffers of its own thread and the step needs no join between its three phases.
    pub fn forward(&self, x: &Map, out: &mut Map, residual: bool, relu: bool, team: &Team) {
        assert!(x.c == self.c_in && x.pad >= 1, "winograd: input map");
        assert!(out.c == self.c_out && out.h == x.h && out.w == x.w, "winograd: output map");
        let out_ptr = SharedOut(out.data.as_mut_ptr());
        let shape: &Map = out;
        let groups = self.c_out / TILE_CHANNELS;
        team.run(&|part, parts| {
            let gs = part * groups / parts..(part + 1) * groups / parts;
            if !gs.is_empty() {
                // SAFETY: AVX-512 checked by the caller (`BlockedConv::forward`); each part
                // writes its own channels of the output.
                unsafe { self.forward_groups(x, shape, out_ptr, gs, residual, relu) }
            }
        })
    }

    /// [`Self::forward`]'s output channel groups `gs`, on this thread.
    ///
    /// # Safety
    /// AVX-512 F is available; no other thread writes these channels of `out`.
    unsafe fn forward_groups(
        &self,
        x: &Map,
        shape: &Map,
        out: SharedOut<f32>,
        gs: Range<usize>,
        residual: bool,
        relu: bool,
    ) {
        let (th, tw) = (x.h.div_ceil(2), x.w.div_ceil(2));
        let row_bytes = tw * POINTS * (self.c_in + self.c_out) * 4;
        let band_th = (BAND_BYTES / row_bytes).clamp(1, th);
        let channels = gs.start * TILE_CHANNELS..gs.end * TILE_CHANNELS;
        crate::kernels::with_local(&BANDS, |bufs| {
            for ty0 in (0..th).step_by(band_th) {
                let rows = band_th.min(th - ty0);
                let tiles = rows * tw;
                // A register tile past the band's last block reads on into the slack.
                bufs.v.resize((POINTS * tiles + 14) * self.c_in);
                bufs.m.resize(POINTS * tiles * self.c_out);
                let (v, m) = (SharedOut(bufs.v.as_mut_ptr()), SharedOut(bufs.m.as_mut_ptr()));
                // SAFETY: as this function's; `v` and `m` are this thread's.
                unsafe {
                    self.transform_input(x, ty0, tw, tiles, v);
                    self.products(tiles, gs.clone(), v, m);
                    self.transform_output(shape, out, ty0, tw, tiles, channels.clone(), m, residual, relu);
                }
            }
        })
    }

    /// `V = Bᵀ d B` for the blocks of the band starting at block row `ty0`, into `v`
    /// (`[ξ][tiles][c_in]`).
    #[target_feature(enable = "avx512f")]
    // The index picks one element of each of four arrays (a transposition).
    #[allow(clippy::needless_range_loop)]
    unsafe fn transform_input(&self, x: &Map, ty0: usize, tw: usize, tiles: usize, v: SharedOut<f32>) {
        use std::arch::x86_64::*;
        let c = self.c_in;
        let (xwp, skip) = (x.padded_w(), x.pad - 1);
        unsafe {
            for t in 0..tiles {
                let (ty, tx) = (ty0 + t / tw, t % tw);
                let base = x.data.as_ptr().add(((2 * ty + skip) * xwp + 2 * tx + skip) * c);
                for c0 in (0..c).step_by(LANES) {
                    let d: [[__m512; 4]; 4] = std::array::from_fn(|i| {
                        std::array::from_fn(|j| _mm512_loadu_ps(base.add((i * xwp + j) * c + c0)))
                    });
                    // Bᵀ along the rows, then B along the columns.
                    let b4 = |d: [__m512; 4]| {
                        [
                            _mm512_sub_ps(d[0], d[2]),
                            _mm512_add_ps(d[1], d[2]),
                            _mm512_sub_ps(d[2], d[1]),
                            _mm512_sub_ps(d[1], d[3]),
                        ]
                    };
                    let cols: [[__m512; 4]; 4] = std::array::from_fn(|j| b4([d[0][j], d[1][j], d[2][j], d[3][j]]));
                    for i in 0..4 {
                        let row = b4([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
                        for (j, val) in row.into_iter().enumerate() {
                            _mm512_storeu_ps(v.0.add(((i * 4 + j) * tiles + t) * c + c0), val);
                        }
                    }
                }
            }
        }
    }

    /// `M_ξ = V_ξ U_ξ` for every point and the output channel groups `gs`.
    unsafe fn products(&self, tiles: usize, gs: Range<usize>, v: SharedOut<f32>, m: SharedOut<f32>) {
        const ZEROS: [f32; TILE_CHANNELS] = [0.0; TILE_CHANNELS];
        let (c, co, groups) = (self.c_in, self.c_out, self.c_out / TILE_CHANNELS);
        let taps = [0usize];
        let mut list = Vec::with_capacity(tiles.div_ceil(14));
        let items: Vec<(usize, usize)> = (0..POINTS).flat_map(|xi| gs.clone().map(move |g| (xi, g))).collect();
        let u_at = |&(xi, g): &(usize, usize)| (xi * groups + g) * c * TILE_CHANNELS;
        for (k, item) in items.iter().enumerate() {
            let (xi, g) = *item;
            // The next item's weights, a quarter of them by each register tile (as in
            // `BlockedConv::run_part`).
            let next = items.get(k + 1).map(u_at);
            list.clear();
            list.extend((0..tiles).step_by(14).enumerate().map(|(i, t0)| Tile {
                x: v.0.wrapping_add((xi * tiles + t0) * c),
                x_step: c,
                x_row: 0,
                c_in: c,
                taps: taps.as_ptr(),
                tap_n: 1,
                w: self.u.as_ptr().wrapping_add(u_at(item)),
                next: match next {
                    Some(at) if i < 4 => self.u.as_ptr().wrapping_add(at + i * c * TILE_CHANNELS / 4),
                    _ => std::ptr::null(),
                },
                bias: ZEROS.as_ptr(),
                out: m.0.wrapping_add((xi * tiles + t0) * co + g * TILE_CHANNELS),
                out_step: co,
                out_row: 0,
                valid_cols: 14.min(tiles - t0),
                valid_rows: 1,
                residual: false,
                relu: false,
            }));
            // SAFETY: as `forward`'s; a tile past the band's last block reads into `v`'s slack.
            unsafe { kernel::run(&list, 14) };
        }
    }

    /// `Y = Aᵀ M A` + bias (+ the residual in the output), rectified, for output channels
    /// `channels` of every block, into the output's valid pixels.
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_output(
        &self,
        shape: &Map,
        out: SharedOut<f32>,
        ty0: usize,
        tw: usize,
        tiles: usize,
        channels: Range<usize>,
        m: SharedOut<f32>,
        residual: bool,
        relu: bool,
    ) {
        use std::arch::x86_64::*;
        let co = self.c_out;
        let (owp, op) = (shape.padded_w(), shape.pad);
        unsafe {
            for t in 0..tiles {
                let (ty, tx) = (ty0 + t / tw, t % tw);
                for c0 in channels.clone().step_by(LANES) {
                    let mv: [__m512; POINTS] =
                        std::array::from_fn(|xi| _mm512_loadu_ps(m.0.add((xi * tiles + t) * co + c0)));
                    let a4 = |m: [__m512; 4]| {
                        [_mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]), _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3])]
                    };
                    let cols: [[__m512; 2]; 4] = std::array::from_fn(|j| a4([mv[j], mv[4 + j], mv[8 + j], mv[12 + j]]));
                    let bias = _mm512_loadu_ps(self.bias.as_ptr().add(c0));
                    for dy in 0..2 {
                        let row = a4([cols[0][dy], cols[1][dy], cols[2][dy], cols[3][dy]]);
                        for (dx, val) in row.into_iter().enumerate() {
                            let (oy, ox) = (2 * ty + dy, 2 * tx + dx);
                            if oy < shape.h && ox < shape.w {
                                let o = out.0.add(((oy + op) * owp + ox + op) * co + c0);
                                let mut val = _mm512_add_ps(val, bias);
                                if residual {
                                    val = _mm512_add_ps(val, _mm512_loadu_ps(o));
                                }
                                if relu {
                                    val = _mm512_max_ps(val, _mm512_setzero_ps());
                                }
                                _mm512_storeu_ps(o, val);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One thread's transformed inputs and products, kept between layers and calls.
#[derive(Default)]
struct Buffers {
    v: Aligned,
    m: Aligned,
}

thread_local! {
    static BANDS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
}
