//! A stand-in for The Met as it answers today (late 2026), on 127.0.0.1: the Collection API,
//! its image host and GitHub's LFS media URL as three servers, so each CDN site counts its own
//! requests. What it reproduces (christianchiavelli/deckle `docs/upstream-api.md`, probed on
//! 5 October 2026; metmuseum/openaccess issues):
//! - `/v1/search` answers 410 Gone with a JSON body naming `/v1.1/search`;
//! - `/v1.1/search`: `q` (any case, title or classification), `hasImages`, `departmentId`,
//!   `dateBegin`+`dateEnd`; `offset` (negative as 0), `limit` (default 100, capped at 500
//!   silently, <= 0 as 100); ids ordered as text; `objectIDs: null` past the last match; nothing
//!   past the result window (10,000 live), a page crossing it cut short;
//! - `/v1/departments`; `/v1/objects/{id}` with `404 {"message":"Not a valid object"}` for
//!   withdrawn works and `404 {"message":"ObjectID not found"}` for unknown ids;
//! - each site: more than `limit` requests within `window` gets a 403 HTML page ("Request
//!   unsuccessful. Incapsula incident ID") for every request until `block` has passed; with
//!   `force_block_after`, a block also starts at that request (another client on the address);
//! - the CSV behind the LFS media URL answers Range requests (206), and can drop the connection
//!   part way through its first answer.
#![allow(dead_code)]

use super::http::{Request, Response, Server, serve};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Rules {
    pub limit: usize,
    pub window: Duration,
    pub block: Duration,
    /// Results a search can page to.
    pub search_window: usize,
    /// Start one block on each CDN site at its n-th request.
    pub force_block_after: Option<usize>,
    /// Drop the CSV's first full answer after this many bytes.
    pub csv_drop_after: Option<usize>,
}

impl Rules {
    /// The live service's numbers.
    pub fn live() -> Self {
        Self {
            limit: 80,
            window: Duration::from_secs(60),
            block: Duration::from_secs(60),
            search_window: 10_000,
            force_block_after: None,
            csv_drop_after: None,
        }
    }

    /// The same rules, fast enough for a test: 8 requests a second, 0.5 s blocks.
    pub fn fast() -> Self {
        Self {
            limit: 8,
            window: Duration::from_secs(1),
            block: Duration::from_millis(500),
            search_window: 20,
            force_block_after: None,
            csv_drop_after: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A public-domain painting with an image.
    Painting,
    /// Found by "Paintings" in its title, classified otherwise.
    NotPainting,
    /// A painting, not public domain: no image in its record.
    Closed,
    /// A public-domain painting whose record has no image.
    NoImage,
    /// Listed by the search and the CSV; its record answers "Not a valid object".
    Withdrawn,
    /// Matches no search for paintings.
    Other,
}

#[derive(Debug, Clone)]
pub struct Object {
    pub id: u64,
    pub kind: Kind,
    pub department: u64,
    pub year: i64,
    pub culture: &'static str,
}

/// `paintings` kept paintings (French, Dutch, Japanese in turn, two departments, dates spread
/// over four centuries), then 5 non-paintings, 3 closed, 2 without image, 2 withdrawn and 3
/// works no painting search finds, ids from 1 up.
pub fn collection(paintings: usize) -> Vec<Object> {
    let mut kinds = vec![Kind::Painting; paintings];
    kinds.extend([Kind::NotPainting; 5]);
    kinds.extend([Kind::Closed; 3]);
    kinds.extend([Kind::NoImage; 2]);
    kinds.extend([Kind::Withdrawn; 2]);
    kinds.extend([Kind::Other; 3]);
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Object {
            id: i as u64 + 1,
            kind,
            department: if i % 4 == 3 { 6 } else { 11 },
            year: 1450 + (i as i64 * 37) % 400,
            culture: ["France", "Netherlands", "Japan"][i % 3],
        })
        .collect()
}

#[derive(Default)]
struct Site {
    recent: VecDeque<Instant>,
    blocked_until: Option<Instant>,
    requests: usize,
    blocks: usize,
    forced: bool,
}

#[derive(Default)]
pub struct Counts {
    /// Requests per path, all sites.
    pub hits: HashMap<String, usize>,
    pub api_requests: usize,
    pub image_requests: usize,
    pub api_blocks: usize,
    pub image_blocks: usize,
    /// Requests answered with the block page.
    pub blocked_answers: usize,
}

pub struct Standin {
    pub api: Server,
    pub images: Server,
    pub github: Server,
    pub objects: Arc<Vec<Object>>,
    counts: Arc<Mutex<Counts>>,
    pub csv: Arc<Vec<u8>>,
}

const BLOCK_PAGE: &str = "<html style=\"height:100%\"><head><META NAME=\"ROBOTS\" CONTENT=\"NOINDEX, NOFOLLOW\"></head><body>Request unsuccessful. Incapsula incident ID: 0-123456789012345678</body></html>";

fn query(path: &str) -> HashMap<String, String> {
    path.split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.replace("%20", " ")))
                .collect()
        })
        .unwrap_or_default()
}

