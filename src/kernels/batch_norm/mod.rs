//! Batch norm in training mode, forward and backward, each in one or two passes over memory and
//! on every core (candle's composition of ~10 element-wise ops runs on one thread and keeps a
//! full-size intermediate per op alive for the backward pass). An optional ReLU is fused in.
//!
//! Forward: `y = relu?((x - mean) * inv_std * gamma + beta)`, with the batch statistics of each
//! channel. Backward, with `g = dy` masked by `y > 0` when the ReLU is fused, `M` values per
//! channel and `xhat = (x - mean) * inv_std`:
//! `dbeta = sum g`, `dgamma = sum g * xhat`,
//! `dx = gamma * inv_std * (g - dbeta / M - xhat * dgamma / M)`.
//!
//! The activations (input, output, residual and their gradients) are f32, f64, or under bf16
//! autocast training bf16 storage computed in f32 ([`Stored`]); gamma and beta are f32 or f64.
mod sums;

pub(crate) use sums::Stored;
use sums::*;
pub use sums::{PlaneSums, channel_stats, plane_stats, stats_from_planes, store_summed};

use super::isa::with_isa;
use super::{Float, contiguous_slice, tensor_from, with_slice};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use half::bf16;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Dispatches on the activations' storage: `T` the arithmetic type, `S` the stored one.
macro_rules! dispatch_stored {
    ($storage:expr, $op:expr, |$t:ident, $s:ident| $body:expr) => {
        match $storage {
            CpuStorage::F32(_) => {
                type $t = f32;
                type $s = f32;
                $body
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                type $s = f64;
                $body
            }
            CpuStorage::BF16(_) => {
                type $t = f32;
                type $s = bf16;
                $body
            }
            other => candle_core::bail!(
                "{}: unsupported dtype {:?} (f32, f64 or bf16 only)",
                $op,
                candle_core::backend::BackendStorage::dtype(other)
            ),
        }
    };
}

/// (N, C, H*W) of an NCHW shape.
fn ncp(dims: &[usize]) -> Result<(usize, usize, usize)> {
    match dims {
        &[n, c, h, w] => Ok((n, c, h * w)),
        d => candle_core::bail!("batch norm: expected an (N, C, H, W) input, got {d:?}"),
    }
}

/// Gradients for (x, gamma, beta); `None` where no gradient is tracked.
type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// The training-mode op over `(x, gamma, beta)`, given the statistics of `x`.
#[derive(Clone)]
pub struct BatchNormTrainOp {
    pub mean: Vec<f64>,
    pub inv_std: Vec<f64>,
    pub relu: bool,
    /// bf16 autocast (f32 only): batch norm's output rounded to bf16, then the residual sum;
    /// the output gradient rounded on the way back (see `crate::model::autocast`).
    pub bf16: bool,
}

