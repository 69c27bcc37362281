//! What a tape set looks like on an LTFS volume (docs/tape-sets.md is the description for people):
//!
//! ```text
//! /<job>/<snapshot>/<path>                 the set's files, under the snapshot's own paths
//!                                          (a file split across tapes: the piece on this tape)
//! /.rackvault/sets/<set>/tape-<seq>.json   this tape's self-description, written when it is closed
//! /.rackvault/sets/<set>/manifest.zst      the set manifest, on the copy's last tape, written last
//! ```
//!
//! A path that cannot be an LTFS name as it is (not UTF-8, not in NFC, a name LTFS refuses) is stored
//! at `/.rackvault/sets/<set>/unnamed/<n>` instead; the manifest's `tape_path` says where every stored
//! file is.

use std::io::{Read, Write};

use anyhow::{Result, bail};
use common::jsonl::{LineError, Lines};
use common::manifest::{Entry, Kind, validate_entry};
use common::relpath::RelPath;
use ltfs::index::{MAX_NAME_BYTES, names};
use serde::{Deserialize, Serialize};

pub const TAPE_FORMAT: &str = "rackvault-tape";
pub const SET_FORMAT: &str = "rackvault-tape-set";
pub const VERSION: u32 = 1;
/// The longest set manifest line accepted (a hostile manifest cannot exhaust memory).
const MAX_LINE: usize = 64 << 20;

/// A set's id: a UUID, lowercase 8-4-4-4-12 hex (it names directories, on tape and in the state
/// directory, so nothing else is taken from a tape).
pub fn is_set_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// The directory holding a set's own files on each of its tapes.
pub fn set_dir(set: &str) -> String {
    format!("/.rackvault/sets/{set}")
}

pub fn description_path(set: &str, seq: u32) -> String {
    format!("{}/tape-{seq:04}.json", set_dir(set))
}

pub fn manifest_path(set: &str) -> String {
    format!("{}/manifest.zst", set_dir(set))
}

/// The directory of the snapshot's files: `/<job>/<snapshot>`.
pub fn data_root(job: &str, snapshot: &str) -> String {
    format!("/{job}/{snapshot}")
}

/// Where the file at `rel` (entry number `n` of the manifest) goes on tape: under the data root
/// when every component is a valid LTFS name already in NFC (so no two paths can meet as one
/// name), else under the set's `unnamed/` directory.
pub fn tape_path(set: &str, job: &str, snapshot: &str, rel: &RelPath, n: usize) -> String {
    let valid = std::str::from_utf8(rel.as_bytes()).ok().filter(|s| {
        s.split('/').all(|c| {
            names::validate(c, names::NameKind::Entry, MAX_NAME_BYTES).is_ok() && names::nfc(c) == c
        })
    });
    match valid {
        Some(s) => format!("{}/{s}", data_root(job, snapshot)),
        None => format!("{}/unnamed/{n}", set_dir(set)),
    }
}

/// Full or incremental, as on tape and in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetKind {
    Full,
    Incremental,
}

impl SetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SetKind::Full => "full",
            SetKind::Incremental => "incremental",
        }
    }
}

/// The piece of a file that continues from one tape onto the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continued {
    /// The file's path on tape (the same on both tapes).
    pub tape_path: String,
    /// Where in the file the next tape's piece starts.
    pub offset: u64,
}

/// `/.rackvault/sets/<set>/tape-<seq>.json`: which set this tape belongs to and where it sits in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapeDescription {
    pub format: String,
    pub version: u32,
    pub set: String,
    pub job: String,
    pub snapshot: String,
    pub kind: SetKind,
    /// The set this incremental set applies on top of.
    pub base: Option<String>,
    pub pool: String,
    pub copy: u32,
    /// This tape's place in the copy, from 1.
    pub seq: u32,
    pub barcode: String,
    pub volume_uuid: String,
    /// The barcode of the copy's previous tape.
    pub previous: Option<String>,
    /// The file whose first bytes are on the previous tape.
    pub continued_from_previous: Option<Continued>,
    /// The file whose rest is on the next tape.
    pub continues_on_next: Option<Continued>,
    /// The set manifest is on this tape: the copy ends here.
    pub last: bool,
    /// RFC 3339 time the set was started (the same on all its tapes).
    #[serde(default)]
    pub started: String,
    /// RFC 3339 time the tape was closed.
    pub closed: String,
    /// The fingerprint of the key the drive encrypted this tape with (`3f:a1:…`, see
    /// docs/encryption.md); absent on a tape in plain LTFS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// On the copy's last tape: the tape catalog's copy beside the set manifest
    /// (`/.rackvault/sets/<set>/catalog.sqlite.zst`), when it is on this tape whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
}

