use std::time::Duration;

use crate::sense::Sense;

/// Where a command's data goes.
pub enum DataDir<'a> {
    None,
    /// Data from the device into this buffer (its length is the allocation/transfer length).
    In(&'a mut [u8]),
    /// Data from this buffer to the device.
    Out(&'a [u8]),
}

impl DataDir<'_> {
    pub fn len(&self) -> usize {
        match self {
            DataDir::None => 0,
            DataDir::In(b) => b.len(),
            DataDir::Out(b) => b.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// SCSI status byte (SAM-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u8);

impl Status {
    pub const GOOD: Status = Status(0x00);
    pub const CHECK_CONDITION: Status = Status(0x02);
    pub const BUSY: Status = Status(0x08);
    pub const RESERVATION_CONFLICT: Status = Status(0x18);
    pub const TASK_SET_FULL: Status = Status(0x28);
    pub const TASK_ABORTED: Status = Status(0x40);
}

/// What the device (or the path to it) said about one command.
#[derive(Debug, Clone)]
pub struct Completion {
    pub status: Status,
    /// Raw sense bytes (empty when none came back).
    pub sense: Vec<u8>,
    /// Bytes actually moved (requested length minus residual).
    pub transferred: usize,
}

impl Completion {
    pub fn good(transferred: usize) -> Self {
        Self {
            status: Status::GOOD,
            sense: Vec::new(),
            transferred,
        }
    }
    pub fn check_condition(sense: Vec<u8>, transferred: usize) -> Self {
        Self {
            status: Status::CHECK_CONDITION,
            sense,
            transferred,
        }
    }
}

/// The command never got a SCSI status: the path to the device failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{device}: {source}")]
    Io {
        device: String,
        source: std::io::Error,
    },
    #[error("{device}: command timed out after {timeout:?}")]
    Timeout { device: String, timeout: Duration },
    #[error("{device}: host adapter status {host:#06x}, driver status {driver:#06x}")]
    Host {
        device: String,
        host: u16,
        driver: u16,
    },
    #[error("{device}: {message}")]
    Other { device: String, message: String },
}

/// Carries one CDB to a device. Implementations: SG_IO ([`crate::sgio::SgDevice`]), the virtual
/// library (`vtl`), iSCSI (`iscsi`). Everything above runs the same code whatever the transport.
pub trait Transport: Send {
    fn execute(
        &mut self,
        cdb: &[u8],
        data: DataDir<'_>,
        timeout: Duration,
    ) -> Result<Completion, TransportError>;

    /// A short name for messages: "/dev/sg3", "vtl /srv/vtl drive 0", "iscsi://…/1".
    fn describe(&self) -> String;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn execute(
        &mut self,
        cdb: &[u8],
        data: DataDir<'_>,
        timeout: Duration,
    ) -> Result<Completion, TransportError> {
        (**self).execute(cdb, data, timeout)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// A failed command, as callers match it.
#[derive(Debug, thiserror::Error)]
pub enum ScsiError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// CHECK CONDITION with decodable sense data. `transferred` is what moved before it.
    #[error("{device}: {opcode_name} failed: {sense}")]
    Sense {
        device: String,
        opcode_name: &'static str,
        sense: Sense,
        transferred: usize,
    },
    /// A status other than GOOD without usable sense data (BUSY, RESERVATION CONFLICT, or sense
    /// bytes that do not decode).
    #[error("{device}: {opcode_name} returned SCSI status {status:#04x}{}", if raw_sense.is_empty() { String::new() } else { format!(" with undecodable sense {raw_sense:02x?}") })]
    Status {
        device: String,
        opcode_name: &'static str,
        status: u8,
        raw_sense: Vec<u8>,
    },
}

impl ScsiError {
    pub fn sense(&self) -> Option<&Sense> {
        match self {
            ScsiError::Sense { sense, .. } => Some(sense),
            _ => None,
        }
    }
}

/// Runs one command and turns anything but GOOD into an error. Returns the bytes transferred.
///
/// A CHECK CONDITION whose sense key is NO SENSE or RECOVERED ERROR with no filemark/EOM/ILI flag is
/// treated as success (the drive merely informs, e.g. "cleaning requested", ltfs#190).
pub fn execute<T: Transport + ?Sized>(
    t: &mut T,
    cdb: &[u8],
    data: DataDir<'_>,
    timeout: Duration,
) -> Result<usize, ScsiError> {
    let c = t.execute(cdb, data, timeout)?;
    check(t, cdb, c)
}

fn check<T: Transport + ?Sized>(t: &T, cdb: &[u8], c: Completion) -> Result<usize, ScsiError> {
    if c.status == Status::GOOD {
        return Ok(c.transferred);
    }
    let opcode_name = opcode_name(cdb.first().copied().unwrap_or(0xff));
    if c.status == Status::CHECK_CONDITION
        && let Some(sense) = Sense::decode(&c.sense)
    {
        if sense.is_informational() {
            tracing::debug!(device = %t.describe(), opcode_name, %sense, "informational sense ignored");
            return Ok(c.transferred);
        }
        return Err(ScsiError::Sense {
            device: t.describe(),
            opcode_name,
            sense,
            transferred: c.transferred,
        });
    }
    Err(ScsiError::Status {
        device: t.describe(),
        opcode_name,
        status: c.status.0,
        raw_sense: c.sense,
    })
}

/// Names of the opcodes this project sends, for error messages.
pub fn opcode_name(op: u8) -> &'static str {
    match op {
        0x00 => "TEST UNIT READY",
        0x01 => "REWIND",
        0x03 => "REQUEST SENSE",
        0x04 => "FORMAT MEDIUM",
        0x05 => "READ BLOCK LIMITS",
        0x07 => "INITIALIZE ELEMENT STATUS",
        0x08 => "READ(6)",
        0x0a => "WRITE(6)",
        0x10 => "WRITE FILEMARKS(6)",
        0x11 => "SPACE(6)",
        0x12 => "INQUIRY",
        0x15 => "MODE SELECT(6)",
        0x19 => "ERASE(6)",
        0x1a => "MODE SENSE(6)",
        0x1b => "LOAD/UNLOAD",
        0x1e => "PREVENT/ALLOW MEDIUM REMOVAL",
        0x2b => "LOCATE(10)",
        0x34 => "READ POSITION",
        0x44 => "REPORT DENSITY SUPPORT",
        0x4d => "LOG SENSE",
        0x55 => "MODE SELECT(10)",
        0x5a => "MODE SENSE(10)",
        0x8c => "READ ATTRIBUTE",
        0x8d => "WRITE ATTRIBUTE",
        0x91 => "SPACE(16)",
        0x92 => "LOCATE(16)",
        0xa2 => "SECURITY PROTOCOL IN",
        0xa5 => "MOVE MEDIUM",
        0xb5 => "SECURITY PROTOCOL OUT",
        0xb8 => "READ ELEMENT STATUS",
        _ => "SCSI command",
    }
}
