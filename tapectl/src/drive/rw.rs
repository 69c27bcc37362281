//! Stream commands (SSC-4): READ(6), WRITE(6), WRITE FILEMARKS(6), SPACE(6)/(16), LOCATE(10)/(16),
//! READ POSITION (long form, service action 6, and the short form, service action 0), REWIND, ERASE,
//! LOAD/UNLOAD and PREVENT/ALLOW MEDIUM REMOVAL.
//!
//! Every command is a CDB builder; READ POSITION also has pure decoders. Nothing here does I/O: the
//! [`super::Drive`] sends these and interprets the sense data.

use scsi::be;

pub const TEST_UNIT_READY: u8 = 0x00;
pub const REWIND: u8 = 0x01;
pub const READ_BLOCK_LIMITS: u8 = 0x05;
pub const READ_6: u8 = 0x08;
pub const WRITE_6: u8 = 0x0a;
pub const WRITE_FILEMARKS_6: u8 = 0x10;
pub const SPACE_6: u8 = 0x11;
pub const ERASE_6: u8 = 0x19;
pub const LOAD_UNLOAD: u8 = 0x1b;
pub const PREVENT_ALLOW: u8 = 0x1e;
pub const LOCATE_10: u8 = 0x2b;
pub const READ_POSITION: u8 = 0x34;
pub const SPACE_16: u8 = 0x91;
pub const LOCATE_16: u8 = 0x92;

/// Largest transfer length READ(6)/WRITE(6) can express (24 bits).
pub const MAX_TRANSFER_6: usize = 0x00ff_ffff;
/// Largest count SPACE(6) can express (24-bit two's complement).
pub const MAX_SPACE_6: i64 = 0x007f_ffff;

/// READ(6) in variable-block mode with SILI=1: a shorter record completes with GOOD and a residual, a
/// longer one with ILI and a negative INFORMATION field. `len` is the buffer (at most [`MAX_TRANSFER_6`]).
pub fn read6_cdb(len: usize) -> [u8; 6] {
    let mut c = [READ_6, 0x02, 0, 0, 0, 0];
    be::put(&mut c, 2, 3, len.min(MAX_TRANSFER_6) as u64);
    c
}

/// WRITE(6) of one variable-length record of `len` bytes (at most [`MAX_TRANSFER_6`]).
pub fn write6_cdb(len: usize) -> [u8; 6] {
    let mut c = [WRITE_6, 0, 0, 0, 0, 0];
    be::put(&mut c, 2, 3, len.min(MAX_TRANSFER_6) as u64);
    c
}

/// WRITE FILEMARKS(6). `count == 0` with `immed == false` flushes the drive's buffer to the medium.
pub fn write_filemarks_cdb(count: u32, immed: bool) -> [u8; 6] {
    let mut c = [WRITE_FILEMARKS_6, immed as u8, 0, 0, 0, 0];
    be::put(&mut c, 2, 3, count.min(MAX_TRANSFER_6 as u32) as u64);
    c
}

/// What SPACE counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceCode {
    Blocks = 0,
    Filemarks = 1,
    SequentialFilemarks = 2,
    EndOfData = 3,
}

/// SPACE(6); `None` when `count` does not fit 24-bit two's complement (use [`space16_cdb`]).
pub fn space6_cdb(code: SpaceCode, count: i64) -> Option<[u8; 6]> {
    if !(-MAX_SPACE_6 - 1..=MAX_SPACE_6).contains(&count) {
        return None;
    }
    let mut c = [SPACE_6, code as u8, 0, 0, 0, 0];
    be::put(&mut c, 2, 3, count as u64 & 0x00ff_ffff);
    Some(c)
}

/// SPACE(16): a 64-bit signed count.
pub fn space16_cdb(code: SpaceCode, count: i64) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = SPACE_16;
    c[1] = code as u8;
    be::put(&mut c, 4, 8, count as u64);
    c
}

/// Where LOCATE(16) goes (its DEST_TYPE field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocateTarget {
    /// A logical object (record or filemark) number.
    Object(u64),
    /// A logical file (filemark count): the position just after that many filemarks.
    File(u64),
    /// End of data.
    EndOfData,
}

/// LOCATE(16). With `partition = Some(p)` the CP bit is set and the drive changes to partition `p`.
pub fn locate16_cdb(target: LocateTarget, partition: Option<u8>, immed: bool) -> [u8; 16] {
    let (dest, id) = match target {
        LocateTarget::Object(n) => (0u8, n),
        LocateTarget::File(n) => (1, n),
        LocateTarget::EndOfData => (3, 0),
    };
    let mut c = [0u8; 16];
    c[0] = LOCATE_16;
    c[1] = (dest << 3) | if partition.is_some() { 0x02 } else { 0 } | immed as u8;
    c[3] = partition.unwrap_or(0);
    be::put(&mut c, 4, 8, id);
    c
}

