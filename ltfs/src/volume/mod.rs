//! An LTFS volume over a [`TapeDevice`]: format (§1–3, §6), mount (§5, with the MAM fast path checked
//! against the tape), read by extents, write files/directories/symlinks to the data partition, sync
//! indexes by policy, unmount (DP index, then the IP index overwritten in place, then MAM coherency), and
//! the list of generations.
//!
//! Layout rules followed (ltfs-format.md §1, §5):
//! * data goes to the DP's end of data, straight after its last construct (after any extra blocks a
//!   crash left, which stay unreferenced, as `ltfsck` leaves them); before it, an IP that does not end
//!   in an index gets one;
//! * a sync writes a DP index; the sync policy is checked after each file (a file never straddles an
//!   index);
//! * an index write increments the generation only when the index is dirty; its back pointer becomes
//!   the previous self pointer when that was on the DP;
//! * the IP holds the label plus exactly one index, overwritten from the FM before it;
//! * after [`Volume::unmount`] both partitions end in an index, IP gen ≥ DP gen, IP back pointer = the
//!   last DP index.

mod check;
mod format;
mod mount;
mod read;
mod write;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant, SystemTime};

use crate::construct::{ConstructError, VolumeLabels, write_index_construct_from};
use crate::device::{DeviceError, Position, TapeDevice};
use crate::index::{Index, IndexError, IndexLocation, Medium, NameError};
use crate::scan::{CurrentIndex, PointerError, Rejected};
use crate::time::LtfsTime;

pub use check::{CheckReport, IndexSummary, PartitionCheck, Problem, ProblemKind, RepairReport};
pub use format::{FormatOptions, random_uuid};
pub use read::{EntryInfo, EntryKind, RecordCache, SparseWrite, Zeros};
pub use write::{FileMeta, Generation, PartPut, PutReport, RESERVE_FILE_MAX, SyncPolicy};

/// Bound on the bytes of one index read from tape (a million-file index is a few hundred MB). The XML is
/// streamed into the parser, so this bounds the reading, not memory (which is the size of the model).
pub const INDEX_READ_LIMIT: usize = 4 << 30;

/// MAM attribute 0x0001, MAXIMUM CAPACITY IN PARTITION (SPC-4: binary, MiB), set by the drive.
pub const ATTR_MAX_CAPACITY: u16 = 0x0001;

/// How much more than its native capacity a volume with compression on may hold: LTO's nominal
/// compression ratio (2.5:1 from LTO-6 on, 2:1 before). Files longer than that are refused on both
/// sides (see [`Volume::max_file_length`]).
pub const COMPRESSION_ALLOWANCE: (u64, u64) = (5, 2);

/// The native capacity of each physical partition in bytes, from MAM 0x0001 as the drive reports it;
/// `None` where it does not (a drive or medium without MAM).
pub(crate) fn read_capacity<D: TapeDevice + ?Sized>(dev: &mut D) -> [Option<u64>; 2] {
    let mut cap = [None, None];
    for (p, c) in cap.iter_mut().enumerate() {
        if let Ok(Some(a)) = dev.read_attribute(p as u8, ATTR_MAX_CAPACITY)
            && (1..=8).contains(&a.value.len())
        {
            let mib = a.value.iter().fold(0u64, |v, &b| v << 8 | u64::from(b));
            *c = mib.checked_mul(1 << 20).filter(|&b| b > 0);
        }
    }
    cap
}

/// What the medium can hold, for [`Index::validate_medium`]: files no longer than the volume's capacity
/// (with [`COMPRESSION_ALLOWANCE`] when the label says compression is on), and extents within the
/// blocks a partition can hold (a record takes at least a byte of it). Unknown capacities are not
/// checked.
pub(crate) fn medium_of(
    labels: &VolumeLabels,
    block_size: usize,
    capacity: [Option<u64>; 2],
) -> Medium {
    Medium {
        block_size: block_size as u64,
        max_file_length: max_file_length(labels, capacity),
        partitions: (0..2)
            .map(|p| (labels.labels[p].location, capacity[p]))
            .collect(),
    }
}

fn max_file_length(labels: &VolumeLabels, capacity: [Option<u64>; 2]) -> Option<u64> {
    let total = capacity[0]?.checked_add(capacity[1]?)?;
    Some(if labels.label().compression {
        let (n, d) = COMPRESSION_ALLOWANCE;
        total.saturating_mul(n) / d
    } else {
        total
    })
}

