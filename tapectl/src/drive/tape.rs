//! [`Drive`]'s operations: records and filemarks, positioning (with the fallbacks in [`super::Quirks`]),
//! mode settings and partitioning, limits, cartridge memory and log pages, and the
//! [`ltfs::TapeDevice`] implementation on top of them.
//!
//! The inherent methods return [`DriveError`] (device, command, classification); the trait methods
//! convert to [`ltfs::DeviceError`].

use ltfs::mam::Attribute;
use ltfs::{DeviceError, Position, ReadOutcome, TapeDevice, WriteOutcome};
use scsi::{ScsiError, SenseKey, Transport};

use super::limits::{self, BlockLimits, DensityDescriptor};
use super::logs::{self, TapeAlerts};
use super::mam::{self, ReadAttributeAction};
use super::mode::{self, CompressionPage, ModeData, PageControl, PartitionPage};
use super::rw::{self, LocateTarget, PositionData, PositionForm, SpaceCode};
use super::{Buf, Drive, DriveError, is_illegal_request, is_invalid_opcode};

/// Largest READ ATTRIBUTE response tapectl asks for.
const MAX_ATTRIBUTE_DATA: usize = 1 << 20;
/// Allocation for LOG SENSE and MODE SENSE(10).
const LOG_ALLOC: u16 = 16 * 1024;
const MODE_ALLOC: u16 = 1024;

impl<T: Transport> Drive<T> {
    // ---- records ----

