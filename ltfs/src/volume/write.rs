//! Writing: directories, files (data appended at the DP's end of data in full `blocksize` records, one
//! extent per file), symlinks, the sync policy and early warning; and the generation list.

use std::io::Read;
use std::time::{Duration, Instant};

use super::read::components;
use super::{INDEX_READ_LIMIT, Result, Volume, VolumeError, dev_err, now};
use crate::construct::{ConstructError, read_index_xml, write_data_records};
use crate::device::{Position, TapeDevice};
use crate::index::{
    Directory, Entry, Extent, File, FileContent, IndexLocation, LtfsTime, Times, Xattr, names,
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
    /// The file's extent (none for an empty file).
    pub extent: Option<Extent>,
    /// A DP index was written after this file (by policy or at early warning).
    pub synced: bool,
    /// The tape reached early warning with this file (it was written completely; further puts fail).
    pub early_warning: bool,
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

fn check_xattrs(path: &str, xattrs: &[Xattr]) -> Result<()> {
    for x in xattrs {
        names::validate(&x.key, names::NameKind::XattrKey, 1024).map_err(|error| {
            VolumeError::InvalidName {
                path: format!("{path} (xattr {:?})", x.key),
                error,
            }
        })?;
    }
    Ok(())
}

impl<D: TapeDevice> Volume<D> {
    /// Creates `path` and any missing parents (existing directories are fine).
    pub fn mkdir_p(&mut self, path: &str) -> Result<()> {
        let comps = components(path)?;
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
        names::validate(&target, names::NameKind::SymlinkTarget, 4096).map_err(|error| {
            VolumeError::InvalidName {
                path: format!("{path} -> {target:?}"),
                error,
            }
        })?;
        check_xattrs(path, &meta.xattrs)?;
        let t = meta.times.unwrap_or_else(|| Times::all(now()));
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
    pub fn put_file(
        &mut self,
        path: &str,
        mut reader: impl Read,
        meta: &FileMeta,
    ) -> Result<PutReport> {
        if self.full {
            return Err(VolumeError::VolumeFull {
                path: path.to_string(),
                written: 0,
            });
        }
        check_xattrs(path, &meta.xattrs)?;
        // Check the name before writing any data.
        {
            let (_, _, _) = self.new_entry_parent(path)?;
            self.index.highest_file_uid -= 1;
        }
        self.prepare_dp_append()?;
        let w = match write_data_records(&mut self.dev, &mut reader, self.block_size) {
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
        if w.early_warning && !w.complete {
            self.full = true;
            self.sync()?;
            return Err(VolumeError::VolumeFull {
                path: path.to_string(),
                written: w.bytes,
            });
        }
        let dp_id = self.id_of(self.dp);
        let extent = (w.bytes > 0).then_some(Extent {
            file_offset: 0,
            partition: dp_id,
            start_block: w.start.block,
            byte_offset: 0,
            byte_count: w.bytes,
        });
        let t = meta.times.unwrap_or_else(|| Times::all(now()));
        let (dir, name, uid) = self.new_entry_parent(path)?;
        let mut f = File::new(name, uid, t);
        f.length = w.bytes;
        f.read_only = meta.read_only;
        f.xattrs = meta.xattrs.clone();
        f.content = FileContent::Extents(extent.into_iter().collect());
        dir.entries.push(Entry::File(f));
        self.dirty = true;
        self.unsynced_bytes += w.bytes;
        let mut synced = false;
        if w.early_warning {
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
            length: w.bytes,
            extent,
            synced,
            early_warning: w.early_warning,
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
            let Ok(x) = read_index_xml(&mut self.dev, self.block_size, INDEX_READ_LIMIT) else {
                break;
            };
            let Some(idx) = super::mount::parse_at(&x.xml, at, &self.labels) else {
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
