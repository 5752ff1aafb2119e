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
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            (0..x.elem_count()).map(|_| if rng.random_bool(keep) { (1.0 / keep) as f32 } else { 0.0 }).collect()
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }
}
