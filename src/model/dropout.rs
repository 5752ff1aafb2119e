//! Dropout with a seedable mask. candle's CPU generator cannot be seeded, so a resumed run would
//! not repeat the masks of an uninterrupted one; here the trainer reseeds before every batch.
use candle_core::{Result, Tensor};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    rng: Arc<Mutex<StdRng>>,
}

impl Dropout {
    /// Refuses a probability outside [0, 1) (NaN included): 1 would divide by zero.
    pub fn new(p: f32) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            candle_core::bail!("dropout probability {p} is outside [0, 1)");
        }
        Ok(Self { p, rng: Arc::new(Mutex::new(StdRng::seed_from_u64(0))) })
    }

    pub fn reseed(&self, seed: u64) {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = StdRng::seed_from_u64(seed);
    }

    /// `nn.Dropout`: in training mode zeroes each value with probability p and scales the rest
    /// by 1 / (1 - p); identity in evaluation mode.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p as f64;
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if !x.device().is_cpu() {
            // On a GPU the mask is drawn there (no host mask copied per batch): the device's
            // generator is seeded from ours, so a resumed run draws the same masks.
            x.device().set_seed(rng.random())?;
            let mask = (Tensor::rand(0f32, 1f32, x.shape(), x.device())?.ge(self.p as f64)?.to_dtype(x.dtype())?
                * (1.0 / keep))?;
            return x * mask;
        }
        let mask: Vec<f32> =
            (0..x.elem_count()).map(|_| if rng.random_bool(keep) { (1.0 / keep) as f32 } else { 0.0 }).collect();
        let mask = crate::model::device::upload(
            &Tensor::from_vec(mask, x.shape(), &candle_core::Device::Cpu)?,
            x.dtype(),
            x.device(),
            "dropout mask",
        )?;
        x * mask
    }
}
