//! The tapectl command line against the virtual TS3200: every changer policy, the operator's door,
//! drive I/O and device locks, through the same SCSI command sets a real library gets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod support;

struct Vtl {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    locks: PathBuf,
}

impl Vtl {
    fn new(extra: &[&str]) -> Vtl {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vtl");
        let locks = tmp.path().join("locks");
        let v = Vtl {
            dir,
            locks,
            _tmp: tmp,
        };
        let mut args = vec!["vtl", "create", "--capacity-mb", "64"];
        args.extend_from_slice(extra);
        v.ok(&args);
        v
    }

    fn cmd(&self, args: &[&str]) -> Output {
        support::tapectl_on_vtl(&self.dir, &self.locks)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "tapectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    fn fails(&self, args: &[&str]) -> (i32, String) {
        let o = self.cmd(args);
        assert!(!o.status.success(), "tapectl {args:?} should fail");
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    }

    fn tag(status: &Value, list: &str, i: usize) -> Option<String> {
        status[list][i]["volume_tag"].as_str().map(str::to_string)
    }
}

#[test]
fn status_shows_a_ts3200_with_barcodes_and_paired_drives() {
    let v = Vtl::new(&[]);
    let st = v.json(&["library", "status"]);
    assert_eq!(st["changer"]["product"], "3573-TL");
    assert_eq!(st["drives"].as_array().unwrap().len(), 2);
    assert_eq!(st["import_export"].as_array().unwrap().len(), 3);
    assert_eq!(st["slots"].as_array().unwrap().len(), 24);
    assert_eq!(Vtl::tag(&st, "slots", 0).as_deref(), Some("RV0001L6"));
    assert_eq!(st["slots"][8]["cleaning"], true, "{}", st["slots"][8]);
    assert!(
        st["drives"][0]["drive_id"]["serial"]
            .as_str()
            .unwrap()
            .len()
            > 3
    );
    let human = v.ok(&["library", "status"]);
    assert!(
        human.contains("slot 1") && human.contains("RV0001L6") && human.contains("drive 0"),
        "{human}"
    );
}

#[test]
fn load_write_read_unload_round_trip() {
    let v = Vtl::new(&[]);
    let moves = v.json(&["load", "RV0002L6", "--drive", "1"]);
    assert_eq!(
        moves[0]["to"],
        serde_json::json!({"kind": "drive", "number": 1})
    );
    let st = v.json(&["library", "status"]);
    assert_eq!(Vtl::tag(&st, "drives", 1).as_deref(), Some("RV0002L6"));
    assert_eq!(st["slots"][1]["full"], false);

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = v.dir.parent().unwrap().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    v.ok(&[
        "drive",
        "write",
        "--drive",
        "1",
        src.to_str().unwrap(),
        "--block-size",
        "256K",
    ]);
    v.ok(&["drive", "rewind", "--drive", "1"]);
    let back = v.dir.parent().unwrap().join("back.bin");
    v.ok(&[
        "drive",
        "read",
        "--drive",
        "1",
        "--to",
        back.to_str().unwrap(),
        "--block-size",
        "256K",
    ]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "data read back differs"
    );
    // The cartridge holds the LTFS file-backend layout: 12 records of 256 KiB (the last short), a filemark, EOD.
    let cart = v.dir.join("cartridges/RV0002L6");
    assert_eq!(
        std::fs::metadata(cart.join("0_0_R")).unwrap().len(),
        256 * 1024
    );
    assert!(
        cart.join("0_11_R").exists()
            && cart.join("0_12_F").exists()
            && cart.join("0_13_E").exists()
    );

    let st = v.json(&["drive", "status", "--drive", "1"]);
    assert!(
        st.to_string().contains("RV0002L6"),
        "drive status lacks the barcode: {st}"
    );

    let m = v.json(&["unload", "--drive", "1"]);
    assert_eq!(
        m[0]["to"],
        serde_json::json!({"kind": "slot", "number": 2}),
        "back to its home slot"
    );
}

#[test]
fn export_import_through_the_door() {
    let v = Vtl::new(&[]);
    v.ok(&["load", "slot:3", "--drive", "0"]);
    // Exporting a loaded tape unloads it first.
    let m = v.json(&["export", "RV0003L6"]);
    assert_eq!(
        m[0]["from"],
        serde_json::json!({"kind": "drive", "number": 0})
    );
    assert_eq!(m[0]["to"], serde_json::json!({"kind": "ie", "number": 1}));
    v.ok(&["vtl", "remove", "RV0003L6"]);
    let st = v.json(&["library", "status"]);
    assert!(
        st.to_string().find("RV0003L6").is_none(),
        "RV0003L6 is offsite: {st}"
    );
    // It comes back with a new tape; import puts both into free slots.
    v.ok(&["vtl", "insert", "RV0003L6"]);
    v.ok(&["vtl", "insert", "NEW001L6"]);
    let m = v.json(&["import"]);
    assert_eq!(m.as_array().unwrap().len(), 2);
    let st = v.json(&["library", "status"]);
    assert!(
        st["import_export"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["full"] == false)
    );
    assert_eq!(Vtl::tag(&st, "slots", 2).as_deref(), Some("RV0003L6"));
}

