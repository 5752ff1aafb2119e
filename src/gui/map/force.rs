//! Drawing the ForceAtlas2 map: nodes sized by work count in their culture's colour, edges above
//! the similarity threshold, a legend with the study's regions, hover tooltips with three works,
//! and the clicked culture's nearest neighbours. Pointer input goes to `MapState`'s transitions.
use super::state::{MapState, layout_extent};
use super::{legend_cultures, to_color};
use crate::analysis::palette::culture_color;
use crate::gui::shared::Shared;
use crate::gui::thumbs::ThumbCache;
use egui::{Color32, Sense, Stroke, Vec2, pos2};

pub fn force_ui(s: &mut MapState, thumbs: Option<&mut ThumbCache>, ui: &mut egui::Ui, shared: &Shared) {
    ui.horizontal(|ui| {
        if ui
            .button("Re-run from a random start")
            .on_hover_text("The layout is stable up to rotation and reflection")
            .clicked()
        {
            s.reseed();
        }
        if ui.checkbox(&mut s.lin_log, "LinLog").changed() {
            s.restart_layout();
        }
        ui.checkbox(&mut s.running, "keep laying out");
        if let Some(l) = &s.layout {
            ui.label(format!("{} iterations", l.iterations));
        }
    });
    if s.step_layout() {
        ui.ctx().request_repaint();
    }
    let (Some(d), Some(layout)) = (&s.data, &s.layout) else { return };
    let (rect, resp) = ui.allocate_exact_size(ui.available_size(), Sense::click_and_drag());
    let painter = ui.painter_at(rect);
    let scale = rect.width().min(rect.height()) * 0.42 / layout_extent(layout) as f32 * s.zoom;
    let centre = rect.center() + s.pan;
    let to_screen = |p: [f64; 2]| pos2(centre.x + p[0] as f32 * scale, centre.y + p[1] as f32 * scale);
    let m = &d.map;
    let max_count = m.counts.iter().copied().max().unwrap_or(1).max(1) as f32;
    let radius = |i: usize| 8.0 + 22.0 * (m.counts[i] as f32 / max_count).sqrt();
    let hover = resp
        .hover_pos()
        .and_then(|hp| (0..m.cultures.len()).find(|&i| to_screen(layout.pos[i]).distance(hp) <= radius(i)));
    let threshold = s.threshold.unwrap_or(m.threshold);
    let max_s = m.similarity.iter().flatten().copied().fold(1e-9, f64::max);
    for (i, row) in m.similarity.iter().enumerate() {
        for (j, &sim) in row.iter().enumerate() {
            if j > i && (sim >= threshold || m.similarity[j][i] >= threshold) {
                let w = 1.0 + 5.0 * (sim.max(m.similarity[j][i]) / max_s) as f32;
                painter.line_segment(
                    [to_screen(layout.pos[i]), to_screen(layout.pos[j])],
                    Stroke::new(w, Color32::from_gray(150).gamma_multiply(0.6)),
                );
            }
        }
    }
    for (i, name) in m.cultures.iter().enumerate() {
        let p = to_screen(layout.pos[i]);
        let stroke = Stroke::new(if Some(i) == s.selected { 3.0 } else { 1.0 }, ui.visuals().text_color());
        painter.circle(p, radius(i), to_color(culture_color(name)), stroke);
        painter.text(
            p - Vec2::new(0.0, radius(i) + 8.0),
            egui::Align2::CENTER_BOTTOM,
            name,
            egui::FontId::proportional(14.0),
            ui.visuals().text_color(),
        );
    }
    legend_cultures(&painter, rect, &m.cultures, ui.visuals().text_color());
    if let Some(i) = hover {
        hover_tooltip(ui, shared, thumbs, d, i);
    }
    if let Some(i) = s.selected {
        let text = s.nearest(i).iter().map(|(name, dist)| format!("{name} {dist:.2}")).collect::<Vec<_>>().join("\n");
        painter.text(
            rect.right_top() + Vec2::new(-12.0, 12.0),
            egui::Align2::RIGHT_TOP,
            format!("Nearest to {}:\n{text}", m.cultures[i]),
            egui::FontId::proportional(13.0),
            ui.visuals().text_color(),
        );
    }
    // Input last: the frame above drew the state the pointer saw.
    if resp.hovered() {
        s.zoom_by(ui.input(|i| i.smooth_scroll_delta.y));
    }
    if resp.drag_started() {
        s.dragging = hover;
    }
    if resp.dragged() {
        let delta = resp.drag_delta() / scale;
        s.drag([delta.x as f64, delta.y as f64], resp.drag_delta());
    }
    if resp.drag_stopped() {
        s.drop_node();
    }
    if resp.clicked() {
        s.selected = hover;
    }
}

/// The hovered culture's name, count and first three works.
fn hover_tooltip(ui: &egui::Ui, shared: &Shared, thumbs: Option<&mut ThumbCache>, d: &super::state::MapData, i: usize) {
    let m = &d.map;
    let ws = shared.ws.as_ref();
    let examples: Vec<(i64, Option<std::path::PathBuf>)> = d
        .ids
        .iter()
        .zip(&d.cultures)
        .zip(&d.hashes)
        .filter(|((_, c), _)| **c == m.cultures[i])
        .take(3)
        .map(|((id, _), h)| {
            (*id, ws.and_then(|ws| h.as_ref().map(|h| crate::imaging::cache_path(&ws.thumbs_dir(), h))))
        })
        .collect();
    egui::Tooltip::always_open(
        ui.ctx().clone(),
        ui.layer_id(),
        egui::Id::unique("map_hover"),
        egui::PopupAnchor::Pointer,
    )
    .show(|ui| {
        ui.strong(format!("{} — {} works", m.cultures[i], m.counts[i]));
        if let Some(t) = thumbs {
            ui.horizontal(|ui| {
                for (id, path) in &examples {
                    match t.get(*id, path.as_ref()) {
                        Some(tex) => {
                            ui.add(egui::Image::new(&tex).max_size(Vec2::splat(96.0)));
                        }
                        None => {
                            ui.spinner();
                        }
                    }
                }
            });
        }
    });
}
