//! Formatting (§1 "Format", §2–3, §6): refuse a used tape unless forced, make two partitions, write
//! the DP then the IP (label construct, FM at 4, generation-1 index at 5, FM at 6), then the MAM
//! attributes and both partitions' coherency.

use std::io::Read;
use std::time::Instant;

use super::{
    LastIndex, MountReport, Result, SyncPolicy, Volume, VolumeError, creator, dev_err, now,
    read_capacity,
};
use crate::coherency;
use crate::construct::{VolumeLabels, write_label_construct};
use crate::device::{DeviceError, Position, ReadOutcome, TapeDevice};
use crate::index::{Index, IndexLocation};
use crate::label::{self, Label, WRITE_VERSION};
use crate::scan::CurrentIndex;

/// How to format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// The cartridge barcode: its first 6 characters become the VOL1 volume serial (when they are
    /// `[0-9A-Z]`), and it is stored in MAM 0x0806.
    pub barcode: Option<String>,
    /// The root directory's name and MAM 0x0803.
    pub volume_name: Option<String>,
    /// 4096 to the drive's maximum; 524288 by default.
    pub block_size: usize,
    /// Destroy an existing LTFS volume or other data.
    pub force: bool,
    /// Size of the index partition (physical 0).
    pub index_partition_mb: u32,
    /// A fixed volume UUID (tests, reproducible images); random (version 4) when `None`.
    pub uuid: Option<String>,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            barcode: None,
            volume_name: None,
            block_size: 524288,
            force: false,
            index_partition_mb: 1024,
            uuid: None,
        }
    }
}

/// A random version-4 UUID, lowercase 8-4-4-4-12.
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        // No /dev/urandom: mix the clock, the process and an address (unique enough for a label).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let x = t ^ (u128::from(std::process::id()) << 64) ^ (&b as *const _ as usize as u128);
        b = x.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Refuses a tape with an LTFS volume or any record/filemark on it.
fn check_blank<D: TapeDevice>(dev: &mut D) -> Result<()> {
    if let Ok(labels) = crate::construct::read_labels(dev) {
        return Err(VolumeError::AlreadyLtfs {
            serial: labels.serial,
            uuid: labels.labels[0].volume_uuid.clone(),
        });
    }
    let parts = dev
        .partition_count()
        .map_err(dev_err("reading the partition count"))?;
    let mut buf = vec![0u8; dev.max_block_size().unwrap_or(1 << 20).max(80)];
    for partition in 0..parts {
        dev.locate(Position {
            partition,
            block: 0,
        })
        .map_err(dev_err(format!("locating partition {partition} block 0")))?;
        match dev.read_block(&mut buf) {
            Ok(ReadOutcome::EndOfData) => {}
            Ok(_) | Err(DeviceError::RecordTooLong { .. } | DeviceError::Medium { .. }) => {
                return Err(VolumeError::NotBlank { partition });
            }
            Err(e) => return Err(dev_err(format!("reading partition {partition} block 0"))(e)),
        }
    }
    Ok(())
}

impl<D: TapeDevice> Volume<D> {
    /// Formats the loaded cartridge and returns the new, mounted volume.
    pub fn format(mut dev: D, opts: &FormatOptions) -> Result<Volume<D>> {
        let max = dev
            .max_block_size()
            .map_err(dev_err("reading the drive's block limits"))?;
        let bs = opts.block_size;
        if bs < 4096 || bs > max || bs > u32::MAX as usize {
            return Err(VolumeError::BlockSize { size: bs, max });
        }
        if !opts.force {
            check_blank(&mut dev)?;
        }
        let uuid = match &opts.uuid {
            Some(u) => label::parse_uuid(u).ok_or_else(|| VolumeError::BadUuid(u.clone()))?,
            None => random_uuid(),
        };
        dev.format_two_partitions(opts.index_partition_mb)
            .map_err(dev_err("partitioning the cartridge"))?;
        let creator = creator();
        let t = now();
        let (ip, dp) = (0u8, 1u8);
        let mk = |location| Label {
            creator: creator.clone(),
            format_time: t,
            volume_uuid: uuid.clone(),
            location,
            index_partition: 'a',
            data_partition: 'b',
            block_size: bs as u32,
            compression: true,
            version: WRITE_VERSION,
        };
        let labels = VolumeLabels {
            serial: opts.barcode.as_deref().and_then(label::volume_serial),
            labels: [mk('a'), mk('b')],
        };
        let name = opts.volume_name.clone().unwrap_or_default();
        let index = Index::new(
            format!("{creator} - Format"),
            uuid.clone(),
            name.clone(),
            t,
            IndexLocation {
                partition: 'b',
                start_block: 5,
            },
        );
        let mut vol = Volume {
            dev,
            labels,
            block_size: bs,
            ip,
            dp,
            index,
            dirty: false,
            eod: [4, 4],
            last: [None, None],
            ends_in_index: [false, false],
            dp_needs_fm: false,
            report: MountReport {
                fast_path: false,
                current: CurrentIndex::IndexPartition,
                extra_blocks: [0, 0],
                missing_trailing_fm: [false, false],
                rejected: Vec::new(),
                index_partition_stale: false,
            },
            sync: SyncPolicy::default(),
            unsynced_bytes: 0,
            last_sync: Instant::now(),
            full: false,
            wrote: true,
            creator,
            capacity: [None, None],
            packed: None,
            packed_last: None,
        };
        vol.capacity = read_capacity(&mut vol.dev);
        // DP then IP: label construct, then the generation-1 index at block 5 (the IP's pointing back
        // to b/5; the index is clean, so both are generation 1).
        for p in [dp, ip] {
            let l = vol.labels.labels[p as usize].clone();
            vol.dev
                .locate(Position {
                    partition: p,
                    block: 0,
                })
                .map_err(dev_err(format!("locating partition {p} block 0")))?;
            write_label_construct(&mut vol.dev, vol.labels.serial.as_deref(), &l)?;
            vol.eod[p as usize] = 4;
            if p == dp {
                // `write_index` sets the location; start from "no previous index".
                vol.index.location = IndexLocation {
                    partition: 'a',
                    start_block: 0,
                };
            }
            vol.write_index(p, "Format")?;
        }
        debug_assert_eq!(
            vol.last,
            [
                Some(LastIndex {
                    generation: 1,
                    start: 5,
                    backptr: Some(5)
                }),
                Some(LastIndex {
                    generation: 1,
                    start: 5,
                    backptr: None
                })
            ]
        );
        for a in coherency::format_attributes(
            "RACKVLT",
            "rackvault ltfs",
            env!("CARGO_PKG_VERSION"),
            &name,
            opts.barcode.as_deref().unwrap_or(""),
        ) {
            match vol.dev.write_attribute(0, &a) {
                Ok(()) => {}
                Err(DeviceError::Unsupported(_) | DeviceError::IllegalRequest(_)) => break,
                Err(e) => {
                    return Err(dev_err(format!("writing MAM attribute {:#06x}", a.id))(e));
                }
            }
        }
        vol.update_coherency()?;
        vol.index.creator = format!("{} - Format", vol.creator);
        Ok(vol)
    }
}
