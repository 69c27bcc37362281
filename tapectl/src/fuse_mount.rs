//! `tapectl ltfs mount`: the LTFS volume as a read-only FUSE file system (the `fuser` crate, its
//! pure-Rust mount: no libfuse; as root it mounts with mount(2), otherwise through `fusermount3`).
//!
//! The inode table is built once from the index (the volume does not change while mounted): the root is
//! inode 1, every other entry gets the next number in a depth-first walk. Reads go to
//! [`Volume::read_extents_range`], which reads only the records covering the range, through a small
//! [`RecordCache`]. Anything that would change the volume fails with EROFS (the mount is `ro`).
//!
//! The drive and its lock are held until the file system is unmounted (`umount MOUNTPOINT`,
//! `fusermount3 -u MOUNTPOINT`, or SIGINT/SIGTERM to this process); unmounting never writes to the tape.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyStatfs,
    ReplyXattr, Request,
};
use ltfs::TapeDevice;
use ltfs::index::{Directory, Entry, Extent, FileContent, Times, Xattr, names};
use ltfs::volume::{RecordCache, Volume};

/// How long the kernel may cache entries and attributes: the volume does not change while mounted.
const TTL: Duration = Duration::from_secs(3600);
/// Records kept by the read cache (4 × 512 KiB by default).
const CACHED_RECORDS: usize = 4;
/// Extended attributes are exposed in the `user.` namespace, as the LTFS reference implementation
/// does on Linux (the key on tape has no prefix).
const XATTR_PREFIX: &str = "user.";

enum Kind {
    Directory { children: Vec<u64> },
    File { extents: Vec<Extent> },
    Symlink(String),
}

struct Node {
    parent: u64,
    name: String,
    kind: Kind,
    length: u64,
    read_only: bool,
    times: Times,
    xattrs: Vec<Xattr>,
}

/// The inode table: `nodes[ino - 1]`, and a name map per directory for lookup.
pub struct Tree {
    nodes: Vec<Node>,
    names: HashMap<(u64, String), u64>,
}

impl Tree {
    pub fn build(root: &Directory) -> Tree {
        let mut t = Tree {
            nodes: Vec::new(),
            names: HashMap::new(),
        };
        t.add_dir(root, 1);
        t
    }

    fn add_dir(&mut self, d: &Directory, parent: u64) -> u64 {
        self.nodes.push(Node {
            parent,
            name: d.name.clone(),
            kind: Kind::Directory {
                children: Vec::new(),
            },
            length: 0,
            read_only: d.read_only,
            times: d.times,
            xattrs: d.xattrs.clone(),
        });
        let ino = self.nodes.len() as u64;
        let mut children = Vec::with_capacity(d.entries.len());
        for e in &d.entries {
            let child = match e {
                Entry::Directory(sub) => self.add_dir(sub, ino),
                Entry::File(f) => {
                    self.nodes.push(Node {
                        parent: ino,
                        name: f.name.clone(),
                        kind: match &f.content {
                            FileContent::Extents(x) => Kind::File { extents: x.clone() },
                            FileContent::Symlink(target) => Kind::Symlink(target.clone()),
                        },
                        length: f.length,
                        read_only: f.read_only,
                        times: f.times,
                        xattrs: f.xattrs.clone(),
                    });
                    self.nodes.len() as u64
                }
            };
            self.names
                .insert((ino, names::nfc(e.name()).into_owned()), child);
            children.push(child);
        }
        if let Kind::Directory { children: c } = &mut self.node_mut(ino).kind {
            *c = children;
        }
        ino
    }

    fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(ino.checked_sub(1)? as usize)
    }

    fn node_mut(&mut self, ino: u64) -> &mut Node {
        &mut self.nodes[ino as usize - 1]
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Option<u64> {
        let name = std::str::from_utf8(name.as_bytes()).ok()?;
        self.names
            .get(&(parent, names::nfc(name).into_owned()))
            .copied()
    }

    /// The path of `ino` on the volume (for messages).
    fn path(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut i = ino;
        while i != 1 {
            let Some(n) = self.node(i) else { break };
            parts.push(n.name.as_str());
            i = n.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn attr(&self, ino: u64, n: &Node, block_size: u32) -> FileAttr {
        let (kind, perm, nlink, size) = match &n.kind {
            Kind::Directory { children } => {
                let subdirs = children
                    .iter()
                    .filter(|c| {
                        self.node(**c)
                            .is_some_and(|c| matches!(c.kind, Kind::Directory { .. }))
                    })
                    .count();
                let perm = if n.read_only { 0o555 } else { 0o755 };
                (FileType::Directory, perm, 2 + subdirs as u32, 0)
            }
            Kind::File { .. } => {
                let perm = if n.read_only { 0o444 } else { 0o644 };
                (FileType::RegularFile, perm, 1, n.length)
            }
            Kind::Symlink(target) => (FileType::Symlink, 0o777, 1, target.len() as u64),
        };
        let t = |x: ltfs::time::LtfsTime| -> SystemTime { x.clamped().into() };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t(n.times.access),
            mtime: t(n.times.modify),
            ctime: t(n.times.change),
            crtime: t(n.times.creation),
            kind,
            perm,
            nlink,
            // SAFETY: getuid/getgid have no preconditions.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            rdev: 0,
            blksize: block_size,
            flags: 0,
        }
    }
}

/// The file system: the inode table and the volume (behind a lock: one tape, one head).
pub struct LtfsFs<D: TapeDevice + Send + 'static> {
    tree: Tree,
    block_size: u32,
    total_bytes: u64,
    vol: Mutex<(Volume<D>, RecordCache)>,
}

impl<D: TapeDevice + Send + 'static> LtfsFs<D> {
    pub fn new(vol: Volume<D>) -> LtfsFs<D> {
        let tree = Tree::build(&vol.index().root);
        let total_bytes = tree.nodes.iter().map(|n| n.length).sum();
        LtfsFs {
            tree,
            block_size: vol.block_size() as u32,
            total_bytes,
            vol: Mutex::new((vol, RecordCache::new(CACHED_RECORDS))),
        }
    }

    /// The volume back (after the session ended).
    pub fn into_volume(self) -> Volume<D> {
        self.vol.into_inner().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// Shared between the FUSE session (which owns its file system) and the caller, who takes the volume
/// back after the session ends.
struct Shared<D: TapeDevice + Send + 'static>(std::sync::Arc<Mutex<Option<LtfsFs<D>>>>);

impl<D: TapeDevice + Send + 'static> Shared<D> {
    fn with<T>(&self, f: impl FnOnce(&LtfsFs<D>) -> T) -> Option<T> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref().map(f)
    }
}

