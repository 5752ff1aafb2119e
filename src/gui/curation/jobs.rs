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

/// Every work's CLIP similarity to a query (embeddings computed first where missing, with
/// progress, and cached): artwork id -> cosine.
pub fn spawn_clip_query(shared: &Shared, query: ClipQuery) -> Job<std::collections::HashMap<i64, f64>> {
    let (ws_path, device) = (shared.ws_path.clone(), shared.device);
    let title = match &query {
        ClipQuery::Text(t) => format!("Search {t:?}"),
        ClipQuery::Works(ids) => format!("More like {} works", ids.len()),
    };
    Job::spawn(&shared.ctx, &title, move |rep| {
        let ws = crate::workspace::Workspace::open(&ws_path).map_err(|e| e.to_string())?;
        let device = device.open().map_err(|e| e.to_string())?;
        let files = crate::model::clip::hub::cached()
            .ok_or("CLIP is not fetched: run `artculture weights fetch clip` once while online")?;
        rep.progress(0.0, "loading CLIP".to_string());
        let (model, tok) = files.load(&device).map_err(|e| e.to_string())?;
        let control = crate::train::Control::default();
        let index =
            crate::analysis::clip_works::embed_all(&ws, &model, &files.weights, &device, &control, &mut |d, n| {
                rep.progress(d as f32 / n.max(1) as f32, format!("CLIP: embedding {d} / {n} works"))
            })
            .map_err(|e| e.to_string())?;
        let hits = match query {
            ClipQuery::Text(t) => {
                let q =
                    crate::analysis::clip_works::text_query(&model, &tok, &t, &device).map_err(|e| e.to_string())?;
                index.nearest(&q, index.len(), &[])
            }
            ClipQuery::Works(ids) => {
                let mut hits =
                    index.similar(&ids, index.len()).map_err(|_| "the selected works have no image".to_string())?;
                // The selection itself leads the list.
                hits.extend(ids.iter().map(|id| (*id, 2.0)));
                hits
            }
        };
        Ok(hits.into_iter().map(|(id, s)| (id, s as f64)).collect())
    })
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
