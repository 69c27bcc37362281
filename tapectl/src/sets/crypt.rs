//! Encrypted tapes (docs/encryption.md): the drive's key set before a pool's tape is written or an
//! encrypted tape is read, and cleared afterwards; what a tape's first block says about its key.
//!
//! The drive encrypts (AES-256-GCM) and stores the key's KAD, `RVK` + fingerprint, in clear with
//! every block, so a tape names its own key: a restore, a verify and a catalog rebuild find the key
//! by that fingerprint in the keyring ([`crate::keys::Keyring`]) without the catalog.

use anyhow::{Result, anyhow, bail};

use crate::backend::BoxedTransport;
use crate::drive::Drive;
use crate::drive::crypto::{NextBlock, key_descriptor};
use crate::keys::{Fingerprint, Keyring, TapeKey};

/// What the block at the drive's position (a tape's first block, right after a load) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapeCrypt {
    /// Written in clear.
    Plain,
    /// No block there (a blank tape, or a filemark).
    NoBlock,
    /// Encrypted with a rackvault key.
    Encrypted(Fingerprint),
    /// Encrypted with a key rackvault did not make (its KAD, hex), or an algorithm this drive lacks.
    Foreign(String),
    /// The drive does not say (no encryption support, or it cannot tell before reading).
    Unknown,
}

/// What the tape's first block is: Next Block Encryption Status at the beginning of partition 0,
/// where a load leaves the tape. A drive that cannot tell before it has read the block (status
/// "unable to determine") is asked again after one READ of it (which fails harmlessly on an
/// encrypted block without the key) and a LOCATE back.
pub fn probe(drive: &mut Drive<BoxedTransport>) -> TapeCrypt {
    match probe_here(drive) {
        // The drive has the status page but cannot tell yet.
        Some(TapeCrypt::Unknown) => {}
        Some(known) => return known,
        // No encryption status at all (a drive without encryption, tgt): nothing to read for.
        None => return TapeCrypt::Unknown,
    }
    let at = ltfs::Position {
        partition: 0,
        block: 0,
    };
    if drive.read_position().ok() != Some(at) {
        return TapeCrypt::Unknown;
    }
    let mut buf = vec![0u8; 1 << 20];
    let _ = drive.read_record(&mut buf);
    if drive.locate_to(at).is_err() {
        return TapeCrypt::Unknown;
    }
    probe_here(drive).unwrap_or(TapeCrypt::Unknown)
}

/// Next Block Encryption Status at the current position (None: the drive has none). Moves
/// nothing.
fn probe_here(drive: &mut Drive<BoxedTransport>) -> Option<TapeCrypt> {
    let s = match drive.next_block_encryption() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(
                device = drive.device_name(),
                "no next block encryption status: {e}"
            );
            return None;
        }
    };
    Some(match s.status {
        NextBlock::Plain => TapeCrypt::Plain,
        NextBlock::NotABlock => TapeCrypt::NoBlock,
        NextBlock::Decryptable | NextBlock::KeyNeeded | NextBlock::UnsupportedAlgorithm => {
            match key_descriptor(&s.kads).and_then(Fingerprint::from_kad) {
                Some(fp) if s.status != NextBlock::UnsupportedAlgorithm => TapeCrypt::Encrypted(fp),
                _ => TapeCrypt::Foreign(
                    key_descriptor(&s.kads)
                        .map(|k| k.iter().map(|b| format!("{b:02x}")).collect())
                        .unwrap_or_else(|| "none".into()),
                ),
            }
        }
        NextBlock::Unknown | NextBlock::Reserved(_) => TapeCrypt::Unknown,
    })
}

/// Sets the pool's key on the drive (writes are encrypted, reads decrypted) or, for a pool in plain
/// LTFS, clears any key a previous user left (a drive keeps it across processes), so its tapes stay
/// plain.
pub fn set_for_pool(
    drive: &mut Drive<BoxedTransport>,
    pool: &str,
    key: Option<&TapeKey>,
) -> Result<()> {
    match key {
        Some(k) => drive
            .set_encryption_key(k.bytes(), &k.fingerprint.kad())
            .map_err(|e| {
                anyhow!(
                    "cannot set pool {pool}'s key {} on {}: {e}",
                    k.fingerprint,
                    drive.device_name()
                )
            }),
        None => drive.clear_encryption().map_err(|e| {
            anyhow!(
                "cannot turn encryption off on {} for pool {pool}, whose tapes are plain LTFS: {e}",
                drive.device_name()
            )
        }),
    }
}

/// Clears the drive's key after a tape was written or read; a failure is logged (the next user
/// clears or sets it anyway).
pub fn clear_quietly(drive: &mut Drive<BoxedTransport>) {
    if let Err(e) = drive.clear_encryption() {
        tracing::warn!(
            device = drive.device_name(),
            "the drive's encryption key could not be cleared: {e}"
        );
    }
}

