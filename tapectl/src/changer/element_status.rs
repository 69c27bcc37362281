//! READ ELEMENT STATUS (SMC-3 0xB8): the CDB and a tolerant decoder.
//!
//! Real changers lie about lengths: tgt's byte count is 8 short so its last descriptor is cut to 44 of 52
//! bytes, and some report the allocation length instead of the real one. The decoder trusts only the bytes
//! present, keeps any descriptor with at least its 12 fixed bytes, and never panics.

use scsi::be;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ElementKind {
    Transport,
    Storage,
    ImportExport,
    Drive,
}

impl ElementKind {
    pub fn code(self) -> u8 {
        match self {
            Self::Transport => 1,
            Self::Storage => 2,
            Self::ImportExport => 3,
            Self::Drive => 4,
        }
    }
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Transport,
            2 => Self::Storage,
            3 => Self::ImportExport,
            4 => Self::Drive,
            _ => return None,
        })
    }
    pub const ALL: [ElementKind; 4] = [
        Self::Transport,
        Self::Storage,
        Self::ImportExport,
        Self::Drive,
    ];
}

/// A drive's identity as the changer reports it (DVCID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriveIdentifier {
    pub vendor: String,
    pub product: String,
    pub serial: String,
}

/// One element's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Element {
    pub kind: ElementKind,
    pub address: u16,
    pub full: bool,
    /// The cartridge's barcode (primary volume tag), trimmed; `None` when empty or unlabelled.
    pub volume_tag: Option<String>,
    /// Where the cartridge came from (SValid), e.g. the slot a loaded tape returns to.
    pub source: Option<u16>,
    /// ASC/ASCQ when the changer flags the element abnormal (Except bit).
    pub exception: Option<(u8, u8)>,
    /// The robot can reach the element (for I/E slots: the door is closed).
    pub accessible: bool,
    /// I/E slot: the cartridge was placed by the operator (ImpExp bit).
    pub imported: bool,
    pub drive_id: Option<DriveIdentifier>,
}

/// `volume_tag`: ask for barcodes. `dvcid`: ask for drive identifiers (drives only; some changers refuse).
pub fn cdb(
    kind: Option<ElementKind>,
    start: u16,
    count: u16,
    volume_tag: bool,
    dvcid: bool,
    alloc: u32,
) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = 0xb8;
    c[1] = kind.map_or(0, ElementKind::code) | if volume_tag { 0x10 } else { 0 };
    be::put(&mut c, 2, 2, start as u64);
    be::put(&mut c, 4, 2, count as u64);
    c[6] = if dvcid { 0x01 } else { 0 };
    be::put(&mut c, 7, 3, alloc as u64);
    c
}

/// What one response held: elements, and how many the changer said it had.
#[derive(Debug, Default)]
pub struct Decoded {
    pub elements: Vec<Element>,
    pub available: u16,
}

/// Decodes a READ ELEMENT STATUS response. Stops quietly where the data ends.
pub fn decode(b: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let Some(available) = be::u16_at(b, 2) else {
        return out;
    };
    out.available = available;
    // The header's byte count is not trusted: tgt under-reports it and cuts the data to match, others
    // pad with zeros. Read what arrived; a zero page header ends the walk.
    let end = b.len();
    let mut at = 8;
    while at + 8 <= end {
        let page = &b[at..end];
        let kind = ElementKind::from_code(page[0] & 0x0f);
        let pvoltag = page[1] & 0x80 != 0;
        let avoltag = page[1] & 0x40 != 0;
        let desc_len = be::u16_at(page, 2).unwrap_or(0) as usize;
        let page_bytes = be::u24_at(page, 5).unwrap_or(0) as usize;
        at += 8;
        if desc_len < 12 {
            break; // nonsense; nothing more can be trusted
        }
        let page_end = end.min(at + page_bytes.max(desc_len));
        let mut d_at = at;
        while d_at + 12 <= page_end {
            let d = &b[d_at..(d_at + desc_len).min(page_end)];
            if let Some(kind) = kind {
                out.elements
                    .push(decode_descriptor(kind, d, pvoltag, avoltag));
            }
            d_at += desc_len;
        }
        at = at.saturating_add(page_bytes.max(if page_bytes == 0 { 0 } else { desc_len }));
        if page_bytes == 0 {
            break;
        }
    }
    out
}

fn decode_descriptor(kind: ElementKind, d: &[u8], pvoltag: bool, avoltag: bool) -> Element {
    let flags = d[2];
    let full = flags & 0x01 != 0;
    let source = (d[9] & 0x80 != 0).then(|| be::u16_at(d, 10)).flatten();
    let mut at = 12;
    let mut volume_tag = None;
    if pvoltag {
        volume_tag = d.get(at..at + 32).map(be::ascii).filter(|s| !s.is_empty());
        // A cut descriptor may still hold a usable barcode in fewer than 32 bytes.
        if volume_tag.is_none() && d.len() > at {
            volume_tag = Some(be::ascii(&d[at..d.len().min(at + 32)])).filter(|s| !s.is_empty());
        }
        at += 36;
    }
    if avoltag {
        at += 36;
    }
    let drive_id = if kind == ElementKind::Drive {
        decode_dvcid(d.get(at..).unwrap_or(&[]))
    } else {
        None
    };
    Element {
        kind,
        address: be::u16_at(d, 0).unwrap_or(0),
        full,
        volume_tag: if full { volume_tag } else { None },
        source,
        exception: (flags & 0x04 != 0).then(|| (d[4], d[5])),
        accessible: flags & 0x08 != 0,
        imported: kind == ElementKind::ImportExport && flags & 0x02 != 0,
        drive_id,
    }
}

