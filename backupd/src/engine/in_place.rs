//! Updating a tree in place (ZFS store): the dataset holds the previous snapshot's state and is
//! patched into the new one, rewriting only the blocks that changed.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::*;
use crate::content::Dest;
use crate::progress::Progress;
use crate::store::{Staging, remove_path};
use common::manifest::{Entry, Kind, META_DIR};
use common::relpath::RelPath;

/// New entries by path: type, hard-link leader, and whether it leads a group.
type NewIndex = HashMap<RelPath, (Kind, Option<RelPath>, bool)>;

pub(super) fn in_place(
    source: &Path,
    st: &Staging,
    old: Option<&HashMap<&RelPath, &Entry>>,
    entries: &mut Vec<Entry>,
    c: &Counters,
    pg: &Progress,
) -> Result<u64> {
    let root = &st.root;
    let touched = Touched::default();
    let new_leaders = leaders(entries);
    let new_index: NewIndex = entries
        .iter()
        .map(|e| {
            (
                e.path.clone(),
                (e.kind, e.link.clone(), new_leaders.contains(&e.path)),
            )
        })
        .collect();

    // 1. Remove what is gone, or whose type or hard-link grouping changed.
    let mut deleted = 0u64;
    match old {
        Some(old) => {
            let old_leaders: HashSet<&RelPath> =
                old.values().filter_map(|e| e.link.as_ref()).collect();
            let mut gone: Vec<&RelPath> = old
                .values()
                .filter(|o| match new_index.get(&o.path) {
                    None => true,
                    Some((k, link, lead)) => {
                        *k != o.kind
                            || (o.kind == Kind::File
                                && (*link != o.link || *lead != old_leaders.contains(&o.path)))
                    }
                })
                .map(|o| &o.path)
                .collect();
            gone.sort();
            for p in gone.iter().rev() {
                if !new_index.contains_key(*p) {
                    deleted += 1;
                }
                touched.touch(p);
                remove_path(&p.under(root))?;
            }
        }
        None => {
            deleted += reconcile_extras(root, &RelPath::root(), &new_index)?;
            touched.all.store(true, Relaxed);
        }
    }

    // 2. Directories and symlinks.
    for e in entries.iter() {
        let dst = e.path.under(root);
        match e.kind {
            Kind::Dir if !e.path.is_root() => {
                let known =
                    old.is_some_and(|m| m.get(&e.path).is_some_and(|o| o.kind == Kind::Dir));
                if !known && std::fs::symlink_metadata(&dst).is_err() {
                    touched.touch(&e.path);
                    mkdir_private(&dst)
                        .with_context(|| format!("cannot create {}", dst.display()))?;
                }
            }
            Kind::Symlink => {
                let o = old.and_then(|m| m.get(&e.path).copied());
                // The tree holds what the old manifest says: an unchanged link is left alone.
                if o.is_some_and(|o| o.same_content(e)) {
                    if !o.is_some_and(|o| o.same_inode_metadata(e)) {
                        apply_meta(&dst, e, c)?;
                    }
                } else {
                    touched.touch(&e.path);
                    remove_path(&dst)?;
                    make_symlink(e, &dst, c)?;
                }
            }
            _ => {}
        }
    }

    // 3. Files, in parallel; followers afterwards.
    entries
        .par_iter_mut()
        .filter(|e| e.kind == Kind::File && e.link.is_none())
        .try_for_each(|e| -> Result<()> {
            pg.check()?;
            let o = old
                .and_then(|m| m.get(&e.path).copied())
                .filter(|o| o.kind == Kind::File);
            in_place_file(source, root, e, o, old.is_some(), c, pg, &touched)?;
            pg.file_done();
            Ok(())
        })?;
    let hashes = leader_hashes(entries, &new_leaders);
    for e in entries.iter_mut().filter(|e| e.link.is_some()) {
        let leader = e.link.clone().expect("filtered");
        let (h, b, bs) = hashes.get(&leader).cloned().unwrap_or_default();
        if h.is_none() {
            // The leader was not backed up: this path stands alone.
            e.link = None;
            let o = old
                .and_then(|m| m.get(&e.path).copied())
                .filter(|o| o.kind == Kind::File);
            in_place_file(source, root, e, o, old.is_some(), c, pg, &touched)?;
            continue;
        }
        // Step 1 removed every path whose grouping changed, so a link the old manifest records
        // with the same leader is still in place.
        let linked = old.is_some_and(|m| m.get(&e.path).is_some_and(|o| o.link == e.link));
        if !linked {
            let dst = e.path.under(root);
            touched.touch(&e.path);
            remove_path(&dst)?;
            std::fs::hard_link(leader.under(root), &dst)
                .with_context(|| format!("cannot link {}", dst.display()))?;
        }
        e.hash = h;
        e.blocks = b;
        e.block_size = bs;
        pg.bytes(e.size);
        pg.file_done();
    }
    // Directory metadata only where it changed or where entries were added or removed (which
    // moved the directory's mtime): on FUSE-backed pools every syscall counts.
    for e in entries.iter().rev().filter(|e| e.kind == Kind::Dir) {
        let unchanged = old
            .and_then(|m| m.get(&e.path))
            .is_some_and(|o| o.same_inode_metadata(e));
        if !unchanged || touched.contains(&e.path) {
            apply_meta(&e.path.under(root), e, c)?;
        }
    }
    Ok(deleted)
}

