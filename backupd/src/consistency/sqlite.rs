//! `sqlite`: a copy of each database file made with SQLite's online backup API, written into the
//! job's dump directory under the database's file name; the engine then backs up that directory.
//!
//! The copy is taken from a read-only connection in steps, so a writer in another process can go
//! on between steps. A write from elsewhere restarts the copy; after a few restarts the rest is
//! copied in one step, which holds a read transaction for its duration (in WAL mode writers still
//! go on; with a rollback journal they wait until the copy ends). Each copy includes the committed
//! WAL content, is switched to rollback-journal mode (one self-contained file), and must pass
//! `PRAGMA integrity_check`.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::postgres::{create_dump_dir, publish_file, tmp_name};
use super::{Context, View};
use crate::progress::Cancelled;

/// Pages copied per step (with 4 KiB pages, 4 MiB); the source is unlocked between steps.
const PAGES_PER_STEP: i32 = 1024;
/// A short pause between steps lets writers in.
const STEP_PAUSE: Duration = Duration::from_millis(2);
/// Restarts (the source changed mid-copy) before copying the rest in one step.
const MAX_RESTARTS: u32 = 3;
/// How long a step may keep finding the source busy or locked before the run fails.
const BUSY_LIMIT: Duration = Duration::from_secs(120);
/// The source connection's own wait for a lock, per attempt.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub fn prepare(ctx: &Context, databases: &[std::path::PathBuf]) -> Result<View> {
    let dir = ctx.job.source.clone();
    create_dump_dir(&dir)?;
    let mut view = View::point_in_time(dir.clone());
    // The copies duplicate the data: keep them only until the snapshot has them.
    let d = dir.clone();
    view.on_release(move || crate::store::remove_path(&d));
    for db in databases {
        ctx.progress.check()?;
        ctx.progress
            .phase(&format!("copying sqlite {}", db.display()));
        // Names are unique (the config checks), so copies do not collide.
        let name = db
            .file_name()
            .with_context(|| format!("{} is not a file path", db.display()))?;
        let started = Instant::now();
        copy_database(ctx, db, &dir.join(name), &mut view.warnings)
            .with_context(|| format!("cannot copy sqlite database {}", db.display()))?;
        tracing::info!(job = %ctx.job.name, database = %db.display(), secs = started.elapsed().as_secs_f64(), "copied sqlite database");
    }
    Ok(view)
}

fn copy_database(
    ctx: &Context,
    src_path: &Path,
    dest: &Path,
    warnings: &mut Vec<String>,
) -> Result<()> {
    match std::fs::metadata(src_path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => bail!(
            "{} is not a file; list database files in the job's `databases`",
            src_path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "database file {} does not exist; fix the path in the job's `databases` (or remove it)",
            src_path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", src_path.display()));
        }
    }
    // Read-only: a backup must never change the application's database (nor roll back its
    // hot journal behind its back).
    let src = Connection::open_with_flags(
        src_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {} read-only", src_path.display()))?;
    src.busy_timeout(BUSY_TIMEOUT)?;

    let tmp = tmp_name(dest);
    let result = (|| -> Result<()> {
        // Created first so that the copy is private from the start (it holds the data).
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        {
            let mut dst = Connection::open(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            // Durability comes from one fsync of the finished file.
            dst.pragma_update(None, "synchronous", "OFF")?;
            backup(ctx, &src, &mut dst, src_path)?;
            // The copy carries the source's journal mode; make it one self-contained file.
            let mode: String = dst.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("delete") {
                warnings.push(format!(
                    "sqlite {}: the copy stayed in journal mode {mode:?}",
                    src_path.display()
                ));
            }
            check_integrity(&dst).with_context(|| {
                format!(
                    "the copy of {} fails PRAGMA integrity_check; check the source with `sqlite3 {} 'PRAGMA integrity_check'`",
                    src_path.display(),
                    src_path.display()
                )
            })?;
            dst.close()
                .map_err(|(_, e)| e)
                .with_context(|| format!("cannot close {}", tmp.display()))?;
        }
        let f = File::options()
            .write(true)
            .open(&tmp)
            .with_context(|| format!("cannot open {}", tmp.display()))?;
        // The source's modification time, so that a copy of an unchanged database is the same
        // file, metadata included, as in the previous snapshot (which can then share it).
        if let Some(t) = source_mtime(src_path) {
            f.set_modified(t)
                .with_context(|| format!("cannot set the time of {}", tmp.display()))?;
        }
        publish_file(&f, &tmp, dest)
    })();
    if result.is_err() {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = tmp.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

/// Copies `src` into `dst` in steps, retrying while the source is busy or locked.
fn backup(ctx: &Context, src: &Connection, dst: &mut Connection, src_path: &Path) -> Result<()> {
    let mut restarts = 0u32;
    let mut busy_since: Option<Instant> = None;
    let b = Backup::new(src, dst)?;
    let mut last_remaining: Option<i32> = None;
    loop {
        ctx.progress.check()?;
        // Past a few restarts the copy would chase a busy writer forever: take it in one step.
        let pages = if restarts >= MAX_RESTARTS {
            -1
        } else {
            PAGES_PER_STEP
        };
        match b.step(pages)? {
            StepResult::Done => break,
            StepResult::More => {
                busy_since = None;
                let p = b.progress();
                // Remaining pages that did not go down mean the copy started over.
                if let Some(last) = last_remaining
                    && p.remaining >= last
                {
                    restarts += 1;
                    if restarts == MAX_RESTARTS {
                        tracing::info!(database = %src_path.display(), restarts, "the source keeps changing; copying the rest in one step");
                    }
                }
                last_remaining = Some(p.remaining);
                std::thread::sleep(STEP_PAUSE);
            }
            StepResult::Busy | StepResult::Locked => {
                let since = *busy_since.get_or_insert_with(Instant::now);
                if since.elapsed() > BUSY_LIMIT {
                    bail!(
                        "{} stayed locked for {}s; is a process holding a long write transaction?",
                        src_path.display(),
                        BUSY_LIMIT.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // StepResult is non-exhaustive.
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    if ctx.progress.is_cancelled() {
        return Err(Cancelled.into());
    }
    Ok(())
}

/// When the database last changed: its file, or its WAL where commits land first.
fn source_mtime(db: &Path) -> Option<std::time::SystemTime> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let main = std::fs::metadata(db).and_then(|m| m.modified()).ok()?;
    // An empty WAL (after a checkpoint) says nothing about content.
    match std::fs::metadata(&wal) {
        Ok(m) if m.len() > 0 => Some(m.modified().map_or(main, |w| w.max(main))),
        _ => Some(main),
    }
}

fn check_integrity(db: &Connection) -> Result<()> {
    let mut stmt = db.prepare("PRAGMA integrity_check")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    let mut msg: Vec<&str> = rows.iter().take(5).map(String::as_str).collect();
    if rows.len() > 5 {
        msg.push("...");
    }
    bail!("integrity_check: {}", msg.join("; "))
}
