//! Medium auxiliary memory (the cartridge's chip): READ ATTRIBUTE (service action 0, attribute values;
//! service action 1, the list of attribute identifiers present) and WRITE ATTRIBUTE, plus names for the
//! attributes worth showing an operator.
//!
//! READ ATTRIBUTE with a first attribute identifier returns the attributes whose identifier is at least
//! that one. A missing attribute therefore shows as a response whose first attribute has another
//! identifier, an empty response, or (IBM, maminfo#2) ILLEGAL REQUEST 24/00: all three mean "not present".

use ltfs::mam::{Attribute, AttributeFormat};
use scsi::be;

pub const READ_ATTRIBUTE: u8 = 0x8c;
pub const WRITE_ATTRIBUTE: u8 = 0x8d;

/// READ ATTRIBUTE service actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAttributeAction {
    /// Attribute values, starting at the first attribute identifier.
    Values = 0,
    /// The identifiers of the attributes present.
    List = 1,
}

pub fn read_attribute_cdb(
    action: ReadAttributeAction,
    partition: u8,
    first_id: u16,
    alloc: u32,
) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = READ_ATTRIBUTE;
    c[1] = action as u8;
    c[7] = partition;
    be::put(&mut c, 8, 2, first_id as u64);
    be::put(&mut c, 10, 4, alloc as u64);
    c
}

/// WRITE ATTRIBUTE with WTC = 1 (write through to the chip before completing).
pub fn write_attribute_cdb(partition: u8, len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = WRITE_ATTRIBUTE;
    c[1] = 0x01;
    c[7] = partition;
    be::put(&mut c, 10, 4, len as u64);
    c
}

/// The 4-byte header's available length, and the body cut to it and to the bytes present.
fn body(b: &[u8]) -> Option<(u32, &[u8])> {
    let avail = be::u32_at(b, 0)?;
    let end = b.len().min(4usize.saturating_add(avail as usize));
    Some((avail, &b[4..end]))
}

/// Decodes service action 0 data: a 4-byte available-data length, then attributes. A cut attribute ends
/// the list. `None` only when the header itself is missing.
pub fn decode_attribute_values(b: &[u8]) -> Option<Vec<Attribute>> {
    Some(Attribute::decode_list(body(b)?.1))
}

/// How many bytes the whole response needs (header included), from its header.
pub fn attribute_data_len(b: &[u8]) -> Option<usize> {
    Some(4 + be::u32_at(b, 0)? as usize)
}

/// The attribute `id` if the response starts with it; `None` when the first attribute is another one,
/// the list is empty, or it is cut.
pub fn decode_one_attribute(b: &[u8], id: u16) -> Option<Attribute> {
    let (_, body) = body(b)?;
    Attribute::decode(body)
        .map(|(a, _)| a)
        .filter(|a| a.id == id)
}

/// Decodes service action 1 data: the identifiers of the attributes present.
pub fn decode_attribute_list(b: &[u8]) -> Vec<u16> {
    body(b)
        .map(|(_, body)| {
            body.chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect()
        })
        .unwrap_or_default()
}

/// The WRITE ATTRIBUTE parameter list: 4-byte length, then the attributes.
pub fn encode_write_attribute(attributes: &[Attribute]) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    for a in attributes {
        out.extend_from_slice(&a.encode());
    }
    let n = (out.len() - 4) as u64;
    be::put(&mut out, 0, 4, n);
    out
}

/// Encodes service action 0 data (for test transports and the virtual library).
pub fn encode_attribute_values(attributes: &[Attribute]) -> Vec<u8> {
    encode_write_attribute(attributes)
}

/// How to show an attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A big-endian number, with a unit suffix.
    Number(&'static str),
    /// Trimmed ASCII/UTF-8 text.
    Text,
    /// ASCII `YYYYMMDD`, shown as `YYYY-MM-DD`.
    Date,
    /// Hex bytes.
    Hex,
}

