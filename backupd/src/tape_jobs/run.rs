//! One run of a tape job: for each of its backup jobs in turn, the latest snapshot goes to the pool
//! as a full or incremental set (see `due`). With no tape to write on, the run waits (the caller
//! hears what to insert) for up to `wait_for_tape`; cartridges put into the import/export door are
//! taken in. A cancel stops it at the next file, the tape closed with its index.

use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use common::config::SharedConfig;
use tapectl::catalog::{SetState, TapeCatalog};
use tapectl::sets::layout::SetKind;
use tapectl::sets::write::{SetReport, SetRequest, write_set};

use super::TapeJob;
use super::due::{Decision, OnTape, decide};
use crate::config::Config;
use crate::progress::Progress;
use crate::schedule::{Schedule, Zone};

/// What a run did, kept as the run's statistics in the catalog.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TapeRunReport {
    pub sets: Vec<SetWritten>,
    /// Backup jobs with nothing to write, and why.
    pub skipped: Vec<JobSkipped>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetWritten {
    pub job: String,
    pub snapshot: String,
    pub set: String,
    pub kind: SetKind,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Each copy's tapes, in order.
    pub tapes: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSkipped {
    pub job: String,
    pub why: String,
}

impl TapeRunReport {
    /// One line per set written (or why none was), for `backupd run`.
    pub fn summary(&self, tape_job: &str) -> String {
        let mut lines = Vec::new();
        for s in &self.sets {
            let copies: Vec<String> = s.tapes.iter().map(|c| c.join(",")).collect();
            lines.push(format!(
                "{tape_job}: {} set {} of {} {}: {} files, {} on tapes {}",
                s.kind.as_str(),
                s.set.get(..8).unwrap_or(&s.set),
                s.job,
                s.snapshot,
                s.files,
                common::human::bytes(s.bytes),
                copies.join(" | ")
            ));
        }
        for s in &self.skipped {
            lines.push(format!(
                "{tape_job}: nothing written for {}: {}",
                s.job, s.why
            ));
        }
        lines.join("\n")
    }
}

impl SetWritten {
    fn of(r: &SetReport) -> SetWritten {
        SetWritten {
            job: r.job.clone(),
            snapshot: r.snapshot.clone(),
            set: r.set.clone(),
            kind: r.kind,
            files: r.files,
            bytes: r.bytes,
            seconds: r.seconds,
            tapes: r
                .copies
                .iter()
                .map(|c| c.tapes.iter().map(|t| t.barcode.clone()).collect())
                .collect(),
        }
    }
}

/// The latest snapshot of each of the tape job's backup jobs, by name (what the run will write).
pub fn latest_snapshots(cfg: &Config, tj: &TapeJob) -> Result<Vec<(String, String)>> {
    let snaps = common::snapshots::open(&shared_config(cfg));
    tj.jobs
        .iter()
        .map(|j| Ok((j.clone(), common::snapshots::resolve(&*snaps, j, "latest")?)))
        .collect()
}

/// Runs the tape job. `on_wait` hears what the run waits for (`Some`: what to insert) and when it
/// goes on (`None`).
pub fn run(
    cfg: &Config,
    tj: &TapeJob,
    snapshots: &[(String, String)],
    progress: &Progress,
    on_wait: &(dyn Fn(Option<&str>) + Sync),
) -> Result<TapeRunReport> {
    let pool = cfg.tape.pool(tj.pool.as_deref())?;
    let full_schedule = tj
        .full
        .as_deref()
        .map(|s| Schedule::parse(s, Zone::Local))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let shared = shared_config(cfg);
    let snaps = common::snapshots::open(&shared);
    let mut report = TapeRunReport::default();
    for (job, snapshot) in snapshots {
        if progress.is_cancelled() {
            bail!(tapectl::sets::wait::Cancelled);
        }
        let on_tape = {
            let cat = TapeCatalog::open(&cfg.state_dir)?;
            on_tape(&cat, job, &pool.name)?
        };
        let kind = match decide(full_schedule.as_ref(), snapshot, &on_tape, Timestamp::now()) {
            Decision::Write(kind) => kind,
            Decision::Skip(why) => {
                tracing::info!(tape_job = %tj.name, %job, "{why}");
                report.skipped.push(JobSkipped {
                    job: job.clone(),
                    why,
                });
                continue;
            }
        };
        let view = snaps.open(job, snapshot)?;
        // Read as the set is planned (a million-file manifest is not held).
        let manifest = view.root.join(common::manifest::MANIFEST_FILE);
        let actor = format!("backupd tape job {}", tj.name);
        let mut lib = tapectl::library::Library::open(
            cfg.library.clone(),
            std::time::Duration::from_secs(600),
            &actor,
        )?;
        lib.keys = cfg.tape.keyring();
        let drives = if tj.drives.is_empty() {
            (0..lib.backend.drive_count() as u16).collect()
        } else {
            tj.drives.clone()
        };
        let req = SetRequest {
            job,
            snapshot,
            root: &view.root,
            full: kind == SetKind::Full,
            copies: tj.copies_of(kind),
            pool,
            drives,
            buffer_bytes: cfg.tape.buffer_bytes,
            state_dir: &cfg.state_dir,
            actor: &actor,
            block_size: 512 * 1024,
            wait_for_tape: Some(tj.wait_for_tape),
        };
        let watch = Watch {
            job,
            progress,
            on_wait,
            copies: Mutex::new(1),
        };
        let cat = TapeCatalog::open(&cfg.state_dir)?;
        let r = write_set(lib, cat, &req, &manifest, &watch).with_context(|| {
            format!(
                "writing snapshot {snapshot} of job {job} to pool {}",
                pool.name
            )
        })?;
        tracing::info!(tape_job = %tj.name, %job, set = %r.set, kind = r.kind.as_str(), "set written");
        report.sets.push(SetWritten::of(&r));
    }
    Ok(report)
}

/// Cleans the drives that ask for it (between jobs); returns those that could not be cleaned.
pub fn clean_drives(
    cfg: &Config,
    tape_job: &str,
) -> Result<Vec<tapectl::sets::allocate::NeedsCleaning>> {
    let actor = format!("backupd tape job {tape_job}");
    let mut lib = tapectl::library::Library::open(
        cfg.library.clone(),
        std::time::Duration::from_secs(600),
        &actor,
    )?;
    let cat = TapeCatalog::open(&cfg.state_dir)?;
    tapectl::sets::allocate::clean_drives(&mut lib, &cat, &actor)
}

/// The complete sets of `job` in `pool`, as `decide` needs them.
fn on_tape(cat: &TapeCatalog, job: &str, pool: &str) -> Result<OnTape> {
    let mut out = OnTape::default();
    for s in cat.sets(Some(job), Some(pool))? {
        if s.state != SetState::Complete {
            continue;
        }
        if out.newest_snapshot.as_ref().is_none_or(|n| *n < s.snapshot) {
            out.newest_snapshot = Some(s.snapshot.clone());
        }
        if s.kind == SetKind::Full {
            let started: Timestamp = s
                .started_at
                .parse()
                .with_context(|| format!("set {}: bad start time {:?}", s.uuid, s.started_at))?;
            if out.newest_full.as_ref().is_none_or(|(_, t)| *t < started) {
                out.newest_full = Some((s.snapshot.clone(), started));
            }
        }
    }
    Ok(out)
}

fn shared_config(cfg: &Config) -> SharedConfig {
    SharedConfig {
        state_dir: cfg.state_dir.clone(),
        store: cfg.store.clone(),
        state_dir_span: None,
        store_span: 0..0,
    }
}

/// The set writer's progress, into the run's (what the API shows) and the daemon's wait alerts.
struct Watch<'a> {
    job: &'a str,
    progress: &'a Progress,
    on_wait: &'a (dyn Fn(Option<&str>) + Sync),
    copies: Mutex<u32>,
}

impl tapectl::sets::write::Progress for Watch<'_> {
    fn start(&self, files: u64, bytes: u64, copies: u32) {
        *self.copies.lock().expect("not poisoned") = copies;
        self.progress.restart(
            &format!("writing {} to tape", self.job),
            files,
            bytes * u64::from(copies),
        );
    }
    fn bytes(&self, _copy: u32, n: u64) {
        self.progress.bytes(n);
    }
    fn file_done(&self, copy: u32) {
        if copy == 1 {
            self.progress.file_done();
        }
    }
    fn tape(&self, copy: u32, seq: u32, barcode: &str) {
        let copies = *self.copies.lock().expect("not poisoned");
        self.progress.phase(&format!(
            "writing {} to tape: copy {copy} of {copies}, tape {seq} {barcode}",
            self.job
        ));
    }
    fn waiting(&self, what: Option<&str>) {
        self.progress.set_waiting(what);
        (self.on_wait)(what);
    }
    fn cancelled(&self) -> bool {
        self.progress.is_cancelled()
    }
}
