//! Max pooling (floor mode, padding ignored as PyTorch's -inf padding is) with the gradient
//! routed to the first maximum of each window, as PyTorch does. One pass forward, one pass
//! backward, in parallel over planes; the strided-view composition in `model::pool` stays the
//! path for other devices.
use super::batch_norm::Stored;
use super::window::{inside, split_phases};
use super::{Float, contiguous_slice, tensor_from, with_slice};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct MaxPool2dOp {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

struct Geom {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl MaxPool2dOp {
    fn geom(&self, dims: &[usize]) -> Result<Geom> {
        let &[n, c, h, w] = dims else { candle_core::bail!("max pool: expected (N, C, H, W), got {dims:?}") };
        let (k, s, p) = (self.kernel, self.stride, self.pad);
        if h + 2 * p < k || w + 2 * p < k || s == 0 {
            candle_core::bail!("max pool {k}x{k}: input {h}x{w} is smaller than the kernel");
        }
        Ok(Geom { planes: n * c, h, w, oh: (h + 2 * p - k) / s + 1, ow: (w + 2 * p - k) / s + 1 })
    }

    /// For each output of row `oy` (whose forward maxima are `maxima`), the index within the
    /// plane of the first value of its window that equals its maximum (or is NaN where the
    /// maximum is): the first maximum, PyTorch's choice. The taps are visited last to first and
    /// each overwrites the outputs it matches, so the first match stays; for one tap the
    /// outputs' inputs are every `s`-th value of an input row, read as one contiguous run of
    /// that row's phase (`phases`, the row's values at `q, q + s, ...` for each offset `q`), so
    /// that the comparisons run along the row in vectors. One output at a time, a window's
    /// search was 2.3 % of a bf16 training step.
    #[inline(always)]
    fn first_maxima<T: Float, S: Stored<T>>(
        &self,
        g: &Geom,
        plane: &[S],
        maxima: &[S],
        oy: usize,
        first: &mut [usize],
        phases: &mut [T],
    ) {
        let (k, s, p) = (self.kernel, self.stride, self.pad);
        let y0 = (oy * s) as isize - p as isize;
        let (ya, yb) = (y0.max(0) as usize, ((y0 + k as isize) as usize).min(g.h));
        // Where no value matches (only if `maxima` are not this plane's): the window's first.
        for (ox, f) in first.iter_mut().enumerate() {
            *f = ya * g.w + ((ox * s) as isize - p as isize).max(0) as usize;
        }
        let phase_w = g.w.div_ceil(s);
        for iy in (ya..yb).rev() {
            split_phases(&plane[iy * g.w..][..g.w], s, phases, phase_w, |v| v.load());
            for kx in (0..k).rev() {
                // Output ox reads input column ox * s + kx - p: inside the row for ox in [lo, hi).
                let (lo, hi) = inside(g.w, g.ow, s, p, kx);
                if lo == hi {
                    continue;
                }
                let ix0 = lo * s + kx - p;
                let run = &phases[ix0 % s * phase_w + ix0 / s..][..hi - lo];
                let base = iy * g.w + ix0;
                for (j, ((f, &v), m)) in first[lo..hi].iter_mut().zip(run).zip(&maxima[lo..hi]).enumerate() {
                    let m = m.load();
                    *f = if v == m || m.is_nan() && v.is_nan() { base + j * s } else { *f };
                }
            }
        }
    }

    /// The maximum of each window (a NaN wins, as in PyTorch): each output row as the maximum
    /// of its window's input rows (a vectorised pass over whole rows), then the maximum of each
    /// window's columns in that row. Per-window argmax loops were 5 % of a batch-16 evaluation.
    /// bf16 storage is pooled in f32, which picks the same values, and written back exactly.
    fn forward<T: Float, S: Stored<T>>(&self, x: &[S], dims: &[usize]) -> Result<(Vec<S>, Geom)> {
        let g = self.geom(dims)?;
        let (k, s, p) = (self.kernel, self.stride, self.pad);
        let len = g.planes * g.oh * g.ow;
        let mut y: Vec<S> = Vec::with_capacity(len);
        y.spare_capacity_mut()[..len]
            .par_chunks_mut((g.oh * g.ow).max(1))
            .zip(x.par_chunks((g.h * g.w).max(1)))
            .for_each(|(y, plane)| {
                let mut rows = vec![T::zero(); g.w];
                crate::kernels::isa::with_isa(
                    #[inline(always)]
                    || {
                        for (oy, out) in y.chunks_exact_mut(g.ow).enumerate() {
                            let y0 = (oy * s) as isize - p as isize;
                            let (ya, yb) = (y0.max(0) as usize, ((y0 + k as isize) as usize).min(g.h));
                            rows.iter_mut().zip(&plane[ya * g.w..][..g.w]).for_each(|(r, v)| *r = v.load());
                            for iy in ya + 1..yb {
                                for (m, &v) in rows.iter_mut().zip(&plane[iy * g.w..][..g.w]) {
                                    *m = nan_max(*m, v.load());
                                }
                            }
                            for (ox, o) in out.iter_mut().enumerate() {
                                let x0 = (ox * s) as isize - p as isize;
                                let (xa, xb) = (x0.max(0) as usize, ((x0 + k as isize) as usize).min(g.w));
                                o.write(S::store(rows[xa + 1..xb].iter().fold(rows[xa], |m, &v| nan_max(m, v))));
                            }
                        }
                    },
                )
            });
        // SAFETY: the planes' chunks cover the first `len` elements and each was written above.
        unsafe { y.set_len(len) };
        Ok((y, g))
    }

    /// The input gradient from the forward pass's output `y` (each window's maximum) and `dy`:
    /// each output's gradient added (in `T`) to its window's first maximum, then stored.
    fn backward<T: Float, S: Stored<T>>(&self, x: &[S], y: &[S], dy: &[S], dims: &[usize]) -> Result<Vec<S>> {
        let g = self.geom(dims)?;
        let (plane, out) = (g.h * g.w, g.oh * g.ow);
        if x.len() != g.planes * plane || y.len() != g.planes * out || dy.len() != y.len() {
            candle_core::bail!("max pool backward: input, output and gradient differ from {dims:?}");
        }
        let mut dx: Vec<S> = Vec::with_capacity(x.len());
        dx.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(plane.max(1))
            .zip(x.par_chunks(plane.max(1)))
            .zip(y.par_chunks(out.max(1)).zip(dy.par_chunks(out.max(1))))
            .for_each(|((dx, xp), (y, dy))| {
                let mut acc = vec![T::zero(); plane];
                crate::kernels::isa::with_isa(
                    #[inline(always)]
                    || {
                        let mut first = vec![0usize; g.ow];
                        let mut phases = vec![T::zero(); g.w + self.stride];
                        for oy in 0..g.oh {
                            self.first_maxima(&g, xp, &y[oy * g.ow..][..g.ow], oy, &mut first, &mut phases);
                            for (&i, dy) in first.iter().zip(&dy[oy * g.ow..][..g.ow]) {
                                acc[i] += dy.load();
                            }
                        }
                        dx.iter_mut().zip(&acc).for_each(|(d, &a)| _ = d.write(S::store(a)));
                    },
                )
            });
        // SAFETY: the planes' chunks cover the first `x.len()` elements and each was written.
        unsafe { dx.set_len(x.len()) };
        Ok(dx)
    }
}

impl CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "max pool 2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn pooled<T: Float, S: Stored<T>>(op: &MaxPool2dOp, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
            let (y, g) = op.forward::<T, S>(contiguous_slice::<S>(s, l, "max pool input")?, l.dims())?;
            Ok((<S as WithDType>::to_cpu_storage_owned(y), Shape::from(vec![l.dims()[0], l.dims()[1], g.oh, g.ow])))
        }
        match s {
            CpuStorage::F32(_) => pooled::<f32, f32>(self, s, l),
            CpuStorage::F64(_) => pooled::<f64, f64>(self, s, l),
            // bf16 autocast training's stored activations (ResNet's stem).
            CpuStorage::BF16(_) => pooled::<f32, half::bf16>(self, s, l),
            other => candle_core::bail!(
                "max pool: unsupported dtype {:?} (f32, f64 or bf16 only)",
                candle_core::backend::BackendStorage::dtype(other)
            ),
        }
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        fn grad<T: Float, S: Stored<T>>(op: &MaxPool2dOp, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
            let dx = with_slice::<S, _>(x, "max pool input", |xs| {
                with_slice::<S, _>(y, "max pool output", |ys| {
                    with_slice::<S, _>(dy, "max pool grad", |dys| op.backward::<T, S>(xs, ys, dys, x.dims()))
                })
            })????;
            tensor_from(dx, x.dims(), x)
        }
        Ok(Some(match x.dtype() {
            DType::F32 => grad::<f32, f32>(self, x, y, dy)?,
            // The gradient of a bf16 tensor is bf16: routed in f32 (where windows overlap, their
            // gradients add in f32) and rounded once, as batch norm's backward rounded it before.
            DType::BF16 => grad::<f32, half::bf16>(self, x, y, dy)?,
            DType::F64 => grad::<f64, f64>(self, x, y, dy)?,
            dt => candle_core::bail!("max pool backward: unsupported dtype {dt:?}"),
        }))
    }
}

