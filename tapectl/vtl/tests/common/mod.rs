//! Helpers for raw-CDB tests against the virtual library.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use scsi::{Completion, DataDir, Sense, SenseKey, Status, Transport};
use vtl::{DriveModel, Library, LibrarySpec};

pub const T: Duration = Duration::from_secs(30);

pub fn spec(barcodes: &[&str]) -> LibrarySpec {
    LibrarySpec {
        storage_slots: 8,
        ie_slots: 2,
        drives: vec![DriveModel::Lto6, DriveModel::Lto8],
        cartridge_capacity_mb: 64,
        serial: "00L4U78A5813".into(),
        barcodes: barcodes.iter().map(|s| s.to_string()).collect(),
        dvcid_supported: true,
    }
}

pub fn library(barcodes: &[&str]) -> (tempfile::TempDir, Library) {
    let d = tempfile::tempdir().unwrap();
    let lib = Library::create(&d.path().join("lib"), &spec(barcodes)).unwrap();
    (d, lib)
}

pub fn run(t: &mut dyn Transport, cdb: &[u8]) -> Completion {
    t.execute(cdb, DataDir::None, T).unwrap()
}

pub fn run_in(t: &mut dyn Transport, cdb: &[u8], len: usize) -> (Completion, Vec<u8>) {
    let mut buf = vec![0u8; len];
    let c = t.execute(cdb, DataDir::In(&mut buf), T).unwrap();
    buf.truncate(c.transferred);
    (c, buf)
}

pub fn run_out(t: &mut dyn Transport, cdb: &[u8], data: &[u8]) -> Completion {
    t.execute(cdb, DataDir::Out(data), T).unwrap()
}

pub fn sense(c: &Completion) -> Sense {
    assert_eq!(
        c.status,
        Status::CHECK_CONDITION,
        "expected CHECK CONDITION"
    );
    Sense::decode(&c.sense).expect("decodable sense")
}

#[track_caller]
pub fn good(c: &Completion) {
    if c.status != Status::GOOD {
        panic!(
            "expected GOOD, got {:?} {}",
            c.status,
            Sense::decode(&c.sense)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
    }
}

#[track_caller]
pub fn expect(c: &Completion, key: SenseKey, asc: u8, ascq: u8) -> Sense {
    let s = sense(c);
    assert!(
        s.is(key, asc, ascq),
        "expected {:?} {asc:02x}/{ascq:02x}, got {s}",
        key
    );
    s
}

pub fn move_medium(ch: &mut dyn Transport, src: u16, dst: u16) -> Completion {
    let [s1, s2] = src.to_be_bytes();
    let [d1, d2] = dst.to_be_bytes();
    run(ch, &[0xa5, 0, 0, 1, s1, s2, d1, d2, 0, 0, 0, 0])
}

/// Runs TEST UNIT READY until it stops reporting UNIT ATTENTION.
pub fn clear_ua(t: &mut dyn Transport) {
    for _ in 0..10 {
        let c = run(t, &[0; 6]);
        if c.status == Status::GOOD || sense(&c).key != SenseKey::UnitAttention {
            return;
        }
    }
    panic!("unit attention does not clear");
}

pub fn write(d: &mut dyn Transport, data: &[u8]) -> Completion {
    let l = (data.len() as u32).to_be_bytes();
    run_out(d, &[0x0a, 0, l[1], l[2], l[3], 0], data)
}

pub fn read(d: &mut dyn Transport, len: usize, sili: bool) -> (Completion, Vec<u8>) {
    let l = (len as u32).to_be_bytes();
    run_in(
        d,
        &[0x08, if sili { 2 } else { 0 }, l[1], l[2], l[3], 0],
        len,
    )
}

pub fn wfm(d: &mut dyn Transport, n: u32) -> Completion {
    let l = n.to_be_bytes();
    run(d, &[0x10, 0, l[1], l[2], l[3], 0])
}

pub fn space(d: &mut dyn Transport, code: u8, count: i32) -> Completion {
    let c = count.to_be_bytes();
    run(d, &[0x11, code, c[1], c[2], c[3], 0])
}

pub fn locate(d: &mut dyn Transport, partition: u8, block: u64) -> Completion {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x92;
    cdb[1] = 0x02;
    cdb[3] = partition;
    cdb[4..12].copy_from_slice(&block.to_be_bytes());
    run(d, &cdb)
}

/// (partition, block, file number) from READ POSITION long form.
pub fn position(d: &mut dyn Transport) -> (u32, u64, u64) {
    let (c, b) = run_in(d, &[0x34, 0x06, 0, 0, 0, 0, 0, 0, 0, 0], 32);
    good(&c);
    assert_eq!(b.len(), 32);
    (
        u32::from_be_bytes(b[4..8].try_into().unwrap()),
        u64::from_be_bytes(b[8..16].try_into().unwrap()),
        u64::from_be_bytes(b[16..24].try_into().unwrap()),
    )
}

pub fn mode_select10(d: &mut dyn Transport, params: &[u8]) -> Completion {
    let l = (params.len() as u16).to_be_bytes();
    run_out(d, &[0x55, 0x10, 0, 0, 0, 0, 0, l[0], l[1], 0], params)
}

/// The record/filemark/EOD and attribute file names of a cartridge directory, sorted.
pub fn tree(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Loads slot `slot` (1-based) into drive `drive` and clears the drive's unit attention.
pub fn load(lib: &Library, slot: u16, drive: usize) -> vtl::VirtualDrive {
    let mut ch = lib.changer();
    good(&move_medium(
        &mut ch,
        0x1000 + slot - 1,
        0x100 + drive as u16,
    ));
    let mut d = lib.drive(drive).unwrap();
    clear_ua(&mut d);
    d
}

/// Two partitions the way LTFS asks for them: MODE SENSE page 0x11, IDP, p0 = 1 GB (units 10^9),
/// p1 = the rest, then FORMAT MEDIUM format 1.
pub fn format_two_partitions(d: &mut dyn Transport) {
    let (c, mut b) = run_in(d, &[0x5a, 0, 0x11, 0, 0, 0, 0, 0, 64, 0], 64);
    good(&c);
    let bdlen = u16::from_be_bytes([b[6], b[7]]) as usize;
    let pg = 8 + bdlen;
    b[0] = 0;
    b[1] = 0;
    b[pg + 3] = 1;
    b[pg + 4] = 0x20 | (b[pg + 4] & 0x1f);
    b[pg + 6] = 9;
    b[pg + 8..pg + 10].copy_from_slice(&1u16.to_be_bytes());
    b[pg + 10..pg + 12].copy_from_slice(&0xffffu16.to_be_bytes());
    good(&mode_select10(d, &b));
    good(&run(d, &[0x04, 0, 0x01, 0, 0, 0]));
}
