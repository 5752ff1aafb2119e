//! A convolution's weights packed for the `vdpbf16ps` kernel ([`crate::kernels::dot_bf16`]),
//! in the orientation that fills its vector lanes, and the forward products of the
//! orientation that puts the output channels along them.
//!
//! The kernel computes 6 rows by 64 columns at a time, the 64 columns along its vector lanes.
//! With the pixels as columns (weights x columns, [`super::product`]) a 7 x 7 map fills 49 of a
//! panel's 64 lanes and a 14 x 14 one 196 of 256: 23 % of the multiply-adds of ResNet-50's last
//! two stages, half its work, went to padding (`dot_bf16` tests: 165 against 220 GFLOP/s on one
//! core). With the output channels as columns (pixels x weights^T, stored transposed) every panel
//! is full: our models' channel counts are multiples of 64.
use super::{ConvGeom, Epilogue, MatRef, im2col, tasks_per_image};
use crate::kernels::Element;
use crate::kernels::dot_bf16::{self, Operand, PANEL_COLS, PackedLhs, PackedRhs};
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// A weight (`Cout x C*K*K`, bf16 values) packed for the kernel: a loaded model keeps it per
/// layer, so that no evaluation repacks it (at batch 1, packing every weight per call made
/// ResNet-50's bf16 forward pass a third slower than f32's).
pub enum DotWeights {
    /// Output channels as the kernel's rows, pixels along the lanes.
    Rows(PackedLhs),
    /// Output channels along the lanes ([`lanes`]).
    Lanes(PackedRhs),
}

impl std::fmt::Debug for DotWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rows(w) => write!(f, "DotWeights::Rows({} x {})", w.rows(), w.inner()),
            Self::Lanes(w) => write!(f, "DotWeights::Lanes({} x {})", w.inner(), w.cols()),
        }
    }
}

/// Whether `g`'s forward pass runs with the output channels along the lanes: where the pixels
/// leave part of a panel idle and the channels of each task fill whole panels (a task takes
/// `Cout / tasks` channels, see [`super::forward`]).
///
/// On AMX tiles ([`dot_bf16::amx`]) a panel's columns are tiles of 16, so the pixels waste
/// little (a 7 x 7 map 15 of 64 columns, the same as the lanes orientation's rows) and the
/// output lands in its own layout, where the lanes orientation stores it transposed: never.
pub fn lanes(g: &ConvGeom) -> bool {
    !dot_bf16::on_tiles()
        && !g.pixels().is_multiple_of(PANEL_COLS)
        && g.c_out.is_multiple_of(PANEL_COLS * tasks_per_image(g))
}

impl DotWeights {
    /// `w` (`Cout x C x K x K`) in the orientation [`lanes`] picks for `g`: rounded to bf16 as
    /// it is packed where `g.bf16_round` says so (evaluation, where a loaded model then keeps
    /// no rounded f32 copy of its weights), bf16 values already otherwise (training's).
    pub fn new(g: &ConvGeom, w: &[f32]) -> Self {
        if lanes(g) {
            Self::Lanes(PackedRhs::new_rounding(MatRef::transposed(w, g.ckk(), g.c_out), g.bf16_round))
        } else {
            Self::Rows(PackedLhs::new_in(MatRef::rows(w, g.c_out, g.ckk()), Vec::new(), g.bf16_round).tiled())
        }
    }

    /// Whether these are `g`'s weights in the orientation `g` runs in (a model evaluated at
    /// another image size or thread count may need the other one).
    pub fn fits(&self, g: &ConvGeom) -> bool {
        match self {
            Self::Lanes(w) => lanes(g) && w.cols() == g.c_out && w.inner() == g.ckk(),
            Self::Rows(w) => !lanes(g) && w.rows() == g.c_out && w.inner() == g.ckk(),
        }
    }
}

