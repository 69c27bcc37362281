//! The daemon seen through the API: `web::Backend` over the shared state, the catalog and the
//! store.

use std::sync::Arc;

use web::model::{
    Health, JobView, Progress, RunQuery, RunView, SnapshotItem, TapeJobView, Triggered,
};
use web::{ApiError, Backend};

use super::shared::{DaemonError, Shared, TriggerState};
use crate::catalog::{RunFilter, RunRow, Trigger};
use crate::tape_jobs::TapeJob;

pub struct Service(pub Arc<Shared>);

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::Internal(format!("{e:#}"))
}

impl Service {
    fn view(&self, r: RunRow) -> RunView {
        // Only while the catalog says running: a run recorded as finished may still be leaving
        // `active` for a moment.
        let live = (r.status == "running")
            .then(|| self.0.state().active.get(&r.id).map(|a| a.progress.clone()))
            .flatten();
        RunView {
            progress: live.as_ref().map(|p| {
                let s = p.snapshot();
                Progress {
                    phase: s.phase,
                    files_done: s.files_done,
                    files_total: s.files_total,
                    bytes_done: s.bytes_done,
                    bytes_total: s.bytes_total,
                    waiting: s.waiting,
                }
            }),
            cancel_requested: live.is_some_and(|p| p.is_cancelled()),
            id: r.id,
            job: r.job,
            snapshot: r.snapshot,
            trigger: r.trigger,
            status: r.status,
            queued_at: r.queued_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error,
            stats: r.stats,
            warnings: r.warnings,
        }
    }

    /// A job's state in the scheduler ("idle", "queued", "running") and its next fire.
    fn sched_state(&self, name: &str) -> (&'static str, Option<jiff::Timestamp>) {
        let st = self.0.state();
        let state = if st.sched.running(name).is_some() {
            "running"
        } else if st.sched.queued(name).is_some() {
            "queued"
        } else {
            "idle"
        };
        (state, st.sched.next_fire(name))
    }

    /// `last` and `snapshots` come from the catalog, fetched for all jobs at once by the caller.
    fn job_view(&self, job: &crate::config::Job, last: Option<RunRow>, snapshots: u64) -> JobView {
        let health = self.0.observer.health(&job.name);
        let (state, next) = self.sched_state(&job.name);
        JobView {
            name: job.name.clone(),
            kind: "backup".into(),
            tape: None,
            source: job.source.display().to_string(),
            consistency: job.consistency.kind().to_string(),
            schedule: job.schedule.clone(),
            next_run_at: next.map(|t| t.to_string()),
            catch_up: job.catch_up,
            stale_after_secs: job.stale_after.map(|d| d.as_secs()),
            stale: health.stale,
            state: state.to_string(),
            last_run: last.map(|r| self.view(r)),
            last_success_at: health.last_success.map(|t| t.to_string()),
            snapshots,
        }
    }

    fn tape_job_view(&self, t: &TapeJob, last: Option<RunRow>) -> JobView {
        let health = self.0.observer.health(&t.name);
        let (state, next) = self.sched_state(&t.name);
        let last_run = last.map(|r| self.view(r));
        let waiting = last_run
            .as_ref()
            .and_then(|r| r.progress.as_ref())
            .and_then(|p| p.waiting.clone());
        JobView {
            name: t.name.clone(),
            kind: "tape".into(),
            tape: Some(TapeJobView {
                jobs: t.jobs.clone(),
                pool: self
                    .0
                    .cfg
                    .tape
                    .pool(t.pool.as_deref())
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
                full: t.full.clone(),
                incremental: t.incremental.clone(),
                copies: t.copies,
                full_copies: t.full_copies,
                wait_for_tape_secs: t.wait_for_tape.as_secs(),
                waiting,
            }),
            source: String::new(),
            consistency: String::new(),
            schedule: None,
            next_run_at: next.map(|t| t.to_string()),
            catch_up: t.catch_up,
            stale_after_secs: t.stale_after.map(|d| d.as_secs()),
            stale: health.stale,
            state: state.to_string(),
            last_run,
            last_success_at: health.last_success.map(|t| t.to_string()),
            snapshots: 0,
        }
    }

    fn job_views(&self, names: &[&str]) -> Result<Vec<JobView>, ApiError> {
        let (mut last, counts) = {
            let c = self.0.catalog();
            (
                c.last_run_per_job().map_err(internal)?,
                c.snapshot_counts().map_err(internal)?,
            )
        };
        let cfg = &self.0.cfg;
        Ok(names
            .iter()
            .filter_map(|&name| {
                if let Some(j) = cfg.jobs.iter().find(|j| j.name == name) {
                    let snapshots = counts.get(name).copied().unwrap_or(0);
                    Some(self.job_view(j, last.remove(name), snapshots))
                } else {
                    let t = cfg.tape_jobs.iter().find(|t| t.name == name)?;
                    Some(self.tape_job_view(t, last.remove(name)))
                }
            })
            .collect())
    }

