//! What every view may read and change (the workspace, the device, the runs, background jobs,
//! messages, dialogs), in its own module so the views and the shell both import it and neither
//! imports the other.
use super::jobs::Job;
use crate::catalog::RunRecord;
use crate::model::device::DeviceKind;
use crate::workspace::Workspace;
use std::path::PathBuf;
use std::sync::Arc;

/// What the user is asked to choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickKind {
    Folder,
    CsvFile,
    ImageFiles,
    CheckpointFile,
    SaveCsv,
    SavePng,
}

/// Asks the user for paths; injected so tests never open a dialog. Always called off the UI
/// thread. An empty answer means "cancelled".
pub type Picker = Arc<dyn Fn(PickKind) -> Vec<PathBuf> + Send + Sync>;

pub fn rfd_picker() -> Picker {
    Arc::new(|kind| {
        let d = rfd::FileDialog::new();
        match kind {
            PickKind::Folder => d.pick_folder().into_iter().collect(),
            PickKind::CsvFile => d.add_filter("CSV", &["csv"]).pick_file().into_iter().collect(),
            PickKind::ImageFiles => d
                .add_filter("Images", &["jpg", "jpeg", "png", "webp", "tif", "tiff", "gif", "bmp"])
                .pick_files()
                .unwrap_or_default(),
            PickKind::CheckpointFile => d.add_filter("Checkpoint", &["safetensors"]).pick_file().into_iter().collect(),
            PickKind::SaveCsv => d.add_filter("CSV", &["csv"]).save_file().into_iter().collect(),
            PickKind::SavePng => d.add_filter("PNG", &["png"]).save_file().into_iter().collect(),
        }
    })
}

/// A dialog running on its own thread; the view polls it each frame.
pub struct PendingPick(std::sync::mpsc::Receiver<Vec<PathBuf>>);

impl PendingPick {
    /// The answer once the user has chosen (an empty list if they cancelled).
    pub fn try_take(&self) -> Option<Vec<PathBuf>> {
        self.0.try_recv().ok()
    }
}

/// What every view may read and change.
pub struct Shared {
    pub ws_path: PathBuf,
    pub ws: Option<Workspace>,
    pub ws_error: Option<String>,
    pub device: DeviceKind,
    pub devices: Vec<DeviceKind>,
    pub runs: Vec<RunRecord>,
    pub selected_run: Option<String>,
    pub jobs: Vec<Job<String>>,
    /// Results of finished jobs, newest last, shown in the status bar.
    pub messages: Vec<String>,
    /// Bumped whenever the catalog changed (here or in another process): views reload.
    pub generation: u64,
    pub picker: Picker,
    pub ctx: egui::Context,
    /// A work another view asked the Curation view to show.
    pub focus_artwork: Option<i64>,
    /// An image another view asked the Predict view to predict.
    pub predict_request: Option<PathBuf>,
    /// How the Dataset view reaches The Met (its live service; tests point it at a stand-in).
    pub met_options: crate::ingest::met_api::DownloadOptions,
}

impl Shared {
    /// Starts a job whose result is a message for the status bar; the views reload after it.
    pub fn spawn(
        &mut self,
        name: &str,
        work: impl FnOnce(&super::jobs::Reporter<String>) -> Result<String, String> + Send + 'static,
    ) {
        self.jobs.push(Job::spawn(&self.ctx, name, work));
    }

    /// Opens a dialog off the UI thread.
    pub fn ask(&self, kind: PickKind) -> PendingPick {
        let (tx, rx) = std::sync::mpsc::channel();
        let (picker, ctx) = (self.picker.clone(), self.ctx.clone());
        std::thread::spawn(move || {
            let _ = tx.send(picker(kind));
            ctx.request_repaint();
        });
        PendingPick(rx)
    }

    pub fn busy(&self, name: &str) -> bool {
        self.jobs.iter().any(|j| j.name == name)
    }

    pub(super) fn reload_runs(&mut self) {
        if let Some(ws) = &self.ws {
            self.runs = crate::train::run_status::runs_with_live_status(ws).unwrap_or_default();
            if self.selected_run.is_none() {
                self.selected_run = ws.catalog.best_run().ok().flatten().map(|r| r.id);
            }
        }
    }
}
