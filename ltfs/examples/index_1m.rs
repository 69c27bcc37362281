//! Writes and parses an LTFS index of 1,000,000 files in 1000 directories, printing time and peak RSS
//! (VmHWM) of each phase. Each phase runs in a child process so their peaks are measured separately.
//!
//! `cargo run --release -p ltfs --example index_1m [-- PATH]`

use ltfs::index::{
    Directory, Entry, Extent, File, FileContent, Index, IndexLocation, Limits, LtfsTime, Times,
};
use std::io::{BufReader, BufWriter};
use std::process::Command;
use std::time::Instant;

/// Counts live heap bytes, to tell the model's size from allocator overhead.
struct Counting;
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(
            new.wrapping_sub(l.size()),
            std::sync::atomic::Ordering::Relaxed,
        );
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}
#[global_allocator]
static A: Counting = Counting;

fn live_mb() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed) / 1_000_000
}

const DIRS: u64 = 1000;
const FILES_PER_DIR: u64 = 1000;

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

fn vm_hwm() -> String {
    format!(
        "{} (resident now {}, live heap {} MB)",
        status("VmHWM:"),
        status("VmRSS:"),
        live_mb()
    )
}

fn build() -> Index {
    let now = LtfsTime::new(1_764_000_000, 123_456_789);
    let mut ix = Index::new(
        "rackvault index_1m - Sync",
        "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10",
        "BENCH1",
        now,
        IndexLocation {
            partition: 'b',
            start_block: 2_000_000,
        },
    );
    let times = Times::all(now);
    let mut uid = 1;
    let mut block = 5;
    for d in 0..DIRS {
        uid += 1;
        let mut dir = Directory::new(format!("dir-{d:04}"), uid, times);
        for f in 0..FILES_PER_DIR {
            uid += 1;
            let mut file = File::new(format!("file-{f:04}.dat"), uid, times);
            file.length = 100_000 + f;
            file.content = FileContent::Extents(vec![Extent {
                file_offset: 0,
                partition: 'b',
                start_block: block,
                byte_offset: 0,
                byte_count: file.length,
            }]);
            block += 1;
            dir.entries.push(Entry::File(file));
        }
        ix.root.entries.push(Entry::Directory(dir));
    }
    ix.highest_file_uid = uid;
    ix
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--write") => {
            let t = Instant::now();
            let ix = build();
            let built = t.elapsed();
            let t = Instant::now();
            let out = BufWriter::new(std::fs::File::create(&args[2])?);
            ix.write_xml(out)?;
            let size = std::fs::metadata(&args[2])?.len();
            println!(
                "write: built the model in {:.2?}, wrote {} MB in {:.2?}; peak RSS (incl. the model) {}",
                built,
                size / 1_000_000,
                t.elapsed(),
                vm_hwm()
            );
        }
        Some("--read") => {
            let t = Instant::now();
            let r = BufReader::with_capacity(256 * 1024, std::fs::File::open(&args[2])?);
            let ix = Index::read_xml(r, &Limits::default())?;
            let n: usize = ix
                .root
                .entries
                .iter()
                .map(|e| match e {
                    Entry::Directory(d) => d.entries.len(),
                    Entry::File(_) => 1,
                })
                .sum();
            println!(
                "read:  parsed and validated {n} files in {:.2?}; peak RSS {}",
                t.elapsed(),
                vm_hwm()
            );
        }
        Some("--scan") => {
            // The floor: quick-xml's event loop alone over the same file, no model.
            let t = Instant::now();
            let mut r = quick_xml::Reader::from_reader(BufReader::with_capacity(
                256 * 1024,
                std::fs::File::open(&args[2])?,
            ));
            let mut buf = Vec::new();
            let mut events = 0u64;
            loop {
                buf.clear();
                if matches!(r.read_event_into(&mut buf)?, quick_xml::events::Event::Eof) {
                    break;
                }
                events += 1;
            }
            println!(
                "scan:  quick-xml alone, {events} events in {:.2?}; peak RSS {}",
                t.elapsed(),
                vm_hwm()
            );
        }
        _ => {
            let path = args.get(1).cloned().unwrap_or_else(|| {
                std::env::temp_dir()
                    .join("ltfs-index-1m.xml")
                    .display()
                    .to_string()
            });
            let exe = std::env::current_exe()?;
            for phase in ["--write", "--scan", "--read"] {
                let st = Command::new(&exe).args([phase, &path]).status()?;
                if !st.success() {
                    return Err(format!("{phase} failed: {st}").into());
                }
            }
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
