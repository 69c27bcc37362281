//! A virtual IBM TS3200 tape library: a SCSI medium changer ([`VirtualChanger`]) and LTO drives
//! ([`VirtualDrive`]) that interpret raw CDBs through [`scsi::Transport`], with every cartridge stored as a
//! directory in the LTFS reference implementation's *file backend* layout, so tapes can be exchanged with
//! other LTFS tools (`ltfs -o tape_backend=file -o devname=<cartridge dir>`).
//!
//! See `README.md` beside this crate for the on-disk layout, the SCSI behaviour and where it deviates from
//! real hardware.

mod cart;
mod changer;
mod crash;
mod crypto;
mod density;
mod drive;
mod state;
mod util;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use changer::VirtualChanger;
pub use crash::{crash_at_step, steps_passed};
pub use drive::VirtualDrive;

use state::{FaultEntry, Slot, State};

/// Element addresses, as on a real TS3200.
pub const TRANSPORT_ADDRESS: u16 = 0x0001;
pub const FIRST_IE_ADDRESS: u16 = 0x0010;
pub const FIRST_DRIVE_ADDRESS: u16 = 0x0100;
pub const FIRST_STORAGE_ADDRESS: u16 = 0x1000;

/// Cleaning cartridges (barcode `CLN*`) start with this many uses.
pub const CLEANING_USES: u32 = 50;

/// What the library looks like. Every field has a default, so `{}` is a valid JSON spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LibrarySpec {
    pub storage_slots: u16,
    pub ie_slots: u16,
    pub drives: Vec<DriveModel>,
    /// Native capacity of a new data cartridge, in MiB (1 MiB = 1048576 bytes).
    pub cartridge_capacity_mb: u64,
    /// The changer's serial number (INQUIRY VPD 0x80); drive serials are derived from it.
    pub serial: String,
    /// Placed into storage slots 1..n at create. A `CLN*` barcode becomes a cleaning cartridge.
    pub barcodes: Vec<String>,
    /// When false the changer refuses READ ELEMENT STATUS with DVCID set (ILLEGAL REQUEST 24/00), like
    /// Qualstar libraries.
    pub dvcid_supported: bool,
}

impl Default for LibrarySpec {
    fn default() -> Self {
        Self {
            storage_slots: 24,
            ie_slots: 3,
            drives: vec![DriveModel::Lto6, DriveModel::Lto6],
            cartridge_capacity_mb: 4096,
            serial: "78A0000001".to_string(),
            barcodes: Vec::new(),
            dvcid_supported: true,
        }
    }
}

/// An LTO drive generation (also used for cartridge generations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DriveModel {
    Lto5,
    Lto6,
    Lto7,
    Lto8,
    Lto9,
}

impl DriveModel {
    pub const ALL: [DriveModel; 5] = [
        DriveModel::Lto5,
        DriveModel::Lto6,
        DriveModel::Lto7,
        DriveModel::Lto8,
        DriveModel::Lto9,
    ];

