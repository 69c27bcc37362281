//! The streaming index writer: the §4 form, one element per line, straight into the caller's `Write`.

use super::names::{self, NameKind};
use super::packed::{NONE, Packed, Unpacked};
use super::read::MAX_LEN;
use super::{
    Directory, Entry, ErrorKind, File, FileContent, INDEX_VERSION, Index, IndexError, Limits,
    RawElement, Times, Xattr,
};
use base64::Engine as _;
use quick_xml::events::Event;
use std::collections::HashSet;
use std::io::{self, BufWriter, Write};

/// Appends `s` escaped for element content: `&`, `<`, `>` and CR (as `&#13;`, which XML would otherwise
/// turn into LF).
fn esc(w: &mut impl Write, s: &str) -> io::Result<()> {
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let rep: &[u8] = match c {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\r' => b"&#13;",
            _ => continue,
        };
        w.write_all(&b[start..i])?;
        w.write_all(rep)?;
        start = i + 1;
    }
    w.write_all(&b[start..])
}

/// Text that XML 1.0 can carry: no C0 controls other than TAB/LF/CR, no U+FFFE/U+FFFF.
fn xml_safe(s: &str) -> bool {
    !s.chars().any(|c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
    })
}

struct Out<W: Write> {
    w: BufWriter<W>,
    /// What the reader accepts ([`Limits::default`]): nothing beyond it is written.
    limits: Limits,
    /// Files and directories written so far.
    entries: u64,
    /// The highest `fileuid` written.
    max_uid: u64,
    /// Every `fileuid` written (they must be unique).
    uids: Vec<u64>,
    /// The last time formatted: times repeat a lot within an index.
    last_time: Option<(super::LtfsTime, String)>,
}

impl<W: Write> Out<W> {
    fn line(&mut self, s: &str) -> io::Result<()> {
        self.w.write_all(s.as_bytes())?;
        self.w.write_all(b"\n")
    }

    fn text(&mut self, tag: &str, s: &str) -> io::Result<()> {
        write!(self.w, "<{tag}>")?;
        esc(&mut self.w, s)?;
        writeln!(self.w, "</{tag}>")
    }

    fn num(&mut self, tag: &str, n: u64) -> io::Result<()> {
        writeln!(self.w, "<{tag}>{n}</{tag}>")
    }

    fn boolean(&mut self, tag: &str, b: bool) -> io::Result<()> {
        writeln!(self.w, "<{tag}>{b}</{tag}>")
    }

    /// A nametype element, in NFC, percent-encoded only when required.
    fn name(
        &mut self,
        tag: &str,
        name: &str,
        kind: NameKind,
        path: &dyn Fn() -> String,
    ) -> Result<(), IndexError> {
        let name = &*names::nfc(name);
        let max = if kind == NameKind::SymlinkTarget {
            self.limits.max_name_bytes.saturating_mul(4)
        } else {
            self.limits.max_name_bytes
        };
        names::validate(name, kind, max).map_err(|error| IndexError::Unwritable {
            path: path(),
            kind: ErrorKind::Name {
                name: name.to_string(),
                error,
            },
        })?;
        if name.is_empty() {
            writeln!(self.w, "<{tag}/>")?;
        } else if names::needs_percent_encoding(name) {
            let enc = names::percent_encode(name);
            write!(self.w, "<{tag} percentencoded=\"true\">")?;
            esc(&mut self.w, &enc)?;
            writeln!(self.w, "</{tag}>")?;
        } else {
            self.text(tag, name)?;
        }
        Ok(())
    }

    fn times(&mut self, t: &Times) -> io::Result<()> {
        for (tag, v) in [
            ("creationtime", t.creation),
            ("changetime", t.change),
            ("modifytime", t.modify),
            ("accesstime", t.access),
            ("backuptime", t.backup),
        ] {
            let s = match &self.last_time {
                Some((t, s)) if *t == v => s,
                _ => &self.last_time.insert((v, v.to_string())).1,
            };
            writeln!(self.w, "<{tag}>{s}</{tag}>")?;
        }
        Ok(())
    }

