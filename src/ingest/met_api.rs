//! The Met's Collection API as it answers today (late 2026): two sites behind a CDN (the API
//! and the image host), each paced on its own ([`super::pacing`]); the CDN's block page taken
//! as a pause, not a failure; retries with backoff on timeouts, 429 and 5xx; and the API's two
//! 404s (withdrawn, unknown) told apart from failures, because asking again never helps.
//!
//! Facts this follows (probes published on 5 October 2026, christianchiavelli/deckle
//! `docs/upstream-api.md`; metmuseum/openaccess issues): `/v1/search` answers 410 since
//! 2026-10-01 (see [`super::met_search`]); more than ~80 requests a minute from one address get
//! a 403 HTML page ("Incapsula incident ID") for up to a minute; withdrawn works answer
//! `404 {"message":"Not a valid object"}`, unknown ids `404 {"message":"ObjectID not found"}`.
use super::pacing::{PaceNotice, PaceRules, PaceStop, Pacer};
use crate::catalog::{MetStatus, NewArtwork};
use crate::culture::{CultureMapping, RawTags};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const DEFAULT_BASE: &str = "https://collectionapi.metmuseum.org";
/// Seconds of the first wait after a CDN block (default 60, the live block's length). Tests
/// shorten it; the bound after which an import stops is 15 such waits.
pub const BLOCK_WAIT_ENV: &str = "ARTCULTURE_MET_BLOCK_WAIT_S";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{url}: {detail}")]
    Http { url: String, detail: String },
    #[error("{url}: unexpected answer: {detail}")]
    BadJson { url: String, detail: String },
    #[error("{url}: withdrawn (The Met still lists it, its record answers \"Not a valid object\")")]
    Withdrawn { url: String },
    #[error("{url}: unknown to the API (\"ObjectID not found\")")]
    UnknownObject { url: String },
    #[error(
        "The Met's CDN has blocked requests to {site} for {minutes:.0} minutes without lifting; stopped. Everything fetched so far is kept: run the same command again later and it resumes where it stopped"
    )]
    BlockedTooLong { site: &'static str, minutes: f64 },
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("cancelled; everything fetched so far is kept, and the next import resumes where this one stopped")]
    Cancelled,
}

impl From<PaceStop> for ApiError {
    fn from(s: PaceStop) -> Self {
        match s {
            PaceStop::Cancelled => ApiError::Cancelled,
            PaceStop::BlockedTooLong { site, minutes } => ApiError::BlockedTooLong { site, minutes },
        }
    }
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
    /// Requests to the API in flight at once (1: the CDN blocks parallel clients).
    pub api_in_flight: usize,
    /// Requests to the image host in flight at once.
    pub image_in_flight: usize,
    /// Requests per second to each site (1: 60 a minute, under the CDN's ~80).
    pub rate_per_s: f64,
    pub retries: u32,
    pub timeout: Duration,
    /// First backoff; doubles on each retry.
    pub backoff: Duration,
    /// The first wait after a CDN block.
    pub block_wait: Duration,
    /// Full-size images instead of the small web ones.
    pub full_size: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        let block_wait = std::env::var(BLOCK_WAIT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::from_secs(60), Duration::from_secs_f64);
        Self {
            base_url: DEFAULT_BASE.into(),
            api_in_flight: 1,
            image_in_flight: 2,
            rate_per_s: 1.0,
            retries: 5,
            timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(500),
            block_wait,
            full_size: false,
        }
    }
}

/// Which of The Met's two sites a request goes to (each has its own CDN counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    Api,
    Images,
}

/// What a request expects back: a JSON page from the CDN is never one, an HTML page is a block
/// where JSON was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Json,
    Bytes,
}

pub type Observer = Arc<dyn Fn(&PaceNotice) + Send + Sync>;

