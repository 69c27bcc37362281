//! `tapectl ltfs …`: format, list, copy onto and off an LTFS volume in a library drive.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use common::beneath::Beneath;
use common::relpath::RelPath;
use std::ops::Range;

use ltfs::index::names::{self, NameKind};
use ltfs::index::{Extent, MAX_DIR_DEPTH, MAX_NAME_BYTES, MAX_SYMLINK_BYTES, Times};
use ltfs::time::LtfsTime;
use ltfs::volume::{
    CheckReport, EntryInfo, EntryKind, FileMeta, FormatOptions, IndexSummary, Problem, SyncPolicy,
    Volume,
};
use serde::Serialize;

use tapectl::backend::BoxedTransport;
use tapectl::drive::Drive;
use tapectl::library::Library;

use crate::output::Out;
use crate::progress::{Bar, Counted};

#[derive(Subcommand)]
pub enum LtfsCmd {
    /// Make the loaded cartridge an LTFS volume (two partitions); its barcode becomes the volume serial.
    Format {
        /// The drive holding the volume (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
        /// The volume name in the LTFS label (default: none).
        #[arg(long)]
        name: Option<String>,
        /// Overwrite a tape that holds an LTFS volume or other data.
        #[arg(long)]
        force: bool,
        /// Tape block size (suffixes K and M; 4K to the drive's maximum).
        #[arg(long, default_value = "512K", value_parser = crate::cli::parse_size)]
        block_size: usize,
    },
    /// List a directory of the volume (or one file), with sizes, times and, with --long, extents.
    Ls {
        /// The drive holding the volume (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
        /// A directory or file on the volume.
        #[arg(default_value = "/")]
        path: String,
        /// Also show each file's extents (partition, block, offsets).
        #[arg(long, short)]
        long: bool,
    },
    /// Copy local files and directories onto the volume, under DEST.
    Put {
        /// The drive holding the volume (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
        /// SOURCE... DEST: local files or directories, then the directory on the volume they go under.
        #[arg(required = true, num_args = 2.., value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Write an index to the data partition after this many MiB of file data (rollback points).
        #[arg(long)]
        sync_every_mb: Option<u64>,
        /// ... and after this many seconds (default 300, like the reference implementation; 0 = never).
        #[arg(long, default_value_t = 300)]
        sync_every_secs: u64,
    },
    /// Copy files or directories off the volume into --to, reading in tape order; never overwrites.
    Get {
        /// The drive holding the volume (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
        /// Files or directories on the volume (e.g. /backup/src).
        #[arg(required = true)]
        paths: Vec<String>,
        /// Local directory to copy into (created if missing); nothing outside it is touched.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Index generations on the tape (rollback points), newest first.
    Generations {
        /// The drive holding the volume (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
    },
    /// Mount the volume read-only (FUSE) at MOUNTPOINT until it is unmounted (umount, or Ctrl-C).
    Mount {
        /// The drive holding the volume (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
        /// An empty directory to mount the volume on.
        mountpoint: PathBuf,
        /// Stay in the foreground (always so: run it in the background or from a systemd unit).
        #[arg(long)]
        foreground: bool,
    },
    /// Check the volume's consistency like ltfsck (never writes); --repair recovers to the last
    /// consistent index, or with --generation to an older one. Exit 0: consistent (after the
    /// repair); 1: problems found, or not repaired.
    Check {
        /// The drive holding the volume (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
        /// Recover: append missing filemarks, write a new index after extra blocks, rewrite the
        /// index partition and MAM coherency. Nothing the recovered index describes is touched.
        #[arg(long)]
        repair: bool,
        /// With --repair: roll back to this generation (see `ltfs generations`); it is written as a
        /// new, higher generation.
        #[arg(long, requires = "repair")]
        generation: Option<u64>,
    },
}

impl LtfsCmd {
    fn drive(&self) -> u16 {
        match self {
            LtfsCmd::Format { drive, .. }
            | LtfsCmd::Ls { drive, .. }
            | LtfsCmd::Put { drive, .. }
            | LtfsCmd::Get { drive, .. }
            | LtfsCmd::Generations { drive }
            | LtfsCmd::Mount { drive, .. }
            | LtfsCmd::Check { drive, .. } => *drive,
        }
    }
}

pub fn run(out: &Out, cmd: &LtfsCmd, mut lib: Library) -> Result<()> {
    let n = cmd.drive();
    let (mut drive, _lock) = lib.open_drive(n)?;
    let keys = lib.keys.clone();
    let element = lib
        .inventory()
        .ok()
        .and_then(|inv| inv.drives.get(n as usize).cloned());
    let barcode = element.as_ref().and_then(|e| e.volume_tag.clone());
    drop(lib);
    // The changer knows an empty drive: say so, instead of what a command on no medium reports.
    if element.is_some_and(|e| !e.full) {
        bail!("drive {n} is empty; load a cartridge first: tapectl load BARCODE --drive {n}");
    }
    if let LtfsCmd::Format {
        name,
        force,
        block_size,
        ..
    } = cmd
    {
        let opts = FormatOptions {
            barcode: barcode.clone(),
            volume_name: name.clone(),
            block_size: *block_size,
            force: *force,
            ..FormatOptions::default()
        };
        let vol = Volume::format(drive, &opts).with_context(|| {
            format!(
                "formatting {} in drive {n}",
                barcode.as_deref().unwrap_or("the cartridge")
            )
        })?;
        let uuid = vol.index().volume_uuid.clone();
        vol.unmount()?;
        return out.value(
            &serde_json::json!({ "barcode": barcode, "uuid": uuid, "block_size": block_size }),
            &format!(
                "formatted {} as LTFS volume {uuid}",
                barcode.as_deref().unwrap_or("the cartridge")
            ),
        );
    }
    if let LtfsCmd::Check {
        repair, generation, ..
    } = cmd
    {
        return check(out, drive, *repair, *generation, n);
    }
    let shown = barcode.as_deref().unwrap_or("the cartridge");
    // An encrypted tape: its key, found by the fingerprint it names, is set on the drive (it stays
    // set until the cartridge is unloaded).
    tapectl::sets::crypt::unlock_for_read(&mut drive, &keys, shown)?;
    let mut vol = match Volume::mount(drive) {
        Ok(v) => v,
        Err(ltfs::volume::VolumeError::Construct(
            ltfs::construct::ConstructError::PartitionCount(p),
        )) => bail!(
            "drive {n}: {shown} is not an LTFS volume ({p} partition{}; LTFS needs 2)\nformat it with: tapectl ltfs format --drive {n}",
            if p == 1 { "" } else { "s" }
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("mounting the LTFS volume on {shown} in drive {n}")));
        }
    };
    let report = vol.mount_report().clone();
    if !report.is_consistent() {
        eprintln!(
            "tapectl: warning: the volume is not consistent (extra blocks after the last index {:?}, missing trailing filemark {:?}); using the last complete index (`tapectl ltfs check --repair` makes it consistent)",
            report.extra_blocks, report.missing_trailing_fm
        );
    }
    if let LtfsCmd::Mount { mountpoint, .. } = cmd {
        let name = barcode.as_deref().unwrap_or("ltfs");
        // The drive lock is held until the file system is unmounted; nothing is written.
        crate::fuse_mount::serve(vol, mountpoint, name)?.into_device();
        return Ok(());
    }
    let result = match cmd {
        LtfsCmd::Format { .. } | LtfsCmd::Check { .. } => unreachable!("handled above"),
        LtfsCmd::Ls { path, long, .. } => ls(out, &vol, path, *long),
        LtfsCmd::Put {
            paths,
            sync_every_mb,
            sync_every_secs,
            ..
        } => {
            vol.set_sync_policy(SyncPolicy {
                every_bytes: sync_every_mb.map(|m| m.saturating_mul(1 << 20)),
                every: (*sync_every_secs > 0)
                    .then(|| std::time::Duration::from_secs(*sync_every_secs)),
            });
            put(out, &mut vol, paths)
        }
        LtfsCmd::Get { paths, to, .. } => get(out, &mut vol, paths, to),
        LtfsCmd::Generations { .. } => {
            let gens = vol.generations()?;
            let rows: Vec<_> = gens
                .iter()
                .map(|g| serde_json::json!({ "generation": g.generation, "partition": g.location.partition.to_string(), "block": g.location.start_block, "time": g.update_time.to_string() }))
                .collect();
            let human = gens
                .iter()
                .map(|g| {
                    format!(
                        "{:>6}  {}/{:<8} {}",
                        g.generation, g.location.partition, g.location.start_block, g.update_time
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            out.value(&rows, &format!("generation  location   time\n{human}"))
        }
        LtfsCmd::Mount { .. } => unreachable!("handled above"),
    };
    // Unmount even after a failed command: what was written gets its index.
    let unmounted = vol
        .unmount()
        .context("unmounting (writing the final indexes)");
    result.and(unmounted.map(|_| ()))
}

fn problem_json(p: &Problem) -> serde_json::Value {
    serde_json::json!({
        "kind": p.kind.as_str(),
        "partition": p.partition,
        "block": p.block,
        "message": p.message,
    })
}

fn summary_json(g: &IndexSummary) -> serde_json::Value {
    serde_json::json!({
        "generation": g.generation,
        "partition": g.location.partition.to_string(),
        "block": g.location.start_block,
        "previous": g.previous.map(|b| format!("{}/{}", b.partition, b.start_block)),
        "time": g.update_time.to_string(),
    })
}

fn report_json(r: &CheckReport) -> serde_json::Value {
    serde_json::json!({
        "consistent": r.consistent,
        "problems": r.problems.iter().map(problem_json).collect::<Vec<_>>(),
        "notes": r.notes.iter().map(problem_json).collect::<Vec<_>>(),
        "current": r.current.as_ref().map(summary_json),
        "choice": r.choice.map(|c| format!("{c:?}")),
        "partitions": r.partitions.iter().map(|p| serde_json::json!({
            "partition": p.partition,
            "id": p.id.to_string(),
            "eod": p.eod,
            "last_index": p.last_index.as_ref().map(summary_json),
            "trailing_filemark": p.trailing_filemark,
            "extra_blocks": p.extra_blocks,
        })).collect::<Vec<_>>(),
        "generations": r.generations.iter().map(summary_json).collect::<Vec<_>>(),
    })
}

fn report_human(r: &CheckReport) -> String {
    let mut s = String::new();
    match &r.current {
        Some(c) => s.push_str(&format!(
            "current index: generation {} at {}/{}\n",
            c.generation, c.location.partition, c.location.start_block
        )),
        None => s.push_str("current index: none\n"),
    }
    for p in &r.partitions {
        s.push_str(&format!(
            "partition {} ({}): end of data {}, last index {}, {} extra block(s)\n",
            p.partition,
            p.id,
            p.eod,
            p.last_index.as_ref().map_or("none".into(), |i| format!(
                "generation {} at block {}{}",
                i.generation,
                i.location.start_block,
                if p.trailing_filemark {
                    ""
                } else {
                    " (no trailing filemark)"
                }
            )),
            p.extra_blocks
        ));
    }
    for p in &r.problems {
        s.push_str(&format!("problem: {p}\n"));
    }
    for p in &r.notes {
        s.push_str(&format!("note: {p}\n"));
    }
    s.push_str(if r.consistent {
        "the volume is consistent"
    } else {
        "the volume is NOT consistent"
    });
    s
}

fn check(
    out: &Out,
    mut drive: Drive<BoxedTransport>,
    repair: bool,
    generation: Option<u64>,
    n: u16,
) -> Result<()> {
    if !repair {
        let r = Volume::check(&mut drive)
            .with_context(|| format!("checking the LTFS volume in drive {n}"))?;
        out.value(&report_json(&r), &report_human(&r))?;
        if !r.consistent {
            bail!(
                "the volume is not consistent ({} problem(s)); `tapectl ltfs check --repair` recovers it",
                r.problems.len()
            );
        }
        return Ok(());
    }
    let r = Volume::repair(&mut drive, generation)
        .with_context(|| format!("repairing the LTFS volume in drive {n}"))?;
    let mut human = String::from("before:\n");
    human.push_str(&report_human(&r.before));
    human.push_str("\n\nrepair:\n");
    if r.actions.is_empty() {
        human.push_str("  nothing to do\n");
    }
    for a in &r.actions {
        human.push_str(&format!("  {a}\n"));
    }
    human.push_str(&format!(
        "  recovered generation {}{}; current index: generation {} at {}/{}\n\nafter:\n",
        r.recovered.generation,
        if r.rolled_back { " (rollback)" } else { "" },
        r.current.generation,
        r.current.location.partition,
        r.current.location.start_block
    ));
    human.push_str(&report_human(&r.after));
    out.value(
        &serde_json::json!({
            "before": report_json(&r.before),
            "actions": r.actions,
            "recovered": summary_json(&r.recovered),
            "rolled_back": r.rolled_back,
            "current": summary_json(&r.current),
            "after": report_json(&r.after),
            "consistent": r.after.consistent,
        }),
        &human,
    )?;
    if !r.after.consistent {
        bail!("the volume is still not consistent after the repair");
    }
    Ok(())
}

#[derive(Serialize)]
struct Listed {
    name: String,
    kind: &'static str,
    length: u64,
    modified: String,
    symlink: Option<String>,
    extents: Vec<ExtentOut>,
}

#[derive(Serialize)]
struct ExtentOut {
    file_offset: u64,
    partition: String,
    start_block: u64,
    byte_offset: u64,
    byte_count: u64,
}

fn listed(e: &EntryInfo) -> Listed {
    Listed {
        name: e.name.clone(),
        kind: match e.kind {
            EntryKind::Directory => "directory",
            EntryKind::File => "file",
            EntryKind::Symlink(_) => "symlink",
        },
        length: e.length,
        modified: e.times.modify.to_string(),
        symlink: match &e.kind {
            EntryKind::Symlink(t) => Some(t.clone()),
            _ => None,
        },
        extents: e.extents.iter().map(extent_out).collect(),
    }
}

fn extent_out(x: &Extent) -> ExtentOut {
    ExtentOut {
        file_offset: x.file_offset,
        partition: x.partition.to_string(),
        start_block: x.start_block,
        byte_offset: x.byte_offset,
        byte_count: x.byte_count,
    }
}

fn ls(out: &Out, vol: &Volume<Drive<BoxedTransport>>, path: &str, long: bool) -> Result<()> {
    let info = vol.stat(path)?;
    let entries = if info.kind == EntryKind::Directory {
        vol.list(path)?
    } else {
        vec![info]
    };
    let rows: Vec<Listed> = entries.iter().map(listed).collect();
    let mut s = String::new();
    for r in &rows {
        let kind = match r.kind {
            "directory" => 'd',
            "symlink" => 'l',
            _ => '-',
        };
        s.push_str(&format!(
            "{kind} {:>12}  {}  {}",
            r.length,
            &r.modified[..19],
            common::escape::escape(&r.name)
        ));
        if let Some(t) = &r.symlink {
            s.push_str(&format!(" -> {}", common::escape::escape(t)));
        }
        s.push('\n');
        if long {
            for x in &r.extents {
                s.push_str(&format!(
                    "      extent at {}: {}/{} +{} bytes {}\n",
                    x.file_offset, x.partition, x.start_block, x.byte_offset, x.byte_count
                ));
            }
        }
    }
    out.value(&rows, s.trim_end())
}

fn times_of(m: &fs::Metadata) -> Times {
    let t = |secs: i64, nanos: i64| LtfsTime::new(secs, nanos.clamp(0, 999_999_999) as u32);
    let modify = t(m.mtime(), m.mtime_nsec());
    Times {
        creation: modify,
        change: t(m.ctime(), m.ctime_nsec()),
        modify,
        access: t(m.atime(), m.atime_nsec()),
        backup: modify,
    }
}

fn meta_of(m: &fs::Metadata) -> FileMeta {
    FileMeta {
        times: Some(times_of(m)),
        read_only: m.mode() & 0o222 == 0,
        xattrs: Vec::new(),
    }
}

fn join(dest: &str, name: &str) -> String {
    format!("{}/{name}", dest.trim_end_matches('/'))
}

/// One step of a put, planned before anything is written.
enum Op {
    /// A directory (created with its parents; existing ones are kept).
    Dir { dest: String },
    /// A directory's times, once its entries are in (adding them moved them).
    DirTimes { dest: String, times: Times },
    File {
        src: PathBuf,
        dest: String,
        meta: FileMeta,
    },
    Symlink {
        dest: String,
        target: String,
        meta: FileMeta,
    },
}

/// What a put will write, checked before the first byte goes to tape: every name is UTF-8 and a valid
/// LTFS name, unique in its directory after NFC normalisation, new on the volume (existing
/// directories are merged), directories no deeper than an LTFS index holds
/// (`ltfs::index::MAX_DIR_DEPTH`, what the reference implementation reads), symlink targets valid, and
/// no file longer than the volume holds. A source that breaks one of these fails the put with nothing
/// written, instead of half a copy.
struct Plan {
    ops: Vec<Op>,
    /// Planned destinations (NFC): whether each is a directory, and new on the volume.
    dests: std::collections::HashMap<String, (bool, bool)>,
    max_length: Option<u64>,
}

impl Plan {
    fn refuse(src: &Path, why: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}: {why}; nothing was written", src.display())
    }

    /// A name as LTFS stores it, or why it cannot be one.
    fn name<'a>(src: &Path, name: &'a std::ffi::OsStr) -> Result<&'a str> {
        let Some(n) = name.to_str() else {
            return Err(Self::refuse(
                src,
                "the name is not UTF-8, which LTFS names must be (rename it, e.g. with convmv)",
            ));
        };
        let normal = names::nfc(n);
        names::validate(&normal, NameKind::Entry, MAX_NAME_BYTES)
            .map_err(|e| Self::refuse(src, format!("{n:?} cannot be an LTFS name: {e}")))?;
        Ok(n)
    }

    /// Records `dest` (a directory or not), refusing a second source for the same name and a name the
    /// volume already has (other than a directory for a directory). Returns whether `dest` is new on
    /// the volume; below a new directory (`parent_new`) nothing is looked up.
    fn claim(
        &mut self,
        vol: &Volume<Drive<BoxedTransport>>,
        src: &Path,
        dest: &str,
        dir: bool,
        parent_new: bool,
    ) -> Result<bool> {
        let key = names::nfc(dest).into_owned();
        let depth = dest.split('/').filter(|c| !c.is_empty()).count() - usize::from(!dir);
        if depth > MAX_DIR_DEPTH {
            return Err(Self::refuse(
                src,
                format!(
                    "{dest} would be nested {depth} directories deep, deeper than an LTFS index can hold \
                     ({MAX_DIR_DEPTH}: what the reference implementation reads)"
                ),
            ));
        }
        if let Some(&(was_dir, new)) = self.dests.get(&key) {
            if dir && was_dir {
                return Ok(new);
            }
            return Err(Self::refuse(
                src,
                format!("another source is also copied to {dest} (names are compared in NFC)"),
            ));
        }
        let new = parent_new
            || match vol.stat(dest) {
                Ok(info) if dir && info.kind == EntryKind::Directory => false,
                Ok(_) => {
                    return Err(Self::refuse(
                        src,
                        format!("{dest} already exists on the volume; choose another DEST"),
                    ));
                }
                Err(ltfs::volume::VolumeError::NotFound { .. }) => true,
                Err(e) => return Err(Self::refuse(src, e)),
            };
        self.dests.insert(key, (dir, new));
        Ok(new)
    }

    fn add(
        &mut self,
        vol: &Volume<Drive<BoxedTransport>>,
        src: &Path,
        dest: String,
        parent_new: bool,
    ) -> Result<()> {
        let m = fs::symlink_metadata(src)
            .with_context(|| format!("cannot read {}; nothing was written", src.display()))?;
        let ft = m.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(src)
                .with_context(|| format!("cannot read {}; nothing was written", src.display()))?;
            let Some(target) = target.to_str() else {
                return Err(Self::refuse(
                    src,
                    "the symlink target is not UTF-8, which LTFS names must be",
                ));
            };
            let normal = names::nfc(target);
            names::validate(&normal, NameKind::SymlinkTarget, MAX_SYMLINK_BYTES).map_err(|e| {
                Self::refuse(
                    src,
                    format!("symlink target {target:?} cannot be stored: {e}"),
                )
            })?;
            self.claim(vol, src, &dest, false, parent_new)?;
            self.ops.push(Op::Symlink {
                dest,
                target: target.to_string(),
                meta: meta_of(&m),
            });
        } else if ft.is_dir() {
            let new = self.claim(vol, src, &dest, true, parent_new)?;
            self.ops.push(Op::Dir { dest: dest.clone() });
            let mut entries: Vec<_> = fs::read_dir(src)
                .and_then(|d| d.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("cannot list {}; nothing was written", src.display()))?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let path = e.path();
                let name = e.file_name();
                let name = Self::name(&path, &name)?;
                self.add(vol, &path, join(&dest, name), new)?;
            }
            self.ops.push(Op::DirTimes {
                dest,
                times: times_of(&m),
            });
        } else if ft.is_file() {
            if let Some(max) = self.max_length
                && m.len() > max
            {
                return Err(Self::refuse(
                    src,
                    format!(
                        "{} bytes is more than the volume can hold ({max} bytes)",
                        m.len()
                    ),
                ));
            }
            self.claim(vol, src, &dest, false, parent_new)?;
            self.ops.push(Op::File {
                src: src.to_path_buf(),
                dest,
                meta: meta_of(&m),
            });
        } else {
            tracing::warn!(path = %src.display(), "not a file, directory or symlink: skipped");
        }
        Ok(())
    }
}

