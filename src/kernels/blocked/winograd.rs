//! Winograd's F(2x2, 3x3) and F(4x4, 3x3) on channels-last maps (the first is the method of
//! `kernels::winograd`, which runs it on `N x C x H x W` tensors): each `α x α` input block (`α
//! = m + 2` for `m x m` outputs), 16 channels a register, is transformed to `V = Bᵀ d B`; each
//! of the `α²` points is then a product `M_ξ (tiles x Cout) = V_ξ (tiles x C) U_ξ (C x Cout)`,
//! run by the register tiles of [`super::kernel`] as a 1x1 convolution whose "pixels" are the
//! output blocks; `Aᵀ M A` gives the outputs back, biased and rectified. F(2x2, 3x3) needs 2.25
//! times fewer multiply-adds than the direct tiles for a 3x3, stride-1 convolution, F(4x4, 3x3)
//! 4 times fewer, for 36 / 16 the transformed weights and a larger rounding error (Lavin and
//! Gray's points 0, ±1, ±2, given with F(4x4, 3x3)'s transforms below).
use super::kernel::{self, J, LANES, Tile};
use super::{Aligned, Map};
use crate::kernels::conv::SharedOut;
use crate::kernels::team::Team;
use std::ops::Range;

/// Stores `relu?(val + bias + residual?)` at `o`, where the residual already lies: the output
/// transforms' epilogue (a macro, so that it compiles inside their `target_feature`).
macro_rules! store_output {
    ($o:expr, $val:expr, $bias:expr, $residual:expr, $relu:expr) => {{
        let o: *mut f32 = $o;
        let mut val = _mm512_add_ps($val, $bias);
        if $residual {
            val = _mm512_add_ps(val, _mm512_loadu_ps(o));
        }
        if $relu {
            val = _mm512_max_ps(val, _mm512_setzero_ps());
        }
        _mm512_storeu_ps(o, val);
    }};
}

/// `Bᵀ d` of F(4x4, 3x3) for a 6-vector of registers, in 12 operations. A macro, not a
/// closure: a closure does not inherit its function's `target_feature`, and LLVM then calls it
/// with its registers passed through memory (the transforms 30 % of a 64-channel layer's
/// samples so, 15 % as macros).
macro_rules! bt6 {
    ($d:expr) => {{
        let d: [__m512; 6] = $d;
        let (four, five, two) = (_mm512_set1_ps(4.0), _mm512_set1_ps(5.0), _mm512_set1_ps(2.0));
        let a = _mm512_fnmadd_ps(four, d[2], d[4]);
        let b = _mm512_fnmadd_ps(four, d[1], d[3]);
        let c = _mm512_sub_ps(d[4], d[2]);
        let e = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));
        [
            _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4])),
            _mm512_add_ps(a, b),
            _mm512_sub_ps(a, b),
            _mm512_add_ps(c, e),
            _mm512_sub_ps(c, e),
            _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5])),
        ]
    }};
}

/// `Aᵀ m` of F(4x4, 3x3) for a 6-vector of registers (a macro as [`bt6`] is).
macro_rules! at6 {
    ($m:expr) => {{
        let m: [__m512; 6] = $m;
        let (s12, d12) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
        let (s34, d34) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
        [
            _mm512_add_ps(_mm512_add_ps(m[0], s12), s34),
            _mm512_fmadd_ps(_mm512_set1_ps(2.0), d34, d12),
            _mm512_fmadd_ps(_mm512_set1_ps(4.0), s34, s12),
            _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0), d34, d12), m[5]),
        ]
    }};
}

/// Which of Winograd's methods a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// F(2x2, 3x3): 16 points per 2x2 outputs.
    F2,
    /// F(4x4, 3x3): 36 points per 4x4 outputs.
    F4,
}

impl Form {
    /// Outputs per block side.
    fn m(self) -> usize {
        match self {
            Form::F2 => 2,
            Form::F4 => 4,
        }
    }

