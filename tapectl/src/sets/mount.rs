//! A tape of a set, loaded and mounted for reading (restore, verify, rebuild).

use anyhow::{Context, Result};
use ltfs::volume::Volume;

use crate::backend::BoxedTransport;
use crate::drive::Drive;
use crate::library::{Library, Target};

pub type TapeVolume<'d> = Volume<&'d mut Drive<BoxedTransport>>;

/// Loads `barcode` into `drive`, mounts its LTFS volume and runs `f` on it. Nothing is written:
/// a volume only read is left as it was.
pub fn with_tape<R>(
    lib: &mut Library,
    drive: u16,
    barcode: &str,
    f: impl FnOnce(&mut TapeVolume) -> Result<R>,
) -> Result<R> {
    lib.load(&Target::Barcode(barcode.to_string()), drive)
        .with_context(|| format!("loading {barcode} into drive {drive}"))?;
    let (mut d, _lock) = lib.open_drive(drive)?;
    let mut vol =
        Volume::mount(&mut d).with_context(|| format!("mounting the LTFS volume on {barcode}"))?;
    f(&mut vol)
}
