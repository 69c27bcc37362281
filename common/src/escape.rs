//! File names for people: a name may hold any byte but `/` and NUL, and printing it raw lets it
//! clear the screen, rename the terminal window or split a listing line. Escaped as ripgrep does
//! (`\t`, `\r`, `\n`, `\e`, `\a`, other control bytes and invalid UTF-8 as `\xNN`, a backslash as
//! `\\`), so what is shown can be read, and typed back in a shell with `$'…'`. JSON output carries
//! the exact bytes instead.

use std::borrow::Cow;

/// `bytes` as text safe for a terminal.
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.chars().any(needs_escape)
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_escaped(&mut out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                push_escaped(&mut out, std::str::from_utf8(good).expect("valid prefix"));
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    out.push_str(&format!("\\x{b:02X}"));
                }
                rest = &bad[n..];
            }
        }
    }
    Cow::Owned(out)
}

/// `s` as text safe for a terminal.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_bytes(s.as_bytes())
}

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\'
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\x1b' => out.push_str("\\e"),
            '\x07' => out.push_str("\\a"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_bytes_and_invalid_utf8_are_escaped() {
        assert_eq!(escape("plain é.txt"), "plain é.txt");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape("new\nline.txt"), "new\\nline.txt");
        assert_eq!(
            escape("x\x1b[2J\x1b]0;owned\x07.txt"),
            "x\\e[2J\\e]0;owned\\a.txt"
        );
        assert_eq!(escape_bytes(b"caf\xE9.txt"), "caf\\xE9.txt");
        assert_eq!(escape("a\\b"), "a\\\\b");
        assert_eq!(escape("\u{9b}"), "\\xC2\\x9B", "C1 controls too");
        assert_eq!(escape("\x7f"), "\\x7F");
    }

    proptest! {
        #[test]
        fn the_result_never_holds_a_control_character(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s = escape_bytes(&bytes);
            prop_assert!(!s.chars().any(char::is_control), "{s:?}");
        }
    }
}
