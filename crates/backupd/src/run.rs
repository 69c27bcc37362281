//! One backup run of a job: lock, scan and copy into a staging tree, publish as a snapshot,
//! record it in the catalog. A failed run publishes nothing and leaves earlier snapshots alone.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::config::{Config, Job};
use crate::engine::{self, Stats};
use crate::manifest::{self, Header, Manifest};
use crate::progress::Progress;
use crate::scan::ScanOptions;
use crate::snapname;
use crate::store::Store;

#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub job: String,
    pub snapshot: String,
    pub run_id: i64,
    pub duration_secs: f64,
    pub stats: Stats,
}

/// An exclusive per-job lock (flock), released when dropped or when the process dies.
pub struct JobLock {
    _file: File,
}

pub fn lock_job(state_dir: &Path, job: &str) -> Result<JobLock> {
    let dir = state_dir.join("locks");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path: PathBuf = dir.join(format!("{job}.lock"));
    let mut f = File::options()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open lock {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "job {job} is busy: held by {} (lock {})",
                holder.trim(),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    f.set_len(0)?;
    writeln!(f, "pid {} since {}", std::process::id(), Timestamp::now())?;
    Ok(JobLock { _file: f })
}

pub fn run_job(
    cfg: &Config,
    store: &dyn Store,
    catalog: &Catalog,
    job: &Job,
    progress: &Progress,
    now: Timestamp,
) -> Result<RunSummary> {
    let _lock = lock_job(&cfg.state_dir, &job.name)?;
    let interrupted = catalog.mark_interrupted(&job.name)?;
    if interrupted > 0 {
        tracing::warn!(job = %job.name, runs = interrupted, "earlier run(s) were interrupted; cleaning up");
    }
    let existing: Vec<String> = store
        .snapshots(&job.name)?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let name = snapname::unique(now, &existing);
    let run_id = catalog.start_run(&job.name, &name, now)?;
    let started = Instant::now();
    let result = (|| -> Result<Stats> {
        let staging = store.begin(&job.name, &name)?;
        let skip_dirs = crate::scan::dir_ids(&[staging.root.as_path(), cfg.state_dir.as_path(), &store.root_path()]);
        let opts = ScanOptions { selector: &job.selector, cross_filesystems: job.cross_filesystems, skip_dirs, previous: None };
        let built = match engine::build(&job.source, &opts, &staging, progress) {
            Ok(b) => b,
            Err(e) => {
                if let Err(ae) = store.abort(&job.name, &staging) {
                    tracing::warn!(error = %ae, "cleaning up the failed run failed too; the next run will retry");
                }
                return Err(e);
            }
        };
        let header = Header {
            format: manifest::FORMAT.into(),
            version: manifest::VERSION,
            job: job.name.clone(),
            snapshot: name.clone(),
            created: now.to_string(),
            source: job.source.display().to_string(),
            hash: "blake3".into(),
            block_size: manifest::BLOCK_SIZE,
            entries: 0,
        };
        let m = Manifest::new(header, built.entries);
        if let Err(e) = store.publish(&job.name, &staging, &m) {
            let _ = store.abort(&job.name, &staging);
            return Err(e);
        }
        Ok(built.stats)
    })()
    .map_err(explain_full);
    match result {
        Ok(stats) => {
            catalog.finish_run(run_id, true, None, Some(&stats))?;
            catalog.add_snapshot(&job.name, &name, run_id, &stats)?;
            Ok(RunSummary {
                job: job.name.clone(),
                snapshot: name,
                run_id,
                duration_secs: started.elapsed().as_secs_f64(),
                stats,
            })
        }
        Err(e) => {
            let msg = format!("{e:#}");
            if let Err(ce) = catalog.finish_run(run_id, false, Some(&msg), None) {
                tracing::warn!(error = %ce, "cannot record the failed run in the catalog");
            }
            Err(e.context(format!(
                "backup of job {} failed; no snapshot was made and earlier snapshots are intact",
                job.name
            )))
        }
    }
}

/// Turns ENOSPC/EDQUOT anywhere in the chain into a message that says what to do.
fn explain_full(e: anyhow::Error) -> anyhow::Error {
    let full = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            .is_some_and(|n| n == libc::ENOSPC || n == libc::EDQUOT)
    });
    if full {
        e.context("the backup store is full: free space (e.g. `backupd prune`) or grow it, then run again")
    } else {
        e
    }
}
