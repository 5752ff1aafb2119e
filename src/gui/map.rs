//! The Culture map view: the cultures' mean embeddings laid out by ForceAtlas2 (draggable, the
//! layout continuing from where a node is dropped; zoom and pan; hover for counts and three
//! works; click for the nearest cultures), the chord diagram of the top-quartile similarities,
//! the distance and similarity matrices as heat maps (exportable), and a PCA of every work.
use super::jobs::Job;
use super::shared::{PickKind, Shared};
use super::thumbs::ThumbCache;
use crate::analysis::culture_map::{self, CultureMap};
use crate::analysis::forceatlas2::{Fa2Settings, Layout};
use crate::analysis::palette::{culture_color, region};
use egui::{Color32, Pos2, Rect, Sense, Stroke, Vec2, pos2};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tab {
    #[default]
    Force,
    Chord,
    Matrices,
    Works,
}

/// What the job computes.
pub struct MapData {
    /// The run whose model embedded the works, with its origin ("… (demo)").
    pub run_name: String,
    pub map: CultureMap,
    pub ids: Vec<i64>,
    pub cultures: Vec<String>,
    pub hashes: Vec<Option<String>>,
    pub pca: Vec<[f32; 2]>,
}

pub struct MapView {
    pub tab: Tab,
    pub data: Option<MapData>,
    layout: Option<Layout>,
    pub seed: u64,
    pub lin_log: bool,
    pub running: bool,
    pub threshold: Option<f64>,
    zoom: f32,
    pan: Vec2,
    dragging: Option<usize>,
    selected: Option<usize>,
    job: Option<Job<MapData>>,
    thumbs: Option<ThumbCache>,
    pub error: Option<String>,
    auto_started: bool,
}

impl Default for MapView {
    fn default() -> Self {
        Self {
            tab: Tab::Force,
            data: None,
            layout: None,
            seed: 0,
            lin_log: false,
            running: true,
            threshold: None,
            zoom: 1.0,
            pan: Vec2::ZERO,
            dragging: None,
            selected: None,
            job: None,
            thumbs: None,
            error: None,
            auto_started: false,
        }
    }
}

fn to_color(c: [u8; 3]) -> Color32 {
    Color32::from_rgb(c[0], c[1], c[2])
}

impl MapView {
    pub fn compute(&mut self, shared: &Shared) {
        let (ws_path, run, device) = (shared.ws_path.clone(), shared.selected_run.clone(), shared.device);
        self.job = Some(Job::spawn(&shared.ctx, "Culture map", move |rep| {
            let ws = crate::workspace::Workspace::open(&ws_path).map_err(|e| e.to_string())?;
            let ckpt = crate::predict::run_checkpoint(&ws, run.as_deref()).map_err(|e| e.to_string())?;
            let dev = device.open().map_err(|e| e.to_string())?;
            let control = crate::train::Control::default();
            let model = crate::model::checkpoint::load(&ckpt, &dev).map_err(|e| e.to_string())?;
            let run_name = model
                .meta
                .run_id
                .as_ref()
                .map(|id| ws.catalog.run(id).map(|r| r.display_name()).unwrap_or_else(|_| id.clone()))
                .unwrap_or_else(|| ckpt.display().to_string());
            rep.progress(0.0, format!("embedding the works with {run_name}'s best model"));
            let e = crate::analysis::embed::embed_works(&ws, &model, &dev, &control, &mut |d, n| {
                rep.progress(d as f32 / n.max(1) as f32, format!("embedding {d} / {n} works with {run_name}"))
            })
            .map_err(|e| e.to_string())?;
            rep.progress(1.0, "laying out");
            let map = crate::analysis::embed::culture_map(&e, 0);
            let pca = crate::analysis::pca::project_2d(&e.vectors);
            let hashes = e.ids.iter().map(|id| ws.catalog.artwork(*id).ok().and_then(|a| a.content_hash)).collect();
            Ok(MapData { run_name, map, ids: e.ids, cultures: e.cultures, hashes, pca })
        }));
    }

    pub fn job_idle(&self) -> bool {
        self.job.is_none()
    }

