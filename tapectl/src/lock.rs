//! One process at a time per drive and per changer: an flock on a file named after the device, holding
//! who took it, so a second process can say "busy: held by …". Released on drop or process death.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{device} is busy: held by {holder} (lock file {path}); wait for it or use --wait SECONDS"
    )]
    Busy {
        device: String,
        holder: String,
        path: PathBuf,
    },
    #[error("cannot lock {device} ({path}): {source}")]
    Io {
        device: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct DeviceLock {
    _file: File,
    path: PathBuf,
}

impl DeviceLock {
    /// Takes the lock for `key` (e.g. "drive-10WT00001"), waiting up to `wait`. `device` names the
    /// device in messages; `purpose` is recorded for whoever finds it busy.
    pub fn acquire(
        dir: &Path,
        key: &str,
        device: &str,
        purpose: &str,
        wait: Duration,
    ) -> Result<DeviceLock, LockError> {
        let path = dir.join(format!("{}.lock", sanitize(key)));
        let io = |source| LockError::Io {
            device: device.to_string(),
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = File::options()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path)
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    let holder = if holder.is_empty() {
                        "another process".to_string()
                    } else {
                        holder
                    };
                    return Err(LockError::Busy {
                        device: device.to_string(),
                        holder,
                        path,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        file.set_len(0).map_err(io)?;
        let since = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
        writeln!(file, "pid {} ({purpose}) since {since}", std::process::id()).map_err(io)?;
        Ok(DeviceLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_told_who_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = DeviceLock::acquire(
            dir.path(),
            "drive-X/1",
            "drive 0",
            "tapectl load",
            Duration::ZERO,
        )
        .unwrap();
        assert!(a.path().ends_with("drive-X_1.lock"));
        // flock is per open file description, so a second open in this process conflicts like another process.
        let e = DeviceLock::acquire(
            dir.path(),
            "drive-X/1",
            "drive 0",
            "tapectl read",
            Duration::from_millis(250),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("drive 0 is busy: held by pid") && msg.contains("(tapectl load)"),
            "{msg}"
        );
        drop(a);
        DeviceLock::acquire(
            dir.path(),
            "drive-X/1",
            "drive 0",
            "tapectl read",
            Duration::ZERO,
        )
        .unwrap();
    }
}
