//! The scheduler's decisions, without clocks or threads: which jobs are due, which queued runs
//! may start. The daemon feeds it the time and tells it when runs finish.
//!
//! Rules:
//! - a job's schedule firing while a run of it is queued adds nothing; while one is running it
//!   queues one more (runs are never stacked: at most one queued and one running per job);
//! - several fires missed at once (a busy or suspended machine) make one run, not many;
//! - after downtime, a job whose last scheduled time passed with no run since gets one
//!   catch-up run at start (if `catch_up`); a job with no run history gets none;
//! - at most `max_concurrent` backup runs at once, and one tape run (a tape job may use every
//!   drive for its copies), started in queue order; a queued run that must wait (its job is
//!   running, or its class is at its limit) does not hold up runs behind it;
//! - a job may have several schedules (a tape job's full and incremental): it fires at each.

use std::collections::{BTreeMap, VecDeque};

use jiff::Timestamp;

use crate::catalog::Trigger;
use crate::schedule::Schedule;

#[derive(Debug, Clone)]
pub struct JobPlan {
    pub name: String,
    pub schedules: Vec<Schedule>,
    pub catch_up: bool,
    pub class: Class,
}

/// What a run occupies: backup runs share `max_concurrent`; tape runs the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Backup,
    Tape,
}

/// Tape runs at once: one per library (a run writes its copies on all drives).
const MAX_TAPE_RUNS: usize = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub run_id: i64,
    pub job: String,
    pub trigger: Trigger,
}

#[derive(Debug)]
struct JobState {
    schedules: Vec<Schedule>,
    catch_up: bool,
    class: Class,
    next_fire: Option<Timestamp>,
}

impl JobState {
    fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.schedules.iter().filter_map(|s| s.next_after(t)).min()
    }

    fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        self.schedules
            .iter()
            .filter_map(|s| s.last_at_or_before(t))
            .max()
    }
}

#[derive(Debug)]
pub struct Scheduler {
    jobs: BTreeMap<String, JobState>,
    queue: VecDeque<Queued>,
    /// job → run id
    running: BTreeMap<String, i64>,
    max_concurrent: usize,
}

impl Scheduler {
    pub fn new(plans: Vec<JobPlan>, max_concurrent: usize, now: Timestamp) -> Scheduler {
        let jobs = plans
            .into_iter()
            .map(|p| {
                let mut st = JobState {
                    schedules: p.schedules,
                    catch_up: p.catch_up,
                    class: p.class,
                    next_fire: None,
                };
                st.next_fire = st.next_after(now);
                (p.name, st)
            })
            .collect();
        Scheduler {
            jobs,
            queue: VecDeque::new(),
            running: BTreeMap::new(),
            max_concurrent: max_concurrent.max(1),
        }
    }

