//! [`DriveStatus`]: everything an operator wants to know about a drive and its cartridge, from one call
//! that never fails on a missing feature. Each query that fails (tgt's virtual drive has no LOG SENSE,
//! READ ATTRIBUTE or REPORT DENSITY SUPPORT, and a READ POSITION that answers zeros) becomes a note and
//! the rest is still reported.

use ltfs::DeviceError;
use scsi::{ScsiError, Transport};
use serde::Serialize;

use super::limits::{density_name, drive_generation, lto_generation};
use super::logs::{TapeAlertFlag, VolumeStatistic};
use super::mam::{attribute_name, display_value};
use super::mode::{self, CompressionPage};
use super::{Drive, DriveError};

/// MAM attributes shown in the status (partition 0).
const STATUS_ATTRIBUTES: &[u16] = &[
    0x0003, 0x0009, 0x0220, 0x0221, 0x0400, 0x0401, 0x0406, 0x0800, 0x0801, 0x0802, 0x0803, 0x0808,
    0x080b, 0x1623,
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusPosition {
    pub partition: u8,
    pub block: u64,
    /// Filemarks passed (long-form READ POSITION only).
    pub file: Option<u64>,
    pub beginning_of_partition: bool,
    pub end_of_partition: bool,
    /// "drive" when READ POSITION answered, "cached" when it is a stub and tapectl's bookkeeping is used.
    pub source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionCapacity {
    pub partition: u8,
    pub remaining_mib: Option<u64>,
    pub maximum_mib: Option<u64>,
    /// Where the figures came from: "MAM" (attributes 0x0000/0x0001) or "log page 0x31".
    pub source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeEntry {
    pub id: u16,
    pub name: Option<&'static str>,
    pub value: String,
}

/// A drive and its cartridge at a glance. `None` fields could not be read (see `notes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriveStatus {
    pub device: String,
    pub vendor: String,
    pub product: String,
    pub revision: String,
    pub serial: Option<String>,
    /// The LTO generation of the drive (highest density it reports).
    pub drive_generation: Option<u8>,
    pub medium_present: Option<bool>,
    /// TEST UNIT READY succeeded.
    pub ready: bool,
    pub barcode: Option<String>,
    /// The loaded cartridge's density code (mode block descriptor).
    pub density_code: Option<u8>,
    pub density_name: Option<&'static str>,
    pub medium_generation: Option<u8>,
    pub write_protected: Option<bool>,
    /// Block length from the block descriptor: 0 means variable-length records.
    pub block_length: Option<u32>,
    pub buffered_mode: Option<u8>,
    pub compression: Option<bool>,
    pub partitions: Option<u8>,
    pub position: Option<StatusPosition>,
    /// Flags set; `None` when TapeAlert could not be read.
    pub tape_alerts: Option<Vec<TapeAlertFlag>>,
    pub needs_cleaning: bool,
    pub critical_alert: bool,
    pub capacity: Vec<PartitionCapacity>,
    pub volume_statistics: Vec<VolumeStatistic>,
    pub attributes: Vec<AttributeEntry>,
    pub quirks: Vec<&'static str>,
    pub notes: Vec<String>,
}

impl DriveStatus {
    fn note(&mut self, what: &str, e: &DriveError) {
        self.notes.push(format!("{what}: {e}"));
    }
}

impl<T: Transport> Drive<T> {
    /// Queries everything [`DriveStatus`] holds. Never fails: what cannot be read is a note.
    pub fn status(&mut self) -> DriveStatus {
        let mut s = DriveStatus {
            device: self.device.clone(),
            vendor: self.inquiry.vendor.clone(),
            product: self.inquiry.product.clone(),
            revision: self.inquiry.revision.clone(),
            serial: self.serial.clone(),
            ..DriveStatus::default()
        };

        match self.wait_until_ready(std::time::Duration::ZERO) {
            Ok(()) => {
                s.medium_present = Some(true);
                s.ready = true;
            }
            Err(e) if e.is_no_medium() => s.medium_present = Some(false),
            Err(e @ DriveError::NotReadyTimeout { .. }) => {
                s.medium_present = Some(true);
                s.note("not ready", &e);
            }
            Err(e @ DriveError::Scsi(ScsiError::Transport(_))) => {
                s.note("TEST UNIT READY", &e);
                return s;
            }
            Err(e) => s.note("TEST UNIT READY", &e),
        }

        match self.density_support(false) {
            Ok(d) => s.drive_generation = drive_generation(&d),
            Err(e) => s.note("REPORT DENSITY SUPPORT", &e),
        }

        match self.tape_alerts() {
            Ok(t) => {
                s.needs_cleaning = t.needs_cleaning();
                s.critical_alert = t.is_critical();
                s.tape_alerts = Some(t.flags().collect());
            }
            Err(e) => s.note("TapeAlert", &e),
        }

        if s.ready {
            self.medium_status(&mut s);
        }
        s.quirks = self.quirks.describe();
        s
    }

    fn medium_status(&mut self, s: &mut DriveStatus) {
        let mode = self
            .mode_sense(mode::PAGE_COMPRESSION)
            .or_else(|e| match e.kind() {
                Some(DeviceError::IllegalRequest(_) | DeviceError::Unsupported(_)) => {
                    self.mode_sense(0)
                }
                _ => Err(e),
            });
        match mode {
            Ok(m) => {
                s.write_protected = Some(m.write_protected);
                s.buffered_mode = Some(m.buffered_mode);
                if let Some(bd) = m.block_descriptor {
                    s.density_code = Some(bd.density);
                    s.density_name = density_name(bd.density);
                    s.medium_generation = lto_generation(bd.density);
                    s.block_length = Some(bd.block_length);
                }
                s.compression = m
                    .page(mode::PAGE_COMPRESSION)
                    .and_then(CompressionPage::decode)
                    .map(|c| c.dce);
            }
            Err(e) => s.note("MODE SENSE", &e),
        }

        match self.partitions() {
            Ok(n) => s.partitions = Some(n),
            Err(e) => s.note("MODE SENSE page 0x11", &e),
        }

        s.position = self.status_position(s);

        match self.attributes(0) {
            Ok(attrs) => {
                s.barcode = attrs
                    .iter()
                    .find(|a| a.id == 0x0806)
                    .map(|a| a.text())
                    .filter(|t| !t.is_empty());
                s.attributes = attrs
                    .iter()
                    .filter(|a| STATUS_ATTRIBUTES.contains(&a.id))
                    .map(|a| AttributeEntry {
                        id: a.id,
                        name: attribute_name(a.id),
                        value: display_value(a),
                    })
                    .collect();
                let cap = |id| {
                    attrs
                        .iter()
                        .find(|a| a.id == id)
                        .and_then(|a| scsi::be::uint_at(&a.value, 0, a.value.len()))
                };
                if cap(0x0000).is_some() || cap(0x0001).is_some() {
                    s.capacity.push(PartitionCapacity {
                        partition: 0,
                        remaining_mib: cap(0x0000),
                        maximum_mib: cap(0x0001),
                        source: "MAM",
                    });
                    for p in 1..s.partitions.unwrap_or(1) {
                        let rem = self
                            .attribute(p, 0x0000)
                            .ok()
                            .flatten()
                            .and_then(|a| scsi::be::uint_at(&a.value, 0, a.value.len()));
                        let max = self
                            .attribute(p, 0x0001)
                            .ok()
                            .flatten()
                            .and_then(|a| scsi::be::uint_at(&a.value, 0, a.value.len()));
                        s.capacity.push(PartitionCapacity {
                            partition: p,
                            remaining_mib: rem,
                            maximum_mib: max,
                            source: "MAM",
                        });
                    }
                }
            }
            Err(e) => s.note("READ ATTRIBUTE", &e),
        }

        if s.capacity.is_empty() {
            match self.tape_capacity() {
                Ok(c) => {
                    for p in 0..s.partitions.unwrap_or(1).min(2) {
                        let i = p as usize;
                        s.capacity.push(PartitionCapacity {
                            partition: p,
                            remaining_mib: c.remaining[i],
                            maximum_mib: c.maximum[i],
                            source: "log page 0x31",
                        });
                    }
                }
                Err(e) => s.note("LOG SENSE page 0x31", &e),
            }
        }

        match self.volume_statistics() {
            Ok(v) => s.volume_statistics = v,
            Err(e) => s.note("LOG SENSE page 0x17", &e),
        }
    }

    fn status_position(&mut self, s: &mut DriveStatus) -> Option<StatusPosition> {
        if !self.quirks.read_position_stub {
            match self.read_position_data() {
                Ok(pd) if !pd.unknown && !pd.looks_like_stub() => {
                    let partition = u8::try_from(pd.partition).ok()?;
                    self.set_position(ltfs::Position {
                        partition,
                        block: pd.block,
                    });
                    return Some(StatusPosition {
                        partition,
                        block: pd.block,
                        file: pd.file,
                        beginning_of_partition: pd.bop,
                        end_of_partition: pd.eop,
                        source: "drive",
                    });
                }
                // Unknown, or zeros that may be a stub: read_position below sorts it out.
                Ok(_) => {}
                Err(e) => {
                    s.note("READ POSITION", &e);
                    return None;
                }
            }
        }
        match self.read_position() {
            Ok(p) => Some(StatusPosition {
                partition: p.partition,
                block: p.block,
                file: None,
                beginning_of_partition: p.block == 0,
                end_of_partition: false,
                source: if self.quirks.read_position_stub {
                    "cached"
                } else {
                    "drive"
                },
            }),
            Err(e) => {
                s.note("READ POSITION", &e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::logs::{TapeAlerts, encode_log_page};
    use super::super::mode::{BlockDescriptor, ModeData};
    use super::super::rw::PositionData;
    use super::super::script::{Script, Step};
    use ltfs::mam::{Attribute, AttributeFormat};
    use scsi::{Sense, SenseKey};

    fn mode_data(pages: Vec<u8>) -> ModeData {
        ModeData {
            medium_type: 0,
            write_protected: false,
            buffered_mode: 1,
            speed: 0,
            block_descriptor: Some(BlockDescriptor {
                density: 0x5a,
                blocks: 0,
                block_length: 0,
            }),
            pages,
        }
    }

    fn illegal(asc: u8) -> Sense {
        Sense::new(SenseKey::IllegalRequest, asc, 0)
    }

    #[test]
    fn full_status_from_a_capable_drive() {
        let mut alerts = TapeAlerts::default();
        alerts.set(TapeAlerts::CLEAN_NOW);
        let compression = vec![0x0f, 0x0e, 0xc0, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
        let partition = vec![0x11, 0x0a, 1, 1, 0x30, 3, 0, 0, 0, 10, 0xff, 0xff];
        let pos = PositionData {
            partition: 1,
            block: 42,
            file: Some(3),
            bop: false,
            eop: false,
            bpew: false,
            unknown: false,
        };
        let attrs = mam_values(&[
            Attribute::new(0x0000, AttributeFormat::Binary, 1000u64.to_be_bytes()),
            Attribute::new(0x0001, AttributeFormat::Binary, 2000u64.to_be_bytes()),
            Attribute::ascii(0x0400, "FUJI", 8),
            Attribute::ascii(0x0806, "RV0001L6", 32),
        ]);
        let vol = encode_log_page(0x17, 0, &[(1, &[0, 9])]);
        let mut d = Script::drive(vec![
            Step::ok(&[0x00]),
            Step::data(&[0x44, 0], super::super::limits::encode_density_report(&[])),
            Step::data(&[0x4d, 0, 0x52], alerts.encode_response_page()),
            Step::data(&[0x5a, 0, 0x0f], mode_data(compression).encode_sense(true)),
            Step::data(&[0x5a, 0, 0x11], mode_data(partition).encode_sense(true)),
            Step::data(&[0x34, 6], pos.encode_long()),
            Step::data(&[0x8c, 0, 0, 0, 0, 0, 0, 0], attrs),
            Step::data(
                &[0x8c, 0, 0, 0, 0, 0, 0, 1, 0, 0],
                mam_values(&[Attribute::new(
                    0,
                    AttributeFormat::Binary,
                    500u64.to_be_bytes(),
                )]),
            ),
            Step::data(
                &[0x8c, 0, 0, 0, 0, 0, 0, 1, 0, 1],
                mam_values(&[Attribute::new(
                    1,
                    AttributeFormat::Binary,
                    900u64.to_be_bytes(),
                )]),
            ),
            Step::data(&[0x4d, 0, 0x57], vol),
        ]);
        let s = d.status();
        assert!(d.transport().done(), "{:?}", s.notes);
        assert!(s.notes.is_empty(), "{:?}", s.notes);
        assert_eq!(s.medium_present, Some(true));
        assert_eq!(s.barcode.as_deref(), Some("RV0001L6"));
        assert_eq!(
            (s.density_code, s.density_name, s.medium_generation),
            (Some(0x5a), Some("LTO-6"), Some(6))
        );
        assert_eq!(
            (s.compression, s.block_length, s.partitions),
            (Some(true), Some(0), Some(2))
        );
        assert_eq!(
            s.position
                .as_ref()
                .map(|p| (p.partition, p.block, p.file, p.source)),
            Some((1, 42, Some(3), "drive"))
        );
        assert!(s.needs_cleaning && s.critical_alert);
        assert_eq!(s.capacity.len(), 2);
        assert_eq!(
            (s.capacity[1].remaining_mib, s.capacity[1].maximum_mib),
            (Some(500), Some(900))
        );
        assert_eq!(s.attributes.len(), 1);
        assert_eq!(s.attributes[0].value, "FUJI");
        assert_eq!(s.volume_statistics.len(), 1);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["tape_alerts"][0]["severity"], "critical");
    }

    fn mam_values(a: &[Attribute]) -> Vec<u8> {
        super::super::mam::encode_attribute_values(a)
    }

    #[test]
    fn tgt_like_drive_degrades_to_notes() {
        let mut d = Script::drive(vec![
            Step::ok(&[0x00]),
            Step::sense(&[0x44], illegal(0x20)),
            // No LOG SENSE at all: page 0x2E is not tried.
            Step::sense(&[0x4d, 0, 0x52], illegal(0x20)),
            Step::sense(&[0x5a], illegal(0x20)),
            Step::data(&[0x1a, 0, 0x0f], mode_data(vec![]).encode_sense(false)),
            Step::data(&[0x1a, 0, 0x11], mode_data(vec![]).encode_sense(false)),
            Step::data(&[0x34, 6], [0u8; 20]),
            Step::data(&[0x34, 0], [0u8; 20]),
            Step::data(&[0x34, 0], [0u8; 20]),
            Step::sense(&[0x8c], illegal(0x20)),
            Step::sense(&[0x4d, 0, 0x71], illegal(0x20)),
            Step::sense(&[0x4d, 0, 0x57], illegal(0x20)),
        ]);
        let s = d.status();
        assert!(d.transport().done());
        assert_eq!(s.medium_present, Some(true));
        assert_eq!(s.partitions, Some(1));
        assert_eq!(s.compression, None);
        // Zeros without BOP and no bookkeeping to check them against: unknown, not 0/0.
        assert_eq!(s.position, None);
        assert!(
            s.notes.iter().any(|n| n.contains("rewind or locate first")),
            "{:#?}",
            s.notes
        );
        assert_eq!(s.tape_alerts, None);
        assert_eq!(s.notes.len(), 6, "{:#?}", s.notes);
        assert!(
            s.notes.iter().any(|n| n
                .starts_with("READ ATTRIBUTE: script: READ ATTRIBUTE: the drive does not support")),
            "{:#?}",
            s.notes
        );
        assert_eq!(s.quirks.len(), 2, "{:?}", s.quirks);
        assert!(!d.quirks().tape_alert_page_2e);
    }

    #[test]
    fn no_cartridge() {
        let mut d = Script::drive(vec![
            Step::sense(&[0x00], Sense::new(SenseKey::NotReady, 0x3a, 0)),
            Step::data(&[0x44, 0], super::super::limits::encode_density_report(&[])),
            Step::data(
                &[0x4d, 0, 0x52],
                TapeAlerts::default().encode_response_page(),
            ),
        ]);
        let s = d.status();
        assert!(d.transport().done());
        assert_eq!(s.medium_present, Some(false));
        assert!(!s.ready && s.notes.is_empty());
        assert_eq!(s.tape_alerts, Some(vec![]));
    }
}
