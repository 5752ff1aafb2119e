//! The Predict view: open paintings (dialog, drag and drop, or a typed path), see the top-3
//! cultures as bars, and where the evidence lies: the study's activation map or Grad-CAM for any
//! of the top classes, blended over the painting with an opacity slider and a legend, aligned at
//! every zoom, with the network's centre crop framed. A folder predicts into a table exported as
//! CSV. All model work runs on a job thread.
use super::jobs::Job;
use super::shared::{PendingPick, PickKind, Shared};
use crate::analysis::activation::{Heatmap, inferno};
use crate::predict::{self, CamKind, Prediction};
use egui::{Color32, Rect, Sense, Vec2, pos2};
use std::path::PathBuf;

/// Longest side of the displayed painting texture.
const DISPLAY_SIDE: u32 = 2048;
/// Side of the upsampled map texture (values are interpolated before colouring).
const MAP_SIDE: usize = 224;

/// Each image with its prediction or the reason it has none.
type Results = Vec<(PathBuf, Result<Shown, String>)>;

/// A finished prediction, ready to draw.
pub struct Shown {
    pub pred: Prediction,
    image: egui::ColorImage,
    map: egui::ColorImage,
    pub model: String,
}

pub struct Item {
    pub path: PathBuf,
    pub result: Result<Shown, String>,
    textures: Option<(egui::TextureHandle, egui::TextureHandle)>,
}

#[derive(Clone)]
struct Request {
    images: Vec<PathBuf>,
    checkpoint: Option<PathBuf>,
    run: Option<String>,
    cam: CamKind,
    class: Option<String>,
}

pub struct PredictView {
    pub items: Vec<Item>,
    pub current: usize,
    pub opacity: f32,
    pub show_overlay: bool,
    pub show_grid: bool,
    pub cam: CamKind,
    pub class: Option<String>,
    pub path_text: String,
    checkpoint: Option<PathBuf>,
    zoom: f32,
    pan: Vec2,
    job: Option<Job<Results>>,
    pending: Option<(PickKind, PendingPick)>,
}

impl Default for PredictView {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            current: 0,
            opacity: 0.5,
            show_overlay: true,
            show_grid: false,
            cam: CamKind::Sum,
            class: None,
            path_text: String::new(),
            checkpoint: None,
            zoom: 1.0,
            pan: Vec2::ZERO,
            job: None,
            pending: None,
        }
    }
}

fn map_image(h: &Heatmap) -> egui::ColorImage {
    let mut px = Vec::with_capacity(MAP_SIDE * MAP_SIDE);
    for y in 0..MAP_SIDE {
        for x in 0..MAP_SIDE {
            let v = h.sample(
                (x as f32 + 0.5) / MAP_SIDE as f32 * h.width as f32,
                (y as f32 + 0.5) / MAP_SIDE as f32 * h.height as f32,
            );
            let [r, g, b] = inferno(v);
            px.push(Color32::from_rgb(r, g, b));
        }
    }
    egui::ColorImage::new([MAP_SIDE, MAP_SIDE], px)
}

