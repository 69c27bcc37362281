//! LTFS's MAM attributes (ltfs-format.md §6): the per-partition volume coherency record (0x080C), the
//! attributes `mkltfs` writes to partition 0, and the MAM fast-path decision of §5.
//!
//! MAM is never needed for correctness: a reader that ignores it and scans (§5) is right; the fast path
//! only saves the scan when every check passes.

use crate::mam::{Attribute, AttributeFormat};

pub const ATTR_VOLUME_CHANGE_REFERENCE: u16 = 0x0009;
pub const ATTR_APPLICATION_VENDOR: u16 = 0x0800;
pub const ATTR_APPLICATION_NAME: u16 = 0x0801;
pub const ATTR_APPLICATION_VERSION: u16 = 0x0802;
pub const ATTR_USER_MEDIUM_TEXT_LABEL: u16 = 0x0803;
pub const ATTR_TEXT_LOCALIZATION_ID: u16 = 0x0805;
pub const ATTR_BARCODE: u16 = 0x0806;
pub const ATTR_MEDIA_POOL: u16 = 0x0808;
pub const ATTR_APPLICATION_FORMAT_VERSION: u16 = 0x080B;
pub const ATTR_VOLUME_COHERENCY: u16 = 0x080C;
pub const ATTR_VOLUME_LOCK: u16 = 0x1623;

/// Value length of 0x080C (the full attribute with its 5-byte header is 75 bytes).
pub const COHERENCY_VALUE_LEN: usize = 70;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoherencyError {
    #[error("attribute {0:#06x} is not the volume coherency attribute 0x080c")]
    WrongId(u16),
    #[error("volume coherency value is {0} bytes, too short")]
    TooShort(usize),
    #[error("volume coherency VCR length is {0}, not 8")]
    BadVcrLength(u8),
    #[error("volume coherency application-client-specific length is {0}, not 43 (or 42)")]
    BadClientLength(u16),
    #[error("volume coherency record is not from LTFS")]
    NotLtfs,
    #[error("volume coherency UUID is not text")]
    BadUuid,
}

/// The volume coherency information of one partition (attribute 0x080C).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeCoherency {
    /// The volume change reference (0x0009) when the index was written.
    pub vcr: u64,
    /// Generation of the last index on the partition.
    pub count: u64,
    /// Start block (self pointer) of that index.
    pub set_id: u64,
    /// The volume UUID as stored (lowercase when written by us or the reference).
    pub uuid: String,
    /// 1 for current writers; 0 means "don't trust" (also given to LTFS 1.0.x records, which lack it).
    pub version: u8,
}

impl VolumeCoherency {
    /// The 70-byte value.
    pub fn encode_value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(COHERENCY_VALUE_LEN);
        v.push(8);
        v.extend_from_slice(&self.vcr.to_be_bytes());
        v.extend_from_slice(&self.count.to_be_bytes());
        v.extend_from_slice(&self.set_id.to_be_bytes());
        v.extend_from_slice(&43u16.to_be_bytes());
        v.extend_from_slice(b"LTFS\0");
        let mut uuid = [0u8; 37];
        let n = self.uuid.len().min(36);
        uuid[..n].copy_from_slice(&self.uuid.as_bytes()[..n]);
        v.extend_from_slice(&uuid);
        v.push(self.version);
        debug_assert_eq!(v.len(), COHERENCY_VALUE_LEN);
        v
    }

    pub fn to_attribute(&self) -> Attribute {
        Attribute::new(
            ATTR_VOLUME_COHERENCY,
            AttributeFormat::Binary,
            self.encode_value(),
        )
    }

    /// Header plus value: the 75 bytes of §6.
    pub fn encode(&self) -> Vec<u8> {
        self.to_attribute().encode()
    }

    /// Decodes the value (without header). Accepts application-client-specific length 43 (with the
    /// version byte) or 42 (LTFS 1.0.x, version taken as 0).
    pub fn decode_value(v: &[u8]) -> Result<Self, CoherencyError> {
        if v.len() < 32 + 37 {
            return Err(CoherencyError::TooShort(v.len()));
        }
        if v[0] != 8 {
            return Err(CoherencyError::BadVcrLength(v[0]));
        }
        let be64 = |o: usize| u64::from_be_bytes(v[o..o + 8].try_into().expect("8 bytes"));
        let client_len = u16::from_be_bytes([v[25], v[26]]);
        let version = match client_len {
            43 => *v.get(69).ok_or(CoherencyError::TooShort(v.len()))?,
            42 => 0,
            n => return Err(CoherencyError::BadClientLength(n)),
        };
        if &v[27..32] != b"LTFS\0" {
            return Err(CoherencyError::NotLtfs);
        }
        let raw = &v[32..69];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let uuid = std::str::from_utf8(&raw[..end])
            .map_err(|_| CoherencyError::BadUuid)?
            .to_string();
        Ok(Self {
            vcr: be64(1),
            count: be64(9),
            set_id: be64(17),
            uuid,
            version,
        })
    }

    pub fn from_attribute(a: &Attribute) -> Result<Self, CoherencyError> {
        if a.id != ATTR_VOLUME_COHERENCY {
            return Err(CoherencyError::WrongId(a.id));
        }
        Self::decode_value(&a.value)
    }

    /// Decodes header plus value.
    pub fn decode(buf: &[u8]) -> Result<Self, CoherencyError> {
        let (a, _) = Attribute::decode(buf).ok_or(CoherencyError::TooShort(buf.len()))?;
        Self::from_attribute(&a)
    }
}

