//! Seeded initialisation: a VarBuilder backend that creates each variable of a VarMap from the
//! run's seed and the variable's name. candle's own initialisers draw from a CPU generator that
//! cannot be seeded, so two runs "with the same seed" would start from different weights.
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};

struct Seeded {
    map: VarMap,
    seed: u64,
}

fn name_seed(seed: u64, name: &str) -> u64 {
    let h = name.bytes().fold(0xCBF29CE484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001B3));
    crate::seed::mix_seed(&[seed, h])
}

/// Values for `init`, drawn from a generator seeded by (seed, name).
pub fn values(init: Init, n: usize, seed: u64, name: &str) -> candle_core::Result<Vec<f64>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(name_seed(seed, name));
    Ok(match init {
        Init::Const(v) => vec![v; n],
        Init::Randn { mean, stdev } => {
            let d = Normal::new(mean, stdev).map_err(candle_core::Error::wrap)?;
            (0..n).map(|_| d.sample(&mut rng)).collect()
        }
        Init::Uniform { lo, up } => {
            let d = Uniform::new(lo, up).map_err(candle_core::Error::wrap)?;
            (0..n).map(|_| d.sample(&mut rng)).collect()
        }
        Init::Kaiming { .. } => candle_core::bail!("{name}: Kaiming hints are not used by artculture's models"),
    })
}

impl SimpleBackend for Seeded {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut data = self.map.data().lock().map_err(|_| candle_core::Error::msg("variable map poisoned"))?;
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("{name}: shape {:?} requested, {:?} exists", s.dims(), v.dims());
            }
            return Ok(v.as_tensor().clone());
        }
        let host = Tensor::from_vec(values(h, s.elem_count(), self.seed, name)?, s, &Device::Cpu)?;
        let t = super::device::upload(&host, dtype, dev, name)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        let data = self.map.data().lock().map_err(|_| candle_core::Error::msg("variable map poisoned"))?;
        data.get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::msg(format!("no variable {name}")))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.data().lock().map(|d| d.contains_key(name)).unwrap_or(false)
    }
}

/// A VarBuilder that fills `map` with variables initialised from `seed`.
pub fn seeded_var_builder(map: &VarMap, seed: u64, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(Seeded { map: map.clone(), seed }), dtype, device.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_any_order() {
        let build = |seed| {
            let map = VarMap::new();
            let vb = seeded_var_builder(&map, seed, DType::F32, &Device::Cpu);
            crate::model::CultureNet::new(crate::model::Arch::Alexnet, 0.5, [16, 8], 3, vb).unwrap();
            map.data().lock().unwrap()["features.0.weight"].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(build(7), build(7));
        assert_ne!(build(7), build(8));
        let a = values(Init::Uniform { lo: -1.0, up: 1.0 }, 4, 1, "x").unwrap();
        assert_eq!(a, values(Init::Uniform { lo: -1.0, up: 1.0 }, 4, 1, "x").unwrap());
        assert_ne!(a, values(Init::Uniform { lo: -1.0, up: 1.0 }, 4, 1, "y").unwrap());
    }
}
