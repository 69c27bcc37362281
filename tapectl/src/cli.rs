//! Command-line arguments and the dispatch from subcommands to the library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args as ClapArgs, Parser, Subcommand};

use common::config::ConfigError;
use tapectl::config::{LibraryConfig, Settings};
use tapectl::library::{Library, Target};
use tapectl::lock::LockError;

use crate::output::{Out, print_devices, print_drive_status, print_library_status, print_moves};

/// Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 device busy (locked by another process).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ConfigError>().is_some() {
        2
    } else if e
        .chain()
        .any(|c| matches!(c.downcast_ref::<LockError>(), Some(LockError::Busy { .. })))
    {
        3
    } else {
        1
    }
}

#[derive(Parser)]
#[command(
    name = "tapectl",
    version,
    about = "Drive a SCSI tape library: changer, LTO drives, and a virtual TS3200"
)]
pub struct Args {
    /// rackvault.toml holding a [library] table; without one, the virtual library under
    /// ~/.local/state/rackvault/vtl is used.
    #[arg(long, short, env = "RACKVAULT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Use the virtual library in this directory (overrides the config).
    #[arg(long, env = "RACKVAULT_VTL", global = true)]
    vtl: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// Wait up to this many seconds for a busy drive or changer.
    #[arg(long, default_value_t = 0, global = true)]
    wait: u64,
    /// Show SCSI commands and internal steps (debug log).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Changers and drives reachable with the configured transport, with serials.
    Devices,
    /// The library: status of drives, storage and import/export slots.
    #[command(subcommand)]
    Library(LibraryCmd),
    /// Load a cartridge (barcode, slot:N, ie:N) into a drive and wait until it is ready.
    Load {
        /// The cartridge: a barcode, slot:N or ie:N.
        what: String,
        /// The drive to load it into (numbered from 0, as `library status` shows them).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
    },
    /// Unload a drive back to the slot its cartridge came from.
    Unload {
        /// The drive to unload (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
    },
    /// Move a cartridge between places: slot:N, ie:N, drive:N, @ADDRESS or a barcode.
    Move {
        /// Where the cartridge is: slot:N, ie:N, drive:N, @ADDRESS or its barcode.
        from: String,
        /// Where it goes: slot:N, ie:N, drive:N or @ADDRESS (must be empty).
        to: String,
    },
    /// Move a cartridge to a free import/export slot, to take it offsite.
    Export {
        /// The cartridge's barcode (unloaded first if it is in a drive).
        barcode: String,
    },
    /// Move every cartridge in the import/export slots to free storage slots.
    Import,
    /// Clean a drive with a CLN* cartridge from a storage slot.
    Clean {
        /// The drive to clean (numbered from 0).
        #[arg(long, short)]
        drive: u16,
    },
    /// One drive: status, and raw record I/O.
    #[command(subcommand)]
    Drive(DriveCmd),
    /// LTFS volumes: format, list, copy files on and off.
    #[command(subcommand)]
    Ltfs(crate::cli_ltfs::LtfsCmd),
    /// The virtual library: create it, and play the operator at the door.
    #[command(subcommand)]
    Vtl(VtlCmd),
    /// Backup snapshots on tape: write, list, show sets.
    #[command(subcommand)]
    Set(crate::cli_set::SetCmd),
    /// Restore a snapshot (or paths of it) from its tape sets: loads the tapes it needs, reads each
    /// file's parts in tape order, checks every file against the manifest's BLAKE3.
    Restore {
        /// The backup job.
        job: String,
        /// The snapshot: its name, a unique prefix, or `latest` (of those on tape).
        snapshot: String,
        /// Paths in the snapshot to restore (default: all of it).
        paths: Vec<std::ffi::OsString>,
        /// The directory to restore into (created if missing).
        #[arg(long)]
        to: PathBuf,
        /// Replace files that exist in the target.
        #[arg(long)]
        overwrite: bool,
        /// Read this copy of the sets (default: the first).
        #[arg(long)]
        copy: Option<u32>,
        /// The drive to read with (numbered from 0).
        #[arg(long, short, default_value_t = 0)]
        drive: u16,
        /// Wait up to this many seconds for needed tapes that are not in the library to be put
        /// into it (default: fail at once, naming them).
        #[arg(long, value_name = "SECONDS")]
        wait_tapes: Option<u64>,
    },
    /// Tape encryption keys: create a key file, show its fingerprint and key slip.
    #[command(subcommand)]
    Key(crate::cli_key::KeyCmd),
    /// Cartridges: list them with where they are, label new ones, retire or mark them damaged.
    #[command(subcommand)]
    Media(crate::cli_media::MediaCmd),
    /// Offsite rotation: what goes to a vault, what is on its way, what comes back.
    #[command(subcommand)]
    Rotation(crate::cli_rotation::RotationCmd),
    /// The tape catalog: find which tapes hold a path.
    #[command(subcommand)]
    Catalog(crate::cli_set::CatalogCmd),
}

