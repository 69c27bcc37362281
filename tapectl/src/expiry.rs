//! When tape sets expire and tapes may be written again: pure functions of the sets, the tapes
//! and the time (issue 13), so a year of rotation can be tested in a loop.
//!
//! Rules:
//! - a set is due when its age reaches its pool's retention for its kind (full or incremental);
//! - a set expires only once it is due and every set built on it (its incrementals, theirs…) expires
//!   with it: no set expires while a later one depends on it, and so an incremental never outlives
//!   the full it depends on (they go together, from the newest);
//! - a set that is not complete (writing, interrupted) is not a base for anything and expires when
//!   due;
//! - a tape is reusable when every set with a copy on it has expired (a tape with no set is not
//!   "reusable": it is new or writable).

use std::collections::{HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};

use crate::sets::layout::SetKind;

/// How long a pool keeps its sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub full: SignedDuration,
    pub incremental: SignedDuration,
}

/// What the rules need of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetFacts {
    pub id: i64,
    pub kind: SetKind,
    /// The set it builds on (incremental).
    pub base: Option<i64>,
    pub pool: String,
    /// When it was completed (or started, for one never completed).
    pub at: Timestamp,
    pub expired: bool,
}

/// The sets that expire at `now` (those already expired are not listed again).
pub fn expiring(
    sets: &[SetFacts],
    retention: &dyn Fn(&str) -> Option<Retention>,
    now: Timestamp,
) -> Vec<i64> {
    let mut dependents: HashMap<i64, Vec<i64>> = HashMap::new();
    for s in sets {
        if let Some(b) = s.base {
            dependents.entry(b).or_default().push(s.id);
        }
    }
    let by_id: HashMap<i64, &SetFacts> = sets.iter().map(|s| (s.id, s)).collect();
    let due = |s: &SetFacts| -> bool {
        let Some(r) = retention(&s.pool) else {
            return false; // a pool no longer configured keeps its sets
        };
        let keep = match s.kind {
            SetKind::Full => r.full,
            SetKind::Incremental => r.incremental,
        };
        s.at.checked_add(keep).is_ok_and(|t| t <= now)
    };
    // A set may go when it is due and everything built on it may go (memoised; chains are short
    // but a year of daily incrementals is a few hundred deep, so no recursion).
    let mut may_go: HashMap<i64, bool> = HashMap::new();
    let mut order: Vec<i64> = sets.iter().map(|s| s.id).collect();
    // Newest first: dependents are decided before their bases.
    order.sort_by_key(|id| std::cmp::Reverse(by_id[id].at));
    for id in order {
        let s = by_id[&id];
        let ok = s.expired
            || (due(s)
                && dependents
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .all(|d| may_go.get(d).copied().unwrap_or(false)));
        may_go.insert(id, ok);
    }
    let mut out: Vec<i64> = sets
        .iter()
        .filter(|s| !s.expired && may_go.get(&s.id).copied().unwrap_or(false))
        .map(|s| s.id)
        .collect();
    out.sort();
    out
}

