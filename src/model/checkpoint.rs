//! Checkpoints of trained culture models: one safetensors file with the backbone, the head and
//! the metadata needed to predict from it alone (architecture, classes in order, image size,
//! normalisation, training configuration).
use super::tensor_file;
use super::weights::{WeightsError, read_header, var_builder};
use super::{Arch, CultureNet};
use crate::fsutil::write_atomic;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Key of our metadata in the safetensors header.
const META_KEY: &str = "artculture";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    pub arch: Arch,
    /// Culture names in the order of the head's outputs.
    pub classes: Vec<String>,
    pub image_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub hidden: [usize; 2],
    pub dropout: f32,
    pub run_id: Option<String>,
    /// The training configuration, as the trainer wrote it.
    pub train_config: serde_json::Value,
    /// A CLIP-backed model's CLIP configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<super::clip::ClipConfig>,
}

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(
        "{path} is a safetensors file but not an artculture checkpoint (no `{META_KEY}` metadata); for raw backbone weights use `--pretrained`"
    )]
    NoMetadata { path: PathBuf },
    #[error("{path}: checkpoint metadata is unreadable: {detail}")]
    BadMetadata { path: PathBuf, detail: String },
    #[error("{path}: checkpoint format {found} is newer than this build reads ({FORMAT_VERSION})")]
    TooNew { path: PathBuf, found: u32 },
    #[error("{path}: the weights do not match the checkpoint's own description: {detail}")]
    Mismatch { path: PathBuf, detail: String },
    #[error(transparent)]
    Write(#[from] crate::fsutil::WriteError),
    #[error("cannot serialise checkpoint {path}: {detail}")]
    Serialise { path: PathBuf, detail: String },
}

/// Writes tensors and metadata atomically. `extra` adds metadata entries (e.g. resume state).
pub fn save(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    meta: &CheckpointMeta,
    extra: &[(&str, String)],
) -> Result<(), CheckpointError> {
    let json = serde_json::to_string(meta)
        .map_err(|e| CheckpointError::Serialise { path: path.into(), detail: e.to_string() })?;
    let mut info = HashMap::from([(META_KEY.to_string(), json)]);
    info.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    // Streamed from the tensors' memory: a checkpoint with momentum buffers is ~200 MB, written
    // every epoch (see `tensor_file`).
    let file = tensor_file::prepare(tensors, info)
        .map_err(|detail| CheckpointError::Serialise { path: path.into(), detail })?;
    write_atomic(path, |f| file.write(f))?;
    Ok(())
}

/// An extra metadata entry written by [`save`].
pub fn read_extra(path: &Path, key: &str) -> Result<Option<String>, CheckpointError> {
    Ok(read_header(path)?.1.get(key).cloned())
}

pub fn read_meta(path: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let (_, meta) = read_header(path)?;
    let raw = meta.get(META_KEY).ok_or_else(|| CheckpointError::NoMetadata { path: path.into() })?;
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| CheckpointError::BadMetadata { path: path.into(), detail: e.to_string() })?;
    let format = value["format"].as_u64().unwrap_or(0) as u32;
    if format > FORMAT_VERSION {
        return Err(CheckpointError::TooNew { path: path.into(), found: format });
    }
    serde_json::from_value(value).map_err(|e| CheckpointError::BadMetadata { path: path.into(), detail: e.to_string() })
}

/// A culture model ready to predict, with its description.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub net: CultureNet,
    pub meta: CheckpointMeta,
    pub path: PathBuf,
}

/// Loads a checkpoint for inference (weights as plain tensors: no autograd graph is recorded).
pub fn load(path: &Path, device: &Device) -> Result<LoadedModel, CheckpointError> {
    let meta = read_meta(path)?;
    if meta.classes.is_empty() {
        return Err(CheckpointError::Mismatch { path: path.into(), detail: "it lists no classes".into() });
    }
    let vb = var_builder(path, DType::F32, device)?;
    let net = match (&meta.clip, meta.arch.is_clip()) {
        (Some(c), true) => CultureNet::new_clip(c, meta.hidden, meta.classes.len(), vb),
        _ => CultureNet::new(meta.arch, meta.dropout, meta.hidden, meta.classes.len(), vb),
    }
    .map_err(|e| CheckpointError::Mismatch { path: path.into(), detail: e.to_string() })?;
    Ok(LoadedModel { net, meta, path: path.into() })
}
