//! Walking the source tree: selection, metadata, xattrs and hard-link groups. Content is not read
//! here; the engine decides which files need reading.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rayon::prelude::*;

use crate::select::Selector;
use common::bytes::Bytes;
use common::fsmeta;
use common::manifest::{Entry, Kind, META_DIR};
use common::relpath::RelPath;

/// Deeper trees than this are almost certainly a loop or an attack; we stop and warn.
const MAX_DEPTH: usize = 2048;

pub struct ScanOptions<'a> {
    pub selector: &'a Selector,
    pub cross_filesystems: bool,
    /// Directories never backed up, by (device, inode): the store and the state directory,
    /// should they lie inside the source.
    pub skip_dirs: Vec<(u64, u64)>,
    /// The previous snapshot's entries: where a file's identity (size, mtime, ctime, inode) is
    /// unchanged, its xattrs are too (changing one moves ctime), so they are not read again.
    pub previous: Option<&'a HashMap<&'a RelPath, &'a Entry>>,
    /// Stable ids for devices of a point-in-time view (snapshot and clone mounts get a new
    /// st_dev each run): the manifest records these, so unchanged files stay recognisable.
    pub device_ids: Option<&'a HashMap<u64, u64>>,
}

impl ScanOptions<'_> {
    /// The device number recorded for a file on `dev`.
    fn stable_dev(&self, dev: u64) -> u64 {
        self.device_ids
            .and_then(|m| m.get(&dev).copied())
            .unwrap_or(dev)
    }
}

