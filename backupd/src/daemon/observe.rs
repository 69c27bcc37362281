//! What the daemon tells the outside: Prometheus metrics and alerts, fed by run endings and
//! a periodic staleness check. Alerts are queued to a sender thread, so a slow webhook never
//! holds up a run or the scheduler.

use std::collections::HashMap;
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
    /// Where the tape catalog is, and the configuration's `[rotation]` policy.
    state_dir: std::path::PathBuf,
    rotation: tapectl::rotation::Policy,
    policy: Mutex<AlertPolicy>,
    sender: Mutex<Option<AlertSender>>,
    /// Tape jobs waiting for a tape, with what to insert.
    waiting: Mutex<HashMap<String, String>>,
    /// What the library needs of a person, alerted once each while it lasts, by source
    /// ("rotation", "cleaning"); and when the catalog was last looked at for it.
    attention: Mutex<Attention>,
}

/// Items alerted by source, and when the tape catalog was last looked at.
#[derive(Default)]
struct Attention {
    open: HashMap<&'static str, Vec<String>>,
    checked: Option<std::time::Instant>,
}

/// The `job` of alerts about the library rather than a job.
pub const LIBRARY: &str = "tape library";

/// How often the tape catalog is looked at for rotation and cleaner alerts.
const TAPE_CHECK: Duration = Duration::from_secs(300);

/// Every job the daemon watches (backup and tape), with its `stale_after`.
fn watched(cfg: &Config) -> impl Iterator<Item = (&str, Option<Duration>)> {
    cfg.jobs
        .iter()
        .map(|j| (j.name.as_str(), j.stale_after))
        .chain(
            cfg.tape_jobs
                .iter()
                .map(|t| (t.name.as_str(), t.stale_after)),
        )
}

