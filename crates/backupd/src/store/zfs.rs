//! The ZFS store: one dataset per job (`<parent>/<job>`), updated in place and snapshotted after
//! each successful run. Changed blocks of large files are rewritten alone, so a snapshot costs
//! about the bytes that changed.
//!
//! Crash safety: a run first writes `.rackvault/incomplete` into the dataset; it is removed just
//! before the snapshot is taken. A later run that finds it rolls the dataset back to the last
//! snapshot (or empties it if there is none), so no half-written state is ever snapshotted.
//! Reading a snapshot uses `.zfs/snapshot/<name>` where reachable, else a temporary read-only clone.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use jiff::Timestamp;

use super::{
    Base, SnapshotInfo, SnapshotView, Staging, Store, WriteMode, remove_path, sync_filesystem,
};
use crate::manifest::{MANIFEST_FILE, META_DIR, Manifest};
use crate::zfs::Zfs;

pub const PROP_MANAGED: &str = "rackvault:managed";
pub const PROP_JOB: &str = "rackvault:job";
pub const PROP_READ_CLONE: &str = "rackvault:readclone";
const INCOMPLETE_MARKER: &str = ".rackvault/incomplete";

pub struct ZfsStore {
    parent: String,
    compression: Option<String>,
    mount_dir: PathBuf,
    zfs: Zfs,
}

static CLONE_SEQ: AtomicU32 = AtomicU32::new(0);

impl ZfsStore {
    pub fn new(parent: String, compression: Option<String>, mount_dir: PathBuf) -> Self {
        ZfsStore {
            parent,
            compression,
            mount_dir,
            zfs: Zfs::default(),
        }
    }

    pub fn dataset(&self, job: &str) -> String {
        format!("{}/{job}", self.parent)
    }

    /// Creates the job's dataset on first use, with the best compression the pool accepts.
    fn ensure_dataset(&self, job: &str) -> Result<String> {
        let ds = self.dataset(job);
        if self.zfs.exists(&ds)? {
            return Ok(ds);
        }
        if !self.zfs.exists(&self.parent)? {
            anyhow::bail!(
                "parent dataset {} does not exist; create it first (zfs create {})",
                self.parent,
                self.parent
            );
        }
        // zstd, then lz4 (OpenZFS); lzjb, the fast one on old pools such as zfs-fuse's v23.
        let candidates: Vec<&str> = match &self.compression {
            Some(c) => vec![c.as_str()],
            None => vec!["zstd", "lz4", "lzjb"],
        };
        let mut last_err = None;
        for c in candidates {
            match self.zfs.create(
                &ds,
                &[("compression", c), ("atime", "off"), (PROP_JOB, job)],
            ) {
                Ok(()) => {
                    tracing::info!(dataset = %ds, compression = c, "created dataset");
                    return Ok(ds);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one candidate"))
            .with_context(|| format!("cannot create dataset {ds}"))
    }

    fn mountpoint(&self, ds: &str) -> Result<PathBuf> {
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

    fn managed_snapshots(&self, ds: &str, job: &str) -> Result<Vec<SnapshotInfo>> {
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
    fn cleanup_stale_clones(&self) {
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

    /// The dataset's newest snapshot, and whether it is one of this job's (only then may a run
    /// roll the dataset back to it).
    fn newest_snapshot(&self, ds: &str, job: &str) -> Result<Option<(String, bool)>> {
        let Some(last) = self.zfs.snapshots(ds)?.pop() else {
            return Ok(None);
        };
        let ours = self
            .managed_snapshots(ds, job)?
            .last()
            .is_some_and(|s| last == format!("{ds}@{}", s.name));
        Ok(Some((last, ours)))
    }

    /// Brings the live dataset back to its last snapshot after an interrupted run.
    fn recover(&self, ds: &str, job: &str, root: &Path) -> Result<()> {
        if !root.join(INCOMPLETE_MARKER).exists() {
            return Ok(());
        }
        match self.newest_snapshot(ds, job)? {
            Some((last, ours)) => {
                if !ours {
                    anyhow::bail!(
                        "dataset {ds} holds an interrupted run, and its newest snapshot {last} is not rackvault's; \
                         roll back by hand (zfs rollback) or destroy that snapshot, then run again"
                    );
                }
                tracing::warn!(dataset = ds, snapshot = %last, "rolling back an interrupted run");
                self.zfs.rollback(&last)?;
            }
            None => {
                tracing::warn!(
                    dataset = ds,
                    "emptying the dataset after an interrupted first run"
                );
                for e in std::fs::read_dir(root)?.flatten() {
                    remove_path(&e.path())?;
                }
            }
        }
        Ok(())
    }
}

impl Store for ZfsStore {
    fn usage(&self, job: &str) -> Result<Option<u64>> {
        let ds = self.dataset(job);
        if !self.zfs.exists(&ds)? {
            return Ok(None);
        }
        let used = self.zfs.get_one(&ds, "used")?;
        Ok(used.trim().parse().ok())
    }

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

    fn begin(&self, job: &str, name: &str) -> Result<Staging> {
        let ds = self.ensure_dataset(job)?;
        let root = self.mountpoint(&ds)?;
        self.recover(&ds, job, &root)?;
        let mut warnings = Vec::new();
        let base = match Manifest::load(&root.join(MANIFEST_FILE)) {
            Ok(m) => Some(Base {
                root: root.clone(),
                manifest: m,
            }),
            Err(e) => {
                if root.join(MANIFEST_FILE).exists() {
                    warnings.push(format!("the dataset's manifest is unusable ({e}); comparing every file with the dataset"));
                }
                None
            }
        };
        let meta = root.join(META_DIR);
        std::fs::create_dir_all(&meta)?;
        let marker = root.join(INCOMPLETE_MARKER);
        std::fs::write(&marker, format!("{name}\n"))?;
        std::fs::File::open(&marker)?.sync_all()?;
        std::fs::File::open(&meta)?.sync_all()?;
        Ok(Staging {
            name: name.to_string(),
            root,
            mode: WriteMode::InPlace,
            base,
            warnings,
            writeback: false,
        })
    }

    fn publish(&self, job: &str, staging: &Staging, manifest: &Manifest) -> Result<()> {
        let ds = self.dataset(job);
        manifest
            .save(&staging.root.join(MANIFEST_FILE))
            .context("cannot write the manifest")?;
        std::fs::remove_file(staging.root.join(INCOMPLETE_MARKER))?;
        sync_filesystem(&staging.root).context("cannot sync the dataset")?;
        let full = format!("{ds}@{}", staging.name);
        self.zfs
            .snapshot(&full, &[(PROP_MANAGED, "yes"), (PROP_JOB, job)])
            .with_context(|| format!("cannot snapshot {full}"))?;
        Ok(())
    }

    fn abort(&self, job: &str, staging: &Staging) -> Result<()> {
        let ds = self.dataset(job);
        // Free the space the failed run used; with no snapshot, the marker makes the next run clean up.
        if let Some((last, true)) = self.newest_snapshot(&ds, job)? {
            self.zfs.rollback(&last)?;
        }
        let _ = staging;
        Ok(())
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

    fn delete(&self, job: &str, name: &str) -> Result<()> {
        if !self.snapshots(job)?.iter().any(|s| s.name == name) {
            anyhow::bail!(
                "refusing to destroy {}@{name}: not a rackvault snapshot of job {job}",
                self.dataset(job)
            );
        }
        self.cleanup_stale_clones();
        self.zfs.destroy(&format!("{}@{name}", self.dataset(job)))?;
        Ok(())
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
