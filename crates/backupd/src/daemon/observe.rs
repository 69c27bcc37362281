//! What the daemon tells the outside: Prometheus metrics and alerts, fed by run endings and
//! a periodic staleness check. Alerts are queued to a sender thread, so a slow webhook never
//! holds up a run or the scheduler.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use jiff::Timestamp;

use super::shared::{RunReport, Shared};
use crate::alerts::{AlertPolicy, AlertSender, JobAlertState, SenderOptions};
use crate::catalog::{Catalog, Outcome};
use crate::config::Config;
use crate::metrics::{LastRun, Metrics};

pub struct Observer {
    metrics: Metrics,
    policy: Mutex<AlertPolicy>,
    sender: Mutex<Option<AlertSender>>,
}

impl Observer {
    pub fn start(
        cfg: &Config,
        catalog: &Catalog,
        failing: &BTreeSet<String>,
        last_success: &BTreeMap<String, Timestamp>,
        now: Timestamp,
    ) -> Result<Observer> {
        let metrics = Metrics::install()?;
        let mut seeds = Vec::new();
        for j in &cfg.jobs {
            let ok = last_success.get(&j.name).copied();
            let last = catalog.last_run(&j.name, &["succeeded", "failed"])?;
            let last_run = last.as_ref().and_then(|r| {
                let s: Timestamp = r.started_at.as_deref()?.parse().ok()?;
                let f: Timestamp = r.finished_at.as_deref()?.parse().ok()?;
                Some(LastRun {
                    finished: f,
                    duration_secs: f.duration_since(s).as_secs_f64(),
                    succeeded: r.status == "succeeded",
                })
            });
            metrics.seed_job(&j.name, ok, last_run);
            metrics.job_store(&j.name, catalog.snapshot_count(&j.name)?, None);
            metrics.job_stale(&j.name, false);
            seeds.push(if failing.contains(&j.name) {
                let since = last
                    .and_then(|r| r.finished_at.and_then(|t| t.parse().ok()))
                    .unwrap_or(now);
                JobAlertState::failing(&j.name, ok, 1, since)
            } else {
                JobAlertState::healthy(&j.name, ok)
            });
        }
        let sender = AlertSender::start(cfg.alerts.clone(), SenderOptions::default());
        Ok(Observer {
            metrics,
            policy: Mutex::new(AlertPolicy::new(seeds)),
            sender: Mutex::new(Some(sender)),
        })
    }

    pub fn run_finished(
        &self,
        job: &str,
        run_id: i64,
        outcome: Outcome,
        at: Timestamp,
        r: &RunReport,
    ) {
        self.metrics
            .run_finished(job, outcome, r.duration_secs, r.stats.as_ref(), at);
        if let Some(n) = r.snapshots {
            self.metrics.job_store(job, n, r.store_used);
        }
        if outcome == Outcome::Succeeded {
            self.metrics.job_stale(job, false);
        }
        let alerts = self.policy.lock().expect("alert policy lock").run_finished(
            job,
            outcome,
            at,
            run_id,
            r.error.as_deref(),
        );
        self.send(alerts);
    }

    /// When the next job not yet stale becomes stale (the scheduler wakes up then).
    pub fn next_stale_deadline(&self, shared: &Shared) -> Option<Timestamp> {
        let st = shared.state();
        shared
            .cfg
            .jobs
            .iter()
            .filter(|j| !st.stale.contains(&j.name))
            .filter_map(|j| {
                let after = jiff::SignedDuration::try_from(j.stale_after?).ok()?;
                let since = st
                    .last_success
                    .get(&j.name)
                    .copied()
                    .unwrap_or(shared.started_at);
                // Just past the window: staleness is "older than".
                since
                    .checked_add(after + jiff::SignedDuration::from_millis(1))
                    .ok()
            })
            .min()
    }

    /// Alerts for jobs with no success within `stale_after`; updates the stale set and gauge.
    pub fn check_stale(&self, shared: &Shared, now: Timestamp) {
        let checks: Vec<_> = {
            let st = shared.state();
            shared
                .cfg
                .jobs
                .iter()
                .filter(|j| j.stale_after.is_some())
                .map(|j| {
                    (
                        j.name.clone(),
                        j.stale_after,
                        st.last_success.get(&j.name).copied(),
                        shared.started_at,
                    )
                })
                .collect()
        };
        let mut stale = BTreeSet::new();
        for (job, after, last, watch) in &checks {
            let since = last.unwrap_or(*watch);
            let after = after.expect("filtered");
            if Duration::try_from(now.duration_since(since)).is_ok_and(|d| d > after) {
                stale.insert(job.clone());
            }
        }
        for (job, ..) in &checks {
            self.metrics.job_stale(job, stale.contains(job));
        }
        shared.state().stale = stale;
        let alerts = self
            .policy
            .lock()
            .expect("alert policy lock")
            .check_stale(now, &checks);
        self.send(alerts);
    }

    pub fn scheduler(&self, queued: usize, running: usize, max: usize) {
        self.metrics.scheduler(queued, running, max);
    }

    pub fn render(&self) -> String {
        self.metrics.render()
    }

    /// Stops the sender, giving queued alerts until `deadline` to go out.
    pub fn shutdown(&self, deadline: Duration) {
        if let Some(s) = self.sender.lock().expect("sender lock").take() {
            s.shutdown(deadline);
        }
    }

    fn send(&self, alerts: Vec<crate::alerts::Alert>) {
        if alerts.is_empty() {
            return;
        }
        let guard = self.sender.lock().expect("sender lock");
        for a in alerts {
            tracing::warn!(job = %a.job, event = ?a.event, "{}", a.title);
            if let Some(s) = guard.as_ref() {
                s.send(a);
            }
        }
    }
}
