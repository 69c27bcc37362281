//! Reading: path lookup on NFC names, list, stat, and file data by extent (§8 item 29): LOCATE to
//! `startblock + byteoffset / blocksize`, every record but an extent's last exactly `blocksize`, holes
//! and the tail up to `length` zero-filled, never more than an extent's `bytecount` taken from tape.

use std::io::Write;

use super::{Result, Volume, VolumeError, dev_err};
use crate::device::{DeviceError, Position, ReadOutcome, TapeDevice};
use crate::index::{Directory, Entry, Extent, File, FileContent, Times, Xattr, names};

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
            names::validate(&c, names::NameKind::Entry, 1024)
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

    /// Writes the file's bytes to `out`: `length` bytes in all. Returns the length.
    pub fn read_file(&mut self, path: &str, out: &mut impl Write) -> Result<u64> {
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
            write_zeros(out, x.file_offset - pos).map_err(out_err)?;
            pos = x.file_offset;
            let count = x.byte_count.min(file.length - x.file_offset);
            self.read_extent(path, x, count, &mut buf, out)?;
            pos += count;
        }
        write_zeros(out, file.length - pos).map_err(out_err)?;
        Ok(file.length)
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
