//! The work a fused evaluation convolution does on each output while it is still in cache.
use crate::kernels::Float;

/// Evaluation-mode work done on each output while it is still in cache: batch norm's scale and
/// shift per output channel, then an optional residual add, then an optional ReLU.
pub struct Epilogue<'a, T> {
    pub scale: &'a [T],
    pub shift: &'a [T],
    pub residual: Option<&'a [T]>,
    pub relu: bool,
    pub rounding: Bf16Rounding,
}

/// Where bf16 autocast rounds inside the fused evaluation pass (f32 only; see
/// `crate::model::autocast`): PyTorch hands a bf16 tensor from each op to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Rounding {
    /// f32 throughout.
    None,
    /// After the shift (a convolution's own bias) and after the residual add.
    Output,
    /// Also the convolution's output, before batch norm's scale and shift.
    ConvAndOutput,
}

impl<'a, T: Float> Epilogue<'a, T> {
    /// The same epilogue over f32, when `T` is f32.
    pub(super) fn as_f32(&self) -> Option<Epilogue<'a, f32>> {
        Some(Epilogue {
            scale: as_f32(self.scale)?,
            shift: as_f32(self.shift)?,
            residual: match self.residual {
                Some(r) => Some(as_f32(r)?),
                None => None,
            },
            relu: self.relu,
            rounding: self.rounding,
        })
    }

    /// Applies to output channels `m0..` of image `b` (`y`: those channels' rows), in one pass
    /// compiled for the CPU's vector ISA (two passes of baseline code were 7 % of a batch-16
    /// evaluation in `perf`).
    pub(super) fn apply(&self, b: usize, m0: usize, y: &mut [T], pixels: usize) {
        let image = self.scale.len() * pixels;
        let residual = self.residual.map(|r| &r[b * image + m0 * pixels..][..y.len()]);
        if self.rounding != Bf16Rounding::None && T::DTYPE == candle_core::DType::F32 {
            return self.apply_bf16(residual, m0, y, pixels);
        }
        let (scale, shift) = (&self.scale[m0..], &self.shift[m0..]);
        // ReLU chosen once per call, not per element, so that each loop is one vectorised body.
        crate::kernels::isa::with_isa(
            #[inline(always)]
            || {
                if self.relu {
                    rows::<T, true>(y, residual, scale, shift, pixels)
                } else {
                    rows::<T, false>(y, residual, scale, shift, pixels)
                }
            },
        )
    }

    /// [`Self::apply`] with bf16 autocast's roundings: each op's output rounded to bf16 as
    /// PyTorch hands it on (the convolution's, batch norm's, the residual sum's; ReLU keeps
    /// bf16 values bf16).
    fn apply_bf16(&self, residual: Option<&[T]>, m0: usize, y: &mut [T], pixels: usize) {
        // Only f32 gets here (see `apply`); viewed as f32 the loop vectorises.
        let (Some(y), Some(scale), Some(shift)) = (as_f32_mut(y), as_f32(self.scale), as_f32(self.shift)) else {
            return;
        };
        let residual = residual.and_then(as_f32);
        // The choices made once per call, so that each loop is one straight vectorised body
        // (with them tested per element the loop was 9 % of a bf16 evaluation in `perf`).
        let (scale, shift) = (&scale[m0..], &shift[m0..]);
        crate::kernels::isa::with_isa(
            #[inline(always)]
            || match (self.relu, self.rounding == Bf16Rounding::ConvAndOutput) {
                (true, true) => rows_bf16::<true, 2>(y, residual, scale, shift, pixels),
                (true, false) => rows_bf16::<true, 1>(y, residual, scale, shift, pixels),
                (false, true) => rows_bf16::<false, 2>(y, residual, scale, shift, pixels),
                (false, false) => rows_bf16::<false, 1>(y, residual, scale, shift, pixels),
            },
        )
    }
}

impl Epilogue<'_, f32> {
    /// [`Self::apply`] from `src` (every channel's results for pixels `offset..offset + n` of
    /// image `b`, planes of `pixels`, one row of `n` per channel) into `dst(channel)`, that span
    /// of the channel's plane: part of a plane whose other pixels another thread computes. The
    /// same arithmetic as [`Self::apply`], in one pass compiled for the CPU's vector ISA.
    pub(super) fn apply_spans<'d>(
        &self,
        b: usize,
        src: &[f32],
        n: usize,
        offset: usize,
        pixels: usize,
        dst: impl Fn(usize) -> &'d mut [f32],
    ) {
        // The choices made once per call, so that each channel's loop is one vectorised body.
        let args = (self, b, src, n, offset, pixels, &dst);
        crate::kernels::isa::with_isa(
            #[inline(always)]
            || match (self.relu, self.rounding) {
                (true, Bf16Rounding::None) => spans::<true, 0>(args),
                (false, Bf16Rounding::None) => spans::<false, 0>(args),
                (true, Bf16Rounding::Output) => spans::<true, 1>(args),
                (false, Bf16Rounding::Output) => spans::<false, 1>(args),
                (true, Bf16Rounding::ConvAndOutput) => spans::<true, 2>(args),
                (false, Bf16Rounding::ConvAndOutput) => spans::<false, 2>(args),
            },
        )
    }
}

