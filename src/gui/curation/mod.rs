//! The Curation view: a thumbnail grid of the workspace's works where annotators flag
//! mis-tagged non-paintings by keyboard, with filters, multi-select, undo and a live Table 1.
//! The view's glue and keyboard input live here; drawing in `draw.rs`; the state and its
//! transitions in `state.rs`; every catalog read and write in `worker.rs`, off the UI thread; the
//! suspicion ranking and the CSV export in `jobs.rs`.
mod draw;
pub(crate) mod jobs;
mod state;
pub mod worker;

pub use state::{CurationState, Filters, FlagFilter, Sort};
use worker::{Reply, Request, Worker};

use super::shared::Shared;
use super::thumbs::ThumbCache;
use crate::catalog::{DatasetStats, FlagReason};
use egui::{Key, Modifiers, RichText};

pub struct CurationView {
    pub state: CurationState,
    thumbs: Option<ThumbCache>,
    loaded_generation: Option<u64>,
    stats: Option<DatasetStats>,
    pub zoom: f32,
    pub show_help: bool,
    pub show_large: bool,
    note: String,
    suspicion_job: Option<super::jobs::Job<jobs::Ranking>>,
    scroll_to_cursor: bool,
    scroll_y: f32,
    worker: Option<Worker>,
    /// The latest load asked for; older answers are ignored.
    load_token: Option<u64>,
    /// Undo and redo requests not answered yet.
    undos_in_flight: std::collections::BTreeSet<u64>,
    /// Suspicion scores shared with the worker's loads.
    scores: worker::Scores,
    /// CLIP similarities of the last search or "more like this".
    similarity: worker::Scores,
    clip_job: Option<crate::gui::jobs::Job<std::collections::HashMap<i64, f64>>>,
    /// CLIP and its index, kept between queries.
    clip_session: jobs::SharedClipSession,
    /// The search box's words.
    clip_text: String,
}

impl Default for CurationView {
    fn default() -> Self {
        Self {
            state: CurationState::default(),
            thumbs: None,
            loaded_generation: None,
            stats: None,
            zoom: 140.0,
            show_help: false,
            show_large: false,
            note: String::new(),
            suspicion_job: None,
            scroll_to_cursor: false,
            scroll_y: 0.0,
            worker: None,
            load_token: None,
            undos_in_flight: Default::default(),
            scores: Default::default(),
            similarity: Default::default(),
            clip_job: None,
            clip_session: Default::default(),
            clip_text: String::new(),
        }
    }
}

/// Keys and what they do, shown in the help overlay.
pub const KEYS: &[(&str, &str)] = &[
    ("Arrow keys", "move"),
    ("1 to 7", "flag as sculpture, book, manuscript, container, jewelry, snuff box, other (then next)"),
    ("0 or U", "remove the flag"),
    ("A", "accept the reason CLIP suggests (for the selection: each work its own)"),
    ("Click / Ctrl+click / Shift+click", "select one / toggle / select a range"),
    ("Ctrl+A", "select every work in the filter"),
    ("Esc", "clear the selection, close overlays"),
    ("Space", "show the work large with its record"),
    ("Ctrl+Z / Ctrl+Shift+Z", "undo / redo (also after a restart)"),
    ("?", "this help"),
];

impl CurationView {
    /// The worker for the open workspace (a new one when the workspace changed).
    fn worker(&mut self, shared: &Shared) -> Option<&mut Worker> {
        shared.ws.as_ref()?;
        if self.worker.as_ref().is_none_or(|w| w.ws_path != shared.ws_path) {
            self.worker = Some(Worker::spawn(&shared.ws_path, shared.ctx.clone()));
            self.load_token = None;
        }
        self.worker.as_mut()
    }

    /// Asks for the list under the current filters; the view shows the old one until it comes.
    fn reload(&mut self, shared: &mut Shared) {
        let filters = self.state.filters.clone();
        let scores = if filters.sort == Sort::Similar { self.similarity.clone() } else { self.scores.clone() };
        if let Some(w) = self.worker(shared) {
            self.load_token = Some(w.send(|token| Request::Load { token, filters, scores }));
        }
        self.loaded_generation = Some(shared.generation);
    }

