//! The per-snapshot manifest: what a snapshot holds, with content hashes, stored inside the
//! snapshot at `.rackvault/manifest.zst` so that every snapshot describes itself.
//!
//! Encoding (documented in docs/manifest-format.md): a zstd frame (with checksum) holding JSON
//! Lines; the first line is a [`Header`], each further line one [`Entry`], sorted by path bytes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bytes::Bytes;
use crate::relpath::RelPath;

pub const FORMAT: &str = "rackvault-manifest";
pub const VERSION: u32 = 1;
/// Directory inside every snapshot that holds rackvault's own files.
pub const META_DIR: &str = ".rackvault";
pub const MANIFEST_FILE: &str = ".rackvault/manifest.zst";
/// Block size for block hashes; matches ZFS's default recordsize so that an in-place update of a
/// changed block rewrites exactly one record.
pub const BLOCK_SIZE: u64 = 128 * 1024;
/// Files with more blocks than this get proportionally larger blocks, bounding a manifest line.
pub const MAX_BLOCKS_PER_FILE: u64 = 131_072;
/// Longest manifest line we accept when reading (a hostile manifest cannot exhaust memory).
const MAX_LINE: usize = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub job: String,
    pub snapshot: String,
    /// RFC 3339 UTC time the run started.
    pub created: String,
    /// Absolute source path as configured.
    pub source: String,
    pub hash: String,
    pub block_size: u64,
    pub entries: u64,
}

impl Header {
    /// The header of this format and version for a snapshot of `job` made at `created` (RFC 3339)
    /// from `source`; `entries` is set by [`Manifest::new`].
    pub fn new(job: &str, snapshot: &str, created: &str, source: &str) -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            job: job.into(),
            snapshot: snapshot.into(),
            created: created.into(),
            source: source.into(),
            hash: "blake3".into(),
            block_size: BLOCK_SIZE,
            entries: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
        }
    }
}

/// Identity of the source file when it was read: the fast path that decides "unchanged"
/// without reading content.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct SourceStamp {
    pub dev: u64,
    pub ino: u64,
    pub ctime: i64,
    pub ctime_ns: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Xattr {
    pub name: Bytes,
    pub value: Bytes,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub path: RelPath,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_ns: u32,
    #[serde(default)]
    pub size: u64,
    /// Symlink target, as stored (never followed by rackvault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Bytes>,
    /// BLAKE3 of the whole content (regular files).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "hash_hex_opt"
    )]
    pub hash: Option<[u8; 32]>,
    /// Size of each block in `blocks`; present when `blocks` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    /// BLAKE3 of each block, for files larger than one block.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "hash_hex_vec")]
    pub blocks: Vec<[u8; 32]>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// Hard link: this entry is the same file as the entry at this path (listed earlier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<RelPath>,
    #[serde(default)]
    pub src: SourceStamp,
}

impl Entry {
    /// Same metadata as stored on the inode (what a hard link to an older copy would carry).
    pub fn same_inode_metadata(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.mtime == other.mtime
            && self.mtime_ns == other.mtime_ns
            && self.xattrs == other.xattrs
    }

    /// Same content: equal size and hash (files), equal target (symlinks).
    pub fn same_content(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && match self.kind {
                Kind::File => {
                    self.size == other.size && self.hash.is_some() && self.hash == other.hash
                }
                Kind::Symlink => self.target == other.target,
                Kind::Dir => true,
            }
    }

    /// The fast-path test: same size, mtime and source identity, so the content is taken as unchanged.
    pub fn same_source_stamp(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.mtime == other.mtime
            && self.mtime_ns == other.mtime_ns
            && self.src == other.src
            && self.src != SourceStamp::default()
    }

    /// Block hashes as a list covering the whole file, whatever the size (one block for small files).
    pub fn block_hashes(&self) -> Option<(u64, Vec<[u8; 32]>)> {
        if !self.blocks.is_empty() {
            return Some((self.block_size.unwrap_or(BLOCK_SIZE), self.blocks.clone()));
        }
        let h = self.hash?;
        let bs = block_size_for(self.size);
        if self.size <= bs {
            Some((bs, if self.size == 0 { vec![] } else { vec![h] }))
        } else {
            None
        }
    }
}

