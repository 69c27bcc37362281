//! Progress on a terminal (files, bytes, rate); silent otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    files_done: std::sync::atomic::AtomicU64,
    files_total: std::sync::OnceLock<u64>,
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
            files_done: Default::default(),
            files_total: Default::default(),
        }
    }

    pub fn hidden() -> Self {
        Progress {
            bar: None,
            files_done: Default::default(),
            files_total: Default::default(),
        }
    }

    pub fn phase(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    pub fn start_copy(&self, files: u64, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_length(bytes);
            b.set_position(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .expect("valid template"),
            );
            b.set_message(format!("0/{files} files"));
            b.set_length(bytes.max(1));
            let _ = self.files_total.set(files);
        }
    }

    /// Bytes of source content dealt with: read, or found unchanged without reading.
    pub fn bytes(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// A file is finished (its bytes are reported through `bytes`, read or not).
    pub fn file_done(&self) {
        if let Some(b) = &self.bar {
            let done = self
                .files_done
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if done.is_multiple_of(64) {
                b.set_message(format!(
                    "{done}/{} files",
                    self.files_total.get().copied().unwrap_or(0)
                ));
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
