//! `iscsi://HOST[:PORT]/TARGET-IQN/LUN`, the address of one logical unit (libiscsi's URL form without
//! credentials or options).

use std::fmt;
use std::str::FromStr;

/// The iSCSI port when a URL names none (RFC 7143).
pub const DEFAULT_PORT: u16 = 3260;

/// Longest iSCSI name (RFC 7143 §4.2.7.1).
const MAX_NAME_LEN: usize = 223;

/// Highest LUN libiscsi addresses (flat space addressing, 14 bits).
pub const MAX_LUN: u16 = 16383;

/// One logical unit behind an iSCSI target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IscsiUrl {
    /// Host name, IPv4 address, or IPv6 address (without brackets).
    pub host: String,
    pub port: u16,
    /// The target's iSCSI name, e.g. `iqn.2024-01.org.rackvault:vtl`.
    pub target_iqn: String,
    pub lun: u16,
}

impl IscsiUrl {
    /// `host:port` as libiscsi wants its portal (IPv6 in brackets).
    pub fn portal(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same target with another LUN (a library's drives and changer share one target).
    pub fn with_lun(&self, lun: u16) -> IscsiUrl {
        IscsiUrl {
            lun,
            ..self.clone()
        }
    }
}

impl fmt::Display for IscsiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "iscsi://{}/{}/{}",
            self.portal(),
            self.target_iqn,
            self.lun
        )
    }
}

/// Why a string is not an iSCSI URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad iSCSI URL {input:?}: {reason}; expected iscsi://HOST[:PORT]/TARGET-IQN/LUN, \
     e.g. iscsi://127.0.0.1:3260/iqn.2024-01.org.rackvault:vtl/3"
)]
pub struct UrlError {
    pub input: String,
    pub reason: String,
}

impl FromStr for IscsiUrl {
    type Err = UrlError;

    fn from_str(input: &str) -> Result<IscsiUrl, UrlError> {
        let err = |reason: &str| UrlError {
            input: truncate(input),
            reason: reason.to_string(),
        };
        let rest = input
            .strip_prefix("iscsi://")
            .ok_or_else(|| err("it must start with iscsi://"))?;
        if rest.contains(['?', '#']) {
            return Err(err("query strings and fragments are not supported"));
        }
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| err("the target name is missing"))?;
        if authority.contains('@') {
            return Err(err(
                "credentials in the URL (user%password@) are not supported",
            ));
        }
        let (host, port) = split_host_port(authority).map_err(|r| err(&r))?;