/// What the progress line and the app's job say of a notice.
pub fn notice_text(n: &PaceNotice) -> String {
    let secs = |d: Duration| {
        let s = d.as_secs_f64();
        if s < 10.0 { format!("{s:.1} s") } else { format!("{s:.0} s") }
    };
    match n {
        PaceNotice::Blocked { site, wait, interval } => format!(
            "The Met's CDN asked us to slow down ({site} answered with its block page): waiting {}, then one request every {}",
            secs(*wait),
            secs(*interval)
        ),
        PaceNotice::Lifted { site, blocked_for } => {
            format!("The Met's CDN let us through to {site} again after {}", secs(*blocked_for))
        }
    }
}

pub struct Client {
    http: reqwest::blocking::Client,
    pub(crate) opts: DownloadOptions,
    api: Pacer,
    images: Pacer,
    observer: Option<Observer>,
}

enum Attempt {
    Retry(String, Option<Duration>),
    Fatal(ApiError),
    Blocked,
}

fn looks_like_html(body: &[u8]) -> bool {
    let start = body.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(body.len());
    body[start..].first() == Some(&b'<')
}

/// The CDN's block: a 403 whose body is not the API's JSON, or its HTML page (it names
/// Incapsula) wherever it comes; an HTML page with a 2xx where JSON was expected is one too
/// (the API itself never answers HTML).
fn is_block(status: u16, body: &[u8], expect: Expect) -> bool {
    let incapsula = looks_like_html(body) && body.windows(9).any(|w| w.eq_ignore_ascii_case(b"incapsula"));
    incapsula
        || (status == 403 && serde_json::from_slice::<serde_json::Value>(body).is_err())
        || ((200..300).contains(&status) && expect == Expect::Json && looks_like_html(body))
}

/// The API's `{"message": ...}` (or a bare JSON string), if the body is one.
fn api_message(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<serde_json::Value>(body).ok()? {
        serde_json::Value::String(s) => Some(s),
        v => v.get("message").and_then(|m| m.as_str()).map(str::to_string),
    }
}

