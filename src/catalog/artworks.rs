//! Artworks: upserted by (source, source id) so a re-import updates rows in place, and their
//! ids (which curation events reference) never change.
use super::{Catalog, CatalogError, Result, now_rfc3339};
use crate::culture::RawTags;
use rusqlite::{OptionalExtension, params};

/// What an importer knows about one work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewArtwork {
    pub source: String,
    pub source_id: String,
    pub title: String,
    pub artist: String,
    pub date: String,
    pub medium: String,
    pub tags: RawTags,
    /// The group the mapping table gave, before the size threshold.
    pub mapped_group: Option<String>,
    pub image_url: Option<String>,
    pub link: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Artwork {
    pub id: i64,
    pub source: String,
    pub source_id: String,
    pub title: String,
    pub artist: String,
    pub date: String,
    pub medium: String,
    pub tags: RawTags,
    pub mapped_group: Option<String>,
    /// The group used for training: the mapped group if that group passed the threshold.
    pub culture: Option<String>,
    pub image_url: Option<String>,
    pub link: Option<String>,
    /// Relative to the workspace folder.
    pub image_path: Option<String>,
    pub content_hash: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub bytes: Option<u64>,
    /// The current flag reason, if flagged.
    pub flag: Option<String>,
    pub flag_note: Option<String>,
}

