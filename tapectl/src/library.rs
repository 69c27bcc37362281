//! The library as an operator sees it: a changer plus drives paired to its drive elements by serial
//! number, and the policies built from MOVE MEDIUM (load, unload, export, import, clean). Devices are
//! locked while in use so two processes never drive the same robot or drive at once.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::backend::{Backend, BoxedTransport};
use crate::changer::{Changer, Element, ElementKind, Inventory, is_cleaning_cartridge};
use crate::config::Settings;
use crate::drive::Drive;
use crate::lock::DeviceLock;

/// An element as the CLI names it: `slot N` (1-based), `ie N` (1-based), `drive N` (0-based, like mtx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "number", rename_all = "kebab-case")]
pub enum Place {
    Slot(u16),
    Ie(u16),
    Drive(u16),
    Transport(u16),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Slot(n) => write!(f, "slot {n}"),
            Place::Ie(n) => write!(f, "ie {n}"),
            Place::Drive(n) => write!(f, "drive {n}"),
            Place::Transport(n) => write!(f, "picker {n}"),
        }
    }
}

/// What the user typed to name a cartridge or element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Place(Place),
    Address(u16),
    Barcode(String),
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;
    /// `slot:3`, `slot3`, `s3`; `ie:1`, `mail1`; `drive:0`, `d0`; `@4096` (element address); else a barcode.
    fn from_str(s: &str) -> Result<Target> {
        let s = s.trim();
        if let Some(a) = s.strip_prefix('@') {
            let addr = match a.strip_prefix("0x") {
                Some(h) => u16::from_str_radix(h, 16),
                None => a.parse(),
            };
            return Ok(Target::Address(
                addr.map_err(|_| anyhow!("bad element address {s:?}"))?,
            ));
        }
        let lower = s.to_ascii_lowercase();
        for (prefixes, make) in [
            (&["slot:", "slot", "s"][..], Place::Slot as fn(u16) -> Place),
            (&["ie:", "ie", "mail:", "mail"][..], Place::Ie),
            (&["drive:", "drive", "d"][..], Place::Drive),
        ] {
            for p in prefixes {
                if let Some(n) = lower.strip_prefix(p)
                    && !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
                {
                    let n: u16 = n
                        .parse()
                        .map_err(|_| anyhow!("number out of range in {s:?}"))?;
                    if n == 0 && !matches!(make(0), Place::Drive(_)) {
                        bail!("{s:?}: slots and ie slots count from 1");
                    }
                    return Ok(Target::Place(make(n)));
                }
            }
        }
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("{s:?} is neither a place (slot:N, ie:N, drive:N, @ADDRESS) nor a barcode");
        }
        Ok(Target::Barcode(s.to_string()))
    }
}

