//! LOG SENSE: a generic log-parameter walker that survives truncation, TapeAlert (page 0x12, the
//! TapeAlert Response page, preferred because reading page 0x2E clears the flags; page 0x2E as the
//! fallback), volume statistics (page 0x17) and IBM's tape capacity page (0x31).
//!
//! TapeAlert flags are kept as a `u64` with flag `n` (1..=64) at bit `n - 1`, whichever page they came
//! from. Flag names and severities follow the TapeAlert specification as carried into SSC-4 (annex);
//! flags 0x28..=0x2E are the obsolete loader flags of the original TapeAlert specification, 0x3D..=0x40
//! are reserved.

use scsi::be;
use serde::Serialize;

pub const LOG_SENSE: u8 = 0x4d;
pub const PAGE_TAPE_ALERT_RESPONSE: u8 = 0x12;
pub const PAGE_VOLUME_STATISTICS: u8 = 0x17;
pub const PAGE_TAPE_ALERT: u8 = 0x2e;
pub const PAGE_TAPE_CAPACITY: u8 = 0x31;

/// LOG SENSE with PC = 01b (current cumulative values), parameter pointer 0.
pub fn log_sense_cdb(page: u8, subpage: u8, alloc: u16) -> [u8; 10] {
    let mut c = [
        LOG_SENSE,
        0,
        0x40 | (page & 0x3f),
        subpage,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    be::put(&mut c, 7, 2, alloc as u64);
    c
}

/// One log parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogParameter<'a> {
    pub code: u16,
    pub control: u8,
    pub value: &'a [u8],
}

/// A log page: header fields and the parameter bytes (cut to the page length and the bytes present).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPage<'a> {
    pub page: u8,
    pub subpage: u8,
    body: &'a [u8],
}

impl<'a> LogPage<'a> {
    /// Needs the 4-byte header.
    pub fn decode(b: &'a [u8]) -> Option<LogPage<'a>> {
        let page = *b.first()? & 0x3f;
        let subpage = *b.get(1)?;
        let len = be::u16_at(b, 2)? as usize;
        let end = b.len().min(4 + len);
        Some(LogPage {
            page,
            subpage,
            body: &b[4..end],
        })
    }

    /// The parameters, in order. A parameter whose header or value is cut ends the walk.
    pub fn parameters(&self) -> impl Iterator<Item = LogParameter<'a>> + 'a {
        let mut rest = self.body;
        std::iter::from_fn(move || {
            let h = rest.get(..4)?;
            let len = h[3] as usize;
            let value = rest.get(4..4 + len)?;
            let p = LogParameter {
                code: u16::from_be_bytes([h[0], h[1]]),
                control: h[2],
                value,
            };
            rest = &rest[4 + len..];
            Some(p)
        })
    }

    pub fn parameter(&self, code: u16) -> Option<LogParameter<'a>> {
        self.parameters().find(|p| p.code == code)
    }
}

/// Builds a log page (for test transports and the virtual library).
pub fn encode_log_page(page: u8, subpage: u8, params: &[(u16, &[u8])]) -> Vec<u8> {
    let mut b = vec![
        page & 0x3f | if subpage != 0 { 0x40 } else { 0 },
        subpage,
        0,
        0,
    ];
    for (code, value) in params {
        b.extend_from_slice(&code.to_be_bytes());
        b.push(0x03); // TSD | ETC=0 | format: binary list (LBIN, LP)
        b.push(value.len().min(255) as u8);
        b.extend_from_slice(&value[..value.len().min(255)]);
    }
    let n = (b.len() - 4).min(u16::MAX as usize) as u64;
    be::put(&mut b, 2, 2, n);
    b
}

/// How much a TapeAlert flag matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

use Severity::{Critical as C, Info as I, Warning as W};

