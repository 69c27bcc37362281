//! `tapectl ltfs mount`: the volume as a read-only FUSE file system, checked with std::fs against what
//! was written: directory listing, sizes, times and permissions, file bytes (a file over several 64 KiB
//! records, read whole and at an offset), symlinks, xattrs; writes fail with EROFS; `umount` ends the
//! process with status 0 and frees the drive, as SIGTERM does; nothing is written to the tape.
//!
//! Needs root and /dev/fuse: without them the test fails and says so.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ltfs::index::{LtfsTime, Times, Xattr};
use ltfs::volume::{FileMeta, Volume};
use tapectl::drive::Drive;

mod support;

use support::{is_mounted, require_fuse};

struct Vtl {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    locks: PathBuf,
    mnt: PathBuf,
}

impl Vtl {
    fn cmd(&self) -> Command {
        support::tapectl_on_vtl(&self.dir, &self.locks)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "tapectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

/// The mount process: killed, and the mount point lazily unmounted, if the test ends early.
struct Mounted {
    child: Option<Child>,
    mnt: PathBuf,
}

impl Mounted {
    fn start(v: &Vtl) -> Mounted {
        let child = v
            .cmd()
            .args(["ltfs", "mount"])
            .arg(&v.mnt)
            .arg("--foreground")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut m = Mounted {
            child: Some(child),
            mnt: v.mnt.clone(),
        };
        let started = Instant::now();
        while !is_mounted(&m.mnt) {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                let out = m.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "tapectl ltfs mount exited ({st}) before mounting: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} not mounted after 30 s",
                m.mnt.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Waits (bounded) for the process to exit; returns its status and stderr.
    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                child.kill().ok();
                panic!("tapectl ltfs mount did not exit within 30 s of the unmount");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn t(secs: i64, nanos: u32) -> Times {
    let x = LtfsTime::new(secs, nanos);
    Times {
        creation: LtfsTime::new(secs - 100, 0),
        change: x,
        modify: x,
        access: LtfsTime::new(secs + 5, 0),
        backup: x,
    }
}

fn errno(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[test]
fn mount_browse_read_and_unmount() {
    require_fuse("the FUSE mount test");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let v = Vtl {
        dir: root.join("vtl"),
        locks: root.join("locks"),
        mnt: root.join("mnt"),
        _tmp: tmp,
    };
    std::fs::create_dir(&v.mnt).unwrap();
    v.ok(&["vtl", "create", "--capacity-mb", "64"]);
    v.ok(&["load", "RV0001L6"]);
    v.ok(&["ltfs", "format", "--block-size", "64K"]);

    // The tree, written through the volume API (tapectl ltfs put carries no xattrs).
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut zeros = vec![0u8; 200_000];
    zeros[70_000..70_010].copy_from_slice(b"not a hole");
    zeros[199_999] = 1;
    {
        let lib = vtl::Library::open(&v.dir).unwrap();
        let mut d = Drive::new(lib.drive(0).unwrap()).unwrap();
        d.wait_until_ready(Duration::from_secs(10)).unwrap();
        d.set_default_modes().unwrap();
        let mut vol = Volume::mount(d).unwrap();
        let meta = |read_only, xattrs| FileMeta {
            times: Some(t(981_173_106, 123_456_789)),
            read_only,
            xattrs,
        };
        vol.mkdir_p("/dir/sub").unwrap();
        vol.put_file("/dir/big.bin", &big[..], &meta(false, Vec::new()))
            .unwrap();
        vol.put_file(
            "/dir/mostly-zeros",
            &zeros[..],
            &meta(
                true,
                vec![
                    Xattr {
                        key: "color".into(),
                        value: b"blue".to_vec(),
                    },
                    Xattr {
                        key: "bin".into(),
                        value: vec![0, 1, 2, 255],
                    },
                ],
            ),
        )
        .unwrap();
        vol.put_file("/dir/sub/empty", &b""[..], &meta(false, Vec::new()))
            .unwrap();
        vol.put_file("/café.txt", &b"hello\n"[..], &meta(false, Vec::new()))
            .unwrap();
        vol.symlink("/dir/link", "big.bin", &meta(false, Vec::new()))
            .unwrap();
        // A directory too large for one readdir reply.
        for i in 0..500 {
            vol.put_file(
                &format!("/many/a-rather-long-file-name-{i:04}"),
                &b""[..],
                &meta(false, Vec::new()),
            )
            .unwrap();
        }
        vol.unmount().unwrap();
    }
    let gens_before = v.ok(&["--json", "ltfs", "generations"]);

    let m = Mounted::start(&v);
    let mnt = &v.mnt;
    let mut names: Vec<String> = std::fs::read_dir(mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["café.txt", "dir", "many"]);
    let many: Vec<String> = std::fs::read_dir(mnt.join("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want: Vec<String> = (0..500)
        .map(|i| format!("a-rather-long-file-name-{i:04}"))
        .collect();
    assert_eq!(many, want, "readdir in index order, every entry once");
    let mut names: Vec<String> = std::fs::read_dir(mnt.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["big.bin", "link", "mostly-zeros", "sub"]);

    // Attributes from the index.
    let m_big = std::fs::metadata(mnt.join("dir/big.bin")).unwrap();
    assert!(m_big.is_file());
    assert_eq!(m_big.len(), big.len() as u64);
    let want_mtime: SystemTime = LtfsTime::new(981_173_106, 123_456_789).into();
    assert_eq!(m_big.modified().unwrap(), want_mtime);
    assert_eq!(
        m_big.accessed().unwrap(),
        SystemTime::from(LtfsTime::new(981_173_111, 0))
    );
    assert_eq!(m_big.permissions().mode() & 0o7777, 0o644);
    let m_zero = std::fs::metadata(mnt.join("dir/mostly-zeros")).unwrap();
    assert_eq!(m_zero.len(), zeros.len() as u64);
    assert_eq!(
        m_zero.permissions().mode() & 0o7777,
        0o444,
        "read-only on the volume"
    );
    assert!(std::fs::metadata(mnt.join("dir/sub")).unwrap().is_dir());
    assert_eq!(
        std::fs::metadata(mnt.join("dir/sub/empty")).unwrap().len(),
        0
    );
    assert!(
        std::fs::symlink_metadata(mnt.join("dir/link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Data: whole files, and a seek + partial read across record boundaries.
    assert!(std::fs::read(mnt.join("dir/big.bin")).unwrap() == big);
    assert!(std::fs::read(mnt.join("dir/mostly-zeros")).unwrap() == zeros);
    assert_eq!(std::fs::read(mnt.join("café.txt")).unwrap(), b"hello\n");
    assert!(std::fs::read(mnt.join("dir/sub/empty")).unwrap().is_empty());
    let mut f = std::fs::File::open(mnt.join("dir/big.bin")).unwrap();
    f.seek(SeekFrom::Start(100_000)).unwrap();
    let mut part = vec![0u8; 70_000];
    f.read_exact(&mut part).unwrap();
    assert!(part == big[100_000..170_000]);
    drop(f);
    // Through the symlink too.
    assert_eq!(
        std::fs::read_link(mnt.join("dir/link")).unwrap(),
        Path::new("big.bin")
    );
    assert_eq!(
        std::fs::metadata(mnt.join("dir/link")).unwrap().len(),
        big.len() as u64
    );

    // Xattrs, in the user. namespace.
    let z = mnt.join("dir/mostly-zeros");
    assert_eq!(xattr::get(&z, "user.color").unwrap().unwrap(), b"blue");
    assert_eq!(xattr::get(&z, "user.bin").unwrap().unwrap(), [0, 1, 2, 255]);
    assert_eq!(xattr::get(&z, "user.none").unwrap(), None);
    let mut keys: Vec<String> = xattr::list(&z)
        .unwrap()
        .map(|k| k.into_string().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["user.bin", "user.color"]);

    // Nothing can change it.
    let erofs = Some(libc::EROFS);
    assert_eq!(errno(std::fs::File::create(mnt.join("new"))), erofs);
    assert_eq!(
        errno(
            std::fs::OpenOptions::new()
                .append(true)
                .open(mnt.join("café.txt"))
        ),
        erofs
    );
    assert_eq!(errno(std::fs::create_dir(mnt.join("d2"))), erofs);
    assert_eq!(errno(std::fs::remove_file(mnt.join("café.txt"))), erofs);
    assert_eq!(
        errno(std::fs::rename(mnt.join("café.txt"), mnt.join("x"))),
        erofs
    );
    assert_eq!(errno(xattr::set(&z, "user.color", b"red")), erofs);

    // The drive is held while mounted.
    let busy = v.run(&["ltfs", "ls"]);
    assert_eq!(busy.status.code(), Some(3), "drive busy while mounted");

    // umount ends the process cleanly and frees the drive.
    let st = Command::new("umount").arg(mnt).output().unwrap();
    assert!(
        st.status.success(),
        "umount failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let (status, stderr) = m.wait();
    assert!(status.success(), "tapectl ltfs mount: {status}: {stderr}");
    assert!(!is_mounted(mnt));
    let ls = v.ok(&["ltfs", "ls", "/dir"]);
    assert!(ls.contains("big.bin"), "{ls}");

    // SIGTERM unmounts as well; while a file is open it cannot, says so, and a later signal does.
    let mut m = Mounted::start(&v);
    assert_eq!(std::fs::read(mnt.join("café.txt")).unwrap(), b"hello\n");
    let open = std::fs::File::open(mnt.join("dir/big.bin")).unwrap();
    // SAFETY: kill on the PID of our own child.
    assert_eq!(unsafe { libc::kill(m.pid(), libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(is_mounted(mnt), "unmounted while a file was open");
    assert!(
        m.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "exited while still mounted"
    );
    drop(open);
    // SAFETY: kill on the PID of our own child.
    assert_eq!(unsafe { libc::kill(m.pid(), libc::SIGTERM) }, 0);
    let (status, stderr) = m.wait();
    assert!(status.success(), "tapectl ltfs mount: {status}: {stderr}");
    assert!(!is_mounted(mnt), "SIGTERM left {} mounted", mnt.display());
    assert!(stderr.contains("cannot unmount"), "{stderr}");

    // Mounting wrote nothing: the same index generations.
    assert_eq!(v.ok(&["--json", "ltfs", "generations"]), gens_before);
}
