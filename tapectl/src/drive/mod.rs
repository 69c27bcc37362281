//! The LTO tape drive command set over any [`scsi::Transport`], and [`Drive`], which implements
//! [`ltfs::TapeDevice`] with it.
//!
//! Each submodule is one concern: CDB builders plus pure decoders that never panic on short or garbage
//! responses ([`rw`] stream commands, [`mode`] mode pages and partitioning, [`limits`] block limits and
//! densities, [`mam`] cartridge memory, [`logs`] log pages and TapeAlert), and [`status`], a one-call
//! summary for operators. This module holds the [`Drive`] type: the command timeouts ([`Timeouts`]), the
//! unit-attention and not-ready handling, the mapping from sense data to [`ltfs::DeviceError`], the
//! position cache, and the fallbacks for devices that lack a command ([`Quirks`]).
//!
//! Quirks handled (each is recorded in [`Quirks`] the first time it is seen):
//! - MODE SENSE/SELECT(10) missing (ILLEGAL REQUEST 20/00): the 6-byte forms are used.
//! - READ POSITION long form missing: the short form is used.
//! - READ POSITION that always returns zeros (tgt): detected when it says 0/0 after records moved
//!   under it; from then on the position is the one cached from our own reads, writes and locates.
//! - LOCATE(16) missing: LOCATE(10); neither (tgt): REWIND then SPACE over blocks (partition 0 only).
//! - LOCATE(16) to end of data missing: LOCATE to block 0 of the partition, then SPACE to EOD.
//! - "Cleaning requested" and other NO SENSE / RECOVERED ERROR without stream flags are successes.
//!
//! One quirk is the caller's to avoid: tgt (before upstream c7011f2) and libiscsi return corrupt data for
//! a variable-length READ whose buffer is larger than the record but smaller than twice it. Reads use
//! the caller's buffer as is; read tgt tapes with a buffer of exactly the record size or ≥ 2× it.

pub mod crypto;
pub mod limits;
pub mod logs;
pub mod mam;
pub mod mode;
pub mod rw;
pub mod status;
mod stream;
mod tape;

#[cfg(test)]
mod script;

use std::time::{Duration, Instant};

use ltfs::{DeviceError, Position};
use scsi::{DataDir, DeviceType, Inquiry, ScsiError, Sense, SenseKey, Transport};
use serde::Serialize;

pub use status::DriveStatus;
pub use stream::{StreamEnd, StreamStats};

/// Consecutive UNIT ATTENTIONs retried before giving up (each reports one event: reset, medium change,
/// mode parameters changed...).
const UNIT_ATTENTION_RETRIES: u32 = 4;

/// Command timeouts by class, in one table. The defaults follow Proxmox Backup Server's drive code:
/// everything 10 minutes (READ and WRITE included), status commands 30 seconds; positioning commands
/// 15 minutes and FORMAT / long ERASE 4 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// TEST UNIT READY, INQUIRY, REQUEST SENSE, READ POSITION, READ BLOCK LIMITS, REPORT DENSITY SUPPORT,
    /// MODE SENSE.
    pub short: Duration,
    /// READ, WRITE, WRITE FILEMARKS, MODE SELECT, LOG SENSE, READ/WRITE ATTRIBUTE and anything else.
    pub default: Duration,
    /// LOAD/UNLOAD, REWIND, LOCATE, SPACE, short ERASE.
    pub positioning: Duration,
    /// FORMAT MEDIUM, long ERASE.
    pub long: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            short: Duration::from_secs(30),
            default: Duration::from_secs(10 * 60),
            positioning: Duration::from_secs(15 * 60),
            long: Duration::from_secs(4 * 60 * 60),
        }
    }
}

