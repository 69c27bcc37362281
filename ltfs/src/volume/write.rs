//! Writing: directories, files (data appended at the DP's end of data in full `blocksize` records, one
//! extent per file), symlinks, the sync policy and early warning; and the generation list.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::read::components;
use super::{INDEX_READ_LIMIT, Result, Volume, VolumeError, dev_err, now};
use crate::construct::{ConstructError, read_index, write_data_records};
use crate::device::{Position, TapeDevice};
use crate::index::{
    Attrs, DirRef, Directory, Entry, Extent, File, FileContent, IndexLocation, LtfsTime,
    MAX_DIR_DEPTH, MAX_NAME_BYTES, MAX_SYMLINK_BYTES, MAX_XATTR_VALUE, NewEntry, Packed, Times,
    Xattr, names,
};

/// When to write a DP index during a run of puts (checked after each file; a file is never split
/// across an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    /// After this many bytes of file data since the last index.
    pub every_bytes: Option<u64>,
    /// After this much time since the last index.
    pub every: Option<Duration>,
}

/// Metadata of a new file, directory or symlink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMeta {
    /// `None`: all five times are now.
    pub times: Option<Times>,
    pub read_only: bool,
    pub xattrs: Vec<Xattr>,
}

/// What [`Volume::put_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReport {
    pub uid: u64,
    pub length: u64,
    /// The file's first extent (none for an empty or all-hole file).
    pub extent: Option<Extent>,
    /// All its extents (one per data range of a sparse file).
    pub extents: Vec<Extent>,
    /// A DP index was written after this file (by policy or at early warning).
    pub synced: bool,
    /// The tape reached early warning with this file (it was written completely; further puts fail).
    pub early_warning: bool,
}

/// The largest file [`Volume::put_closing_file`] writes past early warning.
pub const RESERVE_FILE_MAX: usize = 64 << 10;

/// One extent written by [`Volume::write_extent`].
struct ExtentWritten {
    extent: Option<Extent>,
    bytes: u64,
    early_warning: bool,
    /// The source was read to its end (false only when early warning cut it short).
    complete: bool,
}

/// What [`Volume::put_file_part`] did: the whole file, or the part of it that fit before early
/// warning (a file of that length in the index; the caller puts the rest on another volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartPut {
    Whole(PutReport),
    /// Early warning came before the source ended: `report.length` bytes are on this volume, the
    /// volume is full and its index written. Exactly those bytes were read from the source.
    Part(PutReport),
}

/// One index generation on tape, newest first (see [`Volume::generations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub generation: u64,
    pub location: IndexLocation,
    pub update_time: LtfsTime,
}

/// Finds or creates the directory `comps` below `root`, allocating UIDs from `highest`.
fn ensure_dir<'a>(
    root: &'a mut Directory,
    comps: &[String],
    highest: &mut u64,
    t: LtfsTime,
) -> Result<(&'a mut Directory, bool)> {
    if comps.len() > MAX_DIR_DEPTH {
        return Err(VolumeError::TooDeep {
            path: format!("/{}", comps.join("/")),
            depth: comps.len(),
            max: MAX_DIR_DEPTH,
        });
    }
    let mut dir = root;
    let mut created = false;
    for (i, c) in comps.iter().enumerate() {
        let k = match dir
            .entries
            .iter()
            .position(|e| names::nfc(e.name()) == c.as_str())
        {
            Some(k) => k,
            None => {
                *highest += 1;
                dir.entries.push(Entry::Directory(Directory::new(
                    c.clone(),
                    *highest,
                    Times::all(t),
                )));
                created = true;
                dir.entries.len() - 1
            }
        };
        let cur = dir;
        dir = match &mut cur.entries[k] {
            Entry::Directory(d) => d,
            Entry::File(_) => {
                return Err(VolumeError::NotADirectory {
                    path: format!("/{}", comps[..=i].join("/")),
                });
            }
        };
    }
    Ok((dir, created))
}

/// The directory of the index proper at `at` (positions in `entries` from the root).
fn indexed_dir_mut<'a>(root: &'a mut Directory, at: &[u32]) -> &'a mut Directory {
    let mut d = root;
    for &k in at {
        d = match &mut d.entries[k as usize] {
            Entry::Directory(sub) => sub,
            Entry::File(_) => unreachable!("positions of directories"),
        };
    }
    d
}

