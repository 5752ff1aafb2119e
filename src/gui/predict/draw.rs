//! Drawing the Predict view: the toolbar, the results panel (top-3 bars in culture colours, map
//! settings, legend, raw values), the canvas with the map over the network's crop, and the batch
//! table. Drawing changes the state only through `PredictState`; what needs a job or a dialog is
//! returned as an [`Action`] for `mod.rs` to carry out.
use super::state::{PredictState, error_sentence};
use crate::analysis::activation::inferno;
use crate::gui::shared::PickKind;
use crate::predict::CamKind;
use egui::{Color32, Rect, Sense, Vec2, pos2};
use std::path::PathBuf;

/// What a click asks for beyond the view's own state.
pub enum Action {
    /// Open a file dialog of this kind.
    Pick(PickKind),
    /// Predict these images (or folders).
    Predict(Vec<PathBuf>),
    /// Save the batch table as CSV.
    ExportCsv,
}

pub fn toolbar(s: &mut PredictState, ui: &mut egui::Ui) -> Option<Action> {
    let mut action = None;
    ui.horizontal_wrapped(|ui| {
        if ui.button("Open images…").clicked() {
            action = Some(Action::Pick(PickKind::ImageFiles));
        }
        if ui.button("Predict a folder…").clicked() {
            action = Some(Action::Pick(PickKind::Folder));
        }
        let r = ui.add(
            egui::TextEdit::singleline(&mut s.path_text)
                .hint_text("or paste an image path and press Enter")
                .desired_width(260.0),
        );
        if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) && !s.path_text.trim().is_empty() {
            action = Some(Action::Predict(vec![PathBuf::from(s.path_text.trim())]));
        }
        ui.separator();
        if ui
            .button(match &s.checkpoint {
                Some(c) => format!("checkpoint: {}", c.file_name().and_then(|n| n.to_str()).unwrap_or("?")),
                None => "model: selected run".into(),
            })
            .on_hover_text("Click to use the selected run again")
            .clicked()
        {
            s.checkpoint = None;
        }
        if ui.button("Checkpoint file…").clicked() {
            action = Some(Action::Pick(PickKind::CheckpointFile));
        }
    });
    let dropped: Vec<PathBuf> =
        ui.ctx().input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).collect());
    if !dropped.is_empty() {
        action = Some(Action::Predict(dropped));
    }
    action
}

/// The shown image's top cultures, the map settings and the raw map values. Returns the image
/// to predict again when the map or its class changed.
pub fn results_panel(s: &mut PredictState, ui: &mut egui::Ui) -> Option<PathBuf> {
    let it = s.items.get(s.current)?;
    let path = it.path.clone();
    let shown = match &it.result {
        Err(e) => {
            ui.strong(path.file_name().and_then(|n| n.to_str()).unwrap_or(""))
                .on_hover_text(path.display().to_string());
            ui.add(
                egui::Label::new(egui::RichText::new(error_sentence(e, &path)).color(ui.visuals().error_fg_color))
                    .wrap(),
            );
            return None;
        }
        Ok(s) => (s.model.clone(), s.pred.top.clone(), s.pred.heatmap.clone()),
    };
    let (model, top, heatmap) = shown;
    ui.strong(path.file_name().and_then(|n| n.to_str()).unwrap_or(""));
    ui.label(format!("model: {model}"));
    for r in &top {
        ui.add(
            egui::ProgressBar::new(r.p)
                .text(format!("{} {:.1}%", r.culture, r.p * 100.0))
                .fill(crate::gui::widgets::culture_color32(&r.culture).gamma_multiply(0.85))
                .desired_width(240.0),
        );
    }
    ui.separator();
    ui.checkbox(&mut s.show_overlay, "show activation map");
    ui.add(egui::Slider::new(&mut s.opacity, 0.0..=1.0).text("opacity"));
    let mut rerun = false;
    ui.horizontal(|ui| {
        ui.label("map:");
        let mut cam = s.cam;
        ui.selectable_value(&mut cam, CamKind::Sum, "channel sum (study)");
        ui.selectable_value(&mut cam, CamKind::Gradcam, "Grad-CAM");
        rerun |= s.set_cam(cam);
    });
    if s.cam == CamKind::Gradcam {
        ui.horizontal(|ui| {
            ui.label("why:");
            for r in &top {
                if ui.selectable_label(s.class.as_deref() == Some(&r.culture), &r.culture).clicked() {
                    rerun |= s.set_class(&r.culture);
                }
            }
        });
    }
    legend(ui);
    ui.checkbox(&mut s.show_grid, "show the raw map values");
    if s.show_grid {
        egui::Grid::new("raw_map").spacing([2.0, 2.0]).show(ui, |ui| {
            for row in heatmap.rows() {
                for v in row {
                    crate::gui::widgets::heat_cell(ui, v, format!("{v:.2}"), egui::vec2(30.0, 18.0));
                }
                ui.end_row();
            }
        });
    }
    rerun.then_some(path)
}

