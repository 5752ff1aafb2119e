//! The Curation view's state and actions, apart from drawing: what is listed, which work has
//! the cursor, what is selected, and flagging through the catalog (committed before the view
//! shows a flag).
use crate::analysis::suspicion::Suspicion;
use crate::catalog::{Artwork, ArtworkQuery, Catalog, CatalogError, FlagChange, FlagReason, SortOrder, UndoOutcome};
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
}

#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub culture: Option<String>,
    pub flag: FlagFilter,
    pub reason: Option<FlagReason>,
    pub text: String,
    pub sort: Sort,
}

#[derive(Default)]
pub struct CurationState {
    pub items: Vec<Artwork>,
    pub filters: Filters,
    pub cursor: usize,
    pub selection: BTreeSet<i64>,
    anchor: Option<usize>,
    pub suspicion: HashMap<i64, Suspicion>,
    /// Whether `suspicion` comes from a model (else from image statistics).
    pub suspicion_from_model: bool,
    pub last_error: Option<String>,
    /// A work to put the cursor on at the next reload.
    pub focus_after_reload: Option<i64>,
}

impl CurationState {
    /// Reloads the list from the catalog, keeping the cursor on the same work if it is still
    /// listed.
    pub fn reload(&mut self, catalog: &Catalog) -> Result<(), CatalogError> {
        let keep = self.focus_after_reload.take().or(self.current().map(|a| a.id));
        let f = &self.filters;
        let q = ArtworkQuery {
            culture: f.culture.clone(),
            flagged: match f.flag {
                FlagFilter::All => None,
                FlagFilter::Flagged => Some(true),
                FlagFilter::Unflagged => Some(false),
            },
            reason: f.reason.map(|r| r.as_str().to_string()),
            text: f.text.clone(),
            grouped_only: true,
            with_image_only: false,
            sort: if f.sort == Sort::Culture { SortOrder::Culture } else { SortOrder::Id },
        };
        self.items = catalog.artworks(&q)?;
        if f.sort == Sort::Suspicious {
            let score = |a: &Artwork| self.suspicion.get(&a.id).map(|s| s.score).unwrap_or(f64::NEG_INFINITY);
            self.items.sort_by(|a, b| score(b).total_cmp(&score(a)).then(a.id.cmp(&b.id)));
        }
        self.cursor = keep
            .and_then(|id| self.items.iter().position(|a| a.id == id))
            .unwrap_or(0)
            .min(self.items.len().saturating_sub(1));
        let listed: BTreeSet<i64> = self.items.iter().map(|a| a.id).collect();
        self.selection.retain(|id| listed.contains(id));
        Ok(())
    }

    pub fn current(&self) -> Option<&Artwork> {
        self.items.get(self.cursor)
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

    /// Flags (or with `None` unflags) the targets in one transaction; on success moves to the
    /// next work when a single one was flagged. Returns how many changed.
    pub fn flag(
        &mut self,
        catalog: &mut Catalog,
        reason: Option<FlagReason>,
        note: Option<String>,
    ) -> Result<usize, CatalogError> {
        let targets = self.targets();
        let changes: Vec<FlagChange> =
            targets.iter().map(|&id| FlagChange { artwork_id: id, reason, note: note.clone() }).collect();
        catalog.apply_flags(&changes, "gui")?;
        let single = self.selection.is_empty();
        self.selection.clear();
        self.refresh_flags(catalog, &targets)?;
        if single && self.items.get(self.cursor).is_some_and(|a| targets.contains(&a.id)) {
            self.move_cursor(1);
        }
        Ok(targets.len())
    }

    /// Re-reads the flag of some works (after a flag, undo or redo) without reloading the list.
    fn refresh_flags(&mut self, catalog: &Catalog, ids: &[i64]) -> Result<(), CatalogError> {
        for a in self.items.iter_mut().filter(|a| ids.contains(&a.id)) {
            let s = catalog.flag_state(a.id)?;
            a.flag = s.reason;
            a.flag_note = s.note;
        }
        Ok(())
    }

    pub fn undo(&mut self, catalog: &mut Catalog, redo: bool) -> Result<bool, CatalogError> {
        let out = if redo { catalog.redo("gui")? } else { catalog.undo("gui")? };
        match out {
            UndoOutcome::Nothing => Ok(false),
            UndoOutcome::Applied { artworks, .. } => {
                self.refresh_flags(catalog, &artworks)?;
                if let Some(i) = artworks.first().and_then(|id| self.items.iter().position(|a| a.id == *id)) {
                    self.cursor = i;
                }
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::NewArtwork;

    fn setup(n: usize) -> (tempfile::TempDir, Catalog, CurationState) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        let works: Vec<NewArtwork> = (0..n)
            .map(|i| NewArtwork {
                source: "met".into(),
                source_id: (500 + i).to_string(),
                mapped_group: Some(if i % 2 == 0 { "French" } else { "Dutch" }.into()),
                ..Default::default()
            })
            .collect();
        c.upsert_artworks(&works).unwrap();
        c.apply_group_threshold("met", &["French".into(), "Dutch".into()]).unwrap();
        let mut s = CurationState::default();
        s.reload(&c).unwrap();
        (dir, c, s)
    }

    #[test]
    fn flagging_one_advances_and_shift_click_selects_a_range() {
        let (_d, mut c, mut s) = setup(6);
        s.flag(&mut c, Some(FlagReason::Book), None).unwrap();
        assert_eq!(s.cursor, 1);
        assert_eq!(s.items[0].flag.as_deref(), Some("book"));
        s.click(1, false, false);
        s.click(4, false, true);
        assert_eq!(s.selection.len(), 4);
        assert_eq!(s.flag(&mut c, Some(FlagReason::Jewelry), None).unwrap(), 4);
        assert_eq!(c.stats().unwrap().total_final, 1);
        assert!(s.undo(&mut c, false).unwrap());
        assert_eq!(c.stats().unwrap().total_final, 5);
    }

    #[test]
    fn filters_and_cursor_survive_reload() {
        let (_d, mut c, mut s) = setup(6);
        s.cursor = 3;
        let id = s.current().unwrap().id;
        s.flag(&mut c, Some(FlagReason::Other), Some("a fan".into())).unwrap();
        s.filters.flag = FlagFilter::Flagged;
        s.reload(&c).unwrap();
        assert_eq!(s.items.len(), 1);
        assert_eq!(s.items[0].id, id);
        assert_eq!(s.items[0].flag_note.as_deref(), Some("a fan"));
        s.filters = Filters { culture: Some("Dutch".into()), ..Default::default() };
        s.reload(&c).unwrap();
        assert_eq!(s.items.len(), 3);
    }
}
