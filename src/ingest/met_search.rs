//! Finding The Met's public-domain paintings without the CSV: the Collection API's v1.1 search,
//! paged, every query kept under its 10,000-result window, then one record per candidate.
//!
//! `/v1/search` answers 410 Gone since 2026-10-01. `/v1.1/search` takes the same filters plus
//! `offset` and `limit` (at most 500, larger values capped without a word), answers
//! `{total, objectIDs}` with `objectIDs: null` past the last match, and stops at the 10,000th
//! result (a page crossing it comes back short). So a query whose `total` passes the window is
//! split (by department, then by date range) until each part fits; a short page before `total`
//! is taken as the window too. `isPublicDomain` is not a search filter and "Paintings" matches
//! any text, so every candidate's record is read: that is what makes this route slow.
//!
//! Resumable: each completed query's ids and each record's verdict are written as they come
//! (catalog `met_search_queries`, `met_objects`), so a killed run asks for neither again.
use super::met_api::{ApiError, Client, artwork_from_object, status_of_record};
use crate::catalog::MetStatus;
use crate::culture::CultureMapping;
use crate::workspace::Workspace;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Results past this offset are never returned.
pub const SEARCH_WINDOW: u64 = 10_000;
/// The largest page the search returns.
pub const PAGE_SIZE: u64 = 500;
/// The query that finds candidate paintings.
pub const BASE_QUERY: &str = "hasImages=true&q=Paintings";
/// Catalog key: "started" while a discovery has not run to its end, "done" after.
pub const DISCOVERY_KEY: &str = "met.discovery";
/// The widest date range a split starts from (years; negative is BCE).
const DATES: (i64, i64) = (-8000, 2100);

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiscoveryReport {
    /// Distinct object ids the searches returned.
    pub candidates: usize,
    /// Records read in this run.
    pub checked_now: usize,
    /// Candidates already checked by an earlier run (not asked again).
    pub checked_before: usize,
    /// Every checked candidate's verdict, earlier runs included.
    pub by_status: Vec<(MetStatus, usize)>,
    /// Records that could not be read (network); asked again next run.
    pub failed: Vec<(String, String)>,
    /// Matches no split of the query could reach through the window.
    pub unreachable: u64,
    pub search_requests: usize,
    /// Search queries answered from an earlier run's record.
    pub searches_reused: usize,
}

impl DiscoveryReport {
    pub fn count(&self, s: MetStatus) -> usize {
        self.by_status.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n)
    }
}

#[derive(Debug, Clone)]
pub enum DiscoveryProgress {
    Searching { queries: usize, ids: usize },
    Checking { done: usize, total: usize, kept: usize, eta_s: f64 },
}

struct Searcher<'a> {
    client: &'a Client,
    cancel: &'a AtomicBool,
    report: DiscoveryReport,
}

