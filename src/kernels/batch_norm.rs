//! Batch norm in training mode, forward and backward, each in one or two passes over memory and
//! on every core (candle's composition of ~10 element-wise ops runs on one thread and keeps a
//! full-size intermediate per op alive for the backward pass). An optional ReLU is fused in.
//!
//! Forward: `y = relu?((x - mean) * inv_std * gamma + beta)`, with the batch statistics of each
//! channel. Backward, with `g = dy` masked by `y > 0` when the ReLU is fused, `M` values per
//! channel and `xhat = (x - mean) * inv_std`:
//! `dbeta = sum g`, `dgamma = sum g * xhat`,
//! `dx = gamma * inv_std * (g - dbeta / M - xhat * dgamma / M)`.
use super::{Float, contiguous_slice, dispatch_float, per_channel, tensor_from, with_slice};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// (N, C, H*W) of an NCHW shape.
fn ncp(dims: &[usize]) -> Result<(usize, usize, usize)> {
    match dims {
        &[n, c, h, w] => Ok((n, c, h * w)),
        d => candle_core::bail!("batch norm: expected an (N, C, H, W) input, got {d:?}"),
    }
}

fn f<T: Float>(v: T) -> f64 {
    WithDType::to_f64(v)
}

fn t<T: Float>(v: f64) -> T {
    T::from_f64(v)
}

/// Per channel: the mean and the biased variance, accumulated in f64 (two passes, as a
/// 200,000-value f32 sum in f32 would drift from PyTorch's).
pub fn channel_stats<T: Float>(x: &[T], dims: &[usize]) -> Result<(Vec<f64>, Vec<f64>)> {
    let (n, c, p) = ncp(dims)?;
    let plane = |b: usize, ch: usize| &x[(b * c + ch) * p..][..p];
    let stats = per_channel(c, |ch| {
        let m = (n * p) as f64;
        let mean = (0..n).map(|b| plane(b, ch).iter().map(|&v| f(v)).sum::<f64>()).sum::<f64>() / m;
        let var = (0..n)
            .map(|b| {
                plane(b, ch)
                    .iter()
                    .map(|&v| {
                        let d = f(v) - mean;
                        d * d
                    })
                    .sum::<f64>()
            })
            .sum::<f64>()
            / m;
        (mean, var)
    });
    Ok(stats.into_iter().unzip())
}

/// Gradients for (x, gamma, beta); `None` where no gradient is tracked.
type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// The training-mode op over `(x, gamma, beta)`, given the statistics of `x`.
pub struct BatchNormTrainOp {
    pub mean: Vec<f64>,
    pub inv_std: Vec<f64>,
    pub relu: bool,
}

impl BatchNormTrainOp {
    fn forward<T: Float>(&self, x: &[T], gamma: &[T], beta: &[T], dims: &[usize]) -> Result<Vec<T>> {
        let (_, c, p) = ncp(dims)?;
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(p).zip(x.par_chunks(p)).enumerate().for_each(|(i, (y, x))| {
            let ch = i % c;
            // (x - mean) * a + beta rather than x * a + (beta - mean * a): the latter loses
            // f32 precision to cancellation when the mean is large against the spread.
            let (mean, a, beta) = (t::<T>(self.mean[ch]), t::<T>(f(gamma[ch]) * self.inv_std[ch]), beta[ch]);
            for (y, &x) in y.iter_mut().zip(x) {
                let v = (x - mean) * a + beta;
                *y = if self.relu { num_traits::Float::max(v, T::zero()) } else { v };
            }
        });
        Ok(y)
    }

    /// (dx, dgamma, dbeta).
    fn backward<T: Float>(
        &self,
        x: &[T],
        gamma: &[T],
        y: &[T],
        dy: &[T],
        dims: &[usize],
    ) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let (n, c, p) = ncp(dims)?;
        let relu = self.relu;
        let grad = |i: usize| if relu && y[i] <= T::zero() { T::zero() } else { dy[i] };
        #[allow(clippy::needless_range_loop)] // `grad` reads three arrays at one index
        let sums = per_channel(c, |ch| {
            let (mean, mut sg, mut sgx) = (self.mean[ch], 0.0, 0.0);
            for b in 0..n {
                let start = (b * c + ch) * p;
                for i in start..start + p {
                    let g = f(grad(i));
                    sg += g;
                    sgx += g * (f(x[i]) - mean);
                }
            }
            (sg, sgx * self.inv_std[ch])
        });
        let m = (n * p) as f64;
        let mut dx = vec![T::zero(); x.len()];
        dx.par_chunks_mut(p).enumerate().for_each(|(plane, dx)| {
            let ch = plane % c;
            let (sg, sgx) = sums[ch];
            let (mean, inv_std) = (self.mean[ch], self.inv_std[ch]);
            let k = f(gamma[ch]) * inv_std;
            // dx = k * (g - sg / M) - (x - mean) * (k * inv_std * sgx / M)
            let (mean, a, b) = (t::<T>(mean), t::<T>(k * inv_std * sgx / m), t::<T>(sg / m));
            let (k, start) = (t::<T>(k), plane * p);
            for (j, dx) in dx.iter_mut().enumerate() {
                let i = start + j;
                *dx = k * (grad(i) - b) - (x[i] - mean) * a;
            }
        });
        let dgamma = sums.iter().map(|&(_, sgx)| t::<T>(sgx)).collect();
        let dbeta = sums.iter().map(|&(sg, _)| t::<T>(sg)).collect();
        Ok((dx, dgamma, dbeta))
    }
}

