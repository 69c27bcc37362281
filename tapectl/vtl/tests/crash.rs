//! A writer killed with SIGKILL at any instant leaves a cartridge directory the LTFS reference
//! implementation's file backend reads as a valid tape: exactly one end-of-data marker per partition,
//! right after the records and filemarks before it (read the way `filedebug_search_eod()` reads them),
//! no empty record file, and the tape before or after the interrupted command. Our own library reads
//! the same tape back after reloading, removes what the dead writer left beyond EOD, and appends to it.
//!
//! The writer is this test binary run again as a child (`crash_child`, ignored when run alone). It
//! sends a fixed sequence of SCSI commands to a virtual drive and says on stdout which ones completed.
//! `vtl::crash_at_step(k)` makes it kill itself at the k-th directory-changing step; the parent tries
//! every k until the child finishes. Another child streams large records and is killed from outside
//! while it waits between two commands with pre-created files in flight. Nothing races a timer: the
//! crash point is injected, or the child is blocked on its stdin when it is killed.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use scsi::{SenseKey, Status, Transport};
use vtl::Library;

const BARCODE: &str = "AAA001L6";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Block {
    Rec(Vec<u8>),
    Fm,
}

/// What a partition holds, block by block; a partition that does not exist is empty.
type Tape = [Vec<Block>; 2];

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<u8>),
    Wfm(u32),
    Locate(u8, u64),
    Rewind,
    FormatTwoPartitions,
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Small and large records (from 64 KiB on a helper thread pre-creates files), a short record inside
/// a run, single and double filemarks, an overwrite in the middle (the tape is cut there), FORMAT into
/// two partitions, and writes on both partitions.
fn workload() -> Vec<Op> {
    use Op::*;
    vec![
        Write(pattern(1, 3000)),
        Write(pattern(2, 100_000)),
        Write(pattern(3, 100_000)),
        Write(pattern(4, 10)),
        Wfm(1),
        Write(pattern(5, 200_000)),
        Write(pattern(6, 70_000)),
        Wfm(2),
        Locate(0, 2),
        Write(pattern(7, 80_000)),
        Write(pattern(8, 5)),
        Wfm(1),
        Rewind,
        FormatTwoPartitions,
        Locate(1, 0),
        Write(pattern(9, 90_000)),
        Wfm(1),
        Locate(0, 0),
        Write(pattern(10, 1000)),
        Wfm(1),
    ]
}

/// The model: the tape and the position after each operation.
struct Model {
    tape: Tape,
    p: usize,
    blk: usize,
}

impl Model {
    fn new() -> Model {
        Model {
            tape: [Vec::new(), Vec::new()],
            p: 0,
            blk: 0,
        }
    }

    /// The tape as it is when `op` has cut it at the position and written nothing yet: a write in
    /// the middle of the data first makes what follows unreachable. FORMAT empties every partition.
    fn cut(&self, op: &Op) -> Tape {
        let mut t = self.tape.clone();
        match op {
            Op::Write(_) | Op::Wfm(_) => t[self.p].truncate(self.blk),
            Op::FormatTwoPartitions => t = [Vec::new(), Vec::new()],
            _ => {}
        }
        t
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write(data) => {
                self.tape[self.p].truncate(self.blk);
                self.tape[self.p].push(Block::Rec(data.clone()));
                self.blk += 1;
            }
            Op::Wfm(n) => {
                self.tape[self.p].truncate(self.blk);
                for _ in 0..*n {
                    self.tape[self.p].push(Block::Fm);
                }
                self.blk += *n as usize;
            }
            Op::Locate(p, b) => {
                self.p = *p as usize;
                self.blk = *b as usize;
                assert!(self.blk <= self.tape[self.p].len());
            }
            Op::Rewind => self.blk = 0,
            Op::FormatTwoPartitions => {
                self.tape = [Vec::new(), Vec::new()];
                self.p = 0;
                self.blk = 0;
            }
        }
    }
}