/// LOCATE(10) to a logical object; the fallback for drives without LOCATE(16).
pub fn locate10_cdb(block: u32, partition: Option<u8>, immed: bool) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = LOCATE_10;
    c[1] = if partition.is_some() { 0x02 } else { 0 } | immed as u8;
    be::put(&mut c, 3, 4, block as u64);
    c[8] = partition.unwrap_or(0);
    c
}

/// READ POSITION forms this module decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionForm {
    /// Service action 0: 20 bytes, 32-bit block numbers, 8-bit partition.
    Short = 0,
    /// Service action 6: 32 bytes, 64-bit object and file numbers.
    Long = 6,
}

pub fn read_position_cdb(form: PositionForm) -> [u8; 10] {
    [READ_POSITION, form as u8, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// Bytes to ask for with each form.
pub fn read_position_len(form: PositionForm) -> usize {
    match form {
        PositionForm::Short => 20,
        PositionForm::Long => 32,
    }
}

/// What READ POSITION reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PositionData {
    pub partition: u32,
    /// Logical object number (records and filemarks both count).
    pub block: u64,
    /// Logical file number (filemarks passed), long form only, when known.
    pub file: Option<u64>,
    /// Beginning of partition.
    pub bop: bool,
    /// End of partition (or early warning area, depending on the drive).
    pub eop: bool,
    /// Beyond programmable early warning.
    pub bpew: bool,
    /// The drive says the position is not known (LONU / LOLU); the numbers mean nothing.
    pub unknown: bool,
}

impl PositionData {
    /// Long form (service action 6). Needs 24 bytes (through the logical file identifier).
    pub fn decode_long(b: &[u8]) -> Option<PositionData> {
        let flags = *b.first()?;
        let partition = be::u32_at(b, 4)?;
        let block = be::u64_at(b, 8)?;
        let file = be::u64_at(b, 16)?;
        Some(PositionData {
            partition,
            block,
            file: (flags & 0x08 == 0).then_some(file),
            bop: flags & 0x80 != 0,
            eop: flags & 0x40 != 0,
            bpew: flags & 0x01 != 0,
            unknown: flags & 0x04 != 0,
        })
    }

    /// Short form (service action 0). Needs 8 bytes (through the first block location).
    pub fn decode_short(b: &[u8]) -> Option<PositionData> {
        let flags = *b.first()?;
        let partition = *b.get(1)?;
        let block = be::u32_at(b, 4)?;
        Some(PositionData {
            partition: partition as u32,
            block: block as u64,
            file: None,
            bop: flags & 0x80 != 0,
            eop: flags & 0x40 != 0,
            bpew: flags & 0x01 != 0,
            unknown: flags & 0x04 != 0,
        })
    }

    pub fn decode(form: PositionForm, b: &[u8]) -> Option<PositionData> {
        match form {
            PositionForm::Short => Self::decode_short(b),
            PositionForm::Long => Self::decode_long(b),
        }
    }

    /// Every field zero and no flag: what tgt's stub READ POSITION returns wherever the tape is (a real
    /// drive at block 0 also sets BOP).
    pub fn looks_like_stub(&self) -> bool {
        self.partition == 0
            && self.block == 0
            && !self.bop
            && !self.eop
            && !self.unknown
            && self.file.unwrap_or(0) == 0
    }

    /// Encodes the long form (for test transports and the virtual library).
    pub fn encode_long(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0] = (self.bop as u8) << 7
            | (self.eop as u8) << 6
            | if self.file.is_none() { 0x08 } else { 0 }
            | (self.unknown as u8) << 2
            | self.bpew as u8;
        be::put(&mut b, 4, 4, self.partition as u64);
        be::put(&mut b, 8, 8, self.block);
        be::put(&mut b, 16, 8, self.file.unwrap_or(0));
        b
    }

    /// Encodes the short form (for test transports).
    pub fn encode_short(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[0] = (self.bop as u8) << 7
            | (self.eop as u8) << 6
            | (self.unknown as u8) << 2
            | self.bpew as u8;
        b[1] = self.partition as u8;
        be::put(&mut b, 4, 4, self.block.min(u32::MAX as u64));
        be::put(&mut b, 8, 4, self.block.min(u32::MAX as u64));
        b
    }
}

pub fn rewind_cdb(immed: bool) -> [u8; 6] {
    [REWIND, immed as u8, 0, 0, 0, 0]
}

/// ERASE(6) from the current position. `long == false` only writes an end-of-data mark; `long == true`
/// erases to the end of the partition (hours on a full-height LTO drive).
pub fn erase_cdb(long: bool, immed: bool) -> [u8; 6] {
    [ERASE_6, (immed as u8) << 1 | long as u8, 0, 0, 0, 0]
}

/// LOAD/UNLOAD: `load == false` rewinds and ejects the cartridge (so a changer can take it).
pub fn load_unload_cdb(load: bool, immed: bool) -> [u8; 6] {
    [LOAD_UNLOAD, immed as u8, 0, 0, load as u8, 0]
}

