//! The Curation view's state and its transitions, apart from drawing and from the catalog:
//! what is listed, which work has the cursor, what is selected, and which flags are on their
//! way to the catalog. Every transition costs time in the number of works it touches, never in
//! the size of the catalog, because it runs on the UI thread (the catalog work runs on
//! [`super::worker`]).
use crate::analysis::suspicion::Suspicion;
use crate::catalog::{Artwork, FlagChange, FlagReason, FlagState};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlagFilter {
    #[default]
    All,
    Flagged,
    Unflagged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    #[default]
    Id,
    Culture,
    Suspicious,
    /// By CLIP similarity to the last search or "more like this" (most similar first).
    Similar,
}

#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub culture: Option<String>,
    pub flag: FlagFilter,
    pub reason: Option<FlagReason>,
    pub text: String,
    pub sort: Sort,
}

/// A flag sent to the catalog and not yet confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// The latest flag asked for (`None`: unflag).
    pub reason: Option<FlagReason>,
    /// Requests in flight for this work.
    count: u32,
}

#[derive(Default)]
pub struct CurationState {
    pub items: Vec<Artwork>,
    /// Position of each listed work in `items`.
    index: HashMap<i64, usize>,
    pub filters: Filters,
    pub cursor: usize,
    pub selection: BTreeSet<i64>,
    anchor: Option<usize>,
    /// Flags on their way to the catalog, shown as "saving" until confirmed.
    pub pending: HashMap<i64, Pending>,
    pub suspicion: HashMap<i64, Suspicion>,
    /// What ranked `suspicion`.
    pub ranked_by: Option<crate::analysis::rank::RankedBy>,
    pub last_error: Option<String>,
    /// A work to put the cursor on at the next reload.
    pub focus_after_reload: Option<i64>,
}

impl CurationState {
    /// Shows a freshly loaded list, keeping the cursor on the same work if it is still listed
    /// and the selection to what is listed; returns the old list (to be freed off this thread).
    pub fn set_items(&mut self, items: Vec<Artwork>, index: HashMap<i64, usize>) -> Vec<Artwork> {
        let keep = self.focus_after_reload.take().or(self.current().map(|a| a.id));
        let old = std::mem::replace(&mut self.items, items);
        self.index = index;
        self.cursor =
            keep.and_then(|id| self.index.get(&id).copied()).unwrap_or(0).min(self.items.len().saturating_sub(1));
        let index = &self.index;
        self.selection.retain(|id| index.contains_key(id));
        old
    }

    pub fn current(&self) -> Option<&Artwork> {
        self.items.get(self.cursor)
    }

