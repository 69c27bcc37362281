//! Helpers for the backupd integration tests: a real binary, real files, real stores.
#![allow(dead_code)]

pub mod daemon;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub source: PathBuf,
}

impl Env {
    /// A source directory and a config for one job `j` with the given store table and extras.
    pub fn new(store_toml: &str, job_extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        std::fs::create_dir(&source).unwrap();
        let config = dir.path().join("rackvault.toml");
        std::fs::write(
            &config,
            format!("state_dir = \"state\"\n\n[store]\n{store_toml}\n\n[[job]]\nname = \"j\"\nsource = \"src\"\n{job_extra}\n"),
        )
        .unwrap();
        Env {
            dir,
            config,
            source,
        }
    }

    pub fn dir_store(job_extra: &str) -> Env {
        Env::new("kind = \"dir\"\npath = \"store\"", job_extra)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_backupd"));
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RACKVAULT_LOG", "warn");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "backupd {args:?} failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// One backup run; returns its stats.
    pub fn backup(&self) -> serde_json::Value {
        let v = self.json(&["run", "j"]);
        assert_eq!(v[0]["ok"], true, "{v}");
        v[0]["summary"].clone()
    }

    pub fn snapshots(&self) -> Vec<String> {
        self.json(&["snapshots", "j"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    }
}

pub fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, data).unwrap();
}

pub fn set_mtime(p: &Path, sec: i64, nsec: u32) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let t = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec as i64,
        },
    ];
    assert_eq!(
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                t.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        },
        0
    );
}

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A deterministic pseudo-random byte stream (xorshift), incompressible enough for size tests.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A POSIX ACL in its xattr encoding: user::rw-, user:1234:r--, group::r--, mask::r--, other::---.
pub fn sample_acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1234),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A tree exercising what must survive a backup: modes, owners, ns times, symlinks (relative
/// and dangling), a hard-link pair, xattrs and an ACL, a sparse file, odd names, empty things.
pub fn rich_tree(root: &Path) {
    write(&root.join("plain.txt"), b"hello world\n");
    write(&root.join("dir/nested/deep.bin"), &noise(300_000, 1));
    write(&root.join("dir/empty-file"), b"");
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    write(&root.join("odd names/späße ☃.txt"), b"unicode");
    write(&root.join("odd names/with\nnewline"), b"nl");
    write(&root.join("odd names/-dash"), b"dash");
    std::fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"odd names/bad-utf8-\xff")),
        b"bytes",
    )
    .unwrap();
    std::os::unix::fs::symlink("dir/nested/deep.bin", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("link-dangling")).unwrap();
    write(&root.join("hard-a"), b"linked content");
    std::fs::hard_link(root.join("hard-a"), root.join("dir/hard-b")).unwrap();
    {
        let f = std::fs::File::create(root.join("sparse.raw")).unwrap();
        f.set_len(8 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"middle", 3 << 20).unwrap();
    }
    xattr::set(
        root.join("plain.txt"),
        "user.rackvault.test",
        b"value\x00with nul",
    )
    .unwrap();
    xattr::set(
        root.join("plain.txt"),
        "system.posix_acl_access",
        &sample_acl(),
    )
    .unwrap();
    chmod(&root.join("plain.txt"), 0o640);
    chmod(&root.join("dir/nested"), 0o750);
    chmod(&root.join("hard-a"), 0o4755);
    if is_root() {
        std::os::unix::fs::lchown(root.join("dir/nested/deep.bin"), Some(1234), Some(5678))
            .unwrap();
        std::os::unix::fs::lchown(root.join("link-rel"), Some(4321), Some(8765)).unwrap();
    }
    set_mtime(
        &root.join("dir/nested/deep.bin"),
        1_600_000_000,
        123_456_789,
    );
    set_mtime(&root.join("link-rel"), 1_500_000_000, 987_654_321);
    set_mtime(&root.join("dir/nested"), 1_400_000_000, 5);
}

#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    content: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index of the first path sharing this inode (hard links).
    link_group: Option<String>,
}

