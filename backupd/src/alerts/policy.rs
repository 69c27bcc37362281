//! When to alert: per-job health state turned into [`Alert`]s. Pure: the caller passes every time
//! in, so the whole policy is tested on a fake timeline.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::Outcome;
use crate::config::AlertEvent;

/// One notification, ready to be formatted for any target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub job: String,
    pub event: AlertEvent,
    /// When the event happened (run end, or the stale check that noticed it).
    pub at: Timestamp,
    /// One line, e.g. "job photos failed".
    pub title: String,
    /// A few sentences: what happened, since when, what it means.
    pub message: String,
    pub run_id: Option<i64>,
    /// The run's error text, for failures.
    pub error: Option<String>,
    pub last_success: Option<Timestamp>,
}

/// What the policy remembers about one job. The daemon seeds it from the catalog at startup so a
/// restart neither repeats a failure alert nor forgets to announce the recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobAlertState {
    pub job: String,
    pub last_success: Option<Timestamp>,
    /// Failed runs since the last success (0 = healthy).
    pub consecutive_failures: u32,
    /// End time of the first failed run of the current streak.
    pub failing_since: Option<Timestamp>,
    /// When the job became overdue, if a stale episode is open (already alerted).
    pub stale_since: Option<Timestamp>,
}

impl JobAlertState {
    /// A job whose last finished run succeeded (or that never ran).
    pub fn healthy(job: impl Into<String>, last_success: Option<Timestamp>) -> Self {
        JobAlertState {
            job: job.into(),
            last_success,
            consecutive_failures: 0,
            failing_since: None,
            stale_since: None,
        }
    }

    /// A job whose latest runs failed: `consecutive_failures` of them, the first at `since`.
    pub fn failing(
        job: impl Into<String>,
        last_success: Option<Timestamp>,
        consecutive_failures: u32,
        since: Timestamp,
    ) -> Self {
        JobAlertState {
            job: job.into(),
            last_success,
            consecutive_failures: consecutive_failures.max(1),
            failing_since: Some(since),
            stale_since: None,
        }
    }

