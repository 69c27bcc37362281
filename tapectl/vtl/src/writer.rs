//! File pre-creation for streams of large records. Creating a file can cost more than writing 512 KiB
//! into the page cache (ext4 inode allocation scans past recently deleted inodes), so while the caller
//! writes record `n` straight from its buffer, a helper thread creates the (empty) files for the next
//! few. They are temporary files ([`crate::cart::temp_path`]: hidden, named after no block), so the
//! cartridge directory never shows an empty or partial record: the writer fills one, renames it to
//! `<p>_<blk>_R` and then moves the end-of-data marker past it. A run starts at a large record and
//! carries on through short ones (LTFS writes each file's last record short, and many files are small).
//! Every command other than WRITE(6) and READ POSITION ends the run and deletes the unused files; files
//! a killed process left are removed when a drive next opens the cartridge.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use crate::cart::temp_path;

/// Records smaller than this are written to a file created on the spot unless a run of pre-created
/// files is under way.
pub(crate) const PRECREATE_MIN: usize = 64 * 1024;
const MAX_DEPTH: usize = 8;

type Reply = (PathBuf, std::io::Result<File>);

struct Helper {
    tx: Option<Sender<PathBuf>>,
    rx: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
pub(crate) struct Precreator {
    helper: Option<Helper>,
    /// (directory, partition, next block) of the run in progress.
    expected: Option<(PathBuf, usize, u64)>,
    /// Files asked for and not yet received.
    outstanding: usize,
    ready: VecDeque<(PathBuf, File)>,
    depth: usize,
}

/// A new, empty temporary file for a record in `dir`.
pub(crate) fn create_temp(dir: &Path) -> std::io::Result<(PathBuf, File)> {
    let path = temp_path(dir, "rec");
    let f = File::create_new(&path)?;
    Ok((path, f))
}

impl Precreator {
    fn helper(&mut self) -> Option<&mut Helper> {
        if self.helper.is_none() {
            let (tx, job_rx) = channel::<PathBuf>();
            let (reply_tx, rx) = channel::<Reply>();
            let thread = std::thread::Builder::new()
                .name("vtl-precreate".into())
                .spawn(move || {
                    while let Ok(path) = job_rx.recv() {
                        let f = File::create_new(&path);
                        if reply_tx.send((path, f)).is_err() {
                            return;
                        }
                    }
                })
                .ok()?;
            self.helper = Some(Helper {
                tx: Some(tx),
                rx,
                thread: Some(thread),
            });
        }
        self.helper.as_mut()
    }

    /// Asks the helper for files until `depth` are ready or on the way.
    fn top_up(&mut self, dir: &Path) {
        while self.ready.len() + self.outstanding < self.depth {
            let path = temp_path(dir, "rec");
            let Some(h) = self.helper() else { return };
            if h.tx.as_ref().is_none_or(|tx| tx.send(path).is_err()) {
                return;
            }
            self.outstanding += 1;
        }
    }

    fn receive_one(&mut self) {
        let Some(h) = self.helper.as_mut() else {
            self.outstanding = 0;
            return;
        };
        match h.rx.recv() {
            Ok((path, Ok(f))) => {
                self.outstanding -= 1;
                self.ready.push_back((path, f));
            }
            Ok((path, Err(e))) => {
                self.outstanding -= 1;
                tracing::debug!(path = %path.display(), "pre-creating a record file failed: {e}");
            }
            Err(_) => self.outstanding = 0,
        }
    }

    /// A run is in progress and `blk` of partition `p` is its next block.
    pub fn continues(&self, dir: &Path, p: usize, blk: u64) -> bool {
        matches!(&self.expected, Some((d, ep, eb)) if d == dir && *ep == p && *eb == blk)
    }

    /// An open, empty temporary file for the record at block `blk` of partition `p` if the run has one,
    /// else `None` (the caller creates one). Starts a run, or carries it on, asking for the next few.
    pub fn take(&mut self, dir: &Path, p: usize, blk: u64) -> Option<(PathBuf, File)> {
        if !self.continues(dir, p, blk) {
            self.cancel();
            self.expected = Some((dir.to_path_buf(), p, blk + 1));
            self.depth = 2;
            self.top_up(dir);
            return None;
        }
        if self.ready.is_empty() && self.outstanding > 0 {
            self.receive_one();
        }
        let file = self.ready.pop_front();
        self.expected = Some((dir.to_path_buf(), p, blk + 1));
        self.depth = (self.depth + 1).min(MAX_DEPTH);
        self.top_up(dir);
        file
    }

    /// Ends the run: waits for the helper and deletes the files it created that were not used.
    pub fn cancel(&mut self) {
        while self.outstanding > 0 {
            self.receive_one();
        }
        self.expected = None;
        for (path, f) in std::mem::take(&mut self.ready) {
            drop(f);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), "could not remove a pre-created record file: {e}");
            }
        }
    }
}

impl Drop for Precreator {
    fn drop(&mut self) {
        self.cancel();
        if let Some(mut h) = self.helper.take() {
            h.tx = None;
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }
}
