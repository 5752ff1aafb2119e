//! The convolution kernels of [`super::conv`] as candle custom ops.
use super::batch_norm::PlaneSums;
use super::conv::{ConvGeom, DotWeights, Epilogue, Prepared, forward, input_grad, stored, weight_grad};
use super::winograd;
use super::{Float, contiguous_slice, dispatch_float, tensor_from, with_slice};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor, WithDType};
use half::bf16;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// `conv2d(x, w)` with both gradients as matrix products.
pub struct Conv2dOp {
    pub stride: usize,
    pub pad: usize,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d (gemm)"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeom::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        dispatch_float!(s1, "conv2d", |T| {
            let x = contiguous_slice::<T>(s1, l1, "conv2d input")?;
            let w = contiguous_slice::<T>(s2, l2, "conv2d weight")?;
            // Training's 3x3 stride-1 layers by Winograd's method too, as their input gradient
            // already runs: the weight changes every step, so it is transformed per call (under
            // 1 % of a batch-16 forward pass, `bench winograd_layers`).
            let u = winograd::applies(&g).then(|| winograd::transform_weights(g.c_out, g.c_in, w));
            let prepared = u.as_deref().map_or(Prepared::None, Prepared::Winograd);
            Ok((
                <T as WithDType>::to_cpu_storage_owned(forward(&g, x, w, prepared, None)),
                Shape::from(g.out_shape().to_vec()),
            ))
        })
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = ConvGeom::new(x.dims(), w.dims(), self.stride, self.pad)?;
        match x.dtype() {
            DType::F32 => grads::<f32>(&g, x, w, dy),
            DType::F64 => grads::<f64>(&g, x, w, dy),
            dt => candle_core::bail!("conv2d backward: unsupported dtype {dt:?}"),
        }
    }
}

fn grads<T: Float>(g: &ConvGeom, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
    // The image batch itself needs no gradient: skipping it saves the first layer's
    // full-resolution col2im.
    let dx = if x.track_op() {
        let v = with_slice::<T, _>(w, "conv2d weight", |w| {
            with_slice::<T, _>(dy, "conv2d grad", |dy| input_grad(g, w, dy))
        })??;
        Some(tensor_from(v, x.dims(), x)?)
    } else {
        None
    };
    let dw = if w.track_op() {
        let v = with_slice::<T, _>(x, "conv2d input", |x| {
            with_slice::<T, _>(dy, "conv2d grad", |dy| weight_grad(g, x, dy))
        })??;
        Some(tensor_from(v, w.dims(), w)?)
    } else {
        None
    };
    Ok((dx, dw))
}

/// `conv2d(x, w)` under bf16 autocast, in one op where the separate roundings would each keep a
/// tensor for the backward pass: input and weight rounded to bf16, f32 accumulation, the output
/// rounded; backward, the output gradient rounded, both gradients computed from the rounded
/// operands and rounded (autocast's bf16 gradients, before the cast to the f32 master).
///
/// The input may be f32 or bf16 storage (the previous layer's output in training); with
/// `store_bf16` the output is handed on in bf16 storage, which halves what the backward pass
/// keeps. A bf16 tensor's gradient is bf16 too, as autograd needs it to be.
pub struct Conv2dBf16Op {
    pub stride: usize,
    pub pad: usize,
    pub store_bf16: bool,
    /// Where training on `vdpbf16ps` leaves each output plane's [`PlaneSums`], summed as the
    /// output is written, for the batch norm that follows (see
    /// [`super::conv::stored::forward_summing`]); left empty on the other paths.
    pub plane_sums: Option<Arc<Mutex<Vec<PlaneSums>>>>,
}

/// `v` rounded to bf16, borrowed when it already is.
fn bf16_values(v: &[f32]) -> Cow<'_, [f32]> {
    if super::bf16::all_rounded(v) { Cow::Borrowed(v) } else { Cow::Owned(super::bf16::rounded(v)) }
}

/// The bf16 values of a CPU storage, in f32 for the f32 kernels: widened from bf16 storage
/// (exact), or rounded f32 (borrowed when it is rounded already).
fn bf16_operand<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<Cow<'a, [f32]>> {
    match s {
        CpuStorage::BF16(_) => Ok(Cow::Owned(super::bf16::widened(contiguous_slice::<half::bf16>(s, l, what)?))),
        _ => Ok(bf16_values(contiguous_slice::<f32>(s, l, what)?)),
    }
}

/// [`bf16_operand`] of a tensor, handed to `f`.
fn with_bf16_operand<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => Ok(f(&bf16_operand(s, layout, what)?)),
        _ => candle_core::bail!("{what}: the CPU kernel was given a tensor on {:?}", t.device().location()),
    }
}

