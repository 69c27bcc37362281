//! Reading and applying file metadata: mode, owner, nanosecond times and extended attributes
//! (POSIX ACLs are the `system.posix_acl_*` xattrs). Symlinks are never followed.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::bytes::Bytes;
use crate::manifest::{Entry, Kind, SourceStamp, Xattr};

fn ids() -> (u32, u32) {
    static IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    // SAFETY: geteuid/getegid have no preconditions.
    *IDS.get_or_init(|| unsafe { (libc::geteuid(), libc::getegid()) })
}

pub fn is_root_user() -> bool {
    ids().0 == 0
}

/// What is known about the file metadata is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Any existing file: everything is set, stale xattrs removed.
    Existing,
    /// Created by this process with this mode, owned by our uid/gid, in a directory without
    /// default ACLs or setgid (see `store::dir::isolate`): nothing that already matches is set again.
    Created { mode: u32 },
}

pub fn stamp(md: &std::fs::Metadata) -> SourceStamp {
    SourceStamp {
        dev: md.dev(),
        ino: md.ino(),
        ctime: md.ctime(),
        ctime_ns: md.ctime_nsec() as u32,
    }
}

/// Extended attributes of `path`, sorted by name. Unsupported filesystems give an empty list.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(v)) => out.push(Xattr {
                name: Bytes(name.as_bytes().to_vec()),
                value: Bytes(v),
            }),
            Ok(None) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
}

/// Sets xattrs to exactly `want` (removing others). Returns names that could not be set
/// (e.g. a target filesystem without ACL support) so the caller can warn.
pub fn apply_xattrs(path: &Path, want: &[Xattr]) -> io::Result<Vec<String>> {
    let mut failed = Vec::new();
    let have = read_xattrs(path)?;
    for old in &have {
        if !want.iter().any(|w| w.name == old.name) {
            let _ = xattr::remove(path, OsStr::from_bytes(&old.name.0));
        }
    }
    for x in want {
        if have.iter().any(|h| h == x) {
            continue;
        }
        if let Err(e) = xattr::set(path, OsStr::from_bytes(&x.name.0), &x.value.0) {
            failed.push(format!("{}: {e}", String::from_utf8_lossy(&x.name.0)));
        }
    }
    Ok(failed)
}

/// Sets xattrs on a file known to have none.
fn set_xattrs(path: &Path, want: &[Xattr]) -> Vec<String> {
    want.iter()
        .filter_map(|x| {
            xattr::set(path, OsStr::from_bytes(&x.name.0), &x.value.0)
                .err()
                .map(|e| format!("{}: {e}", String::from_utf8_lossy(&x.name.0)))
        })
        .collect()
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Applies owner (when root), mode (not for symlinks), xattrs, then mtime (last, as the other
/// changes may touch it). Returns xattr names that could not be applied.
pub fn apply(path: &Path, e: &Entry, target: Target) -> io::Result<Vec<String>> {
    let c = cpath(path)?;
    let (uid, gid) = ids();
    let chown = is_root_user()
        && !(matches!(target, Target::Created { .. }) && e.uid == uid && e.gid == gid);
    if chown {
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::lchown(c.as_ptr(), e.uid, e.gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // chown clears setuid/setgid, so the mode is set again after it.
    let mode_right =
        matches!(target, Target::Created { mode } if mode == e.mode & 0o7777) && !chown;
    if e.kind != Kind::Symlink && !mode_right {
        // SAFETY: as above.
        if unsafe { libc::chmod(c.as_ptr(), e.mode & 0o7777) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let failed = match target {
        Target::Created { .. } => set_xattrs(path, &e.xattrs),
        Target::Existing if e.kind != Kind::Symlink || !e.xattrs.is_empty() => {
            apply_xattrs(path, &e.xattrs)?
        }
        Target::Existing => Vec::new(),
    };
    set_mtime(&c, e.mtime, e.mtime_ns)?;
    Ok(failed)
}

/// [`apply`] for a regular file or directory open as `f` (opened without following symlinks, e.g.
/// through [`crate::beneath::Beneath`]): nothing is looked up by path. Returns xattr names that
/// could not be applied.
pub fn apply_fd(f: &std::fs::File, e: &Entry, target: Target) -> io::Result<Vec<String>> {
    use std::os::fd::AsRawFd;
    use xattr::FileExt;
    let fd = f.as_raw_fd();
    let (uid, gid) = ids();
    let chown = is_root_user()
        && !(matches!(target, Target::Created { .. }) && e.uid == uid && e.gid == gid);
    if chown {
        // SAFETY: fchown on an open descriptor.
        if unsafe { libc::fchown(fd, e.uid, e.gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let mode_right =
        matches!(target, Target::Created { mode } if mode == e.mode & 0o7777) && !chown;
    if !mode_right {
        // SAFETY: fchmod on an open descriptor.
        if unsafe { libc::fchmod(fd, e.mode & 0o7777) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut failed = Vec::new();
    if matches!(target, Target::Existing) {
        let have = match f.list_xattr() {
            Ok(n) => n.collect::<Vec<_>>(),
            Err(e) if unsupported(&e) => Vec::new(),
            Err(e) => return Err(e),
        };
        for old in have {
            if !e.xattrs.iter().any(|w| w.name.0 == old.as_bytes()) {
                let _ = f.remove_xattr(&old);
            }
        }
    }
    for x in &e.xattrs {
        if let Err(err) = f.set_xattr(OsStr::from_bytes(&x.name.0), &x.value.0) {
            failed.push(format!("{}: {err}", String::from_utf8_lossy(&x.name.0)));
        }
    }
    let times = mtime_only(e.mtime, e.mtime_ns);
    // SAFETY: an open descriptor and a two-element timespec array, as futimens requires.
    if unsafe { libc::futimens(fd, times.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(failed)
}

/// [`apply`] for a symlink named `name` in the directory `dir` (never followed).
pub fn apply_symlink_at(at: &crate::beneath::At, e: &Entry) -> io::Result<Vec<String>> {
    use std::os::fd::AsRawFd;
    let dir = at.dir().as_raw_fd();
    if is_root_user() {
        // SAFETY: fchownat relative to an open directory, not following the name.
        if unsafe {
            libc::fchownat(
                dir,
                at.name().as_ptr(),
                e.uid,
                e.gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    let failed = if e.xattrs.is_empty() {
        Vec::new()
    } else {
        // l*xattr through the parent's descriptor: the name itself is not followed.
        set_xattrs(&at.proc_path(), &e.xattrs)
    };
    let times = mtime_only(e.mtime, e.mtime_ns);
    // SAFETY: as above, with a two-element timespec array.
    if unsafe {
        libc::utimensat(
            dir,
            at.name().as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(failed)
}

/// utimensat's times: atime left alone, mtime set.
pub(crate) fn mtime_only(sec: i64, nsec: u32) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec.min(999_999_999) as libc::c_long,
        },
    ]
}

pub fn set_mtime_path(path: &Path, sec: i64, nsec: u32) -> io::Result<()> {
    set_mtime(&cpath(path)?, sec, nsec)
}

fn set_mtime(c: &CString, sec: i64, nsec: u32) -> io::Result<()> {
    let times = mtime_only(sec, nsec);
    // SAFETY: valid path and a two-element timespec array, as utimensat requires.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a file for reading without following a final symlink, and without updating atime where allowed.
pub fn open_read_nofollow(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME);
    match o.open(path) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path),
        r => r,
    }
}
