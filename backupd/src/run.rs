//! One backup run of a job: lock, scan and copy into a staging tree, publish as a snapshot,
//! record it in the catalog. A failed run publishes nothing and leaves earlier snapshots alone.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Instant;

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::{Catalog, Outcome, Trigger};
use crate::config::{Config, Job};
use crate::consistency::{self, hooks};
use crate::engine::{self, Stats};
use crate::progress::Progress;
use crate::scan::ScanOptions;
use crate::store::Store;
use common::manifest::{Header, Kind, Manifest};
use common::snapname;

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

/// How a run was asked for.
pub struct RunRequest<'a> {
    pub trigger: Trigger,
    /// The catalog row of a run the daemon queued; None makes a new row.
    pub queued: Option<i64>,
    /// Live progress and the cancel flag.
    pub progress: &'a Progress,
}

/// A run that did not publish a snapshot.
#[derive(Debug)]
pub struct RunError {
    /// The catalog row, when the run got that far (a busy job has none).
    pub run_id: Option<i64>,
    pub outcome: Outcome,
    pub error: anyhow::Error,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for RunError {}

/// One run of `job`: pre hook, point-in-time view, copy, publish, post hook; recorded in the
/// catalog. Publishes nothing unless everything before the publish succeeded and the run was
/// not cancelled; the post hook runs whatever happened once the pre hook was started.
pub fn run_job(
    cfg: &Config,
    store: &dyn Store,
    catalog: &Catalog,
    job: &Job,
    req: &RunRequest,
    now: Timestamp,
) -> Result<RunSummary, RunError> {
    let fail_early = |e: anyhow::Error| {
        let e = crate::catalog::explain_full(e, &cfg.state_dir);
        if let Some(q) = req.queued {
            let _ = catalog.finish_run(q, Outcome::Failed, Some(&format!("{e:#}")), None);
        }
        RunError {
            run_id: req.queued,
            outcome: Outcome::Failed,
            error: e,
        }
    };
    let _lock = lock_job(&cfg.state_dir, &job.name).map_err(fail_early)?;
    let prepared = (|| -> Result<(String, i64)> {
        if let Some(w) = crate::pending_post::settle(&cfg.state_dir, &job.name) {
            tracing::warn!(job = %job.name, "{w}");
        }
        settle_dead_runs(catalog, store, &job.name)?;
        let existing: Vec<String> = store
            .snapshots(&job.name)?
            .into_iter()
            .map(|s| s.name)
            .collect();
        let name = snapname::unique(now, &existing);
        let ctx = consistency::Context {
            job,
            snapshot: &name,
            state_dir: &cfg.state_dir,
            progress: req.progress,
        };
        consistency::clean_leftovers(&ctx)
            .context("cannot clean up what an interrupted run left behind")?;
        let run_id = match req.queued {
            Some(q) => {
                catalog.begin_queued_run(q, &name, now)?;
                q
            }
            None => catalog.start_run(&job.name, &name, now, req.trigger)?,
        };
        Ok((name, run_id))
    })();
    let (name, run_id) = prepared.map_err(fail_early)?;
    let started = Instant::now();
    let mut post_hook = PostHook::new(job, &cfg.state_dir, &name, run_id);
    let timed_out = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        if let Some(limit) = job.timeout {
            let timed_out = &timed_out;
            s.spawn(move || {
                if wait.recv_timeout(limit) == Err(RecvTimeoutError::Timeout) {
                    tracing::warn!(job = %job.name, secs = limit.as_secs(), "the run exceeded the job's timeout; stopping it");
                    timed_out.store(true, Ordering::SeqCst);
                    req.progress.cancel();
                }
            });
        }
        let r = attempt(cfg, store, job, &name, req.progress, now, &mut post_hook);
        drop(done);
        r
    });
    let timed_out = timed_out.into_inner();
    let result = result
        .map_err(|e| {
            if timed_out {
                let limit = job.timeout.unwrap_or_default();
                e.context(format!(
                    "stopped: the run took longer than the job's timeout ({} s)",
                    limit.as_secs()
                ))
            } else {
                e
            }
        })
        .map_err(explain_full);
    let outcome = match &result {
        Ok(_) => Outcome::Succeeded,
        // A timeout is a failure (it alerts); a cancel asked for is not.
        Err(_) if timed_out => Outcome::Failed,
        Err(_) if req.progress.is_cancelled() => Outcome::Cancelled,
        Err(_) => Outcome::Failed,
    };
    let post_warning = post_hook.finish(outcome);
    match result {
        Ok(mut stats) => {
            stats.warnings.extend(post_warning);
            if let Err(e) = catalog.record_published(run_id, &job.name, &name, &stats, None) {
                // The snapshot exists; the next run of the job records it (`settle_dead_runs`).
                tracing::warn!(error = %format!("{e:#}"), "cannot record the run in the catalog");
            }
            Ok(RunSummary {
                job: job.name.clone(),
                snapshot: name,
                run_id,
                duration_secs: started.elapsed().as_secs_f64(),
                stats,
            })
        }
        Err(e) => {
            let mut msg = format!("{e:#}");
            if outcome == Outcome::Cancelled {
                msg = format!("cancelled: {msg}");
            }
            if let Some(w) = post_warning {
                msg = format!("{msg}; {w}");
            }
            if let Err(ce) = catalog.finish_run(run_id, outcome, Some(&msg), None) {
                tracing::warn!(error = %ce, "cannot record the failed run in the catalog");
            }
            let what = if outcome == Outcome::Cancelled {
                "was cancelled"
            } else {
                "failed"
            };
            Err(RunError {
                run_id: Some(run_id),
                outcome,
                error: e.context(format!(
                    "backup of job {} {what}; no snapshot was made and earlier snapshots are intact",
                    job.name
                )),
            })
        }
    }
}

