//! Reading a snapshot's files ahead of the drives: one thread reads each file once, checks it
//! against the manifest's BLAKE3 as it goes, and hands the same chunks to every copy's writer
//! through bounded queues, so a slow file or a burst of small ones does not stop a drive, the
//! memory held is bounded by the configured buffer, and two drives write from one read.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use common::beneath::Beneath;
use common::manifest::Entry;

use super::plan::SetPlan;

/// Bytes per chunk handed to the writers.
pub const CHUNK: usize = 1 << 20;

pub enum Msg {
    Data(Arc<Vec<u8>>),
    /// The file ended as the manifest says.
    End,
    /// The file cannot be read, or is not what the manifest says: the set cannot go on.
    Failed(String),
}

/// Starts the reader thread over the files the plan writes (in order) below `root`, feeding
/// `copies` queues of `buffer_bytes / CHUNK` chunks each. Receivers get, for each file in turn, its
/// data then `End`.
pub fn start(
    root: &Path,
    plan: Arc<SetPlan>,
    copies: usize,
    buffer_bytes: u64,
) -> std::io::Result<Vec<Receiver<Msg>>> {
    let dir = Beneath::open(root)?;
    let depth = (buffer_bytes / CHUNK as u64).clamp(2, 1 << 16) as usize;
    let (txs, rxs): (Vec<SyncSender<Msg>>, Vec<Receiver<Msg>>) =
        (0..copies).map(|_| sync_channel(depth)).unzip();
    std::thread::Builder::new()
        .name("set-source".into())
        .spawn(move || read_all(&dir, &plan, &txs))?;
    Ok(rxs)
}

fn read_all(dir: &Beneath, plan: &SetPlan, txs: &[SyncSender<Msg>]) {
    let send = |m: &dyn Fn() -> Msg| txs.iter().all(|t| t.send(m()).is_ok());
    let files = match plan.files_to_write() {
        Ok(f) => f,
        Err(e) => {
            send(&|| Msg::Failed(format!("{e:#}")));
            return;
        }
    };
    for r in files {
        let e = match r {
            Ok((_, e)) => e,
            Err(e) => {
                send(&|| Msg::Failed(format!("{e:#}")));
                return;
            }
        };
        let f = &e.entry;
        match read_one(dir, f, txs) {
            Ok(true) => {
                if !send(&|| Msg::End) {
                    return;
                }
            }
            Ok(false) => return, // a writer is gone: nothing more to do
            Err(why) => {
                send(&|| Msg::Failed(why.clone()));
                return;
            }
        }
    }
}

/// Sends one file's chunks; false when a writer hung up.
fn read_one(dir: &Beneath, f: &Entry, txs: &[SyncSender<Msg>]) -> Result<bool, String> {
    let shown = f.path.display();
    let mut file = dir
        .open_read(&f.path)
        .map_err(|e| format!("{shown}: cannot open it in the snapshot: {e}"))?;
    let mut hasher = blake3::Hasher::new();
    let mut left = f.size;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let mut buf = Vec::with_capacity(want);
        let n = (&mut file)
            .take(want as u64)
            .read_to_end(&mut buf)
            .map_err(|e| format!("{shown}: reading it from the snapshot: {e}"))?;
        if n == 0 {
            return Err(format!(
                "{shown}: the snapshot's file has {} bytes, its manifest says {}; the snapshot is damaged (check it with `backupd verify`)",
                f.size - left,
                f.size
            ));
        }
        hasher.update(&buf);
        left -= n as u64;
        let chunk = Arc::new(buf);
        if !txs.iter().all(|t| t.send(Msg::Data(chunk.clone())).is_ok()) {
            return Ok(false);
        }
    }
    let mut extra = [0u8; 1];
    if file.read(&mut extra).map_err(|e| format!("{shown}: {e}"))? != 0 {
        return Err(format!(
            "{shown}: the snapshot's file is longer than its manifest's {} bytes; the snapshot is damaged (check it with `backupd verify`)",
            f.size
        ));
    }
    if let Some(h) = f.hash
        && *hasher.finalize().as_bytes() != h
    {
        return Err(format!(
            "{shown}: its content does not match the manifest's BLAKE3; the snapshot is damaged (check it with `backupd verify`)"
        ));
    }
    Ok(true)
}

/// A copy's queue as a [`Read`] of one file at a time: `read` ends (returns 0) at the file's
/// `End`; [`Stream::next_file`] moves on to the next. The stream outlives a tape change, so a file
/// split at early warning continues from the same place on the next tape.
pub struct Stream {
    rx: Receiver<Msg>,
    chunk: Option<Arc<Vec<u8>>>,
    at: usize,
    ended: bool,
    /// Why the source stopped, when it failed.
    pub failed: Option<String>,
}

impl Stream {
    pub fn new(rx: Receiver<Msg>) -> Self {
        Stream {
            rx,
            chunk: None,
            at: 0,
            ended: false,
            failed: None,
        }
    }

    /// Reads the rest of the current file; Ok once its `End` (the manifest's length and hash
    /// confirmed) is read.
    pub fn finish_file(&mut self) -> Result<(), String> {
        let mut sink = std::io::sink();
        let r = std::io::copy(self, &mut sink);
        match (&self.failed, r) {
            (Some(why), _) => Err(why.clone()),
            (None, Err(e)) => Err(e.to_string()),
            (None, Ok(_)) => Ok(()),
        }
    }

    /// The current file was read to its end: start on the next.
    pub fn next_file(&mut self) {
        debug_assert!(self.ended);
        self.ended = false;
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(c) = &self.chunk
                && self.at < c.len()
            {
                let n = (c.len() - self.at).min(buf.len());
                buf[..n].copy_from_slice(&c[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            if let Some(why) = &self.failed {
                return Err(std::io::Error::other(why.clone()));
            }
            match self.rx.recv() {
                Ok(Msg::Data(c)) => {
                    self.chunk = Some(c);
                    self.at = 0;
                }
                Ok(Msg::End) => {
                    self.chunk = None;
                    self.ended = true;
                }
                Ok(Msg::Failed(why)) => {
                    self.failed = Some(why.clone());
                    return Err(std::io::Error::other(why));
                }
                Err(_) => {
                    self.failed = Some("the snapshot reader stopped".into());
                    return Err(std::io::Error::other("the snapshot reader stopped"));
                }
            }
        }
    }
}
