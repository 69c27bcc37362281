//! Walking the source tree: selection, metadata, xattrs and hard-link groups. Content is not read
//! here; the engine decides which files need reading.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::bytes::Bytes;
use crate::fsmeta;
use crate::manifest::{Entry, Kind, META_DIR};
use crate::relpath::RelPath;
use crate::select::Selector;

/// Deeper trees than this are almost certainly a loop or an attack; we stop and warn.
const MAX_DEPTH: usize = 2048;

pub struct ScanOptions<'a> {
    pub selector: &'a Selector,
    pub cross_filesystems: bool,
    /// Directories never backed up, by (device, inode): the store and the state directory,
    /// should they lie inside the source.
    pub skip_dirs: Vec<(u64, u64)>,
}

/// (device, inode) of the existing paths among `paths`.
pub fn dir_ids(paths: &[&Path]) -> Vec<(u64, u64)> {
    paths.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| (m.dev(), m.ino())).collect()
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
    let md = std::fs::metadata(root).map_err(|e| anyhow::anyhow!("cannot read source {}: {e}", root.display()))?;
    if !md.is_dir() {
        anyhow::bail!("source {} is not a directory", root.display());
    }
    let mut s = Scan::default();
    let mut links: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    let root_entry = entry_for(root, RelPath::root(), &md, &mut s.warnings)?;
    s.entries.push(root_entry);
    s.dirs += 1;
    walk_dir(root, &RelPath::root(), md.dev(), 0, opts, &mut s, &mut links);

    s.entries.sort_by(|a, b| a.path.cmp(&b.path));
    // Hard-link groups: the first path in manifest order leads, the others point at it.
    let mut groups: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, e) in s.entries.iter().enumerate() {
        if e.kind == Kind::File && links.contains_key(&(e.src.dev, e.src.ino)) {
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

fn entry_for(abs: &Path, rel: RelPath, md: &std::fs::Metadata, warnings: &mut Vec<String>) -> anyhow::Result<Entry> {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::File
    };
    let target = if kind == Kind::Symlink { Some(Bytes(std::fs::read_link(abs)?.as_os_str().as_bytes().to_vec())) } else { None };
    let xattrs = match fsmeta::read_xattrs(abs) {
        Ok(x) => x,
        Err(e) => {
            warnings.push(format!("{}: cannot read extended attributes: {e}", rel.display()));
            Vec::new()
        }
    };
    Ok(Entry {
        path: rel,
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_ns: md.mtime_nsec() as u32,
        size: if kind == Kind::Dir { 0 } else { md.len() },
        target,
        hash: None,
        block_size: None,
        blocks: Vec::new(),
        xattrs,
        link: None,
        src: fsmeta::stamp(md),
    })
}

/// Walks one directory; returns whether anything below it was selected.
fn walk_dir(
    abs: &Path,
    rel: &RelPath,
    root_dev: u64,
    depth: usize,
    opts: &ScanOptions,
    s: &mut Scan,
    links: &mut HashMap<(u64, u64), Vec<usize>>,
) -> bool {
    if depth >= MAX_DEPTH {
        s.warnings.push(format!("{}: deeper than {MAX_DEPTH} levels, not descended", rel.display()));
        return false;
    }
    let rd = match std::fs::read_dir(abs) {
        Ok(rd) => rd,
        Err(e) => {
            s.warnings.push(format!("{}: cannot list directory: {e}", rel.display()));
            return false;
        }
    };
    let mut names: Vec<_> = rd.filter_map(|r| match r {
        Ok(d) => Some(d.file_name()),
        Err(e) => {
            s.warnings.push(format!("{}: error while listing: {e}", rel.display()));
            None
        }
    })
    .collect();
    names.sort();
    let mut any = false;
    for name in names {
        if rel.is_root() && name.as_bytes() == META_DIR.as_bytes() {
            s.warnings.push(format!("{META_DIR}: skipped, the name is reserved for rackvault's own metadata"));
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
                s.warnings.push(format!("{}: vanished during the scan", child_rel.display()));
                continue;
            }
            Err(e) => {
                s.warnings.push(format!("{}: cannot stat: {e}", child_rel.display()));
                continue;
            }
        };
        let ft = md.file_type();
        if ft.is_socket() || ft.is_fifo() || ft.is_block_device() || ft.is_char_device() {
            s.warnings.push(format!("{}: skipped special file (socket, FIFO or device)", child_rel.display()));
            continue;
        }
        if ft.is_dir() && opts.skip_dirs.contains(&(md.dev(), md.ino())) {
            tracing::info!(path = %child_rel, "skipped: it holds rackvault's own store or state");
            continue;
        }
        if ft.is_dir() {
            let idx = s.entries.len();
            let entry = match entry_for(&child_abs, child_rel.clone(), &md, &mut s.warnings) {
                Ok(e) => e,
                Err(e) => {
                    s.warnings.push(format!("{}: {e}", child_rel.display()));
                    continue;
                }
            };
            s.entries.push(entry);
            let below = if !opts.cross_filesystems && md.dev() != root_dev {
                s.warnings.push(format!("{}: another filesystem, not crossed (set cross_filesystems = true to include it)", child_rel.display()));
                false
            } else {
                walk_dir(&child_abs, &child_rel, root_dev, depth + 1, opts, s, links)
            };
            if below || opts.selector.is_included(&child_rel) {
                s.dirs += 1;
                any = true;
            } else {
                // Nothing selected at or below it: drop the directory (entries below were not added).
                s.entries.remove(idx);
            }
            continue;
        }
        if !opts.selector.is_included(&child_rel) {
            continue;
        }
        match entry_for(&child_abs, child_rel.clone(), &md, &mut s.warnings) {
            Ok(e) => {
                if e.kind == Kind::File {
                    s.files += 1;
                    s.bytes += e.size;
                    if md.nlink() > 1 {
                        links.entry((md.dev(), md.ino())).or_default().push(s.entries.len());
                    }
                }
                s.entries.push(e);
                any = true;
            }
            Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => {
                s.warnings.push(format!("{}: vanished during the scan", child_rel.display()));
            }
            Err(e) => s.warnings.push(format!("{}: {e}", child_rel.display())),
        }
    }
    any
}
