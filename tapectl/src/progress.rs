//! Progress of long copies (`ltfs put`/`get`) on a terminal: bytes, rate, files. Nothing is drawn
//! off a terminal or with `--json`.

use std::io::{IsTerminal, Read};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Bar {
    bar: Option<ProgressBar>,
    verb: &'static str,
    files: u64,
}

impl Bar {
    pub fn new(enabled: bool, verb: &'static str, files: u64, bytes: u64) -> Bar {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(
                Some(bytes.max(1)),
                ProgressDrawTarget::stderr_with_hz(5),
            );
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .expect("valid template"),
            );
            b.set_message(format!("{verb} 0/{files} files"));
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        });
        Bar { bar, verb, files }
    }

    pub fn bytes(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn file_done(&self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{} {done}/{} files", self.verb, self.files));
        }
    }

    /// A line above the bar (or on stderr when there is none and output is for people).
    pub fn println(&self, line: &str) {
        if let Some(b) = &self.bar {
            b.println(line);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// A reader that tells the bar what passed through it.
pub struct Counted<'a, R> {
    pub inner: R,
    pub bar: &'a Bar,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.bytes(n as u64);
        Ok(n)
    }
}