/// Runs on a job thread: loads the model once and predicts every image, each failure kept for
/// its own row.
fn run_request(
    req: Request,
    ws_path: PathBuf,
    device: crate::model::device::DeviceKind,
    rep: &super::jobs::Reporter<Results>,
) -> Result<Results, String> {
    let dev = device.open().map_err(|e| e.to_string())?;
    let ws = crate::workspace::Workspace::open(&ws_path);
    let ckpt = match req.checkpoint {
        Some(c) => c,
        None => {
            let ws = ws.as_ref().map_err(|e| e.to_string())?;
            predict::run_checkpoint(ws, req.run.as_deref()).map_err(|e| e.to_string())?
        }
    };
    let model = predict::load_model(&ckpt, &dev).map_err(|e| e.to_string())?;
    let class = req.class.as_deref().map(|c| predict::class_index(&model, c)).transpose().map_err(|e| e.to_string())?;
    // A run of this workspace is named with its origin, so a demo's guesses read as a demo's.
    let run = model.meta.run_id.as_ref().and_then(|id| ws.as_ref().ok()?.catalog.run(id).ok());
    let name = match (run, &model.meta.run_id) {
        (Some(r), _) => format!("{} ({})", r.display_name(), model.meta.arch),
        (None, Some(id)) => format!("{id} ({})", model.meta.arch),
        (None, None) => format!("{} ({})", ckpt.display(), model.meta.arch),
    };
    let mut out = Vec::new();
    for (i, path) in req.images.iter().enumerate() {
        if rep.cancelled() {
            break;
        }
        rep.progress(i as f32 / req.images.len() as f32, format!("{} / {}", i, req.images.len()));
        // Decoded at the display's size where the format allows (large JPEGs).
        let decoded = crate::imaging::decode_file_reduced(path, DISPLAY_SIDE).map_err(|e| e.to_string());
        let r = decoded.and_then(|d| {
            predict::predict_rgb(&model, &d.rgb, path, 3, req.cam, class, &dev)
                .map(|p| (p, d.rgb))
                .map_err(|e| e.to_string())
        });
        let r = r.map(|(pred, img)| {
            let small = if img.width().max(img.height()) > DISPLAY_SIDE {
                image::imageops::thumbnail(&img, DISPLAY_SIDE, DISPLAY_SIDE)
            } else {
                img
            };
            let image = egui::ColorImage::from_rgb([small.width() as usize, small.height() as usize], small.as_raw());
            let map = map_image(&pred.heatmap);
            Shown { pred, image, map, model: name.clone() }
        });
        out.push((path.clone(), r));
    }
    Ok(out)
}

impl PredictView {
    /// Predicts these images with the selected run (or the chosen checkpoint).
    pub fn predict(&mut self, shared: &Shared, images: Vec<PathBuf>) {
        if images.is_empty() || self.job.is_some() {
            return;
        }
        let req = Request {
            images,
            checkpoint: self.checkpoint.clone(),
            run: shared.selected_run.clone(),
            cam: self.cam,
            class: self.class.clone(),
        };
        let (ws_path, device) = (shared.ws_path.clone(), shared.device);
        self.job = Some(Job::spawn(&shared.ctx, "Predict", move |rep| run_request(req, ws_path, device, rep)));
    }

    fn poll(&mut self, ctx: &egui::Context) {
        if let Some(job) = self.job.as_mut()
            && let Some(r) = job.poll()
        {
            self.job = None;
            match r {
                Ok(list) => {
                    self.items = list.into_iter().map(|(path, result)| Item { path, result, textures: None }).collect();
                    self.current = 0;
                    self.zoom = 1.0;
                    self.pan = Vec2::ZERO;
                }
                Err(e) => self.items = vec![Item { path: PathBuf::new(), result: Err(e), textures: None }],
            }
        }
        for it in &mut self.items {
            if it.textures.is_none()
                && let Ok(s) = &it.result
            {
                let img = ctx.load_texture(
                    format!("predict-{}", it.path.display()),
                    s.image.clone(),
                    egui::TextureOptions::LINEAR,
                );
                let map =
                    ctx.load_texture(format!("map-{}", it.path.display()), s.map.clone(), egui::TextureOptions::LINEAR);
                it.textures = Some((img, map));
            }
        }
    }

