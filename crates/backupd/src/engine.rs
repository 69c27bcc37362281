//! The incremental engine: compares a fresh scan of the source with the previous snapshot's
//! manifest and writes only what changed into a staging tree.
//!
//! Fast path: same size, mtime, ctime, device and inode as recorded means unchanged, and the
//! content is not read. Otherwise the file is read once, hashed whole and per block, and written
//! (fresh tree) or patched block by block (in place). A file whose content and metadata turn out
//! equal after all (e.g. `touch`ed back) is still shared with the previous snapshot.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::content::{Dest, copy_hashed_from};
use crate::fsmeta::{self, Target};
use crate::manifest::{Entry, Kind, META_DIR};
use crate::progress::Progress;
use crate::relpath::RelPath;
use crate::scan::{ScanOptions, scan};
use crate::store::{Staging, WriteMode};

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub scanned_files: u64,
    pub scanned_dirs: u64,
    pub scanned_bytes: u64,
    pub new_files: u64,
    pub changed_files: u64,
    pub unchanged_files: u64,
    pub metadata_only: u64,
    pub deleted: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub warnings: Vec<String>,
}

#[derive(Default)]
struct Counters {
    new_files: AtomicU64,
    changed_files: AtomicU64,
    unchanged_files: AtomicU64,
    metadata_only: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    warnings: Mutex<Vec<String>>,
}

impl Counters {
    /// Counts a file that was written: new, changed, or same content with new metadata.
    fn count_written(&self, old: Option<&Entry>, new: &Entry) {
        let counter = match old {
            None => &self.new_files,
            Some(o) if o.same_content(new) => &self.metadata_only,
            Some(_) => &self.changed_files,
        };
        counter.fetch_add(1, Relaxed);
    }

    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.lock().expect("not poisoned").push(msg);
    }
}

enum FileOutcome {
    Done,
    /// The source disappeared or became unreadable: left out of the snapshot, with a warning.
    Skipped,
}

pub struct Built {
    pub entries: Vec<Entry>,
    pub stats: Stats,
}

pub fn build(source: &Path, opts: &ScanOptions, staging: &Staging, progress: &Progress) -> Result<Built> {
    let _umask = UmaskGuard::clear();
    progress.phase("scanning");
    let old: Option<HashMap<&RelPath, &Entry>> = staging.base.as_ref().map(|b| b.manifest.index());
    let opts = ScanOptions { previous: old.as_ref(), skip_dirs: opts.skip_dirs.clone(), ..*opts };
    let scanned = scan(source, &opts)?;
    let mut entries = scanned.entries;
    let counters = Counters::default();
    for w in scanned.warnings.into_iter().chain(staging.warnings.iter().cloned()) {
        counters.warn(w);
    }
    progress.start_copy(scanned.files, scanned.bytes);
    let deleted = match staging.mode {
        WriteMode::Fresh => {
            fresh(source, staging, old.as_ref(), &mut entries, &counters, progress)?;
            old.as_ref().map(|o| o.keys().filter(|p| !entries_contains(&entries, p)).count() as u64).unwrap_or(0)
        }
        WriteMode::InPlace => in_place(source, staging, old.as_ref(), &mut entries, &counters, progress)?,
    };
    retain_backed_up(&mut entries);
    progress.finish();
    let stats = Stats {
        scanned_files: scanned.files,
        scanned_dirs: scanned.dirs,
        scanned_bytes: scanned.bytes,
        new_files: counters.new_files.into_inner(),
        changed_files: counters.changed_files.into_inner(),
        unchanged_files: counters.unchanged_files.into_inner(),
        metadata_only: counters.metadata_only.into_inner(),
        deleted,
        bytes_read: counters.bytes_read.into_inner(),
        bytes_written: counters.bytes_written.into_inner(),
        warnings: counters.warnings.into_inner().expect("not poisoned"),
    };
    Ok(Built { entries, stats })
}

fn entries_contains(entries: &[Entry], p: &RelPath) -> bool {
    entries.binary_search_by(|e| e.path.cmp(p)).is_ok()
}

fn is_vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::EACCES) | Some(libc::ENOTDIR) | Some(libc::EPERM))
}

fn mkdir_private(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(p)
}

/// Creates a file for `e` with its final permission bits where possible (the process umask is
/// cleared while a run builds a tree, see `UmaskGuard`), so no chmod is needed afterwards.
fn create_new(p: &Path, e: &Entry) -> io::Result<(File, Target)> {
    let mode = e.mode & 0o777;
    let f = File::options().write(true).read(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(p)?;
    Ok((f, Target::Created { mode }))
}

/// Clears the umask for the duration of a build, restoring it afterwards.
struct UmaskGuard(libc::mode_t);

impl UmaskGuard {
    fn clear() -> Self {
        // SAFETY: umask has no preconditions.
        UmaskGuard(unsafe { libc::umask(0) })
    }
}

impl Drop for UmaskGuard {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::umask(self.0) };
    }
}