        let (target, lun) = path
            .split_once('/')
            .ok_or_else(|| err("the LUN is missing after the target name"))?;
        if target.is_empty() {
            return Err(err("the target name is empty"));
        }
        if target.len() > MAX_NAME_LEN {
            return Err(err(&format!(
                "the target name is longer than {MAX_NAME_LEN} bytes"
            )));
        }
        if !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err(
                "the target name may hold only printable ASCII without spaces",
            ));
        }
        if lun.contains('/') {
            return Err(err("unexpected path after the LUN"));
        }
        if lun.is_empty() {
            return Err(err("the LUN is empty"));
        }
        let lun = lun
            .parse::<u16>()
            .ok()
            .filter(|l| *l <= MAX_LUN && lun.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| err(&format!("the LUN must be a number from 0 to {MAX_LUN}")))?;
        Ok(IscsiUrl {
            host,
            port,
            target_iqn: target.to_string(),
            lun,
        })
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err("bad IPv6 address in brackets".into());
        }
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or("junk after ']' in the host")?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':')
    {
        return Err("the host may hold only letters, digits, '-' and '.'".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => Some(p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad port {p:?}: want a number from 1 to 65535"))?,
    };
    Ok((host.to_string(), port))
}

/// Inputs echoed in errors are cut short: they may be garbage.
fn truncate(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn url(s: &str) -> IscsiUrl {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn reason(s: &str) -> String {
        s.parse::<IscsiUrl>().expect_err(s).reason
    }

    #[test]
    fn parses_full_and_default_port() {
        let u = url("iscsi://127.0.0.1:3270/iqn.2024-01.org.rackvault:vtl/3");
        assert_eq!(
            u,
            IscsiUrl {
                host: "127.0.0.1".into(),
                port: 3270,
                target_iqn: "iqn.2024-01.org.rackvault:vtl".into(),
                lun: 3
            }
        );
        assert_eq!(u.portal(), "127.0.0.1:3270");
        assert_eq!(
            u.to_string(),
            "iscsi://127.0.0.1:3270/iqn.2024-01.org.rackvault:vtl/3"
        );
        let u = url("iscsi://tapes.example/iqn.2024-01.org.rackvault:vtl/0");
        assert_eq!((u.host.as_str(), u.port, u.lun), ("tapes.example", 3260, 0));
        assert_eq!(
            u.with_lun(1).to_string(),
            "iscsi://tapes.example:3260/iqn.2024-01.org.rackvault:vtl/1"
        );
    }

    #[test]
    fn parses_ipv6() {
        let u = url("iscsi://[::1]:3261/iqn.x:y/1");
        assert_eq!((u.host.as_str(), u.port), ("::1", 3261));
        assert_eq!(u.portal(), "[::1]:3261");
        assert_eq!(url(&u.to_string()), u);
        assert_eq!(url("iscsi://[fe80::1]/iqn.x:y/1").port, 3260);
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        assert!(reason("http://127.0.0.1/iqn.x/1").contains("iscsi://"));
        assert!(reason("iscsi://127.0.0.1").contains("target name is missing"));
        assert!(reason("iscsi://127.0.0.1/iqn.x").contains("LUN is missing"));
        assert!(reason("iscsi://127.0.0.1/iqn.x/").contains("LUN is empty"));
        assert!(reason("iscsi://127.0.0.1//1").contains("target name is empty"));
        assert!(reason("iscsi://127.0.0.1/iqn.x/1/2").contains("after the LUN"));
        assert!(reason("iscsi://127.0.0.1/iqn.x/16384").contains("0 to 16383"));
        assert!(reason("iscsi://127.0.0.1/iqn.x/-1").contains("0 to 16383"));
        assert!(reason("iscsi://127.0.0.1/iqn.x/+1").contains("0 to 16383"));
        assert!(reason("iscsi://127.0.0.1:0/iqn.x/1").contains("bad port"));
        assert!(reason("iscsi://127.0.0.1:65536/iqn.x/1").contains("bad port"));
        assert!(reason("iscsi://127.0.0.1:/iqn.x/1").contains("bad port"));
        assert!(reason("iscsi://127.0.0.1:+80/iqn.x/1").contains("bad port"));
        assert!(reason("iscsi://:3260/iqn.x/1").contains("host is missing"));
        assert!(reason("iscsi://u%p@127.0.0.1/iqn.x/1").contains("credentials"));
        assert!(reason("iscsi://[::1/iqn.x/1").contains("unclosed"));
        assert!(reason("iscsi://[::1]x/iqn.x/1").contains("junk"));
        assert!(reason("iscsi://ho st/iqn.x/1").contains("host may hold"));
        assert!(reason("iscsi://h/iqn x/1").contains("printable"));
        assert!(reason("iscsi://h/iqn.x/1?x=1").contains("query"));
        let long = format!("iscsi://h/{}/1", "i".repeat(300));
        assert!(reason(&long).contains("longer than 223"));
        let e = "iscsi://h".parse::<IscsiUrl>().unwrap_err().to_string();
        assert!(
            e.contains("expected iscsi://HOST[:PORT]/TARGET-IQN/LUN"),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<IscsiUrl>();
        }

        #[test]
        fn near_miss_never_panics(s in "iscsi://[\\[\\]:@a-z0-9./%?-]{0,40}") {
            let _ = s.parse::<IscsiUrl>();
        }

        #[test]
        fn round_trips(host in "[a-z][a-z0-9-]{0,10}(\\.[a-z0-9]{1,5}){0,3}", port in 1u16.., lun in 0u16..=MAX_LUN,
                       iqn in "iqn\\.[0-9]{4}-[0-9]{2}\\.[a-z.]{1,20}:[a-z0-9.-]{1,20}") {
            let u = IscsiUrl { host, port, target_iqn: iqn, lun };
            prop_assert_eq!(u.to_string().parse::<IscsiUrl>().unwrap(), u);
        }
    }
}
