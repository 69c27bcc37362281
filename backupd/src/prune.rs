//! Applying retention to a store: decide (pure, in `retention`), then delete.

use anyhow::Result;
use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::config::Job;
use crate::retention::{Decision, decide};
use crate::store::Store;

#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub job: String,
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
    pub deleted: Vec<String>,
}

pub fn prune_job(
    store: &dyn Store,
    catalog: &Catalog,
    state_dir: &std::path::Path,
    job: &Job,
    now: Timestamp,
    dry_run: bool,
) -> Result<PruneReport> {
    // Holding the job lock keeps a run from basing itself on a snapshot being deleted.
    let _lock = if dry_run {
        None
    } else {
        Some(crate::run::lock_job(state_dir, &job.name)?)
    };
    let snaps = store.snapshots(&job.name)?;
    let dated: Vec<(String, Timestamp)> = snaps
        .iter()
        .filter_map(|s| s.time.map(|t| (s.name.clone(), t)))
        .collect();
    let decisions = decide(&dated, &job.retention, now);
    let mut deleted = Vec::new();
    if !dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            store.delete(&job.name, &d.name)?;
            catalog.mark_deleted(&job.name, &d.name)?;
            deleted.push(d.name.clone());
        }
    }
    Ok(PruneReport {
        job: job.name.clone(),
        dry_run,
        decisions,
        deleted,
    })
}
