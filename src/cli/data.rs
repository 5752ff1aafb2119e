//! Data commands: import, stats, flag/unflag, undo/redo, export.
use super::open_workspace;
use anyhow::{Context, bail};
use artculture::catalog::MetStatus;
use artculture::catalog::{ArtworkQuery, FlagChange, FlagReason, UndoOutcome};
use artculture::culture::CultureMapping;
use artculture::ingest::met_search::{self, DiscoveryProgress};
use artculture::ingest::pacing::PaceNotice;
use artculture::ingest::{self, met_api, met_download, met_lfs};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

#[derive(Debug, Args)]
pub struct MetImportArgs {
    /// MetObjects.csv from The Met's Open Access repository (a Git LFS pointer is recognised).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Download MetObjects.csv (~300 MB) from GitHub's LFS media URL into the workspace
    /// (resumable; checked against --csv's Git LFS pointer when given one), then import it.
    #[arg(long)]
    pub fetch_csv: bool,
    /// Where --fetch-csv downloads from.
    #[arg(long, value_name = "URL", default_value = met_lfs::MEDIA_URL, hide = true)]
    pub csv_url: String,
    /// Download the kept works' images through the Collection API (without --csv, find the
    /// paintings through its search first).
    #[arg(long)]
    pub download: bool,
    /// Take images already on disk, named by Object ID (e.g. 436535.jpg).
    #[arg(long, value_name = "DIR", conflicts_with = "download")]
    pub images: Option<PathBuf>,
    /// Import at most N paintings.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Culture mapping table (default: the workspace's culture_map.csv, which starts as the study's).
    #[arg(long, value_name = "FILE")]
    pub mapping: Option<PathBuf>,
    /// Keep culture groups with more than this many works.
    #[arg(long, default_value_t = ingest::DEFAULT_MIN_PER_GROUP)]
    pub min_per_group: usize,
    /// Download full-size images instead of the small web versions.
    #[arg(long)]
    pub full_size: bool,
    /// Ask the API again about works an earlier run recorded (closed, withdrawn, searches done).
    #[arg(long)]
    pub refresh: bool,
    /// Collection API base URL.
    #[arg(long, default_value = met_api::DEFAULT_BASE, hide = true)]
    pub api: String,
    /// Requests in flight to each of The Met's sites (default: 1 to the API, 2 to the image
    /// host; its CDN blocks parallel clients). For other servers.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Requests per second to each site (default 1: The Met's CDN blocks more than ~80 a
    /// minute). For other servers.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Seconds before a request is abandoned (and retried).
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Retries of a failed request.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Print the import report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    b.set_style(indicatif::ProgressStyle::with_template(template).expect("static template").progress_chars("=> "));
    b
}

/// The progress bar of the phase under way, so that a CDN notice prints above it.
type CurrentBar = Arc<Mutex<indicatif::ProgressBar>>;

fn say(current: &CurrentBar, line: &str) {
    let b = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
    b.suspend(|| eprintln!("{line}"));
}

