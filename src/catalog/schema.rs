//! Versioned schema migrations. `PRAGMA user_version` holds the version; each migration runs in
//! one transaction with the version bump, so an interrupted upgrade leaves the old version.
//! Never edit a released migration: append a new one.
use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE artworks (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        source_id TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        artist TEXT NOT NULL DEFAULT '',
        date TEXT NOT NULL DEFAULT '',
        medium TEXT NOT NULL DEFAULT '',
        tag_culture TEXT NOT NULL DEFAULT '',
        tag_country TEXT NOT NULL DEFAULT '',
        tag_nationality TEXT NOT NULL DEFAULT '',
        mapped_group TEXT,
        culture TEXT,
        image_url TEXT,
        link TEXT,
        image_path TEXT,
        content_hash TEXT,
        width INTEGER,
        height INTEGER,
        bytes INTEGER,
        updated_at TEXT NOT NULL,
        UNIQUE (source, source_id)
    );
    CREATE INDEX artworks_culture ON artworks(culture);
    CREATE TABLE curation_batches (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('edit', 'undo', 'redo')),
        target INTEGER REFERENCES curation_batches(id),
        origin TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE TABLE curation_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        batch_id INTEGER NOT NULL REFERENCES curation_batches(id),
        artwork_id INTEGER NOT NULL REFERENCES artworks(id),
        flagged INTEGER NOT NULL,
        reason TEXT,
        note TEXT,
        prev_flagged INTEGER NOT NULL,
        prev_reason TEXT,
        prev_note TEXT
    );
    CREATE INDEX curation_events_artwork ON curation_events(artwork_id, seq);
    -- The current flag of each artwork, kept in step with the log inside the same
    -- transaction, so reads never replay the log.
    CREATE TABLE flags (
        artwork_id INTEGER PRIMARY KEY REFERENCES artworks(id),
        reason TEXT NOT NULL,
        note TEXT,
        seq INTEGER NOT NULL
    );
    CREATE TABLE dropped_tags (tag TEXT PRIMARY KEY, count INTEGER NOT NULL, why TEXT NOT NULL);
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        arch TEXT NOT NULL,
        method TEXT NOT NULL,
        scheduler TEXT NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        epochs_done INTEGER NOT NULL DEFAULT 0,
        seconds REAL NOT NULL DEFAULT 0,
        val_acc REAL,
        top1 REAL,
        top3 REAL,
        message TEXT
    );
    CREATE TABLE run_split (
        run_id TEXT NOT NULL REFERENCES runs(id),
        artwork_id INTEGER NOT NULL REFERENCES artworks(id),
        part TEXT NOT NULL CHECK (part IN ('train', 'val', 'test')),
        PRIMARY KEY (run_id, artwork_id)
    );
    CREATE TABLE epoch_metrics (
        run_id TEXT NOT NULL REFERENCES runs(id),
        epoch INTEGER NOT NULL,
        train_loss REAL NOT NULL,
        val_loss REAL NOT NULL,
        val_acc REAL NOT NULL,
        val_top3 REAL NOT NULL,
        lr REAL NOT NULL,
        images_per_s REAL NOT NULL,
        seconds REAL NOT NULL,
        PRIMARY KEY (run_id, epoch)
    );
    "#,
    // 2: per-batch progress, so a run followed from another process or reopened later shows
    // its batch loss, images/s and time left as the window that started it did.
    r#"
    CREATE TABLE batch_metrics (
        run_id TEXT NOT NULL REFERENCES runs(id),
        epoch INTEGER NOT NULL,
        batch INTEGER NOT NULL,
        batches INTEGER NOT NULL,
        loss REAL NOT NULL,
        lr REAL NOT NULL,
        images_per_s REAL NOT NULL,
        elapsed_s REAL NOT NULL,
        PRIMARY KEY (run_id, epoch, batch)
    ) WITHOUT ROWID;
    "#,
    // 3: what The Met's Collection API said of each object it was asked about, and the search
    // queries already paged through, so a killed discovery or download resumes without asking
    // again (the CDN allows about a request a second: asking twice costs hours).
    r#"
    CREATE TABLE met_objects (
        object_id INTEGER PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN
            ('kept', 'not_painting', 'not_public_domain', 'no_image', 'withdrawn', 'unknown')),
        image_url TEXT,
        checked_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE met_search_queries (
        query TEXT PRIMARY KEY,
        total INTEGER NOT NULL,
        ids TEXT NOT NULL,
        done_at TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug)]
pub(crate) enum MigrateError {
    TooNew { found: i64 },
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(MigrateError::TooNew { found });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_version_zero_file_and_is_idempotent() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        migrate(&mut c).unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        c.execute("INSERT INTO kv VALUES ('a', 'b')", []).unwrap();
    }
}