/// The volume change reference from attribute 0x0009's value (1–8 bytes, big-endian). `None` when it
/// cannot be trusted: empty, longer than 8 bytes, zero, or all ones at its width.
pub fn volume_change_reference(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 8 {
        return None;
    }
    if value.iter().all(|&b| b == 0) || value.iter().all(|&b| b == 0xff) {
        return None;
    }
    Some(value.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Which partition's index the fast path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionRole {
    Index,
    Data,
}

/// The fast path's answer: read the index starting at `set_id` on `role`'s partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastPath {
    pub role: PartitionRole,
    pub set_id: u64,
    pub generation: u64,
}

/// The MAM fast path of §5 (`ltfs_mount()`): usable only when the VCR (0x0009's value) is trusted and
/// equals the VCR in **both** coherency records, both UUIDs equal the label's, and both versions are
/// nonzero. Then the partition with the larger count wins, the index partition on a tie. `None`
/// means "do the full scan".
pub fn fast_path(
    vcr_value: Option<&[u8]>,
    index: Option<&VolumeCoherency>,
    data: Option<&VolumeCoherency>,
    label_uuid: &str,
) -> Option<FastPath> {
    let vcr = volume_change_reference(vcr_value?)?;
    let (ip, dp) = (index?, data?);
    let trusted = |c: &VolumeCoherency| {
        c.vcr == vcr && c.version != 0 && c.uuid.eq_ignore_ascii_case(label_uuid)
    };
    if !trusted(ip) || !trusted(dp) {
        return None;
    }
    let (role, c) = if dp.count > ip.count {
        (PartitionRole::Data, dp)
    } else {
        (PartitionRole::Index, ip)
    };
    Some(FastPath {
        role,
        set_id: c.set_id,
        generation: c.count,
    })
}

// ---------------------------------------------------------------------------------------------------
// The attributes mkltfs writes to partition 0.

/// 0x0800, 8 bytes ASCII (`IBM` for the reference).
pub fn application_vendor(vendor: &str) -> Attribute {
    Attribute::ascii(ATTR_APPLICATION_VENDOR, vendor, 8)
}

/// 0x0801, 32 bytes ASCII (`LTFS` for the reference).
pub fn application_name(name: &str) -> Attribute {
    Attribute::ascii(ATTR_APPLICATION_NAME, name, 32)
}

/// 0x0802, 8 bytes ASCII: the first 8 characters of the program version.
pub fn application_version(version: &str) -> Attribute {
    Attribute::ascii(ATTR_APPLICATION_VERSION, version, 8)
}

/// 0x0803, 160 bytes text: the volume name, NUL-padded, cut at a UTF-8 boundary to at most 159 bytes.
pub fn user_medium_text_label(volume_name: &str) -> Attribute {
    let mut cut = volume_name.len().min(159);
    while !volume_name.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut v = volume_name.as_bytes()[..cut].to_vec();
    v.resize(160, 0);
    Attribute::new(ATTR_USER_MEDIUM_TEXT_LABEL, AttributeFormat::Text, v)
}

/// 0x0805, 1 byte binary: 0x81 (UTF-8).
pub fn text_localization_id() -> Attribute {
    Attribute::new(
        ATTR_TEXT_LOCALIZATION_ID,
        AttributeFormat::Binary,
        vec![0x81],
    )
}

/// 0x0806, 32 bytes ASCII: the barcode, space-padded.
pub fn barcode(barcode: &str) -> Attribute {
    Attribute::ascii(ATTR_BARCODE, barcode, 32)
}

/// 0x0808, 160 bytes text: NULs.
pub fn media_pool() -> Attribute {
    Attribute::new(ATTR_MEDIA_POOL, AttributeFormat::Text, vec![0u8; 160])
}

