//! The on-tape constructs of ltfs-format.md §1 over a [`TapeDevice`]: label constructs (VOL1, FM, XML
//! label, FM), index constructs (FM, XML in exactly-`block_size` records with only the last short, FM)
//! and data records, written at the current position and read back with every check of §8 items 22–23.
//!
//! Errors name the partition and block they happened at.

use std::io::{BufRead, Read, Write};

use crate::device::{DeviceError, Position, ReadOutcome, TapeDevice, WriteOutcome};
use crate::label::{self, LABEL_MAX, Label, LabelError, LabelMismatch};

#[derive(Debug, thiserror::Error)]
pub enum ConstructError {
    #[error("partition {partition} block {block}: {source}")]
    Device {
        partition: u8,
        block: u64,
        #[source]
        source: DeviceError,
    },
    #[error("partition {partition} block {block}: expected {expected}, found {found}")]
    Unexpected {
        partition: u8,
        block: u64,
        expected: &'static str,
        found: &'static str,
    },
    #[error("partition {partition} block {block}: {source}")]
    Label {
        partition: u8,
        block: u64,
        #[source]
        source: LabelError,
    },
    #[error("the labels of partitions 0 and 1 disagree: {0}")]
    LabelMismatch(#[from] LabelMismatch),
    #[error("the VOL1 volume serials differ: {0:?} on partition 0, {1:?} on partition 1")]
    SerialMismatch(Option<String>, Option<String>),
    #[error(
        "the label locations {0} (partition 0) and {1} (partition 1) are not the label's index and data partitions"
    )]
    BadPartitionMap(char, char),
    #[error("the medium has {0} partition(s); LTFS needs 2")]
    PartitionCount(u8),
    #[error(
        "partition {partition} block {block}: record is larger than the {block_size}-byte block size"
    )]
    RecordTooLong {
        partition: u8,
        block: u64,
        block_size: usize,
    },
    #[error("partition {partition} block {block}: index is larger than the {limit}-byte limit")]
    IndexTooLarge {
        partition: u8,
        block: u64,
        limit: usize,
    },
    #[error("partition {partition} block {block}: no index records here")]
    EmptyIndex { partition: u8, block: u64 },
    #[error("partition {partition} block {block}: the record does not start an XML document")]
    NotAnIndex { partition: u8, block: u64 },
    #[error("the block size must be nonzero")]
    ZeroBlockSize,
    #[error("an index construct needs a nonempty index")]
    EmptyXml,
    #[error("reading the data to write: {0}")]
    Source(#[source] std::io::Error),
}

impl ConstructError {
    /// Errors that make one place on tape unusable as an index but say nothing about the rest of the
    /// tape (a scan tries the next candidate).
    pub fn is_local(&self) -> bool {
        match self {
            Self::RecordTooLong { .. }
            | Self::IndexTooLarge { .. }
            | Self::EmptyIndex { .. }
            | Self::NotAnIndex { .. }
            | Self::Unexpected { .. }
            | Self::Label { .. } => true,
            Self::Device { source, .. } => {
                matches!(
                    source,
                    DeviceError::Medium { .. } | DeviceError::RecordTooLong { .. }
                )
            }
            _ => false,
        }
    }
}

/// A device plus the position we believe it is at, for error messages and bookkeeping.
pub(crate) struct Tracked<'d, D: TapeDevice + ?Sized> {
    pub dev: &'d mut D,
    pub at: Position,
}

impl<'d, D: TapeDevice + ?Sized> Tracked<'d, D> {
    pub fn here(dev: &'d mut D) -> Result<Self, ConstructError> {
        let at = dev.position().map_err(|source| ConstructError::Device {
            partition: 0,
            block: 0,
            source,
        })?;
        Ok(Self { dev, at })
    }

    pub fn err(&self, source: DeviceError) -> ConstructError {
        ConstructError::Device {
            partition: self.at.partition,
            block: self.at.block,
            source,
        }
    }

    pub fn write(&mut self, data: &[u8]) -> Result<WriteOutcome, ConstructError> {
        let o = self.dev.write_block(data).map_err(|e| self.err(e))?;
        self.at.block += 1;
        Ok(o)
    }

    pub fn filemark(&mut self) -> Result<WriteOutcome, ConstructError> {
        let o = self.dev.write_filemarks(1).map_err(|e| self.err(e))?;
        self.at.block += 1;
        Ok(o)
    }

