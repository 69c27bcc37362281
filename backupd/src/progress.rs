//! A run's live progress (phase, files, bytes), readable by the daemon's API, and its cancel
//! flag; drawn as a bar on a terminal when asked.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// The error a cancelled run stops with (found with `anyhow::Error::downcast_ref`).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the run was cancelled")]
pub struct Cancelled;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub phase: String,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// What the run waits for a person to do (a tape job with no tape to write on).
    pub waiting: Option<String>,
}

#[derive(Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
    phase: Mutex<String>,
    files_done: AtomicU64,
    files_total: AtomicU64,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    cancelled: AtomicBool,
    waiting: Mutex<Option<String>>,
}

impl Progress {
    /// A bar on stderr when it is a terminal and `enabled`.
    pub fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        });
        Progress {
            bar,
            ..Default::default()
        }
    }

    pub fn hidden() -> Self {
        Progress::default()
    }

    pub fn phase(&self, msg: &str) {
        *self.phase.lock().expect("not poisoned") = msg.to_string();
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    pub fn start_copy(&self, files: u64, bytes: u64) {
        self.start("copying", files, bytes);
    }

    /// Work of `files` files and `bytes` bytes begins: the bar shows bytes, rate and files.
    pub fn start(&self, phase: &str, files: u64, bytes: u64) {
        self.phase(phase);
        self.files_total.store(files, Relaxed);
        self.bytes_total.store(bytes, Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .expect("valid template"),
            );
            b.set_message(format!("0/{files} files"));
            b.set_length(bytes.max(1));
        }
    }

    /// A new piece of work (the next set of a tape job): counts start again from zero.
    pub fn restart(&self, phase: &str, files: u64, bytes: u64) {
        self.files_done.store(0, Relaxed);
        self.bytes_done.store(0, Relaxed);
        self.start(phase, files, bytes);
    }

    /// The run waits for a person (`Some`: what to do), or goes on (`None`).
    pub fn set_waiting(&self, what: Option<&str>) {
        *self.waiting.lock().expect("not poisoned") = what.map(str::to_string);
    }

    /// Bytes of source content dealt with: read, or found unchanged without reading.
    pub fn bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// A file is finished (its bytes are reported through `bytes`, read or not).
    pub fn file_done(&self) {
        let done = self.files_done.fetch_add(1, Relaxed) + 1;
        if let Some(b) = &self.bar
            && done.is_multiple_of(64)
        {
            b.set_message(format!("{done}/{} files", self.files_total.load(Relaxed)));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            phase: self.phase.lock().expect("not poisoned").clone(),
            files_done: self.files_done.load(Relaxed),
            files_total: self.files_total.load(Relaxed),
            bytes_done: self.bytes_done.load(Relaxed),
            bytes_total: self.bytes_total.load(Relaxed),
            waiting: self.waiting.lock().expect("not poisoned").clone(),
        }
    }

    /// Asks the run to stop; it stops at the next file or block and publishes nothing.
    pub fn cancel(&self) {
        self.cancelled.store(true, Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Relaxed)
    }

    /// `Err(Cancelled)` once the run was asked to stop.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}