    /// Lists anew at the next frame (after a change of filters made outside the toolbar).
    pub fn invalidate(&mut self) {
        self.loaded_generation = None;
    }

    /// Whether nothing is on its way to or from the catalog (no load, flag or undo in flight).
    pub fn idle(&self) -> bool {
        self.load_token.is_none() && self.state.pending.is_empty() && self.undos_in_flight.is_empty()
    }

    /// Takes in what the worker finished since the last frame.
    fn poll_worker(&mut self, shared: &mut Shared) {
        let Some(w) = &self.worker else { return };
        let mut replies = Vec::new();
        while let Some(r) = w.try_recv() {
            replies.push(r);
        }
        for r in replies {
            match r {
                Reply::Loaded { token, items, index, stats } => {
                    if self.load_token != Some(token) {
                        if let Some(w) = &self.worker {
                            w.discard(items);
                        }
                        continue;
                    }
                    self.load_token = None;
                    let old = self.state.set_items(items, index);
                    if let Some(w) = &self.worker {
                        w.discard(old);
                    }
                    self.stats = stats.or(self.stats.take());
                }
                Reply::Flagged { changes, stats, .. } => {
                    self.state.finish_flag(&changes);
                    self.stats = stats.or(self.stats.take());
                    self.changed_here(shared);
                }
                Reply::Undone { token, changed, stats } => {
                    self.undos_in_flight.remove(&token);
                    self.state.apply_states(&changed);
                    self.stats = stats.or(self.stats.take());
                    if !changed.is_empty() {
                        self.scroll_to_cursor = true;
                        self.changed_here(shared);
                    }
                }
                Reply::Crashed { error } => {
                    // What was in flight is unknown: list anew to show what the catalog holds.
                    self.state.fail_all(format!("not saved: {error}"));
                    self.load_token = None;
                    self.undos_in_flight.clear();
                    self.loaded_generation = None;
                }
                Reply::Failed { token, error, changes } => {
                    if self.load_token == Some(token) {
                        self.load_token = None;
                    }
                    self.undos_in_flight.remove(&token);
                    self.state.fail_flag(&changes, error);
                }
            }
        }
    }

    /// The catalog changed through this view: other views reload.
    fn changed_here(&mut self, shared: &mut Shared) {
        shared.generation += 1;
        if self.loaded_generation.is_some() {
            self.loaded_generation = Some(shared.generation);
        }
    }

    /// Table 1's final total as this view shows it.
    pub fn table1_final(&self) -> Option<usize> {
        self.stats.as_ref().map(|s| s.total_final)
    }

    /// The most grid textures held at once so far (the memory bound the cache keeps).
    pub fn thumbs_loaded_max(&self) -> usize {
        self.thumbs.as_ref().map(|t| t.loaded().max(t.capacity)).unwrap_or(0)
    }

    /// Puts the cursor on a work (clearing filters that would hide it).
    pub fn focus(&mut self, id: i64) {
        self.state.filters = Filters::default();
        self.state.focus_after_reload = Some(id);
        self.loaded_generation = None;
        self.scroll_to_cursor = true;
    }

    /// Flags the targets: shown at once as "saving", written by the worker.
    fn flag(&mut self, shared: &mut Shared, reason: Option<FlagReason>) {
        let note = Some(std::mem::take(&mut self.note)).filter(|n| !n.trim().is_empty());
        let changes = self.state.begin_flag(reason, note);
        self.send_flags(shared, changes);
    }

    /// Sends flag changes (already shown as pending) to the worker as one batch.
    fn send_flags(&mut self, shared: &mut Shared, changes: Vec<crate::catalog::FlagChange>) {
        if changes.is_empty() {
            return;
        }
        self.scroll_to_cursor = true;
        match self.worker(shared) {
            Some(w) => {
                w.send(|token| Request::Flag { token, changes });
            }
            None => self.state.fail_flag(&changes, "not saved: no workspace is open".into()),
        }
    }