/// Pre hook, view, copy, publish. Stats include the provider's warnings.
fn attempt(
    cfg: &Config,
    store: &dyn Store,
    job: &Job,
    name: &str,
    progress: &Progress,
    now: Timestamp,
    post_hook: &mut PostHook,
) -> Result<Stats> {
    progress.check()?;
    if let Some(h) = &job.hooks
        && let Some(pre) = &h.pre
    {
        progress.phase("pre hook");
        // The pre hook may freeze the application: from now on its post hook is owed, even by a
        // later process if this one is killed.
        post_hook.arm();
        post_hook.owe()?;
        hooks::run(hooks::Phase::Pre, pre, h.timeout, &post_hook.env, &|| {
            progress.is_cancelled()
        })
        .context("the pre hook failed")?;
    }
    post_hook.arm();
    progress.check()?;
    progress.phase("taking a point-in-time view");
    let ctx = consistency::Context {
        job,
        snapshot: name,
        state_dir: &cfg.state_dir,
        progress,
    };
    let view = consistency::prepare(&ctx)
        .with_context(|| format!("{} consistency provider", job.consistency.kind()))?;
    post_hook.env.view = Some(view.root.clone());
    if view.point_in_time {
        // The view no longer depends on the source: let the application go on now.
        post_hook.run_now(None);
    }
    progress.check()?;
    let staging = store.begin(&job.name, name)?;
    let built = (|| -> Result<engine::Built> {
        let never = [
            staging.root.clone(),
            cfg.state_dir.clone(),
            store.root_path(),
        ];
        // Through a snapshot or clone the same directories have other (device, inode)s: skip
        // their counterparts in the view too.
        let in_view: Vec<PathBuf> = never
            .iter()
            .filter(|_| view.root != job.source)
            .filter_map(|p| p.strip_prefix(&job.source).ok())
            .map(|rel| view.root.join(rel))
            .collect();
        let all: Vec<&Path> = never.iter().chain(&in_view).map(PathBuf::as_path).collect();
        let skip_dirs = crate::scan::dir_ids(&all);
        let opts = ScanOptions {
            selector: &job.selector,
            cross_filesystems: job.cross_filesystems,
            skip_dirs,
            previous: None,
            // None for a live source: no lookup per file.
            device_ids: (!view.device_ids.is_empty()).then_some(&view.device_ids),
        };
        let built = engine::build(&view.root, &opts, &staging, progress)?;
        // The last moment a cancel is honoured: after the publish the snapshot exists.
        progress.check()?;
        Ok(built)
    })();
    let mut built = match built {
        Ok(b) => b,
        Err(e) => {
            if let Err(ae) = store.abort(&job.name, &staging) {
                tracing::warn!(error = %ae, "cleaning up the failed run failed too; the next run will retry");
            }
            return Err(e);
        }
    };
    let mut warnings = std::mem::take(&mut built.stats.warnings);
    warnings.extend(view.warnings.iter().cloned());
    let header = Header::new(
        &job.name,
        name,
        &now.to_string(),
        &job.source.display().to_string(),
    );
    let m = Manifest::new(header, built.entries);
    progress.phase("publishing");
    if let Err(e) = store.publish(&job.name, &staging, &m) {
        let _ = store.abort(&job.name, &staging);
        return Err(e);
    }
    progress.phase("cleaning up");
    warnings.extend(
        view.release()
            .into_iter()
            .map(|w| format!("cleaning up the consistency view: {w}")),
    );
    built.stats.warnings = warnings;
    Ok(built.stats)
}

