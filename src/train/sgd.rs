//! SGD as `torch.optim.SGD` computes it: weight decay added to the gradient, momentum buffer
//! initialised with the first gradient, optional dampening and Nesterov.
use candle_core::{Result, Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { lr: 0.01, momentum: 0.9, dampening: 0.0, weight_decay: 1e-4, nesterov: false }
    }
}

pub struct Sgd {
    /// (name, variable, momentum buffer)
    params: Vec<(String, Var, Option<Tensor>)>,
    pub cfg: SgdConfig,
}

impl Sgd {
    pub fn new(params: Vec<(String, Var)>, cfg: SgdConfig) -> Result<Self> {
        if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
            candle_core::bail!("Nesterov momentum requires a momentum and zero dampening");
        }
        Ok(Self { params: params.into_iter().map(|(n, v)| (n, v, None)).collect(), cfg })
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// One update from gradients. Parameters without a gradient are left alone, as PyTorch does.
    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        self.step_by(|t| grads.get(t).cloned())
    }

    /// One update from gradients found by parameter (for gradients computed without autograd,
    /// as the fused head step does).
    pub fn step_by(&mut self, grad_of: impl Fn(&Tensor) -> Option<Tensor>) -> Result<()> {
        let c = self.cfg;
        for (name, var, buf) in self.params.iter_mut() {
            let Some(g) = grad_of(var.as_tensor()) else { continue };
            let g = &g;
            crate::model::device::check_dtype(g, name)?;
            if fused::applies(var.as_tensor(), g) {
                fused::step(var.as_tensor(), g, buf, &c)?;
                continue;
            }
            // Detach: a gradient still references the forward graph, and the buffer lives on.
            let mut d = g.detach();
            if c.weight_decay != 0.0 {
                d = (d + (var.as_tensor().detach() * c.weight_decay)?)?;
            }
            if c.momentum != 0.0 {
                let b = match buf.take() {
                    None => d.clone(),
                    Some(b) => ((b * c.momentum)? + (&d * (1.0 - c.dampening))?)?,
                };
                d = if c.nesterov { (d + (&b * c.momentum)?)? } else { b.clone() };
                *buf = Some(b);
            }
            var.set(&(var.as_tensor().detach() - (d * c.lr)?)?)?;
        }
        Ok(())
    }

    /// Momentum buffers by parameter name (for checkpoints).
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        self.params.iter().filter_map(|(n, _, b)| b.as_ref().map(|b| (n.clone(), b.clone()))).collect()
    }

    /// Restores momentum buffers saved by [`Sgd::buffers`].
    pub fn set_buffers(&mut self, mut get: impl FnMut(&str) -> Option<Tensor>) {
        for (n, _, b) in self.params.iter_mut() {
            *b = get(n);
        }
    }
}

/// The same update in place on CPU, one pass over memory per tensor and no allocation after the
/// first step: the tensor-op path allocates a parameter-sized buffer per operation, which for
/// VGG's and AlexNet's 100-400 MB classifier weights costs more than the backward pass. The
/// arithmetic is PyTorch's, term by term (see `tests/optim.rs`).
mod fused {
    use super::SgdConfig;
    use candle_core::{CpuStorage, DType, Device, InplaceOp3, Layout, Result, Tensor};

    pub fn applies(p: &Tensor, g: &Tensor) -> bool {
        matches!(p.device(), Device::Cpu)
            && !crate::model::device::cpu_as_device()
            && matches!(p.dtype(), DType::F32 | DType::F64)
            && p.dtype() == g.dtype()
            && p.shape() == g.shape()
            && p.is_contiguous()
            && g.is_contiguous()
    }

    /// buf = momentum * buf + (1 - dampening) * (g + wd * p)
    struct Momentum {
        c: SgdConfig,
    }

    /// p = p - lr * d, where d = g + wd * p, then d = buf (or d + momentum * buf, Nesterov)
    struct Update {
        c: SgdConfig,
        has_buf: bool,
    }

