//! `tapectl set …` and `tapectl catalog …`: backup snapshots on tape as sets, and what the tape
//! catalog knows of them.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use common::config::{ConfigFile, SharedConfig};
use common::relpath::RelPath;

use tapectl::catalog::TapeCatalog;
use tapectl::library::Library;
use tapectl::pools::TapeSettings;
use tapectl::sets::write::{Progress, SetReport, SetRequest, settle, write_set};

use crate::output::Out;
use crate::progress::Bar;

#[derive(Subcommand)]
pub enum SetCmd {
    /// Write a backup snapshot to tapes of a pool: incremental on the pool's newest set of the
    /// job, or full.
    Write {
        /// The backup job (as in rackvault.toml).
        job: String,
        /// The snapshot: its name, a unique prefix, or `latest`.
        #[arg(long, default_value = "latest")]
        snapshot: String,
        /// A full set (every file), even when the pool has a set of the job to build on.
        #[arg(long)]
        full: bool,
        /// Copies to write, each on its own tapes (written at once when there are enough drives).
        #[arg(long, default_value_t = 1)]
        copies: u32,
        /// The pool whose tapes to use (required when the configuration has several).
        #[arg(long)]
        pool: Option<String>,
        /// Drives to write with (numbered from 0; default: all of the library's).
        #[arg(long, value_delimiter = ',')]
        drive: Vec<u16>,
        /// When the pool has no tape for the set, wait up to this many seconds for one to be put
        /// into the import/export door (it is taken in) instead of failing at once.
        #[arg(long, value_name = "SECONDS")]
        wait_tapes: Option<u64>,
    },
    /// Sets in the tape catalog: job, snapshot, full or incremental, base, tapes per copy, state.
    List {
        /// Only this job's sets.
        #[arg(long)]
        job: Option<String>,
        /// Only this pool's sets.
        #[arg(long)]
        pool: Option<String>,
    },
    /// One set: its copies and their tapes in order, files, bytes, verify state, where each tape is.
    Show {
        /// The set's UUID (or a unique prefix of it), or `latest`.
        set: String,
    },
    /// Read a copy of a set back: every file against the snapshot manifest's BLAKE3, and the set
    /// manifest on tape against the catalog's.
    Verify {
        /// The set's UUID (or a unique prefix of it), or `latest`.
        set: String,
        /// The copy to read (default: the first).
        #[arg(long)]
        copy: Option<u32>,
        /// The drive to read with (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
    },
}

#[derive(Subcommand)]
pub enum CatalogCmd {
    /// Which sets, tapes and snapshots hold the paths matching a glob (`home/**/thesis*.tex`),
    /// without touching a tape.
    Find {
        /// A glob over paths in the snapshot (`*` stays within a directory, `**` crosses them).
        pattern: String,
    },
    /// Make the catalog anew from the tapes alone (a lost state_dir): reads every cartridge in
    /// the library, its sets' self-descriptions and manifests.
    Rebuild {
        /// The drive to read with (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
    },
}

/// What the set commands read from rackvault.toml: the store, state_dir and pools.
pub struct SetConfig {
    pub shared: SharedConfig,
    pub tape: TapeSettings,
}

impl SetConfig {
    pub fn load(path: Option<&Path>) -> Result<SetConfig> {
        let Some(path) = path else {
            bail!(
                "tape sets need rackvault.toml (its [store] holds the snapshots and its state_dir the tape catalog); pass --config or set RACKVAULT_CONFIG"
            );
        };
        let cf = ConfigFile::load(path)?;
        Ok(SetConfig {
            shared: SharedConfig::parse(&cf)?,
            tape: TapeSettings::from_file(&cf)?,
        })
    }
}

/// The progress bar of `set write`, `set verify` and `restore` on a terminal: bytes of all copies,
/// files of the first, a line per tape.
struct SetBar {
    bar: std::sync::OnceLock<Bar>,
    enabled: bool,
    verb: &'static str,
    files: std::sync::atomic::AtomicU64,
}