    /// What the view says while it has no map: never "train a run" when there is one.
    pub fn status_text(&self, shared: &Shared) -> String {
        if self.job.is_some() {
            "Embedding every work with the selected run's best model. Vectors are saved as they are \
             computed: if the app closes, the next visit continues from there."
                .into()
        } else if shared.runs.is_empty() {
            "Train a run first (Training view), then its culture map is computed here.".into()
        } else if self.error.is_some() {
            "The map could not be computed (see above); press Compute to try again.".into()
        } else {
            "Press \"Compute from the selected run\" to map the cultures as its model sees them.".into()
        }
    }

    fn restart_layout(&mut self) {
        if let Some(d) = &self.data {
            let settings = Fa2Settings { lin_log: self.lin_log, ..Default::default() };
            self.layout = Some(culture_map::layout(&d.map.similarity, self.seed, settings));
            self.running = true;
        }
    }

    fn poll(&mut self) {
        if let Some(job) = self.job.as_mut()
            && let Some(r) = job.poll()
        {
            self.job = None;
            match r {
                Ok(d) => {
                    self.threshold = Some(d.map.threshold);
                    self.data = Some(d);
                    self.error = None;
                    self.restart_layout();
                }
                Err(e) => self.error = Some(e),
            }
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        self.poll();
        if self.thumbs.is_none() {
            self.thumbs = Some(ThumbCache::new(ui.ctx(), 1, 60));
        }
        if let Some(t) = self.thumbs.as_mut() {
            t.poll(ui.ctx());
        }
        // The first visit computes the map of the selected run by itself.
        if !self.auto_started && self.data.is_none() && self.job.is_none() && shared.selected_run.is_some() {
            self.auto_started = true;
            self.compute(shared);
        }
        ui.horizontal_wrapped(|ui| {
            if ui.add_enabled(self.job.is_none(), egui::Button::new("Compute from the selected run")).clicked() {
                self.compute(shared);
            }
            for (t, name) in [
                (Tab::Force, "ForceAtlas2 map"),
                (Tab::Chord, "Chord diagram"),
                (Tab::Matrices, "Distances & similarities"),
                (Tab::Works, "Works (PCA)"),
            ] {
                ui.selectable_value(&mut self.tab, t, name);
            }
            if let Some(job) = &self.job {
                ui.spinner();
                ui.label(&job.message);
            }
        });
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        match &self.data {
            None => {
                ui.label(self.status_text(shared));
                return;
            }
            Some(d) => {
                ui.label(format!("Cultures as the best model of run {} sees them, {} works.", d.run_name, d.ids.len()));
            }
        }
        match self.tab {
            Tab::Force => self.force_ui(ui, shared),
            Tab::Chord => self.chord_ui(ui),
            Tab::Matrices => self.matrices_ui(ui, shared),
            Tab::Works => self.works_ui(ui, shared),
        }
    }

    fn force_ui(&mut self, ui: &mut egui::Ui, shared: &Shared) {
        ui.horizontal(|ui| {
            if ui
                .button("Re-run from a random start")
                .on_hover_text("The layout is stable up to rotation and reflection")
                .clicked()
            {
                self.seed += 1;
                self.restart_layout();
            }
            if ui.checkbox(&mut self.lin_log, "LinLog").changed() {
                self.restart_layout();
            }
            ui.checkbox(&mut self.running, "keep laying out");
            if let Some(l) = &self.layout {
                ui.label(format!("{} iterations", l.iterations));
            }
        });
        let (Some(d), Some(layout)) = (&self.data, self.layout.as_mut()) else { return };
        if self.running {
            let mut moved = 0.0;
            for _ in 0..20 {
                moved = layout.step();
            }
            let extent = layout.pos.iter().map(|p| p[0].abs().max(p[1].abs())).fold(1e-9, f64::max);
            if moved < 1e-4 * extent && self.dragging.is_none() {
                self.running = false;
            } else {
                ui.ctx().request_repaint();
            }
        }
        let (rect, resp) = ui.allocate_exact_size(ui.available_size(), Sense::click_and_drag());
        let painter = ui.painter_at(rect);
        let extent = layout.pos.iter().map(|p| p[0].abs().max(p[1].abs())).fold(1e-9, f64::max) as f32;
        let scale = rect.width().min(rect.height()) * 0.42 / extent * self.zoom;
        let centre = rect.center() + self.pan;
        let to_screen = |p: [f64; 2]| pos2(centre.x + p[0] as f32 * scale, centre.y + p[1] as f32 * scale);
        let m = &d.map;
        let max_count = m.counts.iter().copied().max().unwrap_or(1).max(1) as f32;
        let radius = |i: usize| 8.0 + 22.0 * (m.counts[i] as f32 / max_count).sqrt();
        let hover = resp
            .hover_pos()
            .and_then(|hp| (0..m.cultures.len()).find(|&i| to_screen(layout.pos[i]).distance(hp) <= radius(i)));
        if resp.hovered() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0 {
                self.zoom = (self.zoom * (1.0 + scroll * 0.002)).clamp(0.2, 10.0);
            }
        }
        if resp.drag_started() {
            self.dragging = hover;
        }
        if resp.dragged() {
            match self.dragging {
                Some(i) => {
                    let delta = resp.drag_delta() / scale;
                    layout.pos[i][0] += delta.x as f64;
                    layout.pos[i][1] += delta.y as f64;
                    layout.pinned[i] = true;
                    self.running = true;
                }
                None => self.pan += resp.drag_delta(),
            }
        }
        if resp.drag_stopped()
            && let Some(i) = self.dragging.take()
        {
            layout.pinned[i] = false;
        }
        if resp.clicked() {
            self.selected = hover;
        }
        let threshold = self.threshold.unwrap_or(m.threshold);
        let max_s = m.similarity.iter().flatten().copied().fold(1e-9, f64::max);
        for (i, row) in m.similarity.iter().enumerate() {
            for (j, &s) in row.iter().enumerate() {
                if j > i && (s >= threshold || m.similarity[j][i] >= threshold) {
                    let w = 1.0 + 5.0 * (s.max(m.similarity[j][i]) / max_s) as f32;
                    painter.line_segment(
                        [to_screen(layout.pos[i]), to_screen(layout.pos[j])],
                        Stroke::new(w, Color32::from_gray(150).gamma_multiply(0.6)),
                    );
                }
            }
        }
        for (i, name) in m.cultures.iter().enumerate() {
            let p = to_screen(layout.pos[i]);
            let c = to_color(culture_color(name));
            painter.circle(
                p,
                radius(i),
                c,
                Stroke::new(if Some(i) == self.selected { 3.0 } else { 1.0 }, ui.visuals().text_color()),
            );
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
            let thumbs = self.thumbs.as_mut();
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
        if let Some(i) = self.selected {
            let mut near: Vec<usize> = (0..m.cultures.len()).filter(|&j| j != i).collect();
            near.sort_by(|&a, &b| m.distance[i][a].total_cmp(&m.distance[i][b]));
            let text = near
                .iter()
                .map(|&j| format!("{} {:.2}", m.cultures[j], m.distance[i][j]))
                .collect::<Vec<_>>()
                .join("\n");
            painter.text(
                rect.right_top() + Vec2::new(-12.0, 12.0),
                egui::Align2::RIGHT_TOP,
                format!("Nearest to {}:\n{text}", m.cultures[i]),
                egui::FontId::proportional(13.0),
                ui.visuals().text_color(),
            );
        }
    }

    fn chord_ui(&mut self, ui: &mut egui::Ui) {
        let Some(d) = &self.data else { return };
        let m = &d.map;
        let mut t = self.threshold.unwrap_or(m.threshold);
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut t, 0.0..=1.0).text("similarity threshold"));
            if ui.button("top quartile").clicked() {
                t = m.threshold;
            }
            ui.label("Similarity is not symmetric: A to B is 1/d(A,B) over the sum of A's inverse distances.");
        });
        self.threshold = Some(t);
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
            painter.text(
                p,
                egui::Align2::CENTER_CENTER,
                name,
                egui::FontId::proportional(14.0),
                ui.visuals().text_color(),
            );
        }
    }

    fn matrices_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        let Some(d) = &self.data else { return };
        let m = &d.map;
        ui.horizontal(|ui| {
            if ui.button("Export distances and similarities as CSV…").clicked() {
                let m = m.clone();
                let picker = shared.picker.clone();
                shared.spawn("Export culture map", move |_| {
                    let Some(out) = picker(PickKind::SaveCsv).into_iter().next() else { return Ok("cancelled".into()) };
                    let mut w = csv::Writer::from_writer(Vec::new());
                    w.write_record(["from", "to", "distance", "similarity"]).map_err(|e| e.to_string())?;
                    for (i, a) in m.cultures.iter().enumerate() {
                        for (j, b) in m.cultures.iter().enumerate() {
                            w.write_record([
                                a.clone(),
                                b.clone(),
                                m.distance[i][j].to_string(),
                                m.similarity[i][j].to_string(),
                            ])
                            .map_err(|e| e.to_string())?;
                        }
                    }
                    let bytes = w.into_inner().map_err(|e| e.to_string())?;
                    crate::fsutil::write_bytes_atomic(&out, &bytes).map_err(|e| e.to_string())?;
                    Ok(format!("written to {}", out.display()))
                });
            }
            ui.label("Rows: from; columns: to. Similarity rows sum to 1 and are not symmetric.");
        });
        ui.columns(2, |cols| {
            heat_table(&mut cols[0], "L2 distance between mean embeddings", &m.cultures, &m.distance);
            heat_table(&mut cols[1], "Normalised similarity", &m.cultures, &m.similarity);
        });
    }

    fn works_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        let Some(d) = &self.data else { return };
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
                .map(|(i, q)| {
                    (i, resp.transform.position_from_point(&egui_plot::PlotPoint::new(q[0], q[1])).distance(hp))
                })
                .filter(|(_, dist)| *dist < 8.0)
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(i, _)| i)
        });
        let Some(i) = nearest else { return };
        let (id, culture) = (d.ids[i], d.cultures[i].clone());
        let thumb = shared
            .ws
            .as_ref()
            .and_then(|ws| d.hashes[i].as_ref().map(|h| crate::imaging::cache_path(&ws.thumbs_dir(), h)));
        let title = shared
            .ws
            .as_ref()
            .and_then(|ws| ws.catalog.artwork(id).ok())
            .map(|a| format!("{} ({})", a.title, a.display_id()))
            .unwrap_or_default();
        let tex = self.thumbs.as_mut().and_then(|t| t.get(id, thumb.as_ref()));
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
}

