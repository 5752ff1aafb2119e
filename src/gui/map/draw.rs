//! Drawing the Culture map's other tabs: the chord diagram of the similarities above the
//! threshold, the distance and similarity matrices as heat maps, and the PCA of every work.
use super::state::MapState;
use super::to_color;
use crate::analysis::culture_map;
use crate::analysis::palette::{culture_color, region};
use crate::gui::shared::Shared;
use crate::gui::thumbs::ThumbCache;
use egui::{Color32, Pos2, Rect, Sense, Stroke, Vec2};

pub fn chord_ui(s: &mut MapState, ui: &mut egui::Ui) {
    let Some(d) = &s.data else { return };
    let m = &d.map;
    let mut t = s.threshold.unwrap_or(m.threshold);
    ui.horizontal(|ui| {
        ui.add(egui::Slider::new(&mut t, 0.0..=1.0).text("similarity threshold"));
        if ui.button("top quartile").clicked() {
            t = m.threshold;
        }
        ui.label("Similarity is not symmetric: A to B is 1/d(A,B) over the sum of A's inverse distances.");
    });
    s.threshold = Some(t);
    let (rect, resp) = ui.allocate_exact_size(ui.available_size(), Sense::hover());
    let painter = ui.painter_at(rect);
    let k = m.cultures.len().max(1);
    let c = rect.center();
    let r = rect.width().min(rect.height()) * 0.38;
    let angle = |i: usize| -std::f32::consts::FRAC_PI_2 + i as f32 * std::f32::consts::TAU / k as f32;
    let at = |i: usize, rr: f32| c + Vec2::angled(angle(i)) * rr;
    let hover = resp.hover_pos().and_then(|p| (0..k).find(|&i| at(i, r).distance(p) < 24.0));
    let max_s = m.similarity.iter().flatten().copied().fold(1e-9, f64::max);
    for chord in culture_map::chords(&m.cultures, &m.similarity, t) {
        let (i, j) = (
            m.cultures.iter().position(|x| *x == chord.from).unwrap_or(0),
            m.cultures.iter().position(|x| *x == chord.to).unwrap_or(0),
        );
        let highlighted = hover.is_none_or(|h| h == i || h == j);
        let col = to_color(culture_color(&chord.from)).gamma_multiply(if highlighted { 0.75 } else { 0.12 });
        let w = 2.0 + 14.0 * (chord.similarity / max_s) as f32;
        let shape = egui::epaint::QuadraticBezierShape::from_points_stroke(
            [at(i, r - 10.0), c, at(j, r - 10.0)],
            false,
            Color32::TRANSPARENT,
            Stroke::new(w, col),
        );
        painter.add(shape);
    }
    for (i, name) in m.cultures.iter().enumerate() {
        painter.circle_filled(at(i, r), 10.0, to_color(culture_color(name)));
        let p = at(i, r + 30.0);
        painter.text(p, egui::Align2::CENTER_CENTER, name, egui::FontId::proportional(14.0), ui.visuals().text_color());
    }
}

pub fn matrices_ui(s: &MapState, ui: &mut egui::Ui, shared: &mut Shared) {
    let Some(d) = &s.data else { return };
    let m = &d.map;
    ui.horizontal(|ui| {
        if ui.button("Export distances and similarities as CSV…").clicked() {
            super::job::export_csv(shared, m);
        }
        ui.label("Rows: from; columns: to. Similarity rows sum to 1 and are not symmetric.");
    });
    ui.columns(2, |cols| {
        heat_table(&mut cols[0], "L2 distance between mean embeddings", &m.cultures, &m.distance);
        heat_table(&mut cols[1], "Normalised similarity", &m.cultures, &m.similarity);
    });
}