impl Timeouts {
    /// The timeout for one CDB.
    pub fn for_cdb(&self, cdb: &[u8]) -> Duration {
        match cdb.first().copied().unwrap_or(0xff) {
            0x00 | 0x03 | 0x05 | 0x12 | 0x1a | 0x34 | 0x44 | 0x5a => self.short,
            0x01 | 0x0b | 0x11 | 0x1b | 0x2b | 0x91 | 0x92 => self.positioning,
            0x19 if cdb.get(1).is_some_and(|b| b & 1 != 0) => self.long,
            0x19 => self.positioning,
            0x04 => self.long,
            _ => self.default,
        }
    }
}

/// Device shortcomings found at run time, and what is done instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Quirks {
    /// MODE SENSE/SELECT(10) are not supported: 6-byte forms in use.
    pub mode_6_only: bool,
    /// READ POSITION long form not supported: short form in use.
    pub read_position_short_only: bool,
    /// READ POSITION returns zeros whatever the position (tgt): the cached position is used.
    pub read_position_stub: bool,
    /// No LOCATE(16): LOCATE(10) in use.
    pub no_locate_16: bool,
    /// No LOCATE at all: REWIND + SPACE blocks in use (partition 0 only).
    pub no_locate: bool,
    /// LOCATE(16) cannot go to end of data: LOCATE + SPACE to EOD in use.
    pub no_locate_eod: bool,
    /// No TapeAlert Response page (0x12): page 0x2E in use, which clears the flags when read.
    pub tape_alert_page_2e: bool,
}

impl Quirks {
    /// One line per quirk seen, for status output.
    pub fn describe(&self) -> Vec<&'static str> {
        [
            (
                self.mode_6_only,
                "MODE SENSE/SELECT(10) unsupported: using the 6-byte commands",
            ),
            (
                self.read_position_short_only,
                "READ POSITION long form unsupported: using the short form",
            ),
            (
                self.read_position_stub,
                "READ POSITION returns zeros: positions come from tapectl's own bookkeeping",
            ),
            (
                self.no_locate_16,
                "LOCATE(16) unsupported: using LOCATE(10)",
            ),
            (
                self.no_locate,
                "LOCATE unsupported: positioning by REWIND and SPACE (partition 0 only)",
            ),
            (
                self.no_locate_eod,
                "LOCATE to end of data unsupported: using SPACE to EOD",
            ),
            (
                self.tape_alert_page_2e,
                "TapeAlert Response page unsupported: reading page 0x2E clears the flags",
            ),
        ]
        .into_iter()
        .filter_map(|(on, text)| on.then_some(text))
        .collect()
    }
}

/// A failed drive operation. [`DriveError::Command`] carries the [`DeviceError`] callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The command completed with sense data (or was refused before it was sent).
    #[error("{device}: {command}: {kind}")]
    Command {
        device: String,
        command: &'static str,
        kind: DeviceError,
    },
    /// The path to the device failed, or a status without usable sense (BUSY, RESERVATION CONFLICT).
    #[error(transparent)]
    Scsi(ScsiError),
    #[error(
        "{device} is a {kind} device ({vendor} {product}), not a tape drive: give the device node of the drive itself (a library's changer is a separate SCSI device)"
    )]
    NotATape {
        device: String,
        kind: &'static str,
        vendor: String,
        product: String,
    },
    #[error("{device}: {command}: malformed response: {detail}")]
    BadResponse {
        device: String,
        command: &'static str,
        detail: String,
    },
    #[error(
        "{device}: not ready after waiting {waited:?} (last: {last}); is a cartridge still loading or calibrating?"
    )]
    NotReadyTimeout {
        device: String,
        waited: Duration,
        last: String,
    },
    #[error("{device}: {context}: {source}")]
    Io {
        device: String,
        context: &'static str,
        source: std::io::Error,
    },
}

impl DriveError {
    /// The device-level classification, when the drive reported one.
    pub fn kind(&self) -> Option<&DeviceError> {
        match self {
            DriveError::Command { kind, .. } => Some(kind),
            _ => None,
        }
    }

    pub fn is_no_medium(&self) -> bool {
        matches!(self.kind(), Some(DeviceError::NoMedium))
    }
}

