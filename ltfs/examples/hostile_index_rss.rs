//! Peak memory of mounting a volume whose newest index is a hostile 388 MB construct that is invalid at
//! byte 93,534: what the index reader costs when it is handed garbage.
//!
//! The tape is in memory except the hostile index, whose records are generated as they are read, so the
//! process holds only what the reader itself keeps. Prints the outcome of `Volume::mount` and the peak
//! RSS (VmHWM) before and after it.
//!
//! `cargo run --release -p ltfs --example hostile_index_rss [-- MB]`

use ltfs::device::{DeviceError, Position, ReadOutcome, Result, TapeDevice, WriteOutcome};
use ltfs::mam::Attribute;
use ltfs::volume::{FileMeta, FormatOptions, Volume};
use std::time::Instant;

const BS: usize = 512 * 1024;
/// Where the hostile index becomes invalid.
const BAD_AT: usize = 93_534;

#[derive(Clone)]
enum Obj {
    Record(Vec<u8>),
    Filemark,
    /// A record of the hostile index, generated when read.
    Hostile(u32),
}

struct Tape {
    parts: [Vec<Obj>; 2],
    pos: Position,
    /// Records in the hostile index.
    hostile_records: u32,
}

fn hostile_record(i: u32, last: u32) -> Vec<u8> {
    let len = if i == last { BS / 2 } else { BS };
    if i > 0 {
        return vec![b' '; len];
    }
    let mut x =
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ltfsindex version=\"2.4.0\">\n".to_vec();
    while x.len() < BAD_AT - 64 {
        x.extend_from_slice(b"<!-- a comment the reader has to skip over ............... -->\n");
    }
    x.resize(BAD_AT, b' ');
    x.extend_from_slice(b"<generationnumber>not a number</generationnumber>\n");
    x.resize(len, b' ');
    x
}

impl Tape {
    fn part(&mut self) -> &mut Vec<Obj> {
        &mut self.parts[self.pos.partition as usize]
    }
}

impl TapeDevice for Tape {
    fn max_block_size(&mut self) -> Result<usize> {
        Ok(1 << 22)
    }
    fn partition_count(&mut self) -> Result<u8> {
        Ok(2)
    }
    fn format_two_partitions(&mut self, _: u32) -> Result<()> {
        self.parts = Default::default();
        self.pos = Position {
            partition: 0,
            block: 0,
        };
        Ok(())
    }
    fn rewind(&mut self) -> Result<()> {
        self.pos = Position {
            partition: 0,
            block: 0,
        };
        Ok(())
    }
    fn locate(&mut self, to: Position) -> Result<()> {
        if to.block > self.parts[to.partition as usize].len() as u64 {
            return Err(DeviceError::IllegalRequest("past the end of data".into()));
        }
        self.pos = to;
        Ok(())
    }
    fn position(&mut self) -> Result<Position> {
        Ok(self.pos)
    }
    fn locate_eod(&mut self, partition: u8) -> Result<()> {
        self.pos = Position {
            partition,
            block: self.parts[partition as usize].len() as u64,
        };
        Ok(())
    }
    fn space_filemarks(&mut self, count: i32) -> Result<()> {
        let mut left = count.unsigned_abs();
        while left > 0 {
            if count > 0 {
                let b = self.pos.block as usize;
                let fm = match self.part().get(b) {
                    None => return Err(DeviceError::Other("end of data".into())),
                    Some(o) => matches!(o, Obj::Filemark),
                };
                self.pos.block += 1;
                if fm {
                    left -= 1;
                }
            } else {
                if self.pos.block == 0 {
                    return Err(DeviceError::Other("beginning of partition".into()));
                }
                self.pos.block -= 1;
                let b = self.pos.block as usize;
                if matches!(self.part()[b], Obj::Filemark) {
                    left -= 1;
                }
            }
        }
        Ok(())
    }
    fn read_block(&mut self, buf: &mut [u8]) -> Result<ReadOutcome> {
        let b = self.pos.block as usize;
        let last = self.hostile_records - 1;
        let rec = match self.part().get(b) {
            None => return Ok(ReadOutcome::EndOfData),
            Some(Obj::Filemark) => {
                self.pos.block += 1;
                return Ok(ReadOutcome::Filemark);
            }
            Some(Obj::Record(r)) => r.clone(),
            Some(Obj::Hostile(i)) => hostile_record(*i, last),
        };
        self.pos.block += 1;
        if rec.len() > buf.len() {
            return Err(DeviceError::RecordTooLong {
                record: rec.len(),
                buffer: buf.len(),
            });
        }
        buf[..rec.len()].copy_from_slice(&rec);
        Ok(ReadOutcome::Data(rec.len()))
    }
    fn write_block(&mut self, data: &[u8]) -> Result<WriteOutcome> {
        let b = self.pos.block as usize;
        self.part().truncate(b);
        self.part().push(Obj::Record(data.to_vec()));
        self.pos.block += 1;
        Ok(WriteOutcome::Written)
    }
    fn write_filemarks(&mut self, count: u32) -> Result<WriteOutcome> {
        if count > 0 {
            let b = self.pos.block as usize;
            self.part().truncate(b);
        }
        for _ in 0..count {
            self.part().push(Obj::Filemark);
            self.pos.block += 1;
        }
        Ok(WriteOutcome::Written)
    }
    fn read_attribute(&mut self, _: u8, _: u16) -> Result<Option<Attribute>> {
        Ok(None)
    }
    fn write_attribute(&mut self, _: u8, _: &Attribute) -> Result<()> {
        Err(DeviceError::Unsupported("MAM".into()))
    }
}

fn status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .map(|l| l[key.len()..].trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mb: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(388);
    let records = (mb as usize * 1_000_000).div_ceil(BS) as u32;
    let mut tape = Tape {
        parts: Default::default(),
        pos: Position {
            partition: 0,
            block: 0,
        },
        hostile_records: records,
    };
    {
        let opts = FormatOptions {
            block_size: BS,
            ..FormatOptions::default()
        };
        let mut vol = Volume::format(&mut tape, &opts)?;
        vol.put_file("a", &b"the data of a"[..], &FileMeta::default())?;
        vol.unmount()?;
    }
    // The newest index on the data partition: a complete construct (FM, records, FM).
    let dp = &mut tape.parts[1];
    dp.push(Obj::Filemark);
    dp.extend((0..records).map(Obj::Hostile));
    dp.push(Obj::Filemark);
    let size = (records as u64 - 1) * BS as u64 + BS as u64 / 2;
    println!(
        "hostile newest index: {} MB in {records} records, invalid at byte {BAD_AT}",
        size / 1_000_000
    );
    println!("before mount: peak RSS {}", status("VmHWM:"));
    let t = Instant::now();
    match Volume::mount(&mut tape) {
        Ok(vol) => println!(
            "mount succeeded in {:.2?} with generation {} (the hostile index was skipped)",
            t.elapsed(),
            vol.index().generation
        ),
        Err(e) => println!("mount failed in {:.2?}: {e}", t.elapsed()),
    }
    println!("after mount:  peak RSS {}", status("VmHWM:"));
    Ok(())
}
