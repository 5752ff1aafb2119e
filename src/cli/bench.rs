//! `artculture bench`: the performance figures of BENCHMARKS.md, measured here rather than in
//! timed tests. Each workload runs in its own child process so its peak memory (VmHWM) is its
//! own; results print as one JSON line per workload.
use anyhow::Context;
use artculture::model::checkpoint::{IMAGENET_MEAN, IMAGENET_STD};
use artculture::model::{Arch, CultureNet};
use artculture::train::data::{Example, Transform};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

pub const WORKLOADS: [&str; 18] = [
    "forward1",
    "forward16",
    "forward16_vars",
    "train16",
    "train16_forward",
    "transfer_epoch",
    "pipeline",
    "conv_layers",
    "winograd_layers",
    "eval_layers",
    "isa_peak",
    "csv",
    "folder",
    "predict_large",
    "grid",
    "curation",
    "clip_query",
    "clip_embed",
];

/// The workloads that run a model, and so take `--arch`.
const MODEL_WORKLOADS: [&str; 6] =
    ["forward1", "forward16", "forward16_vars", "train16", "train16_forward", "transfer_epoch"];

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Workloads to run (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(WORKLOADS))]
    pub only: Vec<String>,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// The architecture of the model workloads (forward1, forward16, train16, train16_forward,
    /// transfer_epoch), with the culture head.
    #[arg(long, value_parser = super::values::arch(), default_value = "resnet50")]
    pub arch: Arch,
    /// Rows of the generated MetObjects.csv.
    #[arg(long, default_value_t = 480_000)]
    pub csv_rows: usize,
    /// Images of the generated folder.
    #[arg(long, default_value_t = 5000)]
    pub folder_images: usize,
    /// Images of the clip_embed workload.
    #[arg(long, default_value_t = 1000)]
    pub clip_images: usize,
    /// conv_layers and eval_layers: only the layers whose name contains this (`56x56 -> 256`,
    /// `3x3/1`).
    #[arg(long)]
    pub layer: Option<String>,
    #[arg(long, hide = true)]
    pub child: bool,
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?; // warm-up
    let mut t = Vec::new();
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

fn net(arch: Arch, train: bool) -> anyhow::Result<(CultureNet, candle_nn::VarMap)> {
    let map = candle_nn::VarMap::new();
    let vb = artculture::model::init::seeded_var_builder(&map, 0, DType::F32, &Device::Cpu);
    let net = CultureNet::new(arch, 0.5, artculture::model::head::DEFAULT_HIDDEN, 11, vb)?;
    if train {
        return Ok((net, map));
    }
    // Inference holds weights as plain tensors: no autograd graph is recorded.
    let tensors = map
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Ok((CultureNet::new(arch, 0.5, artculture::model::head::DEFAULT_HIDDEN, 11, vb)?, candle_nn::VarMap::new()))
}

fn jpeg(img: &image::RgbImage, path: &std::path::Path) -> anyhow::Result<()> {
    let f = std::io::BufWriter::new(std::fs::File::create(path)?);
    image::codecs::jpeg::JpegEncoder::new_with_quality(f, 90).encode_image(img)?;
    Ok(())
}

fn painting_like(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x.wrapping_mul(31) ^ y.wrapping_mul(17) ^ seed.wrapping_mul(2654435761)) % 255;
        image::Rgb([v as u8, ((x + y + seed) % 200) as u8, ((x * y) % 230) as u8])
    })
}