/// The identification descriptor after the volume tags: code set, identifier type, length, identifier.
/// Type 1 is vendor (8) + product (16) + serial; type 0 (Quantum) is the serial alone.
fn decode_dvcid(b: &[u8]) -> Option<DriveIdentifier> {
    let id_type = b.get(1)? & 0x0f;
    let len = *b.get(3)? as usize;
    let id = b.get(4..4 + len.min(b.len().saturating_sub(4)))?;
    if id.is_empty() {
        return None;
    }
    let ident = match id_type {
        1 if id.len() > 24 => DriveIdentifier {
            vendor: be::ascii(&id[..8]),
            product: be::ascii(&id[8..24]),
            serial: be::ascii(&id[24..]),
        },
        _ => DriveIdentifier {
            vendor: String::new(),
            product: String::new(),
            serial: be::ascii(id),
        },
    };
    (!ident.serial.is_empty()).then_some(ident)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a response the way SMC-3 lays it out: one page per kind.
    pub fn response(pages: &[(ElementKind, bool, bool, Vec<Vec<u8>>)]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut count = 0u16;
        let mut first = None;
        for (kind, pvol, dvcid, descs) in pages {
            let desc_len = 12 + if *pvol { 36 } else { 0 } + if *dvcid { 4 + 34 } else { 0 };
            let mut h = vec![kind.code(), if *pvol { 0x80 } else { 0 }, 0, 0, 0, 0, 0, 0];
            be::put(&mut h, 2, 2, desc_len as u64);
            be::put(&mut h, 5, 3, (desc_len * descs.len()) as u64);
            body.extend_from_slice(&h);
            for d in descs {
                let mut d = d.clone();
                d.resize(desc_len, 0);
                first.get_or_insert(be::u16_at(&d, 0).unwrap());
                body.extend_from_slice(&d);
                count += 1;
            }
        }
        let mut out = vec![0u8; 8];
        be::put(&mut out, 0, 2, first.unwrap_or(0) as u64);
        be::put(&mut out, 2, 2, count as u64);
        be::put(&mut out, 5, 3, body.len() as u64);
        out.extend(body);
        out
    }

    pub fn desc(
        addr: u16,
        full: bool,
        tag: Option<&str>,
        source: Option<u16>,
        dvcid_serial: Option<&str>,
    ) -> Vec<u8> {
        let mut d = vec![0u8; 12];
        be::put(&mut d, 0, 2, addr as u64);
        d[2] = if full { 0x09 } else { 0x08 };
        if let Some(s) = source {
            d[9] = 0x80;
            be::put(&mut d, 10, 2, s as u64);
        }
        let mut t = [b' '; 36];
        if let Some(tag) = tag {
            t[..tag.len()].copy_from_slice(tag.as_bytes());
        }
        d.extend_from_slice(&t);
        if let Some(serial) = dvcid_serial {
            let mut id = format!("{:<8}{:<16}{:<10}", "IBM", "ULT3580-HH6", serial).into_bytes();
            id.truncate(34);
            d.extend_from_slice(&[0x02, 0x01, 0, 34]);
            d.extend(id);
        }
        d
    }

    #[test]
    fn decodes_slots_and_drives_with_dvcid() {
        let r = response(&[
            (
                ElementKind::Storage,
                true,
                false,
                vec![
                    desc(4096, true, Some("RV0001L6"), None, None),
                    desc(4097, false, None, None, None),
                ],
            ),
            (
                ElementKind::Drive,
                true,
                true,
                vec![desc(
                    256,
                    true,
                    Some("RV0002L6"),
                    Some(4098),
                    Some("10WT00001"),
                )],
            ),
        ]);
        let d = decode(&r);
        assert_eq!(d.available, 3);
        assert_eq!(d.elements.len(), 3);
        assert_eq!(d.elements[0].volume_tag.as_deref(), Some("RV0001L6"));
        assert!(d.elements[0].full && d.elements[0].accessible);
        assert!(!d.elements[1].full);
        let drive = &d.elements[2];
        assert_eq!(drive.kind, ElementKind::Drive);
        assert_eq!(drive.source, Some(4098));
        assert_eq!(drive.drive_id.as_ref().unwrap().serial, "10WT00001");
        assert_eq!(drive.drive_id.as_ref().unwrap().product, "ULT3580-HH6");
    }

    #[test]
    fn survives_tgt_short_byte_count() {
        // tgt: header byte counts 8 short, so the last 52-byte descriptor arrives as 44 bytes.
        let mut r = response(&[(
            ElementKind::Storage,
            true,
            false,
            vec![
                desc(4096, true, Some("RV0001L6"), None, None),
                desc(4097, true, Some("RV0002L6"), None, None),
            ],
        )]);
        let page_len = be::u24_at(&r, 13).unwrap() - 8;
        be::put(&mut r, 13, 3, page_len as u64);
        let total = be::u24_at(&r, 5).unwrap() - 8;
        be::put(&mut r, 5, 3, total as u64);
        r.truncate(r.len() - 8);
        let d = decode(&r);
        assert_eq!(d.elements.len(), 2);
        assert_eq!(d.elements[1].volume_tag.as_deref(), Some("RV0002L6"));
    }

    #[test]
    fn every_truncation_is_survived() {
        let r = response(&[
            (
                ElementKind::Storage,
                true,
                false,
                vec![desc(4096, true, Some("A00001L5"), None, None)],
            ),
            (
                ElementKind::Drive,
                true,
                true,
                vec![desc(256, false, None, None, Some("X1"))],
            ),
        ]);
        for cut in 0..=r.len() {
            let d = decode(&r[..cut]);
            assert!(d.elements.len() <= 2);
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&b);
        }
    }
}