    /// Reads one object; a record longer than `buf` becomes [`ConstructError::RecordTooLong`].
    pub fn read(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, ConstructError> {
        let at = self.at;
        let o = match self.dev.read_block(buf) {
            Ok(ReadOutcome::Data(n)) if n > buf.len() => Err(DeviceError::RecordTooLong {
                record: n,
                buffer: buf.len(),
            }),
            other => other,
        };
        match o {
            Ok(o) => {
                if o != ReadOutcome::EndOfData {
                    self.at.block += 1;
                }
                Ok(o)
            }
            Err(DeviceError::RecordTooLong { .. }) => {
                self.at.block += 1;
                Err(ConstructError::RecordTooLong {
                    partition: at.partition,
                    block: at.block,
                    block_size: buf.len(),
                })
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn unexpected(&self, block: u64, expected: &'static str, found: ReadOutcome) -> ConstructError {
        ConstructError::Unexpected {
            partition: self.at.partition,
            block,
            expected,
            found: match found {
                ReadOutcome::Data(_) => "a record",
                ReadOutcome::Filemark => "a filemark",
                ReadOutcome::EndOfData => "end of data",
            },
        }
    }

    fn expect_filemark(&mut self, buf: &mut [u8]) -> Result<(), ConstructError> {
        let block = self.at.block;
        match self.read(buf)? {
            ReadOutcome::Filemark => Ok(()),
            o => Err(self.unexpected(block, "a filemark", o)),
        }
    }

    fn expect_record<'b>(&mut self, buf: &'b mut [u8]) -> Result<&'b [u8], ConstructError> {
        let block = self.at.block;
        match self.read(buf)? {
            ReadOutcome::Data(n) => Ok(&buf[..n]),
            o => Err(self.unexpected(block, "a record", o)),
        }
    }
}

/// Writes a label construct at the current position: VOL1 (with `serial`, see
/// [`label::volume_serial`]), FM, the XML label, FM.
pub fn write_label_construct<D: TapeDevice + ?Sized>(
    dev: &mut D,
    serial: Option<&str>,
    label: &Label,
) -> Result<(), ConstructError> {
    let xml = label.encode();
    let mut t = Tracked::here(dev)?;
    if xml.len() > LABEL_MAX {
        return Err(ConstructError::Label {
            partition: t.at.partition,
            block: t.at.block + 2,
            source: LabelError::TooLarge(xml.len()),
        });
    }
    t.write(&label::encode_vol1(serial))?;
    t.filemark()?;
    t.write(&xml)?;
    t.filemark()?;
    Ok(())
}

/// Where an index construct went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexWritten {
    /// The self pointer: the block of the first XML record (the leading FM's block + 1).
    pub start: Position,
    pub records: u64,
    /// Just past the trailing FM (the partition's new EOD).
    pub end: Position,
    /// The drive reported early warning while writing it (everything was written).
    pub early_warning: bool,
}

/// Writes an index construct at the current position: FM, `xml` in records of exactly `block_size`
/// bytes with only the last one short, FM.
pub fn write_index_construct<D: TapeDevice + ?Sized>(
    dev: &mut D,
    xml: &[u8],
    block_size: usize,
) -> Result<IndexWritten, ConstructError> {
    if xml.is_empty() {
        return Err(ConstructError::EmptyXml);
    }
    write_index_construct_from(dev, block_size, |w| w.write_all(xml))
}

/// [`write_index_construct`] with the XML written by `produce` as it goes, one record at a time:
/// a million-file index (half a gigabyte of XML) is never held whole. `produce` should not fail on
/// its own (validate the index first): what it wrote before failing is on tape, without the
/// trailing FM, and a reader falls back to the previous index.
pub fn write_index_construct_from<D: TapeDevice + ?Sized>(
    dev: &mut D,
    block_size: usize,
    produce: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<IndexWritten, ConstructError> {
    if block_size == 0 {
        return Err(ConstructError::ZeroBlockSize);
    }
    let mut t = Tracked::here(dev)?;
    let mut warn = t.filemark()? == WriteOutcome::EarlyWarning;
    let start = t.at;
    let mut out = RecordWriter {
        t: &mut t,
        buf: Vec::with_capacity(block_size),
        block_size,
        records: 0,
        warn: false,
        failed: None,
    };
    let produced = produce(&mut out).and_then(|()| out.flush_last());
    if let Some(e) = out.failed.take() {
        return Err(e);
    }
    produced.map_err(ConstructError::Source)?;
    let records = out.records;
    warn |= out.warn;
    if records == 0 {
        return Err(ConstructError::EmptyXml);
    }
    warn |= t.filemark()? == WriteOutcome::EarlyWarning;
    Ok(IndexWritten {
        start,
        records,
        end: t.at,
        early_warning: warn,
    })
}

/// Bytes written to it go to tape as records of exactly `block_size` bytes (the last one short,
/// by [`RecordWriter::flush_last`]).
struct RecordWriter<'t, 'd, D: TapeDevice + ?Sized> {
    t: &'t mut Tracked<'d, D>,
    buf: Vec<u8>,
    block_size: usize,
    records: u64,
    warn: bool,
    /// The device's error, kept whole (the `Write` interface can only pass an io::Error).
    failed: Option<ConstructError>,
}

impl<D: TapeDevice + ?Sized> RecordWriter<'_, '_, D> {
    fn record(&mut self) -> std::io::Result<()> {
        match self.t.write(&self.buf) {
            Ok(o) => {
                self.warn |= o == WriteOutcome::EarlyWarning;
                self.records += 1;
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                let shown = e.to_string();
                self.failed = Some(e);
                Err(std::io::Error::other(shown))
            }
        }
    }

    fn flush_last(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.record()
    }
}

impl<D: TapeDevice + ?Sized> Write for RecordWriter<'_, '_, D> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(self.block_size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.block_size {
            self.record()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An index's XML as read from tape (by [`read_index_xml`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexXml {
    pub xml: Vec<u8>,
    /// The block of the first record (what the index's self pointer must say).
    pub start: Position,
    pub records: u64,
    /// Whether a filemark followed the last record (§5: accepted without, but flagged).
    pub trailing_fm: bool,
}

impl IndexXml {
    /// The block after the construct: past the trailing FM, or past the last record without one.
    pub fn end_block(&self) -> u64 {
        self.start.block + self.records + u64::from(self.trailing_fm)
    }
}

/// Where an index construct that was read whole lies on tape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexExtent {
    /// The block of the first record (what the index's self pointer must say).
    pub start: Position,
    pub records: u64,
    /// Whether a filemark followed the last record (§5: accepted without, but flagged).
    pub trailing_fm: bool,
}

impl IndexExtent {
    /// The block after the construct: past the trailing FM, or past the last record without one.
    pub fn end_block(&self) -> u64 {
        self.start.block + self.records + u64::from(self.trailing_fm)
    }
}

fn starts_like_xml(rec: &[u8]) -> bool {
    let rec = rec.strip_prefix(b"\xef\xbb\xbf").unwrap_or(rec);
    rec.starts_with(b"<?xml")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// The last record read was full: more may follow.
    More,
    /// The last record read was short: it ends the index; the next object says whether the trailing
    /// FM is there.
    Short,
    Done {
        trailing_fm: bool,
    },
}

/// An index construct's XML, read from tape one record at a time as the parser asks for it (a
/// [`BufRead`]): memory is one record, whatever the size of the index, and a parser that stops at the
/// first error stops the reading there too.
///
/// Records are read until the first short record or FM, like the reference; more than `limit` bytes in
/// all, a record longer than the block size, or a device error end the stream with an I/O error, and
/// the [`ConstructError`] is kept for [`IndexStream::take_error`].
pub struct IndexStream<'d, D: TapeDevice + ?Sized> {
    t: Tracked<'d, D>,
    start: Position,
    block_size: usize,
    limit: usize,
    buf: Vec<u8>,
    /// Unread bytes of the current record: `buf[pos..len]`.
    pos: usize,
    len: usize,
    records: u64,
    total: usize,
    state: StreamState,
    error: Option<ConstructError>,
}

impl<'d, D: TapeDevice + ?Sized> IndexStream<'d, D> {
    /// Starts at the current position, which must be the index's first record (just past the leading
    /// FM). The first record is read at once: a FM or end of data there, or a record that does not start
    /// an XML document, is an error.
    pub fn open(
        dev: &'d mut D,
        block_size: usize,
        limit: usize,
    ) -> Result<IndexStream<'d, D>, ConstructError> {
        if block_size == 0 {
            return Err(ConstructError::ZeroBlockSize);
        }
        let t = Tracked::here(dev)?;
        let start = t.at;
        let mut s = IndexStream {
            t,
            start,
            block_size,
            limit,
            buf: vec![0u8; block_size],
            pos: 0,
            len: 0,
            records: 0,
            total: 0,
            state: StreamState::More,
            error: None,
        };
        s.next_record()?;
        if s.records == 0 {
            return Err(ConstructError::EmptyIndex {
                partition: start.partition,
                block: start.block,
            });
        }
        if !starts_like_xml(&s.buf[..s.len]) {
            return Err(ConstructError::NotAnIndex {
                partition: start.partition,
                block: start.block,
            });
        }
        Ok(s)
    }

