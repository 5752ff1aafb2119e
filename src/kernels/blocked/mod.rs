//! f32 evaluation in a channels-last layout (as PyTorch's `channels_last` on oneDNN runs it):
//! each image's map is `[H][W][C]`, so 16 channels of one pixel are one AVX-512 register. A
//! convolution is then a direct loop of fused multiply-adds over register tiles ([`kernel`])
//! that reads its input where it lies: no column buffer, no packing per call, batch norm folded
//! into the weights once, the residual add and ReLU applied while the tile is still in
//! registers, and zero borders kept around the maps a padded convolution reads. 3x3 stride-1
//! layers run by Winograd's F(4x4, 3x3) or F(2x2, 3x3) on the same tiles ([`winograd`]).
//!
//! Channels last rather than `NCHW16c` blocks (oneDNN's, MLAS's): a tile that sums over all
//! input channels then reads each of its pixels' channels as one contiguous run, where in
//! 16-channel blocks it would jump between `C/16` planes a map apart. (The two were compared only
//! while the tile still kept its accumulators on the stack, where both ran alike; channels last
//! was kept as the simpler of the two, and is the layout PyTorch's `channels_last` hands over.)
//!
//! Used for the f32 evaluation of a loaded ResNet-50 (`model::resnet_blocked`) on CPUs with
//! AVX-512; `ARTCULTURE_BLOCKED=0` turns it off (as does a lower `ARTCULTURE_ISA`), leaving the
//! matrix-product path of `kernels::conv`. Its sums run in another order than that path's, so
//! the two agree to f32 rounding, not bit for bit (checked in the tests and in `tests/parity`
//! against PyTorch).
mod conv;
mod kernel;
mod winograd;

pub use conv::BlockedConv;
pub use kernel::LANES;

use super::isa::{self, Isa};
use std::sync::atomic::{AtomicU8, Ordering};

/// Whether this CPU runs the blocked kernels: AVX-512 active (not lowered by `ARTCULTURE_ISA`).
pub fn available() -> bool {
    cfg!(target_arch = "x86_64") && isa::active() == Isa::Avx512
}

/// 0: not decided yet; 1: off; 2: on.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Whether f32 evaluation of a loaded ResNet-50 runs on the blocked layout: [`available`] and
/// not turned off with `ARTCULTURE_BLOCKED=0` (or [`set_enabled`]).
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        0 => {
            let off = std::env::var("ARTCULTURE_BLOCKED").is_ok_and(|v| v.trim() == "0");
            set_enabled(!off)
        }
        v => v == 2,
    }
}

/// Turns the blocked path on or off for the rest of the process (on only where [`available`]);
/// the tests turn it on this way. Returns whether it is on.
pub fn set_enabled(on: bool) -> bool {
    let on = on && available();
    ENABLED.store(1 + on as u8, Ordering::Relaxed);
    on
}

/// One cache line of f32s.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; LANES]);
// SAFETY: 16 f32s, 64 bytes at 64-byte alignment: no padding, every bit pattern valid.
unsafe impl bytemuck::Zeroable for Line {}
unsafe impl bytemuck::Pod for Line {}

/// f32s that start on a cache line, whatever their size (the process's allocator,
/// `crate::alloc::LineAligned`, does it for blocks of 4 KiB and more only). A `Vec<f32>` from
/// glibc starts 16 bytes past one, and then every 64-byte vector the tiles load or store spans
/// two lines, and two threads writing neighbouring channel groups of a pixel share a line (one
/// core ran the tiles 1.3x faster aligned; two threads at batch 1 gained nothing from the second
/// without).
#[derive(Debug, Clone, Default)]
pub(crate) struct Aligned(Vec<Line>);

impl Aligned {
    fn resize(&mut self, floats: usize) {
        self.0.resize(floats.div_ceil(LANES), Line([0.0; LANES]));
    }

    fn from_slice(v: &[f32]) -> Self {
        let mut a = Self::default();
        a.resize(v.len());
        a[..v.len()].copy_from_slice(v);
        a
    }
}

