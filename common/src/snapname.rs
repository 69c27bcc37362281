//! Snapshot names: the run's UTC start time in ISO 8601 basic format, `20261124T230256Z`, with a
//! `-N` suffix when two runs of a job start within the same second. No colons, so the names are
//! safe on SMB/NFS shares and in ZFS snapshot names alike.

use jiff::Timestamp;

pub fn format(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// The time a snapshot name carries, if it is one of ours.
pub fn parse(name: &str) -> Option<Timestamp> {
    let base = name.split_once('-').map(|(b, _)| b).unwrap_or(name);
    if base.len() != 16 || !base.ends_with('Z') {
        return None;
    }
    let t = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", &base[..15]).ok()?;
    t.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// A name for a run started at `t` that does not collide with `existing`.
pub fn unique(t: Timestamp, existing: &[String]) -> String {
    let base = format(t);
    if !existing.contains(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !existing.contains(n))
        .expect("unbounded")
}

/// Orders snapshot names by time, then suffix.
pub fn sort_key(name: &str) -> (Option<Timestamp>, u32, String) {
    let suffix = name
        .split_once('-')
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(0);
    (parse(name), suffix, name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_uniqueness() {
        let t: Timestamp = "2026-11-24T23:02:56.7Z".parse().unwrap();
        assert_eq!(format(t), "20261124T230256Z");
        assert_eq!(
            parse("20261124T230256Z-3").unwrap().as_second(),
            t.as_second()
        );
        assert_eq!(
            unique(t, &["20261124T230256Z".into()]),
            "20261124T230256Z-2"
        );
        assert!(parse("latest").is_none() && parse("20261324T230256Z").is_none());
        assert!(sort_key("20261124T230256Z-10") > sort_key("20261124T230256Z-2"));
    }
}