/// Before a tape is read: when its first block is encrypted, finds its key by fingerprint in
/// `keys` and sets it on the drive. Returns the fingerprint (None: plain, or the drive does not
/// say). Without the key: an error naming the barcode, the fingerprint and where to put the key.
pub fn unlock_for_read(
    drive: &mut Drive<BoxedTransport>,
    keys: &Keyring,
    barcode: &str,
) -> Result<Option<Fingerprint>> {
    match probe(drive) {
        TapeCrypt::Encrypted(fp) => {
            let Some(k) = keys.find(&fp) else {
                bail!("{}", keys.missing(barcode, &fp));
            };
            drive
                .set_encryption_key(k.bytes(), &fp.kad())
                .map_err(|e| anyhow!("cannot set key {fp} for tape {barcode}: {e}"))?;
            Ok(Some(fp))
        }
        TapeCrypt::Foreign(kad) => bail!(
            "tape {barcode} is encrypted, but not with a rackvault key (its key descriptor is {kad}): rackvault cannot read it"
        ),
        _ => {
            // A drive that cannot say, or a plain tape: whatever a previous user left is cleared.
            clear_quietly(drive);
            Ok(None)
        }
    }
}

/// An error from reading a tape that the drive refused to decrypt (DATA PROTECT 74/xx).
pub fn is_decrypt_refusal(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.to_string().contains("DATA PROTECT 74/"))
}

/// A reason a tape of a pool is passed over for writing because of its encryption, if any:
/// `found` is what its first block says, `known` the fingerprint the catalog has for it.
pub fn unfit_for_pool(
    pool: &str,
    key: Option<&TapeKey>,
    found: &TapeCrypt,
    known: Option<&str>,
) -> Option<String> {
    let want = key.map(|k| k.fingerprint);
    let has = match found {
        TapeCrypt::Encrypted(fp) => Some(*fp),
        TapeCrypt::Foreign(kad) => {
            return Some(format!(
                "it is encrypted with a key rackvault did not make (key descriptor {kad}); it is never overwritten"
            ));
        }
        TapeCrypt::Plain => None,
        TapeCrypt::NoBlock => return None,
        // The drive cannot tell: the catalog's word, or none (the volume's UUID, checked against
        // the catalog once mounted, decides for a tape the catalog knows).
        TapeCrypt::Unknown => match known.and_then(Fingerprint::parse) {
            Some(fp) => Some(fp),
            None => return None,
        },
    };
    match (want, has) {
        (Some(w), Some(h)) if w == h => None,
        (None, None) => None,
        (Some(w), None) => Some(format!(
            "it holds a volume in plain LTFS and pool {pool} encrypts with key {w}: a tape is encrypted whole or not at all (it is written again once its sets expire)"
        )),
        (None, Some(h)) => Some(format!(
            "it is encrypted with key {h} and pool {pool} is plain LTFS; it is never overwritten (give the pool that key, or restore with it: docs/encryption.md)"
        )),
        (Some(w), Some(h)) => Some(format!(
            "it is encrypted with key {h}, not pool {pool}'s key {w}; it is never overwritten here"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tapes_fit_a_pool_by_their_key() {
        let d = tempfile::tempdir().unwrap();
        let k = crate::keys::create_key_file(&d.path().join("k"), jiff::Timestamp::now()).unwrap();
        let other = Fingerprint([1; 9]);
        let fp = k.fingerprint;
        assert_eq!(
            unfit_for_pool("p", Some(&k), &TapeCrypt::Encrypted(fp), None),
            None
        );
        assert_eq!(
            unfit_for_pool("p", Some(&k), &TapeCrypt::NoBlock, None),
            None
        );
        assert_eq!(unfit_for_pool("p", None, &TapeCrypt::Plain, None), None);
        let r = unfit_for_pool("p", Some(&k), &TapeCrypt::Encrypted(other), None).unwrap();
        assert!(
            r.contains("01:01:01") && r.contains("never overwritten"),
            "{r}"
        );
        let r = unfit_for_pool("p", None, &TapeCrypt::Encrypted(other), None).unwrap();
        assert!(r.contains("pool p is plain LTFS"), "{r}");
        let r = unfit_for_pool("p", Some(&k), &TapeCrypt::Plain, None).unwrap();
        assert!(r.contains("plain LTFS and pool p encrypts"), "{r}");
        let s = other.to_string();
        assert!(unfit_for_pool("p", None, &TapeCrypt::Unknown, Some(&s)).is_some());
        assert!(unfit_for_pool("p", None, &TapeCrypt::Foreign("00".into()), None).is_some());
    }
}
