//! Max pooling (floor mode, padding ignored as PyTorch's -inf padding is) with the gradient
//! routed to the first maximum of each window, as PyTorch does. One pass forward, one pass
//! backward, in parallel over planes; the strided-view composition in `model::pool` stays the
//! path for other devices.
use super::{Float, contiguous_slice, dispatch_float, tensor_from, with_slice};
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

    /// The index (within the plane) of the first maximum of output (oy, ox)'s window.
    fn argmax<T: Float>(&self, g: &Geom, plane: &[T], oy: usize, ox: usize) -> usize {
        let (k, s, p) = (self.kernel, self.stride, self.pad);
        let (y0, x0) = ((oy * s) as isize - p as isize, (ox * s) as isize - p as isize);
        let (ya, yb) = (y0.max(0) as usize, ((y0 + k as isize) as usize).min(g.h));
        let (xa, xb) = (x0.max(0) as usize, ((x0 + k as isize) as usize).min(g.w));
        let mut best = ya * g.w + xa;
        for y in ya..yb {
            for x in xa..xb {
                let i = y * g.w + x;
                // `>` keeps the first maximum; a NaN wins, as in PyTorch.
                if plane[i] > plane[best] || plane[i].is_nan() && !plane[best].is_nan() {
                    best = i;
                }
            }
        }
        best
    }

    /// The maximum of each window (a NaN wins, as in PyTorch): each output row as the maximum
    /// of its window's input rows (a vectorised pass over whole rows), then the maximum of each
    /// window's columns in that row. Per-window argmax loops were 5 % of a batch-16 evaluation.
    fn forward<T: Float>(&self, x: &[T], dims: &[usize]) -> Result<(Vec<T>, Geom)> {
        let g = self.geom(dims)?;
        let (k, s, p) = (self.kernel, self.stride, self.pad);
        let mut y = vec![T::zero(); g.planes * g.oh * g.ow];
        y.par_chunks_mut(g.oh * g.ow).zip(x.par_chunks(g.h * g.w)).for_each(|(y, plane)| {
            let mut rows = vec![T::zero(); g.w];
            crate::kernels::isa::with_isa(
                #[inline(always)]
                || {
                    for (oy, out) in y.chunks_exact_mut(g.ow).enumerate() {
                        let y0 = (oy * s) as isize - p as isize;
                        let (ya, yb) = (y0.max(0) as usize, ((y0 + k as isize) as usize).min(g.h));
                        rows.copy_from_slice(&plane[ya * g.w..][..g.w]);
                        for iy in ya + 1..yb {
                            for (m, &v) in rows.iter_mut().zip(&plane[iy * g.w..][..g.w]) {
                                *m = nan_max(*m, v);
                            }
                        }
                        for (ox, o) in out.iter_mut().enumerate() {
                            let x0 = (ox * s) as isize - p as isize;
                            let (xa, xb) = (x0.max(0) as usize, ((x0 + k as isize) as usize).min(g.w));
                            *o = rows[xa + 1..xb].iter().fold(rows[xa], |m, &v| nan_max(m, v));
                        }
                    }
                },
            )
        });
        Ok((y, g))
    }

    fn backward<T: Float>(&self, x: &[T], dy: &[T], dims: &[usize]) -> Result<Vec<T>> {
        let g = self.geom(dims)?;
        let mut dx = vec![T::zero(); x.len()];
        dx.par_chunks_mut(g.h * g.w).zip(x.par_chunks(g.h * g.w)).zip(dy.par_chunks(g.oh * g.ow)).for_each(
            |((dx, plane), dy)| {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let i = self.argmax(&g, plane, oy, ox);
                        dx[i] += dy[oy * g.ow + ox];
                    }
                }
            },
        );
        Ok(dx)
    }
}

impl CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "max pool 2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        if let CpuStorage::BF16(_) = s {
            // bf16 autocast training's stored activations (ResNet's stem): pooled in f32, which
            // picks the same values, and handed on in bf16 storage (exact).
            let x = super::bf16::widened(contiguous_slice::<half::bf16>(s, l, "max pool input")?);
            let (y, g) = self.forward(&x, l.dims())?;
            let shape = Shape::from(vec![l.dims()[0], l.dims()[1], g.oh, g.ow]);
            return Ok((CpuStorage::BF16(super::bf16::narrowed(&y)), shape));
        }
        dispatch_float!(s, "max pool", |T| {
            let x = contiguous_slice::<T>(s, l, "max pool input")?;
            let (y, g) = self.forward(x, l.dims())?;
            Ok((<T as WithDType>::to_cpu_storage_owned(y), Shape::from(vec![l.dims()[0], l.dims()[1], g.oh, g.ow])))
        })
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        fn grad<T: Float>(op: &MaxPool2dOp, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
            let dx = with_slice::<T, _>(x, "max pool input", |xs| {
                with_slice::<T, _>(dy, "max pool grad", |dys| op.backward(xs, dys, x.dims()))
            })???;
            tensor_from(dx, x.dims(), x)
        }
        Ok(Some(match x.dtype() {
            DType::F32 => grad::<f32>(self, x, dy)?,
            // The gradient of a bf16 tensor is bf16: routed in f32 (where windows overlap, their
            // gradients add in f32) and rounded once, as batch norm's backward rounded it before.
            DType::BF16 => {
                let widen = |t: &Tensor, what| with_slice::<half::bf16, _>(t, what, super::bf16::widened);
                let dx = self.backward(&widen(x, "max pool input")?, &widen(dy, "max pool grad")?, x.dims())?;
                tensor_from(super::bf16::narrowed(&dx), x.dims(), x)?
            }
            DType::F64 => grad::<f64>(self, x, dy)?,
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
