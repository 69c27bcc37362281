//! A tape of a set, loaded and mounted for reading (restore, verify, rebuild).

use anyhow::{Context, Result};
use ltfs::volume::Volume;

use crate::backend::BoxedTransport;
use crate::drive::Drive;
use crate::keys::Fingerprint;
use crate::library::{Library, Target};

pub type TapeVolume<'d> = Volume<&'d mut Drive<BoxedTransport>>;

/// Loads `barcode` into `drive`, mounts its LTFS volume and runs `f` on it. Nothing is written:
/// a volume only read is left as it was. An encrypted tape is read with its key, found by the
/// fingerprint the tape names in `lib.keys`; the drive's key is cleared afterwards.
pub fn with_tape<R>(
    lib: &mut Library,
    drive: u16,
    barcode: &str,
    f: impl FnOnce(&mut TapeVolume) -> Result<R>,
) -> Result<R> {
    with_tape_keyed(lib, drive, barcode, f).map(|(r, _)| r)
}

/// [`with_tape`], also giving the fingerprint of the key the tape is encrypted with (None: plain).
pub fn with_tape_keyed<R>(
    lib: &mut Library,
    drive: u16,
    barcode: &str,
    f: impl FnOnce(&mut TapeVolume) -> Result<R>,
) -> Result<(R, Option<Fingerprint>)> {
    lib.load(&Target::Barcode(barcode.to_string()), drive)
        .with_context(|| format!("loading {barcode} into drive {drive}"))?;
    let (mut d, _lock) = lib.open_drive(drive)?;
    let fp = super::crypt::unlock_for_read(&mut d, &lib.keys, barcode)?;
    let r = (|| {
        let mut vol = Volume::mount(&mut d).map_err(|e| {
            let e = anyhow::Error::new(e).context(format!("mounting the LTFS volume on {barcode}"));
            if fp.is_none() && super::crypt::is_decrypt_refusal(&e) {
                e.context(format!(
                    "tape {barcode} is encrypted and the drive does not say with which key; set its key with rackvault's pool or keys_dir (docs/encryption.md)"
                ))
            } else {
                e
            }
        })?;
        f(&mut vol)
    })();
    if fp.is_some() {
        super::crypt::clear_quietly(&mut d);
    }
    r.map(|r| (r, fp))
}
