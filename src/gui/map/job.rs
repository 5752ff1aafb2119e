//! The Culture map's background work: embedding every work with the selected run's best model
//! (resumable: the vectors are saved as they come) and writing the matrices out as CSV.
use super::state::MapData;
use crate::analysis::culture_map::CultureMap;
use crate::gui::jobs::Job;
use crate::gui::shared::{PickKind, Shared};

/// Embeds the works with the selected run's model, then builds the map and the PCA.
pub fn spawn_map(shared: &Shared) -> Job<MapData> {
    let (ws_path, run, device) = (shared.ws_path.clone(), shared.selected_run.clone(), shared.device);
    Job::spawn(&shared.ctx, "Culture map", move |rep| {
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
    })
}

/// Asks where to save, then writes every (from, to) pair's distance and similarity atomically.
pub fn export_csv(shared: &mut Shared, m: &CultureMap) {
    let m = m.clone();
    let picker = shared.picker.clone();
    shared.spawn("Export culture map", move |_| {
        let Some(out) = picker(PickKind::SaveCsv).into_iter().next() else { return Ok("cancelled".into()) };
        let bytes = matrices_csv(&m).map_err(|e| e.to_string())?;
        crate::fsutil::write_bytes_atomic(&out, &bytes).map_err(|e| e.to_string())?;
        Ok(format!("written to {}", out.display()))
    });
}

/// One row per ordered pair of cultures: from, to, distance, similarity.
fn matrices_csv(m: &CultureMap) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["from", "to", "distance", "similarity"])?;
    for (i, a) in m.cultures.iter().enumerate() {
        for (j, b) in m.cultures.iter().enumerate() {
            w.write_record([a, b, &m.distance[i][j].to_string(), &m.similarity[i][j].to_string()])?;
        }
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_csv_has_every_ordered_pair_with_both_measures() {
        let names: Vec<String> = ["A", "B"].map(String::from).to_vec();
        let m = crate::analysis::culture_map::build(&names, &[vec![0.0], vec![3.0]], &[0, 1], 0);
        let text = String::from_utf8(super::matrices_csv(&m).unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, ["from,to,distance,similarity", "A,A,0,0", "A,B,3,1", "B,A,3,1", "B,B,0,0"]);
    }
}
