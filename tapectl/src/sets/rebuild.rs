//! `catalog rebuild`: a new tape catalog from the tapes alone (a lost state_dir). Every cartridge in
//! the library is loaded and its LTFS index read; each set directory's self-descriptions say which
//! set, copy and place the tape has, and the set manifest (on each copy's last tape, its pieces
//! joined in tape order when it was split) gives the files and where each part is. A set whose
//! manifest is on tape is complete; one with tapes but no manifest was interrupted.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use common::manifest::Kind;
use ltfs::volume::EntryKind;
use serde::Serialize;

use super::allocate::{Skipped, reconcile};
use super::layout::{self, SetManifest, TapeDescription};
use super::mount::with_tape_keyed;
use crate::catalog::{MediaChange, MediaState, NewSet, PartRow, SetState, TapeCatalog};
use crate::changer::is_cleaning_cartridge;
use crate::library::Library;

/// The largest set manifest piece read back (a million-file manifest is about 60 MB), and the
/// largest self-description: a hostile length is refused, not read into memory.
const MAX_MANIFEST: u64 = 1 << 30;
const MAX_DESCRIPTION: u64 = 1 << 20;

#[derive(Debug, Default, Serialize)]
pub struct RebuildReport {
    /// Cartridges read.
    pub tapes: Vec<String>,
    /// Sets found complete, and interrupted.
    pub complete: Vec<String>,
    pub interrupted: Vec<String>,
    /// Cartridges that hold no rackvault set (blank, foreign), or could not be read.
    pub skipped: Vec<Skipped>,
    /// Sets found on tape but not entered, and why (a manifest that does not parse, a base set
    /// no tape holds).
    pub left_out: Vec<LeftOut>,
}

#[derive(Debug, Serialize)]
pub struct LeftOut {
    pub set: String,
    pub reason: String,
}

/// Why a set is left out (its tapes say something that cannot be used); catalog errors are
/// errors of the rebuild.
struct Unreadable(String);

/// One description read from a tape: its set, what it says, and the manifest piece beside it.
type Described = (String, TapeDescription, Option<Vec<u8>>);

/// What one set's tapes said.
#[derive(Default)]
struct Found {
    /// (copy, seq) → (barcode, description).
    tapes: BTreeMap<(u32, u32), (String, TapeDescription)>,
    /// (copy, seq) → that tape's piece of the copy's set manifest.
    manifest_pieces: BTreeMap<(u32, u32), Vec<u8>>,
}

