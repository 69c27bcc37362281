//! The two label records at the start of each LTFS partition (ltfs-format.md §2–3): the 80-byte ANSI
//! VOL1 record and the XML label (`<ltfslabel>`), plus the format-time and UUID text forms they use.
//!
//! The XML label is small (at most [`LABEL_MAX`] bytes) and fixed, so it is parsed by a minimal, strict
//! XML reader here: elements, attributes, text with the predefined and numeric entities, comments and
//! processing instructions. Anything else (DOCTYPE, CDATA, mismatched tags, bad characters) is an error.

use std::fmt;

/// Length of the VOL1 record.
pub const VOL1_LEN: usize = 80;
/// Largest XML label a reader accepts (the reference's `LTFS_LABEL_MAX`).
pub const LABEL_MAX: usize = 4096;
/// The format version this crate writes.
pub const WRITE_VERSION: FormatVersion = FormatVersion {
    major: 2,
    minor: 4,
    patch: 0,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("VOL1 record is {0} bytes; at least 80 are needed")]
    Vol1TooShort(usize),
    #[error("VOL1 record has no `LTFS` implementation identifier at offset 24")]
    Vol1NotLtfs,
    #[error("XML label is {0} bytes; at most 4096 are allowed")]
    TooLarge(usize),
    #[error("XML label is not UTF-8")]
    NotUtf8,
    #[error("XML label is malformed at byte {offset}: {what}")]
    Xml { offset: usize, what: String },
    #[error("XML label's top element is <{0}>, not <ltfslabel>")]
    NotALabel(String),
    #[error("XML label lacks <{0}>")]
    Missing(&'static str),
    #[error("XML label has <{0}> twice")]
    Duplicate(&'static str),
    #[error("XML label has a bad <{field}>: {value:?}")]
    BadValue { field: &'static str, value: String },
    #[error("XML label version {0:?} is not a supported LTFS format version (1.0.0–2.99.99)")]
    BadVersion(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelMismatch {
    #[error("the labels differ in {0}")]
    Differ(&'static str),
    #[error("both labels claim location {0}")]
    SameLocation(char),
}

/// An LTFS format version `X.Y.Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FormatVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl FormatVersion {
    /// Parses `X.Y.Z` (or the legacy `1.0`) and checks it is in 1.0.0–2.99.99.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('.').collect();
        let num = |p: &str| -> Option<u32> {
            if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let v = match parts.as_slice() {
            ["1", "0"] => Self {
                major: 1,
                minor: 0,
                patch: 0,
            },
            [a, b, c] => Self {
                major: num(a)?,
                minor: num(b)?,
                patch: num(c)?,
            },
            _ => return None,
        };
        ((1..=2).contains(&v.major) && v.minor <= 99 && v.patch <= 99).then_some(v)
    }
}

impl fmt::Display for FormatVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

pub use crate::time::LtfsTime;

/// Checks an 8-4-4-4-12 hex UUID and returns it lowercased.
pub fn parse_uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    for (i, &c) in b.iter().enumerate() {
        let ok = if matches!(i, 8 | 13 | 18 | 23) {
            c == b'-'
        } else {
            c.is_ascii_hexdigit()
        };
        if !ok {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------------------
// VOL1

/// The volume serial for a VOL1 record: exactly 6 characters `[0-9A-Z]`, else `None` (written as spaces).
/// A cartridge barcode like `RV0001L6` gives its first 6 characters.
pub fn volume_serial(barcode: &str) -> Option<String> {
    let b = barcode.as_bytes();
    let serial = match b.len() {
        6 => b,
        8 => &b[..6],
        _ => return None,
    };
    serial
        .iter()
        .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        .then(|| String::from_utf8_lossy(serial).into_owned())
}

/// The 80-byte VOL1 record (§2). `serial` must be 6 characters `[0-9A-Z]`; anything else gives spaces.
pub fn encode_vol1(serial: Option<&str>) -> [u8; VOL1_LEN] {
    let mut r = [b' '; VOL1_LEN];
    r[..4].copy_from_slice(b"VOL1");
    if let Some(s) = serial.filter(|s| {
        s.len() == 6
            && s.bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    }) {
        r[4..10].copy_from_slice(s.as_bytes());
    }
    r[10] = b'L';
    r[24..28].copy_from_slice(b"LTFS");
    r[79] = b'4';
    r
}

/// What a reader takes from VOL1: the volume serial (bytes 4–9), `None` when blank. Like the reference,
/// only the length and `LTFS` at offset 24 are checked.
pub fn decode_vol1(rec: &[u8]) -> Result<Option<String>, LabelError> {
    if rec.len() < VOL1_LEN {
        return Err(LabelError::Vol1TooShort(rec.len()));
    }
    if &rec[24..28] != b"LTFS" {
        return Err(LabelError::Vol1NotLtfs);
    }
    let serial = String::from_utf8_lossy(&rec[4..10])
        .trim_end_matches(' ')
        .to_string();
    Ok((!serial.is_empty()).then_some(serial))
}

// ---------------------------------------------------------------------------------------------------
// XML label

/// The XML label of one partition (§3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub creator: String,
    pub format_time: LtfsTime,
    /// Lowercase 8-4-4-4-12.
    pub volume_uuid: String,
    /// This partition's ID.
    pub location: char,
    pub index_partition: char,
    pub data_partition: char,
    pub block_size: u32,
    pub compression: bool,
    pub version: FormatVersion,
}

impl Label {
    /// The XML exactly as the reference writes it (4-space indent, trailing newline).
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <ltfslabel version=\"{}\">\n\
             \x20   <creator>{}</creator>\n\
             \x20   <formattime>{}</formattime>\n\
             \x20   <volumeuuid>{}</volumeuuid>\n\
             \x20   <location>\n\
             \x20       <partition>{}</partition>\n\
             \x20   </location>\n\
             \x20   <partitions>\n\
             \x20       <index>{}</index>\n\
             \x20       <data>{}</data>\n\
             \x20   </partitions>\n\
             \x20   <blocksize>{}</blocksize>\n\
             \x20   <compression>{}</compression>\n\
             </ltfslabel>\n",
            self.version,
            escape_text(&self.creator),
            self.format_time,
            self.volume_uuid,
            self.location,
            self.index_partition,
            self.data_partition,
            self.block_size,
            self.compression,
        )
        .into_bytes()
    }

    /// Parses and checks an XML label (§3 reader rules).
    pub fn parse(xml: &[u8]) -> Result<Self, LabelError> {
        if xml.len() > LABEL_MAX {
            return Err(LabelError::TooLarge(xml.len()));
        }
        let text = std::str::from_utf8(xml).map_err(|_| LabelError::NotUtf8)?;
        let root = parse_document(text)?;
        if root.name != "ltfslabel" {
            return Err(LabelError::NotALabel(root.name));
        }
        let version_text = root
            .attrs
            .iter()
            .find(|(k, _)| k == "version")
            .map(|(_, v)| v.as_str())
            .ok_or(LabelError::Missing("ltfslabel version"))?;
        let version = FormatVersion::parse(version_text)
            .ok_or_else(|| LabelError::BadVersion(version_text.to_string()))?;

        let mut creator = None;
        let mut format_time = None;
        let mut uuid = None;
        let mut location = None;
        let mut partitions = None;
        let mut block_size = None;
        let mut compression = None;
        fn set<T>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), LabelError> {
            if slot.replace(v).is_some() {
                return Err(LabelError::Duplicate(name));
            }
            Ok(())
        }
        for child in &root.children {
            match child.name.as_str() {
                "creator" => set(&mut creator, "creator", child.text("creator")?)?,
                "formattime" => {
                    let t = child.text("formattime")?;
                    let v = LtfsTime::parse(t.trim()).ok().ok_or(LabelError::BadValue {
                        field: "formattime",
                        value: t,
                    })?;
                    set(&mut format_time, "formattime", v)?
                }
                "volumeuuid" => {
                    let t = child.text("volumeuuid")?;
                    let v = parse_uuid(t.trim()).ok_or(LabelError::BadValue {
                        field: "volumeuuid",
                        value: t,
                    })?;
                    set(&mut uuid, "volumeuuid", v)?
                }
                "location" => {
                    let mut p = None;
                    for c in &child.children {
                        if c.name == "partition" {
                            set(&mut p, "partition", partition_id(c, "partition")?)?;
                        }
                    }
                    set(
                        &mut location,
                        "location",
                        p.ok_or(LabelError::Missing("location/partition"))?,
                    )?
                }
                "partitions" => {
                    let (mut ip, mut dp) = (None, None);
                    for c in &child.children {
                        match c.name.as_str() {
                            "index" => set(&mut ip, "index", partition_id(c, "index")?)?,
                            "data" => set(&mut dp, "data", partition_id(c, "data")?)?,
                            _ => {}
                        }
                    }
                    let ip = ip.ok_or(LabelError::Missing("partitions/index"))?;
                    let dp = dp.ok_or(LabelError::Missing("partitions/data"))?;
                    if ip == dp {
                        return Err(LabelError::BadValue {
                            field: "partitions",
                            value: format!("index {ip} = data {dp}"),
                        });
                    }
                    set(&mut partitions, "partitions", (ip, dp))?
                }
                "blocksize" => {
                    let t = child.text("blocksize")?;
                    let v = parse_decimal(t.trim())
                        .and_then(|v| u32::try_from(v).ok())
                        .filter(|&v| v > 0)
                        .ok_or(LabelError::BadValue {
                            field: "blocksize",
                            value: t,
                        })?;
                    set(&mut block_size, "blocksize", v)?
                }
                "compression" => {
                    let t = child.text("compression")?;
                    let v = match t.trim() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(LabelError::BadValue {
                                field: "compression",
                                value: t,
                            });
                        }
                    };
                    set(&mut compression, "compression", v)?
                }
                _ => {} // unknown children are skipped
            }
        }
        let (index_partition, data_partition) =
            partitions.ok_or(LabelError::Missing("partitions"))?;
        Ok(Label {
            creator: creator.ok_or(LabelError::Missing("creator"))?,
            format_time: format_time.ok_or(LabelError::Missing("formattime"))?,
            volume_uuid: uuid.ok_or(LabelError::Missing("volumeuuid"))?,
            location: location.ok_or(LabelError::Missing("location"))?,
            index_partition,
            data_partition,
            block_size: block_size.ok_or(LabelError::Missing("blocksize"))?,
            compression: compression.ok_or(LabelError::Missing("compression"))?,
            version,
        })
    }
}

