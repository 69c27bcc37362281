//! A post hook owed to an application. When a job's pre hook starts (it may freeze or stop the
//! application), a record of the post hook is written to `<state_dir>/hooks/<job>.post.json` and
//! synced; it is removed once the post hook has run. A run killed in between (kill -9, power
//! loss) leaves the record, and the next `backupd run` of the job or the next `backupd serve`
//! runs that post hook first, with RACKVAULT_OUTCOME=interrupted, so the application is thawed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::consistency::hooks::{self, HookEnv, Phase};

#[derive(Serialize, Deserialize)]
struct Owed {
    command: String,
    timeout_secs: u64,
    job: String,
    snapshot: String,
    run_id: i64,
    source: PathBuf,
}

fn record_path(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("hooks").join(format!("{job}.post.json"))
}

/// Records that `command` is owed once the pre hook of this run starts.
pub fn owe(state_dir: &Path, command: &str, timeout: Duration, env: &HookEnv) -> Result<()> {
    let path = record_path(state_dir, &env.job);
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let owed = Owed {
        command: command.to_string(),
        timeout_secs: timeout.as_secs(),
        job: env.job.clone(),
        snapshot: env.snapshot.clone(),
        run_id: env.run_id,
        source: env.source.clone(),
    };
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&owed).expect("serialisable"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| {
        format!(
            "cannot record the pending post hook in {} (the pre hook was not run)",
            path.display()
        )
    })
}

/// The post hook ran: nothing is owed any more.
pub fn paid(state_dir: &Path, job: &str) {
    let path = record_path(state_dir, job);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove the pending post hook record");
    }
}

/// Runs a post hook that a killed run of `job` still owes, if any. Call holding the job's lock.
/// Returns what to warn about: that it ran, or why it failed.
pub fn settle(state_dir: &Path, job: &str) -> Option<String> {
    let path = record_path(state_dir, job);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("cannot read {}: {e}", path.display())),
    };
    let owed: Owed = match serde_json::from_slice(&text) {
        Ok(o) => o,
        Err(e) => {
            paid(state_dir, job);
            return Some(format!(
                "{} is damaged ({e}); the post hook of an interrupted run was not run: check the application",
                path.display()
            ));
        }
    };
    let env = HookEnv {
        job: owed.job,
        snapshot: owed.snapshot,
        run_id: owed.run_id,
        source: owed.source,
        view: None,
        outcome: Some("interrupted".into()),
    };
    let timeout = Duration::from_secs(owed.timeout_secs.max(1));
    let result = hooks::run(Phase::Post, &owed.command, timeout, &env, &|| false);
    paid(state_dir, job);
    Some(match result {
        Ok(()) => format!(
            "run {} of job {job} was killed between its pre and post hook; its post hook has now run",
            env.run_id
        ),
        Err(e) => format!(
            "run {} of job {job} was killed between its pre and post hook, and its post hook failed now: {e:#}",
            env.run_id
        ),
    })
}