    fn xattrs(&mut self, xattrs: &[Xattr], path: &dyn Fn() -> String) -> Result<(), IndexError> {
        if xattrs.is_empty() {
            return Ok(());
        }
        if xattrs.len() > 1 {
            let mut seen = HashSet::with_capacity(xattrs.len());
            for x in xattrs {
                if !seen.insert(names::nfc(&x.key)) {
                    return Err(IndexError::Unwritable {
                        path: path(),
                        kind: ErrorKind::DuplicateXattr(x.key.clone()),
                    });
                }
            }
        }
        self.line("<extendedattributes>")?;
        for x in xattrs {
            if x.value.len() > self.limits.max_xattr_value {
                return Err(IndexError::Unwritable {
                    path: format!("{} (xattr {:?})", path(), x.key),
                    kind: ErrorKind::Limit(format!(
                        "xattr value of {} bytes, longer than {}",
                        x.value.len(),
                        self.limits.max_xattr_value
                    )),
                });
            }
            self.line("<xattr>")?;
            self.name("key", &x.key, NameKind::XattrKey, path)?;
            match std::str::from_utf8(&x.value) {
                _ if x.value.is_empty() => self.line("<value/>")?,
                Ok(s) if xml_safe(s) => self.text("value", s)?,
                _ => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(&x.value);
                    writeln!(self.w, "<value type=\"base64\">{b64}</value>")?;
                }
            }
            self.line("</xattr>")?;
        }
        self.line("</extendedattributes>")?;
        Ok(())
    }

    /// Unknown elements kept from the index read, written back where they were: `depth` is the depth
    /// of their parent element. Refused when they would take the document deeper than the reader reads
    /// or are larger than it keeps.
    fn raw(
        &mut self,
        raw: &[RawElement],
        depth: usize,
        path: &dyn Fn() -> String,
    ) -> Result<(), IndexError> {
        for r in raw {
            self.check_raw(r, depth, path)?;
            self.line(&r.xml)?;
        }
        Ok(())
    }

    fn check_raw(
        &self,
        r: &RawElement,
        depth: usize,
        path: &dyn Fn() -> String,
    ) -> Result<(), IndexError> {
        let bad = |kind| IndexError::Unwritable {
            path: format!("{} (element <{}>)", path(), r.name()),
            kind,
        };
        if r.xml.len() > self.limits.max_unknown {
            return Err(bad(ErrorKind::Limit(format!(
                "unknown element longer than {} bytes",
                self.limits.max_unknown
            ))));
        }
        match raw_depth(&r.xml) {
            Some(d) if depth + d <= self.limits.max_xml_depth => Ok(()),
            Some(_) => Err(bad(ErrorKind::Limit(format!(
                "XML nesting deeper than {}",
                self.limits.max_xml_depth
            )))),
            None => Err(bad(ErrorKind::Xml("not one well-formed element".into()))),
        }
    }

    fn count_entry(&mut self, path: &dyn Fn() -> String) -> Result<(), IndexError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(IndexError::Unwritable {
                path: path(),
                kind: ErrorKind::Limit(format!("more than {} entries", self.limits.max_entries)),
            });
        }
        Ok(())
    }

    /// `nonempty`: the directory has entries (its own or packed ones).
    fn dir_head(
        &mut self,
        d: &Directory,
        root: bool,
        nonempty: bool,
        track_uid: bool,
        path: &dyn Fn() -> String,
    ) -> Result<(), IndexError> {
        self.count_entry(path)?;
        if (root && d.uid != 1) || (!root && !(2..=MAX_LEN).contains(&d.uid)) {
            return Err(IndexError::Unwritable {
                path: path(),
                kind: ErrorKind::Uid(
                    d.uid,
                    if root {
                        "the root directory's must be 1"
                    } else {
                        "must be 2 to 2^63-1"
                    },
                ),
            });
        }
        self.max_uid = self.max_uid.max(d.uid);
        if track_uid {
            self.uids.push(d.uid);
        }
        if d.entries.len() > 1 {
            let mut seen = HashSet::with_capacity(d.entries.len());
            for e in &d.entries {
                let n = names::nfc(e.name());
                if !seen.insert(n) {
                    return Err(IndexError::Unwritable {
                        path: path(),
                        kind: ErrorKind::DuplicateName(e.name().to_string()),
                    });
                }
            }
        }
        self.line("<directory>")?;
        self.name(
            "name",
            &d.name,
            if root {
                NameKind::Root
            } else {
                NameKind::Entry
            },
            path,
        )?;
        self.boolean("readonly", d.read_only)?;
        self.times(&d.times)?;
        self.num("fileuid", d.uid)?;
        self.xattrs(&d.xattrs, path)?;
        if !nonempty {
            self.line("<contents/>")?;
        } else {
            self.line("<contents>")?;
        }
        Ok(())
    }

    /// `depth`: the directory element's.
    fn dir_tail(
        &mut self,
        d: &Directory,
        depth: usize,
        nonempty: bool,
        path: &dyn Fn() -> String,
    ) -> Result<(), IndexError> {
        if nonempty {
            self.line("</contents>")?;
        }
        self.raw(&d.unknown, depth, path)?;
        self.line("</directory>")?;
        Ok(())
    }

    /// `depth`: the file element's.
    /// `track_uid`: check the UID is unique (a packed entry's is: it was allocated above the highest).
    fn file(
        &mut self,
        f: &File,
        depth: usize,
        track_uid: bool,
        path: &dyn Fn() -> String,
    ) -> Result<(), IndexError> {
        self.count_entry(path)?;
        check_file(f, path)?;
        self.max_uid = self.max_uid.max(f.uid);
        if track_uid {
            self.uids.push(f.uid);
        }
        self.line("<file>")?;
        self.name("name", &f.name, NameKind::Entry, path)?;
        self.num("length", f.length)?;
        self.boolean("readonly", f.read_only)?;
        self.times(&f.times)?;
        self.num("fileuid", f.uid)?;
        self.xattrs(&f.xattrs, path)?;
        match &f.content {
            FileContent::Extents(exts) if exts.is_empty() => {}
            FileContent::Extents(exts) => {
                self.line("<extentinfo>")?;
                for x in exts {
                    if !x.partition.is_ascii_lowercase() {
                        return Err(IndexError::Unwritable {
                            path: path(),
                            kind: ErrorKind::BadValue {
                                what: "extent partition",
                                value: x.partition.to_string(),
                            },
                        });
                    }
                    writeln!(
                        self.w,
                        "<extent><fileoffset>{}</fileoffset><partition>{}</partition><startblock>{}</startblock>\
                         <byteoffset>{}</byteoffset><bytecount>{}</bytecount></extent>",
                        x.file_offset, x.partition, x.start_block, x.byte_offset, x.byte_count
                    )?;
                }
                self.line("</extentinfo>")?;
            }
            FileContent::Symlink(target) => {
                self.name("symlink", target, NameKind::SymlinkTarget, path)?
            }
        }
        self.raw(&f.unknown, depth, path)?;
        self.line("</file>")?;
        Ok(())
    }
}