/// The CDN's rule for one site; `Some(block page)` when the request is refused.
fn cdn(site: &mut Site, rules: &Rules) -> Option<Response> {
    let now = Instant::now();
    if site.blocked_until.is_some_and(|u| now < u) {
        return Some(Response { status: 403, body: BLOCK_PAGE.into(), ..Default::default() });
    }
    if site.blocked_until.take().is_some() {
        site.recent.clear();
    }
    site.requests += 1;
    site.recent.push_back(now);
    while site.recent.front().is_some_and(|t| now.duration_since(*t) > rules.window) {
        site.recent.pop_front();
    }
    let forced = rules.force_block_after.is_some_and(|n| site.requests >= n) && !site.forced;
    if site.recent.len() > rules.limit || forced {
        site.forced |= forced;
        site.blocks += 1;
        site.blocked_until = Some(now + rules.block);
        return Some(Response { status: 403, body: BLOCK_PAGE.into(), ..Default::default() });
    }
    None
}

/// Counts a request to one CDN site (the API's or the image host's); the block page if the
/// site refuses it.
fn gate(site: &Mutex<Site>, counts: &Mutex<Counts>, rules: &Rules, req: &Request, api: bool) -> Option<Response> {
    let mut site = site.lock().unwrap();
    let blocked = cdn(&mut site, rules);
    let mut guard = counts.lock().unwrap();
    let c = &mut *guard;
    *c.hits.entry(req.path.clone()).or_default() += 1;
    let (requests, blocks) =
        if api { (&mut c.api_requests, &mut c.api_blocks) } else { (&mut c.image_requests, &mut c.image_blocks) };
    *requests += 1;
    *blocks = site.blocks;
    c.blocked_answers += usize::from(blocked.is_some());
    blocked
}

fn matches(o: &Object, q: &HashMap<String, String>) -> bool {
    if o.kind == Kind::Other {
        return !q.contains_key("q");
    }
    let dep = q.get("departmentId").and_then(|d| d.parse::<u64>().ok());
    let dates = match (q.get("dateBegin").and_then(|d| d.parse().ok()), q.get("dateEnd").and_then(|d| d.parse().ok())) {
        (Some(b), Some(e)) => Some((b, e)),
        _ => None,
    };
    dep.is_none_or(|d| d == o.department) && dates.is_none_or(|(b, e): (i64, i64)| (b..=e).contains(&o.year))
}

fn record(o: &Object, images: &str) -> serde_json::Value {
    let public = !matches!(o.kind, Kind::Closed);
    let image = if matches!(o.kind, Kind::Painting | Kind::NotPainting) {
        format!("{images}/CRDImages/ep/web-large/DP{}.jpg", o.id)
    } else {
        String::new()
    };
    let (classification, title) = match o.kind {
        Kind::NotPainting => ("Metalwork", format!("Snuff box with paintings {}", o.id)),
        _ => ("Paintings", format!("Painting {}", o.id)),
    };
    serde_json::json!({
        "objectID": o.id, "isPublicDomain": public, "primaryImage": image, "primaryImageSmall": image,
        "classification": classification, "title": title, "culture": "", "country": o.culture,
        "artistDisplayName": "Anonymous", "artistNationality": "", "objectDate": o.year.to_string(),
        "medium": "Oil on canvas", "department": o.department,
        "objectURL": format!("https://www.metmuseum.org/art/collection/search/{}", o.id),
    })
}

