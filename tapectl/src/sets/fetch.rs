//! A set manifest the state directory lacks, read back from the set's tapes: after a state
//! directory was restored from a tape's catalog copy (`catalog_copy`), the catalog knows every set
//! but keeps none of their manifests. A restore or verify loads the set's tapes anyway; the
//! manifest comes from the copy's last tape (and the one before, when it was split across them)
//! and is kept where the catalog keeps its manifests.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::layout::{self, SetManifest, TapeDescription};
use super::mount::with_tape;
use super::write::{local_manifest, save_atomically};
use crate::catalog::{SetRow, TapeCatalog};
use crate::library::Library;

/// A manifest piece longer than this is refused (a million-file manifest is about 60 MB).
const MAX_PIECE: u64 = 1 << 30;

/// Makes sure the state directory has a manifest of `set` (of `copy`, or of any complete copy
/// whose last tapes are in the library), reading it from tape when it has none.
pub fn ensure_manifest(
    lib: &mut Library,
    cat: &TapeCatalog,
    set: &SetRow,
    copy: Option<u32>,
    drive: u16,
    state_dir: &Path,
) -> Result<()> {
    // The id names a directory of state_dir: a catalog brought back from a tape is checked too.
    if !layout::is_set_id(&set.uuid) {
        bail!("set {:?} in the catalog is not a UUID", set.uuid);
    }
    let copies = cat.copies(set.id)?;
    let wanted: Vec<u32> = match copy {
        Some(c) => vec![c],
        None => copies.iter().map(|c| c.copy).collect(),
    };
    if wanted
        .iter()
        .any(|&c| local_manifest(state_dir, &set.uuid, c).exists())
    {
        return Ok(());
    }
    let inv = lib.inventory()?;
    let mut tried = Vec::new();
    for c in copies
        .iter()
        .filter(|c| wanted.contains(&c.copy) && c.state == "complete")
    {
        let Some(last) = c.tapes.last() else { continue };
        if inv.find_barcode(&last.barcode).is_empty() {
            tried.push(format!("{} (not in the library)", last.barcode));
            continue;
        }
        let path = layout::manifest_path(&set.uuid);
        let description = layout::description_path(&set.uuid, last.seq);
        let (tail, desc) = with_tape(lib, drive, &last.barcode, |vol| {
            let d = read_limited(vol, &description, ltfs::volume::RESERVE_FILE_MAX as u64)?;
            let d = TapeDescription::parse(&d).with_context(|| description.clone())?;
            Ok((read_limited(vol, &path, MAX_PIECE)?, d))
        })?;
        let bytes = match desc
            .continued_from_previous
            .as_ref()
            .filter(|k| k.tape_path == path)
        {
            None => tail,
            Some(k) => {
                let Some(prev) = c.tapes.iter().find(|t| t.seq + 1 == last.seq) else {
                    bail!(
                        "set {} copy {}: the catalog has no tape before {}",
                        set.uuid,
                        c.copy,
                        last.barcode
                    );
                };
                let mut head = with_tape(lib, drive, &prev.barcode, |vol| {
                    read_limited(vol, &path, MAX_PIECE)
                })?;
                // A manifest is split over two tapes at most (one that did not begin on a tape
                // is written from the start of the next): the head is all of it before.
                if head.len() as u64 != k.offset {
                    bail!(
                        "set {} copy {}: {} says the manifest continues at byte {}, but {} holds {} bytes of it",
                        set.uuid,
                        c.copy,
                        last.barcode,
                        k.offset,
                        prev.barcode,
                        head.len()
                    );
                }
                head.extend_from_slice(&tail);
                head
            }
        };
        // Parsed before it is kept: a manifest that does not read is not one. Copy 1's must be
        // the one the catalog recorded.
        SetManifest::read_from(&bytes[..], &format!("{path} on {}", last.barcode))?;
        if let Some(want) = set
            .manifest_blake3
            .as_deref()
            .filter(|h| c.copy == 1 && !h.is_empty())
        {
            let got = blake3::hash(&bytes).to_hex();
            if got.as_str() != want {
                bail!(
                    "the set manifest of set {} on {} is not the one the catalog recorded (BLAKE3 {got}, expected {want})",
                    set.uuid,
                    last.barcode
                );
            }
        }
        save_atomically(&local_manifest(state_dir, &set.uuid, c.copy), &bytes)?;
        tracing::info!(set = %set.uuid, copy = c.copy, tape = %last.barcode, "set manifest read back from tape");
        return Ok(());
    }
    bail!(
        "the catalog has no manifest of set {} and none of its copies' last tapes is in the library{}",
        set.uuid,
        if tried.is_empty() {
            String::new()
        } else {
            format!(" ({})", tried.join(", "))
        }
    )
}

fn read_limited(vol: &mut super::mount::TapeVolume, path: &str, max: u64) -> Result<Vec<u8>> {
    let len = vol
        .stat(path)
        .with_context(|| format!("{path} is not on the tape"))?
        .length;
    if len > max {
        bail!("{path} is {len} bytes, more than it can be ({max})");
    }
    let mut out = Vec::new();
    vol.read_file(path, &mut out)
        .with_context(|| format!("reading {path}"))?;
    Ok(out)
}
