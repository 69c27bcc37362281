//! The drive's data encryption (SSC-4 tape data encryption, security protocol 0x20): SECURITY
//! PROTOCOL OUT page 0x0010 (Set Data Encryption) and SECURITY PROTOCOL IN pages 0x0000/0x0001
//! (supported pages), 0x0010 (Data Encryption Capabilities), 0x0011 (Supported Key Formats), 0x0020
//! (Data Encryption Status) and 0x0021 (Next Block Encryption Status).
//!
//! CDB builders and pure decoders: a decoder takes the bytes the drive returned, trusts no length in
//! them (each is clamped to the bytes present, as some drives report the allocation length instead of
//! the real one) and returns `None` rather than panic. The key itself only ever goes into the SPOUT
//! parameter list: nothing here formats it, and [`SetEncryption`] has no `Debug`.

use scsi::be;

pub const SECURITY_PROTOCOL_IN: u8 = 0xa2;
pub const SECURITY_PROTOCOL_OUT: u8 = 0xb5;
/// Security protocol information (SPC-4): page 0x0000 lists the protocols supported.
pub const PROTOCOL_INFO: u8 = 0x00;
/// Tape data encryption (SSC-4).
pub const PROTOCOL_TAPE_ENCRYPTION: u8 = 0x20;

pub const PAGE_IN_SUPPORT: u16 = 0x0000;
pub const PAGE_OUT_SUPPORT: u16 = 0x0001;
pub const PAGE_CAPABILITIES: u16 = 0x0010;
pub const PAGE_KEY_FORMATS: u16 = 0x0011;
pub const PAGE_STATUS: u16 = 0x0020;
pub const PAGE_NEXT_BLOCK: u16 = 0x0021;
/// SPOUT: Set Data Encryption.
pub const PAGE_SET_DATA_ENCRYPTION: u16 = 0x0010;

/// The algorithm code of AES-GCM with a 256-bit key (SSC-4 table "encryption algorithm code").
pub const AES_GCM_256: u32 = 0x0001_0014;
pub const KEY_LEN: usize = 32;

/// SECURITY PROTOCOL IN (12 bytes): `alloc` bytes of page `page` of `protocol`.
pub fn spin_cdb(protocol: u8, page: u16, alloc: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = SECURITY_PROTOCOL_IN;
    c[1] = protocol;
    be::put(&mut c, 2, 2, page as u64);
    be::put(&mut c, 6, 4, alloc as u64);
    c
}

/// SECURITY PROTOCOL OUT (12 bytes) of `len` bytes to page `page` of protocol 0x20.
pub fn spout_cdb(page: u16, len: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = SECURITY_PROTOCOL_OUT;
    c[1] = PROTOCOL_TAPE_ENCRYPTION;
    be::put(&mut c, 2, 2, page as u64);
    be::put(&mut c, 6, 4, len as u64);
    c
}

/// The page body after the 4-byte header (code, length), cut to the length and to the bytes present.
/// `None` when the header is missing or names another page.
fn page_body(b: &[u8], code: u16) -> Option<&[u8]> {
    if be::u16_at(b, 0)? != code {
        return None;
    }
    let len = be::u16_at(b, 2)? as usize;
    Some(&b[4..b.len().min(4 + len)])
}

/// Page 0x0000 or 0x0001: the page codes the drive supports.
pub fn decode_supported_pages(b: &[u8], code: u16) -> Option<Vec<u16>> {
    let body = page_body(b, code)?;
    Some(
        body.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect(),
    )
}

/// Security protocol information page 0x0000: the security protocols supported.
pub fn decode_supported_protocols(b: &[u8]) -> Option<Vec<u8>> {
    let n = be::u16_at(b, 6)? as usize;
    Some(b.get(8..)?.iter().take(n).copied().collect())
}

/// Whether an algorithm runs in the drive (ENCRYPT_C / DECRYPT_C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capable {
    No,
    /// Only with external data encryption control (software in the host or a key manager).
    External,
    Hardware,
    Reserved,
}

