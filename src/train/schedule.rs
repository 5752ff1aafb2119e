//! Learning-rate schedules with PyTorch's exact semantics: `StepLR` (chainable form: the rate
//! is multiplied by gamma every `step_size` epochs) and `ReduceLROnPlateau`.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlateauMode {
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    Rel,
    Abs,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SchedulerConfig {
    Step {
        step_size: u32,
        gamma: f64,
    },
    Plateau {
        mode: PlateauMode,
        factor: f64,
        patience: u32,
        threshold: f64,
        threshold_mode: ThresholdMode,
        cooldown: u32,
        min_lr: f64,
        eps: f64,
    },
}

impl SchedulerConfig {
    pub fn step_default() -> Self {
        Self::Step { step_size: 7, gamma: 0.1 }
    }

    /// PyTorch's defaults, watching validation loss.
    pub fn plateau_default() -> Self {
        Self::Plateau {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Step { .. } => "StepLR",
            Self::Plateau { .. } => "ReduceLROnPlateau",
        }
    }
}

/// A schedule's whole state: saving and restoring it resumes exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    pub cfg: SchedulerConfig,
    pub lr: f64,
    pub last_epoch: u32,
    best: Option<f64>,
    num_bad_epochs: u32,
    cooldown_counter: u32,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, lr: f64) -> Self {
        Self { cfg, lr, last_epoch: 0, best: None, num_bad_epochs: 0, cooldown_counter: 0 }
    }

    /// Ends an epoch; `metric` is what ReduceLROnPlateau watches. Returns the new rate.
    pub fn step(&mut self, metric: f64) -> f64 {
        self.last_epoch += 1;
        match self.cfg {
            SchedulerConfig::Step { step_size, gamma } => {
                if step_size > 0 && self.last_epoch.is_multiple_of(step_size) {
                    self.lr *= gamma;
                }
            }
            SchedulerConfig::Plateau { mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps } => {
                let better = match self.best {
                    None => !metric.is_nan(),
                    Some(best) => match (mode, threshold_mode) {
                        (PlateauMode::Min, ThresholdMode::Rel) => metric < best * (1.0 - threshold),
                        (PlateauMode::Min, ThresholdMode::Abs) => metric < best - threshold,
                        (PlateauMode::Max, ThresholdMode::Rel) => metric > best * (threshold + 1.0),
                        (PlateauMode::Max, ThresholdMode::Abs) => metric > best + threshold,
                    },
                };
                if better {
                    self.best = Some(metric);
                    self.num_bad_epochs = 0;
                } else {
                    self.num_bad_epochs += 1;
                }
                if self.cooldown_counter > 0 {
                    self.cooldown_counter -= 1;
                    self.num_bad_epochs = 0;
                }
                if self.num_bad_epochs > patience {
                    let new_lr = (self.lr * factor).max(min_lr);
                    if self.lr - new_lr > eps {
                        self.lr = new_lr;
                    }
                    self.cooldown_counter = cooldown;
                    self.num_bad_epochs = 0;
                }
            }
        }
        self.lr
    }
}
