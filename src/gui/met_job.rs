//! The Dataset view's download from The Met, as a background job: finds the paintings through
//! the search when the workspace has none from a CSV (or an earlier search stopped half way),
//! then downloads their images, reporting what the CLI's progress line says: records checked,
//! images, time left, and the CDN's blocks as they start and lift. Cancel stops it; starting it
//! again resumes (everything fetched is recorded as it arrives).
use super::jobs::Reporter;
use super::shared::Shared;
use crate::ingest::met_api::{self, Client};
use crate::ingest::met_search::{DISCOVERY_KEY, DiscoveryProgress};
use crate::ingest::pacing::PaceNotice;
use crate::ingest::{met_download, met_search};
use crate::workspace::Workspace;
use std::sync::{Arc, Mutex};

pub const JOB_NAME: &str = "Download The Met's paintings";

/// The button's words: "Resume" when an earlier download stopped before its end.
pub fn button_label(ws: Option<&Workspace>) -> &'static str {
    if ws.is_some_and(met_download::unfinished) {
        "Resume the download from The Met"
    } else {
        "Download images from The Met"
    }
}

/// What the job shows while a block lasts.
pub fn notice_text(n: &PaceNotice) -> String {
    match n {
        PaceNotice::Blocked { site, wait, .. } => format!(
            "The Met's CDN asked us to slow down ({site}): waiting {:.0} s, then going on more slowly",
            wait.as_secs_f64()
        ),
        PaceNotice::Lifted { blocked_for, .. } => {
            format!("The Met's CDN let us through again after {:.0} s", blocked_for.as_secs_f64())
        }
    }
}

pub fn start_met_download(shared: &mut Shared) {
    if shared.busy(JOB_NAME) {
        return;
    }
    let (ws_path, opts) = (shared.ws_path.clone(), shared.met_options.clone());
    shared.spawn(JOB_NAME, move |rep| run(rep, &ws_path, opts));
}

fn run(rep: &Reporter<String>, ws_path: &std::path::Path, opts: met_api::DownloadOptions) -> Result<String, String> {
    let mut ws = Workspace::open(ws_path).map_err(|e| e.to_string())?;
    // The last fraction shown, so a notice keeps the bar where it was.
    let fraction = Arc::new(Mutex::new(0f32));
    let observer: met_api::Observer = {
        let (rep, fraction) = (rep.clone(), fraction.clone());
        Arc::new(move |n: &PaceNotice| {
            rep.progress(*fraction.lock().unwrap_or_else(|p| p.into_inner()), notice_text(n))
        })
    };
    let show = |f: f32, msg: String| {
        *fraction.lock().unwrap_or_else(|p| p.into_inner()) = f;
        rep.progress(f, msg);
    };
    let client = Client::new(opts).map_err(|e| e.to_string())?.with_observer(observer);
    let cancel = rep.cancel_flag();
    let met_works = ws.catalog.count_with_source("met").map_err(|e| e.to_string())?.1;
    let searching_unfinished = ws.catalog.kv(DISCOVERY_KEY).ok().flatten().as_deref() == Some("started");
    let mut found = String::new();
    if met_works == 0 || searching_unfinished {
        let mapping = ws.culture_mapping().map_err(|e| e.to_string())?;
        let r = met_search::discover(&mut ws, &client, &mapping, None, &cancel, |p| match p {
            DiscoveryProgress::Searching { queries, ids } => {
                show(0.0, format!("searching The Met: {queries} requests, {ids} candidates"))
            }
            DiscoveryProgress::Checking { done, total, kept, eta_s } => show(
                done as f32 / total.max(1) as f32,
                format!(
                    "checking records: {done} / {total}, {kept} paintings kept, about {} left",
                    crate::ingest::human_duration(eta_s)
                ),
            ),
        })
        .map_err(|e| e.to_string())?;
        crate::ingest::apply_threshold(&mut ws, crate::ingest::DEFAULT_MIN_PER_GROUP).map_err(|e| e.to_string())?;
        found = format!("{} paintings found, ", r.count(crate::catalog::MetStatus::Kept));
    }
    let r = met_download::download_images(&mut ws, &client, &cancel, |p| {
        show(
            (p.done + p.failed) as f32 / p.total.max(1) as f32,
            format!(
                "{} / {} images, {} failed, {:.0} works/min, about {} left",
                p.done,
                p.total,
                p.failed,
                p.per_min,
                crate::ingest::human_duration(p.eta_s)
            ),
        )
    })
    .map_err(|e| e.to_string())?;
    let closed = r.not_public_domain + r.no_image;
    Ok(format!(
        "{found}{} downloaded, {} already there, {closed} closed, {} withdrawn, {} failed",
        r.downloaded,
        r.already_there,
        r.withdrawn + r.unknown,
        r.failed.len()
    ))
}
