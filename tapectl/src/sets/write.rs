//! Writing a set: the plan, the source read once, and one writer per copy that fills tapes of the
//! pool in turn. At early warning a tape is closed (its self-description, then its index) and the
//! set continues on the next one, a file that did not fit continuing as a second piece. The set
//! manifest goes last, then the set is `complete` in the catalog: a set the catalog calls complete
//! is on tape in full.
//!
//! Copies go to distinct tapes. With as many drives as copies they are written at the same time
//! from one read of the source; otherwise one after the other.

use std::collections::HashSet;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use common::manifest::Kind;
use common::relpath::RelPath;
use ltfs::index::{LtfsTime, Times};
use ltfs::volume::{FileMeta, PartPut, Volume, VolumeError};
use serde::Serialize;

use super::allocate::{NoTape, Skipped, Want, check_drive_health, next_tape};
use super::layout::{
    self, Continued, Part, SET_FORMAT, SetEntry, SetHeader, SetKind, SetTape, Stored, TAPE_FORMAT,
    TapeDescription, VERSION,
};
use super::plan::{PlanReader, SetPlan, TempDir, plan};
use super::source::Stream;
use super::wait::{Cancelled, WaitEnd};
use crate::backend::BoxedTransport;
use crate::catalog::{NewSet, PartRow, SetRow, TapeCatalog};
use crate::drive::Drive;
use crate::library::Library;
use crate::pools::Pool;

/// What to write.
pub struct SetRequest<'a> {
    pub job: &'a str,
    /// The snapshot's name (resolved).
    pub snapshot: &'a str,
    /// The snapshot's tree (a published snapshot, read-only).
    pub root: &'a Path,
    pub full: bool,
    pub copies: u32,
    pub pool: &'a Pool,
    /// Drives to use (numbered as `library status` shows them).
    pub drives: Vec<u16>,
    pub buffer_bytes: u64,
    pub state_dir: &'a Path,
    /// Who is writing (recorded in the media history), e.g. `tapectl set write`.
    pub actor: &'a str,
    /// LTFS block size for tapes formatted on the way.
    pub block_size: usize,
    /// When the pool has no tape for the set: how long to wait for one to be brought (through the
    /// import/export door) before failing. `None`: fail at once, saying what to insert.
    pub wait_for_tape: Option<std::time::Duration>,
}

/// Progress of a set being written or read; called from the writers' threads.
pub trait Progress: Sync {
    fn start(&self, _files: u64, _bytes: u64, _copies: u32) {}
    fn bytes(&self, _copy: u32, _n: u64) {}
    fn file_done(&self, _copy: u32) {}
    fn tape(&self, _copy: u32, _seq: u32, _barcode: &str) {}
    /// A line for the person watching ("tape 2 of 3: RV0002L6").
    fn note(&self, _line: &str) {}
    /// The set waits for a person to bring a tape (`Some(what to insert)`), or goes on (`None`).
    fn waiting(&self, _what: Option<&str>) {}
    /// Stop at the next file: the tape is closed with its index and the set left interrupted.
    fn cancelled(&self) -> bool {
        false
    }
}

pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Debug, Clone, Serialize)]
pub struct TapeReport {
    pub seq: u32,
    pub barcode: String,
    pub bytes: u64,
    pub seconds: f64,
    /// MB/s (10^6 bytes) while the tape was written.
    pub mb_per_s: f64,
    /// TapeAlert flags the drive raised (names).
    pub tape_alerts: Vec<String>,
    /// The drive's volume statistics at the tape's close: write retries and unrecovered write
    /// errors (this mount, and the cartridge's life), compression ratio.
    pub write_health: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub copy: u32,
    pub drive: u16,
    pub tapes: Vec<TapeReport>,
    /// When the copy's last tape was closed.
    pub closed: jiff::Timestamp,
    /// Tapes given up on while writing (medium errors): marked damaged, nothing of the set is
    /// left only on them.
    pub damaged: Vec<Skipped>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    pub set: String,
    pub job: String,
    pub snapshot: String,
    pub kind: SetKind,
    pub base: Option<String>,
    pub base_snapshot: Option<String>,
    pub pool: String,
    /// Files whose content went to tape, and their bytes (per copy).
    pub files: u64,
    pub bytes: u64,
    pub renamed: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub seconds: f64,
    pub copies: Vec<CopyReport>,
    pub skipped: Vec<Skipped>,
}

/// Where the catalog keeps a copy's set manifest (the same bytes as on its last tape).
pub fn local_manifest(state_dir: &Path, set: &str, copy: u32) -> PathBuf {
    state_dir
        .join("tape-sets")
        .join(set)
        .join(format!("copy-{copy}.manifest.zst"))
}

