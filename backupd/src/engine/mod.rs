//! The incremental engine: compares a fresh scan of the source with the previous snapshot's
//! manifest and writes only what changed into a staging tree.
//!
//! Fast path: same size, mtime, ctime, device and inode as recorded means unchanged, and the
//! content is not read. Otherwise the file is read once and hashed (per block too, in place),
//! and written as a new file (fresh tree) or patched block by block (in place). A file with the
//! same size and mtime but a new ctime or inode is hashed first, and shared with the previous
//! snapshot if its content and metadata are equal.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::content::{Dest, copy_hashed_from};
use crate::progress::Progress;
use crate::scan::{ScanOptions, scan};
use crate::store::{Staging, WriteMode};
use common::fsmeta::{self, Target};
use common::manifest::{Entry, Kind};
use common::relpath::RelPath;

mod fresh;
mod in_place;

use fresh::fresh;
use in_place::in_place;

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub scanned_files: u64,
    pub scanned_dirs: u64,
    pub scanned_bytes: u64,
    /// Regular files and their bytes in the snapshot: the scanned ones less those left out
    /// (unreadable, vanished), with a warning each.
    pub files: u64,
    pub bytes: u64,
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

    /// A warning of the run: listed in its summary and catalog record (the CLI prints the summary,
    /// the daemon logs one line per run), so each is only logged at info level here.
    fn warn(&self, msg: String) {
        tracing::info!("{msg}");
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

pub fn build(
    source: &Path,
    opts: &ScanOptions,
    staging: &Staging,
    progress: &Progress,
) -> Result<Built> {
    let _umask = UmaskGuard::clear();
    progress.phase("scanning");
    let old: Option<HashMap<&RelPath, &Entry>> = staging.base.as_ref().map(|b| b.manifest.index());
    let opts = ScanOptions {
        previous: old.as_ref(),
        skip_dirs: opts.skip_dirs.clone(),
        ..*opts
    };
    let scanned = scan(source, &opts)?;
    let mut entries = scanned.entries;
    let counters = Counters::default();
    for w in scanned
        .warnings
        .into_iter()
        .chain(staging.warnings.iter().cloned())
    {
        counters.warn(w);
    }
    progress.start_copy(scanned.files, scanned.bytes);
    let deleted = match staging.mode {
        WriteMode::Fresh => {
            fresh(
                source,
                staging,
                old.as_ref(),
                &mut entries,
                &counters,
                progress,
            )?;
            old.as_ref()
                .map(|o| o.keys().filter(|p| !entries_contains(&entries, p)).count() as u64)
                .unwrap_or(0)
        }
        WriteMode::InPlace => in_place(
            source,
            staging,
            old.as_ref(),
            &mut entries,
            &counters,
            progress,
        )?,
    };
    retain_backed_up(&mut entries);
    progress.finish();
    let held = entries.iter().filter(|e| e.kind == Kind::File);
    let stats = Stats {
        scanned_files: scanned.files,
        scanned_dirs: scanned.dirs,
        scanned_bytes: scanned.bytes,
        files: held.clone().count() as u64,
        bytes: held.map(|e| e.size).sum(),
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
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT)
            | Some(libc::ELOOP)
            | Some(libc::EACCES)
            | Some(libc::ENOTDIR)
            | Some(libc::EPERM)
    )
}

fn mkdir_private(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(p)
}

/// Creates a file for `e` with its final permission bits where possible (the process umask is
/// cleared while a run builds a tree, see `UmaskGuard`), so no chmod is needed afterwards.
fn create_new(p: &Path, e: &Entry) -> io::Result<(File, Target)> {
    let mode = e.mode & 0o777;
    let f = File::options()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)?;
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
    std::os::unix::fs::symlink(target, dst)
        .with_context(|| format!("cannot create symlink {}", dst.display()))?;
    apply_meta(dst, e, c)
}

fn apply_meta(dst: &Path, e: &Entry, c: &Counters) -> Result<()> {
    apply_meta_to(dst, e, Target::Existing, c)
}

fn apply_meta_to(dst: &Path, e: &Entry, target: Target, c: &Counters) -> Result<()> {
    let failed = fsmeta::apply(dst, e, target)
        .with_context(|| format!("cannot set metadata on {}", dst.display()))?;
    for f in failed {
        c.warn(format!(
            "{}: extended attribute not kept by the store: {f}",
            e.path
        ));
    }
    Ok(())
}

/// Reads the source file once and writes it to `dest`, filling in the entry's hashes.
/// Returns false (with a warning) when the source could not be read and is left out.
fn read_source(
    source: &Path,
    e: &mut Entry,
    dest: Dest<'_>,
    want_blocks: bool,
    c: &Counters,
    pg: &Progress,
) -> Result<bool> {
    let sp = e.path.under(source);
    let mut src = match fsmeta::open_read_nofollow(&sp) {
        Ok(f) => f,
        Err(err) if is_vanished(&err) => {
            c.warn(format!("{}: not backed up, cannot open: {err}", e.path));
            return Ok(false);
        }
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", sp.display())),
    };
    let md = src.metadata()?;
    if !md.is_file() {
        c.warn(format!(
            "{}: not backed up, it is no longer a regular file",
            e.path
        ));
        return Ok(false);
    }
    let h = match copy_hashed_from(&mut src, &md, dest, want_blocks, &mut |n| {
        pg.bytes(n);
        pg.check().map_err(io::Error::other)
    }) {
        Ok(h) => h,
        Err(err) if pg.is_cancelled() => {
            return Err(anyhow::Error::new(err).context(crate::progress::Cancelled));
        }
        Err(err) => return Err(err).with_context(|| format!("cannot copy {}", e.path)),
    };
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
    Ok(true)
}

/// A file's content hashes: whole-file hash, block hashes, block size.
type Hashes = (Option<[u8; 32]>, Vec<[u8; 32]>, Option<u64>);

fn reuse_hashes(e: &mut Entry, o: &Entry) {
    e.hash = o.hash;
    e.blocks = o.blocks.clone();
    e.block_size = o.block_size;
}

/// Paths that lead a hard-link group (other entries link to them).
fn leaders(entries: &[Entry]) -> HashSet<RelPath> {
    entries.iter().filter_map(|e| e.link.clone()).collect()
}

/// The hashes of each group leader, for its followers (read once, shared by all links).
fn leader_hashes(entries: &[Entry], leaders: &HashSet<RelPath>) -> HashMap<RelPath, Hashes> {
    entries
        .iter()
        .filter(|e| leaders.contains(&e.path))
        .map(|e| (e.path.clone(), (e.hash, e.blocks.clone(), e.block_size)))
        .collect()
}

/// Removes entries of files that were not backed up (left without a hash).
fn retain_backed_up(entries: &mut Vec<Entry>) {
    entries.retain(|e| !(e.kind == Kind::File && e.hash.is_none()));
}
