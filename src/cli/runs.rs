//! Commands over runs: train, runs, eval, predict.
use super::open_workspace;
use anyhow::Context;
use artculture::model::Arch;
use artculture::model::autocast::Precision;
use artculture::model::device::DeviceKind;
use artculture::predict::{self, CamKind};
use artculture::train::schedule::{PlateauMode, SchedulerConfig, ThresholdMode};
use artculture::train::{self, Control, Method, Pretrained, TrainConfig, TrainEvent, presets, run_status, trainer};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedulerKind {
    Step,
    Plateau,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Continue a cancelled or killed run from its last completed epoch.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
    /// Start from a row of the study's Table 2 (options given as well override it).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(presets::PRESETS.map(|p| p.name)))]
    pub preset: Option<String>,
    #[arg(long, value_parser = super::values::arch())]
    pub arch: Option<Arch>,
    #[arg(long, value_parser = super::values::method())]
    pub method: Option<Method>,
    #[arg(long, value_enum)]
    pub scheduler: Option<SchedulerKind>,
    #[arg(long, allow_negative_numbers = true)]
    pub epochs: Option<u32>,
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub nesterov: bool,
    #[arg(long, allow_negative_numbers = true)]
    pub batch: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    pub image_size: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Starting weights: a safetensors file, `hub` (ImageNet, from the Hugging Face cache) or `none`.
    #[arg(long, value_name = "PATH|hub|none")]
    pub pretrained: Option<Pretrained>,
    /// StepLR: epochs between reductions.
    #[arg(long, allow_negative_numbers = true)]
    pub step_size: Option<u32>,
    /// StepLR and ReduceLROnPlateau: the reduction factor.
    #[arg(long, allow_negative_numbers = true)]
    pub gamma: Option<f64>,
    /// ReduceLROnPlateau: watch validation loss (min) or validation accuracy (max).
    #[arg(long, value_parser = ["min", "max"])]
    pub plateau_mode: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub patience: Option<u32>,
    #[arg(long, allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    pub cooldown: Option<u32>,
    #[arg(long, allow_negative_numbers = true)]
    pub min_lr: Option<f64>,
    /// Weight the loss by inverse class frequency.
    #[arg(long)]
    pub balanced: bool,
    /// No random crops or flips.
    #[arg(long)]
    pub no_augment: bool,
    /// Hidden sizes of the culture head.
    #[arg(long, num_args = 2, value_names = ["H1", "H2"])]
    pub hidden: Option<Vec<usize>>,
    #[arg(long, allow_negative_numbers = true)]
    pub dropout: Option<f32>,
    /// Reuse this run's split (default: the most recent run's; a split is made when there is none).
    #[arg(long, value_name = "RUN", conflicts_with = "new_split")]
    pub split_from: Option<String>,
    /// Make a new seeded 80/10/10 split instead of reusing the last one.
    #[arg(long)]
    pub new_split: bool,
}