impl Observer {
    pub fn start(cfg: &Config, catalog: &Catalog, now: Timestamp) -> Result<Observer> {
        let metrics = Metrics::install()?;
        let mut seeds = Vec::new();
        for (name, _) in watched(cfg) {
            // Seeds for the metrics and the alert policy (the daemon's record of job health).
            let last = catalog.last_run(name, &["succeeded", "failed"])?;
            let last_ok = match &last {
                Some(r) if r.status == "succeeded" => Some(r.clone()),
                _ => catalog.last_run(name, &["succeeded"])?,
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
            metrics.seed_job(name, ok, last_run);
            if cfg.jobs.iter().any(|j| j.name == name) {
                metrics.job_store(name, catalog.snapshot_count(name)?, None);
            } else {
                metrics.tape_job_waiting(name, false);
            }
            metrics.job_stale(name, false);
            seeds.push(if failing {
                let since = last
                    .and_then(|r| r.finished_at.and_then(|t| t.parse().ok()))
                    .unwrap_or(now);
                JobAlertState::failing(name, ok, 1, since)
            } else {
                JobAlertState::healthy(name, ok)
            });
        }
        let sender = AlertSender::start(cfg.alerts.clone(), SenderOptions::default());
        Ok(Observer {
            metrics,
            state_dir: cfg.state_dir.clone(),
            rotation: cfg.tape.rotation.clone(),
            policy: Mutex::new(AlertPolicy::new(seeds)),
            sender: Mutex::new(Some(sender)),
            waiting: Mutex::new(HashMap::new()),
            attention: Mutex::new(Attention::default()),
        })
    }

    /// Alerts (`attention`) for the items of `source` not alerted before; items gone since are
    /// forgotten, so they alert again if they come back.
    fn attention(&self, source: &'static str, items: Vec<String>) {
        let mut st = self.attention.lock().expect("attention lock");
        let before = st.open.get(source).cloned().unwrap_or_default();
        let now = Timestamp::now();
        let alerts = items
            .iter()
            .filter(|i| !before.contains(i))
            .map(|i| crate::alerts::Alert {
                job: LIBRARY.to_string(),
                event: crate::config::AlertEvent::Attention,
                at: now,
                title: match source {
                    "cleaning" | "cleaning-drives" => "the tape library needs cleaning".to_string(),
                    _ => "tape rotation needs a person".to_string(),
                },
                message: i.clone(),
                run_id: None,
                error: None,
                last_success: None,
            })
            .collect();
        st.open.insert(source, items);
        drop(st);
        self.send(alerts);
    }

    /// After a tape run: the drives that ask for cleaning and could not be cleaned.
    pub fn drives_needing_cleaning(&self, needs: &[tapectl::sets::allocate::NeedsCleaning]) {
        self.metrics.drives_needing_cleaning(needs.len());
        self.attention(
            "cleaning-drives",
            needs.iter().map(|n| n.why.clone()).collect(),
        );
    }

    /// Rotation alerts (overdue exports and transits, too few fulls offsite) and used-up
    /// cleaning cartridges, from the tape catalog: at most every few minutes unless `force`d.
    pub fn check_tapes(&self, now: Timestamp, force: bool) {
        {
            let mut st = self.attention.lock().expect("attention lock");
            if !force && st.checked.is_some_and(|t| t.elapsed() < TAPE_CHECK) {
                return;
            }
            st.checked = Some(std::time::Instant::now());
        }
        match self.tape_figures(now) {
            Ok(None) => {}
            Ok(Some((plan, f))) => {
                let cleaners = f
                    .cleaning_uses
                    .iter()
                    .filter(|(_, used)| **used >= tapectl::catalog::CLEANER_LIFE)
                    .map(|(b, used)| {
                        format!("cleaning cartridge {b} is used up ({used} cleanings); replace it")
                    })
                    .collect();
                self.attention("rotation", plan.alerts);
                self.attention("cleaning", cleaners);
            }
            Err(e) => tracing::warn!("tape catalog not checked for alerts: {e:#}"),
        }
    }

    /// The rotation plan and the tape figures at `now`; `None` without a tape catalog (it is
    /// read, never created).
    fn tape_figures(
        &self,
        now: Timestamp,
    ) -> anyhow::Result<Option<(tapectl::rotation::Plan, tapectl::rotation::TapeFigures)>> {
        if !self.state_dir.join("tapes.sqlite").exists() {
            return Ok(None);
        }
        let cat = tapectl::catalog::TapeCatalog::open(&self.state_dir)?;
        let (media, sets, plan) = tapectl::rotation::of_catalog(&cat, &self.rotation, now)?;
        let f = tapectl::rotation::figures(&media, &sets, &plan);
        Ok(Some((plan, f)))
    }

    /// A tape run waits for a person (`Some`: what to insert) or goes on (`None`). The first
    /// wait of a run alerts; the API shows the wait from the run's progress.
    pub fn tape_waiting(&self, job: &str, run_id: i64, what: Option<&str>) {
        let mut waiting = self.waiting.lock().expect("waiting lock");
        match what {
            Some(what) => {
                if waiting.insert(job.to_string(), what.to_string()).is_some() {
                    return;
                }
                self.metrics.tape_job_waiting(job, true);
                let now = Timestamp::now();
                drop(waiting);
                self.send(vec![crate::alerts::Alert {
                    job: job.to_string(),
                    event: crate::config::AlertEvent::Attention,
                    at: now,
                    title: format!("tape job {job} waits for a tape"),
                    message: format!(
                        "{what}. The run goes on by itself once the tape is in the door."
                    ),
                    run_id: Some(run_id),
                    error: None,
                    last_success: self.health(job).last_success,
                }]);
            }
            None => {
                if waiting.remove(job).is_some() {
                    self.metrics.tape_job_waiting(job, false);
                    tracing::info!(tape_job = job, run = run_id, "a tape came: the run goes on");
                }
            }
        }
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
        watched(&shared.cfg)
            .filter_map(|(name, stale_after)| {
                let after = jiff::SignedDuration::try_from(stale_after?).ok()?;
                let h = self.health(name);
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
        let checks: Vec<StaleCheck> = watched(&shared.cfg)
            .filter(|(_, stale_after)| stale_after.is_some())
            // The policy knows each job's last success already.
            .map(|(name, stale_after)| (name.to_string(), stale_after, None, shared.started_at))
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

    /// The tape catalog's figures, when there is one, at each scrape.
    fn tape_metrics(&self) -> String {
        match self.tape_figures(Timestamp::now()) {
            Ok(Some((_, f))) => crate::metrics::render_tapes(&f),
            Ok(None) => String::new(),
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
