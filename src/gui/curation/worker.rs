//! The Curation view's background work. One thread with its own catalog connection loads the
//! list for the current filters, writes flags and undoes them, so the UI thread never queries
//! the catalog nor waits on its write lock (the CLI may hold it for seconds). Requests are
//! handled in the order they were sent; a load that a later load in the queue supersedes is
//! skipped (typing a search sends one per keystroke).
use super::state::{Filters, FlagFilter, Sort};
use crate::catalog::{
    Artwork, ArtworkQuery, Catalog, CatalogError, DatasetStats, FlagChange, FlagState, SortOrder, UndoOutcome,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

/// Suspicion scores by artwork id, for the "most suspicious first" order.
pub type Scores = Arc<HashMap<i64, f64>>;

pub enum Request {
    Load {
        token: u64,
        filters: Filters,
        scores: Scores,
    },
    Flag {
        token: u64,
        changes: Vec<FlagChange>,
    },
    Undo {
        token: u64,
        redo: bool,
    },
    /// A list the view no longer shows: freed here, since freeing 50,000 records on the UI
    /// thread costs a frame.
    Discard(Vec<Artwork>),
}

pub enum Reply {
    Loaded {
        token: u64,
        items: Vec<Artwork>,
        index: HashMap<i64, usize>,
        stats: Option<DatasetStats>,
    },
    /// The changes are committed (in the catalog's WAL: they survive a crash of the app).
    Flagged {
        token: u64,
        changes: Vec<FlagChange>,
        stats: Option<DatasetStats>,
    },
    Undone {
        token: u64,
        changed: Vec<(i64, FlagState)>,
        stats: Option<DatasetStats>,
    },
    Failed {
        token: u64,
        error: String,
        changes: Vec<FlagChange>,
    },
    /// A request panicked (a bug): whatever was in flight is unknown; the thread goes on.
    Crashed {
        error: String,
    },
}

/// The query behind a set of filters.
pub fn query(filters: &Filters) -> ArtworkQuery {
    ArtworkQuery {
        culture: filters.culture.clone(),
        flagged: match filters.flag {
            FlagFilter::All => None,
            FlagFilter::Flagged => Some(true),
            FlagFilter::Unflagged => Some(false),
        },
        reason: filters.reason.map(|r| r.as_str().to_string()),
        text: filters.text.clone(),
        grouped_only: true,
        with_image_only: false,
        sort: if filters.sort == Sort::Culture { SortOrder::Culture } else { SortOrder::Id },
    }
}

/// The works listed for `filters`, in display order, with their positions by id.
pub fn load(
    catalog: &Catalog,
    filters: &Filters,
    scores: &HashMap<i64, f64>,
) -> Result<(Vec<Artwork>, HashMap<i64, usize>), CatalogError> {
    let mut items = catalog.artworks(&query(filters))?;
    if matches!(filters.sort, Sort::Suspicious | Sort::Similar) {
        let score = |a: &Artwork| scores.get(&a.id).copied().unwrap_or(f64::NEG_INFINITY);
        items.sort_by(|a, b| score(b).total_cmp(&score(a)).then(a.id.cmp(&b.id)));
    }
    let index = items.iter().enumerate().map(|(i, a)| (a.id, i)).collect();
    Ok((items, index))
}

/// Handles one request against a catalog (the thread's loop, and tests, call this).
pub fn execute(catalog: &mut Catalog, request: Request) -> Option<Reply> {
    Some(match request {
        Request::Discard(old) => {
            drop(old);
            return None;
        }
        Request::Load { token, filters, scores } => match load(catalog, &filters, &scores) {
            Ok((items, index)) => Reply::Loaded { token, items, index, stats: catalog.stats().ok() },
            Err(e) => Reply::Failed { token, error: e.to_string(), changes: Vec::new() },
        },
        Request::Flag { token, changes } => match catalog.apply_flags(&changes, "gui") {
            Ok(_) => Reply::Flagged { token, changes, stats: catalog.stats().ok() },
            Err(e) => Reply::Failed { token, error: format!("not saved: {e}"), changes },
        },
        Request::Undo { token, redo } => {
            let out = if redo { catalog.redo("gui") } else { catalog.undo("gui") };
            match out {
                Ok(UndoOutcome::Nothing) => Reply::Undone { token, changed: Vec::new(), stats: None },
                Ok(UndoOutcome::Applied { artworks, states, .. }) => Reply::Undone {
                    token,
                    changed: artworks.into_iter().zip(states).collect(),
                    stats: catalog.stats().ok(),
                },
                Err(e) => Reply::Failed { token, error: e.to_string(), changes: Vec::new() },
            }
        }
    })
}

/// The UI's handle on the thread; dropping it ends the thread once its queue is done (queued
/// flags are still written).
pub struct Worker {
    tx: Sender<Request>,
    rx: Receiver<Reply>,
    pub ws_path: PathBuf,
    next_token: u64,
}

impl Worker {
    pub fn spawn(ws_path: &Path, ctx: egui::Context) -> Self {
        let (tx, requests) = channel::<Request>();
        let (replies, rx) = channel::<Reply>();
        let path = ws_path.join("catalog.sqlite");
        std::thread::Builder::new()
            .name("curation".into())
            .spawn(move || {
                let mut catalog = Catalog::open(&path);
                while let Ok(first) = requests.recv() {
                    let mut queue = vec![first];
                    queue.extend(requests.try_iter());
                    let last_load = queue.iter().rposition(|r| matches!(r, Request::Load { .. }));
                    for (i, r) in queue.into_iter().enumerate() {
                        if matches!(r, Request::Load { .. }) && Some(i) != last_load {
                            continue;
                        }
                        let run = std::panic::AssertUnwindSafe(|| match &mut catalog {
                            Ok(c) => execute(c, r),
                            Err(e) => failed(r, e),
                        });
                        let reply = std::panic::catch_unwind(run).unwrap_or_else(|p| {
                            let error = crate::train::run_status::panic_message(p.as_ref());
                            Some(Reply::Crashed {
                                error: format!("the catalog worker crashed: {error} (a bug: please report it)"),
                            })
                        });
                        if let Some(reply) = reply {
                            if replies.send(reply).is_err() {
                                return;
                            }
                            ctx.request_repaint();
                        }
                    }
                }
            })
            .expect("spawning a thread");
        Self { tx, rx, ws_path: ws_path.to_path_buf(), next_token: 0 }
    }

    /// Queues a request built with a fresh token; returns the token.
    pub fn send(&mut self, make: impl FnOnce(u64) -> Request) -> u64 {
        self.next_token += 1;
        let _ = self.tx.send(make(self.next_token));
        self.next_token
    }

    pub fn discard(&self, old: Vec<Artwork>) {
        if !old.is_empty() {
            let _ = self.tx.send(Request::Discard(old));
        }
    }

    pub fn try_recv(&self) -> Option<Reply> {
        self.rx.try_recv().ok()
    }
}

fn failed(r: Request, e: &CatalogError) -> Option<Reply> {
    let error = format!("cannot open the catalog: {e}");
    match r {
        Request::Discard(_) => None,
        Request::Load { token, .. } | Request::Undo { token, .. } => {
            Some(Reply::Failed { token, error, changes: vec![] })
        }
        Request::Flag { token, changes } => {
            Some(Reply::Failed { token, error: format!("not saved: {error}"), changes })
        }
    }
}

/// Adds `n` Met works titled "Work i", alternating French and Dutch, with Object IDs from
/// `first_id` (the curation tests' catalog).
#[cfg(test)]
pub(crate) fn fill_test_catalog(c: &mut Catalog, n: usize, first_id: usize) {
    let works: Vec<crate::catalog::NewArtwork> = (0..n)
        .map(|i| crate::catalog::NewArtwork {
            source: "met".into(),
            source_id: (first_id + i).to_string(),
            title: format!("Work {i}"),
            mapped_group: Some(if i % 2 == 0 { "French" } else { "Dutch" }.into()),
            ..Default::default()
        })
        .collect();
    c.upsert_artworks(&works).unwrap();
    c.apply_group_threshold("met", &["French".into(), "Dutch".into()]).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::FlagReason;

    fn catalog(n: usize) -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        fill_test_catalog(&mut c, n, 500);
        (dir, c)
    }

    fn loaded(c: &mut Catalog, filters: Filters) -> Vec<Artwork> {
        match execute(c, Request::Load { token: 1, filters, scores: Scores::default() }) {
            Some(Reply::Loaded { items, index, .. }) => {
                assert!(items.iter().enumerate().all(|(i, a)| index[&a.id] == i));
                items
            }
            _ => panic!("no list"),
        }
    }

    #[test]
    fn loads_flags_and_undoes_against_the_catalog() {
        let (_d, mut c) = catalog(6);
        let all = loaded(&mut c, Filters::default());
        assert_eq!(all.len(), 6);
        let dutch = loaded(&mut c, Filters { culture: Some("Dutch".into()), ..Default::default() });
        assert_eq!(dutch.len(), 3);
        let changes: Vec<FlagChange> = all[..2]
            .iter()
            .map(|a| FlagChange { artwork_id: a.id, reason: Some(FlagReason::Book), note: None })
            .collect();
        let Some(Reply::Flagged { changes: done, stats, .. }) = execute(&mut c, Request::Flag { token: 2, changes })
        else {
            panic!("not flagged")
        };
        assert_eq!((done.len(), stats.unwrap().total_final), (2, 4));
        let flagged = loaded(&mut c, Filters { flag: FlagFilter::Flagged, ..Default::default() });
        assert_eq!(flagged.len(), 2);
        let Some(Reply::Undone { changed, .. }) = execute(&mut c, Request::Undo { token: 3, redo: false }) else {
            panic!("not undone")
        };
        assert_eq!(changed.len(), 2);
        assert!(changed.iter().all(|(_, s)| s.reason.is_none()));
    }

    #[test]
    fn a_refused_write_comes_back_with_its_changes() {
        let (_d, mut c) = catalog(2);
        let changes = vec![FlagChange { artwork_id: 999_999, reason: Some(FlagReason::Other), note: None }];
        let Some(Reply::Failed { error, changes, .. }) = execute(&mut c, Request::Flag { token: 1, changes }) else {
            panic!("accepted a flag of an unknown work")
        };
        assert!(error.starts_with("not saved:") && error.contains("999999"), "{error}");
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn suspicious_order_puts_the_highest_score_first() {
        let (_d, mut c) = catalog(4);
        let ids: Vec<i64> = loaded(&mut c, Filters::default()).iter().map(|a| a.id).collect();
        let scores: Scores = Arc::new([(ids[2], 0.9), (ids[0], 0.1)].into());
        let filters = Filters { sort: Sort::Suspicious, ..Default::default() };
        let Some(Reply::Loaded { items, .. }) = execute(&mut c, Request::Load { token: 1, filters, scores }) else {
            panic!()
        };
        assert_eq!(items.iter().map(|a| a.id).collect::<Vec<_>>(), vec![ids[2], ids[0], ids[1], ids[3]]);
    }
}
