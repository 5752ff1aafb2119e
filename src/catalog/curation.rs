//! Curation: flags on mis-tagged works, kept as an append-only event log.
//!
//! Each user action is one batch (one transaction): the events record the new and the previous
//! state of every work touched, so undo and redo are themselves new batches that replay the
//! previous or the new state. The undo and redo stacks are derived from the log, so they survive
//! restarts, and the `flags` table (the current state) is updated in the same transaction.
use super::{Catalog, Result, classify, now_rfc3339};
use rusqlite::{OptionalExtension, Transaction, params};

/// Why a work is not a painting. The study names these kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FlagReason {
    Sculpture,
    Book,
    Manuscript,
    Container,
    Jewelry,
    SnuffBox,
    Other,
}

impl FlagReason {
    pub const ALL: [FlagReason; 7] =
        [Self::Sculpture, Self::Book, Self::Manuscript, Self::Container, Self::Jewelry, Self::SnuffBox, Self::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sculpture => "sculpture",
            Self::Book => "book",
            Self::Manuscript => "manuscript",
            Self::Container => "container",
            Self::Jewelry => "jewelry",
            Self::SnuffBox => "snuff-box",
            Self::Other => "other",
        }
    }

    /// The key that flags with this reason in the Curation view.
    pub fn key(self) -> char {
        match self {
            Self::Sculpture => '1',
            Self::Book => '2',
            Self::Manuscript => '3',
            Self::Container => '4',
            Self::Jewelry => '5',
            Self::SnuffBox => '6',
            Self::Other => '7',
        }
    }
}

impl std::str::FromStr for FlagReason {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let norm = s.trim().to_lowercase().replace([' ', '_'], "-");
        Self::ALL.into_iter().find(|r| r.as_str() == norm || (norm == "snuffbox" && *r == Self::SnuffBox)).ok_or_else(
            || {
                let names: Vec<_> = Self::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown reason {s:?}; expected one of {}", names.join(", "))
            },
        )
    }
}

impl std::fmt::Display for FlagReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The flag state of one work.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlagState {
    pub reason: Option<String>,
    pub note: Option<String>,
}