    /// A backup or tape job of the configuration.
    fn known_job<'a>(&'a self, name: &'a str) -> Result<&'a str, ApiError> {
        let cfg = &self.0.cfg;
        if cfg.jobs.iter().any(|j| j.name == name) || cfg.tape_jobs.iter().any(|t| t.name == name) {
            Ok(name)
        } else {
            Err(ApiError::NotFound(format!("no job named {name:?}")))
        }
    }
}

impl Service {
    /// Backup jobs, then tape jobs, as the configuration lists them.
    fn all_jobs(&self) -> Vec<&str> {
        let cfg = &self.0.cfg;
        cfg.jobs
            .iter()
            .map(|j| j.name.as_str())
            .chain(cfg.tape_jobs.iter().map(|t| t.name.as_str()))
            .collect()
    }
}

impl Backend for Service {
    fn health(&self) -> Health {
        let (mut stale_jobs, mut failing_jobs) = (Vec::new(), Vec::new());
        for name in self.all_jobs() {
            let h = self.0.observer.health(name);
            if h.stale {
                stale_jobs.push(name.to_string());
            }
            if h.failing {
                failing_jobs.push(name.to_string());
            }
        }
        let st = self.0.state();
        let now = jiff::Timestamp::now();
        let degraded = !stale_jobs.is_empty() || !failing_jobs.is_empty();
        Health {
            status: if degraded { "degraded" } else { "ok" }.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.0.started_at.to_string(),
            uptime_secs: now.duration_since(self.0.started_at).as_secs().max(0) as u64,
            jobs: self.0.cfg.jobs.len() + self.0.cfg.tape_jobs.len(),
            running: st.sched.running_len(),
            queued: st.sched.queue_len(),
            stale_jobs,
            failing_jobs,
            stopping: st.stopping,
        }
    }

    fn jobs(&self) -> Result<Vec<JobView>, ApiError> {
        self.job_views(&self.all_jobs())
    }

    fn job(&self, name: &str) -> Result<JobView, ApiError> {
        let name = self.known_job(name)?;
        Ok(self.job_views(&[name])?.remove(0))
    }

    /// `q` is validated by the router (status, limit).
    fn runs(&self, q: &RunQuery) -> Result<Vec<RunView>, ApiError> {
        if let Some(j) = &q.job {
            self.known_job(j)?;
        }
        let rows = self
            .0
            .catalog()
            .runs_filtered(&RunFilter {
                job: q.job.clone(),
                status: q.status.clone(),
                before: q.before,
                limit: q.limit.unwrap_or(50).clamp(1, 1000),
            })
            .map_err(internal)?;
        Ok(rows.into_iter().map(|r| self.view(r)).collect())
    }

    fn run(&self, id: i64) -> Result<RunView, ApiError> {
        let row = self.0.catalog().run(id).map_err(internal)?;
        row.map(|r| self.view(r))
            .ok_or_else(|| ApiError::NotFound(format!("no run {id}")))
    }

    fn snapshots(&self, job: &str) -> Result<Vec<SnapshotItem>, ApiError> {
        self.known_job(job)?;
        if self.0.cfg.tape_jobs.iter().any(|t| t.name == job) {
            return Err(ApiError::NotFound(format!(
                "{job:?} is a tape job: it writes sets, not snapshots (`tapectl set list`)"
            )));
        }
        let snaps = self.0.store.snapshots(job).map_err(internal)?;
        let c = self.0.catalog();
        snaps
            .into_iter()
            .map(|s| {
                let cat = c.snapshot(job, &s.name).map_err(internal)?;
                Ok(SnapshotItem {
                    time: s.time.map(|t| t.to_string()),
                    used_bytes: s.used_bytes,
                    referenced_bytes: s.referenced_bytes,
                    files: cat.as_ref().map(|c| c.files),
                    bytes: cat.as_ref().map(|c| c.bytes),
                    bytes_written: cat.as_ref().map(|c| c.bytes_written),
                    name: s.name,
                })
            })
            .collect()
    }

    fn trigger(&self, job: &str) -> Result<Triggered, ApiError> {
        match self.0.enqueue(job, Trigger::Manual, jiff::Timestamp::now()) {
            Ok((run_id, state)) => Ok(Triggered {
                run_id,
                state: match state {
                    TriggerState::Queued => "queued",
                    TriggerState::AlreadyQueued => "already-queued",
                    TriggerState::AlreadyRunning => "already-running",
                }
                .into(),
            }),
            Err(DaemonError::UnknownJob(j)) => {
                Err(ApiError::NotFound(format!("no job named {j:?}")))
            }
            Err(DaemonError::Stopping) => Err(ApiError::Unavailable(
                "the daemon is stopping; no new runs start".into(),
            )),
            Err(DaemonError::Internal(e)) => Err(internal(e)),
        }
    }

    fn cancel(&self, id: i64) -> Result<RunView, ApiError> {
        let found = self
            .0
            .cancel(id, "cancelled through the API before it started")
            .map_err(internal)?;
        let run = self.run(id)?;
        if !found {
            return Err(ApiError::Conflict(format!(
                "run {id} is {}; only queued or running runs can be cancelled",
                run.status
            )));
        }
        Ok(run)
    }

    fn metrics(&self) -> String {
        self.0.observer.render()
    }
}