fn put(out: &Out, vol: &mut Volume<Drive<BoxedTransport>>, paths: &[PathBuf]) -> Result<()> {
    let (dest, sources) = paths.split_last().expect("clap requires two paths");
    let dest = dest
        .to_str()
        .context("DEST must be UTF-8; nothing was written")?
        .to_string();
    let mut plan = Plan {
        ops: Vec::new(),
        dests: std::collections::HashMap::new(),
        max_length: vol.max_file_length(),
    };
    for src in sources {
        let Some(name) = src.file_name() else {
            bail!(
                "{}: no usable file name; nothing was written",
                src.display()
            );
        };
        let name = Plan::name(src, name)?;
        plan.add(vol, src, join(&dest, name), false)?;
    }
    let (mut files, mut bytes) = (0u64, 0u64);
    let block = vol.block_size() as u64;
    let (total_files, total_bytes) = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::File { src, .. } => Some(fs::metadata(src).map_or(0, |m| m.len())),
            _ => None,
        })
        .fold((0, 0), |(n, b), len| (n + 1, b + len));
    let bar = Bar::new(!out.json, "writing", total_files, total_bytes);
    for op in plan.ops {
        match op {
            Op::Dir { dest } => vol.mkdir_p(&dest)?,
            Op::DirTimes { dest, times } => vol.set_dir_times(&dest, times)?,
            Op::Symlink { dest, target, meta } => {
                vol.symlink(&dest, &target, &meta)?;
                files += 1;
            }
            Op::File { src, dest, meta } => {
                let mut f = match fs::File::open(&src) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        tracing::warn!(path = %src.display(), "vanished since the put began: skipped");
                        continue;
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot open {}", src.display()));
                    }
                };
                let r = put_file(vol, &mut f, &dest, &meta, block, &bar)
                    .with_context(|| format!("copying {} to {dest}", src.display()))?;
                files += 1;
                bytes += r.length;
                bar.file_done(files);
            }
        }
    }
    bar.finish();
    out.value(
        &serde_json::json!({ "files": files, "bytes": bytes }),
        &format!("copied {files} files, {}", common::human::bytes(bytes)),
    )
}

