//! The tape catalog (`<state_dir>/tapes.sqlite`): what rackvault knows of its media and of the
//! tape sets on them. The library's element status is the truth for what is onsite; every tape
//! describes itself (LTFS index and set self-description), so this catalog can be rebuilt from the
//! tapes alone. Designed for both tape sets (issue 12) and media rotation (issue 13):
//!
//! - `media`: one row per barcode ever seen: pool, state, LTFS volume UUID, the fingerprint of the key
//!   it is encrypted with (schema version 2), where it is, counters.
//! - `media_history`: every change of state or location, appended, never updated: when, what,
//!   from, to, why, and who (the command or daemon job).
//! - `sets`: one backup snapshot written to tape: job, snapshot, full or incremental (and its base
//!   set), pool, state (`writing` until its set manifest is on tape, then `complete`).
//! - `copies`, `copy_tapes`: each copy of a set and its tapes in order (a copy spans tapes).
//! - `paths`, `set_files`, `file_parts`: which relative path each set holds (or deletes), and for
//!   each copy which tape, partition and block each part of a file starts at, so a restore loads
//!   the right tape and seeks straight to the file.
//!
//! `media` has the media operations, `sets` those of sets, copies and their files.

mod media;
mod sets;

pub use media::{CLEANER_LIFE, HistoryRow, Location, MediaChange, MediaRow, MediaState};
pub use sets::{CopyRow, FoundVersion, NewSet, PartRow, SetRow, SetState, TapeRow};

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::Connection;

const SCHEMA: &[&str] = &[
    // version 1
    "CREATE TABLE media (
        barcode TEXT PRIMARY KEY,
        pool TEXT,
        state TEXT NOT NULL CHECK (state IN ('new','writable','full','expired','damaged','retired','cleaning')),
        volume_uuid TEXT,
        location TEXT NOT NULL,
        bytes_written INTEGER NOT NULL DEFAULT 0,
        loads INTEGER NOT NULL DEFAULT 0,
        write_errors INTEGER NOT NULL DEFAULT 0,
        read_errors INTEGER NOT NULL DEFAULT 0,
        cleaning_uses INTEGER,
        destination TEXT,
        first_seen TEXT NOT NULL,
        updated_at TEXT NOT NULL
     );
     CREATE TABLE media_history (
        id INTEGER PRIMARY KEY,
        barcode TEXT NOT NULL REFERENCES media(barcode),
        at TEXT NOT NULL,
        what TEXT NOT NULL CHECK (what IN ('seen','state','location','pool','volume')),
        old TEXT,
        new TEXT,
        why TEXT NOT NULL,
        actor TEXT NOT NULL
     );
     CREATE INDEX media_history_barcode ON media_history(barcode, id);
     CREATE TABLE sets (
        id INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        job TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('full','incremental')),
        base_set INTEGER REFERENCES sets(id),
        pool TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('writing','complete','interrupted','expired')),
        started_at TEXT NOT NULL,
        completed_at TEXT,
        copies_wanted INTEGER NOT NULL DEFAULT 1,
        files INTEGER,
        bytes INTEGER,
        manifest_blake3 TEXT,
        CHECK ((kind = 'full') = (base_set IS NULL))
     );
     CREATE INDEX sets_job ON sets(job, snapshot);
     CREATE TABLE copies (
        set_id INTEGER NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
        copy INTEGER NOT NULL CHECK (copy >= 1),
        state TEXT NOT NULL CHECK (state IN ('writing','complete','interrupted','damaged')),
        verified_at TEXT,
        verify_problems INTEGER,
        PRIMARY KEY (set_id, copy)
     );
     CREATE TABLE copy_tapes (
        set_id INTEGER NOT NULL,
        copy INTEGER NOT NULL,
        seq INTEGER NOT NULL CHECK (seq >= 1),
        barcode TEXT NOT NULL REFERENCES media(barcode),
        volume_uuid TEXT NOT NULL,
        bytes INTEGER NOT NULL DEFAULT 0,
        seconds REAL,
        tape_alerts TEXT,
        write_health TEXT,
        closed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (set_id, copy, seq),
        FOREIGN KEY (set_id, copy) REFERENCES copies(set_id, copy) ON DELETE CASCADE
     );
     CREATE INDEX copy_tapes_barcode ON copy_tapes(barcode);
     CREATE TABLE paths (
        id INTEGER PRIMARY KEY,
        path BLOB NOT NULL UNIQUE
     );
     CREATE TABLE set_files (
        set_id INTEGER NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
        path_id INTEGER NOT NULL REFERENCES paths(id),
        change TEXT NOT NULL CHECK (change IN ('stored','renamed','deleted')),
        size INTEGER,
        blake3 BLOB,
        renamed_from INTEGER REFERENCES paths(id),
        PRIMARY KEY (set_id, path_id)
     );
     CREATE INDEX set_files_path ON set_files(path_id);
     CREATE TABLE file_parts (
        set_id INTEGER NOT NULL,
        copy INTEGER NOT NULL,
        path_id INTEGER NOT NULL,
        part INTEGER NOT NULL CHECK (part >= 0),
        seq INTEGER NOT NULL,
        partition TEXT NOT NULL CHECK (partition IN ('a','b')),
        start_block INTEGER NOT NULL,
        file_offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        PRIMARY KEY (set_id, copy, path_id, part),
        FOREIGN KEY (set_id, copy, seq) REFERENCES copy_tapes(set_id, copy, seq) ON DELETE CASCADE
     );
     CREATE INDEX file_parts_tape ON file_parts(set_id, copy, seq, start_block);",
    // version 2: the fingerprint of the key a tape's volume is encrypted with (NULL: plain LTFS).
    // The key itself is never in the catalog (docs/encryption.md).
    "ALTER TABLE media ADD COLUMN key_fingerprint TEXT;",
];

pub struct TapeCatalog {
    conn: Connection,
    state_dir: std::path::PathBuf,
}

impl TapeCatalog {
    /// Opens (creating) `<state_dir>/tapes.sqlite`.
    pub fn open(state_dir: &Path) -> Result<TapeCatalog> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let conn = common::sqlite::open(&state_dir.join("tapes.sqlite"), SCHEMA)?;
        Ok(TapeCatalog {
            conn,
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// Opens a catalog file that is not state_dir's (a copy being made for a tape).
    pub fn open_file(path: &Path) -> Result<TapeCatalog> {
        let conn = common::sqlite::open(path, SCHEMA)?;
        Ok(TapeCatalog {
            conn,
            state_dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        })
    }

    /// The state directory the catalog lives in (its set manifest copies are beside it).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_catalog_gains_key_fingerprints() {
        let d = tempfile::tempdir().unwrap();
        {
            let conn = rusqlite::Connection::open(d.path().join("tapes.sqlite")).unwrap();
            conn.execute_batch(SCHEMA[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO media (barcode, pool, state, volume_uuid, location, first_seen, updated_at)
                 VALUES ('RV0001L6', 'offsite', 'writable', 'u', 'slot:1', 'x', 'x')",
                [],
            )
            .unwrap();
        }
        let cat = TapeCatalog::open(d.path()).unwrap();
        let m = cat.media("RV0001L6").unwrap().unwrap();
        assert_eq!(
            m.key_fingerprint, None,
            "tapes written before encryption are plain"
        );
        cat.set_key_fingerprint("RV0001L6", Some("3f:a1")).unwrap();
        let m = cat.media("RV0001L6").unwrap().unwrap();
        assert_eq!(m.key_fingerprint.as_deref(), Some("3f:a1"));
        let v: i64 = cat
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
    }
}