/// The packed entries from `first` on (the children of a directory at nesting `n`, counted as the
/// writer's stack counts it: the root is 1), depth first; `parent` names that directory in errors.
fn write_packed<W: Write>(
    o: &mut Out<W>,
    p: &Packed,
    first: u32,
    n: usize,
    parent: &dyn Fn() -> String,
) -> Result<(), IndexError> {
    // (packed directory, its next child to write); NONE for the directory the entries go in.
    let mut st: Vec<(u32, u32)> = vec![(NONE, first)];
    let path_of = |st: &[(u32, u32)], leaf: &str| {
        let mut s = parent();
        for &(d, _) in st.iter().skip(1) {
            if !s.ends_with('/') {
                s.push('/');
            }
            s.push_str(p.name(d));
        }
        if !s.ends_with('/') {
            s.push('/');
        }
        s.push_str(leaf);
        s
    };
    while let Some(&(d, c)) = st.last() {
        let k = n + st.len() - 1;
        if c == NONE {
            if d != NONE {
                let Unpacked::Dir(dir) = p.entry(d) else {
                    unreachable!("only directories are pushed")
                };
                let path = || path_of(&st[..st.len() - 1], p.name(d));
                o.dir_tail(&dir, 2 * k, p.first_child(d) != NONE, &path)?;
            }
            st.pop();
            continue;
        }
        if let Some(top) = st.last_mut() {
            top.1 = p.next(c);
        }
        let path = || path_of(&st, p.name(c));
        match p.entry(c) {
            Unpacked::File(f) => o.file(&f, 2 + 2 * k, false, &path)?,
            Unpacked::Dir(dir) => {
                if k > o.limits.max_depth {
                    return Err(IndexError::Unwritable {
                        path: path(),
                        kind: ErrorKind::Limit(format!(
                            "directories nested deeper than {}",
                            o.limits.max_depth
                        )),
                    });
                }
                o.dir_head(&dir, false, p.first_child(c) != NONE, false, &path)?;
                st.push((c, p.first_child(c)));
            }
        }
    }
    Ok(())
}

