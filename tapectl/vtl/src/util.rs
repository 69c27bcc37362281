//! Small helpers shared by the changer and the drives: completions with sense, data-in responses that
//! honour the allocation length, CDB length checks.

use scsi::{Completion, DataDir, Sense, SenseKey};

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// TapeAlert flag `n` (1..=64) as a bit in a u64 (bit n-1).
pub(crate) const fn ta_bit(n: u8) -> u64 {
    1u64 << (n - 1)
}

pub(crate) fn check(sense: Sense, transferred: usize) -> Completion {
    Completion::check_condition(sense.encode_fixed(), transferred)
}

pub(crate) fn fail(key: SenseKey, asc: u8, ascq: u8) -> Completion {
    check(Sense::new(key, asc, ascq), 0)
}

pub(crate) fn illegal(asc: u8, ascq: u8) -> Completion {
    fail(SenseKey::IllegalRequest, asc, ascq)
}

/// ILLEGAL REQUEST, INVALID FIELD IN CDB.
pub(crate) fn bad_cdb() -> Completion {
    illegal(0x24, 0x00)
}

/// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST.
pub(crate) fn bad_param() -> Completion {
    illegal(0x26, 0x00)
}

/// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
pub(crate) fn bad_opcode() -> Completion {
    illegal(0x20, 0x00)
}

/// Copies a response into the data-in buffer, cut to the allocation length and the buffer.
pub(crate) fn respond(data: DataDir<'_>, resp: &[u8], alloc: usize) -> Completion {
    let n = match data {
        DataDir::In(buf) => {
            let n = resp.len().min(alloc).min(buf.len());
            buf[..n].copy_from_slice(&resp[..n]);
            n
        }
        _ => 0,
    };
    Completion::good(n)
}

/// The CDB length an opcode's group implies (SAM: group 0 = 6, 1 and 2 = 10, 4 = 16, 5 = 12).
/// The fields of a MODE SENSE(6)/(10) CDB, parsed the same way by the changer and the drives.
pub(crate) struct ModeSenseCdb {
    pub ten: bool,
    pub changeable: bool,
    pub page: u8,
    pub alloc: usize,
}

/// Parses MODE SENSE(6)/(10); the error is the CHECK CONDITION to return (a subpage other than "all",
/// or saved values, which neither device keeps).
pub(crate) fn parse_mode_sense(cdb: &[u8]) -> Result<ModeSenseCdb, Completion> {
    let ten = cdb[0] == 0x5a;
    let pc = cdb[2] >> 6;
    let page = cdb[2] & 0x3f;
    let subpage = cdb[3];
    let alloc = if ten {
        u16_at(cdb, 7) as usize
    } else {
        cdb[4] as usize
    };
    if subpage != 0 && !(page == 0x3f && subpage == 0xff) {
        return Err(bad_cdb());
    }
    if pc == 3 {
        return Err(illegal(0x39, 0x00)); // saving parameters not supported
    }
    Ok(ModeSenseCdb {
        ten,
        changeable: pc == 1,
        page,
        alloc,
    })
}

pub(crate) fn cdb_len(op: u8) -> usize {
    match op >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 6,
    }
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    scsi::be::u16_at(b, at).unwrap_or(0)
}
pub(crate) fn u24_at(b: &[u8], at: usize) -> u32 {
    scsi::be::u24_at(b, at).unwrap_or(0)
}
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    scsi::be::u32_at(b, at).unwrap_or(0)
}
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    scsi::be::u64_at(b, at).unwrap_or(0)
}

/// Writes `s` into `dst`, space-padded (and cut).
pub(crate) fn pad(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    for (d, c) in dst.iter_mut().zip(s.bytes()) {
        *d = c;
    }
}

pub(crate) fn padded(s: &str, len: usize) -> Vec<u8> {
    let mut v = vec![b' '; len];
    pad(&mut v, s);
    v
}

/// Standard INQUIRY and the VPD pages both device types answer (0x00, 0x80, 0x83).
pub(crate) fn inquiry(
    cdb: &[u8],
    data: DataDir<'_>,
    std_inq: &scsi::Inquiry,
    dtype: u8,
    serial: &str,
) -> Completion {
    let evpd = cdb[1] & 0x01 != 0;
    let page = cdb[2];
    let alloc = u16_at(cdb, 3) as usize;
    if cdb[1] & 0x02 != 0 || (!evpd && page != 0) {
        return bad_cdb();
    }
    if !evpd {
        let mut b = std_inq.encode();
        // Bytes 36..56: vendor specific, 56..96: version descriptors; give the longer standard form.
        b.resize(96, 0);
        b[4] = 91;
        return respond(data, &b, alloc);
    }
    let resp = match page {
        0x00 => vec![dtype, 0x00, 0, 3, 0x00, 0x80, 0x83],
        0x80 => scsi::inquiry::encode_serial_vpd(dtype, serial),
        0x83 => {
            // One T10 vendor identification descriptor: vendor(8) + product(16) + serial.
            let mut id = padded(&std_inq.vendor, 8);
            id.extend_from_slice(&padded(&std_inq.product, 16));
            id.extend_from_slice(serial.as_bytes());
            let mut b = vec![dtype, 0x83, 0, 0, 0x02, 0x01, 0x00, id.len() as u8];
            b.extend_from_slice(&id);
            let len = (b.len() - 4) as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
            b
        }
        _ => return bad_cdb(),
    };
    respond(data, &resp, alloc)
}

/// REPORT LUNS: one LUN, 0.
pub(crate) fn report_luns(cdb: &[u8], data: DataDir<'_>) -> Completion {
    let alloc = u32_at(cdb, 6) as usize;
    let mut b = vec![0u8; 16];
    b[3] = 8;
    respond(data, &b, alloc)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn respond_truncates() {
        let mut buf = [0u8; 10];
        let c = respond(DataDir::In(&mut buf), &[1, 2, 3, 4, 5], 3);
        assert_eq!(c.transferred, 3);
        assert_eq!(&buf[..4], &[1, 2, 3, 0]);
    }
}