#[test]
fn a_locked_door_keeps_the_operator_out() {
    let v = Vtl::new(&[]);
    v.ok(&["export", "RV0007L6"]);
    v.ok(&["library", "door", "lock"]);
    let (_, e) = v.fails(&["vtl", "remove", "ie:1"]);
    assert!(e.to_lowercase().contains("lock"), "{e}");
    v.ok(&["library", "door", "unlock"]);
    v.ok(&["vtl", "remove", "ie:1"]);
}

#[test]
fn errors_are_clear_and_nothing_moves() {
    let v = Vtl::new(&[]);
    let (code, e) = v.fails(&["load", "NOPE01L6"]);
    assert_eq!(code, 1);
    assert!(e.contains("no cartridge with barcode NOPE01L6"), "{e}");
    let (_, e) = v.fails(&["move", "slot:1", "slot:2"]);
    assert!(e.contains("slot 2 is full (RV0002L6)"), "{e}");
    let (_, e) = v.fails(&["move", "slot:20", "slot:21"]);
    assert!(e.contains("slot 20 is empty"), "{e}");
    let (_, e) = v.fails(&["move", "@999", "slot:21"]);
    assert!(e.contains("no element at address 999"), "{e}");
    let (code, e) = v.fails(&[
        "--config",
        "/nonexistent/rackvault.toml",
        "library",
        "status",
    ]);
    assert_eq!(code, 2, "{e}");
    let st = v.json(&["library", "status"]);
    assert_eq!(Vtl::tag(&st, "slots", 0).as_deref(), Some("RV0001L6"));
}