    /// Jobs that missed a scheduled time while the daemon was down: their last scheduled time
    /// at or before `now` is later than their last run (`last_attempt`, queued or started).
    pub fn catch_up(
        &self,
        now: Timestamp,
        last_attempt: impl Fn(&str) -> Option<Timestamp>,
    ) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|(_, s)| s.catch_up)
            .filter_map(|(name, s)| {
                let missed = s.last_at_or_before(now)?;
                let last = last_attempt(name)?;
                (last < missed).then(|| name.clone())
            })
            .collect()
    }

    /// Jobs whose schedule fired at or before `now`, each once however many fires were missed;
    /// moves their next fire past `now`. Jobs that already have a queued run are left out.
    pub fn due(&mut self, now: Timestamp) -> Vec<String> {
        let mut out = Vec::new();
        for (name, s) in self.jobs.iter_mut() {
            let Some(next) = s.next_fire else { continue };
            if next > now {
                continue;
            }
            s.next_fire = s.next_after(now);
            if !self.queue.iter().any(|q| &q.job == name) {
                out.push(name.clone());
            }
        }
        out
    }

    /// When the next schedule fires.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.jobs.values().filter_map(|s| s.next_fire).min()
    }

    pub fn next_fire(&self, job: &str) -> Option<Timestamp> {
        self.jobs.get(job).and_then(|s| s.next_fire)
    }

    /// The queued run of `job`, if any.
    pub fn queued(&self, job: &str) -> Option<i64> {
        self.queue.iter().find(|q| q.job == job).map(|q| q.run_id)
    }

    /// The running run of `job`, if any.
    pub fn running(&self, job: &str) -> Option<i64> {
        self.running.get(job).copied()
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Adds a run the catalog has recorded as queued. A job with a run already queued is refused
    /// (returns false): callers check [`Scheduler::queued`] first.
    pub fn push(&mut self, q: Queued) -> bool {
        if !self.jobs.contains_key(&q.job) || self.queued(&q.job).is_some() {
            return false;
        }
        self.queue.push_back(q);
        true
    }

    fn class_of(&self, job: &str) -> Class {
        self.jobs.get(job).map_or(Class::Backup, |s| s.class)
    }

    fn running_in(&self, class: Class) -> usize {
        self.running
            .keys()
            .filter(|j| self.class_of(j) == class)
            .count()
    }

    /// The next queued run allowed to start now, marked running.
    pub fn start_next(&mut self) -> Option<Queued> {
        let room = |class| match class {
            Class::Backup => self.running_in(Class::Backup) < self.max_concurrent,
            Class::Tape => self.running_in(Class::Tape) < MAX_TAPE_RUNS,
        };
        let i = self
            .queue
            .iter()
            .position(|q| !self.running.contains_key(&q.job) && room(self.class_of(&q.job)))?;
        let q = self.queue.remove(i).expect("index from position");
        self.running.insert(q.job.clone(), q.run_id);
        Some(q)
    }

    pub fn finished(&mut self, job: &str) {
        self.running.remove(job);
    }

    /// Removes a queued run; false when it is not queued (running, finished or unknown).
    pub fn remove_queued(&mut self, run_id: i64) -> bool {
        let before = self.queue.len();
        self.queue.retain(|q| q.run_id != run_id);
        self.queue.len() != before
    }

    /// Empties the queue (shutdown), returning what was waiting.
    pub fn drain_queue(&mut self) -> Vec<Queued> {
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Zone;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn plan(name: &str, cron: Option<&str>, catch_up: bool) -> JobPlan {
        JobPlan {
            name: name.into(),
            schedules: cron
                .map(|c| Schedule::parse(c, Zone::Utc).unwrap())
                .into_iter()
                .collect(),
            catch_up,
            class: Class::Backup,
        }
    }

    fn tape_plan(name: &str, crons: &[&str]) -> JobPlan {
        JobPlan {
            name: name.into(),
            schedules: crons
                .iter()
                .map(|c| Schedule::parse(c, Zone::Utc).unwrap())
                .collect(),
            catch_up: true,
            class: Class::Tape,
        }
    }

    #[test]
    fn a_tape_job_fires_at_each_of_its_schedules_and_runs_beside_backups_one_at_a_time() {
        let t0 = ts("2026-11-30T03:00:00Z");
        let mut s = Scheduler::new(
            vec![
                plan("home", Some("0 2 * * *"), true),
                plan("db", None, true),
                // Full on the 1st, incrementals Tuesday to Sunday.
                tape_plan("tape-a", &["0 4 1 * *", "0 4 * * 2-6,0"]),
                tape_plan("tape-b", &["30 4 1 * *"]),
            ],
            2,
            t0,
        );
        // Monday Nov 30, 04:00: neither of tape-a's schedules fires.
        assert!(s.due(ts("2026-11-30T04:00:00Z")).is_empty());
        // Tuesday Dec 1, 04:00: both fire, one run.
        assert_eq!(s.due(ts("2026-12-01T04:00:00Z")), vec!["home", "tape-a"]);
        assert_eq!(s.next_fire("tape-a"), Some(ts("2026-12-02T04:00:00Z")));
        let mut id = 0;
        enqueue(
            &mut s,
            vec!["home".into(), "tape-a".into()],
            &mut id,
            Trigger::Schedule,
        );
        let d = s.due(ts("2026-12-01T04:30:00Z"));
        assert_eq!(d, vec!["tape-b"]);
        enqueue(&mut s, d, &mut id, Trigger::Schedule);
        enqueue(&mut s, vec!["db".into()], &mut id, Trigger::Manual);
        assert_eq!(s.start_next().unwrap().job, "home");
        assert_eq!(s.start_next().unwrap().job, "tape-a");
        // One tape run at a time; the backup run queued behind the waiting tape run starts.
        assert_eq!(s.start_next().unwrap().job, "db");
        assert_eq!(s.start_next(), None);
        s.finished("tape-a");
        assert_eq!(s.start_next().unwrap().job, "tape-b");
    }

    /// Plays the daemon: enqueues what is due with increasing run ids.
    fn enqueue(s: &mut Scheduler, jobs: Vec<String>, next_id: &mut i64, trigger: Trigger) {
        for job in jobs {
            *next_id += 1;
            assert!(s.push(Queued {
                run_id: *next_id,
                job,
                trigger
            }));
        }
    }

    #[test]
    fn fires_on_schedule_and_computes_the_next_time() {
        let t0 = ts("2026-11-25T02:00:00Z");
        let mut s = Scheduler::new(vec![plan("a", Some("15 3 * * *"), true)], 1, t0);
        assert_eq!(s.next_wakeup(), Some(ts("2026-11-25T03:15:00Z")));
        assert!(s.due(ts("2026-11-25T03:14:59Z")).is_empty());
        assert_eq!(s.due(ts("2026-11-25T03:15:00Z")), vec!["a"]);
        assert_eq!(s.next_wakeup(), Some(ts("2026-11-26T03:15:00Z")));
        assert!(s.due(ts("2026-11-25T03:15:01Z")).is_empty(), "fires once");
    }

    #[test]
    fn many_missed_fires_make_one_run() {
        let t0 = ts("2026-11-25T00:00:00Z");
        let mut s = Scheduler::new(vec![plan("a", Some("*/5 * * * *"), true)], 1, t0);
        // The loop was blocked for an hour: twelve fires passed.
        assert_eq!(s.due(ts("2026-11-25T01:00:30Z")), vec!["a"]);
        assert_eq!(s.next_wakeup(), Some(ts("2026-11-25T01:05:00Z")));
    }

    #[test]
    fn no_overlap_and_no_stacking() {
        let t0 = ts("2026-11-25T00:00:00Z");
        let mut s = Scheduler::new(vec![plan("a", Some("* * * * *"), true)], 4, t0);
        let mut id = 0;
        let d = s.due(ts("2026-11-25T00:01:00Z"));
        enqueue(&mut s, d, &mut id, Trigger::Schedule);
        let r = s.start_next().unwrap();
        assert_eq!((r.run_id, r.job.as_str()), (1, "a"));
        // Still running a minute later: one run is queued behind it.
        let d = s.due(ts("2026-11-25T00:02:00Z"));
        enqueue(&mut s, d, &mut id, Trigger::Schedule);
        assert_eq!(s.queued("a"), Some(2));
        assert_eq!(s.start_next(), None, "one run of a job at a time");
        // Another minute: nothing more is queued (never stacked), a manual trigger is refused too.
        assert!(s.due(ts("2026-11-25T00:03:00Z")).is_empty());
        assert!(!s.push(Queued {
            run_id: 99,
            job: "a".into(),
            trigger: Trigger::Manual
        }));
        s.finished("a");
        assert_eq!(s.start_next().map(|q| q.run_id), Some(2));
        assert_eq!(s.start_next(), None);
    }

    #[test]
    fn global_limit_and_queue_order() {
        let t0 = ts("2026-11-25T00:00:00Z");
        let plans = ["a", "b", "c", "d"]
            .iter()
            .map(|n| plan(n, Some("0 1 * * *"), true))
            .collect();
        let mut s = Scheduler::new(plans, 2, t0);
        let mut id = 0;
        let d = s.due(ts("2026-11-25T01:00:00Z"));
        assert_eq!(d, vec!["a", "b", "c", "d"]);
        enqueue(&mut s, d, &mut id, Trigger::Schedule);
        assert_eq!(s.start_next().unwrap().job, "a");
        assert_eq!(s.start_next().unwrap().job, "b");
        assert_eq!(s.start_next(), None, "limit of 2");
        assert_eq!((s.running_len(), s.queue_len()), (2, 2));
        s.finished("b");
        assert_eq!(s.start_next().unwrap().job, "c");
        assert_eq!(s.start_next(), None);
    }

    #[test]
    fn a_waiting_run_of_a_busy_job_does_not_block_others() {
        let t0 = ts("2026-11-25T00:00:00Z");
        let mut s = Scheduler::new(vec![plan("a", None, true), plan("b", None, true)], 2, t0);
        let mut id = 0;
        enqueue(&mut s, vec!["a".into()], &mut id, Trigger::Manual);
        assert_eq!(s.start_next().unwrap().job, "a");
        enqueue(
            &mut s,
            vec!["a".into(), "b".into()],
            &mut id,
            Trigger::Manual,
        );
        assert_eq!(s.start_next().unwrap().job, "b");
    }

    #[test]
    fn catch_up_once_after_downtime() {
        let now = ts("2026-11-25T12:00:00Z");
        let s = Scheduler::new(
            vec![
                plan("missed", Some("0 3 * * *"), true),
                plan("on-time", Some("0 3 * * *"), true),
                plan("no-catch-up", Some("0 3 * * *"), false),
                plan("never-ran", Some("0 3 * * *"), true),
                plan("unscheduled", None, true),
            ],
            1,
            now,
        );
        let last = |job: &str| match job {
            // Last ran two days ago: the fires of yesterday and today were missed -> one run.
            "missed" | "no-catch-up" | "unscheduled" => Some(ts("2026-11-23T03:00:05Z")),
            "on-time" => Some(ts("2026-11-25T03:00:01Z")),
            _ => None,
        };
        assert_eq!(s.catch_up(now, last), vec!["missed"]);
    }

    #[test]
    fn cancelling_and_draining_the_queue() {
        let t0 = ts("2026-11-25T00:00:00Z");
        let mut s = Scheduler::new(vec![plan("a", None, true), plan("b", None, true)], 1, t0);
        let mut id = 0;
        enqueue(
            &mut s,
            vec!["a".into(), "b".into()],
            &mut id,
            Trigger::Manual,
        );
        assert!(s.remove_queued(1));
        assert!(!s.remove_queued(1));
        assert_eq!(s.drain_queue().len(), 1);
        assert_eq!(s.start_next(), None);
        assert_eq!(s.next_wakeup(), None);
    }
}
