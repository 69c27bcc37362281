//! The Host check against DNS rebinding: a web page on `evil.example` whose name the attacker
//! re-points at 127.0.0.1 would otherwise read the API from the browser, as the browser thinks
//! it talks to `evil.example`. It still sends `Host: evil.example`, so the daemon answers only to
//! names it knows: IP addresses (a page can only name those in its own origin, so reading the
//! answer needs no rebinding, and the browser's same-origin rules hold), `localhost`, and the
//! names configured in `serve.allowed_hosts`. Ports are not compared: rebinding changes what a
//! name points at, not the port, and a port forward may change the port.

use std::net::{Ipv4Addr, Ipv6Addr};

/// What a Host header (or an absolute request target's authority) names.
#[derive(Debug, PartialEq, Eq)]
enum Named<'a> {
    Ip,
    /// A name, not yet lowercased, without the port or a trailing dot.
    Name(&'a str),
}

/// Splits `host[:port]` (IPv6 in brackets) into what it names; `None` if it is malformed.
fn parse(authority: &str) -> Option<Named<'_>> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        inside.parse::<Ipv6Addr>().ok()?;
        return Some(Named::Ip);
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return None,
            None => authority,
        }
    };
    if host.parse::<Ipv4Addr>().is_ok() {
        return Some(Named::Ip);
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(Named::Name(name))
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Checks one `serve.allowed_hosts` entry and returns it as it is compared (lowercase, no
/// trailing dot). IP addresses are accepted, though they are always allowed anyway.
pub fn allowed_host_name(entry: &str) -> Result<String, String> {
    if entry.contains('*') {
        return Err(format!(
            "{entry:?}: wildcards are not supported; list each name the daemon is reached by"
        ));
    }
    let unbracketed = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    if unbracketed.parse::<std::net::IpAddr>().is_ok() {
        return Ok(unbracketed.to_ascii_lowercase());
    }
    if entry.contains(':') {
        return Err(format!(
            "{entry:?}: give only the host name, without scheme or port (ports are not compared), e.g. \"nas.example.lan\""
        ));
    }
    match parse(entry) {
        Some(Named::Name(n)) => Ok(n.to_ascii_lowercase()),
        _ => Err(format!(
            "{entry:?} is not a host name: expected letters, digits, '-' and '.', e.g. \"nas.example.lan\""
        )),
    }
}

/// The names requests may carry in their Host header.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowedHosts {
    /// Lowercase, without trailing dots; besides IP addresses and `localhost`.
    names: Vec<String>,
}

/// Why a request's Host is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A well-formed host the daemon does not answer to (421).
    Unknown(String),
    /// Not a host at all (400).
    Malformed,
}

impl AllowedHosts {
    /// `names` as given in `serve.allowed_hosts`; entries that are not host names are left out
    /// with a warning (the daemon's configuration parser refuses them before this).
    pub(crate) fn new(names: &[String]) -> AllowedHosts {
        let mut out = Vec::new();
        for n in names {
            match allowed_host_name(n) {
                Ok(n) => out.push(n),
                Err(e) => tracing::warn!("ignoring an allowed host: {e}"),
            }
        }
        AllowedHosts { names: out }
    }

    /// Whether a request naming `authority` (`host[:port]`) may be answered.
    pub(crate) fn check(&self, authority: &str) -> Result<(), Refusal> {
        match parse(authority) {
            Some(Named::Ip) => Ok(()),
            Some(Named::Name(n)) => {
                let n = n.to_ascii_lowercase();
                if n == "localhost" || self.names.contains(&n) {
                    Ok(())
                } else {
                    Err(Refusal::Unknown(n))
                }
            }
            None => Err(Refusal::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(extra: &[&str]) -> AllowedHosts {
        AllowedHosts::new(&extra.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn ip_addresses_and_localhost_are_always_allowed() {
        let a = allowed(&[]);
        for ok in [
            "127.0.0.1:8480",
            "127.0.0.1",
            "[::1]:8480",
            "[::1]",
            "192.168.1.10:9999",
            "0.0.0.0:8480",
            "localhost:8480",
            "LOCALHOST",
            "localhost.:8480",
        ] {
            assert_eq!(a.check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn other_names_are_refused_unless_configured() {
        let a = allowed(&[]);
        assert_eq!(
            a.check("evil.example:8480"),
            Err(Refusal::Unknown("evil.example".into()))
        );
        assert_eq!(
            a.check("127.0.0.1.evil.example"),
            Err(Refusal::Unknown("127.0.0.1.evil.example".into()))
        );
        assert_eq!(
            a.check("localhost.evil.example"),
            Err(Refusal::Unknown("localhost.evil.example".into()))
        );
        let a = allowed(&["NAS.example.lan", "backup.example.com."]);
        for ok in [
            "nas.example.lan:8480",
            "Nas.Example.Lan",
            "backup.example.com",
            "backup.example.com.:443",
        ] {
            assert_eq!(a.check(ok), Ok(()), "{ok}");
        }
        assert!(a.check("example.lan").is_err());
        assert!(a.check("x.nas.example.lan").is_err());
    }

    #[test]
    fn malformed_hosts_are_refused() {
        let a = allowed(&["nas"]);
        for bad in [
            "",
            ":8480",
            "nas:",
            "nas:x",
            "nas:123456",
            "user@nas",
            "nas/x",
            "[::1",
            "[::1]x",
            "[nas]:80",
            "n as",
            "nas..lan",
            "::1",
        ] {
            assert_eq!(a.check(bad), Err(Refusal::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn configured_names_are_checked() {
        assert_eq!(allowed_host_name("NAS.lan.").unwrap(), "nas.lan");
        assert_eq!(allowed_host_name("10.0.0.5").unwrap(), "10.0.0.5");
        assert_eq!(allowed_host_name("::1").unwrap(), "::1");
        assert_eq!(allowed_host_name("[::1]").unwrap(), "::1");
        for (bad, says) in [
            ("nas.lan:8480", "without scheme or port"),
            ("*.lan", "wildcards"),
            ("", "not a host name"),
            ("http://nas", "without scheme or port"),
            ("nas/x", "not a host name"),
            ("[::1]:80", "without scheme or port"),
        ] {
            let e = allowed_host_name(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
