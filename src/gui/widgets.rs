//! Small drawing helpers shared by the views.
use crate::catalog::DatasetStats;

/// The study's Table 1 as a grid: culture group, initial and final counts, and the total.
pub fn table1_grid(ui: &mut egui::Ui, id: &str, stats: &DatasetStats) {
    egui::Grid::new(id).striped(true).num_columns(3).show(ui, |ui| {
        ui.strong("Culture group");
        ui.strong("Initial");
        ui.strong("Final");
        ui.end_row();
        for g in &stats.groups {
            ui.label(&g.culture);
            ui.label(g.initial.to_string());
            ui.label(g.final_.to_string());
            ui.end_row();
        }
        ui.strong("Total");
        ui.strong(stats.total_initial.to_string());
        ui.strong(stats.total_final.to_string());
        ui.end_row();
    });
}
