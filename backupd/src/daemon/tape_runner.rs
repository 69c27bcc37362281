//! A queued tape run on its thread: the latest snapshots of the tape job's backup jobs to tape,
//! recorded like a backup run (queued → running → finished, with the sets written as its
//! statistics). While it waits for a tape, the API shows what to insert and an alert says it.

use std::time::Instant;

use jiff::Timestamp;

use super::scheduler::Queued;
use super::shared::{RunReport, Shared};
use crate::catalog::Outcome;
use crate::progress::Progress;
use crate::tape_jobs::TapeJob;
use crate::tape_jobs::run::{TapeRunReport, latest_snapshots, run};

pub fn run_tape_job(shared: &Shared, q: &Queued, progress: &Progress, tj: &TapeJob) {
    let started = Instant::now();
    let cfg = &shared.cfg;
    tracing::info!(tape_job = %tj.name, run = q.run_id, "tape run started");
    let snapshots = latest_snapshots(cfg, tj);
    let names = snapshots.as_ref().map_or(String::new(), |snapshots| {
        snapshots
            .iter()
            .map(|(j, s)| {
                if snapshots.len() == 1 {
                    s.clone()
                } else {
                    format!("{j}: {s}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    });
    if let Err(e) = shared
        .catalog()
        .begin_queued_run(q.run_id, &names, Timestamp::now())
    {
        // Cancelled while it waited in the queue: it stays as the cancel left it.
        tracing::info!(run = q.run_id, "tape run not started: {e:#}");
        shared.run_ended(
            q,
            Outcome::Cancelled,
            Timestamp::now(),
            RunReport::default(),
        );
        return;
    }
    let result = snapshots.and_then(|snapshots| {
        let on_wait = |what: Option<&str>| shared.observer.tape_waiting(&tj.name, q.run_id, what);
        let r = run(cfg, tj, &snapshots, progress, &on_wait);
        on_wait(None);
        r
    });
    let (outcome, error, report) = match result {
        Ok(r) => {
            tracing::info!(tape_job = %tj.name, run = q.run_id, sets = r.sets.len(), "tape run succeeded");
            (Outcome::Succeeded, None, r)
        }
        Err(e) => {
            let outcome = if progress.is_cancelled() {
                Outcome::Cancelled
            } else {
                Outcome::Failed
            };
            let msg = format!("{e:#}");
            tracing::warn!(tape_job = %tj.name, run = q.run_id, outcome = outcome.as_str(), error = %msg, "tape run did not succeed");
            (outcome, Some(msg), TapeRunReport::default())
        }
    };
    // Between jobs: drives that ask for cleaning are cleaned before the next run loads them (not
    // when the daemon is stopping: a cleaning cycle takes minutes on a real drive).
    if !progress.is_cancelled() {
        match crate::tape_jobs::run::clean_drives(cfg, &tj.name) {
            Ok(needs) => shared.observer.drives_needing_cleaning(&needs),
            Err(e) => tracing::warn!(tape_job = %tj.name, "drives not checked for cleaning: {e:#}"),
        }
    }
    shared.observer.check_tapes(Timestamp::now(), true);
    // The tape catalog changed: a copy of it now, not only at the daily one.
    if outcome == Outcome::Succeeded {
        super::back_up_catalogs(shared);
    }
    if let Err(e) = shared
        .catalog()
        .finish_run_report(q.run_id, outcome, error.as_deref(), &report)
    {
        tracing::error!(run = q.run_id, error = %format!("{e:#}"), "cannot record the end of the tape run");
    }
    shared.run_ended(
        q,
        outcome,
        Timestamp::now(),
        RunReport {
            duration_secs: started.elapsed().as_secs_f64(),
            error,
            ..Default::default()
        },
    );
}
