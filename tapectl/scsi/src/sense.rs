//! Sense data in both formats (fixed 0x70/0x71 and descriptor 0x72/0x73) decoded into one typed value.
//! Decoding never panics and never trusts the additional-length byte beyond the bytes present.

use std::fmt;

use crate::be;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenseKey {
    NoSense,
    RecoveredError,
    NotReady,
    MediumError,
    HardwareError,
    IllegalRequest,
    UnitAttention,
    DataProtect,
    BlankCheck,
    VendorSpecific,
    CopyAborted,
    AbortedCommand,
    Reserved0c,
    VolumeOverflow,
    Miscompare,
    Completed,
}

impl SenseKey {
    pub fn from_code(code: u8) -> Self {
        use SenseKey::*;
        [
            NoSense,
            RecoveredError,
            NotReady,
            MediumError,
            HardwareError,
            IllegalRequest,
            UnitAttention,
            DataProtect,
            BlankCheck,
            VendorSpecific,
            CopyAborted,
            AbortedCommand,
            Reserved0c,
            VolumeOverflow,
            Miscompare,
            Completed,
        ][(code & 0x0f) as usize]
    }
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn name(self) -> &'static str {
        use SenseKey::*;
        match self {
            NoSense => "NO SENSE",
            RecoveredError => "RECOVERED ERROR",
            NotReady => "NOT READY",
            MediumError => "MEDIUM ERROR",
            HardwareError => "HARDWARE ERROR",
            IllegalRequest => "ILLEGAL REQUEST",
            UnitAttention => "UNIT ATTENTION",
            DataProtect => "DATA PROTECT",
            BlankCheck => "BLANK CHECK",
            VendorSpecific => "VENDOR SPECIFIC",
            CopyAborted => "COPY ABORTED",
            AbortedCommand => "ABORTED COMMAND",
            Reserved0c => "RESERVED (0x0C)",
            VolumeOverflow => "VOLUME OVERFLOW",
            Miscompare => "MISCOMPARE",
            Completed => "COMPLETED",
        }
    }
}

/// Decoded sense data. Callers match `key`, `asc`/`ascq` and the stream flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: u8,
    pub ascq: u8,
    /// A filemark was read (stream commands).
    pub filemark: bool,
    /// End of medium or early warning (stream commands), or beginning of partition when spacing back.
    pub eom: bool,
    /// Incorrect length indicator: the record was not the requested length.
    pub ili: bool,
    /// The INFORMATION field when valid. For tape READ with ILI it is requested minus actual length
    /// (negative when the record was longer); for spaces, the count not done. Fixed format is sign-extended
    /// from 32 bits.
    pub information: Option<i64>,
    /// The error belongs to an earlier command (response code 0x71/0x73).
    pub deferred: bool,
    /// Sense-key specific bytes when SKSV is set (e.g. progress indication, field pointer).
    pub key_specific: Option<[u8; 3]>,
}

impl Sense {
    /// Decodes fixed or descriptor sense. `None` when the response code is unknown or the bytes are too
    /// short to hold a sense key.
    pub fn decode(b: &[u8]) -> Option<Sense> {
        let code = *b.first()? & 0x7f;
        match code {
            0x70 | 0x71 => Self::decode_fixed(b, code == 0x71),
            0x72 | 0x73 => Self::decode_descriptor(b, code == 0x73),
            _ => None,
        }
    }

    fn decode_fixed(b: &[u8], deferred: bool) -> Option<Sense> {
        let flags = *b.get(2)?;
        // The additional length says how much follows byte 7; trust only what is really there.
        let end = b
            .len()
            .min(8 + b.get(7).copied().unwrap_or(0) as usize)
            .max(3);
        let b = &b[..end];
        let information = if b[0] & 0x80 != 0 {
            be::u32_at(b, 3).map(|v| v as i32 as i64)
        } else {
            None
        };
        let key_specific = b
            .get(15..18)
            .filter(|s| s[0] & 0x80 != 0)
            .map(|s| [s[0], s[1], s[2]]);
        Some(Sense {
            key: SenseKey::from_code(flags),
            asc: b.get(12).copied().unwrap_or(0),
            ascq: b.get(13).copied().unwrap_or(0),
            filemark: flags & 0x80 != 0,
            eom: flags & 0x40 != 0,
            ili: flags & 0x20 != 0,
            information,
            deferred,
            key_specific,
        })
    }

    fn decode_descriptor(b: &[u8], deferred: bool) -> Option<Sense> {
        let key = SenseKey::from_code(*b.get(1)?);
        let mut s = Sense {
            key,
            asc: b.get(2).copied().unwrap_or(0),
            ascq: b.get(3).copied().unwrap_or(0),
            filemark: false,
            eom: false,
            ili: false,
            information: None,
            deferred,
            key_specific: None,
        };
        let end = b.len().min(8 + b.get(7).copied().unwrap_or(0) as usize);
        let mut at = 8;
        while at + 2 <= end {
            let kind = b[at];
            let len = b[at + 1] as usize;
            let Some(d) = b.get(at..(at + 2 + len).min(end)) else {
                break;
            };
            match kind {
                0x00 if d.len() >= 12 && d[2] & 0x80 != 0 => {
                    s.information = be::u64_at(d, 4).map(|v| v as i64)
                }
                0x02 if d.len() >= 7 && d[4] & 0x80 != 0 => {
                    s.key_specific = Some([d[4], d[5], d[6]])
                }
                0x04 if d.len() >= 4 => {
                    s.filemark = d[3] & 0x80 != 0;
                    s.eom = d[3] & 0x40 != 0;
                    s.ili = d[3] & 0x20 != 0;
                }
                _ => {}
            }
            at += 2 + len;
        }
        Some(s)
    }