impl Capable {
    fn from_bits(b: u8) -> Capable {
        match b & 3 {
            0 => Capable::No,
            1 => Capable::External,
            2 => Capable::Hardware,
            _ => Capable::Reserved,
        }
    }
}

/// One algorithm descriptor of the capabilities page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Algorithm {
    pub index: u8,
    pub code: u32,
    pub key_len: u16,
    pub encrypt: Capable,
    pub decrypt: Capable,
    pub max_ukad: u16,
    pub max_akad: u16,
}

impl Algorithm {
    /// AES-256-GCM done by the drive both ways with a 32-byte key: what rackvault uses.
    pub fn is_hardware_aes_gcm_256(&self) -> bool {
        self.code == AES_GCM_256
            && self.key_len as usize == KEY_LEN
            && self.encrypt == Capable::Hardware
            && self.decrypt == Capable::Hardware
    }
}

/// Page 0x0010, Data Encryption Capabilities: its algorithm descriptors (a cut one ends the list).
pub fn decode_capabilities(b: &[u8]) -> Option<Vec<Algorithm>> {
    let body = page_body(b, PAGE_CAPABILITIES)?;
    let mut rest = body.get(16..)?;
    let mut out = Vec::new();
    while rest.len() >= 4 {
        let len = be::u16_at(rest, 2)? as usize;
        let Some(d) = rest.get(..4 + len) else { break };
        if d.len() >= 24 {
            out.push(Algorithm {
                index: d[0],
                encrypt: Capable::from_bits(d[4]),
                decrypt: Capable::from_bits(d[4] >> 2),
                max_ukad: be::u16_at(d, 6)?,
                max_akad: be::u16_at(d, 8)?,
                key_len: be::u16_at(d, 10)?,
                code: be::u32_at(d, 20)?,
            });
        }
        rest = &rest[4 + len..];
    }
    Some(out)
}

/// Page 0x0011, Supported Key Formats.
pub fn decode_key_formats(b: &[u8]) -> Option<Vec<u8>> {
    Some(page_body(b, PAGE_KEY_FORMATS)?.to_vec())
}

/// KEY DESCRIPTOR TYPE of a key-associated data descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KadType {
    /// U-KAD: stored in clear, not authenticated.
    Unauthenticated,
    /// A-KAD: stored in clear, authenticated with the data (rackvault's key fingerprint).
    Authenticated,
    Nonce,
    Metadata,
    Other(u8),
}

impl KadType {
    pub fn code(self) -> u8 {
        match self {
            KadType::Unauthenticated => 0,
            KadType::Authenticated => 1,
            KadType::Nonce => 2,
            KadType::Metadata => 3,
            KadType::Other(c) => c,
        }
    }
    fn from_code(c: u8) -> KadType {
        match c {
            0 => KadType::Unauthenticated,
            1 => KadType::Authenticated,
            2 => KadType::Nonce,
            3 => KadType::Metadata,
            c => KadType::Other(c),
        }
    }
}

/// A key-associated data descriptor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Kad {
    pub kind: KadType,
    pub data: Vec<u8>,
}

/// A list of KAD descriptors (type, flags, 2-byte length, data); a cut descriptor ends the list.
pub fn decode_kads(mut b: &[u8]) -> Vec<Kad> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_be_bytes([b[2], b[3]]) as usize;
        let Some(data) = b.get(4..4 + len) else { break };
        out.push(Kad {
            kind: KadType::from_code(b[0]),
            data: data.to_vec(),
        });
        b = &b[4 + len..];
    }
    out
}

/// The first authenticated KAD, else the first unauthenticated one: the key's name on the tape.
pub fn key_descriptor(kads: &[Kad]) -> Option<&[u8]> {
    kads.iter()
        .find(|k| k.kind == KadType::Authenticated)
        .or_else(|| kads.iter().find(|k| k.kind == KadType::Unauthenticated))
        .map(|k| k.data.as_slice())
}