/// The catalog's copy of a set manifest (copy `copy`'s), if it has one.
pub fn copy_manifest(
    state_dir: &Path,
    set: &str,
    copy: u32,
) -> Result<Option<layout::SetManifest>> {
    let p = local_manifest(state_dir, set, copy);
    match std::fs::File::open(&p) {
        Ok(f) => Ok(Some(layout::SetManifest::read_from(
            f,
            &p.display().to_string(),
        )?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// A set's manifest from the catalog's copies: copy `copy`'s, or the first the catalog has.
pub fn load_local_manifest(
    state_dir: &Path,
    set: &SetRow,
    copy: Option<u32>,
) -> Result<(u32, layout::SetManifest)> {
    let copies: Vec<u32> = match copy {
        Some(c) => vec![c],
        None => (1..=set.copies_wanted.max(1)).collect(),
    };
    for c in copies {
        if let Some(m) = copy_manifest(state_dir, &set.uuid, c)? {
            return Ok((c, m));
        }
    }
    bail!(
        "the catalog has no manifest of set {}{} in {} (`tapectl catalog rebuild` reads it back from its tapes)",
        set.uuid,
        copy.map(|c| format!(" copy {c}")).unwrap_or_default(),
        state_dir.join("tape-sets").display()
    )
}

/// The writer's hold on a set while it runs: a lock file another process can test (a set whose
/// lock is free and still `writing` was interrupted).
pub struct WriterLock(#[allow(dead_code)] std::fs::File);

pub fn writer_lock_path(state_dir: &Path, set: &str) -> PathBuf {
    state_dir.join("tape-sets").join(set).join("writer.lock")
}

impl WriterLock {
    pub fn take(state_dir: &Path, set: &str) -> Result<WriterLock> {
        use std::os::fd::AsRawFd;
        let p = writer_lock_path(state_dir, set);
        std::fs::create_dir_all(p.parent().expect("has a parent"))
            .with_context(|| format!("cannot create {}", p.display()))?;
        let f =
            std::fs::File::create(&p).with_context(|| format!("cannot create {}", p.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("set {set} is being written by another process");
        }
        Ok(WriterLock(f))
    }

    /// Whether a writer holds the set's lock now.
    pub fn held(state_dir: &Path, set: &str) -> bool {
        use std::os::fd::AsRawFd;
        let Ok(f) = std::fs::File::open(writer_lock_path(state_dir, set)) else {
            return false;
        };
        // SAFETY: flock on a descriptor we own; released when `f` closes.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
    }
}

/// Marks sets whose writer died as interrupted, and removes the temporary files such a writer left
/// (`state_dir/tmp/set-<uuid>`: its plan, parts and manifests).
pub fn settle(cat: &TapeCatalog, state_dir: &Path) -> Result<Vec<String>> {
    if let Ok(rd) = std::fs::read_dir(state_dir.join("tmp")) {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(uuid) = name.to_str().and_then(|n| n.strip_prefix("set-")) else {
                continue;
            };
            if layout::is_set_id(uuid) && !WriterLock::held(state_dir, uuid) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    cat.settle_interrupted(|uuid| WriterLock::held(state_dir, uuid))
}

/// Writes the set of the snapshot whose manifest is the file `manifest` (the snapshot's
/// `.rackvault/manifest.zst`, read as it is needed: a million-file snapshot is not held in memory).
/// `lib` is the library (its changer lock held for the whole set).
pub fn write_set(
    lib: Library,
    cat: TapeCatalog,
    req: &SetRequest,
    manifest: &Path,
    progress: &dyn Progress,
) -> Result<SetReport> {
    let started = Instant::now();
    settle(&cat, req.state_dir)?;
    if req.copies == 0 {
        bail!("--copies must be at least 1");
    }
    if req.drives.is_empty() {
        bail!("no drive to write with");
    }
    // An encrypted pool's key is read before anything is written.
    let key = match &req.pool.encryption {
        Some(e) => Some(crate::keys::read_key_file(&e.key_file).with_context(|| {
            format!(
                "pool {} encrypts its tapes with this key file",
                req.pool.name
            )
        })?),
        None => None,
    };
    // The base: the pool's newest complete set of the job, for an incremental.
    let base = if req.full {
        None
    } else {
        match cat.newest_complete(req.job, &req.pool.name)? {
            Some(b) if b.snapshot.as_str() >= req.snapshot => bail!(
                "snapshot {} of job {} is not newer than {}, the newest set of pool {} (set {}); write a full set with --full",
                req.snapshot,
                req.job,
                b.snapshot,
                req.pool.name,
                b.uuid
            ),
            other => other,
        }
    };
    let base_entries = match &base {
        Some(b) => Some(load_local_manifest(req.state_dir, b, None)?.1.entries),
        None => None,
    };
    let kind = if base.is_some() {
        SetKind::Incremental
    } else {
        SetKind::Full
    };
    let uuid = ltfs::volume::random_uuid();
    // Held before the temporary files exist (`settle` removes those of sets no one holds).
    let _lock = WriterLock::take(req.state_dir, &uuid)?;
    // The plan, each copy's parts and set manifest: files here, removed when the set is done.
    let tmp = TempDir::new(req.state_dir, &format!("set-{uuid}"))?;
    let plan = match plan(&uuid, manifest, base_entries.as_deref(), tmp.path()) {
        Ok(p) => p,
        Err(e) => {
            // Nothing of the set exists: not even its directory is left.
            drop(_lock);
            let _ = std::fs::remove_dir_all(req.state_dir.join("tape-sets").join(&uuid));
            return Err(e);
        }
    };
    drop(base_entries);
    let started_at = jiff::Timestamp::now();
    let set_id = cat.begin_set(
        &NewSet {
            uuid: &uuid,
            job: req.job,
            snapshot: req.snapshot,
            kind,
            base: base.as_ref().map(|b| b.id),
            pool: &req.pool.name,
            copies: req.copies,
            started_at,
        },
        plan.reader()?.map(|r| r.map(|(_, e)| e)),
        &plan.deleted,
    )?;
    let plan = std::sync::Arc::new(plan);
    let nfiles = plan.files;
    progress.start(nfiles, plan.bytes_to_write(), req.copies);
    let ctx = Ctx {
        uuid: &uuid,
        set_id,
        req,
        kind,
        base: base.as_ref(),
        plan: &plan,
        tmp: tmp.path(),
        created: started_at.to_string(),
        lib: Mutex::new(lib),
        cat: Mutex::new(cat),
        taken: Mutex::new(HashSet::new()),
        skipped: Mutex::new(Vec::new()),
        progress,
        key,
    };
    let mut copies = Vec::new();
    let parallel = req.drives.len().min(req.copies as usize);
    let mut next_copy = 1u32;
    while next_copy <= req.copies {
        let group: Vec<u32> = (next_copy..=req.copies).take(parallel).collect();
        next_copy += group.len() as u32;
        let rxs = super::source::start(req.root, plan.clone(), group.len(), req.buffer_bytes)
            .with_context(|| format!("cannot open the snapshot at {}", req.root.display()))?;
        let results: Vec<Result<CopyReport>> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .zip(rxs)
                .zip(req.drives.iter())
                .map(|((&copy, rx), &drive)| {
                    let ctx = &ctx;
                    s.spawn(move || {
                        CopyWriter::new(ctx, copy, drive, Stream::new(rx)).and_then(|w| w.run())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a copy's writer panicked")))
                })
                .collect()
        });
        for r in results {
            match r {
                Ok(c) => copies.push(c),
                Err(e) => {
                    // Said at once, not left for the next command to find.
                    if let Ok(cat) = ctx.cat.lock() {
                        let _ = cat.set_set_state(set_id, crate::catalog::SetState::Interrupted);
                    }
                    return Err(e.context(format!("set {uuid} is interrupted")));
                }
            }
        }
    }
    let cat = ctx
        .cat
        .into_inner()
        .map_err(|_| anyhow!("catalog lock poisoned"))?;
    let manifest_hash = std::fs::File::open(local_manifest(req.state_dir, &uuid, 1))
        .and_then(|f| blake3::Hasher::new().update_reader(f).map(|h| h.finalize()))
        .map(|h| h.to_hex().to_string())
        .unwrap_or_default();
    let bytes = plan.bytes_to_write();
    cat.complete_set(
        set_id,
        nfiles,
        bytes,
        &manifest_hash,
        copies
            .iter()
            .map(|c| c.closed)
            .max()
            .unwrap_or_else(jiff::Timestamp::now),
    )?;
    let mut lib = ctx
        .lib
        .into_inner()
        .map_err(|_| anyhow!("library lock poisoned"))?;
    for c in &copies {
        // Back to its slot: the library stays tidy and the drive free for the next job.
        if let Err(e) = lib.unload(c.drive) {
            tracing::debug!("drive {} not unloaded: {e:#}", c.drive);
        }
    }
    super::allocate::reconcile(&cat, &lib.inventory()?, req.actor)?;
    Ok(SetReport {
        set: uuid.clone(),
        job: req.job.to_string(),
        snapshot: req.snapshot.to_string(),
        kind,
        base: base.as_ref().map(|b| b.uuid.clone()),
        base_snapshot: base.as_ref().map(|b| b.snapshot.clone()),
        pool: req.pool.name.clone(),
        files: nfiles,
        bytes,
        renamed: plan.renamed,
        deleted: plan.deleted.len() as u64,
        unchanged: plan.unchanged,
        seconds: started.elapsed().as_secs_f64(),
        copies,
        skipped: ctx.skipped.into_inner().unwrap_or_default(),
    })
}

struct Ctx<'a> {
    uuid: &'a str,
    set_id: i64,
    req: &'a SetRequest<'a>,
    kind: SetKind,
    base: Option<&'a SetRow>,
    plan: &'a SetPlan,
    /// The set's temporary directory (the plan, the copies' parts and manifests).
    tmp: &'a Path,
    created: String,
    lib: Mutex<Library>,
    cat: Mutex<TapeCatalog>,
    /// Tapes this set uses or passed over: copies never share one.
    taken: Mutex<HashSet<String>>,
    skipped: Mutex<Vec<Skipped>>,
    progress: &'a dyn Progress,
    /// The pool's key when its tapes are encrypted (docs/encryption.md).
    key: Option<crate::keys::TapeKey>,
}

/// The tape being written by one copy.
struct OnTape {
    seq: u32,
    barcode: String,
    volume_uuid: String,
    started: Instant,
    bytes: u64,
    /// Parts on this tape not yet in the catalog.
    pending: Vec<(RelPath, PartRow)>,
    continued_from_previous: Option<Continued>,
}

/// The file in the middle of being written (plan entry `next`): how much is on tape, its next
/// part number.
#[derive(Clone, Copy)]
struct InFile {
    done: u64,
    part: u32,
}

struct CopyWriter<'a> {
    ctx: &'a Ctx<'a>,
    copy: u32,
    drive: u16,
    stream: Stream,
    /// The next plan entry to write, the plan read up to it, and that entry once read.
    next: usize,
    cursor: PlanReader,
    pending: Option<SetEntry>,
    current: Option<InFile>,
    /// Parts written (this copy's), in plan order.
    parts: PartsLog,
    tapes: Vec<TapeReport>,
    set_tapes: Vec<SetTape>,
    /// The copy's set manifest once built (a file, its length), and how much of it is on tape.
    manifest: Option<(PathBuf, u64, u64)>,
    /// When its last tape was closed (as the tape's description says).
    closed: Option<jiff::Timestamp>,
    /// The last plan entry whose data the stream delivered whole (the stream delivers the files
    /// to write in plan order).
    last_streamed: Option<usize>,
    /// The plan entry some of whose stream data was read, not all.
    stream_partial: Option<usize>,
    /// Files up to this plan entry are read again from the snapshot: their stream data went to a
    /// tape that failed.
    replay_through: Option<usize>,
    /// The snapshot, for those files.
    snapshot: Option<common::beneath::Beneath>,
    /// Tapes given up on (medium errors), with why.
    pub damaged: Vec<Skipped>,
}

/// Where a copy stood when a tape was begun.
struct Checkpoint {
    next: usize,
    current: Option<InFile>,
    /// Parts logged.
    parts: u64,
    /// Bytes of the set manifest on earlier tapes (it was begun on one of them).
    manifest_done: Option<u64>,
}

enum TapeEnd {
    /// Everything is on tape, the manifest too.
    Done,
    /// Early warning: the set continues on another tape.
    Full { continues: Option<Continued> },
}

impl<'a> CopyWriter<'a> {
    fn new(ctx: &'a Ctx<'a>, copy: u32, drive: u16, stream: Stream) -> Result<Self> {
        Ok(CopyWriter {
            ctx,
            copy,
            drive,
            stream,
            next: 0,
            cursor: ctx.plan.reader()?,
            pending: None,
            current: None,
            parts: PartsLog::create(&ctx.tmp.join(format!("copy-{copy}.parts")))?,
            tapes: Vec::new(),
            set_tapes: Vec::new(),
            manifest: None,
            closed: None,
            last_streamed: None,
            stream_partial: None,
            replay_through: None,
            snapshot: None,
            damaged: Vec::new(),
        })
    }

    /// Plan entry `self.next`, taken (`self.pending` holds it when it is not written yet);
    /// `None` after the last.
    fn take_next(&mut self) -> Result<Option<SetEntry>> {
        if let Some(e) = self.pending.take() {
            return Ok(Some(e));
        }
        Ok(self.cursor.next_entry()?.map(|(n, e)| {
            debug_assert_eq!(n, self.next);
            e
        }))
    }

    /// Goes back (or on) to plan entry `n`.
    fn seek(&mut self, n: usize) -> Result<()> {
        self.pending = None;
        if self.cursor.position() > n {
            self.cursor = self.ctx.plan.reader()?;
        }
        self.cursor.skip_to(n)?;
        self.next = n;
        Ok(())
    }

    fn run(mut self) -> Result<CopyReport> {
        let r = self.write_all();
        if r.is_err() {
            let cat = self
                .ctx
                .cat
                .lock()
                .map_err(|_| anyhow!("catalog lock poisoned"))?;
            cat.set_copy_state(self.ctx.set_id, self.copy, "interrupted")?;
        }
        r?;
        Ok(CopyReport {
            copy: self.copy,
            drive: self.drive,
            tapes: self.tapes,
            closed: self.closed.unwrap_or_else(jiff::Timestamp::now),
            damaged: self.damaged,
        })
    }

    fn write_all(&mut self) -> Result<()> {
        let mut continued: Option<Continued> = None;
        loop {
            let seq = self.set_tapes.len() as u32 + 1;
            let (barcode, volume_uuid) = {
                let mut lib = self
                    .ctx
                    .lib
                    .lock()
                    .map_err(|_| anyhow!("library lock poisoned"))?;
                let cat = self
                    .ctx
                    .cat
                    .lock()
                    .map_err(|_| anyhow!("catalog lock poisoned"))?;
                let mut taken = self
                    .ctx
                    .taken
                    .lock()
                    .map_err(|_| anyhow!("lock poisoned"))?;
                let mut skipped = self
                    .ctx
                    .skipped
                    .lock()
                    .map_err(|_| anyhow!("lock poisoned"))?;
                let root = layout::data_root(self.ctx.req.job, self.ctx.req.snapshot);
                let want = Want {
                    pool: self.ctx.req.pool,
                    drive: self.drive,
                    data_root: Some(&root),
                    actor: self.ctx.req.actor,
                    block_size: self.ctx.req.block_size,
                    key: self.ctx.key.as_ref(),
                };
                let (b, u) =
                    self.next_tape_or_wait(&mut lib, &cat, &want, &mut taken, &mut skipped)?;
                cat.add_copy_tape(self.ctx.set_id, self.copy, seq, &b, &u)?;
                (b, u)
            };
            self.ctx.progress.tape(self.copy, seq, &barcode);
            self.set_tapes.push(SetTape {
                seq,
                barcode: barcode.clone(),
                volume_uuid: volume_uuid.clone(),
            });
            let mut tape = OnTape {
                seq,
                barcode,
                volume_uuid,
                started: Instant::now(),
                bytes: 0,
                pending: Vec::new(),
                continued_from_previous: continued.take(),
            };
            let (mut drive, _lock) = {
                let mut lib = self
                    .ctx
                    .lib
                    .lock()
                    .map_err(|_| anyhow!("library lock poisoned"))?;
                lib.open_drive(self.drive)?
            };
            let at_start = Checkpoint {
                next: self.next,
                current: self.current,
                parts: self.parts.len(),
                manifest_done: self.manifest.as_ref().map(|m| m.2).filter(|&d| d > 0),
            };
            // The key is set again on this handle (a drive keeps it for all I_T nexuses, but not
            // every transport is one nexus), and cleared once the tape is closed or failed.
            super::crypt::set_for_pool(&mut drive, &self.ctx.req.pool.name, self.ctx.key.as_ref())?;
            let filled = self.fill_tape(&mut drive, &mut tape);
            if self.ctx.key.is_some() {
                super::crypt::clear_quietly(&mut drive);
            }
            let end = match filled {
                Ok(end) => end,
                Err(e) if is_medium_error(&e) && self.damaged.len() < MAX_DAMAGED => {
                    drop(drive);
                    self.give_up_tape(&tape, &at_start, &e)?;
                    continued = tape.continued_from_previous.take();
                    continue;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "writing copy {} to {} in drive {}",
                        self.copy, tape.barcode, self.drive
                    )));
                }
            };
            let alerts = drive
                .tape_alerts()
                .map(|t| t.flags().map(|f| f.name.to_string()).collect::<Vec<_>>())
                .unwrap_or_default();
            let health = write_health(&mut drive);
            let seconds = tape.started.elapsed().as_secs_f64();
            self.flush(&mut tape)?;
            let cat = self
                .ctx
                .cat
                .lock()
                .map_err(|_| anyhow!("catalog lock poisoned"))?;
            let alerts_json =
                (!alerts.is_empty()).then(|| serde_json::to_string(&alerts).unwrap_or_default());
            let health_json =
                (!health.is_empty()).then(|| serde_json::to_string(&health).unwrap_or_default());
            cat.close_copy_tape(
                self.ctx.set_id,
                self.copy,
                tape.seq,
                seconds,
                alerts_json.as_deref(),
                health_json.as_deref(),
            )?;
            cat.count_use(&tape.barcode, 0, tape.bytes, 0, 0)?;
            self.tapes.push(TapeReport {
                seq: tape.seq,
                barcode: tape.barcode.clone(),
                bytes: tape.bytes,
                seconds,
                mb_per_s: if seconds > 0.0 {
                    tape.bytes as f64 / 1e6 / seconds
                } else {
                    0.0
                },
                tape_alerts: alerts,
                write_health: health,
            });
            match end {
                TapeEnd::Done => {
                    cat.set_copy_state(self.ctx.set_id, self.copy, "complete")?;
                    return Ok(());
                }
                TapeEnd::Full { continues } => {
                    if tape.seq >= 100_000 {
                        bail!("the set has spanned 100000 tapes; something is wrong");
                    }
                    cat.set_state(
                        &tape.barcode,
                        crate::catalog::MediaState::Full,
                        &crate::catalog::MediaChange {
                            why: "early warning while writing a set",
                            actor: self.ctx.req.actor,
                            at: jiff::Timestamp::now(),
                        },
                    )?;
                    continued = continues;
                }
            }
        }
    }

    /// Writes plan entries from `self.next` on this tape until the set is done (manifest and
    /// all) or the tape reaches early warning; the tape is closed either way.
    fn fill_tape(
        &mut self,
        drive: &mut Drive<BoxedTransport>,
        tape: &mut OnTape,
    ) -> Result<TapeEnd> {
        let mut vol = Volume::mount(&mut *drive).context("mounting the LTFS volume")?;
        // A tape of a million small files: their index entries kept compactly (nothing reads
        // them back while the set is written).
        vol.pack_new_entries();
        let root = layout::data_root(self.ctx.req.job, self.ctx.req.snapshot);
        vol.mkdir_p(&root)?;
        let end = match self.write_entries(&mut vol, tape) {
            Ok(end) => end,
            Err(e) if e.is::<Cancelled>() => {
                // Closed with its index: the tape stays a clean volume; the set is interrupted.
                vol.unmount()
                    .context("closing the volume (writing its indexes)")?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mut catalog = None;
        let end = match end {
            Some(continues) => TapeEnd::Full { continues },
            None => match self.write_manifest(&mut vol, tape)? {
                true => {
                    catalog = self.put_catalog_copy(&mut vol, tape)?;
                    TapeEnd::Done
                }
                // (file, length, bytes on tape): the rest of the manifest goes on the next tape.
                false => TapeEnd::Full {
                    continues: self
                        .manifest
                        .as_ref()
                        .filter(|m| m.2 > 0)
                        .map(|m| Continued {
                            tape_path: layout::manifest_path(self.ctx.uuid),
                            offset: m.2,
                        }),
                },
            },
        };
        let (continues_on_next, last) = match &end {
            TapeEnd::Done => (None, true),
            TapeEnd::Full { continues } => (continues.clone(), false),
        };
        let closed = jiff::Timestamp::now();
        self.closed = Some(closed);
        let desc = TapeDescription {
            format: TAPE_FORMAT.into(),
            version: VERSION,
            set: self.ctx.uuid.to_string(),
            job: self.ctx.req.job.to_string(),
            snapshot: self.ctx.req.snapshot.to_string(),
            kind: self.ctx.kind,
            base: self.ctx.base.map(|b| b.uuid.clone()),
            pool: self.ctx.req.pool.name.clone(),
            copy: self.copy,
            seq: tape.seq,
            barcode: tape.barcode.clone(),
            volume_uuid: tape.volume_uuid.clone(),
            previous: (tape.seq > 1)
                .then(|| {
                    self.set_tapes
                        .get(tape.seq as usize - 2)
                        .map(|t| t.barcode.clone())
                })
                .flatten(),
            continued_from_previous: tape.continued_from_previous.clone(),
            continues_on_next,
            last,
            started: self.ctx.created.clone(),
            closed: closed.to_string(),
            key_fingerprint: self.ctx.key.as_ref().map(|k| k.fingerprint.to_string()),
            catalog,
        };
        vol.put_closing_file(
            &layout::description_path(self.ctx.uuid, tape.seq),
            &desc.to_json(),
            &FileMeta::default(),
        )?;
        vol.unmount()
            .context("closing the volume (writing its indexes)")?;
        Ok(end)
    }

    /// The pool's next tape; without one, waits as the request allows for a person to bring one.
    fn next_tape_or_wait(
        &self,
        lib: &mut Library,
        cat: &TapeCatalog,
        want: &Want,
        taken: &mut HashSet<String>,
        skipped: &mut Vec<Skipped>,
    ) -> Result<(String, String)> {
        let deadline = self.ctx.req.wait_for_tape.map(|w| Instant::now() + w);
        loop {
            let err = match next_tape(lib, cat, want, taken, skipped) {
                Ok(t) => {
                    self.ctx.progress.waiting(None);
                    return Ok(t);
                }
                Err(e) => e,
            };
            let (Some(deadline), Some(no_tape)) = (deadline, err.downcast_ref::<NoTape>()) else {
                return Err(err);
            };
            self.ctx.progress.waiting(Some(&no_tape.message));
            let cancelled = || self.ctx.progress.cancelled();
            match super::wait::for_library_change(
                lib,
                cat,
                want.actor,
                deadline,
                super::wait::POLL,
                &cancelled,
            )? {
                WaitEnd::Changed => {
                    // Cartridges passed over before may have been replaced: look at all again,
                    // except the ones other copies of this set hold.
                    let skipped_now: HashSet<&str> =
                        skipped.iter().map(|s| s.barcode.as_str()).collect();
                    taken.retain(|b| !skipped_now.contains(b.as_str()));
                }
                WaitEnd::TimedOut => {
                    let waited = self.ctx.req.wait_for_tape.unwrap_or_default();
                    return Err(err.context(format!(
                        "no tape came within {}",
                        common::human::duration(waited)
                    )));
                }
            }
        }
    }

    /// Some(continues) when early warning stopped it, None when every entry is on tape.
    fn write_entries(
        &mut self,
        vol: &mut Volume<&mut Drive<BoxedTransport>>,
        tape: &mut OnTape,
    ) -> Result<Option<Option<Continued>>> {
        let (job, snap) = (self.ctx.req.job, self.ctx.req.snapshot);
        while let Some(e) = self.take_next()? {
            if self.ctx.progress.cancelled() {
                return Err(Cancelled.into());
            }
            if vol.is_full() {
                let continues = self.current.map(|c| Continued {
                    tape_path: e.tape_path.clone().unwrap_or_default(),
                    offset: c.done,
                });
                self.pending = Some(e);
                return Ok(Some(continues));
            }
            let i = self.next;
            let valid_path = || {
                let p = layout::tape_path(self.ctx.uuid, job, snap, &e.entry.path, i);
                (!p.starts_with("/.rackvault/")).then_some(p)
            };
            match (e.stored, e.entry.kind) {
                (Stored::Here, Kind::Dir) => {
                    if let Some(p) = valid_path() {
                        vol.mkdir_p(&p)?;
                    }
                }
                (Stored::Here, Kind::Symlink) => {
                    let target = e
                        .entry
                        .target
                        .as_ref()
                        .and_then(|t| std::str::from_utf8(&t.0).ok());
                    if let (Some(p), Some(t)) = (valid_path(), target) {
                        match vol.symlink(&p, t, &meta_of(&e)) {
                            Ok(_) | Err(VolumeError::InvalidName { .. }) => {}
                            Err(err) => return Err(err.into()),
                        }
                    }
                }
                (Stored::Here, Kind::File) => {
                    let cur = self.current.unwrap_or(InFile { done: 0, part: 0 });
                    let path = e.tape_path.as_deref().expect("planned with a tape path");
                    let left = e.entry.size - cur.done;
                    let replay = self.replay_through.is_some_and(|r| i <= r);
                    let put = if replay {
                        let f = self.reopen(&e.entry.path, cur.done)?;
                        vol.put_file_part(path, std::io::Read::take(f, left), &meta_of(&e))
                    } else {
                        self.stream_partial = Some(i);
                        let counted = Counted {
                            inner: &mut self.stream,
                            progress: self.ctx.progress,
                            copy: self.copy,
                        };
                        vol.put_file_part(path, counted, &meta_of(&e))
                    };
                    let put = match put {
                        Ok(p) => p,
                        Err(VolumeError::Source { .. }) if self.stream.failed.is_some() => {
                            bail!("{}", self.stream.failed.clone().unwrap_or_default())
                        }
                        Err(err) => return Err(err.into()),
                    };
                    let (r, whole) = match put {
                        PartPut::Whole(r) => (r, true),
                        PartPut::Part(r) => (r, false),
                    };
                    if r.length > 0 {
                        let x = r.extent.expect("data written has an extent");
                        let part = Part {
                            tape: tape.seq,
                            partition: x.partition,
                            block: x.start_block,
                            offset: cur.done,
                            length: r.length,
                        };
                        self.parts.push(i, &part)?;
                        tape.pending.push((
                            e.entry.path.clone(),
                            PartRow {
                                part: cur.part,
                                seq: tape.seq,
                                partition: x.partition,
                                start_block: x.start_block,
                                file_offset: cur.done,
                                length: r.length,
                            },
                        ));
                        tape.bytes += r.length;
                    }
                    if !whole {
                        let done = cur.done + r.length;
                        self.current = Some(InFile {
                            done,
                            part: cur.part + u32::from(r.length > 0),
                        });
                        let continues = Continued {
                            tape_path: path.to_string(),
                            offset: done,
                        };
                        self.pending = Some(e);
                        return Ok(Some(Some(continues)));
                    }
                    // The stream moves on past this file (when it was replayed, past what the
                    // failed tape had of it): the stream's next file is the first to write after
                    // the last it delivered.
                    if self.last_streamed.is_none_or(|l| i > l)
                        && (!replay || self.stream_partial == Some(i))
                    {
                        self.stream.finish_file().map_err(|why| anyhow!(why))?;
                        self.stream.next_file();
                        self.last_streamed = Some(i);
                        self.stream_partial = None;
                    }
                    if replay && self.replay_through == Some(i) {
                        self.replay_through = None;
                    }
                    self.current = None;
                    self.ctx.progress.file_done(self.copy);
                    if r.synced {
                        check_drive_health(vol.device_mut(), self.drive)?;
                    }
                    if r.synced || tape.pending.len() >= PENDING_PARTS {
                        self.flush(tape)?;
                    }
                }
                _ => {}
            }
            self.next += 1;
        }
        Ok(None)
    }

    /// A file of the snapshot opened again at `offset` (to write again what a failed tape had).
    fn reopen(&mut self, path: &RelPath, offset: u64) -> Result<std::fs::File> {
        use std::io::Seek;
        if self.snapshot.is_none() {
            self.snapshot = Some(
                common::beneath::Beneath::open(self.ctx.req.root).with_context(|| {
                    format!(
                        "cannot open the snapshot at {}",
                        self.ctx.req.root.display()
                    )
                })?,
            );
        }
        let dir = self.snapshot.as_ref().expect("opened above");
        let mut f = dir
            .open_read(path)
            .with_context(|| format!("{path}: cannot open it in the snapshot again"))?;
        f.seek(std::io::SeekFrom::Start(offset))?;
        Ok(f)
    }

    /// A medium error on the tape being written: the tape is marked damaged and given up, and
    /// everything it held of this copy is written again on the next tape, from where the tape
    /// began (the stream's data for it is gone, so those files are read from the snapshot again).
    fn give_up_tape(
        &mut self,
        tape: &OnTape,
        at_start: &Checkpoint,
        why: &anyhow::Error,
    ) -> Result<()> {
        let reason = format!("medium error while writing: {}", why.root_cause());
        tracing::warn!(barcode = %tape.barcode, "{reason}; the set goes on with another tape");
        {
            let cat = self
                .ctx
                .cat
                .lock()
                .map_err(|_| anyhow!("catalog lock poisoned"))?;
            cat.drop_copy_tape(self.ctx.set_id, self.copy, tape.seq)?;
            cat.count_use(&tape.barcode, 0, 0, 1, 0)?;
            cat.set_state(
                &tape.barcode,
                crate::catalog::MediaState::Damaged,
                &crate::catalog::MediaChange {
                    why: &reason,
                    actor: self.ctx.req.actor,
                    at: jiff::Timestamp::now(),
                },
            )?;
        }
        // The parts logged since the tape began are this tape's.
        self.parts.truncate(at_start.parts)?;
        self.set_tapes.retain(|t| t.seq != tape.seq);
        // The files the stream gave for this tape, the one it is in the middle of included.
        let through = self.stream_partial.or(self.last_streamed);
        if let Some(t) = through.filter(|&t| t >= at_start.next) {
            self.replay_through = Some(self.replay_through.map_or(t, |r| r.max(t)));
        }
        self.seek(at_start.next)?;
        self.current = at_start.current;
        match (at_start.manifest_done, self.manifest.as_mut()) {
            // Begun on an earlier tape, which keeps its piece: the rest goes on the next tape,
            // from the same bytes.
            (Some(done), Some(m)) => m.2 = done,
            // Begun on the failed tape: made again (its header lists the copy's tapes).
            _ => self.manifest = None,
        }
        self.damaged.push(Skipped {
            barcode: tape.barcode.clone(),
            reason,
        });
        Ok(())
    }

    /// Parts written go to the catalog. The set is `writing` until its manifest is on tape, and
    /// nothing reads the parts of a set that is not complete, so they need not wait for an index.
    fn flush(&self, tape: &mut OnTape) -> Result<()> {
        let cat = self
            .ctx
            .cat
            .lock()
            .map_err(|_| anyhow!("catalog lock poisoned"))?;
        cat.record_parts(
            self.ctx.set_id,
            self.copy,
            tape.seq,
            &tape.pending,
            tape.bytes,
        )?;
        tape.pending.clear();
        Ok(())
    }

    /// The tape catalog's copy after the set manifest on the copy's last tape (`catalog_copy`),
    /// with this tape's parts in it.
    fn put_catalog_copy(
        &self,
        vol: &mut Volume<&mut Drive<BoxedTransport>>,
        tape: &mut OnTape,
    ) -> Result<Option<String>> {
        self.flush(tape)?;
        let state_dir = self.ctx.req.state_dir;
        let local = local_manifest(state_dir, self.ctx.uuid, self.copy);
        let hash = std::fs::File::open(&local)
            .and_then(|f| blake3::Hasher::new().update_reader(f).map(|h| h.finalize()))
            .with_context(|| format!("cannot read {}", local.display()))?;
        let closing = super::catalog_copy::Closing {
            set_id: self.ctx.set_id,
            copy: self.copy,
            files: self.ctx.plan.files,
            bytes: self.ctx.plan.bytes_to_write(),
            manifest_blake3: &hash.to_hex(),
            seq: tape.seq,
            seconds: tape.started.elapsed().as_secs_f64(),
        };
        // Copied under the catalog's lock (the other copies' writers update it meanwhile),
        // written to tape without it.
        let snapshot = {
            let _cat = self
                .ctx
                .cat
                .lock()
                .map_err(|_| anyhow!("catalog lock poisoned"))?;
            super::catalog_copy::Snapshot::take(state_dir, self.ctx.tmp, &closing)?
        };
        super::catalog_copy::put(vol, self.ctx.uuid, &snapshot)
    }

    /// Writes the copy's set manifest (true), or finds the tape full first (false: it goes on the
    /// next tape). A manifest larger than what is left is split like any file.
    fn write_manifest(
        &mut self,
        vol: &mut Volume<&mut Drive<BoxedTransport>>,
        tape: &mut OnTape,
    ) -> Result<bool> {
        if vol.is_full() {
            return Ok(false);
        }
        let plan = self.ctx.plan;
        let header = SetHeader {
            format: SET_FORMAT.into(),
            version: VERSION,
            set: self.ctx.uuid.to_string(),
            job: self.ctx.req.job.to_string(),
            snapshot: self.ctx.req.snapshot.to_string(),
            kind: self.ctx.kind,
            base: self.ctx.base.map(|b| b.uuid.clone()),
            base_snapshot: self.ctx.base.map(|b| b.snapshot.clone()),
            pool: self.ctx.req.pool.name.clone(),
            copy: self.copy,
            created: self.ctx.created.clone(),
            tapes: self.set_tapes.clone(),
            entries: plan.entries,
            deleted: plan.deleted.len() as u64,
        };
        if self.manifest.is_none() {
            // Joined from the plan and this copy's parts, into a file.
            let file = self
                .ctx
                .tmp
                .join(format!("copy-{}.manifest.zst", self.copy));
            let out = std::fs::File::create(&file)
                .with_context(|| format!("cannot create {}", file.display()))?;
            let mut m = layout::ManifestWriter::new(BufWriter::new(out), &header)?;
            let mut parts = self.parts.reader()?;
            let mut entries = plan.reader()?;
            while let Some((n, e)) = entries.next_entry()? {
                m.entry(&e, &parts.parts_of(n)?)?;
            }
            let out = m.finish(&plan.deleted)?;
            let out = out.into_inner().map_err(|e| e.into_error())?;
            let len = out.metadata()?.len();
            self.manifest = Some((file, len, 0));
        }
        let (file, len, done) = self.manifest.as_mut().expect("built above");
        let path = layout::manifest_path(self.ctx.uuid);
        let mut left = std::fs::File::open(&*file)
            .with_context(|| format!("cannot open {}", file.display()))?;
        left.seek(SeekFrom::Start(*done))?;
        match vol.put_file_part(&path, left.take(*len - *done), &FileMeta::default())? {
            PartPut::Whole(_) => {}
            PartPut::Part(r) => {
                // Split like any file: the rest goes on the next tape.
                *done += r.length;
                tape.bytes += r.length;
                return Ok(false);
            }
        }
        let local = local_manifest(self.ctx.req.state_dir, self.ctx.uuid, self.copy);
        move_atomically(file, &local)?;
        Ok(true)
    }
}

pub(crate) fn save_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = temporary_beside(path);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Moves the finished file `from` to `path`, synced: renamed within the state directory, copied
/// where it cannot be.
/// A temporary name in `path`'s directory for a file about to become `path`: named after the
/// file too, since two copies' writers save their manifests into one directory at the same time
/// (one shared temporary name let one writer rename the other's file away).
fn temporary_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

fn move_atomically(from: &Path, path: &Path) -> Result<()> {
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::File::open(from)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", from.display()))?;
    if std::fs::rename(from, path).is_ok() {
        return Ok(());
    }
    let tmp = temporary_beside(path);
    let copy = || -> std::io::Result<()> {
        std::fs::copy(from, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    copy().with_context(|| format!("cannot write {}", path.display()))
}

/// A copy's parts, in the order written, in a file (a million-file set does not hold them):
/// fixed-size records of the plan entry and the part.
struct PartsLog {
    path: PathBuf,
    out: BufWriter<std::fs::File>,
    records: u64,
}

/// Bytes of a [`PartsLog`] record: entry, tape, partition, block, offset, length.
const PART_RECORD: usize = 40;

impl PartsLog {
    fn create(path: &Path) -> Result<PartsLog> {
        let f = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(PartsLog {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 16, f),
            records: 0,
        })
    }

    fn len(&self) -> u64 {
        self.records
    }

    fn push(&mut self, entry: usize, p: &Part) -> Result<()> {
        let mut r = [0u8; PART_RECORD];
        r[0..8].copy_from_slice(&(entry as u64).to_le_bytes());
        r[8..12].copy_from_slice(&p.tape.to_le_bytes());
        r[12..16].copy_from_slice(&u32::from(p.partition).to_le_bytes());
        r[16..24].copy_from_slice(&p.block.to_le_bytes());
        r[24..32].copy_from_slice(&p.offset.to_le_bytes());
        r[32..40].copy_from_slice(&p.length.to_le_bytes());
        self.out
            .write_all(&r)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.records += 1;
        Ok(())
    }

    /// Keeps the first `records` parts only.
    fn truncate(&mut self, records: u64) -> Result<()> {
        self.out.flush()?;
        let f = self.out.get_mut();
        f.set_len(records * PART_RECORD as u64)?;
        f.seek(SeekFrom::End(0))?;
        self.records = records;
        Ok(())
    }

    fn reader(&mut self) -> Result<PartsReader> {
        self.out.flush()?;
        let f = std::fs::File::open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        Ok(PartsReader {
            r: BufReader::with_capacity(1 << 16, f.take(self.records * PART_RECORD as u64)),
            peeked: None,
        })
    }
}

struct PartsReader {
    r: BufReader<std::io::Take<std::fs::File>>,
    peeked: Option<(u64, Part)>,
}

impl PartsReader {
    fn read(&mut self) -> Result<Option<(u64, Part)>> {
        let mut b = [0u8; PART_RECORD];
        match self.r.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let part = Part {
            tape: u32_at(8),
            partition: char::from_u32(u32_at(12)).unwrap_or('?'),
            block: u64_at(16),
            offset: u64_at(24),
            length: u64_at(32),
        };
        Ok(Some((u64_at(0), part)))
    }

    /// The parts of plan entry `entry` (entries asked in order).
    fn parts_of(&mut self, entry: usize) -> Result<Vec<Part>> {
        let mut out = Vec::new();
        loop {
            if self.peeked.is_none() {
                self.peeked = self.read()?;
            }
            match self.peeked {
                Some((n, p)) if n == entry as u64 => {
                    out.push(p);
                    self.peeked = None;
                }
                _ => return Ok(out),
            }
        }
    }
}

/// The LTFS metadata of an entry: its modification time (as all five times, as the file's
/// own), and read-only when no one may write it. Owner, mode and xattrs are in the manifest.
fn meta_of(e: &SetEntry) -> FileMeta {
    let t = LtfsTime::new(e.entry.mtime, e.entry.mtime_ns);
    FileMeta {
        times: Some(Times::all(t)),
        read_only: e.entry.mode & 0o222 == 0,
        xattrs: Vec::new(),
    }
}

/// Parts kept in memory before they go to the catalog (a million-file set is not held twice).
const PENDING_PARTS: usize = 10_000;

/// A copy gives up after this many tapes failed with medium errors (the drive is more likely at
/// fault than the tapes).
const MAX_DAMAGED: usize = 3;

/// The error is the medium's (MEDIUM ERROR while writing), not the drive's or the source's.
fn is_medium_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ltfs::DeviceError>(),
            Some(ltfs::DeviceError::Medium { .. })
        ) || matches!(
            c.downcast_ref::<VolumeError>(),
            Some(VolumeError::Device {
                source: ltfs::DeviceError::Medium { .. },
                ..
            })
        )
    })
}

/// What the drive's volume statistics say of writing the cartridge in it (empty where the drive
/// has no such page).
fn write_health(drive: &mut Drive<BoxedTransport>) -> std::collections::BTreeMap<String, u64> {
    const WANTED: [u16; 4] = [0x0003, 0x0004, 0x000c, 0x0012];
    let Ok(stats) = drive.volume_statistics() else {
        return Default::default();
    };
    stats
        .into_iter()
        .filter(|s| WANTED.contains(&s.code))
        .filter_map(|s| match (s.name, s.value) {
            (Some(n), crate::drive::logs::StatValue::Counter(v)) => Some((n.to_string(), v)),
            _ => None,
        })
        .collect()
}

/// Counts bytes through to the progress display.
struct Counted<'s> {
    inner: &'s mut Stream,
    progress: &'s dyn Progress,
    copy: u32,
}

impl std::io::Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes(self.copy, n as u64);
        Ok(n)
    }
}