/// The two partitions' labels must agree on everything but `location`, which must differ (§3,
/// `label_compare()`). The VOL1 serials are compared by the caller.
pub fn compare(a: &Label, b: &Label) -> Result<(), LabelMismatch> {
    let checks: [(bool, &'static str); 7] = [
        (a.volume_uuid == b.volume_uuid, "volume UUID"),
        (a.format_time == b.format_time, "format time"),
        (a.block_size == b.block_size, "block size"),
        (a.compression == b.compression, "compression"),
        (a.index_partition == b.index_partition, "index partition"),
        (a.data_partition == b.data_partition, "data partition"),
        (a.version == b.version, "format version"),
    ];
    if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(LabelMismatch::Differ(what));
    }
    // The reference does not compare creators; neither do we.
    if a.location == b.location {
        return Err(LabelMismatch::SameLocation(a.location));
    }
    Ok(())
}

fn partition_id(e: &Element, field: &'static str) -> Result<char, LabelError> {
    let t = e.text(field)?;
    let mut chars = t.trim().chars();
    match (chars.next(), chars.next()) {
        (Some(c @ 'a'..='z'), None) => Ok(c),
        _ => Err(LabelError::BadValue { field, value: t }),
    }
}

/// Unsigned decimal with nothing else (the reference's `xml_parse_ull`).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