/// Copies one local file: as one extent, or, when it has holes of at least a tape block, only its data
/// ranges, each an extent (the holes stay holes on tape, as the reference implementation writes them).
fn put_file(
    vol: &mut Volume<Drive<BoxedTransport>>,
    f: &mut fs::File,
    dest: &str,
    meta: &FileMeta,
    min_hole: u64,
    bar: &Bar,
) -> Result<ltfs::volume::PutReport> {
    use std::io::{Seek, SeekFrom};
    let len = f.metadata()?.len();
    let ranges = data_ranges(f, len, min_hole)?;
    f.seek(SeekFrom::Start(0))?;
    let whole = len == 0 || (ranges.len() == 1 && ranges[0] == (0..len));
    Ok(if whole {
        let counted = Counted {
            inner: &mut *f,
            bar,
        };
        vol.put_file(dest, counted, meta)?
    } else {
        let r = vol.put_file_sparse(dest, &mut *f, len, &ranges, meta)?;
        bar.bytes(len);
        r
    })
}

/// The data ranges of the first `len` bytes of `f` (SEEK_DATA/SEEK_HOLE), holes shorter than
/// `min_hole` counted as data. A file system that cannot say gives one range: all data.
fn data_ranges(f: &fs::File, len: u64, min_hole: u64) -> std::io::Result<Vec<Range<u64>>> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let seek = |off: u64, whence: libc::c_int| -> std::io::Result<Option<u64>> {
        let off = i64::try_from(off).map_err(std::io::Error::other)?;
        // SAFETY: lseek on a descriptor we own; it only moves the file offset.
        let r = unsafe { libc::lseek(fd, off, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        }
    };
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut off = 0;
    while off < len {
        let data = match seek(off, libc::SEEK_DATA) {
            Ok(Some(d)) if d < len => d,
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(vec![Range { start: 0, end: len }]);
            }
            Err(e) => return Err(e),
        };
        let hole = seek(data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        match out.last_mut() {
            Some(last) if data - last.end < min_hole => last.end = hole,
            None if data < min_hole => out.push(0..hole),
            _ => out.push(data..hole),
        }
        off = hole;
    }
    if let Some(last) = out.last_mut()
        && len - last.end < min_hole
    {
        last.end = len;
    }
    Ok(out)
}