    fn down_since(&self) -> Option<Timestamp> {
        match (self.failing_since, self.stale_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One job as seen by [`AlertPolicy::check_stale`].
pub type StaleCheck = (
    String,            // job
    Option<Duration>,  // stale_after
    Option<Timestamp>, // last success, from the catalog
    Timestamp,         // watch start: daemon start or job creation, whichever is later
);

#[derive(Debug, Default)]
pub struct AlertPolicy {
    jobs: HashMap<String, JobAlertState>,
}

impl AlertPolicy {
    pub fn new(initial: impl IntoIterator<Item = JobAlertState>) -> Self {
        AlertPolicy {
            jobs: initial.into_iter().map(|s| (s.job.clone(), s)).collect(),
        }
    }

    /// The current state of a job, if the policy has seen it.
    pub fn state(&self, job: &str) -> Option<&JobAlertState> {
        self.jobs.get(job)
    }

    fn entry(&mut self, job: &str) -> &mut JobAlertState {
        self.jobs
            .entry(job.to_string())
            .or_insert_with(|| JobAlertState::healthy(job, None))
    }

    /// A run ended. Every failed run alerts (a repeated failure is still news to whoever is
    /// fixing it); the first success after a failure or staleness alerts recovery.
    pub fn run_finished(
        &mut self,
        job: &str,
        outcome: Outcome,
        at: Timestamp,
        run_id: i64,
        error: Option<&str>,
    ) -> Vec<Alert> {
        match outcome {
            // A cancelled run says nothing about the job's health.
            Outcome::Cancelled => Vec::new(),
            Outcome::Failed => {
                let st = self.entry(job);
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                let since = *st.failing_since.get_or_insert(at);
                let n = st.consecutive_failures;
                let mut message =
                    format!("Run #{run_id} of job {job} failed at {}.", show_time(at));
                if let Some(e) = error {
                    message.push_str(&format!(" Error: {}", e.trim()));
                }
                if n > 1 {
                    message.push_str(&format!(
                        "\n{} consecutive failures since {} ({}).",
                        n,
                        show_time(since),
                        human_duration(at, since)
                    ));
                }
                message.push_str(&match st.last_success {
                    Some(t) => format!(
                        "\nLast success: {} ({} ago).",
                        show_time(t),
                        human_duration(at, t)
                    ),
                    None => "\nThe job has never succeeded.".to_string(),
                });
                let title = if n > 1 {
                    format!("job {job} failed ({} consecutive failures)", n)
                } else {
                    format!("job {job} failed")
                };
                vec![Alert {
                    job: job.to_string(),
                    event: AlertEvent::Failure,
                    at,
                    title,
                    message,
                    run_id: Some(run_id),
                    error: error.map(str::to_string),
                    last_success: st.last_success,
                }]
            }
            Outcome::Succeeded => {
                let st = self.entry(job);
                let previous_success = st.last_success;
                let down_since = st.down_since();
                let failures = st.consecutive_failures;
                let was_stale = st.stale_since.is_some();
                st.last_success = Some(at);
                st.consecutive_failures = 0;
                st.failing_since = None;
                st.stale_since = None;
                let Some(down_since) = down_since else {
                    return Vec::new();
                };
                let mut message = format!(
                    "Run #{run_id} of job {job} succeeded at {}; the job had been down for {} \
                     (since {}).",
                    show_time(at),
                    human_duration(at, down_since),
                    show_time(down_since)
                );
                if failures > 0 {
                    message.push_str(&format!(
                        " {failures} failed run{} before this one.",
                        if failures == 1 { "" } else { "s" }
                    ));
                }
                if was_stale {
                    message.push_str(&match previous_success {
                        Some(t) => format!(" Previous success: {}.", show_time(t)),
                        None => " It had never succeeded before.".to_string(),
                    });
                }
                vec![Alert {
                    job: job.to_string(),
                    event: AlertEvent::Recovery,
                    at,
                    title: format!("job {job} recovered"),
                    message,
                    run_id: Some(run_id),
                    error: None,
                    last_success: Some(at),
                }]
            }
        }
    }

    /// Periodic check: a job with no success within its `stale_after` window alerts once per
    /// episode (the next success ends the episode). Jobs without a success are measured from the
    /// watch start, so a fresh daemon or a new job gets a full window before it is called stale.
    pub fn check_stale(&mut self, now: Timestamp, jobs: &[StaleCheck]) -> Vec<Alert> {
        let mut out = Vec::new();
        for (job, stale_after, catalog_success, watch_start) in jobs {
            let st = self.entry(job);
            // The catalog may know a success the policy was not told about (e.g. a manual run).
            st.last_success = match (st.last_success, *catalog_success) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let Some(window) = stale_after.and_then(|d| jiff::SignedDuration::try_from(d).ok())
            else {
                // No staleness watch (any more): close an open episode without noise.
                st.stale_since = None;
                continue;
            };
            let reference = st.last_success.unwrap_or(*watch_start);
            let Ok(overdue_at) = reference.checked_add(window) else {
                continue;
            };
            if now <= overdue_at {
                // Fresh again without a run we saw (clock or config change): close quietly;
                // recoveries are announced by run_finished.
                st.stale_since = None;
                continue;
            }
            if st.stale_since.is_some() {
                continue;
            }
            st.stale_since = Some(overdue_at);
            let window_text = human_span(*stale_after.as_ref().unwrap_or(&Duration::ZERO));
            let mut message = match st.last_success {
                Some(t) => format!(
                    "Job {job} has not succeeded for {} (last success {}); it should succeed at \
                     least every {window_text}.",
                    human_duration(now, t),
                    show_time(t)
                ),
                None => format!(
                    "Job {job} has had no successful run since it has been watched ({}, \
                     {} ago); it should succeed at least every {window_text}.",
                    show_time(*watch_start),
                    human_duration(now, *watch_start)
                ),
            };
            if st.consecutive_failures > 0 {
                message.push_str(&format!(
                    " Its last {} run{} failed.",
                    st.consecutive_failures,
                    if st.consecutive_failures == 1 {
                        ""
                    } else {
                        "s"
                    }
                ));
            }
            out.push(Alert {
                job: job.clone(),
                event: AlertEvent::Stale,
                at: now,
                title: format!("job {job} is stale"),
                message,
                run_id: None,
                error: None,
                last_success: st.last_success,
            });
        }
        out
    }
}

/// A time for people: RFC 3339 in UTC, whole seconds.
pub fn show_time(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// `later - earlier` for people ("3d 4h", "12m 5s"); negative spans read as "0s".
pub fn human_duration(later: Timestamp, earlier: Timestamp) -> String {
    let secs = later.as_second().saturating_sub(earlier.as_second()).max(0);
    human_span(Duration::from_secs(secs as u64))
}

/// A duration for people, two largest units ("1d 2h", "5m 3s", "45s").
pub fn human_span(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        if hours > 0 {
            format!("{days}d {hours}h")
        } else {
            format!("{days}d")
        }
    } else if hours > 0 {
        if mins > 0 {
            format!("{hours}h {mins}m")
        } else {
            format!("{hours}h")
        }
    } else if mins > 0 {
        if secs > 0 {
            format!("{mins}m {secs}s")
        } else {
            format!("{mins}m")
        }
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;

    fn t(secs: i64) -> Timestamp {
        // A fixed origin: the tests never read a clock.
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn events(alerts: &[Alert]) -> Vec<AlertEvent> {
        alerts.iter().map(|a| a.event).collect()
    }

    fn check(job: &str, after_h: u64, success: Option<Timestamp>, watch: Timestamp) -> StaleCheck {
        (
            job.to_string(),
            Some(Duration::from_secs(after_h * 3600)),
            success,
            watch,
        )
    }

    #[test]
    fn every_failure_alerts_with_streak_and_success_recovers() {
        let mut p = AlertPolicy::new([JobAlertState::healthy("db", Some(t(0)))]);
        let a = p.run_finished("db", Outcome::Failed, t(H), 1, Some("disk full"));
        assert_eq!(events(&a), [AlertEvent::Failure]);
        assert_eq!(a[0].title, "job db failed");
        assert!(a[0].message.contains("disk full"), "{}", a[0].message);
        assert!(a[0].message.contains("Last success"), "{}", a[0].message);
        assert_eq!(a[0].error.as_deref(), Some("disk full"));
        assert_eq!(a[0].run_id, Some(1));

        let a = p.run_finished("db", Outcome::Failed, t(3 * H), 2, Some("disk full"));
        assert_eq!(events(&a), [AlertEvent::Failure]);
        assert_eq!(a[0].title, "job db failed (2 consecutive failures)");
        assert!(
            a[0].message.contains(&format!("since {}", t(H))),
            "{}",
            a[0].message
        );
        assert!(a[0].message.contains("(2h)"), "{}", a[0].message);

        let a = p.run_finished("db", Outcome::Succeeded, t(4 * H), 3, None);
        assert_eq!(events(&a), [AlertEvent::Recovery]);
        assert!(a[0].message.contains("down for 3h"), "{}", a[0].message);
        assert!(a[0].message.contains("2 failed runs"), "{}", a[0].message);
        assert_eq!(a[0].last_success, Some(t(4 * H)));

        // Healthy again: a further success is quiet.
        assert!(
            p.run_finished("db", Outcome::Succeeded, t(5 * H), 4, None)
                .is_empty()
        );
    }

    #[test]
    fn cancelled_changes_nothing() {
        let mut p = AlertPolicy::new([]);
        assert!(
            p.run_finished("a", Outcome::Cancelled, t(0), 1, None)
                .is_empty()
        );
        p.run_finished("a", Outcome::Failed, t(10), 2, None);
        let before = p.state("a").cloned();
        assert!(
            p.run_finished("a", Outcome::Cancelled, t(20), 3, None)
                .is_empty()
        );
        assert_eq!(p.state("a").cloned(), before);
        let a = p.run_finished("a", Outcome::Succeeded, t(30), 4, None);
        assert_eq!(events(&a), [AlertEvent::Recovery]);
    }

    #[test]
    fn seeded_failing_job_does_not_realert_but_recovers() {
        // The daemon restarted; the catalog says the last run failed.
        let mut p = AlertPolicy::new([JobAlertState::failing("web", Some(t(0)), 2, t(H))]);
        // Nothing is emitted at startup: the policy only speaks on events.
        let a = p.run_finished("web", Outcome::Succeeded, t(5 * H), 9, None);
        assert_eq!(events(&a), [AlertEvent::Recovery]);
        assert!(a[0].message.contains("down for 4h"), "{}", a[0].message);
        // A next failure starts a new streak of 1.
        let a = p.run_finished("web", Outcome::Failed, t(6 * H), 10, None);
        assert_eq!(a[0].title, "job web failed");
        assert!(a[0].message.contains("Last success"), "{}", a[0].message);
    }

    #[test]
    fn stale_alerts_once_per_episode() {
        let mut p = AlertPolicy::new([JobAlertState::healthy("photos", Some(t(0)))]);
        let jobs = |s| vec![check("photos", 24, s, t(0))];
        assert!(p.check_stale(t(23 * H), &jobs(Some(t(0)))).is_empty());
        assert!(
            p.check_stale(t(24 * H), &jobs(Some(t(0)))).is_empty(),
            "exactly at the edge"
        );
        let a = p.check_stale(t(25 * H), &jobs(Some(t(0))));
        assert_eq!(events(&a), [AlertEvent::Stale]);
        assert_eq!(a[0].title, "job photos is stale");
        assert!(a[0].message.contains("1d 1h"), "{}", a[0].message);
        assert!(a[0].message.contains("every 1d"), "{}", a[0].message);
        assert_eq!(a[0].at, t(25 * H));
        // Same episode: quiet.
        assert!(p.check_stale(t(26 * H), &jobs(Some(t(0)))).is_empty());
        assert!(p.check_stale(t(90 * H), &jobs(Some(t(0)))).is_empty());
        // A success ends it with a recovery; down since the job became overdue.
        let a = p.run_finished("photos", Outcome::Succeeded, t(30 * H), 5, None);
        assert_eq!(events(&a), [AlertEvent::Recovery]);
        assert!(a[0].message.contains("down for 6h"), "{}", a[0].message);
        // A new episode alerts again.
        assert!(p.check_stale(t(50 * H), &jobs(Some(t(30 * H)))).is_empty());
        let a = p.check_stale(t(55 * H), &jobs(Some(t(30 * H))));
        assert_eq!(events(&a), [AlertEvent::Stale]);
    }

    #[test]
    fn never_succeeded_is_measured_from_watch_start() {
        let mut p = AlertPolicy::new([]);
        let jobs = [check("new", 2, None, t(10 * H))];
        assert!(p.check_stale(t(11 * H), &jobs).is_empty());
        let a = p.check_stale(t(13 * H), &jobs);
        assert_eq!(events(&a), [AlertEvent::Stale]);
        assert!(
            a[0].message.contains("no successful run"),
            "{}",
            a[0].message
        );
        assert_eq!(a[0].last_success, None);
    }

    #[test]
    fn no_stale_after_means_no_watch() {
        let mut p = AlertPolicy::new([]);
        let jobs = [("x".to_string(), None, None, t(0))];
        assert!(p.check_stale(t(1000 * H), &jobs).is_empty());
    }

    #[test]
    fn catalog_success_unknown_to_policy_is_used() {
        let mut p = AlertPolicy::new([]);
        // Policy never saw a run, but the catalog has a recent success.
        assert!(
            p.check_stale(t(30 * H), &[check("m", 24, Some(t(20 * H)), t(0))])
                .is_empty()
        );
    }

    #[test]
    fn failing_and_stale_recover_once_with_the_longest_downtime() {
        let mut p = AlertPolicy::new([JobAlertState::healthy("j", Some(t(0)))]);
        p.run_finished("j", Outcome::Failed, t(2 * H), 1, Some("boom"));
        let a = p.check_stale(t(5 * H), &[check("j", 3, Some(t(0)), t(0))]);
        assert_eq!(events(&a), [AlertEvent::Stale]);
        assert!(
            a[0].message.contains("last 1 run failed"),
            "{}",
            a[0].message
        );
        let a = p.run_finished("j", Outcome::Succeeded, t(6 * H), 2, None);
        assert_eq!(events(&a), [AlertEvent::Recovery]);
        // Down since the first failure (2h), not since overdue (3h).
        assert!(a[0].message.contains("down for 4h"), "{}", a[0].message);
    }

    #[test]
    fn human_spans() {
        assert_eq!(human_span(Duration::from_secs(0)), "0s");
        assert_eq!(human_span(Duration::from_secs(59)), "59s");
        assert_eq!(human_span(Duration::from_secs(61)), "1m 1s");
        assert_eq!(human_span(Duration::from_secs(3600)), "1h");
        assert_eq!(human_span(Duration::from_secs(90_000)), "1d 1h");
        assert_eq!(human_duration(t(0), t(10)), "0s");
        let frac = Timestamp::from_millisecond(1_800_000_000_750).unwrap();
        assert_eq!(show_time(frac), "2027-01-15T08:00:00Z");
    }
}