impl<D: TapeDevice + Send + 'static> Filesystem for Shared<D> {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.with(|fs| {
            let ino = fs.tree.lookup(parent.0, name)?;
            let n = fs.tree.node(ino)?;
            Some(fs.tree.attr(ino, n, fs.block_size))
        });
        match r.flatten() {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self.with(|fs| {
            fs.tree
                .node(ino.0)
                .map(|n| fs.tree.attr(ino.0, n, fs.block_size))
        });
        match r.flatten() {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.with(|fs| match fs.tree.node(ino.0).map(|n| &n.kind) {
            Some(Kind::Symlink(t)) => Ok(t.clone()),
            Some(_) => Err(Errno::EINVAL),
            None => Err(Errno::ENOENT),
        });
        match r.unwrap_or(Err(Errno::EIO)) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.with(|fs| {
            let Some(n) = fs.tree.node(ino.0) else {
                return Err(Errno::ENOENT);
            };
            let Kind::File { extents } = &n.kind else {
                return Err(Errno::EISDIR);
            };
            let path = fs.tree.path(ino.0);
            let mut buf = vec![0u8; size as usize];
            let mut g = fs.vol.lock().unwrap_or_else(|e| e.into_inner());
            let (vol, cache) = &mut *g;
            match vol.read_extents_range(&path, n.length, extents, offset, &mut buf, cache) {
                Ok(k) => {
                    buf.truncate(k);
                    Ok(buf)
                }
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("tapectl: read failed: {e}");
                    Err(Errno::EIO)
                }
            }
        });
        match r.unwrap_or(Err(Errno::EIO)) {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Offsets: 1 after ".", 2 after "..", 2 + k after the k-th child; a large directory is read in
        // many calls, each starting at its offset (no listing built per call).
        let r = self.with(|fs| {
            let Some(n) = fs.tree.node(ino.0) else {
                return Err(Errno::ENOENT);
            };
            let Kind::Directory { children } = &n.kind else {
                return Err(Errno::ENOTDIR);
            };
            let dots = [(ino.0, "."), (n.parent, "..")];
            for (i, (dino, name)) in dots.iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(*dino), i as u64 + 1, FileType::Directory, name) {
                    return Ok(());
                }
            }
            let skip = (offset as usize).saturating_sub(2);
            for (k, c) in children.iter().enumerate().skip(skip) {
                let Some(cn) = fs.tree.node(*c) else { continue };
                let kind = match cn.kind {
                    Kind::Directory { .. } => FileType::Directory,
                    Kind::File { .. } => FileType::RegularFile,
                    Kind::Symlink(_) => FileType::Symlink,
                };
                if reply.add(INodeNo(*c), k as u64 + 3, kind, &cn.name) {
                    break;
                }
            }
            Ok(())
        });
        match r.unwrap_or(Err(Errno::EIO)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let r = self.with(|fs| (fs.total_bytes, fs.tree.nodes.len() as u64, fs.block_size));
        let (bytes, files, bs) = r.unwrap_or((0, 0, 512));
        reply.statfs(bytes.div_ceil(bs as u64), 0, 0, files, 0, bs, 255, bs);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self.with(|fs| {
            let n = fs.tree.node(ino.0).ok_or(Errno::ENOENT)?;
            let key = name
                .to_str()
                .and_then(|k| k.strip_prefix(XATTR_PREFIX))
                .ok_or(Errno::NO_XATTR)?;
            n.xattrs
                .iter()
                .find(|x| x.key == key)
                .map(|x| x.value.clone())
                .ok_or(Errno::NO_XATTR)
        });
        match r.unwrap_or(Err(Errno::EIO)) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.with(|fs| {
            let n = fs.tree.node(ino.0).ok_or(Errno::ENOENT)?;
            let mut list = Vec::new();
            for x in &n.xattrs {
                list.extend_from_slice(XATTR_PREFIX.as_bytes());
                list.extend_from_slice(x.key.as_bytes());
                list.push(0);
            }
            Ok(list)
        });
        match r.unwrap_or(Err(Errno::EIO)) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(e),
        }
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, v: &[u8]) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(v);
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts) and returns a set to sigwait on.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Unmounts `mp`: umount(2) as root, `fusermount3 -u` (or `fusermount -u`) otherwise. The session loop
/// then sees the device go away and returns. A busy mount point stays mounted (and can be retried).
fn unmount(mp: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(mp.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EPERM) {
        return Err(e);
    }
    let mut last = e;
    for bin in ["fusermount3", "fusermount"] {
        match std::process::Command::new(bin).arg("-u").arg(mp).status() {
            Ok(st) if st.success() => return Ok(()),
            Ok(st) => last = std::io::Error::other(format!("{bin} -u: {st}")),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Mounts `vol` read-only at `mountpoint` and serves it until the file system is unmounted (by
/// `umount`/`fusermount3 -u`, or SIGINT/SIGTERM to this process). Returns the volume, untouched: nothing
/// is written to the tape.
pub fn serve<D: TapeDevice + Send + 'static>(
    vol: Volume<D>,
    mountpoint: &Path,
    fsname: &str,
) -> Result<Volume<D>> {
    let dev_fuse = Path::new("/dev/fuse");
    if !dev_fuse.exists() {
        anyhow::bail!(
            "/dev/fuse does not exist: load the fuse kernel module (modprobe fuse) or, in a container, pass the device in"
        );
    }
    let meta = std::fs::metadata(mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    anyhow::ensure!(
        meta.is_dir(),
        "mount point {} is not a directory",
        mountpoint.display()
    );
    let shared = std::sync::Arc::new(Mutex::new(Some(LtfsFs::new(vol))));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(fsname.to_string()),
        MountOption::Subtype("ltfs".to_string()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    config.n_threads = Some(1);
    let set = block_stop_signals();
    let session = fuser::Session::new(Shared(shared.clone()), mountpoint, &config)
        .with_context(|| format!("mounting on {}", mountpoint.display()))?;
    let canonical = mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    let mp = mountpoint.display().to_string();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let mut sig = 0;
                // SAFETY: `set` is a valid signal set; sig is a valid out pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    return;
                }
                eprintln!("tapectl: signal {sig}: unmounting {mp}");
                match unmount(&canonical) {
                    Ok(()) => return,
                    Err(e) => eprintln!(
                        "tapectl: cannot unmount {mp}: {e} (in use? close what uses it and signal again, or `umount -l {mp}`)"
                    ),
                }
            }
        })
        .context("starting the signal thread")?;
    eprintln!(
        "tapectl: {fsname} mounted read-only on {}; unmount with `umount {0}` (or Ctrl-C) to release the drive",
        mountpoint.display()
    );
    let ran = session.run();
    let fs = shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .context("the file system state is gone")?;
    ran.with_context(|| format!("serving {}", mountpoint.display()))?;
    Ok(fs.into_volume())
}
