//! A copy of the tape catalog on every set: each copy's last tape carries, after its set manifest,
//! `/.rackvault/sets/<set>/catalog.sqlite.zst`, the catalog as it stood when that tape closed
//! (this set complete with this copy; copies still being written elsewhere are marked
//! interrupted in it). So the newest tape always holds a recent catalog: every set, cartridge,
//! location and history, offsite tapes included, which `catalog rebuild` could only learn by
//! reading every tape. It is written only when it fits before early warning; the tape's
//! self-description names it then (`catalog`), and not otherwise.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ltfs::volume::{FileMeta, PartPut, Volume};

use crate::backend::BoxedTransport;
use crate::catalog::TapeCatalog;
use crate::drive::Drive;

/// Where a set's tape keeps its catalog copy.
pub fn path(set: &str) -> String {
    format!("{}/catalog.sqlite.zst", super::layout::set_dir(set))
}

/// What the copy says of the set being closed.
pub struct Closing<'a> {
    pub set_id: i64,
    pub copy: u32,
    pub files: u64,
    pub bytes: u64,
    /// BLAKE3 of the set manifest on this tape.
    pub manifest_blake3: &'a str,
    /// This tape's place in the copy, and how long it has been written.
    pub seq: u32,
    pub seconds: f64,
}

/// Writes the catalog copy `snapshot` onto `vol` (just after the set manifest). `Some(path)`
/// when it is on the tape whole; `None` when the tape reached early warning first (it is left
/// unnamed).
pub fn put(
    vol: &mut Volume<&mut Drive<BoxedTransport>>,
    set: &str,
    snapshot: &Snapshot,
) -> Result<Option<String>> {
    if vol.is_full() {
        return Ok(None);
    }
    let file = std::fs::File::open(&snapshot.0)
        .with_context(|| format!("cannot read {}", snapshot.0.display()))?;
    let compressed = zstd::stream::read::Encoder::new(std::io::BufReader::new(file), 3)
        .context("starting zstd")?;
    let p = path(set);
    match vol.put_file_part(&p, compressed, &FileMeta::default())? {
        PartPut::Whole(_) => Ok(Some(p)),
        PartPut::Part(_) => {
            tracing::warn!(
                set,
                "the tape reached early warning before its catalog copy was whole; the copy is not named"
            );
            Ok(None)
        }
    }
}

/// The copy to be written, in state_dir's tmp/ (removed when dropped).
pub struct Snapshot(PathBuf);

impl Snapshot {
    /// A consistent copy of state_dir's catalog, with the set as this tape sees it, in `tmp`
    /// (the set's temporary directory: what a killed writer leaves there goes with it).
    pub fn take(state_dir: &Path, tmp: &Path, closing: &Closing) -> Result<Snapshot> {
        let p = tmp.join(format!(
            "catalog-copy.{}.{}.sqlite",
            std::process::id(),
            closing.copy
        ));
        let _ = std::fs::remove_file(&p);
        let s = Snapshot(p);
        common::sqlite::copy_consistent(&state_dir.join("tapes.sqlite"), &s.0)?;
        // As this tape sees the set: complete with this copy, this tape closed.
        let copy = TapeCatalog::open_file(&s.0)?;
        copy.close_copy_tape(
            closing.set_id,
            closing.copy,
            closing.seq,
            closing.seconds,
            None,
            None,
        )?;
        copy.complete_set(
            closing.set_id,
            closing.files,
            closing.bytes,
            closing.manifest_blake3,
            jiff::Timestamp::now(),
        )?;
        for c in copy.copies(closing.set_id)? {
            let state = if c.copy == closing.copy {
                "complete"
            } else if c.state == "complete" {
                continue;
            } else {
                "interrupted"
            };
            copy.set_copy_state(closing.set_id, c.copy, state)?;
        }
        Ok(s)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