    /// Starts ranking the works by suspicion (what "Rank suspicious" does).
    pub fn start_ranking(&mut self, shared: &Shared) {
        if self.suspicion_job.is_none() {
            self.suspicion_job = Some(jobs::spawn_suspicion(shared));
        }
    }

    /// Flags the target works with the reason CLIP suggests for each (one undoable batch).
    fn accept_suggestions(&mut self, shared: &mut Shared) {
        let changes = self.state.begin_accept_suggestions();
        self.send_flags(shared, changes);
    }

    fn undo(&mut self, shared: &mut Shared, redo: bool) {
        if let Some(w) = self.worker(shared) {
            let token = w.send(|token| Request::Undo { token, redo });
            self.undos_in_flight.insert(token);
        }
    }

    fn columns(&self, width: f32) -> usize {
        ((width / (self.zoom + 8.0)).floor() as usize).max(1)
    }

    /// Keyboard handling; `cols` is the grid's current number of columns.
    pub fn handle_keys(&mut self, ui: &egui::Ui, shared: &mut Shared, cols: usize) {
        if ui.ctx().egui_wants_keyboard_input() {
            return;
        }
        let pressed = |m: Modifiers, k: Key| ui.input_mut(|i| i.consume_key(m, k));
        let moves = [
            (Key::ArrowRight, 1isize),
            (Key::ArrowLeft, -1),
            (Key::ArrowDown, cols as isize),
            (Key::ArrowUp, -(cols as isize)),
        ];
        for (k, d) in moves {
            if pressed(Modifiers::NONE, k) {
                self.state.move_cursor(d);
                self.scroll_to_cursor = true;
            }
        }
        if pressed(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z) || pressed(Modifiers::COMMAND, Key::Y) {
            self.undo(shared, true);
        } else if pressed(Modifiers::COMMAND, Key::Z) {
            self.undo(shared, false);
        }
        if pressed(Modifiers::COMMAND, Key::A) {
            self.state.select_all();
        }
        let digits = [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num5, Key::Num6, Key::Num7];
        for (k, r) in digits.into_iter().zip(FlagReason::ALL) {
            if pressed(Modifiers::NONE, k) {
                self.flag(shared, Some(r));
            }
        }
        if pressed(Modifiers::NONE, Key::Num0) || pressed(Modifiers::NONE, Key::U) {
            self.flag(shared, None);
        }
        if pressed(Modifiers::NONE, Key::A) {
            self.accept_suggestions(shared);
        }
        if pressed(Modifiers::NONE, Key::Space) {
            self.show_large = !self.show_large;
        }
        if pressed(Modifiers::NONE, Key::Escape) {
            self.state.selection.clear();
            self.show_large = false;
            self.show_help = false;
        }
        if ui.input(|i| i.events.iter().any(|e| matches!(e, egui::Event::Text(t) if t == "?"))) {
            self.show_help = !self.show_help;
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        self.poll_worker(shared);
        if self.thumbs.is_none() {
            // 600 textures of at most 192 x 192 RGBA: under 90 MB.
            self.thumbs = Some(ThumbCache::new(ui.ctx(), 2, 600));
        }
        if let Some(t) = self.thumbs.as_mut() {
            t.poll(ui.ctx());
        }
        if let Some(job) = self.suspicion_job.as_mut()
            && let Some(r) = job.poll()
        {
            self.suspicion_job = None;
            match r {
                Ok((list, ranked_by)) => {
                    // The most suspicious work under the cursor, in view: where an annotator starts.
                    self.state.focus_after_reload = list.first().map(|s| s.artwork_id);
                    self.scroll_to_cursor = true;
                    self.scores = std::sync::Arc::new(list.iter().map(|s| (s.artwork_id, s.score)).collect());
                    self.state.suspicion = list.into_iter().map(|s| (s.artwork_id, s)).collect();
                    self.state.ranked_by = Some(ranked_by);
                    self.state.filters.sort = Sort::Suspicious;
                    self.loaded_generation = None;
                }
                Err(e) => self.state.last_error = Some(e),
            }
        }
        if let Some(job) = self.clip_job.as_mut()
            && let Some(r) = job.poll()
        {
            self.clip_job = None;
            match r {
                Ok(sims) => {
                    self.state.focus_after_reload =
                        sims.iter().max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0))).map(|(id, _)| *id);
                    self.scroll_to_cursor = true;
                    self.similarity = std::sync::Arc::new(sims);
                    self.state.filters.sort = Sort::Similar;
                    self.loaded_generation = None;
                }
                Err(e) => self.state.last_error = Some(e),
            }
        }
        if self.loaded_generation != Some(shared.generation) {
            self.reload(shared);
        }
        if self.toolbar(ui, shared) {
            self.reload(shared);
            if let Some(t) = self.thumbs.as_mut() {
                t.forget_queue();
            }
        }
        if let Some(job) = &self.suspicion_job {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("ranking: {}", job.message));
            });
        } else if let Some(job) = &self.clip_job {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("CLIP: {}", job.message));
            });
        } else if self.state.filters.sort == Sort::Suspicious
            && let Some(by) = self.state.ranked_by
            && !by.uses_model()
            && !self.state.suspicion.is_empty()
        {
            let note = match by {
                crate::analysis::rank::RankedBy::Clip => {
                    "Ranked by CLIP zero-shot (no trained model yet): A accepts the suggested reason."
                }
                _ => {
                    "Ranked by image statistics (aspect ratio, plain background): no trained model yet; \
                      `artculture weights fetch clip` lets CLIP rank."
                }
            };
            ui.label(RichText::new(note).italics());
        }
        let cols = self.columns(ui.available_width() - 300.0);
        self.handle_keys(ui, shared, cols);
        egui::Panel::right("curation_side").default_size(290.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| self.side_panel(ui, shared));
        });
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.label(format!("{} works listed", self.state.items.len()));
                if self.load_token.is_some() {
                    ui.spinner();
                }
                let saving = self.state.pending.len();
                if saving > 0 {
                    ui.label(format!("saving {saving} flag(s)…"));
                }
            });
            if self.state.items.is_empty() {
                ui.label("Nothing to curate here: import works in the Dataset view, or loosen the filters.");
            }
            self.grid(ui, shared);
        });
        self.overlays(ui, shared);
    }
}

