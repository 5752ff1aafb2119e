//! `nn.Linear` and the initialisations torchvision gives its layers (as hints for the
//! `VarBuilder`, so loaded weights replace them and seeded runs draw them from `init`).
use candle_core::Result;
use candle_nn::{Init, VarBuilder};

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
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<candle_nn::Linear> {
    linear_with_init(in_dim, out_dim, default_uniform(in_dim), default_uniform(in_dim), vb)
}

pub fn linear_with_init(
    in_dim: usize,
    out_dim: usize,
    w_init: Init,
    b_init: Init,
    vb: VarBuilder,
) -> Result<candle_nn::Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", w_init)?;
    let b = vb.get_with_hints(out_dim, "bias", b_init)?;
    Ok(candle_nn::Linear::new(w, Some(b)))
}
