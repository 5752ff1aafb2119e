//! The Training view's form (every option of `train`, the Table 2 presets, checked by the
//! same rules as the CLI) and its Start / Resume / Pause / Cancel controls.
use super::TrainingView;
use crate::catalog::RunRecord;
use crate::gui::shared::Shared;
use crate::model::Arch;
use crate::model::autocast::Precision;
use crate::train::schedule::{PlateauMode, SchedulerConfig};
use crate::train::{Method, Pretrained, presets};
use std::sync::atomic::Ordering;

impl TrainingView {
    pub(super) fn form(&mut self, ui: &mut egui::Ui, runs: &[String]) {
        ui.heading("New run");
        // The label on its own line and the long preset names cut to the panel's width: beside
        // a full-width box the label had no room and wrapped one letter a line.
        ui.label("Preset (Table 2)");
        egui::ComboBox::from_id_salt("preset")
            .width((ui.available_width() - 8.0).max(120.0))
            .truncate()
            .selected_text(presets::PRESETS[self.preset].label)
            .show_ui(ui, |ui| {
                for (i, p) in presets::PRESETS.iter().enumerate() {
                    let text = match p.study {
                        Some((val, top1, top3)) => {
                            format!("{} (study: val {val:.1}, top-1 {top1:.1}, top-3 {top3:.1})", p.label)
                        }
                        None => p.label.to_string(),
                    };
                    if ui.selectable_label(self.preset == i, text).clicked() {
                        self.choose_preset(i);
                        self.preset_chosen = true;
                    }
                }
            });
        let c = &mut self.cfg;
        egui::Grid::new("train_form").num_columns(2).show(ui, |ui| {
            ui.label("Architecture");
            egui::ComboBox::from_id_salt("arch").selected_text(c.arch.as_str()).show_ui(ui, |ui| {
                for a in Arch::ALL {
                    if ui.selectable_label(c.arch == a, a.as_str()).clicked() {
                        choose_arch(c, a);
                    }
                }
            });
            ui.end_row();
            ui.label("Method");
            egui::ComboBox::from_id_salt("method").selected_text(c.method.as_str()).show_ui(ui, |ui| {
                for m in [Method::FineTune, Method::Transfer, Method::Scratch] {
                    ui.selectable_value(&mut c.method, m, m.as_str());
                }
            });
            ui.end_row();
            ui.label("Precision");
            egui::ComboBox::from_id_salt("precision").selected_text(c.precision.as_str()).show_ui(ui, |ui| {
                ui.selectable_value(&mut c.precision, Precision::F32, "f32")
                    .on_hover_text("The default: full precision throughout");
                ui.selectable_value(&mut c.precision, Precision::Bf16, "bf16")
                    .on_hover_text("PyTorch's bf16 autocast: same numerics, f32 master weights and checkpoints");
            });
            ui.end_row();
            ui.label("Scheduler");
            let plateau = matches!(c.scheduler, SchedulerConfig::Plateau { .. });
            egui::ComboBox::from_id_salt("sched").selected_text(c.scheduler.name()).show_ui(ui, |ui| {
                if ui.selectable_label(!plateau, "StepLR").clicked() {
                    c.scheduler = SchedulerConfig::step_default();
                }
                if ui.selectable_label(plateau, "ReduceLROnPlateau").clicked() {
                    c.scheduler = SchedulerConfig::plateau_default();
                }
            });
            ui.end_row();
            match &mut c.scheduler {
                SchedulerConfig::Step { step_size, gamma } => {
                    ui.label("step every / gamma");
                    ui.horizontal(|ui| {
                        ui.add(egui::DragValue::new(step_size).range(1..=1000));
                        ui.add(egui::DragValue::new(gamma).speed(0.01).range(0.0..=1.0));
                    });
                    ui.end_row();
                }
                SchedulerConfig::Plateau { mode, factor, patience, threshold, cooldown, min_lr, .. } => {
                    ui.label("watch");
                    egui::ComboBox::from_id_salt("plateau_mode")
                        .selected_text(match mode {
                            PlateauMode::Min => "validation loss (min)",
                            PlateauMode::Max => "validation accuracy (max)",
                        })
                        .show_ui(ui, |ui| {
                            ui.selectable_value(mode, PlateauMode::Min, "validation loss (min)");
                            ui.selectable_value(mode, PlateauMode::Max, "validation accuracy (max)");
                        });
                    ui.end_row();
                    ui.label("factor / patience / cooldown");
                    ui.horizontal(|ui| {
                        ui.add(egui::DragValue::new(factor).speed(0.01).range(0.0..=1.0));
                        ui.add(egui::DragValue::new(patience).range(0..=100));
                        ui.add(egui::DragValue::new(cooldown).range(0..=100));
                    });
                    ui.end_row();
                    ui.label("threshold / min lr");
                    ui.horizontal(|ui| {
                        ui.add(egui::DragValue::new(threshold).speed(1e-5).range(0.0..=1.0));
                        ui.add(egui::DragValue::new(min_lr).speed(1e-6).range(0.0..=1.0));
                    });
                    ui.end_row();
                }
            }
            ui.label("Epochs");
            ui.add(egui::DragValue::new(&mut c.epochs).range(1..=1000));
            ui.end_row();
            ui.label("Learning rate");
            ui.add(egui::DragValue::new(&mut c.sgd.lr).speed(1e-4).range(1e-7..=10.0));
            ui.end_row();
            ui.label("Momentum / weight decay");
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(&mut c.sgd.momentum).speed(0.01).range(0.0..=0.999));
                ui.add(egui::DragValue::new(&mut c.sgd.weight_decay).speed(1e-5).range(0.0..=1.0));
                ui.checkbox(&mut c.sgd.nesterov, "Nesterov");
            });
            ui.end_row();
            ui.label("Batch / image size");
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(&mut c.batch).range(2..=512));
                ui.add(
                    egui::DragValue::new(&mut c.image_size)
                        .range(c.arch.min_input()..=crate::train::validate::MAX_IMAGE_SIZE),
                );
            });
            ui.end_row();
            ui.label("Dropout / hidden sizes");
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(&mut c.dropout).speed(0.01).range(0.0..=0.99));
                ui.add(egui::DragValue::new(&mut c.hidden[0]).range(1..=crate::train::validate::MAX_HIDDEN));
                ui.add(egui::DragValue::new(&mut c.hidden[1]).range(1..=crate::train::validate::MAX_HIDDEN));
            });
            ui.end_row();
            ui.label("Seed");
            ui.add(egui::DragValue::new(&mut c.seed));
            ui.end_row();
            ui.label("Pretrained");
            ui.add(
                egui::TextEdit::singleline(&mut self.pretrained_text)
                    .hint_text("hub, none, or a .safetensors path")
                    .desired_width(180.0),
            );
            ui.end_row();
            ui.label("Options");
            ui.horizontal(|ui| {
                ui.checkbox(&mut c.balanced, "class-balanced loss");
                ui.checkbox(&mut c.augment, "augment");
            });
            ui.end_row();
            // Runs are compared on one split: the last run's unless asked otherwise (as the CLI).
            ui.label("Split");
            let shown = match (&c.split_from, c.new_split) {
                (_, true) => "a new 80/10/10 split (seed)".to_string(),
                (Some(r), _) => format!("reuse {r}'s"),
                (None, false) => "reuse the last run's".to_string(),
            };
            egui::ComboBox::from_id_salt("split").selected_text(shown).show_ui(ui, |ui| {
                if ui.selectable_label(c.split_from.is_none() && !c.new_split, "reuse the last run's").clicked() {
                    (c.split_from, c.new_split) = (None, false);
                }
                if ui.selectable_label(c.new_split, "a new 80/10/10 split (seed)").clicked() {
                    (c.split_from, c.new_split) = (None, true);
                }
                for r in runs {
                    if ui
                        .selectable_label(c.split_from.as_deref() == Some(r.as_str()), format!("reuse {r}'s"))
                        .clicked()
                    {
                        (c.split_from, c.new_split) = (Some(r.clone()), false);
                    }
                }
            });
            ui.end_row();
        });
        self.cfg.pretrained = self.pretrained_text.parse().unwrap_or(Pretrained::Hub);
    }

    pub(super) fn choose_preset(&mut self, i: usize) {
        let Some(p) = presets::PRESETS.get(i) else { return };
        self.preset = i;
        self.cfg = p.config();
        self.pretrained_text = match &self.cfg.pretrained {
            Pretrained::Hub => "hub".into(),
            Pretrained::None => "none".into(),
            Pretrained::Path(p) => p.display().to_string(),
        };
    }

    pub(super) fn controls(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        ui.horizontal(|ui| {
            if !self.running() {
                let valid = self.cfg.validate();
                let start = ui.add_enabled(valid.is_ok(), egui::Button::new("Start"));
                if let Err(e) = &valid {
                    ui.colored_label(ui.visuals().error_fg_color, e.to_string());
                }
                if start.clicked() {
                    self.start(shared, None);
                }
                let resumable: Vec<&RunRecord> = shared
                    .runs
                    .iter()
                    .filter(|r| {
                        matches!(
                            r.status,
                            crate::catalog::RunStatus::Cancelled | crate::catalog::RunStatus::Interrupted
                        )
                    })
                    .collect();
                if let Some(r) = resumable.last()
                    && ui.button(format!("Resume {}", r.id)).clicked()
                {
                    let id = r.id.clone();
                    self.start(shared, Some(id));
                }
            } else if let Some(c) = &self.control {
                let paused = c.pause.load(Ordering::Relaxed);
                if ui.button(if paused { "Continue" } else { "Pause" }).clicked() {
                    c.pause.store(!paused, Ordering::Relaxed);
                }
                if ui.button("Cancel").clicked() {
                    c.cancel.store(true, Ordering::Relaxed);
                }
            }
        });
        // A run another process (the CLI) is training is followed from the catalog.
        let elsewhere = !self.running()
            && self.live.run_id.as_ref().is_some_and(|id| {
                shared.runs.iter().any(|r| &r.id == id && r.status == crate::catalog::RunStatus::Running)
            });
        if self.running() || elsewhere {
            ui.label(self.progress_line(elsewhere));
        }
        if let Some(e) = &self.last_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
    }

    /// "run · epoch 2, batch 14/40 · 3.1 img/s · 12 min 30 s left".
    pub(super) fn progress_line(&self, elsewhere: bool) -> String {
        use crate::train::progress::{format_duration, time_left};
        let last = self.live.batches.last();
        let what = match (elsewhere, last) {
            (true, Some(b)) => {
                format!("epoch {}, batch {}/{} (trained by another process)", b.epoch, b.batch, b.batches)
            }
            (true, None) => "trained by another process".into(),
            (false, _) => self.live.message.clone(),
        };
        let left = time_left(&self.live.batches, &self.live.epochs, self.live.total_epochs)
            .map(|s| format!("{} left", format_duration(s)))
            .unwrap_or_else(|| "time left: after the first batch".into());
        format!(
            "{}  ·  {what}  ·  {:.1} img/s  ·  {left}{}",
            self.live.run_id.as_deref().unwrap_or("starting"),
            last.map(|b| b.images_per_s).unwrap_or(0.0),
            if self.live.paused { "  ·  paused" } else { "" }
        )
    }
}

/// Picks an architecture in the form; CLIP trains one way (its frozen pretrained tower, at its
/// own input size), so choosing it sets that way.
pub(super) fn choose_arch(c: &mut crate::train::TrainConfig, a: Arch) {
    c.arch = a;
    if a.is_clip() {
        c.method = Method::Transfer;
        c.pretrained = crate::train::Pretrained::Hub;
        c.image_size = crate::model::clip::ClipConfig::vit_b32().vision_config.image_size;
        // CLIP runs in f32 (validation refuses bf16 for it).
        c.precision = Precision::F32;
    }
}
