//! The Training view: a form with every option and the study's Table 2 presets; Start, Pause,
//! Resume, Cancel; live plots of loss (raw per batch with a smoothed line over it, per-epoch train
//! and validation), accuracy and learning rate; the runs table with side-by-side curves; a
//! confusion matrix; export of a run's metrics as CSV.
use super::shared::{PickKind, Shared};
use crate::catalog::{BatchMetrics, EpochMetrics, RunRecord};
use crate::train::metrics::Evaluation;
use crate::train::{Control, TrainConfig, TrainEvent};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

mod form;
mod plots;
pub use plots::{lr_tick, smooth};

/// Live series of the run in progress.
#[derive(Default)]
pub struct LiveRun {
    pub run_id: Option<String>,
    /// Every batch so far: streamed by a run this window trains, read from the catalog for a
    /// run another process trains (it writes them every ~2 s) or one reopened later.
    pub batches: Vec<BatchMetrics>,
    pub epochs: Vec<EpochMetrics>,
    pub message: String,
    pub paused: bool,
    pub total_epochs: u32,
}

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
        let (tx, rx) = std::sync::mpsc::channel();
        let control = Arc::new(Control::default());
        let (ws_path, device, ctx, cfg) = (shared.ws_path.clone(), shared.device, shared.ctx.clone(), self.cfg.clone());
        let ctl = control.clone();
        let name = if resume.is_some() { "Resume training" } else { "Training" };
        shared.spawn(name, move |reporter| {
            let send = |e: Result<TrainEvent, String>| {
                let _ = tx.send(e);
                ctx.request_repaint();
            };
            let (mut epoch_total, mut epoch_now) = (cfg.epochs.max(1), 0u32);
            let work = std::panic::AssertUnwindSafe(|| {
                let dev = device.open().map_err(|e| e.to_string())?;
                let mut on_event = |e: TrainEvent| {
                    // The status bar's Cancel reaches the trainer through its control.
                    if reporter.cancelled() {
                        ctl.cancel.store(true, Ordering::Relaxed);
                    }
                    match &e {
                        TrainEvent::Started { epochs, first_epoch, .. } => {
                            (epoch_total, epoch_now) = ((*epochs).max(1), first_epoch.saturating_sub(1));
                        }
                        TrainEvent::Batch(b) => {
                            let f = b.x() as f32 / epoch_total as f32;
                            reporter.progress(
                                f,
                                format!("epoch {}/{epoch_total}, batch {}/{}", b.epoch, b.batch, b.batches),
                            );
                        }
                        TrainEvent::Epoch(m) => epoch_now = m.epoch,
                        TrainEvent::Message(m) => reporter.progress(epoch_now as f32 / epoch_total as f32, m.clone()),
                        _ => {}
                    }
                    send(Ok(e));
                };
                match &resume {
                    Some(run) => crate::train::trainer::resume(&ws_path, run, &dev, &mut on_event, &ctl),
                    None => crate::train::trainer::start(&ws_path, cfg, &dev, &mut on_event, &ctl),
                }
                .map_err(|e| e.to_string())
            });
            let result = std::panic::catch_unwind(work).unwrap_or_else(|p| {
                Err(format!(
                    "training crashed: {} (a bug: please report it)",
                    crate::train::run_status::panic_message(p.as_ref())
                ))
            });
            match result {
                Ok(run) => Ok(format!("run {run} finished")),
                Err(e) => {
                    send(Err(e.clone()));
                    Err(e)
                }
            }
        });
        self.live = LiveRun { total_epochs: self.cfg.epochs, ..Default::default() };
        self.events = Some(rx);
        self.control = Some(control);
        self.last_error = None;
    }

    fn poll(&mut self, shared: &mut Shared) {
        let Some(rx) = &self.events else { return };
        let mut finished = false;
        loop {
            let e = match rx.try_recv() {
                Ok(e) => e,
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                // The worker is gone without a last word: never leave the view "running".
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    if self.last_error.is_none() && !self.live.message.starts_with("finished") {
                        self.last_error = Some("training stopped without a result (see the status bar)".into());
                    }
                    finished = true;
                    break;
                }
            };
            match e {
                Ok(TrainEvent::Started { run_id, epochs, .. }) => {
                    self.live.run_id = Some(run_id);
                    self.live.total_epochs = epochs;
                }
                Ok(TrainEvent::Batch(b)) => {
                    self.live.message = format!("epoch {}, batch {}/{}", b.epoch, b.batch, b.batches);
                    self.live.batches.push(b);
                }
                Ok(TrainEvent::Epoch(m)) => {
                    self.live.epochs.push(m);
                    shared.generation += 1;
                }
                Ok(TrainEvent::Message(m)) => self.live.message = m,
                Ok(TrainEvent::Paused) => self.live.paused = true,
                Ok(TrainEvent::Resumed) => self.live.paused = false,
                Ok(TrainEvent::Finished { best_val_acc, top1, top3, .. }) => {
                    self.live.message = format!(
                        "finished: best val {:.1}%, test top-1 {:.1}%, top-3 {:.1}%",
                        best_val_acc * 100.0,
                        top1 * 100.0,
                        top3 * 100.0
                    );
                    finished = true;
                }
                Err(e) => {
                    self.last_error = Some(e);
                    finished = true;
                }
            }
        }
        if finished {
            self.events = None;
            self.control = None;
            shared.generation += 1;
        }
    }

    fn runs_table(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        ui.heading("Runs (Table 2)");
        let headers =
            ["run", "status", "arch", "scheduler", "method", "val %", "top-1 %", "top-3 %", "epochs", "time s"];
        let mut runs = shared.runs.clone();
        let key = |r: &RunRecord, i: usize| -> (f64, String) {
            match i {
                5 => (r.val_acc.unwrap_or(-1.0), String::new()),
                6 => (r.top1.unwrap_or(-1.0), String::new()),
                7 => (r.top3.unwrap_or(-1.0), String::new()),
                8 => (r.epochs_done as f64, String::new()),
                9 => (r.seconds, String::new()),
                1 => (0.0, r.status.as_str().to_string()),
                2 => (0.0, r.arch.clone()),
                3 => (0.0, r.scheduler.clone()),
                4 => (0.0, r.method.clone()),
                _ => (0.0, r.id.clone()),
            }
        };
        runs.sort_by(|a, b| {
            let (ka, kb) = (key(a, self.sort_by), key(b, self.sort_by));
            kb.0.total_cmp(&ka.0).then(ka.1.cmp(&kb.1))
        });
        let pct = |v: Option<f64>| {
            v.filter(|x| x.is_finite()).map(|x| format!("{:.2}", x * 100.0)).unwrap_or_else(|| "–".into())
        };
        let mut compare_changed = false;
        egui::Grid::new("runs_table").striped(true).show(ui, |ui| {
            ui.label("compare");
            for (i, h) in headers.iter().enumerate() {
                if ui.selectable_label(self.sort_by == i, *h).clicked() {
                    self.sort_by = i;
                }
            }
            ui.label("");
            ui.end_row();
            for r in &runs {
                let mut on = self.compare.contains(&r.id);
                if ui.checkbox(&mut on, "").changed() {
                    compare_changed = true;
                    if on {
                        self.compare.insert(r.id.clone())
                    } else {
                        self.compare.remove(&r.id)
                    };
                }
                let name = ui.selectable_label(shared.selected_run.as_deref() == Some(&r.id), r.display_name());
                let name = match r.origin_note() {
                    Some(note) => name.on_hover_text(note),
                    None => name,
                };
                if name.clicked() {
                    shared.selected_run = Some(r.id.clone());
                }
                // A failed run's status is in the error colour; its message on hover.
                let status = match r.status {
                    crate::catalog::RunStatus::Failed => {
                        let why = r.message.as_deref().unwrap_or("");
                        let short: String = why.chars().take(32).collect();
                        let more = if why.chars().count() > 32 { "…" } else { "" };
                        ui.colored_label(ui.visuals().error_fg_color, format!("failed: {short}{more}"))
                    }
                    s => ui.label(s.as_str()),
                };
                if let Some(m) = &r.message {
                    status.on_hover_text(m);
                }
                for v in [
                    r.arch.clone(),
                    r.scheduler.clone(),
                    r.method.clone(),
                    pct(r.val_acc),
                    pct(r.top1),
                    pct(r.top3),
                    r.epochs_done.to_string(),
                    format!("{:.0}", r.seconds),
                ] {
                    ui.label(v);
                }
                ui.horizontal(|ui| {
                    if ui.small_button("confusion").clicked() && self.confusion_job.is_none() {
                        let (ws_path, id, device) = (shared.ws_path.clone(), r.id.clone(), shared.device);
                        self.confusion_job =
                            Some(super::jobs::Job::spawn(&shared.ctx, format!("Evaluate {id}"), move |_| {
                                let ws = crate::workspace::Workspace::open(&ws_path).map_err(|e| e.to_string())?;
                                let dev = device.open().map_err(|e| e.to_string())?;
                                crate::train::evaluate::eval_run(&ws, &id, &dev).map_err(|e| e.to_string())
                            }));
                    }
                    if ui.small_button("export CSV").clicked() {
                        export_metrics(shared, &r.id, false);
                    }
                    if ui.small_button("plots PNG").clicked() {
                        export_metrics(shared, &r.id, true);
                    }
                });
                ui.end_row();
            }
        });
        if compare_changed && let Some(ws) = &shared.ws {
            self.compared =
                self.compare.iter().map(|id| (id.clone(), ws.catalog.epoch_metrics(id).unwrap_or_default())).collect();
        }
    }

    fn confusion_ui(&mut self, ui: &mut egui::Ui) {
        if let Some(job) = self.confusion_job.as_mut()
            && let Some(r) = job.poll()
        {
            let name = job.name.clone();
            self.confusion_job = None;
            match r {
                Ok(e) => self.confusion = Some((name, e)),
                Err(e) => self.last_error = Some(e),
            }
        }
        if self.confusion_job.is_some() {
            ui.spinner();
        }
        let Some((name, e)) = &self.confusion else { return };
        ui.heading(format!("{name}: test top-1 {:.1}%, top-3 {:.1}%", e.top1 * 100.0, e.top3 * 100.0));
        let max = e.confusion.iter().flatten().copied().max().unwrap_or(1).max(1) as f32;
        egui::Grid::new("confusion").spacing([2.0, 2.0]).show(ui, |ui| {
            ui.label("true \\ predicted");
            for c in &e.classes {
                super::widgets::culture_label(
                    ui,
                    c,
                    egui::RichText::new(c.chars().take(4).collect::<String>()).small(),
                )
                .on_hover_text(c);
            }
            ui.end_row();
            for (c, row) in e.classes.iter().zip(&e.confusion) {
                super::widgets::culture_label(ui, c, c);
                for &v in row {
                    super::widgets::heat_cell(ui, v as f32 / max, v.to_string(), egui::vec2(34.0, 20.0));
                }
                ui.end_row();
            }
        });
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

/// Exports a run's metrics as CSV, or its plots as PNG.
fn export_metrics(shared: &mut Shared, run: &str, png: bool) {
    let (picker, ws_path, run) = (shared.picker.clone(), shared.ws_path.clone(), run.to_string());
    shared.spawn("Export metrics", move |_| {
        let kind = if png { PickKind::SavePng } else { PickKind::SaveCsv };
        let Some(out) = picker(kind).into_iter().next() else { return Ok("cancelled".into()) };
        let ws = crate::workspace::Workspace::open(&ws_path).map_err(|e| e.to_string())?;
        let ms = ws.catalog.epoch_metrics(&run).map_err(|e| e.to_string())?;
        if png {
            let img = crate::analysis::render::metrics_png(&run, &ms);
            crate::fsutil::write_atomic(&out, |f| {
                img.write_to(&mut std::io::BufWriter::new(f), image::ImageFormat::Png).map_err(std::io::Error::other)
            })
            .map_err(|e| e.to_string())?;
            return Ok(format!("plots of {run} written to {}", out.display()));
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["epoch", "train_loss", "val_loss", "val_acc", "val_top3", "lr", "images_per_s", "seconds"])
            .map_err(|e| e.to_string())?;
        for m in &ms {
            w.serialize((m.epoch, m.train_loss, m.val_loss, m.val_acc, m.val_top3, m.lr, m.images_per_s, m.seconds))
                .map_err(|e| e.to_string())?;
        }
        let bytes = w.into_inner().map_err(|e| e.to_string())?;
        crate::fsutil::write_bytes_atomic(&out, &bytes).map_err(|e| e.to_string())?;
        Ok(format!("{} epochs of {run} written to {}", ms.len(), out.display()))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
