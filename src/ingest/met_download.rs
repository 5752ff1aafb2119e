//! Downloading the images of The Met's works, paced for its CDN and resumable: a work whose
//! image URL is not known yet costs one API request first (the CSV holds no image URLs), then
//! one request to the image host; the two sites are paced apart, so with a few works in flight
//! both run at their own pace. Every image is checked to decode before it is written
//! (atomically) and recorded the moment it arrives, works on disk are skipped, and what the API
//! said of a work without an image (closed, withdrawn, unknown) is recorded and not asked again.
use super::met_api::{ApiError, BodyCheck, Client, Site, image_url, status_of_record};
use crate::catalog::MetStatus;
use crate::imaging;
use crate::workspace::Workspace;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
pub struct DownloadProgress {
    pub done: usize,
    pub failed: usize,
    pub total: usize,
    pub per_min: f64,
    pub eta_s: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DownloadReport {
    pub downloaded: usize,
    pub already_there: usize,
    /// Closed: not public domain (found now or by an earlier run).
    pub not_public_domain: usize,
    /// Closed: public domain, but no image in the record.
    pub no_image: usize,
    pub withdrawn: usize,
    pub unknown: usize,
    /// (object id, why); asked again next run.
    pub failed: Vec<(String, String)>,
    pub seconds: f64,
}

impl DownloadReport {
    fn count(&mut self, s: MetStatus) {
        match s {
            MetStatus::NotPublicDomain => self.not_public_domain += 1,
            MetStatus::NoImage => self.no_image += 1,
            MetStatus::Withdrawn => self.withdrawn += 1,
            MetStatus::Unknown => self.unknown += 1,
            MetStatus::Kept | MetStatus::NotPainting => {}
        }
    }
}

/// Catalog key: "started" while a download has not run to its end, "done" after.
pub const DOWNLOAD_KEY: &str = "met.download";

/// Where a Met work's image is kept, relative to the workspace.
pub fn image_rel_path(object_id: &str) -> String {
    format!("images/{object_id}.jpg")
}

struct Todo {
    id: i64,
    object_id: String,
    image_url: Option<String>,
}

enum Fetched {
    Image { hash: String, width: u32, height: u32, bytes: u64, url_from_record: Option<String> },
    Closed(MetStatus),
}

/// Downloads the images of every Met work with a culture group and no image yet.
pub fn download_images(
    ws: &mut Workspace,
    client: &Client,
    cancel: &AtomicBool,
    progress: impl Fn(DownloadProgress) + Sync,
) -> Result<DownloadReport, ApiError> {
    let q = crate::catalog::ArtworkQuery { grouped_only: true, ..Default::default() };
    let works: Vec<_> = ws.catalog.artworks(&q)?.into_iter().filter(|a| a.source == "met").collect();
    let known = ws.catalog.met_statuses()?;
    let mut report = DownloadReport::default();
    let mut todo = Vec::new();
    for w in works {
        let rel = image_rel_path(&w.source_id);
        if w.image_path.as_deref() == Some(rel.as_str()) && ws.resolve(&rel).is_file() {
            report.already_there += 1;
            continue;
        }
        match w.source_id.parse::<u64>().ok().and_then(|id| known.get(&id)) {
            Some(s) if *s != MetStatus::Kept => report.count(*s),
            _ => todo.push(Todo { id: w.id, object_id: w.source_id.clone(), image_url: w.image_url.clone() }),
        }
    }
    ws.catalog.set_kv(DOWNLOAD_KEY, "started")?;
    let total = todo.len();
    let next = AtomicUsize::new(0);
    let (done, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let start = Instant::now();
    let (root, thumbs) = (ws.root().to_path_buf(), ws.thumbs_dir());
    // Enough works in flight to keep both sites at their pace: the API's requests and the
    // image host's overlap.
    let workers = (client.opts.api_in_flight + client.opts.image_in_flight).max(1);
    // Workers send each result as it comes; this thread records it at once, so a crash or
    // kill loses at most the images in flight.
    let (tx, rx) = std::sync::mpsc::channel::<(i64, String, Result<Fetched, ApiError>)>();
    let mut stop = None;
    std::thread::scope(|s| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, done, failed, todo, root, thumbs, progress) =
                (&next, &done, &failed, &todo, &root, &thumbs, &progress);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let t = &todo[i];
                    let r = fetch_one(client, t, root, thumbs, cancel);
                    if matches!(r, Ok(_) | Err(ApiError::Withdrawn { .. } | ApiError::UnknownObject { .. })) {
                        done
                    } else {
                        failed
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    if tx.send((t.id, t.object_id.clone(), r)).is_err() {
                        break;
                    }
                    let (d, f) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
                    let elapsed = start.elapsed().as_secs_f64().max(1e-3);
                    // Until a few works are in, the pace itself is the best guess.
                    let pace = if t.image_url.is_some() {
                        client.seconds_per_request(Site::Images)
                    } else {
                        client.seconds_per_request(Site::Api)
                    };
                    let per_work = if d + f >= 5 { elapsed / (d + f) as f64 } else { pace };
                    progress(DownloadProgress {
                        done: d,
                        failed: f,
                        total,
                        per_min: (d + f) as f64 * 60.0 / elapsed,
                        eta_s: (total - d - f) as f64 * per_work,
                    });
                }
            });
        }
        drop(tx);
        for (id, object_id, r) in rx {
            let oid = object_id.parse::<u64>().unwrap_or_default();
            let recorded = match r {
                Ok(Fetched::Image { hash, width, height, bytes, url_from_record }) => {
                    report.downloaded += 1;
                    ws.catalog.set_image(id, &image_rel_path(&object_id), &hash, width, height, bytes).and_then(|_| {
                        match url_from_record {
                            Some(u) => ws.catalog.record_met_object(oid, MetStatus::Kept, Some(&u), None),
                            None => Ok(()),
                        }
                    })
                }
                Ok(Fetched::Closed(s)) => {
                    report.count(s);
                    ws.catalog.record_met_object(oid, s, None, None)
                }
                Err(ApiError::Withdrawn { .. }) => {
                    report.count(MetStatus::Withdrawn);
                    ws.catalog.record_met_object(oid, MetStatus::Withdrawn, None, None)
                }
                Err(ApiError::UnknownObject { .. }) => {
                    report.count(MetStatus::Unknown);
                    ws.catalog.record_met_object(oid, MetStatus::Unknown, None, None)
                }
                Err(ApiError::Cancelled) => Ok(()),
                Err(e @ ApiError::BlockedTooLong { .. }) => {
                    cancel.store(true, Ordering::Relaxed);
                    stop.get_or_insert(e);
                    Ok(())
                }
                Err(why) => {
                    report.failed.push((object_id, why.to_string()));
                    Ok(())
                }
            };
            if let Err(e) = recorded {
                cancel.store(true, Ordering::Relaxed);
                stop = Some(e.into());
            }
        }
    });
    report.seconds = start.elapsed().as_secs_f64();
    if let Some(e) = stop {
        return Err(e);
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(ApiError::Cancelled);
    }
    ws.catalog.set_kv(DOWNLOAD_KEY, if report.failed.is_empty() { "done" } else { "started" })?;
    Ok(report)
}