impl CustomOp3 for BatchNormTrainOp {
    fn name(&self) -> &'static str {
        "batch norm (training, fused)"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch_float!(s1, "batch norm", |T| {
            let x = contiguous_slice::<T>(s1, l1, "batch norm input")?;
            let gamma = contiguous_slice::<T>(s2, l2, "batch norm weight")?;
            let beta = contiguous_slice::<T>(s3, l3, "batch norm bias")?;
            let y = self.forward(x, gamma, beta, l1.dims())?;
            Ok((<T as WithDType>::to_cpu_storage_owned(y), l1.shape().clone()))
        })
    }

    fn bwd(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Grads3> {
        match x.dtype() {
            DType::F32 => self.grads::<f32>(x, gamma, beta, y, dy),
            DType::F64 => self.grads::<f64>(x, gamma, beta, y, dy),
            dt => candle_core::bail!("batch norm backward: unsupported dtype {dt:?}"),
        }
    }
}

impl BatchNormTrainOp {
    fn grads<T: Float>(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Grads3> {
        let (dx, dgamma, dbeta) = with_slice::<T, _>(x, "batch norm input", |xs| {
            with_slice::<T, _>(gamma, "batch norm weight", |gs| {
                with_slice::<T, _>(y, "batch norm output", |ys| {
                    with_slice::<T, _>(dy, "batch norm grad", |dys| self.backward(xs, gs, ys, dys, x.dims()))
                })
            })
        })?????;
        Ok((
            x.track_op().then(|| tensor_from(dx, x.dims(), x)).transpose()?,
            gamma.track_op().then(|| tensor_from(dgamma, gamma.dims(), gamma)).transpose()?,
            beta.track_op().then(|| tensor_from(dbeta, beta.dims(), beta)).transpose()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: usize) -> Vec<f64> {
        (0..len).map(|i| (((i * 7919 + seed * 104729) % 2003) as f64 / 1001.0) - 1.0).collect()
    }

    /// The loss `sum(y * r)` for fixed `r`, so its gradient with respect to y is `r`.
    fn loss(op: &BatchNormTrainOp, x: &[f64], gamma: &[f64], beta: &[f64], r: &[f64], dims: &[usize]) -> f64 {
        let (mean, var) = channel_stats(x, dims).unwrap();
        let op =
            BatchNormTrainOp { mean, inv_std: var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect(), relu: op.relu };
        op.forward(x, gamma, beta, dims).unwrap().iter().zip(r).map(|(y, r)| y * r).sum()
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dims = [3, 2, 3, 4];
        let (x, gamma, beta, r) = (data(72, 1), vec![1.5, -0.7], vec![0.2, 0.1], data(72, 2));
        for relu in [false, true] {
            let (mean, var) = channel_stats(&x, &dims).unwrap();
            let inv_std = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
            let op = BatchNormTrainOp { mean, inv_std, relu };
            let y = op.forward(&x, &gamma, &beta, &dims).unwrap();
            let (dx, dgamma, dbeta) = op.backward(&x, &gamma, &y, &r, &dims).unwrap();
            let h = 1e-6;
            type Bump<'a> = &'a dyn Fn(&mut Vec<f64>, &mut Vec<f64>, &mut Vec<f64>);
            let numeric = |bump: Bump| {
                let (mut x2, mut g2, mut b2) = (x.clone(), gamma.clone(), beta.clone());
                bump(&mut x2, &mut g2, &mut b2);
                (loss(&op, &x2, &g2, &b2, &r, &dims) - loss(&op, &x, &gamma, &beta, &r, &dims)) / h
            };
            for i in [0, 5, 17, 40, 71] {
                let n = numeric(&|x, _, _| x[i] += h);
                assert!((n - dx[i]).abs() < 1e-4, "relu {relu}: dx[{i}] {} vs {n}", dx[i]);
            }
            for ch in 0..2 {
                let n = numeric(&|_, g, _| g[ch] += h);
                assert!((n - dgamma[ch]).abs() < 1e-4, "relu {relu}: dgamma[{ch}] {} vs {n}", dgamma[ch]);
                let n = numeric(&|_, _, b| b[ch] += h);
                assert!((n - dbeta[ch]).abs() < 1e-4, "relu {relu}: dbeta[{ch}] {} vs {n}", dbeta[ch]);
            }
        }
    }
}
