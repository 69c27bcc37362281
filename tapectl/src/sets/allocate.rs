//! Choosing the next tape of a pool for a set and getting it into a drive ready to write: the
//! library's element status is reconciled into the catalog first; a cartridge of the pool that is
//! writable (the current tape, continued) comes before a new one; a blank one is formatted with
//! its barcode as volume name. Write-protected and foreign cartridges (data that is not a
//! rackvault LTFS volume this catalog knows) are skipped with the reason and never written.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};
use ltfs::volume::{FormatOptions, Volume, VolumeError};

use crate::backend::BoxedTransport;
use crate::catalog::{CLEANER_LIFE, Location, MediaChange, MediaState, TapeCatalog};
use crate::changer::{ElementKind, Inventory, is_cleaning_cartridge};
use crate::drive::Drive;
use crate::drive::logs::Severity;
use crate::library::{Library, Target};
use crate::pools::{Allocation, Pool};

/// A cartridge passed over, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    pub barcode: String,
    pub reason: String,
}

/// Records where the library says each cartridge is (its element status is the truth for what
/// is onsite); differences from the catalog are kept in the media history.
pub fn reconcile(cat: &TapeCatalog, inv: &Inventory, actor: &str) -> Result<()> {
    let c = MediaChange {
        why: "seen by the library",
        actor,
        at: jiff::Timestamp::now(),
    };
    for kind in [
        ElementKind::Storage,
        ElementKind::ImportExport,
        ElementKind::Drive,
    ] {
        for (i, e) in inv.of_kind(kind).iter().enumerate() {
            let Some(barcode) = e.volume_tag.as_deref().filter(|b| !b.is_empty()) else {
                continue;
            };
            let n = i as u16;
            let at = match kind {
                ElementKind::Storage => Location::Slot(n + 1),
                ElementKind::ImportExport => Location::ImportExport(n + 1),
                _ => Location::Drive(n),
            };
            if e.full {
                cat.seen(barcode, &at, is_cleaning_cartridge(barcode), &c)?;
            }
        }
    }
    // What the catalog had onsite and the library no longer shows left through the door: to its
    // vault when one was given (`rotation export`), else nobody knows where.
    let present: std::collections::HashSet<&str> = inv
        .all()
        .filter(|e| e.full)
        .filter_map(|e| e.volume_tag.as_deref())
        .collect();
    for m in cat.all_media()? {
        if !m.location.onsite() || present.contains(m.barcode.as_str()) {
            continue;
        }
        let (to, why) = match &m.destination {
            Some(v) => (
                Location::InTransitTo(v.clone()),
                format!("taken out of the library for vault {v}"),
            ),
            None => (
                Location::Unknown,
                "no longer in the library, and no vault was given for it".to_string(),
            ),
        };
        cat.set_location(
            &m.barcode,
            &to,
            &MediaChange {
                why: &why,
                actor,
                at: c.at,
            },
        )?;
    }
    Ok(())
}

/// What the writer needs to find a tape.
pub struct Want<'a> {
    pub pool: &'a Pool,
    pub drive: u16,
    /// The set's data root (`/<job>/<snapshot>`): a tape that has it from another set is not used.
    /// `None` when only labelling.
    pub data_root: Option<&'a str>,
    pub actor: &'a str,
    /// Block size for new volumes.
    pub block_size: usize,
    /// The pool's key (read from its key file) when its tapes are encrypted.
    pub key: Option<&'a crate::keys::TapeKey>,
}