impl TapeDescription {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("serialisable");
        v.push(b'\n');
        v
    }

    /// Parses a description read from a tape (untrusted).
    pub fn parse(bytes: &[u8]) -> Result<TapeDescription> {
        let d: TapeDescription = serde_json::from_slice(bytes)?;
        if d.format != TAPE_FORMAT || d.version != VERSION {
            bail!(
                "format {:?} version {} is not {TAPE_FORMAT:?} version {VERSION}",
                d.format,
                d.version
            );
        }
        if d.seq == 0 || d.copy == 0 {
            bail!("copy and sequence numbers count from 1");
        }
        // The set's id names a directory in the state directory: a UUID and nothing else.
        for id in std::iter::once(&d.set).chain(d.base.as_ref()) {
            if !is_set_id(id) {
                bail!("set {id:?} is not a UUID");
            }
        }
        Ok(d)
    }
}

/// Line 1 of a set manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHeader {
    pub format: String,
    pub version: u32,
    pub set: String,
    pub job: String,
    pub snapshot: String,
    pub kind: SetKind,
    /// The base set (incremental) and its snapshot.
    pub base: Option<String>,
    pub base_snapshot: Option<String>,
    pub pool: String,
    pub copy: u32,
    /// RFC 3339 time the set was started.
    pub created: String,
    /// This copy's tapes in order.
    pub tapes: Vec<SetTape>,
    /// Entry lines, then deletion lines.
    pub entries: u64,
    pub deleted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTape {
    pub seq: u32,
    pub barcode: String,
    pub volume_uuid: String,
}

/// Where an entry's content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stored {
    /// On this set's tapes (`tape_path`, `parts`). Directories and symlinks are always here.
    Here,
    /// Unchanged since the base set: the newest set of the chain that has it holds the content
    /// (the metadata here is the snapshot's).
    Base,
    /// The content is the base snapshot's file at `from`, which this snapshot no longer has.
    Renamed,
    /// A hard link to the earlier entry `link`.
    Link,
}

/// One piece of a stored file: `length` bytes at `offset` of the file, in the file `tape_path` of
/// tape `tape` (its data starting at `block` of LTFS partition `partition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub tape: u32,
    pub partition: char,
    pub block: u64,
    pub offset: u64,
    pub length: u64,
}

/// One line of a set manifest after the header: a snapshot manifest entry and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetEntry {
    #[serde(flatten)]
    pub entry: Entry,
    #[serde(rename = "in")]
    pub stored: Stored,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<RelPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tape_path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

/// A deletion line: a path of the base snapshot this one does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: RelPath,
}

/// An entry line written from borrowed parts (the writer keeps each copy's parts apart from the
/// plan, and a million-entry manifest is not cloned to be written).
#[derive(Serialize)]
struct EntryLine<'a> {
    #[serde(flatten)]
    entry: &'a Entry,
    #[serde(rename = "in")]
    stored: Stored,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: &'a Option<RelPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tape_path: &'a Option<String>,
    #[serde(skip_serializing_if = "<[Part]>::is_empty")]
    parts: &'a [Part],
}

/// Writes a set manifest line by line: the header, each entry with its parts, then the deletions
/// ([`ManifestWriter::finish`]); `header.entries` and `header.deleted` must count them.
pub struct ManifestWriter<W: Write> {
    out: std::io::BufWriter<zstd::Encoder<'static, W>>,
}