impl BatchNormTrainOp {
    /// `relu?(bn(x) + residual?)`; under bf16 autocast `relu?(bf16(bf16(bn(x)) + residual?))`:
    /// batch norm's output rounded, and the sum rounded again (a bf16 residual keeps a bf16
    /// value), in the same pass.
    fn forward<T: Float, S: Stored<T>>(
        &self,
        x: &[S],
        gamma: &[T],
        beta: &[T],
        residual: Option<&[S]>,
        dims: &[usize],
    ) -> Result<Vec<S>> {
        let (_, c, p) = ncp(dims)?;
        let (relu, bf16) = (self.relu, self.bf16 && T::DTYPE == DType::F32);
        let act = |v: T| if relu { num_traits::Float::max(v, T::zero()) } else { v };
        if residual.is_some_and(|r| r.len() != x.len()) {
            candle_core::bail!(
                "batch norm: residual of {} values for an input of {}",
                residual.map_or(0, <[S]>::len),
                x.len()
            );
        }
        // Written without zeroing it first: every element is written below.
        let mut y: Vec<S> = Vec::with_capacity(x.len());
        y.spare_capacity_mut()[..x.len()].par_chunks_mut(p.max(1)).zip(x.par_chunks(p.max(1))).enumerate().for_each(
            |(i, (y, x))| {
                with_isa(
                    #[inline(always)]
                    || {
                        let ch = i % c;
                        // (x - mean) * a + beta rather than x * a + (beta - mean * a): the latter loses
                        // f32 precision to cancellation when the mean is large against the spread.
                        let (mean, a, beta) =
                            (t::<T>(self.mean[ch]), t::<T>(f(gamma[ch]) * self.inv_std[ch]), beta[ch]);
                        let bn = |x: S| (x.load() - mean) * a + beta;
                        // One loop per case, so that f32's loops carry no rounding test.
                        match (residual.map(|r| &r[i * p..][..p]), bf16) {
                            (Some(r), false) => y
                                .iter_mut()
                                .zip(x)
                                .zip(r)
                                .for_each(|((y, &x), &r)| _ = y.write(S::store(act(bn(x) + r.load())))),
                            // The ReLU commutes with rounding (both keep the order, and 0 is
                            // a bf16 value), so the last rounding is the store's.
                            (Some(r), true) => y.iter_mut().zip(x).zip(r).for_each(|((y, &x), &r)| {
                                _ = y.write(store_rounded::<T, S, true>(act(round_bf16(bn(x)) + r.load())))
                            }),
                            (None, false) => y.iter_mut().zip(x).for_each(|(y, &x)| _ = y.write(S::store(act(bn(x))))),
                            (None, true) => y
                                .iter_mut()
                                .zip(x)
                                .for_each(|(y, &x)| _ = y.write(store_rounded::<T, S, true>(act(bn(x))))),
                        }
                    },
                )
            },
        );
        // SAFETY: the chunks cover the first `x.len()` elements and each was written above.
        unsafe { y.set_len(x.len()) };
        Ok(y)
    }

    /// (dx, dgamma, dbeta).
    fn backward<T: Float, S: Stored<T>>(
        &self,
        x: &[S],
        gamma: &[T],
        y: &[S],
        dy: &[S],
        dims: &[usize],
    ) -> Result<(Vec<S>, Vec<T>, Vec<T>)> {
        let (dx, dgamma, dbeta, _) = self.backward_residual(x, gamma, y, dy, dims, false)?;
        Ok((dx, dgamma, dbeta))
    }

    /// (dx, dgamma, dbeta, dr): with `residual`, also the gradient of a residual added before
    /// the ReLU ([`BatchNormAddReluOp`]): the output gradient masked by the ReLU (and rounded
    /// to bf16 under autocast), written in the same pass.
    ///
    /// One task per channel ([`Self::channel_grads`]) computes the channel's two sums over its
    /// planes, then its planes' `dx` (and `dr`) while they are still in the core's cache: a
    /// 56 x 56 channel of a batch of 16 is 300 KB of `x`, `y` and `dy` in bf16, read from memory
    /// once instead of twice.
    fn backward_residual<T: Float, S: Stored<T>>(
        &self,
        x: &[S],
        gamma: &[T],
        y: &[S],
        dy: &[S],
        dims: &[usize],
        residual: bool,
    ) -> Result<Grads4<T, S>> {
        let (n, c, p) = ncp(dims)?;
        let len = x.len();
        if y.len() != len || dy.len() != len || len != n * c * p {
            candle_core::bail!("batch norm backward: input, output and gradient differ from {dims:?}");
        }
        let mut dx: Vec<S> = Vec::with_capacity(len);
        let mut dr: Vec<S> = Vec::with_capacity(if residual { len } else { 0 });
        // Each channel's planes of dx (and dr), for its task to write.
        let mut planes: Vec<(Planes<S>, Planes<S>)> = (0..c).map(|_| (Vec::with_capacity(n), Vec::new())).collect();
        if p > 0 {
            for (i, plane) in dx.spare_capacity_mut()[..len].chunks_mut(p).enumerate() {
                planes[i % c].0.push(plane);
            }
            if residual {
                for (i, plane) in dr.spare_capacity_mut()[..len].chunks_mut(p).enumerate() {
                    planes[i % c].1.push(plane);
                }
            }
        }
        let bf16 = self.bf16 && T::DTYPE == DType::F32;
        let sums: Vec<(f64, f64)> = planes
            .into_par_iter()
            .enumerate()
            .map(|(ch, (mut dx, mut dr))| {
                let data = Channel { x, y, dy, gamma, dims: (n, c, p), ch };
                with_isa(
                    #[inline(always)]
                    || {
                        if bf16 {
                            self.channel_grads::<T, S, true>(&data, &mut dx, &mut dr)
                        } else {
                            self.channel_grads::<T, S, false>(&data, &mut dx, &mut dr)
                        }
                    },
                )
            })
            .collect();
        // SAFETY: the channels' planes cover the first `len` elements of `dx` (and of `dr` with
        // `residual`), and each task wrote every element of its own.
        unsafe {
            dx.set_len(len);
            if residual {
                dr.set_len(len);
            }
        }
        let dgamma = sums.iter().map(|&(_, sgx)| t::<T>(sgx)).collect();
        let dbeta = sums.iter().map(|&(sg, _)| t::<T>(sg)).collect();
        Ok((dx, dgamma, dbeta, residual.then_some(dr)))
    }