pub fn rebuild(
    lib: &mut Library,
    state_dir: &Path,
    drive: u16,
    actor: &str,
) -> Result<RebuildReport> {
    let db = state_dir.join("tapes.sqlite");
    if db.exists() {
        bail!(
            "{} exists; rebuild makes a new catalog from the tapes: move the old one away first",
            db.display()
        );
    }
    let cat = TapeCatalog::open(state_dir)?;
    let inv = lib.inventory()?;
    reconcile(&cat, &inv, actor)?;
    let barcodes: Vec<String> = inv
        .storage
        .iter()
        .chain(inv.drives.iter())
        .filter(|e| e.full)
        .filter_map(|e| e.volume_tag.clone())
        .filter(|b| !is_cleaning_cartridge(b))
        .collect();
    let mut report = RebuildReport::default();
    let mut sets: HashMap<String, Found> = HashMap::new();
    let now = jiff::Timestamp::now();
    let change = |why| MediaChange {
        why,
        actor,
        at: now,
    };
    for barcode in barcodes {
        let read = with_tape_keyed(lib, drive, &barcode, |vol| {
            let uuid = vol.index().volume_uuid.clone();
            let mut descriptions = Vec::new();
            let root = "/.rackvault/sets";
            let dirs = match vol.list(root) {
                Ok(d) => d,
                Err(_) => return Ok((uuid, descriptions)),
            };
            for d in dirs.iter().filter(|d| d.kind == EntryKind::Directory) {
                let dir = format!("{root}/{}", d.name);
                for f in vol.list(&dir)? {
                    let path = format!("{dir}/{}", f.name);
                    // The catalog copy is for a person restoring a state directory, not for this.
                    if f.kind != EntryKind::File || path == super::catalog_copy::path(&d.name) {
                        continue;
                    }
                    let limit = if f.name == "manifest.zst" {
                        MAX_MANIFEST
                    } else {
                        MAX_DESCRIPTION
                    };
                    if f.length > limit {
                        bail!(
                            "{path} is {} bytes, more than a set's own file can be ({limit})",
                            f.length
                        );
                    }
                    let mut bytes = Vec::new();
                    vol.read_file(&path, &mut bytes)
                        .with_context(|| format!("reading {path}"))?;
                    descriptions.push((d.name.clone(), f.name.clone(), bytes));
                }
            }
            Ok((uuid, descriptions))
        });
        let ((uuid, files), fingerprint) = match read {
            Ok(r) => r,
            Err(e) => {
                report.skipped.push(Skipped {
                    barcode: barcode.clone(),
                    reason: format!("{e:#}"),
                });
                continue;
            }
        };
        report.tapes.push(barcode.clone());
        // This tape's descriptions, all checked before any is taken: a tape that lies about itself
        // is left out whole, with the reason.
        let described: Result<Vec<Described>> = files
            .iter()
            .filter(|(_, name, _)| name.starts_with("tape-"))
            .map(|(set, name, bytes)| {
                let d = TapeDescription::parse(bytes)
                    .with_context(|| format!("/.rackvault/sets/{set}/{name}"))?;
                if d.set != *set || d.barcode != barcode {
                    bail!(
                        "/.rackvault/sets/{set}/{name} describes set {} on {}; the tape is not what it says",
                        d.set,
                        d.barcode
                    );
                }
                let manifest = files
                    .iter()
                    .find(|(s, n, _)| s == set && n == "manifest.zst")
                    .map(|(_, _, b)| b.clone());
                Ok((set.clone(), d, manifest))
            })
            .collect();
        let described = match described {
            Ok(d) => d,
            Err(e) => {
                report.skipped.push(Skipped {
                    barcode: barcode.clone(),
                    reason: format!("{e:#}"),
                });
                continue;
            }
        };
        let mut pool = None;
        let mut full = false;
        for (set, d, manifest) in described {
            pool.get_or_insert_with(|| d.pool.clone());
            full |= !d.last;
            let f = sets.entry(set).or_default();
            let key = (d.copy, d.seq);
            if let Some(bytes) = manifest {
                f.manifest_pieces.insert(key, bytes);
            }
            f.tapes.insert(key, (barcode.clone(), d));
        }
        match pool {
            Some(p) => {
                cat.set_volume(&barcode, &p, &uuid, &change("read back by catalog rebuild"))?;
                cat.set_key_fingerprint(&barcode, fingerprint.map(|f| f.to_string()).as_deref())?;
                let state = if full {
                    MediaState::Full
                } else {
                    MediaState::Writable
                };
                cat.set_state(&barcode, state, &change("read back by catalog rebuild"))?;
            }
            None => report.skipped.push(Skipped {
                barcode: barcode.clone(),
                reason: format!("LTFS volume {uuid} holds no rackvault set"),
            }),
        }
    }
    // Bases before the sets built on them; a set whose base is missing or unreadable is left out.
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut pending: Vec<String> = sets.keys().cloned().collect();
    pending.sort();
    while !pending.is_empty() {
        let before = pending.len();
        let mut later = Vec::new();
        for uuid in pending {
            let f = &sets[&uuid];
            let first = &f.tapes.values().next().expect("a set has a tape").1;
            let why = match &first.base {
                Some(b) if ids.contains_key(b) => None,
                Some(b) if sets.contains_key(b) && !report.left_out.iter().any(|l| &l.set == b) => {
                    later.push(uuid);
                    continue;
                }
                Some(b) => Some(format!(
                    "it is an incremental set on set {b}, which no tape in the library holds readably"
                )),
                None => None,
            };
            if let Some(reason) = why {
                report.left_out.push(LeftOut { set: uuid, reason });
                continue;
            }
            match insert_set(&cat, state_dir, &uuid, f, &ids, &mut report)? {
                Ok(id) => {
                    ids.insert(uuid, id);
                }
                Err(Unreadable(reason)) => report.left_out.push(LeftOut { set: uuid, reason }),
            }
        }
        if later.len() == before {
            for set in later {
                report.left_out.push(LeftOut {
                    set,
                    reason: "its chain of base sets goes round in a circle".into(),
                });
            }
            break;
        }
        pending = later;
    }
    Ok(report)
}

