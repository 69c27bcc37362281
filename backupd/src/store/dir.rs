//! The directory store (the embedded default), write side: `<path>/<job>/snapshots/<name>/` is a
//! plain tree per snapshot; files unchanged since the previous snapshot are hard links to it.
//!
//! A run builds `<path>/<job>/.incomplete/<name>/` and publishes it with one `rename`, so a
//! snapshot directory is always complete. Deletion renames into `.trash/` first.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use common::manifest::{MANIFEST_FILE, Manifest};
use common::relpath::RelPath;
use common::snapshots::dir::DirSnapshots;
use common::snapshots::{ReadsThrough, Snapshots};

use super::{Base, Staging, Store, WriteMode, remove_tree, sync_filesystem};

/// The write side of a directory store; reading goes through [`DirSnapshots`].
pub struct DirStore {
    snaps: DirSnapshots,
    sync: bool,
}

impl DirStore {
    pub fn new(path: PathBuf, sync: bool) -> Self {
        DirStore {
            snaps: DirSnapshots::new(path),
            sync,
        }
    }

    fn job_dir(&self, job: &str) -> PathBuf {
        self.snaps.job_dir(job)
    }

    fn snap_dir(&self, job: &str, name: &str) -> PathBuf {
        self.snaps.snap_dir(job, name)
    }

    fn clear(dir: &Path) -> Result<()> {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                tracing::info!(path = %e.path().display(), "removing leftovers of an interrupted run");
                remove_tree(&e.path())
                    .with_context(|| format!("cannot remove leftover {}", e.path().display()))?;
            }
        }
        Ok(())
    }
}

impl ReadsThrough for DirStore {
    fn reader(&self) -> &dyn Snapshots {
        &self.snaps
    }
}

impl Store for DirStore {
    fn usage(&self, job: &str) -> Result<Option<u64>> {
        let dir = self.job_dir(job).join("snapshots");
        if !dir.exists() {
            return Ok(None);
        }
        Ok(Some(allocated_bytes(&dir)?))
    }

    fn begin(&self, job: &str, name: &str) -> Result<Staging> {
        let jd = self.job_dir(job);
        for sub in ["snapshots", ".incomplete", ".trash"] {
            std::fs::create_dir_all(jd.join(sub))
                .with_context(|| format!("cannot create {}", jd.join(sub).display()))?;
        }
        Self::clear(&jd.join(".incomplete"))?;
        Self::clear(&jd.join(".trash"))?;
        let root = jd.join(".incomplete").join(name);
        std::fs::create_dir(&root).with_context(|| format!("cannot create {}", root.display()))?;
        isolate(&root)?;
        let mut warnings = Vec::new();
        let mut base = None;
        for prev in self.snapshots(job)?.iter().rev() {
            let proot = self.snap_dir(job, &prev.name);
            match Manifest::load(&proot.join(MANIFEST_FILE)) {
                Ok(m) => {
                    base = Some(Base {
                        root: proot,
                        manifest: m,
                    });
                    break;
                }
                Err(e) => warnings.push(format!(
                    "snapshot {} cannot serve as a base: {e}",
                    prev.name
                )),
            }
        }
        Ok(Staging {
            name: name.to_string(),
            root,
            mode: WriteMode::Fresh,
            base,
            warnings,
            writeback: self.sync,
        })
    }

    fn publish(&self, job: &str, staging: &Staging, manifest: &Manifest) -> Result<()> {
        manifest
            .save(&staging.root.join(MANIFEST_FILE))
            .context("cannot write the manifest")?;
        // Creating .rackvault/ moved the root's mtime: put the source's back.
        if let Some(root) = manifest.get(&RelPath::root()) {
            common::fsmeta::set_mtime_path(&staging.root, root.mtime, root.mtime_ns)
                .context("cannot set the snapshot root's mtime")?;
        }
        if self.sync {
            sync_filesystem(&staging.root).context("cannot sync the store's filesystem")?;
        }
        let dest = self.snap_dir(job, &staging.name);
        if dest.exists() {
            anyhow::bail!("snapshot {} already exists", dest.display());
        }
        std::fs::rename(&staging.root, &dest)
            .with_context(|| format!("cannot publish {}", dest.display()))?;
        if self.sync {
            std::fs::File::open(dest.parent().expect("has parent"))?.sync_all()?;
        }
        Ok(())
    }

    fn abort(&self, _job: &str, staging: &Staging) -> Result<()> {
        remove_tree(&staging.root)
            .with_context(|| format!("cannot remove {}", staging.root.display()))
    }

    fn delete(&self, job: &str, name: &str) -> Result<()> {
        let src = self.snap_dir(job, name);
        let trash = self.job_dir(job).join(".trash");
        std::fs::create_dir_all(&trash)?;
        let tmp = trash.join(format!("{name}.{}", std::process::id()));
        std::fs::rename(&src, &tmp).with_context(|| format!("cannot delete {}", src.display()))?;
        remove_tree(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))
    }
}

/// Makes a new staging root pass nothing on to what is created below it: no setgid bit (new
/// files would take the directory's group) and no default ACL (they would inherit it). The
/// engine relies on that to skip setting what a file it creates already has; the root gets the
/// source's own metadata when the tree is finished.
fn isolate(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set permissions on {}", root.display()))?;
    match xattr::remove(root, "system.posix_acl_default") {
        Err(e)
            if !matches!(
                e.raw_os_error(),
                Some(libc::ENODATA) | Some(libc::ENOTSUP) | Some(libc::ENOSYS)
            ) =>
        {
            Err(e).with_context(|| format!("cannot remove the default ACL of {}", root.display()))
        }
        _ => Ok(()),
    }
}

/// Blocks allocated under `root`, each hard-linked file counted once (snapshots share them).
fn allocated_bytes(root: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            // A snapshot pruned while we walk.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            }
            if md.nlink() == 1 || seen.insert((md.dev(), md.ino())) {
                total += md.blocks() * 512;
            }
        }
    }
    Ok(total)
}