    /// Transformed points per block.
    fn points(self) -> usize {
        (self.m() + 2) * (self.m() + 2)
    }
}
/// Output channels per register tile.
const TILE_CHANNELS: usize = J * LANES;
/// Pixels from which one image's layer is shared between a team's threads by blocks rather than
/// by output channels (then each thread transforms every block: 1-5 % of the work again in
/// F(2x2, 3x3), ~15 % in F(4x4, 3x3)). `bench --child forward1`, two threads, eight
/// alternating rounds: by channels everywhere 31.6 ms, by blocks from 56 x 56 31.4, from 28 x
/// 28 30.5, from 14 x 14 (every Winograd layer of ResNet-50) 29.9.
const SHARED_PIXELS_FROM: usize = 14 * 14;
/// Transformed inputs and products of one band of blocks: kept within the core's L2.
const BAND_BYTES: usize = 1536 * 1024;

/// A 3x3, stride-1, padding-1 convolution with batch norm folded in, its weights transformed.
#[derive(Debug, Clone)]
pub struct WinogradConv {
    pub c_in: usize,
    pub c_out: usize,
    pub form: Form,
    /// `U_ξ` packed for the tiles: `[ξ][c_out / 32][c_in][32]`.
    u: Aligned,
    bias: Vec<f32>,
}

impl WinogradConv {
    /// From the weight (`c_out x c_in x 3 x 3`) already scaled by batch norm, and its shift.
    pub fn new(scaled: &[f32], c_out: usize, c_in: usize, shift: &[f32], form: Form) -> Self {
        debug_assert!(c_out.is_multiple_of(TILE_CHANNELS));
        let points = form.points();
        // `[co][ξ][ci]`.
        let t = match form {
            Form::F2 => crate::kernels::winograd::transform_weights(c_out, c_in, scaled),
            Form::F4 => transform_weights_f4(c_out, c_in, scaled),
        };
        let mut u = Vec::with_capacity(t.len());
        for xi in 0..points {
            for g in 0..c_out / TILE_CHANNELS {
                for ci in 0..c_in {
                    u.extend((0..TILE_CHANNELS).map(|o| t[((g * TILE_CHANNELS + o) * points + xi) * c_in + ci]));
                }
            }
        }
        Self { c_in, c_out, form, u: Aligned::from_slice(&u), bias: shift.to_vec() }
    }

    /// `relu?(conv(x) + shift + residual?)` into `out` (same size as `x`, any border; with
    /// `residual` it holds the residual); `x` has a border of at least 1. One step of `team`:
    /// on a map of [`SHARED_PIXELS_FROM`] pixels or more each part takes a share of the blocks
    /// with every output channel; on a smaller one each part takes a share of the output
    /// channels, for which it transforms every block of the input itself (~1-5 % of the work
    /// over again), so that a part reads and writes only buffers of its own thread and the step
    /// needs no join between its three phases either way.
    pub fn forward(&self, x: &Map, out: &mut Map, residual: bool, relu: bool, team: &Team) {
        assert!(x.c == self.c_in && x.pad >= 1, "winograd: input map");
        assert!(out.c == self.c_out && out.h == x.h && out.w == x.w, "winograd: output map");
        let out_ptr = SharedOut(out.data.as_mut_ptr());
        let shape: &Map = out;
        let groups = self.c_out / TILE_CHANNELS;
        let side = self.form.m();
        let blocks = x.h.div_ceil(side) * x.w.div_ceil(side);
        team.run(&|part, parts| {
            let (bs, gs) = if x.h * x.w >= SHARED_PIXELS_FROM {
                (part * blocks / parts..(part + 1) * blocks / parts, 0..groups)
            } else {
                (0..blocks, part * groups / parts..(part + 1) * groups / parts)
            };
            if !gs.is_empty() && !bs.is_empty() {
                // SAFETY: AVX-512 checked by the caller (`BlockedConv::forward`); each part
                // writes its own blocks or channels of the output.
                unsafe { self.forward_part(x, shape, out_ptr, bs, gs, residual, relu) }
            }
        })
    }