fn insert_set(
    cat: &TapeCatalog,
    state_dir: &Path,
    uuid: &str,
    f: &Found,
    ids: &HashMap<String, i64>,
    report: &mut RebuildReport,
) -> Result<Result<i64, Unreadable>> {
    let first = &f.tapes.values().next().expect("a set has a tape").1;
    let copies = f.tapes.keys().map(|(c, _)| *c).max().unwrap_or(1);
    // Each copy's manifest: its pieces in tape order, complete only when it parses.
    let mut manifests: BTreeMap<u32, (Vec<u8>, SetManifest)> = BTreeMap::new();
    for copy in 1..=copies {
        let bytes: Vec<u8> = f
            .manifest_pieces
            .range((copy, 0)..=(copy, u32::MAX))
            .flat_map(|(_, b)| b.iter().copied())
            .collect();
        if bytes.is_empty() {
            continue;
        }
        match SetManifest::read_from(
            &bytes[..],
            &format!("{} of copy {copy}", layout::manifest_path(uuid)),
        ) {
            Ok(m) => manifests.insert(copy, (bytes, m)),
            Err(e) => return Ok(Err(Unreadable(format!("{e:#}")))),
        };
    }
    // Tapes written before descriptions carried the start time: the manifest's, else the close.
    let started = [
        Some(first.started.as_str()),
        manifests
            .values()
            .next()
            .map(|(_, m)| m.header.created.as_str()),
        Some(first.closed.as_str()),
    ]
    .into_iter()
    .flatten()
    .find_map(|t| t.parse().ok())
    .unwrap_or_else(jiff::Timestamp::now);
    let no_entries = Vec::new();
    let (entries, deleted) = match manifests.values().next() {
        Some((_, m)) => (&m.entries, &m.deleted[..]),
        None => (&no_entries, &[][..]),
    };
    let id = cat.begin_set(
        &NewSet {
            uuid,
            job: &first.job,
            snapshot: &first.snapshot,
            kind: first.kind,
            base: first.base.as_ref().and_then(|b| ids.get(b).copied()),
            pool: &first.pool,
            copies,
            started_at: started,
        },
        entries.iter().map(|e| {
            Ok(layout::SetEntry {
                parts: Vec::new(),
                ..e.clone()
            })
        }),
        deleted,
    )?;
    for ((copy, seq), (barcode, d)) in &f.tapes {
        cat.add_copy_tape(id, *copy, *seq, barcode, &d.volume_uuid)?;
        let parts: Vec<_> = manifests
            .get(copy)
            .map(|(_, m)| {
                m.entries
                    .iter()
                    .flat_map(|e| {
                        e.parts
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| p.tape == *seq)
                            .map(|(k, p)| {
                                (
                                    e.entry.path.clone(),
                                    PartRow {
                                        part: k as u32,
                                        seq: *seq,
                                        partition: p.partition,
                                        start_block: p.block,
                                        file_offset: p.offset,
                                        length: p.length,
                                    },
                                )
                            })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let bytes = parts.iter().map(|(_, p)| p.length).sum();
        cat.record_parts(id, *copy, *seq, &parts, bytes)?;
        cat.close_copy_tape(id, *copy, *seq, 0.0, None, None)?;
    }
    let complete = !manifests.is_empty() && (1..=copies).all(|c| manifests.contains_key(&c));
    for copy in 1..=copies {
        let state = if manifests.contains_key(&copy) {
            "complete"
        } else {
            "interrupted"
        };
        cat.set_copy_state(id, copy, state)?;
    }
    for (copy, (bytes, _)) in &manifests {
        super::write::save_atomically(
            &super::write::local_manifest(state_dir, uuid, *copy),
            bytes,
        )?;
    }
    if complete {
        let (bytes, m) = &manifests[&1];
        let to_write = || {
            m.entries
                .iter()
                .filter(|e| e.stored == layout::Stored::Here && e.entry.kind == Kind::File)
        };
        let files = to_write().count() as u64;
        let stored = to_write().map(|e| e.entry.size).sum();
        let closed = f
            .tapes
            .values()
            .filter(|(_, d)| d.last)
            .filter_map(|(_, d)| d.closed.parse().ok())
            .max()
            .unwrap_or_else(jiff::Timestamp::now);
        let _ = m;
        cat.complete_set(id, files, stored, &blake3::hash(bytes).to_hex(), closed)?;
        report.complete.push(uuid.to_string());
    } else {
        cat.set_set_state(id, SetState::Interrupted)?;
        report.interrupted.push(uuid.to_string());
    }
    Ok(Ok(id))
}
