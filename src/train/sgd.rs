//! SGD as `torch.optim.SGD` computes it: weight decay added to the gradient, momentum buffer
//! initialised with the first gradient, optional dampening and Nesterov.
use candle_core::{Result, Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { lr: 0.01, momentum: 0.9, dampening: 0.0, weight_decay: 1e-4, nesterov: false }
    }
}

pub struct Sgd {
    /// (name, variable, momentum buffer)
    params: Vec<(String, Var, Option<Tensor>)>,
    pub cfg: SgdConfig,
}

impl Sgd {
    pub fn new(params: Vec<(String, Var)>, cfg: SgdConfig) -> Result<Self> {
        if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
            candle_core::bail!("Nesterov momentum requires a momentum and zero dampening");
        }
        Ok(Self { params: params.into_iter().map(|(n, v)| (n, v, None)).collect(), cfg })
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// One update from gradients. Parameters without a gradient are left alone, as PyTorch does.
    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        let c = self.cfg;
        for (_, var, buf) in self.params.iter_mut() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            // Detach: a gradient still references the forward graph, and the buffer lives on.
            let mut d = g.detach();
            if c.weight_decay != 0.0 {
                d = (d + (var.as_tensor().detach() * c.weight_decay)?)?;
            }
            if c.momentum != 0.0 {
                let b = match buf.take() {
                    None => d.clone(),
                    Some(b) => ((b * c.momentum)? + (&d * (1.0 - c.dampening))?)?,
                };
                d = if c.nesterov { (d + (&b * c.momentum)?)? } else { b.clone() };
                *buf = Some(b);
            }
            var.set(&(var.as_tensor().detach() - (d * c.lr)?)?)?;
        }
        Ok(())
    }

    /// Momentum buffers by parameter name (for checkpoints).
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        self.params.iter().filter_map(|(n, _, b)| b.as_ref().map(|b| (n.clone(), b.clone()))).collect()
    }

    /// Restores momentum buffers saved by [`Sgd::buffers`].
    pub fn set_buffers(&mut self, mut get: impl FnMut(&str) -> Option<Tensor>) {
        for (n, _, b) in self.params.iter_mut() {
            *b = get(n);
        }
    }
}