fn indexed_dir<'a>(root: &'a Directory, at: &[u32]) -> &'a Directory {
    let mut d = root;
    for &k in at {
        d = match &d.entries[k as usize] {
            Entry::Directory(sub) => sub,
            Entry::File(_) => unreachable!("positions of directories"),
        };
    }
    d
}

/// What the index writer (and reader) accept of xattrs: valid, unique keys and values up to
/// [`MAX_XATTR_VALUE`], checked before anything is written.
fn check_xattrs(path: &str, xattrs: &[Xattr]) -> Result<()> {
    for (i, x) in xattrs.iter().enumerate() {
        let key = names::nfc(&x.key);
        names::validate(&key, names::NameKind::XattrKey, MAX_NAME_BYTES).map_err(|error| {
            VolumeError::InvalidName {
                path: format!("{path} (xattr {:?})", x.key),
                error,
            }
        })?;
        if xattrs[..i].iter().any(|y| names::nfc(&y.key) == key) {
            return Err(VolumeError::DuplicateXattr {
                path: path.to_string(),
                key: x.key.clone(),
            });
        }
        if x.value.len() > MAX_XATTR_VALUE {
            return Err(VolumeError::XattrTooLong {
                path: path.to_string(),
                key: x.key.clone(),
                length: x.value.len(),
                max: MAX_XATTR_VALUE,
            });
        }
    }
    Ok(())
}

impl<D: TapeDevice> Volume<D> {
    /// From now on, the entries this session adds are kept in compact form ([`Packed`]: about 60
    /// bytes a file instead of about 260 in the [`Index`](crate::index::Index) model). They are in
    /// every index written, exactly as they would be otherwise, but not in [`Volume::index`], and
    /// the reading calls (lookups, reads, listings) do not see them: for writers that only add
    /// files, such as a tape set of a million small files.
    pub fn pack_new_entries(&mut self) {
        if self.packed.is_none() {
            self.packed = Some(Packed::new());
        }
    }

    /// The entries added in compact form, when [`Volume::pack_new_entries`] was called.
    pub fn packed(&self) -> Option<&Packed> {
        self.packed.as_ref()
    }

    /// Finds or creates the directory `comps` when new entries are packed: in the index proper as
    /// long as it has the names, packed below.
    fn packed_dir(&mut self, comps: &[String], t: LtfsTime) -> Result<(DirRef, bool)> {
        if comps.len() > MAX_DIR_DEPTH {
            return Err(VolumeError::TooDeep {
                path: format!("/{}", comps.join("/")),
                depth: comps.len(),
                max: MAX_DIR_DEPTH,
            });
        }
        if let Some((c, at)) = &self.packed_last
            && c.as_slice() == comps
        {
            return Ok((at.clone(), false));
        }
        let packed = self.packed.as_mut().expect("packing");
        let highest = &mut self.index.highest_file_uid;
        let mut dir = Some(&self.index.root);
        let mut at = DirRef::Indexed(Vec::new());
        let mut created = false;
        for (i, c) in comps.iter().enumerate() {
            let not_dir = || VolumeError::NotADirectory {
                path: format!("/{}", comps[..=i].join("/")),
            };
            if let Some(d) = dir {
                if let Some(k) = d
                    .entries
                    .iter()
                    .position(|e| names::nfc(e.name()) == c.as_str())
                {
                    match (&d.entries[k], &mut at) {
                        (Entry::Directory(sub), DirRef::Indexed(p)) => {
                            p.push(k as u32);
                            dir = Some(sub);
                            continue;
                        }
                        _ => return Err(not_dir()),
                    }
                }
                dir = None;
            }
            at = match packed.find(&at, c) {
                Some(n) if packed.is_dir(n) => DirRef::Packed(n),
                Some(_) => return Err(not_dir()),
                None => {
                    *highest += 1;
                    created = true;
                    DirRef::Packed(packed.add(
                        &at,
                        c,
                        *highest,
                        Attrs {
                            times: Times::all(t),
                            read_only: false,
                            xattrs: &[],
                        },
                        NewEntry::Dir,
                    ))
                }
            };
        }
        self.packed_last = Some((comps.to_vec(), at.clone()));
        Ok((at, created))
    }