/// A small JPEG whose colour follows the object's culture.
pub fn jpeg(id: u64) -> Vec<u8> {
    let c = [[200u8, 60, 50], [50, 170, 70], [60, 80, 210]][(id as usize - 1) % 3];
    let img = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb(c.map(|v| v.saturating_add(((x + y) % 7) as u8))));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// MetObjects.csv for the collection: every object a row, as the Open Access CSV lists them
/// (closed ones marked not public domain).
pub fn csv_for(objects: &[Object]) -> Vec<u8> {
    let mut out = super::MET_HEADER.trim_end().to_string();
    out.push_str("\r\n");
    for o in objects {
        let (class, pd) = match o.kind {
            Kind::NotPainting => ("Metalwork", "True"),
            Kind::Closed => ("Paintings", "False"),
            Kind::Other => ("Prints", "True"),
            _ => ("Paintings", "True"),
        };
        out.push_str(&super::met_row(&[
            ("Object ID", &o.id.to_string()),
            ("Is Public Domain", pd),
            ("Classification", class),
            ("Country", o.culture),
            ("Title", &format!("Painting {}", o.id)),
        ]));
    }
    out.into_bytes()
}

impl Standin {
    pub fn start(objects: Vec<Object>, rules: Rules) -> Self {
        let objects = Arc::new(objects);
        let counts: Arc<Mutex<Counts>> = Arc::default();
        let image_base: Arc<Mutex<String>> = Arc::default();
        let csv = Arc::new(csv_for(&objects));
        let api_site: Arc<Mutex<Site>> = Arc::default();
        let img_site: Arc<Mutex<Site>> = Arc::default();

        let (o, c, r, ib, site) =
            (objects.clone(), counts.clone(), rules.clone(), image_base.clone(), api_site.clone());
        let api = serve(move |req| match gate(&site, &c, &r, req, true) {
            Some(block_page) => block_page,
            None => api_answer(req, &o, &r, &ib.lock().unwrap()),
        });
        let (o, c, r, site) = (objects.clone(), counts.clone(), rules.clone(), img_site.clone());
        let images = serve(move |req| {
            if let Some(block_page) = gate(&site, &c, &r, req, false) {
                return block_page;
            }
            let id = req.path.rsplit("/DP").next().and_then(|f| f.strip_suffix(".jpg")).and_then(|i| i.parse().ok());
            match id.and_then(|id: u64| o.iter().find(|x| x.id == id)) {
                Some(x) => Response::ok(jpeg(x.id)).header("Content-Type", "image/jpeg"),
                None => Response { status: 404, body: b"<html>404</html>".to_vec(), ..Default::default() },
            }
        });
        *image_base.lock().unwrap() = images.url.clone();
        let (c, body, drop_after) = (counts.clone(), csv.clone(), rules.csv_drop_after);
        let first = Arc::new(Mutex::new(true));
        let github = serve(move |req| {
            *c.lock().unwrap().hits.entry(req.path.clone()).or_default() += 1;
            if req.path != "/media/metmuseum/openaccess/master/MetObjects.csv" {
                return Response::status(404);
            }
            if let Some(from) =
                req.header("range").and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-'))
            {
                let from: usize = from.parse().unwrap();
                if from >= body.len() {
                    return Response::status(416).header("Content-Range", &format!("bytes */{}", body.len()));
                }
                return Response { status: 206, body: body[from..].to_vec(), ..Default::default() }
                    .header("Content-Range", &format!("bytes {from}-{}/{}", body.len() - 1, body.len()));
            }
            let mut first = first.lock().unwrap();
            if let Some(n) = drop_after.filter(|_| *first) {
                *first = false;
                return Response {
                    status: 200,
                    body: body[..n].to_vec(),
                    declared_len: Some(body.len()),
                    ..Default::default()
                };
            }
            Response::ok(body.to_vec())
        });
        Standin { api, images, github, objects, counts, csv }
    }