    /// Builds fixed-format sense (what the virtual library returns).
    pub fn encode_fixed(&self) -> Vec<u8> {
        let mut b = vec![0u8; 18];
        b[0] = if self.deferred { 0x71 } else { 0x70 };
        b[2] = self.key.code()
            | if self.filemark { 0x80 } else { 0 }
            | if self.eom { 0x40 } else { 0 }
            | if self.ili { 0x20 } else { 0 };
        if let Some(info) = self.information {
            b[0] |= 0x80;
            be::put(&mut b, 3, 4, info as i32 as u32 as u64);
        }
        b[7] = 10;
        b[12] = self.asc;
        b[13] = self.ascq;
        if let Some(ks) = self.key_specific {
            b[15..18].copy_from_slice(&ks);
        }
        b
    }

    pub fn new(key: SenseKey, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            filemark: false,
            eom: false,
            ili: false,
            information: None,
            deferred: false,
            key_specific: None,
        }
    }

    pub fn is(&self, key: SenseKey, asc: u8, ascq: u8) -> bool {
        self.key == key && self.asc == asc && self.ascq == ascq
    }

    /// NO SENSE or RECOVERED ERROR with none of the stream flags: the command did what it was asked.
    pub fn is_informational(&self) -> bool {
        let stream_flags = self.filemark || self.eom || self.ili;
        // 00/01..05 (filemark, EOM, BOP, EOD detected) carry meaning even without the flag bits.
        let positional =
            self.key == SenseKey::NoSense && self.asc == 0 && matches!(self.ascq, 0x01..=0x05);
        matches!(self.key, SenseKey::NoSense | SenseKey::RecoveredError)
            && !stream_flags
            && !positional
    }

    /// UNIT ATTENTION: medium changed, power on/reset, mode parameters changed. Retry the command.
    pub fn is_unit_attention(&self) -> bool {
        self.key == SenseKey::UnitAttention
    }

    /// NOT READY, cause not reportable / becoming ready / in progress: worth waiting for.
    pub fn is_becoming_ready(&self) -> bool {
        self.key == SenseKey::NotReady
            && self.asc == 0x04
            && matches!(self.ascq, 0x00 | 0x01 | 0x07 | 0x08)
    }

    /// NOT READY, medium not present (3A/xx).
    pub fn is_no_medium(&self) -> bool {
        self.key == SenseKey::NotReady && self.asc == 0x3a
    }

    /// What the additional sense code means, for the codes tape drives and changers use.
    pub fn description(&self) -> &'static str {
        asc_description(self.asc, self.ascq)
    }
}

impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:02X}/{:02X}", self.key.name(), self.asc, self.ascq)?;
        let d = self.description();
        if !d.is_empty() {
            write!(f, " ({d})")?;
        }
        for (on, name) in [
            (self.filemark, "filemark"),
            (self.eom, "EOM"),
            (self.ili, "ILI"),
            (self.deferred, "deferred"),
        ] {
            if on {
                write!(f, " [{name}]")?;
            }
        }
        if let Some(i) = self.information {
            write!(f, " info={i}")?;
        }
        Ok(())
    }
}