    /// The block of the first record.
    pub fn start(&self) -> Position {
        self.start
    }

    /// The error that ended the stream, if one did.
    pub fn take_error(&mut self) -> Option<ConstructError> {
        self.error.take()
    }

    /// Reads the next record into the buffer (or finds the end of the construct).
    fn next_record(&mut self) -> Result<(), ConstructError> {
        self.pos = 0;
        self.len = 0;
        match self.state {
            StreamState::Done { .. } => Ok(()),
            StreamState::Short => {
                // A short record ended the index; is the trailing FM next?
                let trailing_fm = match self.t.read(&mut self.buf) {
                    Ok(o) => o == ReadOutcome::Filemark,
                    Err(ConstructError::RecordTooLong { .. }) => false,
                    Err(e) => return Err(e),
                };
                self.state = StreamState::Done { trailing_fm };
                Ok(())
            }
            StreamState::More => {
                let block = self.t.at.block;
                match self.t.read(&mut self.buf)? {
                    ReadOutcome::Data(n) => {
                        if self.total.saturating_add(n) > self.limit {
                            return Err(ConstructError::IndexTooLarge {
                                partition: self.start.partition,
                                block,
                                limit: self.limit,
                            });
                        }
                        self.total += n;
                        self.records += 1;
                        self.len = n;
                        if n < self.block_size {
                            self.state = StreamState::Short;
                        }
                    }
                    ReadOutcome::Filemark => self.state = StreamState::Done { trailing_fm: true },
                    ReadOutcome::EndOfData => self.state = StreamState::Done { trailing_fm: false },
                }
                Ok(())
            }
        }
    }

    /// Reads (and drops) what is left of the construct and says where it lay.
    pub fn finish(mut self) -> Result<IndexExtent, ConstructError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        loop {
            if let StreamState::Done { trailing_fm } = self.state {
                return Ok(IndexExtent {
                    start: self.start,
                    records: self.records,
                    trailing_fm,
                });
            }
            self.next_record()?;
        }
    }
}