/// ENCRYPTION MODE of Set Data Encryption and Data Encryption Status.
pub const ENCRYPT_DISABLE: u8 = 0;
pub const ENCRYPT_EXTERNAL: u8 = 1;
pub const ENCRYPT_ENCRYPT: u8 = 2;
/// DECRYPTION MODE.
pub const DECRYPT_DISABLE: u8 = 0;
pub const DECRYPT_RAW: u8 = 1;
pub const DECRYPT_DECRYPT: u8 = 2;
/// Decrypts encrypted blocks and passes blocks written in clear: what a restore of a tape that has
/// both (an LTFS volume whose older sets were written before the pool encrypted) needs.
pub const DECRYPT_MIXED: u8 = 3;

/// SCOPE: the parameters apply to every I_T nexus (every host port and process), as a key manager
/// sets them and Proxmox Backup Server and IBM LTFS do.
pub const SCOPE_ALL_I_T_NEXUS: u8 = 2;

/// The parameter list of Set Data Encryption. Encrypting needs a key and takes KADs; clearing
/// (both modes DISABLE) takes neither.
pub struct SetEncryption<'a> {
    pub scope: u8,
    pub encrypt: u8,
    pub decrypt: u8,
    pub algorithm_index: u8,
    /// Key format 0: the plain 32-byte key.
    pub key: Option<&'a [u8; KEY_LEN]>,
    pub kads: &'a [Kad],
}

impl SetEncryption<'_> {
    /// Encryption and decryption off, no key: the drive forgets the key.
    pub fn clear() -> SetEncryption<'static> {
        SetEncryption {
            scope: SCOPE_ALL_I_T_NEXUS,
            encrypt: ENCRYPT_DISABLE,
            decrypt: DECRYPT_DISABLE,
            algorithm_index: 0,
            key: None,
            kads: &[],
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        be::put(&mut p, 0, 2, PAGE_SET_DATA_ENCRYPTION as u64);
        p[4] = (self.scope & 7) << 5;
        // CEEM 00b, RDMC 00b, SDK 0. CKOD 1 with a key (a tape is loaded then): a real drive
        // forgets the key when the tape leaves it, as the virtual one does, besides the explicit
        // clear after each tape.
        if self.key.is_some() {
            p[5] = 0x04;
        }
        p[6] = self.encrypt;
        p[7] = self.decrypt;
        p[8] = self.algorithm_index;
        p[9] = 0;
        if let Some(k) = self.key {
            be::put(&mut p, 18, 2, KEY_LEN as u64);
            p.extend_from_slice(k);
            for kad in self.kads {
                p.push(kad.kind.code());
                p.push(0);
                p.extend_from_slice(&(kad.data.len() as u16).to_be_bytes());
                p.extend_from_slice(&kad.data);
            }
        }
        let n = (p.len() - 4) as u64;
        be::put(&mut p, 2, 2, n);
        p
    }
}

/// Page 0x0020, Data Encryption Status: what the drive does now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EncryptionStatus {
    pub scope: u8,
    pub encrypt_mode: u8,
    pub decrypt_mode: u8,
    pub algorithm_index: u8,
    pub key_instance: u32,
    pub kads: Vec<Kad>,
}

impl EncryptionStatus {
    pub fn encrypting(&self) -> bool {
        self.encrypt_mode == ENCRYPT_ENCRYPT
    }
    pub fn off(&self) -> bool {
        self.encrypt_mode == ENCRYPT_DISABLE && self.decrypt_mode == DECRYPT_DISABLE
    }
}

pub fn decode_status(b: &[u8]) -> Option<EncryptionStatus> {
    let body = page_body(b, PAGE_STATUS)?;
    if body.len() < 8 {
        return None;
    }
    Some(EncryptionStatus {
        scope: body[0] >> 5,
        encrypt_mode: body[1],
        decrypt_mode: body[2],
        algorithm_index: body[3],
        key_instance: be::u32_at(body, 4)?,
        kads: body.get(20..).map(decode_kads).unwrap_or_default(),
    })
}