    fn toolbar(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        ui.horizontal_wrapped(|ui| {
            if ui.button("Open images…").clicked() {
                self.pending = Some((PickKind::ImageFiles, shared.ask(PickKind::ImageFiles)));
            }
            if ui.button("Predict a folder…").clicked() {
                self.pending = Some((PickKind::Folder, shared.ask(PickKind::Folder)));
            }
            let r = ui.add(
                egui::TextEdit::singleline(&mut self.path_text)
                    .hint_text("or paste an image path and press Enter")
                    .desired_width(260.0),
            );
            if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) && !self.path_text.trim().is_empty() {
                let p = PathBuf::from(self.path_text.trim());
                self.predict(shared, vec![p]);
            }
            ui.separator();
            if ui
                .button(match &self.checkpoint {
                    Some(c) => format!("checkpoint: {}", c.file_name().and_then(|n| n.to_str()).unwrap_or("?")),
                    None => "model: selected run".into(),
                })
                .on_hover_text("Click to use the selected run again")
                .clicked()
            {
                self.checkpoint = None;
            }
            if ui.button("Checkpoint file…").clicked() {
                self.pending = Some((PickKind::CheckpointFile, shared.ask(PickKind::CheckpointFile)));
            }
        });
        if let Some((kind, answer)) = self.pending.as_ref().and_then(|(k, p)| p.try_take().map(|a| (*k, a))) {
            self.pending = None;
            match kind {
                PickKind::CheckpointFile => self.checkpoint = answer.into_iter().next().or(self.checkpoint.take()),
                PickKind::Folder => {
                    let mut files: Vec<PathBuf> = answer
                        .iter()
                        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()))
                        .filter(|p| p.is_file())
                        .collect();
                    files.sort();
                    self.predict(shared, files);
                }
                _ => self.predict(shared, answer),
            }
        }
        let dropped: Vec<PathBuf> =
            ui.ctx().input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).collect());
        if !dropped.is_empty() {
            self.predict(shared, dropped);
        }
    }

    fn results_panel(&mut self, ui: &mut egui::Ui, shared: &Shared) {
        let Some(it) = self.items.get(self.current) else { return };
        let path = it.path.clone();
        let shown = match &it.result {
            Err(e) => {
                ui.strong(path.file_name().and_then(|n| n.to_str()).unwrap_or(""))
                    .on_hover_text(path.display().to_string());
                ui.add(
                    egui::Label::new(egui::RichText::new(error_sentence(e, &path)).color(ui.visuals().error_fg_color))
                        .wrap(),
                );
                return;
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
                    .fill(super::widgets::culture_color32(&r.culture).gamma_multiply(0.85))
                    .desired_width(240.0),
            );
        }
        ui.separator();
        ui.checkbox(&mut self.show_overlay, "show activation map");
        ui.add(egui::Slider::new(&mut self.opacity, 0.0..=1.0).text("opacity"));
        let mut rerun = false;
        ui.horizontal(|ui| {
            ui.label("map:");
            let before = self.cam;
            ui.selectable_value(&mut self.cam, CamKind::Sum, "channel sum (study)");
            ui.selectable_value(&mut self.cam, CamKind::Gradcam, "Grad-CAM");
            if self.cam != before {
                self.class = None;
                rerun = true;
            }
        });
        if self.cam == CamKind::Gradcam {
            ui.horizontal(|ui| {
                ui.label("why:");
                for r in &top {
                    if ui.selectable_label(self.class.as_deref() == Some(&r.culture), &r.culture).clicked() {
                        self.class = Some(r.culture.clone());
                        rerun = true;
                    }
                }
            });
        }
        if rerun {
            self.predict(shared, vec![path]);
        }
        legend(ui);
        ui.checkbox(&mut self.show_grid, "show the raw map values");
        if self.show_grid {
            egui::Grid::new("raw_map").spacing([2.0, 2.0]).show(ui, |ui| {
                for row in heatmap.rows() {
                    for v in row {
                        super::widgets::heat_cell(ui, v, format!("{v:.2}"), egui::vec2(30.0, 18.0));
                    }
                    ui.end_row();
                }
            });
        }
    }

    fn canvas(&mut self, ui: &mut egui::Ui) {
        let Some(it) = self.items.get(self.current) else {
            ui.centered_and_justified(|ui| ui.label("Open a painting, drop one on the window, or paste its path."));
            return;
        };
        let (Ok(s), Some((img_tex, map_tex))) = (&it.result, &it.textures) else { return };
        let (rect, resp) = ui.allocate_exact_size(ui.available_size(), Sense::click_and_drag());
        if resp.hovered() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0 {
                self.zoom = (self.zoom * (1.0 + scroll * 0.002)).clamp(0.1, 20.0);
            }
        }
        if resp.dragged() {
            self.pan += resp.drag_delta();
        }
        if resp.double_clicked() {
            self.zoom = 1.0;
            self.pan = Vec2::ZERO;
        }
        // The painting in its own pixel coordinates, fitted to the canvas, then zoomed and panned.
        let (w, h) = (s.pred.width as f32, s.pred.height as f32);
        let fit = (rect.width() / w).min(rect.height() / h) * self.zoom;
        let origin = rect.center() + self.pan - Vec2::new(w, h) * fit / 2.0;
        let to_screen = |x: f32, y: f32| pos2(origin.x + x * fit, origin.y + y * fit);
        let painter = ui.painter_at(rect);
        let uv = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
        painter.image(img_tex.id(), Rect::from_min_max(to_screen(0.0, 0.0), to_screen(w, h)), uv, Color32::WHITE);
        let f = s.pred.frame;
        let frame = Rect::from_min_max(to_screen(f.x, f.y), to_screen(f.x + f.side, f.y + f.side));
        if self.show_overlay {
            painter.image(map_tex.id(), frame, uv, Color32::from_white_alpha((self.opacity * 255.0) as u8));
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

    fn batch_table(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        if self.items.len() < 2 {
            return;
        }
        ui.horizontal(|ui| {
            ui.strong(format!("{} images", self.items.len()));
            if ui.button("Export CSV…").clicked() {
                let rows: Vec<Vec<String>> = self
                    .items
                    .iter()
                    .map(|it| {
                        let mut r = vec![it.path.display().to_string()];
                        match &it.result {
                            Ok(s) => {
                                s.pred.top.iter().for_each(|t| r.extend([t.culture.clone(), format!("{:.6}", t.p)]))
                            }
                            Err(e) => r.push(format!("error: {e}")),
                        }
                        r
                    })
                    .collect();
                let picker = shared.picker.clone();
                shared.spawn("Export predictions", move |_| {
                    let Some(out) = picker(PickKind::SaveCsv).into_iter().next() else { return Ok("cancelled".into()) };
                    let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
                    w.write_record(["file", "culture_1", "p_1", "culture_2", "p_2", "culture_3", "p_3"])
                        .map_err(|e| e.to_string())?;
                    for r in &rows {
                        w.write_record(r).map_err(|e| e.to_string())?;
                    }
                    let bytes = w.into_inner().map_err(|e| e.to_string())?;
                    crate::fsutil::write_bytes_atomic(&out, &bytes).map_err(|e| e.to_string())?;
                    Ok(format!("{} rows written to {}", rows.len(), out.display()))
                });
            }
        });
        egui::ScrollArea::vertical().max_height(180.0).show(ui, |ui| {
            egui::Grid::new("batch").striped(true).show(ui, |ui| {
                for (i, it) in self.items.iter().enumerate() {
                    if ui
                        .selectable_label(
                            i == self.current,
                            it.path.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                        )
                        .clicked()
                    {
                        self.current = i;
                    }
                    match &it.result {
                        Ok(s) => ui.label(
                            s.pred
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
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        self.poll(ui.ctx());
        self.toolbar(ui, shared);
        if let Some(job) = &self.job {
            let cancel = ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("predicting {}", job.message));
                ui.button("Cancel").clicked()
            });
            if cancel.inner {
                job.cancel();
            }
        }
        egui::Panel::right("predict_side").default_size(300.0).min_size(280.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| self.results_panel(ui, shared));
        });
        egui::Panel::bottom("predict_batch").resizable(true).show(ui, |ui| self.batch_table(ui, shared));
        egui::CentralPanel::default().show(ui, |ui| self.canvas(ui));
    }
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

/// An error as a sentence for a narrow panel: the image's full path (already shown above it,
/// and on hover) becomes its file name, so the text wraps between words rather than between
/// path components; a capital first letter (unless it is the file name), full stop at the end.
pub fn error_sentence(error: &str, path: &std::path::Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("the image");
    let full = path.display().to_string();
    let mut text = if full.is_empty() { error.to_string() } else { error.replace(&full, name) };
    // "x.jpg: x.jpg: cannot decode" -> "x.jpg: cannot decode"
    let doubled = format!("{name}: {name}: ");
    while text.contains(&doubled) {
        text = text.replacen(&doubled, &format!("{name}: "), 1);
    }
    // A file name keeps its case; a sentence starts with a capital.
    let mut out = if text.starts_with(name) {
        text
    } else {
        let mut chars = text.chars();
        chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_sentences_with_the_file_name() {
        let p = std::path::Path::new("/home/ann/paintings/dutch/landscape.jpg");
        let e = "/home/ann/paintings/dutch/landscape.jpg: image file is truncated: JPEG ends inside its image data";
        assert_eq!(error_sentence(e, p), "landscape.jpg: image file is truncated: JPEG ends inside its image data.");
        assert_eq!(error_sentence("no trained run yet", p), "No trained run yet.");
        assert_eq!(error_sentence("landscape.jpg: landscape.jpg: gone.", p), "landscape.jpg: gone.");
    }
}