/// `v` (f32 values) rounded to bf16, stored in `like`'s dtype (bf16, or f32), as a tensor of
/// `like`'s shape.
fn rounded_like(mut v: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    if like.dtype() == DType::BF16 {
        return tensor_from(super::bf16::narrowed(&v), like.dims(), like);
    }
    super::bf16::round_slice(&mut v);
    tensor_from(v, like.dims(), like)
}

impl Conv2dBf16Op {
    /// The convolution's shapes, its products on `vdpbf16ps` where that is the faster path.
    fn geometry(&self, x: &[usize], w: &[usize]) -> Result<ConvGeom> {
        let mut g = ConvGeom::new(x, w, self.stride, self.pad)?;
        g.bf16_dot = super::dot_bf16::enabled();
        Ok(g)
    }
}

impl CustomOp2 for Conv2dBf16Op {
    fn name(&self) -> &'static str {
        "conv2d (gemm, bf16 autocast)"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry(l1.dims(), l2.dims())?;
        if g.bf16_dot && self.store_bf16 {
            // Training on `vdpbf16ps`: the input read from its storage, the output written in bf16.
            let w = contiguous_slice::<f32>(s2, l2, "conv2d (bf16) weight")?;
            let sums = self.plane_sums.is_some();
            let (y, planes) = match s1 {
                CpuStorage::BF16(_) => {
                    stored::forward_summing(&g, contiguous_slice::<bf16>(s1, l1, "conv2d (bf16) input")?, w, sums)
                }
                // The stem's input image: rounded into bf16 storage first (a small copy).
                _ => stored::forward_summing(
                    &g,
                    &super::bf16::narrowed(contiguous_slice::<f32>(s1, l1, "conv2d (bf16) input")?),
                    w,
                    sums,
                ),
            };
            if let Some(slot) = &self.plane_sums {
                *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = planes;
            }
            return Ok((CpuStorage::BF16(y), Shape::from(g.out_shape().to_vec())));
        }
        let x = bf16_operand(s1, l1, "conv2d (bf16) input")?;
        let w = bf16_values(contiguous_slice::<f32>(s2, l2, "conv2d (bf16) weight")?);
        let mut y = forward(&g, &x, &w, Prepared::None, None);
        let shape = Shape::from(g.out_shape().to_vec());
        if self.store_bf16 {
            return Ok((CpuStorage::BF16(super::bf16::narrowed(&y)), shape));
        }
        super::bf16::round_slice(&mut y);
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry(x.dims(), w.dims())?;
        if g.bf16_dot && dy.dtype() == DType::BF16 && x.dtype() != DType::F64 {
            return stored_grads(&g, x, w, dy);
        }
        // Usually rounded already (batch norm's backward hands bf16 gradients on): then f32 is
        // read in place.
        with_bf16_operand(dy, "conv2d (bf16) grad", |dy| {
            let dx = if x.track_op() {
                let v = with_slice::<f32, _>(w, "conv2d (bf16) weight", |w| input_grad(&g, &bf16_values(w), dy))?;
                Some(rounded_like(v, x)?)
            } else {
                None
            };
            let dw = if w.track_op() {
                let v = with_bf16_operand(x, "conv2d (bf16) input", |x| weight_grad(&g, x, dy))?;
                Some(rounded_like(v, w)?)
            } else {
                None
            };
            Ok((dx, dw))
        })?
    }
}

/// [`Conv2dBf16Op`]'s gradients on `vdpbf16ps` from a bf16-stored output gradient (training's:
/// batch norm hands it on so), reading `x` from its storage: the input's gradient in bf16
/// storage, the weight's rounded in f32.
fn stored_grads(g: &ConvGeom, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
    with_slice::<bf16, _>(dy, "conv2d (bf16) grad", |dy| {
        let dx = if x.track_op() {
            let v = with_slice::<f32, _>(w, "conv2d (bf16) weight", |w| stored::input_grad(g, w, dy))?;
            Some(match x.dtype() {
                DType::BF16 => tensor_from(v, x.dims(), x)?,
                _ => tensor_from(super::bf16::widened(&v), x.dims(), x)?,
            })
        } else {
            None
        };
        let dw = if w.track_op() {
            let v = match x.dtype() {
                DType::BF16 => with_slice::<bf16, _>(x, "conv2d (bf16) input", |x| stored::weight_grad(g, x, dy))?,
                _ => with_slice::<f32, _>(x, "conv2d (bf16) input", |x| {
                    stored::weight_grad(g, &super::bf16::narrowed(x), dy)
                })?,
            };
            Some(rounded_like(v, w)?)
        } else {
            None
        };
        Ok((dx, dw))
    })?
}

