//! Helpers shared by the integration tests.
#![allow(dead_code)]

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
