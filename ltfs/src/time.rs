//! The LTFS time format: `YYYY-MM-DDThh:mm:ss.nnnnnnnnnZ`, UTC, always 9 fractional digits on write,
//! clamped to 0000-01-01T00:00:00.000000000Z ..= 9999-12-31T23:59:59.999999999Z (ltfs-format.md §4).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time as LTFS stores it: seconds since the Unix epoch (UTC) and nanoseconds (< 10⁹).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LtfsTime {
    pub secs: i64,
    pub nanos: u32,
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
const fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// (year, month, day) of the given day number since 1970-01-01.
const fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

const fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Why a time string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {value:?}: expected YYYY-MM-DDThh:mm:ss.nnnnnnnnnZ ({reason})")]
pub struct TimeError {
    pub value: String,
    pub reason: &'static str,
}

impl LtfsTime {
    /// 0000-01-01T00:00:00Z.
    pub const MIN: LtfsTime = LtfsTime {
        secs: days_from_civil(0, 1, 1) * 86400,
        nanos: 0,
    };
    /// 9999-12-31T23:59:59.999999999Z.
    pub const MAX: LtfsTime = LtfsTime {
        secs: days_from_civil(9999, 12, 31) * 86400 + 86399,
        nanos: 999_999_999,
    };
    pub const UNIX_EPOCH: LtfsTime = LtfsTime { secs: 0, nanos: 0 };

    /// A time from seconds and nanoseconds (nanoseconds ≥ 10⁹ carry into the seconds), clamped to the LTFS range.
    pub fn new(secs: i64, nanos: u32) -> LtfsTime {
        let secs = secs.saturating_add(i64::from(nanos / 1_000_000_000));
        LtfsTime {
            secs,
            nanos: nanos % 1_000_000_000,
        }
        .clamped()
    }

    /// Clamped to [`LtfsTime::MIN`] ..= [`LtfsTime::MAX`] (what `normalize_ltfs_time()` does).
    pub fn clamped(self) -> LtfsTime {
        let t = LtfsTime {
            secs: self.secs,
            nanos: self.nanos.min(999_999_999),
        };
        t.clamp(Self::MIN, Self::MAX)
    }

    /// From a [`SystemTime`], clamped to the LTFS range.
    pub fn from_system_time(t: SystemTime) -> LtfsTime {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => LtfsTime::new(
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            ),
            Err(e) => {
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 {
                    LtfsTime::new(secs.saturating_neg(), 0)
                } else {
                    LtfsTime::new(
                        (secs.saturating_add(1)).saturating_neg(),
                        1_000_000_000 - d.subsec_nanos(),
                    )
                }
            }
        }
    }

    /// As a [`SystemTime`] (the value is clamped to the LTFS range first).
    pub fn to_system_time(self) -> SystemTime {
        let t = self.clamped();
        if t.secs >= 0 {
            UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
                + Duration::from_nanos(u64::from(t.nanos))
        }
    }

    /// Parses the LTFS format. The fraction is a true fraction (`.5` is 500 ms) of 1–9 digits and mandatory;
    /// years beyond 9999 (or negative) are clamped like the reference reader does.
    pub fn parse(s: &str) -> Result<LtfsTime, TimeError> {
        let err = |reason| TimeError {
            value: s.chars().take(64).collect(),
            reason,
        };
        let b = s.as_bytes();
        let (neg, rest) = match b.first() {
            Some(b'-') => (true, &b[1..]),
            _ => (false, b),
        };
        let ylen = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(4..=9).contains(&ylen) {
            return Err(err("year"));
        }
        let year: i64 = digits(&rest[..ylen]).ok_or_else(|| err("year"))? as i64;
        let rest = &rest[ylen..];
        // -MM-DDThh:mm:ss.
        if rest.len() < 16 {
            return Err(err("too short"));
        }
        let sep = |i: usize, c: u8| rest[i] == c;
        if !(sep(0, b'-')
            && sep(3, b'-')
            && sep(6, b'T')
            && sep(9, b':')
            && sep(12, b':')
            && sep(15, b'.'))
        {
            return Err(err("separators"));
        }
        let two = |i: usize| digits(&rest[i..i + 2]).ok_or_else(|| err("digits"));
        let (month, day, hour, min, sec) = (two(1)?, two(4)?, two(7)?, two(10)?, two(13)?);
        let frac = &rest[16..];
        let Some((&b'Z', frac)) = frac.split_last() else {
            return Err(err("missing Z"));
        };
        if frac.is_empty() || frac.len() > 9 {
            return Err(err("fraction must have 1 to 9 digits"));
        }
        let mut nanos = digits(frac).ok_or_else(|| err("fraction"))? as u32;
        for _ in frac.len()..9 {
            nanos *= 10;
        }
        if !(1..=12).contains(&month) {
            return Err(err("month"));
        }
        if hour > 23 || min > 59 || sec > 60 {
            return Err(err("time of day"));
        }
        if neg {
            return Ok(Self::MIN);
        }
        if year > 9999 {
            return Ok(Self::MAX);
        }
        if day == 0 || day as u32 > days_in_month(year, month as u32) {
            return Err(err("day"));
        }
        let days = days_from_civil(year, month as u32, day as u32);
        let secs = days * 86400 + (hour * 3600 + min * 60 + sec) as i64;
        Ok(LtfsTime { secs, nanos }.clamped())
    }
}

fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |a, &c| a * 10 + u64::from(c - b'0')))
}

impl fmt::Display for LtfsTime {
    /// Always the clamped value with 9 fractional digits and `Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.clamped();
        let days = t.secs.div_euclid(86400);
        let sod = t.secs.rem_euclid(86400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60,
            t.nanos
        )
    }
}

impl From<SystemTime> for LtfsTime {
    fn from(t: SystemTime) -> LtfsTime {
        LtfsTime::from_system_time(t)
    }
}

impl From<LtfsTime> for SystemTime {
    fn from(t: LtfsTime) -> SystemTime {
        t.to_system_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse() {
        let t = LtfsTime::parse("2025-01-31T12:40:00.000000001Z").unwrap();
        assert_eq!(t.nanos, 1);
        assert_eq!(t.to_string(), "2025-01-31T12:40:00.000000001Z");
        assert_eq!(
            LtfsTime::UNIX_EPOCH.to_string(),
            "1970-01-01T00:00:00.000000000Z"
        );
        assert_eq!(LtfsTime::MIN.to_string(), "0000-01-01T00:00:00.000000000Z");
        assert_eq!(LtfsTime::MAX.to_string(), "9999-12-31T23:59:59.999999999Z");
        assert_eq!(
            LtfsTime::parse("2000-02-29T00:00:00.5Z").unwrap().nanos,
            500_000_000
        );
        assert_eq!(
            LtfsTime::parse("12000-01-01T00:00:00.0Z").unwrap(),
            LtfsTime::MAX
        );
        assert_eq!(
            LtfsTime::parse("-0001-01-01T00:00:00.0Z").unwrap(),
            LtfsTime::MIN
        );
        for bad in [
            "",
            "2025-01-31T12:40:00Z",
            "2025-01-31T12:40:00.Z",
            "2025-01-31T12:40:00.0000000001Z",
            "2025-01-31 12:40:00.0Z",
            "2025-13-01T00:00:00.0Z",
            "2025-02-29T00:00:00.0Z",
            "2025-01-31T24:00:00.0Z",
            "2025-01-31T12:40:00.0",
            "2025-01-31T12:40:00.0Z ",
            "+025-01-31T12:40:00.0Z",
        ] {
            assert!(LtfsTime::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn system_time_round_trip() {
        for (s, n) in [
            (0i64, 0u32),
            (1, 5),
            (-1, 999_999_999),
            (-86_400 * 365 * 100, 7),
            (1_700_000_000, 123),
        ] {
            let t = LtfsTime::new(s, n);
            assert_eq!(LtfsTime::from_system_time(t.to_system_time()), t);
            assert_eq!(LtfsTime::parse(&t.to_string()).unwrap(), t);
        }
        let far = UNIX_EPOCH + Duration::from_secs(1 << 40);
        assert_eq!(LtfsTime::from(far), LtfsTime::MAX);
    }
}