pub fn import_met(ws_dir: &Option<PathBuf>, args: MetImportArgs) -> anyhow::Result<ExitCode> {
    let mut ws = open_workspace(ws_dir)?;
    let mapping = match &args.mapping {
        Some(p) => CultureMapping::from_file(p)?,
        None => ws.culture_mapping()?,
    };
    if args.refresh {
        ws.catalog.forget_met_answers()?;
    }
    let mut json = serde_json::Map::new();
    let mut opts = met_api::DownloadOptions {
        base_url: args.api.clone(),
        rate_per_s: args.rate,
        retries: args.retries,
        timeout: std::time::Duration::from_secs_f64(args.timeout),
        full_size: args.full_size,
        ..Default::default()
    };
    if let Some(w) = args.workers {
        (opts.api_in_flight, opts.image_in_flight) = (w.max(1), w.max(1));
    }
    let cancel = AtomicBool::new(false);
    let current: CurrentBar = Arc::new(Mutex::new(indicatif::ProgressBar::hidden()));
    let observer: met_api::Observer = {
        let current = current.clone();
        Arc::new(move |n: &PaceNotice| say(&current, &met_api::notice_text(n)))
    };
    let mut csv = args.csv.clone();
    if args.fetch_csv {
        csv = Some(fetch_csv(&ws, &args, &current, &cancel, &mut json)?);
    }
    if let Some(csv) = &csv {
        import_csv(&mut ws, csv, &mapping, &args, &mut json)?;
    } else if args.download {
        let client = met_api::Client::new(opts.clone())?.with_observer(observer.clone());
        let b = bar(0, "{msg}");
        *current.lock().unwrap_or_else(|p| p.into_inner()) = b.clone();
        let r = met_search::discover(&mut ws, &client, &mapping, args.limit, &cancel, |p| match p {
            DiscoveryProgress::Searching { queries, ids } => {
                b.set_message(format!("searching: {queries} requests, {ids} candidates"))
            }
            DiscoveryProgress::Checking { done, total, kept, eta_s } => b.set_message(format!(
                "checking records: {done} / {total}, {kept} paintings kept, about {} left",
                artculture::train::progress::format_duration(eta_s)
            )),
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        b.finish_and_clear();
        print_discovery(&r);
        let (kept, _) = ingest::apply_threshold(&mut ws, args.min_per_group)?;
        eprintln!("{} groups kept", kept.len());
        json.insert("discovery".into(), serde_json::to_value(&r)?);
    } else if args.images.is_none() {
        bail!("nothing to do: give --csv FILE, --fetch-csv, --download, or a combination");
    }
    if args.download {
        let client = met_api::Client::new(opts)?.with_observer(observer);
        let b = bar(0, "images [{bar:40}] {pos}/{len} {msg}");
        *current.lock().unwrap_or_else(|p| p.into_inner()) = b.clone();
        let r = met_download::download_images(&mut ws, &client, &cancel, |p| {
            b.set_length(p.total as u64);
            b.set_position((p.done + p.failed) as u64);
            b.set_message(format!(
                "{} failed, {:.0} works/min, about {} left",
                p.failed,
                p.per_min,
                artculture::train::progress::format_duration(p.eta_s)
            ));
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        b.finish_and_clear();
        print_download(&r);
        json.insert("download".into(), serde_json::to_value(&r)?);
    }
    if let Some(dir) = &args.images {
        let r = ingest::met_images::attach_local_images(&mut ws, dir)?;
        eprintln!(
            "images from {}: {} attached, {} missing, {} unreadable",
            dir.display(),
            r.attached,
            r.missing,
            r.bad.len()
        );
        for (f, why) in r.bad.iter().take(20) {
            eprintln!("  {f}: {why}");
        }
        json.insert("images".into(), serde_json::to_value(&r)?);
    }
    if args.json {
        println!("{}", serde_json::Value::Object(json));
    }
    Ok(ExitCode::SUCCESS)
}

fn fetch_csv(
    ws: &artculture::workspace::Workspace,
    args: &MetImportArgs,
    current: &CurrentBar,
    cancel: &AtomicBool,
    json: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<PathBuf> {
    let pointer = match &args.csv {
        Some(p) => match met_lfs::read_pointer(p) {
            Some(ptr) => Some(ptr),
            None => bail!(
                "--fetch-csv downloads MetObjects.csv; --csv {} is already a CSV: give one of the two",
                p.display()
            ),
        },
        None => None,
    };
    let dest = ws.root().join("met").join("MetObjects.csv");
    let b = bar(0, "MetObjects.csv [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}");
    *current.lock().unwrap_or_else(|p| p.into_inner()) = b.clone();
    let r = met_lfs::fetch_csv(&args.csv_url, &dest, pointer.as_ref(), args.retries, cancel, |done, total| {
        if let Some(t) = total {
            b.set_length(t);
        }
        b.set_position(done);
    })?;
    b.finish_and_clear();
    match &r {
        met_lfs::Fetched::AlreadyThere => eprintln!("{}: already downloaded", dest.display()),
        met_lfs::Fetched::Downloaded { bytes, resumed_from } => eprintln!(
            "{}: {:.1} MB downloaded{}{}",
            dest.display(),
            *bytes as f64 / 1e6,
            if *resumed_from > 0 {
                format!(" (continued from {:.1} MB)", *resumed_from as f64 / 1e6)
            } else {
                String::new()
            },
            if pointer.is_some() { ", SHA-256 matches the pointer" } else { "" }
        ),
    }
    json.insert("csv_file".into(), dest.display().to_string().into());
    Ok(dest)
}

fn import_csv(
    ws: &mut artculture::workspace::Workspace,
    csv: &std::path::Path,
    mapping: &CultureMapping,
    args: &MetImportArgs,
    json: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let b = bar(0, "reading {msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}");
    b.set_message(csv.display().to_string());
    let r = ingest::import_met_csv(ws, csv, mapping, args.min_per_group, args.limit, |done, total| {
        b.set_length(total);
        b.set_position(done);
    })?;
    b.finish_and_clear();
    eprintln!(
        "{}: {} rows, {} public-domain paintings ({} new, {} updated), {} not public domain",
        csv.display(),
        r.scan.rows,
        r.scan.paintings,
        r.inserted,
        r.updated,
        r.scan.not_public_domain
    );
    eprintln!("  not paintings (the CSV's Classification): {}", r.scan.not_painting);
    eprintln!("  closed: not public domain (the CSV's Is Public Domain): {}", r.scan.not_public_domain);
    let skipped = r.scan.skipped.len() as u64 + r.scan.skipped_unlisted;
    if skipped > 0 {
        eprintln!("skipped {skipped} line(s):");
        for s in r.scan.skipped.iter().take(20) {
            eprintln!("  {}, line {}: {}", csv.display(), s.line, s.reason);
        }
        if skipped > 20 {
            eprintln!("  ... and {} more (see --json)", skipped - 20);
        }
    }
    for (g, n) in &r.kept_groups {
        eprintln!("  kept {g}: {n}");
    }
    let below: Vec<_> = r.dropped.iter().filter(|d| !d.why.starts_with("unmapped")).collect();
    if !below.is_empty() {
        eprintln!(
            "dropped groups with {} works or fewer: {}",
            args.min_per_group,
            below.iter().map(|d| format!("{} ({})", d.tag, d.count)).collect::<Vec<_>>().join(", ")
        );
    }
    json.insert("csv".into(), serde_json::to_value(&r)?);
    Ok(())
}

fn print_discovery(r: &met_search::DiscoveryReport) {
    eprintln!(
        "search: {} candidates from {} requests ({} queries answered by an earlier run)",
        r.candidates, r.search_requests, r.searches_reused
    );
    eprintln!("records: {} read now, {} recorded by an earlier run", r.checked_now, r.checked_before);
    for s in MetStatus::ALL {
        eprintln!("  {}: {}", s.describe(), r.count(s));
    }
    if r.unreachable > 0 {
        eprintln!(
            "  out of reach: {} matches no split of the search could page to (its 10,000-result window); the CSV route (--fetch-csv) has them",
            r.unreachable
        );
    }
    if !r.failed.is_empty() {
        eprintln!("  failed, asked again next run: {}", r.failed.len());
        for (id, why) in r.failed.iter().take(20) {
            eprintln!("    object {id}: {why}");
        }
    }
}

fn print_download(r: &met_download::DownloadReport) {
    eprintln!(
        "images: {} downloaded, {} already there, {} failed ({} in {})",
        r.downloaded,
        r.already_there,
        r.failed.len(),
        if r.seconds > 0.0 { format!("{:.0} works/min", r.downloaded as f64 * 60.0 / r.seconds) } else { "-".into() },
        artculture::train::progress::format_duration(r.seconds)
    );
    for (s, n) in [
        (MetStatus::NotPublicDomain, r.not_public_domain),
        (MetStatus::NoImage, r.no_image),
        (MetStatus::Withdrawn, r.withdrawn),
        (MetStatus::Unknown, r.unknown),
    ] {
        eprintln!("  {}: {n}", s.describe());
    }
    for (id, why) in r.failed.iter().take(20) {
        eprintln!("  object {id}: {why}");
    }
    if !r.failed.is_empty() {
        eprintln!("  run the same command again to retry the failed ones; everything else is kept");
    }
}

pub fn import_folder(ws_dir: &Option<PathBuf>, dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut ws = open_workspace(ws_dir)?;
    let b = bar(0, "images [{bar:40}] {pos}/{len} {per_sec} ETA {eta}");
    let r = ingest::folder::import_folder(&mut ws, dir, |done, total| {
        b.set_length(total as u64);
        b.set_position(done as u64);
    })?;
    b.finish_and_clear();
    eprintln!("{}: {} imported, {} updated, {} skipped", dir.display(), r.imported, r.updated, r.skipped.len());
    for (c, n) in &r.per_culture {
        eprintln!("  {c}: {n}");
    }
    for (f, why) in &r.skipped {
        eprintln!("  skipped {f}: {why}");
    }
    for (f, what) in &r.converted {
        eprintln!("  note: {f}: {what}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn import_sample(ws_dir: &Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut ws = open_workspace(ws_dir)?;
    let r = ingest::sample::import_sample(&mut ws, |_, _| {})?;
    eprintln!(
        "sample: {} paintings ({} new) from {}",
        r.imported + r.updated,
        r.imported,
        ws.root().join("sample").display()
    );
    for (c, n) in &r.per_culture {
        eprintln!("  {c}: {n}");
    }
    eprintln!("next: `artculture train --preset demo` (under a minute on a CPU; a demo, not the study)");
    Ok(ExitCode::SUCCESS)
}

pub fn rank(
    ws_dir: &Option<PathBuf>,
    run: Option<&str>,
    json: bool,
    limit: usize,
    device: artculture::model::device::DeviceKind,
) -> anyhow::Result<ExitCode> {
    let ws = open_workspace(ws_dir)?;
    let device = device.open()?;
    let (list, ranked_by) = artculture::analysis::rank::rank(&ws, run, &device, &super::clip::stderr_progress())
        .map_err(anyhow::Error::msg)?;
    let by = ranked_by.describe();
    let mut rows = Vec::new();
    for s in list.iter().take(limit) {
        let a = ws.catalog.artwork(s.artwork_id)?;
        let dup = s.duplicate_of.map(|d| ws.catalog.artwork(d).map(|b| b.display_id())).transpose()?;
        rows.push((a, s, dup));
    }
    if json {
        let works: Vec<_> = rows
            .iter()
            .map(|(a, s, dup)| {
                serde_json::json!({ "id": a.display_id(), "culture": a.culture, "title": a.title, "flag": a.flag,
                    "score": s.score, "reasons": s.reasons, "duplicate_of": dup, "suggested": s.suggested })
            })
            .collect();
        println!("{}", serde_json::json!({ "ranked_by": ranked_by, "works": works }));
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{} works ranked by {by}; the {} most suspicious:", list.len(), rows.len());
    println!("{:>4} {:>10} {:<10} {:>7}  reasons", "rank", "id", "culture", "score");
    for (i, (a, s, dup)) in rows.iter().enumerate() {
        let mut why = s.reasons.join("; ");
        if let Some(d) = dup {
            why.push_str(&format!(" (near-duplicate of {d})"));
        }
        if let Some(r) = s.suggested {
            why.push_str(&format!(" [suggested: {r}]"));
        }
        println!(
            "{:>4} {:>10} {:<10} {:>7.3}  {why}",
            i + 1,
            a.display_id(),
            a.culture.as_deref().unwrap_or("-"),
            s.score
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stats(ws_dir: &Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let ws = open_workspace(ws_dir)?;
    let s = ws.catalog.stats()?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<16} {:>8} {:>8}", "Culture group", "Initial", "Final");
    for g in &s.groups {
        println!("{:<16} {:>8} {:>8}", g.culture, g.initial, g.final_);
    }
    println!("{:<16} {:>8} {:>8}", "Total", s.total_initial, s.total_final);
    if !s.dropped.is_empty() {
        println!("\nDropped at import:");
        for d in &s.dropped {
            println!("  {:<30} {:>6}  ({})", d.tag, d.count, d.why);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn flag(ws_dir: &Option<PathBuf>, id: &str, reason: &str, note: Option<String>) -> anyhow::Result<ExitCode> {
    let reason: FlagReason = reason.parse().map_err(anyhow::Error::msg)?;
    let mut ws = open_workspace(ws_dir)?;
    let aid = ws.catalog.resolve_id(id)?;
    ws.catalog.apply_flags(&[FlagChange { artwork_id: aid, reason: Some(reason), note }], "cli")?;
    eprintln!("flagged {id} as {reason}");
    Ok(ExitCode::SUCCESS)
}

pub fn unflag(ws_dir: &Option<PathBuf>, id: &str) -> anyhow::Result<ExitCode> {
    let mut ws = open_workspace(ws_dir)?;
    let aid = ws.catalog.resolve_id(id)?;
    let changed = ws.catalog.apply_flags(&[FlagChange { artwork_id: aid, reason: None, note: None }], "cli")?;
    eprintln!("{}", if changed.is_some() { format!("unflagged {id}") } else { format!("{id} was not flagged") });
    Ok(ExitCode::SUCCESS)
}

pub fn undo_redo(ws_dir: &Option<PathBuf>, undo: bool) -> anyhow::Result<ExitCode> {
    let mut ws = open_workspace(ws_dir)?;
    let out = if undo { ws.catalog.undo("cli")? } else { ws.catalog.redo("cli")? };
    match out {
        UndoOutcome::Nothing => eprintln!("nothing to {}", if undo { "undo" } else { "redo" }),
        UndoOutcome::Applied { artworks, .. } => {
            eprintln!("{} {} work(s)", if undo { "undid changes to" } else { "redid changes to" }, artworks.len())
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn export_curation(ws_dir: &Option<PathBuf>, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let ws = open_workspace(ws_dir)?;
    let works = ws.catalog.artworks(&ArtworkQuery { grouped_only: true, ..Default::default() })?;
    let mut buf = Vec::new();
    artculture::catalog::write_curation_csv(&works, &mut buf)?;
    match out {
        Some(p) => {
            artculture::fsutil::write_bytes_atomic(&p, &buf).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {} works to {}", works.len(), p.display());
        }
        None => std::io::Write::write_all(&mut std::io::stdout(), &buf)?,
    }
    Ok(ExitCode::SUCCESS)
}
