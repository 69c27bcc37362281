//! Restoring a snapshot (or paths of it) from tape sets: the catalog names the set, the chain of
//! sets it builds on and, for each file, the set that holds its content and the tapes and blocks of
//! its parts. Each tape is loaded once and its parts read in block order (LOCATE, then the part's
//! records); a file split across tapes is filled in piece by piece. Then, as a restore from a
//! snapshot does: every file is checked against the manifest's BLAKE3, metadata applied, symlinks
//! made last, directories' metadata after their contents. Nothing is written outside the target
//! (every path beneath it, see `Beneath`) and nothing existing is replaced without `overwrite`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::beneath::Beneath;
use common::fsmeta;
use common::manifest::{Entry, Header, Kind, Manifest};
use common::relpath::RelPath;
use common::restore::{
    RestoreReport, conflicts, finish_dirs, make_dir, make_symlinks, remove_existing, select,
    warn_xattrs,
};
use serde::Serialize;

use super::layout::{SetEntry, SetManifest, Stored};
use super::write::{Progress, load_local_manifest};
use crate::catalog::{SetRow, TapeCatalog};
use crate::library::Library;

pub struct RestoreRequest<'a> {
    pub job: &'a str,
    /// A snapshot name, a unique prefix of one, or `latest` (of those on tape).
    pub snapshot: &'a str,
    pub paths: &'a [RelPath],
    pub to: &'a Path,
    pub overwrite: bool,
    /// Which copy to read (default: the first whose manifest the catalog has).
    pub copy: Option<u32>,
    pub drive: u16,
    pub state_dir: &'a Path,
    /// How long to wait for tapes that are not in the library (none: fail at once).
    pub wait_tapes: Option<Duration>,
}

#[derive(Debug, Serialize)]
pub struct TapeRestoreReport {
    pub set: String,
    pub job: String,
    pub snapshot: String,
    /// Barcodes read, in the order they were loaded.
    pub tapes: Vec<String>,
    #[serde(flatten)]
    pub restored: RestoreReport,
}

/// One piece to read: `length` bytes of the file at `tape_path`, going to `dest` at `offset`.
#[derive(Debug, Clone)]
struct Read {
    block: u64,
    tape_path: String,
    dest: RelPath,
    offset: u64,
    length: u64,
    /// The file's last piece: the file is whole once it is read.
    last: bool,
}

/// A set of the chain with its manifest (one copy's), entries by path.
struct Loaded {
    set: SetRow,
    manifest: SetManifest,
    by_path: HashMap<RelPath, usize>,
}

impl Loaded {
    fn get(&self, p: &RelPath) -> Option<&SetEntry> {
        self.by_path.get(p).map(|&i| &self.manifest.entries[i])
    }
}

fn load(state_dir: &Path, set: SetRow, copy: Option<u32>) -> Result<Loaded> {
    let (_, manifest) = load_local_manifest(state_dir, &set, copy)?;
    let by_path = manifest
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.entry.path.clone(), i))
        .collect();
    Ok(Loaded {
        set,
        manifest,
        by_path,
    })
}

/// The complete set holding `job`'s snapshot `wanted` (a name, a unique prefix, or `latest`).
pub fn find_set(cat: &TapeCatalog, job: &str, wanted: &str) -> Result<SetRow> {
    let sets: Vec<SetRow> = cat
        .sets(Some(job), None)?
        .into_iter()
        .filter(|s| s.state == crate::catalog::SetState::Complete)
        .collect();
    if sets.is_empty() {
        bail!("no complete set of job {job} is in the tape catalog (see `tapectl set list`)");
    }
    let mut names: Vec<String> = sets.iter().map(|s| s.snapshot.clone()).collect();
    names.sort();
    names.dedup();
    let name = if wanted == "latest" {
        names.last().cloned()
    } else if names.iter().any(|n| n == wanted) {
        Some(wanted.to_string())
    } else if common::snapname::parse(wanted).is_some() {
        // A whole snapshot name means that one, not `…-2` beside it.
        None
    } else {
        let m: Vec<&String> = names.iter().filter(|n| n.starts_with(wanted)).collect();
        match m.len() {
            1 => Some(m[0].clone()),
            0 => None,
            _ => bail!(
                "{wanted:?} matches {} snapshots of job {job} on tape; give more of the name",
                m.len()
            ),
        }
    };
    let Some(name) = name else {
        bail!(
            "no set on tape holds snapshot {wanted} of job {job} (on tape: {})",
            names.join(", ")
        );
    };
    Ok(sets
        .into_iter()
        .rev()
        .find(|s| s.snapshot == name)
        .expect("a set has that snapshot"))
}

/// Every encrypted tape's key (by the fingerprint the catalog has for it) is in the keyring,
/// checked before anything is written: a restore without a key fails at once, naming the tape.
/// (A tape the catalog does not know as encrypted is checked again when it is loaded.)
fn keys_at_hand(lib: &Library, cat: &TapeCatalog, tapes: &[String]) -> Result<()> {
    for barcode in tapes {
        let Some(fp) = cat
            .media(barcode)?
            .and_then(|m| m.key_fingerprint)
            .and_then(|f| crate::keys::Fingerprint::parse(&f))
        else {
            continue;
        };
        if lib.keys.find(&fp).is_none() {
            bail!("{}; nothing was written", lib.keys.missing(barcode, &fp));
        }
    }
    Ok(())
}

