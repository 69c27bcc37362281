//! A directory whose descendants are reached only beneath it and never through a symlink: every
//! path is resolved by the kernel with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) (or, on a
//! kernel without openat2, one O_NOFOLLOW directory at a time), and the last component is then
//! used relative to its parent directory's descriptor (`*at` calls that do not follow it).
//!
//! Restores write through this and read their source through it, so neither a manifest nor a
//! snapshot tree nor anything already in the target can make them touch a file outside the tree.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::relpath::RelPath;

pub struct Beneath {
    root: OwnedFd,
    path: PathBuf,
    /// The parent directory of the last path used: restores go through entries in path order, so
    /// most lookups are for the same directory.
    last_parent: Mutex<Option<(RelPath, std::sync::Arc<OwnedFd>)>>,
}

/// A parent directory and the name of an entry in it.
pub struct At {
    parent: std::sync::Arc<OwnedFd>,
    name: CString,
}

impl At {
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.parent.as_fd()
    }

    pub fn name(&self) -> &CStr {
        &self.name
    }

    /// A path naming this entry through its parent's descriptor, for the few calls that take only
    /// paths (l*xattr): the kernel resolves the parent by descriptor and does not follow the name.
    pub fn proc_path(&self) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.parent.as_raw_fd()));
        p.push(std::ffi::OsStr::from_bytes(self.name.as_bytes()));
        p
    }
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Says which path a symlink stood in, instead of the kernel's bare "too many levels of symbolic
/// links" / "cross-device link".
fn explain(e: io::Error, rel: &RelPath) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR) => io::Error::new(
            e.kind(),
            format!(
                "{rel}: a symlink or a non-directory stands where a directory is needed (not followed)"
            ),
        ),
        _ => e,
    }
}