/// 0x080B, 16 bytes ASCII: the format version (`2.4.0`), space-padded.
pub fn application_format_version(version: &str) -> Attribute {
    Attribute::ascii(ATTR_APPLICATION_FORMAT_VERSION, version, 16)
}

/// The MAM volume lock values (0x1623, IBM; `mam_lockval` in the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeLock {
    Unlocked = 0,
    Locked = 1,
    PermWriteProtected2 = 2,
    PermLocked = 3,
    PermWriteProtected4 = 4,
    PermWriteProtected5 = 5,
    PermWriteProtected6 = 6,
}

/// 0x1623, 1 byte binary.
pub fn volume_lock(lock: VolumeLock) -> Attribute {
    Attribute::new(ATTR_VOLUME_LOCK, AttributeFormat::Binary, vec![lock as u8])
}

/// What the reference's mkltfs writes to partition 0, in its order.
pub fn format_attributes(
    vendor: &str,
    app_name: &str,
    app_version: &str,
    volume_name: &str,
    barcode_text: &str,
) -> Vec<Attribute> {
    vec![
        application_vendor(vendor),
        application_name(app_name),
        application_version(app_version),
        user_medium_text_label(volume_name),
        text_localization_id(),
        barcode(barcode_text),
        media_pool(),
        application_format_version(&crate::label::WRITE_VERSION.to_string()),
        volume_lock(VolumeLock::Unlocked),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UUID: &str = "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10";

    fn coh(vcr: u64, count: u64, set_id: u64) -> VolumeCoherency {
        VolumeCoherency {
            vcr,
            count,
            set_id,
            uuid: UUID.into(),
            version: 1,
        }
    }

    #[test]
    fn exact_layout() {
        let c = coh(2, 1, 5);
        let b = c.encode();
        assert_eq!(b.len(), 75);
        assert_eq!(&b[..5], &[0x08, 0x0c, 0x00, 0x00, 0x46]);
        assert_eq!(b[5], 8);
        assert_eq!(&b[6..14], &2u64.to_be_bytes());
        assert_eq!(&b[14..22], &1u64.to_be_bytes());
        assert_eq!(&b[22..30], &5u64.to_be_bytes());
        assert_eq!(&b[30..32], &[0, 43]);
        assert_eq!(&b[32..37], b"LTFS\0");
        assert_eq!(&b[37..73], UUID.as_bytes());
        assert_eq!(b[73], 0);
        assert_eq!(b[74], 1);
        assert_eq!(VolumeCoherency::decode(&b).unwrap(), c);
        for cut in 0..b.len() {
            assert!(VolumeCoherency::decode(&b[..cut]).is_err(), "{cut}");
        }
        for cut in 0..70 {
            assert!(
                VolumeCoherency::decode_value(&b[5..5 + cut]).is_err(),
                "{cut}"
            );
        }
    }

    #[test]
    fn legacy_and_bad_records() {
        let mut v = coh(7, 3, 20).encode_value();
        v[26] = 42;
        v.pop();
        let d = VolumeCoherency::decode_value(&v).unwrap();
        assert_eq!((d.vcr, d.count, d.set_id, d.version), (7, 3, 20, 0));
        assert_eq!(d.uuid, UUID);
        let good = coh(7, 3, 20).encode_value();
        let mut bad = good.clone();
        bad[0] = 4;
        assert_eq!(
            VolumeCoherency::decode_value(&bad),
            Err(CoherencyError::BadVcrLength(4))
        );
        let mut bad = good.clone();
        bad[26] = 44;
        assert_eq!(
            VolumeCoherency::decode_value(&bad),
            Err(CoherencyError::BadClientLength(44))
        );
        let mut bad = good.clone();
        bad[27] = b'X';
        assert_eq!(
            VolumeCoherency::decode_value(&bad),
            Err(CoherencyError::NotLtfs)
        );
        let mut bad = good.clone();
        bad[33] = 0xff;
        assert_eq!(
            VolumeCoherency::decode_value(&bad),
            Err(CoherencyError::BadUuid)
        );
        let wrong = Attribute::new(0x0806, AttributeFormat::Binary, good);
        assert_eq!(
            VolumeCoherency::from_attribute(&wrong),
            Err(CoherencyError::WrongId(0x0806))
        );
    }

    #[test]
    fn fast_path_rules() {
        let vcr = 2u32.to_be_bytes();
        let ip = coh(2, 2, 5);
        let dp = coh(2, 2, 10);
        let fp = |v: Option<&[u8]>, i: Option<&VolumeCoherency>, d: Option<&VolumeCoherency>| {
            fast_path(v, i, d, UUID)
        };
        // Tie: the index partition.
        assert_eq!(
            fp(Some(&vcr), Some(&ip), Some(&dp)),
            Some(FastPath {
                role: PartitionRole::Index,
                set_id: 5,
                generation: 2
            })
        );
        // DP ahead.
        let dp3 = coh(2, 3, 12);
        assert_eq!(
            fp(Some(&vcr), Some(&ip), Some(&dp3)).map(|f| (f.role, f.set_id)),
            Some((PartitionRole::Data, 12))
        );
        // Everything that forces the scan.
        assert_eq!(fp(None, Some(&ip), Some(&dp)), None);
        assert_eq!(fp(Some(&[0, 0, 0, 0]), Some(&ip), Some(&dp)), None);
        assert_eq!(fp(Some(&[0xff; 4]), Some(&ip), Some(&dp)), None);
        assert_eq!(fp(Some(&[0xff; 8]), Some(&ip), Some(&dp)), None);
        assert_eq!(fp(Some(&[]), Some(&ip), Some(&dp)), None);
        assert_eq!(fp(Some(&[1; 9]), Some(&ip), Some(&dp)), None);
        assert_eq!(fp(Some(&3u32.to_be_bytes()), Some(&ip), Some(&dp)), None);
        assert_eq!(fp(Some(&vcr), None, Some(&dp)), None);
        assert_eq!(fp(Some(&vcr), Some(&ip), None), None);
        assert_eq!(fp(Some(&vcr), Some(&ip), Some(&coh(3, 2, 10))), None);
        let mut v0 = dp.clone();
        v0.version = 0;
        assert_eq!(fp(Some(&vcr), Some(&ip), Some(&v0)), None);
        let mut other = ip.clone();
        other.uuid = "00000000-0000-0000-0000-000000000000".into();
        assert_eq!(fp(Some(&vcr), Some(&other), Some(&dp)), None);
        // 8-byte VCRs work too; case of the UUID does not matter.
        let mut upper = coh(2, 2, 5);
        upper.uuid = UUID.to_uppercase();
        assert!(fp(Some(&2u64.to_be_bytes()), Some(&upper), Some(&dp)).is_some());
        assert_eq!(volume_change_reference(&[0, 0, 1, 0]), Some(256));
    }

    #[test]
    fn format_attribute_values() {
        let attrs = format_attributes("IBM", "LTFS", "2.4.8.4-extra", "vol", "RV0001L6");
        let ids: Vec<u16> = attrs.iter().map(|a| a.id).collect();
        assert_eq!(
            ids,
            [
                0x0800, 0x0801, 0x0802, 0x0803, 0x0805, 0x0806, 0x0808, 0x080B, 0x1623
            ]
        );
        let lens: Vec<usize> = attrs.iter().map(|a| a.value.len()).collect();
        assert_eq!(lens, [8, 32, 8, 160, 1, 32, 160, 16, 1]);
        assert_eq!(attrs[0].value, b"IBM     ");
        assert_eq!(attrs[2].value, b"2.4.8.4-");
        assert_eq!(attrs[3].format, AttributeFormat::Text);
        assert_eq!(&attrs[3].value[..4], b"vol\0");
        assert_eq!(attrs[4].value, [0x81]);
        assert_eq!(attrs[5].text(), "RV0001L6");
        assert!(attrs[6].value.iter().all(|&b| b == 0));
        assert_eq!(attrs[7].value, b"2.4.0           ");
        assert_eq!(attrs[8].value, [0]);
        // Cut at a UTF-8 boundary to at most 159 bytes, always NUL-terminated.
        let name = "é".repeat(100); // 200 bytes
        let a = user_medium_text_label(&name);
        assert_eq!(a.value.len(), 160);
        assert_eq!(&a.value[..158], "é".repeat(79).as_bytes());
        assert_eq!(&a.value[158..], &[0, 0]);
        let a = user_medium_text_label(&format!("x{}", "é".repeat(100)));
        assert_eq!(&a.value[..159], format!("x{}", "é".repeat(79)).as_bytes());
        assert_eq!(a.value[159], 0);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = VolumeCoherency::decode(&bytes);
            let _ = VolumeCoherency::decode_value(&bytes);
            let _ = volume_change_reference(&bytes);
        }

        #[test]
        fn round_trip(vcr: u64, count: u64, set_id: u64, version: u8) {
            let c = VolumeCoherency { vcr, count, set_id, uuid: UUID.into(), version };
            prop_assert_eq!(VolumeCoherency::decode(&c.encode()).unwrap(), c);
        }
    }
}