fn make_symlink(e: &Entry, dst: &Path, c: &Counters) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::OsStr::from_bytes(&e.target.as_ref().expect("symlink has target").0);
    std::os::unix::fs::symlink(target, dst).with_context(|| format!("cannot create symlink {}", dst.display()))?;
    apply_meta(dst, e, c)
}

fn apply_meta(dst: &Path, e: &Entry, c: &Counters) -> Result<()> {
    apply_meta_to(dst, e, Target::Existing, c)
}

fn apply_meta_to(dst: &Path, e: &Entry, target: Target, c: &Counters) -> Result<()> {
    let failed = fsmeta::apply(dst, e, target).with_context(|| format!("cannot set metadata on {}", dst.display()))?;
    for f in failed {
        c.warn(format!("{}: extended attribute not kept by the store: {f}", e.path));
    }
    Ok(())
}

/// Reads the source file once and writes it to `dest`, filling in the entry's hashes.
fn read_source(source: &Path, e: &mut Entry, dest: Dest<'_>, want_blocks: bool, c: &Counters, pg: &Progress) -> Result<Option<u64>> {
    let sp = e.path.under(source);
    let mut src = match fsmeta::open_read_nofollow(&sp) {
        Ok(f) => f,
        Err(err) if is_vanished(&err) => {
            c.warn(format!("{}: not backed up, cannot open: {err}", e.path));
            return Ok(None);
        }
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", sp.display())),
    };
    let md = src.metadata()?;
    if !md.is_file() {
        c.warn(format!("{}: not backed up, it is no longer a regular file", e.path));
        return Ok(None);
    }
    let h = copy_hashed_from(&mut src, &md, dest, want_blocks, &mut |n| pg.bytes(n)).with_context(|| format!("cannot copy {}", e.path))?;
    if h.changed_while_reading {
        c.warn(format!("{}: changed while being read; the copy may mix old and new content (it will be read again next run)", e.path));
        // Forget the source identity so the next run reads it again.
        e.src = Default::default();
    }
    e.size = h.size;
    e.hash = Some(h.hash);
    if h.blocks.is_empty() {
        e.blocks.clear();
        e.block_size = None;
    } else {
        e.blocks = h.blocks;
        e.block_size = Some(h.block_size);
    }
    c.bytes_read.fetch_add(h.size, Relaxed);
    c.bytes_written.fetch_add(h.bytes_written, Relaxed);
    Ok(Some(h.bytes_written))
}

fn reuse_hashes(e: &mut Entry, o: &Entry) {
    e.hash = o.hash;
    e.blocks = o.blocks.clone();
    e.block_size = o.block_size;
}