fn run_one(name: &str, a: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir()?;
    let mut v = serde_json::json!({ "workload": name });
    match name {
        "forward1" | "forward16" | "forward16_vars" => {
            // forward16_vars: the weights stay trainable variables (as during a fine-tuning
            // run's validation), which must not cost an autograd graph's memory.
            let n = if name == "forward1" { 1 } else { 16 };
            let (net, _) = net(a.arch, name == "forward16_vars")?;
            let x = Tensor::randn(0f32, 1.0, (n, 3, 224, 224), &dev)?;
            let s = timed(a.reps, || {
                std::hint::black_box(net.forward_t(&x, false)?.to_vec2::<f32>()?);
                Ok(())
            })?;
            v["seconds"] = s.into();
            v["images_per_s"] = (n as f64 / s).into();
        }
        "train16" => {
            let (net, map) = net(a.arch, true)?;
            let params: Vec<(String, candle_core::Var)> = map
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .iter()
                .filter(|(k, _)| !k.contains("running"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut sgd = artculture::train::sgd::Sgd::new(params, Default::default())?;
            let x = Tensor::randn(0f32, 1.0, (16, 3, 224, 224), &dev)?;
            let y = Tensor::from_vec((0..16u32).map(|i| i % 11).collect::<Vec<_>>(), 16, &dev)?;
            // The trainer's own step (on a worker of the pool, as an epoch runs it).
            let s = timed(a.reps, || {
                artculture::train::image_step(&net, &x, &y, None, &mut sgd, (1, 1, 0.01))?;
                Ok(())
            })?;
            v["seconds"] = s.into();
            v["images_per_s"] = (16.0 / s).into();
        }
        "transfer_epoch" => {
            // The study's ~5,300 training images as cached embeddings: an epoch costs only the
            // head, so only the head is built (as the PyTorch side builds it).
            let map = candle_nn::VarMap::new();
            let vb = artculture::model::init::seeded_var_builder(&map, 0, DType::F32, &Device::Cpu);
            let head = artculture::model::CultureHead::new(
                a.arch.embed_dim(),
                artculture::model::head::DEFAULT_HIDDEN,
                11,
                vb.pp(artculture::model::HEAD_PREFIX),
            )?;
            let params: Vec<(String, candle_core::Var)> = map
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut sgd = artculture::train::sgd::Sgd::new(params, Default::default())?;
            let emb = Tensor::randn(0f32, 1.0, (5300, a.arch.embed_dim()), &dev)?;
            let labels = (0..5300u32).map(|i| i % 11).collect::<Vec<_>>();
            let s = timed(a.reps, || {
                for b in 0..5300usize.div_ceil(16) {
                    let (lo, n) = (b * 16, 16.min(5300 - b * 16));
                    let x = emb.narrow(0, lo, n)?;
                    // The trainer's own step (the fused head kernel on the CPU).
                    artculture::train::transfer_step(&head, &x, &labels[lo..lo + n], None, &mut sgd, (1, b + 1, 0.01))?;
                }
                Ok(())
            })?;
            v["seconds"] = s.into();
            v["images_per_s"] = (5300.0 / s).into();
        }
        "pipeline" => {
            // Batches of 16 from 256-px cached JPEGs: decode, random resized crop, flip, normalise.
            let exs: Vec<Example> = (0..64)
                .map(|i| {
                    let p = tmp.path().join(format!("{i}.jpg"));
                    jpeg(&painting_like(340, 256, i), &p)?;
                    Ok(Example { artwork_id: i as i64, path: p, content_hash: String::new(), label: 0 })
                })
                .collect::<anyhow::Result<_>>()?;
            let t = Transform { size: 224, train: true, flip: true, mean: IMAGENET_MEAN, std: IMAGENET_STD };
            let refs: Vec<&Example> = exs.iter().collect();
            let s = timed(a.reps, || {
                for (i, c) in refs.chunks(16).enumerate() {
                    artculture::train::data::assemble(c, &t, &(0..c.len() as u64).collect::<Vec<_>>(), &dev, i)?;
                }
                Ok(())
            })?;
            v["seconds"] = s.into();
            v["images_per_s"] = (64.0 / s).into();
        }
        "train16_forward" => {
            // The forward half of a training step (graph recorded, no backward): the step minus
            // this is the backward pass and the update.
            let (net, _map) = net(a.arch, true)?;
            let x = Tensor::randn(0f32, 1.0, (16, 3, 224, 224), &dev)?;
            let y = Tensor::from_vec((0..16u32).map(|i| i % 11).collect::<Vec<_>>(), 16, &dev)?;
            let s = timed(a.reps, || {
                std::hint::black_box(candle_nn::loss::cross_entropy(&net.forward_t(&x, true)?, &y)?);
                Ok(())
            })?;
            v["seconds"] = s.into();
            v["images_per_s"] = (16.0 / s).into();
        }
        "conv_layers" => {
            v = crate::cli::bench_kernels::conv_layers(a.reps, 16, a.layer.as_deref())?;
            v["workload"] = name.into();
        }
        "isa_peak" => v = super::bench_isa::isa_peak()?,
        "eval_layers" => {
            v = crate::cli::bench_kernels::eval_layers(a.reps, a.layer.as_deref())?;
            v["workload"] = name.into();
        }
        "winograd_layers" => {
            v = crate::cli::bench_kernels::winograd_layers(a.reps)?;
            v["workload"] = name.into();
        }
        "csv" => {
            let p = tmp.path().join("MetObjects.csv");
            crate::cli::bench_data::write_met_csv(&p, a.csv_rows)?;
            let bytes = std::fs::metadata(&p)?.len() as f64;
            let mapping = artculture::culture::CultureMapping::study_default();
            let mut kept = 0;
            let s = timed(a.reps, || {
                kept = 0;
                artculture::ingest::met_csv::scan(&p, &mapping, None, |_| kept += 1, |_, _| {})?;
                Ok(())
            })?;
            v["seconds"] = s.into();
            v["mb_per_s"] = (bytes / 1e6 / s).into();
            v["rows"] = a.csv_rows.into();
            v["paintings"] = kept.into();
        }
        "folder" => {
            let src = tmp.path().join("src");
            for i in 0..a.folder_images {
                let d = src.join(["French", "Dutch", "Japanese"][i % 3]);
                std::fs::create_dir_all(&d)?;
                jpeg(&painting_like(800, 600, i as u32), &d.join(format!("{i}.jpg")))?;
            }
            let cpu0 = cpu_seconds();
            let s = Instant::now();
            let mut ws = artculture::workspace::Workspace::open(&tmp.path().join("ws"))?;
            artculture::ingest::folder::import_folder(&mut ws, &src, |_, _| {})?;
            let wall = s.elapsed().as_secs_f64();
            v["seconds"] = wall.into();
            v["images_per_s"] = (a.folder_images as f64 / wall).into();
            v["cores_used"] = ((cpu_seconds() - cpu0) / wall).into();
        }
        "predict_large" => {
            // Choosing a 4,000 x 3,000 JPEG to seeing top-3 and the overlay, decoding included.
            let p = tmp.path().join("large.jpg");
            jpeg(&painting_like(4000, 3000, 7), &p)?;
            let (net, _) = net(Arch::Resnet50, false)?;
            let meta = artculture::model::checkpoint::CheckpointMeta {
                format: 1,
                arch: Arch::Resnet50,
                classes: artculture::culture::STUDY_GROUPS.iter().map(|s| s.to_string()).collect(),
                image_size: 224,
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
                hidden: artculture::model::head::DEFAULT_HIDDEN,
                dropout: 0.5,
                run_id: None,
                train_config: serde_json::Value::Null,
                clip: None,
            };
            let model = artculture::model::checkpoint::LoadedModel { net, meta, path: p.clone() };
            // What the Predict view does: decode at display size, predict, colour the map.
            let mut parts = (0.0, 0.0);
            let s = timed(a.reps, || {
                let t0 = Instant::now();
                let img = artculture::imaging::decode_file_reduced(&p, 2048)?.rgb;
                let t1 = Instant::now();
                let pred = artculture::predict::predict_rgb(
                    &model,
                    &img,
                    &p,
                    3,
                    artculture::predict::CamKind::Sum,
                    None,
                    &dev,
                )?;
                let map: Vec<f32> = (0..224 * 224)
                    .map(|i| pred.heatmap.sample((i % 224) as f32 / 32.0, (i / 224) as f32 / 32.0))
                    .collect();
                std::hint::black_box(map);
                parts = ((t1 - t0).as_secs_f64(), t1.elapsed().as_secs_f64());
                Ok(())
            })?;
            v["seconds"] = s.into();
            v["decode_seconds"] = parts.0.into();
            v["model_seconds"] = parts.1.into();
            // What `predict --overlay` adds: the full-size decode and blend.
            let full = timed(a.reps, || {
                let img = artculture::imaging::decode_file(&p)?.rgb;
                let pred = artculture::predict::predict_rgb(
                    &model,
                    &img,
                    &p,
                    3,
                    artculture::predict::CamKind::Sum,
                    None,
                    &dev,
                )?;
                std::hint::black_box(artculture::analysis::activation::overlay(&img, &pred.heatmap, pred.frame, 0.5));
                Ok(())
            })?;
            v["cli_full_overlay_seconds"] = full.into();
        }
        #[cfg(feature = "gui")]
        "grid" => {
            let (per_frame, textures, items) = crate::cli::bench_data::grid_frame_time(tmp.path(), 10_000, 120)?;
            v["items"] = items.into();
            v["cpu_ms_per_frame"] = (per_frame * 1e3).into();
            v["max_textures"] = textures.into();
            v["texture_mib_bound"] = (textures as f64 * 192.0 * 192.0 * 4.0 / 1048576.0).into();
        }
        #[cfg(feature = "gui")]
        "curation" => {
            // Targets (issue 14): every UI frame <= 16 ms at 50,000 works; flagging all 50,000
            // committed in < 2 s.
            for n in [10_000, 50_000] {
                let phases = crate::cli::bench_curation::run(tmp.path(), n)?;
                v[format!("works_{n}")] = serde_json::to_value(&phases)?;
                let worst = phases.iter().filter(|p| p.name != "open").map(|p| p.worst_frame_ms).fold(0.0, f64::max);
                v[format!("worst_frame_ms_{n}")] = worst.into();
            }
        }
        "clip_query" => v["clip"] = super::bench_clip::query(10_000, a.reps.max(5))?,
        "clip_embed" => v["clip"] = super::bench_clip::embed(a.clip_images)?,
        #[cfg(not(feature = "gui"))]
        "grid" | "curation" => anyhow::bail!("the {name} benchmark needs the app (the `gui` feature)"),
        other => anyhow::bail!("unknown workload {other}"),
    }
    v["peak_rss_mib"] = peak_rss_mib().into();
    // Every line says where it was measured and with which kernels: figures from machines of
    // the same kind differ, and one binary runs different code on each.
    use artculture::kernels::isa;
    v["cpu"] = isa::cpu_model().into();
    v["isa"] = isa::active().as_str().into();
    if MODEL_WORKLOADS.contains(&name) {
        v["arch"] = a.arch.as_str().into();
    }
    v["gemm"] = isa::gemm_kernels().into();
    Ok(v)
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

pub fn bench(args: BenchArgs, precision: artculture::model::autocast::Precision) -> anyhow::Result<ExitCode> {
    let names: Vec<String> =
        if args.only.is_empty() { WORKLOADS.iter().map(|s| s.to_string()).collect() } else { args.only.clone() };
    if args.child {
        for n in &names {
            let mut v = run_one(n, &args)?;
            v["precision"] = precision.as_str().into();
            println!("{v}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let exe: PathBuf = std::env::current_exe().context("locating artculture")?;
    for n in &names {
        let out = std::process::Command::new(&exe)
            .args([
                "bench",
                "--child",
                "--reps",
                &args.reps.to_string(),
                "--csv-rows",
                &args.csv_rows.to_string(),
                "--folder-images",
                &args.folder_images.to_string(),
                "--clip-images",
                &args.clip_images.to_string(),
                "--arch",
                args.arch.as_str(),
                "--precision",
                precision.as_str(),
                n,
            ])
            .args(args.layer.iter().flat_map(|l| ["--layer", l.as_str()]))
            .output()?;
        if !out.status.success() {
            eprintln!("{n}: {}", String::from_utf8_lossy(&out.stderr).trim());
            continue;
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(ExitCode::SUCCESS)
}
