//! A tgt virtual tape library (scripts/tgt-vtl.sh) on a port of its own, stopped on drop. Needs root
//! and the Debian package tgt; when they are missing the tests fail and say so.

#![allow(dead_code)]

pub mod sets;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use scsi::{DataDir, SenseKey, Transport};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub struct Tgt {
    pub dir: tempfile::TempDir,
    pub url: String,
    /// One tgt at a time in a test binary: two starting at once chose the same port (it is
    /// derived from the process id), and tgtadm then configured the other's target.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static TGT: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Tgt {
    pub fn start() -> Tgt {
        let one_at_a_time = TGT.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the tgt tests need root (tgtd); run scripts/test.sh as root"
        );
        let have = Command::new("sh")
            .args(["-c", "PATH=\"$PATH:/usr/sbin:/sbin\" command -v tgtd"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            have,
            "tgtd not found: the tgt tests need the Debian package tgt (scripts/test.sh installs it)"
        );
        let dir = tempfile::Builder::new()
            .prefix("rackvault-tgt")
            .tempdir()
            .unwrap();
        // Distinct from the iscsi crate's test ports (3300..) so both test binaries can run at once.
        let base = 3900 + (std::process::id() % 500) as u16 * 10;
        for port in base..base + 10 {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let out = Command::new("bash")
                .arg(repo().join("scripts/tgt-vtl.sh"))
                .args([
                    "start",
                    dir.path().join("vtl").to_str().unwrap(),
                    &port.to_string(),
                ])
                .output()
                .unwrap();
            if out.status.success() {
                let url = String::from_utf8(out.stdout)
                    .unwrap()
                    .lines()
                    .last()
                    .unwrap()
                    .trim()
                    .to_string();
                return Tgt {
                    dir,
                    url,
                    _one_at_a_time: one_at_a_time,
                };
            }
            eprintln!(
                "tgt-vtl.sh start on {port} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!("could not start tgt on any port from {base}");
    }

    /// A rackvault.toml reaching this library over iSCSI.
    pub fn config(&self, locks: &Path) -> PathBuf {
        let p = self.dir.path().join("rackvault.toml");
        std::fs::write(
            &p,
            format!(
                "[library]\ntransport = \"iscsi\"\nurl = \"{}\"\nchanger_lun = 3\ndrive_luns = [1, 2]\nlock_dir = \"{}\"\n",
                self.url,
                locks.display()
            ),
        )
        .unwrap();
        p
    }
}

impl Drop for Tgt {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/tgt-vtl.sh"))
            .args(["stop", self.dir.path().join("vtl").to_str().unwrap()])
            .output();
    }
}

pub fn tapectl(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapectl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RACKVAULT_VTL")
        .output()
        .unwrap()
}

pub fn ok(config: &Path, args: &[&str]) -> String {
    let o = tapectl(config, args);
    assert!(
        o.status.success(),
        "tapectl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).unwrap()
}

pub fn json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = ok(config, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("tapectl {args:?}: bad JSON ({e}): {out}"))
}

/// MOVE MEDIUM on a changer transport (the virtual library), retrying past unit attentions.
pub fn move_medium(changer: &mut impl Transport, from: u16, to: u16) {
    let mut cdb = [0u8; 12];
    cdb[0] = 0xa5;
    cdb[2..4].copy_from_slice(&vtl::TRANSPORT_ADDRESS.to_be_bytes());
    cdb[4..6].copy_from_slice(&from.to_be_bytes());
    cdb[6..8].copy_from_slice(&to.to_be_bytes());
    for _ in 0..3 {
        match scsi::execute(changer, &cdb, DataDir::None, Duration::from_secs(60)) {
            Ok(_) => return,
            Err(e) if e.sense().is_some_and(|s| s.key == SenseKey::UnitAttention) => continue,
            Err(e) => panic!("MOVE MEDIUM {from:#x} -> {to:#x}: {e}"),
        }
    }
    panic!("MOVE MEDIUM keeps failing with UNIT ATTENTION");
}

/// A virtual library whose one cartridge `barcode` is already in drive 0 (moved there by the changer),
/// with `faults` injected first. Drop the TempDir last.
pub fn vtl_with_tape_loaded(
    barcode: &str,
    faults: &[vtl::Fault],
) -> (tempfile::TempDir, vtl::Library) {
    let tmp = tempfile::tempdir().unwrap();
    let spec = vtl::LibrarySpec {
        barcodes: vec![barcode.into()],
        ..vtl::LibrarySpec::default()
    };
    let lib = vtl::Library::create(&tmp.path().join("lib"), &spec).unwrap();
    for f in faults {
        lib.set_fault(f.clone()).unwrap();
    }
    move_medium(
        &mut lib.changer(),
        vtl::FIRST_STORAGE_ADDRESS,
        vtl::FIRST_DRIVE_ADDRESS,
    );
    (tmp, lib)
}

/// A new `Drive` handle on drive 0 of a virtual library, waited until ready; modes untouched.
pub fn vtl_drive_as_is(lib: &vtl::Library) -> tapectl::drive::Drive<vtl::VirtualDrive> {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mut d = tapectl::drive::Drive::new(lib.drive(0).unwrap()).unwrap();
    d.set_poll_interval(Duration::from_millis(10));
    d.wait_until_ready(Duration::from_secs(10)).unwrap();
    d
}

/// [`vtl_drive_as_is`] with tapectl's default modes (variable blocks, buffered, compression).
pub fn vtl_drive(lib: &vtl::Library) -> tapectl::drive::Drive<vtl::VirtualDrive> {
    let mut d = vtl_drive_as_is(lib);
    d.set_default_modes().unwrap();
    d
}

/// `tapectl --vtl DIR` with its own lock directory and no configuration from the environment.
pub fn tapectl_on_vtl(dir: &Path, locks: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tapectl"));
    c.arg("--vtl")
        .arg(dir)
        .env("RACKVAULT_LOCK_DIR", locks)
        .env_remove("RACKVAULT_CONFIG")
        .env_remove("RACKVAULT_VTL");
    c
}

/// Whether `mnt` is a mount point now (/proc/mounts).
pub fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.to_str().unwrap();
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want))
}

/// Fails, saying why, unless FUSE mounts can be made here: root and /dev/fuse. `what` names the
/// test in the message.
pub fn require_fuse(what: &str) {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "{what} needs root (it mounts with mount(2)); run scripts/test.sh as root"
    );
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: {what} needs the fuse device (modprobe fuse, or pass /dev/fuse into the container)"
    );
}
