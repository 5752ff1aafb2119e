//! The embedding cache of transfer mode: a frozen backbone's vectors are computed once per image
//! and kept in `features/`, keyed by what determines them (architecture, weights, image size)
//! and by each image's content hash, so later epochs and runs cost only the head.
use super::data::{Example, Transform, assemble};
use super::{Control, Pretrained, TrainConfig, TrainError};
use crate::model::Backbone;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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

/// The cache key of a transfer run's frozen backbone: what determines its embeddings
/// (architecture, where its weights came from, image size; with random weights, the run, whose
/// seed drew them). The trainer and the culture map use this one function, so a map of a
/// transfer run reuses the vectors its training computed (same backbone, same eval transform).
pub fn transfer_key(cfg: &TrainConfig, run: &str) -> String {
    let key = format!(
        "{}|{:?}|{}|{}",
        cfg.arch,
        cfg.pretrained,
        cfg.image_size,
        if cfg.pretrained == Pretrained::None { run } else { "" }
    );
    // bf16 embeddings differ from f32 ones; f32 keeps the key it always had.
    match cfg.precision {
        crate::model::autocast::Precision::F32 => key,
        p => format!("{key}|{p}"),
    }
}

/// How often a long embedding pass saves what it has, so a crash, a kill or closing the app
/// loses at most this much work and the next pass continues from there.
pub const SAVE_EVERY: Duration = Duration::from_secs(20);

/// Embeds a batch of examples (rows in order): a backbone, CLIP's image tower.
pub type Encoder<'a> = dyn Fn(&[&Example]) -> Result<Tensor, TrainError> + 'a;

/// A backbone's embeddings of a batch under an evaluation transform.
pub fn backbone_encoder<'a>(
    backbone: &'a Backbone,
    t: &'a Transform,
    device: &'a Device,
) -> impl Fn(&[&Example]) -> Result<Tensor, TrainError> + 'a {
    move |chunk| {
        let b = assemble(chunk, t, &vec![0; chunk.len()], device, 0)?;
        Ok(backbone.embed_t(&b.images, false)?)
    }
}

/// The embeddings of `examples` (rows in the same order), computing only what the cache lacks
/// and saving it every `save_every` (callers pass [`SAVE_EVERY`]). `progress` gets (done, todo).
#[allow(clippy::too_many_arguments)]
pub fn embeddings(
    encode: &Encoder,
    examples: &[Example],
    batch: usize,
    cache: &Path,
    device: &Device,
    control: &Control,
    progress: &mut dyn FnMut(usize, usize),
    save_every: Duration,
) -> Result<Tensor, TrainError> {
    let mut map = read_cache(cache);
    let todo: Vec<&Example> = {
        let mut seen = std::collections::HashSet::new();
        examples.iter().filter(|e| !map.contains_key(&e.content_hash) && seen.insert(e.content_hash.clone())).collect()
    };
    let (mut done, mut unsaved, mut saved_at) = (0, 0, Instant::now());
    let mut pass = || -> Result<(), TrainError> {
        for chunk in todo.chunks(batch.max(1)) {
            if control.cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled("(while computing embeddings)".into()));
            }
            let e = encode(chunk)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            for (ex, row) in chunk.iter().zip(e) {
                map.insert(ex.content_hash.clone(), row);
            }
            (done, unsaved) = (done + chunk.len(), unsaved + chunk.len());
            if saved_at.elapsed() >= save_every {
                write_cache(cache, &map)?;
                (unsaved, saved_at) = (0, Instant::now());
            }
            progress(done, todo.len());
        }
        Ok(())
    };
    let result = pass();
    // Whatever ended the pass (done, cancelled, an unreadable image), keep what it computed.
    if unsaved > 0 {
        write_cache(cache, &map)?;
    }
    result?;
    let rows: Vec<f32> = examples.iter().flat_map(|e| map[&e.content_hash].iter().copied()).collect();
    let dim = rows.len() / examples.len().max(1);
    Ok(Tensor::from_vec(rows, (examples.len(), dim), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::{IMAGENET_MEAN, IMAGENET_STD};
    use crate::model::{Arch, BackboneConfig};

    #[test]
    fn a_pass_that_dies_half_way_keeps_what_it_computed_and_the_next_continues() {
        let dir = tempfile::tempdir().unwrap();
        let examples: Vec<Example> = (0..6u8)
            .map(|i| {
                let path = dir.path().join(format!("{i}.png"));
                image::RgbImage::from_fn(40, 40, |x, y| image::Rgb([i * 40, x as u8 * 6, y as u8 * 6]))
                    .save(&path)
                    .unwrap();
                Example { artwork_id: i as i64, path, content_hash: format!("hash{i}"), label: 0 }
            })
            .collect();
        let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
        let backbone = Backbone::new(Arch::Resnet50, BackboneConfig { own_classes: None, dropout: 0.0 }, vb).unwrap();
        let t = Transform { size: 32, train: false, flip: false, mean: IMAGENET_MEAN, std: IMAGENET_STD };
        let encode = backbone_encoder(&backbone, &t, &Device::Cpu);
        let cache = dir.path().join("features.safetensors");
        let control = Control::default();
        // The process dies (here: a panic) after the second batch of two, with saving due after
        // every batch: the first four vectors are on disk.
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut progress = |done: usize, _| assert!(done < 4, "killed");
            embeddings(&encode, &examples, 2, &cache, &Device::Cpu, &control, &mut progress, Duration::ZERO)
        }));
        assert!(died.is_err());
        assert_eq!(read_cache(&cache).len(), 4);
        // The next pass embeds only the two left, and gives the same rows a clean pass gives.
        let mut todo = Vec::new();
        let resumed = embeddings(
            &encode,
            &examples,
            2,
            &cache,
            &Device::Cpu,
            &control,
            &mut |d, n| todo.push((d, n)),
            SAVE_EVERY,
        )
        .unwrap();
        assert_eq!(todo, vec![(2, 2)]);
        let clean = dir.path().join("clean.safetensors");
        let fresh =
            embeddings(&encode, &examples, 2, &clean, &Device::Cpu, &control, &mut |_, _| {}, SAVE_EVERY).unwrap();
        assert_eq!(resumed.to_vec2::<f32>().unwrap(), fresh.to_vec2::<f32>().unwrap());
    }
}