/// Loads the next usable tape of the pool into `want.drive` and returns its barcode and volume
/// UUID. `taken` holds barcodes not to use (other copies' tapes, ones skipped before); chosen and
/// skipped ones are added to it.
pub fn next_tape(
    lib: &mut Library,
    cat: &TapeCatalog,
    want: &Want,
    taken: &mut HashSet<String>,
    skipped: &mut Vec<Skipped>,
) -> Result<(String, String)> {
    let inv = lib.inventory()?;
    reconcile(cat, &inv, want.actor)?;
    let mut candidates: Vec<(u8, String, String)> = Vec::new();
    for e in inv
        .storage
        .iter()
        .chain(inv.drives.get(want.drive as usize))
    {
        let Some(b) = e.volume_tag.as_deref().filter(|_| e.full) else {
            continue;
        };
        if taken.contains(b) || is_cleaning_cartridge(b) || !want.pool.holds(b) {
            continue;
        }
        let Some(m) = cat.media(b)? else { continue };
        if m.pool.as_deref().is_some_and(|p| p != want.pool.name) {
            continue;
        }
        let rank = match m.state {
            // A pool allocating a tape per set starts each set on a new one; the set itself goes
            // on to more new ones as it fills them.
            MediaState::Writable if want.pool.allocation == Allocation::Continue => 0,
            MediaState::New => 1,
            // Every set on it has expired: written anew (a new LTFS volume) after the new ones.
            MediaState::Expired => 2,
            _ => continue,
        };
        candidates.push((rank, m.updated_at.clone(), b.to_string()));
    }
    // The pool's current tape (writable, most recently used) first, then new ones by barcode.
    candidates.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| match a.0 {
            0 => b.1.cmp(&a.1),
            _ => a.2.cmp(&b.2),
        })
    });
    for (_, _, barcode) in candidates {
        taken.insert(barcode.clone());
        match prepare(lib, cat, want, &barcode)? {
            Ok(uuid) => return Ok((barcode, uuid)),
            Err(reason) => {
                tracing::warn!(%barcode, "skipped: {reason}");
                if !skipped
                    .iter()
                    .any(|s| s.barcode == barcode && s.reason == reason)
                {
                    skipped.push(Skipped { barcode, reason });
                }
            }
        }
    }
    let why = if skipped.is_empty() {
        String::new()
    } else {
        format!(
            " (skipped: {})",
            skipped
                .iter()
                .map(|s| format!("{}: {}", s.barcode, s.reason))
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    Err(NoTape {
        pool: want.pool.name.clone(),
        message: format!(
            "no writable tape of pool {} is in the library{why}; insert a new cartridge whose barcode the pool takes ({}) with the import/export door, then `tapectl import`",
            want.pool.name,
            want.pool.barcodes.join(", ")
        ),
    }
    .into())
}

/// No cartridge in the library can take the set: a person has to bring one. A writer that may
/// wait for it (`--wait-tapes`, a daemon's tape job) waits; others fail with the message.
#[derive(Debug, Clone)]
pub struct NoTape {
    pub pool: String,
    /// What to insert, for a person.
    pub message: String,
}

impl std::fmt::Display for NoTape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NoTape {}

/// Loads `barcode` and makes it ready for the set: Ok(volume UUID), or Err(why it is skipped).
/// A blank cartridge is formatted (volume name = barcode) and joins the pool.
/// The drive is left without a key whatever happened: a writer sets its pool's key again on its
/// own handle, and nothing else (a format, a repair, a tape passed over and left in the drive)
/// may write with it.
pub fn prepare(
    lib: &mut Library,
    cat: &TapeCatalog,
    want: &Want,
    barcode: &str,
) -> Result<Result<String, String>> {
    let r = prepare_keyed(lib, cat, want, barcode);
    if want.key.is_some()
        && let Ok((mut d, _lock)) = lib.open_drive(want.drive)
    {
        super::crypt::clear_quietly(&mut d);
    }
    r
}

fn prepare_keyed(
    lib: &mut Library,
    cat: &TapeCatalog,
    want: &Want,
    barcode: &str,
) -> Result<Result<String, String>> {
    lib.load(&Target::Barcode(barcode.to_string()), want.drive)
        .with_context(|| format!("loading {barcode} into drive {}", want.drive))?;
    reconcile(cat, &lib.inventory()?, want.actor)?;
    let now = jiff::Timestamp::now();
    cat.count_use(barcode, 1, 0, 0, 0)?;
    let (mut drive, mut lock) = lib.open_drive(want.drive)?;
    if asks_for_cleaning(&mut drive) && !usable_cleaners(lib, cat)?.is_empty() {
        // Cleaned with a CLN cartridge before the tape is written, then the tape goes back in.
        drop((drive, lock));
        clean(lib, cat, want.drive, want.actor)?;
        lib.load(&Target::Barcode(barcode.to_string()), want.drive)
            .with_context(|| format!("loading {barcode} into drive {} again", want.drive))?;
        (drive, lock) = lib.open_drive(want.drive)?;
    }
    let _lock = lock;
    check_drive_health(&mut drive, want.drive)?;
    if drive.status().write_protected == Some(true) {
        return Ok(Err("the cartridge is write-protected".into()));
    }
    let row = cat.media(barcode)?;
    let expired = row.as_ref().is_some_and(|m| m.state == MediaState::Expired);
    let known_key = row.as_ref().and_then(|m| m.key_fingerprint.clone());
    let known = row.and_then(|m| m.volume_uuid);
    // The tape's first block says whether and with which key it is encrypted (the position is at
    // its beginning, just loaded). A tape is encrypted whole with its pool's key, or not at all:
    // one that does not fit is passed over and never formatted (a plain tape whose sets all
    // expired is written anew, encrypted).
    let found = super::crypt::probe(&mut drive);
    if let Some(reason) =
        super::crypt::unfit_for_pool(&want.pool.name, want.key, &found, known_key.as_deref())
        && !(expired && want.key.is_some() && matches!(found, super::crypt::TapeCrypt::Plain))
    {
        return Ok(Err(reason));
    }
    super::crypt::set_for_pool(&mut drive, &want.pool.name, want.key)?;
    let fingerprint = want.key.map(|k| k.fingerprint.to_string());
    match Volume::mount(&mut drive) {
        Ok(vol) => {
            let uuid = vol.index().volume_uuid.clone();
            if known.as_deref() != Some(uuid.as_str()) {
                return Ok(Err(format!(
                    "it holds LTFS volume {uuid}, which the tape catalog does not know; it is never overwritten (if it is rackvault's, `tapectl catalog rebuild` reads it in)"
                )));
            }
            if expired {
                drop(vol);
                return reuse(&mut drive, cat, want, barcode, now).map(Ok);
            }
            if known_key != fingerprint {
                return Ok(Err(format!(
                    "the tape catalog has it {}, and pool {} {}; a tape is encrypted whole or not at all",
                    known_key
                        .as_deref()
                        .map_or("in plain LTFS".to_string(), |k| format!(
                            "encrypted with key {k}"
                        )),
                    want.pool.name,
                    fingerprint
                        .as_deref()
                        .map_or("is plain LTFS".to_string(), |k| format!(
                            "encrypts with key {k}"
                        )),
                )));
            }
            if let Some(root) = want.data_root
                && vol.stat(root).is_ok()
            {
                return Ok(Err(format!("it already has {root} from an earlier set")));
            }
            Ok(Ok(uuid))
        }
        Err(VolumeError::Construct(_)) | Err(VolumeError::Pointers(_)) if known.is_none() => {
            let opts = FormatOptions {
                barcode: Some(barcode.to_string()),
                volume_name: Some(barcode.to_string()),
                block_size: want.block_size,
                force: false,
                ..FormatOptions::default()
            };
            match Volume::format(&mut drive, &opts) {
                Ok(vol) => {
                    let uuid = vol.index().volume_uuid.clone();
                    vol.unmount().context("closing the new volume")?;
                    let c = MediaChange {
                        why: "formatted for a tape set",
                        actor: want.actor,
                        at: now,
                    };
                    cat.set_volume(barcode, &want.pool.name, &uuid, &c)?;
                    cat.set_key_fingerprint(barcode, fingerprint.as_deref())?;
                    cat.set_state(barcode, MediaState::Writable, &c)?;
                    Ok(Ok(uuid))
                }
                Err(e @ (VolumeError::AlreadyLtfs { .. } | VolumeError::NotBlank { .. })) => Ok(
                    Err(format!("it is not blank and not a rackvault volume ({e})")),
                ),
                Err(VolumeError::Device {
                    source: ltfs::DeviceError::WriteProtected,
                    ..
                }) => Ok(Err("the cartridge is write-protected".into())),
                Err(
                    e @ VolumeError::Device {
                        source:
                            ltfs::DeviceError::IllegalRequest(_) | ltfs::DeviceError::Unsupported(_),
                        ..
                    },
                ) => bail!(
                    "drive {} cannot make the two partitions an LTFS volume needs ({e}); tape sets need an LTO-5 or later drive",
                    want.drive
                ),
                Err(e) => Err(anyhow::Error::new(e).context(format!("formatting {barcode}"))),
            }
        }
        Err(e) => {
            let e = anyhow::Error::new(e);
            if super::crypt::is_decrypt_refusal(&e) {
                return Ok(Err(format!(
                    "it is encrypted with a key this drive does not have ({e:#}); it is never overwritten"
                )));
            }
            Ok(Err(format!("its LTFS volume cannot be mounted: {e:#}")))
        }
    }
}

/// Writes an expired tape anew: its sets leave the catalog (with their manifest copies), and it
/// gets a new LTFS volume (new UUID, volume name = barcode). Only a tape the catalog has as
/// expired, holding the volume the catalog knows, gets here.
fn reuse(
    drive: &mut Drive<BoxedTransport>,
    cat: &TapeCatalog,
    want: &Want,
    barcode: &str,
    now: jiff::Timestamp,
) -> Result<String> {
    let gone = cat.forget_sets_on_tape(barcode)?;
    for set in &gone {
        let dir = crate::sets::write::local_manifest(cat.state_dir(), set, 1);
        if let Some(d) = dir.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    let opts = FormatOptions {
        barcode: Some(barcode.to_string()),
        volume_name: Some(barcode.to_string()),
        block_size: want.block_size,
        force: true,
        ..FormatOptions::default()
    };
    let vol =
        Volume::format(&mut *drive, &opts).with_context(|| format!("formatting {barcode} anew"))?;
    let uuid = vol.index().volume_uuid.clone();
    vol.unmount().context("closing the new volume")?;
    let why = format!(
        "written anew: every set on it had expired ({} set(s) left the catalog)",
        gone.len()
    );
    let c = MediaChange {
        why: &why,
        actor: want.actor,
        at: now,
    };
    cat.set_volume(barcode, &want.pool.name, &uuid, &c)?;
    cat.set_key_fingerprint(
        barcode,
        want.key.map(|k| k.fingerprint.to_string()).as_deref(),
    )?;
    cat.set_state(barcode, MediaState::Writable, &c)?;
    Ok(uuid)
}

const CLEAN_NOW: u8 = 20;

/// The drive's TapeAlert asks for cleaning (clean now).
fn asks_for_cleaning(drive: &mut Drive<BoxedTransport>) -> bool {
    drive.tape_alerts().is_ok_and(|a| a.is_set(CLEAN_NOW))
}

/// The library's cleaning cartridges (in storage slots) with uses left by the catalog's count,
/// the least used first.
fn usable_cleaners(lib: &mut Library, cat: &TapeCatalog) -> Result<Vec<String>> {
    let in_slots: Vec<String> = lib
        .inventory()?
        .storage
        .iter()
        .filter(|e| e.full)
        .filter_map(|e| e.volume_tag.clone())
        .filter(|b| is_cleaning_cartridge(b))
        .collect();
    cat.usable_cleaners(&in_slots)
}

/// Cleans drive `n` with the library's least used cleaning cartridge and counts the use against
/// it. A drive that still asks for cleaning afterwards (the cleaner is used up) is an error naming
/// the cleaner.
fn clean(lib: &mut Library, cat: &TapeCatalog, n: u16, actor: &str) -> Result<()> {
    tracing::info!(drive = n, "the drive asks for cleaning: cleaning it");
    let cleaner = usable_cleaners(lib, cat)?.into_iter().next();
    let moves = lib
        .clean_with(n, cleaner.as_deref())
        .with_context(|| format!("drive {n} asks for cleaning"))?;
    let cleaner = moves
        .iter()
        .find_map(|m| m.barcode.clone().filter(|b| is_cleaning_cartridge(b)))
        .unwrap_or_default();
    reconcile(cat, &lib.inventory()?, actor)?;
    if !cleaner.is_empty() {
        cat.count_cleaning(&cleaner)?;
    }
    let (mut drive, _lock) = lib.open_drive(n)?;
    let left = drive.tape_alerts().ok();
    if left.is_some_and(|a| a.is_set(CLEAN_NOW)) {
        if !cleaner.is_empty() {
            // Used up whatever our count says (it may have come with uses spent): never taken again.
            cat.cleaner_used_up(&cleaner)?;
        }
        bail!(
            "drive {n} still asks for cleaning after {cleaner} was used: the cleaning cartridge is used up; replace it"
        );
    }
    Ok(())
}

/// A drive that asks for cleaning and was not cleaned, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NeedsCleaning {
    pub drive: u16,
    pub why: String,
}

/// Between jobs: every drive whose TapeAlert asks for cleaning is cleaned with the library's least
/// used cleaning cartridge. Returns the drives that still ask (no cleaner with uses left, or the
/// cleaning did not take).
pub fn clean_drives(
    lib: &mut Library,
    cat: &TapeCatalog,
    actor: &str,
) -> Result<Vec<NeedsCleaning>> {
    let mut out = Vec::new();
    for n in 0..lib.backend.drive_count() as u16 {
        let asks = match lib.open_drive(n) {
            Ok((mut d, _lock)) => asks_for_cleaning(&mut d),
            Err(e) => {
                tracing::debug!(drive = n, "not checked for cleaning: {e:#}");
                continue;
            }
        };
        if !asks {
            continue;
        }
        if usable_cleaners(lib, cat)?.is_empty() {
            out.push(NeedsCleaning {
                drive: n,
                why: format!(
                    "drive {n} asks for cleaning and the library has no cleaning cartridge with uses left (of {CLEANER_LIFE}); insert a new CLN cartridge"
                ),
            });
            continue;
        }
        if let Err(e) = clean(lib, cat, n, actor) {
            out.push(NeedsCleaning {
                drive: n,
                why: format!("{e:#}"),
            });
        }
    }
    Ok(out)
}

/// A drive raising a critical TapeAlert about itself is not written with: the error says what the
/// drive reports and, when it asks for cleaning, how to clean it. Critical flags about a cartridge
/// (media, read or write failure, write protect, a cartridge's mechanical failure, forced eject,
/// cleaning media) stay latched after it is unloaded; they are the cartridge's problem, which a
/// set handles where it happens (a damaged or write-protected tape is passed over).
pub fn check_drive_health(drive: &mut Drive<BoxedTransport>, n: u16) -> Result<()> {
    const ABOUT_A_CARTRIDGE: [u8; 9] = [4, 5, 6, 9, 13, 14, 16, 22, 23];
    let Ok(alerts) = drive.tape_alerts() else {
        return Ok(());
    };
    let critical: Vec<_> = alerts
        .flags()
        .filter(|f| f.severity == Severity::Critical && !ABOUT_A_CARTRIDGE.contains(&f.number))
        .collect();
    if critical.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = critical.iter().map(|f| f.name).collect();
    let hint = if critical.iter().any(|f| f.number == CLEAN_NOW) {
        format!(
            "; clean it with `tapectl clean --drive {n}` (a set cleans it by itself when a cleaning cartridge is in the library)"
        )
    } else {
        "; see `tapectl drive status --drive N`".replace('N', &n.to_string())
    };
    bail!(
        "drive {n} reports a critical TapeAlert ({}): writes to it are stopped{hint}",
        names.join(", ")
    )
}
