//! The ZFS store: one dataset per job (`<parent>/<job>`), updated in place and snapshotted after
//! each successful run. Changed blocks of large files are rewritten alone, so a snapshot costs
//! about the bytes that changed.
//!
//! Crash safety: a run first writes `.rackvault/incomplete` into the dataset; it is removed just
//! before the snapshot is taken. A later run that finds it rolls the dataset back to the last
//! snapshot (or empties it if there is none), so no half-written state is ever snapshotted.
//! Reading a snapshot uses `.zfs/snapshot/<name>` where reachable, else a temporary read-only clone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use common::manifest::{MANIFEST_FILE, META_DIR, Manifest};
use common::snapshots::zfs::{PROP_JOB, PROP_MANAGED, ZfsSnapshots};
use common::snapshots::{ReadsThrough, Snapshots};

use super::{Base, Staging, Store, WriteMode, remove_path, sync_filesystem};
const INCOMPLETE_MARKER: &str = ".rackvault/incomplete";

/// The write side of a ZFS store; reading goes through [`ZfsSnapshots`].
pub struct ZfsStore {
    snaps: ZfsSnapshots,
    compression: Option<String>,
}

impl ZfsStore {
    pub fn new(parent: String, compression: Option<String>, mount_dir: PathBuf) -> Self {
        ZfsStore {
            snaps: ZfsSnapshots::new(parent, mount_dir),
            compression,
        }
    }

    pub fn dataset(&self, job: &str) -> String {
        self.snaps.dataset(job)
    }

    /// Creates the job's dataset on first use, with the best compression the pool accepts.
    fn ensure_dataset(&self, job: &str) -> Result<String> {
        let ds = self.dataset(job);
        if self.snaps.zfs().exists(&ds)? {
            return Ok(ds);
        }
        if !self.snaps.zfs().exists(self.snaps.parent())? {
            anyhow::bail!(
                "parent dataset {} does not exist; create it first (zfs create {})",
                self.snaps.parent(),
                self.snaps.parent()
            );
        }
        // zstd, then lz4 (OpenZFS); lzjb, the fast one on old pools such as zfs-fuse's v23.
        let candidates: Vec<&str> = match &self.compression {
            Some(c) => vec![c.as_str()],
            None => vec!["zstd", "lz4", "lzjb"],
        };
        let mut last_err = None;
        for c in candidates {
            match self.snaps.zfs().create(
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

    /// The dataset's newest snapshot, and whether it is one of this job's (only then may a run
    /// roll the dataset back to it).
    fn newest_snapshot(&self, ds: &str, job: &str) -> Result<Option<(String, bool)>> {
        let Some(last) = self.snaps.zfs().snapshots(ds)?.pop() else {
            return Ok(None);
        };
        let ours = self
            .snaps
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
                self.snaps.zfs().rollback(&last)?;
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

impl ReadsThrough for ZfsStore {
    fn reader(&self) -> &dyn Snapshots {
        &self.snaps
    }
}

impl Store for ZfsStore {
    fn usage(&self, job: &str) -> Result<Option<u64>> {
        let ds = self.dataset(job);
        if !self.snaps.zfs().exists(&ds)? {
            return Ok(None);
        }
        let used = self.snaps.zfs().get_one(&ds, "used")?;
        Ok(used.trim().parse().ok())
    }

    fn begin(&self, job: &str, name: &str) -> Result<Staging> {
        let ds = self.ensure_dataset(job)?;
        let root = self.snaps.mountpoint(&ds)?;
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
        self.snaps
            .zfs()
            .snapshot(&full, &[(PROP_MANAGED, "yes"), (PROP_JOB, job)])
            .with_context(|| format!("cannot snapshot {full}"))?;
        Ok(())
    }

    fn abort(&self, job: &str, staging: &Staging) -> Result<()> {
        let ds = self.dataset(job);
        // Free the space the failed run used; with no snapshot, the marker makes the next run clean up.
        if let Some((last, true)) = self.newest_snapshot(&ds, job)? {
            self.snaps.zfs().rollback(&last)?;
        }
        let _ = staging;
        Ok(())
    }

    fn delete(&self, job: &str, name: &str) -> Result<()> {
        if !self.snapshots(job)?.iter().any(|s| s.name == name) {
            anyhow::bail!(
                "refusing to destroy {}@{name}: not a rackvault snapshot of job {job}",
                self.dataset(job)
            );
        }
        self.snaps.cleanup_stale_clones();
        self.snaps
            .zfs()
            .destroy(&format!("{}@{name}", self.dataset(job)))?;
        Ok(())
    }
}