thread_local! {
    /// The pixels' pairs of the band in hand, kept between bands and layers.
    static PIXELS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// `dst = a x w[.., cols]` stored transposed ([`dot_bf16::matmul_lanes_into`], row stride
/// `ld`), `a` (pixels as rows) packed into this thread's kept buffer, rounded with `round`.
pub(super) fn lanes_product<E: Operand>(
    a: MatRef<E>,
    round: bool,
    w: &PackedRhs,
    cols: std::ops::Range<usize>,
    dst: &mut [MaybeUninit<f32>],
    ld: usize,
) {
    PIXELS.with(|buf| {
        let mut buf = buf.borrow_mut();
        let a = PackedLhs::new_in(a, std::mem::take(&mut *buf), round);
        dot_bf16::matmul_lanes_into(dst, ld, &a, w, cols);
        *buf = a.into_pairs();
    })
}

/// Output channels `m0..` of image `xb` (`yb`: those channels' rows of `g.pixels()` values)
/// with the channels along the lanes, then `epilogue`: the columns of each band of output rows
/// (the image itself for a 1x1 stride-1 convolution) packed as the kernel's rows.
pub(super) fn forward_lanes<E: Operand>(
    g: &ConvGeom,
    xb: &[E],
    w: &PackedRhs,
    b: usize,
    m0: usize,
    yb: &mut [MaybeUninit<f32>],
    epilogue: Option<&Epilogue<f32>>,
) {
    let (p, ckk) = (g.pixels(), g.ckk());
    let channels = m0..m0 + yb.len() / p;
    let product = |cols: &[E], pixels: usize, dst: &mut [MaybeUninit<f32>]| {
        lanes_product(MatRef::transposed(cols, pixels, ckk), g.bf16_round, w, channels.clone(), dst, p)
    };
    if g.pointwise() {
        product(xb, p, yb);
    } else {
        E::with_scratch(|cols| {
            for (r0, rows) in g.bands::<E>() {
                let band = rows * g.ow;
                cols.resize(ckk * band, E::ZERO);
                im2col(g, xb, r0, rows, cols);
                product(cols, band, &mut yb[r0 * g.ow..]);
            }
        });
    }
    // SAFETY: the products above wrote every element of `yb`.
    let yb = unsafe { &mut *(yb as *mut [MaybeUninit<f32>] as *mut [f32]) };
    if let Some(e) = epilogue {
        e.apply(b, m0, yb, p);
    }
}

/// Whether `g`'s input gradient runs with the input channels (times the kernel's taps) along
/// the lanes: the transposed product of [`lanes`], for a batch that gives every thread whole
/// images (the products run single-threaded).
pub(super) fn input_grad_lanes(g: &ConvGeom) -> bool {
    g.bf16_dot
        && g.n >= rayon::current_num_threads()
        && !g.pixels().is_multiple_of(PANEL_COLS)
        && g.ckk().is_multiple_of(PANEL_COLS)
}

/// The input gradient of image `b` into `dxb` (zeroed), as `dX^T = dY^T x W` stored
/// transposed: per band of output rows, the columns' gradients (then added back by
/// [`super::col2im_add`]), or for a 1x1 stride-1 convolution the gradient itself.
pub(super) fn input_grad_image<E: Operand>(g: &ConvGeom, w: &PackedRhs, dyb: &[E], dxb: &mut [f32]) {
    let (p, ckk) = (g.pixels(), g.ckk());
    // Training's gradients are bf16 values already: packed without rounding.
    let product = |dy, dst: &mut [f32], ld| lanes_product(dy, false, w, 0..ckk, super::uninit(dst), ld);
    if g.pointwise() {
        return product(MatRef::transposed(dyb, p, g.c_out), dxb, p);
    }
    <f32 as Element>::with_scratch(|cols| {
        for (r0, rows) in g.bands::<f32>() {
            let band = rows * g.ow;
            cols.resize(ckk * band, 0.0);
            product(MatRef::new(&dyb[r0 * g.ow..], band, g.c_out, 1, p), cols, band);
            super::col2im_add(g, cols, r0, rows, dxb);
        }
    })
}
