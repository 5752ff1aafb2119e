//! Downloading images through The Met's Collection API, politely and resumably: a bounded
//! number of workers, a shared rate limit, retries with backoff on timeouts, 429 and 5xx, every
//! image checked to decode before it is written (atomically), and works already on disk
//! skipped, so an interrupted download resumes where it stopped.
use crate::catalog::NewArtwork;
use crate::culture::{CultureMapping, RawTags};
use crate::imaging;
use crate::workspace::Workspace;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use std::time::{Duration, Instant};

pub const DEFAULT_BASE: &str = "https://collectionapi.metmuseum.org";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{url}: {detail}")]
    Http { url: String, detail: String },
    #[error("{url}: unexpected answer: {detail}")]
    BadJson { url: String, detail: String },
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("download cancelled")]
    Cancelled,
}

/// What a body check says of a response it refuses.
#[derive(Debug, Clone)]
pub enum BodyCheck {
    /// Fetch it again (counts as one of the retries).
    Retry(String),
    /// Give up on this URL.
    Fatal(String),
}

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub base_url: String,
    pub workers: usize,
    /// At most this many requests per second, all workers together.
    pub rate_per_s: f64,
    pub retries: u32,
    pub timeout: Duration,
    /// First backoff; doubles on each retry.
    pub backoff: Duration,
    /// Full-size images instead of the small web ones.
    pub full_size: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE.into(),
            workers: 4,
            rate_per_s: 20.0,
            retries: 5,
            timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(500),
            full_size: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DownloadProgress {
    pub done: usize,
    pub failed: usize,
    pub total: usize,
    pub per_s: f64,
    pub eta_s: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DownloadReport {
    pub downloaded: usize,
    pub already_there: usize,
    pub no_image: usize,
    pub failed: Vec<(String, String)>,
}

/// Spaces request starts evenly across workers.
struct RateLimiter {
    next: Mutex<Instant>,
    interval: Duration,
}

impl RateLimiter {
    fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        let now = Instant::now();
        if slot > now {
            std::thread::sleep(slot - now);
        }
    }
}

pub struct Client {
    http: reqwest::blocking::Client,
    opts: DownloadOptions,
    limiter: RateLimiter,
}

enum Attempt {
    Retry(String, Option<Duration>),
    Fatal(String),
}

impl Client {
    pub fn new(opts: DownloadOptions) -> Result<Self, ApiError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .user_agent(concat!("artculture/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Http { url: opts.base_url.clone(), detail: e.to_string() })?;
        let interval = Duration::from_secs_f64(1.0 / opts.rate_per_s.max(0.01));
        Ok(Self { http, limiter: RateLimiter { next: Mutex::new(Instant::now()), interval }, opts })
    }

    /// GET with the rate limit and retries; returns the body.
    pub fn get(&self, url: &str, cancel: &AtomicBool) -> Result<Vec<u8>, ApiError> {
        self.get_checked(url, cancel, |b| Ok(b.to_vec()))
    }

    /// GET whose body must pass `check`: a body that fails with [`BodyCheck::Retry`] (an image
    /// cut off by a dropped connection) is fetched again like a timeout; [`BodyCheck::Fatal`]
    /// (an HTML page instead of an image) is final.
    pub fn get_checked<T>(
        &self,
        url: &str,
        cancel: &AtomicBool,
        check: impl Fn(&[u8]) -> Result<T, BodyCheck>,
    ) -> Result<T, ApiError> {
        let mut delay = self.opts.backoff;
        let mut last = String::new();
        for attempt in 0..=self.opts.retries {
            if cancel.load(Ordering::Relaxed) {
                return Err(ApiError::Cancelled);
            }
            if attempt > 0 {
                std::thread::sleep(delay);
                delay *= 2;
            }
            self.limiter.wait();
            let outcome = match self.http.get(url).send() {
                Err(e) if e.is_timeout() => Attempt::Retry(format!("timed out after {:?}", self.opts.timeout), None),
                Err(e) if e.is_connect() => Attempt::Retry(format!("cannot connect: {e}"), None),
                Err(e) => Attempt::Retry(e.to_string(), None),
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(60)));
                    if status.is_success() {
                        match resp.bytes().map(|b| check(&b)) {
                            Ok(Ok(v)) => return Ok(v),
                            Ok(Err(BodyCheck::Retry(d))) => Attempt::Retry(d, None),
                            Ok(Err(BodyCheck::Fatal(d))) => Attempt::Fatal(d),
                            Err(e) => Attempt::Retry(format!("body cut off: {e}"), None),
                        }
                    } else if status.as_u16() == 429 || status.is_server_error() {
                        Attempt::Retry(format!("HTTP {status}"), retry_after)
                    } else {
                        Attempt::Fatal(format!("HTTP {status}"))
                    }
                }
            };
            match outcome {
                Attempt::Fatal(d) => return Err(ApiError::Http { url: url.into(), detail: d }),
                Attempt::Retry(d, after) => {
                    last = d;
                    if let Some(a) = after {
                        delay = delay.max(a);
                    }
                }
            }
        }
        Err(ApiError::Http { url: url.into(), detail: format!("{last} (gave up after {} retries)", self.opts.retries) })
    }

    pub fn get_json(&self, url: &str, cancel: &AtomicBool) -> Result<serde_json::Value, ApiError> {
        let body = self.get(url, cancel)?;
        serde_json::from_slice(&body).map_err(|e| ApiError::BadJson { url: url.into(), detail: e.to_string() })
    }

    pub fn object_url(&self, id: &str) -> String {
        format!("{}/public/collection/v1/objects/{id}", self.opts.base_url.trim_end_matches('/'))
    }
}