/// (device, inode) of the existing paths among `paths`.
pub fn dir_ids(paths: &[&Path]) -> Vec<(u64, u64)> {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

#[derive(Default)]
pub struct Scan {
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

pub fn scan(root: &Path, opts: &ScanOptions) -> anyhow::Result<Scan> {
    let md = std::fs::metadata(root)
        .map_err(|e| anyhow::anyhow!("cannot read source {}: {e}", root.display()))?;
    if !md.is_dir() {
        anyhow::bail!("source {} is not a directory", root.display());
    }
    let mut warnings = Vec::new();
    let root_entry = entry_for(root, RelPath::root(), &md, opts, &mut warnings)?;
    let part = walk_dir(root, &RelPath::root(), md.dev(), 0, opts);
    let links: std::collections::HashSet<(u64, u64)> = part.multi.into_iter().collect();
    warnings.extend(part.warnings);
    let mut s = Scan {
        entries: part.entries,
        warnings,
        files: part.files,
        dirs: part.dirs + 1,
        bytes: part.bytes,
    };
    s.entries.push(root_entry);

    s.entries.sort_by(|a, b| a.path.cmp(&b.path));
    // Hard-link groups: the first path in manifest order leads, the others point at it.
    let mut groups: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, e) in s.entries.iter().enumerate() {
        if e.kind == Kind::File && links.contains(&(e.src.dev, e.src.ino)) {
            groups.entry((e.src.dev, e.src.ino)).or_default().push(i);
        }
    }
    for idx in groups.into_values().filter(|g| g.len() > 1) {
        let leader = s.entries[idx[0]].path.clone();
        for &i in &idx[1..] {
            s.entries[i].link = Some(leader.clone());
        }
    }
    Ok(s)
}

fn entry_for(
    abs: &Path,
    rel: RelPath,
    md: &std::fs::Metadata,
    opts: &ScanOptions,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Entry> {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::File
    };
    let target = if kind == Kind::Symlink {
        Some(Bytes(
            std::fs::read_link(abs)?.as_os_str().as_bytes().to_vec(),
        ))
    } else {
        None
    };
    let mut stamp = fsmeta::stamp(md);
    stamp.dev = opts.stable_dev(stamp.dev);
    let size = if kind == Kind::Dir { 0 } else { md.len() };
    let known = opts.previous.and_then(|p| p.get(&rel)).filter(|o| {
        o.kind == kind
            && o.src == stamp
            && stamp != Default::default()
            && o.size == size
            && o.mtime == md.mtime()
            && o.mtime_ns == md.mtime_nsec() as u32
    });
    let xattrs = match known {
        Some(o) => o.xattrs.clone(),
        None => match fsmeta::read_xattrs(abs) {
            Ok(x) => x,
            Err(e) => {
                warnings.push(format!(
                    "{}: cannot read extended attributes: {e}",
                    rel.display()
                ));
                Vec::new()
            }
        },
    };
    Ok(Entry {
        path: rel,
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_ns: md.mtime_nsec() as u32,
        size,
        target,
        hash: None,
        block_size: None,
        blocks: Vec::new(),
        xattrs,
        link: None,
        src: stamp,
    })
}

/// What one directory (and everything below it) contributed to the scan.
#[derive(Default)]
struct Part {
    entries: Vec<Entry>,
    warnings: Vec<String>,
    files: u64,
    dirs: u64,
    bytes: u64,
    /// (dev, ino) of regular files with more than one link.
    multi: Vec<(u64, u64)>,
    /// Something at or below this directory was selected.
    any: bool,
}

impl Part {
    fn merge(&mut self, other: Part) {
        self.entries.extend(other.entries);
        self.warnings.extend(other.warnings);
        self.files += other.files;
        self.dirs += other.dirs;
        self.bytes += other.bytes;
        self.multi.extend(other.multi);
        self.any |= other.any;
    }
}

/// Levels near the root are walked in parallel; deeper ones sequentially, which bounds the
/// stack a worker thread needs however deep (or hostile) the tree is.
const PARALLEL_DEPTH: usize = 8;

/// Walks one directory: its entries and, recursively, its subdirectories.
fn walk_dir(abs: &Path, rel: &RelPath, root_dev: u64, depth: usize, opts: &ScanOptions) -> Part {
    let mut part = Part::default();
    if depth >= MAX_DEPTH {
        part.warnings.push(format!(
            "{}: deeper than {MAX_DEPTH} levels, not descended",
            rel.display()
        ));
        return part;
    }
    let rd = match std::fs::read_dir(abs) {
        Ok(rd) => rd,
        Err(e) => {
            part.warnings
                .push(format!("{}: cannot list directory: {e}", rel.display()));
            return part;
        }
    };
    let mut names: Vec<_> = rd
        .filter_map(|r| match r {
            Ok(d) => Some(d.file_name()),
            Err(e) => {
                part.warnings
                    .push(format!("{}: error while listing: {e}", rel.display()));
                None
            }
        })
        .collect();
    names.sort();
    let mut subdirs = Vec::new();
    for name in names {
        if rel.is_root() && name.as_bytes() == META_DIR.as_bytes() {
            part.warnings.push(format!(
                "{META_DIR}: skipped, the name is reserved for rackvault's own metadata"
            ));
            continue;
        }
        let child_rel = rel.join_name(&name);
        if opts.selector.is_excluded(&child_rel) {
            continue;
        }
        let child_abs = abs.join(&name);
        let md = match std::fs::symlink_metadata(&child_abs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                part.warnings
                    .push(format!("{}: vanished during the scan", child_rel.display()));
                continue;
            }
            Err(e) => {
                part.warnings
                    .push(format!("{}: cannot stat: {e}", child_rel.display()));
                continue;
            }
        };
        let ft = md.file_type();
        let special = if ft.is_socket() {
            Some("a socket")
        } else if ft.is_fifo() {
            Some("a FIFO")
        } else if ft.is_block_device() {
            Some("a block device")
        } else if ft.is_char_device() {
            Some("a character device")
        } else {
            None
        };
        if let Some(kind) = special {
            part.warnings
                .push(format!("{}: skipped, it is {kind}", child_rel.display()));
            continue;
        }
        if ft.is_dir() {
            if opts.skip_dirs.contains(&(md.dev(), md.ino())) {
                tracing::info!(path = %child_rel, "skipped: it holds rackvault's own store or state");
            } else {
                subdirs.push((child_abs, child_rel, md));
            }
            continue;
        }
        if !opts.selector.is_included(&child_rel) {
            continue;
        }
        match entry_for(&child_abs, child_rel.clone(), &md, opts, &mut part.warnings) {
            Ok(e) => {
                if e.kind == Kind::File {
                    part.files += 1;
                    part.bytes += e.size;
                    if md.nlink() > 1 {
                        part.multi.push((opts.stable_dev(md.dev()), md.ino()));
                    }
                }
                part.entries.push(e);
                part.any = true;
            }
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
            {
                part.warnings
                    .push(format!("{}: vanished during the scan", child_rel.display()));
            }
            Err(e) => part.warnings.push(format!("{}: {e}", child_rel.display())),
        }
    }
    let walk_sub = |(child_abs, child_rel, md): &(
        std::path::PathBuf,
        RelPath,
        std::fs::Metadata,
    )|
     -> Part {
        let mut warnings = Vec::new();
        let entry = match entry_for(child_abs, child_rel.clone(), md, opts, &mut warnings) {
            Ok(e) => e,
            Err(e) => {
                return Part {
                    warnings: vec![format!("{child_rel}: {e}")],
                    ..Default::default()
                };
            }
        };
        let mut below = if !opts.cross_filesystems && md.dev() != root_dev {
            warnings.push(format!("{child_rel}: another filesystem, not crossed (set cross_filesystems = true to include it)"));
            Part::default()
        } else {
            walk_dir(child_abs, child_rel, root_dev, depth + 1, opts)
        };
        below.warnings.extend(warnings);
        if below.any || opts.selector.is_included(child_rel) {
            below.entries.push(entry);
            below.dirs += 1;
            below.any = true;
        }
        below
    };
    let parts: Vec<Part> = if depth < PARALLEL_DEPTH {
        subdirs.par_iter().map(walk_sub).collect()
    } else {
        subdirs.iter().map(walk_sub).collect()
    };
    for p in parts {
        part.merge(p);
    }
    part
}
