//! Ranking the works most likely to be mis-tagged non-paintings or near-duplicates, most
//! suspicious first: with a run's model when the workspace has one (`--run`, or the best run),
//! from image statistics otherwise. `artculture rank` and the Curation view's "Rank suspicious"
//! both call [`rank`]; `progress` gets (fraction, message).
use crate::analysis::suspicion::{self, ModelView, Suspicion};
use crate::workspace::Workspace;
use candle_core::{D, Device, Module, Tensor};
use rayon::prelude::*;
use std::path::Path;

/// The ranked works and whether a model ranked them (else image statistics did).
pub type Ranking = (Vec<Suspicion>, bool);

/// Ranks the workspace's grouped works with images, most suspicious first. A named run that
/// does not exist, or has no checkpoint, is an error; with no run named and none trained, image
/// statistics rank.
pub fn rank(
    ws: &Workspace,
    run: Option<&str>,
    device: &Device,
    progress: &(dyn Fn(f32, String) + Sync),
) -> Result<Ranking, String> {
    let mut ranked = match crate::predict::run_checkpoint(ws, run) {
        Ok(ckpt) => by_model(ws, &ckpt, device, progress).map(|r| (r, true)),
        Err(crate::predict::PredictError::NoRun) => by_statistics(ws, progress).map(|r| (r, false)),
        Err(e) => Err(e.to_string()),
    }?;
    ranked.0.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.artwork_id.cmp(&b.artwork_id)));
    Ok(ranked)
}

fn by_statistics(ws: &Workspace, rep: &(dyn Fn(f32, String) + Sync)) -> Result<Vec<Suspicion>, String> {
    let q = crate::catalog::ArtworkQuery { grouped_only: true, with_image_only: true, ..Default::default() };
    let works = ws.catalog.artworks(&q).map_err(|e| e.to_string())?;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let thumbs = ws.thumbs_dir();
    let items: Vec<(i64, image::RgbImage)> = works
        .par_iter()
        .filter_map(|a| {
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_multiple_of(64) {
                rep(n as f32 / works.len().max(1) as f32, format!("{n} / {} images", works.len()));
            }
            let p = crate::imaging::cache_path(&thumbs, a.content_hash.as_ref()?);
            crate::imaging::decode_file(&p).ok().map(|d| (a.id, d.rgb))
        })
        .collect();
    Ok(suspicion::cheap_scores(&items))
}

fn by_model(
    ws: &Workspace,
    ckpt: &Path,
    device: &Device,
    rep: &(dyn Fn(f32, String) + Sync),
) -> Result<Vec<Suspicion>, String> {
    let control = crate::train::Control::default();
    let model = crate::model::checkpoint::load(ckpt, device).map_err(|e| e.to_string())?;
    let e = crate::analysis::embed::embed_works(ws, &model, device, &control, &mut |d, n| {
        rep(d as f32 / n.max(1) as f32, format!("embedding {d} / {n} works"))
    })
    .map_err(|e| e.to_string())?;
    let emb = Tensor::new(e.vectors.concat(), device)
        .and_then(|t| t.reshape((e.vectors.len(), e.vectors.first().map(Vec::len).unwrap_or(0))))
        .map_err(|e| e.to_string())?;
    let probs = model
        .net
        .head
        .forward(&emb)
        .and_then(|l| candle_nn::ops::softmax(&l, D::Minus1))
        .and_then(|p| p.to_vec2::<f32>())
        .map_err(|e| e.to_string())?;
    let run = model.meta.run_id.clone().unwrap_or_default();
    let train: std::collections::HashSet<i64> = ws
        .catalog
        .run_split(&run)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, p)| p == "train")
        .map(|(id, _)| id)
        .collect();
    let views: Vec<ModelView> = e
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| ModelView {
            artwork_id: *id,
            label: model.meta.classes.iter().position(|c| *c == e.cultures[i]).unwrap_or(0),
            probs: &probs[i],
            embedding: &e.vectors[i],
            in_sample: train.contains(id),
        })
        .collect();
    rep(1.0, "ranking".into());
    Ok(suspicion::model_scores(&views, &model.meta.classes, 10, 0.05))
}