#[cfg(test)]
mod clip_tests;
#[cfg(test)]
mod tests {
    use crate::gui::View;
    use crate::gui::app::tests::{fixed_picker, harness, run_until};
    use egui::{Key, Modifiers};
    use egui_kittest::kittest::Queryable;

    /// A workspace with `n` Met works alternating French and Dutch, and the app on Curation.
    pub(super) fn app_with(n: usize) -> (tempfile::TempDir, egui_kittest::Harness<'static, crate::gui::ArtApp>) {
        let dir = tempfile::tempdir().unwrap();
        let mut ws = crate::workspace::Workspace::open(dir.path()).unwrap();
        super::worker::fill_test_catalog(&mut ws.catalog, n, 1000);
        drop(ws);
        let mut h = harness(dir.path(), fixed_picker(vec![]));
        h.state_mut().view = View::Curation;
        h.run_steps(3);
        run_until(&mut h, |app| app.curation.idle() && app.curation.state.items.len() == n);
        (dir, h)
    }

    pub(super) fn flag_of(h: &egui_kittest::Harness<'static, crate::gui::ArtApp>, source_id: &str) -> Option<String> {
        let ws = h.state().shared.ws.as_ref().unwrap();
        let id = ws.catalog.resolve_id(source_id).unwrap();
        ws.catalog.flag_state(id).unwrap().reason
    }