/// Block size used for a file of `size` bytes.
pub fn block_size_for(size: u64) -> u64 {
    let mut bs = BLOCK_SIZE;
    while size.div_ceil(bs) > MAX_BLOCKS_PER_FILE {
        bs *= 2;
    }
    bs
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub header: Header,
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("manifest {path} is damaged at line {line}: {msg}")]
    Corrupt {
        path: String,
        line: usize,
        msg: String,
    },
}

/// What makes a header one this build cannot read, if anything.
fn header_problem(h: &Header) -> Option<String> {
    if h.format != FORMAT {
        Some(format!("format is {:?}, expected {FORMAT:?}", h.format))
    } else if h.version != VERSION {
        Some(format!(
            "version {} is not supported (this build reads {VERSION})",
            h.version
        ))
    } else if h.hash != "blake3" {
        Some(format!("hash {:?} is not supported", h.hash))
    } else {
        None
    }
}

impl Manifest {
    pub fn new(header: Header, mut entries: Vec<Entry>) -> Self {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let mut header = header;
        header.entries = entries.len() as u64;
        Manifest { header, entries }
    }

    pub fn index(&self) -> HashMap<&RelPath, &Entry> {
        self.entries.iter().map(|e| (&e.path, e)).collect()
    }

    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The entries form one tree: the root is a directory and every other entry's parent is a
    /// directory entry of this manifest. Readers rely on it: nothing is ever written or read below
    /// a symlink or a file, whatever the manifest says.
    fn check_tree(&self) -> Result<(), String> {
        match self.entries.first() {
            None => return Ok(()),
            Some(r) if r.path.is_root() && r.kind == Kind::Dir => {}
            Some(r) if r.path.is_root() => return Err("the root is not a directory".into()),
            Some(_) => return Err("there is no root directory entry".into()),
        }
        for e in &self.entries[1..] {
            let parent = e.path.parent().expect("not the root");
            match self.get(&parent) {
                Some(p) if p.kind == Kind::Dir => {}
                Some(p) => {
                    return Err(format!(
                        "entry {} is inside {}, which is a {}, not a directory",
                        e.path,
                        parent,
                        p.kind.name()
                    ));
                }
                None => {
                    return Err(format!(
                        "entry {} has no parent directory entry {}",
                        e.path, parent
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn write_to(&self, w: impl Write) -> std::io::Result<()> {
        let mut enc = zstd::Encoder::new(w, 1)?;
        enc.include_checksum(true)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, enc);
        serde_json::to_writer(&mut out, &self.header)?;
        out.write_all(b"\n")?;
        for e in &self.entries {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
        }
        let enc = out.into_inner().map_err(|e| e.into_error())?;
        enc.finish()?.flush()
    }

    /// Writes atomically: a temporary file in the same directory, fsynced, then renamed.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().expect("manifest path has a parent");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".manifest.tmp.{}", std::process::id()));
        let f = std::fs::File::create(&tmp)?;
        self.write_to(&f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let shown = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|e| ManifestError::Io {
            path: shown.clone(),
            source: e,
        })?;
        Self::read_from(f, &shown)
    }

    /// Parses untrusted bytes: every length is checked, every path validated, nothing panics.
    pub fn read_from(r: impl Read, name: &str) -> Result<Self, ManifestError> {
        let corrupt = |line: usize, msg: String| ManifestError::Corrupt {
            path: name.to_string(),
            line,
            msg,
        };
        let err = |e: crate::jsonl::LineError| corrupt(e.line, e.message);
        let mut lines = crate::jsonl::Lines::new(r, MAX_LINE).map_err(err)?;
        let mut header: Option<Header> = None;
        let mut entries = Vec::new();
        if let Some(h) = lines.next_json::<Header>("header").map_err(err)? {
            if let Some(msg) = header_problem(&h) {
                return Err(corrupt(lines.number(), msg));
            }
            header = Some(h);
        }
        while let Some(e) = lines.next_json::<Entry>("entry").map_err(err)? {
            validate_entry(&e).map_err(|m| corrupt(lines.number(), m))?;
            entries.push(e);
        }
        let lineno = lines.number();
        let header = header.ok_or_else(|| corrupt(0, "empty manifest".into()))?;
        if header.entries != entries.len() as u64 {
            return Err(corrupt(
                lineno,
                format!(
                    "header announces {} entries, found {}",
                    header.entries,
                    entries.len()
                ),
            ));
        }
        if !entries.windows(2).all(|w| w[0].path < w[1].path) {
            return Err(corrupt(
                0,
                "entries are not sorted by path or contain duplicates".into(),
            ));
        }
        let m = Manifest { header, entries };
        m.check_tree().map_err(|msg| corrupt(0, msg))?;
        for e in &m.entries {
            if let Some(l) = &e.link {
                match m.get(l) {
                    Some(t) if t.kind == Kind::File && l < &e.path && t.link.is_none() => {}
                    _ => {
                        return Err(corrupt(
                            0,
                            format!(
                                "entry {} links to {}, which is not an earlier regular file",
                                e.path, l
                            ),
                        ));
                    }
                }
            }
        }
        Ok(m)
    }
}

/// The checks one entry must pass on its own (a reader of any manifest format built on entries).
pub fn validate_entry(e: &Entry) -> Result<(), String> {
    if e.path.is_root() && e.kind != Kind::Dir {
        return Err("the root entry must be a directory".into());
    }
    match e.kind {
        Kind::File => {
            if e.hash.is_none() {
                return Err(format!("file {} has no hash", e.path));
            }
            if !e.blocks.is_empty() {
                let bs = e
                    .block_size
                    .ok_or_else(|| format!("file {} has blocks but no block_size", e.path))?;
                if bs == 0 || e.size.div_ceil(bs) != e.blocks.len() as u64 {
                    return Err(format!(
                        "file {}: {} block hashes do not cover {} bytes",
                        e.path,
                        e.blocks.len(),
                        e.size
                    ));
                }
            }
        }
        Kind::Symlink => {
            if e.target.as_ref().is_none_or(|t| t.0.is_empty()) {
                return Err(format!("symlink {} has no target", e.path));
            }
        }
        Kind::Dir => {}
    }
    if e.link.is_some() && e.kind != Kind::File {
        return Err(format!("{} is a hard link but not a regular file", e.path));
    }
    Ok(())
}

mod hash_hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(h) => s.serialize_str(&hex::encode(h)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| super::parse_hash(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod hash_hex_vec {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for h in v {
            seq.serialize_element(&hex::encode(h))?;
        }
        seq.end()
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        v.iter()
            .map(|s| super::parse_hash(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

fn parse_hash(s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|e| format!("bad hash {s:?}: {e}"))?;
    Ok(out)
}

impl Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Bytes(self.as_bytes().to_vec()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = Bytes::deserialize(d)?;
        RelPath::parse(&b.0).map_err(serde::de::Error::custom)
    }
}

/// A manifest read entry by entry, for readers that must not hold a million entries: the checks of
/// [`Manifest::read_from`] are made as the entries come (each entry, the order, the tree: only
/// directory paths are kept), and the entry count at the end, except one that needs the entries
/// before: that a hard link's target is an earlier regular file. [`EntryStream::links`] lists the
/// links read; [`check_links`] makes that check in a second pass.
pub struct EntryStream<R: Read> {
    lines: crate::jsonl::Lines<R>,
    name: String,
    header: Header,
    count: u64,
    prev: Option<RelPath>,
    dirs: std::collections::HashSet<RelPath>,
    links: Vec<(RelPath, RelPath)>,
    done: bool,
}

impl EntryStream<std::fs::File> {
    pub fn open(path: &Path) -> Result<Self, ManifestError> {
        let shown = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|e| ManifestError::Io {
            path: shown.clone(),
            source: e,
        })?;
        EntryStream::new(f, &shown)
    }
}

impl<R: Read> EntryStream<R> {
    pub fn new(r: R, name: &str) -> Result<Self, ManifestError> {
        let corrupt = |line: usize, msg: String| ManifestError::Corrupt {
            path: name.to_string(),
            line,
            msg,
        };
        let err = |e: crate::jsonl::LineError| corrupt(e.line, e.message);
        let mut lines = crate::jsonl::Lines::new(r, MAX_LINE).map_err(err)?;
        let h = lines
            .next_json::<Header>("header")
            .map_err(err)?
            .ok_or_else(|| corrupt(0, "empty manifest".into()))?;
        if let Some(msg) = header_problem(&h) {
            return Err(corrupt(lines.number(), msg));
        }
        Ok(EntryStream {
            lines,
            name: name.to_string(),
            header: h,
            count: 0,
            prev: None,
            dirs: Default::default(),
            links: Vec::new(),
            done: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The hard links read so far: (target, link).
    pub fn links(&self) -> &[(RelPath, RelPath)] {
        &self.links
    }

    fn corrupt(&self, line: usize, msg: String) -> ManifestError {
        ManifestError::Corrupt {
            path: self.name.clone(),
            line,
            msg,
        }
    }

    /// The next entry, checked; `None` after the last (the count checked).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ManifestError> {
        if self.done {
            return Ok(None);
        }
        let e = match self.lines.next_json::<Entry>("entry") {
            Ok(Some(e)) => e,
            Ok(None) => {
                self.done = true;
                if self.header.entries != self.count {
                    return Err(self.corrupt(
                        self.lines.number(),
                        format!(
                            "header announces {} entries, found {}",
                            self.header.entries, self.count
                        ),
                    ));
                }
                return Ok(None);
            }
            Err(e) => return Err(self.corrupt(e.line, e.message)),
        };
        let n = self.lines.number();
        validate_entry(&e).map_err(|m| self.corrupt(n, m))?;
        self.count += 1;
        match &self.prev {
            None if !e.path.is_root() => {
                return Err(self.corrupt(0, "there is no root directory entry".into()));
            }
            None if e.kind != Kind::Dir => {
                return Err(self.corrupt(0, "the root is not a directory".into()));
            }
            None => {}
            Some(p) if *p >= e.path => {
                return Err(self.corrupt(
                    0,
                    "entries are not sorted by path or contain duplicates".into(),
                ));
            }
            Some(_) => {
                let parent = e.path.parent().expect("not the root");
                if !self.dirs.contains(&parent) {
                    return Err(self.corrupt(
                        0,
                        format!(
                            "entry {} has no parent directory entry {parent} (or it is not a directory)",
                            e.path
                        ),
                    ));
                }
            }
        }
        if e.kind == Kind::Dir {
            self.dirs.insert(e.path.clone());
        }
        if let Some(l) = &e.link {
            if l >= &e.path {
                return Err(self.corrupt(
                    0,
                    format!(
                        "entry {} links to {}, which is not an earlier regular file",
                        e.path, l
                    ),
                ));
            }
            self.links.push((l.clone(), e.path.clone()));
        }
        self.prev = Some(e.path.clone());
        Ok(Some(e))
    }
}

/// The second pass of an [`EntryStream`]: every link's target (`links`, as it listed them) is a
/// regular file of the manifest at `path` that is not a link itself.
pub fn check_links(path: &Path, links: &[(RelPath, RelPath)]) -> Result<(), ManifestError> {
    if links.is_empty() {
        return Ok(());
    }
    let shown = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| ManifestError::Io {
        path: shown.clone(),
        source: e,
    })?;
    check_links_in(f, &shown, links)
}

/// [`check_links`] of the manifest read from `r` (named `name` in errors).
pub fn check_links_in(
    r: impl Read,
    name: &str,
    links: &[(RelPath, RelPath)],
) -> Result<(), ManifestError> {
    if links.is_empty() {
        return Ok(());
    }
    let mut wanted: HashMap<&RelPath, bool> = links.iter().map(|(t, _)| (t, false)).collect();
    let mut s = EntryStream::new(r, name)?;
    while let Some(e) = s.next_entry()? {
        if let Some(ok) = wanted.get_mut(&e.path) {
            *ok = e.kind == Kind::File && e.link.is_none();
        }
    }
    match links.iter().find(|(t, _)| !wanted[t]) {
        Some((t, l)) => Err(ManifestError::Corrupt {
            path: name.to_string(),
            line: 0,
            msg: format!("entry {l} links to {t}, which is not an earlier regular file"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(path: &str, content: &[u8]) -> Entry {
        Entry {
            path: RelPath::parse(path.as_bytes()).unwrap(),
            kind: Kind::File,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: 1_700_000_000,
            mtime_ns: 123_456_789,
            size: content.len() as u64,
            target: None,
            hash: Some(*blake3::hash(content).as_bytes()),
            block_size: None,
            blocks: vec![],
            xattrs: vec![Xattr {
                name: Bytes(b"user.k".to_vec()),
                value: Bytes(vec![0, 255, 1]),
            }],
            link: None,
            src: SourceStamp {
                dev: 1,
                ino: 2,
                ctime: 3,
                ctime_ns: 4,
            },
        }
    }

    fn header() -> Header {
        Header::new("j", "s", "2026-01-01T00:00:00Z", "/src")
    }

    fn root() -> Entry {
        Entry {
            kind: Kind::Dir,
            hash: None,
            xattrs: vec![],
            size: 0,
            ..file("", b"")
        }
    }

    #[test]
    fn round_trip_including_non_utf8_names() {
        let mut odd = file("x", b"abc");
        odd.path = RelPath::parse(b"bad\xffname").unwrap();
        let mut link = file("z", b"hello");
        link.link = Some(RelPath::parse(b"y").unwrap());
        let m = Manifest::new(header(), vec![root(), file("y", b"hello"), odd, link]);
        let mut buf = Vec::new();
        m.write_to(&mut buf).unwrap();
        let back = Manifest::read_from(&buf[..], "test").unwrap();
        assert_eq!(back.entries, m.entries);
        assert_eq!(back.header.entries, 4);
    }

    #[test]
    fn rejects_escaping_paths_and_truncation() {
        let raw = format!(
            "{}\n{}\n",
            serde_json::to_string(&Header {
                entries: 1,
                ..header()
            })
            .unwrap(),
            r#"{"path":"../etc/passwd","type":"file","mode":420,"uid":0,"gid":0,"mtime":0,"mtime_ns":0,"size":0,"hash":"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"}"#
        );
        let z = zstd::encode_all(raw.as_bytes(), 1).unwrap();
        let err = Manifest::read_from(&z[..], "m").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains(".."), "{err}");

        let m = Manifest::new(header(), vec![root(), file("a", b"1")]);
        let mut buf = Vec::new();
        m.write_to(&mut buf).unwrap();
        assert!(Manifest::read_from(&buf[..buf.len() - 9], "m").is_err());
    }

    #[test]
    fn rejects_dangling_hard_link() {
        let mut l = file("b", b"x");
        l.link = Some(RelPath::parse(b"zz").unwrap());
        let m = Manifest::new(header(), vec![root(), l]);
        let mut buf = Vec::new();
        m.write_to(&mut buf).unwrap();
        assert!(
            Manifest::read_from(&buf[..], "m")
                .unwrap_err()
                .to_string()
                .contains("links to zz")
        );
    }

    /// A manifest read with [`EntryStream`] and [`check_links_in`].
    fn stream_all(z: &[u8]) -> Result<Vec<Entry>, ManifestError> {
        let mut s = EntryStream::new(z, "fuzz")?;
        let mut v = Vec::new();
        while let Some(e) = s.next_entry()? {
            v.push(e);
        }
        check_links_in(z, "fuzz", s.links())?;
        Ok(v)
    }

    #[test]
    fn streamed_reading_refuses_what_whole_reading_refuses() {
        let bad = |entries: Vec<Entry>, count: Option<u64>| {
            let mut m = Manifest {
                header: header(),
                entries,
            };
            m.header.entries = count.unwrap_or(m.entries.len() as u64);
            let mut buf = Vec::new();
            m.write_to(&mut buf).unwrap();
            assert!(Manifest::read_from(&buf[..], "m").is_err());
            stream_all(&buf).unwrap_err().to_string()
        };
        let mut dangling = file("b", b"x");
        dangling.link = Some(RelPath::parse(b"a").unwrap());
        let mut to_link = file("c", b"x");
        to_link.link = Some(RelPath::parse(b"b").unwrap());
        let mut to_dir = file("c", b"x");
        to_dir.link = Some(RelPath::parse(b"d").unwrap());
        let dir = |p: &str| Entry {
            kind: Kind::Dir,
            hash: None,
            xattrs: vec![],
            size: 0,
            ..file(p, b"")
        };
        for (entries, count, why) in [
            (
                vec![root(), file("b", b"1"), file("a", b"2")],
                None,
                "not sorted",
            ),
            (
                vec![root(), file("a", b"1"), file("a", b"2")],
                None,
                "duplicates",
            ),
            (vec![file("a", b"1")], None, "no root directory"),
            (vec![root(), file("a/b", b"1")], None, "no parent"),
            (
                vec![root(), file("a", b""), file("a/b", b"1")],
                None,
                "no parent",
            ),
            (vec![root(), file("a", b"1")], Some(3), "announces 3"),
            (vec![root(), dangling], None, "links to a"),
            (
                vec![
                    root(),
                    file("a", b"1"),
                    {
                        let mut b = file("b", b"x");
                        b.link = Some(RelPath::parse(b"a").unwrap());
                        b
                    },
                    to_link,
                ],
                None,
                "links to b",
            ),
            (vec![root(), to_dir, dir("d")], None, "links to d"),
        ] {
            let e = bad(entries, count);
            assert!(e.contains(why), "{why}: {e}");
        }
        let ok = valid_text();
        let z = zstd::encode_all(&ok[..], 1).unwrap();
        assert_eq!(
            stream_all(&z).unwrap(),
            Manifest::read_from(&z[..], "m").unwrap().entries
        );
    }

    #[test]
    fn block_size_grows_for_huge_files() {
        assert_eq!(block_size_for(1 << 30), BLOCK_SIZE);
        let bs = block_size_for(1 << 40);
        assert!((1u64 << 40).div_ceil(bs) <= MAX_BLOCKS_PER_FILE);
    }

    fn valid_text() -> Vec<u8> {
        let mut link = file("z", b"hello");
        link.link = Some(RelPath::parse(b"y").unwrap());
        let mut big = file("big", &[7u8; 300_000]);
        big.blocks = vec![[1; 32], [2; 32], [3; 32]];
        big.block_size = Some(BLOCK_SIZE);
        let m = Manifest::new(header(), vec![root(), big, file("y", b"hello"), link]);
        let mut buf = Vec::new();
        m.write_to(&mut buf).unwrap();
        zstd::decode_all(&buf[..]).unwrap()
    }

    proptest! {
        /// Structured fuzzing: a valid manifest with bytes flipped, inserted or removed. Whatever
        /// the reader accepts must still be safe to use.
        #[test]
        fn mutated_manifests_never_panic_or_escape(edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..8)) {
            let mut text = valid_text();
            for (pos, byte, op) in edits {
                let i = pos as usize % (text.len() + 1);
                match op {
                    0 if i < text.len() => text[i] = byte,
                    1 => text.insert(i, byte),
                    _ if i < text.len() => { text.remove(i); }
                    _ => {}
                }
            }
            let z = zstd::encode_all(&text[..], 1).unwrap();
            // Read entry by entry, the same manifests are accepted, with the same entries.
            let streamed = stream_all(&z);
            match (&streamed, Manifest::read_from(&z[..], "fuzz")) {
                (Ok(s), Ok(m)) => prop_assert_eq!(s, &m.entries),
                (Err(_), Err(_)) => {}
                (s, m) => prop_assert!(false, "streamed {:?}, whole {:?}", s.as_ref().map(|e| e.len()), m.map(|m| m.entries.len())),
            }
            if let Ok(m) = Manifest::read_from(&z[..], "fuzz") {
                for e in &m.entries {
                    let joined = e.path.under(Path::new("/r"));
                    prop_assert!(joined.starts_with("/r"));
                    prop_assert!(!joined.components().any(|c| matches!(c, std::path::Component::ParentDir)));
                    if let Some(l) = &e.link { prop_assert!(m.get(l).is_some()); }
                }
            }
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::read_from(&data[..], "fuzz");
            if let Ok(z) = zstd::encode_all(&data[..], 1) {
                let _ = Manifest::read_from(&z[..], "fuzz");
            }
        }
    }
}