    /// Reads the next record into `buf` (READ(6), variable, SILI=1).
    ///
    /// A shorter record is [`ReadOutcome::Data`] with its length; a longer one is
    /// [`DeviceError::RecordTooLong`] (the drive has moved past it); a filemark is
    /// [`ReadOutcome::Filemark`] (position after it); BLANK CHECK is [`ReadOutcome::EndOfData`] (position
    /// unchanged); MEDIUM ERROR names the block being read.
    pub fn read_record(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, DriveError> {
        const CMD: &str = "READ(6)";
        let len = buf.len();
        if len == 0 || len > rw::MAX_TRANSFER_6 {
            return Err(self.error(
                CMD,
                DeviceError::IllegalRequest(format!(
                    "read buffer of {len} bytes (READ(6) takes 1 to {} bytes)",
                    rw::MAX_TRANSFER_6
                )),
            ));
        }
        let sense = match self.raw(&rw::read6_cdb(len), Buf::In(buf), false) {
            Ok(n) => {
                self.advance(1);
                return Ok(ReadOutcome::Data(n.min(len)));
            }
            Err(ScsiError::Sense {
                sense, transferred, ..
            }) => (sense, transferred),
            Err(e) => {
                let err = self.classify(CMD, e);
                self.lose_position();
                return Err(err);
            }
        };
        let (sense, transferred) = sense;
        if sense.filemark {
            self.advance(1);
            return Ok(ReadOutcome::Filemark);
        }
        if is_end_of_data(&sense) {
            return Ok(ReadOutcome::EndOfData);
        }
        if sense.ili && matches!(sense.key, SenseKey::NoSense | SenseKey::RecoveredError) {
            self.advance(1);
            return match sense.information {
                Some(i) if i < 0 => Err(self.error(
                    CMD,
                    DeviceError::RecordTooLong {
                        record: len.saturating_add(i.unsigned_abs() as usize),
                        buffer: len,
                    },
                )),
                // Drives that ignore SILI: the residual is requested minus actual.
                Some(i) if i > 0 && (i as u64) < len as u64 => {
                    Ok(ReadOutcome::Data(len - i as usize))
                }
                _ => Ok(ReadOutcome::Data(transferred.min(len))),
            };
        }
        if sense.eom && sense.key == SenseKey::NoSense {
            self.lose_position();
            return Err(self.error(CMD, DeviceError::EndOfMedium));
        }
        let err = self.sense_error(CMD, &sense);
        self.lose_position();
        Err(err)
    }

    /// Writes one record (WRITE(6), variable). Early warning (NO SENSE with EOM, record written) is
    /// [`WriteOutcome::EarlyWarning`] and stays latched until the next positioning command; VOLUME OVERFLOW,
    /// or EOM with nothing written, is [`DeviceError::EndOfMedium`].
    pub fn write_record(&mut self, data: &[u8]) -> Result<WriteOutcome, DriveError> {
        const CMD: &str = "WRITE(6)";
        let len = data.len();
        if len == 0 || len > rw::MAX_TRANSFER_6 {
            return Err(self.error(
                CMD,
                DeviceError::IllegalRequest(format!(
                    "record of {len} bytes (WRITE(6) takes 1 to {} bytes)",
                    rw::MAX_TRANSFER_6
                )),
            ));
        }
        match self.raw(&rw::write6_cdb(len), Buf::Out(data), false) {
            Ok(_) => {
                self.advance(1);
                Ok(self.write_outcome())
            }
            Err(e) => self.write_failure(CMD, e, len as i64, true),
        }
    }

    /// Writes `count` filemarks; `count == 0` flushes the drive's buffer to tape.
    pub fn write_marks(&mut self, count: u32) -> Result<WriteOutcome, DriveError> {
        const CMD: &str = "WRITE FILEMARKS(6)";
        if count as usize > rw::MAX_TRANSFER_6 {
            return Err(self.error(
                CMD,
                DeviceError::IllegalRequest(format!("{count} filemarks in one command")),
            ));
        }
        match self.raw(&rw::write_filemarks_cdb(count, false), Buf::None, false) {
            Ok(_) => {
                self.advance(count as u64);
                Ok(self.write_outcome())
            }
            Err(e) => self.write_failure(CMD, e, count as i64, false),
        }
    }

    fn write_outcome(&self) -> WriteOutcome {
        if self.early_warning {
            WriteOutcome::EarlyWarning
        } else {
            WriteOutcome::Written
        }
    }

    /// Sense after WRITE (`record`) or WRITE FILEMARKS. `requested` is the residual that means "nothing
    /// done": the record length, or the filemark count.
    fn write_failure(
        &mut self,
        command: &'static str,
        e: ScsiError,
        requested: i64,
        record: bool,
    ) -> Result<WriteOutcome, DriveError> {
        let ScsiError::Sense { sense, .. } = e else {
            let err = self.classify(command, e);
            self.lose_position();
            return Err(err);
        };
        if sense.eom && matches!(sense.key, SenseKey::NoSense | SenseKey::RecoveredError) {
            if sense.information == Some(requested) && requested > 0 {
                // End of medium: nothing was written.
                return Err(self.error(command, DeviceError::EndOfMedium));
            }
            let done = match sense.information {
                Some(residual) if residual > 0 && residual < requested => requested - residual,
                _ => requested,
            };
            self.advance(if record { 1 } else { done as u64 });
            self.early_warning = true;
            tracing::info!(device = %self.device, %sense, "early warning: the tape is nearly full");
            return Ok(WriteOutcome::EarlyWarning);
        }
        let err = self.sense_error(command, &sense);
        self.lose_position();
        Err(err)
    }

    // ---- positioning ----

    /// Moves to the beginning of partition 0. REWIND goes to the beginning of the *current* partition
    /// (SSC-4), so READ POSITION checks which one it was and LOCATE finishes the job if needed.
    pub fn rewind_to_bot(&mut self) -> Result<(), DriveError> {
        let previous = self
            .position
            .map(|p| p.partition)
            .unwrap_or(self.last_known.partition);
        self.cmd("REWIND", &rw::rewind_cdb(false), Buf::None, true)?;
        self.early_warning = false;
        let reported = if self.quirks.read_position_stub {
            Some(0)
        } else {
            match self.read_position_data() {
                Ok(pd) if !pd.unknown => u8::try_from(pd.partition).ok(),
                _ => None,
            }
        };
        let partition = reported.unwrap_or(previous);
        self.set_position(Position {
            partition,
            block: 0,
        });
        if partition != 0 {
            return self.locate_to(Position {
                partition: 0,
                block: 0,
            });
        }
        Ok(())
    }

    /// Moves to logical object `to.block` of partition `to.partition`: LOCATE(16), else LOCATE(10), else
    /// REWIND and SPACE over blocks (partition 0 only).
    pub fn locate_to(&mut self, to: Position) -> Result<(), DriveError> {
        self.early_warning = false;
        if !self.quirks.no_locate_16 {
            let cdb = rw::locate16_cdb(LocateTarget::Object(to.block), Some(to.partition), false);
            match self.raw(&cdb, Buf::None, true) {
                Ok(_) => {
                    self.set_position(to);
                    return Ok(());
                }
                Err(e) if is_invalid_opcode(&e) => {
                    tracing::info!(device = %self.device, "LOCATE(16) unsupported, using LOCATE(10)");
                    self.quirks.no_locate_16 = true;
                }
                Err(e) => return Err(self.locate_failure("LOCATE(16)", e, to)),
            }
        }
        if !self.quirks.no_locate {
            let Ok(block) = u32::try_from(to.block) else {
                return Err(self.error(
                    "LOCATE(10)",
                    DeviceError::Unsupported(format!(
                        "LOCATE(10) to block {} (beyond 32 bits; the drive has no LOCATE(16))",
                        to.block
                    )),
                ));
            };
            match self.raw(
                &rw::locate10_cdb(block, Some(to.partition), false),
                Buf::None,
                true,
            ) {
                Ok(_) => {
                    self.set_position(to);
                    return Ok(());
                }
                Err(e) if is_invalid_opcode(&e) => {
                    tracing::info!(device = %self.device, "LOCATE unsupported, positioning with REWIND and SPACE");
                    self.quirks.no_locate = true;
                }
                Err(e) => return Err(self.locate_failure("LOCATE(10)", e, to)),
            }
        }
        self.locate_by_spacing(to)
    }

    fn locate_failure(&mut self, command: &'static str, e: ScsiError, to: Position) -> DriveError {
        let err = match e.sense() {
            Some(s) if is_end_of_data(s) => self.error(
                command,
                DeviceError::IllegalRequest(format!(
                    "partition {} block {} is past the end of data",
                    to.partition, to.block
                )),
            ),
            _ => self.classify(command, e),
        };
        self.lose_position();
        err
    }

    /// For drives without LOCATE (tgt): REWIND, then SPACE over blocks; a filemark met on the way stops
    /// the space after it (and counts as one object).
    fn locate_by_spacing(&mut self, to: Position) -> Result<(), DriveError> {
        const CMD: &str = "SPACE(6)";
        if to.partition != 0 {
            return Err(self.error(
                "LOCATE",
                DeviceError::Unsupported(format!(
                    "LOCATE to partition {} (the drive has no LOCATE command)",
                    to.partition
                )),
            ));
        }
        self.cmd("REWIND", &rw::rewind_cdb(false), Buf::None, true)?;
        self.set_position(Position {
            partition: 0,
            block: 0,
        });
        let mut remaining = to.block;
        while remaining > 0 {
            let n = remaining.min(rw::MAX_SPACE_6 as u64);
            let cdb =
                rw::space6_cdb(SpaceCode::Blocks, n as i64).expect("count within SPACE(6) range");
            match self.raw(&cdb, Buf::None, false) {
                Ok(_) => {
                    self.advance(n);
                    remaining -= n;
                }
                Err(ScsiError::Sense { sense, .. }) if sense.filemark => {
                    let residual = sense.information.unwrap_or(0).unsigned_abs().min(n);
                    let moved = (n - residual).saturating_add(1).min(remaining);
                    self.advance(moved);
                    remaining -= moved;
                }
                Err(e) => return Err(self.locate_failure(CMD, e, to)),
            }
        }
        Ok(())
    }

    /// The position, from READ POSITION (long form, else short), or from the cache when the drive's
    /// READ POSITION is a stub.
    pub fn read_position(&mut self) -> Result<Position, DriveError> {
        if self.quirks.read_position_stub {
            return self.position.ok_or_else(|| {
                self.error(
                    "READ POSITION",
                    DeviceError::Unsupported("READ POSITION (the drive answers zeros, and tapectl lost track of the position after a SPACE or an error)".into()),
                )
            });
        }
        let pd = self.read_position_data()?;
        if pd.unknown {
            return Err(self.error(
                "READ POSITION",
                DeviceError::Other("the drive does not know its position".into()),
            ));
        }
        // All zeros and no BOP flag (an SSC drive at block 0 sets BOP): tgt's stub. Believe it only where
        // it agrees with our own bookkeeping.
        if pd.looks_like_stub() {
            match self.position {
                Some(cached) if cached.block > 0 => {
                    tracing::warn!(device = %self.device, ?cached, "READ POSITION says 0/0 after records moved: treating it as a stub");
                    self.quirks.read_position_stub = true;
                    return Ok(cached);
                }
                Some(cached) => return Ok(cached),
                None => {
                    return Err(self.error(
                        "READ POSITION",
                        DeviceError::Unsupported(
                            "READ POSITION (the drive answered zeros without the beginning-of-partition flag, and tapectl does not know the position: rewind or locate first)".into(),
                        ),
                    ));
                }
            }
        }
        let Ok(partition) = u8::try_from(pd.partition) else {
            return Err(self.bad_response(
                "READ POSITION",
                format!("partition number {}", pd.partition),
            ));
        };
        let p = Position {
            partition,
            block: pd.block,
        };
        self.set_position(p);
        Ok(p)
    }

    /// READ POSITION as the drive reports it (long form, else the short form).
    pub fn read_position_data(&mut self) -> Result<PositionData, DriveError> {
        if !self.quirks.read_position_short_only {
            let mut b = [0u8; 32];
            match self.raw(
                &rw::read_position_cdb(PositionForm::Long),
                Buf::In(&mut b),
                true,
            ) {
                Ok(n) => {
                    if let Some(pd) = PositionData::decode_long(&b[..n.min(b.len())]) {
                        return Ok(pd);
                    }
                    tracing::info!(device = %self.device, bytes = n, "READ POSITION long form came back short, using the short form");
                    self.quirks.read_position_short_only = true;
                }
                Err(e) if is_illegal_request(&e) => {
                    tracing::info!(device = %self.device, "READ POSITION long form unsupported, using the short form");
                    self.quirks.read_position_short_only = true;
                }
                Err(e) => return Err(self.classify("READ POSITION", e)),
            }
        }
        let mut b = [0u8; 20];
        let n = self.cmd(
            "READ POSITION",
            &rw::read_position_cdb(PositionForm::Short),
            Buf::In(&mut b),
            true,
        )?;
        PositionData::decode_short(&b[..n.min(b.len())])
            .ok_or_else(|| self.bad_response("READ POSITION", format!("{n} bytes")))
    }

    /// Moves to end of data on `partition`: LOCATE(16) to EOD, else LOCATE to block 0 then SPACE to EOD.
    pub fn locate_to_eod(&mut self, partition: u8) -> Result<(), DriveError> {
        self.early_warning = false;
        if !self.quirks.no_locate_eod && !self.quirks.no_locate_16 {
            match self.raw(
                &rw::locate16_cdb(LocateTarget::EndOfData, Some(partition), false),
                Buf::None,
                true,
            ) {
                Ok(_) => {
                    self.lose_position();
                    self.last_known.partition = partition;
                    let _ = self.read_position();
                    return Ok(());
                }
                Err(e) if is_illegal_request(&e) => {
                    tracing::info!(device = %self.device, "LOCATE(16) to end of data unsupported, using SPACE");
                    self.quirks.no_locate_eod = true;
                    if is_invalid_opcode(&e) {
                        self.quirks.no_locate_16 = true;
                    }
                }
                Err(e) => {
                    let err = self.classify("LOCATE(16)", e);
                    self.lose_position();
                    return Err(err);
                }
            }
        }
        self.locate_to(Position {
            partition,
            block: 0,
        })?;
        let cdb = rw::space6_cdb(SpaceCode::EndOfData, 0).expect("0 fits");
        let r = self.raw(&cdb, Buf::None, false);
        self.lose_position();
        match r {
            Ok(_) => {
                let _ = self.read_position();
                Ok(())
            }
            Err(e) => Err(self.classify("SPACE(6)", e)),
        }
    }

    /// Spaces over `count` filemarks (negative: backwards). Running into end of data or the beginning of
    /// the partition first is an error saying how many were passed.
    pub fn space_marks(&mut self, count: i64) -> Result<(), DriveError> {
        if count == 0 {
            return Ok(());
        }
        let (command, r) = match rw::space6_cdb(SpaceCode::Filemarks, count) {
            Some(cdb) => ("SPACE(6)", self.raw(&cdb, Buf::None, false)),
            None => (
                "SPACE(16)",
                self.raw(
                    &rw::space16_cdb(SpaceCode::Filemarks, count),
                    Buf::None,
                    false,
                ),
            ),
        };
        self.early_warning = false;
        self.lose_position();
        let e = match r {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // "after 1 of 3"; without an INFORMATION field (tgt) the count is unknown: "before 3".
        let passed = |info: Option<i64>| match info {
            Some(i) => format!(
                "after {} of {}",
                count.unsigned_abs().saturating_sub(i.unsigned_abs()),
                count.unsigned_abs()
            ),
            None => format!("before {}", count.unsigned_abs()),
        };
        match e.sense() {
            Some(s) if is_end_of_data(s) => Err(self.error(
                command,
                DeviceError::Other(format!("end of data {} filemarks", passed(s.information))),
            )),
            Some(s) if s.eom && s.key == SenseKey::NoSense => {
                let edge = if count < 0 { "beginning" } else { "end" };
                Err(self.error(
                    command,
                    DeviceError::Other(format!(
                        "{edge} of partition {} filemarks",
                        passed(s.information)
                    )),
                ))
            }
            _ => Err(self.classify(command, e)),
        }
    }

    // ---- limits, modes, partitions ----

    /// READ BLOCK LIMITS (asked once, then cached).
    pub fn block_limits(&mut self) -> Result<BlockLimits, DriveError> {
        if let Some(l) = self.limits {
            return Ok(l);
        }
        let mut b = [0u8; 6];
        let n = self.cmd(
            "READ BLOCK LIMITS",
            &limits::read_block_limits_cdb(),
            Buf::In(&mut b),
            true,
        )?;
        let l = BlockLimits::decode(&b[..n.min(6)])
            .ok_or_else(|| self.bad_response("READ BLOCK LIMITS", format!("{n} bytes")))?;
        self.limits = Some(l);
        Ok(l)
    }

    /// REPORT DENSITY SUPPORT for the drive (`media == false`) or the loaded cartridge.
    pub fn density_support(&mut self, media: bool) -> Result<Vec<DensityDescriptor>, DriveError> {
        let mut b = vec![0u8; 4 + 32 * limits::DENSITY_DESCRIPTOR_LEN];
        let alloc = b.len() as u16;
        let n = self.cmd(
            "REPORT DENSITY SUPPORT",
            &limits::report_density_cdb(media, alloc),
            Buf::In(&mut b),
            true,
        )?;
        Ok(limits::decode_density_report(&b[..n.min(b.len())]))
    }

    /// MODE SENSE of one page (current values, block descriptor included): the 10-byte command, or the
    /// 6-byte one on drives that lack it.
    pub fn mode_sense(&mut self, page: u8) -> Result<ModeData, DriveError> {
        if !self.quirks.mode_6_only {
            let mut b = vec![0u8; MODE_ALLOC as usize];
            match self.raw(
                &mode::mode_sense10_cdb(page, PageControl::Current, MODE_ALLOC),
                Buf::In(&mut b),
                true,
            ) {
                Ok(n) => {
                    return ModeData::decode10(&b[..n.min(b.len())])
                        .ok_or_else(|| self.bad_response("MODE SENSE(10)", format!("{n} bytes")));
                }
                Err(e) if is_invalid_opcode(&e) => {
                    tracing::info!(device = %self.device, "MODE SENSE(10) unsupported, using MODE SENSE(6)");
                    self.quirks.mode_6_only = true;
                }
                Err(e) => return Err(self.classify("MODE SENSE(10)", e)),
            }
        }
        let mut b = [0u8; 255];
        let n = self.cmd(
            "MODE SENSE(6)",
            &mode::mode_sense6_cdb(page, PageControl::Current, 255),
            Buf::In(&mut b),
            true,
        )?;
        ModeData::decode6(&b[..n.min(b.len())])
            .ok_or_else(|| self.bad_response("MODE SENSE(6)", format!("{n} bytes")))
    }

    /// MODE SELECT of sensed-and-modified mode data: the 10-byte command, or the 6-byte one on drives
    /// that lack it (tgt has MODE SENSE(10) but not MODE SELECT(10)).
    pub fn mode_select(&mut self, data: &ModeData) -> Result<(), DriveError> {
        if !self.quirks.mode_6_only {
            let p = data.encode_select(true);
            let len = u16::try_from(p.len()).unwrap_or(u16::MAX);
            match self.raw(&mode::mode_select10_cdb(len), Buf::Out(&p), true) {
                Ok(_) => return Ok(()),
                Err(e) if is_invalid_opcode(&e) => {
                    tracing::info!(device = %self.device, "MODE SELECT(10) unsupported, using MODE SELECT(6)");
                    self.quirks.mode_6_only = true;
                }
                Err(e) => return Err(self.classify("MODE SELECT(10)", e)),
            }
        }
        let p = data.encode_select(false);
        let Ok(len) = u8::try_from(p.len()) else {
            return Err(self.error(
                "MODE SELECT(6)",
                DeviceError::IllegalRequest(format!("{} bytes of mode data", p.len())),
            ));
        };
        self.cmd(
            "MODE SELECT(6)",
            &mode::mode_select6_cdb(len),
            Buf::Out(&p),
            true,
        )
        .map(|_| ())
    }

    /// Mode data with page 0x0F when the drive has it, else header and block descriptor only.
    fn mode_for_change(&mut self) -> Result<ModeData, DriveError> {
        match self.mode_sense(mode::PAGE_COMPRESSION) {
            Ok(m) => Ok(m),
            Err(e)
                if matches!(
                    e.kind(),
                    Some(DeviceError::IllegalRequest(_) | DeviceError::Unsupported(_))
                ) =>
            {
                let mut m = self.mode_sense(0)?;
                m.pages.clear();
                Ok(m)
            }
            Err(e) => Err(e),
        }
    }

    /// Variable-length records (block length 0 in the block descriptor).
    pub fn set_variable_blocks(&mut self) -> Result<(), DriveError> {
        let mut m = self.mode_for_change()?;
        m.pages.clear();
        m.block_descriptor
            .get_or_insert(mode::BlockDescriptor {
                density: 0,
                blocks: 0,
                block_length: 0,
            })
            .block_length = 0;
        self.mode_select(&m)
    }

    /// Buffered mode on (writes complete when the data is in the drive's buffer) or off.
    pub fn set_buffered_mode(&mut self, on: bool) -> Result<(), DriveError> {
        let mut m = self.mode_for_change()?;
        m.pages.clear();
        m.buffered_mode = on as u8;
        self.mode_select(&m)
    }

    /// Hardware compression (page 0x0F DCE). `Ok(false)` when the drive has no compression page.
    pub fn set_compression(&mut self, on: bool) -> Result<bool, DriveError> {
        let mut m = self.mode_for_change()?;
        let Some(page) = compression_page_with_dce(&mut m, on) else {
            return Ok(false);
        };
        m.pages = page;
        self.mode_select(&m)?;
        Ok(true)
    }

    /// The defaults tapectl writes with: variable blocks, buffered mode, compression on, in one MODE
    /// SELECT. Compression is left alone when the drive is not compression capable (DCC clear, as on tgt)
    /// or refuses the compression page (26/00: then the rest is selected without it).
    pub fn set_default_modes(&mut self) -> Result<(), DriveError> {
        let mut m = self.mode_for_change()?;
        m.block_descriptor
            .get_or_insert(mode::BlockDescriptor {
                density: 0,
                blocks: 0,
                block_length: 0,
            })
            .block_length = 0;
        m.buffered_mode = 1;
        m.pages = compression_page_with_dce(&mut m, true).unwrap_or_default();
        if m.pages.is_empty() {
            tracing::info!(device = %self.device, "the drive cannot compress: compression left as it is");
            return self.mode_select(&m);
        }
        match self.mode_select(&m) {
            Err(e) if matches!(e.kind(), Some(DeviceError::IllegalRequest(_))) => {
                tracing::info!(device = %self.device, error = %e, "compression page refused: selecting without it");
                m.pages.clear();
                self.mode_select(&m)
            }
            r => r,
        }
    }

    /// Partitions on the loaded cartridge (page 0x11); 1 when the drive has no medium partition page.
    pub fn partitions(&mut self) -> Result<u8, DriveError> {
        match self.mode_sense(mode::PAGE_MEDIUM_PARTITION) {
            Ok(m) => Ok(m
                .page(mode::PAGE_MEDIUM_PARTITION)
                .and_then(PartitionPage::decode)
                .map(|p| p.additional_defined.saturating_add(1))
                .unwrap_or(1)),
            Err(e) if matches!(e.kind(), Some(DeviceError::IllegalRequest(_))) => Ok(1),
            Err(e) => Err(e),
        }
    }

    /// Makes the cartridge two partitions, `index_mb` MB for partition 0 and the rest for partition 1:
    /// position at BOP of partition 0, MODE SELECT page 0x11, FORMAT MEDIUM format 1. Destroys the tape's
    /// contents.
    pub fn format_partitions(&mut self, index_mb: u32) -> Result<(), DriveError> {
        let Some(mb) = u16::try_from(index_mb)
            .ok()
            .filter(|m| (1..0xffff).contains(m))
        else {
            return Err(self.error(
                "MODE SELECT",
                DeviceError::IllegalRequest(format!(
                    "index partition of {index_mb} MB (1 to 65534 MB)"
                )),
            ));
        };
        self.locate_to(Position {
            partition: 0,
            block: 0,
        })?;
        let mut m = self.mode_sense(mode::PAGE_MEDIUM_PARTITION)?;
        let Some(page) = m.page(mode::PAGE_MEDIUM_PARTITION) else {
            return Err(self.error(
                "MODE SENSE",
                DeviceError::Unsupported(
                    "partitioning (the drive returned no medium partition page)".into(),
                ),
            ));
        };
        let Some(new) = mode::two_partition_page(page, mb) else {
            return Err(
                self.bad_response("MODE SENSE", format!("medium partition page {page:02x?}"))
            );
        };
        m.pages = new;
        self.mode_select(&m)?;
        let r = self.cmd(
            "FORMAT MEDIUM",
            &mode::format_medium_cdb(1, false),
            Buf::None,
            false,
        );
        self.early_warning = false;
        match r {
            Ok(_) => {
                self.set_position(Position {
                    partition: 0,
                    block: 0,
                });
                Ok(())
            }
            Err(e) => {
                self.lose_position();
                Err(e)
            }
        }
    }

    // ---- cartridge memory ----

    /// One MAM attribute of a partition; `None` when the cartridge does not have it.
    pub fn attribute(&mut self, partition: u8, id: u16) -> Result<Option<Attribute>, DriveError> {
        const CMD: &str = "READ ATTRIBUTE";
        let mut alloc = 4096usize;
        loop {
            let mut b = vec![0u8; alloc];
            let cdb =
                mam::read_attribute_cdb(ReadAttributeAction::Values, partition, id, alloc as u32);
            let n = match self.raw(&cdb, Buf::In(&mut b), true) {
                Ok(n) => n.min(alloc),
                Err(e)
                    if e.sense()
                        .is_some_and(|s| s.key == SenseKey::IllegalRequest && s.asc == 0x24) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(self.classify(CMD, e)),
            };
            let got = &b[..n];
            if let Some(a) = mam::decode_one_attribute(got, id) {
                return Ok(Some(a));
            }
            // The value did not fit: ask again for the size the header announced.
            let first_is_ours = scsi::be::u16_at(got, 4) == Some(id);
            match mam::attribute_data_len(got) {
                Some(need) if first_is_ours && need > alloc && alloc < MAX_ATTRIBUTE_DATA => {
                    alloc = need.min(MAX_ATTRIBUTE_DATA)
                }
                _ => return Ok(None),
            }
        }
    }

    /// Every attribute of a partition that fits in 64 KiB (READ ATTRIBUTE from identifier 0).
    pub fn attributes(&mut self, partition: u8) -> Result<Vec<Attribute>, DriveError> {
        let mut b = vec![0u8; 64 * 1024];
        let cdb =
            mam::read_attribute_cdb(ReadAttributeAction::Values, partition, 0, b.len() as u32);
        let n = self.cmd("READ ATTRIBUTE", &cdb, Buf::In(&mut b), true)?;
        mam::decode_attribute_values(&b[..n.min(b.len())])
            .ok_or_else(|| self.bad_response("READ ATTRIBUTE", format!("{n} bytes")))
    }

    /// The identifiers of the attributes a partition has (READ ATTRIBUTE service action 1).
    pub fn attribute_ids(&mut self, partition: u8) -> Result<Vec<u16>, DriveError> {
        let mut b = vec![0u8; 8 * 1024];
        let cdb = mam::read_attribute_cdb(ReadAttributeAction::List, partition, 0, b.len() as u32);
        let n = self.cmd("READ ATTRIBUTE", &cdb, Buf::In(&mut b), true)?;
        Ok(mam::decode_attribute_list(&b[..n.min(b.len())]))
    }

    /// Writes one MAM attribute (WRITE ATTRIBUTE, write-through).
    pub fn set_attribute(
        &mut self,
        partition: u8,
        attribute: &Attribute,
    ) -> Result<(), DriveError> {
        let p = mam::encode_write_attribute(std::slice::from_ref(attribute));
        self.cmd(
            "WRITE ATTRIBUTE",
            &mam::write_attribute_cdb(partition, p.len() as u32),
            Buf::Out(&p),
            true,
        )
        .map(|_| ())
    }

    // ---- log pages ----

    /// LOG SENSE of one page, raw.
    pub fn log_sense(&mut self, page: u8, subpage: u8) -> Result<Vec<u8>, DriveError> {
        let mut b = vec![0u8; LOG_ALLOC as usize];
        let n = self.cmd(
            "LOG SENSE",
            &logs::log_sense_cdb(page, subpage, LOG_ALLOC),
            Buf::In(&mut b),
            true,
        )?;
        b.truncate(n.min(LOG_ALLOC as usize));
        Ok(b)
    }

    /// TapeAlert flags: page 0x12 (leaves the flags set), else page 0x2E (reading it clears them).
    pub fn tape_alerts(&mut self) -> Result<TapeAlerts, DriveError> {
        if !self.quirks.tape_alert_page_2e {
            match self.log_sense(logs::PAGE_TAPE_ALERT_RESPONSE, 0) {
                Ok(b) => {
                    if let Some(t) = TapeAlerts::decode_response_page(&b) {
                        return Ok(t);
                    }
                }
                // No LOG SENSE at all (tgt): page 0x2E will not be there either.
                Err(e) if matches!(e.kind(), Some(DeviceError::Unsupported(_))) => return Err(e),
                Err(e) if matches!(e.kind(), Some(DeviceError::IllegalRequest(_))) => {}
                Err(e) => return Err(e),
            }
        }
        let b = self.log_sense(logs::PAGE_TAPE_ALERT, 0)?;
        let t = TapeAlerts::decode_page(&b).ok_or_else(|| {
            self.bad_response("LOG SENSE", format!("TapeAlert page of {} bytes", b.len()))
        })?;
        if !self.quirks.tape_alert_page_2e {
            tracing::info!(device = %self.device, "no TapeAlert Response page: reading page 0x2E, which clears the flags");
            self.quirks.tape_alert_page_2e = true;
        }
        Ok(t)
    }

    /// Volume statistics (page 0x17), decoded generically.
    pub fn volume_statistics(&mut self) -> Result<Vec<logs::VolumeStatistic>, DriveError> {
        let b = self.log_sense(logs::PAGE_VOLUME_STATISTICS, 0)?;
        logs::decode_volume_statistics(&b).ok_or_else(|| {
            self.bad_response(
                "LOG SENSE",
                format!("volume statistics page of {} bytes", b.len()),
            )
        })
    }

    /// IBM's tape capacity page (0x31): remaining and maximum MiB of partitions 0 and 1.
    pub fn tape_capacity(&mut self) -> Result<logs::TapeCapacity, DriveError> {
        let b = self.log_sense(logs::PAGE_TAPE_CAPACITY, 0)?;
        logs::TapeCapacity::decode(&b).ok_or_else(|| {
            self.bad_response(
                "LOG SENSE",
                format!("tape capacity page of {} bytes", b.len()),
            )
        })
    }
}

/// Page 0x0F from `m` with DCE set to `on`, when the drive has the page and is compression capable (DCC).
fn compression_page_with_dce(m: &mut ModeData, on: bool) -> Option<Vec<u8>> {
    let page = m.page_mut(mode::PAGE_COMPRESSION)?;
    if !CompressionPage::decode(page).is_some_and(|c| c.dcc) || !CompressionPage::set_dce(page, on)
    {
        return None;
    }
    Some(page.to_vec())
}

/// End of data: BLANK CHECK (SSC), or NO SENSE 00/05 "end-of-data detected" as tgt reports it when a
/// SPACE runs into end of data.
fn is_end_of_data(s: &scsi::Sense) -> bool {
    s.key == SenseKey::BlankCheck || (s.key == SenseKey::NoSense && s.asc == 0x00 && s.ascq == 0x05)
}

impl<T: Transport> TapeDevice for Drive<T> {
    fn max_block_size(&mut self) -> ltfs::device::Result<usize> {
        Ok(self.block_limits()?.max_record())
    }

    fn partition_count(&mut self) -> ltfs::device::Result<u8> {
        Ok(self.partitions()?)
    }

    fn format_two_partitions(&mut self, index_partition_mb: u32) -> ltfs::device::Result<()> {
        Ok(self.format_partitions(index_partition_mb)?)
    }

    fn rewind(&mut self) -> ltfs::device::Result<()> {
        Ok(self.rewind_to_bot()?)
    }

    fn locate(&mut self, to: Position) -> ltfs::device::Result<()> {
        Ok(self.locate_to(to)?)
    }

    fn position(&mut self) -> ltfs::device::Result<Position> {
        Ok(self.read_position()?)
    }

    fn locate_eod(&mut self, partition: u8) -> ltfs::device::Result<()> {
        Ok(self.locate_to_eod(partition)?)
    }

    fn space_filemarks(&mut self, count: i32) -> ltfs::device::Result<()> {
        Ok(self.space_marks(count as i64)?)
    }

    fn read_block(&mut self, buf: &mut [u8]) -> ltfs::device::Result<ReadOutcome> {
        Ok(self.read_record(buf)?)
    }

    fn write_block(&mut self, data: &[u8]) -> ltfs::device::Result<WriteOutcome> {
        Ok(self.write_record(data)?)
    }

    fn write_filemarks(&mut self, count: u32) -> ltfs::device::Result<WriteOutcome> {
        Ok(self.write_marks(count)?)
    }

    fn read_attribute(
        &mut self,
        partition: u8,
        id: u16,
    ) -> ltfs::device::Result<Option<Attribute>> {
        Ok(self.attribute(partition, id)?)
    }

    fn write_attribute(
        &mut self,
        partition: u8,
        attribute: &Attribute,
    ) -> ltfs::device::Result<()> {
        Ok(self.set_attribute(partition, attribute)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::mode::BlockDescriptor;
    use super::super::script::{Script, Step};
    use super::*;
    use ltfs::mam::AttributeFormat;
    use scsi::{Completion, Sense};

    fn sense(key: SenseKey, asc: u8, ascq: u8) -> Sense {
        Sense::new(key, asc, ascq)
    }

    fn with(mut s: Sense, f: impl FnOnce(&mut Sense)) -> Sense {
        f(&mut s);
        s
    }

    fn pos(partition: u8, block: u64) -> Position {
        Position { partition, block }
    }

    fn long_pos(partition: u32, block: u64) -> Vec<u8> {
        PositionData {
            partition,
            block,
            file: Some(0),
            bop: block == 0,
            eop: false,
            bpew: false,
            unknown: false,
        }
        .encode_long()
        .to_vec()
    }

    /// A drive positioned at `at` by a LOCATE(16).
    fn drive_at(at: Position, steps: Vec<Step>) -> Drive<Script> {
        let mut all = vec![Step::ok(&[0x92])];
        all.extend(steps);
        let mut d = Script::drive(all);
        d.locate_to(at).unwrap();
        d
    }

    #[test]
    fn reads_records_filemarks_and_eod() {
        let mut d = drive_at(
            pos(1, 10),
            vec![
                // SILI: a short record is GOOD with a residual.
                Step {
                    cdb: vec![0x08, 0x02, 0, 0x10, 0],
                    data_in: vec![5; 100],
                    completion: Completion::good(100),
                },
                Step::sense(
                    &[0x08],
                    with(sense(SenseKey::NoSense, 0, 1), |s| s.filemark = true),
                ),
                Step::sense(
                    &[0x08],
                    with(sense(SenseKey::BlankCheck, 0, 5), |s| s.eom = true),
                ),
            ],
        );
        let mut buf = vec![0u8; 4096];
        assert_eq!(d.read_record(&mut buf).unwrap(), ReadOutcome::Data(100));
        assert_eq!(d.read_record(&mut buf).unwrap(), ReadOutcome::Filemark);
        assert_eq!(d.read_record(&mut buf).unwrap(), ReadOutcome::EndOfData);
        assert_eq!(d.cached_position(), Some(pos(1, 12)));
        assert!(d.transport().done());
    }

    #[test]
    fn read_errors_are_classified() {
        let too_long = with(sense(SenseKey::NoSense, 0, 0), |s| {
            s.ili = true;
            s.information = Some(-4096);
        });
        let mut d = drive_at(
            pos(0, 7),
            vec![
                Step::sense(&[0x08], too_long),
                Step::sense(&[0x08], sense(SenseKey::MediumError, 0x11, 0)),
                Step::sense(&[0x08], sense(SenseKey::NotReady, 0x3a, 0)),
                Step::sense(&[0x08], sense(SenseKey::UnitAttention, 0x28, 0)),
            ],
        );
        let mut buf = vec![0u8; 1024];
        let e = d.read_record(&mut buf).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                Some(DeviceError::RecordTooLong {
                    record: 5120,
                    buffer: 1024
                })
            ),
            "{e}"
        );
        assert_eq!(
            d.cached_position(),
            Some(pos(0, 8)),
            "the drive moved past the long record"
        );
        let e: DeviceError = d.read_record(&mut buf).unwrap_err().into();
        match e {
            DeviceError::Medium {
                partition,
                block,
                detail,
            } => {
                assert_eq!((partition, block), (0, 8));
                assert_eq!(
                    detail,
                    "script: READ(6): MEDIUM ERROR 11/00 (unrecovered read error)"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.cached_position(), None);
        let e = TapeDevice::read_block(&mut d, &mut buf).unwrap_err();
        assert!(matches!(e, DeviceError::NoMedium));
        // A unit attention on READ is not retried: the position is gone.
        let e = d.read_record(&mut buf).unwrap_err();
        assert!(e.to_string().contains("position is lost"), "{e}");
        assert!(d.transport().done());
        // Refused before anything is sent.
        assert!(matches!(
            d.read_record(&mut []).unwrap_err().kind(),
            Some(DeviceError::IllegalRequest(_))
        ));
    }

    #[test]
    fn early_warning_is_latched_until_positioning() {
        let ew = with(sense(SenseKey::NoSense, 0, 2), |s| {
            s.eom = true;
            s.information = Some(0);
        });
        let mut d = drive_at(
            pos(1, 100),
            vec![
                Step::ok(&[0x0a, 0, 0, 0, 4]),
                Step::sense(&[0x0a], ew.clone()),
                Step::ok(&[0x0a]),
                Step::sense(&[0x10, 0, 0, 0, 1], ew),
                Step::ok(&[0x92]),
                Step::ok(&[0x0a]),
            ],
        );
        assert_eq!(d.write_record(b"abcd").unwrap(), WriteOutcome::Written);
        assert_eq!(d.write_record(b"efgh").unwrap(), WriteOutcome::EarlyWarning);
        assert!(d.early_warning());
        assert_eq!(d.write_record(b"ijkl").unwrap(), WriteOutcome::EarlyWarning);
        assert_eq!(
            TapeDevice::write_filemarks(&mut d, 1).unwrap(),
            WriteOutcome::EarlyWarning
        );
        assert_eq!(d.cached_position(), Some(pos(1, 104)));
        d.locate_to(pos(1, 0)).unwrap();
        assert!(!d.early_warning());
        assert_eq!(d.write_record(b"mnop").unwrap(), WriteOutcome::Written);
        assert_eq!(d.transport().sent.concat(), b"abcdefghijklmnop");
    }

    #[test]
    fn write_errors_are_classified() {
        let eom_nothing_written = with(sense(SenseKey::NoSense, 0, 2), |s| {
            s.eom = true;
            s.information = Some(4);
        });
        let mut d = drive_at(
            pos(0, 3),
            vec![
                Step::sense(&[0x0a], eom_nothing_written),
                Step::sense(
                    &[0x0a],
                    with(sense(SenseKey::VolumeOverflow, 0, 2), |s| s.eom = true),
                ),
                Step::sense(&[0x0a], sense(SenseKey::DataProtect, 0x27, 0)),
                Step::sense(&[0x0a], sense(SenseKey::MediumError, 0x0c, 0)),
            ],
        );
        assert!(matches!(
            TapeDevice::write_block(&mut d, b"abcd").unwrap_err(),
            DeviceError::EndOfMedium
        ));
        assert_eq!(d.cached_position(), Some(pos(0, 3)), "nothing was written");
        assert!(matches!(
            TapeDevice::write_block(&mut d, b"abcd").unwrap_err(),
            DeviceError::EndOfMedium
        ));
        assert!(matches!(
            TapeDevice::write_block(&mut d, b"abcd").unwrap_err(),
            DeviceError::WriteProtected
        ));
        match TapeDevice::write_block(&mut d, b"abcd").unwrap_err() {
            DeviceError::Medium {
                partition: 0,
                block: 3,
                detail,
            } => assert!(detail.contains("write error"), "{detail}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            TapeDevice::write_block(&mut d, b"").unwrap_err(),
            DeviceError::IllegalRequest(_)
        ));
        assert!(d.transport().done());
    }

    #[test]
    fn read_position_long_short_and_stub() {
        // Long form works.
        let mut d = Script::drive(vec![Step::data(&[0x34, 6], long_pos(1, 77))]);
        assert_eq!(d.read_position().unwrap(), pos(1, 77));
        assert!(!d.quirks().read_position_short_only);

        // Long form refused: short form from then on.
        let short = PositionData {
            partition: 1,
            block: 5,
            file: None,
            bop: false,
            eop: false,
            bpew: false,
            unknown: false,
        }
        .encode_short();
        let mut d = Script::drive(vec![
            Step::sense(&[0x34, 6], sense(SenseKey::IllegalRequest, 0x24, 0)),
            Step::data(&[0x34, 0], short),
            Step::data(&[0x34, 0], short),
        ]);
        assert_eq!(d.read_position().unwrap(), pos(1, 5));
        assert_eq!(d.read_position().unwrap(), pos(1, 5));
        assert!(d.quirks().read_position_short_only);

        // tgt: zeros after two writes from BOT means the command is a stub.
        let mut d = Script::drive(vec![
            Step::ok(&[0x01]),
            Step::data(&[0x34, 6], [0u8; 20]),
            Step::data(&[0x34, 0], [0u8; 20]),
            Step::ok(&[0x0a]),
            Step::ok(&[0x0a]),
            Step::data(&[0x34, 0], [0u8; 20]),
            Step::ok(&[0x11, 1, 0, 0, 1]),
        ]);
        d.rewind_to_bot().unwrap();
        assert!(
            d.quirks().read_position_short_only,
            "20 bytes for the long form"
        );
        d.write_record(b"a").unwrap();
        d.write_record(b"b").unwrap();
        assert_eq!(d.read_position().unwrap(), pos(0, 2));
        assert!(d.quirks().read_position_stub);
        assert_eq!(
            d.read_position().unwrap(),
            pos(0, 2),
            "no command sent: the cache answers"
        );
        d.space_marks(1).unwrap();
        let e = d.read_position().unwrap_err();
        assert!(matches!(e.kind(), Some(DeviceError::Unsupported(_))), "{e}");
        assert!(d.transport().done());
    }

    #[test]
    fn zeros_without_bop_are_not_believed_when_the_position_is_unknown() {
        let mut d = Script::drive(vec![
            Step::data(&[0x34, 6], [0u8; 32]),
            Step::ok(&[0x01]),
            Step::data(&[0x34, 6], [0u8; 32]),
            Step::data(&[0x34, 6], [0u8; 32]),
        ]);
        let e = d.read_position().unwrap_err();
        assert!(e.to_string().contains("rewind or locate first"), "{e}");
        assert!(!d.quirks().read_position_stub);
        d.rewind_to_bot().unwrap();
        assert_eq!(d.read_position().unwrap(), pos(0, 0));
        assert!(d.transport().done());
    }

    #[test]
    fn locate_falls_back_to_locate10_then_to_spacing() {
        let fm_after_one = with(sense(SenseKey::NoSense, 0, 1), |s| {
            s.filemark = true;
            s.information = Some(3);
        });
        let mut d = Script::drive(vec![
            Step::sense(&[0x92], sense(SenseKey::IllegalRequest, 0x20, 0)),
            Step::ok(&[0x2b, 0x02, 0, 0, 0, 0, 9, 0, 1]),
            Step::ok(&[0x2b]),
            // Second drive session below: no LOCATE(10) either.
        ]);
        d.locate_to(pos(1, 9)).unwrap();
        assert_eq!(d.cached_position(), Some(pos(1, 9)));
        d.locate_to(pos(0, 2)).unwrap();
        assert!(d.quirks().no_locate_16 && !d.quirks().no_locate);

        let mut d = Script::drive(vec![
            Step::sense(&[0x92], sense(SenseKey::IllegalRequest, 0x20, 0)),
            Step::sense(&[0x2b], sense(SenseKey::IllegalRequest, 0x20, 0)),
            Step::ok(&[0x01]),
            // Space 4 blocks from 0: one record, then a filemark (block 1): now at 2, two to go.
            Step::sense(&[0x11, 0, 0, 0, 4], fm_after_one),
            Step::ok(&[0x11, 0, 0, 0, 2]),
        ]);
        d.locate_to(pos(0, 4)).unwrap();
        assert_eq!(d.cached_position(), Some(pos(0, 4)));
        assert!(d.quirks().no_locate);
        let e = d.locate_to(pos(1, 0)).unwrap_err();
        assert!(matches!(e.kind(), Some(DeviceError::Unsupported(_))), "{e}");
        assert!(d.transport().done());
    }

    #[test]
    fn locate_past_eod_and_locate_eod_fallback() {
        let mut d = Script::drive(vec![
            Step::sense(
                &[0x92],
                with(sense(SenseKey::BlankCheck, 0, 5), |s| s.eom = true),
            ),
            // LOCATE to EOD works: position from READ POSITION.
            Step::ok(&[0x92, 0x1a, 0, 1]),
            Step::data(&[0x34, 6], long_pos(1, 50)),
            // Then a drive that refuses DEST_TYPE 3.
            Step::sense(&[0x92, 0x1a], sense(SenseKey::IllegalRequest, 0x24, 0)),
            Step::ok(&[0x92, 0x02, 0, 0]),
            Step::ok(&[0x11, 3]),
            Step::data(&[0x34, 6], long_pos(0, 12)),
        ]);
        let e = d.locate_to(pos(0, 1000)).unwrap_err();
        assert!(
            e.to_string().contains("block 1000 is past the end of data"),
            "{e}"
        );
        d.locate_to_eod(1).unwrap();
        assert_eq!(d.cached_position(), Some(pos(1, 50)));
        d.locate_to_eod(0).unwrap();
        assert_eq!(d.cached_position(), Some(pos(0, 12)));
        assert!(d.quirks().no_locate_eod && !d.quirks().no_locate_16);
        assert!(d.transport().done());
    }

    #[test]
    fn space_reports_how_far_it_got() {
        let eod = with(sense(SenseKey::BlankCheck, 0, 5), |s| {
            s.eom = true;
            s.information = Some(2);
        });
        let bop = with(sense(SenseKey::NoSense, 0, 4), |s| {
            s.eom = true;
            s.information = Some(-1);
        });
        let mut d = Script::drive(vec![
            Step::sense(&[0x11, 1, 0, 0, 3], eod),
            Step::sense(&[0x11, 1, 0xff, 0xff, 0xfd], bop),
            Step::ok(&[0x91, 1]),
        ]);
        let e = d.space_marks(3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "script: SPACE(6): end of data after 1 of 3 filemarks"
        );
        let e = TapeDevice::space_filemarks(&mut d, -3).unwrap_err();
        assert!(
            e.to_string()
                .contains("beginning of partition after 2 of 3 filemarks"),
            "{e}"
        );
        d.space_marks(1 << 40).unwrap();
        d.space_marks(0).unwrap();
        assert!(d.transport().done());
    }

    #[test]
    fn rewind_to_partition_zero() {
        let mut d = Script::drive(vec![
            Step::ok(&[0x92]),
            Step::ok(&[0x01]),
            // REWIND went to the start of partition 1: LOCATE to partition 0.
            Step::data(&[0x34, 6], long_pos(1, 0)),
            Step::ok(&[0x92, 0x02, 0, 0]),
            Step::ok(&[0x01]),
            Step::data(&[0x34, 6], long_pos(0, 0)),
        ]);
        d.locate_to(pos(1, 30)).unwrap();
        d.rewind_to_bot().unwrap();
        assert_eq!(d.cached_position(), Some(pos(0, 0)));
        TapeDevice::rewind(&mut d).unwrap();
        assert!(d.transport().done());
    }

    fn mode10(pages: Vec<u8>) -> Vec<u8> {
        ModeData {
            medium_type: 0,
            write_protected: false,
            buffered_mode: 0,
            speed: 0,
            block_descriptor: Some(BlockDescriptor {
                density: 0x5c,
                blocks: 0,
                block_length: 512,
            }),
            pages,
        }
        .encode_sense(true)
    }

    #[test]
    fn default_modes_and_six_byte_fallback() {
        let compression = vec![0x8f, 0x0e, 0x40, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
        let mut d = Script::drive(vec![
            Step::data(&[0x5a, 0, 0x0f], mode10(compression.clone())),
            Step::ok(&[0x55, 0x10, 0, 0, 0, 0, 0, 0, 32]),
        ]);
        d.set_default_modes().unwrap();
        let sent = &d.transport().sent[0];
        assert_eq!(
            &sent[..8],
            &[0, 0, 0, 0x10, 0, 0, 0, 8],
            "buffered mode, WP and length clear"
        );
        assert_eq!(
            &sent[8..16],
            &[0x5c, 0, 0, 0, 0, 0, 0, 0],
            "density kept, variable blocks"
        );
        assert_eq!(
            &sent[16..20],
            &[0x0f, 0x0e, 0xc0, 0x80],
            "PS clear, DCE set"
        );

        // A VTL with only the 6-byte commands and no compression page.
        let m6 = ModeData::decode10(&mode10(vec![]))
            .unwrap()
            .encode_sense(false);
        let mut d = Script::drive(vec![
            Step::sense(&[0x5a], sense(SenseKey::IllegalRequest, 0x20, 0)),
            Step::sense(&[0x1a, 0, 0x0f], sense(SenseKey::IllegalRequest, 0x24, 0)),
            Step::data(&[0x1a, 0, 0x00], m6),
            Step::ok(&[0x15, 0x10, 0, 0, 12]),
        ]);
        d.set_default_modes().unwrap();
        assert_eq!(
            d.transport().sent[0],
            vec![0, 0, 0x10, 8, 0x5c, 0, 0, 0, 0, 0, 0, 0]
        );
        assert!(d.quirks().mode_6_only);
        assert!(d.transport().done());
    }

    #[test]
    fn mode_select_10_missing_but_mode_sense_10_present() {
        // tgt: MODE SENSE(10) works, MODE SELECT(10) is an invalid opcode.
        let compression = vec![0x0f, 0x0e, 0x40, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
        let mut d = Script::drive(vec![
            Step::data(&[0x5a, 0, 0x0f], mode10(compression)),
            Step::sense(&[0x55], sense(SenseKey::IllegalRequest, 0x20, 0)),
            Step::ok(&[0x15, 0x10, 0, 0, 28]),
        ]);
        d.set_default_modes().unwrap();
        let six = &d.transport().sent[1];
        assert_eq!(&six[..4], &[0, 0, 0x10, 8]);
        assert_eq!(six[14], 0xc0);
        assert!(d.quirks().mode_6_only);
        assert!(d.transport().done());
    }

    #[test]
    fn tgt_reports_end_of_data_as_no_sense() {
        let eod = with(sense(SenseKey::NoSense, 0, 5), |s| s.information = Some(4));
        let mut d = Script::drive(vec![
            Step::sense(&[0x11, 1], eod.clone()),
            Step::sense(&[0x08], eod),
        ]);
        let e = d.space_marks(5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "script: SPACE(6): end of data after 1 of 5 filemarks"
        );
        assert_eq!(
            d.read_record(&mut [0u8; 16]).unwrap(),
            ReadOutcome::EndOfData
        );
        assert!(d.transport().done());
    }

    #[test]
    fn tape_alerts_without_log_sense() {
        let mut d = Script::drive(vec![Step::sense(
            &[0x4d, 0, 0x52],
            sense(SenseKey::IllegalRequest, 0x20, 0),
        )]);
        assert!(matches!(
            d.tape_alerts().unwrap_err().kind(),
            Some(DeviceError::Unsupported(_))
        ));
        assert!(!d.quirks().tape_alert_page_2e);
        assert!(d.transport().done());
    }

    #[test]
    fn default_modes_skip_or_drop_the_compression_page() {
        // tgt: page 0x0F all zeros (DCC clear): not sent at all.
        let mut tgt_page = vec![0u8; 16];
        tgt_page[..2].copy_from_slice(&[0x0f, 0x0e]);
        let capable = vec![0x0f, 0x0e, 0x40, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
        let mut d = Script::drive(vec![
            Step::data(&[0x5a, 0, 0x0f], mode10(tgt_page.clone())),
            Step::ok(&[0x55, 0x10, 0, 0, 0, 0, 0, 0, 16]),
            // A drive that refuses the page: the rest is selected without it.
            Step::data(&[0x5a, 0, 0x0f], mode10(capable)),
            Step::sense(&[0x55], sense(SenseKey::IllegalRequest, 0x26, 0)),
            Step::ok(&[0x55, 0x10, 0, 0, 0, 0, 0, 0, 16]),
            Step::data(&[0x5a, 0, 0x0f], mode10(tgt_page)),
        ]);
        d.set_default_modes().unwrap();
        d.set_default_modes().unwrap();
        assert!(!d.set_compression(true).unwrap());
        let sent = &d.transport().sent;
        assert_eq!(
            sent.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![16, 32, 16]
        );
        assert!(d.transport().done());
    }

    #[test]
    fn compression_and_buffered_helpers() {
        let compression = vec![0x0f, 0x0e, 0xc0, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
        let mut d = Script::drive(vec![
            Step::data(&[0x5a, 0, 0x0f], mode10(compression)),
            Step::ok(&[0x55]),
            Step::data(&[0x5a, 0, 0x0f], mode10(vec![])),
            Step::data(&[0x5a, 0, 0x0f], mode10(vec![])),
            Step::ok(&[0x55]),
        ]);
        assert!(d.set_compression(false).unwrap());
        assert_eq!(d.transport().sent[0][18], 0x40);
        assert!(!d.set_compression(true).unwrap());
        d.set_buffered_mode(true).unwrap();
        assert_eq!(d.transport().sent[1][3], 0x10);
        assert!(d.transport().done());
    }

    #[test]
    fn format_two_partitions_sends_page_0x11_then_format() {
        let page = vec![0x91, 0x0a, 1, 0, 0x18, 3, 0, 0, 0xff, 0xff, 0, 0];
        let mut d = Script::drive(vec![
            Step::ok(&[0x92, 0x02, 0, 0]),
            Step::data(&[0x5a, 0, 0x11], mode10(page)),
            Step::ok(&[0x55, 0x10]),
            Step::ok(&[0x04, 0, 1]),
            // partition_count after the format.
            Step::data(
                &[0x5a, 0, 0x11],
                mode10(vec![0x11, 0x0a, 1, 1, 0x30, 3, 0, 0, 0, 100, 0xff, 0xff]),
            ),
        ]);
        TapeDevice::format_two_partitions(&mut d, 100).unwrap();
        let sent = &d.transport().sent[0];
        assert_eq!(
            &sent[16..],
            &[0x11, 0x0a, 1, 1, 0x30, 3, 0, 0, 0, 100, 0xff, 0xff]
        );
        assert_eq!(d.cached_position(), Some(pos(0, 0)));
        assert_eq!(TapeDevice::partition_count(&mut d).unwrap(), 2);
        assert!(d.transport().done());
        assert!(matches!(
            TapeDevice::format_two_partitions(&mut d, 70_000).unwrap_err(),
            DeviceError::IllegalRequest(_)
        ));
    }

    #[test]
    fn partition_count_without_the_page() {
        let mut d = Script::drive(vec![
            Step::sense(&[0x5a, 0, 0x11], sense(SenseKey::IllegalRequest, 0x24, 0)),
            Step::data(&[0x5a, 0, 0x11], mode10(vec![])),
        ]);
        assert_eq!(d.partitions().unwrap(), 1);
        assert_eq!(d.partitions().unwrap(), 1);
    }

    #[test]
    fn attributes_missing_present_and_too_big() {
        let barcode = Attribute::ascii(0x0806, "RV0001L6", 32);
        let big = Attribute::new(0x0803, AttributeFormat::Text, vec![b'x'; 5000]);
        let big_data = mam::encode_attribute_values(std::slice::from_ref(&big));
        let mut d = Script::drive(vec![
            Step::sense(
                &[0x8c, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x06],
                sense(SenseKey::IllegalRequest, 0x24, 0),
            ),
            Step::data(
                &[0x8c, 0, 0, 0, 0, 0, 0, 1, 0x08, 0x0c],
                mam::encode_attribute_values(std::slice::from_ref(&barcode)),
            ),
            Step::data(
                &[0x8c, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x06],
                mam::encode_attribute_values(std::slice::from_ref(&barcode)),
            ),
            // 4 KiB is not enough: the header says how much is.
            Step::data(
                &[0x8c, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x03, 0, 0, 0x10, 0],
                big_data[..4096].to_vec(),
            ),
            Step::data(
                &[0x8c, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x03, 0, 0, 0x13, 0x91],
                big_data.clone(),
            ),
            Step::ok(&[0x8d, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 41]),
            Step::sense(&[0x8c], sense(SenseKey::IllegalRequest, 0x20, 0)),
        ]);
        assert_eq!(d.attribute(0, 0x0806).unwrap(), None);
        assert_eq!(TapeDevice::read_attribute(&mut d, 1, 0x080c).unwrap(), None);
        assert_eq!(d.attribute(0, 0x0806).unwrap(), Some(barcode.clone()));
        assert_eq!(d.attribute(0, 0x0803).unwrap(), Some(big));
        TapeDevice::write_attribute(&mut d, 1, &barcode).unwrap();
        assert_eq!(
            d.transport().sent[0],
            mam::encode_write_attribute(&[barcode])
        );
        let e = TapeDevice::read_attribute(&mut d, 0, 0x0806).unwrap_err();
        assert!(
            matches!(&e, DeviceError::Unsupported(s) if s.contains("READ ATTRIBUTE") && s.contains("script")),
            "{e:?}"
        );
        assert!(d.transport().done());
    }

    #[test]
    fn tape_alerts_fall_back_to_page_2e() {
        let mut t = TapeAlerts::default();
        t.set(0x15);
        let mut d = Script::drive(vec![
            Step::sense(&[0x4d, 0, 0x52], sense(SenseKey::IllegalRequest, 0x24, 0)),
            Step::data(&[0x4d, 0, 0x6e], t.encode_page()),
            Step::data(&[0x4d, 0, 0x6e], TapeAlerts::default().encode_page()),
        ]);
        assert!(d.tape_alerts().unwrap().needs_cleaning());
        assert!(d.quirks().tape_alert_page_2e);
        assert!(d.tape_alerts().unwrap().is_empty());
        assert!(d.transport().done());
    }

    #[test]
    fn block_limits_are_cached_and_capped() {
        let l = BlockLimits {
            granularity: 0,
            max: 0,
            min: 1,
        };
        let mut d = Script::drive(vec![Step::data(&[0x05], l.encode())]);
        assert_eq!(
            TapeDevice::max_block_size(&mut d).unwrap(),
            rw::MAX_TRANSFER_6
        );
        assert_eq!(
            TapeDevice::max_block_size(&mut d).unwrap(),
            rw::MAX_TRANSFER_6
        );
        assert!(d.transport().done());
    }

    #[test]
    fn queries_retry_unit_attention_but_io_does_not() {
        let mut d = Script::drive(vec![
            Step::sense(&[0x34], sense(SenseKey::UnitAttention, 0x28, 0)),
            Step::data(&[0x34, 6], long_pos(0, 3)),
            Step::sense(&[0x0a], sense(SenseKey::UnitAttention, 0x29, 0)),
        ]);
        assert_eq!(d.read_position().unwrap(), pos(0, 3));
        assert!(d.write_record(b"x").is_err());
        assert_eq!(d.cached_position(), None);
        assert!(d.transport().done());
    }
}