/// Flags 1..=64: name and severity.
pub const TAPE_ALERT_FLAGS: [(&str, Severity); 64] = [
    ("read warning", W),
    ("write warning", W),
    ("hard error", W),
    ("media", C),
    ("read failure", C),
    ("write failure", C),
    ("media life", W),
    ("not data grade", W),
    ("write protect", C),
    ("no removal", I),
    ("cleaning media", I),
    ("unsupported format", I),
    ("recoverable mechanical cartridge failure", C),
    ("unrecoverable mechanical cartridge failure", C),
    ("memory chip in cartridge failure", W),
    ("forced eject", C),
    ("read only format", W),
    ("tape directory corrupted on load", W),
    ("nearing media life", I),
    ("clean now", C),
    ("clean periodic", W),
    ("expired cleaning media", C),
    ("invalid cleaning tape", C),
    ("retension requested", W),
    ("dual-port interface error", W),
    ("cooling fan failure", W),
    ("power supply failure", W),
    ("power consumption", W),
    ("drive maintenance", W),
    ("hardware A", C),
    ("hardware B", C),
    ("interface", W),
    ("eject media", C),
    ("microcode update fail", W),
    ("drive humidity", W),
    ("drive temperature", W),
    ("drive voltage", W),
    ("predictive failure", C),
    ("diagnostics required", W),
    ("loader hardware A (obsolete)", C),
    ("loader stray tape (obsolete)", C),
    ("loader hardware B (obsolete)", W),
    ("loader door (obsolete)", C),
    ("loader hardware C (obsolete)", C),
    ("loader magazine (obsolete)", C),
    ("loader predictive failure (obsolete)", W),
    ("external data encryption control: communication failure", W),
    (
        "external data encryption control: key manager returned an error",
        W,
    ),
    ("diminished native capacity", W),
    ("lost statistics", W),
    ("tape directory invalid at unload", W),
    ("tape system area write failure", C),
    ("tape system area read failure", C),
    ("no start of data", C),
    ("loading or threading failure", C),
    ("unrecoverable unload failure", C),
    ("automation interface failure", C),
    ("microcode failure", W),
    ("WORM medium: integrity check failed", W),
    ("WORM medium: overwrite attempted", W),
    ("reserved (0x3D)", I),
    ("reserved (0x3E)", I),
    ("reserved (0x3F)", I),
    ("reserved (0x40)", I),
];

/// One set flag, for display and JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TapeAlertFlag {
    pub number: u8,
    pub name: &'static str,
    pub severity: Severity,
}

/// A set of TapeAlert flags: flag `n` at bit `n - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TapeAlerts(pub u64);

impl TapeAlerts {
    pub const CLEAN_NOW: u8 = 0x14;
    pub const CLEAN_PERIODIC: u8 = 0x15;

    pub fn is_set(&self, flag: u8) -> bool {
        (1..=64).contains(&flag) && self.0 & (1u64 << (flag - 1)) != 0
    }