/// [`Epilogue::apply_spans`]' arguments.
type Spans<'a, 'e, F> = (&'a Epilogue<'e, f32>, usize, &'a [f32], usize, usize, usize, &'a F);

/// [`Epilogue::apply_spans`] for one choice of ReLU and rounding.
#[inline(always)]
fn spans<'d, const RELU: bool, const MODE: u8>(
    (e, b, src, n, offset, pixels, dst): Spans<'_, '_, impl Fn(usize) -> &'d mut [f32]>,
) {
    let image = e.scale.len() * pixels;
    for (c, row) in src.chunks_exact(n).enumerate() {
        let residual = e.residual.map(|r| &r[b * image + c * pixels + offset..][..n]);
        span::<RELU, MODE>(row, dst(c), residual, e.scale[c], e.shift[c]);
    }
}

/// One channel's span, `dst` = [`value`] of `src`.
#[inline(always)]
fn span<const RELU: bool, const MODE: u8>(src: &[f32], dst: &mut [f32], residual: Option<&[f32]>, a: f32, s: f32) {
    match residual {
        Some(r) => {
            let rows = dst.iter_mut().zip(src.iter().zip(r));
            rows.for_each(|(d, (&v, &r))| *d = value::<RELU, MODE>(v, a, s, Some(r)))
        }
        None => dst.iter_mut().zip(src).for_each(|(d, &v)| *d = value::<RELU, MODE>(v, a, s, None)),
    }
}

/// One output of the fused pass in f32, `relu?(v * scale + shift + residual?)`: as [`rows`]
/// computes it (`MODE` 0), or with bf16 autocast's roundings (1: batch norm's output and the
/// residual sum; 2: the convolution's output too), the one definition [`rows_bf16`] and
/// [`span`] share.
#[inline(always)]
pub(super) fn value<const RELU: bool, const MODE: u8>(v: f32, a: f32, s: f32, residual: Option<f32>) -> f32 {
    let r32 = crate::kernels::bf16::round;
    let y = match MODE {
        0 => v * a + s,
        1 => r32(v * a + s),
        _ => r32(r32(v) * a + s),
    };
    let y = match residual {
        Some(r) if MODE == 0 => y + r,
        Some(r) => r32(y + r),
        None => y,
    };
    if RELU { y.max(0.0) } else { y }
}

/// The rows of `y` (one per channel, `pixels` long): `relu?(v * scale + shift + residual?)`.
#[inline(always)]
fn rows<T: Float, const RELU: bool>(y: &mut [T], residual: Option<&[T]>, scale: &[T], shift: &[T], pixels: usize) {
    // ReLU as `max` only where asked: `max` would turn a NaN into a number.
    let act = |v: T| if RELU { num_traits::Float::max(v, T::zero()) } else { v };
    for (i, ((row, &a), &s)) in y.chunks_exact_mut(pixels).zip(scale).zip(shift).enumerate() {
        match residual {
            Some(r) => {
                for (v, r) in row.iter_mut().zip(&r[i * pixels..][..pixels]) {
                    *v = act(*v * a + s + *r);
                }
            }
            None => row.iter_mut().for_each(|v| *v = act(*v * a + s)),
        }
    }
}

/// The rows of `y` (one per channel, `pixels` long): [`value`] with bf16 autocast's roundings
/// (`MODE` 1 or 2), in place.
#[inline(always)]
fn rows_bf16<const RELU: bool, const MODE: u8>(
    y: &mut [f32],
    residual: Option<&[f32]>,
    scale: &[f32],
    shift: &[f32],
    pixels: usize,
) {
    for (i, ((row, &a), &s)) in y.chunks_exact_mut(pixels).zip(scale).zip(shift).enumerate() {
        match residual {
            Some(r) => {
                let values = row.iter_mut().zip(&r[i * pixels..][..pixels]);
                values.for_each(|(v, &r)| *v = value::<RELU, MODE>(*v, a, s, Some(r)))
            }
            None => row.iter_mut().for_each(|v| *v = value::<RELU, MODE>(*v, a, s, None)),
        }
    }
}

/// `v` as f32, when `T` is f32.
pub(super) fn as_f32<T: Float>(v: &[T]) -> Option<&[f32]> {
    (T::DTYPE == candle_core::DType::F32)
        // SAFETY: `T` is f32 (its dtype says so), so the two slices have the same layout.
        .then(|| unsafe { std::slice::from_raw_parts(v.as_ptr() as *const f32, v.len()) })
}

pub(super) fn as_f32_mut<T: Float>(v: &mut [T]) -> Option<&mut [f32]> {
    (T::DTYPE == candle_core::DType::F32)
        // SAFETY: as in `as_f32`.
        .then(|| unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut f32, v.len()) })
}
