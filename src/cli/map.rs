//! `artculture map`: the culture map as JSON and as a PNG of both figures.
use super::open_workspace;
use artculture::analysis::embed;
use artculture::model::device::DeviceKind;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn map(
    ws_dir: &Option<PathBuf>,
    run: Option<&str>,
    json: bool,
    png: Option<PathBuf>,
    device: DeviceKind,
) -> anyhow::Result<ExitCode> {
    let ws = open_workspace(ws_dir)?;
    let ckpt = artculture::predict::run_checkpoint(&ws, run)?;
    let run_id = run.map(str::to_owned).or_else(|| ws.catalog.best_run().ok().flatten().map(|r| r.id));
    if let Some(note) = run_id.and_then(|id| ws.catalog.run(&id).ok()).and_then(|r| r.origin_note()) {
        eprintln!("map of {note}");
    }
    let device = device.open()?;
    let bar = indicatif::ProgressBar::new(0);
    let model = artculture::model::checkpoint::load(&ckpt, &device)?;
    let e = embed::embed_works(&ws, &model, &device, &Default::default(), &mut |d, n| {
        bar.set_length(n as u64);
        bar.set_position(d as u64);
    })?;
    bar.finish_and_clear();
    let m = embed::culture_map(&e, 0);
    if json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        for (i, c) in m.cultures.iter().enumerate() {
            let near: Vec<String> = {
                let mut idx: Vec<usize> = (0..m.cultures.len()).filter(|&j| j != i).collect();
                idx.sort_by(|&a, &b| m.distance[i][a].total_cmp(&m.distance[i][b]));
                idx.iter().take(3).map(|&j| format!("{} {:.2}", m.cultures[j], m.distance[i][j])).collect()
            };
            eprintln!("{c:<12} {:>6} works; nearest: {}", m.counts[i], near.join(", "));
        }
    }
    if let Some(p) = png {
        let img = artculture::analysis::render::culture_map_png(&m);
        artculture::fsutil::write_atomic(&p, |f| {
            img.write_to(&mut std::io::BufWriter::new(f), image::ImageFormat::Png).map_err(std::io::Error::other)
        })?;
        eprintln!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