#[test]
fn a_busy_drive_names_its_holder() {
    let v = Vtl::new(&[]);
    v.ok(&["load", "RV0001L6"]);
    let st = v.json(&["library", "status"]);
    let serial = st["drives"][0]["drive_id"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    // Hold the drive's lock the way another tapectl would.
    let lock_dir = v.locks.clone();
    std::fs::create_dir_all(&lock_dir).unwrap();
    let held = hold_lock(&lock_dir.join(format!("drive-{serial}.lock")));
    let (code, e) = v.fails(&["drive", "status"]);
    assert_eq!(code, 3, "{e}");
    assert!(e.contains("drive 0 is busy: held by pid"), "{e}");
    drop(held);
    v.ok(&["drive", "status"]);
}

fn hold_lock(path: &Path) -> std::fs::File {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.lock().unwrap();
    writeln!(f, "pid 4242 (test holder) since now").unwrap();
    f
}

#[test]
fn clean_uses_the_cleaning_cartridge_and_returns_it() {
    let v = Vtl::new(&[]);
    v.ok(&["vtl", "fault", r#"{"kind": "needs_cleaning", "drive": 0}"#]);
    v.ok(&["load", "RV0004L6"]);
    let ds = v.json(&["drive", "status"]);
    assert_eq!(
        ds["needs_cleaning"], true,
        "TapeAlert 0x14 should be set: {ds}"
    );
    let m = v.json(&["clean", "--drive", "0"]);
    let moves = m.as_array().unwrap();
    assert_eq!(moves.len(), 3, "unload, load cleaner, unload cleaner: {m}");
    assert_eq!(moves[1]["barcode"], "CLN001L1");
    let st = v.json(&["library", "status"]);
    assert_eq!(Vtl::tag(&st, "slots", 8).as_deref(), Some("CLN001L1"));
    assert_eq!(st["drives"][0]["full"], false);
    v.ok(&["load", "RV0004L6"]);
    let ds = v.json(&["drive", "status"]);
    assert_eq!(
        ds["needs_cleaning"], false,
        "cleaning cleared the flag: {ds}"
    );
}

#[test]
fn drives_pair_by_order_when_the_changer_refuses_dvcid() {
    let v = Vtl::new(&["--no-dvcid"]);
    let st = v.json(&["library", "status"]);
    assert!(st["notes"].to_string().contains("DVCID"), "{st}");
    v.ok(&["load", "RV0005L6", "--drive", "1"]);
    v.ok(&["drive", "status", "--drive", "1"]);
}

#[test]
fn a_write_stopped_by_early_warning_says_so() {
    let v = Vtl::new(&[]);
    v.ok(&["load", "RV0006L6"]);
    v.ok(&[
        "vtl",
        "fault",
        r#"{"kind": "early_warning_at", "barcode": "RV0006L6", "partition": 0, "bytes": 1048576}"#,
    ]);
    let src = v.dir.parent().unwrap().join("big.bin");
    std::fs::write(&src, vec![7u8; 4 << 20]).unwrap();
    let (code, e) = v.fails(&[
        "drive",
        "write",
        src.to_str().unwrap(),
        "--block-size",
        "256K",
    ]);
    assert_eq!(code, 1);
    assert!(
        e.contains("early warning after 1048576 of 4194304 bytes"),
        "{e}"
    );
    // What was written is intact and ends with a filemark.
    v.ok(&["drive", "rewind"]);
    let back = v.dir.parent().unwrap().join("back.bin");
    let st = v.json(&[
        "drive",
        "read",
        "--to",
        back.to_str().unwrap(),
        "--block-size",
        "256K",
    ]);
    assert_eq!(st["end"], "filemark", "{st}");
    assert_eq!(std::fs::read(&back).unwrap(), vec![7u8; 1 << 20]);
}

#[test]
fn the_library_can_come_from_a_config_file() {
    let v = Vtl::new(&[]);
    let cfg = v.dir.parent().unwrap().join("rackvault.toml");
    std::fs::write(&cfg, "[store]\nkind = \"dir\"\npath = \"x\"\n\n[library]\ntransport = \"virtual\"\ndir = \"vtl\"\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tapectl"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--json",
            "library",
            "status",
        ])
        .env("RACKVAULT_LOCK_DIR", &v.locks)
        .env_remove("RACKVAULT_VTL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["slots"][0]["volume_tag"], "RV0001L6");
    // A mistake in the table names the line.
    std::fs::write(
        &cfg,
        "[library]\ntransport = \"virtual\"\nurl = \"iscsi://x\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tapectl"))
        .args(["--config", cfg.to_str().unwrap(), "library", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("rackvault.toml:3:7: [library] `url` does not apply to transport = \"virtual\""),
        "{e}"
    );
}

#[test]
fn ltfs_format_put_get_round_trip_in_tape_order() {
    let v = Vtl::new(&[]);
    let base = v.dir.parent().unwrap().to_path_buf();
    v.ok(&["load", "RV0001L6"]);
    v.ok(&["ltfs", "format", "--block-size", "64K"]);
    // A formatted tape is not formatted again without --force.
    let (_, e) = v.fails(&["ltfs", "format"]);
    assert!(e.to_lowercase().contains("ltfs"), "{e}");
    let src = base.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a b:c.txt"), b"hello").unwrap();
    std::fs::write(
        src.join("sub/big.bin"),
        (0..400_000u32).map(|i| (i % 241) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("sub/big.bin", src.join("link")).unwrap();
    let put = v.json(&[
        "ltfs",
        "put",
        "--sync-every-mb",
        "0",
        src.to_str().unwrap(),
        "/backup",
    ]);
    assert_eq!(put["files"], 4, "{put}");
    let ls = v.json(&["ltfs", "ls", "/backup/src", "--long"]);
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{ls}");
    assert!(
        names.contains(&"a b:c.txt") && names.contains(&"link"),
        "{names:?}"
    );
    // The volume survives another process: mount again, copy off, compare.
    let out = base.join("out");
    v.ok(&["ltfs", "get", "/backup/src", "--to", out.to_str().unwrap()]);
    for f in ["a b:c.txt", "sub/big.bin", "empty"] {
        assert_eq!(
            std::fs::read(out.join("src").join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read_link(out.join("src/link")).unwrap(),
        std::path::Path::new("sub/big.bin")
    );
    // Never overwrites, and never writes through a symlink planted in the target.
    let (_, e) = v.fails(&[
        "ltfs",
        "get",
        "/backup/src/a b:c.txt",
        "--to",
        out.join("src").to_str().unwrap(),
    ]);
    assert!(e.contains("exists"), "{e}");
    let trap = base.join("trap");
    std::fs::create_dir_all(&trap).unwrap();
    let out2 = base.join("out2");
    std::fs::create_dir_all(&out2).unwrap();
    std::os::unix::fs::symlink(&trap, out2.join("src")).unwrap();
    let (_, e) = v.fails(&["ltfs", "get", "/backup/src", "--to", out2.to_str().unwrap()]);
    assert!(e.contains("not a directory"), "{e}");
    assert_eq!(
        std::fs::read_dir(&trap).unwrap().count(),
        0,
        "nothing written outside --to"
    );
    // Format and put wrote indexes (reads write none): generations go back to the format, and
    // --sync-every-mb 0 put a data-partition index after each file with data, before unmount's.
    let gens = v.json(&["ltfs", "generations"]);
    let gens = gens.as_array().unwrap();
    assert_eq!(gens.last().unwrap()["generation"], 1);
    let on_dp = gens.iter().filter(|g| g["partition"] == "b").count();
    assert!(
        on_dp >= 4,
        "format, a sync per file with data, unmount: {gens:?}"
    );
}

#[test]
fn ltfs_get_keeps_directory_and_symlink_times_and_refuses_to_copy_nothing() {
    let v = Vtl::new(&[]);
    let base = v.dir.parent().unwrap().to_path_buf();
    v.ok(&["load", "RV0001L6"]);
    v.ok(&["ltfs", "format"]);
    let out = base.join("empty-out");
    let (_, e) = v.fails(&["ltfs", "get", "/", "--to", out.to_str().unwrap()]);
    assert!(e.contains("nothing to copy"), "{e}");
    let src = base.join("t");
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    std::fs::write(src.join("d/e/f"), b"f").unwrap();
    std::os::unix::fs::symlink("e/f", src.join("d/l")).unwrap();
    let old = |s: i64| libc::timespec {
        tv_sec: s,
        tv_nsec: 0,
    };
    for (p, t) in [
        ("d/e/f", 1_000_000_000),
        ("d/l", 1_100_000_000),
        ("d/e", 1_200_000_000),
        ("d", 1_300_000_000),
    ] {
        let c = std::ffi::CString::new(src.join(p).to_str().unwrap()).unwrap();
        let times = [old(t), old(t)];
        // SAFETY: a valid path and two timespecs.
        assert_eq!(
            unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            },
            0
        );
    }
    v.ok(&["ltfs", "put", src.to_str().unwrap(), "/"]);
    let out = base.join("out");
    v.ok(&["ltfs", "get", "/t", "--to", out.to_str().unwrap()]);
    use std::os::unix::fs::MetadataExt;
    for (p, t) in [
        ("t/d/e/f", 1_000_000_000),
        ("t/d/l", 1_100_000_000),
        ("t/d/e", 1_200_000_000),
        ("t/d", 1_300_000_000),
    ] {
        let m = std::fs::symlink_metadata(out.join(p)).unwrap();
        assert_eq!(m.mtime(), t, "{p}");
    }
    assert_eq!(
        std::fs::read_link(out.join("t/d/l")).unwrap(),
        Path::new("e/f")
    );
}

/// Opens `fifo` for writing once `holder` has opened it for reading (which `tapectl drive write` does
/// only after it took the drive's lock), failing with its message if it exits first.
fn writer_once_open(fifo: &Path, holder: &mut std::process::Child) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(f) => {
                use std::os::fd::AsRawFd;
                // SAFETY: fcntl on a descriptor we own; back to blocking writes.
                unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, 0) };
                return f;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                // No reader yet: the holder is still starting (or failed).
                if let Some(status) = holder.try_wait().unwrap() {
                    let mut err = String::new();
                    use std::io::Read;
                    holder
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    panic!("tapectl exited ({status}) before it held its drive: {err}");
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{}: {e}", fifo.display()),
        }
    }
}

/// Two virtual libraries in two directories, made with the same defaults (changer serial included),
/// with their locks in one directory as by default: drive 0 of each is a device of its own, so two
/// tapectl processes hold them at the same time (the drives used to share a serial, hence a lock,
/// and the second process was told "busy" and exited 3).
#[test]
fn two_libraries_do_not_share_drive_locks() {
    let a = Vtl::new(&[]);
    let b = Vtl::new(&[]);
    let locks = a.locks.clone();
    let on = |v: &Vtl, args: &[&str]| {
        let o = support::tapectl_on_vtl(&v.dir, &locks)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "tapectl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    on(&a, &["load", "RV0001L6"]);
    on(&b, &["load", "RV0001L6"]);
    let hold = |v: &Vtl, name: &str| {
        let fifo = v.dir.parent().unwrap().join(name);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let child = support::tapectl_on_vtl(&v.dir, &locks)
            .args([
                "drive",
                "write",
                "--drive",
                "0",
                fifo.to_str().unwrap(),
                "--block-size",
                "64K",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        (fifo, child)
    };
    let (fifo_a, mut holder_a) = hold(&a, "a.fifo");
    let mut in_a = writer_once_open(&fifo_a, &mut holder_a);
    // Library a's drive 0 is held now; library b's drive 0 is another drive.
    let (fifo_b, mut holder_b) = hold(&b, "b.fifo");
    let mut in_b = writer_once_open(&fifo_b, &mut holder_b);
    use std::io::Write;
    in_a.write_all(&[1u8; 100_000]).unwrap();
    in_b.write_all(&[2u8; 100_000]).unwrap();
    drop((in_a, in_b));
    for (name, c) in [("a", holder_a), ("b", holder_b)] {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "library {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let serial = |v: &Vtl| {
        let st: Value = serde_json::from_str(&on(v, &["--json", "library", "status"])).unwrap();
        st["drives"][0]["drive_id"]["serial"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_ne!(serial(&a), serial(&b));
}
