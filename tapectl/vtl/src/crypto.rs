//! The drive's data encryption (SSC-4 §4.2.27, SECURITY PROTOCOL IN/OUT with protocol 0x20): the key
//! the host set, which lives in this handle's memory only, never on disk and never in `library.json`;
//! the pages SPIN answers and SPOUT accepts; and the encrypted record's sidecar on disk.
//!
//! One algorithm, index 1: AES-256-GCM with a 32-byte plain key (key format 0), as LTO-4 and later
//! drives have it. Each record written while the encryption mode is ENCRYPT is sealed with a fresh
//! random 96-bit nonce; its key-associated data (KAD, the host's name for the key) is stored in clear
//! beside it and authenticated with it (GCM additional data), so a drive without the key can still
//! say which key a record needs (Next Block Encryption Status), as a real drive does.

use std::sync::{Arc, Mutex, OnceLock};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use scsi::{Completion, DataDir, SenseKey};

use crate::util::{bad_cdb, bad_param, fail, respond, u16_at, u32_at};

pub(crate) const PROTOCOL_INFO: u8 = 0x00;
pub(crate) const PROTOCOL_TAPE: u8 = 0x20;
pub(crate) const ALGORITHM_INDEX: u8 = 1;
/// SSC-4 algorithm code of AES-GCM with a 256-bit key.
pub(crate) const ALGORITHM_AES_GCM_256: u32 = 0x0001_0014;
pub(crate) const KEY_LEN: usize = 32;
pub(crate) const TAG_LEN: usize = 16;
const NONCE_LEN: usize = 12;
/// Longest KAD descriptor data accepted (unauthenticated and authenticated alike).
pub(crate) const MAX_KAD: usize = 64;

pub(crate) const ENCRYPT_DISABLE: u8 = 0;
pub(crate) const ENCRYPT_ENCRYPT: u8 = 2;
pub(crate) const DECRYPT_DISABLE: u8 = 0;
pub(crate) const DECRYPT_DECRYPT: u8 = 2;
pub(crate) const DECRYPT_MIXED: u8 = 3;

/// The sidecar `<p>_<blk>_K` of an encrypted record starts with this (magic and format version 1).
pub(crate) const SIDECAR_MAGIC: &[u8; 8] = b"RVTLENC1";

/// The encryption parameters the host set with SPOUT page 0x0010.
pub(crate) struct KeyState {
    key: [u8; KEY_LEN],
    pub(crate) encrypt: u8,
    pub(crate) decrypt: u8,
    /// The KAD descriptors as they go into the pages and the sidecar (type, flags, length, data).
    pub(crate) kad: Vec<u8>,
    /// SCOPE as set (reported back; the key is this handle's, whatever the scope: see the README).
    pub(crate) scope: u8,
}

impl Drop for KeyState {
    fn drop(&mut self) {
        // Best effort: the key does not outlive the parameters in this process's memory.
        for b in self.key.iter_mut() {
            // SAFETY: a volatile write to a byte we own, so the compiler keeps the wipe.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// The drive's encryption state: the parameters (if any), the key instance counter, and the load
/// (`load_seq`) they were set during.
#[derive(Default)]
pub(crate) struct Crypto {
    pub(crate) state: Option<KeyState>,
    pub(crate) instance: u32,
    pub(crate) load: Option<u64>,
}

type Slots = std::collections::HashMap<(std::path::PathBuf, usize), Arc<Mutex<Crypto>>>;

/// A drive's encryption state, shared by every handle on that drive in this process: the drive's
/// volatile memory. A real drive keeps the key for all I_T nexuses until the cartridge is unloaded
/// (or the drive reset); tapectl opens a drive several times while it writes one set. Nothing of
/// it is ever written to disk, so another process (a drive power-cycled) has no key.
pub(crate) fn slot(dir: &std::path::Path, index: usize) -> Arc<Mutex<Crypto>> {
    static SLOTS: OnceLock<Mutex<Slots>> = OnceLock::new();
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut slots = SLOTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    slots.entry((dir, index)).or_default().clone()
}

impl Crypto {
    pub(crate) fn encrypting(&self) -> Option<&KeyState> {
        self.state.as_ref().filter(|s| s.encrypt == ENCRYPT_ENCRYPT)
    }

    /// Forgets the key (unload, or a cartridge moved out): SSC's CKOD, always on here.
    pub(crate) fn clear(&mut self) {
        self.load = None;
        if self.state.take().is_some() {
            self.instance = self.instance.wrapping_add(1);
        }
    }

    /// The key goes with the cartridge it was set for: forgotten when `current` (the threaded
    /// cartridge's load, if any) is another load.
    pub(crate) fn follow_load(&mut self, current: Option<u64>) {
        if self.state.is_some() && (current.is_none() || current != self.load) {
            self.clear();
        }
    }
}

fn fill_random(buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: getrandom writes at most `len` bytes into the buffer we pass.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n <= 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        done += n as usize;
    }
    true
}

/// Encrypts one record: (sidecar bytes, ciphertext with the tag appended).
pub(crate) fn seal(k: &KeyState, plain: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut nonce = [0u8; NONCE_LEN];
    if !fill_random(&mut nonce) {
        return None;
    }
    let mut side = Vec::with_capacity(24 + k.kad.len());
    side.extend_from_slice(SIDECAR_MAGIC);
    side.push(ALGORITHM_INDEX);
    side.push(0);
    side.extend_from_slice(&nonce);
    side.extend_from_slice(&(k.kad.len() as u16).to_be_bytes());
    side.extend_from_slice(&k.kad);
    let cipher = Aes256Gcm::new_from_slice(&k.key).ok()?;
    let mut out = Vec::with_capacity(plain.len() + TAG_LEN);
    out.extend_from_slice(plain);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &side, &mut out)
        .ok()?;
    out.extend_from_slice(&tag);
    Some((side, out))
}

/// A parsed sidecar: the nonce and the KAD descriptors.
pub(crate) struct Sidecar<'a> {
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) kad: &'a [u8],
}