// ---------------------------------------------------------------------------------------------------
// A minimal strict XML reader for the label.

#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    /// Text content of a leaf element; child elements are an error.
    fn text(&self, field: &'static str) -> Result<String, LabelError> {
        if !self.children.is_empty() {
            return Err(LabelError::BadValue {
                field,
                value: format!("<{}> inside", self.children[0].name),
            });
        }
        Ok(self.text.clone())
    }
}

const MAX_DEPTH: usize = 16;

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn err<T>(&self, what: impl Into<String>) -> Result<T, LabelError> {
        Err(LabelError::Xml {
            offset: self.pos,
            what: what.into(),
        })
    }
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn eat(&mut self, lit: &str) -> bool {
        if self.rest().starts_with(lit) {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }
    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start_matches([' ', '\t', '\r', '\n']).len();
    }
    /// Everything up to `end` (consumed), or an error.
    fn until(&mut self, end: &str, what: &str) -> Result<&'a str, LabelError> {
        match self.rest().find(end) {
            Some(i) => {
                let s = &self.rest()[..i];
                self.pos += i + end.len();
                Ok(s)
            }
            None => self.err(format!("unterminated {what}")),
        }
    }
    fn name(&mut self) -> Result<String, LabelError> {
        let r = self.rest();
        let len = r
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphabetic()
                    || c == '_'
                    || c == ':'
                    || (i > 0 && (c.is_ascii_digit() || c == '-' || c == '.')))
            })
            .map_or(r.len(), |(i, _)| i);
        if len == 0 {
            return self.err("expected a name");
        }
        self.pos += len;
        Ok(r[..len].to_string())
    }
    /// Comments and processing instructions, and whitespace, between markup.
    fn skip_misc(&mut self) -> Result<(), LabelError> {
        loop {
            self.skip_ws();
            if self.eat("<!--") {
                self.until("-->", "comment")?;
            } else if self.rest().starts_with("<?") {
                self.pos += 2;
                let target = self.name()?;
                if target.eq_ignore_ascii_case("xml") {
                    return self.err("XML declaration not at the start");
                }
                self.until("?>", "processing instruction")?;
            } else {
                return Ok(());
            }
        }
    }
}