/// Tapes whose every set has expired (given as set ids per barcode), once `expired` have too.
pub fn reusable_tapes(
    sets_on_tape: &HashMap<String, Vec<i64>>,
    expired: &HashSet<i64>,
) -> Vec<String> {
    let mut out: Vec<String> = sets_on_tape
        .iter()
        .filter(|(_, sets)| !sets.is_empty() && sets.iter().all(|s| expired.contains(s)))
        .map(|(b, _)| b.clone())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: i64) -> SignedDuration {
        SignedDuration::from_hours(24 * n)
    }

    /// A year of daily sets, a full on the first of each month (two copies), incrementals on the
    /// other days, retention 90 days for fulls and 35 for incrementals, tapes holding one set each
    /// (copy 1) or a month of them: the rules hold every day.
    #[test]
    fn a_simulated_year_of_daily_incrementals_and_monthly_fulls() {
        let retention = Retention {
            full: days(90),
            incremental: days(35),
        };
        let policy = |p: &str| (p == "weekly").then_some(retention);
        let start: Timestamp = "2026-01-01T02:00:00Z".parse().unwrap();
        let mut sets: Vec<SetFacts> = Vec::new();
        // Copy 1 of each month's sets on one tape; copy 2 of each full on its own offsite tape.
        let mut tapes: HashMap<String, Vec<i64>> = HashMap::new();
        let mut expired: HashSet<i64> = HashSet::new();
        let mut reused: Vec<(i64, String)> = Vec::new();
        for day in 0..365i64 {
            let now = start.checked_add(days(day)).unwrap();
            let date = now.to_zoned(jiff::tz::TimeZone::UTC).date();
            let id = day + 1;
            let full = date.day() == 1;
            let base = if full {
                None
            } else {
                sets.last().map(|s: &SetFacts| s.id)
            };
            sets.push(SetFacts {
                id,
                kind: if full {
                    SetKind::Full
                } else {
                    SetKind::Incremental
                },
                base,
                pool: "weekly".into(),
                at: now,
                expired: false,
            });
            tapes
                .entry(format!("M{:02}", date.month()))
                .or_default()
                .push(id);
            if full {
                tapes.insert(format!("OFF{:02}", date.month()), vec![id]);
            }
            for e in expiring(&sets, &policy, now) {
                expired.insert(e);
                sets.iter_mut().find(|s| s.id == e).unwrap().expired = true;
            }
            // Invariants, every day.
            let alive: HashMap<i64, &SetFacts> = sets
                .iter()
                .filter(|s| !s.expired)
                .map(|s| (s.id, s))
                .collect();
            for s in alive.values() {
                if let Some(b) = s.base {
                    assert!(
                        alive.contains_key(&b),
                        "day {day}: set {} lives on expired base {b}",
                        s.id
                    );
                }
            }
            for s in sets.iter().filter(|s| s.expired) {
                let keep = match s.kind {
                    SetKind::Full => retention.full,
                    SetKind::Incremental => retention.incremental,
                };
                assert!(
                    s.at.checked_add(keep).unwrap() <= now,
                    "day {day}: set {} expired early",
                    s.id
                );
            }
            // The newest full and everything after it are always there to restore from.
            let newest_full = sets.iter().rev().find(|s| s.kind == SetKind::Full).unwrap();
            assert!(
                sets.iter()
                    .filter(|s| s.id >= newest_full.id)
                    .all(|s| !s.expired),
                "day {day}"
            );
            for b in reusable_tapes(&tapes, &expired) {
                if !reused.iter().any(|(_, r)| *r == b) {
                    reused.push((day, b));
                }
            }
        }
        // A month's chain goes when its last incremental is 35 days old and its full 90: the
        // January tapes come back on 1 April (day 90), none before, both copies; November and
        // December are still kept at the year's end.
        let first = reused
            .iter()
            .find(|(_, b)| b == "M01")
            .map(|(d, _)| *d)
            .unwrap();
        assert_eq!(first, 90, "{reused:?}");
        assert!(reused.contains(&(90, "OFF01".to_string())), "{reused:?}");
        assert!(
            !reused.iter().any(|(_, b)| b == "M11" || b == "M12"),
            "{reused:?}"
        );
        assert_eq!(
            reused.len(),
            20,
            "ten months of tapes, two each: {reused:?}"
        );
        // A pool that is no longer configured keeps its sets.
        let orphan = SetFacts {
            id: 1000,
            kind: SetKind::Full,
            base: None,
            pool: "gone".into(),
            at: start,
            expired: false,
        };
        assert!(expiring(&[orphan], &policy, start.checked_add(days(10_000)).unwrap()).is_empty());
    }

    #[test]
    fn an_incremental_never_outlives_its_full_and_a_full_waits_for_its_incrementals() {
        let policy = |_: &str| {
            Some(Retention {
                full: days(10),
                incremental: days(30),
            })
        };
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let sets = vec![
            SetFacts {
                id: 1,
                kind: SetKind::Full,
                base: None,
                pool: "p".into(),
                at: t0,
                expired: false,
            },
            SetFacts {
                id: 2,
                kind: SetKind::Incremental,
                base: Some(1),
                pool: "p".into(),
                at: t0.checked_add(days(1)).unwrap(),
                expired: false,
            },
        ];
        // Day 20: the full is due, its incremental is not: neither goes.
        assert!(expiring(&sets, &policy, t0.checked_add(days(20)).unwrap()).is_empty());
        // Day 31: both go together.
        assert_eq!(
            expiring(&sets, &policy, t0.checked_add(days(31)).unwrap()),
            [1, 2]
        );
    }
}
