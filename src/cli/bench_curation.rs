//! The curation workload: the app's UI thread over generated catalogs (no images), driven as an
//! annotator drives it (typing a search, flagging one work by key, flagging 1,000 selected,
//! Ctrl+A and flagging all, Ctrl+Z), timing every frame the UI thread runs and how long each
//! change takes to be committed to the catalog.
use artculture::catalog::NewArtwork;
use artculture::gui::{ArtApp, View};
use egui::{Event, Key, Modifiers};
use std::path::Path;
use std::time::{Duration, Instant};

/// What one phase measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    pub name: &'static str,
    /// The slowest UI frame while the phase ran, in ms.
    pub worst_frame_ms: f64,
    /// From the key press to the catalog's commit (flags) or to the new list on screen.
    pub done_s: f64,
    pub frames: usize,
}

fn key(k: Key, modifiers: Modifiers) -> Event {
    Event::Key { key: k, physical_key: None, pressed: true, repeat: false, modifiers }
}

/// A workspace of `n` generated Met works (no images) over the study's 11 groups.
pub fn workspace(path: &Path, n: usize) -> anyhow::Result<()> {
    let mut ws = artculture::workspace::Workspace::open(path)?;
    let works: Vec<NewArtwork> = (0..n)
        .map(|i| NewArtwork {
            source: "met".into(),
            source_id: (100_000 + i).to_string(),
            title: format!("Landscape with figures {i}"),
            artist: format!("Painter {}", i % 997),
            mapped_group: Some(artculture::culture::STUDY_GROUPS[i % 11].into()),
            ..Default::default()
        })
        .collect();
    ws.catalog.upsert_artworks(&works)?;
    let groups: Vec<String> = artculture::culture::STUDY_GROUPS.iter().map(|s| s.to_string()).collect();
    ws.catalog.apply_group_threshold("met", &groups)?;
    Ok(())
}

struct Driver {
    ctx: egui::Context,
    app: ArtApp,
}

impl Driver {
    /// One frame with these input events; returns its UI-thread time (layout + tessellation).
    fn frame(&mut self, events: Vec<Event>) -> f64 {
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(1280.0, 800.0))),
            events,
            ..Default::default()
        };
        let start = Instant::now();
        let app = &mut self.app;
        let egui::FullOutput { shapes, pixels_per_point, mut textures_delta, .. } =
            self.ctx.run_ui(input, |ui| app.show(ui));
        textures_delta.clear();
        self.ctx.tessellate(shapes, pixels_per_point);
        start.elapsed().as_secs_f64() * 1e3
    }

    /// Runs a phase: its first frame carries `events`, then frames (every 4 ms, as a 240 Hz
    /// display would) until `done` holds.
    fn phase(
        &mut self,
        name: &'static str,
        events: Vec<Event>,
        done: impl Fn(&ArtApp) -> bool,
    ) -> anyhow::Result<Phase> {
        let start = Instant::now();
        let mut worst = self.frame(events);
        let mut frames = 1;
        while !done(&self.app) {
            anyhow::ensure!(start.elapsed() < Duration::from_secs(120), "{name}: not done after 120 s");
            std::thread::sleep(Duration::from_millis(4));
            worst = worst.max(self.frame(Vec::new()));
            frames += 1;
        }
        Ok(Phase { name, worst_frame_ms: worst, done_s: start.elapsed().as_secs_f64(), frames })
    }
}

pub fn run(dir: &Path, n: usize) -> anyhow::Result<Vec<Phase>> {
    let ws_path = dir.join(format!("curation_{n}"));
    workspace(&ws_path, n)?;
    let ctx = egui::Context::default();
    let picker: artculture::gui::shared::Picker = std::sync::Arc::new(|_| Vec::new());
    let mut app = ArtApp::new(&ctx, ws_path, Default::default(), Default::default(), None, picker);
    app.view = View::Curation;
    let mut d = Driver { ctx, app };
    // Fonts and the first layout are built once per process: not an interaction.
    for _ in 0..3 {
        d.frame(Vec::new());
    }
    let listed = |k: usize| move |a: &ArtApp| a.curation.idle() && a.curation.state.items.len() == k;
    let idle = |a: &ArtApp| a.curation.idle();
    let mut phases = vec![d.phase("open", Vec::new(), listed(n))?];
    // Typing "figures 12" one key per frame: each keystroke asks for a new list.
    let start = Instant::now();
    let (mut worst, mut frames) = (0f64, 0);
    for ch in "figures 12".chars() {
        d.app.curation.state.filters.text.push(ch);
        d.app.curation.invalidate();
        worst = worst.max(d.frame(vec![Event::Text(ch.to_string())]));
        frames += 1;
        std::thread::sleep(Duration::from_millis(30));
    }
    let typed = d.phase("search", Vec::new(), idle)?;
    phases.push(Phase {
        name: "type a search",
        worst_frame_ms: worst.max(typed.worst_frame_ms),
        done_s: start.elapsed().as_secs_f64(),
        frames: frames + typed.frames,
    });
    d.app.curation.state.filters.text.clear();
    d.app.curation.invalidate();
    phases.push(d.phase("clear the search", Vec::new(), listed(n))?);
    phases.push(d.phase("flag one (key 1)", vec![key(Key::Num1, Modifiers::NONE)], idle)?);
    d.app.curation.state.click(10, false, false);
    d.app.curation.state.click(1009, false, true);
    phases.push(d.phase("flag 1,000 selected (key 2)", vec![key(Key::Num2, Modifiers::NONE)], idle)?);
    phases.push(d.phase("select all (Ctrl+A)", vec![key(Key::A, Modifiers::COMMAND)], |a: &ArtApp| {
        a.curation.state.selection.len() == n
    })?);
    phases.push(d.phase("flag all (key 3)", vec![key(Key::Num3, Modifiers::NONE)], idle)?);
    phases.push(d.phase("undo flag all (Ctrl+Z)", vec![key(Key::Z, Modifiers::COMMAND)], idle)?);
    // The catalog agrees with what the view shows: the 1,000 selected and the single one
    // (which may be among them) are flagged again after undoing "flag all".
    let ws = d.app.shared.ws.as_ref().ok_or_else(|| anyhow::anyhow!("no workspace"))?;
    let stats = ws.catalog.stats()?;
    let flagged = stats.total_initial - stats.total_final;
    let shown = d.app.curation.state.items.iter().filter(|a| a.flag.is_some()).count();
    anyhow::ensure!(
        shown == flagged && (1000..=1001).contains(&flagged),
        "after undoing 'flag all': the view shows {shown} flags, the catalog holds {flagged}"
    );
    Ok(phases)
}
