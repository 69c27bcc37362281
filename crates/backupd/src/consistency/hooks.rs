//! Pre and post hooks: to be written.
use std::time::Duration;

use anyhow::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pre,
    Post,
}

/// What a hook is told, as environment variables (see `env`).
#[derive(Debug, Clone)]
pub struct HookEnv {
    pub job: String,
    pub snapshot: String,
    pub run_id: i64,
    /// The job's source directory.
    pub source: std::path::PathBuf,
    /// The directory being read (a snapshot or clone, or the source).
    pub view: Option<std::path::PathBuf>,
    /// For the post hook: "succeeded", "failed" or "cancelled" so far.
    pub outcome: Option<String>,
}

/// Runs `command` with `sh -c`, killing it (and its process group) after `timeout`.
pub fn run(_phase: Phase, _command: &str, _timeout: Duration, _env: &HookEnv) -> Result<()> {
    anyhow::bail!("hooks are not built yet")
}
