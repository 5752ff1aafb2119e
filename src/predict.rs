//! Prediction: a culture model on one image, with its top-k cultures and an activation map
//! (the study's channel sum, or Grad-CAM for a chosen class).
use crate::analysis::activation::{self, Heatmap};
use crate::imaging::{self, tensor as itensor};
use crate::model::checkpoint::{self, CheckpointError, LoadedModel};
use crate::workspace::Workspace;
use candle_core::{D, Device, Tensor};
use image::RgbImage;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Image(#[from] imaging::ImageError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("this workspace has no trained run yet: train one (`artculture train`) or pass --checkpoint FILE")]
    NoRun,
    #[error("run {run} has no checkpoint ({path} is missing)")]
    NoCheckpoint { run: String, path: PathBuf },
    #[error("unknown culture {name:?}; this model knows {known}")]
    UnknownClass { name: String, known: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CamKind {
    /// The study's map: the last conv map summed over channels.
    #[default]
    Sum,
    /// Grad-CAM of one class (the top class unless one is named).
    Gradcam,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Ranked {
    pub culture: String,
    pub p: f32,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Prediction {
    pub image: PathBuf,
    pub top: Vec<Ranked>,
    /// All classes' probabilities, in the model's class order.
    #[serde(skip)]
    pub probs: Vec<f32>,
    #[serde(skip)]
    pub heatmap: Heatmap,
    pub width: u32,
    pub height: u32,
    #[serde(skip)]
    pub frame: itensor::CropFrame,
}

/// The checkpoint file of a run (the best one), or of the workspace's best run.
pub fn run_checkpoint(ws: &Workspace, run: Option<&str>) -> Result<PathBuf, PredictError> {
    let run = match run {
        Some(r) => ws.catalog.run(r)?.id,
        None => ws.catalog.best_run()?.ok_or(PredictError::NoRun)?.id,
    };
    let path = crate::train::evaluate::best_checkpoint(ws, &run);
    if path.exists() { Ok(path) } else { Err(PredictError::NoCheckpoint { run, path }) }
}

pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel, PredictError> {
    Ok(checkpoint::load(path, device)?)
}

/// The class index of a culture name (case-insensitive).
pub fn class_index(model: &LoadedModel, name: &str) -> Result<usize, PredictError> {
    model
        .meta
        .classes
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| PredictError::UnknownClass { name: name.into(), known: model.meta.classes.join(", ") })
}

/// Predicts a decoded image.
pub fn predict_rgb(
    model: &LoadedModel,
    img: &RgbImage,
    path: &Path,
    top_k: usize,
    cam: CamKind,
    class: Option<usize>,
    device: &Device,
) -> Result<Prediction, PredictError> {
    let size = model.meta.image_size;
    let crop = itensor::eval_crop(img, size);
    let data = itensor::to_chw(&crop, model.meta.mean, model.meta.std);
    let x = Tensor::from_vec(data, (1, 3, size, size), device)?;
    let (logits, features) = model.net.forward_with_features(&x)?;
    let probs = candle_nn::ops::softmax(&logits, D::Minus1)?.get(0)?.to_vec1::<f32>()?;
    let order = crate::train::metrics::top_k(&probs, top_k.max(1).min(probs.len()));
    let heatmap = match cam {
        CamKind::Sum => activation::channel_sum(&features)?,
        CamKind::Gradcam => activation::grad_cam(&model.net, &features, class.unwrap_or(order[0]))?,
    };
    let (width, height) = img.dimensions();
    Ok(Prediction {
        image: path.to_path_buf(),
        top: order.iter().map(|&i| Ranked { culture: model.meta.classes[i].clone(), p: probs[i] }).collect(),
        probs,
        heatmap,
        width,
        height,
        frame: itensor::centre_crop_frame(width, height, size),
    })
}

/// Decodes and predicts a file; also returns the decoded image (for overlays).
pub fn predict_file(
    model: &LoadedModel,
    path: &Path,
    top_k: usize,
    cam: CamKind,
    class: Option<usize>,
    device: &Device,
) -> Result<(Prediction, RgbImage), PredictError> {
    let img = imaging::decode_file(path)?.rgb;
    let p = predict_rgb(model, &img, path, top_k, cam, class, device)?;
    Ok((p, img))
}
