//! `nn.Conv2d` (groups 1, dilation 1), with the batch norm, residual add and ReLU that follow
//! it in our backbones. On the CPU it runs the kernels of [`crate::kernels`]: matrix-product
//! gradients in training, and in evaluation one fused pass for convolution, batch norm,
//! residual and ReLU. Elsewhere it is candle's `conv2d` followed by the separate layers.
use super::batch_norm::BatchNorm2d;
use crate::kernels::{
    self,
    conv_op::{Conv2dEvalOp, Conv2dOp},
};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
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
    Ok(Conv2d { weight, bias, stride, padding })
}

impl Conv2d {
    /// `relu?(bn(conv(x)) + residual?)`.
    pub fn forward_bn(
        &self,
        x: &Tensor,
        bn: &BatchNorm2d,
        train: bool,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor> {
        if !train && kernels::applies(x) {
            // Evaluation needs no gradient through the backbone (Grad-CAM differentiates the
            // detached feature map), so this op has no backward pass.
            let (scale, mut shift) = bn.eval_affine()?;
            if let Some(b) = &self.bias {
                shift = (shift + (b * &scale)?)?;
            }
            let op = Conv2dEvalOp {
                stride: self.stride,
                pad: self.padding,
                weight: self.weight.contiguous()?,
                scale: scale.contiguous()?,
                shift: shift.contiguous()?,
                residual: residual.map(Tensor::contiguous).transpose()?,
                relu,
            };
            return x.contiguous()?.apply_op1_no_bwd(&op);
        }
        if let Some(r) = residual
            && train
            && relu
            && kernels::applies(x)
        {
            return bn.forward_add_relu_train(&self.forward(x)?, r);
        }
        let y = bn.forward_relu_t(&self.forward(x)?, train, relu && residual.is_none())?;
        match residual {
            Some(r) if relu => (y + r)?.relu(),
            Some(r) => y + r,
            None => Ok(y),
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if kernels::applies(x) {
            x.contiguous()?
                .apply_op2(&self.weight.contiguous()?, Conv2dOp { stride: self.stride, pad: self.padding })?
        } else {
            x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}
