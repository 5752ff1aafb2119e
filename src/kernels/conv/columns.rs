//! The column buffers of the direct method: im2col, which lays a band of output rows' input
//! windows out as the columns of a matrix product, and col2im, which adds the columns'
//! gradients back into the input's.
use super::ConvGeom;
use crate::kernels::window::split_phases;
use crate::kernels::{Element, Float};

/// Writes the columns of output rows `[r0, r0 + rows)` of one image (`c_in x h x w`) into
/// `cols` (`C*K*K x rows*ow`, row-major), zero where the window leaves the image.
pub(super) fn im2col<T: Element>(g: &ConvGeom, x: &[T], r0: usize, rows: usize, cols: &mut [T]) {
    if g.stride > 1 {
        return im2col_strided(g, x, r0, rows, cols);
    }
    if g.ow == g.w {
        return im2col_same(g, x, r0, rows, cols);
    }
    let (k, s, ow, w) = (g.k, g.stride, g.ow, g.w);
    let band = rows * ow;
    for c in 0..g.c_in {
        let plane = &x[c * g.h * w..][..g.h * w];
        for ki in 0..k {
            for kj in 0..k {
                let (lo, hi) = g.valid_cols(kj);
                let row = &mut cols[((c * k + ki) * k + kj) * band..][..band];
                for (t, dst) in row.chunks_exact_mut(ow).enumerate() {
                    let iy = ((r0 + t) * s + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        dst.fill(T::ZERO);
                        continue;
                    }
                    let src = &plane[iy as usize * w..][..w];
                    dst[..lo].fill(T::ZERO);
                    dst[hi..].fill(T::ZERO);
                    let x0 = lo * s + kj - g.pad;
                    if s == 1 {
                        dst[lo..hi].copy_from_slice(&src[x0..x0 + hi - lo]);
                    } else {
                        for (d, i) in dst[lo..hi].iter_mut().zip((x0..).step_by(s)) {
                            *d = src[i];
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col`] for a stride-1 convolution whose output rows are as wide as its input's (every
/// 3x3 "same" convolution of our models): the input rows a tap reads for the band's inside rows
/// are one contiguous run of the plane, shifted by the tap's column offset, so each tap's row of
/// the buffer is one copy, then its edge columns (the values the shift brought in from the
/// neighbouring input row, or from just outside the plane) zeroed. Row by row, the copies of
/// 7 to 56 values and the one-value edge fills were each a call to `memcpy` or `memset`: with
/// `im2col` itself, 4 % of a bf16 training step.
fn im2col_same<T: Element>(g: &ConvGeom, x: &[T], r0: usize, rows: usize, cols: &mut [T]) {
    let (k, w, pad) = (g.k, g.w, g.pad);
    let (band, plane_len) = (rows * w, g.h * w);
    for c in 0..g.c_in {
        let plane = &x[c * plane_len..][..plane_len];
        for ki in 0..k {
            // The band's rows whose input row `r0 + t + ki - pad` is inside the image.
            let t_lo = (pad.saturating_sub(ki + r0)).min(rows);
            let t_hi = (g.h + pad).saturating_sub(ki + r0).clamp(t_lo, rows);
            for kj in 0..k {
                let (lo, hi) = g.valid_cols(kj);
                let row = &mut cols[((c * k + ki) * k + kj) * band..][..band];
                row[..t_lo * w].fill(T::ZERO);
                row[t_hi * w..].fill(T::ZERO);
                if t_lo == t_hi {
                    continue;
                }
                if lo >= hi {
                    row[t_lo * w..t_hi * w].fill(T::ZERO);
                    continue;
                }
                // Output (t, ox) reads plane[start + t * w + ox], for t from t_lo; the first
                // value lies before the plane, or the last after it, only where that output is
                // an edge column, zeroed below.
                let start = ((r0 + t_lo + ki - pad) * w) as isize + kj as isize - pad as isize;
                let count = (t_hi - t_lo) * w;
                let skip_front = (-start).max(0) as usize;
                let end = (start + count as isize).min(plane_len as isize) as usize;
                let from = (start + skip_front as isize) as usize;
                let dst = &mut row[t_lo * w + skip_front..][..end - from];
                dst.copy_from_slice(&plane[from..end]);
                // Column by column down the rows, so that no edge becomes a call to `memset`.
                let inside = &mut row[t_lo * w..t_hi * w];
                for ox in (0..lo).chain(hi..w) {
                    for v in inside.iter_mut().skip(ox).step_by(w) {
                        *v = T::ZERO;
                    }
                }
            }
        }
    }
}

/// [`im2col`] for a stride `s` above 1. Each input row the band reads is first split into its
/// `s` phases (columns `q, q + s, q + 2s, ...`), so that every kernel column then copies a
/// contiguous run where it would gather every `s`-th value: the gather happens once per input
/// value instead of once per kernel column (`K` times). The stem's 7x7/2 and the 3x3/2 layers
/// spent 5 % of a batch-1 evaluation gathering.
fn im2col_strided<T: Element>(g: &ConvGeom, x: &[T], r0: usize, rows: usize, cols: &mut [T]) {
    let (k, s, ow, w, pad) = (g.k, g.stride, g.ow, g.w, g.pad as isize);
    let band = rows * ow;
    // The input rows the band reads, inside the image.
    let first = ((r0 * s) as isize - pad).max(0) as usize;
    let end = (((r0 + rows - 1) * s + k) as isize - pad).clamp(0, g.h as isize) as usize;
    let (in_rows, phase_w) = (end.saturating_sub(first), w.div_ceil(s));
    // phases[q][row][j] = x[first + row][j * s + q]
    let mut phases = vec![T::ZERO; s * in_rows * phase_w];
    for c in 0..g.c_in {
        let plane = &x[c * g.h * w..][..g.h * w];
        for r in 0..in_rows {
            let src = &plane[(first + r) * w..][..w];
            let dst = &mut phases[r * phase_w..];
            crate::kernels::isa::with_isa(
                #[inline(always)]
                || split_phases(src, s, dst, in_rows * phase_w, |v| v),
            );
        }
        for ki in 0..k {
            for kj in 0..k {
                let (lo, hi) = g.valid_cols(kj);
                let row = &mut cols[((c * k + ki) * k + kj) * band..][..band];
                for (t, dst) in row.chunks_exact_mut(ow).enumerate() {
                    let iy = ((r0 + t) * s + ki) as isize - pad;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        dst.fill(T::ZERO);
                        continue;
                    }
                    dst[..lo].fill(T::ZERO);
                    dst[hi..].fill(T::ZERO);
                    // Output column ox reads input column ox * s + kj - pad: x0 + (ox - lo) * s.
                    let x0 = lo * s + kj - g.pad;
                    let r = iy as usize - first;
                    let run = &phases[((x0 % s) * in_rows + r) * phase_w + x0 / s..][..hi - lo];
                    dst[lo..hi].copy_from_slice(run);
                }
            }
        }
    }
}

/// Adds columns (the layout [`im2col`] writes) back into one image's gradient: the adjoint of
/// [`im2col`].
pub(super) fn col2im_add<T: Float>(g: &ConvGeom, cols: &[T], r0: usize, rows: usize, dx: &mut [T]) {
    let (k, s, ow, w) = (g.k, g.stride, g.ow, g.w);
    let band = rows * ow;
    for c in 0..g.c_in {
        let plane = &mut dx[c * g.h * w..][..g.h * w];
        for ki in 0..k {
            for kj in 0..k {
                let (lo, hi) = g.valid_cols(kj);
                if lo >= hi {
                    continue;
                }
                let row = &cols[((c * k + ki) * k + kj) * band..][..band];
                for (t, src) in row.chunks_exact(ow).enumerate() {
                    let iy = ((r0 + t) * s + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * w..][..w];
                    let x0 = lo * s + kj - g.pad;
                    for (v, i) in src[lo..hi].iter().zip((x0..).step_by(s)) {
                        dst[i] += *v;
                    }
                }
            }
        }
    }
}
