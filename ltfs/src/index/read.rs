//! The streaming, validating index reader. One pass over quick-xml events with an explicit stack of frames, one
//! per open element: no recursion over the XML depth and no DOM.

use super::names::{self, NameKind};
use super::{
    Directory, Entry, ErrorKind, Extent, File, FileContent, Index, IndexError, IndexLocation,
    Limits, LtfsTime, RawElement, Times, VolumeLockState, Xattr,
};
use base64::Engine as _;
use quick_xml::events::{BytesEnd, BytesRef, BytesStart, BytesText, Event};
use quick_xml::{Reader, XmlVersion};
use std::collections::HashSet;
use std::io::{self, BufRead, Read};

/// Largest offset or length accepted (`off_t`).
pub(super) const MAX_LEN: u64 = i64::MAX as u64;

/// A `BufRead` that hands out at most `left` bytes, so one XML event (which quick-xml buffers whole) cannot grow
/// without bound. `left` is refilled before each event.
struct Budget<R> {
    inner: R,
    left: usize,
    hit: bool,
}

impl<R: BufRead> Read for Budget<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Budget<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let left = self.left;
        if left == 0 {
            self.hit = true;
            return Err(io::Error::other("XML construct too large"));
        }
        let buf = self.inner.fill_buf()?;
        Ok(&buf[..buf.len().min(left)])
    }

    fn consume(&mut self, n: usize) {
        self.left = self.left.saturating_sub(n);
        self.inner.consume(n);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Creator,
    Comment,
    VolumeUuid,
    Generation,
    UpdateTime,
    AllowPolicyUpdate,
    HighestFileUid,
    VolumeLockState,
    Partition,
    StartBlock,
    Name,
    ReadOnly,
    CreationTime,
    ChangeTime,
    ModifyTime,
    AccessTime,
    BackupTime,
    FileUid,
    Length,
    Symlink,
    OpenForWrite,
    FileOffset,
    ByteOffset,
    ByteCount,
    Key,
    Value,
}

