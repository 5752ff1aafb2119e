//! The rows of the study's Table 2 as ready-made configurations. The study names the
//! architecture, scheduler and method of each row but not its learning rate or epochs; these
//! use common fine-tuning values (SGD, momentum 0.9, lr 1e-3 for fine-tuning, 1e-2 for transfer
//! and scratch, StepLR step 7 gamma 0.1, ReduceLROnPlateau on validation loss with patience 3).
use super::schedule::{PlateauMode, SchedulerConfig, ThresholdMode};
use super::{Method, Pretrained, TrainConfig};
use crate::model::Arch;

pub struct Preset {
    pub name: &'static str,
    pub label: &'static str,
    /// The study's (validation, top-1, top-3) accuracy in percent, for comparison; `None` for
    /// the demo, which is not a row of the study.
    pub study: Option<(f64, f64, f64)>,
    arch: Arch,
    plateau: bool,
    method: Method,
}

/// The name of the demo preset, whose runs the views label as a demo.
pub const DEMO: &str = crate::catalog::DEMO_PRESET;

pub const PRESETS: [Preset; 7] = [
    // Shows the whole job on the built-in sample in under a minute on a laptop CPU, offline (27 s on a 2-core EPYC):
    // ResNet-50 from scratch at 128 px, 10 epochs with the learning rate dropped after 7.
    Preset {
        name: DEMO,
        label: "Demo · ResNet50 from scratch, 128 px, 10 epochs (under a minute on a CPU; not the study)",
        study: None,
        arch: Arch::Resnet50,
        plateau: false,
        method: Method::Scratch,
    },
    Preset {
        name: "resnet50-plateau-finetune",
        label: "ResNet50 · ReduceOnPlateau · Fine-tuned",
        study: Some((69.28, 71.79, 91.84)),
        arch: Arch::Resnet50,
        plateau: true,
        method: Method::FineTune,
    },
    Preset {
        name: "resnet50-step-finetune",
        label: "ResNet50 · StepLR · Fine-tuned",
        study: Some((68.28, 70.09, 91.69)),
        arch: Arch::Resnet50,
        plateau: false,
        method: Method::FineTune,
    },
    Preset {
        name: "vgg16bn-step-finetune",
        label: "VGG-16 BN · StepLR · Fine-tuned",
        study: Some((67.37, 68.13, 90.63)),
        arch: Arch::Vgg16Bn,
        plateau: false,
        method: Method::FineTune,
    },
    Preset {
        name: "alexnet-step-finetune",
        label: "AlexNet · StepLR · Fine-tuned",
        study: Some((68.28, 65.71, 88.07)),
        arch: Arch::Alexnet,
        plateau: false,
        method: Method::FineTune,
    },
    Preset {
        name: "resnet50-step-transfer",
        label: "ResNet50 · StepLR · Transfer",
        study: Some((60.88, 60.88, 86.86)),
        arch: Arch::Resnet50,
        plateau: false,
        method: Method::Transfer,
    },
    Preset {
        name: "resnet50-step-scratch",
        label: "ResNet50 · StepLR · Scratch",
        study: Some((50.01, 48.04, 78.55)),
        arch: Arch::Resnet50,
        plateau: false,
        method: Method::Scratch,
    },
];

impl Preset {
    pub fn config(&self) -> TrainConfig {
        let mut c = TrainConfig { arch: self.arch, method: self.method, ..Default::default() };
        c.scheduler = if self.plateau {
            SchedulerConfig::Plateau {
                mode: PlateauMode::Min,
                factor: 0.1,
                patience: 3,
                threshold: 1e-4,
                threshold_mode: ThresholdMode::Rel,
                cooldown: 0,
                min_lr: 0.0,
                eps: 1e-8,
            }
        } else {
            SchedulerConfig::step_default()
        };
        c.sgd.lr = if self.method == Method::FineTune { 1e-3 } else { 1e-2 };
        c.pretrained = if self.method == Method::Scratch { Pretrained::None } else { Pretrained::Hub };
        c.preset = Some(self.name.to_string());
        if self.name == DEMO {
            (c.epochs, c.image_size, c.batch) = (10, 128, 8);
        }
        c
    }
}

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}
