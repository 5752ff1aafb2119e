//! `nn.Conv2d` (groups 1, dilation 1), with the batch norm, residual add and ReLU that follow
//! it in our backbones. On the CPU it runs the kernels of [`crate::kernels`]: matrix-product
//! gradients in training, and in evaluation one fused pass for convolution, batch norm,
//! residual and ReLU. Elsewhere it is candle's `conv2d` followed by the separate layers.
use super::autocast;
use super::batch_norm::BatchNorm2d;
use crate::kernels::{
    self,
    batch_norm::PlaneSums,
    blocked::BlockedConv,
    conv::Bf16Rounding,
    conv::DotWeights,
    conv_op::{Conv2dBf16Op, Conv2dEvalOp, Conv2dOp},
};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    /// The weight in Winograd's domain for evaluation, made on first use and kept, for weights
    /// that are plain tensors (a loaded model, a frozen backbone): 16/9 of the weight's size,
    /// and remaking it on every call costs a batch-1 evaluation more than it saves. Trainable
    /// weights (`Var`s, rewritten in place by every optimiser step) are transformed per call.
    winograd: Arc<OnceLock<Tensor>>,
    /// The same two for bf16 autocast: the weight rounded to bf16, and its Winograd transform.
    bf16: Arc<OnceLock<Tensor>>,
    winograd_bf16: Arc<OnceLock<Tensor>>,
    /// And packed for the `vdpbf16ps` kernel, where bf16 evaluation runs on it.
    dot: Arc<OnceLock<Arc<DotWeights>>>,
}

/// A convolution (without bias where PyTorch leaves it out before batch norm). The arguments
/// mirror `nn.Conv2d`'s, hence their number.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    in_c: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    padding: usize,
    bias: Option<Init>,
    init: Init,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let weight = vb.get_with_hints((out_c, in_c, k, k), "weight", init)?;
    let bias = bias.map(|init| vb.get_with_hints(out_c, "bias", init)).transpose()?;
    Ok(Conv2d {
        weight,
        bias,
        stride,
        padding,
        winograd: Arc::default(),
        bf16: Arc::default(),
        winograd_bf16: Arc::default(),
        dot: Arc::default(),
    })
}

