//! CLIP's commands: `weights fetch clip`, `embed`, `similar`, `search`, `label-issues`. Every
//! one runs on this machine: images, embeddings and queries never leave it.
use super::open_workspace;
use anyhow::{Context, bail};
use artculture::analysis::clip_works::{self, WorkIndex};
use artculture::analysis::label_issues;
use artculture::model::clip::hub::{self, ClipFiles};
use artculture::model::clip::{ClipModel, Tokenizer};
use artculture::model::device::DeviceKind;
use artculture::model::weights::HubOptions;
use artculture::workspace::Workspace;
use candle_core::Device;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// A progress line on stderr for long passes (embedding), with the rate and time left.
pub fn stderr_progress() -> impl Fn(f32, String) + Sync {
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {percent}% ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    move |f, msg| {
        bar.set_position((f.clamp(0.0, 1.0) * 1000.0) as u64);
        bar.set_message(msg);
    }
}

pub fn fetch() -> anyhow::Result<ExitCode> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let b = bar.clone();
    let files = hub::fetch(&HubOptions::from_env(), move |file, done, total| {
        b.set_message(format!("CLIP {file}"));
        b.set_length(total);
        b.set_position(done);
    })?;
    bar.finish_and_clear();
    eprintln!("CLIP ViT-B/32 ({}/{}): {}", hub::OWNER, hub::NAME, files.weights.display());
    println!("{}", files.weights.display());
    Ok(ExitCode::SUCCESS)
}

/// Where CLIP comes from: `--clip DIR` (a folder with the published file names) or the cache.
#[derive(Debug, Args)]
pub struct ClipSource {
    /// A folder holding config.json, model.safetensors, vocab.json and merges.txt (default: the
    /// Hugging Face cache, filled by `artculture weights fetch clip`).
    #[arg(long, value_name = "DIR")]
    pub clip: Option<PathBuf>,
}

impl ClipSource {
    fn files(&self) -> anyhow::Result<ClipFiles> {
        match &self.clip {
            Some(dir) => Ok(ClipFiles::in_dir(dir)),
            None => {
                let opts = HubOptions { offline: true, ..HubOptions::from_env() };
                Ok(hub::fetch(&opts, |_, _, _| {})?)
            }
        }
    }
}

struct Loaded {
    ws: Workspace,
    device: Device,
    files: ClipFiles,
    model: ClipModel,
    tok: Tokenizer,
}

fn load(ws_dir: &Option<PathBuf>, src: &ClipSource, device: DeviceKind) -> anyhow::Result<Loaded> {
    let ws = open_workspace(ws_dir)?;
    let device = device.open()?;
    let files = src.files()?;
    let (model, tok) = files.load(&device)?;
    Ok(Loaded { ws, device, files, model, tok })
}

/// Every work's embedding (cached ones read, the rest computed with a progress line).
fn index(l: &Loaded) -> anyhow::Result<WorkIndex> {
    let report = stderr_progress();
    let control = artculture::train::Control::default();
    let started = std::time::Instant::now();
    let idx = clip_works::embed_all(&l.ws, &l.model, &l.files.weights, &l.device, &control, &mut |d, n| {
        report(d as f32 / n.max(1) as f32, format!("CLIP: embedding {d} / {n} works"))
    })?;
    if started.elapsed().as_secs() >= 2 {
        eprintln!("CLIP: {} works embedded ({:.0} s)", idx.len(), started.elapsed().as_secs_f64());
    }
    Ok(idx)
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub src: ClipSource,
}