/// The creator string this crate writes (the index creator adds `" - <reason>"`).
pub fn creator() -> String {
    format!(
        "rackvault {} - {} - ltfs",
        env!("CARGO_PKG_VERSION"),
        match std::env::consts::OS {
            "linux" => "Linux",
            os => os,
        }
    )
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "the cartridge already holds an LTFS volume (serial {serial:?}, UUID {uuid}); format with --force to destroy it"
    )]
    AlreadyLtfs {
        serial: Option<String>,
        uuid: String,
    },
    #[error(
        "the cartridge holds data (partition {partition}); format with --force to overwrite it"
    )]
    NotBlank { partition: u8 },
    #[error(
        "block size {size} is not usable: it must be 4096 to {max} bytes (the drive's maximum)"
    )]
    BlockSize { size: usize, max: usize },
    #[error("{0:?} is not a UUID (8-4-4-4-12 hex digits)")]
    BadUuid(String),
    #[error("{what}: {source}")]
    Device {
        what: String,
        #[source]
        source: DeviceError,
    },
    #[error("{0}")]
    Construct(#[from] ConstructError),
    #[error("{0}")]
    Index(#[from] IndexError),
    #[error("no consistent index on the volume: {0}; run `tapectl ltfs check` to inspect it")]
    Pointers(#[from] PointerError),
    #[error("cannot repair the volume: {0}")]
    Unrepairable(String),
    #[error("generation {generation} is not on the volume (generations found: {available:?})")]
    NoSuchGeneration {
        generation: u64,
        available: Vec<u64>,
    },
    #[error("{path}: no such file or directory on the volume")]
    NotFound { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: is a directory, not a file")]
    IsADirectory { path: String },
    #[error("{path}: already exists on the volume; choose another name")]
    AlreadyExists { path: String },
    #[error("{path}: invalid name: {error}")]
    InvalidName { path: String, error: NameError },
    #[error(
        "volume full (early warning): {written} bytes of {path} were written before the tape reached early warning; the file is not on the volume, but the index was written and everything before it is safe; continue on another cartridge"
    )]
    VolumeFull { path: String, written: u64 },
    #[error("{path}: corrupt on tape: {detail}; run `tapectl ltfs check`")]
    Corrupt { path: String, detail: String },
    #[error(
        "the newest index on the volume cannot be used (partition {partition} block {block}: {reason}); {}",
        unusable_advice(*.fallback)
    )]
    UnusableIndex {
        partition: u8,
        block: u64,
        reason: String,
        /// The index a reader would fall back to: generation and location.
        fallback: Option<(u64, IndexLocation)>,
    },
    #[error(
        "{path}: {length} bytes is more than the volume can hold ({max} bytes); nothing was written"
    )]
    TooLong { path: String, length: u64, max: u64 },
    #[error(
        "{path}: directories nested {depth} deep, deeper than an LTFS index can hold ({max}: what the reference implementation reads); nothing was written"
    )]
    TooDeep {
        path: String,
        depth: usize,
        max: usize,
    },
    #[error("{path}: xattr {key:?} is given twice; nothing was written")]
    DuplicateXattr { path: String, key: String },
    #[error(
        "{path}: the value of xattr {key:?} is {length} bytes, more than an LTFS index holds ({max}); nothing was written"
    )]
    XattrTooLong {
        path: String,
        key: String,
        length: usize,
        max: usize,
    },
    #[error("{path}: writing the file's data out: {source}")]
    Output {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: reading the data to put: {source}")]
    Source {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

fn unusable_advice(fallback: Option<(u64, IndexLocation)>) -> String {
    match fallback {
        Some((g, l)) => format!(
            "the newest index that can be read is generation {g} at {}/{}, an older state of the volume \
             without what the newer index describes, so it is not used silently. `tapectl ltfs check` \
             shows the details; `tapectl ltfs check --repair --generation {g}` rolls the volume back to \
             generation {g} (written as a new generation; what only the newer index describes is lost)",
            l.partition, l.start_block
        ),
        None => {
            "no older valid index is on the volume; `tapectl ltfs check` shows what is there".into()
        }
    }
}

pub(crate) fn dev_err(what: impl Into<String>) -> impl FnOnce(DeviceError) -> VolumeError {
    let what = what.into();
    move |source| VolumeError::Device { what, source }
}

/// The last index construct of one partition, as far as this session knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastIndex {
    pub generation: u64,
    /// The self pointer (first record's block).
    pub start: u64,
    /// The back pointer it carries (on the DP).
    pub backptr: Option<u64>,
}

/// What [`Volume::mount`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountReport {
    /// The index came from the MAM fast path (coherency records matched the tape), not a full scan.
    pub fast_path: bool,
    /// Which partition's index is current.
    pub current: CurrentIndex,
    /// Blocks after the last index construct (or after the label when there is no index), per physical
    /// partition: an inconsistency a checker repairs (`11220E`); new data is appended after them.
    pub extra_blocks: [u64; 2],
    /// The last index of a physical partition has no trailing filemark.
    pub missing_trailing_fm: [bool; 2],
    /// Candidates the scan tried and rejected.
    pub rejected: Vec<Rejected>,
    /// The IP's index is not the current one (it is rewritten at unmount).
    pub index_partition_stale: bool,
}

