//! The Predict view: open paintings (dialog, drag and drop, or a typed path), see the top-3
//! cultures as bars, and where the evidence lies: the study's activation map or Grad-CAM for any
//! of the top classes, blended over the painting with an opacity slider and a legend, aligned at
//! every zoom, with the network's centre crop framed. A folder predicts into a table exported as
//! CSV. State and its transitions live in `state.rs`, the model work in `job.rs` (a job thread),
//! drawing in `draw.rs`; this file ties them to the frame.
mod draw;
mod job;
mod state;

pub use state::{Item, PredictState, Shown, error_sentence};

use super::jobs::Job;
use super::shared::{PendingPick, PickKind, Shared};
use draw::Action;
use std::path::PathBuf;

#[derive(Default)]
pub struct PredictView {
    pub state: PredictState,
    job: Option<Job<state::Results>>,
    pending: Option<(PickKind, PendingPick)>,
}

impl PredictView {
    /// Predicts these images (or folders) with the selected run or the chosen checkpoint.
    pub fn predict(&mut self, shared: &Shared, images: Vec<PathBuf>) {
        if images.is_empty() || self.job.is_some() {
            return;
        }
        let s = &self.state;
        let req = job::Request {
            images,
            checkpoint: s.checkpoint.clone(),
            run: shared.selected_run.clone(),
            cam: s.cam,
            class: s.class.clone(),
        };
        self.job = Some(job::spawn(shared, req));
    }

    fn poll(&mut self, ctx: &egui::Context) {
        if let Some(r) = self.job.as_mut().and_then(|job| job.poll()) {
            self.job = None;
            self.state.finish(r);
        }
        for it in &mut self.state.items {
            if it.textures.is_none()
                && let Ok(s) = &it.result
            {
                let name = it.path.display();
                let img = ctx.load_texture(format!("predict-{name}"), s.image.clone(), egui::TextureOptions::LINEAR);
                let map = ctx.load_texture(format!("map-{name}"), s.map.clone(), egui::TextureOptions::LINEAR);
                it.textures = Some((img, map));
            }
        }
    }

    /// Carries out what a click asked for.
    fn act(&mut self, action: Option<Action>, shared: &mut Shared) {
        match action {
            None => {}
            Some(Action::Pick(kind)) => self.pending = Some((kind, shared.ask(kind))),
            Some(Action::Predict(paths)) => self.predict(shared, paths),
            Some(Action::ExportCsv) => job::export_csv(shared, self.state.export_rows()),
        }
    }

    /// A file dialog's answer, once it comes.
    fn poll_pick(&mut self, shared: &mut Shared) {
        let Some((kind, answer)) = self.pending.as_ref().and_then(|(k, p)| p.try_take().map(|a| (*k, a))) else {
            return;
        };
        self.pending = None;
        match kind {
            PickKind::CheckpointFile => {
                self.state.checkpoint = answer.into_iter().next().or(self.state.checkpoint.take());
            }
            _ => self.predict(shared, answer),
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        self.poll(ui.ctx());
        let action = draw::toolbar(&mut self.state, ui);
        self.act(action, shared);
        self.poll_pick(shared);
        if let Some(job) = &self.job {
            let cancel = ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("predicting {}", job.message));
                ui.button("Cancel").clicked()
            });
            if cancel.inner {
                job.cancel();
            }
        }
        let mut again = None;
        egui::Panel::right("predict_side").default_size(300.0).min_size(280.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| again = draw::results_panel(&mut self.state, ui));
        });
        if let Some(path) = again {
            self.predict(shared, vec![path]);
        }
        let mut action = None;
        egui::Panel::bottom("predict_batch")
            .resizable(true)
            .show(ui, |ui| action = draw::batch_table(&mut self.state, ui));
        self.act(action, shared);
        egui::CentralPanel::default().show(ui, |ui| draw::canvas(&mut self.state, ui));
    }
}
