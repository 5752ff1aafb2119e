//! The Curation view's one-off jobs (its catalog reads and flag writes go through `worker.rs`):
//! ranking the works by suspicion and exporting the curation as CSV.
use crate::gui::jobs::Job;
use crate::gui::shared::{PickKind, Shared};

pub use crate::analysis::rank::Ranking;

/// Ranks the works with the selected run's model, or by image statistics when there is none.
pub fn spawn_suspicion(shared: &Shared) -> Job<Ranking> {
    let (ws_path, run, device) = (shared.ws_path.clone(), shared.selected_run.clone(), shared.device);
    Job::spawn(&shared.ctx, "Rank suspicious works", move |rep| {
        let ws = crate::workspace::Workspace::open(&ws_path).map_err(|e| e.to_string())?;
        let device = device.open().map_err(|e| e.to_string())?;
        crate::analysis::rank::rank(&ws, run.as_deref(), &device, &|f, m| rep.progress(f, m))
    })
}

/// What to sort the grid by similarity to.
#[derive(Debug, Clone)]
pub enum ClipQuery {
    Text(String),
    Works(Vec<i64>),
}

/// CLIP loaded once for the view's queries, with the index of the catalog generation it was
/// built for: after the first query, "more like this" and search cost only the query itself.
pub struct ClipSession {
    pub ws_path: std::path::PathBuf,
    pub weights: std::path::PathBuf,
    pub model: crate::model::clip::ClipModel,
    pub tok: crate::model::clip::Tokenizer,
    /// The catalog generation `index` was built for (rebuilt from the cache when it changes).
    pub generation: u64,
    pub index: std::sync::Arc<crate::analysis::clip_works::WorkIndex>,
}

pub type SharedClipSession = std::sync::Arc<std::sync::Mutex<Option<ClipSession>>>;

/// Every work's CLIP similarity to a query (embeddings computed first where missing, with
/// progress, and cached): artwork id -> cosine.
pub fn spawn_clip_query(
    shared: &Shared,
    session: &SharedClipSession,
    query: ClipQuery,
) -> Job<std::collections::HashMap<i64, f64>> {
    use crate::analysis::clip_works;
    let (ws_path, device, generation) = (shared.ws_path.clone(), shared.device, shared.generation);
    let session = session.clone();
    let title = match &query {
        ClipQuery::Text(t) => format!("Search {t:?}"),
        ClipQuery::Works(ids) => format!("More like {} works", ids.len()),
    };
    Job::spawn(&shared.ctx, &title, move |rep| {
        let device = device.open().map_err(|e| e.to_string())?;
        let mut guard = session.lock().map_err(|_| "CLIP session poisoned".to_string())?;
        if guard.as_ref().is_none_or(|s| s.ws_path != ws_path) {
            let files = crate::model::clip::hub::cached()
                .ok_or("CLIP is not fetched: run `artculture weights fetch clip` once while online")?;
            rep.progress(0.0, "loading CLIP".to_string());
            let (model, tok) = files.load(&device).map_err(|e| e.to_string())?;
            let index = std::sync::Arc::new(clip_works::WorkIndex::default());
            let weights = files.weights.clone();
            *guard = Some(ClipSession { ws_path: ws_path.clone(), weights, model, tok, generation: u64::MAX, index });
        }
        let s = guard.as_mut().ok_or("CLIP session missing")?;
        if s.generation != generation {
            let ws = crate::workspace::Workspace::open(&ws_path).map_err(|e| e.to_string())?;
            let control = crate::train::Control::default();
            let started = std::time::Instant::now();
            let index = clip_works::embed_all(&ws, &s.model, &s.weights, &device, &control, &mut |d, n| {
                rep.progress(d as f32 / n.max(1) as f32, clip_works::progress_line(started, d, n))
            })
            .map_err(|e| e.to_string())?;
            (s.index, s.generation) = (std::sync::Arc::new(index), generation);
        }
        query_scores(s, &query, &device)
    })
}

fn query_scores(
    s: &ClipSession,
    query: &ClipQuery,
    device: &candle_core::Device,
) -> Result<std::collections::HashMap<i64, f64>, String> {
    let hits = match query {
        ClipQuery::Text(t) => {
            let q = crate::analysis::clip_works::text_query(&s.model, &s.tok, t, device).map_err(|e| e.to_string())?;
            s.index.nearest(&q, s.index.len(), &[])
        }
        ClipQuery::Works(ids) => {
            let mut hits =
                s.index.similar(ids, s.index.len()).map_err(|_| "the selected works have no image".to_string())?;
            // The selection itself leads the list.
            hits.extend(ids.iter().map(|id| (*id, 2.0)));
            hits
        }
    };
    Ok(hits.into_iter().map(|(id, s)| (id, s as f64)).collect())
}

/// Asks where to save, then writes every grouped work with its flag atomically.
pub fn export_csv(shared: &mut Shared) {
    let (picker, ws_path) = (shared.picker.clone(), shared.ws_path.clone());
    shared.spawn("Export curation", move |_| {
        let Some(out) = picker(PickKind::SaveCsv).into_iter().next() else { return Ok("cancelled".into()) };
        let ws = crate::workspace::Workspace::open(&ws_path).map_err(|e| e.to_string())?;
        let works = ws
            .catalog
            .artworks(&crate::catalog::ArtworkQuery { grouped_only: true, ..Default::default() })
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        crate::catalog::write_curation_csv(&works, &mut buf).map_err(|e| e.to_string())?;
        crate::fsutil::write_bytes_atomic(&out, &buf).map_err(|e| e.to_string())?;
        Ok(format!("{} works written to {}", works.len(), out.display()))
    });
}
