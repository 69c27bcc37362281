//! Consistency providers: a point-in-time view of a job's source for the engine to read, instead
//! of a live tree that changes under it. Chosen per job (`[job.consistency] kind`):
//!
//! - `zfs-snapshot`: one atomic `zfs snapshot` of the datasets, read through clones;
//! - `btrfs-snapshot`: a read-only subvolume snapshot;
//! - `postgres`, `sqlite`: dumps written into a dump directory, which is what the job backs up;
//! - `hooks` (or hooks beside any kind): pre and post commands around the view (see [`hooks`]).
//!
//! Everything a provider creates is removed by [`View::release`], or on drop, even when the run
//! failed; leftovers of a process that died are removed by [`clean_leftovers`] before the next run.

pub mod btrfs_snapshot;
pub mod hooks;
pub mod postgres;
pub mod sqlite;
pub mod zfs_snapshot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config::{Consistency, Job};
use crate::progress::Progress;

/// What a provider needs to know about the run.
pub struct Context<'a> {
    pub job: &'a Job,
    /// The snapshot this run will publish (used to name provider snapshots and clones).
    pub snapshot: &'a str,
    pub state_dir: &'a Path,
    /// Live progress (`phase`) and the cancel flag: long steps (a dump) stop when it is set.
    pub progress: &'a Progress,
}

type Cleanup = Box<dyn FnOnce() -> Result<()> + Send>;

/// A readable point-in-time view of the source.
pub struct View {
    /// What the engine reads: the source itself, a snapshot or clone, or a dump directory.
    pub root: PathBuf,
    /// Stable identities for the view's devices (st_dev → id). Snapshot and clone mounts get a
    /// new device number every run; the manifest records the stable id instead, so the engine's
    /// fast path (same device, inode, ctime, size, mtime) still finds unchanged files.
    pub device_ids: HashMap<u64, u64>,
    /// True when `root` no longer changes with the source (a snapshot or a dump): the post hook
    /// can run as soon as the view exists. False for the live tree (post runs after the copy).
    pub point_in_time: bool,
    /// Things worth a warning in the run's report (e.g. "pg_dumpall dumps each database in its own transaction").
    pub warnings: Vec<String>,
    cleanup: Vec<Cleanup>,
}

impl View {
    /// The live source, read as is.
    pub fn live(root: PathBuf) -> View {
        View {
            root,
            device_ids: HashMap::new(),
            point_in_time: false,
            warnings: Vec::new(),
            cleanup: Vec::new(),
        }
    }

    /// A point-in-time view at `root`.
    pub fn point_in_time(root: PathBuf) -> View {
        let mut v = View::live(root);
        v.point_in_time = true;
        v
    }

    /// Registers a cleanup step; steps run in reverse order of registration.
    pub fn on_release(&mut self, f: impl FnOnce() -> Result<()> + Send + 'static) {
        self.cleanup.push(Box::new(f));
    }

    /// Removes what the provider created; every step runs even if one fails. Returns the
    /// failures as messages (the run records them as warnings; the next run retries).
    pub fn release(mut self) -> Vec<String> {
        self.run_cleanup()
    }

    fn run_cleanup(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(f) = self.cleanup.pop() {
            if let Err(e) = f() {
                tracing::warn!(error = %format!("{e:#}"), "cleaning up a consistency view failed");
                errors.push(format!("{e:#}"));
            }
        }
        errors
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.run_cleanup();
    }
}

/// Takes the view the job's consistency kind asks for. Does not run hooks (see [`hooks`]).
pub fn prepare(ctx: &Context) -> Result<View> {
    match &ctx.job.consistency {
        Consistency::None | Consistency::Hooks => Ok(View::live(ctx.job.source.clone())),
        Consistency::ZfsSnapshot {
            datasets,
            recursive,
        } => zfs_snapshot::prepare(ctx, datasets, *recursive),
        Consistency::BtrfsSnapshot {
            subvolume,
            snapshot_dir,
        } => btrfs_snapshot::prepare(ctx, subvolume, snapshot_dir.as_deref()),
        Consistency::Postgres(pg) => postgres::prepare(ctx, pg),
        Consistency::Sqlite { databases } => sqlite::prepare(ctx, databases),
    }
}

/// Removes what an earlier run of this job left behind when its process died (clones,
/// snapshots, dump files). Called with the job's lock held, before [`prepare`].
pub fn clean_leftovers(ctx: &Context) -> Result<()> {
    match &ctx.job.consistency {
        Consistency::None | Consistency::Hooks => Ok(()),
        Consistency::ZfsSnapshot { datasets, .. } => zfs_snapshot::clean_leftovers(ctx, datasets),
        Consistency::BtrfsSnapshot {
            subvolume,
            snapshot_dir,
        } => btrfs_snapshot::clean_leftovers(ctx, subvolume, snapshot_dir.as_deref()),
        Consistency::Postgres(_) | Consistency::Sqlite { .. } => {
            crate::store::remove_path(&ctx.job.source)
        }
    }
}