    pub fn set(&mut self, flag: u8) {
        if (1..=64).contains(&flag) {
            self.0 |= 1u64 << (flag - 1);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn flags(&self) -> impl Iterator<Item = TapeAlertFlag> + '_ {
        (1..=64u8).filter(|&n| self.is_set(n)).map(|n| {
            let (name, severity) = TAPE_ALERT_FLAGS[n as usize - 1];
            TapeAlertFlag {
                number: n,
                name,
                severity,
            }
        })
    }

    /// Any critical flag set: stop writing to this cartridge/drive.
    pub fn is_critical(&self) -> bool {
        self.flags().any(|f| f.severity == Severity::Critical)
    }

    /// Clean now (0x14) or clean periodic (0x15).
    pub fn needs_cleaning(&self) -> bool {
        self.is_set(Self::CLEAN_NOW) || self.is_set(Self::CLEAN_PERIODIC)
    }

    /// Page 0x12 (TapeAlert Response): parameter 0x0000 holds an 8-byte bitmap, flag 1 in the most
    /// significant bit of the first byte. `None` when the page or that parameter is missing or short.
    pub fn decode_response_page(b: &[u8]) -> Option<TapeAlerts> {
        let page = LogPage::decode(b)?;
        if page.page != PAGE_TAPE_ALERT_RESPONSE {
            return None;
        }
        let p = page.parameter(0)?;
        let bits = u64::from_be_bytes(p.value.get(..8)?.try_into().ok()?);
        Some(TapeAlerts(bits.reverse_bits()))
    }

    /// Page 0x2E: one parameter per flag (code = flag number), bit 0 of a 1-byte value. Parameters that
    /// are missing, cut or out of range count as clear.
    pub fn decode_page(b: &[u8]) -> Option<TapeAlerts> {
        let page = LogPage::decode(b)?;
        if page.page != PAGE_TAPE_ALERT {
            return None;
        }
        let mut t = TapeAlerts(0);
        for p in page.parameters() {
            if (1..=64).contains(&p.code) && p.value.first().is_some_and(|v| v & 1 != 0) {
                t.set(p.code as u8);
            }
        }
        Some(t)
    }

    /// Encodes page 0x12 (for test transports).
    pub fn encode_response_page(&self) -> Vec<u8> {
        encode_log_page(
            PAGE_TAPE_ALERT_RESPONSE,
            0,
            &[(0, &self.0.reverse_bits().to_be_bytes())],
        )
    }

    /// Encodes page 0x2E (for test transports).
    pub fn encode_page(&self) -> Vec<u8> {
        let values: Vec<[u8; 1]> = (1..=64u8).map(|n| [self.is_set(n) as u8]).collect();
        let params: Vec<(u16, &[u8])> = (1..=64u16)
            .map(|n| (n, &values[n as usize - 1][..]))
            .collect();
        encode_log_page(PAGE_TAPE_ALERT, 0, &params)
    }
}

/// Volume statistics parameter names (SSC-4 page 0x17) for the codes checked against sg3_utils' decode
/// and the LTFS reference implementation.
pub fn volume_statistic_name(code: u16) -> Option<&'static str> {
    Some(match code {
        0x0000 => "page valid",
        0x0001 => "thread count",
        0x0002 => "total data sets written",
        0x0003 => "total write retries",
        0x0004 => "total unrecovered write errors",
        0x0005 => "total suspended writes",
        0x0006 => "total fatal suspended writes",
        0x0007 => "total data sets read",
        0x0008 => "total read retries",
        0x0009 => "total unrecovered read errors",
        0x000a => "total suspended reads",
        0x000b => "total fatal suspended reads",
        0x000c => "last mount unrecovered write errors",
        0x000d => "last mount unrecovered read errors",
        0x000e => "last mount megabytes written",
        0x000f => "last mount megabytes read",
        0x0010 => "lifetime megabytes written",
        0x0011 => "lifetime megabytes read",
        0x0012 => "last load write compression ratio",
        0x0013 => "last load read compression ratio",
        0x0014 => "medium mount time",
        0x0015 => "medium ready time",
        0x0016 => "total native capacity (MB)",
        0x0017 => "total used native capacity (MB)",
        0x0040 => "volume serial number",
        0x0041 => "tape lot identifier",
        0x0042 => "volume barcode",
        0x0043 => "volume manufacturer",
        0x0044 => "volume license code",
        0x0045 => "volume personality",
        0x0080 => "write protect",
        0x0081 => "WORM",
        0x0082 => "maximum recommended tape path temperature exceeded",
        0x0101 => "beginning of medium passes",
        0x0102 => "middle of medium passes",
        0x0200 => "first encrypted logical object",
        0x0201 => "first unencrypted logical object after an encrypted one",
        0x0202 => "approximate native capacity of partitions (MB)",
        0x0203 => "approximate used native capacity of partitions (MB)",
        0x0204 => "approximate remaining capacity of partitions (MB)",
        _ => return None,
    })
}

/// A volume statistics value, decoded by the parameter code's range and length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatValue {
    Counter(u64),
    Text(String),
    /// Partition record descriptors: (partition, value).
    Partitions(Vec<(u16, u64)>),
    Raw(Vec<u8>),
}

/// For people: the number or text itself, partitions as `p0 N, p1 M`, raw bytes in hex.
impl std::fmt::Display for StatValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatValue::Counter(n) => write!(f, "{n}"),
            StatValue::Text(t) => f.write_str(&common::escape::escape(t)),
            StatValue::Partitions(ps) => {
                let parts: Vec<String> = ps.iter().map(|(p, v)| format!("p{p} {v}")).collect();
                f.write_str(&parts.join(", "))
            }
            StatValue::Raw(b) => {
                let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
                write!(f, "0x{}", hex.concat())
            }
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Info => "information",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeStatistic {
    pub code: u16,
    pub name: Option<&'static str>,
    pub value: StatValue,
}

/// Decodes page 0x17 generically; `None` when the header is missing or it is another page.
pub fn decode_volume_statistics(b: &[u8]) -> Option<Vec<VolumeStatistic>> {
    let page = LogPage::decode(b)?;
    if page.page != PAGE_VOLUME_STATISTICS {
        return None;
    }
    Some(
        page.parameters()
            .map(|p| {
                let value = match p.code {
                    0x0040..=0x007f => StatValue::Text(be::ascii(p.value)),
                    0x0200..=0x02ff => StatValue::Partitions(partition_records(p.value)),
                    _ if (1..=8).contains(&p.value.len()) => {
                        StatValue::Counter(be::uint_at(p.value, 0, p.value.len()).unwrap_or(0))
                    }
                    _ => StatValue::Raw(p.value.to_vec()),
                };
                VolumeStatistic {
                    code: p.code,
                    name: volume_statistic_name(p.code),
                    value,
                }
            })
            .collect(),
    )
}

