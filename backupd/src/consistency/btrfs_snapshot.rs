//! `btrfs-snapshot`: a read-only snapshot of the subvolume holding the source, read in place.
//!
//! The snapshot is `<snapshot_dir>/rackvault-<job>-<snapshot>` (default snapshot_dir:
//! `.rackvault-snapshots` beside the subvolume), deleted when the view is released. btrfs
//! snapshots keep inode numbers and ctimes; the snapshot's st_dev (new for every subvolume) maps
//! to a stable id (a hash of the subvolume's path), so the engine's fast path still recognises
//! unchanged files. Nested subvolumes are not part of a snapshot: they show as empty directories.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use super::{Context, View};

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
/// The inode number of every subvolume's root directory.
const SUBVOLUME_ROOT_INO: u64 = 256;
/// The default snapshot directory, beside the subvolume.
pub const DEFAULT_SNAPSHOT_DIR: &str = ".rackvault-snapshots";

fn program() -> String {
    std::env::var("RACKVAULT_BTRFS").unwrap_or_else(|_| "btrfs".into())
}

/// The stable device id recorded for files read through a snapshot of `subvolume`.
pub fn stable_id(subvolume: &Path) -> u64 {
    let mut v = b"rackvault btrfs subvolume\0".to_vec();
    v.extend_from_slice(subvolume.as_os_str().as_bytes());
    let h = blake3::hash(&v);
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

fn snapshot_name(job: &str, snapshot: &str) -> String {
    format!("rackvault-{job}-{snapshot}")
}

fn is_btrfs(p: &Path) -> Result<bool> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path; st is a properly sized out-parameter.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot statfs {}", p.display()));
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BTRFS_SUPER_MAGIC)
}

/// The subvolume (canonical) after checking it is one.
fn check_subvolume(subvolume: &Path) -> Result<PathBuf> {
    let sub = std::fs::canonicalize(subvolume)
        .with_context(|| format!("cannot read the btrfs subvolume {}", subvolume.display()))?;
    if !is_btrfs(&sub)? {
        anyhow::bail!(
            "{} is not on a btrfs filesystem; btrfs-snapshot needs `subvolume` to be a btrfs subvolume",
            sub.display()
        );
    }
    if std::fs::metadata(&sub)?.ino() != SUBVOLUME_ROOT_INO {
        anyhow::bail!(
            "{} is a directory, not a btrfs subvolume; make it one (btrfs subvolume create) or point `subvolume` at the subvolume that holds it",
            sub.display()
        );
    }
    Ok(sub)
}

fn snapshot_dir_for(sub: &Path, snapshot_dir: Option<&Path>) -> PathBuf {
    match snapshot_dir {
        Some(d) => d.to_path_buf(),
        None => sub
            .parent()
            .unwrap_or(Path::new("/"))
            .join(DEFAULT_SNAPSHOT_DIR),
    }
}

/// Runs `btrfs ARGS`, with a clear error when btrfs-progs is missing.
fn btrfs(args: &[&std::ffi::OsStr]) -> Result<()> {
    let prog = program();
    let shown = || {
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let out = Command::new(&prog).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "cannot run `{prog}`: not found; install btrfs-progs (e.g. apt install btrfs-progs)"
            )
        } else {
            anyhow::anyhow!("cannot run `{prog}`: {e}")
        }
    })?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = format!("exit status {}", out.status);
        }
        anyhow::bail!("`btrfs {}` failed: {stderr}", shown());
    }
    Ok(())
}

fn delete_subvolume(p: &Path) -> Result<()> {
    btrfs(&["subvolume".as_ref(), "delete".as_ref(), p.as_os_str()])
        .with_context(|| format!("cannot delete the snapshot {}", p.display()))
}

pub fn prepare(ctx: &Context, subvolume: &Path, snapshot_dir: Option<&Path>) -> Result<View> {
    let job = ctx.job.name.as_str();
    let sub = check_subvolume(subvolume)?;
    let source = std::fs::canonicalize(&ctx.job.source)
        .with_context(|| format!("cannot read the job's source {}", ctx.job.source.display()))?;
    let Ok(rel) = source.strip_prefix(&sub).map(Path::to_path_buf) else {
        anyhow::bail!(
            "the source {} of job {job} is not inside the subvolume {}; point `subvolume` at the subvolume that holds the source",
            source.display(),
            sub.display()
        );
    };
    if std::fs::metadata(&source)?.dev() != std::fs::metadata(&sub)?.dev() {
        anyhow::bail!(
            "the source {} of job {job} is in another subvolume or filesystem than {}; point `subvolume` at the subvolume that holds the source",
            source.display(),
            sub.display()
        );
    }
    let dir = snapshot_dir_for(&sub, snapshot_dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the snapshot directory {}", dir.display()))?;
    if !is_btrfs(&dir)? {
        anyhow::bail!(
            "the snapshot directory {} is not on btrfs; it must be on the same btrfs filesystem as {}",
            dir.display(),
            sub.display()
        );
    }
    let snap = dir.join(snapshot_name(job, ctx.snapshot));
    btrfs(&[
        "subvolume".as_ref(),
        "snapshot".as_ref(),
        "-r".as_ref(),
        sub.as_os_str(),
        snap.as_os_str(),
    ])
    .with_context(|| {
        format!(
            "cannot snapshot {} to {} (snapshot_dir must be on the same btrfs filesystem; snapshots need root or user_subvol_rm_allowed)",
            sub.display(),
            snap.display()
        )
    })?;
    let mut view = View::point_in_time(snap.join(&rel));
    {
        let snap = snap.clone();
        view.on_release(move || delete_subvolume(&snap));
    }
    let dev = std::fs::metadata(&snap)
        .with_context(|| format!("cannot read the snapshot {}", snap.display()))?
        .dev();
    view.device_ids.insert(dev, stable_id(&sub));
    tracing::info!(job, snapshot = %snap.display(), root = %view.root.display(), "btrfs-snapshot view ready");
    Ok(view)
}

/// Deletes this job's snapshots (`rackvault-<job>-<snapshot name>`) left in the snapshot directory.
pub fn clean_leftovers(ctx: &Context, subvolume: &Path, snapshot_dir: Option<&Path>) -> Result<()> {
    let job = ctx.job.name.as_str();
    let Ok(sub) = std::fs::canonicalize(subvolume) else {
        return Ok(()); // prepare says what is wrong
    };
    let dir = snapshot_dir_for(&sub, snapshot_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let prefix = format!("rackvault-{job}-");
    let mut failed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        // The rest must be a run's snapshot name: job "a" does not touch job "a-b"'s snapshots.
        if common::snapname::parse(rest).is_none() {
            continue;
        }
        let p = e.path();
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir() && m.ino() == SUBVOLUME_ROOT_INO)
        {
            tracing::warn!(snapshot = %p.display(), "deleting a btrfs snapshot left by an interrupted run");
            if let Err(e) = delete_subvolume(&p) {
                failed.push(format!("{e:#}"));
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "cannot remove what an interrupted btrfs-snapshot run of job {job} left: {}; delete these by hand (btrfs subvolume delete)",
            failed.join("; ")
        );
    }
    Ok(())
}
