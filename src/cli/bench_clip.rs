//! CLIP's benchmark workloads: "more like this" and search by words over 10,000 works once
//! embeddings exist (targets: under 100 ms and under 200 ms), and embedding 1,000 images at
//! 224 px (against `transformers`, `scripts/bench_clip.py`, interleaved by `bench_compare.py`).
//! ViT-B/32's shapes with seeded weights: the same arithmetic as the published ones.
use artculture::analysis::clip_works::{WorkIndex, text_query};
use artculture::model::clip::{ClipConfig, ClipModel, Tokenizer};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::time::Instant;

fn vit_b32() -> anyhow::Result<ClipModel> {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    ClipModel::new(&ClipConfig::vit_b32(), vb)?; // names and shapes every parameter
    // Seeded values (the map's defaults are zeros, pages the OS never touches, which would
    // understate memory), as plain tensors (as loaded weights are: variables would record an
    // autograd graph).
    let mut tensors = std::collections::HashMap::new();
    for (k, v) in map.data().lock().map_err(|_| anyhow::anyhow!("variable map poisoned"))?.iter() {
        tensors.insert(k.clone(), Tensor::randn(0f32, 0.02, v.shape(), &Device::Cpu)?);
    }
    Ok(ClipModel::new(&ClipConfig::vit_b32(), VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))?)
}

/// A byte-level vocabulary of CLIP's size layout (no merges): enough to time the text tower,
/// whose cost does not depend on which ids it reads.
fn byte_tokenizer() -> anyhow::Result<Tokenizer> {
    let mut vocab = serde_json::Map::new();
    let mut id = 0u32;
    for b in 0..=255u8 {
        for s in ["", "</w>"] {
            let c = artculture::model::clip::tokenizer::byte_char(b);
            vocab.insert(format!("{c}{s}"), id.into());
            id += 1;
        }
    }
    vocab.insert("<|startoftext|>".into(), 49406.into());
    vocab.insert("<|endoftext|>".into(), 49407.into());
    Tokenizer::from_strs(&serde_json::Value::Object(vocab).to_string(), "")
        .map_err(|(w, e)| anyhow::anyhow!("{w}: {e}"))
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1e3
}

/// (similar ms, search ms) medians over `reps` queries at `works` works.
pub fn query(works: usize, reps: usize) -> anyhow::Result<serde_json::Value> {
    let dim = 512;
    let rows = Tensor::randn(0f32, 1.0, (works, dim), &Device::Cpu)?.to_vec2::<f32>()?;
    let index = WorkIndex::new((0..works as i64).collect(), vec![None; works], vec![false; works], rows);
    let model = vit_b32()?;
    let tok = byte_tokenizer()?;
    let (mut similar, mut search) = (Vec::new(), Vec::new());
    for r in 0..reps.max(1) + 1 {
        let sel = [r as i64, (r * 7 + 3) as i64 % works as i64];
        let s = Instant::now();
        std::hint::black_box(index.similar(&sel, 50).map_err(|m| anyhow::anyhow!("missing {m:?}"))?);
        let t_similar = s.elapsed().as_secs_f64();
        let s = Instant::now();
        let q = text_query(&model, &tok, "a harbour at sunset with fishing boats", &Device::Cpu)?;
        std::hint::black_box(index.nearest(&q, 50, &[]));
        let t_search = s.elapsed().as_secs_f64();
        if r > 0 {
            similar.push(t_similar);
            search.push(t_search);
        }
    }
    Ok(serde_json::json!({ "works": works, "similar_ms": median_ms(similar), "search_ms": median_ms(search) }))
}

/// Seconds to embed `n` images of 224 x 224 in batches of 16 (the image tower and projection).
pub fn embed(n: usize) -> anyhow::Result<serde_json::Value> {
    let model = vit_b32()?;
    let x = Tensor::randn(0f32, 1.0, (16, 3, 224, 224), &Device::Cpu)?;
    std::hint::black_box(model.image_features(&x.narrow(0, 0, 2)?)?);
    let s = Instant::now();
    let mut done = 0;
    while done < n {
        let b = (n - done).min(16);
        std::hint::black_box(model.image_features(&x.narrow(0, 0, b)?)?);
        done += b;
    }
    let secs = s.elapsed().as_secs_f64();
    Ok(serde_json::json!({ "images": n, "seconds": secs, "images_per_second": n as f64 / secs }))
}