/// The post hook runs once per run when the pre hook was started (or there is no pre hook):
/// right after a point-in-time view exists, else when the run ends.
struct PostHook<'a> {
    job: &'a Job,
    state_dir: &'a Path,
    env: hooks::HookEnv,
    armed: bool,
    done: bool,
    warning: Option<String>,
}

impl<'a> PostHook<'a> {
    fn new(job: &'a Job, state_dir: &'a Path, snapshot: &str, run_id: i64) -> Self {
        PostHook {
            job,
            state_dir,
            env: hooks::HookEnv {
                job: job.name.clone(),
                snapshot: snapshot.to_string(),
                run_id,
                source: job.source.clone(),
                view: None,
                outcome: None,
            },
            armed: false,
            done: false,
            warning: None,
        }
    }

    /// From here on the post hook runs when the run ends (or as soon as a view exists).
    fn arm(&mut self) {
        self.armed = true;
    }

    /// Records the post hook as owed (see `pending_post`), for a later process to run if this
    /// one is killed before it does.
    fn owe(&mut self) -> Result<()> {
        if let Some(h) = &self.job.hooks
            && let Some(post) = &h.post
        {
            crate::pending_post::owe(self.state_dir, post, h.timeout, &self.env)?;
        }
        Ok(())
    }

    fn run_now(&mut self, outcome: Option<Outcome>) {
        if self.done || !self.armed {
            return;
        }
        self.done = true;
        let Some(h) = &self.job.hooks else { return };
        let Some(post) = &h.post else { return };
        self.env.outcome = outcome.map(|o| o.as_str().to_string());
        if let Err(e) = hooks::run(hooks::Phase::Post, post, h.timeout, &self.env, &|| false) {
            tracing::warn!(job = %self.job.name, error = %format!("{e:#}"), "post hook failed");
            self.warning = Some(format!("the post hook failed: {e:#}"));
        }
        crate::pending_post::paid(self.state_dir, &self.job.name);
    }

    /// Runs the hook if it has not run yet; returns its failure, if any.
    fn finish(mut self, outcome: Outcome) -> Option<String> {
        self.run_now(Some(outcome));
        self.warning
    }
}

/// Runs of `job` that a dead process left unfinished: a run whose snapshot the store holds (the
/// process died after publishing, before recording it) is recorded as succeeded with its
/// snapshot; the others are marked interrupted. Call only while holding the job's lock.
pub fn settle_dead_runs(catalog: &Catalog, store: &dyn Store, job: &str) -> Result<()> {
    let unsettled = catalog.unrecorded_runs(job)?;
    if !unsettled.is_empty() {
        let published: std::collections::HashSet<String> =
            store.snapshots(job)?.into_iter().map(|s| s.name).collect();
        for (id, snapshot) in unsettled.iter().filter(|(_, s)| published.contains(s)) {
            let manifest = store
                .open(job, snapshot)
                .and_then(|view| view.manifest())
                .with_context(|| format!("cannot read snapshot {snapshot} to record it"))?;
            let files = manifest.entries.iter().filter(|e| e.kind == Kind::File);
            let stats = Stats {
                files: files.clone().count() as u64,
                bytes: files.map(|e| e.size).sum(),
                ..Stats::default()
            };
            catalog.record_published(
                *id,
                job,
                snapshot,
                &stats,
                Some("recorded at the next start: the process ended after publishing the snapshot"),
            )?;
            tracing::warn!(job, run = id, snapshot = %snapshot, "a run that published its snapshot before its process died was recorded");
        }
    }
    let interrupted = catalog.mark_interrupted(job)?;
    if interrupted > 0 {
        tracing::warn!(
            job,
            runs = interrupted,
            "earlier run(s) were interrupted; cleaning up"
        );
    }
    Ok(())
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