/// A requested change: set (`Some`) or clear (`None`) the flag of one work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagChange {
    pub artwork_id: i64,
    pub reason: Option<FlagReason>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurationEvent {
    pub seq: i64,
    pub batch_id: i64,
    pub artwork_id: i64,
    pub reason: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndoOutcome {
    Nothing,
    /// The batch that was undone or redone, the works it touched, and the state each work
    /// was left in (so a view can update without reading them back).
    Applied {
        batch: i64,
        artworks: Vec<i64>,
        states: Vec<FlagState>,
    },
}

// Statements below are cached (`prepare_cached`): flagging all 50,000 works of a catalog is
// one transaction of ~200,000 statements, and parsing each anew would triple its time.
fn current_state(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<FlagState> {
    Ok(tx
        .prepare_cached("SELECT reason, note FROM flags WHERE artwork_id = ?1")?
        .query_row([id], |r| Ok(FlagState { reason: Some(r.get(0)?), note: r.get(1)? }))
        .optional()?
        .unwrap_or_default())
}

/// Appends one event and updates the current-state table.
fn write_event(tx: &Transaction<'_>, batch: i64, id: i64, new: &FlagState) -> rusqlite::Result<()> {
    let prev = current_state(tx, id)?;
    tx.prepare_cached(
        "INSERT INTO curation_events (batch_id, artwork_id, flagged, reason, note, prev_flagged, prev_reason, prev_note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![batch, id, new.reason.is_some(), new.reason, new.note, prev.reason.is_some(), prev.reason, prev.note])?;
    let seq = tx.last_insert_rowid();
    match &new.reason {
        Some(reason) => tx
            .prepare_cached(
                "INSERT INTO flags (artwork_id, reason, note, seq) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(artwork_id) DO UPDATE SET reason = ?2, note = ?3, seq = ?4",
            )?
            .execute(params![id, reason, new.note, seq])?,
        None => tx.prepare_cached("DELETE FROM flags WHERE artwork_id = ?1")?.execute([id])?,
    };
    Ok(())
}

fn new_batch(tx: &Transaction<'_>, kind: &str, target: Option<i64>, origin: &str) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO curation_batches (kind, target, origin, at) VALUES (?1, ?2, ?3, ?4)",
        params![kind, target, origin, now_rfc3339()],
    )?;
    Ok(tx.last_insert_rowid())
}

impl Catalog {
    /// Applies flag changes as one undoable batch, committed before this returns.
    /// Changes that would not alter a work's state are skipped; returns the batch id, or `None`
    /// if nothing changed.
    pub fn apply_flags(&mut self, changes: &[FlagChange], origin: &str) -> Result<Option<i64>> {
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        let mut batch = None;
        for c in changes {
            let exists: Option<i64> = tx
                .prepare_cached("SELECT id FROM artworks WHERE id = ?1")
                .and_then(|mut st| st.query_row([c.artwork_id], |r| r.get(0)).optional())
                .map_err(err)?;
            if exists.is_none() {
                return Err(super::CatalogError::UnknownArtwork(c.artwork_id.to_string()));
            }
            let new = FlagState {
                reason: c.reason.map(|r| r.as_str().to_string()),
                note: c.note.clone().filter(|n| !n.trim().is_empty() && c.reason.is_some()),
            };
            if current_state(&tx, c.artwork_id).map_err(err)? == new {
                continue;
            }
            let b = match batch {
                Some(b) => b,
                None => *batch.insert(new_batch(&tx, "edit", None, origin).map_err(err)?),
            };
            write_event(&tx, b, c.artwork_id, &new).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(batch)
    }

    /// The undo and redo stacks (batch ids, most recent last), replayed from the log.
    fn undo_redo_stacks(&self) -> Result<(Vec<i64>, Vec<i64>)> {
        let mut st =
            self.conn.prepare("SELECT id, kind, target FROM curation_batches ORDER BY id").map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?)))
            .map_err(|e| self.err(e))?;
        let (mut undo, mut redo) = (Vec::new(), Vec::new());
        for row in rows {
            let (id, kind, target) = row.map_err(|e| self.err(e))?;
            match kind.as_str() {
                "edit" => {
                    undo.push(id);
                    redo.clear();
                }
                "undo" => {
                    undo.retain(|b| Some(*b) != target);
                    redo.extend(target);
                }
                _ => {
                    redo.retain(|b| Some(*b) != target);
                    undo.extend(target);
                }
            }
        }
        Ok((undo, redo))
    }

    pub fn can_undo(&self) -> Result<bool> {
        Ok(!self.undo_redo_stacks()?.0.is_empty())
    }

    pub fn can_redo(&self) -> Result<bool> {
        Ok(!self.undo_redo_stacks()?.1.is_empty())
    }

    /// Undoes the most recent edit batch not yet undone (from any process, any session).
    pub fn undo(&mut self, origin: &str) -> Result<UndoOutcome> {
        let Some(target) = self.undo_redo_stacks()?.0.pop() else { return Ok(UndoOutcome::Nothing) };
        self.replay(target, "undo", origin)
    }

    /// Redoes the most recently undone batch.
    pub fn redo(&mut self, origin: &str) -> Result<UndoOutcome> {
        let Some(target) = self.undo_redo_stacks()?.1.pop() else { return Ok(UndoOutcome::Nothing) };
        self.replay(target, "redo", origin)
    }

    fn replay(&mut self, target: i64, kind: &str, origin: &str) -> Result<UndoOutcome> {
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        let events: Vec<(i64, FlagState, FlagState)> = {
            let mut st = tx
                .prepare("SELECT artwork_id, reason, note, prev_reason, prev_note FROM curation_events WHERE batch_id = ?1 ORDER BY seq")
                .map_err(err)?;
            st.query_map([target], |r| {
                Ok((
                    r.get(0)?,
                    FlagState { reason: r.get(1)?, note: r.get(2)? },
                    FlagState { reason: r.get(3)?, note: r.get(4)? },
                ))
            })
            .map_err(err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(err)?
        };
        let batch = new_batch(&tx, kind, Some(target), origin).map_err(err)?;
        let (mut touched, mut states) = (Vec::new(), Vec::new());
        // Undo walks the batch backwards so a work touched twice ends in its first prior state.
        let ordered: Box<dyn Iterator<Item = &(i64, FlagState, FlagState)>> =
            if kind == "undo" { Box::new(events.iter().rev()) } else { Box::new(events.iter()) };
        for (id, new, prev) in ordered {
            let state = if kind == "undo" { prev } else { new };
            write_event(&tx, batch, *id, state).map_err(err)?;
            touched.push(*id);
            states.push(state.clone());
        }
        tx.commit().map_err(err)?;
        Ok(UndoOutcome::Applied { batch: target, artworks: touched, states })
    }

    pub fn flag_state(&self, id: i64) -> Result<FlagState> {
        Ok(self
            .conn
            .query_row("SELECT reason, note FROM flags WHERE artwork_id = ?1", [id], |r| {
                Ok(FlagState { reason: Some(r.get(0)?), note: r.get(1)? })
            })
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or_default())
    }

    /// The whole log, oldest first (for audit and export).
    pub fn curation_log(&self) -> Result<Vec<CurationEvent>> {
        let mut st = self
            .conn
            .prepare("SELECT seq, batch_id, artwork_id, reason, note FROM curation_events ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(CurationEvent {
                    seq: r.get(0)?,
                    batch_id: r.get(1)?,
                    artwork_id: r.get(2)?,
                    reason: r.get(3)?,
                    note: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::NewArtwork;

    fn catalog_with(n: usize) -> (tempfile::TempDir, Catalog, Vec<i64>) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        let works: Vec<_> = (0..n)
            .map(|i| NewArtwork { source: "met".into(), source_id: format!("{}", 100 + i), ..Default::default() })
            .collect();
        let ids = c
            .upsert_artworks(&works)
            .unwrap()
            .into_iter()
            .map(|o| match o {
                crate::catalog::UpsertOutcome::Inserted(id) | crate::catalog::UpsertOutcome::Updated(id) => id,
            })
            .collect();
        (dir, c, ids)
    }

    fn flag(id: i64, r: FlagReason) -> FlagChange {
        FlagChange { artwork_id: id, reason: Some(r), note: None }
    }

    #[test]
    fn undo_redo_survive_reopening() {
        let (dir, mut c, ids) = catalog_with(3);
        c.apply_flags(&[flag(ids[0], FlagReason::Book)], "test").unwrap();
        c.apply_flags(&[flag(ids[1], FlagReason::Jewelry), flag(ids[2], FlagReason::Jewelry)], "test").unwrap();
        drop(c);
        let mut c = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        assert!(matches!(c.undo("test").unwrap(), UndoOutcome::Applied { ref artworks, .. } if artworks.len() == 2));
        assert_eq!(c.flag_state(ids[1]).unwrap(), FlagState::default());
        assert_eq!(c.flag_state(ids[0]).unwrap().reason.as_deref(), Some("book"));
        drop(c);
        let mut c = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        c.redo("test").unwrap();
        assert_eq!(c.flag_state(ids[2]).unwrap().reason.as_deref(), Some("jewelry"));
        c.undo("test").unwrap();
        c.undo("test").unwrap();
        assert_eq!(c.undo("test").unwrap(), UndoOutcome::Nothing);
        assert_eq!(c.flag_state(ids[0]).unwrap(), FlagState::default());
        // A new edit clears the redo stack.
        c.apply_flags(&[flag(ids[1], FlagReason::Other)], "test").unwrap();
        assert!(!c.can_redo().unwrap());
        // Nothing is ever deleted from the log.
        assert_eq!(c.curation_log().unwrap().len(), 1 + 2 + 2 + 2 + 2 + 1 + 1);
    }

    #[test]
    fn changing_a_reason_undoes_to_the_old_reason() {
        let (_d, mut c, ids) = catalog_with(1);
        c.apply_flags(&[flag(ids[0], FlagReason::Book)], "t").unwrap();
        c.apply_flags(
            &[FlagChange { artwork_id: ids[0], reason: Some(FlagReason::Other), note: Some("a fan".into()) }],
            "t",
        )
        .unwrap();
        assert_eq!(c.flag_state(ids[0]).unwrap().note.as_deref(), Some("a fan"));
        c.undo("t").unwrap();
        assert_eq!(c.flag_state(ids[0]).unwrap(), FlagState { reason: Some("book".into()), note: None });
        // A no-op change makes no batch.
        assert_eq!(c.apply_flags(&[flag(ids[0], FlagReason::Book)], "t").unwrap(), None);
    }

    #[test]
    fn reasons_parse_leniently() {
        assert_eq!("Snuff box".parse::<FlagReason>().unwrap(), FlagReason::SnuffBox);
        assert_eq!("snuffbox".parse::<FlagReason>().unwrap(), FlagReason::SnuffBox);
        assert!("vase".parse::<FlagReason>().unwrap_err().contains("sculpture"));
    }
}