/// What the reader checks of a file's numbers and extents (`Index::read_xml`).
fn check_file(f: &File, path: &dyn Fn() -> String) -> Result<(), IndexError> {
    let bad = |kind| IndexError::Unwritable { path: path(), kind };
    let value = |what, value: String| bad(ErrorKind::BadValue { what, value });
    if !(2..=MAX_LEN).contains(&f.uid) {
        return Err(bad(ErrorKind::Uid(f.uid, "must be 2 to 2^63-1")));
    }
    if f.length > MAX_LEN {
        return Err(value("length", f.length.to_string()));
    }
    let FileContent::Extents(exts) = &f.content else {
        return Ok(());
    };
    let mut spans = Vec::with_capacity(exts.len());
    for x in exts {
        if x.start_block > MAX_LEN || x.byte_offset > MAX_LEN {
            return Err(value(
                "extent",
                format!("startblock {} byteoffset {}", x.start_block, x.byte_offset),
            ));
        }
        let end = x
            .file_offset
            .checked_add(x.byte_count)
            .filter(|&e| e <= MAX_LEN);
        let Some(end) = end else {
            return Err(value(
                "extent end",
                format!("{} + {}", x.file_offset, x.byte_count),
            ));
        };
        spans.push((x.file_offset, end));
    }
    spans.sort_unstable();
    let mut end = 0;
    for (start, e) in spans {
        if start < end {
            return Err(bad(ErrorKind::ExtentOverlap(start)));
        }
        end = e;
    }
    if end > f.length {
        return Err(bad(ErrorKind::ExtentTooLong {
            end,
            length: f.length,
        }));
    }
    Ok(())
}

/// The nesting depth of one well-formed element given as XML text (the element itself counts 1);
/// `None` when it is not one element.
fn raw_depth(xml: &str) -> Option<usize> {
    let mut r = quick_xml::Reader::from_str(xml);
    r.config_mut().check_end_names = true;
    let (mut depth, mut max, mut tops) = (0usize, 0usize, 0usize);
    loop {
        match r.read_event().ok()? {
            Event::Start(_) => {
                if depth == 0 {
                    tops += 1;
                }
                depth += 1;
                max = max.max(depth);
            }
            Event::Empty(_) => {
                if depth == 0 {
                    tops += 1;
                }
                max = max.max(depth + 1);
            }
            Event::End(_) => depth = depth.checked_sub(1)?,
            Event::Eof => break,
            _ => {}
        }
    }
    (depth == 0 && tops == 1).then_some(max)
}

