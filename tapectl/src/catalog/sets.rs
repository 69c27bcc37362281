//! Sets in the tape catalog: each set, its copies and their tapes in order, the paths it stores,
//! renames or deletes, and where every part of every stored file starts on each copy's tapes.
//!
//! A set is `writing` while its tapes are written, `complete` once every copy's set manifest is on
//! tape, `interrupted` when its writer died. Only complete sets are offered to `find` and restore:
//! the catalog never claims a file a tape does not hold.

use anyhow::{Context, Result, bail};
use common::relpath::RelPath;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::TapeCatalog;
use crate::sets::layout::{SetEntry, SetKind, Stored};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SetState {
    Writing,
    Complete,
    Interrupted,
    Expired,
}

impl SetState {
    pub fn as_str(self) -> &'static str {
        match self {
            SetState::Writing => "writing",
            SetState::Complete => "complete",
            SetState::Interrupted => "interrupted",
            SetState::Expired => "expired",
        }
    }
    fn parse(s: &str) -> SetState {
        match s {
            "complete" => SetState::Complete,
            "interrupted" => SetState::Interrupted,
            "expired" => SetState::Expired,
            _ => SetState::Writing,
        }
    }
}

/// What a new set is.
#[derive(Debug, Clone)]
pub struct NewSet<'a> {
    pub uuid: &'a str,
    pub job: &'a str,
    pub snapshot: &'a str,
    pub kind: SetKind,
    /// The base set's id (incremental).
    pub base: Option<i64>,
    pub pool: &'a str,
    pub copies: u32,
    pub started_at: jiff::Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetRow {
    #[serde(skip)]
    pub id: i64,
    pub uuid: String,
    pub job: String,
    pub snapshot: String,
    pub kind: SetKind,
    /// The base set's UUID.
    pub base: Option<String>,
    pub pool: String,
    pub state: SetState,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub copies_wanted: u32,
    pub files: Option<u64>,
    pub bytes: Option<u64>,
    pub manifest_blake3: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyRow {
    pub copy: u32,
    pub state: String,
    pub verified_at: Option<String>,
    pub verify_problems: Option<u64>,
    pub tapes: Vec<TapeRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TapeRow {
    pub seq: u32,
    pub barcode: String,
    pub volume_uuid: String,
    pub bytes: u64,
    pub seconds: Option<f64>,
    /// TapeAlert flags the drive raised while this tape was written (a list of names), if any.
    pub tape_alerts: Option<serde_json::Value>,
    /// The drive's volume statistics when the tape was closed (write retries and errors,
    /// compression ratio), where the drive reports them.
    pub write_health: Option<serde_json::Value>,
    pub closed: bool,
}

/// Where a part of a file is on one copy's tape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartRow {
    pub part: u32,
    pub seq: u32,
    pub partition: char,
    pub start_block: u64,
    pub file_offset: u64,
    pub length: u64,
}

/// A version of a path that a complete set holds, for `catalog find`.
#[derive(Debug, Clone, Serialize)]
pub struct FoundVersion {
    pub path: RelPath,
    pub set: String,
    pub job: String,
    pub snapshot: String,
    pub kind: SetKind,
    pub change: String,
    pub size: Option<u64>,
    /// Barcodes holding it, per copy (in tape order).
    pub tapes: Vec<(u32, Vec<String>)>,
}

fn kind_of(s: &str) -> SetKind {
    if s == "incremental" {
        SetKind::Incremental
    } else {
        SetKind::Full
    }
}

const SET_COLUMNS: &str = "s.id, s.uuid, s.job, s.snapshot, s.kind, b.uuid, s.pool, s.state, s.started_at, \
     s.completed_at, s.copies_wanted, s.files, s.bytes, s.manifest_blake3";

fn set_row(r: &rusqlite::Row) -> rusqlite::Result<SetRow> {
    let opt_u64 = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|v| v.max(0) as u64))
    };
    Ok(SetRow {
        id: r.get(0)?,
        uuid: r.get(1)?,
        job: r.get(2)?,
        snapshot: r.get(3)?,
        kind: kind_of(&r.get::<_, String>(4)?),
        base: r.get(5)?,
        pool: r.get(6)?,
        state: SetState::parse(&r.get::<_, String>(7)?),
        started_at: r.get(8)?,
        completed_at: r.get(9)?,
        copies_wanted: r.get::<_, i64>(10)?.clamp(1, u32::MAX as i64) as u32,
        files: opt_u64(11)?,
        bytes: opt_u64(12)?,
        manifest_blake3: r.get(13)?,
    })
}

