//! Cron schedules: five fields (minute hour day-of-month month day-of-week) or six with seconds
//! first, evaluated in a time zone (the system's local zone in the daemon, UTC in tests).

use chrono::{DateTime, Local, TimeZone, Utc};
use jiff::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Local,
    Utc,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    text: String,
    zone: Zone,
}

impl Schedule {
    pub fn parse(s: &str, zone: Zone) -> Result<Schedule, String> {
        let fields = s.split_whitespace().count();
        // "@daily" and the like are one field.
        let nickname = fields == 1 && s.trim_start().starts_with('@');
        if fields != 5 && fields != 6 && !nickname {
            return Err(format!(
                "schedule {s:?} must have 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first, or be a nickname such as @daily; found {fields}"
            ));
        }
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser.parse(s).map_err(|e| {
            out_of_range(s, fields == 6).unwrap_or_else(|| {
                let why = e.to_string();
                let why = why.trim_start_matches("Component error: ").trim_end_matches('.');
                format!(
                    "schedule {s:?} is not a cron expression (minute hour day-of-month month day-of-week): {why}"
                )
            })
        })?;
        Ok(Schedule {
            cron,
            text: s.to_string(),
            zone,
        })
    }

    /// True when the schedule fires at least once in the next eight years (a leap day's
    /// schedule fires every four), so "0 0 30 2 *" (February 30) is found out.
    pub fn ever_fires(&self, from: Timestamp) -> bool {
        match self.next_after(from) {
            Some(t) => t.duration_since(from) < jiff::SignedDuration::from_hours(24 * 366 * 8),
            None => false,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self.zone {
            Zone::Local => find(&self.cron, &to_chrono(t, &Local), false, true),
            Zone::Utc => find(&self.cron, &to_chrono(t, &Utc), false, true),
        }
    }

    /// The last scheduled time at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        match self.zone {
            Zone::Local => find(&self.cron, &to_chrono(t, &Local), true, false),
            Zone::Utc => find(&self.cron, &to_chrono(t, &Utc), true, false),
        }
    }
}

fn to_chrono<Tz: TimeZone>(t: Timestamp, tz: &Tz) -> DateTime<Tz> {
    // Whole seconds: schedules have no finer unit, and croner would carry the fraction along.
    let utc =
        DateTime::<Utc>::from_timestamp(t.as_second(), 0).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    utc.with_timezone(tz)
}

fn find<Tz: TimeZone>(
    cron: &croner::Cron,
    from: &DateTime<Tz>,
    inclusive: bool,
    forward: bool,
) -> Option<Timestamp> {
    let found = if forward {
        cron.find_next_occurrence(from, inclusive)
    } else {
        cron.find_previous_occurrence(from, inclusive)
    }
    .ok()?;
    Timestamp::new(found.timestamp(), 0).ok()
}

/// Names the field and the allowed range when a number in `s` is out of it (croner only says
/// "Number out of bounds").
fn out_of_range(s: &str, with_seconds: bool) -> Option<String> {
    const FIELDS: [(&str, u32, u32); 6] = [
        ("second", 0, 59),
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("day of week", 0, 7),
    ];
    let specs = if with_seconds {
        &FIELDS[..]
    } else {
        &FIELDS[1..]
    };
    for (field, (name, lo, hi)) in s.split_whitespace().zip(specs) {
        for part in field.split(',') {
            // "a-b/step": the step is not a value of the field.
            let range = part.split('/').next().unwrap_or("");
            for n in range.split('-').filter_map(|v| v.parse::<u32>().ok()) {
                if n < *lo || n > *hi {
                    return Some(format!(
                        "schedule {s:?}: {name} {n} is out of range ({lo}-{hi})"
                    ));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn next_and_last_in_utc() {
        let s = Schedule::parse("15 3 * * *", Zone::Utc).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-25T03:15:00Z")),
            Some(ts("2026-11-26T03:15:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-11-25T03:14:59.5Z")),
            Some(ts("2026-11-25T03:15:00Z"))
        );
        assert_eq!(
            s.last_at_or_before(ts("2026-11-25T03:15:00Z")),
            Some(ts("2026-11-25T03:15:00Z"))
        );
        assert_eq!(
            s.last_at_or_before(ts("2026-11-25T03:14:00Z")),
            Some(ts("2026-11-24T03:15:00Z"))
        );
    }

    #[test]
    fn seconds_field_and_errors() {
        let s = Schedule::parse("*/5 * * * * *", Zone::Utc).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-25T00:00:01Z")),
            Some(ts("2026-11-25T00:00:05Z"))
        );
        let s = Schedule::parse("@daily", Zone::Utc).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-25T10:00:00Z")),
            Some(ts("2026-11-26T00:00:00Z"))
        );
        let s = Schedule::parse("0 3 * * MON", Zone::Utc).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-25T10:00:00Z")),
            Some(ts("2026-11-30T03:00:00Z"))
        );
        for bad in [
            "@sometimes",
            "61 3 * * *",
            "every day",
            "* * * * * * 2027",
            "",
            "* * * 13 *",
        ] {
            assert!(Schedule::parse(bad, Zone::Utc).is_err(), "{bad}");
        }
    }
}
