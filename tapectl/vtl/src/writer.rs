//! File pre-creation for streams of large records. Creating a file can cost more than writing 512 KiB
//! into the page cache (ext4 inode allocation scans past recently deleted inodes), so while the caller
//! writes record `n` straight from its buffer, a helper thread creates the (empty) files for the next few
//! blocks. A run starts at a large record and carries on through short ones (LTFS writes each file's
//! last record short, and many files are small). Every command other than WRITE(6) and READ POSITION
//! ends the run: unused pre-created files are deleted before
//! the EOD marker is written, so the layout is exact whenever the drive is idle. After a crash, empty
//! `_R` files beyond the data are removed by the EOD recovery at the next load (a record is never empty).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

/// Records smaller than this are created synchronously unless a run of pre-created files is under way.
pub(crate) const PRECREATE_MIN: usize = 64 * 1024;
const MAX_DEPTH: u64 = 8;

type Reply = (u64, std::io::Result<File>);

struct Helper {
    tx: Option<Sender<(u64, PathBuf)>>,
    rx: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
pub(crate) struct Precreator {
    helper: Option<Helper>,
    /// (directory, partition, next block) of the run in progress.
    expected: Option<(PathBuf, usize, u64)>,
    /// Highest block requested so far (exclusive).
    requested_to: u64,
    outstanding: usize,
    got: BTreeMap<u64, std::io::Result<File>>,
    depth: u64,
}

fn create(path: &Path) -> std::io::Result<File> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => File::create(path),
        r => r,
    }
}

impl Precreator {
    fn helper(&mut self) -> Option<&mut Helper> {
        if self.helper.is_none() {
            let (tx, job_rx) = channel::<(u64, PathBuf)>();
            let (reply_tx, rx) = channel::<Reply>();
            let thread = std::thread::Builder::new()
                .name("vtl-precreate".into())
                .spawn(move || {
                    while let Ok((blk, path)) = job_rx.recv() {
                        if reply_tx.send((blk, create(&path))).is_err() {
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

    fn request(&mut self, dir: &Path, p: usize, upto: u64) {
        while self.requested_to < upto {
            let blk = self.requested_to;
            let Some(h) = self.helper() else { return };
            let sent =
                h.tx.as_ref()
                    .is_some_and(|tx| tx.send((blk, dir.join(format!("{p}_{blk}_R")))).is_ok());
            if !sent {
                return;
            }
            self.outstanding += 1;
            self.requested_to += 1;
        }
    }

    /// A run is in progress and `blk` of partition `p` is its next block.
    pub fn continues(&self, dir: &Path, p: usize, blk: u64) -> bool {
        matches!(&self.expected, Some((d, ep, eb)) if d == dir && *ep == p && *eb == blk)
    }

    /// The open, empty file for block `blk` of partition `p` if it was pre-created, else `None` (the
    /// caller creates it). Also asks for the next few.
    pub fn take(&mut self, dir: &Path, p: usize, blk: u64) -> Option<File> {
        let continuing =
            matches!(&self.expected, Some((d, ep, eb)) if d == dir && *ep == p && *eb == blk);
        if !continuing {
            self.cancel();
            self.expected = Some((dir.to_path_buf(), p, blk + 1));
            self.requested_to = blk + 1;
            self.depth = 2;
            self.request(dir, p, blk + 1 + self.depth);
            return None;
        }
        while !self.got.contains_key(&blk) && self.outstanding > 0 {
            let Some(h) = self.helper.as_mut() else { break };
            match h.rx.recv() {
                Ok((b, f)) => {
                    self.outstanding -= 1;
                    self.got.insert(b, f);
                }
                Err(_) => {
                    self.outstanding = 0;
                    break;
                }
            }
        }
        let file = self.got.remove(&blk).and_then(|r| r.ok());
        self.expected = Some((dir.to_path_buf(), p, blk + 1));
        self.depth = (self.depth + 1).min(MAX_DEPTH);
        self.request(dir, p, blk + 1 + self.depth);
        file
    }

    /// Ends the run: waits for the helper and deletes the files created for blocks never written.
    pub fn cancel(&mut self) {
        while self.outstanding > 0 {
            let Some(h) = self.helper.as_mut() else { break };
            match h.rx.recv() {
                Ok((b, f)) => {
                    self.outstanding -= 1;
                    self.got.insert(b, f);
                }
                Err(_) => break,
            }
        }
        self.outstanding = 0;
        if let Some((dir, p, _)) = self.expected.take() {
            for (blk, f) in std::mem::take(&mut self.got) {
                if f.is_ok() {
                    let path = dir.join(format!("{p}_{blk}_R"));
                    if let Err(e) = std::fs::remove_file(&path)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!(path = %path.display(), "could not remove a pre-created record file: {e}");
                    }
                }
            }
        }
        self.got.clear();
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
