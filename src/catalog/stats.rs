//! The study's Table 1 for a workspace: per culture group, the works as imported and the works
//! left after curation, plus what the import dropped.
use super::{Catalog, Result, classify};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupCount {
    pub culture: String,
    pub initial: usize,
    #[serde(rename = "final")]
    pub final_: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DroppedTag {
    pub tag: String,
    pub count: usize,
    /// "below threshold" (a group with too few works) or "unmapped" (a raw tag no group takes).
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DatasetStats {
    pub groups: Vec<GroupCount>,
    pub dropped: Vec<DroppedTag>,
    pub total_initial: usize,
    pub total_final: usize,
}

impl Catalog {
    pub fn stats(&self) -> Result<DatasetStats> {
        let mut st = self
            .conn
            .prepare(
                "SELECT a.culture, COUNT(*), SUM(CASE WHEN f.artwork_id IS NULL THEN 1 ELSE 0 END)
                 FROM artworks a LEFT JOIN flags f ON f.artwork_id = a.id
                 WHERE a.culture IS NOT NULL GROUP BY a.culture ORDER BY 2 DESC, 1",
            )
            .map_err(|e| self.err(e))?;
        let groups = st
            .query_map([], |r| {
                Ok(GroupCount {
                    culture: r.get(0)?,
                    initial: r.get::<_, i64>(1)? as usize,
                    final_: r.get::<_, i64>(2)? as usize,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        let mut st = self
            .conn
            .prepare("SELECT tag, count, why FROM dropped_tags ORDER BY count DESC, tag")
            .map_err(|e| self.err(e))?;
        let dropped = st
            .query_map([], |r| Ok(DroppedTag { tag: r.get(0)?, count: r.get::<_, i64>(1)? as usize, why: r.get(2)? }))
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(DatasetStats {
            total_initial: groups.iter().map(|g| g.initial).sum(),
            total_final: groups.iter().map(|g| g.final_).sum(),
            groups,
            dropped,
        })
    }

    /// Replaces the import's report of dropped tags.
    pub fn set_dropped(&mut self, dropped: &[DroppedTag]) -> Result<()> {
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        tx.execute("DELETE FROM dropped_tags", []).map_err(err)?;
        for d in dropped {
            tx.execute(
                "INSERT INTO dropped_tags (tag, count, why) VALUES (?1, ?2, ?3)",
                rusqlite::params![d.tag, d.count as i64, d.why],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

/// Writes the curated list: one row per work with a culture group.
pub fn write_curation_csv(works: &[super::Artwork], out: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["object_id", "source", "culture", "flagged", "reason", "note", "title"])?;
    for a in works {
        w.write_record([
            a.display_id().as_str(),
            a.source.as_str(),
            a.culture.as_deref().unwrap_or(""),
            if a.flag.is_some() { "true" } else { "false" },
            a.flag.as_deref().unwrap_or(""),
            a.flag_note.as_deref().unwrap_or(""),
            a.title.as_str(),
        ])?;
    }
    w.flush()
}
