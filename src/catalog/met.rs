//! What The Met's Collection API said of each object we asked about, and the search queries
//! already paged through. Each answer is written as it arrives (one small transaction), so a
//! discovery or download killed at any point resumes without asking the same thing again.
use super::{Catalog, NewArtwork, Result, now_rfc3339};
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;

/// What an object's record (or its absence) says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetStatus {
    /// A public-domain painting with an image: in the dataset.
    Kept,
    /// Its classification is not "Paintings".
    NotPainting,
    /// `isPublicDomain` is false: no Open Access image.
    NotPublicDomain,
    /// Public domain, but the record carries no image URL.
    NoImage,
    /// Still listed, but the API answers 404 "Not a valid object".
    Withdrawn,
    /// The API answers 404 "ObjectID not found".
    Unknown,
}

impl MetStatus {
    pub const ALL: [MetStatus; 6] = [
        MetStatus::Kept,
        MetStatus::NotPainting,
        MetStatus::NotPublicDomain,
        MetStatus::NoImage,
        MetStatus::Withdrawn,
        MetStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MetStatus::Kept => "kept",
            MetStatus::NotPainting => "not_painting",
            MetStatus::NotPublicDomain => "not_public_domain",
            MetStatus::NoImage => "no_image",
            MetStatus::Withdrawn => "withdrawn",
            MetStatus::Unknown => "unknown",
        }
    }

    /// How a report line names the works with this status.
    pub fn describe(self) -> &'static str {
        match self {
            MetStatus::Kept => "public-domain paintings with an image",
            MetStatus::NotPainting => "not paintings (the record's classification)",
            MetStatus::NotPublicDomain => "closed: not public domain, no Open Access image",
            MetStatus::NoImage => "closed: public domain but no image in the record",
            MetStatus::Withdrawn => "withdrawn: still listed, the API answers \"Not a valid object\"",
            MetStatus::Unknown => "unknown to the API (\"ObjectID not found\")",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl Catalog {
    /// Records what the API said of `object_id`, after upserting the work itself when there is
    /// one to keep: a kill between the two leaves the work unrecorded, so it is asked about
    /// once more (and the upsert is idempotent), never recorded without its work.
    pub fn record_met_object(
        &mut self,
        object_id: u64,
        status: MetStatus,
        image_url: Option<&str>,
        work: Option<&NewArtwork>,
    ) -> Result<()> {
        if let Some(w) = work {
            self.upsert_artworks(std::slice::from_ref(w))?;
        }
        self.conn
            .execute(
                "INSERT INTO met_objects (object_id, status, image_url, checked_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(object_id) DO UPDATE SET status = ?2, image_url = ?3, checked_at = ?4",
                params![object_id as i64, status.as_str(), image_url, now_rfc3339()],
            )
            .map_err(|e| self.err(e))?;
        if let Some(url) = image_url {
            self.conn
                .execute(
                    "UPDATE artworks SET image_url = ?2 WHERE source = 'met' AND source_id = ?1",
                    params![object_id.to_string(), url],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// What was recorded for each object asked about so far.
    pub fn met_statuses(&self) -> Result<HashMap<u64, MetStatus>> {
        let mut st = self.conn.prepare("SELECT object_id, status FROM met_objects").map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows.into_iter().filter_map(|(id, s)| Some((id as u64, MetStatus::parse(&s)?))).collect())
    }

    /// How many objects have each status.
    pub fn met_status_counts(&self) -> Result<Vec<(MetStatus, usize)>> {
        let mut counts: HashMap<MetStatus, usize> = HashMap::new();
        for s in self.met_statuses()?.into_values() {
            *counts.entry(s).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        Ok(v)
    }

    /// The ids a completed search query returned, if it was paged through before.
    pub fn met_search_done(&self, query: &str) -> Result<Option<(u64, Vec<u64>)>> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row("SELECT total, ids FROM met_search_queries WHERE query = ?1", [query], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.map(|(total, ids)| (total as u64, ids.split(',').filter_map(|s| s.parse().ok()).collect())))
    }

    pub fn set_met_search_done(&mut self, query: &str, total: u64, ids: &[u64]) -> Result<()> {
        let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO met_search_queries (query, total, ids, done_at) VALUES (?1, ?2, ?3, ?4)",
                params![query, total as i64, ids.join(","), now_rfc3339()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets every recorded answer and search (`import met --refresh`); works stay.
    pub fn forget_met_answers(&mut self) -> Result<()> {
        self.conn.execute_batch("DELETE FROM met_objects; DELETE FROM met_search_queries;").map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_survive_reopening_and_refresh_forgets_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.sqlite");
        {
            let mut c = Catalog::open(&p).unwrap();
            let w = NewArtwork { source: "met".into(), source_id: "7".into(), ..Default::default() };
            c.record_met_object(7, MetStatus::Kept, Some("http://x/7.jpg"), Some(&w)).unwrap();
            c.record_met_object(8, MetStatus::Withdrawn, None, None).unwrap();
            c.set_met_search_done("q=Paintings", 2, &[7, 8]).unwrap();
        }
        let mut c = Catalog::open(&p).unwrap();
        let s = c.met_statuses().unwrap();
        assert_eq!((s[&7], s[&8]), (MetStatus::Kept, MetStatus::Withdrawn));
        assert_eq!(c.met_search_done("q=Paintings").unwrap(), Some((2, vec![7, 8])));
        assert_eq!(c.find_by_source("met", "7").unwrap().unwrap().image_url.as_deref(), Some("http://x/7.jpg"));
        c.forget_met_answers().unwrap();
        assert!(c.met_statuses().unwrap().is_empty());
        assert_eq!(c.met_search_done("q=Paintings").unwrap(), None);
        assert!(c.find_by_source("met", "7").unwrap().is_some(), "works stay");
    }
}