impl Conv2d {
    /// `relu(conv(x) + bias)` for the layers without batch norm (AlexNet's): in evaluation on
    /// the CPU the bias and ReLU ride on the convolution's fused pass (and its Winograd method
    /// where that applies), as a scale of exactly 1 and a shift of the bias.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train || !(kernels::applies(x) || kernels::stored_bf16(x)) {
            return self.forward(x)?.relu();
        }
        let c_out = self.weight.dim(0)?;
        let dot = eval_on_dot(x);
        let x = &eval_storage(x, dot)?;
        // The op's dtype: the input's, or f32 where the input is in bf16 storage.
        let dtype = if dot { DType::F32 } else { x.dtype() };
        let shift = match &self.bias {
            Some(b) => autocast::cast(&b.to_dtype(dtype)?)?,
            None => Tensor::zeros(c_out, dtype, x.device())?,
        };
        let op = Conv2dEvalOp {
            stride: self.stride,
            pad: self.padding,
            weight: self.eval_weight(x, dot)?,
            scale: Tensor::ones(c_out, dtype, x.device())?,
            shift: shift.contiguous()?,
            residual: None,
            relu: true,
            winograd: self.kept_winograd_weights(x, dot)?,
            dot: self.kept_dot_weights(x, dot)?,
            rounding: if autocast::bf16() { Bf16Rounding::Output } else { Bf16Rounding::None },
            bf16_dot: dot,
        };
        self.eval_input(x, dot)?.apply_op1_no_bwd(&op)
    }

    /// `relu?(bn(conv(x)) + residual?)`.
    pub fn forward_bn(
        &self,
        x: &Tensor,
        bn: &BatchNorm2d,
        train: bool,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor> {
        if !train && (kernels::applies(x) || kernels::stored_bf16(x)) {
            // Evaluation needs no gradient through the backbone (Grad-CAM differentiates the
            // detached feature map), so this op has no backward pass.
            let dot = eval_on_dot(x);
            let x = &eval_storage(x, dot)?;
            let residual = residual.map(|r| eval_storage(r, dot)).transpose()?;
            let (scale, mut shift) = bn.eval_affine()?;
            if let Some(b) = &self.bias {
                shift = (shift + (autocast::cast(b)? * &scale)?)?;
            }
            let op = Conv2dEvalOp {
                stride: self.stride,
                pad: self.padding,
                weight: self.eval_weight(x, dot)?,
                scale: scale.contiguous()?,
                shift: shift.contiguous()?,
                residual: residual.as_ref().map(Tensor::contiguous).transpose()?,
                relu,
                winograd: self.kept_winograd_weights(x, dot)?,
                dot: self.kept_dot_weights(x, dot)?,
                rounding: if autocast::bf16() { Bf16Rounding::ConvAndOutput } else { Bf16Rounding::None },
                bf16_dot: dot,
            };
            return self.eval_input(x, dot)?.apply_op1_no_bwd(&op);
        }
        // The fused training ops round as autocast does (see `BatchNormTrainOp::bf16`).
        if train && kernels::applies_in_training(x) {
            match residual {
                Some(r) if relu => {
                    let (y, sums) = self.forward_stored(x)?;
                    return bn.forward_add_relu_train_summed(&y, r, sums);
                }
                None => {
                    let (y, sums) = self.forward_stored(x)?;
                    return bn.forward_relu_train_summed(&y, relu, sums);
                }
                Some(_) => {}
            }
        }
        // Elsewhere (GPUs) separate ops, each output rounded under bf16 autocast as PyTorch
        // hands a bf16 tensor on.
        let y = autocast::cast(&bn.forward_relu_t(&self.forward(x)?, train, false)?)?;
        let y = match residual {
            Some(r) => autocast::cast(&(y + r)?)?,
            None => y,
        };
        if relu { y.relu() } else { Ok(y) }
    }
}

impl Conv2d {
    /// [`Module::forward`] for training on the CPU, where under bf16 autocast the output is
    /// handed on in bf16 storage: batch norm takes it so and hands its own output on so too, and
    /// the tensors a training step keeps for its backward pass take half the memory (as
    /// autocast's bf16 tensors do).
    /// With the output, where the op summed them as it wrote it, the output planes' sums for
    /// the batch norm that follows (its batch statistics without a pass of its own).
    fn forward_stored(&self, x: &Tensor) -> Result<(Tensor, Option<Vec<PlaneSums>>)> {
        let slot = Arc::new(Mutex::new(Vec::new()));
        match self.bf16_op(x, true, Some(slot.clone())) {
            Some(y) => {
                let y = y?;
                let sums = std::mem::take(&mut *slot.lock().unwrap_or_else(PoisonError::into_inner));
                Ok((y, (!sums.is_empty()).then_some(sums)))
            }
            None => Ok((self.forward(x)?, None)),
        }
    }

    /// Under bf16 autocast on the CPU, the convolution as one op ([`Conv2dBf16Op`]) where it
    /// applies: with `store_bf16` (training) its input may be a bf16-stored activation and its
    /// output is one; without, both are f32 holding bf16 values.
    fn bf16_op(
        &self,
        x: &Tensor,
        store_bf16: bool,
        plane_sums: Option<Arc<Mutex<Vec<PlaneSums>>>>,
    ) -> Option<Result<Tensor>> {
        let takes =
            if store_bf16 { kernels::applies_in_training(x) } else { kernels::applies(x) && x.dtype() == DType::F32 };
        (autocast::bf16() && self.bias.is_none() && takes).then(|| {
            let op = Conv2dBf16Op { stride: self.stride, pad: self.padding, store_bf16, plane_sums };
            x.contiguous()?.apply_op2(&self.weight.contiguous()?, op)
        })
    }
}