/// Names of the attributes tapectl shows (SPC-4 MAM attributes, plus IBM's LTFS volume lock).
pub const KNOWN_ATTRIBUTES: &[(u16, &str, Display)] = &[
    (
        0x0000,
        "remaining capacity in partition",
        Display::Number(" MiB"),
    ),
    (
        0x0001,
        "maximum capacity in partition",
        Display::Number(" MiB"),
    ),
    (0x0002, "TapeAlert flags", Display::Hex),
    (0x0003, "load count", Display::Number("")),
    (0x0004, "MAM space remaining", Display::Number(" B")),
    (0x0005, "assigning organization", Display::Text),
    (0x0006, "formatted density code", Display::Hex),
    (0x0007, "initialization count", Display::Number("")),
    (0x0009, "volume change reference", Display::Number("")),
    (0x020a, "device at last load", Display::Text),
    (0x020b, "device at load n-1", Display::Text),
    (0x020c, "device at load n-2", Display::Text),
    (0x020d, "device at load n-3", Display::Text),
    (
        0x0220,
        "total MiB written in medium life",
        Display::Number(" MiB"),
    ),
    (
        0x0221,
        "total MiB read in medium life",
        Display::Number(" MiB"),
    ),
    (
        0x0222,
        "total MiB written in current/last load",
        Display::Number(" MiB"),
    ),
    (
        0x0223,
        "total MiB read in current/last load",
        Display::Number(" MiB"),
    ),
    (0x0400, "medium manufacturer", Display::Text),
    (0x0401, "medium serial number", Display::Text),
    (0x0402, "medium length", Display::Number(" m")),
    (0x0403, "medium width", Display::Number(" x0.1 mm")),
    (0x0404, "medium assigning organization", Display::Text),
    (0x0405, "medium density code", Display::Hex),
    (0x0406, "medium manufacture date", Display::Date),
    (0x0407, "MAM capacity", Display::Number(" B")),
    (0x0408, "medium type", Display::Hex),
    (0x0409, "medium type information", Display::Hex),
    (0x0800, "application vendor", Display::Text),
    (0x0801, "application name", Display::Text),
    (0x0802, "application version", Display::Text),
    (0x0803, "user medium text label", Display::Text),
    (0x0804, "date and time last written", Display::Text),
    (0x0805, "text localization identifier", Display::Hex),
    (0x0806, "barcode", Display::Text),
    (0x0807, "owning host textual name", Display::Text),
    (0x0808, "media pool", Display::Text),
    (0x080b, "application format version", Display::Text),
    (0x080c, "volume coherency information", Display::Hex),
    (0x1623, "volume lock (IBM LTFS)", Display::Number("")),
];

/// The name of a known attribute.
pub fn attribute_name(id: u16) -> Option<&'static str> {
    KNOWN_ATTRIBUTES
        .iter()
        .find(|(i, ..)| *i == id)
        .map(|(_, n, _)| *n)
}