/// Parses a sidecar; `None` when it is not one (short, wrong magic, unknown algorithm, bad length).
pub(crate) fn parse_sidecar(b: &[u8]) -> Option<Sidecar<'_>> {
    if b.len() < 24 || &b[..8] != SIDECAR_MAGIC || b[8] != ALGORITHM_INDEX {
        return None;
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&b[10..22]);
    let n = u16::from_be_bytes([b[22], b[23]]) as usize;
    let kad = b.get(24..24 + n)?;
    Some(Sidecar { nonce, kad })
}

/// Why a record could not be decrypted.
pub(crate) enum OpenError {
    /// No key set, or decryption disabled: DATA PROTECT 74/01 UNABLE TO DECRYPT DATA.
    NoKey,
    /// A key is set but the record does not open with it (wrong key, or altered on the medium):
    /// DATA PROTECT 74/03 INCORRECT DATA ENCRYPTION KEY.
    WrongKey,
    /// The sidecar is damaged: MEDIUM ERROR 11/00.
    Damaged,
}

/// Decrypts a record in place (`data` = ciphertext with the tag appended) and returns the plain length.
pub(crate) fn open(
    k: Option<&KeyState>,
    sidecar: &[u8],
    data: &mut Vec<u8>,
) -> Result<usize, OpenError> {
    let side = parse_sidecar(sidecar).ok_or(OpenError::Damaged)?;
    let Some(k) = k.filter(|k| k.decrypt != DECRYPT_DISABLE) else {
        return Err(OpenError::NoKey);
    };
    if data.len() < TAG_LEN {
        return Err(OpenError::Damaged);
    }
    let n = data.len() - TAG_LEN;
    let tag = Tag::clone_from_slice(&data[n..]);
    data.truncate(n);
    let cipher = Aes256Gcm::new_from_slice(&k.key).map_err(|_| OpenError::WrongKey)?;
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(&side.nonce), sidecar, data, &tag)
        .map_err(|_| OpenError::WrongKey)?;
    Ok(n)
}

/// The completion for an [`OpenError`] (SSC-4 / SPC-4 additional sense codes 74/xx).
pub(crate) fn open_failure(e: &OpenError) -> Completion {
    match e {
        OpenError::NoKey => fail(SenseKey::DataProtect, 0x74, 0x01),
        OpenError::WrongKey => fail(SenseKey::DataProtect, 0x74, 0x03),
        OpenError::Damaged => fail(SenseKey::MediumError, 0x11, 0x00),
    }
}

/// What the block at the current position is, for Next Block Encryption Status.
pub(crate) enum NextBlock<'a> {
    /// Not at a logical block (filemark, end of data).
    NotABlock,
    Plain,
    /// Encrypted, with its sidecar (checked: the key set opens it or not).
    Encrypted {
        sidecar: &'a [u8],
        opens: bool,
    },
    /// No cartridge position to speak of.
    Unknown,
}

/// Whether the key set is the one a sidecar's KAD names (compared by KAD, as the host chose it).
pub(crate) fn kad_matches(k: Option<&KeyState>, sidecar: &[u8]) -> bool {
    match (k, parse_sidecar(sidecar)) {
        (Some(k), Some(s)) => k.decrypt != DECRYPT_DISABLE && k.kad == s.kad,
        _ => false,
    }
}

