//! Reading: path lookup on NFC names, list, stat, and file data by extent (§8 item 29): LOCATE to
//! `startblock + byteoffset / blocksize`, every record but an extent's last exactly `blocksize`, holes
//! and the tail up to `length` zero-filled, never more than an extent's `bytecount` taken from tape.
//! [`Volume::read_range`] serves random reads (a FUSE mount) from only the records covering the range,
//! through a small [`RecordCache`].

use std::collections::VecDeque;
use std::io::{Seek, SeekFrom, Write};

use super::{Result, Volume, VolumeError, dev_err};
use crate::device::{DeviceError, Position, ReadOutcome, TapeDevice};
use crate::index::{Directory, Entry, Extent, File, FileContent, Times, Xattr, names};

/// The last few records [`Volume::read_range`] read, so sequential small reads (a FUSE read is 4 to
/// 128 KiB) do not read a 512 KiB record again each time, and where the head is after them, so the
/// next record is read without a LOCATE.
///
/// The head position is only known while nothing else moves the tape: use one cache with a volume
/// that is only read through `read_range`, or call [`RecordCache::forget_position`] after any other
/// operation on the volume.
#[derive(Debug)]
pub struct RecordCache {
    records: VecDeque<((u8, u64), Vec<u8>)>,
    capacity: usize,
    head: Option<(u8, u64)>,
    /// Records read from tape (misses), for tests and statistics.
    pub reads: u64,
}

impl RecordCache {
    /// A cache of `capacity` records (at least 1).
    pub fn new(capacity: usize) -> RecordCache {
        RecordCache {
            records: VecDeque::new(),
            capacity: capacity.max(1),
            head: None,
            reads: 0,
        }
    }

    /// The tape may have moved: the next miss LOCATEs.
    pub fn forget_position(&mut self) {
        self.head = None;
    }

    fn get(&self, at: (u8, u64)) -> Option<usize> {
        self.records.iter().position(|(k, _)| *k == at)
    }
}

/// Where [`Volume::read_file_sparse`] puts a file: its data is written, its holes are skipped.
pub trait SparseWrite: Write {
    /// A hole of `n` bytes: the next write lands `n` bytes further on, and what is skipped reads as
    /// zeros.
    fn skip(&mut self, n: u64) -> std::io::Result<()>;
    /// The file is `length` bytes long (it may end in a hole that [`SparseWrite::skip`] left unwritten).
    fn finish(&mut self, length: u64) -> std::io::Result<()>;
}

/// A file holes are restored into as holes (seek, then `set_len` for a hole at the end): a file of
/// 4 EiB with a few bytes of data costs a few blocks of disk.
impl SparseWrite for std::fs::File {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let n = i64::try_from(n).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "hole too large to seek")
        })?;
        self.seek(SeekFrom::Current(n)).map(|_| ())
    }
    fn finish(&mut self, length: u64) -> std::io::Result<()> {
        self.set_len(length)
    }
}

/// Any writer, holes written out as zeros ([`Volume::read_file`]).
pub struct Zeros<W: Write>(pub W);

impl<W: Write> Write for Zeros<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> SparseWrite for Zeros<W> {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        write_zeros(&mut self.0, n)
    }
    fn finish(&mut self, _: u64) -> std::io::Result<()> {
        Ok(())
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File,
    Symlink(String),
}

/// One entry as [`Volume::list`] and [`Volume::stat`] report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub name: String,
    pub kind: EntryKind,
    /// File length in bytes (0 for directories and symlinks).
    pub length: u64,
    pub uid: u64,
    pub read_only: bool,
    pub times: Times,
    pub xattrs: Vec<Xattr>,
    pub extents: Vec<Extent>,
}

impl EntryInfo {
    pub(crate) fn of(e: &Entry) -> EntryInfo {
        match e {
            Entry::Directory(d) => EntryInfo::of_dir(d),
            Entry::File(f) => EntryInfo {
                name: f.name.clone(),
                kind: match &f.content {
                    FileContent::Symlink(t) => EntryKind::Symlink(t.clone()),
                    FileContent::Extents(_) => EntryKind::File,
                },
                length: f.length,
                uid: f.uid,
                read_only: f.read_only,
                times: f.times,
                xattrs: f.xattrs.clone(),
                extents: match &f.content {
                    FileContent::Extents(x) => x.clone(),
                    FileContent::Symlink(_) => Vec::new(),
                },
            },
        }
    }