/// One entry to copy off, with where it starts on tape, and where it goes below the target.
struct Wanted {
    tape_path: String,
    local: RelPath,
    info: EntryInfo,
}

/// The path below the target of an entry named `name` on tape inside `parent`.
fn child(parent: &RelPath, name: &str) -> Result<RelPath> {
    let joined = if parent.is_root() {
        name.as_bytes().to_vec()
    } else {
        [parent.as_bytes(), b"/", name.as_bytes()].concat()
    };
    match RelPath::parse(&joined) {
        Ok(p) if !name.contains('/') => Ok(p),
        _ => bail!(
            "the volume has an entry named {name:?} in {parent}, which cannot be a file name here"
        ),
    }
}

fn collect(
    vol: &Volume<Drive<BoxedTransport>>,
    tape_path: &str,
    local: RelPath,
    out: &mut Vec<Wanted>,
    dirs: &mut Vec<Wanted>,
) -> Result<()> {
    let info = vol.stat(tape_path)?;
    collect_entry(vol, tape_path, info, local, out, dirs)
}

/// Walks below an entry already looked up: children come from `list`, so each is found once.
fn collect_entry(
    vol: &Volume<Drive<BoxedTransport>>,
    tape_path: &str,
    info: EntryInfo,
    local: RelPath,
    out: &mut Vec<Wanted>,
    dirs: &mut Vec<Wanted>,
) -> Result<()> {
    if info.kind != EntryKind::Directory {
        out.push(Wanted {
            tape_path: tape_path.to_string(),
            local,
            info,
        });
        return Ok(());
    }
    for e in vol.list(tape_path)? {
        let child_tape = join(tape_path, &e.name);
        let child_local = child(&local, &e.name)?;
        collect_entry(vol, &child_tape, e, child_local, out, dirs)?;
    }
    dirs.push(Wanted {
        tape_path: tape_path.to_string(),
        local,
        info,
    });
    Ok(())
}

