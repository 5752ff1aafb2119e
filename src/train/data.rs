//! The data pipeline: examples from the catalog, decoded from the pre-resized cache, transformed
//! on worker threads and prefetched through a bounded channel, so the model rarely waits.
use super::{TrainError, mix_seed};
use crate::imaging::{self, tensor as itensor};
use crate::workspace::Workspace;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, sync_channel};

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub artwork_id: i64,
    /// The image to decode: the cached copy if present, else the original.
    pub path: PathBuf,
    pub content_hash: String,
    pub label: usize,
}

/// Examples of `ids` (with labels from `classes`); works without a readable image are refused.
pub fn examples(ws: &Workspace, ids: &[(i64, String)], classes: &[String]) -> Result<Vec<Example>, TrainError> {
    ids.iter()
        .map(|(id, culture)| {
            let a = ws.catalog.artwork(*id)?;
            let (Some(rel), Some(hash)) = (&a.image_path, &a.content_hash) else {
                return Err(TrainError::Data(format!(
                    "work {} has no image; download or attach images first",
                    a.display_id()
                )));
            };
            let cached = imaging::cache_path(&ws.thumbs_dir(), hash);
            let path = if cached.exists() { cached } else { ws.resolve(rel) };
            let label = classes
                .iter()
                .position(|c| c == culture)
                .ok_or_else(|| TrainError::Data(format!("culture {culture} is not among the run's classes")))?;
            Ok(Example { artwork_id: *id, path, content_hash: hash.clone(), label })
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub struct Transform {
    pub size: usize,
    pub train: bool,
    pub flip: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Transform {
    /// The evaluation transform a checkpoint was trained for.
    pub fn eval_for(meta: &crate::model::checkpoint::CheckpointMeta) -> Self {
        Self { size: meta.image_size, train: false, flip: false, mean: meta.mean, std: meta.std }
    }
}

/// One example's normalised CHW data; `seed` drives its augmentation.
pub fn load(ex: &Example, t: &Transform, seed: u64) -> Result<Vec<f32>, TrainError> {
    let img = imaging::decode_file(&ex.path)?.rgb;
    let img = if t.train {
        itensor::train_crop(&img, t.size, t.flip, &mut rand::rngs::StdRng::seed_from_u64(seed))
    } else {
        itensor::eval_crop(&img, t.size)
    };
    Ok(itensor::to_chw(&img, t.mean, t.std))
}

pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub label_vec: Vec<usize>,
    pub index: usize,
}

/// Assembles one batch on the rayon pool.
pub fn assemble(
    exs: &[&Example],
    t: &Transform,
    seeds: &[u64],
    device: &Device,
    index: usize,
) -> Result<Batch, TrainError> {
    let data: Vec<Vec<f32>> =
        exs.par_iter().zip(seeds.par_iter()).map(|(ex, s)| load(ex, t, *s)).collect::<Result<_, _>>()?;
    let n = exs.len();
    let flat: Vec<f32> = data.into_iter().flatten().collect();
    let images = Tensor::from_vec(flat, (n, 3, t.size, t.size), device)?;
    let label_vec: Vec<usize> = exs.iter().map(|e| e.label).collect();
    let labels = Tensor::from_vec(label_vec.iter().map(|&l| l as u32).collect::<Vec<_>>(), n, device)?;
    Ok(Batch { images, labels, label_vec, index })
}

/// Streams the batches of one epoch from a producer thread, `prefetch` batches ahead.
/// `order` lists example indices in visiting order.
pub fn batches(
    examples: std::sync::Arc<Vec<Example>>,
    order: Vec<usize>,
    batch: usize,
    t: Transform,
    epoch_seed: u64,
    device: Device,
    prefetch: usize,
) -> Receiver<Result<Batch, TrainError>> {
    let (tx, rx) = sync_channel(prefetch.max(1));
    std::thread::spawn(move || {
        for (bi, chunk) in order.chunks(batch.max(1)).enumerate() {
            let exs: Vec<&Example> = chunk.iter().map(|&i| &examples[i]).collect();
            let seeds: Vec<u64> = chunk.iter().map(|&i| mix_seed(&[epoch_seed, i as u64])).collect();
            let b = assemble(&exs, &t, &seeds, &device, bi);
            let failed = b.is_err();
            if tx.send(b).is_err() || failed {
                break;
            }
        }
    });
    rx
}
