//! MAM (medium auxiliary memory) attributes in the SPC form: a 5-byte header (identifier BE16, format,
//! length BE16) then the value. LTFS stores its volume coherency (0x080C) and labels this way.

/// The format byte's low two bits (SPC-4 table "ATTRIBUTE FORMAT").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeFormat {
    Binary,
    Ascii,
    Text,
    Reserved,
}

impl AttributeFormat {
    pub fn code(self) -> u8 {
        match self {
            Self::Binary => 0,
            Self::Ascii => 1,
            Self::Text => 2,
            Self::Reserved => 3,
        }
    }
    pub fn from_code(code: u8) -> Self {
        match code & 3 {
            0 => Self::Binary,
            1 => Self::Ascii,
            2 => Self::Text,
            _ => Self::Reserved,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub id: u16,
    pub format: AttributeFormat,
    /// Read-only attributes (set by the drive) have bit 7 of the format byte set.
    pub read_only: bool,
    pub value: Vec<u8>,
}

impl Attribute {
    pub fn new(id: u16, format: AttributeFormat, value: impl Into<Vec<u8>>) -> Self {
        Self {
            id,
            format,
            read_only: false,
            value: value.into(),
        }
    }

    /// An ASCII attribute padded with spaces to `len` (cut if longer).
    pub fn ascii(id: u16, text: &str, len: usize) -> Self {
        let mut v: Vec<u8> = text.bytes().take(len).collect();
        v.resize(len, b' ');
        Self::new(id, AttributeFormat::Ascii, v)
    }

    /// Header plus value, as READ/WRITE ATTRIBUTE carry it. Values longer than 65535 bytes are cut.
    pub fn encode(&self) -> Vec<u8> {
        let len = self.value.len().min(u16::MAX as usize);
        let mut out = Vec::with_capacity(5 + len);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.push(self.format.code() | if self.read_only { 0x80 } else { 0 });
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&self.value[..len]);
        out
    }

    /// Decodes one attribute from the front of `buf`; returns it and the bytes it used.
    /// `None` when the header or value is cut short.
    pub fn decode(buf: &[u8]) -> Option<(Self, usize)> {
        let header = buf.get(..5)?;
        let id = u16::from_be_bytes([header[0], header[1]]);
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        let value = buf.get(5..5 + len)?;
        let attr = Self {
            id,
            format: AttributeFormat::from_code(header[2]),
            read_only: header[2] & 0x80 != 0,
            value: value.to_vec(),
        };
        Some((attr, 5 + len))
    }

    /// Decodes a list of attributes (the body of READ ATTRIBUTE service action 0), stopping at a cut one.
    pub fn decode_list(mut buf: &[u8]) -> Vec<Self> {
        let mut out = Vec::new();
        while let Some((a, used)) = Attribute::decode(buf) {
            out.push(a);
            buf = &buf[used..];
        }
        out
    }

    /// The value as text, trailing spaces and NULs trimmed; lossy for invalid UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.value)
            .trim_end_matches([' ', '\0'])
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let a = Attribute::ascii(0x0806, "RV0001L6", 32);
        let enc = a.encode();
        assert_eq!(&enc[..5], &[0x08, 0x06, 0x01, 0x00, 0x20]);
        let (b, used) = Attribute::decode(&enc).unwrap();
        assert_eq!((b.clone(), used), (a, 37));
        assert_eq!(b.text(), "RV0001L6");
        for cut in 0..enc.len() {
            assert!(Attribute::decode(&enc[..cut]).is_none());
        }
        let mut two = enc.clone();
        two.extend_from_slice(
            &Attribute::new(9, AttributeFormat::Binary, vec![0, 0, 0, 2]).encode(),
        );
        assert_eq!(Attribute::decode_list(&two).len(), 2);
        assert_eq!(Attribute::decode_list(&two[..two.len() - 1]).len(), 1);
    }
}
