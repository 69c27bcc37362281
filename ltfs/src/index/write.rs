//! The streaming index writer: the §4 form, one element per line, straight into the caller's `Write`.

use super::names::{self, NameKind};
use super::{
    Directory, Entry, ErrorKind, File, FileContent, INDEX_VERSION, Index, IndexError, Times, Xattr,
};
use base64::Engine as _;
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
    max_name_bytes: usize,
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
            self.max_name_bytes * 4
        } else {
            self.max_name_bytes
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
        self.line("<extendedattributes>")?;
        for x in xattrs {
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

    fn raw(&mut self, raw: &[super::RawElement]) -> io::Result<()> {
        for r in raw {
            self.line(&r.xml)?;
        }
        Ok(())
    }

    fn dir_head(
        &mut self,
        d: &Directory,
        root: bool,
        path: &dyn Fn() -> String,
    ) -> Result<(), IndexError> {
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
        if d.entries.is_empty() {
            self.line("<contents/>")?;
        } else {
            self.line("<contents>")?;
        }
        Ok(())
    }

    fn dir_tail(&mut self, d: &Directory) -> io::Result<()> {
        if !d.entries.is_empty() {
            self.line("</contents>")?;
        }
        self.raw(&d.unknown)?;
        self.line("</directory>")
    }

    fn file(&mut self, f: &File, path: &dyn Fn() -> String) -> Result<(), IndexError> {
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
        self.raw(&f.unknown)?;
        self.line("</file>")?;
        Ok(())
    }
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
        let mut o = Out {
            w: BufWriter::with_capacity(64 * 1024, w),
            max_name_bytes: 4 * names::MAX_NAME_CHARS,
            last_time: None,
        };
        let top = || "ltfsindex".to_string();
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
            o.line(&d.xml)?;
        }
        o.num("highestfileuid", self.highest_file_uid)?;
        if let Some(s) = self.volume_lock_state {
            o.text("volumelockstate", s.as_str())?;
        }

        // The tree, depth first with an explicit stack of (directory, next entry index).
        let mut stack: Vec<(&Directory, usize)> = vec![(&self.root, 0)];
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
        o.dir_head(&self.root, true, &|| "/".to_string())?;
        while let Some((dir, i)) = stack.last_mut() {
            let dir: &Directory = dir;
            if *i == dir.entries.len() {
                o.dir_tail(dir)?;
                stack.pop();
                continue;
            }
            let e = &dir.entries[*i];
            *i += 1;
            match e {
                Entry::File(f) => {
                    o.file(f, &|| path_of(&stack, &f.name))?;
                }
                Entry::Directory(d) => {
                    o.dir_head(d, false, &|| path_of(&stack, &d.name))?;
                    stack.push((d, 0));
                }
            }
        }
        o.raw(&self.unknown)?;
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
