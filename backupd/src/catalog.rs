//! The catalog: runs and snapshots with their statistics, in SQLite in the state directory.
//! The store is the truth about which snapshots exist; the catalog is the history.

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::engine::Stats;

const SCHEMA: &[&str] = &[
    // version 1
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        snapshot TEXT,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        status TEXT NOT NULL CHECK (status IN ('running','succeeded','failed','interrupted')),
        error TEXT,
        pid INTEGER NOT NULL,
        stats TEXT
     );
     CREATE INDEX runs_job ON runs(job, id);
     CREATE TABLE snapshots (
        job TEXT NOT NULL,
        name TEXT NOT NULL,
        run_id INTEGER REFERENCES runs(id),
        created_at TEXT NOT NULL,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        bytes_written INTEGER NOT NULL,
        deleted_at TEXT,
        PRIMARY KEY (job, name)
     );",
    // version 2: queued runs (the daemon's queue), cancelled runs, and what started each run.
    "CREATE TABLE runs_v2 (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        snapshot TEXT,
        trigger TEXT NOT NULL DEFAULT 'cli',
        queued_at TEXT,
        started_at TEXT,
        finished_at TEXT,
        status TEXT NOT NULL CHECK (status IN ('queued','running','succeeded','failed','cancelled','interrupted')),
        error TEXT,
        pid INTEGER,
        stats TEXT
     );
     INSERT INTO runs_v2 (id, job, snapshot, trigger, queued_at, started_at, finished_at, status, error, pid, stats)
        SELECT id, job, snapshot, 'cli', started_at, started_at, finished_at, status, error, pid, stats FROM runs;
     DROP TABLE runs;
     ALTER TABLE runs_v2 RENAME TO runs;
     CREATE INDEX runs_job ON runs(job, id);
     CREATE INDEX runs_status ON runs(status);",
];

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// `backupd run` without a daemon.
    Cli,
    /// The job's schedule.
    Schedule,
    /// A scheduled time missed while the daemon was down.
    CatchUp,
    /// The API (or `backupd run` handing the run to the daemon).
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch-up",
            Trigger::Manual => "manual",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Stopped on request (API cancel, or shutdown); nothing was published.
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

pub struct Catalog {
    conn: Connection,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub job: Option<String>,
    pub status: Option<String>,
    /// Only runs with a smaller id (paging backwards).
    pub before: Option<i64>,
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub job: String,
    pub snapshot: Option<String>,
    pub trigger: String,
    pub queued_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub stats: Option<serde_json::Value>,
    /// Warnings of the run (files left out, xattrs not read, …): a run that succeeded with
    /// warnings did not back up everything it was asked to.
    pub warnings: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRow {
    pub files: u64,
    pub bytes: u64,
    pub bytes_written: u64,
}

/// Turns SQLite's "database or disk is full" anywhere in an error's chain into an error that says
/// where space is missing and what to do. (A full store is explained by `run` itself.)
pub fn explain_full(e: anyhow::Error, state_dir: &Path) -> anyhow::Error {
    let full = e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>()
            .and_then(|s| s.sqlite_error_code())
            .is_some_and(|code| code == rusqlite::ErrorCode::DiskFull)
    });
    if full {
        e.context(format!(
            "state_dir {} is full: free space on its filesystem, then run again (reading commands still work)",
            state_dir.display()
        ))
    } else {
        e
    }
}