    /// One channel of [`Self::backward_residual`]: its sums `(dbeta, dgamma)`, and its planes'
    /// `dx` (and `dr` where `dr` holds planes). With `BF16` (autocast), from the output gradient
    /// rounded to bf16, and `dx` rounded too: autocast hands a bf16 input's gradient back in
    /// bf16, so the convolution before finds its output gradient rounded already and reads it in
    /// place. A const parameter, so that f32's loops carry no rounding test.
    #[inline(always)]
    fn channel_grads<T: Float, S: Stored<T>, const BF16: bool>(
        &self,
        data: &Channel<T, S>,
        dx: &mut Planes<S>,
        dr: &mut Planes<S>,
    ) -> (f64, f64) {
        let (relu, ch, (n, _, p)) = (self.relu, data.ch, data.dims);
        let mean = t::<T>(self.mean[ch]);
        // Four images' planes at a time, added in image order as one at a time would be.
        let (mut sg, mut sgx) = (0.0, 0.0);
        let mut b = 0;
        while b + 4 <= n {
            let four = [data.plane(b), data.plane(b + 1), data.plane(b + 2), data.plane(b + 3)];
            for (p1, p2) in grad_sums_many::<T, S, BF16, 4>(four, mean, relu) {
                (sg, sgx) = (sg + p1, sgx + p2);
            }
            b += 4;
        }
        for b in b..n {
            let (x, y, dy) = data.plane(b);
            let (p1, p2) = grad_sums::<T, S, BF16>(x, y, dy, mean, relu);
            (sg, sgx) = (sg + p1, sgx + p2);
        }
        let inv_std = self.inv_std[ch];
        let sgx = sgx * inv_std;
        let k = f(data.gamma[ch]) * inv_std;
        // dx = k * (g - sg / M) - (x - mean) * (k * inv_std * sgx / M)
        let m = (n * p) as f64;
        let (a, b, k) = (t::<T>(k * inv_std * sgx / m), t::<T>(sg / m), t::<T>(k));
        let dx_of = |g: T, x: S| store_rounded::<T, S, BF16>(k * (g - b) - (x.load() - mean) * a);
        if dr.is_empty() {
            for (i, dx) in dx.iter_mut().enumerate() {
                let (x, y, dy) = data.plane(i);
                for ((dx, &x), (&y, &dy)) in dx.iter_mut().zip(x).zip(y.iter().zip(dy)) {
                    dx.write(dx_of(out_grad::<T, S, BF16>(relu, y, dy), x));
                }
            }
        } else {
            // Both in one pass over the planes' `y` and `dy`.
            for (i, (dx, dr)) in dx.iter_mut().zip(dr.iter_mut()).enumerate() {
                let (x, y, dy) = data.plane(i);
                for ((dx, dr), ((&x, &y), &dy)) in dx.iter_mut().zip(dr.iter_mut()).zip(x.iter().zip(y).zip(dy)) {
                    // The residual's gradient is the one batch norm's output receives: the
                    // output gradient masked by the ReLU, rounded under autocast.
                    let g = out_grad::<T, S, BF16>(relu, y, dy);
                    dx.write(dx_of(g, x));
                    dr.write(S::store(g));
                }
            }
        }
        (sg, sgx)
    }
}