/// Directories whose entries were created or removed during an in-place update.
#[derive(Default)]
struct Touched {
    dirs: Mutex<HashSet<RelPath>>,
    /// Everything counts as touched (the tree was reconciled without a manifest).
    all: std::sync::atomic::AtomicBool,
}

impl Touched {
    /// Records that an entry at `path` was created or removed: its parent directory changed.
    fn touch(&self, path: &RelPath) {
        if let Some(p) = path.parent() {
            self.dirs.lock().expect("not poisoned").insert(p);
        }
    }

    fn contains(&self, dir: &RelPath) -> bool {
        self.all.load(Relaxed) || self.dirs.lock().expect("not poisoned").contains(dir)
    }
}

#[allow(clippy::too_many_arguments)]
fn in_place_file(
    source: &Path,
    root: &Path,
    e: &mut Entry,
    o: Option<&Entry>,
    have_manifest: bool,
    c: &Counters,
    pg: &Progress,
    touched: &Touched,
) -> Result<()> {
    let dst = e.path.under(root);
    // The tree holds exactly what the manifest says (an interrupted run is rolled back first),
    // so the fast path does not look at the target at all: no syscall per unchanged file.
    if let Some(o) = o.filter(|_| have_manifest)
        && e.same_source_stamp(o)
        && o.hash.is_some()
    {
        reuse_hashes(e, o);
        pg.bytes(e.size);
        if e.same_inode_metadata(o) {
            c.unchanged_files.fetch_add(1, Relaxed);
        } else {
            apply_meta(&dst, e, c)?;
            c.metadata_only.fetch_add(1, Relaxed);
        }
        return Ok(());
    }
    let existing = std::fs::symlink_metadata(&dst).ok().filter(|m| m.is_file());
    let read = match existing {
        Some(_) => {
            let f = File::options()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&dst)
                .with_context(|| format!("cannot open {}", dst.display()))?;
            let blocks = o.filter(|_| have_manifest).and_then(|o| o.block_hashes());
            let dest = match &blocks {
                Some((bs, b)) => Dest::Update(&f, *bs, b),
                None => Dest::Reconcile(&f),
            };
            read_source(source, e, dest, true, c, pg)?
        }
        None => {
            touched.touch(&e.path);
            // In place, directories already carry setgid bits and default ACLs: set everything.
            let (f, _) =
                create_new(&dst, e).with_context(|| format!("cannot create {}", dst.display()))?;
            read_source(source, e, Dest::Fresh(&f), true, c, pg)?
        }
    };
    if !read {
        e.hash = None;
        remove_path(&dst)?;
        return Ok(());
    }
    apply_meta(&dst, e, c)?;
    c.count_written(o, e);
    Ok(())
}

/// Without a usable manifest, the tree's content is unknown: remove whatever the new snapshot
/// does not hold (and hard-linked files, whose grouping is unknown).
fn reconcile_extras(root: &Path, rel: &RelPath, index: &NewIndex) -> Result<u64> {
    let mut n = 0;
    let dir = rel.under(root);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    for d in rd.flatten() {
        let name = d.file_name();
        if rel.is_root() && name == META_DIR {
            continue;
        }
        let child = rel.join_name(&name);
        let md = d.metadata()?;
        let kind = if md.is_dir() {
            Kind::Dir
        } else if md.is_symlink() {
            Kind::Symlink
        } else {
            Kind::File
        };
        match index.get(&child) {
            Some((k, ..)) if *k == kind && !(kind == Kind::File && md.nlink() > 1) => {
                if kind == Kind::Dir {
                    n += reconcile_extras(root, &child, index)?;
                }
            }
            _ => {
                remove_path(&child.under(root))?;
                n += 1;
            }
        }
    }
    Ok(n)
}