fn config_from(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut c = match &args.preset {
        Some(p) => presets::find(p).context("unknown preset")?.config(),
        None => TrainConfig::default(),
    };
    if let Some(a) = args.arch {
        c.arch = a;
    }
    if let Some(m) = args.method {
        c.method = m;
        if m == Method::Scratch {
            c.pretrained = Pretrained::None;
        }
    }
    let plateau = match args.scheduler {
        Some(SchedulerKind::Plateau) => true,
        Some(SchedulerKind::Step) => false,
        None => matches!(c.scheduler, SchedulerConfig::Plateau { .. }),
    };
    c.scheduler = match (plateau, c.scheduler) {
        (false, SchedulerConfig::Step { step_size, gamma }) => {
            SchedulerConfig::Step { step_size: args.step_size.unwrap_or(step_size), gamma: args.gamma.unwrap_or(gamma) }
        }
        (false, _) => {
            SchedulerConfig::Step { step_size: args.step_size.unwrap_or(7), gamma: args.gamma.unwrap_or(0.1) }
        }
        (true, cur) => {
            let base = if let SchedulerConfig::Plateau { .. } = cur { cur } else { SchedulerConfig::plateau_default() };
            let SchedulerConfig::Plateau { mode, factor, patience, threshold, cooldown, min_lr, eps, .. } = base else {
                unreachable!("plateau configuration")
            };
            SchedulerConfig::Plateau {
                mode: match args.plateau_mode.as_deref() {
                    Some("max") => PlateauMode::Max,
                    Some(_) => PlateauMode::Min,
                    None => mode,
                },
                factor: args.gamma.unwrap_or(factor),
                patience: args.patience.unwrap_or(patience),
                threshold: args.threshold.unwrap_or(threshold),
                threshold_mode: ThresholdMode::Rel,
                cooldown: args.cooldown.unwrap_or(cooldown),
                min_lr: args.min_lr.unwrap_or(min_lr),
                eps,
            }
        }
    };
    macro_rules! set {
        ($field:expr, $opt:expr) => {
            if let Some(v) = $opt.clone() {
                $field = v;
            }
        };
    }
    set!(c.epochs, args.epochs);
    set!(c.sgd.lr, args.lr);
    set!(c.sgd.momentum, args.momentum);
    set!(c.sgd.weight_decay, args.weight_decay);
    set!(c.batch, args.batch);
    set!(c.image_size, args.image_size);
    set!(c.seed, args.seed);
    set!(c.pretrained, args.pretrained);
    set!(c.dropout, args.dropout);
    c.sgd.nesterov |= args.nesterov;
    c.balanced |= args.balanced;
    c.augment &= !args.no_augment;
    if let Some(h) = &args.hidden {
        c.hidden = [h[0], h[1]];
    }
    c.split_from = args.split_from.clone();
    c.new_split = args.new_split;
    c.validate()?;
    Ok(c)
}

pub fn train(
    ws_dir: &Option<PathBuf>,
    args: &TrainArgs,
    device: DeviceKind,
    precision: Precision,
) -> anyhow::Result<ExitCode> {
    if args.resume.is_some() && precision != Precision::F32 {
        anyhow::bail!("--precision applies to new runs; a resumed run keeps the precision it started with");
    }
    let ws = open_workspace(ws_dir)?;
    let ws_path = ws.root().to_path_buf();
    drop(ws);
    let device = device.open()?;
    let control = Control::default();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut on_event = |e: TrainEvent| match e {
        TrainEvent::Started { run_id, classes, train, val, test, epochs, first_epoch } => {
            println!("{run_id}");
            eprintln!(
                "run {run_id}: {} classes, {train} training / {val} validation / {test} test works, epochs {first_epoch}..={epochs}",
                classes.len()
            );
        }
        TrainEvent::Batch(b) => {
            bar.set_prefix(b.epoch.to_string());
            bar.set_length(b.batches as u64);
            bar.set_position(b.batch as u64);
            bar.set_message(format!("loss {:.4} lr {:.2e} {:.1} img/s", b.loss, b.lr, b.images_per_s));
        }
        TrainEvent::Epoch(m) => {
            bar.suspend(|| {
                eprintln!(
                    "epoch {}: train loss {:.4}, val loss {:.4}, val acc {:.2}%, val top-3 {:.2}%, lr {:.2e}, {:.1} img/s, {:.1} s",
                    m.epoch, m.train_loss, m.val_loss, m.val_acc * 100.0, m.val_top3 * 100.0, m.lr, m.images_per_s, m.seconds
                )
            });
        }
        TrainEvent::Message(m) => bar.set_message(m),
        TrainEvent::Paused | TrainEvent::Resumed => {}
        TrainEvent::Finished { run_id, best_val_acc, top1, top3 } => {
            bar.finish_and_clear();
            eprintln!(
                "run {run_id} finished: best val acc {:.2}%, test top-1 {:.2}%, top-3 {:.2}%",
                best_val_acc * 100.0,
                top1 * 100.0,
                top3 * 100.0
            );
        }
    };
    match &args.resume {
        Some(run) => trainer::resume(&ws_path, run, &device, &mut on_event, &control)?,
        None => {
            let config = TrainConfig { precision, ..config_from(args)? };
            trainer::start(&ws_path, config, &device, &mut on_event, &control)?
        }
    };
    Ok(ExitCode::SUCCESS)
}

