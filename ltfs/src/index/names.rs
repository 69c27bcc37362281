//! LTFS nametype: validation, percent-encoding (spec 2.3.0+, ltfs-format.md §4) and NFC normalisation.

use std::borrow::Cow;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Maximum length of a name, in code points.
pub const MAX_NAME_CHARS: usize = 255;

/// What a nametype value is used for; the rules differ slightly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A file or directory name: non-empty, no `/`, not `.` or `..`, ≤ 255 code points.
    Entry,
    /// The root directory's name (the volume name): may be empty.
    Root,
    /// An extended attribute key: non-empty, ≤ 255 code points.
    XattrKey,
    /// A symlink target: may contain `/`, may be longer than 255 code points.
    SymlinkTarget,
}

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name longer than {MAX_NAME_CHARS} code points ({0})")]
    TooLong(usize),
    #[error("name longer than {limit} bytes ({len})")]
    TooManyBytes { len: usize, limit: usize },
    #[error("name contains '/'")]
    Slash,
    #[error("name contains the forbidden character U+{0:04X}")]
    ForbiddenChar(u32),
    #[error("name is '.' or '..'")]
    Dots,
    #[error("percent-decoded name is not valid UTF-8")]
    InvalidUtf8,
}

fn forbidden(c: char) -> bool {
    matches!(c, '\u{0}' | '\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
}

/// Checks a (decoded, normalised) name. `max_bytes` bounds the UTF-8 length.
pub fn validate(name: &str, kind: NameKind, max_bytes: usize) -> Result<(), NameError> {
    if name.len() > max_bytes {
        return Err(NameError::TooManyBytes {
            len: name.len(),
            limit: max_bytes,
        });
    }
    if name.is_empty() {
        return match kind {
            NameKind::Root => Ok(()),
            _ => Err(NameError::Empty),
        };
    }
    if let Some(c) = name.chars().find(|&c| forbidden(c)) {
        return Err(NameError::ForbiddenChar(c as u32));
    }
    match kind {
        NameKind::SymlinkTarget => {}
        NameKind::Entry | NameKind::Root | NameKind::XattrKey => {
            let n = name.chars().count();
            if n > MAX_NAME_CHARS {
                return Err(NameError::TooLong(n));
            }
            if kind != NameKind::XattrKey {
                if name.contains('/') {
                    return Err(NameError::Slash);
                }
                if name == "." || name == ".." {
                    return Err(NameError::Dots);
                }
            }
        }
    }
    Ok(())
}

/// Whether the writer must percent-encode this name: it contains `:` or a C0 control other than TAB, LF, CR
/// (`fs_is_percent_encode_required()`).
pub fn needs_percent_encoding(name: &str) -> bool {
    name.bytes()
        .any(|b| b == b':' || (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')))
}

/// Percent-encodes every byte outside printable ASCII minus {space, `%`, `:`} as `%XX` (uppercase hex).
pub fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if (0x21..=0x7E).contains(&b) && b != b'%' && b != b':' {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes a `percentencoded="true"` name (`decode_entry_name()`): `%XX` becomes the byte, except that a decoded
/// `/`, 0x00 or 0x1F is kept as the literal `%XX`; a literal `/` becomes `_` (unless `keep_slash`, for symlink
/// targets); a `%` not followed by two hex digits is kept.
pub fn percent_decode(raw: &str, keep_slash: bool) -> Result<String, NameError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    let v = h << 4 | l;
                    if matches!(v, b'/' | 0 | 0x1F) {
                        out.extend_from_slice(&b[i..i + 3]);
                    } else {
                        out.push(v);
                    }
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'/' if !keep_slash => {
                out.push(b'_');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| NameError::InvalidUtf8)
}

/// NFC normalisation (`pathname_normalize()`); borrows when the name is already NFC.
pub fn nfc(name: &str) -> Cow<'_, str> {
    if is_nfc_quick(name.chars()) == IsNormalized::Yes {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(name.nfc().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert!(needs_percent_encoding("a b:c"));
        assert!(needs_percent_encoding("x\u{1}"));
        assert!(!needs_percent_encoding("tab\there"));
        assert!(!needs_percent_encoding("héllo 100%"));
        assert_eq!(percent_encode("a b:c"), "a%20b%3Ac");
        assert_eq!(percent_encode("é:%"), "%C3%A9%3A%25");
        assert_eq!(percent_decode("a%20b%3Ac", false).unwrap(), "a b:c");
        assert_eq!(percent_decode("%C3%A9%3a", false).unwrap(), "é:");
        assert_eq!(percent_decode("a%2Fb%00%1F", false).unwrap(), "a%2Fb%00%1F");
        assert_eq!(percent_decode("a/b", false).unwrap(), "a_b");
        assert_eq!(percent_decode("a/b", true).unwrap(), "a/b");
        assert_eq!(percent_decode("100%", false).unwrap(), "100%");
        assert_eq!(percent_decode("%zz%4", false).unwrap(), "%zz%4");
        assert_eq!(percent_decode("%C3", false), Err(NameError::InvalidUtf8));
        for s in ["a b:c", "é\u{1}\u{7f}%", "日本:語"] {
            assert_eq!(percent_decode(&percent_encode(s), false).unwrap(), s);
        }
    }

    #[test]
    fn validation() {
        let v = |s: &str| validate(s, NameKind::Entry, 1024);
        assert!(v("hello.txt").is_ok());
        assert_eq!(v(""), Err(NameError::Empty));
        assert!(validate("", NameKind::Root, 1024).is_ok());
        assert_eq!(v("."), Err(NameError::Dots));
        assert_eq!(v(".."), Err(NameError::Dots));
        assert_eq!(v("a/b"), Err(NameError::Slash));
        assert!(validate("a/b", NameKind::SymlinkTarget, 4096).is_ok());
        assert_eq!(v("a\u{0}"), Err(NameError::ForbiddenChar(0)));
        assert_eq!(v("a\u{1f}"), Err(NameError::ForbiddenChar(0x1f)));
        assert_eq!(v("a\u{ffff}"), Err(NameError::ForbiddenChar(0xffff)));
        assert!(v(&"é".repeat(255)).is_ok());
        assert_eq!(v(&"é".repeat(256)), Err(NameError::TooLong(256)));
        assert_eq!(nfc("e\u{301}"), "é");
    }
}