/// Copies files off the volume into `to`. Everything is created beneath `to` without following a
/// symlink (common::beneath): directories first, then files in tape order, symlinks last; nothing
/// existing is overwritten; directory and symlink times are restored at the end.
fn get(
    out: &Out,
    vol: &mut Volume<Drive<BoxedTransport>>,
    paths: &[String],
    to: &Path,
) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let tree = Beneath::open(to).with_context(|| format!("cannot open {}", to.display()))?;
    let mut wanted = Vec::new();
    let mut dirs = Vec::new();
    for p in paths {
        let trimmed = p.trim_end_matches('/');
        let local = match trimmed.rsplit('/').next().filter(|n| !n.is_empty()) {
            Some(name) => child(&RelPath::root(), name)?,
            None => RelPath::root(),
        };
        collect(
            vol,
            if trimmed.is_empty() { "/" } else { trimmed },
            local,
            &mut wanted,
            &mut dirs,
        )?;
    }
    if wanted.is_empty() {
        bail!(
            "nothing to copy: {} holds no files on this volume (an empty volume, or not the index \
             generation you expect: `tapectl ltfs check` lists them)",
            paths.join(", ")
        );
    }
    // Parents before children (collect pushed them after their contents).
    dirs.sort_by(|a, b| a.local.cmp(&b.local));
    for d in &dirs {
        if d.local.is_root() {
            continue;
        }
        match tree.lstat(&d.local)? {
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
            Some(_) => bail!(
                "{} exists and is not a directory; refusing to write through it",
                d.local.under(to).display()
            ),
            None => tree
                .mkdir(&d.local, 0o777)
                .with_context(|| format!("cannot create {}", d.local.under(to).display()))?,
        }
    }
    // Tape order: the drive then only reads forward.
    wanted.sort_by_key(|w| {
        w.info
            .extents
            .first()
            .map_or((' ', 0), |x| (x.partition, x.start_block))
    });
    let mut bytes = 0;
    let files: Vec<&Wanted> = wanted
        .iter()
        .filter(|w| !matches!(w.info.kind, EntryKind::Symlink(_)))
        .collect();
    let bar = Bar::new(
        !out.json,
        "reading",
        files.len() as u64,
        files.iter().map(|w| w.info.length).sum(),
    );
    for (done, w) in files.iter().enumerate() {
        let shown = w.local.under(to);
        // O_EXCL: never overwrite, and never follow a symlink planted at the name.
        let mut f = tree
            .create_file(&w.local, 0o666)
            .with_context(|| format!("cannot create {} (it exists?)", shown.display()))?;
        // Holes stay holes (seek, not zeros): an index cannot make this fill the disk.
        let n = vol
            .read_file_sparse(&w.tape_path, &mut f)
            .with_context(|| format!("reading {}", w.tape_path))?;
        bytes += n;
        bar.bytes(n);
        bar.file_done(done as u64 + 1);
        let mt: std::time::SystemTime = w.info.times.modify.into();
        f.set_modified(mt)
            .with_context(|| format!("cannot set the time of {}", shown.display()))?;
    }
    bar.finish();
    for w in &wanted {
        if let EntryKind::Symlink(target) = &w.info.kind {
            tree.symlink(&w.local, target.as_bytes()).with_context(|| {
                format!("cannot create symlink {}", w.local.under(to).display())
            })?;
        }
    }
    // Times last, deepest first: creating entries moved their parents' times.
    let symlinks = wanted
        .iter()
        .filter(|w| matches!(w.info.kind, EntryKind::Symlink(_)));
    // The target directory itself is the caller's: its time is left alone.
    let mut timed: Vec<&Wanted> = symlinks
        .chain(dirs.iter().filter(|d| !d.local.is_root()))
        .collect();
    timed.sort_by(|a, b| b.local.cmp(&a.local));
    for w in timed {
        let t = w.info.times.modify;
        tree.set_mtime(&w.local, t.secs, t.nanos)
            .with_context(|| format!("cannot set the time of {}", w.local.under(to).display()))?;
    }
    out.value(
        &serde_json::json!({ "files": wanted.len(), "bytes": bytes }),
        &format!(
            "copied {} files, {} to {}",
            wanted.len(),
            common::human::bytes(bytes),
            to.display()
        ),
    )
}
