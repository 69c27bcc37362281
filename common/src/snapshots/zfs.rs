//! The ZFS store, read side: one dataset per job (`<parent>/<job>`); its snapshots made by rackvault
//! carry `rackvault:managed=yes` and `rackvault:job=<job>`. Reading a snapshot uses
//! `.zfs/snapshot/<name>` where reachable (OpenZFS), else a temporary read-only clone (zfs-fuse).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use jiff::Timestamp;

use super::{SnapshotInfo, SnapshotView, Snapshots};
use crate::manifest::MANIFEST_FILE;
use crate::zfs::Zfs;

pub const PROP_MANAGED: &str = "rackvault:managed";
pub const PROP_JOB: &str = "rackvault:job";
pub const PROP_READ_CLONE: &str = "rackvault:readclone";

pub struct ZfsSnapshots {
    parent: String,
    mount_dir: PathBuf,
    zfs: Zfs,
}

static CLONE_SEQ: AtomicU32 = AtomicU32::new(0);

impl ZfsSnapshots {
    pub fn new(parent: String, mount_dir: PathBuf) -> Self {
        ZfsSnapshots {
            parent,
            mount_dir,
            zfs: Zfs::default(),
        }
    }

    pub fn parent(&self) -> &str {
        &self.parent
    }

    pub fn zfs(&self) -> &Zfs {
        &self.zfs
    }

    pub fn dataset(&self, job: &str) -> String {
        format!("{}/{job}", self.parent)
    }

    pub fn mountpoint(&self, ds: &str) -> Result<PathBuf> {
        let props = self.zfs.get(&[ds], &["mountpoint", "mounted"])?;
        let get = |p: &str| {
            props
                .iter()
                .find(|r| r.property == p)
                .map(|r| r.value.clone())
                .unwrap_or_default()
        };
        let mp = get("mountpoint");
        if !mp.starts_with('/') {
            anyhow::bail!(
                "dataset {ds} has mountpoint {mp:?}; rackvault needs it mounted at a path"
            );
        }
        if get("mounted") != "yes" {
            self.zfs
                .mount(ds)
                .with_context(|| format!("cannot mount {ds}"))?;
        }
        Ok(PathBuf::from(mp))
    }

    pub fn managed_snapshots(&self, ds: &str, job: &str) -> Result<Vec<SnapshotInfo>> {
        let names = self.zfs.snapshots(ds)?;
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let mut props = std::collections::HashMap::<String, Vec<(String, String)>>::new();
        for chunk in refs.chunks(200) {
            for p in self.zfs.get(
                chunk,
                &[PROP_MANAGED, PROP_JOB, "creation", "used", "referenced"],
            )? {
                props.entry(p.name).or_default().push((p.property, p.value));
            }
        }
        let mut out = Vec::new();
        for full in &names {
            let p = props.get(full).cloned().unwrap_or_default();
            let get = |k: &str| p.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
            if get(PROP_MANAGED) != Some("yes") || get(PROP_JOB) != Some(job) {
                continue;
            }
            let name = full
                .split_once('@')
                .map(|(_, s)| s.to_string())
                .unwrap_or_default();
            let creation = get("creation")
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|s| Timestamp::from_second(s).ok());
            out.push(SnapshotInfo {
                time: crate::snapname::parse(&name).or(creation),
                name,
                used_bytes: get("used").and_then(|v| v.parse().ok()),
                referenced_bytes: get("referenced").and_then(|v| v.parse().ok()),
            });
        }
        Ok(out)
    }

    /// Destroys read clones left by processes that died: they clutter the pool and keep their
    /// snapshot from being destroyed by prune. Best effort; a failure here only logs.
    pub fn cleanup_stale_clones(&self) {
        let Ok(children) = self.zfs.children(&self.parent) else {
            return;
        };
        let clones: Vec<&str> = children
            .iter()
            .map(|c| c.as_str())
            .filter(|c| {
                c.rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("rvread-"))
            })
            .collect();
        if clones.is_empty() {
            return;
        }
        let Ok(props) = self.zfs.get(&clones, &[PROP_READ_CLONE]) else {
            return;
        };
        for p in props.iter().filter(|p| p.value == "yes") {
            // rvread-<job>-<pid>-<seq>
            let pid = p
                .name
                .rsplit('-')
                .nth(1)
                .and_then(|s| s.parse::<i32>().ok());
            let Some(pid) = pid else { continue };
            if pid as u32 == std::process::id() || process_alive(pid) {
                continue;
            }
            if destroy_with_retry(&self.zfs, &p.name) {
                tracing::info!(clone = %p.name, "destroyed a read clone left by a process that died");
            }
        }
    }
}

impl Snapshots for ZfsSnapshots {
    fn describe(&self) -> String {
        format!("ZFS store under {}", self.parent)
    }

    fn root_path(&self) -> PathBuf {
        self.zfs
            .get_one(&self.parent, "mountpoint")
            .map(PathBuf::from)
            .unwrap_or_default()
    }

    fn snapshots(&self, job: &str) -> Result<Vec<SnapshotInfo>> {
        let ds = self.dataset(job);
        if !self.zfs.exists(&ds)? {
            return Ok(Vec::new());
        }
        self.managed_snapshots(&ds, job)
    }

    fn open(&self, job: &str, name: &str) -> Result<SnapshotView> {
        let ds = self.dataset(job);
        if !self.snapshots(job)?.iter().any(|s| s.name == name) {
            anyhow::bail!(
                "snapshot {name} of job {job} not found in {}",
                self.describe()
            );
        }
        let root = self.mountpoint(&ds)?;
        self.cleanup_stale_clones();
        let direct = root.join(".zfs/snapshot").join(name);
        if direct.join(MANIFEST_FILE).exists() {
            return Ok(SnapshotView::new(direct, None));
        }
        // zfs-fuse cannot reach .zfs/snapshot: read through a temporary read-only clone.
        let seq = CLONE_SEQ.fetch_add(1, Ordering::Relaxed);
        let clone = format!("{}/rvread-{job}-{}-{seq}", self.parent, std::process::id());
        let mp = self.mount_dir.join(clone.replace('/', "_"));
        std::fs::create_dir_all(&self.mount_dir)?;
        let mps = mp.to_string_lossy().into_owned();
        self.zfs
            .clone_snapshot(
                &format!("{ds}@{name}"),
                &clone,
                &[
                    ("readonly", "on"),
                    ("mountpoint", &mps),
                    (PROP_READ_CLONE, "yes"),
                ],
            )
            .with_context(|| format!("cannot clone {ds}@{name} for reading"))?;
        let zfs = self.zfs.clone();
        let cleanup_name = clone.clone();
        let cleanup = Box::new(move || {
            destroy_with_retry(&zfs, &cleanup_name);
            let _ = std::fs::remove_dir(&mp);
        });
        Ok(SnapshotView::new(PathBuf::from(mps), Some(cleanup)))
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Destroys a clone, retrying for a while: zfs-fuse reports "busy" for a moment after a mount.
fn destroy_with_retry(zfs: &Zfs, name: &str) -> bool {
    for attempt in 0..30 {
        match zfs.destroy(name) {
            Ok(()) => return true,
            Err(e) if attempt == 29 => {
                tracing::warn!(clone = %name, error = %e, "cannot destroy a read clone")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    false
}