impl From<DriveError> for DeviceError {
    /// Keeps the classification; the device and command go into the message where the variant has one.
    fn from(e: DriveError) -> DeviceError {
        match e {
            DriveError::Command {
                device,
                command,
                kind,
            } => match kind {
                DeviceError::NotReady(s) => {
                    DeviceError::NotReady(format!("{device}: {command}: {s}"))
                }
                DeviceError::Medium {
                    partition,
                    block,
                    detail,
                } => DeviceError::Medium {
                    partition,
                    block,
                    detail: format!("{device}: {command}: {detail}"),
                },
                DeviceError::Unsupported(s) => DeviceError::Unsupported(format!("{s} ({device})")),
                DeviceError::IllegalRequest(s) => {
                    DeviceError::IllegalRequest(format!("{device}: {command}: {s}"))
                }
                DeviceError::Other(s) => DeviceError::Other(format!("{device}: {command}: {s}")),
                unit => unit,
            },
            other => DeviceError::Other(other.to_string()),
        }
    }
}

/// Data for one command, re-borrowable across retries.
pub(crate) enum Buf<'a> {
    None,
    In(&'a mut [u8]),
    Out(&'a [u8]),
}

/// An LTO drive (or anything that answers as a tape drive) reached through one transport.
pub struct Drive<T: Transport> {
    transport: T,
    device: String,
    inquiry: Inquiry,
    serial: Option<String>,
    timeouts: Timeouts,
    poll_interval: Duration,
    quirks: Quirks,
    /// The position as far as we know it exactly (`None` after SPACE, errors, unit attentions).
    position: Option<Position>,
    /// The last position we knew, moved along by our own reads and writes: what error messages name.
    last_known: Position,
    /// Early warning seen on a write since the last positioning command.
    early_warning: bool,
    limits: Option<limits::BlockLimits>,
}

impl<T: Transport> Drive<T> {
    /// Opens a drive: INQUIRY (refusing anything that is not a tape drive) and the unit serial number.
    pub fn new(mut transport: T) -> Result<Drive<T>, DriveError> {
        let device = transport.describe();
        let mut attempts = 0;
        let inquiry = loop {
            match scsi::inquiry::inquiry(&mut transport) {
                Ok(i) => break i,
                Err(ScsiError::Sense { sense, .. })
                    if sense.is_unit_attention() && attempts < UNIT_ATTENTION_RETRIES =>
                {
                    attempts += 1;
                }
                Err(e) => return Err(DriveError::Scsi(e)),
            }
        };
        if inquiry.device_type != DeviceType::Tape {
            return Err(DriveError::NotATape {
                device,
                kind: inquiry.device_type.name(),
                vendor: inquiry.vendor,
                product: inquiry.product,
            });
        }
        let serial = match scsi::inquiry::serial_number(&mut transport) {
            Ok(s) => s,
            Err(ScsiError::Transport(e)) => return Err(DriveError::Scsi(ScsiError::Transport(e))),
            Err(e) => {
                tracing::debug!(%device, error = %e, "no unit serial number");
                None
            }
        };
        Ok(Drive {
            transport,
            device,
            inquiry,
            serial,
            timeouts: Timeouts::default(),
            poll_interval: Duration::from_secs(1),
            quirks: Quirks::default(),
            position: None,
            last_known: Position {
                partition: 0,
                block: 0,
            },
            early_warning: false,
            limits: None,
        })
    }

    pub fn inquiry(&self) -> &Inquiry {
        &self.inquiry
    }

    /// The unit serial number (VPD page 0x80), when the drive has one.
    pub fn serial(&self) -> Option<&str> {
        self.serial.as_deref()
    }

    /// The transport's name for the device, as used in messages.
    pub fn device_name(&self) -> &str {
        &self.device
    }

    pub fn quirks(&self) -> &Quirks {
        &self.quirks
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// How long [`Drive::wait_until_ready`] sleeps between polls (1 s by default).
    pub fn set_poll_interval(&mut self, interval: Duration) {
        self.poll_interval = interval;
    }

    /// True once a write or filemark reported early warning (cleared by any positioning command).
    pub fn early_warning(&self) -> bool {
        self.early_warning
    }

    /// The position tapectl believes the drive is at, without asking it.
    pub fn cached_position(&self) -> Option<Position> {
        self.position
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    pub fn into_inner(self) -> T {
        self.transport
    }

    /// Polls TEST UNIT READY until the drive is ready: UNIT ATTENTION is retried at once (a few times),
    /// NOT READY "becoming ready" / "in progress" (04/00, 04/01, 04/07, 04/08) every poll interval until
    /// `timeout`, NOT READY 3A (no cartridge) fails at once with [`DeviceError::NoMedium`].
    pub fn wait_until_ready(&mut self, timeout: Duration) -> Result<(), DriveError> {
        let start = Instant::now();
        let mut unit_attentions = 0;
        loop {
            let cdb = [rw::TEST_UNIT_READY, 0, 0, 0, 0, 0];
            let sense = match scsi::execute(
                &mut self.transport,
                &cdb,
                DataDir::None,
                self.timeouts.short,
            ) {
                Ok(_) => return Ok(()),
                Err(ScsiError::Sense { sense, .. }) => sense,
                Err(e) => return Err(DriveError::Scsi(e)),
            };
            if sense.is_unit_attention() && unit_attentions < UNIT_ATTENTION_RETRIES {
                unit_attentions += 1;
                self.lose_position();
                continue;
            }
            if sense.is_becoming_ready() {
                if start.elapsed() + self.poll_interval > timeout {
                    return Err(DriveError::NotReadyTimeout {
                        device: self.device.clone(),
                        waited: start.elapsed(),
                        last: sense.to_string(),
                    });
                }
                std::thread::sleep(self.poll_interval);
                continue;
            }
            return Err(self.sense_error("TEST UNIT READY", &sense));
        }
    }

    /// Loads the cartridge in the drive (threads it) and waits until the drive is ready.
    pub fn load(&mut self) -> Result<(), DriveError> {
        self.cmd("LOAD", &rw::load_unload_cdb(true, false), Buf::None, true)?;
        self.early_warning = false;
        self.set_position(Position {
            partition: 0,
            block: 0,
        });
        self.wait_until_ready(self.timeouts.positioning)
    }

    /// Rewinds and ejects the cartridge so a changer can take it. If an earlier PREVENT MEDIUM REMOVAL
    /// blocks it (53/02), allows removal and tries once more.
    pub fn unload(&mut self) -> Result<(), DriveError> {
        let cdb = rw::load_unload_cdb(false, false);
        let r = match self.raw(&cdb, Buf::None, true) {
            Err(ScsiError::Sense { sense, .. }) if sense.asc == 0x53 && sense.ascq == 0x02 => {
                self.prevent_removal(false)?;
                self.raw(&cdb, Buf::None, true)
            }
            r => r,
        };
        self.lose_position();
        self.early_warning = false;
        r.map(|_| ()).map_err(|e| self.classify("UNLOAD", e))
    }

    /// PREVENT (true) or ALLOW (false) MEDIUM REMOVAL.
    pub fn prevent_removal(&mut self, prevent: bool) -> Result<(), DriveError> {
        let name = if prevent {
            "PREVENT MEDIUM REMOVAL"
        } else {
            "ALLOW MEDIUM REMOVAL"
        };
        self.cmd(name, &rw::prevent_allow_cdb(prevent), Buf::None, true)
            .map(|_| ())
    }

    /// ERASE from the current position: `long == false` writes end of data here; `long == true` erases
    /// to the end of the partition (can take hours).
    pub fn erase(&mut self, long: bool) -> Result<(), DriveError> {
        let r = self.cmd("ERASE", &rw::erase_cdb(long, false), Buf::None, false);
        self.early_warning = false;
        r.map(|_| ())
    }

    /// Sends one command; UNIT ATTENTION is retried when `retry_unit_attention` (commands that are safe to
    /// repeat: queries and absolute positioning), and always forgets the cached position.
    pub(crate) fn raw(
        &mut self,
        cdb: &[u8],
        mut data: Buf<'_>,
        retry_unit_attention: bool,
    ) -> Result<usize, ScsiError> {
        let timeout = self.timeouts.for_cdb(cdb);
        let mut attempts = 0;
        loop {
            let dir = match &mut data {
                Buf::None => DataDir::None,
                Buf::In(b) => DataDir::In(&mut b[..]),
                Buf::Out(b) => DataDir::Out(b),
            };
            match scsi::execute(&mut self.transport, cdb, dir, timeout) {
                Err(ScsiError::Sense {
                    sense,
                    device,
                    opcode_name,
                    transferred,
                }) if sense.is_unit_attention() => {
                    self.lose_position();
                    attempts += 1;
                    if retry_unit_attention && attempts <= UNIT_ATTENTION_RETRIES {
                        tracing::debug!(device = %self.device, %sense, "unit attention, retrying");
                        continue;
                    }
                    return Err(ScsiError::Sense {
                        sense,
                        device,
                        opcode_name,
                        transferred,
                    });
                }
                r => return r,
            }
        }
    }

    /// [`Drive::raw`] with errors classified.
    pub(crate) fn cmd(
        &mut self,
        command: &'static str,
        cdb: &[u8],
        data: Buf<'_>,
        retry_unit_attention: bool,
    ) -> Result<usize, DriveError> {
        self.raw(cdb, data, retry_unit_attention)
            .map_err(|e| self.classify(command, e))
    }

    /// Maps a failed command to a [`DriveError`], naming this device and the command.
    pub(crate) fn classify(&self, command: &'static str, e: ScsiError) -> DriveError {
        match e {
            ScsiError::Sense { sense, .. } => self.sense_error(command, &sense),
            other => DriveError::Scsi(other),
        }
    }

    pub(crate) fn sense_error(&self, command: &'static str, sense: &Sense) -> DriveError {
        self.error(command, self.device_error(command, sense))
    }

    pub(crate) fn error(&self, command: &'static str, kind: DeviceError) -> DriveError {
        DriveError::Command {
            device: self.device.clone(),
            command,
            kind,
        }
    }

    pub(crate) fn bad_response(
        &self,
        command: &'static str,
        detail: impl Into<String>,
    ) -> DriveError {
        DriveError::BadResponse {
            device: self.device.clone(),
            command,
            detail: detail.into(),
        }
    }

    /// The sense-data mapping shared by every command.
    fn device_error(&self, command: &'static str, sense: &Sense) -> DeviceError {
        let text = sense.to_string();
        match sense.key {
            _ if sense.is_no_medium() => DeviceError::NoMedium,
            SenseKey::NotReady => DeviceError::NotReady(text),
            SenseKey::DataProtect if sense.asc == 0x27 => DeviceError::WriteProtected,
            SenseKey::VolumeOverflow => DeviceError::EndOfMedium,
            SenseKey::MediumError => DeviceError::Medium {
                partition: self.last_known.partition,
                block: self.last_known.block,
                detail: if self.position == Some(self.last_known) {
                    text
                } else {
                    format!("{text} (position approximate)")
                },
            },
            SenseKey::IllegalRequest if sense.asc == 0x20 => {
                DeviceError::Unsupported(format!("{command} ({text})"))
            }
            SenseKey::IllegalRequest => DeviceError::IllegalRequest(text),
            SenseKey::UnitAttention => DeviceError::Other(format!(
                "{text}: the drive was reset or the cartridge changed; the position is lost"
            )),
            _ => DeviceError::Other(text),
        }
    }

    pub(crate) fn set_position(&mut self, p: Position) {
        self.position = Some(p);
        self.last_known = p;
    }

    pub(crate) fn lose_position(&mut self) {
        self.position = None;
    }

    /// Moves the cached position past `n` objects we read or wrote.
    pub(crate) fn advance(&mut self, n: u64) {
        self.last_known.block = self.last_known.block.saturating_add(n);
        if let Some(p) = &mut self.position {
            p.block = p.block.saturating_add(n);
        }
    }
}

/// ILLEGAL REQUEST 20/00: the command (operation code) is not implemented.
pub(crate) fn is_invalid_opcode(e: &ScsiError) -> bool {
    e.sense()
        .is_some_and(|s| s.key == SenseKey::IllegalRequest && s.asc == 0x20)
}

/// Any ILLEGAL REQUEST: the command or one of its fields is not supported.
pub(crate) fn is_illegal_request(e: &ScsiError) -> bool {
    e.sense().is_some_and(|s| s.key == SenseKey::IllegalRequest)
}

#[cfg(test)]
mod tests {
    use super::script::{Script, Step};
    use super::*;
    use scsi::SenseKey;

    #[test]
    fn timeouts_by_class() {
        let t = Timeouts::default();
        assert_eq!(t.for_cdb(&[0x00]), Duration::from_secs(30));
        assert_eq!(
            t.for_cdb(&rw::read_position_cdb(rw::PositionForm::Long)),
            t.short
        );
        assert_eq!(t.for_cdb(&rw::read6_cdb(10)), t.default);
        assert_eq!(t.for_cdb(&rw::write6_cdb(10)), Duration::from_secs(600));
        assert_eq!(t.for_cdb(&rw::rewind_cdb(false)), Duration::from_secs(900));
        assert_eq!(
            t.for_cdb(&rw::locate16_cdb(rw::LocateTarget::Object(1), None, false)),
            t.positioning
        );
        assert_eq!(
            t.for_cdb(&rw::erase_cdb(true, false)),
            Duration::from_secs(4 * 3600)
        );
        assert_eq!(t.for_cdb(&rw::erase_cdb(false, false)), t.positioning);
        assert_eq!(t.for_cdb(&mode::format_medium_cdb(1, false)), t.long);
        assert_eq!(t.for_cdb(&[]), t.default);
    }

    #[test]
    fn refuses_a_changer() {
        let s = Script::new(vec![Step::data(
            &[0x12],
            scsi::Inquiry {
                device_type: DeviceType::Changer,
                removable: true,
                vendor: "IBM".into(),
                product: "3573-TL".into(),
                revision: "F.11".into(),
            }
            .encode(),
        )]);
        let e = Drive::new(s).err().unwrap();
        assert!(matches!(e, DriveError::NotATape { .. }));
        assert!(
            e.to_string()
                .contains("medium changer device (IBM 3573-TL), not a tape drive"),
            "{e}"
        );
    }

    #[test]
    fn opens_a_tape_drive_through_a_unit_attention() {
        let mut steps = vec![Step::sense(
            &[0x12],
            Sense::new(SenseKey::UnitAttention, 0x29, 0),
        )];
        steps.extend(Script::open_steps());
        let d = Drive::new(Script::new(steps)).unwrap();
        assert_eq!(d.serial(), Some("10WT000123"));
        assert_eq!(d.inquiry().product, "ULT3580-TD6");
        assert!(d.transport().done());
    }

    #[test]
    fn wait_until_ready_retries_attention_and_becoming_ready() {
        let mut d = Script::drive(vec![
            Step::sense(&[0x00], Sense::new(SenseKey::UnitAttention, 0x28, 0)),
            Step::sense(&[0x00], Sense::new(SenseKey::NotReady, 0x04, 0x01)),
            Step::sense(&[0x00], Sense::new(SenseKey::NotReady, 0x04, 0x01)),
            Step::ok(&[0x00]),
        ]);
        d.set_poll_interval(Duration::from_millis(1));
        d.wait_until_ready(Duration::from_secs(5)).unwrap();
        assert!(d.transport().done());
    }

    #[test]
    fn wait_until_ready_no_medium_and_timeout() {
        let mut d = Script::drive(vec![Step::sense(
            &[0x00],
            Sense::new(SenseKey::NotReady, 0x3a, 0),
        )]);
        let e = d.wait_until_ready(Duration::from_secs(5)).unwrap_err();
        assert!(e.is_no_medium(), "{e}");
        assert_eq!(
            e.to_string(),
            "script: TEST UNIT READY: no cartridge is loaded in the drive"
        );

        let mut d = Script::drive(vec![
            Step::sense(
                &[0x00],
                Sense::new(SenseKey::NotReady, 0x04, 0x07)
            );
            3
        ]);
        d.set_poll_interval(Duration::from_millis(20));
        let e = d.wait_until_ready(Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, DriveError::NotReadyTimeout { .. }), "{e}");

        let mut d = Script::drive(vec![
            Step::sense(
                &[0x00],
                Sense::new(SenseKey::UnitAttention, 0x29, 0)
            );
            6
        ]);
        let e = d.wait_until_ready(Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("position is lost"), "{e}");
    }

    #[test]
    fn error_mapping_keeps_classification_and_names() {
        let d = Script::drive(vec![]);
        let cases = [
            (Sense::new(SenseKey::NotReady, 0x3a, 0), "NoMedium"),
            (Sense::new(SenseKey::DataProtect, 0x27, 0), "WriteProtected"),
            (Sense::new(SenseKey::VolumeOverflow, 0, 2), "EndOfMedium"),
            (Sense::new(SenseKey::MediumError, 0x11, 0), "Medium"),
            (Sense::new(SenseKey::IllegalRequest, 0x20, 0), "Unsupported"),
            (
                Sense::new(SenseKey::IllegalRequest, 0x24, 0),
                "IllegalRequest",
            ),
            (Sense::new(SenseKey::HardwareError, 0x44, 0), "Other"),
            (Sense::new(SenseKey::NotReady, 0x04, 0x03), "NotReady"),
        ];
        for (sense, want) in cases {
            let e = d.sense_error("READ(6)", &sense);
            assert!(e.to_string().starts_with("script: READ(6): "), "{e}");
            let de: DeviceError = e.into();
            assert!(format!("{de:?}").starts_with(want), "{sense} -> {de:?}");
            if let DeviceError::Medium { detail, .. } | DeviceError::Other(detail) = &de {
                assert!(detail.contains("script: READ(6)"), "{detail}");
            }
        }
    }

    #[test]
    fn load_waits_and_unload_allows_removal_when_prevented() {
        let mut d = Script::drive(vec![
            Step::ok(&[0x1b, 0, 0, 0, 1]),
            Step::sense(&[0x00], Sense::new(SenseKey::NotReady, 0x04, 0x01)),
            Step::ok(&[0x00]),
            Step::sense(
                &[0x1b, 0, 0, 0, 0],
                Sense::new(SenseKey::IllegalRequest, 0x53, 0x02),
            ),
            Step::ok(&[0x1e, 0, 0, 0, 0]),
            Step::ok(&[0x1b, 0, 0, 0, 0]),
        ]);
        d.set_poll_interval(Duration::from_millis(1));
        d.load().unwrap();
        assert_eq!(
            d.cached_position(),
            Some(Position {
                partition: 0,
                block: 0
            })
        );
        d.unload().unwrap();
        assert_eq!(d.cached_position(), None);
        assert!(d.transport().done());
    }

    #[test]
    fn quirks_describe() {
        let q = Quirks {
            read_position_stub: true,
            no_locate: true,
            ..Quirks::default()
        };
        assert_eq!(q.describe().len(), 2);
        assert!(Quirks::default().describe().is_empty());
    }
}
