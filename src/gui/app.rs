//! The app's shell: the top bar, the tabs and the status bar, over [`super::shared::Shared`].
use super::settings::Settings;
use super::shared::{PendingPick, PickKind, Picker, Shared};
use super::{View, curation, dataset, map, predict, training};
use crate::model::device::{self, DeviceKind};
use crate::workspace::Workspace;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct ArtApp {
    pub shared: Shared,
    pub view: View,
    settings: Settings,
    settings_path: Option<PathBuf>,
    last_version: Option<i64>,
    last_poll: Instant,
    show_about: bool,
    picking: Option<PendingPick>,
    pub dataset: dataset::DatasetView,
    pub curation: curation::CurationView,
    pub training: training::TrainingView,
    pub predict: predict::PredictView,
    pub map: map::MapView,
}

impl ArtApp {
    pub fn new(
        ctx: &egui::Context,
        ws_path: PathBuf,
        device: DeviceKind,
        settings: Settings,
        settings_path: Option<PathBuf>,
        picker: Picker,
    ) -> Self {
        let (ws, ws_error) = match Workspace::open(&ws_path) {
            Ok(ws) => (Some(ws), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mut shared = Shared {
            ws_path,
            ws,
            ws_error,
            device,
            devices: device::available(),
            runs: Vec::new(),
            selected_run: None,
            jobs: Vec::new(),
            messages: Vec::new(),
            generation: 0,
            picker,
            ctx: ctx.clone(),
            focus_artwork: None,
            predict_request: None,
            met_options: Default::default(),
        };
        shared.reload_runs();
        let last_version = shared.ws.as_ref().and_then(|ws| ws.catalog.data_version().ok());
        Self {
            view: settings.view,
            shared,
            settings,
            settings_path,
            last_version,
            last_poll: Instant::now(),
            show_about: false,
            picking: None,
            dataset: Default::default(),
            curation: Default::default(),
            training: Default::default(),
            predict: Default::default(),
            map: Default::default(),
        }
    }

    /// Switches to another workspace folder (the picker's answer).
    pub fn open_workspace(&mut self, path: PathBuf) {
        match Workspace::open(&path) {
            Ok(ws) => {
                self.shared.ws = Some(ws);
                self.shared.ws_error = None;
                self.settings.workspace = Some(path.clone());
                self.settings.save(self.settings_path.as_ref());
            }
            Err(e) => self.shared.ws_error = Some(e.to_string()),
        }
        self.shared.ws_path = path;
        self.last_version = self.shared.ws.as_ref().and_then(|ws| ws.catalog.data_version().ok());
        self.shared.selected_run = None;
        self.shared.runs.clear();
        self.shared.reload_runs();
        self.shared.generation += 1;
    }

    fn set_view(&mut self, v: View) {
        if self.view != v {
            self.view = v;
            self.settings.view = v;
            self.settings.save(self.settings_path.as_ref());
        }
    }

    /// Notices catalog changes made elsewhere (the CLI) and finished jobs.
    fn poll(&mut self) {
        let mut changed = false;
        let mut i = 0;
        while i < self.shared.jobs.len() {
            if let Some(result) = self.shared.jobs[i].poll() {
                let job = self.shared.jobs.remove(i);
                self.shared.messages.push(match result {
                    Ok(m) => format!("{}: {m}", job.name),
                    Err(e) => format!("{} failed: {e}", job.name),
                });
                changed = true;
            } else {
                i += 1;
            }
        }
        if self.last_poll.elapsed() > Duration::from_millis(500) {
            self.last_poll = Instant::now();
            if let Some(ws) = &self.shared.ws {
                let v = ws.catalog.data_version().ok();
                if v != self.last_version {
                    changed = true;
                    self.last_version = v;
                }
            }
        }
        if let Some(answer) = self.picking.as_ref().and_then(PendingPick::try_take) {
            self.picking = None;
            if let Some(p) = answer.into_iter().next() {
                self.open_workspace(p);
            }
        }
        if changed {
            self.shared.generation += 1;
            self.shared.reload_runs();
        }
        // Keep polling for other processes' changes even when idle.
        self.shared.ctx.request_repaint_after(Duration::from_millis(500));
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("artculture");
            ui.separator();
            ui.label("Workspace:");
            ui.monospace(self.shared.ws_path.display().to_string());
            if ui.button("Change…").on_hover_text("Open or create another workspace folder").clicked()
                && self.picking.is_none()
            {
                self.picking = Some(self.shared.ask(PickKind::Folder));
            }
            ui.separator();
            egui::ComboBox::from_label("Device").selected_text(self.shared.device.as_str()).show_ui(ui, |ui| {
                for d in self.shared.devices.clone() {
                    ui.selectable_value(&mut self.shared.device, d, d.as_str());
                }
            });
            ui.separator();
            let selected = self.shared.runs.iter().find(|r| Some(&r.id) == self.shared.selected_run.as_ref());
            let run_text = match (selected, &self.shared.selected_run) {
                (Some(r), _) => r.display_name(),
                (None, Some(id)) => id.clone(),
                (None, None) => "no run yet".into(),
            };
            egui::ComboBox::from_label("Run").selected_text(run_text).show_ui(ui, |ui| {
                for r in self.shared.runs.clone() {
                    let label = format!(
                        "{} ({}, {}{})",
                        r.display_name(),
                        r.arch,
                        r.method,
                        r.val_acc.map(|a| format!(", val {:.1}%", a * 100.0)).unwrap_or_default()
                    );
                    ui.selectable_value(&mut self.shared.selected_run, Some(r.id.clone()), label);
                }
            });
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.button("About").clicked() {
                    self.show_about = true;
                }
            });
        });
        ui.horizontal(|ui| {
            for (i, v) in View::ALL.into_iter().enumerate() {
                let r = ui.selectable_label(self.view == v, v.title()).on_hover_text(format!("Ctrl+{}", i + 1));
                if r.clicked() {
                    self.set_view(v);
                }
            }
        });
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if self.shared.jobs.is_empty() {
                ui.label(self.shared.messages.last().map(String::as_str).unwrap_or("Ready"));
            }
            for job in &self.shared.jobs {
                ui.label(&job.name);
                ui.add(egui::ProgressBar::new(job.fraction).desired_width(180.0).show_percentage());
                ui.label(&job.message);
                let cancel = ui.add_enabled(!job.is_cancelling(), egui::Button::new("Cancel"));
                if cancel.clicked() {
                    job.cancel();
                }
                ui.separator();
            }
        });
    }

    fn about(&mut self, ctx: &egui::Context) {
        let mut open = self.show_about;
        egui::Window::new("About artculture").open(&mut open).collapsible(false).resizable(false).show(ctx, |ui| {
            ui.label("Tells where a painting comes from.");
            ui.monospace(format!("version {}", crate::build_info::VERSION));
            ui.monospace(format!("git {}", crate::build_info::GIT_HASH));
            ui.monospace(format!("devices built in: {}", crate::build_info::DEVICE_FEATURES));
        });
        self.show_about = open;
    }

    fn shortcuts(&mut self, ui: &egui::Ui) {
        let pressed = |k| ui.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, k));
        for (k, v) in [egui::Key::Num1, egui::Key::Num2, egui::Key::Num3, egui::Key::Num4, egui::Key::Num5]
            .into_iter()
            .zip(View::ALL)
        {
            if pressed(k) {
                self.set_view(v);
            }
        }
    }

    /// Draws the whole window (used by eframe and by the tests).
    pub fn show(&mut self, ui: &mut egui::Ui) {
        self.poll();
        self.shortcuts(ui);
        let size = ui.ctx().content_rect().size();
        if (size.x - self.settings.window_size[0]).abs() > 1.0 || (size.y - self.settings.window_size[1]).abs() > 1.0 {
            // Saved when a view changes or the app closes, not on every resize frame.
            self.settings.window_size = [size.x, size.y];
        }
        egui::Panel::top("top_bar").show(ui, |ui| self.top_bar(ui));
        egui::Panel::bottom("status_bar").show(ui, |ui| self.status_bar(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            if let Some(e) = &self.shared.ws_error {
                ui.colored_label(ui.visuals().error_fg_color, format!("The workspace could not be opened: {e}"));
                ui.label("Choose another folder with “Change…” above.");
                return;
            }
            match self.view {
                View::Dataset => self.dataset.ui(ui, &mut self.shared),
                View::Curation => self.curation.ui(ui, &mut self.shared),
                View::Training => self.training.ui(ui, &mut self.shared),
                View::Predict => self.predict.ui(ui, &mut self.shared),
                View::Map => self.map.ui(ui, &mut self.shared),
            }
        });
        if let Some(id) = self.shared.focus_artwork.take() {
            self.curation.focus(id);
            self.set_view(View::Curation);
        }
        if let Some(path) = self.shared.predict_request.take() {
            self.open_paths(vec![path]);
        }
        let ctx = ui.ctx().clone();
        self.about(&ctx);
    }
}

