//! One daemon per state directory: an flock on `daemon.lock`, and `daemon.json` saying where
//! the running daemon listens (the CLI hands runs to it).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonInfo {
    pub pid: u32,
    pub listen: String,
    pub started_at: String,
}

/// Held for the daemon's life; released when dropped or when the process dies.
pub struct DaemonLock {
    _file: File,
    info_path: PathBuf,
}

fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.lock")
}

fn info_path(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.json")
}

impl DaemonLock {
    pub fn acquire(state_dir: &Path) -> Result<DaemonLock> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let path = lock_path(state_dir);
        let f = File::options()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let who = running(state_dir)
                    .map(|i| {
                        format!(
                            "pid {}, listening on {}, since {}",
                            i.pid, i.listen, i.started_at
                        )
                    })
                    .unwrap_or_else(|| "another process".into());
                anyhow::bail!(
                    "another backupd serve is already using state directory {} ({who}); stop it first",
                    state_dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        Ok(DaemonLock {
            _file: f,
            info_path: info_path(state_dir),
        })
    }

    /// Publishes where the daemon listens (after the listener is bound).
    pub fn publish(&self, info: &DaemonInfo) -> Result<()> {
        let tmp = self.info_path.with_extension("json.tmp");
        let mut f =
            File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(info)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.info_path)
            .with_context(|| format!("cannot write {}", self.info_path.display()))?;
        Ok(())
    }
}

impl Drop for DaemonLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.info_path);
    }
}

/// The running daemon of `state_dir`, if any: the lock is held and `daemon.json` is readable.
pub fn running(state_dir: &Path) -> Option<DaemonInfo> {
    let f = File::open(lock_path(state_dir)).ok()?;
    match f.try_lock_shared() {
        // Nobody holds it: no daemon (a daemon.json left by a killed one is stale).
        Ok(()) => None,
        Err(_) => {
            let text = std::fs::read_to_string(info_path(state_dir)).ok()?;
            serde_json::from_str(&text).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_names_the_first() {
        let d = tempfile::tempdir().unwrap();
        let a = DaemonLock::acquire(d.path()).unwrap();
        assert_eq!(running(d.path()), None, "no info published yet");
        let info = DaemonInfo {
            pid: 42,
            listen: "127.0.0.1:1".into(),
            started_at: "now".into(),
        };
        a.publish(&info).unwrap();
        assert_eq!(running(d.path()), Some(info));
        let e = DaemonLock::acquire(d.path()).err().unwrap().to_string();
        assert!(
            e.contains("already using state directory") && e.contains("pid 42"),
            "{e}"
        );
        drop(a);
        assert_eq!(running(d.path()), None);
        DaemonLock::acquire(d.path()).unwrap();
    }
}