/// The value of an attribute for display: known attributes as their table says, others by their format
/// (ASCII/text trimmed, binary up to 8 bytes as a number, longer binary as hex).
pub fn display_value(a: &Attribute) -> String {
    let how = KNOWN_ATTRIBUTES
        .iter()
        .find(|(i, ..)| *i == a.id)
        .map(|(.., d)| *d)
        .unwrap_or(match a.format {
            AttributeFormat::Ascii | AttributeFormat::Text => Display::Text,
            _ if (1..=8).contains(&a.value.len()) => Display::Number(""),
            _ => Display::Hex,
        });
    match how {
        Display::Number(unit) if (1..=8).contains(&a.value.len()) => {
            format!(
                "{}{unit}",
                be::uint_at(&a.value, 0, a.value.len()).unwrap_or(0)
            )
        }
        Display::Text => a.text(),
        Display::Date => {
            let t = a.text();
            match (t.len(), t.bytes().all(|c| c.is_ascii_digit())) {
                (8, true) => format!("{}-{}-{}", &t[..4], &t[4..6], &t[6..]),
                _ => t,
            }
        }
        _ => a.value.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attrs() -> Vec<Attribute> {
        vec![
            Attribute::new(0x0000, AttributeFormat::Binary, 1_400_000u64.to_be_bytes()),
            Attribute::ascii(0x0406, "20230115", 8),
            Attribute::ascii(0x0806, "RV0001L6", 32),
        ]
    }

    #[test]
    fn cdbs() {
        let c = read_attribute_cdb(ReadAttributeAction::Values, 1, 0x080c, 4096);
        assert_eq!(c[..2], [0x8c, 0]);
        assert_eq!(c[7], 1);
        assert_eq!(c[8..10], [0x08, 0x0c]);
        assert_eq!(c[10..14], 4096u32.to_be_bytes());
        assert_eq!(
            read_attribute_cdb(ReadAttributeAction::List, 0, 0, 512)[1],
            1
        );
        let w = write_attribute_cdb(0, 41);
        assert_eq!(w[..2], [0x8d, 1]);
        assert_eq!(w[10..14], 41u32.to_be_bytes());
    }

    #[test]
    fn values_one_and_missing() {
        let data = encode_attribute_values(&attrs());
        assert_eq!(attribute_data_len(&data), Some(data.len()));
        assert_eq!(decode_attribute_values(&data).unwrap(), attrs());
        assert_eq!(
            decode_one_attribute(&data, 0x0000),
            Some(attrs()[0].clone())
        );
        // Asked for 0x0001, got the next one present: missing.
        let later = encode_attribute_values(&attrs()[1..]);
        assert_eq!(decode_one_attribute(&later, 0x0001), None);
        assert_eq!(
            decode_one_attribute(&encode_attribute_values(&[]), 0x0806),
            None
        );
    }

    #[test]
    fn truncation() {
        let data = encode_attribute_values(&attrs());
        for cut in 0..data.len() {
            let v = decode_attribute_values(&data[..cut]);
            assert_eq!(v.is_some(), cut >= 4);
            let n = v.unwrap_or_default().len();
            assert!(n < 3, "cut {cut} decoded {n}");
            let first = decode_one_attribute(&data[..cut], 0);
            assert_eq!(first.is_some(), cut >= 4 + 5 + 8, "cut {cut}");
        }
        // A header claiming less than is there cuts the list.
        let mut short = data.clone();
        short[3] = 13;
        assert_eq!(decode_attribute_values(&short).unwrap().len(), 1);
        let mut long = data.clone();
        long[0] = 0x7f;
        assert_eq!(decode_attribute_values(&long).unwrap().len(), 3);
    }

    #[test]
    fn list() {
        let b = [0, 0, 0, 6, 0x00, 0x00, 0x04, 0x06, 0x08, 0x06, 0x08];
        assert_eq!(decode_attribute_list(&b), vec![0, 0x0406, 0x0806]);
        for cut in 0..b.len() {
            assert!(decode_attribute_list(&b[..cut]).len() <= (cut.saturating_sub(4)) / 2);
        }
    }

    #[test]
    fn display() {
        let a = attrs();
        assert_eq!(display_value(&a[0]), "1400000 MiB");
        assert_eq!(display_value(&a[1]), "2023-01-15");
        assert_eq!(display_value(&a[2]), "RV0001L6");
        assert_eq!(attribute_name(0x0806), Some("barcode"));
        assert_eq!(
            display_value(&Attribute::new(0x9999, AttributeFormat::Binary, vec![1, 2])),
            "258"
        );
        assert_eq!(
            display_value(&Attribute::new(
                0x080c,
                AttributeFormat::Binary,
                vec![0xab, 1]
            )),
            "ab01"
        );
        assert_eq!(
            display_value(&Attribute::new(0x0000, AttributeFormat::Binary, vec![])),
            ""
        );
        assert_eq!(display_value(&Attribute::ascii(0x0406, "2023", 8)), "2023");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300), id: u16) {
            if let Some(v) = decode_attribute_values(&b) {
                for a in v {
                    let _ = display_value(&a);
                }
            }
            let _ = decode_one_attribute(&b, id);
            let _ = decode_attribute_list(&b);
            let _ = attribute_data_len(&b);
        }
    }
}