/// Evaluation only: convolution, batch norm as a per-channel scale and shift, an optional
/// residual add and an optional ReLU, in one pass over each output. It has no backward pass; the
/// layers use it only outside training.
pub struct Conv2dEvalOp {
    pub stride: usize,
    pub pad: usize,
    /// All contiguous, on the CPU, in the input's dtype.
    pub weight: Tensor,
    pub scale: Tensor,
    pub shift: Tensor,
    pub residual: Option<Tensor>,
    pub relu: bool,
    /// The weight in Winograd's domain ([`winograd_weights`]), when the layer keeps it; computed
    /// here otherwise, for a convolution [`winograd::applies`] to.
    pub winograd: Option<Tensor>,
    /// The weight packed for `vdpbf16ps` ([`DotWeights`]), when the layer keeps it; packed here
    /// otherwise, where bf16 autocast runs on that kernel.
    pub dot: Option<Arc<DotWeights>>,
    /// bf16 autocast's roundings in the epilogue (f32 only).
    pub rounding: super::conv::Bf16Rounding,
    /// With `rounding`: the products on `vdpbf16ps`, which round the input and the weight as
    /// they pack them (decided once by the layer, which then hands both on unrounded).
    /// Such an op hands its output on in bf16 storage ([`super::conv::eval_bf16`]), and reads
    /// its input and residual from it (or the input from f32, a network's image).
    pub bf16_dot: bool,
}

/// The shapes of an evaluation convolution of `x` by `w`, with `bf16_dot` its products on
/// `vdpbf16ps` (bf16 autocast, where [`super::dot_bf16::enabled`]), its operands rounded as
/// they are packed.
pub fn eval_geometry(x: &[usize], w: &[usize], stride: usize, pad: usize, bf16_dot: bool) -> Result<ConvGeom> {
    let mut g = ConvGeom::new(x, w, stride, pad)?;
    g.bf16_dot = bf16_dot;
    // The input and the weight are rounded while they are packed (see `model::conv::Conv2d::
    // eval_input` and `eval_weight`).
    g.bf16_round = bf16_dot;
    Ok(g)
}

/// Whether an evaluation convolution runs by Winograd's method. Not on `vdpbf16ps`: F(2x2, 3x3)
/// does 2.25x fewer multiplications, which the kernel's twice f32's rate about matches, and the
/// direct method was as fast or faster in ResNet-50's bf16 evaluation (batch 16: 0.46-0.49 s
/// against 0.49-0.50 s; batch 1: 34-42 against 35-50 ms) and keeps autocast's numbers (exact
/// products summed in f32, no transforms).
fn runs_winograd(g: &ConvGeom) -> bool {
    winograd::applies(g) && !g.bf16_dot
}

/// The weight (`Cout x C x 3 x 3`, on the CPU) transformed for [`winograd::forward`].
pub fn winograd_weights(weight: &Tensor) -> Result<Tensor> {
    let &[c_out, c_in, 3, 3] = weight.dims() else {
        candle_core::bail!("winograd: weight {:?} is not Cout x C x 3 x 3", weight.dims())
    };
    let shape = (c_out, winograd::POINTS, c_in);
    match weight.dtype() {
        DType::F32 => Tensor::from_vec(
            with_slice::<f32, _>(weight, "winograd weight", |w| winograd::transform_weights(c_out, c_in, w))?,
            shape,
            weight.device(),
        ),
        DType::F64 => Tensor::from_vec(
            with_slice::<f64, _>(weight, "winograd weight", |w| winograd::transform_weights(c_out, c_in, w))?,
            shape,
            weight.device(),
        ),
        dt => candle_core::bail!("winograd: unsupported dtype {dt:?}"),
    }
}

impl Conv2dEvalOp {
    /// That the residual, if any, has the output's shape.
    fn check_residual(&self, g: &ConvGeom) -> Result<()> {
        match &self.residual {
            Some(r) if r.dims() != g.out_shape() => {
                candle_core::bail!("fused conv2d: residual {:?} does not match output {:?}", r.dims(), g.out_shape())
            }
            _ => Ok(()),
        }
    }