impl Client {
    pub fn new(opts: DownloadOptions) -> Result<Self, ApiError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .user_agent(concat!("artculture/", env!("CARGO_PKG_VERSION"),))
            .build()
            .map_err(|e| ApiError::Http { url: opts.base_url.clone(), detail: e.to_string() })?;
        let interval = Duration::from_secs_f64(1.0 / opts.rate_per_s.max(0.001));
        let rules = |site, in_flight| PaceRules { site, in_flight, interval, block_wait: opts.block_wait };
        Ok(Self {
            http,
            api: Pacer::new(rules("the API", opts.api_in_flight)),
            images: Pacer::new(rules("the image host", opts.image_in_flight)),
            observer: None,
            opts,
        })
    }

    /// Calls `observer` when a site blocks us and when the block lifts.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn options(&self) -> &DownloadOptions {
        &self.opts
    }

    fn pacer(&self, site: Site) -> &Pacer {
        match site {
            Site::Api => &self.api,
            Site::Images => &self.images,
        }
    }

    /// The seconds one work costs at the current pace of `site` (for time-left estimates).
    pub fn seconds_per_request(&self, site: Site) -> f64 {
        self.pacer(site).interval().as_secs_f64()
    }

    fn notify(&self, n: Option<PaceNotice>) {
        if let (Some(n), Some(o)) = (n, &self.observer) {
            o(&n);
        }
    }

    /// GET from the API; the body parsed as JSON.
    pub fn get_json(&self, url: &str, cancel: &AtomicBool) -> Result<serde_json::Value, ApiError> {
        let body = self.fetch(Site::Api, url, Expect::Json, cancel, |b| Ok(b.to_vec()))?;
        serde_json::from_slice(&body).map_err(|e| ApiError::BadJson { url: url.into(), detail: e.to_string() })
    }

    /// GET from the image host whose body must pass `check`: a body that fails with
    /// [`BodyCheck::Retry`] (an image cut off by a dropped connection) is fetched again like a
    /// timeout; [`BodyCheck::Fatal`] (a page that is not an image) is final.
    pub fn get_image<T>(
        &self,
        url: &str,
        cancel: &AtomicBool,
        check: impl Fn(&[u8]) -> Result<T, BodyCheck>,
    ) -> Result<T, ApiError> {
        self.fetch(Site::Images, url, Expect::Bytes, cancel, check)
    }

    fn fetch<T>(
        &self,
        site: Site,
        url: &str,
        expect: Expect,
        cancel: &AtomicBool,
        check: impl Fn(&[u8]) -> Result<T, BodyCheck>,
    ) -> Result<T, ApiError> {
        let pacer = self.pacer(site);
        let mut delay = self.opts.backoff;
        let mut last = String::new();
        let mut attempt = 0;
        while attempt <= self.opts.retries {
            if attempt > 0 {
                sleep_unless_cancelled(delay, cancel)?;
                delay *= 2;
            }
            let outcome = {
                let _slot = pacer.acquire(cancel)?;
                self.attempt(url, expect, &check)
            };
            match outcome {
                Ok(v) => {
                    self.notify(pacer.succeeded());
                    return Ok(v);
                }
                // Not a failure of this request: wait with every other request to the site.
                Err(Attempt::Blocked) => self.notify(pacer.blocked()?),
                Err(Attempt::Fatal(e)) => {
                    self.notify(pacer.succeeded());
                    return Err(e);
                }
                Err(Attempt::Retry(d, after)) => {
                    last = d;
                    if let Some(a) = after {
                        delay = delay.max(a);
                    }
                    attempt += 1;
                }
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(ApiError::Cancelled);
            }
        }
        Err(ApiError::Http { url: url.into(), detail: format!("{last} (gave up after {} retries)", self.opts.retries) })
    }

    fn attempt<T>(
        &self,
        url: &str,
        expect: Expect,
        check: &impl Fn(&[u8]) -> Result<T, BodyCheck>,
    ) -> Result<T, Attempt> {
        let resp = match self.http.get(url).send() {
            Err(e) if e.is_timeout() => {
                return Err(Attempt::Retry(format!("timed out after {:?}", self.opts.timeout), None));
            }
            Err(e) if e.is_connect() => return Err(Attempt::Retry(format!("cannot connect: {e}"), None)),
            Err(e) => return Err(Attempt::Retry(e.to_string(), None)),
            Ok(r) => r,
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(60)));
        let body = match resp.bytes() {
            Ok(b) => b,
            Err(e) => return Err(Attempt::Retry(format!("body cut off: {e}"), None)),
        };
        let code = status.as_u16();
        if is_block(code, &body, expect) {
            return Err(Attempt::Blocked);
        }
        if status.is_success() {
            return match check(&body) {
                Ok(v) => Ok(v),
                Err(BodyCheck::Retry(d)) => Err(Attempt::Retry(d, None)),
                Err(BodyCheck::Fatal(d)) => Err(Attempt::Fatal(ApiError::Http { url: url.into(), detail: d })),
            };
        }
        let message = api_message(&body);
        if code == 404 {
            match message.as_deref() {
                Some(m) if m.eq_ignore_ascii_case("Not a valid object") => {
                    return Err(Attempt::Fatal(ApiError::Withdrawn { url: url.into() }));
                }
                Some(m) if m.eq_ignore_ascii_case("ObjectID not found") => {
                    return Err(Attempt::Fatal(ApiError::UnknownObject { url: url.into() }));
                }
                _ => {}
            }
        }
        if code == 429 || status.is_server_error() {
            return Err(Attempt::Retry(format!("HTTP {status}"), retry_after));
        }
        let detail = match message {
            Some(m) => format!("HTTP {status}: {m}"),
            None => format!("HTTP {status}"),
        };
        Err(Attempt::Fatal(ApiError::Http { url: url.into(), detail }))
    }

    pub fn api_url(&self, path_and_query: &str) -> String {
        format!("{}/public/collection/{path_and_query}", self.opts.base_url.trim_end_matches('/'))
    }

    pub fn object_url(&self, id: &str) -> String {
        self.api_url(&format!("v1/objects/{id}"))
    }
}

fn sleep_unless_cancelled(d: Duration, cancel: &AtomicBool) -> Result<(), ApiError> {
    let end = std::time::Instant::now() + d;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(ApiError::Cancelled);
        }
        let now = std::time::Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// The fields of an object record we use.