impl<W: Write> ManifestWriter<W> {
    pub fn new(w: W, header: &SetHeader) -> std::io::Result<Self> {
        let mut enc = zstd::Encoder::new(w, 3)?;
        enc.include_checksum(true)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, enc);
        serde_json::to_writer(&mut out, header)?;
        out.write_all(b"\n")?;
        Ok(ManifestWriter { out })
    }

    /// An entry line: the entry, with `parts` (the writer keeps each copy's parts apart from the
    /// plan).
    pub fn entry(&mut self, e: &SetEntry, parts: &[Part]) -> std::io::Result<()> {
        let line = EntryLine {
            entry: &e.entry,
            stored: e.stored,
            from: &e.from,
            tape_path: &e.tape_path,
            parts,
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")
    }

    /// The deletion lines, and the end of the stream; the writer given.
    pub fn finish(mut self, deleted: &[RelPath]) -> std::io::Result<W> {
        for d in deleted {
            serde_json::to_writer(&mut self.out, &Deleted { deleted: d.clone() })?;
            self.out.write_all(b"\n")?;
        }
        let enc = self.out.into_inner().map_err(|e| e.into_error())?;
        let mut w = enc.finish()?;
        w.flush()?;
        Ok(w)
    }
}

/// Writes a set manifest: `header`, then each entry with the parts given for it, then the
/// deletions. `header.entries` and `header.deleted` must count them.
pub fn write_manifest<'a>(
    w: impl Write,
    header: &SetHeader,
    entries: impl Iterator<Item = (&'a SetEntry, &'a [Part])>,
    deleted: &[RelPath],
) -> std::io::Result<()> {
    let mut m = ManifestWriter::new(w, header)?;
    for (e, parts) in entries {
        m.entry(e, parts)?;
    }
    m.finish(deleted).map(drop)
}

/// A whole set manifest (one copy's: the parts name that copy's tapes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetManifest {
    pub header: SetHeader,
    pub entries: Vec<SetEntry>,
    pub deleted: Vec<RelPath>,
}

impl SetManifest {
    pub fn write_to(&self, w: impl Write) -> std::io::Result<()> {
        write_manifest(
            w,
            &self.header,
            self.entries.iter().map(|e| (e, &e.parts[..])),
            &self.deleted,
        )
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v).expect("writing to memory");
        v
    }

    /// Parses untrusted bytes: every count and length checked, every path validated.
    pub fn read_from(r: impl Read, name: &str) -> Result<SetManifest> {
        let fail =
            |e: LineError| anyhow::anyhow!("{name}: damaged at line {}: {}", e.line, e.message);
        let bad = |line: usize, message: String| fail(LineError { line, message });
        let mut lines = Lines::new(r, MAX_LINE).map_err(fail)?;
        let header: SetHeader = lines
            .next_json("header")
            .map_err(fail)?
            .ok_or_else(|| bad(0, "empty".into()))?;
        if let Some(id) = std::iter::once(&header.set)
            .chain(header.base.as_ref())
            .find(|id| !is_set_id(id))
        {
            return Err(bad(1, format!("set {id:?} is not a UUID")));
        }
        if header.format != SET_FORMAT || header.version != VERSION {
            return Err(bad(
                1,
                format!(
                    "format {:?} version {} is not {SET_FORMAT:?} version {VERSION}",
                    header.format, header.version
                ),
            ));
        }
        let mut entries = Vec::new();
        for _ in 0..header.entries {
            let e: SetEntry = lines.next_json("entry").map_err(fail)?.ok_or_else(|| {
                bad(
                    lines.number(),
                    "truncated: fewer entries than announced".into(),
                )
            })?;
            validate_entry(&e.entry).map_err(|m| bad(lines.number(), m))?;
            check_set_entry(&e, &header).map_err(|m| bad(lines.number(), m))?;
            entries.push(e);
        }
        let mut deleted = Vec::new();
        for _ in 0..header.deleted {
            let d: Deleted = lines.next_json("deletion").map_err(fail)?.ok_or_else(|| {
                bad(
                    lines.number(),
                    "truncated: fewer deletions than announced".into(),
                )
            })?;
            deleted.push(d.deleted);
        }
        if lines.next_line().map_err(fail)?.is_some() {
            return Err(bad(
                lines.number(),
                "more lines than the header announces".into(),
            ));
        }
        if !entries
            .windows(2)
            .all(|w| w[0].entry.path < w[1].entry.path)
        {
            return Err(bad(
                0,
                "entries are not sorted by path or repeat one".into(),
            ));
        }
        Ok(SetManifest {
            header,
            entries,
            deleted,
        })
    }
}

