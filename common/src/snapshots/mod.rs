//! Published snapshots, read side: listing a job's snapshots in a store and opening one as a plain
//! tree. backupd's stores build on these to write; the tape side reads through them alone.

pub mod dir;
pub mod zfs;

use std::path::PathBuf;

use anyhow::Result;
use jiff::Timestamp;
use serde::Serialize;

use crate::manifest::{MANIFEST_FILE, Manifest};

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub time: Option<Timestamp>,
    /// Bytes the store reports for the snapshot (ZFS `used`), when it knows.
    pub used_bytes: Option<u64>,
    pub referenced_bytes: Option<u64>,
}

/// A readable snapshot tree; cleans up (e.g. destroys a temporary ZFS clone) when dropped.
pub struct SnapshotView {
    pub root: PathBuf,
    cleanup: Option<Box<dyn FnOnce() + Send>>,
}

impl SnapshotView {
    pub fn new(root: PathBuf, cleanup: Option<Box<dyn FnOnce() + Send>>) -> Self {
        SnapshotView { root, cleanup }
    }

    pub fn manifest(&self) -> Result<Manifest> {
        Ok(Manifest::load(&self.root.join(MANIFEST_FILE))?)
    }
}

impl Drop for SnapshotView {
    fn drop(&mut self) {
        if let Some(f) = self.cleanup.take() {
            f();
        }
    }
}

/// Where a job's published snapshots are, and how to open one.
pub trait Snapshots: Send + Sync {
    fn describe(&self) -> String;
    /// The directory holding the store's data (never backed up into itself).
    fn root_path(&self) -> PathBuf;
    /// Snapshots of a job made by rackvault, oldest first.
    fn snapshots(&self, job: &str) -> Result<Vec<SnapshotInfo>>;
    fn open(&self, job: &str, name: &str) -> Result<SnapshotView>;
}

/// A type that reads its snapshots through a [`Snapshots`] it holds (backupd's stores, which also
/// write), and so is a [`Snapshots`] itself.
pub trait ReadsThrough: Send + Sync {
    fn reader(&self) -> &dyn Snapshots;
}

impl<T: ReadsThrough> Snapshots for T {
    fn describe(&self) -> String {
        self.reader().describe()
    }

    fn root_path(&self) -> PathBuf {
        self.reader().root_path()
    }

    fn snapshots(&self, job: &str) -> Result<Vec<SnapshotInfo>> {
        self.reader().snapshots(job)
    }

    fn open(&self, job: &str, name: &str) -> Result<SnapshotView> {
        self.reader().open(job, name)
    }
}

/// Resolves `latest` (or a unique prefix) to a snapshot name.
pub fn resolve(store: &dyn Snapshots, job: &str, wanted: &str) -> Result<String> {
    let snaps = store.snapshots(job)?;
    if snaps.is_empty() {
        anyhow::bail!("job {job:?} has no snapshots yet (run `backupd run {job}` first)");
    }
    if wanted == "latest" {
        return Ok(snaps.last().expect("non-empty").name.clone());
    }
    if let Some(s) = snaps.iter().find(|s| s.name == wanted) {
        return Ok(s.name.clone());
    }
    // A whole snapshot name means that snapshot: never `20261201T020000Z-2` for a pruned
    // `20261201T020000Z`.
    if crate::snapname::parse(wanted).is_some() {
        anyhow::bail!("job {job:?} has no snapshot {wanted:?} (see `backupd snapshots {job}`)");
    }
    let matches: Vec<_> = snaps
        .iter()
        .filter(|s| s.name.starts_with(wanted))
        .collect();
    match matches.len() {
        1 => Ok(matches[0].name.clone()),
        0 => {
            anyhow::bail!("job {job:?} has no snapshot {wanted:?} (see `backupd snapshots {job}`)")
        }
        _ => anyhow::bail!(
            "{wanted:?} matches {} snapshots of job {job:?}; give more of the name",
            matches.len()
        ),
    }
}

/// The configured store's snapshots (read side).
pub fn open(shared: &crate::config::SharedConfig) -> Box<dyn Snapshots> {
    match &shared.store {
        crate::config::StoreConfig::Dir { path, .. } => {
            Box::new(dir::DirSnapshots::new(path.clone()))
        }
        crate::config::StoreConfig::Zfs { parent, .. } => Box::new(zfs::ZfsSnapshots::new(
            parent.clone(),
            shared.state_dir.join("mnt"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_name_means_that_snapshot_and_a_prefix_one_that_starts_so() {
        let d = tempfile::tempdir().unwrap();
        for n in ["20261201T020000Z-2", "20261202T020000Z"] {
            std::fs::create_dir_all(d.path().join("j/snapshots").join(n)).unwrap();
        }
        let store = dir::DirSnapshots::new(d.path().to_path_buf());
        let e = resolve(&store, "j", "20261201T020000Z").unwrap_err();
        assert!(
            e.to_string()
                .contains("has no snapshot \"20261201T020000Z\""),
            "{e}"
        );
        assert_eq!(
            resolve(&store, "j", "20261201").unwrap(),
            "20261201T020000Z-2"
        );
        assert_eq!(resolve(&store, "j", "latest").unwrap(), "20261202T020000Z");
        assert_eq!(
            resolve(&store, "j", "20261201T020000Z-2").unwrap(),
            "20261201T020000Z-2"
        );
    }
}