impl ArtApp {
    /// What a file manager's "Open with artculture" hands over: images, or folders of images,
    /// predicted in the Predict view (a folder fills its table, as *Predict a folder…* does; a
    /// file that cannot be read is a row that says why).
    pub fn open_paths(&mut self, paths: Vec<PathBuf>) {
        if paths.is_empty() {
            return;
        }
        self.set_view(View::Predict);
        self.predict.predict(&self.shared, paths);
    }
}

impl eframe::App for ArtApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn on_exit(&mut self) {
        self.settings.save(self.settings_path.as_ref());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;
    use std::sync::Arc;

    /// A picker that answers every question with `answer`.
    pub(crate) fn fixed_picker(answer: Vec<PathBuf>) -> Picker {
        Arc::new(move |_| answer.clone())
    }

    pub(crate) fn harness(ws: &std::path::Path, picker: Picker) -> Harness<'static, ArtApp> {
        let ws = ws.to_path_buf();
        Harness::builder()
            .with_size([1280.0, 800.0])
            .build_eframe(move |cc| ArtApp::new(&cc.egui_ctx, ws, DeviceKind::Cpu, Settings::default(), None, picker))
    }

    /// Runs frames until `done` holds (background threads need real time), at most 10 s.
    pub(crate) fn run_until(h: &mut Harness<'static, ArtApp>, mut done: impl FnMut(&ArtApp) -> bool) {
        let start = Instant::now();
        while !done(h.state()) {
            assert!(start.elapsed() < Duration::from_secs(10), "condition not reached in 10 s");
            std::thread::sleep(Duration::from_millis(20));
            h.step();
        }
    }

    /// A random 3-culture AlexNet checkpoint at 64 px (the Predict view needs some model).
    fn random_checkpoint(path: &std::path::Path) {
        use candle_core::{DType, Device};
        let map = candle_nn::VarMap::new();
        let vb = crate::model::init::seeded_var_builder(&map, 0, DType::F32, &Device::Cpu);
        let arch = crate::model::Arch::Alexnet;
        crate::model::CultureNet::new(arch, 0.5, [32, 16], 3, vb).unwrap();
        let tensors = map.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
        let meta = crate::model::checkpoint::CheckpointMeta {
            format: crate::model::checkpoint::FORMAT_VERSION,
            arch,
            classes: vec!["Dutch".into(), "French".into(), "Japanese".into()],
            image_size: 64,
            mean: crate::model::checkpoint::IMAGENET_MEAN,
            std: crate::model::checkpoint::IMAGENET_STD,
            hidden: [32, 16],
            dropout: 0.5,
            run_id: None,
            train_config: serde_json::Value::Null,
            clip: None,
        };
        crate::model::checkpoint::save(path, &tensors, &meta, &[]).unwrap();
    }

    #[test]
    fn paths_from_the_file_manager_open_on_predict_and_what_cannot_be_read_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("model.safetensors");
        random_checkpoint(&ckpt);
        let one = dir.path().join("one.png");
        image::RgbImage::from_pixel(80, 60, image::Rgb([200, 40, 40])).save(&one).unwrap();
        let folder = dir.path().join("batch");
        std::fs::create_dir_all(&folder).unwrap();
        for (i, c) in [[10u8, 200, 10], [10, 10, 200]].iter().enumerate() {
            image::RgbImage::from_pixel(70, 90, image::Rgb(*c)).save(folder.join(format!("{i}.png"))).unwrap();
        }
        std::fs::write(folder.join("notes.jpg"), b"<html>not a painting</html>").unwrap();
        let mut h = harness(&dir.path().join("ws"), fixed_picker(vec![]));
        h.state_mut().predict.state.checkpoint = Some(ckpt);
        h.run_steps(2);
        // `artculture one.png gone.jpg`
        h.state_mut().open_paths(vec![one.clone(), dir.path().join("gone.jpg")]);
        run_until(&mut h, |app| app.predict.state.items.len() == 2);
        h.run_steps(3);
        assert_eq!(h.state().view, View::Predict);
        let items = &h.state().predict.state.items;
        assert!(items[0].result.is_ok(), "{:?}", items[0].result.as_ref().err());
        assert!(items[1].result.as_ref().err().is_some_and(|e| e.contains("gone.jpg")));
        assert!(h.query_all_by_label_contains("gone.jpg").count() >= 1, "the view names the missing file");
        // `artculture batch/`: the folder's images fill the table, the unreadable one says why.
        h.state_mut().open_paths(vec![folder]);
        run_until(&mut h, |app| app.predict.state.items.len() == 3);
        h.run_steps(3);
        let items = &h.state().predict.state.items;
        assert_eq!(items.iter().filter(|i| i.result.is_ok()).count(), 2);
        assert!(
            items[2].result.as_ref().err().is_some_and(|e| e.contains("notes.jpg")),
            "{:?}",
            items[2].result.as_ref().err()
        );
        assert!(h.query_all_by_label_contains("notes.jpg").count() >= 1);
    }

    #[test]
    fn tabs_switch_views() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(dir.path(), fixed_picker(vec![]));
        h.run_steps(2);
        for v in View::ALL {
            h.get_by_label(v.title()).click();
            h.run_steps(2);
            assert_eq!(h.state().view, v);
        }
        // The empty workspace says what to do first.
        h.get_by_label("Dataset").click();
        h.run_steps(2);
        h.get_by_label("This workspace is empty");
    }

    #[test]
    fn workspace_picker_opens_the_chosen_folder() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other");
        let mut h = harness(&dir.path().join("first"), fixed_picker(vec![other.clone()]));
        h.run_steps(2);
        h.get_by_label("Change…").click();
        run_until(&mut h, |app| app.shared.ws_path == other);
        assert!(other.join("catalog.sqlite").is_file());
        assert!(h.state().shared.ws.is_some());
    }

    #[test]
    fn background_job_shows_progress_and_cancels() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(dir.path(), fixed_picker(vec![]));
        h.run_steps(1);
        h.state_mut().shared.spawn("Slow job", |rep| {
            let mut i = 0;
            while !rep.cancelled() {
                rep.progress((i % 100) as f32 / 100.0, format!("step {i}"));
                i += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err("cancelled by the user".into())
        });
        run_until(&mut h, |app| app.shared.jobs.first().is_some_and(|j| !j.message.is_empty()));
        h.step();
        h.get_by_label("Slow job");
        h.get_by_label("Cancel").click();
        run_until(&mut h, |app| app.shared.jobs.is_empty());
        assert_eq!(h.state().shared.messages.last().unwrap(), "Slow job failed: cancelled by the user");
    }
}