pub fn works_ui(s: &MapState, thumbs: Option<&mut ThumbCache>, ui: &mut egui::Ui, shared: &mut Shared) {
    let Some(d) = &s.data else { return };
    let mut names: Vec<String> = d.cultures.clone();
    names.sort();
    names.dedup();
    ui.label("Each point is a work (first two principal components of its embedding). Hover for the work; click to open it in the Curation view, Ctrl+click to predict it.");
    let resp = egui_plot::Plot::new("pca").legend(egui_plot::Legend::default()).data_aspect(1.0).show(ui, |p| {
        for n in &names {
            let pts: Vec<[f64; 2]> = d
                .pca
                .iter()
                .zip(&d.cultures)
                .filter(|(_, c)| *c == n)
                .map(|(q, _)| [q[0] as f64, q[1] as f64])
                .collect();
            p.points(egui_plot::Points::new(n.clone(), pts).radius(2.5).color(to_color(culture_color(n))));
        }
    });
    // The work nearest the pointer, within a few pixels on screen.
    let nearest = resp.response.hover_pos().and_then(|hp| {
        d.pca
            .iter()
            .enumerate()
            .map(|(i, q)| (i, resp.transform.position_from_point(&egui_plot::PlotPoint::new(q[0], q[1])).distance(hp)))
            .filter(|(_, dist)| *dist < 8.0)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    });
    let Some(i) = nearest else { return };
    let (id, culture) = (d.ids[i], d.cultures[i].clone());
    let thumb =
        shared.ws.as_ref().and_then(|ws| d.hashes[i].as_ref().map(|h| crate::imaging::cache_path(&ws.thumbs_dir(), h)));
    let title = shared
        .ws
        .as_ref()
        .and_then(|ws| ws.catalog.artwork(id).ok())
        .map(|a| format!("{} ({})", a.title, a.display_id()))
        .unwrap_or_default();
    let tex = thumbs.and_then(|t| t.get(id, thumb.as_ref()));
    resp.response.clone().on_hover_ui_at_pointer(|ui| {
        ui.strong(&title);
        ui.label(&culture);
        match &tex {
            Some(t) => {
                ui.add(egui::Image::new(t).max_size(Vec2::splat(160.0)));
            }
            None => {
                ui.spinner();
            }
        }
    });
    if resp.response.clicked() {
        if ui.input(|inp| inp.modifiers.command) {
            shared.predict_request =
                shared.ws.as_ref().and_then(|ws| ws.catalog.artwork(id).ok()?.image_path.map(|p| ws.resolve(&p)));
        } else {
            shared.focus_artwork = Some(id);
        }
    }
}

/// One entry per culture on the map, in its colour, with its region (the study's clusters).
pub fn legend_cultures(painter: &egui::Painter, rect: Rect, cultures: &[String], text: Color32) {
    for (k, name) in cultures.iter().rev().enumerate() {
        let p = Pos2::new(rect.left() + 16.0, rect.bottom() - 20.0 - 18.0 * k as f32);
        painter.circle_filled(p, 6.0, to_color(culture_color(name)));
        painter.text(
            p + Vec2::new(12.0, 0.0),
            egui::Align2::LEFT_CENTER,
            format!("{name} ({})", region(name)),
            egui::FontId::proportional(12.0),
            text,
        );
    }
}

fn heat_table(ui: &mut egui::Ui, title: &str, names: &[String], v: &[Vec<f64>]) {
    ui.strong(title);
    let max = v.iter().flatten().copied().fold(1e-12, f64::max);
    egui::Grid::new(title).spacing([2.0, 2.0]).show(ui, |ui| {
        ui.label("");
        for n in names {
            ui.label(egui::RichText::new(n.chars().take(4).collect::<String>()).small());
        }
        ui.end_row();
        for (name, row) in names.iter().zip(v) {
            ui.label(name);
            for &x in row {
                crate::gui::widgets::heat_cell(ui, (x / max) as f32, format!("{x:.2}"), egui::vec2(40.0, 18.0));
            }
            ui.end_row();
        }
    });
}