fn run_op(d: &mut dyn Transport, op: &Op) {
    match op {
        Op::Write(data) => good(&write(d, data)),
        Op::Wfm(n) => good(&wfm(d, *n)),
        Op::Locate(p, b) => good(&locate(d, *p, *b)),
        Op::Rewind => good(&run(d, &[0x01, 0, 0, 0, 0, 0])),
        Op::FormatTwoPartitions => format_two_partitions(d),
    }
}

/// A line for the parent. The test harness may have printed "test crash_child ... " on the same line,
/// so the parent looks for the tag anywhere in it.
fn say(tag: &str, n: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{tag} {n}").unwrap();
    out.flush().unwrap();
}

fn heard(line: &str, tag: &str) -> Option<u64> {
    let at = line.find(tag)? + tag.len() + 1;
    line.get(at..)?.trim().parse().ok()
}

/// The writer, in a child process: runs the workload (or a stream of large records) on drive 0 of the
/// library in `VTL_CRASH_DIR`, saying `ack N` after the N-th command completed.
#[test]
#[ignore = "the writer the crash tests run in a child process"]
fn crash_child() {
    let dir = std::env::var_os("VTL_CRASH_DIR").expect("run by the crash tests");
    let lib = Library::open(Path::new(&dir)).unwrap();
    let mut d = lib.drive(0).unwrap();
    if let Some(n) = std::env::var_os("VTL_CRASH_STREAM") {
        let n: u32 = n.to_str().unwrap().parse().unwrap();
        for i in 0..n {
            good(&write(&mut d, &pattern(100 + i, 256 * 1024)));
            say(ACK, i);
        }
        // Wait, mid-stream, to be killed.
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        panic!("the crash test did not kill this writer");
    }
    let at: u64 = std::env::var("VTL_CRASH_AT").unwrap().parse().unwrap();
    vtl::crash_at_step(Some(at));
    for (i, op) in workload().iter().enumerate() {
        run_op(&mut d, op);
        say(ACK, i);
    }
    say(STEPS, vtl::steps_passed());
}

/// A library with the cartridge threaded in drive 0 at BOP (unit attention already taken).
fn library_with_tape() -> (tempfile::TempDir, Library) {
    let (t, lib) = library(&[BARCODE]);
    drop(load(&lib, 1, 0));
    (t, lib)
}

fn child(dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "crash_child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("VTL_CRASH_DIR", dir)
    .env_remove("VTL_CRASH_STREAM")
    .env_remove("VTL_CRASH_AT");
    c
}

const ACK: &str = "VTL-CRASH-ACK";
const STEPS: &str = "VTL-CRASH-STEPS";

/// How many commands the child completed, checking it said so in order.
fn acks(stdout: &str) -> usize {
    let said: Vec<u64> = stdout.lines().filter_map(|l| heard(l, ACK)).collect();
    assert!(
        said.iter().enumerate().all(|(i, &n)| n == i as u64),
        "{stdout}"
    );
    said.len()
}

