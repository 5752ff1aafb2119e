//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod http;
mod met_rows;
pub mod met_standin;

pub use met_rows::{MET_HEADER, met_row};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

/// FNV-1a 64-bit hash of a name (the seed of its deterministic values).
pub fn fnv1a(name: &str) -> u64 {
    let mut h: u64 = 0xCBF29CE484222325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001B3);
    }
    h
}

/// n values in [-1, 1): splitmix64(fnv1a(name) + i), exactly as
/// `scripts/make_parity_fixtures.py` computes them.
pub fn det_values(name: &str, n: usize) -> Vec<f64> {
    let seed = fnv1a(name);
    (0..n as u64)
        .map(|i| {
            let mut z = seed.wrapping_add(i).wrapping_add(0x9E3779B97F4A7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            (z >> 11) as f64 * 2f64.powi(-53) * 2.0 - 1.0
        })
        .collect()
}

/// The deterministic value of a parameter or buffer (same rules as the Python script).
pub fn det_tensor(name: &str, shape: &[usize]) -> Vec<f64> {
    let n: usize = shape.iter().product();
    let u = det_values(name, n);
    if name.ends_with("running_var") {
        u.iter().map(|x| 0.75 + 0.5 * x.abs()).collect()
    } else if name.ends_with("running_mean") {
        u.iter().map(|x| 0.1 * x).collect()
    } else if shape.len() >= 2 {
        let fan_in = n / shape[0];
        let s = (6.0 / fan_in as f64).sqrt();
        u.iter().map(|x| x * s).collect()
    } else if name.ends_with("bias") {
        u.iter().map(|x| 0.05 * x).collect()
    } else {
        u.iter().map(|x| 1.0 + 0.1 * x).collect()
    }
}

/// Overwrites every variable of `map` with its deterministic value.
pub fn fill_deterministic(map: &VarMap, dtype: DType) {
    let vars = map.data().lock().unwrap();
    for (name, var) in vars.iter() {
        let shape = var.dims().to_vec();
        let t = Tensor::from_vec(det_tensor(name, &shape), shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        var.set(&t).unwrap();
    }
}

pub fn det_input(shape: &[usize], dtype: DType) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(det_values("input", n), shape.to_vec(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// Path of a file in `../shared/` (the project's shared data), if it exists.
pub fn shared(rel: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared").join(rel);
    p.exists().then_some(p)
}

pub fn bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_artculture"))
}

/// A public-domain painting row.
pub fn painting(id: u64, culture: &str, country: &str, nationality: &str) -> String {
    met_row(&[
        ("Object ID", &id.to_string()),
        ("Is Public Domain", "True"),
        ("Classification", "Paintings"),
        ("Culture", culture),
        ("Country", country),
        ("Artist Nationality", nationality),
        ("Title", &format!("Painting {id}")),
        ("Artist Display Name", "Anonymous|Workshop"),
        ("Object Date", "ca. 1650 "),
        ("Link Resource", &format!("http://www.metmuseum.org/art/collection/search/{id}")),
    ])
}

/// Writes a synthetic image whose colour and texture depend on its class, so a network can
/// tell the classes apart quickly.
pub fn class_image(class: usize, index: usize, w: u32, h: u32) -> image::RgbImage {
    let palette = [[200u8, 60, 50], [50, 170, 70], [60, 80, 210], [220, 200, 60], [150, 60, 170]];
    let base = palette[class % palette.len()];
    image::RgbImage::from_fn(w, h, |x, y| {
        let n = ((x * 7919 + y * 104729 + index as u32 * 31) % 61) as i32 - 30;
        let stripe = if (class % 2 == 1) && (x / 5) % 2 == 0 { 40 } else { 0 };
        image::Rgb(base.map(|c| (c as i32 + n + stripe).clamp(0, 255) as u8))
    })
}

/// `dir/<Culture>/<i>.png` for each class.
pub fn synth_folder(dir: &std::path::Path, cultures: &[&str], per_class: usize, size: u32) {
    for (c, name) in cultures.iter().enumerate() {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..per_class {
            let (w, h) = (size + (i as u32 * 7) % 23, size + (i as u32 * 11) % 19);
            class_image(c, i, w, h).save(d.join(format!("{i}.png"))).unwrap();
        }
    }
}

/// Runs the CLI; returns (exit code, stdout, stderr). Offline, with a Hugging Face cache of
/// its own beside the workspace (empty unless a test fills it), so what the developer's cache
/// holds changes nothing.
pub fn run(ws: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let cache = ws.parent().unwrap_or(ws).join("hf-cache");
    let out = std::process::Command::new(bin())
        .arg("--workspace")
        .arg(ws)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI and insists on success.
pub fn ok(ws: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = run(ws, args);
    assert_eq!(code, 0, "artculture {args:?} failed:\n{err}");
    out
}

/// A CLIP checkpoint's four files for tests: the tokenizer fixture's vocabulary (4,514 tokens)
/// and a tiny model of matching size with seeded weights (32 px images, 8 px patches).
pub fn tiny_clip_files() -> Vec<(&'static str, Vec<u8>)> {
    use artculture::model::clip::{ClipConfig, ClipModel};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip/tokenizer");
    let config = r#"{"projection_dim": 16,
        "text_config": {"vocab_size": 4514, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32, "patch_size": 8}}"#;
    let map = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    ClipModel::new(&ClipConfig::from_json(config).unwrap(), vb).unwrap();
    fill_deterministic(&map, DType::F32);
    let dir = tempfile::tempdir().unwrap();
    map.save(dir.path().join("model.safetensors")).unwrap();
    vec![
        ("config.json", config.as_bytes().to_vec()),
        ("vocab.json", std::fs::read(fixtures.join("vocab.json")).unwrap()),
        ("merges.txt", std::fs::read(fixtures.join("merges.txt")).unwrap()),
        ("model.safetensors", std::fs::read(dir.path().join("model.safetensors")).unwrap()),
    ]
}
