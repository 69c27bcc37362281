//! Full or incremental: a run writes a full set when the job has no complete full set in the pool
//! yet, or when the full schedule fired since the newest one was started (a missed or failed full
//! is owed until one is written); otherwise an incremental. A snapshot already on tape is not
//! written again. Pure: the caller passes the catalog's facts and the time.

use jiff::Timestamp;
use tapectl::sets::layout::SetKind;

use crate::schedule::Schedule;

/// What the pool's catalog holds of one backup job (complete sets only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnTape {
    /// The newest full set: its snapshot and when it was started.
    pub newest_full: Option<(String, Timestamp)>,
    /// The snapshot of the newest set of any kind.
    pub newest_snapshot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Write(SetKind),
    /// Nothing to write, and why.
    Skip(String),
}

pub fn decide(
    full_schedule: Option<&Schedule>,
    latest: &str,
    on_tape: &OnTape,
    now: Timestamp,
) -> Decision {
    let full_due = match &on_tape.newest_full {
        None => true,
        Some((_, started)) => full_schedule
            .and_then(|s| s.last_at_or_before(now))
            .is_some_and(|fired| fired > *started),
    };
    if full_due {
        return match &on_tape.newest_full {
            Some((snap, _)) if snap.as_str() >= latest => Decision::Skip(format!(
                "a full set is due, but the newest snapshot {latest} is the newest full set's already"
            )),
            _ => Decision::Write(SetKind::Full),
        };
    }
    match &on_tape.newest_snapshot {
        Some(s) if s.as_str() >= latest => {
            Decision::Skip(format!("snapshot {latest} is on tape already"))
        }
        _ => Decision::Write(SetKind::Incremental),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Zone;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn monthly() -> Schedule {
        Schedule::parse("0 4 1 * *", Zone::Utc).unwrap()
    }

    fn on_tape(full: Option<(&str, &str)>, newest: Option<&str>) -> OnTape {
        OnTape {
            newest_full: full.map(|(s, t)| (s.to_string(), ts(t))),
            newest_snapshot: newest.map(str::to_string),
        }
    }

    #[test]
    fn the_first_set_of_a_job_is_full() {
        let d = decide(
            Some(&monthly()),
            "20261205T020000Z",
            &OnTape::default(),
            ts("2026-12-05T04:00:00Z"),
        );
        assert_eq!(d, Decision::Write(SetKind::Full));
        // Without a full schedule too: an incremental needs a full to build on.
        let d = decide(
            None,
            "20261205T020000Z",
            &OnTape::default(),
            ts("2026-12-05T04:00:00Z"),
        );
        assert_eq!(d, Decision::Write(SetKind::Full));
    }

    #[test]
    fn incrementals_between_fulls_and_a_full_when_the_full_schedule_fired() {
        let s = monthly();
        let t = on_tape(
            Some(("20261101T020000Z", "2026-11-01T04:00:05Z")),
            Some("20261104T020000Z"),
        );
        let d = decide(Some(&s), "20261105T020000Z", &t, ts("2026-11-05T04:00:00Z"));
        assert_eq!(d, Decision::Write(SetKind::Incremental));
        // December 1st 04:00 fired after the November full started: a full is owed, and stays
        // owed on the 2nd if the run on the 1st failed.
        let d = decide(Some(&s), "20261201T020000Z", &t, ts("2026-12-01T04:00:00Z"));
        assert_eq!(d, Decision::Write(SetKind::Full));
        let d = decide(Some(&s), "20261202T020000Z", &t, ts("2026-12-02T04:00:00Z"));
        assert_eq!(d, Decision::Write(SetKind::Full));
    }

    #[test]
    fn a_snapshot_on_tape_already_is_not_written_again() {
        let s = monthly();
        let t = on_tape(
            Some(("20261101T020000Z", "2026-11-01T04:00:05Z")),
            Some("20261105T020000Z"),
        );
        let d = decide(Some(&s), "20261105T020000Z", &t, ts("2026-11-05T05:00:00Z"));
        assert!(matches!(d, Decision::Skip(m) if m.contains("on tape already")));
        // A full is due but no backup ran since the last full.
        let t = on_tape(
            Some(("20261201T020000Z", "2026-11-30T23:00:00Z")),
            Some("20261201T020000Z"),
        );
        let d = decide(Some(&s), "20261201T020000Z", &t, ts("2026-12-01T04:00:00Z"));
        assert!(matches!(d, Decision::Skip(m) if m.contains("full set's already")));
    }
}