fn check_partition(p: char, what: &'static str) -> Result<(), IndexError> {
    if p.is_ascii_lowercase() {
        Ok(())
    } else {
        Err(IndexError::Unwritable {
            path: "ltfsindex".into(),
            kind: ErrorKind::BadValue {
                what,
                value: p.to_string(),
            },
        })
    }
}

impl Index {
    /// Writes the index as XML (ltfs-format.md §4), streaming into `w` through a 64 KiB buffer. The version
    /// written is always [`INDEX_VERSION`]. Names are written in NFC and validated (an invalid one is an
    /// [`IndexError::Unwritable`]); the tree is walked without recursion.
    pub fn write_xml<W: Write>(&self, w: W) -> Result<(), IndexError> {
        self.write_xml_with(w, None)
    }

    /// [`Index::write_xml`] of the index with the entries of `packed` added: each directory's packed
    /// entries after its own, in the order they were added (as if they had been pushed to its
    /// `entries`).
    pub fn write_xml_with<W: Write>(
        &self,
        w: W,
        packed: Option<&Packed>,
    ) -> Result<(), IndexError> {
        let mut o = Out {
            w: BufWriter::with_capacity(64 * 1024, w),
            limits: Limits::default(),
            entries: 0,
            max_uid: 1,
            uids: Vec::new(),
            last_time: None,
        };
        let top = || "ltfsindex".to_string();
        for (text, what) in [(&self.creator, "creator")]
            .into_iter()
            .chain(self.comment.as_ref().map(|c| (c, "comment")))
        {
            if text.chars().count() > o.limits.max_comment {
                return Err(IndexError::Unwritable {
                    path: top(),
                    kind: ErrorKind::Limit(format!(
                        "<{what}> longer than {} characters",
                        o.limits.max_comment
                    )),
                });
            }
        }
        for (text, what) in [
            (&self.creator, "creator"),
            (&self.volume_uuid, "volumeuuid"),
        ]
        .into_iter()
        .chain(self.comment.as_ref().map(|c| (c, "comment")))
        {
            if !xml_safe(text) {
                return Err(IndexError::Unwritable {
                    path: top(),
                    kind: ErrorKind::BadValue {
                        what,
                        value: text.clone(),
                    },
                });
            }
        }
        if super::read::uuid(&self.volume_uuid).as_deref() != Some(self.volume_uuid.as_str()) {
            return Err(IndexError::Unwritable {
                path: top(),
                kind: ErrorKind::BadValue {
                    what: "volumeuuid (8-4-4-4-12 lowercase hex)",
                    value: self.volume_uuid.clone(),
                },
            });
        }
        for (n, what) in [
            (self.generation, "generationnumber"),
            (self.location.start_block, "location startblock"),
            (
                self.previous.map_or(0, |p| p.start_block),
                "previousgenerationlocation startblock",
            ),
        ] {
            if n > MAX_LEN {
                return Err(IndexError::Unwritable {
                    path: top(),
                    kind: ErrorKind::BadValue {
                        what,
                        value: n.to_string(),
                    },
                });
            }
        }
        check_partition(self.location.partition, "location partition")?;
        if let Some(p) = &self.previous {
            check_partition(p.partition, "previousgenerationlocation partition")?;
        }
        o.line("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
        o.line(&format!("<ltfsindex version=\"{INDEX_VERSION}\">"))?;
        o.text("creator", &self.creator)?;
        if let Some(c) = &self.comment {
            o.text("comment", c)?;
        }
        o.text("volumeuuid", &self.volume_uuid)?;
        o.num("generationnumber", self.generation)?;
        writeln!(o.w, "<updatetime>{}</updatetime>", self.update_time)?;
        let loc = self.location;
        writeln!(
            o.w,
            "<location><partition>{}</partition><startblock>{}</startblock></location>",
            loc.partition, loc.start_block
        )?;
        if let Some(p) = self.previous {
            writeln!(
                o.w,
                "<previousgenerationlocation><partition>{}</partition><startblock>{}</startblock>\
                 </previousgenerationlocation>",
                p.partition, p.start_block
            )?;
        }
        o.boolean("allowpolicyupdate", self.allow_policy_update)?;
        if let Some(d) = &self.data_placement_policy {
            o.check_raw(d, 1, &top)?;
            o.line(&d.xml)?;
        }
        o.num("highestfileuid", self.highest_file_uid)?;
        if let Some(s) = self.volume_lock_state {
            o.text("volumelockstate", s.as_str())?;
        }

        // The tree, depth first with an explicit stack of (directory, next entry index), and the
        // positions that lead to the directory on top (what names it in `packed`).
        let mut stack: Vec<(&Directory, usize)> = vec![(&self.root, 0)];
        let mut at: Vec<u32> = Vec::new();
        let first_packed = |at: &[u32]| packed.map_or(NONE, |p| p.first_child_of_indexed(at));
        let path_of = |stack: &[(&Directory, usize)], leaf: &str| {
            let mut p = String::new();
            for (d, _) in stack.iter().skip(1) {
                p.push('/');
                p.push_str(&d.name);
            }
            p.push('/');
            p.push_str(leaf);
            p
        };
        // Depths: the directory at nesting k (the root's is 0) is element 2 + 2k, its entries 4 + 2k.
        o.dir_head(
            &self.root,
            true,
            !self.root.entries.is_empty() || first_packed(&at) != NONE,
            true,
            &|| "/".to_string(),
        )?;
        while let Some(&(dir, i)) = stack.last() {
            let n = stack.len();
            if i == dir.entries.len() {
                let path = || match n {
                    1 => "/".to_string(),
                    _ => path_of(&stack[..n - 1], &dir.name),
                };
                let first = first_packed(&at);
                if let Some(p) = packed
                    && first != NONE
                {
                    write_packed(&mut o, p, first, n, &path)?;
                }
                o.dir_tail(dir, 2 * n, !dir.entries.is_empty() || first != NONE, &path)?;
                stack.pop();
                at.pop();
                continue;
            }
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            match &dir.entries[i] {
                Entry::File(f) => {
                    o.file(f, 2 + 2 * n, true, &|| path_of(&stack, &f.name))?;
                }
                Entry::Directory(d) => {
                    let path = || path_of(&stack, &d.name);
                    if n > o.limits.max_depth {
                        return Err(IndexError::Unwritable {
                            path: path(),
                            kind: ErrorKind::Limit(format!(
                                "directories nested deeper than {}",
                                o.limits.max_depth
                            )),
                        });
                    }
                    at.push(i as u32);
                    let nonempty = !d.entries.is_empty() || first_packed(&at) != NONE;
                    o.dir_head(d, false, nonempty, true, &path)?;
                    stack.push((d, 0));
                }
            }
        }
        o.raw(&self.unknown, 1, &top)?;
        o.uids.sort_unstable();
        if let Some(w) = o.uids.windows(2).find(|w| w[0] == w[1]) {
            return Err(IndexError::Unwritable {
                path: top(),
                kind: ErrorKind::Uid(w[0], "used more than once"),
            });
        }
        if o.max_uid > self.highest_file_uid {
            return Err(IndexError::Unwritable {
                path: top(),
                kind: ErrorKind::HighestUid {
                    highest: self.highest_file_uid,
                    max: o.max_uid,
                },
            });
        }
        o.line("</ltfsindex>")?;
        o.w.flush()?;
        Ok(())
    }

    /// The index as an XML string (convenience for small indexes and tests).
    pub fn to_xml_string(&self) -> Result<String, IndexError> {
        let mut v = Vec::new();
        self.write_xml(&mut v)?;
        Ok(String::from_utf8(v).expect("the writer only writes UTF-8"))
    }
}