/// The additional sense codes a tape stack meets (SPC-5 annex, the subset SSC/SMC devices report).
pub fn asc_description(asc: u8, ascq: u8) -> &'static str {
    match (asc, ascq) {
        (0x00, 0x00) => "no additional sense information",
        (0x00, 0x01) => "filemark detected",
        (0x00, 0x02) => "end-of-partition/medium detected",
        (0x00, 0x04) => "beginning-of-partition/medium detected",
        (0x00, 0x05) => "end-of-data detected",
        (0x00, 0x17) => "cleaning requested",
        (0x03, 0x02) => "excessive write errors",
        (0x04, 0x00) => "logical unit not ready, cause not reportable",
        (0x04, 0x01) => "logical unit is in process of becoming ready",
        (0x04, 0x02) => "logical unit not ready, initializing command required",
        (0x04, 0x03) => "logical unit not ready, manual intervention required",
        (0x04, 0x07) => "logical unit not ready, operation in progress",
        (0x0c, 0x00) => "write error",
        (0x11, 0x00) => "unrecovered read error",
        (0x14, 0x00) => "recorded entity not found",
        (0x14, 0x03) => "end-of-data not found",
        (0x1a, 0x00) => "parameter list length error",
        (0x20, 0x00) => "invalid command operation code",
        (0x21, 0x01) => "invalid element address",
        (0x24, 0x00) => "invalid field in CDB",
        (0x25, 0x00) => "logical unit not supported",
        (0x26, 0x00) => "invalid field in parameter list",
        (0x27, 0x00) => "write protected",
        (0x28, 0x00) => "not ready to ready change, medium may have changed",
        (0x28, 0x01) => "import or export element accessed",
        (0x29, _) => "power on, reset, or bus device reset occurred",
        (0x2a, 0x01) => "mode parameters changed",
        (0x30, 0x00) => "incompatible medium installed",
        (0x30, 0x03) => "cleaning cartridge installed",
        (0x30, 0x05) => "cannot write medium, incompatible format",
        (0x31, 0x00) => "medium format corrupted",
        (0x33, 0x00) => "tape length error",
        (0x3a, _) => "medium not present",
        (0x3b, 0x00) => "sequential positioning error",
        (0x3b, 0x08) => "reposition error",
        (0x3b, 0x0d) => "medium destination element full",
        (0x3b, 0x0e) => "medium source element empty",
        (0x3b, 0x11) => "medium magazine not accessible",
        (0x3b, 0x12) => "medium magazine removed",
        (0x3f, 0x01) => "microcode has been changed",
        (0x44, 0x00) => "internal target failure",
        (0x50, 0x01) => "write append position error",
        (0x53, 0x00) => "media load or eject failed",
        (0x53, 0x02) => "medium removal prevented",
        (0x5d, 0x00) => "failure prediction threshold exceeded",
        (0x74, 0x00) => "security error",
        (0x74, 0x01) => "unable to decrypt data",
        (0x74, 0x02) => "unencrypted data encountered while decrypting",
        (0x74, 0x03) => "incorrect data encryption key",
        (0x74, 0x04) => "cryptographic integrity validation failed",
        (0x74, 0x05) => "error decrypting data",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed_filemark_with_ili_information() {
        // READ(6) of 64 KiB hit a filemark: NO SENSE, FM + ILI, info = 65536 (nothing read).
        let mut b = [0u8; 18];
        b[0] = 0xf0;
        b[2] = 0xa0;
        b[3..7].copy_from_slice(&65536u32.to_be_bytes());
        b[7] = 10;
        b[13] = 1;
        let s = Sense::decode(&b).unwrap();
        assert!(s.filemark && s.ili && !s.eom);
        assert_eq!(s.key, SenseKey::NoSense);
        assert_eq!(s.information, Some(65536));
        assert!(!s.is_informational());
        assert_eq!(
            s.to_string(),
            "NO SENSE 00/01 (filemark detected) [filemark] [ILI] info=65536"
        );
    }

    #[test]
    fn fixed_negative_residue_means_record_was_longer() {
        let mut s = Sense::new(SenseKey::NoSense, 0, 0);
        s.ili = true;
        s.information = Some(-4096);
        let back = Sense::decode(&s.encode_fixed()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn descriptor_format_with_stream_and_information() {
        let b = [
            0x72, 0x08, 0x00, 0x05, 0, 0, 0,
            18, // header: BLANK CHECK 00/05, 18 bytes of descriptors
            0x00, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x00, // information = 4096
            0x04, 0x02, 0x00, 0x40, // stream: EOM
        ];
        let s = Sense::decode(&b).unwrap();
        assert_eq!(s.key, SenseKey::BlankCheck);
        assert_eq!((s.asc, s.ascq), (0, 5));
        assert!(s.eom && !s.filemark);
        assert_eq!(s.information, Some(4096));
    }

    #[test]
    fn truncated_sense_still_gives_the_key() {
        let s = Sense::decode(&[0x70, 0, 0x06]).unwrap();
        assert_eq!(s.key, SenseKey::UnitAttention);
        assert_eq!((s.asc, s.ascq), (0, 0));
        assert!(Sense::decode(&[0x70, 0]).is_none());
        assert!(Sense::decode(&[]).is_none());
        assert!(Sense::decode(&[0x12, 0, 0, 0]).is_none());
    }

    #[test]
    fn cleaning_requested_is_informational_but_early_warning_is_not() {
        let mut s = Sense::new(SenseKey::NoSense, 0x00, 0x17);
        assert!(s.is_informational());
        s.eom = true;
        assert!(!s.is_informational());
        assert!(Sense::new(SenseKey::RecoveredError, 0x5d, 0).is_informational());
        assert!(!Sense::new(SenseKey::NoSense, 0, 5).is_informational());
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Sense::decode(&b).map(|s| s.to_string());
        }

        #[test]
        fn fixed_encode_decode_round_trip(key in 0u8..16, asc: u8, ascq: u8, fm: bool, eom: bool, ili: bool, info in proptest::option::of(any::<i32>())) {
            let mut s = Sense::new(SenseKey::from_code(key), asc, ascq);
            s.filemark = fm; s.eom = eom; s.ili = ili; s.information = info.map(i64::from);
            prop_assert_eq!(Sense::decode(&s.encode_fixed()).unwrap(), s);
        }
    }
}
