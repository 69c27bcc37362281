//! The daemon's state, shared by the scheduler loop, the run threads and the API: the
//! scheduler and the runs in flight with their live progress. (Each job's health, failing or
//! stale, is the alert policy's, in the observer.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;

use super::observe::Observer;
use super::scheduler::{Queued, Scheduler};
use crate::catalog::{Catalog, Outcome, Trigger};
use crate::config::Config;
use crate::progress::Progress;
use crate::store::Store;

/// A run in flight.
pub struct Active {
    pub job: String,
    pub progress: Arc<Progress>,
}

pub struct State {
    pub sched: Scheduler,
    /// run id → run
    pub active: BTreeMap<i64, Active>,
    /// SIGTERM arrived: nothing new starts.
    pub stopping: bool,
}

pub struct Shared {
    pub cfg: Arc<Config>,
    pub store: Arc<dyn Store>,
    /// For the API and the scheduler; run threads open their own connection.
    pub catalog: Mutex<Catalog>,
    pub state: Mutex<State>,
    /// Wakes the scheduler loop (a run was queued or finished).
    pub wake: tokio::sync::Notify,
    /// A copy of the catalogs is being made.
    pub backing_up: std::sync::atomic::AtomicBool,
    pub started_at: Timestamp,
    pub observer: Observer,
}

/// What a trigger did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerState {
    Queued,
    AlreadyQueued,
    AlreadyRunning,
}

#[derive(Debug)]
pub enum DaemonError {
    UnknownJob(String),
    Stopping,
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for DaemonError {
    fn from(e: anyhow::Error) -> Self {
        DaemonError::Internal(e)
    }
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("daemon state lock poisoned")
    }

    pub fn catalog(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock().expect("catalog lock poisoned")
    }

    /// Queues a run of `job`. A job with a run waiting gets no second one; a manual trigger of
    /// a running job returns that run (the schedule, by contrast, queues one run behind it).
    pub fn enqueue(
        &self,
        job: &str,
        trigger: Trigger,
        now: Timestamp,
    ) -> Result<(i64, TriggerState), DaemonError> {
        if self.cfg.jobs.iter().all(|j| j.name != job)
            && self.cfg.tape_jobs.iter().all(|t| t.name != job)
        {
            return Err(DaemonError::UnknownJob(job.to_string()));
        }
        let mut st = self.state();
        if st.stopping {
            return Err(DaemonError::Stopping);
        }
        if let Some(id) = st.sched.queued(job) {
            return Ok((id, TriggerState::AlreadyQueued));
        }
        // A run the catalog has finished may still be leaving the scheduler (its thread tidying
        // up): a trigger then queues a new run rather than handing back the finished one.
        if trigger == Trigger::Manual
            && let Some(id) = st.sched.running(job)
            && self
                .catalog()
                .run(id)?
                .is_some_and(|r| matches!(r.status.as_str(), "queued" | "running"))
        {
            return Ok((id, TriggerState::AlreadyRunning));
        }
        let id = self.catalog().enqueue_run(job, trigger, now)?;
        let pushed = st.sched.push(Queued {
            run_id: id,
            job: job.to_string(),
            trigger,
        });
        debug_assert!(pushed, "checked above");
        drop(st);
        tracing::info!(job, run = id, trigger = trigger.as_str(), "run queued");
        self.wake.notify_one();
        Ok((id, TriggerState::Queued))
    }

    /// Cancels a queued run (it never starts) or asks a running one to stop. Returns false when
    /// the run is neither queued nor running.
    pub fn cancel(&self, id: i64, why: &str) -> anyhow::Result<bool> {
        let mut st = self.state();
        if st.sched.remove_queued(id) {
            self.catalog().cancel_queued(id, why)?;
            tracing::info!(run = id, "queued run cancelled");
            return Ok(true);
        }
        if let Some(a) = st.active.get(&id) {
            a.progress.cancel();
            tracing::info!(run = id, job = %a.job, "cancelling running run");
            return Ok(true);
        }
        Ok(false)
    }

    /// A run thread ended: the scheduler frees its slot, metrics and alerts hear of it.
    pub fn run_ended(&self, q: &Queued, outcome: Outcome, ended: Timestamp, report: RunReport) {
        let mut st = self.state();
        st.sched.finished(&q.job);
        st.active.remove(&q.run_id);
        drop(st);
        self.observer
            .run_finished(&q.job, q.run_id, outcome, ended, &report);
        self.wake.notify_one();
    }
}

/// What a finished run reports to metrics and alerts.
#[derive(Debug, Default)]
pub struct RunReport {
    pub duration_secs: f64,
    pub stats: Option<crate::engine::Stats>,
    pub error: Option<String>,
    pub snapshots: Option<u64>,
    pub store_used: Option<u64>,
}