fn page(code: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// SECURITY PROTOCOL IN. `next` tells what the next block is (page 0x0021), `block` its number.
pub(crate) fn security_in(
    c: &Crypto,
    cdb: &[u8],
    data: DataDir<'_>,
    next: NextBlock<'_>,
    block: u64,
) -> Completion {
    // INC_512 (allocation length in 512-byte units) is not supported.
    if cdb[4] & 0x80 != 0 {
        return bad_cdb();
    }
    let alloc = u32_at(cdb, 6) as usize;
    let code = u16_at(cdb, 2);
    let resp = match (cdb[1], code) {
        // Security protocol information: the protocols supported.
        (PROTOCOL_INFO, 0x0000) => {
            let mut b = vec![0u8; 8];
            b[6..8].copy_from_slice(&2u16.to_be_bytes());
            b.extend_from_slice(&[PROTOCOL_INFO, PROTOCOL_TAPE]);
            b
        }
        (PROTOCOL_TAPE, 0x0000) => {
            let codes: [u16; 6] = [0x0000, 0x0001, 0x0010, 0x0011, 0x0020, 0x0021];
            page(
                0x0000,
                &codes
                    .iter()
                    .flat_map(|c| c.to_be_bytes())
                    .collect::<Vec<_>>(),
            )
        }
        (PROTOCOL_TAPE, 0x0001) => page(0x0001, &0x0010u16.to_be_bytes()),
        (PROTOCOL_TAPE, 0x0010) => {
            // Data Encryption Capabilities: CFG_P = 01b (capable, nothing to configure), then one
            // algorithm descriptor.
            let mut body = vec![0u8; 16];
            body[0] = 0x01;
            let mut d = vec![0u8; 24];
            d[0] = ALGORITHM_INDEX;
            d[2..4].copy_from_slice(&20u16.to_be_bytes());
            // DECRYPT_C = ENCRYPT_C = 10b (in hardware); byte 5: UKADF = AKADF = 0 (up to the maximum).
            d[4] = (0b10 << 2) | 0b10;
            d[6..8].copy_from_slice(&(MAX_KAD as u16).to_be_bytes());
            d[8..10].copy_from_slice(&(MAX_KAD as u16).to_be_bytes());
            d[10..12].copy_from_slice(&(KEY_LEN as u16).to_be_bytes());
            d[20..24].copy_from_slice(&ALGORITHM_AES_GCM_256.to_be_bytes());
            body.extend_from_slice(&d);
            page(0x0010, &body)
        }
        // Supported Key Formats: plain-text key only.
        (PROTOCOL_TAPE, 0x0011) => page(0x0011, &[0x00]),
        (PROTOCOL_TAPE, 0x0020) => {
            let mut body = vec![0u8; 20];
            if let Some(s) = &c.state {
                body[0] = (s.scope << 5) | 0x01;
                body[1] = s.encrypt;
                body[2] = s.decrypt;
                body[3] = ALGORITHM_INDEX;
            }
            body[4..8].copy_from_slice(&c.instance.to_be_bytes());
            if let Some(s) = &c.state {
                body.extend_from_slice(&s.kad);
            }
            page(0x0020, &body)
        }
        (PROTOCOL_TAPE, 0x0021) => {
            let mut body = vec![0u8; 12];
            body[0..8].copy_from_slice(&block.to_be_bytes());
            let (status, kad): (u8, &[u8]) = match next {
                NextBlock::Unknown => (0x1, &[]),
                NextBlock::NotABlock => (0x2, &[]),
                NextBlock::Plain => (0x3, &[]),
                NextBlock::Encrypted { sidecar, opens } => match parse_sidecar(sidecar) {
                    Some(s) => (if opens { 0x5 } else { 0x6 }, s.kad),
                    None => (0x4, &[]),
                },
            };
            // Compression status 0 (not reported).
            body[8] = status;
            body[9] = if status >= 0x4 { ALGORITHM_INDEX } else { 0 };
            body.extend_from_slice(kad);
            page(0x0021, &body)
        }
        _ => return bad_cdb(),
    };
    respond(data, &resp, alloc)
}

/// Parses the KAD descriptors of a Set Data Encryption page: each is type (0 U-KAD, 1 A-KAD),
/// a reserved byte, a 2-byte length and the data. Returns them re-encoded for the status pages,
/// with the AUTHENTICATED field set (A-KAD: 010b, authenticated with the record; U-KAD: 001b, not).
fn parse_kads(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return None;
        }
        let t = b[0];
        let n = u16::from_be_bytes([b[2], b[3]]) as usize;
        let d = b.get(4..4 + n)?;
        if t > 1 || n > MAX_KAD || out.len() > 4 * (4 + MAX_KAD) {
            return None;
        }
        out.push(t);
        out.push(if t == 1 { 0x02 } else { 0x01 });
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(d);
        b = &b[4 + n..];
    }
    Some(out)
}

