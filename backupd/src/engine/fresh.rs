//! Building a fresh tree (directory store): unchanged files are hard links to the previous
//! snapshot, everything else is a new file; nothing of an older snapshot is ever modified.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::*;
use crate::content::Dest;
use crate::progress::Progress;
use crate::store::Staging;
use common::manifest::{Entry, Kind};
use common::relpath::RelPath;

pub(super) fn fresh(
    source: &Path,
    st: &Staging,
    old: Option<&HashMap<&RelPath, &Entry>>,
    entries: &mut [Entry],
    c: &Counters,
    pg: &Progress,
) -> Result<()> {
    let root = &st.root;
    let base_root = st.base.as_ref().map(|b| b.root.as_path());
    for e in entries.iter() {
        let dst = e.path.under(root);
        match e.kind {
            Kind::Dir if !e.path.is_root() => {
                mkdir_private(&dst).with_context(|| format!("cannot create {}", dst.display()))?
            }
            Kind::Symlink => make_symlink(e, &dst, c)?,
            _ => {}
        }
    }
    let skipped: Mutex<Vec<RelPath>> = Mutex::new(Vec::new());
    entries
        .par_iter_mut()
        .filter(|e| e.kind == Kind::File && e.link.is_none())
        .try_for_each(|e| -> Result<()> {
            pg.check()?;
            let o = old
                .and_then(|m| m.get(&e.path).copied())
                .filter(|o| o.kind == Kind::File);
            match fresh_file(source, root, base_root, st.writeback, e, o, c, pg)? {
                FileOutcome::Done => {}
                FileOutcome::Skipped => skipped.lock().expect("not poisoned").push(e.path.clone()),
            }
            pg.file_done();
            Ok(())
        })?;
    let skipped = skipped.into_inner().expect("not poisoned");
    // Followers of hard-link groups: link to their leader inside the new tree.
    let by_path = leader_hashes(entries, &leaders(entries));
    for e in entries.iter_mut().filter(|e| e.link.is_some()) {
        let leader = e.link.clone().expect("filtered");
        let dst = e.path.under(root);
        if skipped.contains(&leader) {
            e.link = None;
            let o = old
                .and_then(|m| m.get(&e.path).copied())
                .filter(|o| o.kind == Kind::File);
            if let FileOutcome::Skipped =
                fresh_file(source, root, base_root, st.writeback, e, o, c, pg)?
            {
                continue;
            }
        } else {
            std::fs::hard_link(leader.under(root), &dst)
                .with_context(|| format!("cannot link {}", dst.display()))?;
            let (h, b, bs) = by_path.get(&leader).cloned().unwrap_or_default();
            e.hash = h;
            e.blocks = b;
            e.block_size = bs;
            pg.bytes(e.size);
        }
        pg.file_done();
    }
    finish_dirs(root, entries, c)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn fresh_file(
    source: &Path,
    root: &Path,
    base_root: Option<&Path>,
    writeback: bool,
    e: &mut Entry,
    o: Option<&Entry>,
    c: &Counters,
    pg: &Progress,
) -> Result<FileOutcome> {
    let dst = e.path.under(root);
    let link_prev = |e: &Entry| -> bool {
        let Some(br) = base_root else { return false };
        std::fs::hard_link(e.path.under(br), &dst).is_ok()
    };
    if let Some(o) = o
        && e.same_source_stamp(o)
        && o.hash.is_some()
    {
        reuse_hashes(e, o);
        if e.same_inode_metadata(o) && link_prev(e) {
            c.unchanged_files.fetch_add(1, Relaxed);
            pg.bytes(e.size);
            return Ok(FileOutcome::Done);
        }
    }
    // Same size and mtime but a new ctime or inode (chmod, a copy with kept times): metadata is
    // not conclusive, so hash first and share the old copy if the content is equal.
    if let Some(o) = o.filter(|o| {
        o.size == e.size && o.mtime == e.mtime && o.mtime_ns == e.mtime_ns && o.hash.is_some()
    }) {
        let mut probe = e.clone();
        if !read_source(source, &mut probe, Dest::None, false, c, pg)? {
            e.hash = None;
            return Ok(FileOutcome::Skipped);
        }
        if probe.hash == o.hash {
            *e = probe;
            if e.same_inode_metadata(o) && link_prev(e) {
                c.unchanged_files.fetch_add(1, Relaxed);
                return Ok(FileOutcome::Done);
            }
        }
    }
    let (f, target) =
        create_new(&dst, e).with_context(|| format!("cannot create {}", dst.display()))?;
    if !read_source(source, e, Dest::Fresh(&f), false, c, pg)? {
        drop(f);
        let _ = std::fs::remove_file(&dst);
        e.hash = None;
        return Ok(FileOutcome::Skipped);
    }
    if writeback {
        start_writeback(&f);
    }
    drop(f);
    apply_meta_to(&dst, e, target, c)?;
    c.count_written(o, e);
    Ok(FileOutcome::Done)
}

/// Asks the kernel to start writing a file's dirty pages now, without waiting for them.
fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; SYNC_FILE_RANGE_WRITE only initiates writeback. Failure is harmless.
    unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Directory metadata last, deepest first, so creating children does not disturb it. The
/// directories below the root were made here by `mkdir_private` (mode 0700, nothing inherited,
/// see `DirStore::begin`); the root was made by the store.
fn finish_dirs(root: &Path, entries: &[Entry], c: &Counters) -> Result<()> {
    for e in entries.iter().rev().filter(|e| e.kind == Kind::Dir) {
        let target = if e.path.is_root() {
            Target::Existing
        } else {
            Target::Created { mode: 0o700 }
        };
        apply_meta_to(&e.path.under(root), e, target, c)?;
    }
    Ok(())
}
