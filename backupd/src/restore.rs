//! Restore: a whole snapshot or chosen paths into a target directory, content and metadata exact.
//!
//! Safety: every name comes from a validated manifest path, every directory on the way is checked
//! to be a real directory (not a symlink) before anything is created inside it, files are created
//! with O_EXCL|O_NOFOLLOW, and nothing existing is replaced without `overwrite`. Conflicts are
//! found before anything is written. Content is hashed while copied and checked against the manifest.

use std::collections::HashSet;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::content::{Dest, copy_hashed_from};
use common::fsmeta;
use common::manifest::{Entry, Kind, Manifest};
use common::relpath::RelPath;

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

pub fn restore(
    view_root: &Path,
    manifest: &Manifest,
    paths: &[RelPath],
    target: &Path,
    overwrite: bool,
) -> Result<RestoreReport> {
    let chosen = select(manifest, paths)?;
    std::fs::create_dir_all(target)
        .with_context(|| format!("cannot create target {}", target.display()))?;
    let tmd = std::fs::metadata(target)?;
    if !tmd.is_dir() {
        anyhow::bail!("target {} is not a directory", target.display());
    }
    let conflicts = conflicts(target, &chosen, overwrite);
    if !conflicts.is_empty() {
        let shown: Vec<_> = conflicts.iter().take(10).cloned().collect();
        anyhow::bail!(
            "restore would replace {} existing item(s) in {}; nothing was written. Use --overwrite to replace files, or restore elsewhere:\n  {}{}",
            conflicts.len(),
            target.display(),
            shown.join("\n  "),
            if conflicts.len() > 10 { "\n  ..." } else { "" }
        );
    }
    let mut report = RestoreReport::default();
    // Files copied so far: a hard link whose leader is among them is linked, not copied again.
    let mut copied: HashSet<&RelPath> = HashSet::new();
    for e in &chosen {
        let dst = e.path.under(target);
        match e.kind {
            Kind::Dir => {
                if e.path.is_root() {
                    continue;
                }
                match std::fs::symlink_metadata(&dst) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        std::fs::remove_file(&dst)?;
                        mkdir(&dst)?;
                    }
                    Err(_) => mkdir(&dst)?,
                }
                report.dirs += 1;
            }
            Kind::Symlink => {
                remove_existing(&dst, overwrite)?;
                use std::os::unix::ffi::OsStrExt;
                let t = std::ffi::OsStr::from_bytes(&e.target.as_ref().expect("validated").0);
                std::os::unix::fs::symlink(t, &dst)
                    .with_context(|| format!("cannot create symlink {}", dst.display()))?;
                apply_meta(&dst, e, &mut report)?;
                report.symlinks += 1;
            }
            Kind::File => {
                remove_existing(&dst, overwrite)?;
                if let Some(leader) = e.link.as_ref().filter(|l| copied.contains(l)) {
                    std::fs::hard_link(leader.under(target), &dst)
                        .with_context(|| format!("cannot link {}", dst.display()))?;
                    report.files += 1;
                    continue;
                }
                let src_path = e.path.under(view_root);
                let mut src = fsmeta::open_read_nofollow(&src_path)
                    .with_context(|| format!("cannot read {} from the snapshot", e.path))?;
                let out = std::fs::File::options()
                    .write(true)
                    .read(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dst)
                    .with_context(|| format!("cannot create {}", dst.display()))?;
                let md = src.metadata()?;
                let h = copy_hashed_from(&mut src, &md, Dest::Fresh(&out), false, &mut |_| Ok(()))
                    .with_context(|| format!("cannot restore {}", e.path))?;
                if Some(h.hash) != e.hash || h.size != e.size {
                    report.mismatches.push(format!(
                        "{}: restored content does not match the manifest (damaged snapshot?)",
                        e.path
                    ));
                }
                copied.insert(&e.path);
                drop(out);
                apply_meta(&dst, e, &mut report)?;
                report.files += 1;
                report.bytes += h.size;
            }
        }
    }
    for e in chosen.iter().rev().filter(|e| e.kind == Kind::Dir) {
        apply_meta(&e.path.under(target), e, &mut report)?;
    }
    Ok(report)
}

fn mkdir(p: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(p)
        .with_context(|| format!("cannot create {}", p.display()))
}

fn remove_existing(dst: &Path, overwrite: bool) -> Result<()> {
    match std::fs::symlink_metadata(dst) {
        Ok(m) if !m.is_dir() && overwrite => {
            std::fs::remove_file(dst).with_context(|| format!("cannot replace {}", dst.display()))
        }
        Ok(_) => anyhow::bail!("{} exists", dst.display()),
        Err(_) => Ok(()),
    }
}

fn apply_meta(dst: &Path, e: &Entry, report: &mut RestoreReport) -> Result<()> {
    let failed = fsmeta::apply(dst, e, fsmeta::Target::Existing)
        .with_context(|| format!("cannot set metadata on {}", dst.display()))?;
    for f in failed {
        report
            .warnings
            .push(format!("{}: extended attribute not restored: {f}", e.path));
    }
    Ok(())
}

/// What in the target stands in the way. A symlink where a directory is needed is always a
/// conflict (following it could lead outside the target); so is a directory where a file goes.
fn conflicts(target: &Path, chosen: &[&Entry], overwrite: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut blocked: Vec<&RelPath> = Vec::new();
    for e in chosen {
        if e.path.is_root() || blocked.iter().any(|b| e.path.starts_with(b)) {
            continue;
        }
        let dst = e.path.under(target);
        let Ok(m) = std::fs::symlink_metadata(&dst) else {
            continue;
        };
        let problem = match e.kind {
            Kind::Dir if m.is_dir() => None,
            Kind::Dir if m.file_type().is_symlink() => {
                Some("is a symlink where the snapshot has a directory")
            }
            Kind::Dir if !overwrite => Some("exists and is not a directory"),
            Kind::Dir => None,
            _ if m.is_dir() => Some("is a directory where the snapshot has a file"),
            _ if !overwrite => Some("exists"),
            _ => None,
        };
        if let Some(p) = problem {
            out.push(format!("{} {p}", dst.display()));
            if e.kind == Kind::Dir {
                blocked.push(&e.path);
            }
        }
    }
    out
}