fn decode_entities(c: &Cursor<'_>, raw: &str) -> Result<String, LabelError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '<']) {
        if rest.as_bytes()[i] == b'<' {
            return c.err("`<` in a value");
        }
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let Some(end) = rest.find(';') else {
            return c.err("unterminated entity");
        };
        let ent = &rest[..end];
        rest = &rest[end + 1..];
        let ch = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = ent.strip_prefix("#x") {
                    (!h.is_empty() && h.len() <= 6 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                        .then(|| u32::from_str_radix(h, 16).ok())
                        .flatten()
                } else if let Some(d) = ent.strip_prefix('#') {
                    (!d.is_empty() && d.len() <= 7 && d.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| d.parse().ok())
                        .flatten()
                } else {
                    None
                };
                match code.and_then(char::from_u32).filter(|&c| is_xml_char(c)) {
                    Some(c) => c,
                    None => return c.err(format!("unknown entity &{ent};")),
                }
            }
        };
        out.push(ch);
    }
    out.push_str(rest);
    if let Some(bad) = out.chars().find(|&ch| !is_xml_char(ch)) {
        return c.err(format!("character U+{:04X} is not allowed", bad as u32));
    }
    Ok(out)
}

/// Parses a whole document and returns its root element.
fn parse_document(text: &str) -> Result<Element, LabelError> {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut c = Cursor { s: text, pos: 0 };
    if c.eat("<?xml") {
        let decl = c.until("?>", "XML declaration")?;
        if let Some(i) = decl.find("encoding") {
            let v = decl[i + 8..]
                .trim_start()
                .trim_start_matches('=')
                .trim_start();
            let v = v.trim_start_matches(['"', '\'']);
            let v = &v[..v.find(['"', '\'']).unwrap_or(v.len())];
            if !v.eq_ignore_ascii_case("UTF-8") {
                return c.err("encoding is not UTF-8");
            }
        }
    }
    c.skip_misc()?;
    let mut stack: Vec<Element> = Vec::new();
    let root = loop {
        if c.rest().is_empty() {
            return c.err("unexpected end of document");
        }
        if c.eat("</") {
            let name = c.name()?;
            c.skip_ws();
            if !c.eat(">") {
                return c.err("expected `>`");
            }
            let Some(done) = stack.pop() else {
                return c.err("end tag without a start tag");
            };
            if done.name != name {
                return c.err(format!("</{name}> closes <{}>", done.name));
            }
            match stack.last_mut() {
                Some(parent) => parent.children.push(done),
                None => break done,
            }
        } else if c.rest().starts_with("<!--") || c.rest().starts_with("<?") {
            if stack.is_empty() {
                return c.err("expected the root element");
            }
            c.skip_misc()?;
        } else if c.rest().starts_with("<!") {
            return c.err("DOCTYPE, CDATA and declarations are not accepted");
        } else if c.eat("<") {
            if stack.len() >= MAX_DEPTH {
                return c.err("elements nested too deeply");
            }
            let mut e = Element {
                name: c.name()?,
                ..Element::default()
            };
            let empty = loop {
                let before = c.pos;
                c.skip_ws();
                if c.eat("/>") {
                    break true;
                }
                if c.eat(">") {
                    break false;
                }
                if c.pos == before {
                    return c.err("expected whitespace before an attribute");
                }
                let k = c.name()?;
                c.skip_ws();
                if !c.eat("=") {
                    return c.err("expected `=`");
                }
                c.skip_ws();
                let v = if c.eat("\"") {
                    c.until("\"", "attribute value")?
                } else if c.eat("'") {
                    c.until("'", "attribute value")?
                } else {
                    return c.err("expected a quoted attribute value");
                };
                let v = decode_entities(&c, v)?;
                if e.attrs.iter().any(|(a, _)| *a == k) {
                    return c.err(format!("attribute {k} twice"));
                }
                e.attrs.push((k, v));
            };
            if empty {
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None => break e,
                }
            } else {
                stack.push(e);
            }
        } else {
            let end = c.rest().find('<').unwrap_or(c.rest().len());
            let raw = &c.rest()[..end];
            let t = decode_entities(&c, raw)?;
            match stack.last_mut() {
                Some(e) => e.text.push_str(&t),
                None => return c.err("text outside the root element"),
            }
            c.pos += end;
        }
    };
    c.skip_misc()?;
    // Tolerate NUL padding after the document, nothing else.
    if !c.rest().bytes().all(|b| b == 0) {
        return c.err("content after the root element");
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ltfslabel version="2.4.0">
    <creator>IBM LTFS 2.4.8.4 (Prelim) - Linux - mkltfs</creator>
    <formattime>2025-01-31T12:34:56.123456789Z</formattime>
    <volumeuuid>0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10</volumeuuid>
    <location>
        <partition>a</partition>
    </location>
    <partitions>
        <index>a</index>
        <data>b</data>
    </partitions>
    <blocksize>524288</blocksize>
    <compression>true</compression>
</ltfslabel>"#;

    fn example() -> Label {
        Label {
            creator: "IBM LTFS 2.4.8.4 (Prelim) - Linux - mkltfs".into(),
            format_time: LtfsTime::parse("2025-01-31T12:34:56.123456789Z").unwrap(),
            volume_uuid: "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10".into(),
            location: 'a',
            index_partition: 'a',
            data_partition: 'b',
            block_size: 524288,
            compression: true,
            version: WRITE_VERSION,
        }
    }

    #[test]
    fn vol1_layout() {
        let r = encode_vol1(Some("ABC123"));
        let expect = format!(
            "VOL1ABC123L{}LTFS{}4",
            " ".repeat(13),
            " ".repeat(9 + 14 + 28)
        );
        assert_eq!(r.len(), 80);
        assert_eq!(&r[..], expect.as_bytes());
        assert_eq!(decode_vol1(&r).unwrap().as_deref(), Some("ABC123"));
        let blank = encode_vol1(None);
        assert_eq!(&blank[4..10], b"      ");
        assert_eq!(decode_vol1(&blank).unwrap(), None);
        for bad in ["abc123", "ABC12", "ABC1234", "ABC-23"] {
            assert_eq!(&encode_vol1(Some(bad))[4..10], b"      ", "{bad}");
        }
        for cut in 0..80 {
            assert_eq!(decode_vol1(&r[..cut]), Err(LabelError::Vol1TooShort(cut)));
        }
        let mut longer = r.to_vec();
        longer.extend_from_slice(b"extra");
        assert!(decode_vol1(&longer).is_ok());
        let mut not = r;
        not[24] = b'X';
        assert_eq!(decode_vol1(&not), Err(LabelError::Vol1NotLtfs));
        assert_eq!(volume_serial("RV0001L6").as_deref(), Some("RV0001"));
        assert_eq!(volume_serial("ABC123").as_deref(), Some("ABC123"));
        assert_eq!(volume_serial("rv0001L6"), None);
        assert_eq!(volume_serial("CLN1"), None);
    }

    #[test]
    fn example_parses_and_encodes_identically() {
        let l = Label::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(l, example());
        assert_eq!(
            String::from_utf8(l.encode()).unwrap(),
            format!("{EXAMPLE}\n")
        );
    }

    #[test]
    fn versions_and_uuids() {
        for (s, ok) in [
            ("2.4.0", true),
            ("1.0", true),
            ("1.0.0", true),
            ("2.99.99", true),
            ("3.0.0", false),
            ("0.9.0", false),
            ("2.100.0", false),
            ("2.4", false),
            ("2.4.0.1", false),
            ("2.4.x", false),
            ("2.+4.0", false),
            ("", false),
        ] {
            assert_eq!(FormatVersion::parse(s).is_some(), ok, "{s}");
        }
        assert_eq!(FormatVersion::parse("1.0").unwrap().to_string(), "1.0.0");
        assert_eq!(
            parse_uuid("0B3C8A54-5C1E-4F7E-9D7E-2F4B1A6C9E10").as_deref(),
            Some("0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10")
        );
        for bad in [
            "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e1",
            "0b3c8a545c1e-4f7e-9d7e-2f4b1a6c9e10-",
            "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9eg0",
            "{b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
    }

    fn with(from: &str, to: &str) -> Result<Label, LabelError> {
        assert!(EXAMPLE.contains(from), "{from}");
        Label::parse(EXAMPLE.replacen(from, to, 1).as_bytes())
    }

    #[test]
    fn reader_rules() {
        // Every child is required.
        for (tag, missing) in [
            ("creator", "creator"),
            ("formattime", "formattime"),
            ("volumeuuid", "volumeuuid"),
            ("blocksize", "blocksize"),
            ("compression", "compression"),
        ] {
            let start = EXAMPLE.find(&format!("<{tag}>")).unwrap();
            let end = EXAMPLE.find(&format!("</{tag}>")).unwrap() + tag.len() + 3;
            let xml = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
            assert_eq!(
                Label::parse(xml.as_bytes()),
                Err(LabelError::Missing(missing))
            );
        }
        assert_eq!(
            with("<partition>a</partition>", ""),
            Err(LabelError::Missing("location/partition"))
        );
        assert_eq!(
            with("<data>b</data>", ""),
            Err(LabelError::Missing("partitions/data"))
        );
        assert_eq!(
            with("<blocksize>", "<compression>false</compression><blocksize>"),
            Err(LabelError::Duplicate("compression"))
        );
        assert_eq!(
            with("<index>a</index>", "<index>a</index><index>c</index>"),
            Err(LabelError::Duplicate("index"))
        );
        // Unknown children (with nested content) are skipped; comments are fine.
        let l = with(
            "<blocksize>",
            "<future a='1'><x>y</x><!-- c --></future><empty/><blocksize>",
        )
        .unwrap();
        assert_eq!(l, example());
        // Values.
        assert!(matches!(
            with("<index>a</index>", "<index>b</index>"),
            Err(LabelError::BadValue {
                field: "partitions",
                ..
            })
        ));
        for (from, to) in [
            ("<index>a</index>", "<index>A</index>"),
            ("<index>a</index>", "<index>ab</index>"),
            ("<blocksize>524288", "<blocksize>0"),
            ("<blocksize>524288", "<blocksize>-1"),
            ("<blocksize>524288", "<blocksize>4294967296"),
            ("<blocksize>524288", "<blocksize>12k"),
            ("<compression>true", "<compression>yes"),
            ("0b3c8a54-", "0b3c8a5-"),
            (".123456789Z", ".1234"),
        ] {
            assert!(
                matches!(with(from, to), Err(LabelError::BadValue { .. })),
                "{to}"
            );
        }
        assert!(
            !with("<compression>true", "<compression>0")
                .unwrap()
                .compression
        );
        assert!(
            with("<compression>true", "<compression>1")
                .unwrap()
                .compression
        );
        assert_eq!(
            with("0b3c8a54", "0B3C8A54").unwrap().volume_uuid,
            example().volume_uuid
        );
        assert_eq!(
            with("version=\"2.4.0\"", "version=\"1.0\"")
                .unwrap()
                .version,
            FormatVersion {
                major: 1,
                minor: 0,
                patch: 0
            }
        );
        assert!(matches!(
            with("version=\"2.4.0\"", "version=\"3.0.0\""),
            Err(LabelError::BadVersion(_))
        ));
        assert_eq!(
            with("<ltfslabel version=\"2.4.0\">", "<ltfslabel>"),
            Err(LabelError::Missing("ltfslabel version"))
        );
        assert_eq!(
            Label::parse(b"<ltfsindex version=\"2.4.0\"/>"),
            Err(LabelError::NotALabel("ltfsindex".into()))
        );
        // Entities in the creator, round trip through encode.
        let mut l = example();
        l.creator = "a & <b> \"c\" 'd'".into();
        assert_eq!(Label::parse(&l.encode()).unwrap(), l);
        assert_eq!(
            with("IBM LTFS", "&#x49;&#66;M LTFS").unwrap().creator,
            example().creator
        );
        // Markup errors.
        for (from, to) in [
            ("</creator>", "</creatorx>"),
            ("<creator>", "<creator><![CDATA[x]]>"),
            ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "<!DOCTYPE x>"),
            ("encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\""),
            ("encoding=\"UTF-8\"", "encoding=\"UTF-80\""),
            ("IBM LTFS", "IBM &nbsp; LTFS"),
            ("IBM LTFS", "IBM &#0; LTFS"),
            ("IBM LTFS", "IBM \u{1} LTFS"),
            ("</ltfslabel>", "</ltfslabel><more/>"),
            ("</ltfslabel>", ""),
            (
                "<ltfslabel version=\"2.4.0\">",
                "<ltfslabel version=\"2.4.0\" version=\"2.4.0\">",
            ),
            ("<ltfslabel version=\"2.4.0\">", "<ltfslabel version=2.4.0>"),
            ("<creator>", "<creator><b>x</b>"),
        ] {
            assert!(with(from, to).is_err(), "{to}");
        }
        let big = with("IBM LTFS", &"x".repeat(LABEL_MAX));
        assert!(matches!(big, Err(LabelError::TooLarge(_))));
        let mut padded = EXAMPLE.as_bytes().to_vec();
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(Label::parse(&padded).unwrap(), example());
        assert_eq!(Label::parse(&[0xff, 0xfe]), Err(LabelError::NotUtf8));
        let deep = format!(
            "<ltfslabel version=\"2.4.0\">{}{}</ltfslabel>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert!(matches!(
            Label::parse(deep.as_bytes()),
            Err(LabelError::Xml { .. })
        ));
    }

    #[test]
    fn every_truncation_fails() {
        let full = example().encode();
        // The last byte is the trailing newline: cutting it still parses.
        for cut in 0..full.len() - 1 {
            assert!(Label::parse(&full[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn compare_rule() {
        let a = example();
        let mut b = example();
        b.location = 'b';
        assert_eq!(compare(&a, &b), Ok(()));
        assert_eq!(compare(&a, &a), Err(LabelMismatch::SameLocation('a')));
        let mut c = b.clone();
        c.format_time.nanos += 1;
        assert_eq!(compare(&a, &c), Err(LabelMismatch::Differ("format time")));
        let mut c = b.clone();
        c.block_size = 4096;
        assert_eq!(compare(&a, &c), Err(LabelMismatch::Differ("block size")));
        let mut c = b.clone();
        c.volume_uuid = "00000000-0000-0000-0000-000000000000".into();
        assert_eq!(compare(&a, &c), Err(LabelMismatch::Differ("volume UUID")));
        let mut c = b.clone();
        (c.index_partition, c.data_partition) = ('b', 'a');
        assert_eq!(
            compare(&a, &c),
            Err(LabelMismatch::Differ("index partition"))
        );
        let mut c = b.clone();
        c.compression = false;
        assert_eq!(compare(&a, &c), Err(LabelMismatch::Differ("compression")));
        let mut c = b;
        c.version = FormatVersion::parse("2.2.0").unwrap();
        assert_eq!(
            compare(&a, &c),
            Err(LabelMismatch::Differ("format version"))
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Label::parse(&bytes);
            let _ = decode_vol1(&bytes);
        }

        #[test]
        fn mutated_label_never_panics(pos in 0usize..600, byte in any::<u8>(), cut in 0usize..700) {
            let mut x = example().encode();
            let p = pos % x.len();
            x[p] = byte;
            x.truncate(cut);
            let _ = Label::parse(&x);
        }

        #[test]
        fn xmlish_garbage_never_panics(s in "[<>/a-z?!&;#x0-9 =\"'\\-\\[\\]]{0,200}") {
            let _ = Label::parse(s.as_bytes());
            let _ = Label::parse(format!("<ltfslabel version=\"2.4.0\">{s}</ltfslabel>").as_bytes());
        }

        #[test]
        fn label_round_trip(
            creator in "\\PC{0,40}",
            secs in LtfsTime::MIN.secs..=LtfsTime::MAX.secs,
            nanos in 0u32..1_000_000_000,
            block_size in 1u32..,
            compression in any::<bool>(),
            loc in 0u8..26,
        ) {
            let l = Label {
                creator: creator.chars().filter(|&c| is_xml_char(c)).collect(),
                format_time: LtfsTime { secs, nanos },
                volume_uuid: "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10".into(),
                location: (b'a' + loc) as char,
                index_partition: 'a',
                data_partition: 'b',
                block_size,
                compression,
                version: WRITE_VERSION,
            };
            let enc = l.encode();
            if enc.len() <= LABEL_MAX {
                prop_assert_eq!(Label::parse(&enc).unwrap(), l);
            }
        }
    }
}