#[derive(Subcommand)]
enum LibraryCmd {
    /// Drives, import/export slots and storage slots with their barcodes.
    Status,
    /// INITIALIZE ELEMENT STATUS: make the robot re-scan every slot.
    Inventory,
    /// Lock (PREVENT MEDIUM REMOVAL) or unlock (ALLOW) the import/export door.
    Door {
        /// lock or unlock.
        #[arg(value_parser = ["lock", "unlock"])]
        action: String,
    },
}

#[derive(ClapArgs)]
struct DriveSel {
    /// The drive (numbered from 0, as `library status` shows them).
    #[arg(long, short, default_value_t = 0)]
    drive: u16,
}

#[derive(Subcommand)]
enum DriveCmd {
    /// Media, position, TapeAlert flags, MAM attributes, volume statistics.
    Status(DriveSel),
    /// Rewind to the beginning of partition 0.
    Rewind(DriveSel),
    /// Write a file as fixed-size records at the current position, then a filemark.
    Write {
        #[command(flatten)]
        sel: DriveSel,
        /// The file to write.
        file: PathBuf,
        /// Record size (suffixes K and M: 512K, 1M; at most 16M).
        #[arg(long, default_value = "512K", value_parser = parse_size)]
        block_size: usize,
    },
    /// Read records from the current position up to the next filemark into a file.
    Read {
        #[command(flatten)]
        sel: DriveSel,
        /// The file to write what is read into (must not exist).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Largest record expected.
        #[arg(long, default_value = "512K", value_parser = parse_size)]
        block_size: usize,
    },
}

#[derive(Subcommand)]
enum VtlCmd {
    /// Create a virtual TS3200 (in --vtl DIR, the config's [library] dir, or the default).
    Create {
        /// Number of storage slots.
        #[arg(long, default_value_t = 24)]
        slots: u16,
        /// Drive generations, e.g. lto6,lto6 (LTO-5 to LTO-9).
        #[arg(long, value_delimiter = ',', default_value = "lto6,lto6")]
        drives: Vec<String>,
        /// Capacity of each cartridge in MiB (small for tests).
        #[arg(long, default_value_t = 4096)]
        capacity_mb: u64,
        /// Barcodes placed into slots 1..N; CLN* are cleaning cartridges. Default: RV0001L6..RV0008L6, CLN001L1.
        #[arg(long, value_delimiter = ',')]
        barcodes: Option<Vec<String>>,
        /// Make the changer refuse drive identifiers (DVCID), like some real libraries.
        #[arg(long)]
        no_dvcid: bool,
    },
    /// The operator puts a cartridge into an import/export slot (a known one comes back with its data).
    Insert {
        /// The cartridge's barcode (e.g. RV0009L6; CLN* for a cleaning cartridge).
        barcode: String,
        /// The import/export slot to put it in (default: the first free one).
        #[arg(long)]
        ie: Option<u16>,
        /// Set the cartridge's write-protect tab.
        #[arg(long)]
        write_protected: bool,
        /// Capacity in MiB of a new cartridge (default: the library's).
        #[arg(long)]
        capacity_mb: Option<u64>,
    },
    /// The operator takes a cartridge out of an import/export slot (ie:N or a barcode).
    Remove {
        /// ie:N or the cartridge's barcode.
        what: String,
    },
    /// Inject a fault as JSON, e.g. '{"kind":"medium_error","barcode":"RV0001L6","partition":0,"block":7,"on":"read"}'
    /// (kinds: medium_error, unit_attention, not_ready_for, early_warning_at, end_of_medium_at,
    /// write_protect, needs_cleaning); --clear removes them all first.
    Fault {
        /// The fault, as JSON (see above).
        spec: Option<String>,
        /// Remove every fault before adding SPEC.
        #[arg(long)]
        clear: bool,
    },
    /// The virtual library's own state (cartridges, drives, faults).
    Status,
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1024),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("bad size {s:?} (e.g. 512K, 1M, 65536)"))?;
    match n.checked_mul(mult) {
        Some(v) if v > 0 && v <= 16 << 20 => Ok(v),
        _ => Err(format!("size {s:?} must be between 1 byte and 16M")),
    }
}