impl MountReport {
    pub fn is_consistent(&self) -> bool {
        self.extra_blocks == [0, 0]
            && self.missing_trailing_fm == [false, false]
            && !self.index_partition_stale
    }
}

/// A mounted LTFS volume.
pub struct Volume<D: TapeDevice> {
    dev: D,
    labels: VolumeLabels,
    block_size: usize,
    /// Physical partitions.
    ip: u8,
    dp: u8,
    index: Index,
    dirty: bool,
    /// End of data per physical partition.
    eod: [u64; 2],
    last: [Option<LastIndex>; 2],
    /// The partition's last object is its last index's trailing FM (nothing after it).
    ends_in_index: [bool; 2],
    /// The DP's last index lacks its trailing FM: write one before appending.
    dp_needs_fm: bool,
    report: MountReport,
    sync: SyncPolicy,
    unsynced_bytes: u64,
    last_sync: Instant,
    /// Early warning was reached: no more data.
    full: bool,
    /// Something was written in this session (MAM coherency is updated at unmount).
    wrote: bool,
    creator: String,
    /// Native capacity per physical partition in bytes, as the drive reports it.
    capacity: [Option<u64>; 2],
    /// Entries added in this session, when kept compactly ([`Volume::pack_new_entries`]).
    packed: Option<crate::index::Packed>,
    /// The directory the last packed entry went into (files come directory by directory).
    packed_last: Option<(Vec<String>, crate::index::DirRef)>,
}