/// SECURITY PROTOCOL OUT, protocol 0x20 page 0x0010 Set Data Encryption.
pub(crate) fn security_out(
    c: &mut Crypto,
    cdb: &[u8],
    data: DataDir<'_>,
    loaded: bool,
) -> Completion {
    if cdb[1] != PROTOCOL_TAPE || u16_at(cdb, 2) != 0x0010 || cdb[4] & 0x80 != 0 {
        return bad_cdb();
    }
    let len = u32_at(cdb, 6) as usize;
    let b = match data {
        DataDir::Out(b) if b.len() >= len => &b[..len],
        _ => return bad_cdb(),
    };
    if b.len() < 20 || u16_at(b, 0) != 0x0010 || 4 + u16_at(b, 2) as usize != b.len() {
        return bad_param();
    }
    let scope = b[4] >> 5;
    let lock = b[4] & 0x01 != 0;
    let (enc, dec, alg, fmt) = (b[6], b[7], b[8], b[9]);
    let key_len = u16_at(b, 18) as usize;
    let Some(key) = b.get(20..20 + key_len) else {
        return bad_param();
    };
    // SCOPE: 000b public, 001b local, 010b all I_T nexus; LOCK is not supported.
    if scope > 2 || lock {
        return bad_param();
    }
    if enc == ENCRYPT_DISABLE && dec == DECRYPT_DISABLE {
        if key_len != 0 {
            return bad_param();
        }
        c.clear();
        return Completion::good(0);
    }
    if !loaded {
        return fail(SenseKey::NotReady, 0x3a, 0x00);
    }
    if !matches!(enc, ENCRYPT_DISABLE | ENCRYPT_ENCRYPT)
        || !matches!(dec, DECRYPT_DISABLE | DECRYPT_DECRYPT | DECRYPT_MIXED)
        || alg != ALGORITHM_INDEX
        || fmt != 0
        || key_len != KEY_LEN
    {
        return bad_param();
    }
    let Some(kad) = parse_kads(&b[20 + key_len..]) else {
        return bad_param();
    };
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(key);
    c.state = Some(KeyState {
        key: k,
        encrypt: enc,
        decrypt: dec,
        kad,
        scope,
    });
    c.instance = c.instance.wrapping_add(1);
    Completion::good(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kad: &[u8]) -> KeyState {
        KeyState {
            key: [7; 32],
            encrypt: ENCRYPT_ENCRYPT,
            decrypt: DECRYPT_MIXED,
            kad: kad.to_vec(),
            scope: 2,
        }
    }

    #[test]
    fn seal_and_open() {
        let k = key(&[1, 2, 0, 3, b'a', b'b', b'c']);
        let (side, mut ct) = seal(&k, b"hello tape").unwrap();
        assert_eq!(ct.len(), 10 + TAG_LEN);
        assert!(!ct.windows(5).any(|w| w == b"hello"));
        let mut again = ct.clone();
        assert_eq!(open(Some(&k), &side, &mut ct).ok(), Some(10));
        assert_eq!(&ct, b"hello tape");
        let mut other = key(&[]);
        other.key = [8; 32];
        assert!(matches!(
            open(Some(&other), &side, &mut again.clone()),
            Err(OpenError::WrongKey)
        ));
        assert!(matches!(
            open(None, &side, &mut again),
            Err(OpenError::NoKey)
        ));
        // A sidecar whose KAD was changed does not authenticate.
        let mut bad = side.clone();
        *bad.last_mut().unwrap() ^= 1;
        let (_, mut ct) = seal(&k, b"x").unwrap();
        assert!(open(Some(&k), &bad, &mut ct).is_err());
    }

    #[test]
    fn sidecars_never_panic() {
        for n in 0..40 {
            let b = vec![0xffu8; n];
            assert!(parse_sidecar(&b).is_none());
        }
        let k = key(&[0, 0, 0, 1, 9]);
        let (side, _) = seal(&k, b"abc").unwrap();
        for n in 0..side.len() {
            assert!(parse_sidecar(&side[..n]).is_none(), "{n}");
            let mut d = vec![1u8; 3];
            assert!(open(Some(&k), &side[..n], &mut d).is_err());
        }
    }
}