/// An element with its operator-facing name.
#[derive(Debug, Clone, Serialize)]
pub struct NamedElement {
    pub place: Place,
    #[serde(flatten)]
    pub element: Element,
    pub cleaning: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LibraryStatus {
    pub changer: DeviceIdentity,
    pub drives: Vec<NamedElement>,
    pub slots: Vec<NamedElement>,
    pub import_export: Vec<NamedElement>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceIdentity {
    pub device: String,
    pub vendor: String,
    pub product: String,
    pub revision: String,
    pub serial: Option<String>,
}

/// One robot move, for reporting.
#[derive(Debug, Clone, Serialize)]
pub struct Move {
    pub barcode: Option<String>,
    pub from: Place,
    pub to: Place,
}

pub struct Library {
    pub settings: Settings,
    pub backend: Backend,
    changer: Changer<BoxedTransport>,
    _changer_lock: DeviceLock,
    wait: Duration,
    purpose: String,
    /// Where the key of an encrypted tape is found by its fingerprint when it is read
    /// (`[tape] keys_dir` and the pools' key files: [`crate::pools::TapeSettings::keyring`]).
    pub keys: crate::keys::Keyring,
}

impl Library {
    /// Opens and locks the changer. `purpose` is recorded in lock files ("tapectl load RV0001L6").
    pub fn open(settings: Settings, wait: Duration, purpose: &str) -> Result<Library> {
        let backend = Backend::open(&settings.library)?;
        let name = backend.changer_name();
        let lock = DeviceLock::acquire(
            &settings.lock_dir,
            &format!("changer-{name}"),
            &format!("changer {name}"),
            purpose,
            wait,
        )?;
        let changer = Changer::new(backend.changer_transport()?)
            .with_context(|| format!("cannot use changer {name}"))?;
        Ok(Library {
            settings,
            backend,
            changer,
            _changer_lock: lock,
            wait,
            purpose: purpose.to_string(),
            keys: Default::default(),
        })
    }

    pub fn changer(&mut self) -> &mut Changer<BoxedTransport> {
        &mut self.changer
    }

    pub fn inventory(&mut self) -> Result<Inventory> {
        Ok(self.changer.inventory()?)
    }

    pub fn status(&mut self) -> Result<LibraryStatus> {
        let inv = self.inventory()?;
        let i = self.changer.inquiry().clone();
        let name = |kind: ElementKind, list: &[Element]| -> Vec<NamedElement> {
            list.iter()
                .enumerate()
                .map(|(n, e)| NamedElement {
                    place: place_of(kind, n),
                    cleaning: e.volume_tag.as_deref().is_some_and(is_cleaning_cartridge),
                    element: e.clone(),
                })
                .collect()
        };
        Ok(LibraryStatus {
            changer: DeviceIdentity {
                device: self.changer.describe(),
                vendor: i.vendor,
                product: i.product,
                revision: i.revision,
                serial: self.changer.serial().map(str::to_string),
            },
            drives: name(ElementKind::Drive, &inv.drives),
            slots: name(ElementKind::Storage, &inv.storage),
            import_export: name(ElementKind::ImportExport, &inv.import_export),
            notes: inv.notes,
        })
    }

    /// Resolves a user target to an element of the current inventory.
    pub fn resolve(&self, inv: &Inventory, target: &Target) -> Result<(Place, Element)> {
        match target {
            Target::Barcode(b) => {
                let found: Vec<(Place, &Element)> = named(inv)
                    .filter(|(_, e)| e.volume_tag.as_deref() == Some(b.as_str()))
                    .collect();
                match found.as_slice() {
                    [(p, e)] => Ok((*p, (*e).clone())),
                    [] => bail!(
                        "no cartridge with barcode {b} is in the library (see `tapectl library status`)"
                    ),
                    many => bail!(
                        "barcode {b} appears {} times ({}); name the place instead",
                        many.len(),
                        many.iter()
                            .map(|(p, _)| p.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
            Target::Address(a) => named(inv)
                .find(|(_, e)| e.address == *a)
                .map(|(p, e)| (p, e.clone()))
                .ok_or_else(|| anyhow!("no element at address {a} (0x{a:x})")),
            Target::Place(p) => named(inv)
                .find(|(q, _)| q == p)
                .map(|(p, e)| (p, e.clone()))
                .ok_or_else(|| anyhow!("the library has no {p}")),
        }
    }

    fn transport_address(inv: &Inventory) -> u16 {
        inv.transports.first().map_or(0, |e| e.address)
    }

    /// Raw move between two places; refuses what the robot would refuse, with a clearer message.
    pub fn move_between(&mut self, from: &Target, to: &Target) -> Result<Move> {
        let inv = self.inventory()?;
        let (fp, fe) = self.resolve(&inv, from)?;
        let (tp, te) = self.resolve(&inv, to)?;
        if !fe.full {
            bail!("{fp} is empty");
        }
        if te.full {
            bail!(
                "{tp} is full ({})",
                te.volume_tag.as_deref().unwrap_or("no barcode")
            );
        }
        let _drive_locks = self.lock_drives_of(&inv, &[fp, tp])?;
        if let Place::Drive(n) = fp {
            self.eject(&inv, n)?;
        }
        self.changer
            .move_medium(Self::transport_address(&inv), fe.address, te.address)
            .with_context(|| format!("moving {fp} to {tp}"))?;
        Ok(Move {
            barcode: fe.volume_tag,
            from: fp,
            to: tp,
        })
    }

    /// Loads a cartridge (by barcode or slot) into drive `drive`, unloading whatever is there first,
    /// and waits until the drive is ready.
    pub fn load(&mut self, what: &Target, drive: u16) -> Result<Vec<Move>> {
        let inv = self.inventory()?;
        let (sp, se) = self.resolve(&inv, what)?;
        let dp = Place::Drive(drive);
        let (_, de) = self.resolve(&inv, &Target::Place(dp))?;
        if matches!(sp, Place::Drive(_)) {
            if sp == dp {
                return Ok(Vec::new());
            }
            bail!(
                "{} is in {sp}; unload it first",
                se.volume_tag.as_deref().unwrap_or("the cartridge")
            );
        }
        if !se.full {
            bail!("{sp} is empty");
        }
        let _lock = self.lock_drive(&inv, drive)?;
        let mut moves = Vec::new();
        if de.full {
            moves.push(self.unload_locked(&inv, drive)?);
        }
        let inv = if moves.is_empty() {
            inv
        } else {
            self.inventory()?
        };
        self.changer
            .move_medium(Self::transport_address(&inv), se.address, de.address)
            .with_context(|| format!("loading {sp} into {dp}"))?;
        moves.push(Move {
            barcode: se.volume_tag.clone(),
            from: sp,
            to: dp,
        });
        if !se.volume_tag.as_deref().is_some_and(is_cleaning_cartridge) {
            let mut d = self.drive_device(&inv, drive)?;
            d.wait_until_ready(Duration::from_secs(600))
                .with_context(|| format!("{dp} did not become ready"))?;
        }
        Ok(moves)
    }

    /// Unloads drive `drive` back to the slot the cartridge came from (or the first free slot).
    pub fn unload(&mut self, drive: u16) -> Result<Move> {
        let inv = self.inventory()?;
        let _lock = self.lock_drive(&inv, drive)?;
        self.unload_locked(&inv, drive)
    }

    fn unload_locked(&mut self, inv: &Inventory, drive: u16) -> Result<Move> {
        let dp = Place::Drive(drive);
        let (_, de) = self.resolve(inv, &Target::Place(dp))?;
        if !de.full {
            bail!("{dp} is empty");
        }
        let home = de
            .source
            .and_then(|s| inv.storage.iter().find(|e| e.address == s && !e.full))
            .or_else(|| inv.storage.iter().find(|e| !e.full))
            .ok_or_else(|| anyhow!("no free storage slot to unload {dp} into"))?
            .clone();
        self.eject(inv, drive)?;
        self.changer
            .move_medium(Self::transport_address(inv), de.address, home.address)
            .with_context(|| format!("unloading {dp}"))?;
        let to = named(inv)
            .find(|(_, e)| e.address == home.address)
            .map(|(p, _)| p)
            .unwrap_or(Place::Slot(0));
        Ok(Move {
            barcode: de.volume_tag,
            from: dp,
            to,
        })
    }

    /// Moves a cartridge to a free import/export slot so it can be taken offsite.
    pub fn export(&mut self, barcode: &str) -> Result<Move> {
        let inv = self.inventory()?;
        let (p, e) = self.resolve(&inv, &Target::Barcode(barcode.to_string()))?;
        if matches!(p, Place::Ie(_)) {
            bail!("{barcode} is already in {p}");
        }
        let Some((tp, te)) = named(&inv)
            .find(|(p, e)| matches!(p, Place::Ie(_)) && !e.full)
            .map(|(p, e)| (p, e.clone()))
        else {
            bail!("every import/export slot is full: take the tapes out of the door first");
        };
        let _lock = if let Place::Drive(n) = p {
            Some(self.lock_drive(&inv, n)?)
        } else {
            None
        };
        if let Place::Drive(n) = p {
            self.eject(&inv, n)?;
        }
        self.changer
            .move_medium(Self::transport_address(&inv), e.address, te.address)
            .with_context(|| format!("exporting {barcode}"))?;
        Ok(Move {
            barcode: Some(barcode.to_string()),
            from: p,
            to: tp,
        })
    }

    /// Moves every cartridge in the import/export slots to free storage slots.
    pub fn import(&mut self) -> Result<Vec<Move>> {
        self.import_if(|_| true)
    }

    /// Moves the cartridges in the import/export slots that `take` accepts (given the barcode, if
    /// the cartridge has one) to free storage slots.
    pub fn import_if(&mut self, take: impl Fn(Option<&str>) -> bool) -> Result<Vec<Move>> {
        let inv = self.inventory()?;
        let mut free = named(&inv)
            .filter(|(p, e)| matches!(p, Place::Slot(_)) && !e.full)
            .map(|(p, e)| (p, e.clone()))
            .collect::<Vec<_>>()
            .into_iter();
        let mut moves = Vec::new();
        for (p, e) in named(&inv)
            .filter(|(p, e)| matches!(p, Place::Ie(_)) && e.full && take(e.volume_tag.as_deref()))
            .map(|(p, e)| (p, e.clone()))
            .collect::<Vec<_>>()
        {
            let Some((tp, te)) = free.next() else {
                bail!(
                    "no free storage slot for {} in {p} (moved so far: {})",
                    e.volume_tag.as_deref().unwrap_or("?"),
                    moves.len()
                );
            };
            self.changer
                .move_medium(Self::transport_address(&inv), e.address, te.address)
                .with_context(|| format!("importing {p}"))?;
            moves.push(Move {
                barcode: e.volume_tag.clone(),
                from: p,
                to: tp,
            });
        }
        Ok(moves)
    }

    /// Cleans drive `drive` with a CLN* cartridge from a storage slot, then puts the cleaner back.
    pub fn clean(&mut self, drive: u16) -> Result<Vec<Move>> {
        self.clean_with(drive, None)
    }

    /// Cleans drive `drive` with `cleaner` (a barcode), or the first CLN* cartridge in a storage
    /// slot, then puts the cleaner back.
    pub fn clean_with(&mut self, drive: u16, cleaner: Option<&str>) -> Result<Vec<Move>> {
        let inv = self.inventory()?;
        let (cp, ce) = named(&inv)
            .find(|(p, e)| {
                matches!(p, Place::Slot(_))
                    && e.volume_tag
                        .as_deref()
                        .is_some_and(|b| is_cleaning_cartridge(b) && cleaner.is_none_or(|c| c == b))
            })
            .map(|(p, e)| (p, e.clone()))
            .ok_or_else(|| match cleaner {
                Some(c) => anyhow!("cleaning cartridge {c} is not in a storage slot"),
                None => anyhow!("no cleaning cartridge (barcode CLN…) in a storage slot"),
            })?;
        let _lock = self.lock_drive(&inv, drive)?;
        let mut moves = Vec::new();
        let (_, de) = self.resolve(&inv, &Target::Place(Place::Drive(drive)))?;
        if de.full {
            moves.push(self.unload_locked(&inv, drive)?);
        }
        let inv = self.inventory()?;
        let (_, de) = self.resolve(&inv, &Target::Place(Place::Drive(drive)))?;
        self.changer
            .move_medium(Self::transport_address(&inv), ce.address, de.address)
            .context("loading the cleaning cartridge")?;
        moves.push(Move {
            barcode: ce.volume_tag.clone(),
            from: cp,
            to: Place::Drive(drive),
        });
        // A real drive runs its cleaning cycle (about a minute) and then ejects the cleaner.
        let mut d = self.drive_device(&inv, drive)?;
        wait_for_cleaning(&mut d, Duration::from_secs(900))
            .context("waiting for the cleaning cycle")?;
        drop(d);
        let inv = self.inventory()?;
        moves.push(self.unload_locked(&inv, drive)?);
        Ok(moves)
    }

    /// Locks drive `n` (by its changer element) for the duration of a changer operation.
    fn lock_drive(&self, inv: &Inventory, n: u16) -> Result<DeviceLock> {
        let key = self.drive_key(inv, n)?;
        Ok(DeviceLock::acquire(
            &self.settings.lock_dir,
            &key,
            &format!("drive {n}"),
            &self.purpose,
            self.wait,
        )?)
    }

    fn lock_drives_of(&self, inv: &Inventory, places: &[Place]) -> Result<Vec<DeviceLock>> {
        places
            .iter()
            .filter_map(|p| {
                if let Place::Drive(n) = p {
                    Some(*n)
                } else {
                    None
                }
            })
            .map(|n| self.lock_drive(inv, n))
            .collect()
    }

    fn drive_key(&self, inv: &Inventory, n: u16) -> Result<String> {
        let e = inv
            .drives
            .get(n as usize)
            .ok_or_else(|| anyhow!("the library has no drive {n} (it has {})", inv.drives.len()))?;
        Ok(match e.drive_id.as_ref() {
            Some(id) => format!("drive-{}", id.serial),
            None => format!("drive-{}-{}", self.backend.changer_name(), e.address),
        })
    }

    /// Asks the drive to unload (rewind and eject) before the robot pulls the cartridge; libraries
    /// differ in whether they do this themselves, and tgt needs it.
    fn eject(&mut self, inv: &Inventory, n: u16) -> Result<()> {
        let mut d = self.drive_device(inv, n)?;
        if let Err(e) = d.unload() {
            tracing::debug!(drive = n, "unload before move: {e}");
        }
        Ok(())
    }

    /// Finds the drive device behind changer drive element `n`: by the serial the changer reports
    /// (DVCID), else by position.
    fn drive_device(&self, inv: &Inventory, n: u16) -> Result<Drive<BoxedTransport>> {
        let mut d = self.find_drive_device(inv, n)?;
        absorb_unit_attentions(&mut d);
        Ok(d)
    }

    fn find_drive_device(&self, inv: &Inventory, n: u16) -> Result<Drive<BoxedTransport>> {
        let element = inv
            .drives
            .get(n as usize)
            .ok_or_else(|| anyhow!("the library has no drive {n}"))?;
        let want = element.drive_id.as_ref().map(|id| id.serial.clone());
        let count = self.backend.drive_count();
        if let Some(want) = &want {
            let mut seen = Vec::new();
            // The drive at the same index first: it is nearly always the one, and opening other
            // drives is not free (another process may be writing with one; the virtual library's
            // handles even disturb each other's write runs).
            let same = (n as usize) < count;
            let order = same
                .then_some(n as usize)
                .into_iter()
                .chain((0..count).filter(|&i| !same || i != n as usize));
            for i in order {
                let Ok(t) = self.backend.drive_transport(i) else {
                    continue;
                };
                let Ok(d) = Drive::new(t) else { continue };
                if d.serial() == Some(want.as_str()) {
                    return Ok(d);
                }
                seen.push(d.serial().unwrap_or("?").to_string());
            }
            bail!(
                "drive {n}: the changer says its serial is {want}, but no configured drive device has it (found: {})",
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            );
        }
        if (n as usize) < count {
            return Ok(Drive::new(self.backend.drive_transport(n as usize)?)?);
        }
        bail!("drive {n}: no drive device for it ({count} configured)")
    }

    /// Opens and locks the drive behind changer drive `n` for direct use (status, read, write, LTFS).
    pub fn open_drive(&mut self, n: u16) -> Result<(Drive<BoxedTransport>, DeviceLock)> {
        let inv = self.inventory()?;
        let lock = self.lock_drive(&inv, n)?;
        let d = self.drive_device(&inv, n)?;
        Ok((d, lock))
    }
}

/// A new session (an iSCSI login, a reset on the bus) starts with UNIT ATTENTION pending; take it with
/// TEST UNIT READY so the first real command does not fail. Anything else (no medium, not ready) is left
/// for the command that cares.
fn absorb_unit_attentions(d: &mut Drive<BoxedTransport>) {
    for _ in 0..8 {
        match scsi::inquiry::test_unit_ready(d.transport_mut()) {
            Err(scsi::ScsiError::Sense { sense, .. }) if sense.is_unit_attention() => {
                tracing::debug!(device = d.device_name(), %sense, "unit attention at session start");
            }
            _ => return,
        }
    }
}

/// Polls the drive until its cleaning cycle is over: it reports the cleaner as installed (30/03), ejects it
/// (no medium), or is simply ready again. "In progress" and "becoming ready" mean keep waiting.
fn wait_for_cleaning(d: &mut Drive<BoxedTransport>, timeout: Duration) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        match scsi::inquiry::test_unit_ready(d.transport_mut()) {
            Ok(()) => return Ok(()),
            Err(scsi::ScsiError::Sense { sense, .. }) => {
                if sense.asc == 0x30 && sense.ascq == 0x03 || sense.is_no_medium() {
                    return Ok(());
                }
                if !(sense.is_becoming_ready() || sense.is_unit_attention()) {
                    bail!("drive reported {sense} while cleaning");
                }
            }
            Err(e) => return Err(e.into()),
        }
        if started.elapsed() > timeout {
            bail!("the cleaning cycle did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn place_of(kind: ElementKind, index: usize) -> Place {
    let i = index as u16;
    match kind {
        ElementKind::Storage => Place::Slot(i + 1),
        ElementKind::ImportExport => Place::Ie(i + 1),
        ElementKind::Drive => Place::Drive(i),
        ElementKind::Transport => Place::Transport(i),
    }
}

fn named(inv: &Inventory) -> impl Iterator<Item = (Place, &Element)> {
    ElementKind::ALL.into_iter().flat_map(move |k| {
        inv.of_kind(k)
            .iter()
            .enumerate()
            .map(move |(i, e)| (place_of(k, i), e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "slot:3".parse::<Target>().unwrap(),
            Target::Place(Place::Slot(3))
        );
        assert_eq!(
            "s12".parse::<Target>().unwrap(),
            Target::Place(Place::Slot(12))
        );
        assert_eq!(
            "IE1".parse::<Target>().unwrap(),
            Target::Place(Place::Ie(1))
        );
        assert_eq!(
            "drive0".parse::<Target>().unwrap(),
            Target::Place(Place::Drive(0))
        );
        assert_eq!("@0x1000".parse::<Target>().unwrap(), Target::Address(4096));
        assert_eq!("@256".parse::<Target>().unwrap(), Target::Address(256));
        assert_eq!(
            "RV0001L6".parse::<Target>().unwrap(),
            Target::Barcode("RV0001L6".into())
        );
        assert_eq!(
            "D00001L8".parse::<Target>().unwrap(),
            Target::Barcode("D00001L8".into())
        );
        assert!("slot:0".parse::<Target>().is_err());
        assert!("@zz".parse::<Target>().is_err());
        assert!("has space".parse::<Target>().is_err());
        assert!("".parse::<Target>().is_err());
    }
}
