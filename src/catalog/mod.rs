//! The workspace catalog: one SQLite file (bundled SQLite, WAL mode) holding artworks, the
//! append-only curation log, runs and their metrics.
//!
//! Every write is one transaction, so a crash or `kill -9` leaves either the old or the new
//! state, never a half-written one. Several processes (the GUI and the CLI) may have the same
//! catalog open; SQLite serialises their writes and a writer that waits too long gets
//! [`CatalogError::Locked`].
mod artworks;
mod curation;
mod met;
mod runs;
mod schema;
mod stats;

pub use artworks::{Artwork, ArtworkQuery, NewArtwork, SortOrder, UpsertOutcome};
pub use curation::{CurationEvent, FlagChange, FlagReason, FlagState, UndoOutcome};
pub use met::MetStatus;
pub use runs::{BatchMetrics, DEMO_PRESET, EpochMetrics, RunRecord, RunStatus, SAMPLE_SOURCE};
pub use schema::SCHEMA_VERSION;
pub use stats::{DatasetStats, DroppedTag, GroupCount, write_curation_csv};

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "workspace catalog {path} is locked by another process (it kept the write lock for more than {waited_s} s); close the other artculture window or command and try again"
    )]
    Locked { path: PathBuf, waited_s: u64 },
    #[error("workspace catalog {path} is corrupt or not an artculture catalog: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "workspace catalog {path} was written by a newer artculture (schema version {found}; this build reads up to {supported}); update artculture"
    )]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("no artwork with id {0} in this workspace")]
    UnknownArtwork(String),
    #[error("no run {0} in this workspace")]
    UnknownRun(String),
    #[error("catalog {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// How long a writer waits for another process's write transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path` and migrates it to this build's schema.
    pub fn open(path: &Path) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e))?;
        let mut catalog = Self { conn, path: path.to_path_buf() };
        catalog.configure()?;
        schema::migrate(&mut catalog.conn).map_err(|e| match e {
            schema::MigrateError::TooNew { found } => {
                CatalogError::TooNew { path: path.to_path_buf(), found, supported: SCHEMA_VERSION }
            }
            schema::MigrateError::Sqlite(e) => classify(path, e),
        })?;
        Ok(catalog)
    }

    fn configure(&mut self) -> Result<()> {
        let path = self.path.clone();
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| classify(&path, e))?;
        // Reading the journal mode is the first real read of the file: a file that is not a
        // database fails here, and so does one that another process holds exclusively.
        let mode: String =
            self.conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| classify(&path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CatalogError::Corrupt { path, detail: format!("cannot enable WAL (journal mode {mode})") });
        }
        self.conn
            .execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
            .map_err(|e| classify(&path, e))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the file's integrity (`PRAGMA quick_check`).
    pub fn check_integrity(&self) -> Result<()> {
        let res: String = self.conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        if res == "ok" { Ok(()) } else { Err(CatalogError::Corrupt { path: self.path.clone(), detail: res }) }
    }

    /// A number that changes whenever another connection (another process, or a worker
    /// thread) commits: the GUI polls it to notice CLI edits. This connection's own commits do
    /// not change it; the code that makes them knows.
    pub fn data_version(&self) -> Result<i64> {
        self.conn.query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    fn err(&self, e: rusqlite::Error) -> CatalogError {
        classify(&self.path, e)
    }
}

/// Maps SQLite's error codes to the errors a user can act on.
fn classify(path: &Path, e: rusqlite::Error) -> CatalogError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(f, ref msg) = e {
        match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return CatalogError::Locked { path: path.to_path_buf(), waited_s: BUSY_TIMEOUT.as_secs() };
            }
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
                return CatalogError::Corrupt {
                    path: path.to_path_buf(),
                    detail: msg.clone().unwrap_or_else(|| f.to_string()),
                };
            }
            _ => {}
        }
    }
    CatalogError::Sqlite { path: path.to_path_buf(), source: e }
}

pub fn now_rfc3339() -> String {
    // SQLite formats the time; avoids a date-time dependency for one timestamp format.
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    format_unix(secs)
}

fn format_unix(secs: f64) -> String {
    let days = (secs / 86400.0).floor() as i64;
    let rem = secs - days as f64 * 86400.0;
    let (h, m, s) = ((rem / 3600.0) as i64, ((rem % 3600.0) / 60.0) as i64, rem % 60.0);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{:06.3}Z", s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_unix_time() {
        assert_eq!(format_unix(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_unix(1_796_000_000.5), "2026-11-30T00:53:20.500Z");
    }

    #[test]
    fn corrupt_file_is_reported_not_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.sqlite");
        std::fs::write(&p, vec![0x42u8; 8192]).unwrap();
        let err = Catalog::open(&p).unwrap_err();
        assert!(matches!(err, CatalogError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("catalog.sqlite"), "{err}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.sqlite");
        drop(Catalog::open(&p).unwrap());
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(c);
        let err = Catalog::open(&p).unwrap_err();
        assert!(matches!(err, CatalogError::TooNew { found, .. } if found == SCHEMA_VERSION + 1), "{err}");
        assert!(err.to_string().contains("newer artculture"));
    }

    #[test]
    fn writer_held_elsewhere_gives_locked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.sqlite");
        drop(Catalog::open(&p).unwrap());
        let other = Connection::open(&p).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE; INSERT INTO kv(key, value) VALUES ('x', 'y');").unwrap();
        let mut c = Catalog::open(&p);
        // Opening may already fail (WAL set-up needs a lock); if not, the first write must.
        if let Ok(cat) = c.as_mut() {
            let err = cat.set_kv("a", "b").unwrap_err();
            assert!(matches!(err, CatalogError::Locked { .. }), "{err}");
        } else {
            assert!(matches!(c.unwrap_err(), CatalogError::Locked { .. }));
        }
    }
}