/// The painting fitted to the canvas, zoomed and panned, with the map over the network's crop.
pub fn canvas(s: &mut PredictState, ui: &mut egui::Ui) {
    let Some(it) = s.items.get(s.current) else {
        ui.centered_and_justified(|ui| ui.label("Open a painting, drop one on the window, or paste its path."));
        return;
    };
    let (Ok(shown), Some((img_tex, map_tex))) = (&it.result, &it.textures) else { return };
    let (img_tex, map_tex, f) = (img_tex.id(), map_tex.id(), shown.pred.frame);
    // The painting in its own pixel coordinates, fitted to the canvas, then zoomed and panned.
    let (w, h) = (shown.pred.width as f32, shown.pred.height as f32);
    let (rect, resp) = ui.allocate_exact_size(ui.available_size(), Sense::click_and_drag());
    if resp.hovered() {
        s.zoom_by(ui.input(|i| i.smooth_scroll_delta.y));
    }
    if resp.dragged() {
        s.pan += resp.drag_delta();
    }
    if resp.double_clicked() {
        s.reset_view();
    }
    let fit = (rect.width() / w).min(rect.height() / h) * s.zoom;
    let origin = rect.center() + s.pan - Vec2::new(w, h) * fit / 2.0;
    let to_screen = |x: f32, y: f32| pos2(origin.x + x * fit, origin.y + y * fit);
    let painter = ui.painter_at(rect);
    let uv = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
    painter.image(img_tex, Rect::from_min_max(to_screen(0.0, 0.0), to_screen(w, h)), uv, Color32::WHITE);
    let frame = Rect::from_min_max(to_screen(f.x, f.y), to_screen(f.x + f.side, f.y + f.side));
    if s.show_overlay {
        painter.image(map_tex, frame, uv, Color32::from_white_alpha((s.opacity * 255.0) as u8));
    }
    painter.rect_stroke(
        frame,
        0.0,
        egui::Stroke::new(1.5, Color32::from_rgb(250, 250, 250)),
        egui::StrokeKind::Outside,
    );
    painter.text(
        frame.left_top() + Vec2::new(4.0, -16.0),
        egui::Align2::LEFT_TOP,
        "what the network sees",
        egui::FontId::proportional(12.0),
        Color32::WHITE,
    );
}

/// Every image of a batch with its top cultures or its error; a click shows it.
pub fn batch_table(s: &mut PredictState, ui: &mut egui::Ui) -> Option<Action> {
    if s.items.len() < 2 {
        return None;
    }
    let mut action = None;
    ui.horizontal(|ui| {
        ui.strong(format!("{} images", s.items.len()));
        if ui.button("Export CSV…").clicked() {
            action = Some(Action::ExportCsv);
        }
    });
    egui::ScrollArea::vertical().max_height(180.0).show(ui, |ui| {
        egui::Grid::new("batch").striped(true).show(ui, |ui| {
            for (i, it) in s.items.iter().enumerate() {
                let name = it.path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
                if ui.selectable_label(i == s.current, name).clicked() {
                    s.current = i;
                }
                match &it.result {
                    Ok(shown) => ui.label(
                        shown
                            .pred
                            .top
                            .iter()
                            .map(|t| format!("{} {:.1}%", t.culture, t.p * 100.0))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    Err(e) => ui.colored_label(ui.visuals().error_fg_color, error_sentence(e, &it.path)),
                };
                ui.end_row();
            }
        });
    });
    action
}

/// The colour map's legend: 0 (no activation) to 1 (strongest).
fn legend(ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        ui.label("0");
        let (rect, _) = ui.allocate_exact_size(egui::vec2(180.0, 12.0), Sense::hover());
        let n = 60;
        for i in 0..n {
            let [r, g, b] = inferno(i as f32 / (n - 1) as f32);
            let x0 = rect.left() + rect.width() * i as f32 / n as f32;
            let x1 = rect.left() + rect.width() * (i + 1) as f32 / n as f32;
            ui.painter().rect_filled(
                Rect::from_min_max(pos2(x0, rect.top()), pos2(x1 + 0.5, rect.bottom())),
                0.0,
                Color32::from_rgb(r, g, b),
            );
        }
        ui.label("1  activation");
    });
}
