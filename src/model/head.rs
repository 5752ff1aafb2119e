//! The culture head that replaces a backbone's last layer: three linear layers with ReLU
//! between them, under the prefix `head` with `nn.Sequential` names (`head.0`, `head.2`,
//! `head.4`), initialised as PyTorch initialises `nn.Linear`.
use super::linear::linear;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

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