    fn of_dir(d: &Directory) -> EntryInfo {
        EntryInfo {
            name: d.name.clone(),
            kind: EntryKind::Directory,
            length: 0,
            uid: d.uid,
            read_only: d.read_only,
            times: d.times,
            xattrs: d.xattrs.clone(),
            extents: Vec::new(),
        }
    }
}

/// The components of a volume path (`/` separated; empty components ignored), NFC-normalised.
/// `.` and `..` are refused: a volume path names exactly one entry.
pub(crate) fn components(path: &str) -> Result<Vec<String>> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(|c| {
            let c = names::nfc(c).into_owned();
            names::validate(&c, names::NameKind::Entry, crate::index::MAX_NAME_BYTES)
                .map(|()| c)
                .map_err(|error| VolumeError::InvalidName {
                    path: path.to_string(),
                    error,
                })
        })
        .collect()
}

pub(crate) enum Found<'a> {
    Root(&'a Directory),
    Entry(&'a Entry),
}

pub(crate) fn lookup<'a>(root: &'a Directory, path: &str) -> Result<Found<'a>> {
    let comps = components(path)?;
    let mut dir = root;
    let mut found = Found::Root(root);
    for (i, c) in comps.iter().enumerate() {
        let e = dir
            .entries
            .iter()
            .find(|e| names::nfc(e.name()) == c.as_str())
            .ok_or_else(|| VolumeError::NotFound {
                path: path.to_string(),
            })?;
        match e {
            Entry::Directory(d) => dir = d,
            Entry::File(_) if i + 1 < comps.len() => {
                return Err(VolumeError::NotADirectory {
                    path: format!("/{}", comps[..=i].join("/")),
                });
            }
            Entry::File(_) => {}
        }
        found = Found::Entry(e);
    }
    Ok(found)
}

impl<D: TapeDevice> Volume<D> {
    /// The entries of a directory, in index order.
    pub fn list(&self, path: &str) -> Result<Vec<EntryInfo>> {
        let dir = match lookup(&self.index.root, path)? {
            Found::Root(d) | Found::Entry(Entry::Directory(d)) => d,
            Found::Entry(Entry::File(_)) => {
                return Err(VolumeError::NotADirectory {
                    path: path.to_string(),
                });
            }
        };
        Ok(dir.entries.iter().map(EntryInfo::of).collect())
    }

    pub fn stat(&self, path: &str) -> Result<EntryInfo> {
        Ok(match lookup(&self.index.root, path)? {
            Found::Root(d) => EntryInfo::of_dir(d),
            Found::Entry(e) => EntryInfo::of(e),
        })
    }

    /// Writes the file's bytes to `out`: `length` bytes in all, holes as zeros. Returns the length.
    pub fn read_file(&mut self, path: &str, out: &mut impl Write) -> Result<u64> {
        self.read_file_sparse(path, &mut Zeros(out))
    }

    /// Writes the file to `out` as the index has it: its extents' data written, the holes between
    /// them and after the last skipped ([`SparseWrite::skip`]), then [`SparseWrite::finish`] with the
    /// length. Returns the length.
    pub fn read_file_sparse(&mut self, path: &str, out: &mut impl SparseWrite) -> Result<u64> {
        let file: File = match lookup(&self.index.root, path)? {
            Found::Entry(Entry::File(f)) => f.clone(),
            Found::Entry(Entry::Directory(_)) | Found::Root(_) => {
                return Err(VolumeError::IsADirectory {
                    path: path.to_string(),
                });
            }
        };
        let FileContent::Extents(mut extents) = file.content else {
            return Err(VolumeError::IsADirectory {
                path: format!("{path} (a symlink)"),
            });
        };
        extents.sort_by_key(|x| x.file_offset);
        let out_err = |source| VolumeError::Output {
            path: path.to_string(),
            source,
        };
        let mut pos = 0u64;
        let mut buf = vec![0u8; self.block_size];
        for x in &extents {
            if x.file_offset < pos || x.file_offset >= file.length {
                // Overlap or past the end: the index reader rejects these; never trust it anyway.
                continue;
            }
            out.skip(x.file_offset - pos).map_err(out_err)?;
            pos = x.file_offset;
            let count = x.byte_count.min(file.length - x.file_offset);
            self.read_extent(path, x, count, &mut buf, out)?;
            pos += count;
        }
        out.skip(file.length - pos).map_err(out_err)?;
        out.finish(file.length).map_err(out_err)?;
        Ok(file.length)
    }

