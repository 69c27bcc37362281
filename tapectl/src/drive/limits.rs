//! What the drive can do: READ BLOCK LIMITS (record sizes) and REPORT DENSITY SUPPORT (density codes,
//! hence the LTO generation of the drive or of the loaded cartridge).

use scsi::be;
use serde::Serialize;

pub fn read_block_limits_cdb() -> [u8; 6] {
    [super::rw::READ_BLOCK_LIMITS, 0, 0, 0, 0, 0]
}

/// READ BLOCK LIMITS data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlockLimits {
    /// Fixed-block sizes must be multiples of 2^granularity.
    pub granularity: u8,
    /// Largest record; 0 means the drive states no limit.
    pub max: u32,
    pub min: u16,
}

impl BlockLimits {
    /// Needs the 6 bytes of the response.
    pub fn decode(b: &[u8]) -> Option<BlockLimits> {
        Some(BlockLimits {
            granularity: *b.first()? & 0x1f,
            max: be::u24_at(b, 1)?,
            min: be::u16_at(b, 4)?,
        })
    }

    pub fn encode(&self) -> [u8; 6] {
        let mut b = [0u8; 6];
        b[0] = self.granularity & 0x1f;
        be::put(&mut b, 1, 3, self.max as u64);
        be::put(&mut b, 4, 2, self.min as u64);
        b
    }

    /// The largest record READ(6)/WRITE(6) can move on this drive.
    pub fn max_record(&self) -> usize {
        match self.max {
            0 => super::rw::MAX_TRANSFER_6,
            m => (m as usize).min(super::rw::MAX_TRANSFER_6),
        }
    }
}

/// REPORT DENSITY SUPPORT. `media == true` reports what the loaded cartridge supports; `false` what the
/// drive supports.
pub fn report_density_cdb(media: bool, alloc: u16) -> [u8; 10] {
    let mut c = [0x44, media as u8, 0, 0, 0, 0, 0, 0, 0, 0];
    be::put(&mut c, 7, 2, alloc as u64);
    c
}

/// Bytes per density descriptor.
pub const DENSITY_DESCRIPTOR_LEN: usize = 52;

/// One density support data block descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DensityDescriptor {
    pub primary: u8,
    pub secondary: u8,
    /// The drive can write this density.
    pub writable: bool,
    pub default: bool,
    pub bits_per_mm: u32,
    /// Medium width in tenths of millimetres.
    pub media_width: u16,
    pub tracks: u16,
    /// Capacity in megabytes (10^6 bytes) as the drive states it.
    pub capacity_mb: u32,
    pub organization: String,
    pub name: String,
    pub description: String,
}

impl DensityDescriptor {
    fn decode(d: &[u8]) -> Option<DensityDescriptor> {
        let d = d.get(..DENSITY_DESCRIPTOR_LEN)?;
        Some(DensityDescriptor {
            primary: d[0],
            secondary: d[1],
            writable: d[2] & 0x80 != 0,
            default: d[2] & 0x20 != 0,
            bits_per_mm: be::u24_at(d, 5)?,
            media_width: be::u16_at(d, 8)?,
            tracks: be::u16_at(d, 10)?,
            capacity_mb: be::u32_at(d, 12)?,
            organization: be::ascii(&d[16..24]),
            name: be::ascii(&d[24..32]),
            description: be::ascii(&d[32..52]),
        })
    }

    pub fn encode(&self) -> [u8; DENSITY_DESCRIPTOR_LEN] {
        let mut d = [b' '; DENSITY_DESCRIPTOR_LEN];
        d[..16].fill(0);
        d[0] = self.primary;
        d[1] = self.secondary;
        d[2] = (self.writable as u8) << 7 | (self.default as u8) << 5;
        be::put(&mut d, 3, 2, 0x0034); // descriptor length (bytes that follow byte 4)
        be::put(&mut d, 5, 3, self.bits_per_mm as u64);
        be::put(&mut d, 8, 2, self.media_width as u64);
        be::put(&mut d, 10, 2, self.tracks as u64);
        be::put(&mut d, 12, 4, self.capacity_mb as u64);
        for (range, s) in [
            (16..24, &self.organization),
            (24..32, &self.name),
            (32..52, &self.description),
        ] {
            for (dst, c) in d[range].iter_mut().zip(s.bytes()) {
                *dst = c;
            }
        }
        d
    }
}

/// Decodes REPORT DENSITY SUPPORT data: a 4-byte header (available length) and 52-byte descriptors.
/// Trusts neither the header (clamped to the bytes present) nor a cut last descriptor (dropped).
pub fn decode_density_report(b: &[u8]) -> Vec<DensityDescriptor> {
    let Some(avail) = be::u16_at(b, 0) else {
        return Vec::new();
    };
    let end = b.len().min(2 + avail as usize);
    b.get(4..end)
        .unwrap_or(&[])
        .chunks_exact(DENSITY_DESCRIPTOR_LEN)
        .filter_map(DensityDescriptor::decode)
        .collect()
}

