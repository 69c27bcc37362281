//! The directory store, read side: `<path>/<job>/snapshots/<name>/` is a plain tree per snapshot.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{SnapshotInfo, SnapshotView, Snapshots};
use crate::snapname;

pub struct DirSnapshots {
    path: PathBuf,
}

impl DirSnapshots {
    pub fn new(path: PathBuf) -> Self {
        DirSnapshots { path }
    }

    pub fn job_dir(&self, job: &str) -> PathBuf {
        self.path.join(job)
    }

    pub fn snap_dir(&self, job: &str, name: &str) -> PathBuf {
        self.job_dir(job).join("snapshots").join(name)
    }
}

impl Snapshots for DirSnapshots {
    fn describe(&self) -> String {
        format!("directory store {}", self.path.display())
    }

    fn root_path(&self) -> PathBuf {
        self.path.clone()
    }

    fn snapshots(&self, job: &str) -> Result<Vec<SnapshotInfo>> {
        let dir = self.job_dir(job).join("snapshots");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        let mut out: Vec<SnapshotInfo> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| {
                snapname::parse(&n).map(|t| SnapshotInfo {
                    name: n,
                    time: Some(t),
                    used_bytes: None,
                    referenced_bytes: None,
                })
            })
            .collect();
        out.sort_by_key(|s| snapname::sort_key(&s.name));
        Ok(out)
    }

    fn open(&self, job: &str, name: &str) -> Result<SnapshotView> {
        let root = self.snap_dir(job, name);
        if !root.is_dir() {
            anyhow::bail!(
                "snapshot {name} of job {job} not found in {}",
                self.describe()
            );
        }
        Ok(SnapshotView::new(root, None))
    }
}
