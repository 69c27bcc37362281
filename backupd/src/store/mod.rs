//! Snapshot stores, write side: building, publishing, deleting a job's snapshots. Both kinds hold
//! plain files that anyone can browse; reading them is `common::snapshots`.

pub mod dir;
pub mod zfs;

use std::path::{Path, PathBuf};

use anyhow::Result;
use common::config::StoreConfig;
use common::manifest::Manifest;
use common::snapshots::Snapshots;

use crate::config::Config;

/// How the engine writes the new snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// An empty tree; unchanged files are hard-linked from `base`.
    Fresh,
    /// The tree already holds the previous state and is updated in place (ZFS).
    InPlace,
}

pub struct Base {
    /// The tree holding the previous state.
    pub root: PathBuf,
    pub manifest: Manifest,
}

/// A snapshot being built; never visible as a snapshot until published.
pub struct Staging {
    pub name: String,
    pub root: PathBuf,
    pub mode: WriteMode,
    pub base: Option<Base>,
    pub warnings: Vec<String>,
    /// Start writeback of each file as soon as it is written, so that the sync before
    /// publishing overlaps with copying instead of following it.
    pub writeback: bool,
}

/// A store backupd writes to; reading is the [`Snapshots`] side every part shares.
pub trait Store: Snapshots {
    /// Prepares a staging tree, cleaning up anything an interrupted run left behind.
    fn begin(&self, job: &str, name: &str) -> Result<Staging>;
    /// Makes the staging tree a snapshot, atomically; `manifest` describes it.
    fn publish(&self, job: &str, staging: &Staging, manifest: &Manifest) -> Result<()>;
    /// Discards a failed run's work; earlier snapshots stay as they were.
    fn abort(&self, job: &str, staging: &Staging) -> Result<()>;
    fn delete(&self, job: &str, name: &str) -> Result<()>;
    /// Space the job's snapshots take in the store, when it can be told (ZFS `used` of the job's
    /// dataset; in a directory store the blocks of each distinct file, found by walking it).
    fn usage(&self, job: &str) -> Result<Option<u64>>;
}

pub fn open_store(cfg: &Config) -> Result<Box<dyn Store>> {
    Ok(match &cfg.store {
        StoreConfig::Dir { path, sync } => Box::new(dir::DirStore::new(path.clone(), *sync)),
        StoreConfig::Zfs {
            parent,
            compression,
        } => Box::new(zfs::ZfsStore::new(
            parent.clone(),
            compression.clone(),
            cfg.state_dir.join("mnt"),
        )),
    })
}

/// Syncs the filesystem holding `path` (data and metadata), so a publish survives power loss.
pub fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Removes whatever is at `p` (a tree, a file or a symlink, never followed); nothing there is fine.
pub fn remove_path(p: &Path) -> Result<()> {
    use anyhow::Context;
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            remove_tree(p).with_context(|| format!("cannot remove {}", p.display()))
        }
        Ok(_) => std::fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", p.display())),
    }
}

/// Removes a tree, making read-only directories writable first if needed (non-root runs).
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path);
            std::fs::remove_dir_all(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(md) = std::fs::symlink_metadata(path)
        && md.is_dir()
    {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                make_dirs_writable(&e.path());
            }
        }
    }
}