    pub fn generation(self) -> u8 {
        match self {
            Self::Lto5 => 5,
            Self::Lto6 => 6,
            Self::Lto7 => 7,
            Self::Lto8 => 8,
            Self::Lto9 => 9,
        }
    }
    pub fn from_generation(g: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.generation() == g)
    }
    /// "LTO-5" .. "LTO-9".
    pub fn name(self) -> &'static str {
        match self {
            Self::Lto5 => "LTO-5",
            Self::Lto6 => "LTO-6",
            Self::Lto7 => "LTO-7",
            Self::Lto8 => "LTO-8",
            Self::Lto9 => "LTO-9",
        }
    }
    /// INQUIRY product identification of the IBM half-height drive.
    pub fn product(self) -> &'static str {
        match self {
            Self::Lto5 => "ULT3580-HH5",
            Self::Lto6 => "ULT3580-HH6",
            Self::Lto7 => "ULT3580-HH7",
            Self::Lto8 => "ULT3580-HH8",
            Self::Lto9 => "ULT3580-HH9",
        }
    }
    /// INQUIRY product revision (firmware level).
    pub fn revision(self) -> &'static str {
        match self {
            Self::Lto5 => "H991",
            Self::Lto6 => "J451",
            Self::Lto7 => "M4J1",
            Self::Lto8 => "N9M1",
            Self::Lto9 => "Q3A1",
        }
    }
    /// The SCSI density code a drive of this generation writes on its own media.
    pub fn density_code(self) -> u8 {
        match self {
            Self::Lto5 => 0x58,
            Self::Lto6 => 0x5a,
            Self::Lto7 => 0x5c,
            Self::Lto8 => 0x5e,
            Self::Lto9 => 0x60,
        }
    }
    /// The file backend's cartridge type name ("L5".."L9").
    pub fn cart_type(self) -> &'static str {
        match self {
            Self::Lto5 => "L5",
            Self::Lto6 => "L6",
            Self::Lto7 => "L7",
            Self::Lto8 => "L8",
            Self::Lto9 => "L9",
        }
    }
    /// Medium partition page: how many partitions beyond the first the drive can make.
    pub fn max_additional_partitions(self) -> u8 {
        if self == Self::Lto5 { 1 } else { 3 }
    }
    /// Can a drive of this generation read a cartridge of generation `medium`? An LTO-N drive reads N, N-1
    /// and N-2, except LTO-8 (reads 7 and 8) and LTO-9 (reads 8 and 9).
    pub fn can_read(self, medium: DriveModel) -> bool {
        let (d, c) = (self.generation(), medium.generation());
        match d {
            8 => c == 7 || c == 8,
            9 => c == 8 || c == 9,
            _ => c <= d && c + 2 >= d,
        }
    }
    /// Can a drive of this generation write a cartridge of generation `medium`? N and N-1.
    pub fn can_write(self, medium: DriveModel) -> bool {
        let (d, c) = (self.generation(), medium.generation());
        c <= d && c + 1 >= d
    }
}

impl fmt::Display for DriveModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DriveModel {
    type Err = String;
    /// Accepts "LTO-5", "lto5", "LTO5", "5", case-insensitively.
    fn from_str(s: &str) -> Result<Self, String> {
        let t: String = s
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_' && *c != ' ')
            .collect();
        let t = t.to_ascii_lowercase();
        let digits = t.strip_prefix("lto").unwrap_or(&t);
        digits
            .parse::<u8>()
            .ok()
            .and_then(DriveModel::from_generation)
            .ok_or_else(|| {
                format!("unknown drive model {s:?}: expected LTO-5, LTO-6, LTO-7, LTO-8 or LTO-9")
            })
    }
}

impl TryFrom<String> for DriveModel {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DriveModel> for String {
    fn from(m: DriveModel) -> String {
        m.name().to_string()
    }
}

/// How a new cartridge is made when it is inserted through the door.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CartridgeOptions {
    /// Native capacity in MiB; default: the library spec's `cartridge_capacity_mb`.
    pub capacity_mb: Option<u64>,
    /// The write-protect tab. Applied at every insert, also to a cartridge coming back from offsite.
    pub write_protected: bool,
    /// Default: from an LTO barcode suffix ("…L6"), else the first drive's generation.
    pub generation: Option<DriveModel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadOrWrite {
    Read,
    Write,
}

/// An injected fault, persisted in `library.json` until cleared (or consumed, for unit attentions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// MEDIUM ERROR 11/00 when that block is read, 0C/00 when it is written.
    MediumError {
        barcode: String,
        partition: u8,
        block: u64,
        on: ReadOrWrite,
    },
    /// The next command on that drive (or the changer when `None`) gets UNIT ATTENTION 29/00, once.
    UnitAttention { drive: Option<usize> },
    /// NOT READY 04/01 ("becoming ready") on that drive for this many seconds from when it was set.
    NotReadyFor { drive: usize, seconds: u64 },
    /// Early warning once this many bytes are on the partition.
    EarlyWarningAt {
        barcode: String,
        partition: u8,
        bytes: u64,
    },
    /// Hard end of medium (VOLUME OVERFLOW) once this many bytes are on the partition.
    EndOfMediumAt {
        barcode: String,
        partition: u8,
        bytes: u64,
    },
    /// The cartridge behaves as if its write-protect tab were set.
    WriteProtect { barcode: String },
    /// TapeAlert 0x14 "clean now" until a cleaning cartridge is loaded into that drive.
    NeedsCleaning { drive: usize },
}

