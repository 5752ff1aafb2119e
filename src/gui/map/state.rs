//! The Culture map's state and its transitions, free of drawing and of threads: what the job
//! produced, the ForceAtlas2 layout and how pointer input moves it, and what the view says while
//! it has no map. Unit-tested without a window.
use crate::analysis::culture_map::{self, CultureMap};
use crate::analysis::forceatlas2::{Fa2Settings, Layout};

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

/// Layout iterations per frame while it runs: smooth on screen, settled in a second or two.
const STEPS_PER_FRAME: usize = 20;

pub struct MapState {
    pub tab: Tab,
    pub data: Option<MapData>,
    pub layout: Option<Layout>,
    pub seed: u64,
    pub lin_log: bool,
    /// Whether the layout keeps iterating (it stops by itself once settled).
    pub running: bool,
    /// The chord diagram's and the map's edge threshold; the map's top quartile until moved.
    pub threshold: Option<f64>,
    pub zoom: f32,
    pub pan: egui::Vec2,
    /// The node being dragged, pinned where the pointer puts it.
    pub dragging: Option<usize>,
    /// The node clicked last, whose nearest cultures are listed.
    pub selected: Option<usize>,
    pub error: Option<String>,
}

impl Default for MapState {
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
            pan: egui::Vec2::ZERO,
            dragging: None,
            selected: None,
            error: None,
        }
    }
}

