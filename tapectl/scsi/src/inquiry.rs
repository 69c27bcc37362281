//! INQUIRY (standard data and the serial-number VPD page), TEST UNIT READY and REQUEST SENSE: the
//! commands every device type answers. Each is a CDB builder plus a pure decoder.

use std::time::Duration;

use crate::{DataDir, ScsiError, Sense, Transport, be, execute};

pub const SHORT_TIMEOUT: Duration = Duration::from_secs(30);

/// SPC peripheral device type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    Disk,
    Tape,
    Changer,
    Other(u8),
}

impl DeviceType {
    pub fn from_code(code: u8) -> Self {
        match code & 0x1f {
            0x00 => Self::Disk,
            0x01 => Self::Tape,
            0x08 => Self::Changer,
            c => Self::Other(c),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::Tape => "tape",
            Self::Changer => "medium changer",
            Self::Other(_) => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inquiry {
    pub device_type: DeviceType,
    pub removable: bool,
    pub vendor: String,
    pub product: String,
    pub revision: String,
}

pub fn inquiry_cdb(alloc: u16) -> [u8; 6] {
    let [hi, lo] = alloc.to_be_bytes();
    [0x12, 0, 0, hi, lo, 0]
}

pub fn vpd_cdb(page: u8, alloc: u16) -> [u8; 6] {
    let [hi, lo] = alloc.to_be_bytes();
    [0x12, 0x01, page, hi, lo, 0]
}

impl Inquiry {
    /// Decodes standard INQUIRY data; needs the first 36 bytes.
    pub fn decode(b: &[u8]) -> Option<Inquiry> {
        let b = b.get(..36)?;
        Some(Inquiry {
            device_type: DeviceType::from_code(b[0]),
            removable: b[1] & 0x80 != 0,
            vendor: be::ascii(&b[8..16]),
            product: be::ascii(&b[16..32]),
            revision: be::ascii(&b[32..36]),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 36];
        b[0] = match self.device_type {
            DeviceType::Disk => 0,
            DeviceType::Tape => 1,
            DeviceType::Changer => 8,
            DeviceType::Other(c) => c & 0x1f,
        };
        b[1] = if self.removable { 0x80 } else { 0 };
        b[2] = 0x06; // SPC-4
        b[3] = 0x02;
        b[4] = 31;
        pad(&mut b[8..16], &self.vendor);
        pad(&mut b[16..32], &self.product);
        pad(&mut b[32..36], &self.revision);
        b
    }
}

fn pad(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    for (d, c) in dst.iter_mut().zip(s.bytes()) {
        *d = c;
    }
}

/// Decodes VPD page 0x80 (unit serial number).
pub fn decode_serial_vpd(b: &[u8]) -> Option<String> {
    if *b.get(1)? != 0x80 {
        return None;
    }
    let len = be::u16_at(b, 2)? as usize;
    let s = b.get(4..)?;
    let serial = be::ascii(&s[..len.min(s.len())]);
    (!serial.is_empty()).then_some(serial)
}

pub fn encode_serial_vpd(device_type: u8, serial: &str) -> Vec<u8> {
    let mut b = vec![device_type & 0x1f, 0x80];
    b.extend_from_slice(&(serial.len() as u16).to_be_bytes());
    b.extend_from_slice(serial.as_bytes());
    b
}

/// Runs INQUIRY.
pub fn inquiry<T: Transport + ?Sized>(t: &mut T) -> Result<Inquiry, ScsiError> {
    let mut buf = [0u8; 96];
    let n = execute(t, &inquiry_cdb(96), DataDir::In(&mut buf), SHORT_TIMEOUT)?;
    Inquiry::decode(&buf[..n.min(buf.len())]).ok_or_else(|| short(t, "INQUIRY", n))
}

/// Runs INQUIRY for the unit serial number; `None` when the device has no page 0x80.
pub fn serial_number<T: Transport + ?Sized>(t: &mut T) -> Result<Option<String>, ScsiError> {
    let mut buf = [0u8; 255];
    match execute(t, &vpd_cdb(0x80, 255), DataDir::In(&mut buf), SHORT_TIMEOUT) {
        Ok(n) => Ok(decode_serial_vpd(&buf[..n.min(buf.len())])),
        Err(ScsiError::Sense { sense, .. }) if sense.key == crate::SenseKey::IllegalRequest => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub fn test_unit_ready<T: Transport + ?Sized>(t: &mut T) -> Result<(), ScsiError> {
    execute(t, &[0u8; 6], DataDir::None, SHORT_TIMEOUT).map(|_| ())
}

/// REQUEST SENSE: returns pending sense (a deferred error or unit attention), clearing it.
pub fn request_sense<T: Transport + ?Sized>(t: &mut T) -> Result<Option<Sense>, ScsiError> {
    let mut buf = [0u8; 252];
    let n = execute(
        t,
        &[0x03, 0, 0, 0, 252, 0],
        DataDir::In(&mut buf),
        SHORT_TIMEOUT,
    )?;
    Ok(Sense::decode(&buf[..n.min(buf.len())]).filter(|s| !s.is(crate::SenseKey::NoSense, 0, 0)))
}

/// A response too short to decode, as an error naming the device and command.
pub fn short<T: Transport + ?Sized>(t: &T, what: &'static str, got: usize) -> ScsiError {
    crate::ScsiError::Transport(crate::TransportError::Other {
        device: t.describe(),
        message: format!("{what} response too short ({got} bytes)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inquiry_round_trip_and_truncation() {
        let i = Inquiry {
            device_type: DeviceType::Changer,
            removable: true,
            vendor: "IBM".into(),
            product: "3573-TL".into(),
            revision: "F.11".into(),
        };
        let b = i.encode();
        assert_eq!(Inquiry::decode(&b), Some(i));
        assert_eq!(Inquiry::decode(&b[..35]), None);
    }

    #[test]
    fn serial_vpd_tolerates_lies() {
        let b = encode_serial_vpd(1, "10WT00001");
        assert_eq!(decode_serial_vpd(&b).as_deref(), Some("10WT00001"));
        // A length larger than the data: take what is there.
        let mut lying = b.clone();
        lying[3] = 200;
        assert_eq!(decode_serial_vpd(&lying).as_deref(), Some("10WT00001"));
        assert_eq!(decode_serial_vpd(&b[..3]), None);
        assert_eq!(decode_serial_vpd(&[1, 0x80, 0, 4, b' ', b' ', 0, 0]), None);
    }
}