impl Args {
    fn settings(&self) -> Result<Settings> {
        let mut s = match &self.config {
            Some(p) => Settings::load(p)?,
            None => Settings::embedded_default(),
        };
        if let Some(dir) = &self.vtl {
            s.library = LibraryConfig::Virtual { dir: dir.clone() };
        }
        Ok(s)
    }

    fn vtl_dir(&self) -> Result<PathBuf> {
        match self.settings()?.library {
            LibraryConfig::Virtual { dir } => Ok(dir),
            _ => bail!("the configured [library] is not virtual; pass --vtl DIR"),
        }
    }
}

impl Args {
    /// `--json` was given: errors go to stderr as JSON too.
    pub fn json(&self) -> bool {
        self.json
    }
}

pub fn run(args: Args) -> Result<()> {
    let out = Out { json: args.json };
    let wait = Duration::from_secs(args.wait);
    let purpose = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect::<Vec<_>>()
        .join(" ");
    let purpose = format!("tapectl {purpose}");
    let open = |args: &Args| -> Result<Library> { Library::open(args.settings()?, wait, &purpose) };
    match &args.cmd {
        Cmd::Devices => {
            let backend = tapectl::backend::Backend::open(&args.settings()?.library)?;
            print_devices(&out, &backend.devices())
        }
        Cmd::Library(LibraryCmd::Status) => print_library_status(&out, &open(&args)?.status()?),
        Cmd::Library(LibraryCmd::Inventory) => {
            let mut lib = open(&args)?;
            lib.changer().initialize()?;
            print_library_status(&out, &lib.status()?)
        }
        Cmd::Library(LibraryCmd::Door { action }) => {
            let lock = action == "lock";
            open(&args)?.changer().prevent_removal(lock)?;
            out.done(if lock {
                "the import/export door is locked"
            } else {
                "the import/export door is unlocked"
            })
        }
        Cmd::Load { what, drive } => {
            let target: Target = what.parse()?;
            print_moves(&out, &open(&args)?.load(&target, *drive)?)
        }
        Cmd::Unload { drive } => print_moves(&out, &[open(&args)?.unload(*drive)?]),
        Cmd::Move { from, to } => print_moves(
            &out,
            &[open(&args)?.move_between(&from.parse()?, &to.parse()?)?],
        ),
        Cmd::Export { barcode } => print_moves(&out, &[open(&args)?.export(barcode)?]),
        Cmd::Import => {
            let mut lib = open(&args)?;
            let moves = lib.import()?;
            // With a configuration, the catalog learns where the returned tapes are now.
            if let Ok(cfg) = crate::cli_set::SetConfig::load(args.config.as_deref()) {
                let cat = tapectl::catalog::TapeCatalog::open(&cfg.shared.state_dir)?;
                tapectl::sets::allocate::reconcile(&cat, &lib.inventory()?, "tapectl import")?;
            }
            print_moves(&out, &moves)
        }
        Cmd::Clean { drive } => print_moves(&out, &open(&args)?.clean(*drive)?),
        Cmd::Drive(cmd) => drive_cmd(&args, &out, cmd, open(&args)?),
        Cmd::Ltfs(cmd) => {
            let mut lib = open(&args)?;
            // With a configuration, an encrypted tape is read with its key (docs/encryption.md).
            if let Some(p) = &args.config {
                let cf = common::config::ConfigFile::load(p)?;
                lib.keys = tapectl::pools::TapeSettings::from_file(&cf)?.keyring();
            }
            crate::cli_ltfs::run(&out, cmd, lib)
        }
        Cmd::Vtl(cmd) => vtl_cmd(&args, &out, cmd),
        Cmd::Set(cmd) => {
            let cfg = crate::cli_set::SetConfig::load(args.config.as_deref())?;
            crate::cli_set::set_cmd(&out, &cfg, cmd, &|| open(&args))
        }
        Cmd::Restore {
            job,
            snapshot,
            paths,
            to,
            overwrite,
            copy,
            drive,
            wait_tapes,
        } => {
            let cfg = crate::cli_set::SetConfig::load(args.config.as_deref())?;
            let paths = paths
                .iter()
                .map(|p| {
                    use std::os::unix::ffi::OsStrExt;
                    common::relpath::RelPath::parse_user(p.as_bytes())
                })
                .collect::<Result<Vec<_>, _>>()?;
            crate::cli_set::restore_cmd(
                &out,
                &cfg,
                &tapectl::sets::restore::RestoreRequest {
                    job,
                    snapshot,
                    paths: &paths,
                    to,
                    overwrite: *overwrite,
                    copy: *copy,
                    drive: *drive,
                    state_dir: &cfg.shared.state_dir,
                    wait_tapes: wait_tapes.map(Duration::from_secs),
                },
                open(&args)?,
            )
        }
        Cmd::Rotation(cmd) => {
            let cfg = crate::cli_set::SetConfig::load(args.config.as_deref())?;
            crate::cli_rotation::rotation_cmd(&out, &cfg, cmd, &|| open(&args))
        }
        Cmd::Key(cmd) => crate::cli_key::key_cmd(&out, cmd),
        Cmd::Media(cmd) => {
            let cfg = crate::cli_set::SetConfig::load(args.config.as_deref())?;
            crate::cli_media::media_cmd(&out, &cfg, cmd, &|| open(&args))
        }
        Cmd::Catalog(cmd) => {
            let cfg = crate::cli_set::SetConfig::load(args.config.as_deref())?;
            crate::cli_set::catalog_cmd(&out, &cfg, cmd, &|| open(&args))
        }
    }
}

