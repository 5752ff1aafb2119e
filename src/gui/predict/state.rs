//! The Predict view's state and its transitions, free of drawing and of threads: the predicted
//! images, which one is shown, the map settings (a change of map or class asks for a new
//! prediction), zoom and pan, and the rows the batch table exports. Unit-tested without a window.
use crate::predict::{CamKind, Prediction};
use std::path::PathBuf;

/// A finished prediction, ready to draw.
pub struct Shown {
    pub pred: Prediction,
    pub image: egui::ColorImage,
    pub map: egui::ColorImage,
    /// The model that made it: run (origin) and architecture.
    pub model: String,
}

/// Each image with its prediction or the reason it has none.
pub type Results = Vec<(PathBuf, Result<Shown, String>)>;

pub struct Item {
    pub path: PathBuf,
    pub result: Result<Shown, String>,
    /// The painting's and the map's textures, uploaded on the first frame that draws them.
    pub textures: Option<(egui::TextureHandle, egui::TextureHandle)>,
}

pub struct PredictState {
    pub items: Vec<Item>,
    pub current: usize,
    pub opacity: f32,
    pub show_overlay: bool,
    pub show_grid: bool,
    pub cam: CamKind,
    /// Grad-CAM's class ("why this culture?"); the top class when None.
    pub class: Option<String>,
    pub path_text: String,
    /// A checkpoint file chosen instead of the selected run's best model.
    pub checkpoint: Option<PathBuf>,
    pub zoom: f32,
    pub pan: egui::Vec2,
}

impl Default for PredictState {
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
            pan: egui::Vec2::ZERO,
        }
    }
}

impl PredictState {
    /// Takes the job's result: every image with its prediction or its own error, the first one
    /// shown at fit; a failure of the whole job (no model) becomes the one row.
    pub fn finish(&mut self, result: Result<Results, String>) {
        self.items = match result {
            Ok(list) => list.into_iter().map(|(path, result)| Item { path, result, textures: None }).collect(),
            Err(e) => vec![Item { path: PathBuf::new(), result: Err(e), textures: None }],
        };
        self.current = 0;
        self.reset_view();
    }

    /// Another map; true when the shown image must be predicted again.
    pub fn set_cam(&mut self, cam: CamKind) -> bool {
        if cam == self.cam {
            return false;
        }
        self.cam = cam;
        self.class = None;
        true
    }

    /// Grad-CAM for another of the top classes; true when it must be predicted again.
    pub fn set_class(&mut self, culture: &str) -> bool {
        if self.class.as_deref() == Some(culture) {
            return false;
        }
        self.class = Some(culture.to_string());
        true
    }

    pub fn zoom_by(&mut self, scroll: f32) {
        if scroll != 0.0 {
            self.zoom = (self.zoom * (1.0 + scroll * 0.002)).clamp(0.1, 20.0);
        }
    }

    /// The painting fitted to the canvas again.
    pub fn reset_view(&mut self) {
        self.zoom = 1.0;
        self.pan = egui::Vec2::ZERO;
    }

    /// The batch table as CSV rows: the file, then culture and probability of each top class,
    /// or the error.
    pub fn export_rows(&self) -> Vec<Vec<String>> {
        self.items
            .iter()
            .map(|it| {
                let mut r = vec![it.path.display().to_string()];
                match &it.result {
                    Ok(s) => s.pred.top.iter().for_each(|t| r.extend([t.culture.clone(), format!("{:.6}", t.p)])),
                    Err(e) => r.push(format!("error: {e}")),
                }
                r
            })
            .collect()
    }
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

    #[test]
    fn a_new_map_or_class_asks_for_a_prediction_and_the_same_one_does_not() {
        let mut s = PredictState::default();
        assert!(!s.set_cam(CamKind::Sum));
        assert!(s.set_class("Dutch") && !s.set_class("Dutch") && s.set_class("French"));
        assert!(s.set_cam(CamKind::Gradcam));
        assert_eq!(s.class, None, "a new map starts from the top class");
    }

    #[test]
    fn a_finished_batch_shows_its_first_image_at_fit_and_exports_every_row() {
        let mut s = PredictState { current: 3, zoom: 4.0, ..Default::default() };
        s.finish(Ok(vec![
            (PathBuf::from("a.jpg"), Err("a.jpg: cannot decode".into())),
            (PathBuf::from("b.jpg"), Err("b.jpg: too large".into())),
        ]));
        assert_eq!((s.current, s.zoom, s.items.len()), (0, 1.0, 2));
        assert_eq!(s.export_rows(), [["a.jpg", "error: a.jpg: cannot decode"], ["b.jpg", "error: b.jpg: too large"]]);
        s.finish(Err("no trained run yet".into()));
        assert_eq!(s.items.len(), 1);
        assert_eq!(error_sentence(s.items[0].result.as_ref().err().unwrap(), &s.items[0].path), "No trained run yet.");
    }
}
