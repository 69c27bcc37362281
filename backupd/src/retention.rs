//! Retention: which snapshots to keep. Pure: the snapshot list and the current time come in,
//! a decision with a reason per snapshot comes out, so it is tested without a clock.
//!
//! Rules work like restic's and borg's: `keep_last N` keeps the N newest; `keep_daily N` keeps the
//! newest snapshot of each of the N most recent days that have one (likewise hourly, weekly (ISO
//! weeks), monthly, yearly). Periods are UTC. A snapshot is kept if any rule keeps it. The newest
//! snapshot is always kept, and with no rules at all nothing is deleted. Snapshots dated in the
//! future (clock skew) are kept and do not count towards any rule.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::config::Retention;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub name: String,
    pub keep: bool,
    /// Why it is kept (e.g. "daily 2026-11-24", "last 1/3"), or why not.
    pub reasons: Vec<String>,
}

/// A periodic rule: its label, how many periods to keep, and the period a time falls in.
type Bucket = (&'static str, Option<u32>, fn(Timestamp) -> String);

pub fn decide(
    snapshots: &[(String, Timestamp)],
    rules: &Retention,
    now: Timestamp,
) -> Vec<Decision> {
    // Newest first.
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|a, b| {
        snapshots[*b]
            .1
            .cmp(&snapshots[*a].1)
            .then_with(|| snapshots[*b].0.cmp(&snapshots[*a].0))
    });
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snapshots.len()];

    if rules.is_empty() {
        for r in reasons.iter_mut() {
            r.push("no retention rules configured".into());
        }
    }
    let dated: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| {
            if snapshots[i].1 > now {
                reasons[i].push("dated in the future".into());
                false
            } else {
                true
            }
        })
        .collect();
    if let Some(&newest) = order.first() {
        reasons[newest].push("newest".into());
    }
    if let Some(n) = rules.keep_last {
        for (k, &i) in dated.iter().take(n as usize).enumerate() {
            reasons[i].push(format!("last {}/{n}", k + 1));
        }
    }
    let buckets: [Bucket; 5] = [
        ("hourly", rules.keep_hourly, |t| {
            t.to_zoned(TimeZone::UTC)
                .strftime("%Y-%m-%dT%H")
                .to_string()
        }),
        ("daily", rules.keep_daily, |t| {
            t.to_zoned(TimeZone::UTC).strftime("%Y-%m-%d").to_string()
        }),
        ("weekly", rules.keep_weekly, |t| {
            let d = t.to_zoned(TimeZone::UTC).date().iso_week_date();
            format!("{}-W{:02}", d.year(), d.week())
        }),
        ("monthly", rules.keep_monthly, |t| {
            t.to_zoned(TimeZone::UTC).strftime("%Y-%m").to_string()
        }),
        ("yearly", rules.keep_yearly, |t| {
            t.to_zoned(TimeZone::UTC).strftime("%Y").to_string()
        }),
    ];
    for (label, n, bucket) in buckets {
        let Some(n) = n else { continue };
        let mut seen: Option<String> = None;
        let mut count = 0u32;
        for &i in &dated {
            if count >= n {
                break;
            }
            let b = bucket(snapshots[i].1);
            if seen.as_ref() != Some(&b) {
                reasons[i].push(format!("{label} {b}"));
                seen = Some(b);
                count += 1;
            }
        }
    }
    snapshots
        .iter()
        .zip(reasons)
        .map(|((name, _), r)| {
            let keep = !r.is_empty();
            Decision {
                name: name.clone(),
                keep,
                reasons: if keep {
                    r
                } else {
                    vec!["matches no keep rule".into()]
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn snaps(times: &[&str]) -> Vec<(String, Timestamp)> {
        times.iter().map(|t| (t.to_string(), ts(t))).collect()
    }

    fn kept(d: &[Decision]) -> Vec<&str> {
        d.iter()
            .filter(|d| d.keep)
            .map(|d| d.name.as_str())
            .collect()
    }

    #[test]
    fn keep_last_and_daily() {
        let s = snaps(&[
            "2026-11-20T03:00:00Z",
            "2026-11-21T03:00:00Z",
            "2026-11-21T15:00:00Z",
            "2026-11-22T03:00:00Z",
            "2026-11-23T03:00:00Z",
            "2026-11-23T09:00:00Z",
        ]);
        let now = ts("2026-11-24T00:00:00Z");
        let r = Retention {
            keep_last: Some(2),
            keep_daily: Some(3),
            ..Default::default()
        };
        let d = decide(&s, &r, now);
        assert_eq!(
            kept(&d),
            vec![
                "2026-11-21T15:00:00Z",
                "2026-11-22T03:00:00Z",
                "2026-11-23T03:00:00Z",
                "2026-11-23T09:00:00Z"
            ]
        );
        let why = &d
            .iter()
            .find(|d| d.name == "2026-11-23T09:00:00Z")
            .unwrap()
            .reasons;
        assert!(
            why.contains(&"last 1/2".to_string()) && why.contains(&"daily 2026-11-23".to_string()),
            "{why:?}"
        );
        assert_eq!(d[0].reasons, vec!["matches no keep rule"]);
    }

    #[test]
    fn weekly_monthly_yearly_buckets() {
        // Sundays and Mondays straddle ISO week boundaries.
        let s = snaps(&[
            "2025-12-28T00:00:00Z",
            "2025-12-29T00:00:00Z",
            "2026-01-04T00:00:00Z",
            "2026-01-05T00:00:00Z",
        ]);
        let now = ts("2026-02-01T00:00:00Z");
        let d = decide(
            &s,
            &Retention {
                keep_weekly: Some(2),
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            kept(&d),
            vec!["2026-01-04T00:00:00Z", "2026-01-05T00:00:00Z"]
        );
        let d = decide(
            &s,
            &Retention {
                keep_monthly: Some(2),
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            kept(&d),
            vec!["2025-12-29T00:00:00Z", "2026-01-05T00:00:00Z"]
        );
        let d = decide(
            &s,
            &Retention {
                keep_yearly: Some(5),
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            kept(&d),
            vec!["2025-12-29T00:00:00Z", "2026-01-05T00:00:00Z"]
        );
    }

    #[test]
    fn no_rules_keeps_everything_and_newest_always_kept() {
        let s = snaps(&["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]);
        let now = ts("2026-02-01T00:00:00Z");
        assert_eq!(kept(&decide(&s, &Retention::default(), now)).len(), 2);
        let d = decide(
            &s,
            &Retention {
                keep_hourly: Some(0),
                ..Default::default()
            },
            now,
        );
        assert_eq!(kept(&d), vec!["2026-01-02T00:00:00Z"]);
    }

    #[test]
    fn future_snapshots_are_kept_and_do_not_count() {
        let s = snaps(&[
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "2030-01-01T00:00:00Z",
        ]);
        let d = decide(
            &s,
            &Retention {
                keep_last: Some(1),
                ..Default::default()
            },
            ts("2026-02-01T00:00:00Z"),
        );
        assert_eq!(
            kept(&d),
            vec!["2026-01-02T00:00:00Z", "2030-01-01T00:00:00Z"]
        );
    }

    #[test]
    fn deterministic_regardless_of_input_order() {
        let mut s = snaps(&[
            "2026-01-01T00:00:00Z",
            "2026-01-01T05:00:00Z",
            "2026-01-02T00:00:00Z",
            "2026-01-09T00:00:00Z",
        ]);
        let r = Retention {
            keep_daily: Some(2),
            keep_weekly: Some(2),
            ..Default::default()
        };
        let now = ts("2026-02-01T00:00:00Z");
        let a = kept(&decide(&s, &r, now))
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        s.reverse();
        let mut b = kept(&decide(&s, &r, now))
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        b.sort();
        assert_eq!(a, b);
    }
}