/// What the operator takes out of the door.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoorTarget {
    /// 1-based import/export slot number.
    IeSlot(u16),
    Barcode(String),
}

#[derive(Debug, thiserror::Error)]
pub enum VtlError {
    #[error("{}: not a virtual library (no library.json); create one first", dir.display())]
    NotALibrary { dir: PathBuf },
    #[error("{}: already holds a virtual library; open it instead, or choose an empty directory", dir.display())]
    AlreadyExists { dir: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: corrupt: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("invalid library spec: {0}")]
    InvalidSpec(String),
    #[error("invalid barcode {barcode:?}: {reason}")]
    InvalidBarcode {
        barcode: String,
        reason: &'static str,
    },
    #[error("cartridge {barcode} is already in the library ({location})")]
    BarcodeInLibrary { barcode: String, location: String },
    #[error(
        "cartridge {barcode} is not in an import/export slot but in {location}; move it to one with the changer first"
    )]
    NotInIeSlot { barcode: String, location: String },
    #[error("no cartridge {0} in the library's import/export slots")]
    UnknownBarcode(String),
    #[error("no drive {index}: the library has {count} drive(s), numbered from 0")]
    NoSuchDrive { index: usize, count: usize },
    #[error("no import/export slot {slot}: the library has {count}, numbered from 1")]
    NoSuchIeSlot { slot: u16, count: u16 },
    #[error("import/export slot {0} is already full")]
    IeSlotFull(u16),
    #[error("import/export slot {0} is empty")]
    IeSlotEmpty(u16),
    #[error("all import/export slots are full; remove a cartridge first")]
    NoFreeIeSlot,
    #[error(
        "the import/export door is locked (PREVENT MEDIUM REMOVAL is in effect on the changer); send ALLOW first"
    )]
    DoorLocked,
    #[error("invalid fault: {0}")]
    InvalidFault(String),
}