pub fn restore(
    lib: &mut Library,
    cat: &TapeCatalog,
    req: &RestoreRequest,
    progress: &dyn Progress,
) -> Result<TapeRestoreReport> {
    let set = find_set(cat, req.job, req.snapshot)?;
    // Without --copy, each set of the chain is read from a copy whose tapes are all in the library
    // (the onsite one while the other is in the vault), else from the first copy.
    let inv = lib.inventory()?;
    let mut chain: Vec<Loaded> = Vec::new();
    for s in cat.chain(&set)? {
        let copy = match req.copy {
            Some(c) => Some(c),
            None => cat
                .copies(s.id)?
                .into_iter()
                .filter(|c| c.state == "complete")
                .find(|c| {
                    c.tapes
                        .iter()
                        .all(|t| !inv.find_barcode(&t.barcode).is_empty())
                })
                .map(|c| c.copy),
        };
        // A catalog restored from a tape's copy has no manifests: read back from the tapes.
        super::fetch::ensure_manifest(lib, cat, &s, copy, req.drive, req.state_dir)?;
        chain.push(load(req.state_dir, s, copy)?);
    }
    let top = &chain[0];
    let manifest = Manifest::new(
        Header::new(&set.job, &set.snapshot, "", ""),
        top.manifest
            .entries
            .iter()
            .map(|e| e.entry.clone())
            .collect(),
    );
    let chosen = select(&manifest, req.paths)?;
    let chosen_paths: HashSet<&RelPath> = chosen.iter().map(|e| &e.path).collect();

    // Which set holds each chosen file's content, and where its parts are.
    let mut reads: BTreeMap<String, Vec<Read>> = BTreeMap::new();
    let mut tape_order: Vec<String> = Vec::new();
    let mut linked: Vec<&Entry> = Vec::new();
    for e in chosen.iter().filter(|e| e.kind == Kind::File) {
        if e.link.as_ref().is_some_and(|l| chosen_paths.contains(l)) {
            linked.push(e);
            continue;
        }
        let (holder, se) = content_of(&chain, 0, &e.path, 0)
            .with_context(|| format!("{}: no set of the chain holds its content", e.path))?;
        for part in &se.parts {
            let tape = holder
                .manifest
                .header
                .tapes
                .iter()
                .find(|t| t.seq == part.tape)
                .with_context(|| {
                    format!(
                        "{}: the manifest of set {} names tape {} it does not list",
                        e.path, holder.set.uuid, part.tape
                    )
                })?;
            if !reads.contains_key(&tape.barcode) {
                tape_order.push(tape.barcode.clone());
            }
            reads.entry(tape.barcode.clone()).or_default().push(Read {
                block: part.block,
                tape_path: se.tape_path.clone().unwrap_or_default(),
                dest: e.path.clone(),
                offset: part.offset,
                length: part.length,
                last: part.offset + part.length == e.size,
            });
        }
    }
    missing_tapes(lib, cat, &tape_order, req.wait_tapes)?;
    keys_at_hand(lib, cat, &tape_order)?;

    std::fs::create_dir_all(req.to)
        .with_context(|| format!("cannot create target {}", req.to.display()))?;
    if !std::fs::metadata(req.to)?.is_dir() {
        bail!("target {} is not a directory", req.to.display());
    }
    let out = Beneath::open(req.to)
        .with_context(|| format!("cannot open target {}", req.to.display()))?;
    let problems = conflicts(&out, &chosen, req.overwrite);
    if !problems.is_empty() {
        bail!(
            "restore would replace {} existing item(s) in {}; nothing was written. Use --overwrite to replace files, or restore elsewhere:\n  {}",
            problems.len(),
            req.to.display(),
            problems
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    let shown = |p: &RelPath| p.under(req.to).display().to_string();
    let mut report = RestoreReport::default();
    // The tree, then every file created empty and private: pieces are written in tape order.
    for e in chosen
        .iter()
        .filter(|e| e.kind == Kind::Dir && !e.path.is_root())
    {
        make_dir(&out, e, &shown)?;
        report.dirs += 1;
    }
    for e in chosen
        .iter()
        .filter(|e| e.kind == Kind::File && !linked.contains(e))
    {
        remove_existing(&out, &e.path, req.overwrite, &shown)?;
        out.create_file(&e.path, 0o600)
            .with_context(|| format!("cannot create {}", shown(&e.path)))?;
    }
    let total: u64 = reads.values().flatten().map(|r| r.length).sum();
    // Files with content to read (empty files and links have none).
    let with_content = reads.values().flatten().filter(|r| r.last).count() as u64;
    progress.start(with_content, total, 1);
    for (k, barcode) in tape_order.iter().enumerate() {
        let mut list = reads.remove(barcode).unwrap_or_default();
        list.sort_by_key(|r| r.block);
        progress.note(&format!(
            "tape {} of {}: {barcode}",
            k + 1,
            tape_order.len()
        ));
        read_tape(lib, req.drive, barcode, &list, &out, &shown, progress)?;
    }
    // Check and finish every file; then hard links, symlinks, and directories' metadata.
    for e in chosen
        .iter()
        .filter(|e| e.kind == Kind::File && !linked.contains(e))
    {
        let f = out
            .open_read(&e.path)
            .with_context(|| format!("cannot reopen {}", shown(&e.path)))?;
        let mut h = blake3::Hasher::new();
        let size = std::io::copy(&mut &f, &mut h)
            .with_context(|| format!("cannot read back {}", shown(&e.path)))?;
        if Some(*h.finalize().as_bytes()) != e.hash || size != e.size {
            report.mismatches.push(format!(
                "{}: what was read from tape does not match the manifest's BLAKE3",
                e.path
            ));
        }
        let failed = fsmeta::apply_fd(&f, e, fsmeta::Target::Existing)
            .with_context(|| format!("cannot set metadata on {}", shown(&e.path)))?;
        warn_xattrs(&mut report, e, failed);
        report.files += 1;
        report.bytes += size;
    }
    for e in &linked {
        remove_existing(&out, &e.path, req.overwrite, &shown)?;
        out.hard_link(e.link.as_ref().expect("a link"), &e.path)
            .with_context(|| format!("cannot link {}", shown(&e.path)))?;
        report.files += 1;
    }
    make_symlinks(&out, &chosen, req.overwrite, &shown, &mut report)?;
    finish_dirs(&out, &chosen, &shown, &mut report)?;
    Ok(TapeRestoreReport {
        set: set.uuid.clone(),
        job: set.job.clone(),
        snapshot: set.snapshot.clone(),
        tapes: tape_order,
        restored: report,
    })
}

/// The set of the chain (from `at`) and its entry that hold the content of `path`.
fn content_of<'c>(
    chain: &'c [Loaded],
    at: usize,
    path: &RelPath,
    depth: usize,
) -> Option<(&'c Loaded, &'c SetEntry)> {
    let l = chain.get(at)?;
    let e = l.get(path)?;
    if depth > chain.len() + 2 {
        return None;
    }
    match e.stored {
        Stored::Here => Some((l, e)),
        Stored::Base => content_of(chain, at + 1, path, depth + 1),
        Stored::Renamed => content_of(chain, at + 1, e.from.as_ref()?, depth + 1),
        Stored::Link => content_of(chain, at, e.entry.link.as_ref()?, depth + 1),
    }
}

/// Every tape needed is in the library; else the message says which to insert and where each is
/// recorded to be, and the restore waits up to `wait` for them to appear (in a storage or an
/// import/export slot), or fails at once without one.
fn missing_tapes(
    lib: &mut Library,
    cat: &TapeCatalog,
    barcodes: &[String],
    wait: Option<Duration>,
) -> Result<()> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let inv = lib.inventory()?;
        let missing: Vec<String> = barcodes
            .iter()
            .filter(|b| inv.find_barcode(b).is_empty())
            .map(|b| {
                let at = cat
                    .media(b)
                    .ok()
                    .flatten()
                    .map(|m| m.location.to_string())
                    .unwrap_or_else(|| "unknown".into());
                format!("{b} (recorded: {at})")
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let what = format!(
            "the restore needs {} tape(s) that are not in the library: {}; insert them through the import/export door",
            missing.len(),
            missing.join(", ")
        );
        match wait {
            Some(w) if started.elapsed() < w => {
                if !said {
                    eprintln!("tapectl: {what}; waiting up to {} s", w.as_secs());
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Some(w) => bail!("{what} (waited {} s)", w.as_secs()),
            None => bail!("{what}, or pass --wait-tapes SECONDS to wait for them"),
        }
    }
}

/// Loads `barcode` and writes its pieces (in block order) into their files.
fn read_tape(
    lib: &mut Library,
    drive: u16,
    barcode: &str,
    list: &[Read],
    out: &Beneath,
    shown: &dyn Fn(&RelPath) -> String,
    progress: &dyn Progress,
) -> Result<()> {
    super::mount::with_tape(lib, drive, barcode, |vol| {
        for r in list {
            let mut f = out
                .open_write(&r.dest)
                .with_context(|| format!("cannot open {}", shown(&r.dest)))?;
            f.seek(SeekFrom::Start(r.offset))?;
            let mut counted = CountedWrite {
                inner: &mut f,
                progress,
            };
            let n = vol
                .read_file(&r.tape_path, &mut counted)
                .with_context(|| format!("reading {} from {barcode}", r.tape_path))?;
            if r.last {
                progress.file_done(1);
            }
            if n != r.length {
                bail!(
                    "{} on {barcode} has {n} bytes; the set manifest says {}",
                    r.tape_path,
                    r.length
                );
            }
        }
        Ok(())
    })
}

/// Counts bytes written through to the progress display.
pub(crate) struct CountedWrite<'a, W> {
    pub inner: W,
    pub progress: &'a dyn Progress,
}

impl<W: std::io::Write> std::io::Write for CountedWrite<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.bytes(1, n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