/// Reads a cartridge directory the way the reference backend does (`filedebug_search_eod()`, then
/// `filedebug_read()`): per partition, from block 0, a filemark or a record per block until the block
/// with the `_E` marker. Panics where that backend would fail: no marker after the data (MISSING_EOD),
/// a marker somewhere else as well, an empty record file anywhere.
fn reference_view(dir: &Path) -> Tape {
    let names: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for n in names.iter().filter(|n| n.ends_with("_R")) {
        assert!(
            std::fs::metadata(dir.join(n)).unwrap().len() > 0,
            "empty record file {n} in {names:?}"
        );
    }
    let vcr = std::fs::read(dir.join("attr_0_9")).unwrap();
    assert!(
        vcr.len() == 9 && vcr[..5] == [0, 9, 0, 0, 4],
        "attr_0_9 is {vcr:?}"
    );
    let mut tape: Tape = [Vec::new(), Vec::new()];
    for (p, blocks) in tape.iter_mut().enumerate() {
        let has = |b: u64, k: char| names.contains(&format!("{p}_{b}_{k}"));
        let prefix = format!("{p}_");
        if p > 0 && !names.iter().any(|n| n.starts_with(&prefix)) {
            continue; // no such partition
        }
        let mut b = 0u64;
        loop {
            if has(b, 'E') {
                break;
            }
            if has(b, 'F') {
                blocks.push(Block::Fm);
            } else if has(b, 'R') {
                blocks.push(Block::Rec(
                    std::fs::read(dir.join(format!("{p}_{b}_R"))).unwrap(),
                ));
            } else {
                panic!(
                    "partition {p}: no end-of-data marker after block {b} (MISSING_EOD): {names:?}"
                );
            }
            b += 1;
        }
        let markers = names
            .iter()
            .filter(|n| n.starts_with(&prefix) && n.ends_with("_E"))
            .count();
        assert_eq!(markers, 1, "partition {p}: {markers} markers: {names:?}");
    }
    tape
}

/// The cartridge files a valid image of `tape` has, and no more: what a reload must leave.
fn exact_files(tape: &Tape) -> BTreeSet<String> {
    let mut want = BTreeSet::new();
    for (p, blocks) in tape.iter().enumerate() {
        for (b, blk) in blocks.iter().enumerate() {
            want.insert(format!(
                "{p}_{b}_{}",
                if *blk == Block::Fm { 'F' } else { 'R' }
            ));
        }
        want.insert(format!("{p}_{}_E", blocks.len()));
    }
    want
}

fn layout_files(dir: &Path, partitions: usize) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| (0..partitions).any(|p| n.starts_with(&format!("{p}_"))))
        .collect()
}

/// Reads partition `p` from block 0 to end of data through the virtual drive.
fn read_back(d: &mut dyn Transport, p: u8) -> Vec<Block> {
    good(&locate(d, p, 0));
    let mut out = Vec::new();
    loop {
        let (c, b) = read(d, 1 << 20, true);
        if c.status == Status::GOOD {
            out.push(Block::Rec(b));
            continue;
        }
        let s = sense(&c);
        if s.filemark {
            out.push(Block::Fm);
        } else if s.key == SenseKey::BlankCheck {
            return out;
        } else {
            panic!("reading partition {p}: {s}");
        }
    }
}

/// After a crash: the directory is a valid image of one of `allowed`; our library reloads it, reads
/// the same tape, leaves exactly its files (the dead writer's leftovers gone) and appends to it.
fn check_after_crash(lib: &Library, allowed: &[Tape], what: &str) {
    let dir = lib.cartridge_dir(BARCODE);
    let seen = reference_view(&dir);
    assert!(
        allowed.contains(&seen),
        "{what}: the tape reads as {} records/filemarks per partition, not as before or after the command",
        seen.iter()
            .map(|p| p.len().to_string())
            .collect::<Vec<_>>()
            .join("/")
    );
    let two = !seen[1].is_empty();
    let lib = Library::open(lib.dir()).unwrap();
    let mut d = lib.drive(0).unwrap();
    clear_ua(&mut d);
    assert_eq!(
        read_back(&mut d, 0),
        seen[0],
        "{what}: partition 0 read back"
    );
    if two {
        assert_eq!(
            read_back(&mut d, 1),
            seen[1],
            "{what}: partition 1 read back"
        );
    }
    let temps: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "{what}: temporary files left: {temps:?}");
    // Exactly the files of that tape (an empty partition 1 may have its marker or nothing at all:
    // FORMAT makes and removes partitions).
    let files = layout_files(&dir, 2);
    let want = exact_files(&seen);
    let of = |set: &BTreeSet<String>, p: &str| -> BTreeSet<String> {
        set.iter().filter(|n| n.starts_with(p)).cloned().collect()
    };
    assert_eq!(
        of(&files, "0_"),
        of(&want, "0_"),
        "{what}: files after reload"
    );
    let p1 = of(&files, "1_");
    assert!(
        p1 == of(&want, "1_") || (p1.is_empty() && !two),
        "{what}: partition 1 files after reload: {p1:?}"
    );
    // The recovered tape takes more data at its end.
    good(&locate(&mut d, 0, 0));
    good(&space(&mut d, 3, 0));
    good(&write(&mut d, b"after the crash"));
    let mut more = seen.clone();
    more[0].push(Block::Rec(b"after the crash".to_vec()));
    drop(d);
    assert_eq!(
        reference_view(&dir)[0],
        more[0],
        "{what}: appended after recovery"
    );
}

