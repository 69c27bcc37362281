//! Streaming a byte stream to and from tape as records, for `tapectl drive write/read` and the
//! benchmark: one page-aligned buffer reused for every record (no per-record allocation, and SG_IO can
//! move it without a bounce buffer).

use std::io::{ErrorKind, Read, Write};

use ltfs::{ReadOutcome, WriteOutcome};
use scsi::{AlignedBuf, Transport};
use serde::Serialize;

use super::{Drive, DriveError};

/// Why a stream stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamEnd {
    /// Writing: the input ended and all of it is on tape.
    EndOfInput,
    /// Writing: the tape reached early warning; writing stopped after the record that hit it. Everything
    /// counted was written; the rest of the input was not read.
    EarlyWarning,
    /// Reading: a filemark (the position is after it).
    Filemark,
    /// Reading: end of data.
    EndOfData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    pub records: u64,
    pub bytes: u64,
    pub end: StreamEnd,
}

impl<T: Transport> Drive<T> {
    /// Writes `reader` to tape as records of `record_size` bytes (the last one may be shorter), from the
    /// current position. Writes no filemark: the caller ends the file with [`Drive::write_marks`].
    pub fn write_records_from<R: Read>(
        &mut self,
        mut reader: R,
        record_size: usize,
    ) -> Result<StreamStats, DriveError> {
        let mut buf = AlignedBuf::new(record_size.max(1));
        let mut stats = StreamStats {
            records: 0,
            bytes: 0,
            end: StreamEnd::EndOfInput,
        };
        loop {
            let n = fill(&mut reader, &mut buf).map_err(|source| DriveError::Io {
                device: self.device.clone(),
                context: "reading the input",
                source,
            })?;
            if n == 0 {
                return Ok(stats);
            }
            let outcome = self.write_record(&buf[..n])?;
            stats.records += 1;
            stats.bytes += n as u64;
            if outcome == WriteOutcome::EarlyWarning {
                stats.end = StreamEnd::EarlyWarning;
                return Ok(stats);
            }
            if n < buf.len() {
                return Ok(stats);
            }
        }
    }

    /// Reads records from the current position into `writer` until a filemark or end of data. Records
    /// longer than `max_record` fail with [`ltfs::DeviceError::RecordTooLong`].
    pub fn read_records_to<W: Write>(
        &mut self,
        mut writer: W,
        max_record: usize,
    ) -> Result<StreamStats, DriveError> {
        let mut buf = AlignedBuf::new(max_record.max(1));
        let mut stats = StreamStats {
            records: 0,
            bytes: 0,
            end: StreamEnd::EndOfData,
        };
        loop {
            match self.read_record(&mut buf)? {
                ReadOutcome::Data(n) => {
                    writer
                        .write_all(&buf[..n])
                        .map_err(|source| DriveError::Io {
                            device: self.device.clone(),
                            context: "writing the output",
                            source,
                        })?;
                    stats.records += 1;
                    stats.bytes += n as u64;
                }
                ReadOutcome::Filemark => {
                    stats.end = StreamEnd::Filemark;
                    break;
                }
                ReadOutcome::EndOfData => {
                    stats.end = StreamEnd::EndOfData;
                    break;
                }
            }
        }
        writer.flush().map_err(|source| DriveError::Io {
            device: self.device.clone(),
            context: "writing the output",
            source,
        })?;
        Ok(stats)
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::script::{Script, Step};
    use super::*;
    use scsi::{Sense, SenseKey};

    /// A reader that hands out at most 3 bytes per call.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn writes_full_records_then_a_short_one() {
        let data: Vec<u8> = (0..25u8).collect();
        let mut d = Script::drive(vec![
            Step::ok(&[0x0a, 0, 0, 0, 10]),
            Step::ok(&[0x0a, 0, 0, 0, 10]),
            Step::ok(&[0x0a, 0, 0, 0, 5]),
        ]);
        let s = d.write_records_from(Trickle(&data), 10).unwrap();
        assert_eq!(
            s,
            StreamStats {
                records: 3,
                bytes: 25,
                end: StreamEnd::EndOfInput
            }
        );
        let t = d.transport();
        assert_eq!(t.sent.concat(), data);
        assert!(t.done());
    }

    #[test]
    fn exact_multiple_needs_no_empty_record_and_early_warning_stops() {
        let data = [7u8; 20];
        let mut d = Script::drive(vec![Step::ok(&[0x0a]), Step::ok(&[0x0a])]);
        assert_eq!(d.write_records_from(&data[..], 10).unwrap().records, 2);

        let mut ew = Sense::new(SenseKey::NoSense, 0, 2);
        ew.eom = true;
        let mut d = Script::drive(vec![Step::ok(&[0x0a]), Step::sense(&[0x0a], ew)]);
        let s = d.write_records_from(&[1u8; 100][..], 10).unwrap();
        assert_eq!(
            s,
            StreamStats {
                records: 2,
                bytes: 20,
                end: StreamEnd::EarlyWarning
            }
        );
        assert!(d.early_warning());
    }

    #[test]
    fn reads_until_filemark_or_eod() {
        let mut fm = Sense::new(SenseKey::NoSense, 0, 1);
        fm.filemark = true;
        let mut short = Sense::new(SenseKey::NoSense, 0, 0);
        short.ili = true;
        short.information = Some(12);
        let mut d = Script::drive(vec![
            Step::data(&[0x08, 2, 0, 0, 16], vec![1u8; 16]),
            // A drive that ignores SILI: ILI with a positive residual is a short record.
            Step::sense_with_data(&[0x08], short, vec![2u8; 4]),
            Step::sense(&[0x08], fm),
            Step::sense(&[0x08], Sense::new(SenseKey::BlankCheck, 0, 5)),
        ]);
        let mut out = Vec::new();
        let s = d.read_records_to(&mut out, 16).unwrap();
        assert_eq!(
            s,
            StreamStats {
                records: 2,
                bytes: 20,
                end: StreamEnd::Filemark
            }
        );
        assert_eq!(out.len(), 20);
        assert_eq!(&out[16..], &[2u8; 4]);
        let s = d.read_records_to(&mut out, 16).unwrap();
        assert_eq!(
            s,
            StreamStats {
                records: 0,
                bytes: 0,
                end: StreamEnd::EndOfData
            }
        );
    }

    #[test]
    fn input_errors_name_the_device() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let mut d = Script::drive(vec![]);
        let e = d.write_records_from(Broken, 10).unwrap_err();
        assert_eq!(e.to_string(), "script: reading the input: disk on fire");
    }
}