impl Field {
    fn tag(self) -> &'static str {
        match self {
            Field::Creator => "creator",
            Field::Comment => "comment",
            Field::VolumeUuid => "volumeuuid",
            Field::Generation => "generationnumber",
            Field::UpdateTime => "updatetime",
            Field::AllowPolicyUpdate => "allowpolicyupdate",
            Field::HighestFileUid => "highestfileuid",
            Field::VolumeLockState => "volumelockstate",
            Field::Partition => "partition",
            Field::StartBlock => "startblock",
            Field::Name => "name",
            Field::ReadOnly => "readonly",
            Field::CreationTime => "creationtime",
            Field::ChangeTime => "changetime",
            Field::ModifyTime => "modifytime",
            Field::AccessTime => "accesstime",
            Field::BackupTime => "backuptime",
            Field::FileUid => "fileuid",
            Field::Length => "length",
            Field::Symlink => "symlink",
            Field::OpenForWrite => "openforwrite",
            Field::FileOffset => "fileoffset",
            Field::ByteOffset => "byteoffset",
            Field::ByteCount => "bytecount",
            Field::Key => "key",
            Field::Value => "value",
        }
    }

    fn times_field(tag: &str) -> Option<Field> {
        Some(match tag {
            "creationtime" => Field::CreationTime,
            "changetime" => Field::ChangeTime,
            "modifytime" => Field::ModifyTime,
            "accesstime" => Field::AccessTime,
            "backuptime" => Field::BackupTime,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawTarget {
    Unknown,
    DataPlacement,
    Discard,
}

#[derive(Default)]
struct IndexB {
    version: String,
    creator: Option<String>,
    comment: Option<String>,
    uuid: Option<String>,
    generation: Option<u64>,
    update: Option<LtfsTime>,
    location: Option<IndexLocation>,
    previous: Option<IndexLocation>,
    allow: Option<bool>,
    dpp: Option<RawElement>,
    highest: Option<u64>,
    lock: Option<VolumeLockState>,
    root: Option<Directory>,
    unknown: Vec<RawElement>,
}

#[derive(Default)]
struct TimesB {
    creation: Option<LtfsTime>,
    change: Option<LtfsTime>,
    modify: Option<LtfsTime>,
    access: Option<LtfsTime>,
    backup: Option<LtfsTime>,
}

impl TimesB {
    fn slot(&mut self, f: Field) -> Option<&mut Option<LtfsTime>> {
        Some(match f {
            Field::CreationTime => &mut self.creation,
            Field::ChangeTime => &mut self.change,
            Field::ModifyTime => &mut self.modify,
            Field::AccessTime => &mut self.access,
            Field::BackupTime => &mut self.backup,
            _ => return None,
        })
    }

    fn build(self) -> Result<Times, ErrorKind> {
        Ok(Times {
            creation: self.creation.ok_or(ErrorKind::Missing("creationtime"))?,
            change: self.change.ok_or(ErrorKind::Missing("changetime"))?,
            modify: self.modify.ok_or(ErrorKind::Missing("modifytime"))?,
            access: self.access.ok_or(ErrorKind::Missing("accesstime"))?,
            backup: self.backup.ok_or(ErrorKind::Missing("backuptime"))?,
        })
    }
}

#[derive(Default)]
struct DirB {
    ord: u32,
    root: bool,
    name: Option<String>,
    read_only: Option<bool>,
    times: TimesB,
    uid: Option<u64>,
    xattrs: Option<Vec<Xattr>>,
    entries: Vec<Entry>,
    contents: bool,
    unknown: Vec<RawElement>,
}

#[derive(Default)]
struct FileB {
    ord: u32,
    name: Option<String>,
    length: Option<u64>,
    read_only: Option<bool>,
    times: TimesB,
    uid: Option<u64>,
    xattrs: Option<Vec<Xattr>>,
    extents: Option<Vec<Extent>>,
    symlink: Option<String>,
    open_for_write: Option<bool>,
    unknown: Vec<RawElement>,
}

#[derive(Default)]
struct XattrB {
    ord: u32,
    key: Option<String>,
    value: Option<Vec<u8>>,
}

#[derive(Default)]
struct ExtentB {
    ord: u32,
    file_offset: Option<u64>,
    partition: Option<char>,
    start_block: Option<u64>,
    byte_offset: Option<u64>,
    byte_count: Option<u64>,
}

struct LocB {
    previous: bool,
    partition: Option<char>,
    start_block: Option<u64>,
}

struct Leaf {
    field: Field,
    cap: usize,
    percent: bool,
    base64: bool,
}

struct Raw {
    name: String,
    xml: String,
    depth: usize,
    target: RawTarget,
}

enum Frame {
    Index(Box<IndexB>),
    Loc(LocB),
    Dir(Box<DirB>),
    Contents { files: u32, dirs: u32 },
    File(Box<FileB>),
    Xattrs(Vec<Xattr>),
    Xattr(XattrB),
    ExtentInfo(Vec<Extent>),
    Extent(ExtentB),
    Leaf(Leaf),
    Raw(Raw),
}

impl Frame {
    fn segment(&self) -> String {
        match self {
            Frame::Index(_) => "ltfsindex".into(),
            Frame::Loc(l) => if l.previous {
                "previousgenerationlocation"
            } else {
                "location"
            }
            .into(),
            Frame::Dir(d) if d.root => "directory".into(),
            Frame::Dir(d) => format!("directory[{}]", d.ord),
            Frame::Contents { .. } => "contents".into(),
            Frame::File(f) => format!("file[{}]", f.ord),
            Frame::Xattrs(_) => "extendedattributes".into(),
            Frame::Xattr(x) => format!("xattr[{}]", x.ord),
            Frame::ExtentInfo(_) => "extentinfo".into(),
            Frame::Extent(x) => format!("extent[{}]", x.ord),
            Frame::Leaf(l) => l.field.tag().into(),
            Frame::Raw(r) => r.name.clone(),
        }
    }
}

fn uint(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.bytes().try_fold(0u64, |a, b| {
        a.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn boolean(s: &str) -> Option<bool> {
    match s {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn partition(s: &str) -> Option<char> {
    let mut it = s.chars();
    match (it.next(), it.next()) {
        (Some(c), None) if c.is_ascii_lowercase() => Some(c),
        _ => None,
    }
}

pub(super) fn uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    ok.then(|| s.to_ascii_lowercase())
}

/// `X.Y.Z` (or legacy `1.0`) within 1.0.0 ..= 2.99.99.
fn version_ok(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    let n: Vec<u32> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    let t = match n.as_slice() {
        [1, 0] => (1, 0, 0),
        [a, b, c] => (*a, *b, *c),
        _ => return false,
    };
    ((1, 0, 0)..=(2, 99, 99)).contains(&t)
}

/// Whether `s` holds only characters XML 1.0 allows (no C0 controls other than TAB, LF, CR; no U+FFFE/U+FFFF).
fn xml_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.iter()
        .any(|&c| c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r'))
        && !(b.contains(&0xEF) && (s.contains('\u{FFFE}') || s.contains('\u{FFFF}')))
}

fn xml_char_ok(c: char) -> bool {
    !((c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}')
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

struct Parser<'l> {
    limits: &'l Limits,
    stack: Vec<Frame>,
    max_xml_depth: usize,
    dir_depth: usize,
    entries: u64,
    uids: Vec<u64>,
    done: Option<Index>,
    pos: u64,
    /// The text of the open leaf element (leaves do not nest), reused to spare an allocation per element.
    scratch: String,
}

type Res<T> = Result<T, IndexError>;

impl Parser<'_> {
    fn path(&self, extra: Option<&str>) -> String {
        let mut p = String::new();
        for f in &self.stack {
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(&f.segment());
        }
        if let Some(e) = extra {
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(e);
        }
        if p.is_empty() {
            p.push_str("(document)");
        }
        p
    }

    fn fail(&self, kind: ErrorKind) -> IndexError {
        IndexError::Invalid {
            offset: self.pos,
            path: self.path(None),
            kind,
        }
    }

    fn fail_in(&self, extra: &str, kind: ErrorKind) -> IndexError {
        IndexError::Invalid {
            offset: self.pos,
            path: self.path(Some(extra)),
            kind,
        }
    }

    fn leaf(&self, field: Field, s: &BytesStart<'_>) -> Res<Frame> {
        let l = self.limits;
        let cap = match field {
            Field::Name | Field::Key => l.max_name_bytes.saturating_mul(3),
            Field::Symlink => l.max_name_bytes.saturating_mul(12),
            Field::Value => l.max_xattr_value.saturating_mul(2).saturating_add(64),
            Field::Creator | Field::Comment => l.max_comment.saturating_mul(4),
            _ => 64,
        };
        let mut leaf = Leaf {
            field,
            cap,
            percent: false,
            base64: false,
        };
        for a in s.attributes() {
            let a = a.map_err(|e| self.fail_in(field.tag(), ErrorKind::Xml(e.to_string())))?;
            let v = a
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| self.fail_in(field.tag(), ErrorKind::Xml(e.to_string())))?;
            match (field, a.key.as_ref()) {
                (Field::Name | Field::Key | Field::Symlink, "percentencoded") => {
                    leaf.percent = boolean(&v).ok_or_else(|| {
                        self.fail_in(
                            field.tag(),
                            ErrorKind::BadValue {
                                what: "percentencoded",
                                value: clip(&v),
                            },
                        )
                    })?;
                }
                (Field::Value, "type") => match &*v {
                    "text" => {}
                    "base64" => leaf.base64 = true,
                    _ => {
                        return Err(self.fail_in(
                            field.tag(),
                            ErrorKind::BadValue {
                                what: "type",
                                value: clip(&v),
                            },
                        ));
                    }
                },
                _ => {}
            }
        }
        Ok(Frame::Leaf(leaf))
    }

    fn raw(&self, s: &BytesStart<'_>, empty: bool, target: RawTarget) -> Frame {
        let name = s.name().as_ref().to_string();
        let xml = format!("<{}{}", &**s, if empty { "/>" } else { ">" });
        Frame::Raw(Raw {
            name,
            xml,
            depth: 0,
            target,
        })
    }

    fn start(&mut self, s: &BytesStart<'_>, empty: bool) -> Res<()> {
        if !xml_chars_ok(s) {
            return Err(self.fail(ErrorKind::Xml(
                "a character XML 1.0 does not allow (a C0 control or U+FFFE/U+FFFF)".into(),
            )));
        }
        let open = self.stack.len();
        if let Some(Frame::Raw(r)) = self.stack.last_mut() {
            // Elements open before this one: the frames and the unknown element's own open children.
            let open = open + r.depth;
            if !empty {
                r.depth += 1;
            }
            r.xml.push('<');
            r.xml.push_str(s);
            r.xml.push_str(if empty { "/>" } else { ">" });
            let len = r.xml.len();
            if len > self.limits.max_unknown {
                return Err(self.fail(ErrorKind::Limit(format!(
                    "unknown element longer than {} bytes",
                    self.limits.max_unknown
                ))));
            }
            if open >= self.max_xml_depth {
                return Err(self.fail(ErrorKind::Limit(format!(
                    "XML nesting deeper than {}",
                    self.max_xml_depth
                ))));
            }
            return Ok(());
        }
        let name: &str = s.name().0;
        if self.done.is_some() {
            return Err(self.fail(ErrorKind::Unexpected(format!(
                "element <{}> after </ltfsindex>",
                clip(name)
            ))));
        }
        if self.stack.len() >= self.max_xml_depth {
            return Err(self.fail(ErrorKind::Limit(format!(
                "XML nesting deeper than {}",
                self.max_xml_depth
            ))));
        }
        let frame = match self.stack.last_mut() {
            None => {
                if name != "ltfsindex" {
                    return Err(self.fail(ErrorKind::NotAnIndex(format!(
                        "the root element is <{}>",
                        clip(name)
                    ))));
                }
                let mut version = None;
                for a in s.attributes() {
                    let a = a.map_err(|e| self.fail(ErrorKind::Xml(e.to_string())))?;
                    if a.key.as_ref() == "version" {
                        version = Some(
                            a.normalized_value(XmlVersion::Implicit1_0)
                                .map_err(|e| self.fail(ErrorKind::Xml(e.to_string())))?,
                        );
                    }
                }
                let Some(version) = version else {
                    return Err(self.fail_in("ltfsindex", ErrorKind::Missing("version attribute")));
                };
                if !version_ok(&version) {
                    return Err(self.fail_in("ltfsindex", ErrorKind::Version(clip(&version))));
                }
                Frame::Index(Box::new(IndexB {
                    version: version.into_owned(),
                    ..IndexB::default()
                }))
            }
            Some(Frame::Index(_)) => match name {
                "creator" => self.leaf(Field::Creator, s)?,
                "comment" => self.leaf(Field::Comment, s)?,
                "volumeuuid" => self.leaf(Field::VolumeUuid, s)?,
                "generationnumber" => self.leaf(Field::Generation, s)?,
                "updatetime" => self.leaf(Field::UpdateTime, s)?,
                "allowpolicyupdate" => self.leaf(Field::AllowPolicyUpdate, s)?,
                "highestfileuid" => self.leaf(Field::HighestFileUid, s)?,
                "volumelockstate" => self.leaf(Field::VolumeLockState, s)?,
                "location" => Frame::Loc(LocB {
                    previous: false,
                    partition: None,
                    start_block: None,
                }),
                "previousgenerationlocation" => Frame::Loc(LocB {
                    previous: true,
                    partition: None,
                    start_block: None,
                }),
                "dataplacementpolicy" => self.raw(s, empty, RawTarget::DataPlacement),
                "directory" => {
                    self.open_dir()?;
                    Frame::Dir(Box::new(DirB {
                        root: true,
                        ..DirB::default()
                    }))
                }
                _ => self.raw(s, empty, RawTarget::Unknown),
            },
            Some(Frame::Loc(_)) => match name {
                "partition" => self.leaf(Field::Partition, s)?,
                "startblock" => self.leaf(Field::StartBlock, s)?,
                _ => self.raw(s, empty, RawTarget::Discard),
            },
            Some(Frame::Dir(d)) => match name {
                "contents" => {
                    if d.contents {
                        return Err(self.fail(ErrorKind::Duplicate("contents")));
                    }
                    d.contents = true;
                    Frame::Contents { files: 0, dirs: 0 }
                }
                "extendedattributes" => Frame::Xattrs(Vec::new()),
                "name" => self.leaf(Field::Name, s)?,
                "readonly" => self.leaf(Field::ReadOnly, s)?,
                "fileuid" => self.leaf(Field::FileUid, s)?,
                t => match Field::times_field(t) {
                    Some(f) => self.leaf(f, s)?,
                    None => self.raw(s, empty, RawTarget::Unknown),
                },
            },
            Some(Frame::Contents { files, dirs }) => match name {
                "file" => {
                    *files = files.saturating_add(1);
                    let ord = *files;
                    self.count_entry()?;
                    Frame::File(Box::new(FileB {
                        ord,
                        ..FileB::default()
                    }))
                }
                "directory" => {
                    *dirs = dirs.saturating_add(1);
                    let ord = *dirs;
                    self.open_dir()?;
                    Frame::Dir(Box::new(DirB {
                        ord,
                        ..DirB::default()
                    }))
                }
                _ => self.raw(s, empty, RawTarget::Discard),
            },
            Some(Frame::File(_)) => match name {
                "name" => self.leaf(Field::Name, s)?,
                "length" => self.leaf(Field::Length, s)?,
                "readonly" => self.leaf(Field::ReadOnly, s)?,
                "fileuid" => self.leaf(Field::FileUid, s)?,
                "symlink" => self.leaf(Field::Symlink, s)?,
                "openforwrite" => self.leaf(Field::OpenForWrite, s)?,
                "extendedattributes" => Frame::Xattrs(Vec::new()),
                "extentinfo" => Frame::ExtentInfo(Vec::with_capacity(1)),
                t => match Field::times_field(t) {
                    Some(f) => self.leaf(f, s)?,
                    None => self.raw(s, empty, RawTarget::Unknown),
                },
            },
            Some(Frame::Xattrs(list)) => match name {
                "xattr" => Frame::Xattr(XattrB {
                    ord: u32::try_from(list.len())
                        .unwrap_or(u32::MAX)
                        .saturating_add(1),
                    ..XattrB::default()
                }),
                _ => self.raw(s, empty, RawTarget::Discard),
            },
            Some(Frame::Xattr(_)) => match name {
                "key" => self.leaf(Field::Key, s)?,
                "value" => self.leaf(Field::Value, s)?,
                _ => self.raw(s, empty, RawTarget::Discard),
            },
            Some(Frame::ExtentInfo(list)) => match name {
                "extent" => Frame::Extent(ExtentB {
                    ord: u32::try_from(list.len())
                        .unwrap_or(u32::MAX)
                        .saturating_add(1),
                    ..ExtentB::default()
                }),
                _ => self.raw(s, empty, RawTarget::Discard),
            },
            Some(Frame::Extent(_)) => match name {
                "fileoffset" => self.leaf(Field::FileOffset, s)?,
                "partition" => self.leaf(Field::Partition, s)?,
                "startblock" => self.leaf(Field::StartBlock, s)?,
                "byteoffset" => self.leaf(Field::ByteOffset, s)?,
                "bytecount" => self.leaf(Field::ByteCount, s)?,
                _ => self.raw(s, empty, RawTarget::Discard),
            },
            Some(Frame::Leaf(_)) => {
                return Err(self.fail(ErrorKind::Unexpected(format!(
                    "element <{}> inside a value",
                    clip(name)
                ))));
            }
            Some(Frame::Raw(_)) => unreachable_raw(),
        };
        if matches!(frame, Frame::Leaf(_)) {
            self.scratch.clear();
        }
        self.stack.push(frame);
        if empty {
            self.close()?;
        }
        Ok(())
    }

    fn count_entry(&mut self) -> Res<()> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.fail(ErrorKind::Limit(format!(
                "more than {} entries",
                self.limits.max_entries
            ))));
        }
        Ok(())
    }

    fn open_dir(&mut self) -> Res<()> {
        self.count_entry()?;
        self.dir_depth += 1;
        if self.dir_depth > self.limits.max_depth + 1 {
            return Err(self.fail(ErrorKind::Limit(format!(
                "directories nested deeper than {}",
                self.limits.max_depth
            ))));
        }
        Ok(())
    }

    fn end(&mut self, e: &BytesEnd<'_>) -> Res<()> {
        if let Some(Frame::Raw(r)) = self.stack.last_mut() {
            r.xml.push_str("</");
            r.xml.push_str(e.name().0);
            r.xml.push('>');
            if r.xml.len() > self.limits.max_unknown {
                return Err(self.fail(ErrorKind::Limit(format!(
                    "unknown element longer than {} bytes",
                    self.limits.max_unknown
                ))));
            }
            if r.depth > 0 {
                r.depth -= 1;
                return Ok(());
            }
        }
        if self.stack.is_empty() {
            return Err(self.fail(ErrorKind::Xml(format!("unmatched </{}>", clip(e.name().0)))));
        }
        self.close()
    }

    fn text(&mut self, t: &BytesText<'_>) -> Res<()> {
        if !xml_chars_ok(t) {
            return Err(self.fail(ErrorKind::Xml(
                "a character XML 1.0 does not allow (a C0 control or U+FFFE/U+FFFF)".into(),
            )));
        }
        match self.stack.last_mut() {
            Some(Frame::Raw(r)) => {
                r.xml.push_str(t);
                if r.xml.len() > self.limits.max_unknown {
                    return Err(self.fail(ErrorKind::Limit(format!(
                        "unknown element longer than {} bytes",
                        self.limits.max_unknown
                    ))));
                }
                Ok(())
            }
            Some(Frame::Leaf(l)) => {
                let s = t.xml_content(XmlVersion::Implicit1_0);
                if self.scratch.len() + s.len() > l.cap {
                    let (tag, cap) = (l.field.tag(), l.cap);
                    return Err(
                        self.fail(ErrorKind::Limit(format!("<{tag}> longer than {cap} bytes")))
                    );
                }
                self.scratch.push_str(&s);
                Ok(())
            }
            _ if t.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) => Ok(()),
            _ => Err(self.fail(ErrorKind::Unexpected(format!("text {:?}", clip(t.trim()))))),
        }
    }

    fn general_ref(&mut self, r: &BytesRef<'_>) -> Res<()> {
        let c = match &**r {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "apos" => Some('\''),
            "quot" => Some('"'),
            _ => r
                .resolve_char_ref()
                .ok()
                .flatten()
                .filter(|&c| xml_char_ok(c)),
        };
        match self.stack.last_mut() {
            Some(Frame::Raw(raw)) if c.is_some() => {
                raw.xml.push('&');
                raw.xml.push_str(r);
                raw.xml.push(';');
                if raw.xml.len() > self.limits.max_unknown {
                    return Err(self.fail(ErrorKind::Limit(format!(
                        "unknown element longer than {} bytes",
                        self.limits.max_unknown
                    ))));
                }
                Ok(())
            }
            Some(Frame::Leaf(l)) if c.is_some() => {
                if self.scratch.len() + 4 > l.cap {
                    let (tag, cap) = (l.field.tag(), l.cap);
                    return Err(
                        self.fail(ErrorKind::Limit(format!("<{tag}> longer than {cap} bytes")))
                    );
                }
                self.scratch.extend(c);
                Ok(())
            }
            _ if c.is_none() => Err(self.fail(ErrorKind::Xml(format!(
                "unknown entity or disallowed character reference &{};",
                clip(r)
            )))),
            _ => Err(self.fail(ErrorKind::Unexpected(format!("text &{};", clip(r))))),
        }
    }

    /// Pops the top frame and hands what it built to its parent.
    fn close(&mut self) -> Res<()> {
        let Some(frame) = self.stack.pop() else {
            return Err(self.fail(ErrorKind::Xml("unmatched end tag".into())));
        };
        match frame {
            Frame::Leaf(l) => self.close_leaf(l),
            Frame::Raw(r) => {
                let raw = RawElement { xml: r.xml };
                match (r.target, self.stack.last_mut()) {
                    (RawTarget::Discard, _) => {}
                    (RawTarget::DataPlacement, Some(Frame::Index(ix))) => {
                        if ix.dpp.is_some() {
                            return Err(self.fail(ErrorKind::Duplicate("dataplacementpolicy")));
                        }
                        ix.dpp = Some(raw);
                    }
                    (RawTarget::Unknown, Some(Frame::Index(ix))) => ix.unknown.push(raw),
                    (RawTarget::Unknown, Some(Frame::Dir(d))) => d.unknown.push(raw),
                    (RawTarget::Unknown, Some(Frame::File(f))) => f.unknown.push(raw),
                    _ => {}
                }
                Ok(())
            }
            Frame::Loc(l) => {
                let seg = if l.previous {
                    "previousgenerationlocation"
                } else {
                    "location"
                };
                let loc = IndexLocation {
                    partition: l
                        .partition
                        .ok_or_else(|| self.fail_in(seg, ErrorKind::Missing("partition")))?,
                    start_block: l
                        .start_block
                        .ok_or_else(|| self.fail_in(seg, ErrorKind::Missing("startblock")))?,
                };
                let Some(Frame::Index(ix)) = self.stack.last_mut() else {
                    return Ok(());
                };
                let slot = if l.previous {
                    &mut ix.previous
                } else {
                    &mut ix.location
                };
                if slot.replace(loc).is_some() {
                    return Err(self.fail(ErrorKind::Duplicate(seg)));
                }
                Ok(())
            }
            Frame::Contents { .. } => Ok(()),
            Frame::Xattrs(list) => {
                let mut seen = HashSet::with_capacity(list.len());
                for x in &list {
                    if !seen.insert(x.key.as_str()) {
                        return Err(self.fail_in(
                            "extendedattributes",
                            ErrorKind::DuplicateXattr(clip(&x.key)),
                        ));
                    }
                }
                let slot = match self.stack.last_mut() {
                    Some(Frame::Dir(d)) => &mut d.xattrs,
                    Some(Frame::File(f)) => &mut f.xattrs,
                    _ => return Ok(()),
                };
                if slot.replace(list).is_some() {
                    return Err(self.fail(ErrorKind::Duplicate("extendedattributes")));
                }
                Ok(())
            }
            Frame::Xattr(x) => {
                let seg = format!("xattr[{}]", x.ord);
                let xa = Xattr {
                    key: x
                        .key
                        .ok_or_else(|| self.fail_in(&seg, ErrorKind::Missing("key")))?,
                    value: x
                        .value
                        .ok_or_else(|| self.fail_in(&seg, ErrorKind::Missing("value")))?,
                };
                if let Some(Frame::Xattrs(list)) = self.stack.last_mut() {
                    list.push(xa);
                }
                Ok(())
            }
            Frame::ExtentInfo(list) => {
                let Some(Frame::File(f)) = self.stack.last_mut() else {
                    return Ok(());
                };
                if f.extents.replace(list).is_some() {
                    return Err(self.fail(ErrorKind::Duplicate("extentinfo")));
                }
                Ok(())
            }
            Frame::Extent(x) => {
                let seg = format!("extent[{}]", x.ord);
                let m = |what| self.fail_in(&seg, ErrorKind::Missing(what));
                let ext = Extent {
                    file_offset: x.file_offset.ok_or_else(|| m("fileoffset"))?,
                    partition: x.partition.ok_or_else(|| m("partition"))?,
                    start_block: x.start_block.ok_or_else(|| m("startblock"))?,
                    byte_offset: x.byte_offset.ok_or_else(|| m("byteoffset"))?,
                    byte_count: x.byte_count.ok_or_else(|| m("bytecount"))?,
                };
                if ext
                    .file_offset
                    .checked_add(ext.byte_count)
                    .is_none_or(|e| e > MAX_LEN)
                {
                    return Err(self.fail_in(
                        &seg,
                        ErrorKind::BadValue {
                            what: "extent end",
                            value: format!("{} + {}", ext.file_offset, ext.byte_count),
                        },
                    ));
                }
                if let Some(Frame::ExtentInfo(list)) = self.stack.last_mut() {
                    list.push(ext);
                }
                Ok(())
            }
            Frame::File(f) => {
                let seg = format!("file[{}]", f.ord);
                let file = self.build_file(*f).map_err(|k| self.fail_in(&seg, k))?;
                self.uids.push(file.uid);
                self.push_entry(Entry::File(file), &seg)
            }
            Frame::Dir(d) => {
                self.dir_depth -= 1;
                let seg = if d.root {
                    "directory".to_string()
                } else {
                    format!("directory[{}]", d.ord)
                };
                let dir = self.build_dir(*d).map_err(|k| self.fail_in(&seg, k))?;
                self.uids.push(dir.uid);
                match self.stack.last_mut() {
                    Some(Frame::Index(ix)) => {
                        if ix.root.replace(dir).is_some() {
                            return Err(self.fail(ErrorKind::Duplicate("directory")));
                        }
                        Ok(())
                    }
                    _ => self.push_entry(Entry::Directory(dir), &seg),
                }
            }
            Frame::Index(ix) => {
                let index = self
                    .build_index(*ix)
                    .map_err(|k| self.fail_in("ltfsindex", k))?;
                self.done = Some(index);
                Ok(())
            }
        }
    }

    fn push_entry(&mut self, e: Entry, seg: &str) -> Res<()> {
        let n = self.stack.len();
        if n >= 2
            && let Frame::Dir(d) = &mut self.stack[n - 2]
        {
            d.entries.push(e);
            return Ok(());
        }
        Err(self.fail_in(
            seg,
            ErrorKind::Unexpected("entry outside a directory".into()),
        ))
    }

    fn build_file(&self, f: FileB) -> Result<File, ErrorKind> {
        let name = f.name.ok_or(ErrorKind::Missing("name"))?;
        let length = f.length.ok_or(ErrorKind::Missing("length"))?;
        let read_only = f.read_only.ok_or(ErrorKind::Missing("readonly"))?;
        let times = f.times.build()?;
        let uid = f.uid.ok_or(ErrorKind::Missing("fileuid"))?;
        if uid < 2 {
            return Err(ErrorKind::Uid(uid, "must be at least 2 (1 is the root's)"));
        }
        let content = match (f.extents, f.symlink) {
            (Some(_), Some(_)) => return Err(ErrorKind::ExtentAndSymlink),
            (None, Some(t)) => FileContent::Symlink(t),
            (ext, None) => {
                let mut ext = shrunk(ext.unwrap_or_default());
                ext.sort_by_key(|x| x.file_offset);
                let mut end = 0u64;
                for x in &ext {
                    if x.file_offset < end {
                        return Err(ErrorKind::ExtentOverlap(x.file_offset));
                    }
                    end = x.file_offset + x.byte_count; // checked at the extent's close
                }
                if end > length {
                    return Err(ErrorKind::ExtentTooLong { end, length });
                }
                FileContent::Extents(ext)
            }
        };
        Ok(File {
            name,
            length,
            read_only,
            times,
            uid,
            xattrs: f.xattrs.map(shrunk).unwrap_or_default(),
            content,
            unknown: f.unknown,
        })
    }

    fn build_dir(&self, d: DirB) -> Result<Directory, ErrorKind> {
        let name = d.name.ok_or(ErrorKind::Missing("name"))?;
        let read_only = d.read_only.ok_or(ErrorKind::Missing("readonly"))?;
        let times = d.times.build()?;
        let uid = d.uid.ok_or(ErrorKind::Missing("fileuid"))?;
        if !d.contents {
            return Err(ErrorKind::Missing("contents"));
        }
        if d.root && uid != 1 {
            return Err(ErrorKind::Uid(uid, "the root directory's must be 1"));
        }
        if !d.root && uid < 2 {
            return Err(ErrorKind::Uid(uid, "must be at least 2 (1 is the root's)"));
        }
        if !d.root && name.is_empty() {
            return Err(ErrorKind::Name {
                name,
                error: names::NameError::Empty,
            });
        }
        let mut seen = HashSet::with_capacity(d.entries.len());
        for e in &d.entries {
            if !seen.insert(e.name()) {
                return Err(ErrorKind::DuplicateName(clip(e.name())));
            }
        }
        drop(seen);
        Ok(Directory {
            name,
            read_only,
            times,
            uid,
            xattrs: d.xattrs.map(shrunk).unwrap_or_default(),
            entries: shrunk(d.entries),
            unknown: d.unknown,
        })
    }

    fn build_index(&mut self, ix: IndexB) -> Result<Index, ErrorKind> {
        let highest = ix.highest.ok_or(ErrorKind::Missing("highestfileuid"))?;
        let index = Index {
            version: ix.version,
            creator: ix.creator.ok_or(ErrorKind::Missing("creator"))?,
            comment: ix.comment,
            volume_uuid: ix.uuid.ok_or(ErrorKind::Missing("volumeuuid"))?,
            generation: ix
                .generation
                .ok_or(ErrorKind::Missing("generationnumber"))?,
            update_time: ix.update.ok_or(ErrorKind::Missing("updatetime"))?,
            location: ix.location.ok_or(ErrorKind::Missing("location"))?,
            previous: ix.previous,
            allow_policy_update: ix.allow.ok_or(ErrorKind::Missing("allowpolicyupdate"))?,
            data_placement_policy: ix.dpp,
            highest_file_uid: highest,
            volume_lock_state: ix.lock,
            root: ix.root.ok_or(ErrorKind::Missing("directory"))?,
            unknown: ix.unknown,
        };
        let mut uids = std::mem::take(&mut self.uids);
        uids.sort_unstable();
        if let Some(w) = uids.windows(2).find(|w| w[0] == w[1]) {
            return Err(ErrorKind::Uid(w[0], "used more than once"));
        }
        if let Some(&max) = uids.last()
            && max > highest
        {
            return Err(ErrorKind::HighestUid { highest, max });
        }
        Ok(index)
    }

    fn close_leaf(&mut self, l: Leaf) -> Res<()> {
        let tag = l.field.tag();
        let text: &str = &self.scratch;
        let bad = |what: &'static str, v: &str| ErrorKind::BadValue {
            what,
            value: clip(v),
        };
        let err = |p: &Self, k: ErrorKind| p.fail_in(tag, k);
        let limits = self.limits;
        macro_rules! set {
            ($slot:expr, $v:expr) => {{
                let v = $v;
                if $slot.replace(v).is_some() {
                    return Err(self.fail_in(tag, ErrorKind::Duplicate(tag)));
                }
                return Ok(());
            }};
        }
        let num = |p: &Self, max: u64| -> Res<u64> {
            match uint(text) {
                Some(n) if n <= max => Ok(n),
                _ => Err(err(p, bad(tag, text))),
            }
        };
        let flag = |p: &Self| boolean(text).ok_or_else(|| err(p, bad(tag, text)));
        let time = |p: &Self| LtfsTime::parse(text).map_err(|e| err(p, ErrorKind::Time(e)));
        let name = |p: &Self, kind: NameKind| -> Res<String> {
            let decoded = if l.percent {
                names::percent_decode(text, kind == NameKind::SymlinkTarget).map_err(|error| {
                    err(
                        p,
                        ErrorKind::Name {
                            name: clip(text),
                            error,
                        },
                    )
                })?
            } else {
                text.to_string()
            };
            let n = names::nfc(&decoded).into_owned();
            let max = if kind == NameKind::SymlinkTarget {
                limits.max_name_bytes * 4
            } else {
                limits.max_name_bytes
            };
            names::validate(&n, kind, max).map_err(|error| {
                err(
                    p,
                    ErrorKind::Name {
                        name: clip(&n),
                        error,
                    },
                )
            })?;
            Ok(n)
        };
        #[derive(PartialEq, Clone, Copy)]
        enum P {
            Index,
            Loc,
            Extent,
            Xattr,
            Dir(bool),
            File,
            Other,
        }
        let parent = match self.stack.last() {
            Some(Frame::Index(_)) => P::Index,
            Some(Frame::Loc(_)) => P::Loc,
            Some(Frame::Extent(_)) => P::Extent,
            Some(Frame::Xattr(_)) => P::Xattr,
            Some(Frame::Dir(d)) => P::Dir(d.root),
            Some(Frame::File(_)) => P::File,
            _ => P::Other,
        };
        macro_rules! top {
            ($pat:ident) => {
                match self.stack.last_mut() {
                    Some(Frame::$pat(x)) => x,
                    _ => return Ok(()),
                }
            };
        }
        match (parent, l.field) {
            (P::Index, Field::Creator | Field::Comment) => {
                if text.chars().count() > limits.max_comment {
                    return Err(err(
                        self,
                        ErrorKind::Limit(format!(
                            "<{tag}> longer than {} characters",
                            limits.max_comment
                        )),
                    ));
                }
                let ix = top!(Index);
                if l.field == Field::Creator {
                    set!(ix.creator, text.to_string())
                } else {
                    set!(ix.comment, text.to_string())
                }
            }
            (P::Index, Field::VolumeUuid) => {
                let v = uuid(text).ok_or_else(|| err(self, bad(tag, text)))?;
                set!(top!(Index).uuid, v)
            }
            (P::Index, Field::Generation) => {
                let v = num(self, MAX_LEN)?;
                set!(top!(Index).generation, v)
            }
            (P::Index, Field::UpdateTime) => {
                let v = time(self)?;
                set!(top!(Index).update, v)
            }
            (P::Index, Field::AllowPolicyUpdate) => {
                let v = flag(self)?;
                set!(top!(Index).allow, v)
            }
            (P::Index, Field::HighestFileUid) => {
                let v = num(self, u64::MAX)?;
                set!(top!(Index).highest, v)
            }
            (P::Index, Field::VolumeLockState) => {
                let v = VolumeLockState::parse(text).ok_or_else(|| err(self, bad(tag, text)))?;
                set!(top!(Index).lock, v)
            }
            (P::Loc | P::Extent, Field::Partition) => {
                let v = partition(text).ok_or_else(|| err(self, bad(tag, text)))?;
                if parent == P::Loc {
                    set!(top!(Loc).partition, v)
                } else {
                    set!(top!(Extent).partition, v)
                }
            }
            (P::Loc, _) => {
                let v = num(self, MAX_LEN)?;
                set!(top!(Loc).start_block, v)
            }
            (P::Extent, f) => {
                let v = num(self, MAX_LEN)?;
                let x = top!(Extent);
                match f {
                    Field::FileOffset => set!(x.file_offset, v),
                    Field::StartBlock => set!(x.start_block, v),
                    Field::ByteOffset => set!(x.byte_offset, v),
                    _ => set!(x.byte_count, v),
                }
            }
            (P::Xattr, Field::Key) => {
                let v = name(self, NameKind::XattrKey)?;
                set!(top!(Xattr).key, v)
            }
            (P::Xattr, _) => {
                let v = if l.base64 {
                    let compact: Vec<u8> =
                        text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
                    base64::engine::general_purpose::STANDARD
                        .decode(&compact)
                        .map_err(|e| {
                            err(
                                self,
                                ErrorKind::BadValue {
                                    what: "base64 value",
                                    value: e.to_string(),
                                },
                            )
                        })?
                } else {
                    text.as_bytes().to_vec()
                };
                if v.len() > limits.max_xattr_value {
                    return Err(err(
                        self,
                        ErrorKind::Limit(format!(
                            "xattr value longer than {} bytes",
                            limits.max_xattr_value
                        )),
                    ));
                }
                set!(top!(Xattr).value, v)
            }
            (P::Dir(root), Field::Name) => {
                let v = name(
                    self,
                    if root {
                        NameKind::Root
                    } else {
                        NameKind::Entry
                    },
                )?;
                set!(top!(Dir).name, v)
            }
            (P::File, Field::Name) => {
                let v = name(self, NameKind::Entry)?;
                set!(top!(File).name, v)
            }
            (P::File, Field::Symlink) => {
                let v = name(self, NameKind::SymlinkTarget)?;
                set!(top!(File).symlink, v)
            }
            (P::Dir(_), Field::ReadOnly) => {
                let v = flag(self)?;
                set!(top!(Dir).read_only, v)
            }
            (P::File, Field::ReadOnly) => {
                let v = flag(self)?;
                set!(top!(File).read_only, v)
            }
            (P::File, Field::OpenForWrite) => {
                let v = flag(self)?;
                set!(top!(File).open_for_write, v)
            }
            (P::Dir(_), Field::FileUid) => {
                let v = num(self, MAX_LEN)?;
                set!(top!(Dir).uid, v)
            }
            (P::File, Field::FileUid) => {
                let v = num(self, MAX_LEN)?;
                set!(top!(File).uid, v)
            }
            (P::File, Field::Length) => {
                let v = num(self, MAX_LEN)?;
                set!(top!(File).length, v)
            }
            (P::Dir(_) | P::File, f) => {
                let v = time(self)?;
                let times = match self.stack.last_mut() {
                    Some(Frame::Dir(d)) => &mut d.times,
                    Some(Frame::File(x)) => &mut x.times,
                    _ => return Ok(()),
                };
                if let Some(slot) = times.slot(f) {
                    set!(slot, v)
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// `v` in an allocation of exactly its length. A fresh allocation rather than `shrink_to_fit`: glibc shrinks in
/// place and the small tails it frees sit in fastbins that only same-size requests reuse (+40% RSS on 1 M files).
fn shrunk<T>(mut v: Vec<T>) -> Vec<T> {
    if v.len() == v.capacity() {
        return v;
    }
    let mut exact = Vec::with_capacity(v.len());
    exact.append(&mut v);
    exact
}

fn unreachable_raw() -> Frame {
    // Raw frames are handled before the match in `start`; keep a harmless value rather than panicking.
    Frame::Raw(Raw {
        name: String::new(),
        xml: String::new(),
        depth: 0,
        target: RawTarget::Discard,
    })
}

impl Index {
    /// Reads and validates an index (ltfs-format.md §4) from a stream, without building a DOM. Any problem is an
    /// [`IndexError::Invalid`] with the byte offset and element path; this never panics on bad input.
    ///
    /// Checked here: the XML declaration says UTF-8; no CDATA or DOCTYPE; version 1.0.0–2.99.99; every required
    /// element present once; integers plain decimal ≤ 2⁶³−1 (highestfileuid ≤ 2⁶⁴−1); times per §4; partitions
    /// `a`–`z`; the UUID; names percent-decoded, NFC-normalised and valid (no `/`, `.`, `..`, NUL, U+001F,
    /// U+FFFE/U+FFFF, ≤ 255 code points), unique per directory; root UID 1, others ≥ 2 and unique,
    /// `highestfileuid` ≥ every UID; extents sorted, not overlapping, ending within `length`; and [`Limits`].
    /// What needs the medium (EOD, block size) is [`Index::validate_extents`].
    pub fn read_xml<R: BufRead>(r: R, limits: &Limits) -> Result<Index, IndexError> {
        let event_cap = (1usize << 20)
            .max(
                limits
                    .max_xattr_value
                    .saturating_mul(2)
                    .saturating_add(1024),
            )
            .max(limits.max_comment.saturating_mul(4).saturating_add(1024))
            .max(limits.max_unknown.saturating_add(1024))
            .max(
                limits
                    .max_name_bytes
                    .saturating_mul(12)
                    .saturating_add(1024),
            );
        let mut reader = Reader::from_reader(Budget {
            inner: r,
            left: event_cap,
            hit: false,
        });
        {
            let c = reader.config_mut();
            c.expand_empty_elements = false;
            c.check_end_names = true;
            c.trim_text(false);
        }
        let mut p = Parser {
            limits,
            stack: Vec::new(),
            max_xml_depth: limits.max_xml_depth,
            dir_depth: 0,
            entries: 0,
            uids: Vec::new(),
            done: None,
            pos: 0,
            scratch: String::new(),
        };
        let mut buf = Vec::new();
        let mut first = true;
        loop {
            buf.clear();
            if buf.capacity() > 4 * event_cap {
                buf.shrink_to(event_cap);
            }
            let g = reader.get_mut();
            g.left = event_cap;
            g.hit = false;
            let ev = match reader.read_event_into(&mut buf) {
                Ok(ev) => ev,
                Err(e) => {
                    p.pos = reader.error_position();
                    if reader.get_ref().hit {
                        return Err(p.fail(ErrorKind::Limit(format!(
                            "an XML construct longer than {event_cap} bytes"
                        ))));
                    }
                    if let quick_xml::Error::Io(io) = &e {
                        return Err(IndexError::Io(io::Error::new(io.kind(), io.to_string())));
                    }
                    return Err(p.fail(ErrorKind::Xml(e.to_string())));
                }
            };
            p.pos = reader.buffer_position();
            if first {
                first = false;
                match &ev {
                    Event::Decl(d) => match d.encoding() {
                        Some(Ok(enc)) if enc.eq_ignore_ascii_case("UTF-8") => continue,
                        _ => {
                            return Err(p.fail(ErrorKind::NotAnIndex(
                                "the XML declaration must say encoding=\"UTF-8\"".into(),
                            )));
                        }
                    },
                    Event::Eof => return Err(p.fail(ErrorKind::NotAnIndex("empty input".into()))),
                    _ => {
                        return Err(p.fail(ErrorKind::NotAnIndex(
                            "missing <?xml version=\"1.0\" encoding=\"UTF-8\"?>".into(),
                        )));
                    }
                }
            }
            match ev {
                Event::Start(s) => p.start(&s, false)?,
                Event::Empty(s) => p.start(&s, true)?,
                Event::End(e) => p.end(&e)?,
                Event::Text(t) => p.text(&t)?,
                Event::GeneralRef(r) => p.general_ref(&r)?,
                Event::CData(_) => return Err(p.fail(ErrorKind::Cdata)),
                Event::DocType(_) => return Err(p.fail(ErrorKind::Unexpected("DOCTYPE".into()))),
                Event::Decl(_) => {
                    return Err(p.fail(ErrorKind::Unexpected("second XML declaration".into())));
                }
                Event::Comment(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
        }
        match p.done.take() {
            Some(ix) if p.stack.is_empty() => Ok(ix),
            _ if p.stack.is_empty() => {
                Err(p.fail(ErrorKind::NotAnIndex("no <ltfsindex> element".into())))
            }
            _ => Err(p.fail(ErrorKind::Xml(
                "unexpected end of input (truncated index)".into(),
            ))),
        }
    }
}
