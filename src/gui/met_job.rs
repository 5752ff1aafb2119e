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
pub fn button_label(shared: &Shared) -> &'static str {
    if shared.busy(JOB_NAME) {
        "Downloading from The Met…"
    } else if shared.ws.as_ref().is_some_and(met_download::unfinished) {
        "Resume the download from The Met"
    } else {
        "Download images from The Met"
    }
}

/// Starts the job; groups with `min_per_group` works or fewer are dropped after a search.
pub fn start_met_download(shared: &mut Shared, min_per_group: usize) {
    if shared.busy(JOB_NAME) {
        return;
    }
    let (ws_path, opts) = (shared.ws_path.clone(), shared.met_options.clone());
    shared.spawn(JOB_NAME, move |rep| run(rep, &ws_path, opts, min_per_group));
}

fn run(
    rep: &Reporter<String>,
    ws_path: &std::path::Path,
    opts: met_api::DownloadOptions,
    min_per_group: usize,
) -> Result<String, String> {
    let mut ws = Workspace::open(ws_path).map_err(|e| e.to_string())?;
    // The last fraction shown, so a notice keeps the bar where it was.
    let fraction = Arc::new(Mutex::new(0f32));
    let observer: met_api::Observer = {
        let (rep, fraction) = (rep.clone(), fraction.clone());
        Arc::new(move |n: &PaceNotice| {
            rep.progress(*fraction.lock().unwrap_or_else(|p| p.into_inner()), met_api::notice_text(n))
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
                    crate::train::progress::format_duration(eta_s)
                ),
            ),
        })
        .map_err(|e| e.to_string())?;
        crate::ingest::apply_threshold(&mut ws, min_per_group).map_err(|e| e.to_string())?;
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
                crate::train::progress::format_duration(p.eta_s)
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

// The stand-in for The Met that the integration tests use (tests/common), included by path so
// the app's inline test drives the same service.
#[cfg(test)]
#[path = "../../tests/common/http.rs"]
mod http;
#[cfg(test)]
#[path = "../../tests/common/met_rows.rs"]
mod met_rows;
#[cfg(test)]
#[path = "../../tests/common/met_standin.rs"]
mod met_standin;
#[cfg(test)]
use met_rows::{MET_HEADER, met_row};

#[cfg(test)]
mod tests {
    use super::met_standin::{Kind, Rules, Standin, collection};
    use crate::gui::app::tests::{fixed_picker, harness, run_until};
    use egui_kittest::kittest::Queryable;
    use std::time::Duration;

    fn images_on_disk(ws: &std::path::Path) -> usize {
        std::fs::read_dir(ws.join("images")).map(|d| d.count()).unwrap_or(0)
    }

    #[test]
    fn the_download_says_when_the_cdn_blocks_can_be_cancelled_and_resumes() {
        // Each site blocks once, at its 6th request, for 0.3 s.
        let block = Duration::from_millis(300);
        let s =
            Standin::start(collection(12), Rules { limit: 1000, block, force_block_after: Some(6), ..Rules::fast() });
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(dir.path(), fixed_picker(vec![]));
        h.state_mut().shared.met_options = crate::ingest::met_api::DownloadOptions {
            base_url: s.api.url.clone(),
            rate_per_s: 8.0,
            block_wait: block,
            ..Default::default()
        };
        h.state_mut().dataset.min_per_group = 0;
        h.run_steps(2);
        h.get_by_label("Import The Met's paintings (downloads the records and images)").click();
        let mut seen = Vec::new();
        run_until(&mut h, |app| {
            seen.extend(app.shared.jobs.first().map(|j| j.message.clone()));
            seen.iter().any(|m| m.starts_with("The Met's CDN asked us to slow down (the API answered"))
        });
        run_until(&mut h, |app| {
            seen.extend(app.shared.jobs.first().map(|j| j.message.clone()));
            images_on_disk(dir.path()) >= 3
        });
        assert!(seen.iter().any(|m| m.starts_with("checking records: ")), "{seen:?}");
        assert!(seen.iter().any(|m| m.contains(" images, ") && m.contains("left")), "{seen:?}");
        h.get_by_label("Cancel").click();
        run_until(&mut h, |app| app.shared.jobs.is_empty());
        h.run_steps(3);
        let msg = h.state().shared.messages.last().unwrap().clone();
        assert!(msg.contains("cancelled") && msg.contains("resumes"), "{msg}");
        let (images_then, gets_then) = (images_on_disk(dir.path()), s.image_gets());
        assert!(images_then < 12, "cancelled before the end");
        // The button now offers to resume; the rest comes, nothing already here is fetched again.
        let said = h.state().shared.messages.len();
        h.get_by_label("Resume the download from The Met").click();
        run_until(&mut h, |app| app.shared.messages.len() > said);
        h.run_steps(3);
        let msg = h.state().shared.messages.last().unwrap().clone();
        assert!(msg.contains(&format!("{} downloaded", 12 - images_then)), "{msg}");
        assert_eq!(images_on_disk(dir.path()), s.ids(Kind::Painting).len());
        assert!(s.image_gets() - gets_then <= 12 - images_then + 2, "refetched what was there");
        h.get_by_label("Download images from The Met");
        h.get_by_label("Table 1: works per culture");
    }
}