pub fn encode_density_report(descriptors: &[DensityDescriptor]) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    for d in descriptors {
        b.extend_from_slice(&d.encode());
    }
    let avail = (b.len() - 2) as u64;
    be::put(&mut b, 0, 2, avail);
    b
}

/// The LTO format generation of a density code: 0x40/0x42/0x44/0x46 LTO-1..4, 0x58 LTO-5, 0x5A LTO-6,
/// 0x5C LTO-7, 0x5D LTO-7 Type M (an LTO-7 cartridge in the LTO-8 format: generation 8), 0x5E LTO-8,
/// 0x60 LTO-9.
pub fn lto_generation(density: u8) -> Option<u8> {
    Some(match density {
        0x40 => 1,
        0x42 => 2,
        0x44 => 3,
        0x46 => 4,
        0x58 => 5,
        0x5a => 6,
        0x5c => 7,
        0x5d | 0x5e => 8,
        0x60 => 9,
        _ => return None,
    })
}

/// A display name for a density code.
pub fn density_name(density: u8) -> Option<&'static str> {
    Some(match density {
        0x40 => "LTO-1",
        0x42 => "LTO-2",
        0x44 => "LTO-3",
        0x46 => "LTO-4",
        0x58 => "LTO-5",
        0x5a => "LTO-6",
        0x5c => "LTO-7",
        0x5d => "LTO-7 Type M (M8)",
        0x5e => "LTO-8",
        0x60 => "LTO-9",
        _ => return None,
    })
}

/// The drive's generation: the highest LTO generation among the densities it reports (media = false).
pub fn drive_generation(descriptors: &[DensityDescriptor]) -> Option<u8> {
    descriptors
        .iter()
        .flat_map(|d| [d.primary, d.secondary])
        .filter_map(lto_generation)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lto(code: u8, name: &str, writable: bool) -> DensityDescriptor {
        DensityDescriptor {
            primary: code,
            secondary: code,
            writable,
            default: false,
            bits_per_mm: 15142,
            media_width: 127,
            tracks: 1280,
            capacity_mb: 1_500_000,
            organization: "LTO-CVE".into(),
            name: name.into(),
            description: "Ultrium".into(),
        }
    }

    #[test]
    fn block_limits() {
        let l = BlockLimits {
            granularity: 0,
            max: 0x80_0000,
            min: 1,
        };
        assert_eq!(BlockLimits::decode(&l.encode()), Some(l));
        assert_eq!(l.max_record(), 0x80_0000);
        assert_eq!(BlockLimits { max: 0, ..l }.max_record(), 0xff_ffff);
        // tgt: 1 MiB max, granularity 2.
        assert_eq!(
            BlockLimits::decode(&[2, 0x10, 0, 0, 0, 4]),
            Some(BlockLimits {
                granularity: 2,
                max: 1 << 20,
                min: 4
            })
        );
        for cut in 0..6 {
            assert_eq!(BlockLimits::decode(&l.encode()[..cut]), None);
        }
    }

    #[test]
    fn density_report_gives_generation() {
        let report = encode_density_report(&[
            lto(0x5a, "U-616", false),
            lto(0x5c, "U-732", true),
            lto(0x5e, "U-832", true),
        ]);
        let d = decode_density_report(&report);
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].name, "U-732");
        assert!(d[1].writable && !d[0].writable);
        assert_eq!(d[2].capacity_mb, 1_500_000);
        assert_eq!(drive_generation(&d), Some(8));
        assert_eq!(lto_generation(0x58), Some(5));
        assert_eq!(lto_generation(0x60), Some(9));
        assert_eq!(lto_generation(0x00), None);
        assert_eq!(density_name(0x5d), Some("LTO-7 Type M (M8)"));
    }

    #[test]
    fn density_report_truncation_drops_the_cut_descriptor() {
        let report = encode_density_report(&[lto(0x58, "U-516", true), lto(0x5a, "U-616", true)]);
        for cut in 0..report.len() {
            let d = decode_density_report(&report[..cut]);
            let whole = cut.saturating_sub(4) / DENSITY_DESCRIPTOR_LEN;
            assert_eq!(d.len(), whole, "cut {cut}");
        }
        // A header that claims more than is there, or less.
        let mut lying = report.clone();
        lying[0] = 0xff;
        assert_eq!(decode_density_report(&lying).len(), 2);
        lying[0] = 0;
        lying[1] = 54;
        assert_eq!(decode_density_report(&lying).len(), 1);
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = BlockLimits::decode(&b);
            let _ = decode_density_report(&b);
        }
    }
}
