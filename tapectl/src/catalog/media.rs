//! Media in the tape catalog: their state, where they are, and the history of both.

use anyhow::{Context, Result, bail};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::TapeCatalog;

/// Cleanings an LTO cleaning cartridge gives (the figure IBM and HPE give is about 50).
pub const CLEANER_LIFE: u64 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaState {
    /// Never written by rackvault (or not labelled yet).
    New,
    /// Labelled, with room for more sets.
    Writable,
    Full,
    /// Every set on it has expired: it may be rewritten.
    Expired,
    Damaged,
    Retired,
    /// A cleaning cartridge.
    Cleaning,
}

impl MediaState {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaState::New => "new",
            MediaState::Writable => "writable",
            MediaState::Full => "full",
            MediaState::Expired => "expired",
            MediaState::Damaged => "damaged",
            MediaState::Retired => "retired",
            MediaState::Cleaning => "cleaning",
        }
    }

    pub fn parse(s: &str) -> Option<MediaState> {
        [
            MediaState::New,
            MediaState::Writable,
            MediaState::Full,
            MediaState::Expired,
            MediaState::Damaged,
            MediaState::Retired,
            MediaState::Cleaning,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// Where a cartridge is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "at", rename_all = "kebab-case")]
pub enum Location {
    /// A storage slot (numbered from 1, as `tapectl` shows them).
    Slot(u16),
    Drive(u16),
    ImportExport(u16),
    InTransitTo(String),
    InTransitFrom(String),
    Vault(String),
    Unknown,
}

impl Location {
    /// The catalog's text: `slot:3`, `drive:0`, `ie:1`, `to:VAULT`, `from:VAULT`, `vault:VAULT`,
    /// `unknown`.
    pub fn to_db(&self) -> String {
        match self {
            Location::Slot(n) => format!("slot:{n}"),
            Location::Drive(n) => format!("drive:{n}"),
            Location::ImportExport(n) => format!("ie:{n}"),
            Location::InTransitTo(v) => format!("to:{v}"),
            Location::InTransitFrom(v) => format!("from:{v}"),
            Location::Vault(v) => format!("vault:{v}"),
            Location::Unknown => "unknown".into(),
        }
    }

    pub fn from_db(s: &str) -> Option<Location> {
        if s == "unknown" {
            return Some(Location::Unknown);
        }
        let (kind, at) = s.split_once(':')?;
        let n = || at.parse::<u16>().ok();
        Some(match kind {
            "slot" => Location::Slot(n()?),
            "drive" => Location::Drive(n()?),
            "ie" => Location::ImportExport(n()?),
            "to" if !at.is_empty() => Location::InTransitTo(at.into()),
            "from" if !at.is_empty() => Location::InTransitFrom(at.into()),
            "vault" if !at.is_empty() => Location::Vault(at.into()),
            _ => return None,
        })
    }

    /// In the library (the changer's element status says so), as opposed to away or unknown.
    pub fn onsite(&self) -> bool {
        matches!(
            self,
            Location::Slot(_) | Location::Drive(_) | Location::ImportExport(_)
        )
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Slot(n) => write!(f, "slot {n}"),
            Location::Drive(n) => write!(f, "drive {n}"),
            Location::ImportExport(n) => write!(f, "import/export slot {n}"),
            Location::InTransitTo(v) => write!(f, "in transit to {v}"),
            Location::InTransitFrom(v) => write!(f, "in transit from {v}"),
            Location::Vault(v) => write!(f, "at {v}"),
            Location::Unknown => f.write_str("unknown"),
        }
    }
}

/// Why a change is made and by whom: every change is recorded with both.
#[derive(Debug, Clone, Copy)]
pub struct MediaChange<'a> {
    pub why: &'a str,
    /// The command or daemon job making the change, e.g. `tapectl media retire`.
    pub actor: &'a str,
    pub at: jiff::Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaRow {
    pub barcode: String,
    pub pool: Option<String>,
    pub state: MediaState,
    pub volume_uuid: Option<String>,
    pub location: Location,
    pub bytes_written: u64,
    pub loads: u64,
    pub write_errors: u64,
    pub read_errors: u64,
    pub cleaning_uses: Option<u64>,
    pub first_seen: String,
    pub updated_at: String,
    /// The vault it goes to once it leaves through the import/export door (`rotation export`).
    pub destination: Option<String>,
    /// The fingerprint of the key its volume is encrypted with (`3f:a1:…`); `None`: plain LTFS.
    pub key_fingerprint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub at: String,
    pub what: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub why: String,
    pub actor: String,
}

impl TapeCatalog {
    fn log(
        &self,
        barcode: &str,
        what: &str,
        old: Option<&str>,
        new: Option<&str>,
        c: &MediaChange,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO media_history (barcode, at, what, old, new, why, actor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![barcode, c.at.to_string(), what, old, new, c.why, c.actor],
        )?;
        Ok(())
    }

    /// Records a move from `from` to `to`, in the row and in the history.
    fn move_to(
        &self,
        barcode: &str,
        from: &Location,
        to: &Location,
        c: &MediaChange,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE media SET location = ?2, updated_at = ?3 WHERE barcode = ?1",
            params![barcode, to.to_db(), c.at.to_string()],
        )?;
        self.log(
            barcode,
            "location",
            Some(&from.to_db()),
            Some(&to.to_db()),
            c,
        )
    }

    /// The library reports `barcode` at `location` (its element status is the truth for what is
    /// onsite). A new barcode is added (`cleaning` for a cleaning cartridge, else `new`); a known
    /// one recorded elsewhere is moved, and the difference is kept in its history rather than
    /// silently overwritten. Returns where the catalog had it when that differed.
    pub fn seen(
        &self,
        barcode: &str,
        location: &Location,
        cleaning: bool,
        c: &MediaChange,
    ) -> Result<Option<Location>> {
        let tx = self.conn.unchecked_transaction()?;
        let before = self.media(barcode)?;
        let moved = match &before {
            None => {
                let state = if cleaning {
                    MediaState::Cleaning
                } else {
                    MediaState::New
                };
                self.conn.execute(
                    "INSERT INTO media (barcode, state, location, first_seen, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![barcode, state.as_str(), location.to_db(), c.at.to_string()],
                )?;
                self.log(barcode, "seen", None, Some(&location.to_db()), c)?;
                None
            }
            Some(m) if m.location != *location => {
                self.move_to(barcode, &m.location, location, c)?;
                Some(m.location.clone())
            }
            Some(_) => None,
        };
        tx.commit()?;
        Ok(moved)
    }

    /// Moves a cartridge the library cannot see (a person carried it, or it left through the door).
    pub fn set_location(&self, barcode: &str, location: &Location, c: &MediaChange) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let m = self.known(barcode)?;
        if m.location != *location {
            self.move_to(barcode, &m.location, location, c)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn set_state(&self, barcode: &str, state: MediaState, c: &MediaChange) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let m = self.known(barcode)?;
        if m.state == MediaState::Cleaning && state != MediaState::Cleaning {
            bail!(
                "{barcode} is a cleaning cartridge; its state cannot become {}",
                state.as_str()
            );
        }
        if m.state != state {
            self.conn.execute(
                "UPDATE media SET state = ?2, updated_at = ?3 WHERE barcode = ?1",
                params![barcode, state.as_str(), c.at.to_string()],
            )?;
            self.log(
                barcode,
                "state",
                Some(m.state.as_str()),
                Some(state.as_str()),
                c,
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The cartridge now carries LTFS volume `uuid` and belongs to `pool` (it was labelled, or a
    /// label was found on it); both changes are kept in its history.
    pub fn set_volume(&self, barcode: &str, pool: &str, uuid: &str, c: &MediaChange) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let m = self.known(barcode)?;
        if m.pool.as_deref() != Some(pool) {
            self.conn.execute(
                "UPDATE media SET pool = ?2, updated_at = ?3 WHERE barcode = ?1",
                params![barcode, pool, c.at.to_string()],
            )?;
            self.log(barcode, "pool", m.pool.as_deref(), Some(pool), c)?;
        }
        if m.volume_uuid.as_deref() != Some(uuid) {
            self.conn.execute(
                "UPDATE media SET volume_uuid = ?2, updated_at = ?3 WHERE barcode = ?1",
                params![barcode, uuid, c.at.to_string()],
            )?;
            self.log(barcode, "volume", m.volume_uuid.as_deref(), Some(uuid), c)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The key the cartridge's volume is encrypted with, by fingerprint (`None`: plain LTFS). Set
    /// when a volume is made (formatted for a pool) or found (catalog rebuild).
    pub fn set_key_fingerprint(&self, barcode: &str, fingerprint: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE media SET key_fingerprint = ?2 WHERE barcode = ?1",
            params![barcode, fingerprint],
        )?;
        Ok(())
    }

    /// The vault a cartridge goes to when it leaves the library (`None`: it stays).
    pub fn set_destination(&self, barcode: &str, vault: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE media SET destination = ?2 WHERE barcode = ?1",
            params![barcode, vault],
        )?;
        Ok(())
    }

    /// When the cartridge last changed place (for transit times).
    pub fn moved_at(&self, barcode: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT at FROM media_history WHERE barcode = ?1 AND what IN ('location', 'seen')
                 ORDER BY id DESC LIMIT 1",
                params![barcode],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Cleaning cartridges in the library with uses left by the catalog's count, fewest uses
    /// first (the one to take).
    pub fn usable_cleaners(&self, in_library: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for b in in_library {
            let used = self.media(b)?.and_then(|m| m.cleaning_uses).unwrap_or(0);
            if used < CLEANER_LIFE {
                out.push((used, b.clone()));
            }
        }
        out.sort();
        Ok(out.into_iter().map(|(_, b)| b).collect())
    }

    /// A cleaning cartridge that no longer cleans: counted as used up.
    pub fn cleaner_used_up(&self, barcode: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE media SET cleaning_uses = MAX(COALESCE(cleaning_uses, 0), ?2) WHERE barcode = ?1",
            params![barcode, CLEANER_LIFE as i64],
        )?;
        Ok(())
    }

    /// A cleaning cartridge was used once more.
    pub fn count_cleaning(&self, barcode: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE media SET cleaning_uses = COALESCE(cleaning_uses, 0) + 1 WHERE barcode = ?1",
            params![barcode],
        )?;
        Ok(())
    }

    /// Counts a load, bytes written and errors against a cartridge.
    pub fn count_use(
        &self,
        barcode: &str,
        loads: u64,
        bytes_written: u64,
        write_errors: u64,
        read_errors: u64,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE media SET loads = loads + ?2, bytes_written = bytes_written + ?3,
                write_errors = write_errors + ?4, read_errors = read_errors + ?5 WHERE barcode = ?1",
            params![barcode, loads as i64, bytes_written as i64, write_errors as i64, read_errors as i64],
        )?;
        Ok(())
    }

    fn known(&self, barcode: &str) -> Result<MediaRow> {
        self.media(barcode)?.with_context(|| {
            format!("no cartridge {barcode} in the tape catalog (see `tapectl media list`)")
        })
    }

    pub fn media(&self, barcode: &str) -> Result<Option<MediaRow>> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {MEDIA_COLUMNS} FROM media WHERE barcode = ?1"),
                params![barcode],
                media_row,
            )
            .optional()?;
        row.transpose()
    }

    pub fn all_media(&self) -> Result<Vec<MediaRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {MEDIA_COLUMNS} FROM media ORDER BY barcode"
        ))?;
        let rows = stmt.query_map([], media_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Every recorded change of `barcode`, oldest first.
    pub fn history(&self, barcode: &str) -> Result<Vec<HistoryRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT at, what, old, new, why, actor FROM media_history WHERE barcode = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![barcode], |r| {
            Ok(HistoryRow {
                at: r.get(0)?,
                what: r.get(1)?,
                old: r.get(2)?,
                new: r.get(3)?,
                why: r.get(4)?,
                actor: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

const MEDIA_COLUMNS: &str = "barcode, pool, state, volume_uuid, location, bytes_written, loads, \
     write_errors, read_errors, cleaning_uses, first_seen, updated_at, destination, key_fingerprint";

/// A row, or what in it a person or another build of rackvault damaged.
fn media_row(r: &rusqlite::Row) -> rusqlite::Result<Result<MediaRow>> {
    let barcode: String = r.get(0)?;
    let state: String = r.get(2)?;
    let location: String = r.get(4)?;
    let count = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    let Some(state) = MediaState::parse(&state) else {
        return Ok(Err(anyhow::anyhow!(
            "the tape catalog has state {state:?} for {barcode}, which this build does not know"
        )));
    };
    let Some(location) = Location::from_db(&location) else {
        return Ok(Err(anyhow::anyhow!(
            "the tape catalog has location {location:?} for {barcode}, which this build does not know"
        )));
    };
    Ok(Ok(MediaRow {
        pool: r.get(1)?,
        state,
        volume_uuid: r.get(3)?,
        location,
        bytes_written: count(5)?,
        loads: count(6)?,
        write_errors: count(7)?,
        read_errors: count(8)?,
        cleaning_uses: r.get::<_, Option<i64>>(9)?.map(|n| n.max(0) as u64),
        first_seen: r.get(10)?,
        updated_at: r.get(11)?,
        destination: r.get(12)?,
        key_fingerprint: r.get(13)?,
        barcode,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn change<'a>(why: &'a str, when: &str) -> MediaChange<'a> {
        MediaChange {
            why,
            actor: "test",
            at: at(when),
        }
    }

    #[test]
    fn locations_round_trip_and_bad_text_is_refused() {
        for l in [
            Location::Slot(3),
            Location::Drive(0),
            Location::ImportExport(1),
            Location::InTransitTo("parents-house".into()),
            Location::InTransitFrom("parents-house".into()),
            Location::Vault("parents-house".into()),
            Location::Unknown,
        ] {
            assert_eq!(Location::from_db(&l.to_db()), Some(l));
        }
        for bad in [
            "",
            "slot",
            "slot:",
            "slot:x",
            "slot:70000",
            "vault:",
            "moon:1",
        ] {
            assert_eq!(Location::from_db(bad), None, "{bad}");
        }
    }

    #[test]
    fn what_the_library_sees_is_recorded_and_every_change_kept() {
        let d = tempfile::tempdir().unwrap();
        let c = TapeCatalog::open(d.path()).unwrap();
        let t0 = "2026-12-01T10:00:00Z";
        assert_eq!(
            c.seen(
                "RV0001L6",
                &Location::Slot(1),
                false,
                &change("inventory", t0)
            )
            .unwrap(),
            None
        );
        assert_eq!(
            c.seen(
                "CLN001L1",
                &Location::Slot(24),
                true,
                &change("inventory", t0)
            )
            .unwrap(),
            None
        );
        let m = c.media("RV0001L6").unwrap().unwrap();
        assert_eq!(
            (m.state, m.location.clone()),
            (MediaState::New, Location::Slot(1))
        );
        assert_eq!(
            c.media("CLN001L1").unwrap().unwrap().state,
            MediaState::Cleaning
        );
        // Seen again where it was: nothing to record.
        c.seen(
            "RV0001L6",
            &Location::Slot(1),
            false,
            &change("inventory", t0),
        )
        .unwrap();
        assert_eq!(c.history("RV0001L6").unwrap().len(), 1);
        // Carried to a vault, then found back in the library: onsite whatever the catalog said,
        // and the difference is in the history.
        c.set_location(
            "RV0001L6",
            &Location::Vault("parents-house".into()),
            &change("rotation arrived", "2026-12-02T10:00:00Z"),
        )
        .unwrap();
        let was = c
            .seen(
                "RV0001L6",
                &Location::ImportExport(2),
                false,
                &change("inventory", "2026-12-09T10:00:00Z"),
            )
            .unwrap();
        assert_eq!(was, Some(Location::Vault("parents-house".into())));
        c.set_state(
            "RV0001L6",
            MediaState::Damaged,
            &change("medium error while writing", "2026-12-09T11:00:00Z"),
        )
        .unwrap();
        let h = c.history("RV0001L6").unwrap();
        let summary: Vec<(&str, Option<&str>, Option<&str>)> = h
            .iter()
            .map(|r| (r.what.as_str(), r.old.as_deref(), r.new.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("seen", None, Some("slot:1")),
                ("location", Some("slot:1"), Some("vault:parents-house")),
                ("location", Some("vault:parents-house"), Some("ie:2")),
                ("state", Some("new"), Some("damaged")),
            ]
        );
        assert_eq!(h[3].why, "medium error while writing");
        assert_eq!(c.all_media().unwrap().len(), 2);
        // A cleaner stays a cleaner; an unknown barcode is named.
        assert!(
            c.set_state("CLN001L1", MediaState::Writable, &change("x", t0))
                .is_err()
        );
        let e = c
            .set_state("NOPE00L6", MediaState::Retired, &change("x", t0))
            .unwrap_err();
        assert!(format!("{e:#}").contains("no cartridge NOPE00L6"), "{e:#}");
    }

    #[test]
    fn a_damaged_row_is_an_error_naming_it_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let c = TapeCatalog::open(d.path()).unwrap();
        c.seen(
            "RV0001L6",
            &Location::Slot(1),
            false,
            &change("inventory", "2026-12-01T10:00:00Z"),
        )
        .unwrap();
        c.conn
            .execute("UPDATE media SET location = 'moon:1'", [])
            .unwrap();
        let e = c.media("RV0001L6").unwrap_err();
        assert!(
            format!("{e:#}").contains("location \"moon:1\" for RV0001L6"),
            "{e:#}"
        );
    }

    #[test]
    fn sets_need_a_base_exactly_when_incremental() {
        let d = tempfile::tempdir().unwrap();
        let c = TapeCatalog::open(d.path()).unwrap();
        let insert = |kind: &str, base: Option<i64>| {
            c.conn.execute(
                "INSERT INTO sets (uuid, job, snapshot, kind, base_set, pool, state, started_at)
                 VALUES (hex(randomblob(16)), 'j', 's', ?1, ?2, 'p', 'writing', 'now')",
                params![kind, base],
            )
        };
        insert("full", None).unwrap();
        assert!(insert("full", Some(1)).is_err());
        assert!(insert("incremental", None).is_err());
        insert("incremental", Some(1)).unwrap();
    }
}
