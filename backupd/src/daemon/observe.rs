//! What the daemon tells the outside: Prometheus metrics and alerts, fed by run endings and
//! a periodic staleness check. Alerts are queued to a sender thread, so a slow webhook never
//! holds up a run or the scheduler.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use jiff::Timestamp;

use super::shared::{RunReport, Shared};
use crate::alerts::{AlertPolicy, AlertSender, JobAlertState, SenderOptions, StaleCheck};
use crate::catalog::{Catalog, Outcome};
use crate::config::Config;
use crate::metrics::{LastRun, Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobHealth {
    /// The last finished run failed.
    pub failing: bool,
    /// No success within the job's `stale_after`.
    pub stale: bool,
    pub last_success: Option<Timestamp>,
}

pub struct Observer {
    metrics: Metrics,
    /// Where the tape catalog is, and the configuration with its `[rotation]`.
    state_dir: std::path::PathBuf,
    config: std::path::PathBuf,
    policy: Mutex<AlertPolicy>,
    sender: Mutex<Option<AlertSender>>,
}

impl Observer {
    pub fn start(cfg: &Config, catalog: &Catalog, now: Timestamp) -> Result<Observer> {
        let metrics = Metrics::install()?;
        let mut seeds = Vec::new();
        for j in &cfg.jobs {
            // Seeds for the metrics and the alert policy (the daemon's record of job health).
            let last = catalog.last_run(&j.name, &["succeeded", "failed"])?;
            let last_ok = match &last {
                Some(r) if r.status == "succeeded" => Some(r.clone()),
                _ => catalog.last_run(&j.name, &["succeeded"])?,
            };
            let ok: Option<Timestamp> = last_ok.and_then(|r| r.finished_at?.parse().ok());
            let failing = last.as_ref().is_some_and(|r| r.status == "failed");
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
            seeds.push(if failing {
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
            state_dir: cfg.state_dir.clone(),
            config: cfg.path.clone(),
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

    /// A job's health as the alert policy knows it (seeded from the catalog, kept by run
    /// endings and staleness checks): the one record of it in the daemon.
    pub fn health(&self, job: &str) -> JobHealth {
        let policy = self.policy.lock().expect("alert policy lock");
        let st = policy.state(job);
        JobHealth {
            failing: st.is_some_and(|s| s.failing_since.is_some()),
            stale: st.is_some_and(|s| s.stale_since.is_some()),
            last_success: st.and_then(|s| s.last_success),
        }
    }

    /// When the next job not yet stale becomes stale (the scheduler wakes up then).
    pub fn next_stale_deadline(&self, shared: &Shared) -> Option<Timestamp> {
        shared
            .cfg
            .jobs
            .iter()
            .filter_map(|j| {
                let after = jiff::SignedDuration::try_from(j.stale_after?).ok()?;
                let h = self.health(&j.name);
                if h.stale {
                    return None;
                }
                // Just past the window: staleness is "older than".
                h.last_success
                    .unwrap_or(shared.started_at)
                    .checked_add(after + jiff::SignedDuration::from_millis(1))
                    .ok()
            })
            .min()
    }

    /// Alerts for jobs with no success within `stale_after`, and the stale gauge.
    pub fn check_stale(&self, shared: &Shared, now: Timestamp) {
        let checks: Vec<StaleCheck> = shared
            .cfg
            .jobs
            .iter()
            .filter(|j| j.stale_after.is_some())
            // The policy knows each job's last success already.
            .map(|j| (j.name.clone(), j.stale_after, None, shared.started_at))
            .collect();
        let alerts = self
            .policy
            .lock()
            .expect("alert policy lock")
            .check_stale(now, &checks);
        for (job, ..) in &checks {
            self.metrics.job_stale(job, self.health(job).stale);
        }
        self.send(alerts);
    }

    pub fn scheduler(&self, queued: usize, running: usize, max: usize) {
        self.metrics.scheduler(queued, running, max);
    }

    pub fn render(&self) -> String {
        let mut out = self.metrics.render();
        out.push_str(&self.tape_metrics());
        out
    }

    /// The tape catalog's figures, when there is one (read, never created, at each scrape).
    fn tape_metrics(&self) -> String {
        if !self.state_dir.join("tapes.sqlite").exists() {
            return String::new();
        }
        let figures = || -> anyhow::Result<tapectl::rotation::TapeFigures> {
            let cf = common::config::ConfigFile::load(&self.config)?;
            let tape = tapectl::pools::TapeSettings::from_file(&cf)?;
            let cat = tapectl::catalog::TapeCatalog::open(&self.state_dir)?;
            let (media, sets, plan) =
                tapectl::rotation::of_catalog(&cat, &tape.rotation, Timestamp::now())?;
            Ok(tapectl::rotation::figures(&media, &sets, &plan))
        };
        match figures() {
            Ok(f) => crate::metrics::render_tapes(&f),
            Err(e) => {
                tracing::warn!("tape metrics not read: {e:#}");
                String::new()
            }
        }
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
