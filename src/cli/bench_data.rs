//! Inputs the benchmarks generate: a MetObjects.csv of the real shape, and a 10,000-work
//! workspace for the curation grid's frame time.
use std::io::Write;
use std::path::Path;

/// A CSV with the real 54-column header and BOM, rows as long as real ones (~600 bytes, quoted
/// fields with commas, `|`-separated artists), about 2% paintings like the real file.
pub fn write_met_csv(path: &Path, rows: usize) -> anyhow::Result<()> {
    let header = "\u{feff}Object Number,Is Highlight,Is Timeline Work,Is Public Domain,Object ID,Gallery Number,Department,AccessionYear,Object Name,Title,Culture,Period,Dynasty,Reign,Portfolio,Constituent ID,Artist Role,Artist Prefix,Artist Display Name,Artist Display Bio,Artist Suffix,Artist Alpha Sort,Artist Nationality,Artist Begin Date,Artist End Date,Artist Gender,Artist ULAN URL,Artist Wikidata URL,Object Date,Object Begin Date,Object End Date,Medium,Dimensions,Credit Line,Geography Type,City,State,County,Country,Region,Subregion,Locale,Locus,Excavation,River,Classification,Rights and Reproduction,Link Resource,Object Wikidata URL,Metadata Date,Repository,Tags,Tags AAT URL,Tags Wikidata URL\r\n";
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    f.write_all(header.as_bytes())?;
    let cultures = ["", "China", "Japan", "India (Gujarat)", "American", "France"];
    for i in 0..rows {
        let painting = i % 50 == 0;
        let class = if painting { "Paintings" } else { ["Prints", "Ceramics", "Textiles-Woven", "Metalwork"][i % 4] };
        writeln!(
            f,
            "{i}.{}.{},False,False,{},{i},{},The American Wing,19{:02},Coin,\"Title of object {i}, with a comma\",{},,,,,{},Maker|Publisher, ,James Barton Longacre|Someone Else,\"American, Delaware County, Pennsylvania 1794–1869 Philadelphia, Pennsylvania\", ,\"Longacre, James Barton\",American|French,1794,1869,,http://vocab.getty.edu/page/ulan/500011409,https://www.wikidata.org/wiki/Q3806459,1853,1853,1853,\"Oil on canvas, gilt frame\",\"24 x 30 in. (61 x 76.2 cm)\",\"Gift of Heinz L. Stoppelmann, 1979\",,,,,{},,,,,,,{class},,http://www.metmuseum.org/art/collection/search/{i},,,\"Metropolitan Museum of Art, New York, NY\",Portraits|Men,http://vocab.getty.edu/page/aat/300015637,https://www.wikidata.org/wiki/Q134307\r",
            i % 97,
            i % 13,
            if i % 3 == 0 { "True" } else { "False" },
            i % 900,
            i % 100,
            cultures[i % cultures.len()],
            16429 + i,
            ["", "United States", "England"][i % 3],
        )?;
    }
    f.flush()?;
    Ok(())
}

#[cfg(feature = "gui")]
/// CPU time per frame of the Curation view over a workspace of `n` works, scrolling every frame
/// (layout and tessellation, no GPU), and the most textures held at once.
pub fn grid_frame_time(dir: &Path, n: usize, frames: usize) -> anyhow::Result<(f64, usize, usize)> {
    use artculture::gui::{ArtApp, View};
    let ws_path = dir.join("grid_ws");
    crate::cli::bench_curation::workspace(&ws_path, n)?;
    let ctx = egui::Context::default();
    let picker: artculture::gui::shared::Picker = std::sync::Arc::new(|_| Vec::new());
    let mut app = ArtApp::new(&ctx, ws_path, Default::default(), Default::default(), None, picker);
    app.view = View::Curation;
    let input = |scroll: f32| egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(1280.0, 800.0))),
        events: vec![
            egui::Event::PointerMoved(egui::pos2(400.0, 400.0)),
            egui::Event::MouseWheel {
                unit: egui::MouseWheelUnit::Point,
                delta: egui::vec2(0.0, scroll),
                phase: egui::TouchPhase::Move,
                modifiers: Default::default(),
                source: egui::MouseWheelSource::Wheel,
            },
        ],
        ..Default::default()
    };
    let frame = |app: &mut ArtApp, scroll: f32| {
        let egui::FullOutput { shapes, pixels_per_point, mut textures_delta, .. } =
            ctx.run_ui(input(scroll), |ui| app.show(ui));
        // No GPU here: the texture uploads a renderer would do are dropped.
        textures_delta.clear();
        ctx.tessellate(shapes, pixels_per_point);
    };
    // The list loads on the Curation view's worker: wait for it.
    let start = std::time::Instant::now();
    while !(app.curation.idle() && app.curation.state.items.len() == n) {
        anyhow::ensure!(start.elapsed().as_secs() < 60, "the grid did not load in 60 s");
        frame(&mut app, 0.0);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let start = std::time::Instant::now();
    for i in 0..frames {
        frame(&mut app, if i % 40 < 20 { -300.0 } else { 300.0 });
    }
    Ok((
        start.elapsed().as_secs_f64() / frames as f64,
        app.curation.thumbs_loaded_max(),
        app.curation.state.items.len(),
    ))
}
