//! Embeddings of every non-flagged work under a run's best model, cached in `features/` keyed by
//! the checkpoint and each image's content hash (recomputed only when either changes).
use crate::catalog::ArtworkQuery;
use crate::model::checkpoint::{IMAGENET_MEAN, IMAGENET_STD, LoadedModel};
use crate::train::data::{self, Transform};
use crate::train::{Control, Method, TrainConfig, TrainError, features};
use crate::workspace::Workspace;
use candle_core::Device;
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct WorkEmbeddings {
    pub ids: Vec<i64>,
    pub cultures: Vec<String>,
    pub vectors: Vec<Vec<f32>>,
}

/// A key that changes when the file changes (its path, size and modification time).
pub(crate) fn file_key(kind: &str, path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{kind}|{}|{len}|{mtime}", path.display())
}

/// The embedding cache key of a checkpoint. A transfer run's backbone is the frozen one its
/// training embedded every work with, so its training cache is reused (when the checkpoint's
/// eval transform is the trainer's); any other run's backbone is its own.
/// Vectors computed in bf16 (this thread's autocast) are cached apart from f32 ones.
fn cache_key(model: &LoadedModel) -> String {
    use crate::model::autocast::{self, Precision};
    let now = if autocast::bf16() { Precision::Bf16 } else { Precision::F32 };
    let cfg = serde_json::from_value::<TrainConfig>(model.meta.train_config.clone()).ok();
    let imagenet = model.meta.mean == IMAGENET_MEAN && model.meta.std == IMAGENET_STD;
    match (cfg, &model.meta.run_id) {
        (Some(cfg), Some(run))
            if cfg.method == Method::Transfer
                && imagenet
                && cfg.image_size == model.meta.image_size
                && cfg.precision == now =>
        {
            features::transfer_key(&cfg, run)
        }
        _ => match now {
            Precision::F32 => file_key("checkpoint", &model.path),
            p => format!("{}|{p}", file_key("checkpoint", &model.path)),
        },
    }
}

/// `model` is the loaded checkpoint (callers use it afterwards too, so it is loaded once).
pub fn embed_works(
    ws: &Workspace,
    model: &LoadedModel,
    device: &Device,
    control: &Control,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<WorkEmbeddings, TrainError> {
    let q = ArtworkQuery { grouped_only: true, flagged: Some(false), with_image_only: true, ..Default::default() };
    let works: Vec<(i64, String)> = ws
        .catalog
        .artworks(&q)?
        .into_iter()
        .filter_map(|a| a.culture.filter(|c| model.meta.classes.contains(c)).map(|c| (a.id, c)))
        .collect();
    let exs = data::examples(ws, &works, &model.meta.classes)?;
    let t = Transform::eval_for(&model.meta);
    let cache = features::cache_file(&ws.features_dir(), &cache_key(model));
    let emb = features::embeddings(
        &features::backbone_encoder(&model.net.backbone, &t, device),
        &exs,
        16,
        &cache,
        device,
        control,
        progress,
        features::SAVE_EVERY,
    )?;
    Ok(WorkEmbeddings {
        ids: works.iter().map(|w| w.0).collect(),
        cultures: works.into_iter().map(|w| w.1).collect(),
        vectors: emb.to_vec2::<f32>()?,
    })
}

/// The culture map of embedded works.
pub fn culture_map(e: &WorkEmbeddings, seed: u64) -> super::culture_map::CultureMap {
    let mut names: Vec<String> = e.cultures.clone();
    names.sort();
    names.dedup();
    let groups: Vec<usize> = e.cultures.iter().map(|c| names.iter().position(|n| n == c).unwrap_or(0)).collect();
    super::culture_map::build(&names, &e.vectors, &groups, seed)
}