/// One task's planes of an output, to be written.
type Planes<'a, S> = Vec<&'a mut [MaybeUninit<S>]>;

/// What a channel's backward task reads: the saved tensors, gamma, `(n, c, p)` and the channel.
struct Channel<'a, T, S> {
    x: &'a [S],
    y: &'a [S],
    dy: &'a [S],
    gamma: &'a [T],
    dims: (usize, usize, usize),
    ch: usize,
}

impl<'a, T, S> Channel<'a, T, S> {
    /// Image `b`'s plane of this channel in `x`, `y` and `dy`.
    #[inline(always)]
    fn plane(&self, b: usize) -> (&'a [S], &'a [S], &'a [S]) {
        let (_, c, p) = self.dims;
        let r = (b * c + self.ch) * p..(b * c + self.ch + 1) * p;
        (&self.x[r.clone()], &self.y[r.clone()], &self.dy[r])
    }
}

/// (dx, dgamma, dbeta, dr).
type Grads4<T, S> = (Vec<S>, Vec<T>, Vec<T>, Option<Vec<S>>);

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
        dispatch_stored!(s1, "batch norm", |T, S| {
            let x = contiguous_slice::<S>(s1, l1, "batch norm input")?;
            let gamma = contiguous_slice::<T>(s2, l2, "batch norm weight")?;
            let beta = contiguous_slice::<T>(s3, l3, "batch norm bias")?;
            let y = self.forward::<T, S>(x, gamma, beta, None, l1.dims())?;
            Ok((<S as WithDType>::to_cpu_storage_owned(y), l1.shape().clone()))
        })
    }

    fn bwd(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Grads3> {
        match x.dtype() {
            DType::F32 => self.grads::<f32, f32>(x, gamma, beta, y, dy),
            DType::F64 => self.grads::<f64, f64>(x, gamma, beta, y, dy),
            DType::BF16 => self.grads::<f32, bf16>(x, gamma, beta, y, dy),
            dt => candle_core::bail!("batch norm backward: unsupported dtype {dt:?}"),
        }
    }
}