/// The larger of two values, NaN if either is (PyTorch's max pooling propagates NaN); the first
/// on a tie. A select, not a branch, so it vectorises.
#[inline(always)]
fn nan_max<T: Float>(m: T, v: T) -> T {
    if v > m || v.is_nan() { v } else { m }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bf16::{narrowed, widened};

    /// The first maximum of each window by the definition (a NaN wins: the first NaN), for a
    /// `h x w` plane pooled `k x k` with stride `s` and padding `p`.
    fn first_max(x: &[f32], (h, w): (usize, usize), (k, s, p): (usize, usize, usize), oy: usize, ox: usize) -> usize {
        let mut best = None::<usize>;
        for a in 0..k {
            for b in 0..k {
                let (r, c) = ((oy * s + a) as isize - p as isize, (ox * s + b) as isize - p as isize);
                if r < 0 || c < 0 || r as usize >= h || c as usize >= w {
                    continue;
                }
                let i = r as usize * w + c as usize;
                best = match best {
                    None => Some(i),
                    Some(j) if x[i] > x[j] || x[i].is_nan() && !x[j].is_nan() => Some(i),
                    keep => keep,
                };
            }
        }
        best.expect("every window holds a value")
    }

    /// Each output's gradient goes to its window's first maximum, among many ties (values of a
    /// few levels, +0 and -0 equal), and to the first NaN of a window holding one; from f32 and
    /// from bf16 storage alike; for ResNet's 3x3/2 with padding 1 and for other kernels, strides
    /// and paddings on odd and even widths.
    #[test]
    fn gradients_go_to_the_first_maximum_of_each_window() {
        // kernel, stride, padding, h, w
        for (k, s, p, h, w) in
            [(3, 2, 1, 11, 10), (3, 2, 1, 9, 13), (2, 2, 0, 8, 9), (3, 1, 1, 7, 6), (5, 3, 2, 12, 11)]
        {
            let planes = 3;
            let op = MaxPool2dOp { kernel: k, stride: s, pad: p };
            let mut x: Vec<f32> = (0..planes * h * w).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
            x[4] = -0.0;
            x[h * w + 23] = f32::NAN;
            x[h * w + 25] = f32::NAN;
            let dims = [1, planes, h, w];
            let (y, g) = op.forward::<f32, f32>(&x, &dims).unwrap();
            let dy: Vec<f32> = (0..y.len()).map(|i| 1.0 + i as f32 / 64.0).collect();
            let mut want = vec![0.0f32; x.len()];
            for pl in 0..planes {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let i = first_max(&x[pl * h * w..][..h * w], (h, w), (k, s, p), oy, ox);
                        want[pl * h * w + i] += dy[(pl * g.oh + oy) * g.ow + ox];
                    }
                }
            }
            let got = op.backward::<f32, f32>(&x, &y, &dy, &dims).unwrap();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{k}x{k}/{s}, padding {p}, {h}x{w}"
            );
            let (xb, dyb) = (narrowed(&x), narrowed(&dy));
            let (yb, _) = op.forward::<f32, half::bf16>(&xb, &dims).unwrap();
            assert_eq!(
                widened(&yb).iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            let got = widened(&op.backward::<f32, half::bf16>(&xb, &yb, &dyb, &dims).unwrap());
            let want = op.backward::<f32, f32>(&x, &y, &widened(&dyb), &dims).unwrap();
            assert_eq!(got, crate::kernels::bf16::rounded(&want));
        }
    }
}
