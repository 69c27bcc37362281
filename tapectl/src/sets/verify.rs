//! Reading a set's copy back: every file the set stores, piece by piece in tape order, against the
//! BLAKE3 its snapshot's manifest has; and the set manifest on tape against the catalog's copy.
//! Nothing is written to the tapes; the result is recorded in the catalog.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Result, bail};
use common::manifest::Kind;
use serde::Serialize;

use super::layout::{self, Stored};
use super::mount::with_tape;
use super::restore::CountedWrite;
use super::write::{Progress, load_local_manifest};
use crate::catalog::{SetRow, TapeCatalog};
use crate::library::Library;

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub set: String,
    pub copy: u32,
    pub files: u64,
    pub bytes: u64,
    pub tapes: Vec<String>,
    /// What does not match or cannot be read, one line each.
    pub problems: Vec<String>,
}

/// A file being hashed across its pieces.
struct Hashing {
    hasher: blake3::Hasher,
    bytes: u64,
}

struct HashWriter<'a>(&'a mut blake3::Hasher);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn verify(
    lib: &mut Library,
    cat: &TapeCatalog,
    set: &SetRow,
    copy: Option<u32>,
    drive: u16,
    state_dir: &std::path::Path,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    super::fetch::ensure_manifest(lib, cat, set, copy, drive, state_dir)?;
    let (copy, m) = load_local_manifest(state_dir, set, copy)?;
    let local_path = super::write::local_manifest(state_dir, &set.uuid, copy);
    let local = std::fs::read(&local_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", local_path.display()))?;
    let copies = cat.copies(set.id)?;
    let Some(tapes) = copies.iter().find(|c| c.copy == copy).map(|c| &c.tapes) else {
        bail!("set {} has no copy {copy}", set.uuid);
    };
    // Pieces per tape, in block order.
    let mut per_tape: HashMap<u32, Vec<(u64, usize, u64)>> = HashMap::new();
    for (i, e) in m.entries.iter().enumerate() {
        if e.stored != Stored::Here || e.entry.kind != Kind::File {
            continue;
        }
        for p in &e.parts {
            per_tape
                .entry(p.tape)
                .or_default()
                .push((p.block, i, p.length));
        }
    }
    let mut report = VerifyReport {
        set: set.uuid.clone(),
        copy,
        files: 0,
        bytes: 0,
        tapes: Vec::new(),
        problems: Vec::new(),
    };
    let mut hashing: HashMap<usize, Hashing> = HashMap::new();
    let mut manifest_on_tape: Vec<u8> = Vec::new();
    let manifest_path = layout::manifest_path(&set.uuid);
    progress.start(
        m.entries
            .iter()
            .filter(|e| e.stored == Stored::Here && e.entry.kind == Kind::File)
            .count() as u64,
        per_tape.values().flatten().map(|p| p.2).sum(),
        1,
    );
    for (k, t) in tapes.iter().enumerate() {
        progress.note(&format!("tape {} of {}: {}", k + 1, tapes.len(), t.barcode));
        let mut pieces = per_tape.remove(&t.seq).unwrap_or_default();
        pieces.sort();
        report.tapes.push(t.barcode.clone());
        let read = with_tape(lib, drive, &t.barcode, |vol| {
            if vol.index().volume_uuid != t.volume_uuid {
                bail!(
                    "{} holds LTFS volume {}, not {} that the catalog records for it (it was reformatted?)",
                    t.barcode,
                    vol.index().volume_uuid,
                    t.volume_uuid
                );
            }
            for (_, i, length) in &pieces {
                let e = &m.entries[*i];
                let path = e.tape_path.as_deref().unwrap_or_default();
                let h = hashing.entry(*i).or_insert_with(|| Hashing {
                    hasher: blake3::Hasher::new(),
                    bytes: 0,
                });
                let mut counted = CountedWrite {
                    inner: HashWriter(&mut h.hasher),
                    progress,
                };
                match vol.read_file(path, &mut counted) {
                    Ok(n) if n == *length => h.bytes += n,
                    Ok(n) => report.problems.push(format!(
                        "{}: {path} on {} has {n} bytes; the set manifest says {length}",
                        e.entry.path, t.barcode
                    )),
                    Err(err) => report.problems.push(format!(
                        "{}: cannot read {path} on {}: {err}",
                        e.entry.path, t.barcode
                    )),
                }
                if h.bytes == e.entry.size {
                    progress.file_done(1);
                    let h = hashing.remove(i).expect("present");
                    report.files += 1;
                    report.bytes += h.bytes;
                    if Some(*h.hasher.finalize().as_bytes()) != e.entry.hash {
                        report.problems.push(format!(
                            "{}: on tape it does not match the manifest's BLAKE3",
                            e.entry.path
                        ));
                    }
                }
            }
            if vol.stat(&manifest_path).is_ok() {
                vol.read_file(&manifest_path, &mut manifest_on_tape)?;
            }
            Ok(())
        });
        if let Err(e) = read {
            report.problems.push(format!("{}: {e:#}", t.barcode));
        }
    }
    for (i, h) in hashing {
        report.problems.push(format!(
            "{}: only {} of its {} bytes were read",
            m.entries[i].entry.path, h.bytes, m.entries[i].entry.size
        ));
    }
    // The manifest on tape is the catalog's copy, byte for byte.
    if manifest_on_tape.is_empty() {
        report.problems.push(format!(
            "no tape of copy {copy} holds the set manifest {manifest_path}"
        ));
    } else if manifest_on_tape != local {
        let why =
            match layout::SetManifest::read_from(&manifest_on_tape[..], "the set manifest on tape")
            {
                Ok(_) => "the set manifest on tape differs from the catalog's copy".to_string(),
                Err(e) => format!("{e:#}"),
            };
        report.problems.push(why);
    }
    cat.record_verify(
        set.id,
        copy,
        report.problems.len() as u64,
        jiff::Timestamp::now(),
    )?;
    Ok(report)
}