impl BatchNormTrainOp {
    fn grads<T: Float, S: Stored<T>>(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<Grads3> {
        let (dx, dgamma, dbeta) = with_slice::<S, _>(x, "batch norm input", |xs| {
            with_slice::<T, _>(gamma, "batch norm weight", |gs| {
                with_slice::<S, _>(y, "batch norm output", |ys| {
                    with_slice::<S, _>(dy, "batch norm grad", |dys| self.backward::<T, S>(xs, gs, ys, dys, x.dims()))
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

/// `relu(bn(x) + residual)` in training mode (the end of a ResNet block) over
/// `(x, [gamma; beta], residual)`: the add and the ReLU cost no pass and no graph node of their
/// own, and the residual's gradient is the masked output gradient.
pub struct BatchNormAddReluOp(pub BatchNormTrainOp);

impl CustomOp3 for BatchNormAddReluOp {
    fn name(&self) -> &'static str {
        "batch norm + residual + relu (training, fused)"
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
        if l3.dims() != l1.dims() {
            candle_core::bail!("batch norm + residual: residual {:?} does not match input {:?}", l3.dims(), l1.dims());
        }
        dispatch_stored!(s1, "batch norm", |T, S| {
            let x = contiguous_slice::<S>(s1, l1, "batch norm input")?;
            let gb = contiguous_slice::<T>(s2, l2, "batch norm weight and bias")?;
            let r = contiguous_slice::<S>(s3, l3, "residual")?;
            let (gamma, beta) = gb.split_at(gb.len() / 2);
            let y = self.0.forward::<T, S>(x, gamma, beta, Some(r), l1.dims())?;
            Ok((<S as WithDType>::to_cpu_storage_owned(y), l1.shape().clone()))
        })
    }

    fn bwd(&self, x: &Tensor, gb: &Tensor, r: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Grads3> {
        fn grads<T: Float, S: Stored<T>>(
            op: &BatchNormTrainOp,
            x: &Tensor,
            gb: &Tensor,
            r: &Tensor,
            y: &Tensor,
            dy: &Tensor,
        ) -> Result<Grads3> {
            let c = gb.elem_count() / 2;
            let (dx, mut dgb, dbeta, dr) = with_slice::<S, _>(x, "batch norm input", |xs| {
                with_slice::<T, _>(gb, "batch norm weight", |gbs| {
                    with_slice::<S, _>(y, "batch norm output", |ys| {
                        with_slice::<S, _>(dy, "batch norm grad", |dys| {
                            op.backward_residual::<T, S>(xs, &gbs[..c], ys, dys, x.dims(), r.track_op())
                        })
                    })
                })
            })?????;
            dgb.extend(dbeta);
            Ok((
                x.track_op().then(|| tensor_from(dx, x.dims(), x)).transpose()?,
                gb.track_op().then(|| tensor_from(dgb, gb.dims(), gb)).transpose()?,
                dr.map(|dr| tensor_from(dr, r.dims(), r)).transpose()?,
            ))
        }
        match x.dtype() {
            DType::F32 => grads::<f32, f32>(&self.0, x, gb, r, y, dy),
            DType::F64 => grads::<f64, f64>(&self.0, x, gb, r, y, dy),
            DType::BF16 => grads::<f32, bf16>(&self.0, x, gb, r, y, dy),
            dt => candle_core::bail!("batch norm backward: unsupported dtype {dt:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_summed_together_give_the_bits_of_planes_summed_alone() {
        // Lengths around the block and lane sizes, with remainders.
        for len in [1, 7, 8, 49, 511, 512, 513, 3136] {
            let planes: Vec<Vec<f32>> = (0..4)
                .map(|s| (0..len).map(|i| ((i * 7919 + s * 104729) % 2003) as f32 / 97.0 - 10.0).collect())
                .collect();
            let four = [&planes[0][..], &planes[1][..], &planes[2][..], &planes[3][..]];
            let ks = [0.37, -2.0, 5.5, 0.0];
            let together = shifted_sums_many(four, ks);
            for (m, plane) in four.iter().enumerate() {
                let alone = shifted_sums(plane, ks[m]);
                assert_eq!((together[m].0.to_bits(), together[m].1.to_bits()), (alone.0.to_bits(), alone.1.to_bits()));
            }
            for relu in [false, true] {
                let g = [0, 1, 2, 3].map(|m| (four[m], four[(m + 1) % 4], four[(m + 2) % 4]));
                let together = grad_sums_many::<f32, f32, false, 4>(g, 0.5, relu);
                let rounded = grad_sums_many::<f32, f32, true, 4>(g, 0.5, relu);
                for (m, (x, y, dy)) in g.iter().enumerate() {
                    let alone = grad_sums::<f32, f32, false>(x, y, dy, 0.5, relu);
                    assert_eq!(
                        (together[m].0.to_bits(), together[m].1.to_bits()),
                        (alone.0.to_bits(), alone.1.to_bits())
                    );
                    // Under autocast (the output gradient rounded to bf16 first).
                    let alone = grad_sums::<f32, f32, true>(x, y, dy, 0.5, relu);
                    assert_eq!(
                        (rounded[m].0.to_bits(), rounded[m].1.to_bits()),
                        (alone.0.to_bits(), alone.1.to_bits())
                    );
                }
            }
        }
    }

    fn data(len: usize, seed: usize) -> Vec<f64> {
        (0..len).map(|i| (((i * 7919 + seed * 104729) % 2003) as f64 / 1001.0) - 1.0).collect()
    }

    /// The loss `sum(y * r)` for fixed `r`, so its gradient with respect to y is `r`.
    fn loss(op: &BatchNormTrainOp, x: &[f64], gamma: &[f64], beta: &[f64], r: &[f64], dims: &[usize]) -> f64 {
        let (mean, var) = channel_stats(x, dims).unwrap();
        let op = BatchNormTrainOp {
            mean,
            inv_std: var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect(),
            relu: op.relu,
            bf16: false,
        };
        op.forward(x, gamma, beta, None, dims).unwrap().iter().zip(r).map(|(y, r)| y * r).sum()
    }

    /// Planes summed around the channel's first value give `channel_stats`' bits (a large mean
    /// included); planes summed around their own first values give `plane_stats`' bits and the
    /// same statistics to f64's precision; sums of the wrong count of planes are refused; and
    /// summing a plane while it is written gives the bits of a pass over it afterwards, across
    /// blocks and remainders.
    #[test]
    fn planes_summed_apart_give_the_channels_statistics() {
        let dims = [3, 2, 23, 51];
        let p = 23 * 51;
        let x: Vec<f32> = data(3 * 2 * p, 5).iter().map(|v| 1000.0 + 0.01 * *v as f32).collect();
        let plane = |i: usize| &x[i * p..][..p];
        let sums: Vec<PlaneSums> = (0..6).map(|i| PlaneSums::of::<f32, f32>(plane(i), x[(i % 2) * p])).collect();
        assert_eq!(stats_from_planes(&sums, &dims).unwrap(), channel_stats(&x, &dims).unwrap());
        let err = stats_from_planes(&sums[..5], &dims).unwrap_err().to_string();
        assert!(err.contains("5 planes' sums"), "{err}");
        let own: Vec<PlaneSums> = (0..6).map(|i| PlaneSums::of::<f32, f32>(plane(i), plane(i)[0])).collect();
        let (mean, var) = stats_from_planes(&own, &dims).unwrap();
        assert_eq!((mean.clone(), var.clone()), plane_stats::<f32, f32>(&x, &dims).unwrap());
        let (want_mean, want_var) = channel_stats(&x, &dims).unwrap();
        for ch in 0..2 {
            assert!((mean[ch] - want_mean[ch]).abs() < 1e-12 * want_mean[ch], "{} vs {}", mean[ch], want_mean[ch]);
            assert!((var[ch] - want_var[ch]).abs() < 1e-9 * want_var[ch], "{} vs {}", var[ch], want_var[ch]);
        }
        assert!(own[3].k != sums[3].k, "the test's planes differ in their shifts");
        for len in [1, 7, 512, 513, 1100, p] {
            let v: Vec<f32> = x[..len].iter().map(|v| v * 1.37).collect();
            let mut out = vec![MaybeUninit::<bf16>::uninit(); len];
            let sums = store_summed::<f32, bf16>(&v, &mut out);
            // SAFETY: `store_summed` writes every element.
            let stored: Vec<bf16> = out.iter().map(|o| unsafe { o.assume_init() }).collect();
            assert_eq!(stored, crate::kernels::bf16::narrowed(&v), "{len} values");
            assert_eq!(sums, PlaneSums::of::<f32, bf16>(&stored, stored[0].to_f32()), "{len} values");
        }
    }

    #[test]
    fn statistics_survive_a_large_mean() {
        // f32 values around 1000 with a spread of 0.01: a plain one-pass sum of squares in f32
        // would lose the variance entirely.
        let dims = [2, 3, 17, 9];
        let x: Vec<f32> = data(2 * 3 * 17 * 9, 3).iter().map(|v| 1000.0 + 0.01 * *v as f32).collect();
        let (mean, var) = channel_stats(&x, &dims).unwrap();
        for ch in 0..3 {
            let vals: Vec<f64> =
                (0..2).flat_map(|b| x[(b * 3 + ch) * 153..][..153].iter().map(|&v| v as f64)).collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / vals.len() as f64;
            assert!((mean[ch] - m).abs() < 1e-9, "mean {} vs {m}", mean[ch]);
            assert!((var[ch] - v).abs() < 1e-3 * v, "variance {} vs {v}", var[ch]);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dims = [3, 2, 3, 4];
        let (x, gamma, beta, r) = (data(72, 1), vec![1.5, -0.7], vec![0.2, 0.1], data(72, 2));
        for relu in [false, true] {
            let (mean, var) = channel_stats(&x, &dims).unwrap();
            let inv_std = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
            let op = BatchNormTrainOp { mean, inv_std, relu, bf16: false };
            let y = op.forward(&x, &gamma, &beta, None, &dims).unwrap();
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

    #[test]
    fn bf16_storage_changes_memory_not_numbers() {
        // Under autocast every stored value is a bf16 value already: keeping it in 2 bytes
        // rather than 4 must give the same bits, forward and backward, residual or not.
        use crate::kernels::bf16::{narrowed, widened};
        let dims = [5, 3, 7, 11];
        let len = dims.iter().product();
        let bf = |seed| narrowed(&data(len, seed).iter().map(|&v| v as f32 * 3.0).collect::<Vec<_>>());
        let (x, dy, res) = (bf(3), bf(4), bf(5));
        let (gamma, beta) = (vec![1.5f32, -0.7, 0.3], vec![0.2f32, 0.1, -0.4]);
        let (mean, var) = channel_stats::<f32, _>(&x, &dims).unwrap();
        assert_eq!((mean.clone(), var.clone()), channel_stats::<f32, f32>(&widened(&x), &dims).unwrap());
        for relu in [false, true] {
            let inv_std = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
            let op = BatchNormTrainOp { mean: mean.clone(), inv_std, relu, bf16: true };
            for residual in [None, Some(&res[..])] {
                let wide_res = residual.map(widened);
                let y16 = op.forward(&x, &gamma, &beta, residual, &dims).unwrap();
                let y32 = op.forward(&widened(&x), &gamma, &beta, wide_res.as_deref(), &dims).unwrap();
                assert_eq!(widened(&y16), y32, "relu {relu}, residual {}", residual.is_some());
                let (dx16, dg16, db16) = op.backward(&x, &gamma, &y16, &dy, &dims).unwrap();
                let (dx32, dg32, db32) = op.backward(&widened(&x), &gamma, &y32, &widened(&dy), &dims).unwrap();
                assert_eq!((widened(&dx16), dg16, db16), (dx32, dg32, db32), "relu {relu}");
            }
        }
    }

    /// The residual's gradient, written in the same per-channel pass as `dx`: the output
    /// gradient where the ReLU passed it, zero elsewhere, rounded to bf16 under autocast; and
    /// asking for it changes none of the other gradients.
    #[test]
    fn the_residual_gradient_is_the_masked_output_gradient() {
        let dims = [5, 3, 7, 11];
        let len: usize = dims.iter().product();
        let x: Vec<f32> = data(len, 6).iter().map(|&v| v as f32).collect();
        let dy: Vec<f32> = data(len, 7).iter().map(|&v| v as f32 * 0.37).collect();
        let (mean, var) = channel_stats::<f32, f32>(&x, &dims).unwrap();
        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
        for bf16 in [false, true] {
            let op = BatchNormTrainOp { mean: mean.clone(), inv_std: inv_std.clone(), relu: true, bf16 };
            let y = op.forward(&x, &[1.5, -0.7, 0.3], &[0.2, 0.1, -0.4], None, &dims).unwrap();
            let (dx, dg, db, dr) = op.backward_residual(&x, &[1.5, -0.7, 0.3], &y, &dy, &dims, true).unwrap();
            assert_eq!((dx, dg, db), op.backward(&x, &[1.5, -0.7, 0.3], &y, &dy, &dims).unwrap());
            let dr = dr.expect("asked for");
            for ((r, &y), &d) in dr.iter().zip(&y).zip(&dy) {
                let want = if y > 0.0 { d } else { 0.0 };
                let want = if bf16 { crate::kernels::bf16::round(want) } else { want };
                assert_eq!(r.to_bits(), want.to_bits(), "bf16 {bf16}: y {y}, dy {d}");
            }
            assert!(dr.contains(&0.0) && dr.iter().any(|&r| r != 0.0));
        }
    }
}