/// Everything observable about a tree, for equality checks (`.rackvault` is ignored).
pub fn snapshot_tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Node>,
    inodes: &mut BTreeMap<u64, String>,
) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        if dir == root && n == ".rackvault" {
            continue;
        }
        let p = dir.join(&n);
        let rel = String::from_utf8_lossy(p.strip_prefix(root).unwrap().as_os_str().as_bytes())
            .into_owned();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let kind = if md.is_dir() {
            'd'
        } else if md.file_type().is_symlink() {
            'l'
        } else {
            'f'
        };
        let content = match kind {
            'f' => std::fs::read(&p).unwrap(),
            'l' => std::fs::read_link(&p)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec(),
            _ => vec![],
        };
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = if kind == 'l' {
            vec![]
        } else {
            xattr::list(&p)
                .unwrap()
                .map(|k| {
                    (
                        k.as_bytes().to_vec(),
                        xattr::get(&p, &k).unwrap().unwrap_or_default(),
                    )
                })
                .collect()
        };
        xattrs.sort();
        let link_group = if kind == 'f' && md.nlink() > 1 {
            // Only links inside this tree count.
            Some(
                inodes
                    .entry(md.ino())
                    .or_insert_with(|| rel.clone())
                    .clone(),
            )
        } else {
            None
        };
        let mtime = (md.mtime(), md.mtime_nsec());
        out.insert(
            rel.clone(),
            Node {
                kind,
                mode: if kind == 'l' { 0 } else { md.mode() & 0o7777 },
                uid: md.uid(),
                gid: md.gid(),
                mtime,
                content,
                xattrs,
                link_group,
            },
        );
        if kind == 'd' {
            walk(root, &p, out, inodes);
        }
    }
}

/// Asserts two trees are equal in content and metadata, with a readable first difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (ra, rb) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    assert_eq!(
        (ra.mode(), ra.mtime(), ra.mtime_nsec()),
        (rb.mode(), rb.mtime(), rb.mtime_nsec()),
        "root directories differ: {} vs {}",
        a.display(),
        b.display()
    );
    let (ta, tb) = (snapshot_tree(a), snapshot_tree(b));
    let ka: Vec<_> = ta.keys().collect();
    let kb: Vec<_> = tb.keys().collect();
    assert_eq!(
        ka,
        kb,
        "different paths in {} and {}",
        a.display(),
        b.display()
    );
    for (k, na) in &ta {
        let nb = &tb[k];
        if na.link_group.is_some() != nb.link_group.is_some() {
            panic!(
                "{k}: hard-link structure differs: {:?} vs {:?}",
                na.link_group, nb.link_group
            );
        }
        let strip = |n: &Node| Node {
            link_group: None,
            content: vec![],
            ..*clone_node(n)
        };
        assert_eq!(strip(na), strip(nb), "{k}: metadata differs");
        assert!(na.content == nb.content, "{k}: content differs");
    }
}

fn clone_node(n: &Node) -> Box<Node> {
    Box::new(Node {
        kind: n.kind,
        mode: n.mode,
        uid: n.uid,
        gid: n.gid,
        mtime: n.mtime,
        content: n.content.clone(),
        xattrs: n.xattrs.clone(),
        link_group: n.link_group.clone(),
    })
}

/// Allocated bytes of a file (to check holes survived).
pub fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

pub fn ino(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap().ino()
}

/// The zfs-fuse pool the test command started (scripts/test.sh exports RACKVAULT_TEST_ZPOOL).
pub fn test_pool() -> String {
    assert!(
        is_root(),
        "the ZFS tests need root (zfs-fuse); run them as root through scripts/test.sh"
    );
    std::env::var("RACKVAULT_TEST_ZPOOL").unwrap_or_else(|_| {
        panic!("RACKVAULT_TEST_ZPOOL is not set: run the tests through scripts/test.sh, which starts zfs-fuse and a test pool")
    })
}

/// Runs `zfs`, asserting success; returns stdout.
pub fn zfs(args: &[&str]) -> String {
    let o = Command::new("zfs")
        .args(args)
        .output()
        .expect("cannot run zfs (is zfs-fuse installed?)");
    assert!(
        o.status.success(),
        "zfs {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A dataset of its own per test under the test pool, destroyed with everything below it
/// (retrying: zfs-fuse says "busy" for a moment after unmounts).
pub struct Parent(pub String);

impl Parent {
    /// `mounted`: a mounted dataset (a store's parent); else a container that is never mounted.
    pub fn new(prefix: &str, mounted: bool) -> Parent {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{}/{prefix}{}-{}",
            test_pool(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        if mounted {
            zfs(&["create", &name]);
        } else {
            zfs(&[
                "create",
                "-o",
                "mountpoint=none",
                "-o",
                "canmount=off",
                &name,
            ]);
        }
        Parent(name)
    }

    /// A child dataset, mounted at `mountpoint` or where it inherits.
    pub fn child(&self, name: &str, mountpoint: Option<&Path>) -> String {
        let ds = format!("{}/{name}", self.0);
        match mountpoint {
            Some(m) => zfs(&["create", "-o", &format!("mountpoint={}", m.display()), &ds]),
            None => zfs(&["create", &ds]),
        };
        ds
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        for _ in 0..30 {
            let o = Command::new("zfs")
                .args(["destroy", "-r", &self.0])
                .output();
            if o.is_ok_and(|o| o.status.success()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}
