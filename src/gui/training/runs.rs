//! Drawing the Training view's runs table (Table 2: sortable, compare checkboxes, a failed run's
//! reason on hover, per-run confusion matrix and exports) and the confusion matrix.
use super::{TrainingView, job, state};
use crate::gui::shared::Shared;

impl TrainingView {
    pub(super) fn runs_table(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        ui.heading("Runs (Table 2)");
        let runs = state::sorted_runs(&shared.runs, self.sort_by);
        let pct = state::percent;
        let mut compare_changed = false;
        egui::Grid::new("runs_table").striped(true).show(ui, |ui| {
            ui.label("compare");
            for (i, h) in state::RUN_COLUMNS.iter().enumerate() {
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
                    r.method_label(),
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
                        self.confusion_job = Some(job::spawn_confusion(shared, &r.id));
                    }
                    if ui.small_button("export CSV").clicked() {
                        job::export_metrics(shared, &r.id, false);
                    }
                    if ui.small_button("plots PNG").clicked() {
                        job::export_metrics(shared, &r.id, true);
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

    pub(super) fn confusion_ui(&mut self, ui: &mut egui::Ui) {
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
                crate::gui::widgets::culture_label(
                    ui,
                    c,
                    egui::RichText::new(c.chars().take(4).collect::<String>()).small(),
                )
                .on_hover_text(c);
            }
            ui.end_row();
            for (c, row) in e.classes.iter().zip(&e.confusion) {
                crate::gui::widgets::culture_label(ui, c, c);
                for &v in row {
                    crate::gui::widgets::heat_cell(ui, v as f32 / max, v.to_string(), egui::vec2(34.0, 20.0));
                }
                ui.end_row();
            }
        });
    }
}