impl Conv2d {
    /// This convolution with `bn` folded in, for f32 evaluation on the blocked layout; `None`
    /// where the weights are trainable (every optimiser step rewrites them, so a folded copy
    /// would go stale) or the layout cannot hold the shape.
    pub fn blocked(&self, bn: &BatchNorm2d) -> Result<Option<BlockedConv>> {
        if self.weight.is_variable() || bn.is_trainable() || self.weight.dtype() != DType::F32 {
            return Ok(None);
        }
        let (scale, mut shift) = bn.eval_affine()?;
        if let Some(b) = &self.bias {
            shift = (shift + (b * &scale)?)?;
        }
        let (c_out, c_in, k, _) = self.weight.dims4()?;
        let w = self.weight.flatten_all()?.to_vec1::<f32>()?;
        let (scale, shift) = (scale.to_dtype(DType::F32)?.to_vec1()?, shift.to_dtype(DType::F32)?.to_vec1()?);
        Ok(BlockedConv::new(&w, [c_out, c_in, k], self.stride, self.padding, &scale, &shift).ok())
    }
}

/// Whether an evaluation of `x` under bf16 autocast runs its convolutions on `vdpbf16ps` (or
/// AMX tiles): decided once per layer call, as the input and weight it hands on depend on it.
/// Such a layer hands its output on in bf16 storage (`kernels::conv::eval_bf16`), and the next
/// one reads it so.
fn eval_on_dot(x: &Tensor) -> bool {
    autocast::bf16()
        && (kernels::applies(x) && x.dtype() == DType::F32 || kernels::stored_bf16(x))
        && kernels::dot_bf16::enabled()
}

/// An evaluation's input or residual as the layer's op takes it: bf16 storage as it is on the
/// bf16 kernels (`dot`), widened to f32 (exactly) elsewhere. It reaches a layer off those
/// kernels only where they were switched off between two layers of one pass
/// (`kernels::dot_bf16::set_enabled`, which tests call while other tests run).
fn eval_storage(t: &Tensor, dot: bool) -> Result<Tensor> {
    if !dot && kernels::stored_bf16(t) { t.to_dtype(DType::F32) } else { Ok(t.clone()) }
}

/// Batches of fewer images than this keep (and make) a layer's Winograd weights.
const KEEP_WINOGRAD_BELOW_BATCH: usize = 4;

impl Conv2d {
    /// The weight evaluation uses: itself, or under bf16 autocast its bf16 rounding (kept for
    /// plain tensors, made per call for trainable ones).
    fn eval_weight(&self, x: &Tensor, dot: bool) -> Result<Tensor> {
        // On `vdpbf16ps` (`dot`) the weight is rounded as it is packed (`DotWeights::new`): no
        // rounded copy (100 MB for ResNet-50) is kept.
        if !autocast::bf16() || x.dtype() != DType::F32 || dot {
            return self.weight.contiguous();
        }
        if self.weight.is_variable() {
            return autocast::round(&self.weight.detach());
        }
        if let Some(w) = self.bf16.get() {
            return Ok(w.clone());
        }
        let w = autocast::round(&self.weight)?;
        Ok(self.bf16.get_or_init(|| w).clone())
    }