impl Beneath {
    /// Opens `dir` (the path itself may go through symlinks: it is the caller's choice of tree).
    pub fn open(dir: &Path) -> io::Result<Beneath> {
        let c = cstr(dir.as_os_str().as_bytes())?;
        // SAFETY: a valid NUL-terminated path; the descriptor returned is owned below.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        Ok(Beneath {
            // SAFETY: fd was just opened and is owned by nobody else.
            root: unsafe { OwnedFd::from_raw_fd(fd) },
            path: dir.to_path_buf(),
            last_parent: Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` beneath the root, no component a symlink. `rel` may be the root itself.
    fn open_beneath(
        &self,
        rel: &[u8],
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> io::Result<OwnedFd> {
        let path = if rel.is_empty() { &b"."[..] } else { rel };
        let c = cstr(path)?;
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.mode = if flags & libc::O_CREAT != 0 {
            mode as u64
        } else {
            0
        };
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: openat2 with a valid directory descriptor, path and open_how of the size given.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            // SAFETY: a new descriptor owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
        self.open_walking(path, flags, mode)
    }

    /// The same without openat2: every directory on the way opened with O_NOFOLLOW.
    fn open_walking(
        &self,
        rel: &[u8],
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> io::Result<OwnedFd> {
        let parts: Vec<&[u8]> = rel
            .split(|b| *b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
            .collect();
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own.
        let mut dir = unsafe {
            OwnedFd::from_raw_fd(cvt(libc::fcntl(
                self.root.as_raw_fd(),
                libc::F_DUPFD_CLOEXEC,
                0,
            ))?)
        };
        let Some((last, dirs)) = parts.split_last() else {
            return if flags & libc::O_DIRECTORY != 0 {
                Ok(dir)
            } else {
                Err(io::Error::from_raw_os_error(libc::EISDIR))
            };
        };
        for p in dirs {
            if *p == b".." {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
            let c = cstr(p)?;
            // SAFETY: openat relative to a descriptor we own.
            let fd = cvt(unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            })?;
            // SAFETY: a new descriptor owned by nobody else.
            dir = unsafe { OwnedFd::from_raw_fd(fd) };
        }
        if *last == b".." {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        let c = cstr(last)?;
        // SAFETY: as above.
        let fd = cvt(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })?;
        // SAFETY: as above.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The directory holding `rel` and its name there. The root has no parent: an error.
    pub fn at(&self, rel: &RelPath) -> io::Result<At> {
        let parent = rel.parent().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the tree's root has no parent")
        })?;
        let name = cstr(rel.file_name())?;
        let mut cache = self.last_parent.lock().expect("not poisoned");
        if let Some((p, fd)) = cache.as_ref()
            && *p == parent
        {
            return Ok(At {
                parent: fd.clone(),
                name,
            });
        }
        let fd = self
            .open_beneath(parent.as_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| explain(e, &parent))?;
        let fd = std::sync::Arc::new(fd);
        *cache = Some((parent, fd.clone()));
        Ok(At { parent: fd, name })
    }

    /// Forgets the cached parent (after removing something that could have been it).
    fn forget(&self) {
        *self.last_parent.lock().expect("not poisoned") = None;
    }

    /// lstat of `rel`; `None` when nothing is there. A symlink in the way is an error.
    pub fn lstat(&self, rel: &RelPath) -> io::Result<Option<libc::stat>> {
        // O_PATH|O_NOFOLLOW opens a final symlink itself; the components before it are never followed.
        let fd = match self.open_beneath(rel.as_bytes(), libc::O_PATH | libc::O_NOFOLLOW, 0) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(explain(e, rel)),
        };
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on an owned descriptor into a stat buffer.
        cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
        Ok(Some(st))
    }

    /// The target of the symlink `rel`.
    pub fn read_link(&self, rel: &RelPath) -> io::Result<Vec<u8>> {
        let fd = self
            .open_beneath(rel.as_bytes(), libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|e| explain(e, rel))?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: readlinkat on an O_PATH descriptor of the link with an empty path, into `buf`.
        let n = unsafe {
            libc::readlinkat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    /// Opens a regular file for reading (atime untouched where allowed).
    pub fn open_read(&self, rel: &RelPath) -> io::Result<File> {
        let fd = match self.open_beneath(
            rel.as_bytes(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOATIME,
            0,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                self.open_beneath(rel.as_bytes(), libc::O_RDONLY | libc::O_NOFOLLOW, 0)
            }
            r => r,
        }
        .map_err(|e| explain(e, rel))?;
        Ok(File::from(fd))
    }

    /// Opens a directory for reading its metadata and applying new metadata (fchmod, fsetxattr).
    pub fn open_dir(&self, rel: &RelPath) -> io::Result<File> {
        let fd = self
            .open_beneath(
                rel.as_bytes(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(|e| explain(e, rel))?;
        Ok(File::from(fd))
    }

    /// Creates a new regular file (never an existing one, never through a symlink).
    pub fn create_file(&self, rel: &RelPath, mode: u32) -> io::Result<File> {
        let at = self.at(rel)?;
        // SAFETY: openat relative to an owned directory descriptor.
        let fd = cvt(unsafe {
            libc::openat(
                at.parent.as_raw_fd(),
                at.name.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })?;
        // SAFETY: a new descriptor owned by nobody else.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Opens an existing regular file for writing (never through a symlink), e.g. to fill in a
    /// piece of it read later than the first.
    pub fn open_write(&self, rel: &RelPath) -> io::Result<File> {
        let fd = self
            .open_beneath(rel.as_bytes(), libc::O_WRONLY | libc::O_NOFOLLOW, 0)
            .map_err(|e| explain(e, rel))?;
        Ok(File::from(fd))
    }

    pub fn mkdir(&self, rel: &RelPath, mode: u32) -> io::Result<()> {
        let at = self.at(rel)?;
        // SAFETY: mkdirat relative to an owned directory descriptor.
        cvt(unsafe {
            libc::mkdirat(
                at.parent.as_raw_fd(),
                at.name.as_ptr(),
                mode as libc::mode_t,
            )
        })?;
        Ok(())
    }

    pub fn symlink(&self, rel: &RelPath, target: &[u8]) -> io::Result<()> {
        let at = self.at(rel)?;
        let t = cstr(target)?;
        // SAFETY: symlinkat relative to an owned directory descriptor.
        cvt(unsafe { libc::symlinkat(t.as_ptr(), at.parent.as_raw_fd(), at.name.as_ptr()) })?;
        Ok(())
    }

    /// A hard link `new` to the existing `existing` (neither followed if a symlink).
    pub fn hard_link(&self, existing: &RelPath, new: &RelPath) -> io::Result<()> {
        let from = self.at(existing)?;
        let to = self.at(new)?;
        // SAFETY: linkat between owned directory descriptors, without AT_SYMLINK_FOLLOW.
        cvt(unsafe {
            libc::linkat(
                from.parent.as_raw_fd(),
                from.name.as_ptr(),
                to.parent.as_raw_fd(),
                to.name.as_ptr(),
                0,
            )
        })?;
        Ok(())
    }

    /// Sets the modification time of `rel` (a symlink's own, not its target's); atime is left alone.
    pub fn set_mtime(&self, rel: &RelPath, sec: i64, nsec: u32) -> io::Result<()> {
        let times = crate::fsmeta::mtime_only(sec, nsec);
        if rel.is_root() {
            // The root's own descriptor is O_PATH, which futimens refuses: open it for reading.
            let fd = self.open_dir(rel)?;
            // SAFETY: futimens on an owned descriptor with a two-element timespec array.
            cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })?;
            return Ok(());
        }
        let at = self.at(rel)?;
        // SAFETY: utimensat relative to an owned directory, not following the name.
        cvt(unsafe {
            libc::utimensat(
                at.parent.as_raw_fd(),
                at.name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(())
    }

    /// Removes what is at `rel`: a file or symlink (never followed) or a whole directory tree.
    pub fn remove(&self, rel: &RelPath) -> io::Result<()> {
        let at = self.at(rel)?;
        let is_dir =
            matches!(self.lstat(rel)?, Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        self.forget();
        if is_dir {
            // std's remove_dir_all does not follow symlinks inside the tree; the parent is reached
            // through its descriptor.
            std::fs::remove_dir_all(at.proc_path())
        } else {
            // SAFETY: unlinkat relative to an owned directory descriptor.
            cvt(unsafe { libc::unlinkat(at.parent.as_raw_fd(), at.name.as_ptr(), 0) })?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(s: &str) -> RelPath {
        RelPath::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn never_leaves_the_tree_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("rel")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("d/f")).unwrap();
        let b = Beneath::open(&root).unwrap();
        for link in ["abs", "rel"] {
            assert!(
                b.open_read(&rp(&format!("{link}/secret"))).is_err(),
                "{link}"
            );
            assert!(
                b.create_file(&rp(&format!("{link}/new")), 0o600).is_err(),
                "{link}"
            );
            assert!(
                b.mkdir(&rp(&format!("{link}/dir")), 0o700).is_err(),
                "{link}"
            );
            assert!(
                b.symlink(&rp(&format!("{link}/l")), b"x").is_err(),
                "{link}"
            );
            assert!(b.lstat(&rp(&format!("{link}/secret"))).is_err(), "{link}");
        }
        assert!(
            b.open_read(&rp("d/f")).is_err(),
            "a final symlink is not followed"
        );
        assert!(b.create_file(&rp("d/f"), 0o600).is_err(), "nor replaced");
        b.remove(&rp("abs")).unwrap();
        assert!(
            outside.join("secret").exists(),
            "removing a symlink removes only the link"
        );
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            1,
            "nothing made outside"
        );
        b.mkdir(&rp("d/sub"), 0o700).unwrap();
        b.create_file(&rp("d/sub/x"), 0o600).unwrap();
        b.hard_link(&rp("d/sub/x"), &rp("d/y")).unwrap();
        b.symlink(&rp("d/z"), b"/etc/passwd").unwrap();
        assert!(b.open_read(&rp("d/y")).is_ok());
        b.remove(&rp("d")).unwrap();
        assert!(!root.join("d").exists());
    }

    #[test]
    fn walking_without_openat2_refuses_symlinks_too() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("a", t.path().join("l")).unwrap();
        let b = Beneath::open(t.path()).unwrap();
        assert!(b.open_walking(b"a/b/f", libc::O_RDONLY, 0).is_ok());
        assert!(b.open_walking(b"l/b/f", libc::O_RDONLY, 0).is_err());
        assert!(b.open_walking(b"l", libc::O_RDONLY, 0).is_err());
        assert!(b.open_walking(b"a/../a/b/f", libc::O_RDONLY, 0).is_err());
    }
}