    /// [`Self::forward`]'s blocks `bs` (numbered row by row) and output channel groups `gs`, on
    /// this thread, in bands of blocks whose transformed inputs and products stay in L2.
    ///
    /// # Safety
    /// AVX-512 F is available; no other thread writes these blocks' channels of `out`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn forward_part(
        &self,
        x: &Map,
        shape: &Map,
        out: SharedOut<f32>,
        bs: Range<usize>,
        gs: Range<usize>,
        residual: bool,
        relu: bool,
    ) {
        let (side, points) = (self.form.m(), self.form.points());
        let tw = x.w.div_ceil(side);
        // Whole register tiles of 14 blocks.
        let band = (BAND_BYTES / (points * (self.c_in + self.c_out) * 4) / 14 * 14).max(14);
        let channels = gs.start * TILE_CHANNELS..gs.end * TILE_CHANNELS;
        crate::kernels::with_local(&BANDS, |bufs| {
            for first in bs.clone().step_by(band) {
                let tiles = band.min(bs.end - first);
                // A register tile past the band's last block reads on into the slack.
                bufs.v.resize((points * tiles + 14) * self.c_in);
                bufs.m.resize(points * tiles * self.c_out);
                let (v, m) = (SharedOut(bufs.v.as_mut_ptr()), SharedOut(bufs.m.as_mut_ptr()));
                // SAFETY: as this function's; `v` and `m` are this thread's.
                unsafe {
                    match self.form {
                        Form::F2 => self.transform_input(x, first, tw, tiles, v),
                        Form::F4 => self.transform_input_f4(x, first, tw, tiles, v),
                    }
                    self.products(tiles, gs.clone(), v, m);
                    self.transform_output(shape, out, first, tw, tiles, channels.clone(), m, residual, relu);
                }
            }
        })
    }

    /// `V = Bᵀ d B` for the `tiles` blocks from block `first` on, into `v` (`[ξ][tiles][c_in]`).
    #[target_feature(enable = "avx512f")]
    // The index picks one element of each of four arrays (a transposition).
    #[allow(clippy::needless_range_loop)]
    unsafe fn transform_input(&self, x: &Map, first: usize, tw: usize, tiles: usize, v: SharedOut<f32>) {
        use std::arch::x86_64::*;
        let c = self.c_in;
        let (xwp, skip) = (x.padded_w(), x.pad - 1);
        unsafe {
            for t in 0..tiles {
                let (ty, tx) = ((first + t) / tw, (first + t) % tw);
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
        let items: Vec<(usize, usize)> =
            (0..self.form.points()).flat_map(|xi| gs.clone().map(move |g| (xi, g))).collect();
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
        first: usize,
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
        let side = self.form.m();
        unsafe {
            for t in 0..tiles {
                let (ty, tx) = ((first + t) / tw, (first + t) % tw);
                for c0 in channels.clone().step_by(LANES) {
                    let bias = _mm512_loadu_ps(self.bias.as_ptr().add(c0));
                    let at = |xi: usize| _mm512_loadu_ps(m.0.add((xi * tiles + t) * co + c0));
                    // The output at (dy, dx) of the block, where it lies inside the map.
                    let store = |dy: usize, dx: usize, val: __m512| {
                        let (oy, ox) = (side * ty + dy, side * tx + dx);
                        if oy < shape.h && ox < shape.w {
                            store_output!(out.0.add(((oy + op) * owp + ox + op) * co + c0), val, bias, residual, relu);
                        }
                    };
                    match self.form {
                        Form::F2 => {
                            let a4 = |m: [__m512; 4]| {
                                let s = _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]);
                                [s, _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3])]
                            };
                            let cols: [[__m512; 2]; 4] =
                                std::array::from_fn(|j| a4([at(j), at(4 + j), at(8 + j), at(12 + j)]));
                            for dy in 0..2 {
                                let row = a4([cols[0][dy], cols[1][dy], cols[2][dy], cols[3][dy]]);
                                for (dx, val) in row.into_iter().enumerate() {
                                    store(dy, dx, val);
                                }
                            }
                        }
                        Form::F4 => {
                            // M A along each row, then Aᵀ along each column.
                            let mut rows = [[_mm512_setzero_ps(); 4]; 6];
                            for i in 0..6 {
                                rows[i] = at6!([
                                    at(i * 6),
                                    at(i * 6 + 1),
                                    at(i * 6 + 2),
                                    at(i * 6 + 3),
                                    at(i * 6 + 4),
                                    at(i * 6 + 5)
                                ]);
                            }
                            for dx in 0..4 {
                                let col = at6!([
                                    rows[0][dx],
                                    rows[1][dx],
                                    rows[2][dx],
                                    rows[3][dx],
                                    rows[4][dx],
                                    rows[5][dx]
                                ]);
                                for (dy, val) in col.into_iter().enumerate() {
                                    store(dy, dx, val);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// F(4x4, 3x3): Lavin and Gray's transforms for the points 0, ±1, ±2 and ∞,
///
/// ```text
///      | 4  0 -5  0  1  0 |        | 1/4     0     0  |       | 1  1  1  1  1  0 |
///      | 0 -4 -4  1  1  0 |        | -1/6 -1/6  -1/6  |  Aᵀ = | 0  1 -1  2 -2  0 |
/// Bᵀ = | 0  4 -4 -1  1  0 |,  G =  | -1/6  1/6  -1/6  |,      | 0  1  1  4  4  0 |
///      | 0 -2 -1  2  1  0 |        | 1/24  1/12  1/6  |       | 0  1 -1  8 -8  1 |
///      | 0  2 -1 -2  1  0 |        | 1/24 -1/12  1/6  |
///      | 0  4  0 -5  0  1 |        | 0     0     1    |
/// ```
///
/// (`blocked_convolutions_match_the_definition` checks both methods against the definition).
impl WinogradConv {
    /// `V = Bᵀ d B` for the `tiles` 6x6 blocks from block `first` on, into `v`
    /// (`[ξ][tiles][c_in]`). A block that reaches past the map's border reads zeros there: they
    /// reach only outputs past the map's edge, which are dropped.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    unsafe fn transform_input_f4(&self, x: &Map, first: usize, tw: usize, tiles: usize, v: SharedOut<f32>) {
        use std::arch::x86_64::*;
        let c = self.c_in;
        let (xwp, skip) = (x.padded_w(), x.pad - 1);
        let xhp = x.h + 2 * x.pad;
        unsafe {
            for t in 0..tiles {
                let (ty, tx) = ((first + t) / tw, (first + t) % tw);
                // The block's first row and column in the bordered map.
                let (r0, c0) = (4 * ty + skip, 4 * tx + skip);
                let inside = r0 + 6 <= xhp && c0 + 6 <= xwp;
                let base = x.data.as_ptr().add((r0 * xwp + c0) * c);
                for ch in (0..c).step_by(LANES) {
                    let mut rows = [[_mm512_setzero_ps(); 6]; 6];
                    // d B along each row, then Bᵀ along each column.
                    for i in 0..6 {
                        let mut d = [_mm512_setzero_ps(); 6];
                        for j in 0..6 {
                            if inside || (r0 + i < xhp && c0 + j < xwp) {
                                d[j] = _mm512_loadu_ps(base.add((i * xwp + j) * c + ch));
                            }
                        }
                        rows[i] = bt6!(d);
                    }
                    for j in 0..6 {
                        let col = bt6!([rows[0][j], rows[1][j], rows[2][j], rows[3][j], rows[4][j], rows[5][j]]);
                        for (i, val) in col.into_iter().enumerate() {
                            _mm512_storeu_ps(v.0.add(((i * 6 + j) * tiles + t) * c + ch), val);
                        }
                    }
                }
            }
        }
    }
}

/// `G g Gᵀ` of F(4x4, 3x3) for each (output, input) channel pair, computed in f64 and rounded
/// once: `[c_out][36][c_in]`.
fn transform_weights_f4(c_out: usize, c_in: usize, w: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    assert_eq!(w.len(), c_out * c_in * 9, "winograd: weight is not Cout x C x 3 x 3");
    const G: [[f64; 3]; 6] = [
        [0.25, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    let mut u = vec![0.0; c_out * 36 * c_in];
    if c_in == 0 {
        return u;
    }
    u.par_chunks_mut(36 * c_in).zip(w.par_chunks(9 * c_in)).for_each(|(u, w)| {
        for (c, g) in w.chunks_exact(9).enumerate() {
            // G g: 6 x 3.
            let gg: [[f64; 3]; 6] =
                std::array::from_fn(|i| std::array::from_fn(|b| (0..3).map(|a| G[i][a] * g[a * 3 + b] as f64).sum()));
            for i in 0..6 {
                for j in 0..6 {
                    u[(i * 6 + j) * c_in + c] = (0..3).map(|b| gg[i][b] * G[j][b]).sum::<f64>() as f32;
                }
            }
        }
    });
    u
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