fn drive_cmd(_args: &Args, out: &Out, cmd: &DriveCmd, mut lib: Library) -> Result<()> {
    let n = match cmd {
        DriveCmd::Status(s) | DriveCmd::Rewind(s) => s.drive,
        DriveCmd::Write { sel, .. } | DriveCmd::Read { sel, .. } => sel.drive,
    };
    let (mut drive, _lock) = lib.open_drive(n)?;
    let element = lib
        .inventory()
        .ok()
        .and_then(|inv| inv.drives.get(n as usize).cloned());
    // The changer's barcode, for cartridges whose MAM has none (LTFS writes it; a new tape has not).
    let barcode = element.as_ref().and_then(|e| e.volume_tag.clone());
    drop(lib); // the changer lock is not needed while we talk to the drive
    // The changer knows an empty drive: say so, instead of what a command on no medium reports.
    if !matches!(cmd, DriveCmd::Status(_)) && element.is_some_and(|e| !e.full) {
        bail!("drive {n} is empty; load a cartridge first: tapectl load BARCODE --drive {n}");
    }
    match cmd {
        DriveCmd::Status(_) => {
            let mut st = drive.status();
            if st.barcode.is_none() && st.medium_present != Some(false) {
                st.barcode = barcode;
            }
            print_drive_status(out, &st)
        }
        DriveCmd::Rewind(_) => {
            use ltfs::TapeDevice;
            drive.rewind()?;
            out.done("rewound")
        }
        DriveCmd::Write {
            file, block_size, ..
        } => {
            use ltfs::TapeDevice;
            let f = std::fs::File::open(file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            // Records are large: no BufReader, which would only add a copy.
            let stats = drive.write_records_from(f, *block_size)?;
            drive.write_filemarks(1)?;
            if stats.bytes < size {
                bail!(
                    "the tape reached early warning after {} of {size} bytes of {}: the rest was not written (a filemark ends what was)",
                    stats.bytes,
                    file.display()
                );
            }
            let warn = if drive.early_warning() {
                " (early warning: the tape is nearly full)"
            } else {
                ""
            };
            out.value(
                &stats,
                &format!(
                    "wrote {} record{}, {} bytes, and a filemark{warn}",
                    stats.records,
                    plural(stats.records),
                    stats.bytes
                ),
            )
        }
        DriveCmd::Read { to, block_size, .. } => {
            let f = std::fs::File::create(to)
                .with_context(|| format!("cannot create {}", to.display()))?;
            let stats = drive.read_records_to(f, *block_size)?;
            out.value(
                &stats,
                &format!(
                    "read {} record{}, {} bytes, up to {:?}",
                    stats.records,
                    plural(stats.records),
                    stats.bytes,
                    stats.end
                ),
            )
        }
    }
}

fn vtl_cmd(args: &Args, out: &Out, cmd: &VtlCmd) -> Result<()> {
    let dir = args.vtl_dir()?;
    match cmd {
        VtlCmd::Create {
            slots,
            drives,
            capacity_mb,
            barcodes,
            no_dvcid,
        } => {
            let mut spec = vtl::LibrarySpec {
                storage_slots: *slots,
                cartridge_capacity_mb: *capacity_mb,
                ..Default::default()
            };
            spec.drives = drives
                .iter()
                .map(|d| d.parse())
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            spec.barcodes = match barcodes {
                Some(b) => b.clone(),
                None => (1..=8)
                    .map(|i| format!("RV{i:04}L6"))
                    .chain(["CLN001L1".to_string()])
                    .collect(),
            };
            spec.dvcid_supported = !no_dvcid;
            let lib = vtl::Library::create(&dir, &spec)?;
            out.value(
                &lib.status()?,
                &format!("created a virtual library in {}", dir.display()),
            )
        }
        VtlCmd::Insert {
            barcode,
            ie,
            write_protected,
            capacity_mb,
        } => {
            let lib = vtl::Library::open(&dir)?;
            let opts = vtl::CartridgeOptions {
                capacity_mb: *capacity_mb,
                write_protected: *write_protected,
                generation: None,
            };
            let slot = lib.insert(barcode, *ie, &opts)?;
            out.done(&format!("{barcode} is in ie {slot}"))
        }
        VtlCmd::Remove { what } => {
            let lib = vtl::Library::open(&dir)?;
            let target = match what.parse::<Target>()? {
                Target::Place(tapectl::library::Place::Ie(n)) => vtl::DoorTarget::IeSlot(n),
                Target::Barcode(b) => vtl::DoorTarget::Barcode(b),
                _ => bail!(
                    "the operator can only take cartridges out of import/export slots (ie:N or a barcode)"
                ),
            };
            let barcode = lib.remove(target)?;
            out.done(&format!("{barcode} taken out of the library"))
        }
        VtlCmd::Fault { spec, clear } => {
            let lib = vtl::Library::open(&dir)?;
            if *clear {
                lib.clear_faults()?;
            }
            if let Some(j) = spec {
                let fault: vtl::Fault = serde_json::from_str(j).context("bad fault JSON")?;
                lib.set_fault(fault)?;
            }
            out.done("faults updated")
        }
        VtlCmd::Status => {
            let lib = vtl::Library::open(&dir)?;
            let st = lib.status()?;
            out.value(&st, &serde_json::to_string_pretty(&st)?)
        }
    }
}
