//! The Predict view's background work: loading the model once and predicting every image (a
//! folder is listed here, off the UI thread), each failure kept for its own row; and writing the
//! batch table out as CSV.
use super::state::{Results, Shown};
use crate::analysis::activation::{Heatmap, inferno};
use crate::gui::jobs::{Job, Reporter};
use crate::gui::shared::{PickKind, Shared};
use crate::predict::{self, CamKind};
use egui::Color32;
use std::path::PathBuf;

/// Longest side of the displayed painting texture.
const DISPLAY_SIDE: u32 = 2048;
/// Side of the upsampled map texture (values are interpolated before colouring).
const MAP_SIDE: usize = 224;

#[derive(Clone)]
pub struct Request {
    /// Image files, or folders whose files are all predicted.
    pub images: Vec<PathBuf>,
    pub checkpoint: Option<PathBuf>,
    pub run: Option<String>,
    pub cam: CamKind,
    pub class: Option<String>,
}

pub fn spawn(shared: &Shared, req: Request) -> Job<Results> {
    let (ws_path, device) = (shared.ws_path.clone(), shared.device);
    Job::spawn(&shared.ctx, "Predict", move |rep| run_request(req, ws_path, device, rep))
}

/// The files to predict: each file as given, each folder's files in name order.
fn expand_folders(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Runs on a job thread: loads the model once and predicts every image, each failure kept for
/// its own row.
fn run_request(
    req: Request,
    ws_path: PathBuf,
    device: crate::model::device::DeviceKind,
    rep: &Reporter<Results>,
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
    let images = expand_folders(&req.images);
    let mut out = Vec::new();
    for (i, path) in images.iter().enumerate() {
        if rep.cancelled() {
            break;
        }
        rep.progress(i as f32 / images.len() as f32, format!("{} / {}", i, images.len()));
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

/// Asks where to save, then writes the batch table's rows atomically.
pub fn export_csv(shared: &mut Shared, rows: Vec<Vec<String>>) {
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_folder_expands_to_its_files_in_name_order_and_files_stay_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("batch");
        std::fs::create_dir_all(folder.join("nested")).unwrap();
        for name in ["b.jpg", "a.png", "c.txt"] {
            std::fs::write(folder.join(name), b"x").unwrap();
        }
        let single = dir.path().join("z.jpg");
        let got = super::expand_folders(&[single.clone(), folder.clone()]);
        assert_eq!(got, [single, folder.join("a.png"), folder.join("b.jpg"), folder.join("c.txt")]);
    }
}
