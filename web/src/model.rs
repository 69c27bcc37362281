//! The API's JSON shapes. Times are RFC 3339 strings in UTC; sizes are bytes; durations seconds.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    /// "ok", or "degraded" when a job is stale or its last run failed.
    pub status: String,
    pub version: String,
    pub started_at: String,
    pub uptime_secs: u64,
    pub jobs: usize,
    pub running: usize,
    pub queued: usize,
    /// Jobs with no successful run within their `stale_after` window.
    pub stale_jobs: Vec<String>,
    /// Jobs whose last finished run failed.
    pub failing_jobs: Vec<String>,
    /// True once SIGTERM arrived: no new runs start.
    pub stopping: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobView {
    pub name: String,
    /// "backup", or "tape" (a `[[tape_job]]`: `source` and `consistency` are empty, `tape` says
    /// what it writes).
    #[serde(default = "backup_kind")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tape: Option<TapeJobView>,
    pub source: String,
    pub consistency: String,
    pub schedule: Option<String>,
    pub next_run_at: Option<String>,
    pub catch_up: bool,
    pub stale_after_secs: Option<u64>,
    pub stale: bool,
    /// "idle", "queued" or "running".
    pub state: String,
    pub last_run: Option<RunView>,
    pub last_success_at: Option<String>,
    pub snapshots: u64,
}

fn backup_kind() -> String {
    "backup".into()
}

/// What a tape job writes, and where.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TapeJobView {
    /// Backup jobs whose latest snapshots it writes.
    pub jobs: Vec<String>,
    pub pool: String,
    /// Cron schedules of full and incremental sets.
    pub full: Option<String>,
    pub incremental: Option<String>,
    pub copies: u32,
    pub full_copies: u32,
    pub wait_for_tape_secs: u64,
    /// What a running run waits for a person to insert, if it waits.
    pub waiting: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunView {
    pub id: i64,
    pub job: String,
    pub snapshot: Option<String>,
    /// "schedule", "catch-up", "manual" or "cli".
    pub trigger: String,
    /// "queued", "running", "succeeded", "failed", "cancelled" or "interrupted".
    pub status: String,
    pub queued_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// The engine's statistics of a finished run (files, bytes read and written, warnings).
    pub stats: Option<serde_json::Value>,
    /// How many warnings the run had (files left out, xattrs not read, …): a run that
    /// "succeeded" with warnings did not back up everything it was asked to.
    #[serde(default)]
    pub warnings: u64,
    /// Live progress of a running run.
    pub progress: Option<Progress>,
    /// True when a cancel was asked for and the run has not stopped yet.
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    pub phase: String,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// What the run waits for a person to do (a tape job with no tape to write on: which tape to
    /// insert).
    #[serde(default)]
    pub waiting: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotItem {
    pub name: String,
    pub time: Option<String>,
    pub used_bytes: Option<u64>,
    pub referenced_bytes: Option<u64>,
    pub files: Option<u64>,
    pub bytes: Option<u64>,
    pub bytes_written: Option<u64>,
}

/// `GET /api/v1/runs?job=&status=&before=&limit=`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunQuery {
    pub job: Option<String>,
    pub status: Option<String>,
    /// Runs with a smaller id than this (paging).
    pub before: Option<i64>,
    /// Default 50, at most 1000.
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Triggered {
    pub run_id: i64,
    /// "queued" (a new run), "already-queued" or "already-running" (that run's id).
    pub state: String,
}

/// Every error body: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
}