    pub fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap()
    }

    pub fn hits(&self, path: &str) -> usize {
        self.counts().hits.get(path).copied().unwrap_or(0)
    }

    /// Requests for object records, all objects.
    pub fn record_requests(&self) -> usize {
        self.counts().hits.iter().filter(|(p, _)| p.starts_with("/public/collection/v1/objects/")).map(|(_, n)| n).sum()
    }

    /// Requests for images, all objects.
    pub fn image_gets(&self) -> usize {
        self.counts().hits.iter().filter(|(p, _)| p.starts_with("/CRDImages/")).map(|(_, n)| n).sum()
    }

    pub fn ids(&self, kind: Kind) -> Vec<u64> {
        self.objects.iter().filter(|o| o.kind == kind).map(|o| o.id).collect()
    }

    pub fn csv_url(&self) -> String {
        format!("{}/media/metmuseum/openaccess/master/MetObjects.csv", self.github.url)
    }
}

fn api_answer(req: &Request, objects: &[Object], rules: &Rules, images: &str) -> Response {
    let path = req.path.as_str();
    let json =
        |status: u16, v: serde_json::Value| Response { status, body: v.to_string().into_bytes(), ..Default::default() };
    if path.starts_with("/public/collection/v1/search") {
        return json(
            410,
            serde_json::json!({
                "message": "/public/collection/v1/search was retired on 2026-10-01. It was backed by Solr and returned every matching object ID in one response; use /public/collection/v1.1/search, which is Elastic-backed and paginated via offset and limit.",
                "replacement": "/public/collection/v1.1/search"
            }),
        );
    }
    if path.starts_with("/public/collection/v1.1/search") {
        let q = query(path);
        let wants_paintings = q.get("q").is_some_and(|s| s.eq_ignore_ascii_case("paintings"));
        let mut ids: Vec<String> = objects
            .iter()
            .filter(|o| (wants_paintings || !q.contains_key("q")) && matches(o, &q))
            .map(|o| o.id.to_string())
            .collect();
        ids.sort();
        let total = ids.len();
        let offset = q.get("offset").and_then(|o| o.parse::<i64>().ok()).unwrap_or(0).max(0) as usize;
        let limit = match q.get("limit").and_then(|l| l.parse::<i64>().ok()) {
            Some(l) if l > 0 => (l as usize).min(500),
            _ => 100,
        };
        let end = (offset + limit).min(total).min(rules.search_window);
        let page: Option<Vec<u64>> =
            (offset < end).then(|| ids[offset..end].iter().map(|i| i.parse().unwrap()).collect());
        return json(200, serde_json::json!({"total": total, "objectIDs": page}));
    }
    if path == "/public/collection/v1/departments" {
        let mut deps: Vec<u64> = objects.iter().map(|o| o.department).collect();
        deps.sort();
        deps.dedup();
        let list: Vec<_> =
            deps.iter().map(|d| serde_json::json!({"departmentId": d, "displayName": format!("Dept {d}")})).collect();
        return json(200, serde_json::json!({ "departments": list }));
    }
    if let Some(id) = path.strip_prefix("/public/collection/v1/objects/") {
        let Ok(id) = id.parse::<u64>() else {
            return json(400, serde_json::json!({"message": "could not parse objectID"}));
        };
        return match objects.iter().find(|o| o.id == id) {
            Some(o) if o.kind == Kind::Withdrawn => json(404, serde_json::json!({"message": "Not a valid object"})),
            Some(o) => json(200, record(o, images)),
            None => json(404, serde_json::json!({"message": "ObjectID not found"})),
        };
    }
    json(404, serde_json::json!({"message": "Not found"}))
}