/// Whether a discovery or download was started and has not run to its end (the app then
/// offers to resume it).
pub fn unfinished(ws: &Workspace) -> bool {
    [DOWNLOAD_KEY, super::met_search::DISCOVERY_KEY]
        .iter()
        .any(|k| ws.catalog.kv(k).ok().flatten().as_deref() == Some("started"))
}

fn fetch_one(
    client: &Client,
    todo: &Todo,
    root: &Path,
    thumbs: &Path,
    cancel: &AtomicBool,
) -> Result<Fetched, ApiError> {
    let dest: PathBuf = root.join(image_rel_path(&todo.object_id));
    // A file left by an earlier, interrupted run counts if it decodes.
    if let Ok(bytes) = std::fs::read(&dest)
        && let Ok(decoded) = imaging::decode_bytes(&bytes, &dest)
    {
        let hash = imaging::content_hash(&bytes);
        let failed = |e: imaging::ImageError| ApiError::Http { url: dest.display().to_string(), detail: e.to_string() };
        imaging::write_cache(&decoded.rgb, thumbs, &hash).map_err(failed)?;
        let (width, height) = decoded.rgb.dimensions();
        return Ok(Fetched::Image { hash, width, height, bytes: bytes.len() as u64, url_from_record: None });
    }
    let (url, url_from_record) = match &todo.image_url {
        Some(u) if !client.opts.full_size => (u.clone(), None),
        _ => {
            let record = client.get_json(&client.object_url(&todo.object_id), cancel)?;
            match status_of_record(&record, false) {
                MetStatus::Kept => {}
                closed => return Ok(Fetched::Closed(closed)),
            }
            let Some(u) = image_url(&record, client.opts.full_size) else {
                return Ok(Fetched::Closed(MetStatus::NoImage));
            };
            (u.clone(), Some(u))
        }
    };
    let (bytes, decoded) = client.get_image(&url, cancel, |b| match imaging::decode_bytes(b, &dest) {
        Ok(d) => Ok((b.to_vec(), d)),
        Err(e @ imaging::ImageError::Truncated { .. }) => Err(BodyCheck::Retry(e.to_string())),
        Err(e) => Err(BodyCheck::Fatal(e.to_string())),
    })?;
    let bad = |detail: String| ApiError::Http { url: url.clone(), detail };
    let hash = imaging::content_hash(&bytes);
    imaging::write_cache(&decoded.rgb, thumbs, &hash).map_err(|e| bad(e.to_string()))?;
    crate::fsutil::write_bytes_atomic(&dest, &bytes).map_err(|e| bad(e.to_string()))?;
    let (width, height) = decoded.rgb.dimensions();
    Ok(Fetched::Image { hash, width, height, bytes: bytes.len() as u64, url_from_record })
}