/// One entry per culture on the map, in its colour, with its region (the study's clusters).
fn legend_cultures(painter: &egui::Painter, rect: Rect, cultures: &[String], text: Color32) {
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
                super::widgets::heat_cell(ui, (x / max) as f32, format!("{x:.2}"), egui::vec2(40.0, 18.0));
            }
            ui.end_row();
        }
    });
}

#[cfg(test)]
mod tests {
    use crate::gui::View;
    use crate::gui::app::tests::{fixed_picker, harness, run_until};
    use egui_kittest::kittest::Queryable;

    #[test]
    fn the_status_says_what_is_happening_not_train_a_run_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(dir.path(), fixed_picker(vec![]));
        h.state_mut().view = View::Map;
        h.run_steps(2);
        h.get_by_label_contains("Train a run first");
        // A run without a checkpoint (it failed before its first epoch): the map is tried, and
        // its failure is what the view says.
        {
            let mut ws = crate::workspace::Workspace::open(dir.path()).unwrap();
            ws.catalog.create_run("early", "resnet50", "finetune", "StepLR", "{}", &[]).unwrap();
        }
        h.state_mut().shared.generation += 1;
        h.state_mut().shared.selected_run = Some("early".into());
        h.state_mut().shared.runs = crate::workspace::Workspace::open(dir.path()).unwrap().catalog.runs().unwrap();
        run_until(&mut h, |app| app.map.error.is_some() && app.map.job_idle());
        h.run_steps(2);
        assert!(h.query_by_label_contains("Train a run first").is_none());
        h.get_by_label_contains("could not be computed");
    }
}
