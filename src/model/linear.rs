//! `nn.Linear` and the initialisations torchvision gives its layers (as hints for the
//! `VarBuilder`, so loaded weights replace them and seeded runs draw them from `init`).
use super::autocast;
use crate::kernels;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use std::sync::{Arc, OnceLock};

/// `nn.Linear` (`weight` out x in, `bias`), computing `x W^T + b` as `(W x^T)^T`.
///
/// candle's `Linear` multiplies `x` by the transposed weight view, and for that operand order
/// `gemm` repacks the whole weight matrix on every call: at batch 16 the head's first layer
/// (1024 x 2048) took 6.5 ms that way against 0.65 ms as `W x^T`, and VGG-16's and AlexNet's
/// classifiers (100-400 MB of weights) paid it on every forward pass. Same values (each output is
/// the same dot product), autograd through `matmul` and `t` as before.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// The weight rounded to bf16 for autocast, kept for plain tensors (a loaded model).
    bf16: Arc<OnceLock<Tensor>>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias, bf16: Arc::default() }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Linear {
    /// Evaluation of a few rows on the CPU, with nothing to differentiate: the weight-streaming
    /// product of [`kernels::gemv`].
    fn small_batch_eval(x: &Tensor, weight: &Tensor) -> Result<bool> {
        Ok(kernels::applies(x)
            && x.dim(0)? <= kernels::gemv::MAX_ROWS
            && x.dtype() == weight.dtype()
            // A mismatch is left to `matmul`, which names both shapes.
            && weight.rank() == 2
            && x.dim(1)? == weight.dim(1)?
            && weight.device().is_cpu()
            && !x.track_op()
            && !weight.track_op())
    }

    fn gemv(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let (n, in_dim) = x.dims2()?;
        let out = weight.dim(0)?;
        match x.dtype() {
            DType::F32 => {
                let y = kernels::with_slice::<f32, _>(weight, "linear weight", |w| {
                    kernels::with_slice::<f32, _>(x, "linear input", |x| kernels::gemv::forward(w, x, n, in_dim))
                })??;
                Tensor::from_vec(y, (n, out), x.device())
            }
            DType::F64 => {
                let y = kernels::with_slice::<f64, _>(weight, "linear weight", |w| {
                    kernels::with_slice::<f64, _>(x, "linear input", |x| kernels::gemv::forward(w, x, n, in_dim))
                })??;
                Tensor::from_vec(y, (n, out), x.device())
            }
            dt => candle_core::bail!("linear: unsupported dtype {dt:?}"),
        }
    }
}

impl Linear {
    /// The weight a forward pass uses: itself, or under bf16 autocast its rounding (kept for a
    /// plain tensor, whose values never change; made per call, differentiably, for a `Var`).
    fn weight_now(&self, x: &Tensor) -> Result<Tensor> {
        if !autocast::bf16() || x.dtype() != DType::F32 {
            return Ok(self.weight.clone());
        }
        if self.weight.is_variable() || self.weight.track_op() {
            return autocast::round(&self.weight);
        }
        if let Some(w) = self.bf16.get() {
            return Ok(w.clone());
        }
        let w = autocast::round(&self.weight)?;
        Ok(self.bf16.get_or_init(|| w).clone())
    }
}

impl Module for Linear {
    /// Under bf16 autocast: input, weight and bias rounded to bf16, f32 accumulation (the bias
    /// added in f32, as oneDNN's fused bias does), the output rounded to bf16.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (x, weight) = (autocast::cast(x)?, self.weight_now(x)?);
        let y = match x.rank() {
            2 if Self::small_batch_eval(&x, &weight)? => Self::gemv(&x, &weight)?,
            2 => weight.matmul(&x.t()?)?.t()?,
            _ => candle_nn::Linear::new(weight, None).forward(&x)?,
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(&autocast::cast(b)?)?,
            None => y,
        };
        autocast::cast(&y)
    }
}

/// torchvision's initialisation for convolutions followed by ReLU: Kaiming normal, fan-out.
pub fn kaiming_fan_out(out_c: usize, k: usize) -> Init {
    Init::Randn { mean: 0.0, stdev: (2.0 / (out_c * k * k) as f64).sqrt() }
}

/// PyTorch's default initialisation of a layer (weight and bias): uniform in ±1/sqrt(fan_in).
pub fn default_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

/// `nn.Linear` as PyTorch initialises it: weight and bias uniform in ±1/sqrt(fan_in).
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_with_init(in_dim, out_dim, default_uniform(in_dim), default_uniform(in_dim), vb)
}

pub fn linear_with_init(in_dim: usize, out_dim: usize, w_init: Init, b_init: Init, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", w_init)?;
    let b = vb.get_with_hints(out_dim, "bias", b_init)?;
    Ok(Linear::new(w, Some(b)))
}