impl<D: TapeDevice> Volume<D> {
    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn labels(&self) -> &VolumeLabels {
        &self.labels
    }
    /// The current index (with the changes of this session, except the entries kept packed since
    /// [`Volume::pack_new_entries`]: see [`Volume::packed`]).
    pub fn index(&self) -> &Index {
        &self.index
    }
    pub fn mount_report(&self) -> &MountReport {
        &self.report
    }
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }
    /// Gives the device back without writing anything (what a crash leaves behind).
    pub fn into_device(self) -> D {
        self.dev
    }
    pub fn set_sync_policy(&mut self, policy: SyncPolicy) {
        self.sync = policy;
    }
    /// The volume's native capacity in bytes (both partitions), as the drive reports it (MAM 0x0001);
    /// `None` when it does not.
    pub fn capacity(&self) -> Option<u64> {
        self.capacity[0]?.checked_add(self.capacity[1]?)
    }
    /// The longest file this volume holds: its capacity, times [`COMPRESSION_ALLOWANCE`] when the
    /// label says compression is on. A longer file is refused by the reader (a hostile index) and by
    /// [`Volume::put_file_sparse`] (before anything is written). `None`: the capacity is unknown.
    pub fn max_file_length(&self) -> Option<u64> {
        max_file_length(&self.labels, self.capacity)
    }
    pub(crate) fn medium(&self) -> Medium {
        medium_of(&self.labels, self.block_size, self.capacity)
    }

    pub(crate) fn id_of(&self, physical: u8) -> char {
        self.labels.labels[physical as usize].location
    }

    pub(crate) fn physical_of(&self, id: char) -> Option<u8> {
        self.labels.physical(id)
    }

    /// Writes the current index to `partition` (physical), as `ltfs_write_index()`: generation +1 when
    /// dirty, back pointer from the previous self pointer when that was on the DP, the IP overwritten
    /// from the FM before its last index, the DP appended at EOD. Updates MAM coherency afterwards.
    pub(crate) fn write_index(&mut self, partition: u8, reason: &str) -> Result<IndexLocation> {
        if self.dirty {
            self.index.generation += 1;
            self.index.update_time = now();
            self.dirty = false;
        }
        let dp_id = self.id_of(self.dp);
        if self.index.location.partition == dp_id {
            self.index.previous = Some(self.index.location);
        }
        let fm_at = if partition == self.ip {
            match self.last[self.ip as usize] {
                Some(l) => l.start - 1,
                None => 4,
            }
        } else {
            self.eod[self.dp as usize]
        };
        let id = self.id_of(partition);
        self.index.location = IndexLocation {
            partition: id,
            start_block: fm_at + 1,
        };
        self.index.creator = format!("{} - {reason}", self.creator);
        // The whole index is checked before a byte of it goes to tape; then it is written as it is
        // made, record by record (a million-file index is half a gigabyte of XML).
        self.index
            .write_xml_with(std::io::sink(), self.packed.as_ref())?;
        let pos = Position {
            partition,
            block: fm_at,
        };
        self.dev.locate(pos).map_err(dev_err(format!(
            "locating partition {partition} block {fm_at}"
        )))?;
        let (index, packed) = (&self.index, self.packed.as_ref());
        let w = write_index_construct_from(&mut self.dev, self.block_size, |out| {
            index
                .write_xml_with(out, packed)
                .map_err(std::io::Error::other)
        })?;
        self.dev
            .write_filemarks(0)
            .map_err(dev_err("flushing the index to tape"))?;
        debug_assert_eq!(w.start.block, fm_at + 1);
        let p = partition as usize;
        self.eod[p] = w.end.block;
        self.last[p] = Some(LastIndex {
            generation: self.index.generation,
            start: w.start.block,
            backptr: self.index.previous.map(|l| l.start_block),
        });
        self.ends_in_index[p] = true;
        if partition == self.dp {
            self.dp_needs_fm = false;
            // The index went past early warning: no more data on this volume.
            self.full |= w.early_warning;
        }
        self.wrote = true;
        self.update_coherency()?;
        Ok(self.index.location)
    }

    /// Writes 0x080C on each partition that ends in an index, with the VCR the drive reports now.
    /// Drives without MAM are skipped: MAM is never needed for correctness.
    pub(crate) fn update_coherency(&mut self) -> Result<()> {
        use crate::coherency::{
            ATTR_VOLUME_CHANGE_REFERENCE, VolumeCoherency, volume_change_reference,
        };
        let vcr = match self.dev.read_attribute(0, ATTR_VOLUME_CHANGE_REFERENCE) {
            Ok(Some(a)) => volume_change_reference(&a.value),
            Ok(None) => None,
            Err(DeviceError::Unsupported(_) | DeviceError::IllegalRequest(_)) => return Ok(()),
            Err(e) => {
                return Err(dev_err("reading the volume change reference (MAM 0x0009)")(
                    e,
                ));
            }
        };
        let Some(vcr) = vcr else {
            return Ok(());
        };
        for p in [self.ip, self.dp] {
            let (Some(l), true) = (self.last[p as usize], self.ends_in_index[p as usize]) else {
                continue;
            };
            let c = VolumeCoherency {
                vcr,
                count: l.generation,
                set_id: l.start,
                uuid: self.index.volume_uuid.clone(),
                version: 1,
            };
            match self.dev.write_attribute(p, &c.to_attribute()) {
                Ok(()) => {}
                Err(DeviceError::Unsupported(_) | DeviceError::IllegalRequest(_)) => return Ok(()),
                Err(e) => {
                    return Err(dev_err(format!(
                        "writing volume coherency (MAM 0x080C) of partition {p}"
                    ))(e));
                }
            }
        }
        Ok(())
    }

    /// Writes a DP index now (an explicit sync).
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty || !self.ends_in_index[self.dp as usize] {
            self.write_index(self.dp, "Sync")?;
        }
        self.unsynced_bytes = 0;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Closes the volume (`ltfs_unmount()`): a DP index if the DP does not end in one or the index is
    /// dirty, then the IP index (overwritten in place) when it is not already the current one, then MAM
    /// coherency. Returns the device.
    ///
    /// A session that wrote nothing writes nothing: reading never changes the tape, even when the mount
    /// found inconsistencies (a checker repairs those).
    pub fn unmount(mut self) -> Result<D> {
        if !self.wrote && !self.dirty {
            return Ok(self.dev);
        }
        if self.dirty || !self.ends_in_index[self.dp as usize] {
            self.write_index(self.dp, "Unmount")?;
        }
        let dp_start = self.last[self.dp as usize].map(|l| l.start);
        let ip_current = matches!(
            self.last[self.ip as usize],
            Some(l) if l.generation == self.index.generation && l.backptr == dp_start
        ) && self.ends_in_index[self.ip as usize];
        if !ip_current {
            self.write_index(self.ip, "Unmount")?;
        }
        Ok(self.dev)
    }
}

pub(crate) fn now() -> LtfsTime {
    LtfsTime::from_system_time(SystemTime::now())
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            every_bytes: None,
            every: Some(Duration::from_secs(300)),
        }
    }
}
