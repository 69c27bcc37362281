//! Restore: a whole snapshot or chosen paths into a target directory, content and metadata exact.
//!
//! Safety: the manifest is a validated tree (every entry's parent is a directory entry); both the
//! snapshot and the target are reached through `Beneath`, so no path component is ever a symlink
//! followed, in the snapshot or in the target; files are created with O_EXCL; symlinks are made
//! last; metadata is applied through descriptors; nothing existing is replaced without
//! `overwrite`, and conflicts are found before anything is written. Content is hashed while
//! copied and checked against the manifest.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};

use crate::content::{Dest, copy_hashed_from};
use crate::progress::Progress;
use common::beneath::Beneath;
use common::fsmeta;
use common::manifest::{Kind, Manifest};
use common::relpath::RelPath;
pub use common::restore::{RestoreReport, select};
use common::restore::{
    conflicts, finish_dirs, make_dir, make_symlinks, remove_existing, warn_xattrs,
};

pub fn restore(
    view_root: &Path,
    manifest: &Manifest,
    paths: &[RelPath],
    target: &Path,
    overwrite: bool,
    progress: &Progress,
) -> Result<RestoreReport> {
    let chosen = select(manifest, paths)?;
    std::fs::create_dir_all(target)
        .with_context(|| format!("cannot create target {}", target.display()))?;
    let tmd = std::fs::metadata(target)?;
    if !tmd.is_dir() {
        anyhow::bail!("target {} is not a directory", target.display());
    }
    let source = Beneath::open(view_root)
        .with_context(|| format!("cannot open the snapshot at {}", view_root.display()))?;
    let out = Beneath::open(target)
        .with_context(|| format!("cannot open target {}", target.display()))?;
    let conflicts = conflicts(&out, &chosen, overwrite);
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
    let (files, bytes) = chosen
        .iter()
        .filter(|e| e.kind == Kind::File)
        .fold((0, 0), |(n, b), e| (n + 1, b + e.size));
    progress.start("restoring", files, bytes);
    let mut report = RestoreReport::default();
    // Files copied so far: a hard link whose leader is among them is linked, not copied again.
    let mut copied: HashSet<&RelPath> = HashSet::new();
    let shown = |p: &RelPath| p.under(target).display().to_string();
    // Directories and files first, symlinks last: no symlink exists in the target while anything
    // is created (and nothing is ever created through one: see `Beneath`).
    for e in chosen.iter().filter(|e| e.kind != Kind::Symlink) {
        match e.kind {
            Kind::Dir => {
                if e.path.is_root() {
                    continue;
                }
                make_dir(&out, e, &shown)?;
                report.dirs += 1;
            }
            Kind::File => {
                remove_existing(&out, &e.path, overwrite, &shown)?;
                if let Some(leader) = e.link.as_ref().filter(|l| copied.contains(l)) {
                    out.hard_link(leader, &e.path)
                        .with_context(|| format!("cannot link {}", shown(&e.path)))?;
                    report.files += 1;
                    continue;
                }
                let mut src = source
                    .open_read(&e.path)
                    .with_context(|| format!("cannot read {} from the snapshot", e.path))?;
                let dst = out
                    .create_file(&e.path, 0o600)
                    .with_context(|| format!("cannot create {}", shown(&e.path)))?;
                let md = src.metadata()?;
                if !md.is_file() {
                    anyhow::bail!(
                        "{} in the snapshot is not a regular file; the snapshot is damaged",
                        e.path
                    );
                }
                let h = copy_hashed_from(&mut src, &md, Dest::Fresh(&dst), false, &mut |n| {
                    progress.bytes(n);
                    Ok(())
                })
                .with_context(|| format!("cannot restore {}", e.path))?;
                if Some(h.hash) != e.hash || h.size != e.size {
                    report.mismatches.push(format!(
                        "{}: restored content does not match the manifest (damaged snapshot?)",
                        e.path
                    ));
                }
                copied.insert(&e.path);
                let failed = fsmeta::apply_fd(&dst, e, fsmeta::Target::Existing)
                    .with_context(|| format!("cannot set metadata on {}", shown(&e.path)))?;
                warn_xattrs(&mut report, e, failed);
                report.files += 1;
                report.bytes += h.size;
                progress.file_done();
            }
            Kind::Symlink => unreachable!("filtered above"),
        }
    }
    make_symlinks(&out, &chosen, overwrite, &shown, &mut report)?;
    progress.finish();
    finish_dirs(&out, &chosen, &shown, &mut report)?;
    Ok(report)
}