pub fn artwork_from_object(v: &serde_json::Value, mapping: &CultureMapping) -> Option<NewArtwork> {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().trim().to_string();
    let id = v.get("objectID").and_then(|x| x.as_u64())?.to_string();
    let tags = RawTags { culture: s("culture"), country: s("country"), nationality: s("artistNationality") };
    let image = image_url(v, false);
    Some(NewArtwork {
        source: "met".into(),
        source_id: id,
        title: s("title"),
        artist: s("artistDisplayName"),
        date: s("objectDate"),
        medium: s("medium"),
        mapped_group: mapping.group_of(&tags).map(str::to_string),
        tags,
        image_url: image,
        link: Some(s("objectURL")).filter(|l| !l.is_empty()),
    })
}

/// The record's image: the small web rendition unless `full_size`, the other when only one is
/// given.
pub fn image_url(v: &serde_json::Value, full_size: bool) -> Option<String> {
    let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::trim).filter(|u| !u.is_empty());
    let (first, second) =
        if full_size { ("primaryImage", "primaryImageSmall") } else { ("primaryImageSmall", "primaryImage") };
    get(first).or_else(|| get(second)).map(str::to_string)
}

/// What a record says of its object: a painting we keep, or why not.
pub fn status_of_record(v: &serde_json::Value, require_painting: bool) -> MetStatus {
    let painting = v
        .get("classification")
        .and_then(|c| c.as_str())
        .is_some_and(|c| c.split('|').any(|c| c.trim().eq_ignore_ascii_case("paintings")));
    if require_painting && !painting {
        MetStatus::NotPainting
    } else if !v.get("isPublicDomain").and_then(|c| c.as_bool()).unwrap_or(false) {
        MetStatus::NotPublicDomain
    } else if image_url(v, false).is_none() {
        MetStatus::NoImage
    } else {
        MetStatus::Kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cdn_block_page_is_told_from_the_apis_own_answers() {
        let incapsula = b"<html><head><META NAME=\"robots\"></head><body>Request unsuccessful. Incapsula incident ID: 1234-5678</body></html>";
        assert!(is_block(403, incapsula, Expect::Json));
        assert!(is_block(403, incapsula, Expect::Bytes));
        assert!(is_block(200, incapsula, Expect::Bytes), "the block page with a 200 is still the block");
        assert!(is_block(403, b"", Expect::Json), "a 403 without the API's JSON");
        assert!(is_block(200, b"  <!DOCTYPE html><p>busy</p>", Expect::Json), "HTML where JSON was expected");
        assert!(!is_block(403, br#"{"message":"Forbidden"}"#, Expect::Json), "the API's own 403");
        assert!(!is_block(404, br#"{"message":"Not a valid object"}"#, Expect::Json));
        assert!(!is_block(200, b"<!DOCTYPE html><p>not an image</p>", Expect::Bytes), "refused by the image check");
        assert_eq!(api_message(br#""Date not valid""#).as_deref(), Some("Date not valid"));
    }

    #[test]
    fn records_are_classified_as_the_real_example_says() {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/met/api_object_example.json");
        let Ok(text) = std::fs::read_to_string(&example) else { return };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let want =
            if v["isPublicDomain"].as_bool() == Some(true) { MetStatus::Kept } else { MetStatus::NotPublicDomain };
        assert_eq!(status_of_record(&v, false), want);
        let mut p = v.clone();
        p["classification"] = "Paintings".into();
        p["isPublicDomain"] = true.into();
        assert_eq!(status_of_record(&p, true), MetStatus::Kept);
        p["primaryImage"] = "".into();
        p["primaryImageSmall"] = "".into();
        assert_eq!(status_of_record(&p, true), MetStatus::NoImage);
        p["isPublicDomain"] = false.into();
        assert_eq!(status_of_record(&p, true), MetStatus::NotPublicDomain);
        p["classification"] = "Sculpture".into();
        assert_eq!(status_of_record(&p, true), MetStatus::NotPainting);
    }
}