    /// The flag a work shows: the pending one if a change is on its way, else the catalog's.
    pub fn shown_flag<'a>(&'a self, a: &'a Artwork) -> (Option<&'a str>, bool) {
        match self.pending.get(&a.id) {
            Some(p) => (p.reason.map(FlagReason::as_str), true),
            None => (a.flag.as_deref(), false),
        }
    }

    pub fn move_cursor(&mut self, delta: isize) {
        if self.items.is_empty() {
            return;
        }
        let max = self.items.len() as isize - 1;
        self.cursor = (self.cursor as isize + delta).clamp(0, max) as usize;
    }

    /// A click: plain selects one, ctrl toggles, shift extends from the anchor.
    pub fn click(&mut self, index: usize, ctrl: bool, shift: bool) {
        let Some(id) = self.items.get(index).map(|a| a.id) else { return };
        if shift {
            let a = self.anchor.unwrap_or(self.cursor);
            let (lo, hi) = (a.min(index), a.max(index));
            if !ctrl {
                self.selection.clear();
            }
            self.selection.extend(self.items[lo..=hi].iter().map(|a| a.id));
        } else if ctrl {
            if !self.selection.remove(&id) {
                self.selection.insert(id);
            }
            self.anchor = Some(index);
        } else {
            self.selection.clear();
            self.anchor = Some(index);
        }
        self.cursor = index;
    }

    pub fn select_all(&mut self) {
        self.selection = self.items.iter().map(|a| a.id).collect();
    }

    /// The works an action applies to: the selection, or the work under the cursor.
    pub fn targets(&self) -> Vec<i64> {
        if self.selection.is_empty() {
            self.current().map(|a| vec![a.id]).unwrap_or_default()
        } else {
            self.selection.iter().copied().collect()
        }
    }

    /// Flags (or with `None` unflags) the targets: marks them pending, clears the selection and,
    /// when a single work was flagged, moves to the next. Returns the changes to write.
    pub fn begin_flag(&mut self, reason: Option<FlagReason>, note: Option<String>) -> Vec<FlagChange> {
        let targets = self.targets();
        let single = self.selection.is_empty();
        self.selection.clear();
        for &id in &targets {
            let p = self.pending.entry(id).or_insert(Pending { reason, count: 0 });
            p.reason = reason;
            p.count += 1;
        }
        if single && self.current().is_some_and(|a| targets.contains(&a.id)) {
            self.move_cursor(1);
        }
        targets.into_iter().map(|id| FlagChange { artwork_id: id, reason, note: note.clone() }).collect()
    }

    /// Flags the targets that have a suggested reason, each with its own, as one batch.
    pub fn begin_accept_suggestions(&mut self) -> Vec<FlagChange> {
        let targets: Vec<(i64, FlagReason)> = self
            .targets()
            .into_iter()
            .filter_map(|id| self.suspicion.get(&id).and_then(|s| s.suggested).map(|r| (id, r)))
            .collect();
        if targets.is_empty() {
            return Vec::new();
        }
        let single = self.selection.is_empty();
        self.selection.clear();
        for &(id, reason) in &targets {
            let p = self.pending.entry(id).or_insert(Pending { reason: Some(reason), count: 0 });
            p.reason = Some(reason);
            p.count += 1;
        }
        if single && self.current().is_some_and(|a| targets.iter().any(|t| t.0 == a.id)) {
            self.move_cursor(1);
        }
        targets.into_iter().map(|(id, r)| FlagChange { artwork_id: id, reason: Some(r), note: None }).collect()
    }

    /// The catalog confirmed these changes: the works show them for good.
    pub fn finish_flag(&mut self, changes: &[FlagChange]) {
        for c in changes {
            self.release(c.artwork_id);
            if let Some(a) = self.index.get(&c.artwork_id).and_then(|&i| self.items.get_mut(i)) {
                a.flag = c.reason.map(|r| r.as_str().to_string());
                a.flag_note = c.note.clone().filter(|n| !n.trim().is_empty() && c.reason.is_some());
            }
        }
        self.last_error = None;
    }

    /// The catalog refused these changes: the works show what the catalog holds.
    pub fn fail_flag(&mut self, changes: &[FlagChange], error: String) {
        for c in changes {
            self.release(c.artwork_id);
        }
        self.last_error = Some(error);
    }

    /// Nothing in flight can be trusted any more (the worker crashed): drop every pending flag.
    pub fn fail_all(&mut self, error: String) {
        self.pending.clear();
        self.last_error = Some(error);
    }

    fn release(&mut self, id: i64) {
        if let Some(p) = self.pending.get_mut(&id) {
            p.count = p.count.saturating_sub(1);
            if p.count == 0 {
                self.pending.remove(&id);
            }
        }
    }

    /// An undo or redo left these works in these states; the cursor goes to the first.
    pub fn apply_states(&mut self, changed: &[(i64, FlagState)]) {
        for (id, s) in changed {
            if let Some(a) = self.index.get(id).and_then(|&i| self.items.get_mut(i)) {
                a.flag = s.reason.clone();
                a.flag_note = s.note.clone();
            }
        }
        if let Some(&i) = changed.first().and_then(|(id, _)| self.index.get(id)) {
            self.cursor = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: usize) -> CurationState {
        let items: Vec<Artwork> = (0..n as i64).map(|i| Artwork { id: 10 + i, ..Default::default() }).collect();
        let index = items.iter().enumerate().map(|(i, a)| (a.id, i)).collect();
        let mut s = CurationState::default();
        s.set_items(items, index);
        s
    }

    #[test]
    fn flagging_one_shows_pending_advances_and_confirms() {
        let mut s = state(6);
        let changes = s.begin_flag(Some(FlagReason::Book), None);
        assert_eq!(changes.len(), 1);
        assert_eq!(s.cursor, 1);
        assert_eq!(s.shown_flag(&s.items[0].clone()), (Some("book"), true), "saving");
        s.finish_flag(&changes);
        assert!(s.pending.is_empty());
        assert_eq!(s.items[0].flag.as_deref(), Some("book"));
        assert_eq!(s.shown_flag(&s.items[0].clone()), (Some("book"), false));
    }

    #[test]
    fn two_quick_flags_of_one_work_show_the_last_until_both_are_confirmed() {
        let mut s = state(3);
        let first = s.begin_flag(Some(FlagReason::Book), None);
        s.cursor = 0;
        let second = s.begin_flag(Some(FlagReason::Jewelry), None);
        s.finish_flag(&first);
        assert_eq!(s.shown_flag(&s.items[0].clone()), (Some("jewelry"), true));
        s.finish_flag(&second);
        assert_eq!(s.shown_flag(&s.items[0].clone()), (Some("jewelry"), false));
    }

    #[test]
    fn a_refused_flag_shows_the_error_and_the_catalog_state() {
        let mut s = state(3);
        let c = s.begin_flag(Some(FlagReason::Other), None);
        s.fail_flag(&c, "not saved: database is locked".into());
        assert_eq!(s.shown_flag(&s.items[0].clone()), (None, false));
        assert!(s.last_error.as_deref().unwrap().contains("not saved"));
    }

    #[test]
    fn a_crashed_worker_drops_every_pending_flag() {
        let mut s = state(4);
        s.select_all();
        s.begin_flag(Some(FlagReason::Book), None);
        s.fail_all("not saved: the catalog worker crashed".into());
        assert!(s.pending.is_empty() && s.items.iter().all(|a| s.shown_flag(a) == (None, false)));
        assert!(s.last_error.as_deref().unwrap().contains("crashed"));
    }

    #[test]
    fn shift_click_selects_a_range_and_a_bulk_flag_does_not_move() {
        let mut s = state(6);
        s.click(1, false, false);
        s.click(4, false, true);
        assert_eq!(s.selection.len(), 4);
        let c = s.begin_flag(Some(FlagReason::Jewelry), Some("set".into()));
        assert_eq!((c.len(), s.cursor, s.selection.len()), (4, 4, 0));
        s.finish_flag(&c);
        assert_eq!(s.items[2].flag_note.as_deref(), Some("set"));
        s.apply_states(&[(12, FlagState::default()), (13, FlagState::default())]);
        assert_eq!((s.items[2].flag.as_deref(), s.cursor), (None, 2));
    }

    #[test]
    fn a_new_list_keeps_the_cursor_work_and_the_listed_selection() {
        let mut s = state(6);
        s.cursor = 3;
        s.selection = [11, 12, 15].into();
        let items: Vec<Artwork> = [11, 13, 14].iter().map(|&id| Artwork { id, ..Default::default() }).collect();
        let index = items.iter().enumerate().map(|(i, a)| (a.id, i)).collect();
        let old = s.set_items(items, index);
        assert_eq!(old.len(), 6);
        assert_eq!(s.current().unwrap().id, 13);
        assert_eq!(s.selection, [11].into());
    }
}