/// Partition record descriptors: byte 0 = bytes that follow it, bytes 2-3 = partition, then the value.
/// A cut or malformed descriptor ends the list.
fn partition_records(mut b: &[u8]) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    while let Some(&len) = b.first() {
        let total = len as usize + 1;
        let Some(d) = b.get(..total) else { break };
        if total < 5 {
            break;
        }
        let vlen = (total - 4).min(8);
        let (Some(part), Some(v)) = (be::u16_at(d, 2), be::uint_at(d, 4, vlen)) else {
            break;
        };
        out.push((part, v));
        b = &b[total..];
    }
    out
}

/// Encodes partition record descriptors with 4-byte values (for test transports).
pub fn encode_partition_records(records: &[(u16, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (p, v) in records {
        out.extend_from_slice(&[7, 0]);
        out.extend_from_slice(&p.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

/// IBM page 0x31: remaining and maximum capacity of partitions 0 and 1, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TapeCapacity {
    pub remaining: [Option<u64>; 2],
    pub maximum: [Option<u64>; 2],
}

impl TapeCapacity {
    pub fn decode(b: &[u8]) -> Option<TapeCapacity> {
        let page = LogPage::decode(b)?;
        if page.page != PAGE_TAPE_CAPACITY {
            return None;
        }
        let mut c = TapeCapacity::default();
        for p in page.parameters() {
            if !(1..=8).contains(&p.value.len()) {
                continue;
            }
            let v = be::uint_at(p.value, 0, p.value.len());
            match p.code {
                1 => c.remaining[0] = v,
                2 => c.remaining[1] = v,
                3 => c.maximum[0] = v,
                4 => c.maximum[1] = v,
                _ => {}
            }
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cdb() {
        assert_eq!(
            log_sense_cdb(0x12, 0, 0x40),
            [0x4d, 0, 0x52, 0, 0, 0, 0, 0, 0x40, 0]
        );
    }

    #[test]
    fn tape_alert_response_bit_order() {
        // Flag 1 is the MSB of the first byte; flag 0x14 (clean now) is bit 3 of byte 2.
        let page = encode_log_page(0x12, 0, &[(0, &[0x80, 0, 0x10, 0, 0, 0, 0, 0x01])]);
        let t = TapeAlerts::decode_response_page(&page).unwrap();
        assert!(t.is_set(1) && t.is_set(0x14) && t.is_set(64));
        assert_eq!(
            t.flags().map(|f| f.number).collect::<Vec<_>>(),
            vec![1, 0x14, 64]
        );
        assert!(t.needs_cleaning() && t.is_critical());
        assert!(!TapeAlerts(1).is_critical());
        assert_eq!(
            TapeAlerts::decode_response_page(&t.encode_response_page()),
            Some(t)
        );
        assert_eq!(TAPE_ALERT_FLAGS[0x14 - 1].0, "clean now");
        assert_eq!(
            TAPE_ALERT_FLAGS[0x3c - 1].0,
            "WORM medium: overwrite attempted"
        );
    }

    #[test]
    fn tape_alert_page_2e() {
        let mut t = TapeAlerts::default();
        t.set(0x15);
        t.set(4);
        let d = TapeAlerts::decode_page(&t.encode_page()).unwrap();
        assert_eq!(d, t);
        assert!(d.needs_cleaning() && d.is_critical());
        assert_eq!(TapeAlerts::decode_page(&t.encode_response_page()), None);
        assert_eq!(TapeAlerts::decode_response_page(&t.encode_page()), None);
        t.set(0);
        t.set(65);
        assert_eq!(t, d);
    }

    #[test]
    fn tape_alert_truncation() {
        let mut t = TapeAlerts::default();
        t.set(0x40);
        let resp = t.encode_response_page();
        for cut in 0..resp.len() {
            assert_eq!(
                TapeAlerts::decode_response_page(&resp[..cut]),
                None,
                "cut {cut}"
            );
        }
        let page = t.encode_page();
        for cut in 0..page.len() {
            let d = TapeAlerts::decode_page(&page[..cut]);
            assert_eq!(d.is_some(), cut >= 4);
            // Flag 64 is the last parameter: set only when it is whole.
            assert!(!d.is_some_and(|d| d.is_set(0x40)), "cut {cut}");
        }
        assert_eq!(TapeAlerts::decode_page(&page), Some(t));
    }

    #[test]
    fn walker_stops_at_cut_parameter_and_clamps_page_length() {
        let page = encode_log_page(0x17, 0, &[(1, &[0, 5]), (2, &[1, 2, 3, 4]), (3, &[9])]);
        let p = LogPage::decode(&page).unwrap();
        assert_eq!(p.parameters().count(), 3);
        for cut in 0..page.len() {
            let n = LogPage::decode(&page[..cut]).map(|p| p.parameters().count());
            let expect = match cut {
                0..4 => None,
                4..10 => Some(0),
                10..18 => Some(1),
                18..23 => Some(2),
                _ => Some(3),
            };
            assert_eq!(n, expect, "cut {cut}");
        }
        // A page length shorter than the data hides the rest; longer is clamped.
        let mut short = page.clone();
        short[3] = 6;
        assert_eq!(LogPage::decode(&short).unwrap().parameters().count(), 1);
        let mut long = page.clone();
        long[2] = 0xff;
        assert_eq!(LogPage::decode(&long).unwrap().parameters().count(), 3);
    }

    #[test]
    fn volume_statistics_generic_decode() {
        let parts = encode_partition_records(&[(0, 35_000), (1, 2_300_000)]);
        let page = encode_log_page(
            0x17,
            0,
            &[
                (0x0000, &[1]),
                (0x0001, &[0, 0, 0, 107]),
                (0x0010, &151_840u64.to_be_bytes()),
                (0x0042, b"QIM001L6"),
                (0x0202, &parts),
                (0x0300, &[0; 12]),
            ],
        );
        let v = decode_volume_statistics(&page).unwrap();
        assert_eq!(v.len(), 6);
        assert_eq!(
            v[1],
            VolumeStatistic {
                code: 1,
                name: Some("thread count"),
                value: StatValue::Counter(107)
            }
        );
        assert_eq!(v[2].value, StatValue::Counter(151_840));
        assert_eq!(v[3].value, StatValue::Text("QIM001L6".into()));
        assert_eq!(
            v[4].value,
            StatValue::Partitions(vec![(0, 35_000), (1, 2_300_000)])
        );
        assert_eq!(v[5].value, StatValue::Raw(vec![0; 12]));
        assert_eq!(v[5].name, None);
        for cut in 0..page.len() {
            let _ = decode_volume_statistics(&page[..cut]);
        }
        for cut in 0..parts.len() {
            assert_eq!(partition_records(&parts[..cut]).len(), cut / 8);
        }
        assert_eq!(partition_records(&[1, 0, 0]), vec![]);
        assert!(decode_volume_statistics(&TapeAlerts(0).encode_page()).is_none());
    }

    #[test]
    fn tape_capacity_page() {
        let page = encode_log_page(
            0x31,
            0,
            &[
                (1, &35_043u32.to_be_bytes()),
                (2, &2_175_076u32.to_be_bytes()),
                (3, &35_060u32.to_be_bytes()),
                (4, &2_314_062u32.to_be_bytes()),
            ],
        );
        let c = TapeCapacity::decode(&page).unwrap();
        assert_eq!(c.remaining, [Some(35_043), Some(2_175_076)]);
        assert_eq!(c.maximum, [Some(35_060), Some(2_314_062)]);
        for cut in 0..page.len() {
            let d = TapeCapacity::decode(&page[..cut]);
            assert_eq!(d.is_some(), cut >= 4);
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = TapeAlerts::decode_response_page(&b);
            let _ = TapeAlerts::decode_page(&b);
            let _ = decode_volume_statistics(&b);
            let _ = TapeCapacity::decode(&b);
            if let Some(p) = LogPage::decode(&b) {
                prop_assert!(p.parameters().count() <= b.len() / 4);
            }
        }

        #[test]
        fn response_page_round_trip(bits: u64) {
            prop_assert_eq!(TapeAlerts::decode_response_page(&TapeAlerts(bits).encode_response_page()), Some(TapeAlerts(bits)));
            prop_assert_eq!(TapeAlerts::decode_page(&TapeAlerts(bits).encode_page()), Some(TapeAlerts(bits)));
        }
    }
}
