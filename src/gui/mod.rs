//! The desktop app: one window, a top bar (workspace, device, run), five views and a status
//! bar with background jobs. UI code lives here; state changes go through the library; long
//! work runs in [`jobs`].
pub mod app;
pub mod curation;
pub mod dataset;
pub mod jobs;
pub mod map;
pub mod met_job;
pub mod predict;
pub mod settings;
pub mod shared;
pub mod thumbs;
pub mod training;
pub mod widgets;

use crate::model::device::DeviceKind;
use std::path::PathBuf;

pub use app::ArtApp;

/// The five views, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum View {
    #[default]
    Dataset,
    Curation,
    Training,
    Predict,
    Map,
}

impl View {
    pub const ALL: [View; 5] = [View::Dataset, View::Curation, View::Training, View::Predict, View::Map];

    pub fn title(self) -> &'static str {
        match self {
            View::Dataset => "Dataset",
            View::Curation => "Curation",
            View::Training => "Training",
            View::Predict => "Predict",
            View::Map => "Culture map",
        }
    }

    /// The name used on the command line (`scripts/screenshot VIEW`, `ARTCULTURE_VIEW`).
    pub fn cli_name(self) -> &'static str {
        match self {
            View::Dataset => "dataset",
            View::Curation => "curation",
            View::Training => "training",
            View::Predict => "predict",
            View::Map => "map",
        }
    }

    pub fn from_cli_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.cli_name() == s.trim().to_lowercase())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuiError {
    #[error(transparent)]
    Workspace(#[from] crate::workspace::WorkspaceError),
    #[error("the window could not be opened: {0}")]
    Window(String),
}

/// Opens the app, on the Predict view with `open` when it names images or folders (`artculture
/// IMAGE...`, as a file manager runs it). `ARTCULTURE_VIEW` chooses the first view (used by
/// `scripts/screenshot`).
pub fn run_app(workspace: Option<PathBuf>, device: DeviceKind, open: Vec<PathBuf>) -> Result<(), GuiError> {
    let settings_path = settings::Settings::default_path();
    let mut settings = settings::Settings::load(settings_path.as_ref());
    if let Some(v) = std::env::var("ARTCULTURE_VIEW").ok().as_deref().and_then(View::from_cli_name) {
        settings.view = v;
    }
    let ws_path = match workspace.or_else(|| settings.workspace.clone()) {
        Some(p) => p,
        None => crate::workspace::default_dir()?,
    };
    let size = settings.window_size;
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size(size)
            .with_min_inner_size([720.0, 480.0])
            .with_title("artculture"),
        ..Default::default()
    };
    eframe::run_native(
        "artculture",
        options,
        Box::new(move |cc| {
            let mut app = ArtApp::new(&cc.egui_ctx, ws_path, device, settings, settings_path, shared::rfd_picker());
            // Images to predict at start (`ARTCULTURE_OPEN`, paths separated by ':'), as
            // `scripts/screenshot predict --open IMAGE` uses.
            let mut open = open;
            if let Ok(paths) = std::env::var("ARTCULTURE_OPEN") {
                open.extend(std::env::split_paths(&paths));
            }
            app.open_paths(open);
            // The Culture map's tab (`ARTCULTURE_MAP_TAB`: force, chord, matrices, works).
            if let Ok(tab) = std::env::var("ARTCULTURE_MAP_TAB") {
                app.map.state.tab = match tab.as_str() {
                    "chord" => map::Tab::Chord,
                    "matrices" => map::Tab::Matrices,
                    "works" => map::Tab::Works,
                    _ => map::Tab::Force,
                };
            }
            // The Curation view ranks at start (`ARTCULTURE_CURATION=rank`), as
            // `scripts/screenshot curation --rank` uses to show CLIP's suggestions.
            if std::env::var("ARTCULTURE_CURATION").is_ok_and(|v| v == "rank") {
                app.curation.start_ranking(&app.shared);
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| GuiError::Window(e.to_string()))
}