    /// [`CustomOp1::cpu_fwd`] on the bf16 kernels, into bf16 storage.
    fn stored_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = eval_geometry(l.dims(), self.weight.dims(), self.stride, self.pad, true)?;
        let shape = Shape::from(g.out_shape().to_vec());
        self.check_residual(&g)?;
        let (ws, wl) = self.weight.storage_and_layout();
        let (scs, scl) = self.scale.storage_and_layout();
        let (shs, shl) = self.shift.storage_and_layout();
        let w = cpu_slice::<f32>(&ws, wl, "weight")?;
        let residual = self.residual.as_ref().map(|r| r.storage_and_layout());
        let residual: Option<Cow<[bf16]>> = match &residual {
            Some((rs, rl)) if matches!(&**rs, Storage::Cpu(CpuStorage::BF16(_))) => {
                Some(Cow::Borrowed(cpu_slice::<bf16>(rs, rl, "residual")?))
            }
            // An f32 residual (a caller's own tensor): its values rounded, as autocast casts it.
            Some((rs, rl)) => Some(Cow::Owned(super::bf16::narrowed(cpu_slice::<f32>(rs, rl, "residual")?))),
            None => None,
        };
        let packed_now;
        let weights = match &self.dot {
            Some(d) if d.fits(&g) => d.as_ref(),
            _ => {
                packed_now = DotWeights::new(&g, w);
                &packed_now
            }
        };
        let e = super::conv::eval_bf16::StoredEpilogue {
            scale: cpu_slice::<f32>(&scs, scl, "scale")?,
            shift: cpu_slice::<f32>(&shs, shl, "shift")?,
            residual: residual.as_deref(),
            relu: self.relu,
            rounding: self.rounding,
        };
        let y = match s {
            CpuStorage::BF16(_) => {
                let x = contiguous_slice::<bf16>(s, l, "fused conv2d (bf16) input")?;
                super::conv::eval_bf16::forward(&ConvGeom { bf16_round: false, ..g }, x, weights, &e)
            }
            _ => super::conv::eval_bf16::forward(&g, contiguous_slice::<f32>(s, l, "fused conv2d input")?, weights, &e),
        };
        Ok((CpuStorage::BF16(y), shape))
    }
}

fn cpu_slice<'a, T: WithDType>(storage: &'a Storage, layout: &Layout, what: &str) -> Result<&'a [T]> {
    match storage {
        Storage::Cpu(s) => contiguous_slice::<T>(s, layout, what),
        _ => candle_core::bail!("fused conv2d: {what} is not on the CPU"),
    }
}

impl CustomOp1 for Conv2dEvalOp {
    fn name(&self) -> &'static str {
        "conv2d + batch norm (eval, fused)"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        if self.bf16_dot && self.rounding != super::conv::Bf16Rounding::None {
            return self.stored_fwd(s, l);
        }
        let g = eval_geometry(l.dims(), self.weight.dims(), self.stride, self.pad, false)?;
        self.check_residual(&g)?;
        let (ws, wl) = self.weight.storage_and_layout();
        let (scs, scl) = self.scale.storage_and_layout();
        let (shs, shl) = self.shift.storage_and_layout();
        let residual = self.residual.as_ref().map(|r| r.storage_and_layout());
        dispatch_float!(s, "fused conv2d", |T| {
            let x = contiguous_slice::<T>(s, l, "fused conv2d input")?;
            let e = Epilogue {
                scale: cpu_slice::<T>(&scs, scl, "scale")?,
                shift: cpu_slice::<T>(&shs, shl, "shift")?,
                residual: match &residual {
                    Some((rs, rl)) => Some(cpu_slice::<T>(rs, rl, "residual")?),
                    None => None,
                },
                relu: self.relu,
                rounding: self.rounding,
            };
            let w = cpu_slice::<T>(&ws, wl, "weight")?;
            let kept = match &self.winograd {
                Some(u) if runs_winograd(&g) => Some(u.storage_and_layout()),
                _ => None,
            };
            let u = match &kept {
                Some((us, ul)) => Some(Cow::Borrowed(cpu_slice::<T>(us, ul, "winograd weight")?)),
                None => runs_winograd(&g).then(|| Cow::Owned(winograd::transform_weights(g.c_out, g.c_in, w))),
            };
            if let Some(u) = &u
                && u.len() != g.c_out * winograd::POINTS * g.c_in
            {
                candle_core::bail!(
                    "fused conv2d: winograd weight of {} values for a {:?} weight",
                    u.len(),
                    self.weight.dims()
                );
            }
            // Off the bf16 kernels (those run `stored_fwd`): no packed weights to use.
            let prepared = u.as_deref().map_or(Prepared::None, Prepared::Winograd);
            Ok((
                <T as WithDType>::to_cpu_storage_owned(forward(&g, x, w, prepared, Some(&e))),
                Shape::from(g.out_shape().to_vec()),
            ))
        })
    }
}