pub fn embed(ws_dir: &Option<PathBuf>, args: EmbedArgs, device: DeviceKind) -> anyhow::Result<ExitCode> {
    let l = load(ws_dir, &args.src, device)?;
    let idx = index(&l)?;
    eprintln!(
        "{} works have CLIP embeddings ({} dimensions), cached in {}",
        idx.len(),
        idx.dim,
        l.ws.features_dir().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What a query prints, and from which CLIP.
#[derive(Debug, Args)]
pub struct QueryOutput {
    /// How many works to list.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub src: ClipSource,
}

#[derive(Debug, Args)]
pub struct SimilarArgs {
    /// Works to find more like (Met Object IDs, or catalog ids for works from folders).
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub out: QueryOutput,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words to search for, e.g. "snuff box", "Madonna and Child", "harbour at sunset".
    pub text: String,
    #[command(flatten)]
    pub out: QueryOutput,
}

fn print_hits(ws: &Workspace, hits: &[(i64, f32)], json: bool, what: &str) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for (id, score) in hits {
        rows.push((ws.catalog.artwork(*id)?, *score));
    }
    if json {
        let works: Vec<_> = rows
            .iter()
            .map(|(a, s)| {
                serde_json::json!({ "id": a.display_id(), "similarity": s, "culture": a.culture, "title": a.title,
                    "artist": a.artist, "flag": a.flag })
            })
            .collect();
        println!("{}", serde_json::json!({ "query": what, "works": works }));
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{} works nearest {what}:", rows.len());
    println!("{:>4} {:>10} {:>6} {:<10} {:<12} title", "rank", "id", "cosine", "culture", "flag");
    for (i, (a, s)) in rows.iter().enumerate() {
        println!(
            "{:>4} {:>10} {:>6.3} {:<10} {:<12} {}",
            i + 1,
            a.display_id(),
            s,
            a.culture.as_deref().unwrap_or("-"),
            a.flag.as_deref().unwrap_or("-"),
            a.title
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn similar(ws_dir: &Option<PathBuf>, args: SimilarArgs, device: DeviceKind) -> anyhow::Result<ExitCode> {
    let l = load(ws_dir, &args.out.src, device)?;
    let ids = args
        .ids
        .iter()
        .map(|i| l.ws.catalog.resolve_id(i).with_context(|| format!("work {i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let idx = index(&l)?;
    let hits = match idx.similar(&ids, args.out.limit) {
        Ok(h) => h,
        Err(missing) => bail!(
            "{} has no image to compare (no embedding)",
            missing.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    print_hits(&l.ws, &hits, args.out.json, &format!("works like {}", args.ids.join(", ")))
}

pub fn search(ws_dir: &Option<PathBuf>, args: SearchArgs, device: DeviceKind) -> anyhow::Result<ExitCode> {
    if args.text.trim().is_empty() {
        bail!("search text is empty");
    }
    let l = load(ws_dir, &args.out.src, device)?;
    let idx = index(&l)?;
    let q = clip_works::text_query(&l.model, &l.tok, &args.text, &l.device)?;
    print_hits(&l.ws, &idx.nearest(&q, args.out.limit, &[]), args.out.json, &format!("{:?}", args.text))
}

#[derive(Debug, Args)]
pub struct LabelIssuesArgs {
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Folds of the out-of-sample heads.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Name near-duplicates across this run's train/test split (default: the best run, if any).
    #[arg(long)]
    pub run: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub src: ClipSource,
}

pub fn label_issues(ws_dir: &Option<PathBuf>, args: LabelIssuesArgs, device: DeviceKind) -> anyhow::Result<ExitCode> {
    let l = load(ws_dir, &args.src, device)?;
    let idx = index(&l)?;
    // Unflagged works of a culture group: the training set as curated so far.
    let rows: Vec<usize> = (0..idx.len()).filter(|&i| idx.cultures[i].is_some() && !idx.flagged[i]).collect();
    let mut classes: Vec<String> = rows.iter().filter_map(|&i| idx.cultures[i].clone()).collect();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        bail!("label issues need works of at least two cultures with images ({} found)", classes.len());
    }
    let labels: Vec<usize> =
        rows.iter().map(|&i| classes.iter().position(|c| Some(c) == idx.cultures[i].as_ref()).unwrap_or(0)).collect();
    let vectors: Vec<Vec<f32>> = rows.iter().map(|&i| idx.row(i).to_vec()).collect();
    let opts = label_issues::HeadOptions { folds: args.folds.max(2), ..Default::default() };
    let probs = label_issues::out_of_sample_probs(&vectors, &labels, classes.len(), &opts)?;
    let issues: Vec<_> =
        label_issues::rank_issues(&probs, &labels, classes.len()).into_iter().filter(|i| i.confident).collect();
    // Near-duplicates across the run's split.
    let run_id = match &args.run {
        Some(r) => Some(l.ws.catalog.run(r)?.id),
        None => l.ws.catalog.best_run()?.map(|r| r.id),
    };
    let split = run_id.map(|r| l.ws.catalog.run_split(&r)).transpose()?.unwrap_or_default();
    let pos: std::collections::HashMap<i64, usize> = idx.ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let side = |part: &str| -> Vec<usize> {
        split.iter().filter(|(_, p)| p == part).filter_map(|(id, _)| pos.get(id).copied()).collect()
    };
    let all_rows: Vec<&[f32]> = (0..idx.len()).map(|i| idx.row(i)).collect();
    let dups = label_issues::cross_split_duplicates(&all_rows, &side("train"), &side("test"), 0.97);
    let mut out = Vec::new();
    for i in issues.iter().take(args.limit) {
        let a = l.ws.catalog.artwork(idx.ids[rows[i.index]])?;
        out.push(serde_json::json!({ "id": a.display_id(), "title": a.title, "culture": a.culture,
            "self_confidence": i.self_confidence, "suggested": classes[i.suggested], "suggested_p": i.suggested_p }));
    }
    let mut dup_out = Vec::new();
    for (tr, te, s) in &dups {
        let (a, b) = (l.ws.catalog.artwork(idx.ids[*tr])?, l.ws.catalog.artwork(idx.ids[*te])?);
        dup_out.push(serde_json::json!({ "train": a.display_id(), "test": b.display_id(), "cosine": s }));
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "works": rows.len(), "issues": issues.len(), "label_issues": out, "cross_split_duplicates": dup_out })
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} of {} works look mis-tagged ({}-fold out-of-sample heads on CLIP embeddings, confident learning); the first {}:",
        issues.len(),
        rows.len(),
        opts.folds,
        out.len()
    );
    println!("{:>4} {:>10} {:<10} {:>6}  {:<10} {:>6}  title", "rank", "id", "tagged", "p(tag)", "suggested", "p");
    for (k, o) in out.iter().enumerate() {
        println!(
            "{:>4} {:>10} {:<10} {:>6.2}  {:<10} {:>6.2}  {}",
            k + 1,
            o["id"].as_str().unwrap_or("?"),
            o["culture"].as_str().unwrap_or("-"),
            o["self_confidence"].as_f64().unwrap_or(0.0),
            o["suggested"].as_str().unwrap_or("?"),
            o["suggested_p"].as_f64().unwrap_or(0.0),
            o["title"].as_str().unwrap_or("")
        );
    }
    if split.is_empty() {
        eprintln!("(no trained run: near-duplicates across a train/test split are checked once one exists)");
    } else {
        eprintln!(
            "{} near-duplicate pairs sit on both sides of the train/test split (they inflate test accuracy)",
            dup_out.len()
        );
        for d in &dup_out {
            println!(
                "duplicate: train {} ~ test {} (cosine {:.3})",
                d["train"].as_str().unwrap_or("?"),
                d["test"].as_str().unwrap_or("?"),
                d["cosine"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
