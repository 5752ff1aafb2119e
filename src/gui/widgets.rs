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
            culture_label(ui, &g.culture, &g.culture);
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

/// One cell of a heat map: `t` in [0, 1] coloured with inferno, `label` written on it in a
/// colour that stays readable.
pub fn heat_cell(ui: &mut egui::Ui, t: f32, label: String, size: egui::Vec2) {
    let [r, g, b] = crate::analysis::activation::inferno(t);
    let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
    ui.painter().rect_filled(rect, 1.0, egui::Color32::from_rgb(r, g, b));
    let text = if t > 0.6 { egui::Color32::BLACK } else { egui::Color32::WHITE };
    ui.painter().text(rect.center(), egui::Align2::CENTER_CENTER, label, egui::FontId::monospace(size.y * 0.5), text);
}

/// The culture's colour (the one palette every view uses).
pub fn culture_color32(culture: &str) -> egui::Color32 {
    let [r, g, b] = crate::analysis::palette::culture_color(culture);
    egui::Color32::from_rgb(r, g, b)
}

/// A dot in the culture's colour, then `text`: how a culture is named in tables and lists.
pub fn culture_label(ui: &mut egui::Ui, culture: &str, text: impl Into<egui::WidgetText>) -> egui::Response {
    ui.horizontal(|ui| {
        ui.spacing_mut().item_spacing.x = 4.0;
        let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
        ui.painter().circle_filled(rect.center(), 5.0, culture_color32(culture));
        ui.label(text)
    })
    .inner
}
