//! The one set of rules for a training configuration, applied by the CLI, the app's form and
//! the trainer itself (a configuration read back from a run is checked again). Each message
//! names the option as the CLI spells it and the range it accepts. Ranges follow PyTorch's
//! checks (`torch.optim.SGD`, `StepLR`, `ReduceLROnPlateau`) and, where PyTorch accepts a value
//! that can only waste a run (a learning rate of 0, momentum of 1 or more), are narrower.
use super::TrainConfig;
use super::schedule::SchedulerConfig;

/// Largest batch accepted: beyond it a CPU run only runs out of memory.
pub const MAX_BATCH: usize = 1024;
/// Largest input side accepted (the study uses 224).
pub const MAX_IMAGE_SIZE: usize = 1024;
/// Largest hidden layer of the culture head.
pub const MAX_HIDDEN: usize = 65_536;
/// Largest number of epochs.
pub const MAX_EPOCHS: u32 = 10_000;

/// What is wrong with a configuration, option by option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

impl TrainConfig {
    /// Every problem at once, so a user fixes them in one go.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut bad = Vec::new();
        // Shown in the type the user typed (an f32 0.1 is not 0.10000000149011612).
        fn real<T: Into<f64> + std::fmt::Display>(bad: &mut Vec<String>, name: &str, v: T, ok: bool, range: &str) {
            let shown = v.to_string();
            if !v.into().is_finite() || !ok {
                bad.push(format!("--{name} {shown} is outside {range}"));
            }
        }
        let sgd = &self.sgd;
        real(&mut bad, "lr", sgd.lr, sgd.lr > 0.0, "(0, inf) (a finite learning rate above 0)");
        real(&mut bad, "momentum", sgd.momentum, (0.0..1.0).contains(&sgd.momentum), "[0, 1)");
        real(&mut bad, "weight-decay", sgd.weight_decay, sgd.weight_decay >= 0.0, "[0, inf)");
        real(&mut bad, "dropout", self.dropout, (0.0..1.0).contains(&self.dropout), "[0, 1)");
        match self.scheduler {
            SchedulerConfig::Step { step_size, gamma } => {
                real(&mut bad, "gamma", gamma, gamma > 0.0 && gamma <= 1.0, "(0, 1] for StepLR");
                if step_size < 1 {
                    bad.push("--step-size 0 is outside [1, inf) (epochs between reductions)".into());
                }
            }
            SchedulerConfig::Plateau { factor, threshold, min_lr, eps, .. } => {
                real(&mut bad, "gamma", factor, factor > 0.0 && factor < 1.0, "(0, 1) for ReduceLROnPlateau");
                real(&mut bad, "threshold", threshold, threshold >= 0.0, "[0, inf)");
                real(&mut bad, "min-lr", min_lr, min_lr >= 0.0, "[0, inf)");
                real(&mut bad, "eps", eps, eps >= 0.0, "[0, inf)");
            }
        }
        if self.sgd.nesterov && (self.sgd.momentum <= 0.0 || self.sgd.dampening != 0.0) {
            bad.push("--nesterov needs --momentum above 0 (and no dampening), as in PyTorch".into());
        }
        let mut count = |name: &str, v: usize, lo: usize, hi: usize, why: &str| {
            if v < lo || v > hi {
                bad.push(format!("--{name} {v} is outside [{lo}, {hi}]{why}"));
            }
        };
        count("epochs", self.epochs as usize, 1, MAX_EPOCHS as usize, "");
        count("batch", self.batch, 2, MAX_BATCH, " (batch norm needs two images)");
        let min = self.arch.min_input();
        count("image-size", self.image_size, min, MAX_IMAGE_SIZE, &format!(" for {}", self.arch));
        count("hidden", self.hidden[0], 1, MAX_HIDDEN, " (first hidden size)");
        count("hidden", self.hidden[1], 1, MAX_HIDDEN, " (second hidden size)");
        if self.arch.is_clip() && self.method != super::Method::Transfer {
            bad.push(format!(
                "--arch {} trains with --method transfer only (a frozen CLIP and a culture head; fine-tuning a ViT is beyond a CPU)",
                self.arch
            ));
        }
        if self.arch.is_clip() && self.precision != crate::model::autocast::Precision::F32 {
            bad.push("--precision bf16 covers the convolutional networks; CLIP runs in f32".into());
        }
        if self.arch.is_clip() && self.pretrained == super::Pretrained::None {
            bad.push("--arch clip_vit_b32 needs CLIP's weights (--pretrained hub, or a CLIP checkpoint folder)".into());
        }
        if bad.is_empty() { Ok(()) } else { Err(ConfigError(bad)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;

    #[test]
    fn defaults_and_presets_are_valid() {
        assert_eq!(TrainConfig::default().validate(), Ok(()));
        for p in crate::train::presets::PRESETS {
            assert_eq!(p.config().validate(), Ok(()), "{}", p.name);
        }
    }

    #[test]
    fn each_bad_value_is_named_with_its_range() {
        type Change = Box<dyn Fn(&mut TrainConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.dropout = 1.5), "--dropout 1.5 is outside [0, 1)"),
            (Box::new(|c| c.dropout = f32::NAN), "--dropout NaN is outside [0, 1)"),
            (Box::new(|c| c.sgd.lr = 0.0), "--lr 0 is outside"),
            (Box::new(|c| c.sgd.lr = f64::INFINITY), "--lr inf is outside"),
            (Box::new(|c| c.sgd.momentum = 1.0), "--momentum 1 is outside [0, 1)"),
            (Box::new(|c| c.sgd.weight_decay = -1e-4), "--weight-decay -0.0001 is outside [0, inf)"),
            (Box::new(|c| c.scheduler = SchedulerConfig::Step { step_size: 0, gamma: 0.1 }), "--step-size 0"),
            (
                Box::new(|c| c.scheduler = SchedulerConfig::Step { step_size: 7, gamma: 2.0 }),
                "--gamma 2 is outside (0, 1]",
            ),
            (Box::new(|c| c.epochs = 0), "--epochs 0 is outside [1, 10000]"),
            (Box::new(|c| c.batch = 1), "--batch 1 is outside [2, 1024]"),
            (Box::new(|c| c.hidden = [0, 10]), "--hidden 0 is outside [1, 65536] (first hidden size)"),
            (
                Box::new(|c| {
                    c.arch = Arch::Alexnet;
                    c.image_size = 40
                }),
                "--image-size 40 is outside [63, 1024] for alexnet",
            ),
            (
                Box::new(|c| {
                    c.sgd.momentum = 0.0;
                    c.sgd.nesterov = true
                }),
                "--nesterov needs --momentum above 0",
            ),
        ];
        for (change, want) in cases {
            let mut c = TrainConfig::default();
            change(&mut c);
            let e = c.validate().expect_err(want).to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        let mut plateau = TrainConfig { scheduler: SchedulerConfig::plateau_default(), ..Default::default() };
        if let SchedulerConfig::Plateau { factor, threshold, .. } = &mut plateau.scheduler {
            *factor = 1.0;
            *threshold = f64::NAN;
        }
        let e = plateau.validate().unwrap_err();
        assert_eq!(e.0.len(), 2, "both problems at once: {e}");
    }
}