fn pct(x: Option<f64>) -> String {
    x.filter(|v| v.is_finite()).map(|v| format!("{:.2}", v * 100.0)).unwrap_or_else(|| "-".into())
}

/// The status column: why a run failed, and what to do with an interrupted one.
fn status_text(r: &artculture::catalog::RunRecord) -> String {
    use artculture::catalog::RunStatus;
    match (r.status, &r.message) {
        (RunStatus::Failed, Some(m)) => format!("failed: {m}"),
        (RunStatus::Interrupted, _) => format!("interrupted (resume with `artculture train --resume {}`)", r.id),
        (s, _) => s.as_str().to_string(),
    }
}

pub fn runs(ws_dir: &Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let ws = open_workspace(ws_dir)?;
    let runs = run_status::runs_with_live_status(&ws)?;
    if json {
        let rows: Vec<_> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "arch": r.arch, "method": r.method, "scheduler": r.scheduler,
                    "epochs": r.epochs_done, "val_acc": r.val_acc, "top1": r.top1, "top3": r.top3,
                    "seconds": r.seconds, "status": r.status, "message": r.message,
                    "origin": r.origin_label(), "sample_works": r.sample_works, "precision": r.precision(),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "runs": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<44} {:<9} {:<18} {:<16} {:>7} {:>7} {:>7} {:>6} {:>8}  status",
        "run", "arch", "scheduler", "method", "val %", "top-1", "top-3", "epochs", "time"
    );
    for r in &runs {
        println!(
            "{:<44} {:<9} {:<18} {:<16} {:>7} {:>7} {:>7} {:>6} {:>7.0}s  {}",
            r.display_name(),
            r.arch,
            r.scheduler,
            r.method_label(),
            pct(r.val_acc),
            pct(r.top1),
            pct(r.top3),
            r.epochs_done,
            r.seconds,
            status_text(r)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn eval(ws_dir: &Option<PathBuf>, run: &str, json: bool, device: DeviceKind) -> anyhow::Result<ExitCode> {
    let mut ws = open_workspace(ws_dir)?;
    let rec = ws.catalog.run(run)?;
    let status = run_status::live_status(&ws, &rec);
    let e = train::evaluate::eval_run(&ws, run, &device.open()?)?;
    ws.catalog.set_run_test_accuracy(run, e.top1, e.top3)?;
    if json {
        let mut v = serde_json::to_value(&e)?;
        v["status"] = serde_json::json!(status);
        v["message"] = serde_json::json!(rec.message);
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    if status != artculture::catalog::RunStatus::Finished {
        let live = artculture::catalog::RunRecord { status, ..rec.clone() };
        println!("run {run} is {}; evaluating its best checkpoint so far", status_text(&live));
    }
    println!(
        "run {run}: {} test works, top-1 {:.2}%, top-3 {:.2}%, loss {:.4}",
        e.count,
        e.top1 * 100.0,
        e.top3 * 100.0,
        e.loss
    );
    println!("{:<14} {:>9} {:>7} {:>8}", "culture", "precision", "recall", "support");
    for c in &e.per_class {
        println!("{:<14} {:>9.3} {:>7.3} {:>8}", c.culture, c.precision, c.recall, c.support);
    }
    println!("\nconfusion (rows: true, columns: predicted)");
    for (name, row) in e.classes.iter().zip(&e.confusion) {
        println!("{:<14} {}", name, row.iter().map(|v| format!("{v:>4}")).collect::<String>());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    #[arg(required_unless_present = "manifest")]
    pub images: Vec<PathBuf>,
    /// A list of images, one path (or file:// URL) per line: predicted one by one into --out as
    /// JSON Lines, skipping those --out already holds (a preempted task resumes).
    #[arg(long, value_name = "LIST", conflicts_with_all = ["images", "overlay", "class", "json"], requires = "out")]
    pub manifest: Option<PathBuf>,
    /// With --manifest: only the I-th of N deterministic shards (I from 0, as SLURM_ARRAY_TASK_ID
    /// and JOB_COMPLETION_INDEX count); `artculture merge` joins them.
    #[arg(long, value_name = "I/N", requires = "manifest")]
    pub shard: Option<artculture::shard::Shard>,
    /// With --manifest: the JSON Lines file to append to.
    #[arg(long, value_name = "FILE.jsonl", requires = "manifest")]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub run: Option<String>,
    #[arg(long, conflicts_with = "run")]
    pub checkpoint: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    #[arg(long)]
    pub json: bool,
    /// Write the painting with its activation map blended over it (a file for one image, a
    /// folder for several).
    #[arg(long, value_name = "OUT.png")]
    pub overlay: Option<PathBuf>,
    #[arg(long, value_parser = super::values::cam(), default_value = "sum")]
    pub cam: CamKind,
    /// Grad-CAM for this culture instead of the top one.
    #[arg(long)]
    pub class: Option<String>,
    /// Overlay opacity.
    #[arg(long, default_value_t = 0.5)]
    pub opacity: f32,
}

pub fn predict(ws_dir: &Option<PathBuf>, args: PredictArgs, device: DeviceKind) -> anyhow::Result<ExitCode> {
    if args.top == 0 {
        anyhow::bail!("--top 0 is outside [1, number of cultures]");
    }
    if !(0.0..=1.0).contains(&args.opacity) {
        anyhow::bail!("--opacity {} is outside [0, 1]", args.opacity);
    }
    let device = device.open()?;
    let ckpt = match &args.checkpoint {
        Some(p) => p.clone(),
        None => predict::run_checkpoint(&open_workspace(ws_dir)?, args.run.as_deref())?,
    };
    let model = predict::load_model(&ckpt, &device)?;
    // A demo's guesses must not read as the study's: say so once, on stderr.
    if let Some(rec) = model.meta.run_id.as_ref().and_then(|id| open_workspace(ws_dir).ok()?.catalog.run(id).ok())
        && let Some(note) = rec.origin_note()
    {
        eprintln!("model: {note}");
    }
    if let (Some(list), Some(out)) = (&args.manifest, &args.out) {
        let entries = artculture::shard::read_manifest(list)?;
        let shard = args.shard.unwrap_or(artculture::shard::Shard::ALL);
        let r = artculture::shard::run(&model, &entries, shard, out, args.top, &device, |_, _| {})?;
        eprintln!(
            "shard {}/{} of {}: {} entries, {} already in {}, {} predicted ({} could not be read)",
            shard.index,
            shard.count,
            list.display(),
            r.entries,
            r.already_done,
            out.display(),
            r.predicted,
            r.errors
        );
        return Ok(ExitCode::SUCCESS);
    }
    let class = args.class.as_deref().map(|c| predict::class_index(&model, c)).transpose()?;
    let cam = if class.is_some() { CamKind::Gradcam } else { args.cam };
    let several = args.images.len() > 1;
    if let (Some(out), true) = (&args.overlay, several) {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let mut failures = 0;
    for path in &args.images {
        match predict::predict_file(&model, path, args.top, cam, class, &device) {
            Ok((p, img)) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({ "image": p.image, "top": p.top, "activation": p.heatmap.rows() })
                    );
                } else {
                    let tops: Vec<String> =
                        p.top.iter().map(|r| format!("{} {:.1}%", r.culture, r.p * 100.0)).collect();
                    println!("{}: {}", path.display(), tops.join(", "));
                }
                if let Some(out) = &args.overlay {
                    let dest = if several {
                        out.join(format!("{}.png", path.file_stem().and_then(|s| s.to_str()).unwrap_or("image")))
                    } else {
                        out.clone()
                    };
                    let blended = artculture::analysis::activation::overlay(&img, &p.heatmap, p.frame, args.opacity);
                    artculture::fsutil::write_atomic(&dest, |f| {
                        blended
                            .write_to(&mut std::io::BufWriter::new(f), image::ImageFormat::Png)
                            .map_err(std::io::Error::other)
                    })?;
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e}");
            }
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