    /// [`Volume::new_entry_parent`] when new entries are packed: the parent and the new name (no
    /// UID taken).
    fn packed_new_entry(&mut self, path: &str) -> Result<(DirRef, String)> {
        let mut comps = components(path)?;
        let Some(name) = comps.pop() else {
            return Err(VolumeError::AlreadyExists {
                path: path.to_string(),
            });
        };
        let (at, created) = self.packed_dir(&comps, now())?;
        self.dirty |= created;
        let in_index = match &at {
            DirRef::Indexed(p) => indexed_dir(&self.index.root, p)
                .entries
                .iter()
                .any(|e| names::nfc(e.name()) == name.as_str()),
            DirRef::Packed(_) => false,
        };
        if in_index || self.packed.as_ref().expect("packing").has(&at, &name) {
            return Err(VolumeError::AlreadyExists {
                path: path.to_string(),
            });
        }
        Ok((at, name))
    }

    /// Adds a packed entry at `path` (checked new by [`Volume::packed_new_entry`]); its UID.
    fn packed_add(
        &mut self,
        path: &str,
        times: Times,
        meta: &FileMeta,
        what: NewEntry,
    ) -> Result<u64> {
        let (at, name) = self.packed_new_entry(path)?;
        self.index.highest_file_uid += 1;
        let uid = self.index.highest_file_uid;
        self.packed.as_mut().expect("packing").add(
            &at,
            &name,
            uid,
            Attrs {
                times,
                read_only: meta.read_only,
                xattrs: &meta.xattrs,
            },
            what,
        );
        self.dirty = true;
        Ok(uid)
    }

    /// Creates `path` and any missing parents (existing directories are fine).
    pub fn mkdir_p(&mut self, path: &str) -> Result<()> {
        let comps = components(path)?;
        if self.packed.is_some() {
            let (_, created) = self.packed_dir(&comps, now())?;
            self.dirty |= created;
            return Ok(());
        }
        let mut highest = self.index.highest_file_uid;
        let (_, created) = ensure_dir(&mut self.index.root, &comps, &mut highest, now())?;
        self.index.highest_file_uid = highest;
        self.dirty |= created;
        Ok(())
    }

    /// Sets the times of the directory `path` (created if missing), e.g. once a copy has filled it:
    /// the source directory's times, not the time of the copy.
    pub fn set_dir_times(&mut self, path: &str, times: Times) -> Result<()> {
        let comps = components(path)?;
        if self.packed.is_some() {
            let (at, created) = self.packed_dir(&comps, now())?;
            self.dirty |= created;
            let changed = match at {
                DirRef::Indexed(p) => {
                    let dir = indexed_dir_mut(&mut self.index.root, &p);
                    let changed = dir.times != times;
                    dir.times = times;
                    changed
                }
                DirRef::Packed(n) => self.packed.as_mut().expect("packing").set_times(n, times),
            };
            self.dirty |= changed;
            return Ok(());
        }
        let mut highest = self.index.highest_file_uid;
        let (dir, _) = ensure_dir(&mut self.index.root, &comps, &mut highest, now())?;
        self.index.highest_file_uid = highest;
        if dir.times != times {
            dir.times = times;
            self.dirty = true;
        }
        Ok(())
    }

    /// Splits `path` into its parent (created if missing) and a new name that must not exist yet.
    fn new_entry_parent(&mut self, path: &str) -> Result<(&mut Directory, String, u64)> {
        let mut comps = components(path)?;
        let Some(name) = comps.pop() else {
            return Err(VolumeError::AlreadyExists {
                path: path.to_string(),
            });
        };
        let mut highest = self.index.highest_file_uid;
        let (dir, created) = ensure_dir(&mut self.index.root, &comps, &mut highest, now())?;
        self.dirty |= created;
        if dir
            .entries
            .iter()
            .any(|e| names::nfc(e.name()) == name.as_str())
        {
            self.index.highest_file_uid = highest;
            return Err(VolumeError::AlreadyExists {
                path: path.to_string(),
            });
        }
        highest += 1;
        self.index.highest_file_uid = highest;
        Ok((dir, name, highest))
    }