impl<D: TapeDevice + ?Sized> Read for IndexStream<'_, D> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<D: TapeDevice + ?Sized> BufRead for IndexStream<'_, D> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.error.is_some() {
            return Err(std::io::Error::other(
                "the index could not be read from tape",
            ));
        }
        while self.pos == self.len && !matches!(self.state, StreamState::Done { .. }) {
            if let Err(e) = self.next_record() {
                let msg = e.to_string();
                self.error = Some(e);
                return Err(std::io::Error::other(msg));
            }
        }
        Ok(&self.buf[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

/// Reads the index construct whose first record is at the current position through `parse`, which
/// gets the XML as a stream ([`IndexStream`]): the XML is never held whole. When `parse` succeeds, the
/// rest of the construct is read to find where it ends.
///
/// `Err` when the construct cannot be read (see [`IndexStream::open`]; a device error, a record longer
/// than the block size or more than `limit` bytes while `parse` reads); `Ok(Err(e))` when it was read
/// but `parse` refused it.
#[allow(clippy::type_complexity)]
pub fn read_index<D, T, E>(
    dev: &mut D,
    block_size: usize,
    limit: usize,
    parse: impl FnOnce(&mut dyn BufRead) -> Result<T, E>,
) -> Result<Result<(T, IndexExtent), E>, ConstructError>
where
    D: TapeDevice + ?Sized,
{
    let mut s = IndexStream::open(dev, block_size, limit)?;
    let parsed = parse(&mut s);
    if let Some(e) = s.take_error() {
        return Err(e);
    }
    match parsed {
        Ok(v) => Ok(Ok((v, s.finish()?))),
        Err(e) => Ok(Err(e)),
    }
}

/// Reads an index's XML starting at the current position, which must be its first record (just past
/// the leading FM), into memory: [`read_index`] with a parser that keeps every byte (at most `limit`).
/// For tools and tests; a reader of untrusted tapes streams with [`read_index`] instead.
pub fn read_index_xml<D: TapeDevice + ?Sized>(
    dev: &mut D,
    block_size: usize,
    limit: usize,
) -> Result<IndexXml, ConstructError> {
    let (xml, at) = read_index(dev, block_size, limit, |r| {
        let mut xml = Vec::new();
        r.read_to_end(&mut xml).map(|_| xml)
    })?
    .map_err(ConstructError::Source)?;
    Ok(IndexXml {
        xml,
        start: at.start,
        records: at.records,
        trailing_fm: at.trailing_fm,
    })
}

/// Both partitions' labels, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeLabels {
    /// The VOL1 volume serial (the same on both partitions), `None` when blank.
    pub serial: Option<String>,
    /// The XML labels by physical partition.
    pub labels: [Label; 2],
}

impl VolumeLabels {
    /// The label fields both partitions share (location is partition 0's).
    pub fn label(&self) -> &Label {
        &self.labels[0]
    }
    /// The physical partition holding logical partition `id`.
    pub fn physical(&self, id: char) -> Option<u8> {
        self.labels
            .iter()
            .position(|l| l.location == id)
            .map(|p| p as u8)
    }
    pub fn index_partition(&self) -> u8 {
        self.physical(self.labels[0].index_partition)
            .expect("checked by read_labels")
    }
    pub fn data_partition(&self) -> u8 {
        self.physical(self.labels[0].data_partition)
            .expect("checked by read_labels")
    }
}

/// Reads one partition's label construct (VOL1 ≥ 80 B with `LTFS` at 24, FM, XML label ≤ 4096 B, FM).
pub fn read_label_construct<D: TapeDevice + ?Sized>(
    dev: &mut D,
    partition: u8,
) -> Result<(Option<String>, Label), ConstructError> {
    let at = Position {
        partition,
        block: 0,
    };
    dev.locate(at).map_err(|source| ConstructError::Device {
        partition,
        block: 0,
        source,
    })?;
    let mut t = Tracked { dev, at };
    let mut buf = vec![0u8; LABEL_MAX];
    let label_err = |block, source| ConstructError::Label {
        partition,
        block,
        source,
    };
    let serial = label::decode_vol1(t.expect_record(&mut buf)?).map_err(|e| label_err(0, e))?;
    t.expect_filemark(&mut buf)?;
    let label = match t.expect_record(&mut buf) {
        Ok(xml) => Label::parse(xml).map_err(|e| label_err(2, e))?,
        Err(ConstructError::RecordTooLong { .. }) => {
            return Err(label_err(2, LabelError::TooLarge(LABEL_MAX + 1)));
        }
        Err(e) => return Err(e),
    };
    t.expect_filemark(&mut buf)?;
    Ok((serial, label))
}

/// Reads and checks both label constructs (§8 items 22–23): two partitions, VOL1 and the FMs around
/// the XML label on each, the same serial, labels equal but for `location`, and locations that are the
/// label's index and data partitions.
pub fn read_labels<D: TapeDevice + ?Sized>(dev: &mut D) -> Result<VolumeLabels, ConstructError> {
    let n = dev
        .partition_count()
        .map_err(|source| ConstructError::Device {
            partition: 0,
            block: 0,
            source,
        })?;
    if n != 2 {
        return Err(ConstructError::PartitionCount(n));
    }
    let (s0, l0) = read_label_construct(dev, 0)?;
    let (s1, l1) = read_label_construct(dev, 1)?;
    if s0 != s1 {
        return Err(ConstructError::SerialMismatch(s0, s1));
    }
    label::compare(&l0, &l1)?;
    let mut locs = [l0.location, l1.location];
    let mut map = [l0.index_partition, l0.data_partition];
    locs.sort_unstable();
    map.sort_unstable();
    if locs != map {
        return Err(ConstructError::BadPartitionMap(l0.location, l1.location));
    }
    Ok(VolumeLabels {
        serial: s0,
        labels: [l0, l1],
    })
}

/// What [`write_data_records`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataWritten {
    /// The first record's position (an extent's `startblock`); where writing began if none was written.
    pub start: Position,
    pub records: u64,
    pub bytes: u64,
    /// The drive reported early warning; writing stopped after that record.
    pub early_warning: bool,
    /// The whole source was written (false only after early warning).
    pub complete: bool,
}

