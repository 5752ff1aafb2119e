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
