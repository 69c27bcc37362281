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
];

pub struct Catalog {
    conn: Connection,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub job: String,
    pub snapshot: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub stats: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRow {
    pub files: u64,
    pub bytes: u64,
    pub bytes_written: u64,
}

impl Catalog {
    pub fn open(state_dir: &Path) -> Result<Catalog> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let path = state_dir.join("catalog.sqlite");
        let conn = Connection::open(&path)
            .with_context(|| format!("cannot open catalog {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let mut cat = Catalog { conn };
        cat.migrate()
            .with_context(|| format!("cannot prepare catalog {}", path.display()))?;
        Ok(cat)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version as usize > SCHEMA.len() {
            anyhow::bail!(
                "catalog schema version {version} is newer than this build understands ({})",
                SCHEMA.len()
            );
        }
        let tx = self.conn.transaction()?;
        for (i, sql) in SCHEMA.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks runs of `job` left `running` by a process that died as `interrupted`.
    /// Call only while holding the job's lock.
    pub fn mark_interrupted(&self, job: &str) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE runs SET status = 'interrupted', error = 'the process ended before the run finished', finished_at = ?2
             WHERE job = ?1 AND status = 'running'",
            params![job, jiff::Timestamp::now().to_string()],
        )?)
    }

    pub fn start_run(&self, job: &str, snapshot: &str, started: jiff::Timestamp) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (job, snapshot, started_at, status, pid) VALUES (?1, ?2, ?3, 'running', ?4)",
            params![job, snapshot, started.to_string(), std::process::id()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(
        &self,
        id: i64,
        ok: bool,
        error: Option<&str>,
        stats: Option<&Stats>,
    ) -> Result<()> {
        let stats = stats.map(serde_json::to_string).transpose()?;
        self.conn.execute(
            "UPDATE runs SET status = ?2, error = ?3, stats = ?4, finished_at = ?5 WHERE id = ?1",
            params![
                id,
                if ok { "succeeded" } else { "failed" },
                error,
                stats,
                jiff::Timestamp::now().to_string()
            ],
        )?;
        Ok(())
    }

    pub fn add_snapshot(&self, job: &str, name: &str, run_id: i64, stats: &Stats) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO snapshots (job, name, run_id, created_at, files, bytes, bytes_written)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![job, name, run_id, jiff::Timestamp::now().to_string(), stats.scanned_files, stats.scanned_bytes, stats.bytes_written],
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
        let mut stmt = self.conn.prepare(
            "SELECT id, job, snapshot, started_at, finished_at, status, error, stats FROM runs
             WHERE (?1 IS NULL OR job = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![job, limit as i64], |r| {
            let stats: Option<String> = r.get(7)?;
            Ok(RunRow {
                id: r.get(0)?,
                job: r.get(1)?,
                snapshot: r.get(2)?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                status: r.get(5)?,
                error: r.get(6)?,
                stats: stats.and_then(|s| serde_json::from_str(&s).ok()),
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
        let a = c.start_run("j", "s1", jiff::Timestamp::now()).unwrap();
        c.finish_run(a, true, None, Some(&Stats::default()))
            .unwrap();
        c.add_snapshot(
            "j",
            "s1",
            a,
            &Stats {
                scanned_files: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let b = c.start_run("j", "s2", jiff::Timestamp::now()).unwrap();
        drop(c);
        let c = Catalog::open(d.path()).unwrap();
        assert_eq!(c.mark_interrupted("j").unwrap(), 1);
        let runs = c.runs(Some("j"), 10).unwrap();
        assert_eq!(runs[0].id, b);
        assert_eq!(runs[0].status, "interrupted");
        assert_eq!(runs[1].status, "succeeded");
        assert_eq!(c.snapshot("j", "s1").unwrap().unwrap().files, 3);
    }
}
