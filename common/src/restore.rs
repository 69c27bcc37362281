//! What every restore shares, from a snapshot or from tape: choosing the entries, finding what in
//! the target stands in the way before anything is written, and creating or replacing items only
//! beneath the target (see `Beneath`).

use anyhow::{Context, Result};
use serde::Serialize;

use crate::beneath::Beneath;
use crate::manifest::{Entry, Kind, Manifest};
use crate::relpath::RelPath;

#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub warnings: Vec<String>,
    /// Restored content that does not match the manifest (a damaged snapshot).
    pub mismatches: Vec<String>,
}

/// Entries to restore: everything at or below `paths` (all if empty), plus their ancestors.
pub fn select<'m>(manifest: &'m Manifest, paths: &[RelPath]) -> Result<Vec<&'m Entry>> {
    for p in paths {
        if manifest.get(p).is_none() {
            anyhow::bail!("{} is not in snapshot {}", p, manifest.header.snapshot);
        }
    }
    let ancestors: Vec<RelPath> = paths.iter().flat_map(|p| p.ancestors()).collect();
    Ok(manifest
        .entries
        .iter()
        .filter(|e| {
            paths.is_empty()
                || e.path.is_root()
                || paths.iter().any(|p| e.path.starts_with(p))
                || ancestors.contains(&e.path)
        })
        .collect())
}

/// The stat is a directory's.
pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Creates a directory beneath the target, private until its metadata is applied.
pub fn mkdir(out: &Beneath, rel: &RelPath, shown: &dyn Fn(&RelPath) -> String) -> Result<()> {
    out.mkdir(rel, 0o700)
        .with_context(|| format!("cannot create {}", shown(rel)))
}

/// Makes room for a new item at `rel`: an existing non-directory is removed with `overwrite`, else an error.
pub fn remove_existing(
    out: &Beneath,
    rel: &RelPath,
    overwrite: bool,
    shown: &dyn Fn(&RelPath) -> String,
) -> Result<()> {
    match out
        .lstat(rel)
        .with_context(|| format!("cannot inspect {}", shown(rel)))?
    {
        Some(st) if !is_dir(&st) && overwrite => out
            .remove(rel)
            .with_context(|| format!("cannot replace {}", shown(rel))),
        Some(_) => anyhow::bail!("{} exists", shown(rel)),
        None => Ok(()),
    }
}

/// Extended attributes that could not be set become warnings of the report.
pub fn warn_xattrs(report: &mut RestoreReport, e: &Entry, failed: Vec<String>) {
    for f in failed {
        report
            .warnings
            .push(format!("{}: extended attribute not restored: {f}", e.path));
    }
}

/// What in the target stands in the way. A symlink where a directory is needed is always a
/// conflict (following it could lead outside the target); so is a directory where a file goes.
pub fn conflicts(out: &Beneath, chosen: &[&Entry], overwrite: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut blocked: Vec<&RelPath> = Vec::new();
    for e in chosen {
        if e.path.is_root() || blocked.iter().any(|b| e.path.starts_with(b)) {
            continue;
        }
        let shown = e.path.under(out.path()).display().to_string();
        let st = match out.lstat(&e.path) {
            Ok(Some(st)) => st,
            Ok(None) => continue,
            Err(err) => {
                problems.push(format!("{shown}: {err}"));
                continue;
            }
        };
        let fmt = st.st_mode & libc::S_IFMT;
        let problem = match e.kind {
            Kind::Dir if fmt == libc::S_IFDIR => None,
            Kind::Dir if fmt == libc::S_IFLNK => {
                Some("is a symlink where the snapshot has a directory")
            }
            Kind::Dir if !overwrite => Some("exists and is not a directory"),
            Kind::Dir => None,
            _ if fmt == libc::S_IFDIR => Some("is a directory where the snapshot has a file"),
            _ if !overwrite => Some("exists"),
            _ => None,
        };
        if let Some(p) = problem {
            problems.push(format!("{shown} {p}"));
            if e.kind == Kind::Dir {
                blocked.push(&e.path);
            }
        }
    }
    problems
}

/// Makes the directory `e` beneath the target: an existing directory is kept; anything else there
/// (already found to be in the way only with `overwrite`, see [`conflicts`]) is replaced.
pub fn make_dir(out: &Beneath, e: &Entry, shown: &dyn Fn(&RelPath) -> String) -> Result<()> {
    match out
        .lstat(&e.path)
        .with_context(|| format!("cannot inspect {}", shown(&e.path)))?
    {
        Some(st) if is_dir(&st) => Ok(()),
        Some(_) => {
            out.remove(&e.path)
                .with_context(|| format!("cannot replace {}", shown(&e.path)))?;
            mkdir(out, &e.path, shown)
        }
        None => mkdir(out, &e.path, shown),
    }
}

/// Creates the chosen symlinks with their metadata: last, so no symlink exists in the target while
/// anything else is created.
pub fn make_symlinks(
    out: &Beneath,
    chosen: &[&Entry],
    overwrite: bool,
    shown: &dyn Fn(&RelPath) -> String,
    report: &mut RestoreReport,
) -> Result<()> {
    for e in chosen.iter().filter(|e| e.kind == Kind::Symlink) {
        remove_existing(out, &e.path, overwrite, shown)?;
        let t = &e.target.as_ref().expect("validated").0;
        out.symlink(&e.path, t)
            .with_context(|| format!("cannot create symlink {}", shown(&e.path)))?;
        let at = out.at(&e.path)?;
        let failed = crate::fsmeta::apply_symlink_at(&at, e)
            .with_context(|| format!("cannot set metadata on {}", shown(&e.path)))?;
        warn_xattrs(report, e, failed);
        report.symlinks += 1;
    }
    Ok(())
}

/// Applies the chosen directories' metadata, deepest first: after their contents, whose creation
/// would change their times (and a read-only directory could not take them).
pub fn finish_dirs(
    out: &Beneath,
    chosen: &[&Entry],
    shown: &dyn Fn(&RelPath) -> String,
    report: &mut RestoreReport,
) -> Result<()> {
    for e in chosen.iter().rev().filter(|e| e.kind == Kind::Dir) {
        let dir = out
            .open_dir(&e.path)
            .with_context(|| format!("cannot open {}", shown(&e.path)))?;
        let failed = crate::fsmeta::apply_fd(&dir, e, crate::fsmeta::Target::Existing)
            .with_context(|| format!("cannot set metadata on {}", shown(&e.path)))?;
        warn_xattrs(report, e, failed);
    }
    Ok(())
}