/// Writes `source` at the current position as records of exactly `block_size` bytes, the last one
/// short. Stops after the record that met early warning (the caller writes its index and stops).
pub fn write_data_records<D: TapeDevice + ?Sized>(
    dev: &mut D,
    source: &mut impl Read,
    block_size: usize,
) -> Result<DataWritten, ConstructError> {
    if block_size == 0 {
        return Err(ConstructError::ZeroBlockSize);
    }
    let mut t = Tracked::here(dev)?;
    let start = t.at;
    // Not zero-filled: `read_to_end` reads into the spare capacity (zeroing 512 KiB for each of many
    // small files cost more than their data).
    let mut buf: Vec<u8> = Vec::with_capacity(block_size);
    let (mut records, mut bytes) = (0u64, 0u64);
    loop {
        buf.clear();
        let n = source
            .by_ref()
            .take(block_size as u64)
            .read_to_end(&mut buf)
            .map_err(ConstructError::Source)?;
        if n == 0 {
            break;
        }
        let o = t.write(&buf[..n])?;
        records += 1;
        bytes += n as u64;
        let eof = n < block_size;
        if o == WriteOutcome::EarlyWarning {
            // Done if the source is exhausted, which a short record proves; otherwise we cannot tell
            // without reading more, so say incomplete unless it was short.
            return Ok(DataWritten {
                start,
                records,
                bytes,
                early_warning: true,
                complete: eof,
            });
        }
        if eof {
            break;
        }
    }
    Ok(DataWritten {
        start,
        records,
        bytes,
        early_warning: false,
        complete: true,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::label::{LtfsTime, WRITE_VERSION};
    use crate::mam::Attribute;

    /// An in-memory two-partition tape: objects are `Some(record)` or `None` (filemark).
    #[derive(Debug)]
    pub struct MemTape {
        pub parts: [Vec<Option<Vec<u8>>>; 2],
        pub pos: Position,
        pub early_warning_from: Option<u64>,
        /// MAM 0x0001 (maximum capacity in partition, MiB) of each partition; no MAM otherwise.
        pub capacity_mib: Option<[u64; 2]>,
    }

    const BOT: Position = Position {
        partition: 0,
        block: 0,
    };

    impl Default for MemTape {
        fn default() -> Self {
            Self {
                parts: Default::default(),
                pos: BOT,
                early_warning_from: None,
                capacity_mib: None,
            }
        }
    }

    impl MemTape {
        fn part(&mut self) -> &mut Vec<Option<Vec<u8>>> {
            &mut self.parts[self.pos.partition as usize]
        }
        fn outcome(&self) -> WriteOutcome {
            match self.early_warning_from {
                Some(b) if self.pos.block > b => WriteOutcome::EarlyWarning,
                _ => WriteOutcome::Written,
            }
        }
    }

    impl TapeDevice for MemTape {
        fn max_block_size(&mut self) -> crate::device::Result<usize> {
            Ok(1 << 22)
        }
        fn partition_count(&mut self) -> crate::device::Result<u8> {
            Ok(2)
        }
        fn format_two_partitions(&mut self, _: u32) -> crate::device::Result<()> {
            self.parts = Default::default();
            self.pos = BOT;
            Ok(())
        }
        fn rewind(&mut self) -> crate::device::Result<()> {
            self.pos = BOT;
            Ok(())
        }
        fn locate(&mut self, to: Position) -> crate::device::Result<()> {
            if to.block > self.parts[to.partition as usize].len() as u64 {
                return Err(DeviceError::IllegalRequest("past the end of data".into()));
            }
            self.pos = to;
            Ok(())
        }
        fn position(&mut self) -> crate::device::Result<Position> {
            Ok(self.pos)
        }
        fn locate_eod(&mut self, partition: u8) -> crate::device::Result<()> {
            self.pos = Position {
                partition,
                block: self.parts[partition as usize].len() as u64,
            };
            Ok(())
        }
        fn space_filemarks(&mut self, count: i32) -> crate::device::Result<()> {
            let mut left = count.unsigned_abs();
            while left > 0 {
                if count > 0 {
                    let b = self.pos.block as usize;
                    match self.part().get(b) {
                        None => return Err(DeviceError::Other("end of data".into())),
                        Some(o) => {
                            let fm = o.is_none();
                            self.pos.block += 1;
                            if fm {
                                left -= 1;
                            }
                        }
                    }
                } else {
                    if self.pos.block == 0 {
                        return Err(DeviceError::Other("beginning of partition".into()));
                    }
                    self.pos.block -= 1;
                    let b = self.pos.block as usize;
                    if self.part()[b].is_none() {
                        left -= 1;
                    }
                }
            }
            Ok(())
        }
        fn read_block(&mut self, buf: &mut [u8]) -> crate::device::Result<ReadOutcome> {
            let b = self.pos.block as usize;
            let o = self.part().get(b).cloned();
            match o {
                None => Ok(ReadOutcome::EndOfData),
                Some(None) => {
                    self.pos.block += 1;
                    Ok(ReadOutcome::Filemark)
                }
                Some(Some(r)) => {
                    self.pos.block += 1;
                    if r.len() > buf.len() {
                        return Err(DeviceError::RecordTooLong {
                            record: r.len(),
                            buffer: buf.len(),
                        });
                    }
                    buf[..r.len()].copy_from_slice(&r);
                    Ok(ReadOutcome::Data(r.len()))
                }
            }
        }
        fn write_block(&mut self, data: &[u8]) -> crate::device::Result<WriteOutcome> {
            assert!(!data.is_empty());
            let b = self.pos.block as usize;
            self.part().truncate(b);
            self.part().push(Some(data.to_vec()));
            self.pos.block += 1;
            Ok(self.outcome())
        }
        fn write_filemarks(&mut self, count: u32) -> crate::device::Result<WriteOutcome> {
            if count > 0 {
                let b = self.pos.block as usize;
                self.part().truncate(b);
            }
            for _ in 0..count {
                self.part().push(None);
                self.pos.block += 1;
            }
            Ok(self.outcome())
        }
        fn read_attribute(
            &mut self,
            partition: u8,
            id: u16,
        ) -> crate::device::Result<Option<Attribute>> {
            Ok(match (id, self.capacity_mib) {
                (0x0001, Some(c)) => Some(Attribute::new(
                    id,
                    crate::mam::AttributeFormat::Binary,
                    c[partition as usize].to_be_bytes(),
                )),
                _ => None,
            })
        }
        fn write_attribute(&mut self, _: u8, _: &Attribute) -> crate::device::Result<()> {
            Err(DeviceError::Unsupported("MAM".into()))
        }
    }

    pub fn test_label(location: char) -> Label {
        Label {
            creator: "rackvault test".into(),
            format_time: LtfsTime::new(1_738_326_896, 123_456_789),
            volume_uuid: "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10".into(),
            location,
            index_partition: 'a',
            data_partition: 'b',
            block_size: 16,
            compression: true,
            version: WRITE_VERSION,
        }
    }

    pub fn xml_of(len: usize) -> Vec<u8> {
        let mut x = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>".to_vec();
        while x.len() < len {
            x.push(b'a' + (x.len() % 26) as u8);
        }
        x.truncate(len.max(5));
        x
    }

    /// Label constructs on both partitions, DP first.
    pub fn formatted() -> MemTape {
        let mut t = MemTape::default();
        for (p, loc) in [(1, 'b'), (0, 'a')] {
            t.locate(Position {
                partition: p,
                block: 0,
            })
            .unwrap();
            write_label_construct(&mut t, Some("ABC123"), &test_label(loc)).unwrap();
        }
        t
    }

    #[test]
    fn label_constructs_round_trip() {
        let mut t = formatted();
        assert_eq!(t.parts[0].len(), 4);
        assert_eq!(t.parts[0][0].as_deref().unwrap().len(), 80);
        assert!(t.parts[0][1].is_none() && t.parts[0][3].is_none());
        let v = read_labels(&mut t).unwrap();
        assert_eq!(v.serial.as_deref(), Some("ABC123"));
        assert_eq!((v.index_partition(), v.data_partition()), (0, 1));
        assert_eq!(v.labels[1], test_label('b'));
        assert_eq!(v.physical('c'), None);
    }

    #[test]
    fn label_construct_damage() {
        // Missing FM after VOL1.
        let mut t = formatted();
        t.parts[1][1] = Some(b"x".to_vec());
        let e = read_labels(&mut t).unwrap_err();
        assert!(
            matches!(
                e,
                ConstructError::Unexpected {
                    partition: 1,
                    block: 1,
                    expected: "a filemark",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "partition 1 block 1: expected a filemark, found a record"
        );
        // No FM after the XML label.
        let mut t = formatted();
        t.parts[0].truncate(3);
        assert!(matches!(
            read_labels(&mut t).unwrap_err(),
            ConstructError::Unexpected {
                partition: 0,
                block: 3,
                found: "end of data",
                ..
            }
        ));
        // Not LTFS.
        let mut t = formatted();
        t.parts[0][0].as_mut().unwrap()[24] = b'X';
        assert!(matches!(
            read_labels(&mut t).unwrap_err(),
            ConstructError::Label {
                partition: 0,
                block: 0,
                source: LabelError::Vol1NotLtfs
            }
        ));
        // VOL1 too short.
        let mut t = formatted();
        t.parts[1][0] = Some(vec![b' '; 79]);
        assert!(matches!(
            read_labels(&mut t).unwrap_err(),
            ConstructError::Label {
                partition: 1,
                block: 0,
                source: LabelError::Vol1TooShort(79)
            }
        ));
        // An over-long XML label.
        let mut t = formatted();
        t.parts[1][2] = Some(vec![b' '; 5000]);
        assert!(matches!(
            read_labels(&mut t).unwrap_err(),
            ConstructError::Label {
                partition: 1,
                block: 2,
                source: LabelError::TooLarge(_)
            }
        ));
        // Labels that disagree, the same location twice, a different serial.
        let mut t = formatted();
        let mut other = test_label('b');
        other.block_size = 32;
        t.parts[1][2] = Some(other.encode());
        assert!(matches!(
            read_labels(&mut t).unwrap_err(),
            ConstructError::LabelMismatch(LabelMismatch::Differ("block size"))
        ));
        let mut t = formatted();
        t.parts[1][2] = Some(test_label('a').encode());
        assert!(matches!(
            read_labels(&mut t).unwrap_err(),
            ConstructError::LabelMismatch(LabelMismatch::SameLocation('a'))
        ));
        let mut t = formatted();
        t.parts[1][2] = Some(test_label('c').encode());
        assert!(matches!(
            read_labels(&mut t).unwrap_err(),
            ConstructError::BadPartitionMap('a', 'c')
        ));
        let mut t = formatted();
        t.parts[1][0] = Some(label::encode_vol1(None).to_vec());
        assert!(matches!(
            read_labels(&mut t).unwrap_err(),
            ConstructError::SerialMismatch(Some(_), None)
        ));
        // A blank partition.
        let mut t = formatted();
        t.parts[1].clear();
        assert!(matches!(
            read_labels(&mut t).unwrap_err(),
            ConstructError::Unexpected {
                partition: 1,
                block: 0,
                found: "end of data",
                ..
            }
        ));
    }

    #[test]
    fn an_index_written_as_it_is_made_is_the_same_records() {
        for len in [5, 16, 17, 33, 100] {
            let xml = xml_of(len);
            let mut a = formatted();
            a.locate_eod(1).unwrap();
            write_index_construct(&mut a, &xml, 16).unwrap();
            let mut b = formatted();
            b.locate_eod(1).unwrap();
            // Written a few bytes at a time, across record boundaries.
            let w = write_index_construct_from(&mut b, 16, |out| {
                for piece in xml.chunks(7) {
                    out.write_all(piece)?;
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(a.parts, b.parts, "length {len}");
            assert_eq!(w.records, len.div_ceil(16) as u64);
        }
        let mut t = formatted();
        t.locate_eod(1).unwrap();
        let e = write_index_construct_from(&mut t, 16, |_| Ok(())).unwrap_err();
        assert!(matches!(e, ConstructError::EmptyXml), "{e}");
    }

    #[test]
    fn index_construct_records() {
        for len in [5, 15, 16, 17, 32, 33, 100] {
            let mut t = formatted();
            t.locate_eod(1).unwrap();
            let xml = xml_of(len);
            let w = write_index_construct(&mut t, &xml, 16).unwrap();
            assert_eq!(
                w.start,
                Position {
                    partition: 1,
                    block: 5
                }
            );
            let n = len.div_ceil(16);
            assert_eq!(w.records, n as u64);
            assert_eq!(w.end.block, 5 + n as u64 + 1);
            assert!(!w.early_warning);
            let p = &t.parts[1];
            assert!(p[4].is_none() && p[5 + n].is_none() && p.len() == 6 + n);
            for (i, rec) in p[5..5 + n].iter().enumerate() {
                let rec = rec.as_ref().unwrap();
                if i + 1 < n {
                    assert_eq!(rec.len(), 16);
                } else {
                    assert_eq!(rec.len(), len - 16 * (n - 1));
                }
            }
            t.locate(w.start).unwrap();
            let r = read_index_xml(&mut t, 16, 1 << 20).unwrap();
            assert_eq!(r.xml, xml);
            assert_eq!(
                (r.start, r.records, r.trailing_fm),
                (w.start, n as u64, true)
            );
            assert_eq!(r.end_block(), w.end.block);
            assert_eq!(t.pos, w.end);
        }
        let mut t = MemTape::default();
        assert!(matches!(
            write_index_construct(&mut t, b"", 16),
            Err(ConstructError::EmptyXml)
        ));
        assert!(matches!(
            write_index_construct(&mut t, b"x", 0),
            Err(ConstructError::ZeroBlockSize)
        ));
        t.early_warning_from = Some(2);
        let w = write_index_construct(&mut t, &xml_of(40), 16).unwrap();
        assert!(w.early_warning);
    }

    #[test]
    fn index_read_errors_and_trailing_fm() {
        let start = Position {
            partition: 1,
            block: 5,
        };
        let setup = |objs: Vec<Option<Vec<u8>>>| {
            let mut t = formatted();
            t.parts[1].push(None);
            t.parts[1].extend(objs);
            t.locate(start).unwrap();
            t
        };
        let x = xml_of(40);
        let full = |i: usize| Some(x[i * 16..(i + 1) * 16].to_vec());
        // No trailing FM: EOD after the short record, or a record.
        let mut t = setup(vec![full(0), full(1), Some(x[32..].to_vec())]);
        let r = read_index_xml(&mut t, 16, 1000).unwrap();
        assert_eq!(
            (r.xml.clone(), r.trailing_fm, r.end_block()),
            (x.clone(), false, 8)
        );
        let mut t = setup(vec![
            full(0),
            Some(x[16..30].to_vec()),
            Some(b"data".to_vec()),
        ]);
        let r = read_index_xml(&mut t, 16, 1000).unwrap();
        assert_eq!((r.trailing_fm, r.records), (false, 2));
        let mut t = setup(vec![full(0), Some(x[16..30].to_vec()), Some(vec![0; 99])]);
        assert!(!read_index_xml(&mut t, 16, 1000).unwrap().trailing_fm);
        // A multiple of the block size, ended by the FM or by EOD.
        let mut t = setup(vec![full(0), full(1), None]);
        let r = read_index_xml(&mut t, 16, 1000).unwrap();
        assert_eq!((r.records, r.trailing_fm, r.end_block()), (2, true, 8));
        let mut t = setup(vec![full(0), full(1)]);
        assert!(!read_index_xml(&mut t, 16, 1000).unwrap().trailing_fm);
        // The reader stops at the first short record: an index in smaller chunks is cut.
        let mut t = setup(vec![Some(x[..10].to_vec()), Some(x[10..].to_vec()), None]);
        let r = read_index_xml(&mut t, 16, 1000).unwrap();
        assert_eq!((r.xml.len(), r.trailing_fm), (10, false));
        // Errors.
        let mut t = setup(vec![Some(vec![b'<'; 17]), None]);
        assert!(matches!(
            read_index_xml(&mut t, 16, 1000),
            Err(ConstructError::RecordTooLong {
                partition: 1,
                block: 5,
                block_size: 16
            })
        ));
        let mut t = setup(vec![full(0), full(1), full(1), None]);
        let e = read_index_xml(&mut t, 16, 40).unwrap_err();
        assert!(
            matches!(
                e,
                ConstructError::IndexTooLarge {
                    partition: 1,
                    block: 7,
                    limit: 40
                }
            ),
            "{e}"
        );
        let mut t = setup(vec![None]);
        assert!(matches!(
            read_index_xml(&mut t, 16, 1000),
            Err(ConstructError::EmptyIndex {
                partition: 1,
                block: 5
            })
        ));
        let mut t = setup(vec![]);
        assert!(matches!(
            read_index_xml(&mut t, 16, 1000),
            Err(ConstructError::EmptyIndex {
                partition: 1,
                block: 5
            })
        ));
        let mut t = setup(vec![Some(b"binary data".to_vec()), None]);
        assert!(matches!(
            read_index_xml(&mut t, 16, 1000),
            Err(ConstructError::NotAnIndex {
                partition: 1,
                block: 5
            })
        ));
        let mut t = setup(vec![Some(b"\xef\xbb\xbf<?xml".to_vec()), None]);
        assert!(read_index_xml(&mut t, 16, 1000).is_ok());
    }

    #[test]
    fn an_index_is_read_only_as_far_as_the_parser_goes() {
        // A 1000-record index whose XML goes wrong in its first record: the parser stops there, and
        // so does the reading; a parser that reads it all gets every byte and where it ends.
        let mut t = formatted();
        t.parts[1].push(None);
        let mut first = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<notanindex>".to_vec();
        first.resize(64, b' ');
        t.parts[1].push(Some(first));
        t.parts[1].extend((0..999).map(|_| Some(vec![b' '; 64])));
        t.parts[1].push(None);
        let start = Position {
            partition: 1,
            block: 5,
        };
        t.locate(start).unwrap();
        let r = read_index(&mut t, 64, 1 << 20, |r| {
            crate::index::Index::read_xml(r, &crate::index::Limits::default())
        })
        .unwrap();
        let e = r.unwrap_err();
        assert!(e.to_string().contains("notanindex"), "{e}");
        assert!(t.pos.block <= start.block + 2, "read up to {:?}", t.pos);
        t.locate(start).unwrap();
        let (n, at) = read_index(&mut t, 64, 1 << 20, |r| {
            std::io::copy(r, &mut std::io::sink())
        })
        .unwrap()
        .unwrap();
        assert_eq!((n, at.records, at.trailing_fm), (64_000, 1000, true));
        assert_eq!(at.end_block(), 1006);
        // The limit is applied while streaming, at the record that crosses it.
        t.locate(start).unwrap();
        let e =
            read_index(&mut t, 64, 100, |r| std::io::copy(r, &mut std::io::sink())).unwrap_err();
        assert!(
            matches!(e, ConstructError::IndexTooLarge { block: 6, .. }),
            "{e}"
        );
    }

    proptest::proptest! {
        /// The streamed read is the reference's rule, whatever the tape holds: records up to the first
        /// short one or FM, then whether a FM follows; at most `limit` bytes; never a panic.
        #[test]
        fn streamed_index_reads_follow_the_reference_rule(
            objs in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..20)),
                0..30,
            ),
            limit in 1usize..400,
        ) {
            let mut t = formatted();
            t.parts[1].push(None);
            let mut objs = objs;
            if let Some(Some(first)) = objs.first_mut() {
                first.splice(0..0, b"<?xml".iter().copied());
                first.truncate(16);
            }
            t.parts[1].extend(objs.iter().cloned());
            let start = Position { partition: 1, block: 5 };
            t.locate(start).unwrap();
            let got = read_index_xml(&mut t, 16, limit);
            // The rule, on the objects directly.
            let mut xml = Vec::new();
            let mut records = 0u64;
            let mut want = None;
            for (i, o) in objs.iter().enumerate() {
                match o {
                    None => {
                        want = Some(Ok(true));
                        break;
                    }
                    Some(r) if r.len() > 16 => {
                        want = Some(Err((true, 5 + i as u64)));
                        break;
                    }
                    Some(r) => {
                        if xml.len() + r.len() > limit {
                            want = Some(Err((false, 5 + i as u64)));
                            break;
                        }
                        xml.extend_from_slice(r);
                        records += 1;
                        if r.len() < 16 {
                            want = Some(Ok(matches!(objs.get(i + 1), Some(None))));
                            break;
                        }
                    }
                }
            }
            let want = want.unwrap_or(Ok(false));
            match (got, want) {
                (Ok(x), Ok(fm)) if records > 0 => {
                    proptest::prop_assert_eq!(&x.xml, &xml);
                    proptest::prop_assert_eq!((x.records, x.trailing_fm), (records, fm));
                }
                (Err(ConstructError::EmptyIndex { .. }), _) => proptest::prop_assert_eq!(records, 0),
                (Err(ConstructError::IndexTooLarge { block, .. }), Err((false, b)))
                | (Err(ConstructError::RecordTooLong { block, .. }), Err((true, b))) => {
                    proptest::prop_assert_eq!(block, b)
                }
                (got, want) => proptest::prop_assert!(false, "{:?} vs {:?}", got, want),
            }
        }
    }

    #[test]
    fn data_records() {
        let mut t = formatted();
        t.locate_eod(1).unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        let w = write_data_records(&mut t, &mut &data[..], 16).unwrap();
        assert_eq!(
            w,
            DataWritten {
                start: Position {
                    partition: 1,
                    block: 4
                },
                records: 7,
                bytes: 100,
                early_warning: false,
                complete: true
            }
        );
        let recs: Vec<usize> = t.parts[1][4..]
            .iter()
            .map(|r| r.as_ref().unwrap().len())
            .collect();
        assert_eq!(recs, [16, 16, 16, 16, 16, 16, 4]);
        // Exact multiple: no empty record.
        let w = write_data_records(&mut t, &mut &data[..32], 16).unwrap();
        assert_eq!((w.records, w.bytes, w.start.block), (2, 32, 11));
        let w = write_data_records(&mut t, &mut &b""[..], 16).unwrap();
        assert_eq!((w.records, w.complete), (0, true));
        // Early warning stops after that record.
        t.early_warning_from = Some(14);
        let w = write_data_records(&mut t, &mut &data[..], 16).unwrap();
        assert_eq!(
            (w.records, w.bytes, w.early_warning, w.complete),
            (2, 32, true, false)
        );
    }
}
