//! `model random`, `model compare`, `model speed` and `model synth-folder`: what
//! `scripts/gpu_check` needs on a GPU machine that has only the binary (no Python, no network,
//! no images): seeded weights and inputs, a tolerance check between two devices' outputs,
//! throughput on the chosen device, and a generated set of cultures that differ visibly.
use anyhow::{Context, bail};
use artculture::model::device::DeviceKind;
use artculture::model::init::seeded_var_builder;
use artculture::model::{Arch, Backbone, BackboneConfig, CultureNet};
use candle_core::{D, DType, Device, Tensor};
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct RandomArgs {
    /// Writes the seeded backbone (with its 1,000-class ImageNet classifier) to --weights and a
    /// standard normal N x 3 x SIZE x SIZE tensor `input` to --input.
    #[command(flatten)]
    pub files: super::models::ModelFiles,
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn random(a: RandomArgs) -> anyhow::Result<ExitCode> {
    let super::models::ModelFiles { arch, weights, input } = &a.files;
    let map = candle_nn::VarMap::new();
    let vb = seeded_var_builder(&map, a.seed, DType::F32, &Device::Cpu);
    Backbone::new(*arch, BackboneConfig { own_classes: Some(1000), dropout: 0.0 }, vb)?;
    map.save(weights).with_context(|| format!("writing {}", weights.display()))?;
    let n = a.batch * 3 * a.size * a.size;
    let values = artculture::model::init::values(candle_nn::Init::Randn { mean: 0.0, stdev: 1.0 }, n, a.seed, "input")?;
    let x = Tensor::from_vec(values, (a.batch, 3, a.size, a.size), &Device::Cpu)?.to_dtype(DType::F32)?;
    let bytes = safetensors::serialize([("input", &x)], None)?;
    artculture::fsutil::write_bytes_atomic(input, &bytes)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Largest allowed max|a - b| / max|a| per tensor.
    #[arg(long, default_value_t = 1e-3)]
    pub rtol: f64,
}

/// Prints one JSON line with each common tensor's relative difference; fails above `rtol`.
pub fn compare(a: CompareArgs) -> anyhow::Result<ExitCode> {
    let load = |p: &PathBuf| {
        candle_core::safetensors::load(p, &Device::Cpu).with_context(|| format!("reading {}", p.display()))
    };
    let (x, y) = (load(&a.a)?, load(&a.b)?);
    let mut names: Vec<&String> = x.keys().filter(|k| y.contains_key(*k)).collect();
    names.sort();
    if names.is_empty() {
        bail!("{} and {} have no tensor in common", a.a.display(), a.b.display());
    }
    let mut diffs = serde_json::Map::new();
    let mut worst: f64 = 0.0;
    for n in names {
        let (p, q) = (x[n].to_dtype(DType::F64)?, y[n].to_dtype(DType::F64)?);
        if p.dims() != q.dims() {
            bail!("tensor `{n}`: shape {:?} vs {:?}", p.dims(), q.dims());
        }
        let scale = p.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?.max(1e-30);
        let rel = (p - q)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()? / scale;
        worst = worst.max(rel);
        diffs.insert(n.clone(), rel.into());
    }
    println!("{}", serde_json::json!({ "max_relative_difference": diffs, "rtol": a.rtol, "ok": worst <= a.rtol }));
    Ok(if worst <= a.rtol { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[derive(Debug, Args)]
pub struct SpeedArgs {
    #[arg(long, value_parser = super::values::arch(), default_value = "resnet50")]
    pub arch: Arch,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Time training steps (forward, backward, SGD) instead of the evaluation forward.
    #[arg(long)]
    pub train: bool,
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
}

/// Images per second on `--device`, after one untimed warm-up; one JSON line.
pub fn speed(a: SpeedArgs, device: DeviceKind) -> anyhow::Result<ExitCode> {
    let dev = device.open()?;
    let map = candle_nn::VarMap::new();
    let net = CultureNet::new(
        a.arch,
        0.5,
        artculture::model::head::DEFAULT_HIDDEN,
        11,
        seeded_var_builder(&map, 0, DType::F32, &dev),
    )?;
    let x = Tensor::randn(0f32, 1f32, (a.batch, 3, a.size, a.size), &dev)?;
    let labels = Tensor::from_vec((0..a.batch as u32).map(|i| i % 11).collect::<Vec<_>>(), a.batch, &dev)?;
    // The trainer's own SGD (momentum 0.9, weight decay), as `train` steps.
    let params: Vec<(String, candle_core::Var)> = {
        let data = map.data().lock().map_err(|_| anyhow::anyhow!("variable map poisoned"))?;
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let cfg = artculture::train::TrainConfig::default().sgd;
    let mut sgd = artculture::train::sgd::Sgd::new(params, cfg)?;
    let mut step = || -> anyhow::Result<()> {
        if a.train {
            let logits = net.forward_t(&x, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
            sgd.step(&loss.backward()?)?;
        } else {
            net.forward_t(&x, false)?.argmax(D::Minus1)?;
        }
        Ok(dev.synchronize()?)
    };
    step()?;
    let started = Instant::now();
    for _ in 0..a.reps.max(1) {
        step()?;
    }
    let per_s = (a.batch * a.reps.max(1)) as f64 / started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "arch": a.arch.as_str(), "device": device.as_str(), "mode": if a.train { "train" } else { "eval" },
            "batch": a.batch, "size": a.size, "images_per_s": per_s,
        })
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct SynthFolderArgs {
    pub dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub cultures: usize,
    #[arg(long, default_value_t = 40)]
    pub per_class: usize,
    #[arg(long, default_value_t = 96)]
    pub size: u32,
}

/// DIR/<Culture>/<i>.png: each culture its own colour, odd ones striped, with per-image noise.
pub fn synth_folder(a: SynthFolderArgs) -> anyhow::Result<ExitCode> {
    let names = artculture::culture::STUDY_GROUPS;
    if a.cultures == 0 || a.cultures > names.len() {
        bail!("--cultures {} is outside [1, {}]", a.cultures, names.len());
    }
    let mut written = HashMap::new();
    for (c, name) in names.iter().take(a.cultures).enumerate() {
        let [r, g, b] = artculture::analysis::palette::culture_color(name);
        let dir = a.dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for i in 0..a.per_class {
            let img = image::RgbImage::from_fn(a.size, a.size, |x, y| {
                let n = ((x * 7919 + y * 104729 + i as u32 * 31) % 61) as i32 - 30;
                let stripe = if c % 2 == 1 && (x / 5) % 2 == 0 { 40 } else { 0 };
                image::Rgb([r, g, b].map(|v| (v as i32 + n + stripe).clamp(0, 255) as u8))
            });
            let path = dir.join(format!("{i}.png"));
            img.save(&path).with_context(|| format!("writing {}", path.display()))?;
        }
        written.insert(name.to_string(), a.per_class);
    }
    eprintln!("{} cultures x {} images in {}", a.cultures, a.per_class, a.dir.display());
    Ok(ExitCode::SUCCESS)
}