#[test]
fn a_writer_killed_at_every_step_leaves_a_valid_tape() {
    let ops = workload();
    // The tape before each operation and the cut it may show while the operation is under way.
    let mut before: Vec<Tape> = Vec::new();
    let mut cuts: Vec<Tape> = Vec::new();
    let mut m = Model::new();
    for op in &ops {
        before.push(m.tape.clone());
        cuts.push(m.cut(op));
        m.apply(op);
    }
    before.push(m.tape.clone());

    let mut k = 1u64;
    let steps = loop {
        let (_t, lib) = library_with_tape();
        let out = child(lib.dir())
            .env("VTL_CRASH_AT", k.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            let steps = stdout
                .lines()
                .find_map(|l| heard(l, STEPS))
                .expect("the child reports its step count");
            assert_eq!(acks(&stdout), ops.len());
            break steps;
        }
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "crash point {k}: the child did not die by SIGKILL: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Operations 0..done completed; operation `done` was under way.
        let done = acks(&stdout);
        assert!(done < ops.len(), "crash point {k} after the last command");
        let allowed = [
            before[done].clone(),
            cuts[done].clone(),
            before[done + 1].clone(),
        ];
        check_after_crash(
            &lib,
            &allowed,
            &format!(
                "crash point {k}, during command {done} ({:?})",
                kind(&ops[done])
            ),
        );
        k += 1;
        assert!(k < 10_000, "the workload never finished");
    };
    // Every step was a crash point, and there were many: records, filemarks, cuts, FORMAT, MAM.
    eprintln!("{steps} crash points, each a killed writer and a checked tape");
    assert_eq!(k, steps + 1);
    assert!(steps >= 60, "only {steps} crash points");
}

fn kind(op: &Op) -> String {
    match op {
        Op::Write(d) => format!("WRITE {} bytes", d.len()),
        other => format!("{other:?}"),
    }
}

#[test]
fn a_writer_killed_mid_stream_keeps_every_acknowledged_record() {
    for n in [1u32, 2, 5, 12] {
        let (_t, lib) = library_with_tape();
        let mut c = child(lib.dir())
            .env("VTL_CRASH_STREAM", n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The child writes n large records, acknowledging each, then blocks on its stdin in the
        // middle of the stream (files for the next records are being pre-created) and is killed there.
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        let mut acked = 0;
        while acked < n {
            let l = lines
                .next()
                .expect("the writer exited before it wrote its records")
                .unwrap();
            if heard(&l, ACK).is_some() {
                acked += 1;
            }
        }
        c.kill().unwrap();
        let status = c.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        drop(c.stdin.take());
        let tape: Tape = [
            (0..n)
                .map(|i| Block::Rec(pattern(100 + i, 256 * 1024)))
                .collect(),
            Vec::new(),
        ];
        let dir = lib.cartridge_dir(BARCODE);
        assert_eq!(
            layout_files(&dir, 2),
            exact_files(&tape)
                .into_iter()
                .filter(|f| f.starts_with("0_"))
                .collect(),
            "killed after {n} records"
        );
        check_after_crash(&lib, &[tape], &format!("killed after {n} records"));
    }
}