/// Hard-link groups: leader path -> whether it leads a group.
fn leaders(entries: &[Entry]) -> HashSet<RelPath> {
    entries.iter().filter_map(|e| e.link.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// Fresh tree (directory store)

fn fresh(source: &Path, st: &Staging, old: Option<&HashMap<&RelPath, &Entry>>, entries: &mut [Entry], c: &Counters, pg: &Progress) -> Result<()> {
    let root = &st.root;
    let base_root = st.base.as_ref().map(|b| b.root.as_path());
    for e in entries.iter() {
        let dst = e.path.under(root);
        match e.kind {
            Kind::Dir if !e.path.is_root() => mkdir_private(&dst).with_context(|| format!("cannot create {}", dst.display()))?,
            Kind::Symlink => make_symlink(e, &dst, c)?,
            _ => {}
        }
    }
    let skipped: Mutex<Vec<RelPath>> = Mutex::new(Vec::new());
    entries.par_iter_mut().filter(|e| e.kind == Kind::File && e.link.is_none()).try_for_each(|e| -> Result<()> {
        let o = old.and_then(|m| m.get(&e.path).copied()).filter(|o| o.kind == Kind::File);
        match fresh_file(source, root, base_root, st.writeback, e, o, c, pg)? {
            FileOutcome::Done => {}
            FileOutcome::Skipped => skipped.lock().expect("not poisoned").push(e.path.clone()),
        }
        pg.file_done();
        Ok(())
    })?;
    let skipped = skipped.into_inner().expect("not poisoned");
    // Followers of hard-link groups: link to their leader inside the new tree.
    let group_leaders = leaders(entries);
    let by_path: HashMap<RelPath, (Option<[u8; 32]>, Vec<[u8; 32]>, Option<u64>)> = entries
        .iter()
        .filter(|e| e.kind == Kind::File && e.link.is_none() && group_leaders.contains(&e.path))
        .map(|e| (e.path.clone(), (e.hash, e.blocks.clone(), e.block_size)))
        .collect();
    for e in entries.iter_mut().filter(|e| e.link.is_some()) {
        let leader = e.link.clone().expect("filtered");
        let dst = e.path.under(root);
        if skipped.contains(&leader) {
            e.link = None;
            let o = old.and_then(|m| m.get(&e.path).copied()).filter(|o| o.kind == Kind::File);
            if let FileOutcome::Skipped = fresh_file(source, root, base_root, st.writeback, e, o, c, pg)? {
                continue;
            }
        } else {
            std::fs::hard_link(leader.under(root), &dst).with_context(|| format!("cannot link {}", dst.display()))?;
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

/// Removes entries of files that were not backed up (left without a hash).
fn retain_backed_up(entries: &mut Vec<Entry>) {
    entries.retain(|e| !(e.kind == Kind::File && e.hash.is_none()));
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
    if let Some(o) = o {
        if e.same_source_stamp(o) && o.hash.is_some() {
            reuse_hashes(e, o);
            if e.same_inode_metadata(o) && link_prev(e) {
                c.unchanged_files.fetch_add(1, Relaxed);
                pg.bytes(e.size);
                return Ok(FileOutcome::Done);
            }
        }
    }
    // Same size and mtime but a new ctime or inode (chmod, a copy with kept times): metadata is
    // not conclusive, so hash first and share the old copy if the content is equal.
    if let Some(o) = o.filter(|o| o.size == e.size && o.mtime == e.mtime && o.mtime_ns == e.mtime_ns && o.hash.is_some()) {
        let mut probe = e.clone();
        if read_source(source, &mut probe, Dest::None, false, c, pg)?.is_none() {
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
    let (f, mut target) = create_new(&dst, e).with_context(|| format!("cannot create {}", dst.display()))?;
    if read_source(source, e, Dest::Fresh(&f), false, c, pg)?.is_none() {
        drop(f);
        let _ = std::fs::remove_file(&dst);
        e.hash = None;
        return Ok(FileOutcome::Skipped);
    }
    if writeback {
        start_writeback(&f);
    }
    drop(f);
    if let Some(o) = o {
        if o.same_content(e) && e.same_inode_metadata(o) {
            // Content and metadata equal after all: share the previous snapshot's copy.
            std::fs::remove_file(&dst)?;
            if link_prev(e) {
                c.unchanged_files.fetch_add(1, Relaxed);
                return Ok(FileOutcome::Done);
            }
            let (f, t) = create_new(&dst, e)?;
            target = t;
            read_source(source, e, Dest::Fresh(&f), false, c, pg)?;
            if writeback {
                start_writeback(&f);
            }
        }
    }
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

/// Directory metadata last, deepest first, so creating children does not disturb it.
fn finish_dirs(root: &Path, entries: &[Entry], c: &Counters) -> Result<()> {
    for e in entries.iter().rev().filter(|e| e.kind == Kind::Dir) {
        apply_meta(&e.path.under(root), e, c)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// In place (ZFS store): the tree holds the previous state and is patched into the new one.

fn in_place(source: &Path, st: &Staging, old: Option<&HashMap<&RelPath, &Entry>>, entries: &mut Vec<Entry>, c: &Counters, pg: &Progress) -> Result<u64> {
    let root = &st.root;
    let touched = Touched::default();
    let new_leaders = leaders(entries);
    let new_index: HashMap<RelPath, (Kind, Option<RelPath>, bool)> =
        entries.iter().map(|e| (e.path.clone(), (e.kind, e.link.clone(), new_leaders.contains(&e.path)))).collect();

    // 1. Remove what is gone, or whose type or hard-link grouping changed.
    let mut deleted = 0u64;
    match old {
        Some(old) => {
            let old_leaders: HashSet<&RelPath> = old.values().filter_map(|e| e.link.as_ref()).collect();
            let mut gone: Vec<&RelPath> = old
                .values()
                .filter(|o| match new_index.get(&o.path) {
                    None => true,
                    Some((k, link, lead)) => {
                        *k != o.kind || (o.kind == Kind::File && (*link != o.link || *lead != old_leaders.contains(&o.path)))
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
                remove_any(&p.under(root))?;
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
                let known = old.is_some_and(|m| m.get(&e.path).is_some_and(|o| o.kind == Kind::Dir));
                if !known && std::fs::symlink_metadata(&dst).is_err() {
                    touched.touch(&e.path);
                    mkdir_private(&dst).with_context(|| format!("cannot create {}", dst.display()))?;
                }
            }
            Kind::Symlink => {
                let o = old.and_then(|m| m.get(&e.path).copied());
                let keep = o.is_some_and(|o| o.same_content(e)) && std::fs::symlink_metadata(&dst).is_ok_and(|m| m.is_symlink());
                if keep {
                    if !o.is_some_and(|o| o.same_inode_metadata(e) && o.uid == e.uid) {
                        apply_meta(&dst, e, c)?;
                    }
                } else {
                    touched.touch(&e.path);
                    remove_any(&dst)?;
                    make_symlink(e, &dst, c)?;
                }
            }
            _ => {}
        }
    }

    // 3. Files, in parallel; followers afterwards.
    entries.par_iter_mut().filter(|e| e.kind == Kind::File && e.link.is_none()).try_for_each(|e| -> Result<()> {
        let o = old.and_then(|m| m.get(&e.path).copied()).filter(|o| o.kind == Kind::File);
        in_place_file(source, root, e, o, old.is_some(), c, pg, &touched)?;
        pg.file_done();
        Ok(())
    })?;
    let hashes: HashMap<RelPath, (Option<[u8; 32]>, Vec<[u8; 32]>, Option<u64>)> = entries
        .iter()
        .filter(|e| new_leaders.contains(&e.path))
        .map(|e| (e.path.clone(), (e.hash, e.blocks.clone(), e.block_size)))
        .collect();
    for e in entries.iter_mut().filter(|e| e.link.is_some()) {
        let leader = e.link.clone().expect("filtered");
        let (h, b, bs) = hashes.get(&leader).cloned().unwrap_or_default();
        if h.is_none() {
            // The leader was not backed up: this path stands alone.
            e.link = None;
            let o = old.and_then(|m| m.get(&e.path).copied()).filter(|o| o.kind == Kind::File);
            in_place_file(source, root, e, o, old.is_some(), c, pg, &touched)?;
            continue;
        }
        let dst = e.path.under(root);
        let lp = leader.under(root);
        let same = match (std::fs::symlink_metadata(&dst), std::fs::symlink_metadata(&lp)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if !same {
            touched.touch(&e.path);
            remove_any(&dst)?;
            std::fs::hard_link(&lp, &dst).with_context(|| format!("cannot link {}", dst.display()))?;
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
        let unchanged = old.and_then(|m| m.get(&e.path)).is_some_and(|o| o.same_inode_metadata(e) && o.uid == e.uid && o.gid == e.gid);
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

fn in_place_file(source: &Path, root: &Path, e: &mut Entry, o: Option<&Entry>, have_manifest: bool, c: &Counters, pg: &Progress, touched: &Touched) -> Result<()> {
    let dst = e.path.under(root);
    // The tree holds exactly what the manifest says (an interrupted run is rolled back first),
    // so the fast path does not look at the target at all: no syscall per unchanged file.
    if let Some(o) = o.filter(|_| have_manifest) {
        if e.same_source_stamp(o) && o.hash.is_some() {
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
    }
    let existing = std::fs::symlink_metadata(&dst).ok().filter(|m| m.is_file());
    let done = match existing {
        Some(_) => {
            let f = File::options().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(&dst)
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
            let (f, _) = create_new(&dst, e).with_context(|| format!("cannot create {}", dst.display()))?;
            read_source(source, e, Dest::Fresh(&f), true, c, pg)?
        }
    };
    if done.is_none() {
        e.hash = None;
        remove_any(&dst)?;
        return Ok(());
    }
    apply_meta(&dst, e, c)?;
    c.count_written(o, e);
    Ok(())
}

fn remove_any(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => crate::store::remove_tree(p).with_context(|| format!("cannot remove {}", p.display())),
        Ok(_) => std::fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", p.display())),
    }
}

/// Without a usable manifest, the tree's content is unknown: remove whatever the new snapshot
/// does not hold (and hard-linked files, whose grouping is unknown).
fn reconcile_extras(root: &Path, rel: &RelPath, index: &HashMap<RelPath, (Kind, Option<RelPath>, bool)>) -> Result<u64> {
    let mut n = 0;
    let dir = rel.under(root);
    let Ok(rd) = std::fs::read_dir(&dir) else { return Ok(0) };
    for d in rd.flatten() {
        let name = d.file_name();
        if rel.is_root() && name == META_DIR {
            continue;
        }
        let child = rel.join_name(&name);
        let md = d.metadata()?;
        let kind = if md.is_dir() { Kind::Dir } else if md.is_symlink() { Kind::Symlink } else { Kind::File };
        match index.get(&child) {
            Some((k, ..)) if *k == kind && !(kind == Kind::File && md.nlink() > 1) => {
                if kind == Kind::Dir {
                    n += reconcile_extras(root, &child, index)?;
                }
            }
            _ => {
                remove_any(&child.under(root))?;
                n += 1;
            }
        }
    }
    Ok(n)
}
