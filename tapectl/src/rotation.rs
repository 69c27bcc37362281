//! Rotation: which tapes go offsite, which are on their way, which are due back. `plan` is a pure
//! function of the catalog's facts, the policy and the time, so it can be shown to a person (lists
//! grouped by destination) and tested with any clock.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::catalog::{Location, MediaRow, MediaState};
use crate::sets::layout::SetKind;

/// `[rotation]` of rackvault.toml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub vaults: Vec<String>,
    /// Which copy of which kind of set goes to which vault.
    pub offsite: Vec<OffsiteRule>,
    /// Full sets that must be offsite at any time (fewer is an alert).
    pub keep_offsite_fulls: u32,
    /// A tape in transit longer than this is overdue.
    pub transit: SignedDuration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsiteRule {
    pub kind: SetKind,
    pub copy: u32,
    pub vault: String,
}

/// A complete set and its copies' tapes, as the plan needs them.
#[derive(Debug, Clone)]
pub struct SetTapes {
    pub uuid: String,
    pub kind: SetKind,
    pub completed: Timestamp,
    pub expired: bool,
    /// (copy, barcodes).
    pub copies: Vec<(u32, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub barcode: String,
    pub vault: String,
    pub why: String,
    /// Late: an offsite copy still onsite a day after its set was written, or in transit longer
    /// than the policy allows.
    pub overdue: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Onsite tapes to take out, by vault.
    pub export: BTreeMap<String, Vec<Move>>,
    /// Tapes on their way (to or from a vault).
    pub in_transit: Vec<Move>,
    /// Offsite tapes to bring back, by vault.
    pub recall: BTreeMap<String, Vec<Move>>,
    /// Full sets with a copy wholly in a vault.
    pub offsite_fulls: u32,
    /// What a person should know now (overdue moves, too few fulls offsite).
    pub alerts: Vec<String>,
}

/// The plan at `now`. `moved_at` says when a tape last changed place; `needed` are tapes a
/// restore waits for.
pub fn plan(
    policy: &Policy,
    media: &[MediaRow],
    sets: &[SetTapes],
    moved_at: &dyn Fn(&str) -> Option<Timestamp>,
    needed: &[String],
    now: Timestamp,
) -> Plan {
    let mut p = Plan::default();
    let by_barcode: BTreeMap<&str, &MediaRow> =
        media.iter().map(|m| (m.barcode.as_str(), m)).collect();
    let late = |since: Timestamp, allowed: SignedDuration| {
        since.checked_add(allowed).is_ok_and(|t| t < now)
    };
    for s in sets.iter().filter(|s| !s.expired) {
        for rule in policy.offsite.iter().filter(|r| r.kind == s.kind) {
            let Some((_, tapes)) = s.copies.iter().find(|(c, _)| *c == rule.copy) else {
                continue;
            };
            for b in tapes {
                let Some(m) = by_barcode.get(b.as_str()) else {
                    continue;
                };
                // Onsite, and not already waiting in the door for a vault.
                if !m.location.onsite() || m.destination.is_some() {
                    continue;
                }
                let list = p.export.entry(rule.vault.clone()).or_default();
                if list.iter().any(|x| &x.barcode == b) {
                    continue;
                }
                let overdue = late(s.completed, SignedDuration::from_hours(24));
                if overdue {
                    p.alerts.push(format!(
                        "{b} (copy {} of {} set {}) is still onsite a day after the set was written; take it to {}",
                        rule.copy,
                        s.kind.as_str(),
                        &s.uuid[..8.min(s.uuid.len())],
                        rule.vault
                    ));
                }
                list.push(Move {
                    barcode: b.clone(),
                    vault: rule.vault.clone(),
                    why: format!(
                        "copy {} of {} set {}",
                        rule.copy,
                        s.kind.as_str(),
                        &s.uuid[..8.min(s.uuid.len())]
                    ),
                    overdue,
                });
            }
        }
    }
    for m in media {
        if let (Location::ImportExport(n), Some(v)) = (&m.location, &m.destination) {
            p.in_transit.push(Move {
                barcode: m.barcode.clone(),
                vault: v.clone(),
                why: format!("in import/export slot {n}, to be taken to {v}"),
                overdue: false,
            });
            continue;
        }
        let (vault, dir) = match &m.location {
            Location::InTransitTo(v) => (v, "to"),
            Location::InTransitFrom(v) => (v, "from"),
            Location::Vault(v) => {
                let why = if m.state == MediaState::Expired {
                    Some("every set on it has expired".to_string())
                } else if needed.contains(&m.barcode) {
                    Some("a restore needs it".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    p.recall.entry(v.clone()).or_default().push(Move {
                        barcode: m.barcode.clone(),
                        vault: v.clone(),
                        why,
                        overdue: false,
                    });
                }
                continue;
            }
            _ => continue,
        };
        let since = moved_at(&m.barcode);
        let overdue = since.is_some_and(|t| late(t, policy.transit));
        if overdue {
            p.alerts.push(format!(
                "{} has been in transit {dir} {vault} longer than {} days",
                m.barcode,
                policy.transit.as_hours() / 24
            ));
        }
        p.in_transit.push(Move {
            barcode: m.barcode.clone(),
            vault: vault.clone(),
            why: format!("in transit {dir} {vault}"),
            overdue,
        });
    }
    p.offsite_fulls = sets
        .iter()
        .filter(|s| !s.expired && s.kind == SetKind::Full)
        .filter(|s| {
            s.copies.iter().any(|(_, tapes)| {
                !tapes.is_empty()
                    && tapes.iter().all(|b| {
                        by_barcode
                            .get(b.as_str())
                            .is_some_and(|m| matches!(m.location, Location::Vault(_)))
                    })
            })
        })
        .count() as u32;
    if p.offsite_fulls < policy.keep_offsite_fulls {
        p.alerts.push(format!(
            "{} full set(s) offsite; the policy wants {}",
            p.offsite_fulls, policy.keep_offsite_fulls
        ));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(barcode: &str, location: Location, state: MediaState) -> MediaRow {
        MediaRow {
            barcode: barcode.into(),
            pool: Some("p".into()),
            state,
            volume_uuid: None,
            location,
            bytes_written: 0,
            loads: 0,
            write_errors: 0,
            read_errors: 0,
            cleaning_uses: None,
            first_seen: String::new(),
            updated_at: String::new(),
            destination: None,
            key_fingerprint: None,
        }
    }

    #[test]
    fn offsite_copies_go_out_transit_is_watched_and_expired_tapes_come_back() {
        let policy = Policy {
            vaults: vec!["parents".into()],
            offsite: vec![OffsiteRule {
                kind: SetKind::Full,
                copy: 2,
                vault: "parents".into(),
            }],
            keep_offsite_fulls: 1,
            transit: SignedDuration::from_hours(72),
        };
        let t0: Timestamp = "2026-12-01T02:00:00Z".parse().unwrap();
        let hours = |h: i64| t0.checked_add(SignedDuration::from_hours(h)).unwrap();
        let sets = vec![SetTapes {
            uuid: "aaaaaaaa-1".into(),
            kind: SetKind::Full,
            completed: t0,
            expired: false,
            copies: vec![(1, vec!["A1".into()]), (2, vec!["B1".into(), "B2".into()])],
        }];
        let mut m = vec![
            media("A1", Location::Slot(1), MediaState::Full),
            media("B1", Location::Slot(2), MediaState::Full),
            media("B2", Location::Slot(3), MediaState::Writable),
            media(
                "OLD",
                Location::Vault("parents".into()),
                MediaState::Expired,
            ),
        ];
        let never = |_: &str| None;
        // Right after the set: copy 2's tapes are due out; nothing is late yet; the old tape comes back.
        let p = plan(&policy, &m, &sets, &never, &[], hours(2));
        let out: Vec<&str> = p.export["parents"]
            .iter()
            .map(|x| x.barcode.as_str())
            .collect();
        assert_eq!(out, ["B1", "B2"]);
        assert!(p.export["parents"].iter().all(|x| !x.overdue));
        assert_eq!(p.recall["parents"][0].barcode, "OLD");
        assert_eq!(p.offsite_fulls, 0);
        assert_eq!(p.alerts, ["0 full set(s) offsite; the policy wants 1"]);
        // A day later, still onsite: overdue.
        let p = plan(&policy, &m, &sets, &never, &[], hours(30));
        assert!(p.export["parents"].iter().all(|x| x.overdue));
        assert!(
            p.alerts
                .iter()
                .any(|a| a.starts_with("B1 (copy 2 of full set aaaaaaaa)")),
            "{:?}",
            p.alerts
        );
        // In transit for four days: overdue; once both are in the vault the policy is met.
        m[1].location = Location::InTransitTo("parents".into());
        m[2].location = Location::InTransitTo("parents".into());
        let left = |_: &str| Some(hours(0));
        let p = plan(&policy, &m, &sets, &left, &[], hours(24 * 4));
        assert!(p.export.is_empty());
        assert_eq!(p.in_transit.len(), 2);
        assert!(p.in_transit.iter().all(|x| x.overdue));
        m[1].location = Location::Vault("parents".into());
        m[2].location = Location::Vault("parents".into());
        let p = plan(
            &policy,
            &m,
            &sets,
            &left,
            &["B1".to_string()],
            hours(24 * 4),
        );
        assert_eq!(p.offsite_fulls, 1);
        assert!(p.alerts.is_empty(), "{:?}", p.alerts);
        let back: Vec<(&str, &str)> = p.recall["parents"]
            .iter()
            .map(|x| (x.barcode.as_str(), x.why.as_str()))
            .collect();
        assert_eq!(
            back,
            [
                ("B1", "a restore needs it"),
                ("OLD", "every set on it has expired")
            ]
        );
    }
}

/// The catalog's media and sets, and the plan at `now`.
pub fn of_catalog(
    cat: &crate::catalog::TapeCatalog,
    policy: &Policy,
    now: Timestamp,
) -> anyhow::Result<(Vec<MediaRow>, Vec<SetTapes>, Plan)> {
    use crate::catalog::SetState;
    let mut sets = Vec::new();
    for s in cat.sets(None, None)? {
        if !matches!(s.state, SetState::Complete | SetState::Expired) {
            continue;
        }
        let completed = s
            .completed_at
            .as_deref()
            .unwrap_or(&s.started_at)
            .parse()
            .unwrap_or(now);
        sets.push(SetTapes {
            uuid: s.uuid.clone(),
            kind: s.kind,
            completed,
            expired: s.state == SetState::Expired,
            copies: cat
                .copies(s.id)?
                .into_iter()
                .map(|c| (c.copy, c.tapes.into_iter().map(|t| t.barcode).collect()))
                .collect(),
        });
    }
    let media = cat.all_media()?;
    let moved = |b: &str| cat.moved_at(b).ok().flatten().and_then(|t| t.parse().ok());
    let p = plan(policy, &media, &sets, &moved, &[], now);
    Ok((media, sets, p))
}

/// What the daemon's metrics say of the tapes: counts by pool, state and place, what waits to go
/// offsite, the newest full set wholly in a vault, cleaners' uses and each tape's write errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TapeFigures {
    /// (pool, state, place kind) → cartridges.
    pub media: BTreeMap<(String, String, String), u64>,
    /// Tapes due to go offsite and still onsite.
    pub awaiting_offsite: u64,
    /// When the newest full set with a copy wholly in a vault was completed.
    pub last_offsite_full: Option<Timestamp>,
    /// Cleaning cartridges and their uses.
    pub cleaning_uses: BTreeMap<String, u64>,
    /// Tapes with write errors, and how many.
    pub write_errors: BTreeMap<String, u64>,
}

/// The figures from the catalog's media, its sets (as for [`plan`]) and the plan at `now`.
pub fn figures(media: &[MediaRow], sets: &[SetTapes], p: &Plan) -> TapeFigures {
    let mut f = TapeFigures::default();
    for m in media {
        let place = match &m.location {
            Location::Slot(_) => "slot",
            Location::Drive(_) => "drive",
            Location::ImportExport(_) => "import-export",
            Location::InTransitTo(_) | Location::InTransitFrom(_) => "in-transit",
            Location::Vault(_) => "vault",
            Location::Unknown => "unknown",
        };
        *f.media
            .entry((
                m.pool.clone().unwrap_or_default(),
                m.state.as_str().to_string(),
                place.to_string(),
            ))
            .or_default() += 1;
        if m.state == MediaState::Cleaning {
            f.cleaning_uses
                .insert(m.barcode.clone(), m.cleaning_uses.unwrap_or(0));
        }
        if m.write_errors > 0 {
            f.write_errors.insert(m.barcode.clone(), m.write_errors);
        }
    }
    f.awaiting_offsite = p.export.values().map(|v| v.len() as u64).sum();
    let in_vault = |b: &String| {
        media
            .iter()
            .any(|m| &m.barcode == b && matches!(m.location, Location::Vault(_)))
    };
    f.last_offsite_full = sets
        .iter()
        .filter(|s| !s.expired && s.kind == SetKind::Full)
        .filter(|s| {
            s.copies
                .iter()
                .any(|(_, t)| !t.is_empty() && t.iter().all(in_vault))
        })
        .map(|s| s.completed)
        .max();
    f
}