impl MapState {
    /// Takes the job's result: a new map starts a fresh layout, a failure keeps the old map.
    pub fn finish(&mut self, result: Result<MapData, String>) {
        match result {
            Ok(d) => {
                self.threshold = Some(d.map.threshold);
                self.data = Some(d);
                self.error = None;
                self.selected = None;
                self.restart_layout();
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Lays the map out again from the current seed and settings.
    pub fn restart_layout(&mut self) {
        if let Some(d) = &self.data {
            let settings = Fa2Settings { lin_log: self.lin_log, ..Default::default() };
            self.layout = Some(culture_map::layout(&d.map.similarity, self.seed, settings));
            self.running = true;
        }
    }

    /// Another layout from a different random start.
    pub fn reseed(&mut self) {
        self.seed += 1;
        self.restart_layout();
    }

    /// One frame of layout; true while it should keep going (the caller repaints). It stops once
    /// nodes move less than 1e-4 of the layout's extent, unless a node is being dragged.
    pub fn step_layout(&mut self) -> bool {
        let Some(layout) = self.layout.as_mut().filter(|_| self.running) else { return false };
        let mut moved = 0.0;
        for _ in 0..STEPS_PER_FRAME {
            moved = layout.step();
        }
        if moved < 1e-4 * layout_extent(layout) && self.dragging.is_none() {
            self.running = false;
        }
        self.running
    }

    pub fn zoom_by(&mut self, scroll: f32) {
        if scroll != 0.0 {
            self.zoom = (self.zoom * (1.0 + scroll * 0.002)).clamp(0.2, 10.0);
        }
    }

    /// A drag on node `node` (or on the background, which pans), by `delta` in layout units
    /// (`screen_delta` for panning).
    pub fn drag(&mut self, delta: [f64; 2], screen_delta: egui::Vec2) {
        match (self.dragging, self.layout.as_mut()) {
            (Some(i), Some(layout)) => {
                layout.pos[i][0] += delta[0];
                layout.pos[i][1] += delta[1];
                layout.pinned[i] = true;
                self.running = true;
            }
            _ => self.pan += screen_delta,
        }
    }

    /// The dragged node is let go: the layout continues from where it was dropped.
    pub fn drop_node(&mut self) {
        if let (Some(i), Some(layout)) = (self.dragging.take(), self.layout.as_mut()) {
            layout.pinned[i] = false;
        }
    }

    /// The cultures nearest to `i`, nearest first, with their distances.
    pub fn nearest(&self, i: usize) -> Vec<(String, f64)> {
        let Some(m) = self.data.as_ref().map(|d| &d.map) else { return Vec::new() };
        let mut near: Vec<usize> = (0..m.cultures.len()).filter(|&j| j != i).collect();
        near.sort_by(|&a, &b| m.distance[i][a].total_cmp(&m.distance[i][b]));
        near.into_iter().map(|j| (m.cultures[j].clone(), m.distance[i][j])).collect()
    }
}

/// The largest coordinate of any node (at least a tiny positive number).
pub fn layout_extent(layout: &Layout) -> f64 {
    layout.pos.iter().map(|p| p[0].abs().max(p[1].abs())).fold(1e-9, f64::max)
}

/// What the view says while it has no map: never "train a run" when there is one.
pub fn status_text(computing: bool, has_runs: bool, failed: bool) -> &'static str {
    if computing {
        "Embedding every work with the selected run's best model. Vectors are saved as they are \
         computed: if the app closes, the next visit continues from there."
    } else if !has_runs {
        "Train a run first (Training view), then its culture map is computed here."
    } else if failed {
        "The map could not be computed (see above); press Compute to try again."
    } else {
        "Press \"Compute from the selected run\" to map the cultures as its model sees them."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three cultures on a line: A at 0, B at 1, C at 5 (distances 1, 5 and 4).
    fn data() -> MapData {
        let cultures: Vec<String> = ["A", "B", "C"].map(String::from).to_vec();
        let vectors = vec![vec![0.0f32], vec![0.0], vec![1.0], vec![5.0]];
        let map = culture_map::build(&cultures, &vectors, &[0, 0, 1, 2], 0);
        let work_cultures = [0, 0, 1, 2].map(|g| cultures[g].clone()).to_vec();
        MapData {
            run_name: "r1".into(),
            map,
            ids: vec![1, 2, 3, 4],
            cultures: work_cultures,
            hashes: vec![None; 4],
            pca: vec![[0.0; 2]; 4],
        }
    }

    #[test]
    fn a_new_map_lays_out_until_it_settles_and_a_failure_keeps_the_old_one() {
        let mut s = MapState::default();
        s.finish(Ok(data()));
        assert!(s.layout.is_some() && s.running && s.threshold.is_some());
        let mut frames = 0;
        while s.step_layout() {
            frames += 1;
            assert!(frames < 2000, "the layout never settled");
        }
        assert!(!s.running);
        s.finish(Err("no checkpoint".into()));
        assert_eq!(s.error.as_deref(), Some("no checkpoint"));
        assert!(s.data.is_some(), "the old map stays on screen");
    }

    #[test]
    fn a_dragged_node_is_pinned_then_released_and_the_background_pans() {
        let mut s = MapState::default();
        s.finish(Ok(data()));
        while s.step_layout() {}
        let before = s.layout.as_ref().unwrap().pos[2];
        s.dragging = Some(2);
        s.drag([0.5, -0.25], egui::vec2(10.0, 5.0));
        let l = s.layout.as_ref().unwrap();
        assert_eq!(l.pos[2], [before[0] + 0.5, before[1] - 0.25]);
        assert!(l.pinned[2] && s.running, "dragging restarts the layout around the pinned node");
        assert_eq!(s.pan, egui::Vec2::ZERO);
        s.drop_node();
        assert!(!s.layout.as_ref().unwrap().pinned[2] && s.dragging.is_none());
        s.drag([1.0, 1.0], egui::vec2(10.0, 5.0));
        assert_eq!(s.pan, egui::vec2(10.0, 5.0));
    }

    #[test]
    fn nearest_cultures_come_nearest_first_and_zoom_stays_in_bounds() {
        let mut s = MapState::default();
        s.finish(Ok(data()));
        assert_eq!(s.nearest(0), [("B".to_string(), 1.0), ("C".to_string(), 5.0)]);
        assert_eq!(s.nearest(2), [("B".to_string(), 4.0), ("A".to_string(), 5.0)]);
        s.zoom_by(1e6);
        assert_eq!(s.zoom, 10.0);
        s.zoom_by(-1e6);
        assert_eq!(s.zoom, 0.2);
    }

    #[test]
    fn the_status_never_asks_for_a_run_when_there_is_one() {
        assert!(status_text(false, false, false).starts_with("Train a run first"));
        assert!(status_text(false, true, false).starts_with("Press"));
        assert!(status_text(false, true, true).contains("could not be computed"));
        assert!(status_text(true, true, false).starts_with("Embedding"));
    }
}