    /// Reads file bytes `offset..offset + buf.len()` of the file at `path` into `buf`, reading only
    /// the records that cover the range. Returns how many bytes were filled: less than `buf.len()` only
    /// at the end of the file (0 at or past it). Holes and the tail past the last extent are zeros.
    pub fn read_range(
        &mut self,
        path: &str,
        offset: u64,
        buf: &mut [u8],
        cache: &mut RecordCache,
    ) -> Result<usize> {
        let (length, extents) = match lookup(&self.index.root, path)? {
            Found::Entry(Entry::File(f)) => match &f.content {
                FileContent::Extents(x) => (f.length, x.clone()),
                FileContent::Symlink(_) => {
                    return Err(VolumeError::IsADirectory {
                        path: format!("{path} (a symlink)"),
                    });
                }
            },
            Found::Entry(Entry::Directory(_)) | Found::Root(_) => {
                return Err(VolumeError::IsADirectory {
                    path: path.to_string(),
                });
            }
        };
        self.read_extents_range(path, length, &extents, offset, buf, cache)
    }

    /// [`Volume::read_range`] for a file already looked up: its `length` and `extents` as the index has
    /// them (`path` only names it in errors). Extents are taken as [`Volume::read_file`] takes them:
    /// sorted by file offset, an extent overlapping the one before or starting past `length` ignored,
    /// none read past `length`.
    pub fn read_extents_range(
        &mut self,
        path: &str,
        length: u64,
        extents: &[Extent],
        offset: u64,
        buf: &mut [u8],
        cache: &mut RecordCache,
    ) -> Result<usize> {
        if offset >= length {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(length - offset) as usize;
        let buf = &mut buf[..n];
        buf.fill(0);
        let end = offset + n as u64;
        let mut sorted: Vec<&Extent> = extents.iter().collect();
        sorted.sort_by_key(|x| x.file_offset);
        let mut pos = 0u64;
        for x in sorted {
            if x.file_offset < pos || x.file_offset >= length {
                continue;
            }
            let count = x.byte_count.min(length - x.file_offset);
            pos = x.file_offset + count;
            let (a, b) = (offset.max(x.file_offset), end.min(pos));
            if a >= b {
                continue;
            }
            let dst = &mut buf[(a - offset) as usize..(b - offset) as usize];
            self.read_extent_part(path, x, a - x.file_offset, dst, cache)?;
        }
        Ok(n)
    }

    /// Fills `dst` with the extent's bytes from `rel` (relative to the extent's start).
    fn read_extent_part(
        &mut self,
        path: &str,
        x: &Extent,
        rel: u64,
        dst: &mut [u8],
        cache: &mut RecordCache,
    ) -> Result<()> {
        let corrupt = |detail: String| VolumeError::Corrupt {
            path: path.to_string(),
            detail,
        };
        let partition = self
            .physical_of(x.partition)
            .ok_or_else(|| corrupt(format!("extent on unknown partition {:?}", x.partition)))?;
        if x.start_block < 4 {
            return Err(corrupt(format!(
                "extent starts at block {} inside the label",
                x.start_block
            )));
        }
        let bs = self.block_size as u64;
        // Byte position in the extent's record stream: the first record is entered at byte_offset,
        // every record before the extent's last is exactly `blocksize`.
        let stream = x
            .byte_offset
            .checked_add(rel)
            .ok_or_else(|| corrupt("extent byte offset overflows".into()))?;
        let mut block = x
            .start_block
            .checked_add(stream / bs)
            .ok_or_else(|| corrupt("extent start block overflows".into()))?;
        let mut within = (stream % bs) as usize;
        let mut done = 0;
        while done < dst.len() {
            let k = self.cached_record(path, partition, block, cache)?;
            let rec = &cache.records[k].1;
            if within >= rec.len() {
                return Err(corrupt(format!(
                    "short record ({} bytes) at partition {partition} block {block} inside an extent",
                    rec.len()
                )));
            }
            let take = (rec.len() - within).min(dst.len() - done);
            dst[done..done + take].copy_from_slice(&rec[within..within + take]);
            done += take;
            if done < dst.len() && rec.len() < self.block_size {
                return Err(corrupt(format!(
                    "short record ({} bytes) at partition {partition} block {block} inside an extent",
                    rec.len()
                )));
            }
            within = 0;
            block += 1;
        }
        Ok(())
    }

    /// The index in `cache` of the record at (`partition`, `block`), read from tape when missing.
    fn cached_record(
        &mut self,
        path: &str,
        partition: u8,
        block: u64,
        cache: &mut RecordCache,
    ) -> Result<usize> {
        if let Some(k) = cache.get((partition, block)) {
            return Ok(k);
        }
        let corrupt = |detail: String| VolumeError::Corrupt {
            path: path.to_string(),
            detail,
        };
        if cache.head != Some((partition, block)) {
            cache.head = None;
            let at = Position { partition, block };
            self.dev.locate(at).map_err(dev_err(format!(
                "{path}: locating partition {partition} block {block}"
            )))?;
        }
        let mut buf = if cache.records.len() >= cache.capacity {
            cache
                .records
                .pop_front()
                .map(|(_, b)| b)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        buf.resize(self.block_size, 0);
        cache.head = None;
        cache.reads += 1;
        let n = match self.dev.read_block(&mut buf) {
            Ok(ReadOutcome::Data(n)) if n <= buf.len() => n,
            Ok(ReadOutcome::Data(_)) | Err(DeviceError::RecordTooLong { .. }) => {
                return Err(corrupt(format!(
                    "record at partition {partition} block {block} is larger than the block size"
                )));
            }
            Ok(ReadOutcome::Filemark | ReadOutcome::EndOfData) => {
                return Err(corrupt(format!(
                    "an extent runs into a filemark or end of data at partition {partition} block {block}"
                )));
            }
            Err(e) => {
                return Err(dev_err(format!(
                    "{path}: reading partition {partition} block {block}"
                ))(e));
            }
        };
        buf.truncate(n);
        cache.head = Some((partition, block + 1));
        cache.records.push_back(((partition, block), buf));
        Ok(cache.records.len() - 1)
    }

    fn read_extent(
        &mut self,
        path: &str,
        x: &Extent,
        count: u64,
        buf: &mut [u8],
        out: &mut impl Write,
    ) -> Result<()> {
        let corrupt = |detail: String| VolumeError::Corrupt {
            path: path.to_string(),
            detail,
        };
        let partition = self
            .physical_of(x.partition)
            .ok_or_else(|| corrupt(format!("extent on unknown partition {:?}", x.partition)))?;
        let bs = self.block_size as u64;
        let block = x
            .start_block
            .checked_add(x.byte_offset / bs)
            .ok_or_else(|| corrupt("extent start block overflows".into()))?;
        if x.start_block < 4 {
            return Err(corrupt(format!(
                "extent starts at block {} inside the label",
                x.start_block
            )));
        }
        let at = Position { partition, block };
        self.dev.locate(at).map_err(dev_err(format!(
            "{path}: locating partition {partition} block {block}"
        )))?;
        let mut skip = (x.byte_offset % bs) as usize;
        let mut left = count;
        let mut b = block;
        while left > 0 {
            let n = match self.dev.read_block(buf) {
                Ok(ReadOutcome::Data(n)) if n <= buf.len() => n,
                Ok(ReadOutcome::Data(_)) | Err(DeviceError::RecordTooLong { .. }) => {
                    return Err(corrupt(format!(
                        "record at partition {partition} block {b} is larger than the block size"
                    )));
                }
                Ok(ReadOutcome::Filemark | ReadOutcome::EndOfData) => {
                    return Err(corrupt(format!(
                        "the extent at partition {partition} block {block} ends at block {b}, {left} bytes short"
                    )));
                }
                Err(e) => {
                    return Err(dev_err(format!(
                        "{path}: reading partition {partition} block {b}"
                    ))(e));
                }
            };
            if skip > n {
                return Err(corrupt(format!(
                    "record at partition {partition} block {b} is shorter than the extent's byte offset"
                )));
            }
            let take = ((n - skip) as u64).min(left) as usize;
            out.write_all(&buf[skip..skip + take])
                .map_err(|source| VolumeError::Output {
                    path: path.to_string(),
                    source,
                })?;
            left -= take as u64;
            if left > 0 && n < buf.len() {
                return Err(corrupt(format!(
                    "short record ({n} bytes) at partition {partition} block {b} inside an extent"
                )));
            }
            skip = 0;
            b += 1;
        }
        Ok(())
    }
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> std::io::Result<()> {
    let zeros = [0u8; 65536];
    while n > 0 {
        let k = n.min(zeros.len() as u64) as usize;
        out.write_all(&zeros[..k])?;
        n -= k as u64;
    }
    Ok(())
}

#[cfg(test)]
mod range_tests {
    use super::*;
    use crate::construct::tests::MemTape;
    use crate::volume::{FileMeta, FormatOptions};

    const BS: usize = 4096;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// `a`: 3 records less 10 bytes; `sparse`: two extents into `a`'s records, holes, a zero tail.
    fn volume(t: &mut MemTape) -> Vec<u8> {
        let a = data(3 * BS - 10, 7);
        let opts = FormatOptions {
            block_size: BS,
            ..FormatOptions::default()
        };
        let mut vol = Volume::format(&mut *t, &opts).unwrap();
        vol.put_file("d/a", &a[..], &FileMeta::default()).unwrap();
        let mut f = File::new("sparse", 99, Times::default());
        f.length = 20_000;
        f.content = FileContent::Extents(vec![
            Extent {
                file_offset: 8000,
                partition: 'b',
                start_block: 7,
                byte_offset: BS as u64 + 10,
                byte_count: 5000,
            },
            Extent {
                file_offset: 1000,
                partition: 'b',
                start_block: 7,
                byte_offset: 100,
                byte_count: 5000,
            },
        ]);
        vol.index.root.entries.push(Entry::File(f));
        vol.index.highest_file_uid = 99;
        vol.dirty = true;
        vol.unmount().unwrap();
        a
    }

    #[test]
    fn ranges_equal_the_whole_file_read_at_any_offset_and_length() {
        let mut t = MemTape::default();
        volume(&mut t);
        let mut vol = Volume::mount(&mut t).unwrap();
        for path in ["/d/a", "/sparse"] {
            let mut whole = Vec::new();
            vol.read_file(path, &mut whole).unwrap();
            let mut cache = RecordCache::new(2);
            for (off, len) in [
                (0, 1),
                (0, 100_000),
                (99, 4000),
                (4095, 2),
                (5990, 20),
                (7999, 5002),
                (12_000, 50),
                (19_999, 10),
                (20_000, 10),
                (1 << 40, 10),
            ] {
                let mut buf = vec![0xaa; len];
                let n = vol.read_range(path, off, &mut buf, &mut cache).unwrap();
                let o = (off as usize).min(whole.len());
                let want = &whole[o..(o + len).min(whole.len())];
                assert_eq!(n, want.len(), "{path} {off}+{len}");
                assert!(buf[..n] == *want, "{path} {off}+{len}");
            }
        }
    }

    #[test]
    fn sequential_small_reads_read_each_record_once() {
        let mut t = MemTape::default();
        let a = volume(&mut t);
        let mut vol = Volume::mount(&mut t).unwrap();
        let mut cache = RecordCache::new(2);
        let mut got = Vec::new();
        let mut buf = vec![0; 1000];
        loop {
            let n = vol
                .read_range("d/a", got.len() as u64, &mut buf, &mut cache)
                .unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, a);
        assert_eq!(cache.reads, 3);
        // Not a file: an error, not a panic.
        assert!(matches!(
            vol.read_range("d", 0, &mut buf, &mut cache),
            Err(VolumeError::IsADirectory { .. })
        ));
    }

    #[test]
    fn a_range_past_the_recorded_data_is_corrupt() {
        let mut t = MemTape::default();
        volume(&mut t);
        let mut vol = Volume::mount(&mut t).unwrap();
        let x = Extent {
            file_offset: 0,
            partition: 'b',
            start_block: 7,
            byte_offset: 0,
            byte_count: 1 << 30,
        };
        let mut buf = vec![0; 10];
        let mut cache = RecordCache::new(2);
        // Block 10 is the filemark after `a`; its last record (block 9) is short: bytes past either are
        // corrupt.
        let e = vol
            .read_extents_range("x", 1 << 30, &[x], 3 * BS as u64 + 1, &mut buf, &mut cache)
            .unwrap_err();
        assert!(matches!(e, VolumeError::Corrupt { .. }), "{e}");
        let e = vol
            .read_extents_range("x", 1 << 30, &[x], 3 * BS as u64 - 5, &mut buf, &mut cache)
            .unwrap_err();
        assert!(matches!(e, VolumeError::Corrupt { .. }), "{e}");
    }
}