pub fn prevent_allow_cdb(prevent: bool) -> [u8; 6] {
    [PREVENT_ALLOW, 0, 0, 0, prevent as u8, 0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn read_write_cdbs() {
        assert_eq!(read6_cdb(0x040000), [0x08, 0x02, 0x04, 0x00, 0x00, 0]);
        assert_eq!(write6_cdb(524288), [0x0a, 0, 0x08, 0x00, 0x00, 0]);
        assert_eq!(read6_cdb(usize::MAX)[2..5], [0xff, 0xff, 0xff]);
        assert_eq!(write_filemarks_cdb(0, false), [0x10, 0, 0, 0, 0, 0]);
        assert_eq!(write_filemarks_cdb(2, true), [0x10, 1, 0, 0, 2, 0]);
    }

    #[test]
    fn space_cdbs_encode_negative_counts() {
        assert_eq!(
            space6_cdb(SpaceCode::Filemarks, -1),
            Some([0x11, 1, 0xff, 0xff, 0xff, 0])
        );
        assert_eq!(
            space6_cdb(SpaceCode::EndOfData, 0),
            Some([0x11, 3, 0, 0, 0, 0])
        );
        assert_eq!(space6_cdb(SpaceCode::Blocks, MAX_SPACE_6 + 1), None);
        assert!(space6_cdb(SpaceCode::Blocks, -MAX_SPACE_6 - 1).is_some());
        let c = space16_cdb(SpaceCode::Filemarks, -2);
        assert_eq!(c[0..2], [0x91, 1]);
        assert_eq!(c[4..12], (-2i64).to_be_bytes());
    }

    #[test]
    fn locate_cdbs() {
        let c = locate16_cdb(LocateTarget::Object(0x0102), Some(1), false);
        assert_eq!(c[..4], [0x92, 0x02, 0, 1]);
        assert_eq!(c[4..12], 0x0102u64.to_be_bytes());
        assert_eq!(locate16_cdb(LocateTarget::EndOfData, None, false)[1], 0x18);
        assert_eq!(locate16_cdb(LocateTarget::File(3), Some(0), true)[1], 0x0b);
        assert_eq!(
            locate10_cdb(7, Some(1), false),
            [0x2b, 0x02, 0, 0, 0, 0, 7, 0, 1, 0]
        );
    }

    #[test]
    fn misc_cdbs() {
        assert_eq!(rewind_cdb(false), [1, 0, 0, 0, 0, 0]);
        assert_eq!(erase_cdb(true, true), [0x19, 3, 0, 0, 0, 0]);
        assert_eq!(load_unload_cdb(true, false), [0x1b, 0, 0, 0, 1, 0]);
        assert_eq!(load_unload_cdb(false, false), [0x1b, 0, 0, 0, 0, 0]);
        assert_eq!(prevent_allow_cdb(true), [0x1e, 0, 0, 0, 1, 0]);
        assert_eq!(
            read_position_cdb(PositionForm::Long),
            [0x34, 6, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn position_round_trips_and_flags() {
        let p = PositionData {
            partition: 1,
            block: 0x1_0000_0005,
            file: Some(3),
            bop: false,
            eop: false,
            bpew: true,
            unknown: false,
        };
        assert_eq!(PositionData::decode_long(&p.encode_long()), Some(p));
        let mut unknown_file = p;
        unknown_file.file = None;
        assert_eq!(
            PositionData::decode_long(&unknown_file.encode_long()),
            Some(unknown_file)
        );
        let short = PositionData {
            block: 5,
            file: None,
            ..p
        };
        assert_eq!(
            PositionData::decode_short(&short.encode_short()),
            Some(short)
        );
        assert!(
            PositionData::decode_long(&[0u8; 32])
                .unwrap()
                .looks_like_stub()
        );
        assert!(
            PositionData::decode_short(&[0u8; 20])
                .unwrap()
                .looks_like_stub()
        );
        let mut bot = [0u8; 32];
        bot[0] = 0x80;
        assert!(!PositionData::decode_long(&bot).unwrap().looks_like_stub());
    }

    #[test]
    fn position_truncation_is_none_not_panic() {
        let long = PositionData {
            partition: 1,
            block: 9,
            file: Some(1),
            bop: false,
            eop: false,
            bpew: false,
            unknown: false,
        }
        .encode_long();
        for cut in 0..long.len() {
            let d = PositionData::decode_long(&long[..cut]);
            assert_eq!(d.is_some(), cut >= 24, "cut {cut}");
        }
        let short = [
            0x80u8, 1, 0, 0, 0, 0, 0, 9, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        for cut in 0..short.len() {
            assert_eq!(
                PositionData::decode_short(&short[..cut]).is_some(),
                cut >= 8,
                "cut {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn position_decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = PositionData::decode_long(&b);
            let _ = PositionData::decode_short(&b);
        }

        #[test]
        fn space6_round_trips_the_count(n in -MAX_SPACE_6 - 1..=MAX_SPACE_6) {
            let c = space6_cdb(SpaceCode::Blocks, n).unwrap();
            let raw = be::u24_at(&c, 2).unwrap() as i32;
            prop_assert_eq!(((raw << 8) >> 8) as i64, n);
        }
    }
}