/// The fields of an object record we use.
pub fn artwork_from_object(v: &serde_json::Value, mapping: &CultureMapping) -> Option<NewArtwork> {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().trim().to_string();
    let id = v.get("objectID").and_then(|x| x.as_u64())?.to_string();
    let tags = RawTags { culture: s("culture"), country: s("country"), nationality: s("artistNationality") };
    Some(NewArtwork {
        source: "met".into(),
        source_id: id,
        title: s("title"),
        artist: s("artistDisplayName"),
        date: s("objectDate"),
        medium: s("medium"),
        mapped_group: mapping.group_of(&tags).map(str::to_string),
        tags,
        image_url: None,
        link: Some(s("objectURL")).filter(|l| !l.is_empty()),
    })
}

/// Finds candidate paintings through the API's search, keeps the public-domain ones whose
/// record says "Paintings", and upserts them. Returns how many were kept.
pub fn discover(
    ws: &mut Workspace,
    client: &Client,
    mapping: &CultureMapping,
    limit: Option<usize>,
    cancel: &AtomicBool,
    progress: impl Fn(usize, usize),
) -> Result<usize, ApiError> {
    let base = client.opts.base_url.trim_end_matches('/').to_string();
    let url = format!("{base}/public/collection/v1/search?hasImages=true&q=Paintings");
    let found = client.get_json(&url, cancel)?;
    let ids: Vec<u64> = found
        .get("objectIDs")
        .and_then(|x| x.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    let mut kept = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if limit.is_some_and(|l| kept.len() >= l) {
            break;
        }
        progress(i + 1, ids.len());
        let v = match client.get_json(&client.object_url(&id.to_string()), cancel) {
            Ok(v) => v,
            Err(ApiError::Cancelled) => return Err(ApiError::Cancelled),
            Err(_) => continue,
        };
        let painting =
            v.get("classification").and_then(|c| c.as_str()).is_some_and(|c| c.eq_ignore_ascii_case("paintings"));
        let public = v.get("isPublicDomain").and_then(|c| c.as_bool()).unwrap_or(false);
        if painting
            && public
            && let Some(a) = artwork_from_object(&v, mapping)
        {
            kept.push(a);
        }
    }
    ws.catalog.upsert_artworks(&kept)?;
    Ok(kept.len())
}

