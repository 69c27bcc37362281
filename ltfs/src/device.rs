//! What LTFS needs from a tape drive: positioned records and filemarks on up to two partitions, plus
//! MAM attributes. Implemented by `tapectl`'s SCSI drive (over SG_IO, iSCSI or the virtual library).

use crate::mam::Attribute;

/// A logical position: partition and logical object number (records and filemarks both count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: u8,
    pub block: u64,
}

/// What a read found at the current position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A record of this many bytes was read into the front of the buffer.
    Data(usize),
    /// A filemark; the position is now just past it.
    Filemark,
    /// End of data on this partition; the position did not move.
    EndOfData,
}

/// How a write went. `EarlyWarning` means the data *was* written, but the tape is in the early-warning
/// zone: the writer should finish what it must (an LTFS index) and stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    EarlyWarning,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no cartridge is loaded in the drive")]
    NoMedium,
    #[error("the drive is not ready: {0}")]
    NotReady(String),
    #[error("the cartridge is write-protected")]
    WriteProtected,
    #[error("end of medium: the tape is full")]
    EndOfMedium,
    #[error("record of {record} bytes does not fit the {buffer}-byte read buffer")]
    RecordTooLong { record: usize, buffer: usize },
    #[error("medium error at partition {partition} block {block}: {detail}")]
    Medium {
        partition: u8,
        block: u64,
        detail: String,
    },
    #[error("the drive does not support {0}")]
    Unsupported(String),
    #[error("illegal request: {0}")]
    IllegalRequest(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = DeviceError> = std::result::Result<T, E>;

/// A tape drive with a cartridge loaded, as LTFS uses it.
pub trait TapeDevice {
    /// Largest record the drive accepts (READ BLOCK LIMITS).
    fn max_block_size(&mut self) -> Result<usize>;
    /// Number of partitions on the loaded cartridge (1 or 2 for LTFS).
    fn partition_count(&mut self) -> Result<u8>;
    /// Makes the cartridge two partitions: `index_partition_mb` for partition 0, the rest for 1.
    /// Destroys everything on the tape.
    fn format_two_partitions(&mut self, index_partition_mb: u32) -> Result<()>;
    /// Moves to the beginning of partition 0 (whatever partition the tape is on).
    fn rewind(&mut self) -> Result<()>;
    /// Moves to the given logical object on the given partition (LOCATE(16)).
    fn locate(&mut self, to: Position) -> Result<()>;
    fn position(&mut self) -> Result<Position>;
    /// Moves to end of data on `partition` (where the next write appends).
    fn locate_eod(&mut self, partition: u8) -> Result<()>;
    /// Spaces over `count` filemarks (negative: backwards). Lands after the last one (forwards) or
    /// before it (backwards), like SPACE(6) code 1.
    fn space_filemarks(&mut self, count: i32) -> Result<()>;
    /// Reads the next record into `buf`.
    fn read_block(&mut self, buf: &mut [u8]) -> Result<ReadOutcome>;
    /// Writes one record (never empty). Everything after it on the partition is gone.
    fn write_block(&mut self, data: &[u8]) -> Result<WriteOutcome>;
    /// Writes `count` filemarks; `count == 0` flushes the drive's buffer to the medium.
    fn write_filemarks(&mut self, count: u32) -> Result<WriteOutcome>;
    /// Reads one MAM attribute of a partition; `None` when the cartridge does not have it.
    fn read_attribute(&mut self, partition: u8, id: u16) -> Result<Option<Attribute>>;
    fn write_attribute(&mut self, partition: u8, attribute: &Attribute) -> Result<()>;
}

/// A borrowed device is a device, so a [`crate::volume::Volume`] can work on `&mut drive` and leave the
/// drive with the caller whatever happens.
impl<T: TapeDevice + ?Sized> TapeDevice for &mut T {
    fn max_block_size(&mut self) -> Result<usize> {
        (**self).max_block_size()
    }
    fn partition_count(&mut self) -> Result<u8> {
        (**self).partition_count()
    }
    fn format_two_partitions(&mut self, index_partition_mb: u32) -> Result<()> {
        (**self).format_two_partitions(index_partition_mb)
    }
    fn rewind(&mut self) -> Result<()> {
        (**self).rewind()
    }
    fn locate(&mut self, to: Position) -> Result<()> {
        (**self).locate(to)
    }
    fn position(&mut self) -> Result<Position> {
        (**self).position()
    }
    fn locate_eod(&mut self, partition: u8) -> Result<()> {
        (**self).locate_eod(partition)
    }
    fn space_filemarks(&mut self, count: i32) -> Result<()> {
        (**self).space_filemarks(count)
    }
    fn read_block(&mut self, buf: &mut [u8]) -> Result<ReadOutcome> {
        (**self).read_block(buf)
    }
    fn write_block(&mut self, data: &[u8]) -> Result<WriteOutcome> {
        (**self).write_block(data)
    }
    fn write_filemarks(&mut self, count: u32) -> Result<WriteOutcome> {
        (**self).write_filemarks(count)
    }
    fn read_attribute(&mut self, partition: u8, id: u16) -> Result<Option<Attribute>> {
        (**self).read_attribute(partition, id)
    }
    fn write_attribute(&mut self, partition: u8, attribute: &Attribute) -> Result<()> {
        (**self).write_attribute(partition, attribute)
    }
}
