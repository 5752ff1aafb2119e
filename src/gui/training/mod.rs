//! The Training view: a form with every option and the study's Table 2 presets; Start, Pause,
//! Resume, Cancel; live plots of loss (raw per batch with a smoothed line over it, per-epoch train
//! and validation), accuracy and learning rate; the runs table with side-by-side curves; a
//! confusion matrix; export of a run's metrics as CSV. The live run's state lives in `state.rs`,
//! the background work in `job.rs`, drawing in `form.rs`, `plots.rs` and `runs.rs`; this file
//! ties them to the frame.
use super::shared::Shared;
use crate::catalog::EpochMetrics;
use crate::train::metrics::Evaluation;
use crate::train::{Control, TrainConfig, TrainEvent};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

mod form;
mod job;
mod plots;
mod runs;
mod state;
pub use plots::{lr_tick, smooth};
pub use state::LiveRun;

pub struct TrainingView {
    pub cfg: TrainConfig,
    pretrained_text: String,
    preset: usize,
    /// The user picked a preset (the view then never picks one for them).
    preset_chosen: bool,
    pub live: LiveRun,
    events: Option<Receiver<Result<TrainEvent, String>>>,
    control: Option<Arc<Control>>,
    smoothing: f64,
    compare: BTreeSet<String>,
    compared: Vec<(String, Vec<EpochMetrics>)>,
    sort_by: usize,
    confusion: Option<(String, Evaluation)>,
    confusion_job: Option<super::jobs::Job<Evaluation>>,
    loaded_generation: Option<u64>,
    pub last_error: Option<String>,
}

impl Default for TrainingView {
    fn default() -> Self {
        Self {
            cfg: TrainConfig::default(),
            pretrained_text: "hub".into(),
            // The study's fine-tuning row with StepLR, which `TrainConfig::default()` is.
            preset: 2,
            preset_chosen: false,
            live: LiveRun::default(),
            events: None,
            control: None,
            smoothing: 0.6,
            compare: BTreeSet::new(),
            compared: Vec::new(),
            sort_by: 0,
            confusion: None,
            confusion_job: None,
            loaded_generation: None,
            last_error: None,
        }
    }
}

impl TrainingView {
    pub fn running(&self) -> bool {
        self.events.is_some()
    }

    /// Starts a new run (or resumes `resume`) as a background job: it shows in the status bar
    /// (where it can be cancelled too), streams its events to this view, and a panic in it
    /// becomes an error message here while the trainer marks the run *failed*.
    pub fn start(&mut self, shared: &mut Shared, resume: Option<String>) {
        if let Err(e) = self.cfg.validate()
            && resume.is_none()
        {
            self.last_error = Some(e.to_string());
            return;
        }
        let (events, control) = job::spawn_training(shared, self.cfg.clone(), resume);
        self.live = LiveRun { total_epochs: self.cfg.epochs, ..Default::default() };
        self.events = Some(events);
        self.control = Some(control);
        self.last_error = None;
    }

    fn poll(&mut self, shared: &mut Shared) {
        let Some(rx) = &self.events else { return };
        let mut ended = false;
        loop {
            let step = match rx.try_recv() {
                Ok(e) => self.live.apply(e),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    state::Step::Ended(self.last_error.is_none().then(|| self.live.vanished()).flatten())
                }
            };
            match step {
                state::Step::Continue => {}
                state::Step::EpochDone => shared.generation += 1,
                state::Step::Ended(error) => {
                    if error.is_some() {
                        self.last_error = error;
                    }
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            self.events = None;
            self.control = None;
            shared.generation += 1;
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        self.poll(shared);
        if self.loaded_generation != Some(shared.generation) {
            self.loaded_generation = Some(shared.generation);
            // A workspace holding only the built-in sample and no runs yet: offer the demo.
            if !self.preset_chosen
                && shared.runs.is_empty()
                && let Some(ws) = &shared.ws
                && let Ok((all, sample)) = ws.catalog.count_with_source(crate::catalog::SAMPLE_SOURCE)
                && all > 0
                && all == sample
            {
                self.choose_preset(0);
            }
            if !self.running()
                && let (Some(ws), Some(run)) = (&shared.ws, &shared.selected_run)
            {
                // When this window is not training, show the selected run's curves; a run that
                // the CLI is training grows here epoch by epoch (each epoch is a catalog commit).
                if self.live.run_id.as_ref() != Some(run) {
                    self.live = LiveRun::default();
                }
                self.live.epochs = ws.catalog.epoch_metrics(run).unwrap_or_default();
                self.live.batches = ws.catalog.batch_metrics(run).unwrap_or_default();
                self.live.run_id = Some(run.clone());
                self.live.total_epochs = shared
                    .runs
                    .iter()
                    .find(|r| &r.id == run)
                    .and_then(|r| serde_json::from_str::<TrainConfig>(&r.config).ok())
                    .map(|c| c.epochs)
                    .unwrap_or(0);
            }
        }
        let runs: Vec<String> = shared.runs.iter().map(|r| r.id.clone()).collect();
        egui::Panel::left("train_form_panel").default_size(330.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                ui.add_enabled_ui(!self.running(), |ui| self.form(ui, &runs));
                ui.separator();
                self.controls(ui, shared);
            });
        });
        egui::Panel::bottom("runs_panel").default_size(260.0).min_size(220.0).resizable(true).show(ui, |ui| {
            // The runs table and the confusion matrix scroll both ways, with bars that are always
            // there, so a column past the edge is never hidden without a sign of it (egui's
            // default floating bars are invisible until hovered).
            ui.spacing_mut().scroll = egui::style::ScrollStyle::solid();
            egui::ScrollArea::both()
                .auto_shrink(false)
                .scroll_bar_visibility(egui::scroll_area::ScrollBarVisibility::AlwaysVisible)
                .show(ui, |ui| {
                    self.runs_table(ui, shared);
                    self.confusion_ui(ui);
                });
        });
        egui::CentralPanel::default().show(ui, |ui| self.plots(ui));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::BatchMetrics;

