//! `weights fetch` and `model forward`.
use anyhow::{Context, bail};
use artculture::model::device::DeviceKind;
use artculture::model::weights::{self, HubOptions};
use artculture::model::{Arch, Backbone, BackboneConfig};
use candle_core::DType;
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn fetch_weights(arch: Arch) -> anyhow::Result<ExitCode> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("{arch}"));
    let b = bar.clone();
    let path = weights::fetch(arch, &HubOptions::from_env(), move |done, total| {
        b.set_length(total);
        b.set_position(done);
    })?;
    bar.finish_and_clear();
    eprintln!("{arch} weights: {}", path.display());
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// A backbone's architecture, weights file and input tensor file (read by `model forward`,
/// written by `model random`).
#[derive(Debug, Args)]
pub struct ModelFiles {
    #[arg(long, value_parser = super::values::arch())]
    pub arch: Arch,
    /// Backbone weights (safetensors, torchvision's names).
    #[arg(long, value_name = "W.safetensors")]
    pub weights: PathBuf,
    /// Tensor `input`, N x 3 x H x W, normalised.
    #[arg(long, value_name = "X.safetensors")]
    pub input: PathBuf,
}

#[derive(Debug, Args)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub files: ModelFiles,
    #[arg(long, value_name = "Y.safetensors")]
    pub output: PathBuf,
    /// Compute in float64 instead of float32.
    #[arg(long)]
    pub f64: bool,
}

/// The number of classes of the weights' own last layer, read from the file's header.
fn own_classes(arch: Arch, path: &std::path::Path) -> anyhow::Result<Option<usize>> {
    let (tensors, _) = weights::read_header(path)?;
    let names: &[&str] = match arch {
        Arch::Resnet50 => &["fc.weight"],
        _ => &["classifier.6.weight", "head.fc.weight"],
    };
    match names.iter().find_map(|n| tensors.get(*n).map(|t| (n, t))) {
        None => Ok(None),
        Some((_, (_, shape))) if shape.len() == 2 && shape[0] >= 1 => Ok(Some(shape[0])),
        Some((name, (_, shape))) => {
            bail!("{}: tensor `{name}` has shape {shape:?}, expected classes x features", path.display())
        }
    }
}

pub fn forward(args: ForwardArgs, device: DeviceKind) -> anyhow::Result<ExitCode> {
    let ModelFiles { arch, weights: weights_path, input } = &args.files;
    let device = device.open()?;
    let dtype = if args.f64 { DType::F64 } else { DType::F32 };
    // Read on the host and uploaded in the compute dtype (a GPU may have no f64 casts).
    let inputs = candle_core::safetensors::load(input, &candle_core::Device::Cpu)
        .with_context(|| format!("reading {}", input.display()))?;
    let Some(x) = inputs.get("input") else {
        bail!("{}: no tensor named `input` (found: {:?})", input.display(), inputs.keys().collect::<Vec<_>>());
    };
    if x.rank() != 4 || x.dim(1)? != 3 {
        bail!("{}: tensor `input` has shape {:?}, expected N x 3 x H x W", input.display(), x.dims());
    }
    let vb = weights::var_builder(weights_path, dtype, &device)?;
    let cfg = BackboneConfig { own_classes: own_classes(*arch, weights_path)?, dropout: 0.0 };
    let model = Backbone::new(*arch, cfg, vb)?;
    let x = artculture::model::device::upload(x, dtype, &device, "input")?;
    let (features, logits) = model.forward_t(&x, false)?;
    let mut out = HashMap::from([("features".to_string(), features)]);
    if let Some(l) = logits {
        out.insert("logits".to_string(), l);
    } else {
        eprintln!("note: {} has no classifier of its own; wrote `features` only", weights_path.display());
    }
    let mut items: Vec<_> = out.iter().collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::serialize(items, None)?;
    artculture::fsutil::write_bytes_atomic(&args.output, &bytes)?;
    Ok(ExitCode::SUCCESS)
}