impl Catalog {
    pub fn open(state_dir: &Path) -> Result<Catalog> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let path = state_dir.join("catalog.sqlite");
        let conn = common::sqlite::open(&path, SCHEMA)?;
        Ok(Catalog { conn })
    }

    /// Marks runs of `job` left `running` by a process that died as `interrupted`.
    /// Call only while holding the job's lock.
    pub fn mark_interrupted(&self, job: &str) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE runs SET status = 'interrupted', error = 'the process ended before the run finished; nothing was published', finished_at = ?2
             WHERE job = ?1 AND status = 'running'",
            params![job, jiff::Timestamp::now().to_string()],
        )?)
    }

    /// Runs of `job` that did not finish (left `running` by a dead process, or already marked
    /// interrupted) whose snapshot is not recorded: (id, snapshot name). Their snapshot may have
    /// been published all the same.
    pub fn unrecorded_runs(&self, job: &str) -> Result<Vec<(i64, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, snapshot FROM runs r
             WHERE job = ?1 AND status IN ('running', 'interrupted') AND snapshot IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.job = r.job AND s.name = r.snapshot)",
        )?;
        let rows = stmt.query_map(params![job], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks queued runs left by a daemon that stopped as cancelled. Call only while holding
    /// the daemon lock.
    pub fn abandon_queued(&self) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE runs SET status = 'cancelled', error = 'the daemon stopped before the run started', finished_at = ?1
             WHERE status = 'queued'",
            params![jiff::Timestamp::now().to_string()],
        )?)
    }

    /// A run that starts now (the CLI without a daemon).
    pub fn start_run(
        &self,
        job: &str,
        snapshot: &str,
        started: jiff::Timestamp,
        trigger: Trigger,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (job, snapshot, trigger, queued_at, started_at, status, pid)
             VALUES (?1, ?2, ?3, ?4, ?4, 'running', ?5)",
            params![
                job,
                snapshot,
                trigger.as_str(),
                started.to_string(),
                std::process::id()
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// A run waiting in the daemon's queue.
    pub fn enqueue_run(&self, job: &str, trigger: Trigger, at: jiff::Timestamp) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (job, trigger, queued_at, status) VALUES (?1, ?2, ?3, 'queued')",
            params![job, trigger.as_str(), at.to_string()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// A queued run starts; fails if it is no longer queued (cancelled meanwhile).
    pub fn begin_queued_run(
        &self,
        id: i64,
        snapshot: &str,
        started: jiff::Timestamp,
    ) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE runs SET status = 'running', snapshot = ?2, started_at = ?3, pid = ?4
             WHERE id = ?1 AND status = 'queued'",
            params![id, snapshot, started.to_string(), std::process::id()],
        )?;
        if n != 1 {
            anyhow::bail!("run {id} is no longer queued");
        }
        Ok(())
    }

    /// A queued run is dropped before it started.
    pub fn cancel_queued(&self, id: i64, why: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE runs SET status = 'cancelled', error = ?2, finished_at = ?3 WHERE id = ?1 AND status = 'queued'",
            params![id, why, jiff::Timestamp::now().to_string()],
        )? == 1)
    }

    pub fn finish_run(
        &self,
        id: i64,
        outcome: Outcome,
        error: Option<&str>,
        stats: Option<&Stats>,
    ) -> Result<()> {
        let stats = stats.map(serde_json::to_string).transpose()?;
        self.record_end(id, outcome, error, stats)
    }

    fn record_end(
        &self,
        id: i64,
        outcome: Outcome,
        error: Option<&str>,
        stats: Option<String>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET status = ?2, error = ?3, stats = ?4, finished_at = ?5 WHERE id = ?1",
            params![
                id,
                outcome.as_str(),
                error,
                stats,
                jiff::Timestamp::now().to_string()
            ],
        )?;
        Ok(())
    }

    /// Finishes a run whose statistics are not the backup engine's (a tape job's sets).
    pub fn finish_run_report(
        &self,
        id: i64,
        outcome: Outcome,
        error: Option<&str>,
        report: &impl Serialize,
    ) -> Result<()> {
        self.record_end(id, outcome, error, Some(serde_json::to_string(report)?))
    }

    pub fn run(&self, id: i64) -> Result<Option<RunRow>> {
        Ok(self.query_runs("WHERE id = ?1", params![id])?.pop())
    }

    /// The newest run of `job` with one of `statuses`.
    pub fn last_run(&self, job: &str, statuses: &[&str]) -> Result<Option<RunRow>> {
        let list = statuses
            .iter()
            .map(|s| format!("'{}'", s.replace('\'', "")))
            .collect::<Vec<_>>()
            .join(",");
        Ok(self
            .query_runs(
                &format!("WHERE job = ?1 AND status IN ({list}) ORDER BY id DESC LIMIT 1"),
                params![job],
            )?
            .pop())
    }

    /// When the newest run of `job` started, whatever its outcome (the scheduler's "did a run
    /// happen since the last scheduled time"; a run that was queued but never started is none).
    pub fn last_attempt_at(&self, job: &str) -> Result<Option<jiff::Timestamp>> {
        let t: Option<String> = self
            .conn
            .query_row(
                "SELECT MAX(started_at) FROM runs WHERE job = ?1",
                params![job],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(t.and_then(|t| t.parse().ok()))
    }

    /// The newest run of every job, by job.
    pub fn last_run_per_job(&self) -> Result<std::collections::HashMap<String, RunRow>> {
        Ok(self
            .query_runs("WHERE id IN (SELECT MAX(id) FROM runs GROUP BY job)", [])?
            .into_iter()
            .map(|r| (r.job.clone(), r))
            .collect())
    }

    /// Live snapshots recorded in the catalog (not deleted), by job.
    pub fn snapshot_counts(&self) -> Result<std::collections::HashMap<String, u64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT job, COUNT(*) FROM snapshots WHERE deleted_at IS NULL GROUP BY job",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Live snapshots of `job` recorded in the catalog (not deleted).
    pub fn snapshot_count(&self, job: &str) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM snapshots WHERE job = ?1 AND deleted_at IS NULL",
            params![job],
            |r| r.get(0),
        )?)
    }

    /// A run that published `name`: its end and its snapshot in one transaction, so a crash
    /// cannot leave a succeeded run without its snapshot (or the reverse).
    pub fn record_published(
        &self,
        run_id: i64,
        job: &str,
        name: &str,
        stats: &Stats,
        note: Option<&str>,
    ) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        self.finish_run(run_id, Outcome::Succeeded, note, Some(stats))?;
        self.add_snapshot(job, name, run_id, stats)?;
        tx.commit()?;
        Ok(())
    }

    pub fn add_snapshot(&self, job: &str, name: &str, run_id: i64, stats: &Stats) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO snapshots (job, name, run_id, created_at, files, bytes, bytes_written)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![job, name, run_id, jiff::Timestamp::now().to_string(), stats.files, stats.bytes, stats.bytes_written],
        )?;
        Ok(())
    }

    pub fn snapshot(&self, job: &str, name: &str) -> Result<Option<SnapshotRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT files, bytes, bytes_written FROM snapshots WHERE job = ?1 AND name = ?2",
                params![job, name],
                |r| {
                    Ok(SnapshotRow {
                        files: r.get(0)?,
                        bytes: r.get(1)?,
                        bytes_written: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn mark_deleted(&self, job: &str, name: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE snapshots SET deleted_at = ?3 WHERE job = ?1 AND name = ?2",
            params![job, name, jiff::Timestamp::now().to_string()],
        )?;
        Ok(())
    }

    pub fn runs(&self, job: Option<&str>, limit: usize) -> Result<Vec<RunRow>> {
        self.runs_filtered(&RunFilter {
            job: job.map(str::to_string),
            limit,
            ..Default::default()
        })
    }

    /// Runs, newest first, filtered by job, status and an id cursor (`before`).
    pub fn runs_filtered(&self, f: &RunFilter) -> Result<Vec<RunRow>> {
        self.query_runs(
            "WHERE (?1 IS NULL OR job = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3)
             ORDER BY id DESC LIMIT ?4",
            params![f.job, f.status, f.before, f.limit.min(10_000) as i64],
        )
    }

    fn query_runs(&self, tail: &str, p: impl rusqlite::Params) -> Result<Vec<RunRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT id, job, snapshot, trigger, queued_at, started_at, finished_at, status, error, stats FROM runs {tail}"
        ))?;
        let rows = stmt.query_map(p, |r| {
            let stats: Option<String> = r.get(9)?;
            Ok(RunRow {
                id: r.get(0)?,
                job: r.get(1)?,
                snapshot: r.get(2)?,
                trigger: r.get(3)?,
                queued_at: r.get(4)?,
                started_at: r.get(5)?,
                finished_at: r.get(6)?,
                status: r.get(7)?,
                error: r.get(8)?,
                stats: stats.and_then(|s| serde_json::from_str(&s).ok()),
                warnings: 0,
            })
            .map(|mut row: RunRow| {
                row.warnings = row
                    .stats
                    .as_ref()
                    .and_then(|s| s["warnings"].as_array())
                    .map_or(0, |w| w.len() as u64);
                row
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lifecycle_and_interruption() {
        let d = tempfile::tempdir().unwrap();
        let c = Catalog::open(d.path()).unwrap();
        let a = c
            .start_run("j", "s1", jiff::Timestamp::now(), Trigger::Cli)
            .unwrap();
        c.finish_run(a, Outcome::Succeeded, None, Some(&Stats::default()))
            .unwrap();
        c.add_snapshot(
            "j",
            "s1",
            a,
            &Stats {
                files: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let b = c
            .start_run("j", "s2", jiff::Timestamp::now(), Trigger::Cli)
            .unwrap();
        drop(c);
        let c = Catalog::open(d.path()).unwrap();
        assert_eq!(c.mark_interrupted("j").unwrap(), 1);
        let runs = c.runs(Some("j"), 10).unwrap();
        assert_eq!(runs[0].id, b);
        assert_eq!(runs[0].status, "interrupted");
        assert_eq!(runs[1].status, "succeeded");
        assert_eq!(c.snapshot("j", "s1").unwrap().unwrap().files, 3);
        assert_eq!(c.last_run("j", &["succeeded"]).unwrap().unwrap().id, a);
        assert_eq!(c.last_run_per_job().unwrap()["j"].id, b);
        assert_eq!(c.snapshot_counts().unwrap()["j"], 1);
    }

    #[test]
    fn queued_runs_start_or_are_cancelled() {
        let d = tempfile::tempdir().unwrap();
        let c = Catalog::open(d.path()).unwrap();
        let t: jiff::Timestamp = "2026-11-25T03:00:00Z".parse().unwrap();
        let q = c.enqueue_run("j", Trigger::Schedule, t).unwrap();
        assert_eq!(
            c.last_attempt_at("j").unwrap(),
            None,
            "queued is not started"
        );
        c.begin_queued_run(q, "snap", t).unwrap();
        assert_eq!(c.last_attempt_at("j").unwrap(), Some(t));
        assert!(
            c.begin_queued_run(q, "snap", t).is_err(),
            "only a queued run starts"
        );
        let q2 = c.enqueue_run("j", Trigger::Manual, t).unwrap();
        assert!(c.cancel_queued(q2, "asked").unwrap());
        let q3 = c.enqueue_run("k", Trigger::Manual, t).unwrap();
        assert_eq!(c.abandon_queued().unwrap(), 1);
        let r = c.run(q3).unwrap().unwrap();
        assert_eq!(
            (r.status.as_str(), r.trigger.as_str()),
            ("cancelled", "manual")
        );
        let f = RunFilter {
            status: Some("running".into()),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(c.runs_filtered(&f).unwrap().len(), 1);
    }

    #[test]
    fn a_version_1_catalog_is_migrated_with_its_runs() {
        let d = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(d.path().join("catalog.sqlite")).unwrap();
            conn.execute_batch(SCHEMA[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO runs (job, snapshot, started_at, status, pid) VALUES ('j', 's', '2026-01-01T00:00:00Z', 'succeeded', 1)",
                [],
            )
            .unwrap();
            // A snapshot referencing the run: the rebuild of `runs` must keep the reference.
            conn.execute(
                "INSERT INTO snapshots (job, name, run_id, created_at, files, bytes, bytes_written)
                 VALUES ('j', 's', 1, '2026-01-01T00:00:00Z', 3, 4, 5)",
                [],
            )
            .unwrap();
        }
        let c = Catalog::open(d.path()).unwrap();
        let r = c.runs(None, 10).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].started_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(r[0].trigger, "cli");
        assert_eq!(c.snapshot("j", "s").unwrap().unwrap().files, 3);
        drop(c);
        // Opening again migrates nothing and keeps everything.
        let c = Catalog::open(d.path()).unwrap();
        assert_eq!(c.runs(None, 10).unwrap().len(), 1);
    }
}
