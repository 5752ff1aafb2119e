//! The embedding cache of transfer mode: a frozen backbone's vectors are computed once per image
//! and kept in `features/`, keyed by what determines them (architecture, weights, image size)
//! and by each image's content hash, so later epochs and runs cost only the head.
use super::data::{Example, Transform, assemble};
use super::{Control, TrainError};
use crate::model::Backbone;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// The cache file for a backbone identity.
pub fn cache_file(features_dir: &Path, key: &str) -> PathBuf {
    features_dir.join(format!("{}.safetensors", crate::imaging::content_hash(key.as_bytes())))
}

/// Reads cached vectors (content hash -> vector).
fn read_cache(path: &Path) -> HashMap<String, Vec<f32>> {
    let Ok((_, meta)) = crate::model::weights::read_header(path) else { return HashMap::new() };
    let Some(hashes) = meta.get("hashes").and_then(|h| serde_json::from_str::<Vec<String>>(h).ok()) else {
        return HashMap::new();
    };
    let Ok(tensors) = candle_core::safetensors::load(path, &Device::Cpu) else { return HashMap::new() };
    let Some(rows) = tensors.get("embeddings").and_then(|t| t.to_dtype(DType::F32).ok()?.to_vec2::<f32>().ok()) else {
        return HashMap::new();
    };
    hashes.into_iter().zip(rows).collect()
}

fn write_cache(path: &Path, map: &HashMap<String, Vec<f32>>) -> Result<(), TrainError> {
    let mut hashes: Vec<&String> = map.keys().collect();
    hashes.sort();
    let dim = map.values().next().map(Vec::len).unwrap_or(0);
    let flat: Vec<f32> = hashes.iter().flat_map(|h| map[*h].iter().copied()).collect();
    let t = Tensor::from_vec(flat, (hashes.len(), dim), &Device::Cpu)?;
    let meta = HashMap::from([("hashes".to_string(), serde_json::to_string(&hashes).unwrap_or_default())]);
    let bytes = safetensors::serialize([("embeddings", &t)], Some(meta))
        .map_err(|e| TrainError::Io { path: path.into(), detail: e.to_string() })?;
    crate::fsutil::write_bytes_atomic(path, &bytes)
        .map_err(|e| TrainError::Io { path: path.into(), detail: e.to_string() })
}

/// The embeddings of `examples` (rows in the same order), computing only what the cache lacks.
/// `progress` gets (done, todo).
#[allow(clippy::too_many_arguments)]
pub fn embeddings(
    backbone: &Backbone,
    examples: &[Example],
    t: &Transform,
    batch: usize,
    cache: &Path,
    device: &Device,
    control: &Control,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor, TrainError> {
    let mut map = read_cache(cache);
    let todo: Vec<&Example> = {
        let mut seen = std::collections::HashSet::new();
        examples.iter().filter(|e| !map.contains_key(&e.content_hash) && seen.insert(e.content_hash.clone())).collect()
    };
    let mut done = 0;
    for chunk in todo.chunks(batch.max(1)) {
        if control.cancel.load(Ordering::Relaxed) {
            write_cache(cache, &map)?;
            return Err(TrainError::Cancelled("(while computing embeddings)".into()));
        }
        let b = assemble(chunk, t, &vec![0; chunk.len()], device, 0)?;
        let e = backbone.embed_t(&b.images, false)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for (ex, row) in chunk.iter().zip(e) {
            map.insert(ex.content_hash.clone(), row);
        }
        done += chunk.len();
        progress(done, todo.len());
    }
    if !todo.is_empty() {
        write_cache(cache, &map)?;
    }
    let rows: Vec<f32> = examples.iter().flat_map(|e| map[&e.content_hash].iter().copied()).collect();
    let dim = rows.len() / examples.len().max(1);
    Ok(Tensor::from_vec(rows, (examples.len(), dim), device)?)
}
