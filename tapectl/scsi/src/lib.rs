//! The SCSI layer: one [`Transport`] trait that every command set runs on, whatever carries the CDB
//! (SG_IO on /dev/sg*, the virtual library, iSCSI), typed [`Sense`] data, and the commands every device
//! type shares (INQUIRY, VPD, TEST UNIT READY, REQUEST SENSE).

pub mod buffer;
pub mod inquiry;
pub mod sense;
pub mod sgio;
mod transport;

pub use buffer::AlignedBuf;
pub use inquiry::{DeviceType, Inquiry};
pub use sense::{Sense, SenseKey};
pub use transport::{Completion, DataDir, ScsiError, Status, Transport, TransportError, execute};

/// Big-endian field readers that never panic: `None` when the slice is too short.
pub mod be {
    pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }
    pub fn u24_at(b: &[u8], at: usize) -> Option<u32> {
        let s = b.get(at..at + 3)?;
        Some(u32::from_be_bytes([0, s[0], s[1], s[2]]))
    }
    pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }
    pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
    }
    /// Reads a big-endian unsigned integer of 1..=8 bytes.
    pub fn uint_at(b: &[u8], at: usize, len: usize) -> Option<u64> {
        if len == 0 || len > 8 {
            return None;
        }
        Some(
            b.get(at..at + len)?
                .iter()
                .fold(0u64, |acc, &x| (acc << 8) | x as u64),
        )
    }
    /// Writes the low `len` bytes of `v` big-endian into `b[at..at+len]`.
    pub fn put(b: &mut [u8], at: usize, len: usize, v: u64) {
        for i in 0..len {
            b[at + i] = (v >> (8 * (len - 1 - i))) as u8;
        }
    }
    /// Space- and NUL-trimmed ASCII, lossy.
    pub fn ascii(b: &[u8]) -> String {
        String::from_utf8_lossy(b)
            .trim_matches([' ', '\0'])
            .to_string()
    }
}