impl TapeCatalog {
    fn path_id(&self, p: &RelPath) -> Result<i64> {
        // Prepared once per connection: a million-file set asks for a million paths.
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO paths (path) VALUES (?1)")?
            .execute(params![p.as_bytes()])?;
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM paths WHERE path = ?1")?
            .query_row(params![p.as_bytes()], |r| r.get(0))?)
    }

    /// Starts a set: its row (`writing`), its copies, and the paths it stores, renames and deletes.
    /// `entries` are the set manifest's (read as they are needed), `deleted` its deletions.
    pub fn begin_set(
        &self,
        s: &NewSet,
        entries: impl Iterator<Item = anyhow::Result<SetEntry>>,
        deleted: &[RelPath],
    ) -> Result<i64> {
        let tx = self.conn.unchecked_transaction()?;
        self.conn.execute(
            "INSERT INTO sets (uuid, job, snapshot, kind, base_set, pool, state, started_at, copies_wanted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'writing', ?7, ?8)",
            params![
                s.uuid,
                s.job,
                s.snapshot,
                s.kind.as_str(),
                s.base,
                s.pool,
                s.started_at.to_string(),
                s.copies
            ],
        )?;
        let id = self.conn.last_insert_rowid();
        for c in 1..=s.copies {
            self.conn.execute(
                "INSERT INTO copies (set_id, copy, state) VALUES (?1, ?2, 'writing')",
                params![id, c],
            )?;
        }
        {
            let mut ins = self.conn.prepare(
                "INSERT INTO set_files (set_id, path_id, change, size, blake3, renamed_from)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in entries {
                let e = e?;
                let change = match e.stored {
                    Stored::Here | Stored::Link => "stored",
                    Stored::Renamed => "renamed",
                    Stored::Base => continue,
                };
                let from = match &e.from {
                    Some(f) => Some(self.path_id(f)?),
                    None => None,
                };
                ins.execute(params![
                    id,
                    self.path_id(&e.entry.path)?,
                    change,
                    e.entry.size as i64,
                    e.entry.hash.map(|h| h.to_vec()),
                    from
                ])?;
            }
            for d in deleted {
                ins.execute(params![
                    id,
                    self.path_id(d)?,
                    "deleted",
                    None::<i64>,
                    None::<Vec<u8>>,
                    None::<i64>
                ])?;
            }
        }
        tx.commit()?;
        Ok(id)
    }

    /// A tape joins a copy as its `seq`-th.
    pub fn add_copy_tape(
        &self,
        set: i64,
        copy: u32,
        seq: u32,
        barcode: &str,
        volume_uuid: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO copy_tapes (set_id, copy, seq, barcode, volume_uuid) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![set, copy, seq, barcode, volume_uuid],
        )?;
        Ok(())
    }

    /// Records parts that are on tape under a written index: `(path, part, partition, start block,
    /// file offset, length)` on tape `seq` of the copy, with the bytes the tape holds of the set.
    pub fn record_parts(
        &self,
        set: i64,
        copy: u32,
        seq: u32,
        parts: &[(RelPath, PartRow)],
        tape_bytes: u64,
    ) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut ins = self.conn.prepare(
                "INSERT OR REPLACE INTO file_parts (set_id, copy, path_id, part, seq, partition, start_block, file_offset, length)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (path, p) in parts {
                ins.execute(params![
                    set,
                    copy,
                    self.path_id(path)?,
                    p.part,
                    seq,
                    p.partition.to_string(),
                    p.start_block as i64,
                    p.file_offset as i64,
                    p.length as i64
                ])?;
            }
        }
        self.conn.execute(
            "UPDATE copy_tapes SET bytes = ?4 WHERE set_id = ?1 AND copy = ?2 AND seq = ?3",
            params![set, copy, seq, tape_bytes as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A tape leaves a copy (it failed while being written): its parts go with it.
    pub fn drop_copy_tape(&self, set: i64, copy: u32, seq: u32) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        self.conn.execute(
            "DELETE FROM file_parts WHERE set_id = ?1 AND copy = ?2 AND seq = ?3",
            params![set, copy, seq],
        )?;
        self.conn.execute(
            "DELETE FROM copy_tapes WHERE set_id = ?1 AND copy = ?2 AND seq = ?3",
            params![set, copy, seq],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A tape of a copy is closed (its description and index are on it).
    pub fn close_copy_tape(
        &self,
        set: i64,
        copy: u32,
        seq: u32,
        seconds: f64,
        tape_alerts: Option<&str>,
        write_health: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE copy_tapes SET closed = 1, seconds = ?4, tape_alerts = ?5, write_health = ?6
             WHERE set_id = ?1 AND copy = ?2 AND seq = ?3",
            params![set, copy, seq, seconds, tape_alerts, write_health],
        )?;
        Ok(())
    }

    pub fn set_copy_state(&self, set: i64, copy: u32, state: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE copies SET state = ?3 WHERE set_id = ?1 AND copy = ?2",
            params![set, copy, state],
        )?;
        Ok(())
    }

    /// Every copy's manifest is on tape: the set is complete.
    pub fn complete_set(
        &self,
        set: i64,
        files: u64,
        bytes: u64,
        manifest_blake3: &str,
        at: jiff::Timestamp,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE sets SET state = 'complete', completed_at = ?2, files = ?3, bytes = ?4, manifest_blake3 = ?5
             WHERE id = ?1",
            params![set, at.to_string(), files as i64, bytes as i64, manifest_blake3],
        )?;
        Ok(())
    }

    pub fn set_set_state(&self, set: i64, state: SetState) -> Result<()> {
        self.conn.execute(
            "UPDATE sets SET state = ?2 WHERE id = ?1",
            params![set, state.as_str()],
        )?;
        Ok(())
    }

    pub fn record_verify(
        &self,
        set: i64,
        copy: u32,
        problems: u64,
        at: jiff::Timestamp,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE copies SET verified_at = ?3, verify_problems = ?4 WHERE set_id = ?1 AND copy = ?2",
            params![set, copy, at.to_string(), problems as i64],
        )?;
        Ok(())
    }

    /// Sets, oldest first, optionally of one job and one pool.
    pub fn sets(&self, job: Option<&str>, pool: Option<&str>) -> Result<Vec<SetRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {SET_COLUMNS} FROM sets s LEFT JOIN sets b ON b.id = s.base_set
             WHERE (?1 IS NULL OR s.job = ?1) AND (?2 IS NULL OR s.pool = ?2)
             ORDER BY s.started_at, s.id"
        ))?;
        let rows = stmt.query_map(params![job, pool], set_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The set named by its UUID, a unique prefix of it, or `latest` (the newest set).
    pub fn set(&self, name: &str) -> Result<SetRow> {
        if name == "latest" {
            return self.sets(None, None)?.pop().context(
                "no sets in the tape catalog yet (write one with `tapectl set write JOB`)",
            );
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            bail!("{name:?} is not a set UUID (see `tapectl set list`)");
        }
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {SET_COLUMNS} FROM sets s LEFT JOIN sets b ON b.id = s.base_set
             WHERE s.uuid LIKE ?1 || '%' LIMIT 2"
        ))?;
        let rows: Vec<SetRow> = stmt
            .query_map(params![name.to_ascii_lowercase()], set_row)?
            .collect::<Result<_, _>>()?;
        match rows.len() {
            1 => Ok(rows.into_iter().next().expect("one")),
            0 => bail!("no set {name} in the tape catalog (see `tapectl set list`)"),
            _ => bail!("{name} names more than one set; give more of its UUID"),
        }
    }

    pub fn set_by_id(&self, id: i64) -> Result<SetRow> {
        Ok(self.conn.query_row(
            &format!("SELECT {SET_COLUMNS} FROM sets s LEFT JOIN sets b ON b.id = s.base_set WHERE s.id = ?1"),
            params![id],
            set_row,
        )?)
    }

    /// The newest complete set of `job` in `pool`: what an incremental set builds on.
    pub fn newest_complete(&self, job: &str, pool: &str) -> Result<Option<SetRow>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {SET_COLUMNS} FROM sets s LEFT JOIN sets b ON b.id = s.base_set
                     WHERE s.job = ?1 AND s.pool = ?2 AND s.state = 'complete'
                     ORDER BY s.snapshot DESC, s.id DESC LIMIT 1"
                ),
                params![job, pool],
                set_row,
            )
            .optional()?)
    }

    /// The set and the sets it builds on, newest first (the set itself, its base, …, the full set).
    pub fn chain(&self, set: &SetRow) -> Result<Vec<SetRow>> {
        let mut out = vec![set.clone()];
        while let Some(base) = out.last().and_then(|s| s.base.clone()) {
            if out.len() > 100_000 {
                bail!(
                    "the tape catalog's chain of sets from {} does not end",
                    set.uuid
                );
            }
            out.push(self.set(&base)?);
        }
        Ok(out)
    }

    pub fn copies(&self, set: i64) -> Result<Vec<CopyRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT copy, state, verified_at, verify_problems FROM copies WHERE set_id = ?1 ORDER BY copy",
        )?;
        let copies: Vec<(u32, String, Option<String>, Option<i64>)> = stmt
            .query_map(params![set], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut tapes = self.conn.prepare(
            "SELECT seq, barcode, volume_uuid, bytes, seconds, tape_alerts, closed, write_health FROM copy_tapes
             WHERE set_id = ?1 AND copy = ?2 ORDER BY seq",
        )?;
        let mut out = Vec::new();
        for (copy, state, verified_at, problems) in copies {
            let t = tapes
                .query_map(params![set, copy], |r| {
                    Ok(TapeRow {
                        seq: r.get(0)?,
                        barcode: r.get(1)?,
                        volume_uuid: r.get(2)?,
                        bytes: r.get::<_, i64>(3)?.max(0) as u64,
                        seconds: r.get(4)?,
                        tape_alerts: json_column(r.get(5)?),
                        closed: r.get::<_, i64>(6)? != 0,
                        write_health: json_column(r.get(7)?),
                    })
                })?
                .collect::<Result<_, _>>()?;
            out.push(CopyRow {
                copy,
                state,
                verified_at,
                verify_problems: problems.map(|p| p.max(0) as u64),
                tapes: t,
            });
        }
        Ok(out)
    }

    /// Versions of the paths `matches` accepts, in complete sets, oldest set first.
    pub fn find(&self, matches: impl Fn(&RelPath) -> bool) -> Result<Vec<FoundVersion>> {
        let mut stmt = self.conn.prepare(
            "SELECT p.path, s.id, s.uuid, s.job, s.snapshot, s.kind, f.change, f.size
             FROM set_files f JOIN paths p ON p.id = f.path_id JOIN sets s ON s.id = f.set_id
             WHERE s.state = 'complete' ORDER BY s.snapshot, s.id, p.path",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let path: Vec<u8> = r.get(0)?;
            let Ok(path) = RelPath::parse(&path) else {
                continue;
            };
            if !matches(&path) {
                continue;
            }
            let set_id: i64 = r.get(1)?;
            let change: String = r.get(6)?;
            let tapes = if change == "deleted" {
                Vec::new()
            } else {
                self.tapes_holding(set_id, &path)?
            };
            out.push(FoundVersion {
                path,
                set: r.get(2)?,
                job: r.get(3)?,
                snapshot: r.get(4)?,
                kind: kind_of(&r.get::<_, String>(5)?),
                change,
                size: r.get::<_, Option<i64>>(7)?.map(|v| v.max(0) as u64),
                tapes,
            });
        }
        Ok(out)
    }

    fn tapes_holding(&self, set: i64, path: &RelPath) -> Result<Vec<(u32, Vec<String>)>> {
        let mut stmt = self.conn.prepare(
            "SELECT fp.copy, ct.barcode FROM file_parts fp
             JOIN paths p ON p.id = fp.path_id
             JOIN copy_tapes ct ON ct.set_id = fp.set_id AND ct.copy = fp.copy AND ct.seq = fp.seq
             WHERE fp.set_id = ?1 AND p.path = ?2 ORDER BY fp.copy, fp.part",
        )?;
        let rows = stmt.query_map(params![set, path.as_bytes()], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out: Vec<(u32, Vec<String>)> = Vec::new();
        for row in rows {
            let (copy, barcode) = row?;
            match out.last_mut() {
                Some((c, b)) if *c == copy => {
                    if b.last() != Some(&barcode) {
                        b.push(barcode)
                    }
                }
                _ => out.push((copy, vec![barcode])),
            }
        }
        Ok(out)
    }

    /// Sets still `writing` whose writer is gone become `interrupted` (`alive` says whether a
    /// set's writer still runs).
    pub fn settle_interrupted(&self, alive: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let writing: Vec<(i64, String)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id, uuid FROM sets WHERE state = 'writing'")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut settled = Vec::new();
        for (id, uuid) in writing {
            if !alive(&uuid) {
                self.set_set_state(id, SetState::Interrupted)?;
                self.conn.execute(
                    "UPDATE copies SET state = 'interrupted' WHERE set_id = ?1 AND state = 'writing'",
                    params![id],
                )?;
                settled.push(uuid);
            }
        }
        Ok(settled)
    }

    /// What the expiry rules need of every set that is not being written.
    pub fn set_facts(&self) -> Result<Vec<crate::expiry::SetFacts>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, kind, base_set, pool, COALESCE(completed_at, started_at), state FROM sets
             WHERE state != 'writing' ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, base, pool, at, state) = row?;
            let at = at
                .parse()
                .with_context(|| format!("the tape catalog has time {at:?} for set {id}"))?;
            out.push(crate::expiry::SetFacts {
                id,
                kind: kind_of(&kind),
                base,
                pool,
                at,
                expired: state == "expired",
            });
        }
        Ok(out)
    }

    /// The sets with a copy on each barcode.
    pub fn sets_by_tape(&self) -> Result<std::collections::HashMap<String, Vec<i64>>> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT barcode, set_id FROM copy_tapes ORDER BY barcode, set_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out: std::collections::HashMap<String, Vec<i64>> = Default::default();
        for row in rows {
            let (b, id) = row?;
            out.entry(b).or_default().push(id);
        }
        Ok(out)
    }

    /// Marks sets expired (never one being written).
    pub fn expire_sets(&self, ids: &[i64]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        for id in ids {
            self.conn.execute(
                "UPDATE sets SET state = 'expired' WHERE id = ?1 AND state != 'writing'",
                params![id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A tape is being written anew: the expired sets with a copy on it leave the catalog, with
    /// every set built on them (expired too, by the rules). Returns their UUIDs (their manifest
    /// copies in the state directory go with them). Refuses when any of them has not expired.
    pub fn forget_sets_on_tape(&self, barcode: &str) -> Result<Vec<String>> {
        let tx = self.conn.unchecked_transaction()?;
        let mut todo: Vec<i64> = {
            let mut stmt = self
                .conn
                .prepare("SELECT DISTINCT set_id FROM copy_tapes WHERE barcode = ?1")?;
            stmt.query_map(params![barcode], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        let mut all: Vec<i64> = Vec::new();
        while let Some(id) = todo.pop() {
            if all.contains(&id) {
                continue;
            }
            all.push(id);
            let mut stmt = self
                .conn
                .prepare("SELECT id FROM sets WHERE base_set = ?1")?;
            let deps: Vec<i64> = stmt
                .query_map(params![id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            todo.extend(deps);
        }
        let mut uuids = Vec::new();
        for id in &all {
            let s = self.set_by_id(*id)?;
            if s.state != SetState::Expired {
                bail!(
                    "{barcode} holds set {} ({}), which has not expired; it is not written anew",
                    s.uuid,
                    s.state.as_str()
                );
            }
            uuids.push(s.uuid);
        }
        // Newest first: a base goes after the sets built on it.
        all.sort_by(|a, b| b.cmp(a));
        for id in all {
            self.conn
                .execute("DELETE FROM sets WHERE id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(uuids)
    }

    /// Barcodes holding any copy of any set that is not expired.
    pub fn tapes_of_set(&self, set: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT barcode FROM copy_tapes WHERE set_id = ?1 ORDER BY barcode",
        )?;
        let rows = stmt.query_map(params![set], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The sets with a copy on `barcode` (its contents, newest first).
    pub fn sets_on_tape(&self, barcode: &str) -> Result<Vec<SetRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {SET_COLUMNS} FROM sets s LEFT JOIN sets b ON b.id = s.base_set
             WHERE s.id IN (SELECT set_id FROM copy_tapes WHERE barcode = ?1) ORDER BY s.id DESC"
        ))?;
        let rows = stmt.query_map(params![barcode], set_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A JSON text column; text that does not parse is kept as a string.
fn json_column(v: Option<String>) -> Option<serde_json::Value> {
    v.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)))
}