impl SetBar {
    fn new(out: &Out, verb: &'static str) -> SetBar {
        SetBar {
            bar: std::sync::OnceLock::new(),
            enabled: !out.json,
            verb,
            files: Default::default(),
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.get() {
            b.finish();
        }
    }
}

impl Progress for SetBar {
    fn start(&self, files: u64, bytes: u64, copies: u32) {
        let _ = self.bar.set(Bar::new(
            self.enabled,
            self.verb,
            files,
            bytes * u64::from(copies),
        ));
    }
    fn bytes(&self, _copy: u32, n: u64) {
        if let Some(b) = self.bar.get() {
            b.bytes(n);
        }
    }
    fn file_done(&self, copy: u32) {
        if copy == 1
            && let Some(b) = self.bar.get()
        {
            let n = self
                .files
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            b.file_done(n);
        }
    }
    fn tape(&self, copy: u32, seq: u32, barcode: &str) {
        self.note(&format!("copy {copy}: tape {seq} is {barcode}"));
    }
    fn note(&self, line: &str) {
        if let Some(b) = self.bar.get() {
            b.println(line);
        }
    }
    fn waiting(&self, what: Option<&str>) {
        if let Some(what) = what {
            // Said once per wait, on the terminal or not: it is what the person must do.
            eprintln!("tapectl: {what}; waiting for it (the set goes on once it is in the door)");
        }
    }
}

pub fn set_cmd(
    out: &Out,
    cfg: &SetConfig,
    cmd: &SetCmd,
    open: &dyn Fn() -> Result<Library>,
) -> Result<()> {
    let state_dir = &cfg.shared.state_dir;
    match cmd {
        SetCmd::Write {
            job,
            snapshot,
            full,
            copies,
            pool,
            drive,
            wait_tapes,
        } => {
            let pool = cfg.tape.pool(pool.as_deref())?;
            let snaps = common::snapshots::open(&cfg.shared);
            let name = common::snapshots::resolve(&*snaps, job, snapshot)?;
            let view = snaps.open(job, &name)?;
            // Read as it is needed (a million-file manifest is not held).
            let manifest = view.root.join(common::manifest::MANIFEST_FILE);
            let mut lib = open()?;
            lib.keys = cfg.tape.keyring();
            let drives = if drive.is_empty() {
                (0..lib.backend.drive_count() as u16).collect()
            } else {
                drive.clone()
            };
            let cat = TapeCatalog::open(state_dir)?;
            let req = SetRequest {
                job,
                snapshot: &name,
                root: &view.root,
                full: *full,
                copies: *copies,
                pool,
                drives,
                buffer_bytes: cfg.tape.buffer_bytes,
                state_dir,
                actor: "tapectl set write",
                block_size: 512 * 1024,
                wait_for_tape: wait_tapes.map(std::time::Duration::from_secs),
            };
            let bar = SetBar::new(out, "writing");
            let r = write_set(lib, cat, &req, &manifest, &bar)
                .with_context(|| format!("writing snapshot {name} of job {job} to tape"));
            bar.finish();
            let r = r?;
            out.value(&r, &report_human(&r))
        }
        SetCmd::Verify { set, copy, drive } => {
            let cat = TapeCatalog::open(state_dir)?;
            settle(&cat, state_dir)?;
            let s = cat.set(set)?;
            let mut lib = open()?;
            lib.keys = cfg.tape.keyring();
            let bar = SetBar::new(out, "verifying");
            let r =
                tapectl::sets::verify::verify(&mut lib, &cat, &s, *copy, *drive, state_dir, &bar);
            bar.finish();
            let r = r?;
            let human = format!(
                "set {} copy {}: {} files, {} read from {} tape(s) ({}){}",
                r.set,
                r.copy,
                r.files,
                common::human::bytes(r.bytes),
                r.tapes.len(),
                r.tapes.join(", "),
                if r.problems.is_empty() {
                    ": all match".to_string()
                } else {
                    format!(": {} problem(s)", r.problems.len())
                }
            );
            out.value(&r, &human)?;
            if !r.problems.is_empty() {
                for p in &r.problems {
                    eprintln!("tapectl: {p}");
                }
                bail!("set {} copy {} does not verify", r.set, r.copy);
            }
            Ok(())
        }
        SetCmd::List { job, pool } => {
            let cat = TapeCatalog::open(state_dir)?;
            settle(&cat, state_dir)?;
            let sets = cat.sets(job.as_deref(), pool.as_deref())?;
            let mut rows = Vec::new();
            let mut human = String::from(
                "set       job          snapshot              kind         base      pool       state        tapes\n",
            );
            for s in &sets {
                let copies = cat.copies(s.id)?;
                let tapes: Vec<String> = copies
                    .iter()
                    .map(|c| {
                        c.tapes
                            .iter()
                            .map(|t| t.barcode.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .collect();
                human.push_str(&format!(
                    "{:<9} {:<12} {:<21} {:<12} {:<9} {:<10} {:<12} {}\n",
                    &s.uuid[..8.min(s.uuid.len())],
                    s.job,
                    s.snapshot,
                    s.kind.as_str(),
                    s.base.as_deref().map_or("-", |b| &b[..8.min(b.len())]),
                    s.pool,
                    s.state.as_str(),
                    tapes.join(" | ")
                ));
                rows.push(serde_json::json!({ "set": s, "copies": copies }));
            }
            if sets.is_empty() {
                human = "no sets in the tape catalog yet (write one with `tapectl set write JOB`)"
                    .into();
            }
            out.value(&rows, human.trim_end())
        }
        SetCmd::Show { set } => {
            let cat = TapeCatalog::open(state_dir)?;
            settle(&cat, state_dir)?;
            let s = cat.set(set)?;
            let copies = cat.copies(s.id)?;
            let mut human = format!(
                "set {}\n  job {}, snapshot {}, {}{}\n  pool {}, {}\n",
                s.uuid,
                s.job,
                s.snapshot,
                s.kind.as_str(),
                s.base
                    .as_deref()
                    .map(|b| format!(" on set {b}"))
                    .unwrap_or_default(),
                s.pool,
                s.state.as_str()
            );
            if let (Some(f), Some(b)) = (s.files, s.bytes) {
                human.push_str(&format!(
                    "  {f} files, {} on tape per copy\n",
                    common::human::bytes(b)
                ));
            }
            let mut where_ = Vec::new();
            for c in &copies {
                human.push_str(&format!(
                    "  copy {} ({}{})\n",
                    c.copy,
                    c.state,
                    match (&c.verified_at, c.verify_problems) {
                        (Some(at), Some(0)) => format!(", verified {at}"),
                        (Some(at), Some(n)) => format!(", verify found {n} problems {at}"),
                        _ => ", not verified".into(),
                    }
                ));
                for t in &c.tapes {
                    let loc = cat
                        .media(&t.barcode)?
                        .map(|m| m.location.to_string())
                        .unwrap_or_else(|| "unknown".into());
                    human.push_str(&format!(
                        "    {}. {}  {}  {}\n",
                        t.seq,
                        t.barcode,
                        common::human::bytes(t.bytes),
                        loc
                    ));
                    where_.push(serde_json::json!({ "barcode": t.barcode, "location": loc }));
                }
            }
            out.value(
                &serde_json::json!({ "set": s, "copies": copies, "locations": where_ }),
                human.trim_end(),
            )
        }
    }
}

pub fn catalog_cmd(
    out: &Out,
    cfg: &SetConfig,
    cmd: &CatalogCmd,
    open: &dyn Fn() -> Result<Library>,
) -> Result<()> {
    let state_dir = &cfg.shared.state_dir;
    match cmd {
        CatalogCmd::Rebuild { drive } => {
            let mut lib = open()?;
            lib.keys = cfg.tape.keyring();
            let r = tapectl::sets::rebuild::rebuild(
                &mut lib,
                state_dir,
                *drive,
                "tapectl catalog rebuild",
            )?;
            let mut human = format!(
                "read {} tape(s): {} complete set(s), {} interrupted",
                r.tapes.len(),
                r.complete.len(),
                r.interrupted.len()
            );
            for s in &r.skipped {
                human.push_str(&format!("\n  {}: {}", s.barcode, s.reason));
            }
            out.value(&r, &human)
        }
        CatalogCmd::Find { pattern } => {
            let glob = globset::GlobBuilder::new(pattern.trim_start_matches('/'))
                .literal_separator(true)
                .build()
                .with_context(|| format!("bad pattern {pattern:?}"))?
                .compile_matcher();
            let cat = TapeCatalog::open(state_dir)?;
            let found = cat.find(|p: &RelPath| glob.is_match(p.as_path()))?;
            let mut human = String::new();
            for v in &found {
                let tapes = v
                    .tapes
                    .iter()
                    .map(|(c, b)| format!("copy {c}: {}", b.join(",")))
                    .collect::<Vec<_>>()
                    .join("; ");
                human.push_str(&format!(
                    "{}  {} {} ({} set {}){}\n",
                    v.path.display(),
                    v.job,
                    v.snapshot,
                    v.kind.as_str(),
                    &v.set[..8.min(v.set.len())],
                    match v.change.as_str() {
                        "deleted" => "  deleted".to_string(),
                        "renamed" => "  renamed (content from an earlier set)".to_string(),
                        _ => format!("  {}  {tapes}", common::human::bytes(v.size.unwrap_or(0))),
                    }
                ));
            }
            if found.is_empty() {
                human = format!("no set in the tape catalog holds a path matching {pattern}");
            }
            out.value(&found, human.trim_end())
        }
    }
}

pub fn restore_cmd(
    out: &Out,
    cfg: &SetConfig,
    req: &tapectl::sets::restore::RestoreRequest,
    mut lib: Library,
) -> Result<()> {
    lib.keys = cfg.tape.keyring();
    let cat = TapeCatalog::open(&cfg.shared.state_dir)?;
    let bar = SetBar::new(out, "restoring");
    let r = tapectl::sets::restore::restore(&mut lib, &cat, req, &bar);
    bar.finish();
    let r = r?;
    let x = &r.restored;
    let mut human = format!(
        "restored {} files ({}), {} directories, {} symlinks of {} {} from {} tape(s): {}",
        x.files,
        common::human::bytes(x.bytes),
        x.dirs,
        x.symlinks,
        r.job,
        r.snapshot,
        r.tapes.len(),
        r.tapes.join(", ")
    );
    for w in &x.warnings {
        human.push_str(&format!("\nwarning: {w}"));
    }
    out.value(&r, &human)?;
    if !x.mismatches.is_empty() {
        for m in &x.mismatches {
            eprintln!("tapectl: {m}");
        }
        bail!(
            "{} restored file(s) do not match the manifest",
            x.mismatches.len()
        );
    }
    Ok(())
}

fn report_human(r: &SetReport) -> String {
    let mut s = format!(
        "set {}: {} set of {} snapshot {}{} in pool {}\n  {} files, {} written per copy",
        r.set,
        r.kind.as_str(),
        r.job,
        r.snapshot,
        r.base_snapshot
            .as_deref()
            .map(|b| format!(" (changes since {b})"))
            .unwrap_or_default(),
        r.pool,
        r.files,
        common::human::bytes(r.bytes),
    );
    if r.base.is_some() {
        s.push_str(&format!(
            "; {} unchanged, {} renamed, {} deleted",
            r.unchanged, r.renamed, r.deleted
        ));
    }
    for c in &r.copies {
        s.push_str(&format!("\n  copy {} (drive {}):", c.copy, c.drive));
        for t in &c.tapes {
            s.push_str(&format!(
                " {}. {} {} at {:.0} MB/s",
                t.seq,
                t.barcode,
                common::human::bytes(t.bytes),
                t.mb_per_s
            ));
        }
    }
    for k in &r.skipped {
        s.push_str(&format!("\n  skipped {}: {}", k.barcode, k.reason));
    }
    for c in &r.copies {
        for k in &c.damaged {
            s.push_str(&format!(
                "\n  copy {}: {} is marked damaged ({}); what it held was written again on the next tape",
                c.copy, k.barcode, k.reason
            ));
        }
    }
    s
}