impl Searcher<'_> {
    fn page(&mut self, query: &str, offset: u64) -> Result<(u64, Option<Vec<u64>>), ApiError> {
        let url = self.client.api_url(&format!("v1.1/search?{query}&offset={offset}&limit={PAGE_SIZE}"));
        let v = self.client.get_json(&url, self.cancel)?;
        self.report.search_requests += 1;
        let total = v.get("total").and_then(|t| t.as_u64()).ok_or_else(|| ApiError::BadJson {
            url: url.clone(),
            detail: "no \"total\" in the search answer".into(),
        })?;
        let ids = v.get("objectIDs").and_then(|a| a.as_array()).map(|a| a.iter().filter_map(|x| x.as_u64()).collect());
        Ok((total, ids))
    }

    /// All ids of `query`, or `Err(total)` when they do not fit the window.
    fn page_all(&mut self, ws: &mut Workspace, query: &str) -> Result<Result<Vec<u64>, u64>, ApiError> {
        if let Some((_, ids)) = ws.catalog.met_search_done(query)? {
            self.report.searches_reused += 1;
            return Ok(Ok(ids));
        }
        let (total, first) = self.page(query, 0)?;
        if total > SEARCH_WINDOW {
            return Ok(Err(total));
        }
        let mut ids = first.unwrap_or_default();
        let mut last_len = ids.len() as u64;
        while (ids.len() as u64) < total {
            if last_len < PAGE_SIZE {
                // A short page before the end: the window is narrower than we thought.
                return Ok(Err(total));
            }
            let (_, page) = self.page(query, ids.len() as u64)?;
            let Some(page) = page else { return Ok(Err(total)) };
            last_len = page.len() as u64;
            ids.extend(page);
        }
        ws.catalog.set_met_search_done(query, total, &ids)?;
        Ok(Ok(ids))
    }

    fn departments(&mut self) -> Result<Vec<u64>, ApiError> {
        let url = self.client.api_url("v1/departments");
        let v = self.client.get_json(&url, self.cancel)?;
        self.report.search_requests += 1;
        let ids: Vec<u64> = v
            .get("departments")
            .and_then(|d| d.as_array())
            .map(|a| a.iter().filter_map(|d| d.get("departmentId").and_then(|i| i.as_u64())).collect())
            .unwrap_or_default();
        if ids.is_empty() {
            return Err(ApiError::BadJson { url, detail: "no departments listed".into() });
        }
        Ok(ids)
    }

    /// Every id of `query`, splitting it by date range (halves) while it does not fit.
    fn by_dates(
        &mut self,
        ws: &mut Workspace,
        query: &str,
        (lo, hi): (i64, i64),
        out: &mut BTreeSet<u64>,
        progress: &mut impl FnMut(DiscoveryProgress),
    ) -> Result<(), ApiError> {
        let q = format!("{query}&dateBegin={lo}&dateEnd={hi}");
        match self.page_all(ws, &q)? {
            Ok(ids) => out.extend(ids),
            Err(total) if lo >= hi => {
                // One year with more matches than the window: take what the window shows.
                self.report.unreachable += total.saturating_sub(SEARCH_WINDOW);
            }
            Err(_) => {
                let mid = lo + (hi - lo) / 2;
                self.by_dates(ws, query, (lo, mid), out, progress)?;
                self.by_dates(ws, query, (mid + 1, hi), out, progress)?;
            }
        }
        progress(DiscoveryProgress::Searching { queries: self.report.search_requests, ids: out.len() });
        Ok(())
    }

    /// Every id the base query matches, split until each part fits the window.
    fn all_ids(
        &mut self,
        ws: &mut Workspace,
        progress: &mut impl FnMut(DiscoveryProgress),
    ) -> Result<Vec<u64>, ApiError> {
        let mut out = BTreeSet::new();
        match self.page_all(ws, BASE_QUERY)? {
            Ok(ids) => out.extend(ids),
            Err(total) => {
                for d in self.departments()? {
                    let q = format!("{BASE_QUERY}&departmentId={d}");
                    match self.page_all(ws, &q)? {
                        Ok(ids) => out.extend(ids),
                        Err(_) => self.by_dates(ws, &q, DATES, &mut out, progress)?,
                    }
                    progress(DiscoveryProgress::Searching { queries: self.report.search_requests, ids: out.len() });
                }
                // Date splits can miss works whose dates straddle a cut; count what is missing.
                self.report.unreachable = self.report.unreachable.max(total.saturating_sub(out.len() as u64));
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// Finds candidate paintings through the v1.1 search, reads each unchecked candidate's record,
/// keeps the public-domain paintings with an image (upserted with their image URL, so the
/// download needs no second request) and records every verdict as it comes. Stops after
/// `limit` kept works, counting those kept by earlier runs.
pub fn discover(
    ws: &mut Workspace,
    client: &Client,
    mapping: &CultureMapping,
    limit: Option<usize>,
    cancel: &AtomicBool,
    mut progress: impl FnMut(DiscoveryProgress),
) -> Result<DiscoveryReport, ApiError> {
    ws.catalog.set_kv(DISCOVERY_KEY, "started")?;
    let mut s = Searcher { client, cancel, report: DiscoveryReport::default() };
    let ids = s.all_ids(ws, &mut progress)?;
    let mut report = s.report;
    report.candidates = ids.len();
    let known = ws.catalog.met_statuses()?;
    let mut counts: HashMap<MetStatus, usize> = HashMap::new();
    for id in &ids {
        if let Some(st) = known.get(id) {
            *counts.entry(*st).or_default() += 1;
        }
    }
    let todo: Vec<u64> = ids.iter().copied().filter(|id| !known.contains_key(id)).collect();
    report.checked_before = ids.len() - todo.len();
    let start = Instant::now();
    for (i, id) in todo.iter().enumerate() {
        let kept = counts.get(&MetStatus::Kept).copied().unwrap_or(0);
        if limit.is_some_and(|l| kept >= l) || cancel.load(Ordering::Relaxed) {
            break;
        }
        let per = if i >= 5 {
            start.elapsed().as_secs_f64() / i as f64
        } else {
            client.seconds_per_request(super::met_api::Site::Api)
        };
        progress(DiscoveryProgress::Checking {
            done: i,
            total: todo.len(),
            kept,
            eta_s: (todo.len() - i) as f64 * per,
        });
        let url = client.object_url(&id.to_string());
        let (status, work) = match client.get_json(&url, cancel) {
            Ok(v) => {
                let st = status_of_record(&v, true);
                (st, if st == MetStatus::Kept { artwork_from_object(&v, mapping) } else { None })
            }
            Err(ApiError::Withdrawn { .. }) => (MetStatus::Withdrawn, None),
            Err(ApiError::UnknownObject { .. }) => (MetStatus::Unknown, None),
            Err(e @ (ApiError::Cancelled | ApiError::BlockedTooLong { .. } | ApiError::Catalog(_))) => {
                report.by_status = sorted(counts);
                return Err(e);
            }
            Err(e) => {
                report.failed.push((id.to_string(), e.to_string()));
                continue;
            }
        };
        let url = work.as_ref().and_then(|w| w.image_url.clone());
        ws.catalog.record_met_object(*id, status, url.as_deref(), work.as_ref())?;
        report.checked_now += 1;
        *counts.entry(status).or_default() += 1;
    }
    report.by_status = sorted(counts);
    if cancel.load(Ordering::Relaxed) {
        return Err(ApiError::Cancelled);
    }
    if limit.is_none() {
        ws.catalog.set_kv(DISCOVERY_KEY, "done")?;
    }
    Ok(report)
}

fn sorted(counts: HashMap<MetStatus, usize>) -> Vec<(MetStatus, usize)> {
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort();
    v
}