    /// The kept Winograd weights for a batch `x`, made now if it is the first batch small
    /// enough to need them. ResNet-50's transforms take 5.5 ms per forward pass
    /// (`bench winograd_layers`): under 1 % of a batch-16 evaluation (658 ms), a few per cent at
    /// 4 images, but a tenth of a batch-1 one. Not keeping them from larger batches saves their
    /// memory (58 MB; a batch-16 evaluation peaks at 297 MiB without, 339 MiB with).
    fn kept_winograd_weights(&self, x: &Tensor, dot: bool) -> Result<Option<Tensor>> {
        if self.weight.is_variable() || !kernels::winograd::applies_to(self.weight.dim(3)?, self.stride, self.padding) {
            return Ok(None);
        }
        if dot {
            // The direct method on `vdpbf16ps` runs instead (`conv_op::Conv2dEvalOp`).
            return Ok(None);
        }
        let bf16 = autocast::bf16() && x.dtype() == DType::F32;
        let kept = if bf16 { &self.winograd_bf16 } else { &self.winograd };
        if let Some(u) = kept.get() {
            return Ok(Some(u.clone()));
        }
        if x.dim(0)? >= KEEP_WINOGRAD_BELOW_BATCH {
            return Ok(None);
        }
        let u = kernels::conv_op::winograd_weights(&self.eval_weight(x, dot)?)?;
        // Two threads racing here compute the same values; either one is kept.
        Ok(Some(kept.get_or_init(|| u).clone()))
    }
}

impl Conv2d {
    /// The input of an evaluation op: under bf16 autocast rounded to bf16, except where the
    /// op's products run on `vdpbf16ps` (`dot`), whose packing rounds every value it reads
    /// (checking that a tensor is rounded already was a pass over every activation, 2.5 % of a
    /// bf16 evaluation in `perf`).
    fn eval_input(&self, x: &Tensor, dot: bool) -> Result<Tensor> {
        if dot { x.contiguous() } else { autocast::cast(x)?.contiguous() }
    }

    /// Under bf16 autocast on `vdpbf16ps`, the weight packed for that kernel as an evaluation
    /// of `x` runs it: kept for plain tensors (made on first use: half the weight's f32 size),
    /// packed per call for trainable ones (`None` here).
    fn kept_dot_weights(&self, x: &Tensor, dot: bool) -> Result<Option<Arc<DotWeights>>> {
        if !dot || self.weight.is_variable() {
            return Ok(None);
        }
        let g = kernels::conv_op::eval_geometry(x.dims(), self.weight.dims(), self.stride, self.padding, true)?;
        if let Some(d) = self.dot.get().filter(|d| d.fits(&g)) {
            return Ok(Some(d.clone()));
        }
        let w = self.eval_weight(x, dot)?;
        let packed = Arc::new(kernels::with_slice::<f32, _>(&w, "conv2d (bf16) weight", |w| DotWeights::new(&g, w))?);
        // Kept from the first evaluation; one of another image size packs its own per call.
        let kept = self.dot.get_or_init(|| packed.clone());
        Ok(Some(if kept.fits(&g) { kept.clone() } else { packed }))
    }
}

