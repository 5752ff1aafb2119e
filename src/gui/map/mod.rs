//! The Culture map view: the cultures' mean embeddings laid out by ForceAtlas2 (draggable, the
//! layout continuing from where a node is dropped; zoom and pan; hover for counts and three
//! works; click for the nearest cultures), the chord diagram of the top-quartile similarities,
//! the distance and similarity matrices as heat maps (exportable), and a PCA of every work.
//! State and its transitions live in `state.rs`, the background work in `job.rs`, drawing in
//! `force.rs` (the map) and `draw.rs` (the other tabs); this file ties them to the frame.
mod draw;
mod force;
mod job;
mod state;

pub use state::{MapData, MapState, Tab};

use super::jobs::Job;
use super::shared::Shared;
use super::thumbs::ThumbCache;
use draw::legend_cultures;
use egui::Color32;

#[derive(Default)]
pub struct MapView {
    pub state: MapState,
    job: Option<Job<MapData>>,
    thumbs: Option<ThumbCache>,
    /// The first visit computes the selected run's map by itself, once.
    auto_started: bool,
}

fn to_color(c: [u8; 3]) -> Color32 {
    Color32::from_rgb(c[0], c[1], c[2])
}

impl MapView {
    pub fn compute(&mut self, shared: &Shared) {
        self.job = Some(job::spawn_map(shared));
    }

    pub fn job_idle(&self) -> bool {
        self.job.is_none()
    }

    fn poll(&mut self) {
        if let Some(r) = self.job.as_mut().and_then(|job| job.poll()) {
            self.job = None;
            self.state.finish(r);
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        self.poll();
        let thumbs = self.thumbs.get_or_insert_with(|| ThumbCache::new(ui.ctx(), 1, 60));
        thumbs.poll(ui.ctx());
        if !self.auto_started && self.state.data.is_none() && self.job.is_none() && shared.selected_run.is_some() {
            self.auto_started = true;
            self.compute(shared);
        }
        ui.horizontal_wrapped(|ui| {
            if ui.add_enabled(self.job.is_none(), egui::Button::new("Compute from the selected run")).clicked() {
                self.compute(shared);
            }
            for (t, name) in [
                (Tab::Force, "ForceAtlas2 map"),
                (Tab::Chord, "Chord diagram"),
                (Tab::Matrices, "Distances & similarities"),
                (Tab::Works, "Works (PCA)"),
            ] {
                ui.selectable_value(&mut self.state.tab, t, name);
            }
            if let Some(job) = &self.job {
                ui.spinner();
                ui.label(&job.message);
            }
        });
        if let Some(e) = &self.state.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let Some(d) = &self.state.data else {
            let failed = self.state.error.is_some();
            ui.label(state::status_text(self.job.is_some(), !shared.runs.is_empty(), failed));
            return;
        };
        ui.label(format!("Cultures as the best model of run {} sees them, {} works.", d.run_name, d.ids.len()));
        let thumbs = self.thumbs.as_mut();
        match self.state.tab {
            Tab::Force => force::force_ui(&mut self.state, thumbs, ui, shared),
            Tab::Chord => draw::chord_ui(&mut self.state, ui),
            Tab::Matrices => draw::matrices_ui(&self.state, ui, shared),
            Tab::Works => draw::works_ui(&self.state, thumbs, ui, shared),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::gui::View;
    use crate::gui::app::tests::{fixed_picker, harness, run_until};
    use egui_kittest::kittest::Queryable;

    #[test]
    fn the_status_says_what_is_happening_not_train_a_run_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(dir.path(), fixed_picker(vec![]));
        h.state_mut().view = View::Map;
        h.run_steps(2);
        h.get_by_label_contains("Train a run first");
        // A run without a checkpoint (it failed before its first epoch): the map is tried, and
        // its failure is what the view says.
        {
            let mut ws = crate::workspace::Workspace::open(dir.path()).unwrap();
            ws.catalog.create_run("early", "resnet50", "finetune", "StepLR", "{}", &[]).unwrap();
        }
        h.state_mut().shared.generation += 1;
        h.state_mut().shared.selected_run = Some("early".into());
        h.state_mut().shared.runs = crate::workspace::Workspace::open(dir.path()).unwrap().catalog.runs().unwrap();
        run_until(&mut h, |app| app.map.state.error.is_some() && app.map.job_idle());
        h.run_steps(2);
        assert!(h.query_by_label_contains("Train a run first").is_none());
        h.get_by_label_contains("could not be computed");
    }
}
