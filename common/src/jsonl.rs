//! Reading zstd-compressed JSON Lines from untrusted bytes (the snapshot manifest, the tape set
//! manifest): line by line, each line bounded, a missing final newline reported as truncation.

use std::io::{BufRead, BufReader, Read};

/// Lines of a zstd frame of JSON Lines, each at most `max` bytes.
pub struct Lines<R: Read> {
    reader: BufReader<zstd::Decoder<'static, BufReader<R>>>,
    line: Vec<u8>,
    number: usize,
    max: usize,
}

/// What went wrong, at which line (1-based; 0 for the stream as a whole).
#[derive(Debug)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl<R: Read> Lines<R> {
    pub fn new(r: R, max: usize) -> Result<Self, LineError> {
        let dec = zstd::Decoder::new(r).map_err(|e| LineError {
            line: 0,
            message: format!("not a zstd stream: {e}"),
        })?;
        Ok(Lines {
            reader: BufReader::with_capacity(1 << 16, dec),
            line: Vec::new(),
            number: 0,
            max,
        })
    }

    /// The number of the line last returned.
    pub fn number(&self) -> usize {
        self.number
    }

    /// The next line with its newline, or `None` at the end of the stream.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        self.line.clear();
        let at = self.number + 1;
        let n = (&mut self.reader)
            .take(self.max as u64 + 1)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| LineError {
                line: at,
                message: format!("read failed: {e}"),
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.number = at;
        if self.line.len() > self.max {
            return Err(LineError {
                line: at,
                message: format!("line longer than {} bytes", self.max),
            });
        }
        if self.line.last() != Some(&b'\n') {
            return Err(LineError {
                line: at,
                message: "truncated (no line end)".into(),
            });
        }
        Ok(Some(&self.line))
    }

    /// The next line parsed as `T`; `what` names it in the error ("bad entry: …").
    pub fn next_json<T: serde::de::DeserializeOwned>(
        &mut self,
        what: &str,
    ) -> Result<Option<T>, LineError> {
        let Some(line) = self.next_line()? else {
            return Ok(None);
        };
        serde_json::from_slice(line)
            .map(Some)
            .map_err(|e| LineError {
                line: self.number,
                message: format!("bad {what}: {e}"),
            })
    }
}