impl Module for Conv2d {
    /// Under bf16 autocast: input, weight and bias rounded to bf16, f32 accumulation, output
    /// rounded to bf16 (gradients rounded on the way back, see [`autocast::round`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.bf16_op(x, false, None) {
            return y;
        }
        let (x, weight) = (autocast::cast(x)?, autocast::cast(&self.weight)?);
        let y = if kernels::applies(&x) {
            x.contiguous()?.apply_op2(&weight.contiguous()?, Conv2dOp { stride: self.stride, pad: self.padding })?
        } else {
            x.conv2d(&weight, self.padding, self.stride, 1, 1)?
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(&autocast::cast(b)?.reshape((1, (), 1, 1))?)?,
            None => y,
        };
        autocast::cast(&y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;
    use std::collections::HashMap;

    /// A 3x3 layer and a fresh batch norm (scale 1 / sqrt(1 + eps), shift 0), with weights from
    /// `vb`.
    fn layer(vb: VarBuilder) -> (Conv2d, BatchNorm2d) {
        let conv = conv2d(8, 6, 3, 1, 1, None, Init::Randn { mean: 0.0, stdev: 0.2 }, vb.pp("conv")).unwrap();
        (conv, BatchNorm2d::new(6, vb.pp("bn")).unwrap())
    }

    /// `conv(x, w) / sqrt(1 + eps)` by candle's own convolution.
    fn reference(x: &Tensor, w: &Tensor) -> Tensor {
        (x.conv2d(w, 1, 1, 1, 1).unwrap() / (1.0f64 + 1e-5).sqrt()).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        (f32(a) - f32(b)).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn a_loaded_layer_keeps_its_winograd_weights_from_a_small_batch_only() {
        let map = VarMap::new();
        let _ = layer(VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu));
        let plain: HashMap<String, Tensor> =
            map.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect();
        let (conv, bn) = layer(VarBuilder::from_tensors(plain, DType::F32, &Device::Cpu));
        let x16 = Tensor::randn(0f32, 1.0, (16, 8, 9, 9), &Device::Cpu).unwrap();
        let y16 = conv.forward_bn(&x16, &bn, false, None, false).unwrap();
        assert!(max_diff(&y16, &reference(&x16, &conv.weight)) < 1e-4);
        assert!(conv.winograd.get().is_none(), "a batch of 16 made the layer keep its transform");
        let x1 = x16.narrow(0, 0, 1).unwrap();
        let y1 = conv.forward_bn(&x1, &bn, false, None, false).unwrap();
        assert!(conv.winograd.get().is_some(), "a batch of 1 did not keep the transform");
        assert!(max_diff(&y1, &reference(&x1, &conv.weight)) < 1e-4);
        // Kept, it serves the next batches too.
        let again = conv.forward_bn(&x16, &bn, false, None, false).unwrap();
        assert!(max_diff(&again, &y16) < 1e-5);
    }

    /// A layer without batch norm (AlexNet's) evaluates `relu(conv(x) + bias)` in the fused pass,
    /// through the Winograd method (3x3) and the direct one (5x5) alike.
    #[test]
    fn bias_and_relu_ride_on_the_fused_evaluation() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let init = Init::Randn { mean: 0.0, stdev: 0.2 };
        for (k, pad, name) in [(3, 1, "a"), (5, 2, "b")] {
            let conv = conv2d(4, 5, k, 1, pad, Some(init), init, vb.pp(name)).unwrap();
            let x = Tensor::randn(0f32, 1.0, (2, 4, 9, 8), &Device::Cpu).unwrap();
            let got = conv.forward_relu_t(&x, false).unwrap();
            let bias = conv.bias.as_ref().unwrap().reshape((1, 5, 1, 1)).unwrap();
            let want = x.conv2d(&conv.weight, pad, 1, 1, 1).unwrap().broadcast_add(&bias).unwrap().relu().unwrap();
            assert!(max_diff(&got, &want) < 1e-5, "{k}x{k}");
            assert!(max_diff(&got, &conv.forward_relu_t(&x, true).unwrap()) < 1e-5, "{k}x{k}: training path differs");
        }
    }

    /// Under bf16 autocast on `vdpbf16ps`, a loaded layer packs its weights for that kernel once
    /// and keeps them; evaluation gives the same bits as a trainable layer's, which packs per
    /// call. An input of another size that needs the other orientation packs its own.
    #[test]
    fn a_loaded_layer_keeps_its_weights_packed_for_bf16() {
        if !kernels::dot_bf16::enabled() {
            eprintln!("no vdpbf16ps path on this CPU: nothing to keep");
            return;
        }
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let init = Init::Randn { mean: 0.0, stdev: 0.1 };
        let trainable = conv2d(64, 128, 3, 1, 1, None, init, vb.pp("conv")).unwrap();
        let bn = BatchNorm2d::new(128, vb.pp("bn")).unwrap();
        let plain: HashMap<String, Tensor> =
            map.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect();
        let loaded =
            conv2d(64, 128, 3, 1, 1, None, init, VarBuilder::from_tensors(plain, DType::F32, &Device::Cpu).pp("conv"))
                .unwrap();
        let _bf16 = autocast::Autocast::new(autocast::Precision::Bf16);
        for (n, hw) in [(1, 7), (2, 8), (1, 7)] {
            let x = Tensor::randn(0f32, 1.0, (n, 64, hw, hw), &Device::Cpu).unwrap();
            let got = loaded.forward_bn(&x, &bn, false, None, true).unwrap();
            let want = trainable.forward_bn(&x, &bn, false, None, true).unwrap();
            assert_eq!(max_diff(&got, &want), 0.0, "batch {n}, {hw} x {hw}");
            assert_eq!(got.dtype(), DType::BF16, "bf16 evaluation hands its output on in bf16 storage");
            // And the next layer takes it so, as it would the f32 values themselves.
            let next = got.narrow(1, 0, 64).unwrap().contiguous().unwrap();
            let again = loaded.forward_bn(&next, &bn, false, None, true).unwrap();
            let from_f32 = loaded.forward_bn(&next.to_dtype(DType::F32).unwrap(), &bn, false, None, true).unwrap();
            assert_eq!(max_diff(&again, &from_f32), 0.0, "batch {n}, {hw} x {hw}: bf16 storage in");
            let kept = loaded.dot.get().expect("no packed weights kept");
            let g = kernels::conv_op::eval_geometry(x.dims(), &[128, 64, 3, 3], 1, 1, true).unwrap();
            // The first input's packing stays (on AMX tiles one orientation serves every size).
            assert_eq!(kept.fits(&g), hw == 7 || kernels::dot_bf16::on_tiles(), "{kept:?} for {hw} x {hw}");
        }
        assert!(trainable.dot.get().is_none(), "trainable weights were kept packed");
    }

    /// A bf16-stored activation reaching a layer whose evaluation runs off the bf16 kernels (here
    /// an f32 scope; in the parity tests, kernels switched off between layers) is read as the
    /// f32 values it holds, its residual too: the bits of the same values in f32 storage.
    #[test]
    fn bf16_storage_off_the_bf16_kernels_evaluates_as_its_f32_values() {
        let map = VarMap::new();
        let (conv, bn) = layer(VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu));
        let round = |t: Tensor| t.to_dtype(DType::BF16).unwrap();
        let x = round(Tensor::randn(0f32, 1.0, (2, 8, 7, 7), &Device::Cpu).unwrap());
        let r = round(Tensor::randn(0f32, 1.0, (2, 6, 7, 7), &Device::Cpu).unwrap());
        let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let got = conv.forward_bn(&x, &bn, false, Some(&r), true).unwrap();
        let want = conv.forward_bn(&f32(&x), &bn, false, Some(&f32(&r)), true).unwrap();
        assert_eq!(got.dtype(), DType::F32);
        assert_eq!(max_diff(&got, &want), 0.0);
        assert_eq!(eval_storage(&x, true).unwrap().dtype(), DType::BF16, "on the bf16 kernels it stays bf16");
    }

    /// Trainable weights change in place at every optimiser step: evaluation must follow them,
    /// never a transform kept from before the step.
    #[test]
    fn evaluation_follows_trainable_weights_after_they_change() {
        let map = VarMap::new();
        let (conv, bn) = layer(VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu));
        let x = Tensor::randn(0f32, 1.0, (1, 8, 7, 7), &Device::Cpu).unwrap();
        let before = conv.forward_bn(&x, &bn, false, None, false).unwrap();
        assert!(max_diff(&before, &reference(&x, &conv.weight)) < 1e-4);
        let var: Var = map.data().lock().unwrap()["conv.weight"].clone();
        var.set(&(var.as_tensor() * -2.0).unwrap()).unwrap();
        let after = conv.forward_bn(&x, &bn, false, None, false).unwrap();
        assert!(max_diff(&after, &reference(&x, var.as_tensor())) < 1e-4);
        assert!(max_diff(&after, &(before * -2.0).unwrap()) < 1e-4);
    }
}