fn check_set_entry(e: &SetEntry, h: &SetHeader) -> Result<(), String> {
    let p = &e.entry.path;
    match e.stored {
        Stored::Here if e.entry.kind == Kind::File => {
            if e.tape_path.is_none() {
                return Err(format!("{p} is stored here but has no tape_path"));
            }
            let mut at = 0u64;
            for part in &e.parts {
                if part.offset != at || part.length == 0 {
                    return Err(format!("{p}: its parts do not follow each other"));
                }
                if !h.tapes.iter().any(|t| t.seq == part.tape) {
                    return Err(format!(
                        "{p}: part on tape {}, which the header does not list",
                        part.tape
                    ));
                }
                at = at
                    .checked_add(part.length)
                    .ok_or_else(|| format!("{p}: part lengths overflow"))?;
            }
            if at != e.entry.size {
                return Err(format!(
                    "{p}: parts hold {at} bytes, the file has {}",
                    e.entry.size
                ));
            }
        }
        Stored::Renamed if e.from.is_none() => return Err(format!("{p} is renamed from nothing")),
        Stored::Link if e.entry.link.is_none() => return Err(format!("{p} is a link to nothing")),
        Stored::Base | Stored::Renamed if h.base.is_none() => {
            return Err(format!("{p} is in the base set, but this set has none"));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_cannot_be_ltfs_names_go_to_unnamed() {
        let p = |b: &[u8]| RelPath::parse(b).unwrap();
        assert_eq!(tape_path("S", "j", "s", &p(b"a/b.txt"), 3), "/j/s/a/b.txt");
        assert_eq!(tape_path("S", "j", "s", &p(b"caf\xc3\xa9"), 3), "/j/s/café");
        // Not UTF-8; not NFC (e + combining acute).
        assert_eq!(
            tape_path("S", "j", "s", &p(b"a/\xff"), 3),
            "/.rackvault/sets/S/unnamed/3"
        );
        assert_eq!(
            tape_path("S", "j", "s", &p("cafe\u{301}".as_bytes()), 4),
            "/.rackvault/sets/S/unnamed/4"
        );
    }

    #[test]
    fn a_damaged_manifest_is_an_error_naming_the_line() {
        let m = SetManifest {
            header: SetHeader {
                format: SET_FORMAT.into(),
                version: VERSION,
                set: "0badc0de-0000-4000-8000-000000000000".into(),
                job: "j".into(),
                snapshot: "s".into(),
                kind: SetKind::Full,
                base: None,
                base_snapshot: None,
                pool: "p".into(),
                copy: 1,
                created: "2026-12-07T00:00:00Z".into(),
                tapes: vec![SetTape {
                    seq: 1,
                    barcode: "A".into(),
                    volume_uuid: "u".into(),
                }],
                entries: 0,
                deleted: 0,
            },
            entries: Vec::new(),
            deleted: Vec::new(),
        };
        let ok = m.to_bytes();
        assert_eq!(SetManifest::read_from(&ok[..], "m").unwrap(), m);
        let mut more = m.clone();
        more.header.entries = 2;
        let e = SetManifest::read_from(&more.to_bytes()[..], "m").unwrap_err();
        assert!(
            e.to_string().contains("fewer entries than announced"),
            "{e}"
        );
        let e = SetManifest::read_from(&ok[..ok.len() - 3], "m").unwrap_err();
        assert!(e.to_string().starts_with("m: damaged at line"), "{e}");
        // A set id names a directory in the state directory: only a UUID is taken.
        let mut hostile = m.clone();
        hostile.header.set = "../../etc".into();
        let e = SetManifest::read_from(&hostile.to_bytes()[..], "m").unwrap_err();
        assert!(e.to_string().contains("is not a UUID"), "{e}");
        assert!(is_set_id("0badc0de-0000-4000-8000-000000000000"));
        assert!(!is_set_id("0BADC0DE-0000-4000-8000-000000000000"));
    }
}
