//! LTO densities for REPORT DENSITY SUPPORT (SSC-4 density support data block descriptors).

use crate::DriveModel;

pub(crate) struct Density {
    pub generation: u8,
    pub code: u8,
    pub bits_per_mm: u32,
    pub tracks: u16,
    /// Native capacity in MB (10^6 bytes).
    pub capacity_mb: u32,
    pub name: &'static str,
    pub description: &'static str,
}

pub(crate) const DENSITIES: [Density; 7] = [
    Density {
        generation: 3,
        code: 0x44,
        bits_per_mm: 9638,
        tracks: 704,
        capacity_mb: 400_000,
        name: "U-316",
        description: "Ultrium 3/16T",
    },
    Density {
        generation: 4,
        code: 0x46,
        bits_per_mm: 13250,
        tracks: 896,
        capacity_mb: 800_000,
        name: "U-416",
        description: "Ultrium 4/16T",
    },
    Density {
        generation: 5,
        code: 0x58,
        bits_per_mm: 15142,
        tracks: 1280,
        capacity_mb: 1_500_000,
        name: "U-516",
        description: "Ultrium 5/16T",
    },
    Density {
        generation: 6,
        code: 0x5a,
        bits_per_mm: 15142,
        tracks: 2176,
        capacity_mb: 2_500_000,
        name: "U-616",
        description: "Ultrium 6/16T",
    },
    Density {
        generation: 7,
        code: 0x5c,
        bits_per_mm: 19107,
        tracks: 3584,
        capacity_mb: 6_000_000,
        name: "U-716",
        description: "Ultrium 7/32T",
    },
    Density {
        generation: 8,
        code: 0x5e,
        bits_per_mm: 20669,
        tracks: 6656,
        capacity_mb: 12_000_000,
        name: "U-816",
        description: "Ultrium 8/32T",
    },
    Density {
        generation: 9,
        code: 0x60,
        bits_per_mm: 23031,
        tracks: 8960,
        capacity_mb: 18_000_000,
        name: "U-916",
        description: "Ultrium 9/32T",
    },
];

fn reads(drive: u8, medium: u8) -> bool {
    match drive {
        8 => medium == 7 || medium == 8,
        9 => medium == 8 || medium == 9,
        _ => medium <= drive && medium + 2 >= drive,
    }
}

fn writes(drive: u8, medium: u8) -> bool {
    medium <= drive && medium + 1 >= drive
}

fn descriptor(d: &Density, wrtok: bool, deflt: bool) -> [u8; 52] {
    let mut b = [0u8; 52];
    b[0] = d.code;
    b[1] = d.code;
    b[2] = if wrtok { 0x80 } else { 0 } | if deflt { 0x20 } else { 0 };
    b[5..8].copy_from_slice(&d.bits_per_mm.to_be_bytes()[1..]);
    b[8..10].copy_from_slice(&127u16.to_be_bytes()); // 12.7 mm, in 0.1 mm
    b[10..12].copy_from_slice(&d.tracks.to_be_bytes());
    b[12..16].copy_from_slice(&d.capacity_mb.to_be_bytes());
    crate::util::pad(&mut b[16..24], "LTO-CVE");
    crate::util::pad(&mut b[24..32], d.name);
    crate::util::pad(&mut b[32..52], d.description);
    b
}

/// The REPORT DENSITY SUPPORT response: every density the drive reads (newest first), or only the
/// loaded medium's (`medium = Some`).
pub(crate) fn report(drive: DriveModel, medium: Option<DriveModel>) -> Vec<u8> {
    let dg = drive.generation();
    let mut descs = Vec::new();
    for d in DENSITIES.iter().rev() {
        let selected = match medium {
            Some(m) => d.generation == m.generation(),
            None => reads(dg, d.generation),
        };
        if selected {
            descs.push(descriptor(d, writes(dg, d.generation), d.generation == dg));
        }
    }
    let mut b = vec![0u8; 4];
    let len = (2 + 52 * descs.len()) as u16;
    b[0..2].copy_from_slice(&len.to_be_bytes());
    for d in descs {
        b.extend_from_slice(&d);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lto8_reads_only_7_and_8() {
        let r = report(DriveModel::Lto8, None);
        assert_eq!(r.len(), 4 + 2 * 52);
        assert_eq!(r[4], 0x5e);
        assert_eq!(r[6] & 0xa0, 0xa0);
        assert_eq!(r[4 + 52], 0x5c);
        assert_eq!(r[4 + 52 + 2] & 0xa0, 0x80);
        let r = report(DriveModel::Lto6, None);
        assert_eq!(r.len(), 4 + 3 * 52);
        assert_eq!(r[4 + 104], 0x46);
        assert_eq!(r[4 + 104 + 2] & 0x80, 0, "LTO-6 does not write LTO-4");
    }
}