    /// Runs frames until the view has nothing in flight.
    pub(super) fn settle(h: &mut egui_kittest::Harness<'static, crate::gui::ArtApp>) {
        h.run_steps(1);
        run_until(h, |app| app.curation.idle());
    }

    #[test]
    fn keyboard_flagging_advances_and_commits() {
        let (_d, mut h) = app_with(12);
        h.key_press(Key::Num2);
        h.run_steps(1);
        // The cursor moves on at once, before the catalog has confirmed.
        assert_eq!(h.state().curation.state.cursor, 1);
        settle(&mut h);
        assert_eq!(flag_of(&h, "1000").as_deref(), Some("book"));
        assert_eq!(h.state().curation.state.items[0].flag.as_deref(), Some("book"));
        h.key_press(Key::ArrowRight);
        h.key_press(Key::Num6);
        settle(&mut h);
        assert_eq!(flag_of(&h, "1002").as_deref(), Some("snuff-box"));
        // Table 1 is live: 12 initial, 10 final.
        let stats = h.state().shared.ws.as_ref().unwrap().catalog.stats().unwrap();
        assert_eq!((stats.total_initial, stats.total_final), (12, 10));
        run_until(&mut h, |app| app.curation.table1_final() == Some(10));
        h.get_by_label("Table 1 (live)");
        // U removes the flag of the work under the cursor (it moved on to 1003, go back).
        h.key_press(Key::ArrowLeft);
        h.key_press(Key::U);
        settle(&mut h);
        assert_eq!(flag_of(&h, "1002"), None);
    }

    #[test]
    fn bulk_flag_then_undo_and_redo() {
        let (_d, mut h) = app_with(10);
        h.key_press_modifiers(Modifiers::COMMAND, Key::A);
        h.run_steps(1);
        assert_eq!(h.state().curation.state.selection.len(), 10);
        h.key_press(Key::Num5);
        settle(&mut h);
        assert!((0..10).all(|i| flag_of(&h, &(1000 + i).to_string()).as_deref() == Some("jewelry")));
        h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
        settle(&mut h);
        assert!((0..10).all(|i| flag_of(&h, &(1000 + i).to_string()).is_none()));
        assert!(h.state().curation.state.items.iter().all(|a| a.flag.is_none()), "the grid shows the undo");
        h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
        settle(&mut h);
        assert_eq!(flag_of(&h, "1007").as_deref(), Some("jewelry"));
    }

    #[test]
    fn filters_narrow_the_grid_and_help_lists_keys() {
        let (_d, mut h) = app_with(8);
        h.key_press(Key::Num1);
        settle(&mut h);
        h.state_mut().curation.state.filters.flag = super::FlagFilter::Flagged;
        h.state_mut().curation.invalidate();
        settle(&mut h);
        h.get_by_label("1 works listed");
        h.state_mut().curation.state.filters = super::Filters { culture: Some("Dutch".into()), ..Default::default() };
        h.state_mut().curation.invalidate();
        settle(&mut h);
        h.get_by_label("4 works listed");
        h.get_by_label("Keys (?)").click();
        h.run_steps(2);
        h.get_by_label("Curation keys");
        h.get_by_label("undo / redo (also after a restart)");
    }

    #[test]
    fn flags_made_elsewhere_show_up() {
        let (d, mut h) = app_with(4);
        // Another process (here: another connection) flags a work.
        let mut other = crate::workspace::Workspace::open(d.path()).unwrap();
        let id = other.catalog.resolve_id("1003").unwrap();
        other
            .catalog
            .apply_flags(
                &[crate::catalog::FlagChange {
                    artwork_id: id,
                    reason: Some(crate::catalog::FlagReason::Manuscript),
                    note: None,
                }],
                "cli",
            )
            .unwrap();
        crate::gui::app::tests::run_until(&mut h, |app| {
            app.curation.state.items.iter().any(|a| a.flag.as_deref() == Some("manuscript"))
        });
    }
}