/// ENCRYPTION STATUS of Next Block Encryption Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NextBlock {
    /// The drive cannot tell (e.g. it has not read that far).
    Unknown,
    /// Not at a logical block: a filemark, end of data.
    NotABlock,
    Plain,
    /// Encrypted with an algorithm this drive does not have.
    UnsupportedAlgorithm,
    /// Encrypted, and the key set decrypts it.
    Decryptable,
    /// Encrypted, and the drive does not have its key: its KAD names the key.
    KeyNeeded,
    Reserved(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NextBlockStatus {
    pub block: u64,
    pub status: NextBlock,
    pub algorithm_index: u8,
    pub kads: Vec<Kad>,
}

impl NextBlockStatus {
    pub fn encrypted(&self) -> bool {
        matches!(
            self.status,
            NextBlock::UnsupportedAlgorithm | NextBlock::Decryptable | NextBlock::KeyNeeded
        )
    }
}

pub fn decode_next_block(b: &[u8]) -> Option<NextBlockStatus> {
    let body = page_body(b, PAGE_NEXT_BLOCK)?;
    if body.len() < 10 {
        return None;
    }
    let status = match body[8] & 0x0f {
        0 | 1 => NextBlock::Unknown,
        2 => NextBlock::NotABlock,
        3 => NextBlock::Plain,
        4 => NextBlock::UnsupportedAlgorithm,
        5 => NextBlock::Decryptable,
        6 => NextBlock::KeyNeeded,
        s => NextBlock::Reserved(s),
    };
    Some(NextBlockStatus {
        block: be::u64_at(body, 0)?,
        status,
        algorithm_index: body[9],
        kads: body.get(12..).map(decode_kads).unwrap_or_default(),
    })
}

/// Allocation length of every SECURITY PROTOCOL IN.
const SPIN_ALLOC: u32 = 8192;

impl<T: scsi::Transport> super::Drive<T> {
    fn spin(&mut self, protocol: u8, page: u16) -> Result<Vec<u8>, super::DriveError> {
        let mut b = vec![0u8; SPIN_ALLOC as usize];
        let n = self.cmd(
            "SECURITY PROTOCOL IN",
            &spin_cdb(protocol, page, SPIN_ALLOC),
            super::Buf::In(&mut b),
            true,
        )?;
        b.truncate(n.min(SPIN_ALLOC as usize));
        Ok(b)
    }

    fn spin_page<R>(
        &mut self,
        page: u16,
        decode: impl FnOnce(&[u8]) -> Option<R>,
    ) -> Result<R, super::DriveError> {
        let b = self.spin(PROTOCOL_TAPE_ENCRYPTION, page)?;
        decode(&b).ok_or_else(|| {
            self.bad_response(
                "SECURITY PROTOCOL IN",
                format!("page {page:#06x}: {} bytes that do not decode", b.len()),
            )
        })
    }

    /// The encryption algorithms the drive has (SPIN page 0x0010).
    pub fn encryption_capabilities(&mut self) -> Result<Vec<Algorithm>, super::DriveError> {
        self.spin_page(PAGE_CAPABILITIES, decode_capabilities)
    }

    /// What the drive encrypts and decrypts now, and the KAD of the key set (SPIN page 0x0020).
    pub fn encryption_status(&mut self) -> Result<EncryptionStatus, super::DriveError> {
        self.spin_page(PAGE_STATUS, decode_status)
    }

    /// Whether the block at the current position is encrypted, and the KAD naming its key (SPIN
    /// page 0x0021). Moves nothing.
    pub fn next_block_encryption(&mut self) -> Result<NextBlockStatus, super::DriveError> {
        self.spin_page(PAGE_NEXT_BLOCK, decode_next_block)
    }

    /// Sets `key` for every I_T nexus: blocks written are encrypted with AES-256-GCM and carry `kad`
    /// as their authenticated KAD; blocks read are decrypted, and blocks in clear are read as they
    /// are (MIXED). Checked with the status page afterwards. The key appears in no error.
    pub fn set_encryption_key(
        &mut self,
        key: &[u8; KEY_LEN],
        kad: &[u8],
    ) -> Result<(), super::DriveError> {
        const CMD: &str = "SECURITY PROTOCOL OUT";
        let algorithms = match self.encryption_capabilities() {
            Ok(a) => a,
            Err(e)
                if e.kind().is_some_and(|k| {
                    matches!(
                        k,
                        ltfs::DeviceError::Unsupported(_) | ltfs::DeviceError::IllegalRequest(_)
                    )
                }) =>
            {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let Some(alg) = algorithms.iter().find(|a| a.is_hardware_aes_gcm_256()) else {
            return Err(self.error(
                CMD,
                ltfs::DeviceError::Unsupported(
                    "AES-256-GCM encryption in the drive (an encrypted pool needs an LTO-4 or later drive whose encryption is under application control)".into(),
                ),
            ));
        };
        let kads = [Kad {
            kind: KadType::Authenticated,
            data: kad.to_vec(),
        }];
        let p = SetEncryption {
            scope: SCOPE_ALL_I_T_NEXUS,
            encrypt: ENCRYPT_ENCRYPT,
            decrypt: DECRYPT_MIXED,
            algorithm_index: alg.index,
            key: Some(key),
            kads: &kads,
        }
        .encode();
        let r = self.cmd(
            CMD,
            &spout_cdb(PAGE_SET_DATA_ENCRYPTION, p.len() as u32),
            super::Buf::Out(&p),
            true,
        );
        // The parameter list held the key: it does not stay in this buffer.
        let mut p = p;
        p.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&p);
        r?;
        let s = self.encryption_status()?;
        if !s.encrypting() || s.decrypt_mode != DECRYPT_MIXED {
            return Err(self.bad_response(
                CMD,
                format!(
                    "the drive reports encryption mode {} and decryption mode {} after the key was set",
                    s.encrypt_mode, s.decrypt_mode
                ),
            ));
        }
        Ok(())
    }

    /// Encryption and decryption off, the key forgotten. A drive without encryption (no SECURITY
    /// PROTOCOL OUT) has nothing to clear.
    pub fn clear_encryption(&mut self) -> Result<(), super::DriveError> {
        let p = SetEncryption::clear().encode();
        match self.cmd(
            "SECURITY PROTOCOL OUT",
            &spout_cdb(PAGE_SET_DATA_ENCRYPTION, p.len() as u32),
            super::Buf::Out(&p),
            true,
        ) {
            Ok(_) => Ok(()),
            // No SECURITY PROTOCOL OUT, or not protocol 0x20 (ILLEGAL REQUEST 20/00, 24/00): a
            // drive without encryption holds no key.
            Err(e)
                if e.kind().is_some_and(|k| {
                    matches!(
                        k,
                        ltfs::DeviceError::Unsupported(_) | ltfs::DeviceError::IllegalRequest(_)
                    )
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn page(code: u16, body: &[u8]) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(&(body.len() as u16).to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    fn caps_page() -> Vec<u8> {
        let mut body = vec![0u8; 16];
        let mut d = vec![0u8; 24];
        d[0] = 1;
        d[2..4].copy_from_slice(&20u16.to_be_bytes());
        d[4] = 0b1010;
        d[6..8].copy_from_slice(&32u16.to_be_bytes());
        d[8..10].copy_from_slice(&12u16.to_be_bytes());
        d[10..12].copy_from_slice(&32u16.to_be_bytes());
        d[20..24].copy_from_slice(&AES_GCM_256.to_be_bytes());
        body.extend_from_slice(&d);
        page(PAGE_CAPABILITIES, &body)
    }

    #[test]
    fn cdbs() {
        assert_eq!(
            spin_cdb(0x20, 0x0021, 8192),
            [0xa2, 0x20, 0, 0x21, 0, 0, 0, 0, 0x20, 0, 0, 0]
        );
        assert_eq!(
            spout_cdb(0x0010, 84),
            [0xb5, 0x20, 0, 0x10, 0, 0, 0, 0, 0, 84, 0, 0]
        );
    }

    #[test]
    fn set_data_encryption_page() {
        let key = [0xabu8; 32];
        let kads = [Kad {
            kind: KadType::Authenticated,
            data: b"RVK123456789".to_vec(),
        }];
        let p = SetEncryption {
            scope: SCOPE_ALL_I_T_NEXUS,
            encrypt: ENCRYPT_ENCRYPT,
            decrypt: DECRYPT_MIXED,
            algorithm_index: 1,
            key: Some(&key),
            kads: &kads,
        }
        .encode();
        assert_eq!(p.len(), 20 + 32 + 4 + 12);
        assert_eq!(&p[0..4], &[0, 0x10, 0, (p.len() - 4) as u8]);
        // Scope all I_T nexus; CKOD (the key goes with the tape); ENCRYPT, MIXED, index 1.
        assert_eq!(&p[4..10], &[0x40, 0x04, 2, 3, 1, 0]);
        assert_eq!(&p[18..20], &[0, 32]);
        assert_eq!(&p[20..52], &key);
        assert_eq!(&p[52..56], &[1, 0, 0, 12]);
        assert_eq!(decode_kads(&p[52..]), kads);
        let c = SetEncryption::clear().encode();
        assert_eq!(c, {
            let mut v = vec![0u8; 20];
            v[1] = 0x10;
            v[3] = 16;
            v[4] = 0x40;
            v
        });
    }

    #[test]
    fn capabilities_status_and_next_block() {
        let algs = decode_capabilities(&caps_page()).unwrap();
        assert_eq!(algs.len(), 1);
        assert!(algs[0].is_hardware_aes_gcm_256());
        assert_eq!((algs[0].index, algs[0].max_akad), (1, 12));

        let mut body = vec![0u8; 20];
        body[0] = 0x41;
        body[1] = 2;
        body[2] = 3;
        body[3] = 1;
        body[4..8].copy_from_slice(&7u32.to_be_bytes());
        body.extend_from_slice(&[1, 2, 0, 3, b'a', b'b', b'c']);
        let s = decode_status(&page(PAGE_STATUS, &body)).unwrap();
        assert_eq!((s.scope, s.encrypt_mode, s.decrypt_mode), (2, 2, 3));
        assert!(s.encrypting() && !s.off());
        assert_eq!(s.key_instance, 7);
        assert_eq!(key_descriptor(&s.kads), Some(&b"abc"[..]));

        let mut body = vec![0u8; 12];
        body[0..8].copy_from_slice(&5u64.to_be_bytes());
        body[8] = 6;
        body[9] = 1;
        body.extend_from_slice(&[0, 1, 0, 2, b'x', b'y', 1, 2, 0, 1, b'z']);
        let n = decode_next_block(&page(PAGE_NEXT_BLOCK, &body)).unwrap();
        assert_eq!((n.block, n.status), (5, NextBlock::KeyNeeded));
        assert!(n.encrypted());
        assert_eq!(key_descriptor(&n.kads), Some(&b"z"[..]), "A-KAD first");

        assert_eq!(
            decode_supported_pages(&page(0, &[0, 0, 0, 0x10, 0, 0x20, 0]), 0).unwrap(),
            vec![0, 0x10, 0x20],
            "an odd byte is left out"
        );
        assert_eq!(
            decode_supported_protocols(&[0, 0, 0, 0, 0, 0, 0, 2, 0, 0x20]).unwrap(),
            vec![0, 0x20]
        );
        assert_eq!(decode_key_formats(&page(0x11, &[0])).unwrap(), vec![0]);
    }

    #[test]
    fn truncated_and_lying_pages() {
        // Every prefix of a valid page decodes to something or None, never panics.
        let caps = caps_page();
        for n in 0..caps.len() {
            let _ = decode_capabilities(&caps[..n]);
        }
        // A length larger than the data: clamped.
        let mut lying = caps.clone();
        lying[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(decode_capabilities(&lying).unwrap().len(), 1);
        // A descriptor whose length runs past the end ends the list.
        let mut cut = caps.clone();
        cut[4 + 16 + 2..4 + 16 + 4].copy_from_slice(&0xfff0u16.to_be_bytes());
        assert!(decode_capabilities(&cut).unwrap().is_empty());
        // Another page's code is refused.
        assert!(decode_status(&caps).is_none());
        assert!(decode_next_block(&[0, 0x21, 0, 2, 0, 0]).is_none());
        assert!(decode_kads(&[1, 0, 0xff, 0xff, 1]).is_empty());
        assert!(decode_supported_protocols(&[0; 7]).is_none());
    }

    fn status_page(enc: u8, dec: u8) -> Vec<u8> {
        let mut body = vec![0u8; 20];
        body[0] = 0x41;
        body[1] = enc;
        body[2] = dec;
        page(PAGE_STATUS, &body)
    }

    #[test]
    fn the_drive_gets_the_key_and_its_kad_and_is_checked() {
        use super::super::script::{Script, Step};
        use scsi::{Sense, SenseKey};
        let mut d = Script::drive(vec![
            Step::data(&[0xa2, 0x20, 0, 0x10], caps_page()),
            Step::ok(&[0xb5, 0x20, 0, 0x10]),
            Step::data(&[0xa2, 0x20, 0, 0x20], status_page(2, 3)),
            // A drive that ignored the page: the mismatch is an error.
            Step::data(&[0xa2, 0x20, 0, 0x10], caps_page()),
            Step::ok(&[0xb5, 0x20, 0, 0x10]),
            Step::data(&[0xa2, 0x20, 0, 0x20], status_page(0, 0)),
            // Clearing; a drive without SECURITY PROTOCOL OUT has nothing to clear.
            Step::ok(&[0xb5, 0x20, 0, 0x10]),
            Step::sense(&[0xb5], Sense::new(SenseKey::IllegalRequest, 0x20, 0)),
            // A drive without AES-GCM: refused before any key is sent.
            Step::sense(&[0xa2], Sense::new(SenseKey::IllegalRequest, 0x20, 0)),
        ]);
        let key = [0x42u8; 32];
        d.set_encryption_key(&key, b"RVK123456789").unwrap();
        let sent = &d.transport().sent[0];
        assert_eq!(&sent[6..10], &[2, 3, 1, 0]);
        assert_eq!(&sent[20..52], &key);
        assert_eq!(&sent[52..56], &[1, 0, 0, 12]);
        assert_eq!(&sent[56..68], b"RVK123456789");
        let e = d.set_encryption_key(&key, b"RVK123456789").unwrap_err();
        assert!(e.to_string().contains("encryption mode 0"), "{e}");
        assert!(!e.to_string().contains("42, 42"), "{e}");
        d.clear_encryption().unwrap();
        assert_eq!(d.transport().sent.last().unwrap()[6..8], [0, 0]);
        d.clear_encryption().unwrap();
        let e = d.set_encryption_key(&key, b"k").unwrap_err();
        assert!(e.to_string().contains("AES-256-GCM"), "{e}");
        assert!(d.transport().done());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200), code in 0u16..0x30) {
            let mut b = b;
            if b.len() >= 2 {
                b[0..2].copy_from_slice(&code.to_be_bytes());
            }
            let _ = decode_capabilities(&b);
            let _ = decode_status(&b);
            let _ = decode_next_block(&b);
            let _ = decode_supported_pages(&b, code);
            let _ = decode_supported_protocols(&b);
            let _ = decode_key_formats(&b);
            let _ = decode_kads(&b);
        }
    }
}