impl Artwork {
    /// The id users type: the Met Object ID for Met works, the catalog id otherwise.
    pub fn display_id(&self) -> String {
        if self.source == "met" { self.source_id.clone() } else { self.id.to_string() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Id,
    Culture,
}

/// A filter over artworks; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct ArtworkQuery {
    pub culture: Option<String>,
    /// `Some(true)`: flagged only; `Some(false)`: unflagged only.
    pub flagged: Option<bool>,
    pub reason: Option<String>,
    /// Matches title, artist or id, case-insensitively.
    pub text: String,
    /// Only works with a culture group (the training set before curation).
    pub grouped_only: bool,
    pub with_image_only: bool,
    pub sort: SortOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Inserted(i64),
    Updated(i64),
}

const SELECT: &str = "SELECT a.id, a.source, a.source_id, a.title, a.artist, a.date, a.medium,
    a.tag_culture, a.tag_country, a.tag_nationality, a.mapped_group, a.culture, a.image_url,
    a.link, a.image_path, a.content_hash, a.width, a.height, a.bytes, f.reason, f.note
    FROM artworks a LEFT JOIN flags f ON f.artwork_id = a.id";

fn row_to_artwork(r: &rusqlite::Row<'_>) -> rusqlite::Result<Artwork> {
    Ok(Artwork {
        id: r.get(0)?,
        source: r.get(1)?,
        source_id: r.get(2)?,
        title: r.get(3)?,
        artist: r.get(4)?,
        date: r.get(5)?,
        medium: r.get(6)?,
        tags: RawTags { culture: r.get(7)?, country: r.get(8)?, nationality: r.get(9)? },
        mapped_group: r.get(10)?,
        culture: r.get(11)?,
        image_url: r.get(12)?,
        link: r.get(13)?,
        image_path: r.get(14)?,
        content_hash: r.get(15)?,
        width: r.get(16)?,
        height: r.get(17)?,
        bytes: r.get(18)?,
        flag: r.get(19)?,
        flag_note: r.get(20)?,
    })
}

impl Catalog {
    /// Inserts or updates many works in one transaction.
    pub fn upsert_artworks(&mut self, works: &[NewArtwork]) -> Result<Vec<UpsertOutcome>> {
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        let now = now_rfc3339();
        let mut out = Vec::with_capacity(works.len());
        {
            let mut find =
                tx.prepare_cached("SELECT id FROM artworks WHERE source = ?1 AND source_id = ?2").map_err(err)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO artworks (source, source_id, title, artist, date, medium, tag_culture,
                     tag_country, tag_nationality, mapped_group, image_url, link, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .map_err(err)?;
            let mut update = tx
                .prepare_cached(
                    "UPDATE artworks SET title = ?2, artist = ?3, date = ?4, medium = ?5,
                     tag_culture = ?6, tag_country = ?7, tag_nationality = ?8, mapped_group = ?9,
                     image_url = COALESCE(?10, image_url), link = COALESCE(?11, link), updated_at = ?12
                     WHERE id = ?1",
                )
                .map_err(err)?;
            for w in works {
                let existing: Option<i64> =
                    find.query_row(params![w.source, w.source_id], |r| r.get(0)).optional().map_err(err)?;
                match existing {
                    Some(id) => {
                        update
                            .execute(params![
                                id,
                                w.title,
                                w.artist,
                                w.date,
                                w.medium,
                                w.tags.culture,
                                w.tags.country,
                                w.tags.nationality,
                                w.mapped_group,
                                w.image_url,
                                w.link,
                                now
                            ])
                            .map_err(err)?;
                        out.push(UpsertOutcome::Updated(id));
                    }
                    None => {
                        insert
                            .execute(params![
                                w.source,
                                w.source_id,
                                w.title,
                                w.artist,
                                w.date,
                                w.medium,
                                w.tags.culture,
                                w.tags.country,
                                w.tags.nationality,
                                w.mapped_group,
                                w.image_url,
                                w.link,
                                now
                            ])
                            .map_err(err)?;
                        out.push(UpsertOutcome::Inserted(tx.last_insert_rowid()));
                    }
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// Sets `culture` from `mapped_group` for the given source: works whose group is in
    /// `kept` get it, the others none. Returns the number of works with a culture.
    pub fn apply_group_threshold(&mut self, source: &str, kept: &[String]) -> Result<usize> {
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        tx.execute("UPDATE artworks SET culture = NULL WHERE source = ?1", [source]).map_err(err)?;
        let mut n = 0;
        for g in kept {
            n += tx
                .execute(
                    "UPDATE artworks SET culture = mapped_group WHERE source = ?1 AND mapped_group = ?2",
                    params![source, g],
                )
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// (all works, works from `source`).
    pub fn count_with_source(&self, source: &str) -> Result<(usize, usize)> {
        self.conn
            .query_row("SELECT COUNT(*), COALESCE(SUM(source = ?1), 0) FROM artworks", [source], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize))
            })
            .map_err(|e| self.err(e))
    }

    /// Counts of `mapped_group` for one source (NULL groups excluded).
    pub fn mapped_group_counts(&self, source: &str) -> Result<Vec<(String, usize)>> {
        let mut st = self
            .conn
            .prepare("SELECT mapped_group, COUNT(*) FROM artworks WHERE source = ?1 AND mapped_group IS NOT NULL GROUP BY mapped_group ORDER BY 2 DESC")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([source], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// Records where a work's image lies (relative to the workspace) and what it is.
    pub fn set_image(
        &mut self,
        id: i64,
        rel_path: &str,
        hash: &str,
        width: u32,
        height: u32,
        bytes: u64,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE artworks SET image_path = ?2, content_hash = ?3, width = ?4, height = ?5, bytes = ?6 WHERE id = ?1",
                params![id, rel_path, hash, width, height, bytes],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sets the culture of a folder-imported work directly (folders need no threshold).
    pub fn set_culture(&mut self, id: i64, culture: &str) -> Result<()> {
        self.conn
            .execute("UPDATE artworks SET culture = ?2, mapped_group = ?2 WHERE id = ?1", params![id, culture])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn artwork(&self, id: i64) -> Result<Artwork> {
        self.conn
            .query_row(&format!("{SELECT} WHERE a.id = ?1"), [id], row_to_artwork)
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| CatalogError::UnknownArtwork(id.to_string()))
    }

    /// Resolves the id a user typed: a Met Object ID first, then a catalog id.
    pub fn resolve_id(&self, user_id: &str) -> Result<i64> {
        let user_id = user_id.trim();
        let by_met: Option<i64> = self
            .conn
            .query_row("SELECT id FROM artworks WHERE source = 'met' AND source_id = ?1", [user_id], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(id) = by_met {
            return Ok(id);
        }
        if let Ok(n) = user_id.parse::<i64>() {
            let exists: Option<i64> = self
                .conn
                .query_row("SELECT id FROM artworks WHERE id = ?1 AND source <> 'met'", [n], |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(id) = exists {
                return Ok(id);
            }
        }
        Err(CatalogError::UnknownArtwork(user_id.to_string()))
    }

    pub fn find_by_source(&self, source: &str, source_id: &str) -> Result<Option<Artwork>> {
        self.conn
            .query_row(
                &format!("{SELECT} WHERE a.source = ?1 AND a.source_id = ?2"),
                [source, source_id],
                row_to_artwork,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn artworks(&self, q: &ArtworkQuery) -> Result<Vec<Artwork>> {
        let mut sql = format!("{SELECT} WHERE 1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(c) = &q.culture {
            sql.push_str(" AND a.culture = ?");
            args.push(Box::new(c.clone()));
        }
        if q.grouped_only {
            sql.push_str(" AND a.culture IS NOT NULL");
        }
        if q.with_image_only {
            sql.push_str(" AND a.image_path IS NOT NULL");
        }
        match q.flagged {
            Some(true) => sql.push_str(" AND f.reason IS NOT NULL"),
            Some(false) => sql.push_str(" AND f.reason IS NULL"),
            None => {}
        }
        if let Some(r) = &q.reason {
            sql.push_str(" AND f.reason = ?");
            args.push(Box::new(r.clone()));
        }
        let text = q.text.trim();
        if !text.is_empty() {
            sql.push_str(" AND (a.title LIKE ? OR a.artist LIKE ? OR a.source_id = ? OR CAST(a.id AS TEXT) = ?)");
            let like = format!("%{}%", text.replace('%', "\\%"));
            args.push(Box::new(like.clone()));
            args.push(Box::new(like));
            args.push(Box::new(text.to_string()));
            args.push(Box::new(text.to_string()));
        }
        sql.push_str(match q.sort {
            SortOrder::Id => " ORDER BY a.id",
            SortOrder::Culture => " ORDER BY a.culture, a.id",
        });
        let mut st = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())), row_to_artwork)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    pub fn kv(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn set_kv(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                [key, value],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn work(id: &str, group: &str) -> NewArtwork {
        NewArtwork {
            source: "met".into(),
            source_id: id.into(),
            title: format!("Work {id}"),
            tags: RawTags { culture: group.into(), ..Default::default() },
            mapped_group: Some(group.into()),
            ..Default::default()
        }
    }

    #[test]
    fn reimport_updates_in_place_and_keeps_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        let first = c.upsert_artworks(&[work("1", "French"), work("2", "Dutch")]).unwrap();
        let UpsertOutcome::Inserted(id1) = first[0] else { panic!() };
        let mut changed = work("1", "French");
        changed.title = "Renamed".into();
        let second = c.upsert_artworks(&[changed]).unwrap();
        assert_eq!(second, vec![UpsertOutcome::Updated(id1)]);
        assert_eq!(c.artwork(id1).unwrap().title, "Renamed");
        assert_eq!(c.resolve_id("1").unwrap(), id1);
        assert!(matches!(c.resolve_id("999"), Err(CatalogError::UnknownArtwork(_))));
    }

    #[test]
    fn query_filters_by_text_and_culture() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.sqlite")).unwrap();
        c.upsert_artworks(&[work("10", "French"), work("11", "Dutch"), work("12", "French")]).unwrap();
        c.apply_group_threshold("met", &["French".into()]).unwrap();
        let q = ArtworkQuery { culture: Some("French".into()), ..Default::default() };
        assert_eq!(c.artworks(&q).unwrap().len(), 2);
        let q = ArtworkQuery { text: "work 11".into(), ..Default::default() };
        assert_eq!(c.artworks(&q).unwrap()[0].source_id, "11");
        let q = ArtworkQuery { grouped_only: true, ..Default::default() };
        assert_eq!(c.artworks(&q).unwrap().len(), 2);
    }
}