    use crate::gui::View;
    use crate::gui::app::tests::{fixed_picker, harness, run_until};
    use egui_kittest::kittest::Queryable;

    #[test]
    fn bad_options_disable_start_and_a_failed_run_is_reported_in_the_view_and_status_bar() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(dir.path(), fixed_picker(vec![]));
        h.state_mut().view = View::Training;
        h.run_steps(2);
        // The form's fields keep values in range; a combination can still be wrong.
        h.state_mut().training.cfg.sgd.momentum = 0.0;
        h.state_mut().training.cfg.sgd.nesterov = true;
        h.run_steps(2);
        h.get_by_label_contains("--nesterov needs --momentum above 0");
        // Start refuses it even when called directly.
        let app = h.state_mut();
        app.training.start(&mut app.shared, None);
        assert!(!h.state().training.running());
        h.state_mut().training.cfg.sgd.nesterov = false;
        let app = h.state_mut();
        app.training.start(&mut app.shared, None);
        assert!(h.state().shared.busy("Training"), "training is a status-bar job");
        run_until(&mut h, |app| !app.training.running() && !app.shared.busy("Training"));
        h.run_steps(2);
        let err = h.state().training.last_error.clone().unwrap_or_default();
        assert!(err.contains("at least two cultures"), "{err}");
        // Shown twice: in the view and in the status bar.
        assert_eq!(h.get_all_by_label_contains("at least two cultures").count(), 2);
        assert!(h.state().shared.messages.last().is_some_and(|m| m.starts_with("Training failed")));
    }

    #[test]
    fn choosing_clip_sets_the_one_way_it_trains() {
        let mut c = TrainConfig { method: crate::train::Method::FineTune, image_size: 64, ..Default::default() };
        super::form::choose_arch(&mut c, crate::model::Arch::ClipVitB32);
        assert_eq!((c.method, c.image_size), (crate::train::Method::Transfer, 224));
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        super::form::choose_arch(&mut c, crate::model::Arch::Alexnet);
        assert_eq!((c.arch, c.method), (crate::model::Arch::Alexnet, crate::train::Method::Transfer));
    }

    #[test]
    fn precision_is_chosen_in_the_form_and_clip_keeps_f32() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(dir.path(), fixed_picker(vec![]));
        h.state_mut().view = View::Training;
        h.run_steps(2);
        h.get_by_label("Precision");
        // A combo box shows its choice as its value.
        h.get_by_value("f32").click();
        h.run_steps(2);
        h.get_by_label("bf16").click();
        h.run_steps(2);
        assert_eq!(h.state().training.cfg.precision, crate::model::autocast::Precision::Bf16);
        assert!(h.state().training.cfg.validate().is_ok());
        super::form::choose_arch(&mut h.state_mut().training.cfg, crate::model::Arch::ClipVitB32);
        assert_eq!(h.state().training.cfg.precision, crate::model::autocast::Precision::F32);
    }

    #[test]
    fn a_run_trained_by_another_process_is_followed_with_its_pace_and_time_left() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig { epochs: 3, ..Default::default() };
        {
            let mut ws = crate::workspace::Workspace::open(dir.path()).unwrap();
            let config = serde_json::to_string(&cfg).unwrap();
            ws.catalog.create_run("cli-run", "resnet50", "finetune", "step", &config, &[]).unwrap();
            let b = |batch, elapsed_s| BatchMetrics {
                epoch: 1,
                batch,
                batches: 10,
                loss: 2.0,
                lr: 0.01,
                images_per_s: 3.5,
                elapsed_s,
            };
            ws.catalog.record_batches("cli-run", &[b(1, 2.0), b(2, 4.0)]).unwrap();
        }
        // The CLI holds the run's lock while it trains.
        let lock_dir = dir.path().join("runs").join("cli-run");
        std::fs::create_dir_all(&lock_dir).unwrap();
        let lock = std::fs::File::create(lock_dir.join("train.lock")).unwrap();
        lock.try_lock().unwrap();
        let mut h = harness(dir.path(), fixed_picker(vec![]));
        h.state_mut().view = View::Training;
        h.state_mut().shared.selected_run = Some("cli-run".into());
        h.state_mut().shared.generation += 1;
        h.run_steps(3);
        assert_eq!(h.state().training.live.batches.len(), 2, "batches read from the catalog");
        // 2 s a batch: 8 batches of this epoch and 2 more epochs of 10.
        h.get_by_label_contains("epoch 1, batch 2/10 (trained by another process)");
        h.get_by_label_contains("3.5 img/s  ·  56 s left");
    }

    #[test]
    fn the_learning_rate_axis_is_logarithmic() {
        assert_eq!((lr_tick(-3.0), lr_tick(-2.5), lr_tick(0.0)), ("1e-3".into(), String::new(), "1e0".into()));
    }

    #[test]
    fn smoothing_is_an_ema() {
        let s = smooth(&[[0.0, 1.0], [1.0, 0.0], [2.0, 0.0]], 0.5);
        assert_eq!(s, vec![[0.0, 1.0], [1.0, 0.5], [2.0, 0.25]]);
    }
}
