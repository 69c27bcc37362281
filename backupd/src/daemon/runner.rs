//! Runs one queued job on its own thread: the engine is synchronous and CPU/IO bound, and a
//! thread per run (at most `max_concurrent`) keeps the async side free for the API.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;

use super::scheduler::Queued;
use super::shared::{Active, RunReport, Shared};
use crate::catalog::{Catalog, Outcome};
use crate::progress::Progress;
use crate::run::{RunRequest, run_job};

pub fn start(shared: &Arc<Shared>, q: Queued) {
    let progress = Arc::new(Progress::hidden());
    shared.state().active.insert(
        q.run_id,
        Active {
            job: q.job.clone(),
            progress: progress.clone(),
        },
    );
    let shared = shared.clone();
    let name = format!("run-{}", q.job);
    let spawned = std::thread::Builder::new().name(name).spawn({
        let q = q.clone();
        let shared = shared.clone();
        move || match shared.cfg.tape_jobs.iter().find(|t| t.name == q.job) {
            Some(tj) => super::tape_runner::run_tape_job(&shared, &q, &progress, tj),
            None => run(&shared, &q, &progress),
        }
    });
    if let Err(e) = spawned {
        tracing::error!(job = %q.job, error = %e, "cannot start a thread for the run");
        let _ = shared.catalog().finish_run(
            q.run_id,
            Outcome::Failed,
            Some(&format!("cannot start a thread for the run: {e}")),
            None,
        );
        shared.run_ended(
            &q,
            Outcome::Failed,
            Timestamp::now(),
            RunReport {
                error: Some(e.to_string()),
                ..Default::default()
            },
        );
    }
}

fn run(shared: &Shared, q: &Queued, progress: &Progress) {
    let started = Instant::now();
    let cfg = &shared.cfg;
    let (outcome, mut report) = match (
        Catalog::open(&cfg.state_dir),
        cfg.job(&q.job).map_err(anyhow::Error::from),
    ) {
        (Ok(catalog), Ok(job)) => {
            tracing::info!(job = %q.job, run = q.run_id, "run started");
            let req = RunRequest {
                trigger: q.trigger,
                queued: Some(q.run_id),
                progress,
            };
            match run_job(
                cfg,
                shared.store.as_ref(),
                &catalog,
                job,
                &req,
                Timestamp::now(),
            ) {
                Ok(summary) => {
                    tracing::info!(job = %q.job, run = q.run_id, snapshot = %summary.snapshot, "run succeeded");
                    // One line for the journal; the list is in the catalog and the API.
                    if let Some(first) = summary.stats.warnings.first() {
                        tracing::warn!(
                            job = %q.job,
                            run = q.run_id,
                            warnings = summary.stats.warnings.len(),
                            first = %first,
                            "run succeeded with warnings (`backupd runs --json` lists them)"
                        );
                    }
                    if !job.retention.is_empty()
                        && let Err(e) = crate::prune::prune_job(
                            shared.store.as_ref(),
                            &catalog,
                            &cfg.state_dir,
                            job,
                            Timestamp::now(),
                            false,
                        )
                    {
                        tracing::warn!(job = %q.job, error = %format!("{e:#}"), "pruning after the run failed");
                    }
                    (
                        Outcome::Succeeded,
                        RunReport {
                            stats: Some(summary.stats),
                            ..Default::default()
                        },
                    )
                }
                Err(e) => {
                    tracing::warn!(job = %q.job, run = q.run_id, outcome = e.outcome.as_str(), error = %e, "run did not succeed");
                    (
                        e.outcome,
                        RunReport {
                            error: Some(e.to_string()),
                            ..Default::default()
                        },
                    )
                }
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            // run_job never saw the queued row: finish it here.
            let msg = format!("{e:#}");
            let _ = shared
                .catalog()
                .finish_run(q.run_id, Outcome::Failed, Some(&msg), None);
            (
                Outcome::Failed,
                RunReport {
                    error: Some(msg),
                    ..Default::default()
                },
            )
        }
    };
    report.duration_secs = started.elapsed().as_secs_f64();
    report.snapshots = shared.store.snapshots(&q.job).ok().map(|s| s.len() as u64);
    report.store_used = shared.store.usage(&q.job).ok().flatten();
    shared.run_ended(q, outcome, Timestamp::now(), report);
}
