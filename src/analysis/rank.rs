//! Ranking the works most likely to be mis-tagged non-paintings or near-duplicates, most
//! suspicious first: with a run's model when the workspace has one (`--run`, or the best run),
//! with CLIP's zero-shot "not a painting" when its weights are cached (alone before any run,
//! added to the model's signals after), from image statistics when neither is there.
//! `artculture rank` and the Curation view's "Rank suspicious" both call [`rank`]; `progress`
//! gets (fraction, message).
use crate::analysis::suspicion::{self, ModelView, Suspicion};
use crate::workspace::Workspace;
use candle_core::{D, Device, Module, Tensor};
use rayon::prelude::*;
use std::path::Path;

/// What ranked the works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RankedBy {
    Model,
    ModelAndClip,
    Clip,
    ImageStatistics,
}

impl RankedBy {
    pub fn uses_model(self) -> bool {
        matches!(self, Self::Model | Self::ModelAndClip)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Model => "the run's model",
            Self::ModelAndClip => "the run's model and CLIP zero-shot",
            Self::Clip => "CLIP zero-shot (no trained run yet)",
            Self::ImageStatistics => "image statistics (no trained run yet, CLIP not fetched)",
        }
    }
}

/// The ranked works and what ranked them.
pub type Ranking = (Vec<Suspicion>, RankedBy);

/// Ranks the workspace's grouped works with images, most suspicious first. A named run that
/// does not exist, or has no checkpoint, is an error; with no run named and none trained, CLIP
/// ranks when its weights are cached, image statistics otherwise.
pub fn rank(
    ws: &Workspace,
    run: Option<&str>,
    device: &Device,
    progress: &(dyn Fn(f32, String) + Sync),
) -> Result<Ranking, String> {
    let clip = crate::model::clip::hub::cached();
    let mut ranked = match (crate::predict::run_checkpoint(ws, run), clip) {
        (Ok(ckpt), None) => (by_model(ws, &ckpt, device, progress)?, RankedBy::Model),
        (Ok(ckpt), Some(files)) => {
            let model = by_model(ws, &ckpt, device, progress)?;
            (add_clip(model, by_clip(ws, &files, device, progress)?), RankedBy::ModelAndClip)
        }
        (Err(crate::predict::PredictError::NoRun), Some(files)) => {
            (by_clip(ws, &files, device, progress)?, RankedBy::Clip)
        }
        (Err(crate::predict::PredictError::NoRun), None) => (by_statistics(ws, progress)?, RankedBy::ImageStatistics),
        (Err(e), _) => return Err(e.to_string()),
    };
    ranked.0.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.artwork_id.cmp(&b.artwork_id)));
    Ok(ranked)
}

/// CLIP's zero-shot verdict on every grouped work: the score is the probability that it is not
/// a painting; a likely non-painting gets the reason CLIP suggests.
fn by_clip(
    ws: &Workspace,
    files: &crate::model::clip::hub::ClipFiles,
    device: &Device,
    rep: &(dyn Fn(f32, String) + Sync),
) -> Result<Vec<Suspicion>, String> {
    use crate::analysis::{clip_works, zero_shot};
    rep(0.0, "loading CLIP".into());
    let (model, tok) = files.load(device).map_err(|e| e.to_string())?;
    let control = crate::train::Control::default();
    let started = std::time::Instant::now();
    let index = clip_works::embed_all(ws, &model, &files.weights, device, &control, &mut |d, n| {
        rep(d as f32 / n.max(1) as f32, clip_works::progress_line(started, d, n))
    })
    .map_err(|e| e.to_string())?;
    let scale = model.logit_scale().map_err(|e| e.to_string())?;
    let classes = zero_shot::class_embeddings(&model, &tok, device).map_err(|e| e.to_string())?;
    let verdicts = zero_shot::classify(&index, &classes, scale).map_err(|e| e.to_string())?;
    let grouped: std::collections::HashSet<i64> =
        index.ids.iter().zip(&index.cultures).filter(|(_, c)| c.is_some()).map(|(id, _)| *id).collect();
    Ok(verdicts
        .into_iter()
        .filter(|v| grouped.contains(&v.artwork_id))
        .map(|v| {
            let likely = v.not_painting >= 0.5;
            Suspicion {
                artwork_id: v.artwork_id,
                score: v.not_painting as f64,
                reasons: if likely {
                    vec![format!(
                        "CLIP: {:.0}% not a painting; likeliest {} ({:.0}%)",
                        v.not_painting * 100.0,
                        v.reason,
                        v.reason_p * 100.0
                    )]
                } else {
                    Vec::new()
                },
                duplicate_of: None,
                suggested: likely.then_some(v.reason),
            }
        })
        .collect())
}

/// The model's signals with CLIP's added: its probability adds to the score, its reason and
/// suggestion join the model's.
fn add_clip(model: Vec<Suspicion>, clip: Vec<Suspicion>) -> Vec<Suspicion> {
    let mut clip: std::collections::HashMap<i64, Suspicion> = clip.into_iter().map(|s| (s.artwork_id, s)).collect();
    let mut out: Vec<Suspicion> = model
        .into_iter()
        .map(|mut s| {
            if let Some(c) = clip.remove(&s.artwork_id) {
                s.score += c.score;
                s.reasons.extend(c.reasons);
                s.suggested = c.suggested;
            }
            s
        })
        .collect();
    out.extend(clip.into_values());
    out
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
