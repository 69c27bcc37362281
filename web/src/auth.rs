//! Bearer-token checks for the mutating API calls.

use subtle::ConstantTimeEq;

/// The configured token, kept only as its BLAKE3 digest: every comparison is then over 32
/// bytes whatever the lengths, so its timing reveals neither the token's length nor how long a
/// prefix of it a guess got right.
#[derive(Clone)]
pub(crate) struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub(crate) fn new(token: &str) -> Self {
        TokenDigest(*blake3::hash(token.as_bytes()).as_bytes())
    }

    pub(crate) fn matches(&self, presented: &str) -> bool {
        let presented = blake3::hash(presented.as_bytes());
        self.0.ct_eq(presented.as_bytes()).into()
    }
}

/// Compares two tokens in constant time (with respect to their contents and the expected
/// token's length): true only when they are byte-for-byte equal.
pub fn tokens_equal(expected: &str, presented: &str) -> bool {
    TokenDigest::new(expected).matches(presented)
}

/// What an `Authorization` header holds, if it is a well-formed bearer credential.
pub(crate) fn bearer_token(header: Option<&axum::http::HeaderValue>) -> Option<&str> {
    let value = header?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    // RFC 7235: the scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() || token.contains(|c: char| !c.is_ascii_graphic()) {
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn equal_tokens_match() {
        assert!(tokens_equal("0123456789abcdef0123", "0123456789abcdef0123"));
    }

    #[test]
    fn unequal_tokens_of_same_length_do_not_match() {
        assert!(!tokens_equal(
            "0123456789abcdef0123",
            "0123456789abcdef0124"
        ));
        assert!(!tokens_equal(
            "0123456789abcdef0123",
            "x123456789abcdef0123"
        ));
    }

    #[test]
    fn tokens_of_different_length_do_not_match() {
        assert!(!tokens_equal("0123456789abcdef0123", "0123456789abcdef012"));
        assert!(!tokens_equal(
            "0123456789abcdef0123",
            "0123456789abcdef01234"
        ));
        assert!(!tokens_equal("0123456789abcdef0123", ""));
        assert!(!tokens_equal("", "0123456789abcdef0123"));
    }

    #[test]
    fn bearer_header_parsing() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer_token(Some(&h("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(Some(&h("bearer  abc "))), Some("abc"));
        assert_eq!(bearer_token(Some(&h("Basic abc"))), None);
        assert_eq!(bearer_token(Some(&h("Bearer"))), None);
        assert_eq!(bearer_token(Some(&h("Bearer "))), None);
        assert_eq!(bearer_token(Some(&h("Bearer a b"))), None);
        assert_eq!(bearer_token(None), None);
    }
}