impl std::ops::Deref for Aligned {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        bytemuck::cast_slice(&self.0)
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        bytemuck::cast_slice_mut(&mut self.0)
    }
}

/// Pixels past a map's end that a tile may read besides two rows (a two-row tile's second row
/// past the last): a row's last tile runs on past the row, at most 14 pixels at stride 2 (their
/// results are dropped).
const SLACK_PIXELS: usize = 32;

/// One image's activation map, channels last: `[H + 2 pad][W + 2 pad][C]`, with zero borders.
#[derive(Debug, Default)]
pub struct Map {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub pad: usize,
    data: Aligned,
}

impl Map {
    /// Shapes this map (reusing its allocation) and zeroes its borders; the interior is left
    /// for the writer.
    pub fn reshape(&mut self, c: usize, h: usize, w: usize, pad: usize) {
        (self.c, self.h, self.w, self.pad) = (c, h, w, pad);
        let len = self.len() + (2 * self.padded_w() + SLACK_PIXELS) * c;
        if self.data.len() < len {
            self.data.resize(len);
        }
        if pad > 0 {
            self.zero_border();
        }
    }

    fn padded_w(&self) -> usize {
        self.w + 2 * self.pad
    }

    fn len(&self) -> usize {
        (self.h + 2 * self.pad) * self.padded_w() * self.c
    }

    fn zero_border(&mut self) {
        let (p, row, c, h) = (self.pad, self.padded_w() * self.c, self.c, self.h);
        let len = self.len();
        let data = &mut self.data[..len];
        data[..p * row].fill(0.0);
        data[(p + h) * row..].fill(0.0);
        for r in data[p * row..(p + h) * row].chunks_mut(row) {
            r[..p * c].fill(0.0);
            r[row - p * c..].fill(0.0);
        }
    }

    /// Index of pixel (`y`, `x`) (unpadded coordinates), channel 0.
    fn at(&self, y: usize, x: usize) -> usize {
        ((y + self.pad) * self.padded_w() + x + self.pad) * self.c
    }

    /// Fills this map from one image in `C x H x W` order.
    pub fn load_chw(&mut self, x: &[f32], c: usize, h: usize, w: usize, pad: usize) {
        self.reshape(c, h, w, pad);
        for y in 0..h {
            let i0 = self.at(y, 0);
            for (xx, px) in self.data[i0..i0 + w * c].chunks_mut(c).enumerate() {
                for (ch, v) in px.iter_mut().enumerate() {
                    *v = x[(ch * h + y) * w + xx];
                }
            }
        }
    }

    /// Writes this map out in `C x H x W` order.
    pub fn store_chw(&self, out: &mut [f32]) {
        let (h, w, c) = (self.h, self.w, self.c);
        for y in 0..h {
            let i0 = self.at(y, 0);
            for (xx, px) in self.data[i0..i0 + w * c].chunks(c).enumerate() {
                for (ch, &v) in px.iter().enumerate() {
                    out[(ch * h + y) * w + xx] = v;
                }
            }
        }
    }

    /// `y = max_pool(x, 3, stride 2, padding 1)` for a map of non-negative values (after ReLU)
    /// with a border of at least 1: there a zero border gives the maximum that PyTorch's
    /// implicit -inf padding gives, as every window holds at least one value of the map.
    pub fn max_pool_3x3s2_from(&mut self, x: &Map) {
        debug_assert!(x.pad >= 1);
        let (oh, ow) = ((x.h - 1) / 2 + 1, (x.w - 1) / 2 + 1);
        self.reshape(x.c, oh, ow, 0);
        let c = x.c;
        super::isa::with_isa(|| {
            for y in 0..oh {
                for xx in 0..ow {
                    let o = self.at(y, xx);
                    let m = &mut self.data[o..o + c];
                    m.fill(0.0);
                    for dy in 0..3 {
                        for dx in 0..3 {
                            // Map row 2y - 1 + dy; `at` adds the border back.
                            let i = x.at(2 * y + dy, 2 * xx + dx) - (x.padded_w() + 1) * c;
                            for (m, &v) in m.iter_mut().zip(&x.data[i..i + c]) {
                                *m = m.max(v);
                            }
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