    fn slices<'a, T>(v: &'a [T], l: &Layout) -> Result<&'a [T]> {
        let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::msg("sgd: non-contiguous tensor"))?;
        Ok(&v[a..b])
    }

    /// Runs a kernel on (mutable destination, source, source) slices of one float type.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
        f32_kernel: impl FnOnce(&mut [f32], &[f32], &[f32]),
        f64_kernel: impl FnOnce(&mut [f64], &[f64], &[f64]),
    ) -> Result<()> {
        let (o, _) = l1.contiguous_offsets().ok_or_else(|| candle_core::Error::msg("sgd: non-contiguous tensor"))?;
        let n = l1.shape().elem_count();
        match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(y), CpuStorage::F32(z)) => {
                f32_kernel(&mut x[o..o + n], slices(y, l2)?, slices(z, l3)?)
            }
            (CpuStorage::F64(x), CpuStorage::F64(y), CpuStorage::F64(z)) => {
                f64_kernel(&mut x[o..o + n], slices(y, l2)?, slices(z, l3)?)
            }
            _ => candle_core::bail!("sgd: unsupported dtypes"),
        }
        Ok(())
    }

    /// Runs an element-wise kernel over cache-sized chunks on every thread: these passes are
    /// bound by memory bandwidth, which one core alone does not saturate (the head's update in a
    /// transfer epoch took a quarter of its time on one thread).
    fn in_parallel<T: Send + Sync>(dst: &mut [T], a: &[T], b: &[T], f: impl Fn(&mut [T], &[T], &[T]) + Sync) {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        if dst.len() <= CHUNK || rayon::current_num_threads() == 1 {
            return f(dst, a, b);
        }
        dst.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((d, a), b)| f(d, a, b));
    }

    #[inline(always)]
    fn momentum_kernel<T: candle_core::WithDType>(buf: &mut [T], g: &[T], p: &[T], c: SgdConfig) {
        let (m, damp, wd) = (T::from_f64(c.momentum), T::from_f64(1.0 - c.dampening), T::from_f64(c.weight_decay));
        for i in 0..buf.len() {
            let d = if c.weight_decay != 0.0 { g[i] + wd * p[i] } else { g[i] };
            buf[i] = buf[i] * m + damp * d;
        }
    }

    #[inline(always)]
    fn update_kernel<T: candle_core::WithDType>(p: &mut [T], g: &[T], buf: &[T], c: SgdConfig, has_buf: bool) {
        let (lr, m, wd) = (T::from_f64(c.lr), T::from_f64(c.momentum), T::from_f64(c.weight_decay));
        for i in 0..p.len() {
            let mut d = if c.weight_decay != 0.0 { g[i] + wd * p[i] } else { g[i] };
            if has_buf {
                d = if c.nesterov { d + m * buf[i] } else { buf[i] };
            }
            p[i] -= lr * d;
        }
    }

    impl InplaceOp3 for Momentum {
        fn name(&self) -> &'static str {
            "sgd-momentum"
        }
        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<()> {
            let c = self.c;
            dispatch(
                s1,
                l1,
                s2,
                l2,
                s3,
                l3,
                |b, g, p| {
                    in_parallel(b, g, p, |b, g, p| {
                        crate::kernels::isa::with_isa(
                            #[inline(always)]
                            || momentum_kernel(b, g, p, c),
                        )
                    })
                },
                |b, g, p| {
                    in_parallel(b, g, p, |b, g, p| {
                        crate::kernels::isa::with_isa(
                            #[inline(always)]
                            || momentum_kernel(b, g, p, c),
                        )
                    })
                },
            )
        }
    }

    impl InplaceOp3 for Update {
        fn name(&self) -> &'static str {
            "sgd-update"
        }
        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<()> {
            let (c, h) = (self.c, self.has_buf);
            dispatch(
                s1,
                l1,
                s2,
                l2,
                s3,
                l3,
                |p, g, b| {
                    in_parallel(p, g, b, |p, g, b| {
                        crate::kernels::isa::with_isa(
                            #[inline(always)]
                            || update_kernel(p, g, b, c, h),
                        )
                    })
                },
                |p, g, b| {
                    in_parallel(p, g, b, |p, g, b| {
                        crate::kernels::isa::with_isa(
                            #[inline(always)]
                            || update_kernel(p, g, b, c, h),
                        )
                    })
                },
            )
        }
    }

    pub fn step(p: &Tensor, g: &Tensor, buf: &mut Option<Tensor>, c: &SgdConfig) -> Result<()> {
        if c.momentum != 0.0 {
            match buf {
                // PyTorch starts the buffer at the first gradient (with weight decay added).
                None => {
                    let first = if c.weight_decay != 0.0 {
                        (g.detach() + (p.detach() * c.weight_decay)?)?
                    } else {
                        g.detach().copy()?
                    };
                    *buf = Some(first);
                }
                Some(b) => b.inplace_op3(g, p, &Momentum { c: *c })?,
            }
        }
        let b = buf.clone().unwrap_or_else(|| g.clone());
        p.inplace_op3(g, &b, &Update { c: *c, has_buf: c.momentum != 0.0 })
    }
}
