//! Every work's CLIP image embedding, computed as a resumable pass (saved as it goes, cached in
//! `features/` per image content hash and per weights file), and the index that answers
//! "more like this" and search by words over them.
use crate::catalog::ArtworkQuery;
use crate::imaging::{self, tensor as itensor};
use crate::model::clip::{CLIP_MEAN, CLIP_STD, ClipModel, Tokenizer, encoder::l2_normalize};
use crate::train::data::Example;
use crate::train::{Control, TrainError, features};
use crate::workspace::Workspace;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::path::Path;

/// Embeddings of works, rows scaled to unit length (cosine similarity is a dot product).
#[derive(Debug, Clone, Default)]
pub struct WorkIndex {
    pub ids: Vec<i64>,
    pub cultures: Vec<Option<String>>,
    pub flagged: Vec<bool>,
    pub dim: usize,
    /// ids.len() x dim, row-major, unit rows.
    pub vectors: Vec<f32>,
}

impl WorkIndex {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    /// Rows given unscaled; each is scaled to unit length here.
    pub fn new(ids: Vec<i64>, cultures: Vec<Option<String>>, flagged: Vec<bool>, rows: Vec<Vec<f32>>) -> Self {
        let dim = rows.first().map(Vec::len).unwrap_or(0);
        let vectors = rows
            .into_iter()
            .flat_map(|r| {
                let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                r.into_iter().map(move |x| x / n)
            })
            .collect();
        Self { ids, cultures, flagged, dim, vectors }
    }

    /// The works nearest `query` (a unit vector), best first, leaving out `exclude`:
    /// (artwork id, cosine similarity).
    pub fn nearest(&self, query: &[f32], limit: usize, exclude: &[i64]) -> Vec<(i64, f32)> {
        let mut scored: Vec<(i64, f32)> = self
            .vectors
            .par_chunks(self.dim.max(1))
            .zip(self.ids.par_iter())
            .filter(|(_, id)| !exclude.contains(id))
            .map(|(row, id)| (*id, row.iter().zip(query).map(|(a, b)| a * b).sum::<f32>()))
            .collect();
        let k = limit.min(scored.len());
        if k == 0 {
            return Vec::new();
        }
        // Partial selection first: sorting 10,000 scores to show 50 is wasted work.
        scored.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored
    }

    /// "More like this": the works nearest the mean direction of the selected ones (which are
    /// left out of the answer). Ids the index lacks are returned as the error.
    pub fn similar(&self, selected: &[i64], limit: usize) -> Result<Vec<(i64, f32)>, Vec<i64>> {
        let missing: Vec<i64> = selected.iter().copied().filter(|id| !self.ids.contains(id)).collect();
        if !missing.is_empty() || selected.is_empty() {
            return Err(missing);
        }
        let mut q = vec![0f32; self.dim];
        for (i, id) in self.ids.iter().enumerate() {
            if selected.contains(id) {
                q.iter_mut().zip(self.row(i)).for_each(|(a, b)| *a += b);
            }
        }
        let n = q.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        q.iter_mut().for_each(|x| *x /= n);
        Ok(self.nearest(&q, limit, selected))
    }
}

/// The unit text embedding of a query.
pub fn text_query(model: &ClipModel, tok: &Tokenizer, text: &str, device: &Device) -> candle_core::Result<Vec<f32>> {
    let ids = tok.batch(&[text], device)?;
    l2_normalize(&model.text_features(&ids, tok.end)?)?.flatten_all()?.to_vec1::<f32>()
}

/// The cache key of a CLIP checkpoint: its weights file and input size.
fn cache_key(weights: &Path, image_size: usize) -> String {
    format!("{}|{image_size}", super::embed::file_key("clip", weights))
}

/// A batch of examples through CLIP's preprocessing and image tower.
pub fn clip_encoder<'a>(
    model: &'a ClipModel,
    device: &'a Device,
) -> impl Fn(&[&Example]) -> Result<Tensor, TrainError> + 'a {
    let size = model.vision_model.image_size;
    move |chunk| {
        let rows = chunk
            .par_iter()
            .map(|ex| {
                let img = imaging::decode_file(&ex.path)?.rgb;
                Ok(itensor::to_chw(&itensor::clip_crop(&img, size), CLIP_MEAN, CLIP_STD))
            })
            .collect::<Result<Vec<Vec<f32>>, TrainError>>()?;
        let x = Tensor::from_vec(rows.concat(), (chunk.len(), 3, size, size), device)?;
        Ok(model.image_features(&x)?)
    }
}

/// A progress line for an embedding pass: "CLIP: embedding 120 / 5300 works, 4 min left".
pub fn progress_line(started: std::time::Instant, done: usize, todo: usize) -> String {
    let left = if done == 0 {
        String::new()
    } else {
        let per = started.elapsed().as_secs_f64() / done as f64;
        format!(", {} left", crate::train::progress::format_duration(per * todo.saturating_sub(done) as f64))
    };
    format!("CLIP: embedding {done} / {todo} works{left}")
}

/// Embeds every work with an image (flagged ones too: an annotator looks for more like them),
/// computing only what the cache lacks. `progress` gets (done, todo).
pub fn embed_all(
    ws: &Workspace,
    model: &ClipModel,
    weights: &Path,
    device: &Device,
    control: &Control,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<WorkIndex, TrainError> {
    let q = ArtworkQuery { with_image_only: true, ..Default::default() };
    let works = ws.catalog.artworks(&q)?;
    let mut exs = Vec::new();
    let (mut ids, mut cultures, mut flagged) = (Vec::new(), Vec::new(), Vec::new());
    for a in works {
        let (Some(rel), Some(hash)) = (&a.image_path, &a.content_hash) else { continue };
        let cached = imaging::cache_path(&ws.thumbs_dir(), hash);
        let path = if cached.exists() { cached } else { ws.resolve(rel) };
        exs.push(Example { artwork_id: a.id, path, content_hash: hash.clone(), label: 0 });
        ids.push(a.id);
        cultures.push(a.culture.clone());
        flagged.push(a.flag.is_some());
    }
    let cache = features::cache_file(&ws.features_dir(), &cache_key(weights, model.vision_model.image_size));
    let encode = clip_encoder(model, device);
    let emb = features::embeddings(&encode, &exs, 16, &cache, device, control, progress, features::SAVE_EVERY)?;
    Ok(WorkIndex::new(ids, cultures, flagged, emb.to_vec2::<f32>()?))
}
