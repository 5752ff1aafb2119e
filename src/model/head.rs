//! The culture head that replaces a backbone's last layer: three linear layers with ReLU
//! between them, under the prefix `head` with `nn.Sequential` names (`head.0`, `head.2`,
//! `head.4`), initialised as PyTorch initialises `nn.Linear`.
use super::linear::Linear;
use super::linear::linear;
use crate::kernels::head::{HeadDims, HeadError, HeadGrads, HeadParams, head_step, head_step_bf16};
use candle_core::{DType, Module, Result, Storage, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct CultureHead {
    layers: [Linear; 3],
}

/// Hidden sizes used unless the user chooses others.
pub const DEFAULT_HIDDEN: [usize; 2] = [1024, 256];

impl CultureHead {
    pub fn new(in_dim: usize, hidden: [usize; 2], classes: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            layers: [
                linear(in_dim, hidden[0], vb.pp("0"))?,
                linear(hidden[0], hidden[1], vb.pp("2"))?,
                linear(hidden[1], classes, vb.pp("4"))?,
            ],
        })
    }
}

type StepResult<T> = std::result::Result<HeadGrads<T>, HeadError>;

/// One training step's loss and gradients, each gradient paired with its parameter tensor.
pub struct HeadGradients {
    pub loss: f64,
    pub grads: Vec<(Tensor, Tensor)>,
}

impl HeadGradients {
    /// The gradient of a parameter (for `Sgd::step_by`).
    pub fn of(&self, param: &Tensor) -> Option<Tensor> {
        self.grads.iter().find(|(p, _)| p.id() == param.id()).map(|(_, g)| g.clone())
    }
}

impl CultureHead {
    /// Cross-entropy loss and every parameter's gradient for a batch of inputs (batch x input),
    /// through one CPU kernel (`kernels::head`) instead of candle's autograd: same values, a
    /// fraction of the time for transfer training. `None` where the kernel does not apply (a
    /// GPU, a dtype other than f32/f64, or the CPU standing in for a device).
    pub fn fused_gradients(
        &self,
        x: &Tensor,
        labels: &[u32],
        class_weights: Option<&Tensor>,
    ) -> Result<Option<HeadGradients>> {
        if !crate::kernels::applies(x) || self.layers.iter().any(|l| l.bias().is_none()) {
            return Ok(None);
        }
        // Under bf16 autocast the kernel rounds where the autograd path's layers round (as
        // PyTorch's autocast does); autocast leaves f64 alone.
        let bf16 = super::autocast::bf16();
        match x.dtype() {
            DType::F32 if bf16 => self.fused(x, labels, class_weights, head_step_bf16).map(Some),
            DType::F32 => self.fused(x, labels, class_weights, head_step::<f32>).map(Some),
            DType::F64 => self.fused(x, labels, class_weights, head_step::<f64>).map(Some),
            _ => Ok(None),
        }
    }

    /// The gradients by `step` (`head_step` or its bf16 form) on the tensors' values.
    fn fused<T: crate::kernels::Float>(
        &self,
        x: &Tensor,
        labels: &[u32],
        class_weights: Option<&Tensor>,
        step: impl FnOnce(HeadDims, &HeadParams<T>, &[T], &[u32], Option<&[T]>) -> StepResult<T>,
    ) -> Result<HeadGradients> {
        let [a, b, c] = &self.layers;
        // (weight, bias) of each layer; `fused_gradients` sends layers without a bias to autograd.
        let mut params: Vec<(&Tensor, &Tensor)> = Vec::with_capacity(3);
        for l in [a, b, c] {
            let bias = l.bias().ok_or_else(|| candle_core::Error::msg("head step: a layer without a bias"))?;
            params.push((l.weight(), bias));
        }
        let dims = HeadDims {
            input: a.weight().dim(1)?,
            hidden: [a.weight().dim(0)?, b.weight().dim(0)?],
            classes: c.weight().dim(0)?,
        };
        let x = x.contiguous()?;
        let inputs: Vec<Tensor> =
            params.iter().flat_map(|(w, b)| [*w, *b]).chain([&x]).map(|t| t.contiguous()).collect::<Result<_>>()?;
        let guards: Vec<_> = inputs.iter().map(|t| t.storage_and_layout()).collect();
        let slices: Vec<&[T]> = guards
            .iter()
            .map(|(s, l)| match &**s {
                Storage::Cpu(s) => crate::kernels::contiguous_slice::<T>(s, l, "head step"),
                _ => candle_core::bail!("head step: a parameter is not on the CPU"),
            })
            .collect::<Result<_>>()?;
        let cw = class_weights.map(|w| w.to_dtype(T::DTYPE)?.to_vec1::<T>()).transpose()?;
        let p = HeadParams { weights: [slices[0], slices[2], slices[4]], biases: [slices[1], slices[3], slices[5]] };
        let g = step(dims, &p, slices[6], labels, cw.as_deref()).map_err(candle_core::Error::wrap)?;
        drop(guards);
        let mut grads = Vec::with_capacity(6);
        for ((wg, bg), (w, bias)) in g.weights.into_iter().zip(g.biases).zip(params) {
            grads.push((w.clone(), Tensor::from_vec(wg, w.shape(), w.device())?));
            grads.push((bias.clone(), Tensor::from_vec(bg, bias.shape(), bias.device())?));
        }
        Ok(HeadGradients { loss: num_traits::ToPrimitive::to_f64(&g.loss).unwrap_or(f64::NAN), grads })
    }
}

impl Module for CultureHead {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [a, b, c] = &self.layers;
        c.forward(&b.forward(&a.forward(x)?.relu()?)?.relu()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn init_bounds_follow_fan_in() {
        let map = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let head = CultureHead::new(2048, DEFAULT_HIDDEN, 11, vb).unwrap();
        let w = map.data().lock().unwrap()["head.0.weight".trim_start_matches("head.")].as_tensor().clone();
        let max = w.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let bound = 1.0 / 2048f32.sqrt();
        assert!(max <= bound && max > 0.9 * bound, "{max} vs {bound}");
        let y = head.forward(&Tensor::zeros((4, 2048), DType::F32, &Device::Cpu).unwrap()).unwrap();
        assert_eq!(y.dims(), &[4, 11]);
    }
}