impl VtlError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VtlError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A snapshot of the whole library, for `tapectl vtl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryStatus {
    pub dir: PathBuf,
    pub serial: String,
    pub dvcid_supported: bool,
    /// PREVENT MEDIUM REMOVAL on the changer: the operator door is locked.
    pub door_locked: bool,
    pub storage: Vec<SlotStatus>,
    pub ie: Vec<SlotStatus>,
    pub drives: Vec<DriveStatus>,
    /// Cartridges known to the library directory but outside the library (offsite).
    pub offsite: Vec<String>,
    pub faults: Vec<Fault>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// 1-based slot number.
    pub slot: u16,
    /// SCSI element address.
    pub address: u16,
    pub barcode: Option<String>,
    /// Element address the cartridge was last moved from, if any.
    pub source: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveStatus {
    pub index: usize,
    pub address: u16,
    pub model: DriveModel,
    pub vendor: String,
    pub product: String,
    pub serial: String,
    pub barcode: Option<String>,
    /// Loaded and threaded (ready for I/O); false after UNLOAD until the changer takes the tape.
    pub threaded: bool,
    pub partition: u8,
    pub block: u64,
    pub source: Option<u16>,
    pub prevent_removal: bool,
    /// TapeAlert flags currently set (1..=64).
    pub tapealert: Vec<u8>,
}

/// A handle on a library directory. Cheap to clone; several processes may open one library at once.
#[derive(Debug, Clone)]
pub struct Library {
    inner: Arc<LibInner>,
}

#[derive(Debug)]
pub(crate) struct LibInner {
    pub dir: PathBuf,
}

impl Library {
    /// Creates a library in `dir` (created if missing). Refuses a directory that already holds one.
    pub fn create(dir: &Path, spec: &LibrarySpec) -> Result<Library, VtlError> {
        validate_spec(spec)?;
        if state::state_path(dir).exists() {
            return Err(VtlError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir.join("cartridges")).map_err(|e| VtlError::io(dir, e))?;
        let lib = Library {
            inner: Arc::new(LibInner {
                dir: dir.to_path_buf(),
            }),
        };
        let mut st = State::new(spec.clone());
        st.id = Some(state::random_id());
        for (i, bc) in spec.barcodes.iter().enumerate() {
            lib.ensure_cartridge(bc, &CartridgeOptions::default(), spec, false)?;
            st.storage[i] = Some(Slot {
                barcode: bc.clone(),
                source: None,
                imported: false,
            });
        }
        state::create(dir, &st)?;
        Ok(lib)
    }

    /// Opens an existing library.
    pub fn open(dir: &Path) -> Result<Library, VtlError> {
        if !state::state_path(dir).is_file() {
            return Err(VtlError::NotALibrary {
                dir: dir.to_path_buf(),
            });
        }
        let lib = Library {
            inner: Arc::new(LibInner {
                dir: dir.to_path_buf(),
            }),
        };
        state::read(dir)?;
        Ok(lib)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The medium changer. Each handle sees operator door activity since it was made as UNIT ATTENTION 28/01.
    pub fn changer(&self) -> VirtualChanger {
        let seen = state::read(&self.inner.dir)
            .map(|s| s.door_events)
            .unwrap_or(0);
        VirtualChanger::new(self.clone(), seen)
    }

    /// Drive `index` (0-based; element address 0x100 + index).
    pub fn drive(&self, index: usize) -> Result<VirtualDrive, VtlError> {
        let st = state::read(&self.inner.dir)?;
        let count = st.drives.len();
        let model = *st
            .spec
            .drives
            .get(index)
            .ok_or(VtlError::NoSuchDrive { index, count })?;
        Ok(VirtualDrive::new(
            self.clone(),
            index,
            model,
            st.drive_serial(index),
        ))
    }

    pub fn drive_count(&self) -> usize {
        state::read(&self.inner.dir)
            .map(|s| s.drives.len())
            .unwrap_or(0)
    }

    pub fn spec(&self) -> Result<LibrarySpec, VtlError> {
        Ok(state::read(&self.inner.dir)?.spec)
    }

    pub fn status(&self) -> Result<LibraryStatus, VtlError> {
        let st = state::read(&self.inner.dir)?;
        let slot = |i: usize, base: u16, s: &Option<Slot>| SlotStatus {
            slot: i as u16 + 1,
            address: base + i as u16,
            barcode: s.as_ref().map(|s| s.barcode.clone()),
            source: s.as_ref().and_then(|s| s.source),
        };
        let now = util::now_secs();
        let drives = st
            .drives
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let model = st.spec.drives[i];
                let flags = st.tapealert(i, now);
                DriveStatus {
                    index: i,
                    address: FIRST_DRIVE_ADDRESS + i as u16,
                    model,
                    vendor: "IBM".into(),
                    product: model.product().into(),
                    serial: st.drive_serial(i),
                    barcode: d.loaded.as_ref().map(|l| l.barcode.clone()),
                    threaded: d.loaded.as_ref().is_some_and(|l| l.threaded),
                    partition: d.loaded.as_ref().map_or(0, |l| l.partition),
                    block: d.loaded.as_ref().map_or(0, |l| l.block),
                    source: d.loaded.as_ref().and_then(|l| l.source),
                    prevent_removal: d.prevent,
                    tapealert: (1..=64u8)
                        .filter(|f| flags & (1u64 << (f - 1)) != 0)
                        .collect(),
                }
            })
            .collect();
        let inside: Vec<&str> = st.barcodes_inside().into_iter().map(|(b, _)| b).collect();
        let mut offsite: Vec<String> = cart::list_cartridges(&self.inner.dir.join("cartridges"))
            .into_iter()
            .filter(|b| !inside.contains(&b.as_str()))
            .collect();
        offsite.sort();
        Ok(LibraryStatus {
            dir: self.inner.dir.clone(),
            serial: st.spec.serial.clone(),
            dvcid_supported: st.spec.dvcid_supported,
            door_locked: st.door_locked,
            storage: st
                .storage
                .iter()
                .enumerate()
                .map(|(i, s)| slot(i, FIRST_STORAGE_ADDRESS, s))
                .collect(),
            ie: st
                .ie
                .iter()
                .enumerate()
                .map(|(i, s)| slot(i, FIRST_IE_ADDRESS, s))
                .collect(),
            drives,
            offsite,
            faults: st.faults.iter().map(|f| f.fault.clone()).collect(),
        })
    }

    /// The operator puts a cartridge into an import/export slot (the first free one when `ie_slot` is
    /// `None`). A barcode the library has never seen becomes a new blank cartridge; one that was removed
    /// earlier (offsite) comes back with its data. Returns the 1-based I/E slot.
    pub fn insert(
        &self,
        barcode: &str,
        ie_slot: Option<u16>,
        opts: &CartridgeOptions,
    ) -> Result<u16, VtlError> {
        validate_barcode(barcode)?;
        state::transact(&self.inner.dir, |st| {
            if st.door_locked {
                return Err(VtlError::DoorLocked);
            }
            if let Some((_, loc)) = st
                .barcodes_inside()
                .into_iter()
                .find(|(b, _)| *b == barcode)
            {
                return Err(VtlError::BarcodeInLibrary {
                    barcode: barcode.to_string(),
                    location: loc,
                });
            }
            let count = st.ie.len() as u16;
            let idx = match ie_slot {
                Some(n) if n == 0 || n > count => {
                    return Err(VtlError::NoSuchIeSlot { slot: n, count });
                }
                Some(n) if st.ie[n as usize - 1].is_some() => return Err(VtlError::IeSlotFull(n)),
                Some(n) => n as usize - 1,
                None => st
                    .ie
                    .iter()
                    .position(|s| s.is_none())
                    .ok_or(VtlError::NoFreeIeSlot)?,
            };
            let spec = st.spec.clone();
            self.ensure_cartridge(barcode, opts, &spec, true)?;
            st.ie[idx] = Some(Slot {
                barcode: barcode.to_string(),
                source: None,
                imported: true,
            });
            st.door_events += 1;
            Ok(idx as u16 + 1)
        })?
    }

    /// The operator takes a cartridge out of an import/export slot. Its directory stays (offsite) and
    /// comes back with [`Library::insert`].
    pub fn remove(&self, what: DoorTarget) -> Result<String, VtlError> {
        state::transact(&self.inner.dir, |st| {
            if st.door_locked {
                return Err(VtlError::DoorLocked);
            }
            let count = st.ie.len() as u16;
            let idx = match &what {
                DoorTarget::IeSlot(n) => {
                    if *n == 0 || *n > count {
                        return Err(VtlError::NoSuchIeSlot { slot: *n, count });
                    }
                    if st.ie[*n as usize - 1].is_none() {
                        return Err(VtlError::IeSlotEmpty(*n));
                    }
                    *n as usize - 1
                }
                DoorTarget::Barcode(b) => match st
                    .ie
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| &s.barcode == b))
                {
                    Some(i) => i,
                    None => {
                        if let Some((_, loc)) =
                            st.barcodes_inside().into_iter().find(|(x, _)| x == b)
                        {
                            return Err(VtlError::NotInIeSlot {
                                barcode: b.clone(),
                                location: loc,
                            });
                        }
                        return Err(VtlError::UnknownBarcode(b.clone()));
                    }
                },
            };
            let slot = st.ie[idx].take().expect("checked full");
            st.door_events += 1;
            Ok(slot.barcode)
        })?
    }

    pub fn set_fault(&self, fault: Fault) -> Result<(), VtlError> {
        state::transact(&self.inner.dir, |st| {
            let drives = st.drives.len();
            let check_drive = |d: usize| {
                if d >= drives {
                    Err(VtlError::InvalidFault(format!(
                        "no drive {d}: the library has {drives}"
                    )))
                } else {
                    Ok(())
                }
            };
            let check_cart = |b: &str, p: u8| {
                validate_barcode(b).map_err(|e| VtlError::InvalidFault(e.to_string()))?;
                if p > 3 {
                    return Err(VtlError::InvalidFault(format!(
                        "partition {p}: LTO has at most 4 partitions"
                    )));
                }
                Ok(())
            };
            match &fault {
                Fault::MediumError {
                    barcode, partition, ..
                }
                | Fault::EarlyWarningAt {
                    barcode, partition, ..
                }
                | Fault::EndOfMediumAt {
                    barcode, partition, ..
                } => check_cart(barcode, *partition)?,
                Fault::WriteProtect { barcode } => check_cart(barcode, 0)?,
                Fault::UnitAttention { drive: Some(d) }
                | Fault::NotReadyFor { drive: d, .. }
                | Fault::NeedsCleaning { drive: d } => check_drive(*d)?,
                Fault::UnitAttention { drive: None } => {}
            }
            st.faults.push(FaultEntry {
                fault,
                set_at: util::now_secs(),
            });
            Ok(())
        })?
    }

    pub fn clear_faults(&self) -> Result<(), VtlError> {
        state::transact(&self.inner.dir, |st| st.faults.clear())
    }

    /// Where a cartridge's file-backend directory is (whether or not it exists).
    pub fn cartridge_dir(&self, barcode: &str) -> PathBuf {
        self.inner.dir.join("cartridges").join(barcode)
    }

    /// Creates the cartridge directory if it does not exist; an existing one keeps its data (only the
    /// write-protect tab follows `opts` when `apply_wp`).
    fn ensure_cartridge(
        &self,
        barcode: &str,
        opts: &CartridgeOptions,
        spec: &LibrarySpec,
        apply_wp: bool,
    ) -> Result<(), VtlError> {
        validate_barcode(barcode)?;
        let dir = self.cartridge_dir(barcode);
        if cart::meta_path(&dir).is_file() {
            if apply_wp {
                let mut meta = cart::load_meta(&dir)?;
                if meta.write_protected != opts.write_protected {
                    meta.write_protected = opts.write_protected;
                    cart::save_meta(&dir, &meta)?;
                    cart::write_conf(&dir, &meta)?;
                }
            }
            return Ok(());
        }
        // A foreign cartridge directory put there by the operator: take it as it is.
        if cart::import_foreign(&dir)?.is_some() {
            return Ok(());
        }
        let generation = opts
            .generation
            .or_else(|| generation_from_barcode(barcode))
            .or_else(|| spec.drives.first().copied())
            .unwrap_or(DriveModel::Lto6);
        let capacity = opts
            .capacity_mb
            .unwrap_or(spec.cartridge_capacity_mb)
            .max(1);
        let meta = cart::CartMeta::new(barcode, generation, capacity, opts.write_protected);
        cart::create(&dir, &meta)
    }
}

/// Drive serial numbers: the last 8 letters and digits of `library_serial` (zero-padded) plus a 2-digit
/// drive number; 10 characters, as the DVCID identifier wants. A library made by this version passes
/// its random identifier (`id` in library.json), so drive serials differ between libraries; one made
/// before passes the changer serial.
pub fn drive_serial(library_serial: &str, index: usize) -> String {
    let s: Vec<char> = library_serial
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let tail: String = s[s.len().saturating_sub(8)..].iter().collect();
    format!("{tail:0>8}{:02}", index % 100)
}

/// LTO barcodes end in the media type: "ABC123L6" is an LTO-6 cartridge.
pub(crate) fn generation_from_barcode(barcode: &str) -> Option<DriveModel> {
    let b = barcode.as_bytes();
    if b.len() == 8 && (b[6] == b'L' || b[6] == b'l') {
        return DriveModel::from_generation(b[7].wrapping_sub(b'0'));
    }
    None
}

pub(crate) fn is_cleaning_barcode(barcode: &str) -> bool {
    barcode.len() >= 3 && barcode[..3].eq_ignore_ascii_case("CLN")
}

fn validate_barcode(barcode: &str) -> Result<(), VtlError> {
    let bad = |reason| {
        Err(VtlError::InvalidBarcode {
            barcode: barcode.to_string(),
            reason,
        })
    };
    if barcode.is_empty() {
        return bad("empty");
    }
    if barcode.len() > 32 {
        return bad("longer than the 32 characters of a volume tag");
    }
    if !barcode
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return bad("only letters, digits, '-' and '_' are allowed");
    }
    Ok(())
}

fn validate_spec(spec: &LibrarySpec) -> Result<(), VtlError> {
    let bad = |m: String| Err(VtlError::InvalidSpec(m));
    if spec.storage_slots == 0 || spec.storage_slots > 4000 {
        return bad(format!(
            "storage_slots {} must be 1..=4000",
            spec.storage_slots
        ));
    }
    if spec.ie_slots > 200 {
        return bad(format!("ie_slots {} must be 0..=200", spec.ie_slots));
    }
    if spec.drives.len() > 64 {
        return bad(format!("{} drives: at most 64", spec.drives.len()));
    }
    if spec.cartridge_capacity_mb == 0 {
        return bad("cartridge_capacity_mb must be at least 1".into());
    }
    if spec.serial.is_empty()
        || spec.serial.len() > 32
        || !spec.serial.bytes().all(|c| c.is_ascii_graphic())
    {
        return bad(format!(
            "serial {:?} must be 1..=32 printable ASCII characters",
            spec.serial
        ));
    }
    if spec.barcodes.len() > spec.storage_slots as usize {
        return bad(format!(
            "{} barcodes but only {} storage slots",
            spec.barcodes.len(),
            spec.storage_slots
        ));
    }
    for (i, b) in spec.barcodes.iter().enumerate() {
        validate_barcode(b)?;
        if spec.barcodes[..i].contains(b) {
            return bad(format!("barcode {b} appears twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_model_parse_and_serde() {
        for s in ["lto5", "LTO-5", "LTO5", "lto-5", "5"] {
            assert_eq!(s.parse::<DriveModel>().unwrap(), DriveModel::Lto5);
        }
        assert!("lto4".parse::<DriveModel>().is_err());
        assert_eq!(
            serde_json::to_string(&DriveModel::Lto9).unwrap(),
            "\"LTO-9\""
        );
        assert_eq!(
            serde_json::from_str::<DriveModel>("\"lto7\"").unwrap(),
            DriveModel::Lto7
        );
    }

    #[test]
    fn compatibility_matrix() {
        use DriveModel::*;
        assert!(Lto7.can_read(Lto5) && !Lto7.can_write(Lto5) && Lto7.can_write(Lto6));
        assert!(!Lto8.can_read(Lto6) && Lto8.can_read(Lto7) && Lto8.can_write(Lto7));
        assert!(!Lto9.can_read(Lto7) && Lto9.can_write(Lto8));
        assert!(!Lto5.can_read(Lto6));
    }

    #[test]
    fn fault_json_shape() {
        let f = Fault::MediumError {
            barcode: "A00001L6".into(),
            partition: 1,
            block: 7,
            on: ReadOrWrite::Read,
        };
        let j = serde_json::to_string(&f).unwrap();
        assert_eq!(
            j,
            r#"{"kind":"medium_error","barcode":"A00001L6","partition":1,"block":7,"on":"read"}"#
        );
        assert_eq!(serde_json::from_str::<Fault>(&j).unwrap(), f);
        let u: Fault = serde_json::from_str(r#"{"kind":"unit_attention","drive":null}"#).unwrap();
        assert_eq!(u, Fault::UnitAttention { drive: None });
    }

    #[test]
    fn serials_and_barcodes() {
        assert_eq!(drive_serial("78A0000001", 0), "A000000100");
        assert_eq!(drive_serial("X1", 3), "000000X103");
        assert_eq!(generation_from_barcode("ABC123L7"), Some(DriveModel::Lto7));
        assert_eq!(generation_from_barcode("CLN001L1"), None);
        assert!(is_cleaning_barcode("CLN001L1") && !is_cleaning_barcode("ACLN"));
        assert!(validate_barcode("a/b").is_err() && validate_barcode("").is_err());
    }
}
