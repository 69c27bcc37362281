//! Tape sets in tests: a virtual library with a config whose store is a directory store, snapshots
//! published as backupd's directory store lays them out (a tree plus its manifest), and trees
//! compared entry by entry.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::manifest::{Entry, Header, Kind, MANIFEST_FILE, Manifest};
use common::relpath::RelPath;

use super::ok;

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Lab {
    /// A virtual library of `carts` cartridges of `mb` MiB and two drives, and a config whose
    /// store is a directory store under the lab.
    pub fn new(carts: usize, mb: u64, extra_config: &str) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("rackvault.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"state\"\n[store]\nkind = \"dir\"\npath = \"store\"\n[library]\ntransport = \"virtual\"\ndir = \"vtl\"\nlock_dir = \"locks\"\n{extra_config}"
            ),
        )
        .unwrap();
        let barcodes: Vec<String> = (1..=carts).map(|i| format!("RV{i:04}L6")).collect();
        ok(
            &config,
            &[
                "vtl",
                "create",
                "--capacity-mb",
                &mb.to_string(),
                "--barcodes",
                &barcodes.join(","),
            ],
        );
        Lab { dir, config }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Publishes `tree` as snapshot `name` of job `job` in the lab's store.
    pub fn snapshot(&self, job: &str, name: &str, tree: &Path) {
        publish(
            tree,
            &self.path(&format!("store/{job}/snapshots/{name}")),
            job,
            name,
        );
    }
}

/// `cp -a from to`: a tree to change into the next snapshot's.
pub fn copy_tree(from: &Path, to: &Path) {
    assert!(
        std::process::Command::new("cp")
            .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
}

/// Publishes `tree` at `root` as backupd's directory store does: a copy of the tree and its manifest.
pub fn publish(tree: &Path, root: &Path, job: &str, name: &str) {
    std::fs::create_dir_all(root.parent().unwrap()).unwrap();
    let st = std::process::Command::new("cp")
        .args(["-a", tree.to_str().unwrap(), root.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut entries = Vec::new();
    walk(root, root, &mut entries);
    let m = Manifest::new(
        Header::new(
            job,
            name,
            "2026-12-07T00:00:00Z",
            &tree.display().to_string(),
        ),
        entries,
    );
    m.save(&root.join(MANIFEST_FILE)).unwrap();
}

pub fn walk(root: &Path, dir: &Path, out: &mut Vec<Entry>) {
    let md = std::fs::symlink_metadata(dir).unwrap();
    let rel = RelPath::parse(
        dir.strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_encoded_bytes(),
    )
    .unwrap();
    out.push(entry(rel, &md, Kind::Dir, dir));
    for d in std::fs::read_dir(dir).unwrap() {
        let p = d.unwrap().path();
        if p.file_name().unwrap() == ".rackvault" {
            continue;
        }
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = RelPath::parse(p.strip_prefix(root).unwrap().as_os_str().as_encoded_bytes())
                .unwrap();
            let kind = if md.file_type().is_symlink() {
                Kind::Symlink
            } else {
                Kind::File
            };
            out.push(entry(rel, &md, kind, &p));
        }
    }
}

pub fn entry(path: RelPath, md: &std::fs::Metadata, kind: Kind, p: &Path) -> Entry {
    let (size, hash, target) = match kind {
        Kind::File => {
            let data = std::fs::read(p).unwrap();
            (
                data.len() as u64,
                Some(*blake3::hash(&data).as_bytes()),
                None,
            )
        }
        Kind::Symlink => {
            let t = std::fs::read_link(p).unwrap();
            let t = t.as_os_str().as_encoded_bytes().to_vec();
            (t.len() as u64, None, Some(common::bytes::Bytes(t)))
        }
        Kind::Dir => (0, None, None),
    };
    Entry {
        path,
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_ns: md.mtime_nsec() as u32,
        size,
        target,
        hash,
        block_size: None,
        blocks: Vec::new(),
        xattrs: Vec::new(),
        link: None,
        src: Default::default(),
    }
}

/// Byte-for-byte and metadata (mode, mtime) equality of two trees; symlinks by target.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let mut ea = Vec::new();
    let mut eb = Vec::new();
    walk(a, a, &mut ea);
    walk(b, b, &mut eb);
    assert_eq!(
        ea.len(),
        eb.len(),
        "{} and {} differ in entries",
        a.display(),
        b.display()
    );
    for (x, y) in ea.iter().zip(&eb) {
        assert_eq!(x.path, y.path);
        assert_eq!(
            (x.kind, x.size, x.hash, &x.target),
            (y.kind, y.size, y.hash, &y.target),
            "{}",
            x.path
        );
        if x.kind != Kind::Symlink {
            assert_eq!(x.mode, y.mode, "mode of {}", x.path);
        }
        if x.kind == Kind::File {
            assert_eq!(
                (x.mtime, x.mtime_ns),
                (y.mtime, y.mtime_ns),
                "mtime of {}",
                x.path
            );
        }
    }
}

/// A tree of `small` small files over a few directories, `mid` files of 4 MiB, one `big_mb`
/// file, a symlink and a read-only file.
pub fn make_tree(dir: &Path, small: usize, mid: usize, big_mb: usize) {
    std::fs::create_dir_all(dir.join("docs/thesis")).unwrap();
    for i in 0..small {
        let d = dir.join(format!("d{:02}", i % 10));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("f{i:05}.txt")),
            noise(100 + i * 7 % 3000, i as u64),
        )
        .unwrap();
    }
    for i in 0..mid {
        std::fs::write(
            dir.join(format!("mid{i:02}.bin")),
            noise(4 << 20, 1000 + i as u64),
        )
        .unwrap();
    }
    if big_mb > 0 {
        std::fs::write(dir.join("big.img"), noise(big_mb << 20, 7)).unwrap();
    }
    std::fs::write(
        dir.join("docs/thesis/thesis-final.tex"),
        b"\\documentclass{article}\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("thesis/thesis-final.tex", dir.join("docs/latest.tex")).unwrap();
    let ro = dir.join("docs/readonly.txt");
    std::fs::write(&ro, b"do not touch").unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
}