    /// Creates a symlink at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str, meta: &FileMeta) -> Result<u64> {
        let target = names::nfc(target).into_owned();
        names::validate(&target, names::NameKind::SymlinkTarget, MAX_SYMLINK_BYTES).map_err(
            |error| VolumeError::InvalidName {
                path: format!("{path} -> {target:?}"),
                error,
            },
        )?;
        check_xattrs(path, &meta.xattrs)?;
        let t = meta.times.unwrap_or_else(|| Times::all(now()));
        if self.packed.is_some() {
            return self.packed_add(path, t, meta, NewEntry::Symlink(&target));
        }
        let (dir, name, uid) = self.new_entry_parent(path)?;
        let mut f = File::new(name, uid, t);
        f.read_only = meta.read_only;
        f.xattrs = meta.xattrs.clone();
        f.content = FileContent::Symlink(target);
        dir.entries.push(Entry::File(f));
        self.dirty = true;
        Ok(uid)
    }

    /// Positions at the DP's append point (its end of data), writing the trailing FM the last index
    /// lacks if needed.
    fn prepare_dp_append(&mut self) -> Result<()> {
        // `ltfs_write_index_conditional()`: before data goes to the DP, the IP must end in an index
        // (it does after format; not after a crash that left it without one).
        if !self.ends_in_index[self.ip as usize] {
            self.write_index(self.ip, "Sync")?;
        }
        let dp = self.dp;
        let at = Position {
            partition: dp,
            block: self.eod[dp as usize],
        };
        // Already there (the previous file ended at EOD): no LOCATE, which would make a real drive stop
        // streaming and flush its buffer between files.
        if self.dev.position().ok() != Some(at) {
            self.dev.locate(at).map_err(dev_err(format!(
                "locating the data partition's end of data (block {})",
                at.block
            )))?;
        }
        if self.dp_needs_fm {
            self.dev
                .write_filemarks(1)
                .map_err(dev_err("writing the missing trailing filemark"))?;
            self.eod[dp as usize] += 1;
            self.dp_needs_fm = false;
            self.wrote = true;
        }
        Ok(())
    }

    /// Copies `reader` to a new file at `path` (parents are created). The data goes to the DP's end of
    /// data as one extent. At early warning the rest is not written: a DP index is, and
    /// [`VolumeError::VolumeFull`] says how much of the file was written (it is not in the index).
    /// A file longer than [`Volume::max_file_length`] is refused when its data reaches that length
    /// ([`VolumeError::TooLong`]; what was written is not in the index).
    pub fn put_file(
        &mut self,
        path: &str,
        mut reader: impl Read,
        meta: &FileMeta,
    ) -> Result<PutReport> {
        self.begin_put(path, meta, None)?;
        let max = self.max_file_length();
        let mut src = (&mut reader).take(max.map_or(u64::MAX, |m| m.saturating_add(1)));
        let w = self.write_extent(path, &mut src, 0, false)?;
        if let Some(m) = max
            && w.bytes > m
        {
            return Err(VolumeError::TooLong {
                path: path.to_string(),
                length: w.bytes,
                max: m,
            });
        }
        let extent = w.extent;
        self.finish_put(
            path,
            meta,
            w.bytes,
            extent.into_iter().collect(),
            w.early_warning,
        )
    }

    /// Copies a file with holes: `length` bytes of which only the `data` ranges (sorted, disjoint,
    /// within `length`) are read from `reader` and written, each as an extent of its own; the holes
    /// between them and after the last are not written at all and read back as zeros, as the
    /// reference implementation writes sparse files. The caller finds the ranges (SEEK_DATA /
    /// SEEK_HOLE); a range that reads short (the file shrank) ends the file there.
    ///
    /// Refused before anything is written: a `length` beyond [`Volume::max_file_length`], ranges out
    /// of order or past `length`, and what [`Volume::put_file`] refuses.
    pub fn put_file_sparse(
        &mut self,
        path: &str,
        mut reader: impl Read + Seek,
        length: u64,
        data: &[Range<u64>],
        meta: &FileMeta,
    ) -> Result<PutReport> {
        let mut end = 0;
        for r in data {
            if r.start < end || r.end < r.start || r.end > length {
                return Err(VolumeError::Source {
                    path: path.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "data range {}..{} out of order or past the length {length}",
                            r.start, r.end
                        ),
                    ),
                });
            }
            end = r.end;
        }
        self.begin_put(path, meta, Some(length))?;
        let mut extents = Vec::new();
        let mut length = length;
        let mut early_warning = false;
        for r in data {
            if r.start == r.end {
                continue;
            }
            if early_warning {
                // Early warning came with the previous range: the rest of the file does not fit.
                self.full = true;
                self.sync()?;
                return Err(VolumeError::VolumeFull {
                    path: path.to_string(),
                    written: extents.iter().map(|x: &Extent| x.byte_count).sum(),
                });
            }
            reader
                .seek(SeekFrom::Start(r.start))
                .map_err(|source| VolumeError::Source {
                    path: path.to_string(),
                    source,
                })?;
            let want = r.end - r.start;
            let w = self.write_extent(path, &mut (&mut reader).take(want), r.start, false)?;
            extents.extend(w.extent);
            early_warning = w.early_warning;
            if w.bytes < want {
                // The file shrank while it was read: it ends where its data did.
                length = r.start + w.bytes;
                break;
            }
        }
        self.finish_put(path, meta, length, extents, early_warning)
    }

    /// Copies `reader` to a new file at `path` like [`Volume::put_file`], except that early warning
    /// in the middle of it keeps what was written: the file is in the index with the bytes that fit
    /// ([`PartPut::Part`]), so a writer spanning volumes continues the same reader on the next one
    /// and the pieces' concatenation is the file. A piece never holds more than the volume takes
    /// before early warning, so a file longer than one volume holds is written in pieces, not refused.
    pub fn put_file_part(
        &mut self,
        path: &str,
        mut reader: impl Read,
        meta: &FileMeta,
    ) -> Result<PartPut> {
        self.begin_put(path, meta, None)?;
        let w = self.write_extent(path, &mut reader, 0, true)?;
        let complete = w.complete;
        let r = self.finish_put(
            path,
            meta,
            w.bytes,
            w.extent.into_iter().collect(),
            w.early_warning,
        )?;
        Ok(if complete {
            PartPut::Whole(r)
        } else {
            PartPut::Part(r)
        })
    }

    /// Writes a small file (at most [`RESERVE_FILE_MAX`] bytes) even when the volume has reached
    /// early warning: the space between early warning and the end of the medium is there for what
    /// closes a volume (LTFS writes its index there); a writer spanning volumes uses it for the
    /// volume's own description of what it holds.
    pub fn put_closing_file(
        &mut self,
        path: &str,
        data: &[u8],
        meta: &FileMeta,
    ) -> Result<PutReport> {
        if data.len() > RESERVE_FILE_MAX {
            return Err(VolumeError::TooLong {
                path: path.to_string(),
                length: data.len() as u64,
                max: RESERVE_FILE_MAX as u64,
            });
        }
        let full = std::mem::replace(&mut self.full, false);
        let r = self.put_file(path, data, meta);
        self.full |= full;
        r
    }

    /// Early warning was reached: only [`Volume::put_closing_file`] writes now.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Checks made before a put writes anything: the volume is not full, the xattrs, the name (new,
    /// valid, not too deep; missing parents are created) and the length.
    fn begin_put(&mut self, path: &str, meta: &FileMeta, length: Option<u64>) -> Result<()> {
        if self.full {
            return Err(VolumeError::VolumeFull {
                path: path.to_string(),
                written: 0,
            });
        }
        check_xattrs(path, &meta.xattrs)?;
        if let (Some(length), Some(max)) = (length, self.max_file_length())
            && length > max
        {
            return Err(VolumeError::TooLong {
                path: path.to_string(),
                length,
                max,
            });
        }
        // Check the name before writing any data.
        if self.packed.is_some() {
            self.packed_new_entry(path)?;
        } else {
            let (_, _, _) = self.new_entry_parent(path)?;
            self.index.highest_file_uid -= 1;
        }
        self.prepare_dp_append()
    }

    /// Writes `src` at the DP's end of data as the extent of file offset `file_offset` (none when
    /// `src` is empty). Early warning in the middle of it ends the put with [`VolumeError::VolumeFull`]
    /// after a DP index.
    fn write_extent(
        &mut self,
        path: &str,
        src: &mut impl Read,
        file_offset: u64,
        keep_partial: bool,
    ) -> Result<ExtentWritten> {
        let w = match write_data_records(&mut self.dev, src, self.block_size) {
            Ok(w) => w,
            Err(ConstructError::Source(source)) => {
                return Err(VolumeError::Source {
                    path: path.to_string(),
                    source,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let dp = self.dp as usize;
        self.eod[dp] += w.records;
        if w.records > 0 {
            self.ends_in_index[dp] = false;
            self.wrote = true;
        }
        if w.early_warning && !w.complete && !keep_partial {
            self.full = true;
            self.sync()?;
            return Err(VolumeError::VolumeFull {
                path: path.to_string(),
                written: w.bytes,
            });
        }
        let dp_id = self.id_of(self.dp);
        Ok(ExtentWritten {
            extent: (w.bytes > 0).then_some(Extent {
                file_offset,
                partition: dp_id,
                start_block: w.start.block,
                byte_offset: 0,
                byte_count: w.bytes,
            }),
            bytes: w.bytes,
            early_warning: w.early_warning,
            complete: w.complete,
        })
    }

    /// Adds the file written to the index and applies the sync policy.
    fn finish_put(
        &mut self,
        path: &str,
        meta: &FileMeta,
        length: u64,
        extents: Vec<Extent>,
        early_warning: bool,
    ) -> Result<PutReport> {
        let t = meta.times.unwrap_or_else(|| Times::all(now()));
        let uid = if self.packed.is_some() {
            self.packed_add(
                path,
                t,
                meta,
                NewEntry::File {
                    length,
                    extents: &extents,
                },
            )?
        } else {
            let (dir, name, uid) = self.new_entry_parent(path)?;
            let mut f = File::new(name, uid, t);
            f.length = length;
            f.read_only = meta.read_only;
            f.xattrs = meta.xattrs.clone();
            f.content = FileContent::Extents(extents.clone());
            dir.entries.push(Entry::File(f));
            uid
        };
        self.dirty = true;
        let bytes: u64 = extents.iter().map(|x| x.byte_count).sum();
        self.unsynced_bytes += bytes;
        let mut synced = false;
        if early_warning {
            self.full = true;
            self.sync()?;
            synced = true;
        } else if self
            .sync
            .every_bytes
            .is_some_and(|n| self.unsynced_bytes >= n)
            || self
                .sync
                .every
                .is_some_and(|d| self.last_sync.elapsed() >= d)
        {
            self.sync()?;
            synced = true;
        }
        Ok(PutReport {
            uid,
            length,
            extent: extents.first().copied(),
            extents,
            synced,
            early_warning,
        })
    }

    /// The index generations on tape, newest first: the current index, then the chain of DP indexes
    /// through back pointers. A back pointer that does not lead to a valid, older index ends the list.
    pub fn generations(&mut self) -> Result<Vec<Generation>> {
        let mut out = vec![Generation {
            generation: self.index.generation,
            location: self.index.location,
            update_time: self.index.update_time,
        }];
        let mut next = self.index.previous;
        let dp_id = self.id_of(self.dp);
        let mut bound = if self.index.location.partition == dp_id {
            self.index.location.start_block
        } else {
            u64::MAX
        };
        while let Some(loc) = next {
            if loc.partition != dp_id || loc.start_block >= bound || loc.start_block < 5 {
                break;
            }
            let at = Position {
                partition: self.dp,
                block: loc.start_block,
            };
            self.dev.locate(at).map_err(dev_err(format!(
                "locating the index at partition {} block {}",
                self.dp, at.block
            )))?;
            let medium = self.medium();
            let labels = &self.labels;
            let Ok(Ok((idx, _))) =
                read_index(&mut self.dev, self.block_size, INDEX_READ_LIMIT, |r| {
                    super::mount::parse_at(r, at, labels, &medium)
                })
            else {
                break;
            };
            out.push(Generation {
                generation: idx.generation,
                location: idx.location,
                update_time: idx.update_time,
            });
            bound = loc.start_block;
            next = idx.previous;
        }
        Ok(out)
    }

    /// Time since the last index write (for callers running their own policy).
    pub fn since_last_sync(&self) -> Duration {
        Instant::now().duration_since(self.last_sync)
    }
}
