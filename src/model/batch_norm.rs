//! `nn.BatchNorm2d` with PyTorch's semantics: batch statistics in training mode (biased
//! variance for normalising, unbiased for the running estimate, momentum 0.1), running
//! statistics in evaluation mode.
use crate::kernels::{
    self,
    batch_norm::{BatchNormAddReluOp, BatchNormTrainOp, PlaneSums, channel_stats, plane_stats, stats_from_planes},
    with_slice,
};
use candle_core::{DType, ModuleT, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    pub fn new(num_features: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(num_features, "weight", Init::Const(1.))?;
        let bias = vb.get_with_hints(num_features, "bias", Init::Const(0.))?;
        // When `vb` is backed by a VarMap these tensors are its variables, and `Var::from_tensor`
        // shares their storage: updating the running statistics updates what gets saved.
        let running_mean = Var::from_tensor(&vb.get_with_hints(num_features, "running_mean", Init::Const(0.))?)?;
        let running_var = Var::from_tensor(&vb.get_with_hints(num_features, "running_var", Init::Const(1.))?)?;
        Ok(Self { weight, bias, running_mean, running_var, eps: 1e-5, momentum: 0.1 })
    }

    /// Whether training can change this layer: its affine weights are variables (its running
    /// statistics are updated by any forward pass in training mode, so a model built on
    /// variables is one that trains).
    pub fn is_trainable(&self) -> bool {
        self.weight.is_variable() || self.bias.is_variable()
    }

    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// N * H * W, which training mode needs to be at least 2 (PyTorch's rule).
    fn values_per_channel(x: &Tensor) -> Result<f64> {
        let (n, _, h, w) = x.dims4()?;
        if n * h * w < 2 {
            candle_core::bail!(
                "batch norm in training mode needs more than one value per channel, got input {:?}",
                x.shape()
            );
        }
        Ok((n * h * w) as f64)
    }

    fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let c = x.dim(1)?;
        let count = Self::values_per_channel(x)?;
        let mean = x.mean_keepdim((0, 2, 3))?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
        let inv_std = (var.clone() + self.eps)?.sqrt()?.recip()?;
        let scale = inv_std.broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?;
        let y = centred.broadcast_mul(&scale)?.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?;
        let m = self.momentum;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach().flatten_all()? * m)?)?;
        let unbiased = (var.detach().flatten_all()? * (count / (count - 1.0)))?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&new_mean.to_dtype(self.running_mean.dtype())?)?;
        self.running_var.set(&new_var.to_dtype(self.running_var.dtype())?)?;
        Ok(y)
    }

    /// The per-channel scale and shift of evaluation mode: `y = x * scale + shift`.
    pub fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let inv_std = (self.running_var.as_detached_tensor() + self.eps)?.sqrt()?.recip()?;
        let scale = (&self.weight * inv_std)?;
        let shift = (&self.bias - (self.running_mean.as_detached_tensor() * &scale)?)?;
        Ok((scale, shift))
    }
}

