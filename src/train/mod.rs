//! Training and evaluation: the study's experiments (architecture x method x scheduler), run on
//! a worker that reports over a channel, checkpointed every epoch and resumable.
mod batch_log;
pub mod data;
mod epoch;
pub use epoch::{image_step, transfer_step};
pub mod evaluate;
pub mod features;
pub mod metrics;
pub mod presets;
pub mod progress;
pub mod run_status;
pub mod schedule;
pub mod sgd;
pub mod split;
pub mod trainer;
pub mod validate;

pub use crate::seed::mix_seed;

use crate::model::Arch;
use schedule::SchedulerConfig;
use std::path::PathBuf;

/// How the backbone is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// All parameters, from pretrained weights.
    FineTune,
    /// Backbone frozen (evaluation mode), only the head trains, on cached embeddings.
    Transfer,
    /// All parameters, from torchvision's random initialisation.
    Scratch,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::FineTune => "finetune",
            Method::Transfer => "transfer",
            Method::Scratch => "scratch",
        }
    }
}

/// Where the backbone's starting weights come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pretrained {
    None,
    /// ImageNet weights from the Hugging Face cache (fetched if online).
    Hub,
    Path(PathBuf),
}

impl std::str::FromStr for Pretrained {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => Pretrained::None,
            "hub" => Pretrained::Hub,
            p => Pretrained::Path(PathBuf::from(p)),
        })
    }
}

/// Everything that defines a run. Stored with the run, so it can be repeated and resumed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub arch: Arch,
    pub method: Method,
    pub scheduler: SchedulerConfig,
    pub epochs: u32,
    pub sgd: sgd::SgdConfig,
    pub batch: usize,
    pub image_size: usize,
    pub seed: u64,
    pub pretrained: Pretrained,
    pub hidden: [usize; 2],
    pub dropout: f32,
    /// Weight the loss by inverse class frequency.
    pub balanced: bool,
    /// Random resized crop and horizontal flip for training images.
    pub augment: bool,
    /// Reuse this run's split (default: the most recent run's, so runs stay comparable).
    pub split_from: Option<String>,
    /// Make a new split even if earlier runs have one.
    pub new_split: bool,
    /// The preset this configuration started from (runs from the demo preset are labelled so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// f32, or PyTorch's bf16 autocast for the forward and backward passes (f32 master
    /// weights, optimiser state and checkpoints either way). Runs from before it are f32.
    pub precision: crate::model::autocast::Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Resnet50,
            method: Method::FineTune,
            scheduler: SchedulerConfig::step_default(),
            epochs: 25,
            sgd: sgd::SgdConfig { lr: 0.001, momentum: 0.9, dampening: 0.0, weight_decay: 1e-4, nesterov: false },
            batch: 16,
            image_size: 224,
            seed: 0,
            pretrained: Pretrained::Hub,
            hidden: crate::model::head::DEFAULT_HIDDEN,
            dropout: 0.5,
            balanced: false,
            augment: true,
            split_from: None,
            new_split: false,
            preset: None,
            precision: Default::default(),
        }
    }
}

/// What a training run reports while it works.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    Started {
        run_id: String,
        classes: Vec<String>,
        train: usize,
        val: usize,
        test: usize,
        epochs: u32,
        first_epoch: u32,
    },
    Batch(crate::catalog::BatchMetrics),
    Epoch(crate::catalog::EpochMetrics),
    Message(String),
    Paused,
    Resumed,
    Finished {
        run_id: String,
        best_val_acc: f64,
        top1: f64,
        top3: f64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Workspace(#[from] crate::workspace::WorkspaceError),
    #[error(transparent)]
    Weights(#[from] crate::model::weights::WeightsError),
    #[error(transparent)]
    Checkpoint(#[from] crate::model::checkpoint::CheckpointError),
    #[error(transparent)]
    Image(#[from] crate::imaging::ImageError),
    #[error(transparent)]
    Config(#[from] validate::ConfigError),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("{0}")]
    Data(String),
    #[error(
        "training diverged at epoch {epoch}, batch {batch}: the loss is {loss}; lower --lr (now {lr}) and start again"
    )]
    Diverged { epoch: u32, batch: usize, loss: f64, lr: f64 },
    #[error("training diverged at epoch {epoch}: the validation loss is {loss}; lower --lr (now {lr}) and start again")]
    DivergedValidation { epoch: u32, loss: f64, lr: f64 },
    #[error("run {0} was cancelled; continue it with `artculture train --resume {0}`")]
    Cancelled(String),
    #[error("run {0} is being trained by another process right now")]
    Busy(String),
    #[error("training crashed: {0} (a bug: please report it)")]
    Panicked(String),
    #[error("cannot write {path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

/// Pause and cancel, shared between the UI and the training thread.
#[derive(Debug, Default)]
pub struct Control {
    pub cancel: std::sync::atomic::AtomicBool,
    pub pause: std::sync::atomic::AtomicBool,
}