/// Where a Met work's image is kept, relative to the workspace.
pub fn image_rel_path(object_id: &str) -> String {
    format!("images/{object_id}.jpg")
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
    let mut report = DownloadReport::default();
    let mut todo = Vec::new();
    for w in works {
        let rel = image_rel_path(&w.source_id);
        if w.image_path.as_deref() == Some(rel.as_str()) && ws.resolve(&rel).is_file() {
            report.already_there += 1;
        } else {
            todo.push((w.id, w.source_id.clone()));
        }
    }
    let total = todo.len();
    let next = AtomicUsize::new(0);
    let (done, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let start = Instant::now();
    let (root, thumbs) = (ws.root().to_path_buf(), ws.thumbs_dir());
    // Workers send each result as it comes; this thread records it at once, so a crash or
    // kill loses at most the images in flight.
    let (tx, rx) = std::sync::mpsc::channel::<(i64, String, Result<Fetched, ApiError>)>();
    let mut db_error = None;
    std::thread::scope(|s| {
        for _ in 0..client.opts.workers.max(1) {
            let tx = tx.clone();
            let (next, done, failed, todo, root, thumbs, progress) =
                (&next, &done, &failed, &todo, &root, &thumbs, &progress);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let (id, object_id) = &todo[i];
                    let r = fetch_one(client, object_id, root, thumbs, cancel);
                    if r.is_ok() { done } else { failed }.fetch_add(1, Ordering::Relaxed);
                    if tx.send((*id, object_id.clone(), r)).is_err() {
                        break;
                    }
                    let (d, f) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
                    let per_s = (d + f) as f64 / start.elapsed().as_secs_f64().max(1e-3);
                    progress(DownloadProgress {
                        done: d,
                        failed: f,
                        total,
                        per_s,
                        eta_s: (total - d - f) as f64 / per_s.max(1e-9),
                    });
                }
            });
        }
        drop(tx);
        for (id, object_id, r) in rx {
            match r {
                Ok(Fetched::Image { hash, width, height, bytes }) => {
                    if let Err(e) = ws.catalog.set_image(id, &image_rel_path(&object_id), &hash, width, height, bytes) {
                        cancel.store(true, Ordering::Relaxed);
                        db_error = Some(e);
                    }
                    report.downloaded += 1;
                }
                Ok(Fetched::NoImage) => report.no_image += 1,
                Err(ApiError::Cancelled) => {}
                Err(why) => report.failed.push((object_id, why.to_string())),
            }
        }
    });
    if let Some(e) = db_error {
        return Err(e.into());
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(ApiError::Cancelled);
    }
    Ok(report)
}

enum Fetched {
    Image { hash: String, width: u32, height: u32, bytes: u64 },
    NoImage,
}

fn fetch_one(
    client: &Client,
    object_id: &str,
    root: &Path,
    thumbs: &Path,
    cancel: &AtomicBool,
) -> Result<Fetched, ApiError> {
    let dest: PathBuf = root.join(image_rel_path(object_id));
    // A file left by an earlier, interrupted run counts if it decodes.
    if let Ok(bytes) = std::fs::read(&dest)
        && let Ok(decoded) = imaging::decode_bytes(&bytes, &dest)
    {
        let hash = imaging::content_hash(&bytes);
        let failed = |e: imaging::ImageError| ApiError::Http { url: dest.display().to_string(), detail: e.to_string() };
        imaging::write_cache(&decoded.rgb, thumbs, &hash).map_err(failed)?;
        let (width, height) = decoded.rgb.dimensions();
        return Ok(Fetched::Image { hash, width, height, bytes: bytes.len() as u64 });
    }
    let record = client.get_json(&client.object_url(object_id), cancel)?;
    let key = if client.opts.full_size { "primaryImage" } else { "primaryImageSmall" };
    let url = record.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    let url =
        if url.is_empty() { record.get("primaryImage").and_then(|v| v.as_str()).unwrap_or_default() } else { url };
    if url.is_empty() {
        return Ok(Fetched::NoImage);
    }
    let (bytes, decoded) = client.get_checked(url, cancel, |b| match imaging::decode_bytes(b, &dest) {
        Ok(d) => Ok((b.to_vec(), d)),
        Err(e @ imaging::ImageError::Truncated { .. }) => Err(BodyCheck::Retry(e.to_string())),
        Err(e) => Err(BodyCheck::Fatal(e.to_string())),
    })?;
    let bad = |detail: String| ApiError::Http { url: url.to_string(), detail };
    let hash = imaging::content_hash(&bytes);
    imaging::write_cache(&decoded.rgb, thumbs, &hash).map_err(|e| bad(e.to_string()))?;
    crate::fsutil::write_bytes_atomic(&dest, &bytes).map_err(|e| bad(e.to_string()))?;
    let (width, height) = decoded.rgb.dimensions();
    Ok(Fetched::Image { hash, width, height, bytes: bytes.len() as u64 })
}