impl BatchNorm2d {
    /// `relu?(bn(x))`; on the CPU in training mode one fused op (see [`kernels::batch_norm`]).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if train && kernels::applies_in_training(x) {
            return self.forward_train_fused(x, relu);
        }
        let y = self.forward_t(x, train)?;
        if relu { y.relu() } else { Ok(y) }
    }

    /// `relu?(bn(x))` in training mode on the CPU, its batch statistics from `sums` where the
    /// convolution before summed its output's planes as it wrote them (see
    /// [`kernels::batch_norm::PlaneSums`]).
    pub fn forward_relu_train_summed(&self, x: &Tensor, relu: bool, sums: Option<Vec<PlaneSums>>) -> Result<Tensor> {
        if !kernels::applies_in_training(x) {
            return self.forward_relu_t(x, true, relu);
        }
        let x = x.contiguous()?;
        let op = self.batch_statistics(&x, relu, sums)?;
        x.apply_op3(&self.weight, &self.bias, op)
    }

    /// `relu(bn(x) + residual)` in training mode on the CPU, one fused op.
    pub fn forward_add_relu_train(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.forward_add_relu_train_summed(x, residual, None)
    }

    /// [`Self::forward_add_relu_train`], its statistics from `sums` as in
    /// [`Self::forward_relu_train_summed`].
    pub fn forward_add_relu_train_summed(
        &self,
        x: &Tensor,
        residual: &Tensor,
        sums: Option<Vec<PlaneSums>>,
    ) -> Result<Tensor> {
        let x = x.contiguous()?;
        let op = BatchNormAddReluOp(self.batch_statistics(&x, true, sums)?);
        // In a network the residual is stored as its block's input is (bf16 under autocast); a
        // caller's f32 residual is read in the same storage, as autocast's add would round it.
        let residual = residual.to_dtype(x.dtype())?.contiguous()?;
        x.apply_op3(&Tensor::cat(&[&self.weight, &self.bias], 0)?, &residual, op)
    }

    fn forward_train_fused(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        self.forward_relu_train_summed(x, relu, None)
    }

    /// The batch's statistics (updating the running estimates), as the fused op that uses them:
    /// from its planes' `sums` where they come with `x`, else from a pass over `x`.
    fn batch_statistics(&self, x: &Tensor, relu: bool, sums: Option<Vec<PlaneSums>>) -> Result<BatchNormTrainOp> {
        let count = Self::values_per_channel(x)?;
        let (mean, var) = match (x.dtype(), sums) {
            (_, Some(sums)) => stats_from_planes(&sums, x.dims())?,
            (DType::F64, None) => {
                with_slice::<f64, _>(x, "batch norm input", |s| channel_stats::<f64, f64>(s, x.dims()))??
            }
            (DType::BF16, None) => {
                with_slice::<half::bf16, _>(x, "batch norm input", |s| plane_stats::<f32, _>(s, x.dims()))??
            }
            (_, None) => with_slice::<f32, _>(x, "batch norm input", |s| channel_stats::<f32, f32>(s, x.dims()))??,
        };
        let m = self.momentum;
        let update = |running: &Var, batch: Vec<f64>| -> Result<()> {
            let host = Tensor::from_vec(batch, running.dims(), &candle_core::Device::Cpu)?;
            let batch = crate::model::device::upload(&host, running.dtype(), running.device(), "running statistics")?;
            running.set(&((running.as_detached_tensor() * (1.0 - m))? + (batch * m)?)?)
        };
        update(&self.running_mean, mean.clone())?;
        update(&self.running_var, var.iter().map(|v| v * count / (count - 1.0)).collect())?;
        let inv_std = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        // bf16 storage comes from autocast only (see `Conv2d::forward_stored`).
        let bf16 = x.dtype() == DType::BF16 || crate::model::autocast::bf16() && x.dtype() == DType::F32;
        Ok(BatchNormTrainOp { mean, inv_std, relu, bf16 })
    }
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            return self.forward_train(x);
        }
        let c = x.dim(1)?;
        let (scale, shift) = self.eval_affine()?;
        x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?.broadcast_add(&shift.reshape((1, c, 1, 1))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One value per channel cannot be normalised in training mode: both the fused CPU op and the
    /// composed path say so, naming the shape, instead of dividing by zero.
    #[test]
    fn training_mode_refuses_one_value_per_channel() {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let bn = BatchNorm2d::new(3, vb).unwrap();
        let x = Tensor::ones((1, 3, 1, 1), DType::F32, &Device::Cpu).unwrap();
        for result in [bn.forward_relu_t(&x, true, true), bn.forward_t(&x, true)] {
            let e = result.unwrap_err().to_string();
            assert!(e.contains("more than one value per channel") && e.contains("[1, 3, 1, 1]"), "{e}");
        }
        // Two values are enough, and evaluation mode never needed more than one.
        let x2 = Tensor::ones((2, 3, 1, 1), DType::F32, &Device::Cpu).unwrap();
        assert!(bn.forward_relu_t(&x2, true, true).is_ok());
        assert!(bn.forward_t(&x, false).is_ok());
    }
}
