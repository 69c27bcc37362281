//! The LTFS constructs (`ltfs::{label, construct, scan, coherency}`) written and read through the real
//! drive command set (`tapectl::drive::Drive`) on a virtual LTO-6 cartridge: the format-time layout must
//! be, file for file, the reference file backend's tree (ltfs-format.md §7), the labels read back and
//! compare, the §5 scan finds each partition's index with the right self pointer, MAM coherency round
//! trips, and the scan reports extra blocks and a missing trailing filemark.

use std::path::Path;

use ltfs::coherency::{self, PartitionRole, VolumeCoherency};
use ltfs::construct::{
    read_labels, write_data_records, write_index_construct, write_label_construct,
};
use ltfs::label::{self, Label, LtfsTime, WRITE_VERSION};
use ltfs::scan::{PartitionScan, Refusal, find_last_index};
use ltfs::{Position, TapeDevice};
use tapectl::drive::Drive;
use vtl::Library;

mod support;
use support::{vtl_drive, vtl_with_tape_loaded};

const BARCODE: &str = "RV0001L6";
const UUID: &str = "0b3c8a54-5c1e-4f7e-9d7e-2f4b1a6c9e10";
const BS: usize = 4096;

struct Setup {
    _tmp: tempfile::TempDir,
    lib: Library,
    drive: Drive<vtl::VirtualDrive>,
}

fn setup() -> Setup {
    let (tmp, lib) = vtl_with_tape_loaded(BARCODE, &[]);
    let drive = vtl_drive(&lib);
    Setup {
        _tmp: tmp,
        lib,
        drive,
    }
}

fn label(location: char) -> Label {
    Label {
        creator: "rackvault 0.1.0 - Linux - tapectl ltfs format".into(),
        format_time: LtfsTime::new(1_764_000_000, 123_456_789),
        volume_uuid: UUID.into(),
        location,
        index_partition: 'a',
        data_partition: 'b',
        block_size: BS as u32,
        compression: true,
        version: WRITE_VERSION,
    }
}

/// A stand-in index (the real one comes from `ltfs::index`) that spans two 4096-byte records.
fn placeholder_index(partition: char, startblock: u64) -> Vec<u8> {
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ltfsindex version=\"2.4.0\">\n\
         <volumeuuid>{UUID}</volumeuuid>\n<generationnumber>1</generationnumber>\n\
         <location><partition>{partition}</partition><startblock>{startblock}</startblock></location>\n"
    );
    while x.len() < 6000 {
        x.push_str("<!-- padding so the index spans two records -->\n");
    }
    x.push_str("</ltfsindex>\n");
    x.into_bytes()
}

/// What the index parser will do: accept an index whose UUID and self pointer match where it sits.
fn accept(r: &mut dyn std::io::BufRead, at: Position) -> Result<(char, u64), Refusal> {
    let mut xml = Vec::new();
    r.read_to_end(&mut xml).map_err(|e| Refusal {
        reason: e.to_string(),
        is_index: false,
    })?;
    accept_xml(&xml, at).ok_or_else(|| Refusal {
        reason: "not this volume's index at this position".into(),
        is_index: xml.windows(10).any(|w| w == b"<ltfsindex"),
    })
}

fn accept_xml(xml: &[u8], at: Position) -> Option<(char, u64)> {
    let s = std::str::from_utf8(xml).ok()?;
    if !s.contains(&format!("<volumeuuid>{UUID}</volumeuuid>")) {
        return None;
    }
    let id = if at.partition == 0 { 'a' } else { 'b' };
    let want = format!(
        "<location><partition>{id}</partition><startblock>{}</startblock></location>",
        at.block
    );
    s.contains(&want).then_some((id, at.block))
}

fn scan(drive: &mut Drive<vtl::VirtualDrive>, p: u8) -> PartitionScan<(char, u64)> {
    find_last_index(drive, p, BS, 16 << 20, accept).unwrap()
}

/// The file backend's record/filemark/EOD files, in tape order per partition.
fn tape_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<(u8, u64, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            let mut it = name.split('_');
            let p: u8 = it.next()?.parse().ok()?;
            let b: u64 = it.next()?.parse().ok()?;
            let kind = it.next()?;
            (matches!(kind, "R" | "F" | "E") && it.next().is_none()).then(|| (p, b, name.clone()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, n)| n).collect()
}

fn expected_tree(eod: u64) -> Vec<String> {
    let mut v = Vec::new();
    for p in 0..2 {
        for (b, k) in [(0, 'R'), (1, 'F'), (2, 'R'), (3, 'F'), (4, 'F')] {
            v.push(format!("{p}_{b}_{k}"));
        }
        for b in 5..eod - 1 {
            v.push(format!("{p}_{b}_R"));
        }
        v.push(format!("{p}_{}_F", eod - 1));
        v.push(format!("{p}_{eod}_E"));
    }
    v
}

/// Format as `ltfs_format_tape()` does: labels on the DP then the IP, then a generation-1 index at
/// block 5 on the DP then the IP.
fn format(drive: &mut Drive<vtl::VirtualDrive>) {
    drive.format_two_partitions(100).unwrap();
    assert_eq!(drive.partition_count().unwrap(), 2);
    let serial = label::volume_serial(BARCODE);
    assert_eq!(serial.as_deref(), Some("RV0001"));
    for (p, loc) in [(1, 'b'), (0, 'a')] {
        drive
            .locate(Position {
                partition: p,
                block: 0,
            })
            .unwrap();
        write_label_construct(drive, serial.as_deref(), &label(loc)).unwrap();
        assert_eq!(
            drive.position().unwrap(),
            Position {
                partition: p,
                block: 4
            }
        );
    }
    for (p, id) in [(1, 'b'), (0, 'a')] {
        drive.locate_eod(p).unwrap();
        let w = write_index_construct(drive, &placeholder_index(id, 5), BS).unwrap();
        assert_eq!(
            w.start,
            Position {
                partition: p,
                block: 5
            }
        );
        assert_eq!((w.records, w.end.block, w.early_warning), (2, 8, false));
    }
    drive.write_filemarks(0).unwrap();
}

#[test]
fn format_layout_labels_scan_and_mam() {
    let Setup {
        _tmp,
        lib,
        mut drive,
    } = setup();
    format(&mut drive);

    // §7: the file backend's tree, byte for byte where it matters.
    let dir = lib.cartridge_dir(BARCODE);
    assert_eq!(tape_files(&dir), expected_tree(8));
    let vol1 = std::fs::read(dir.join("0_0_R")).unwrap();
    assert_eq!(vol1, label::encode_vol1(Some("RV0001")));
    assert_eq!(&vol1[..11], b"VOL1RV0001L");
    assert_eq!(std::fs::read(dir.join("1_0_R")).unwrap(), vol1);
    assert_eq!(
        std::fs::read(dir.join("0_2_R")).unwrap(),
        label('a').encode()
    );
    assert_eq!(
        std::fs::read(dir.join("1_2_R")).unwrap(),
        label('b').encode()
    );
    for f in [
        "0_1_F", "0_3_F", "0_4_F", "0_7_F", "0_8_E", "1_7_F", "1_8_E",
    ] {
        assert_eq!(std::fs::metadata(dir.join(f)).unwrap().len(), 0, "{f}");
    }
    let ip = placeholder_index('a', 5);
    assert_eq!(std::fs::read(dir.join("0_5_R")).unwrap(), &ip[..BS]);
    assert_eq!(std::fs::read(dir.join("0_6_R")).unwrap(), &ip[BS..]);

    // §8 items 22–23: the labels read back and agree.
    let v = read_labels(&mut drive).unwrap();
    assert_eq!(v.serial.as_deref(), Some("RV0001"));
    assert_eq!(v.labels, [label('a'), label('b')]);
    assert_eq!((v.index_partition(), v.data_partition()), (0, 1));
    label::compare(&v.labels[0], &v.labels[1]).unwrap();

    // §5: each partition's last index, with its self pointer.
    for (p, id) in [(0u8, 'a'), (1, 'b')] {
        let s = scan(&mut drive, p);
        let f = s.found.as_ref().expect("index found");
        assert_eq!(f.index, (id, 5));
        assert_eq!(
            f.start,
            Position {
                partition: p,
                block: 5
            }
        );
        assert_eq!((f.records, f.trailing_fm, f.end_block), (2, true, 8));
        assert_eq!((s.eod, s.extra_blocks()), (8, 0));
        assert!(s.rejected.is_empty(), "{:?}", s.rejected);
    }

    // §6: MAM attributes through the drive; coherency per partition with the drive's VCR.
    for a in coherency::format_attributes("IBM", "LTFS", "0.1.0", "backup-01", BARCODE) {
        drive.write_attribute(0, &a).unwrap();
        let back = drive.read_attribute(0, a.id).unwrap().expect("attribute");
        assert_eq!((back.id, back.value), (a.id, a.value));
    }
    let vcr_attr = drive
        .read_attribute(0, coherency::ATTR_VOLUME_CHANGE_REFERENCE)
        .unwrap()
        .expect("VCR");
    let vcr = coherency::volume_change_reference(&vcr_attr.value).expect("trusted VCR");
    for p in 0..2 {
        let c = VolumeCoherency {
            vcr,
            count: 1,
            set_id: 5,
            uuid: UUID.into(),
            version: 1,
        };
        drive.write_attribute(p, &c.to_attribute()).unwrap();
        let back = drive
            .read_attribute(p, coherency::ATTR_VOLUME_COHERENCY)
            .unwrap()
            .expect("coherency");
        assert_eq!(VolumeCoherency::from_attribute(&back).unwrap(), c);
        // The file backend keeps header + value: the exact 75 bytes of §6.
        let raw = std::fs::read(dir.join(format!("attr_{p}_80c"))).unwrap();
        assert_eq!(raw, c.encode());
        assert_eq!(raw.len(), 75);
    }
    let read = |drive: &mut Drive<vtl::VirtualDrive>, p| {
        drive
            .read_attribute(p, coherency::ATTR_VOLUME_COHERENCY)
            .unwrap()
            .map(|a| VolumeCoherency::from_attribute(&a).unwrap())
    };
    let (ipc, dpc) = (read(&mut drive, 0), read(&mut drive, 1));
    let vcr_now = drive
        .read_attribute(0, coherency::ATTR_VOLUME_CHANGE_REFERENCE)
        .unwrap()
        .unwrap()
        .value;
    let fp =
        coherency::fast_path(Some(&vcr_now), ipc.as_ref(), dpc.as_ref(), UUID).expect("fast path");
    assert_eq!(
        (fp.role, fp.set_id, fp.generation),
        (PartitionRole::Index, 5, 1)
    );
}

#[test]
fn scan_reports_extra_blocks_and_missing_trailing_filemark() {
    let Setup {
        _tmp,
        lib,
        mut drive,
    } = setup();
    format(&mut drive);
    let dir = lib.cartridge_dir(BARCODE);

    // Extra blocks on the DP: data records after the last index.
    drive.locate_eod(1).unwrap();
    let data = vec![0x5au8; 10_000];
    let w = write_data_records(&mut drive, &mut &data[..], BS).unwrap();
    assert_eq!(
        (w.start.block, w.records, w.bytes, w.complete),
        (8, 3, 10_000, true)
    );
    drive.write_filemarks(0).unwrap();
    let s = scan(&mut drive, 1);
    let f = s.found.as_ref().unwrap();
    assert_eq!((f.index, f.end_block, f.trailing_fm), (('b', 5), 8, true));
    assert_eq!((s.eod, s.extra_blocks()), (11, 3));
    assert_eq!(s.rejected.len(), 1, "{:?}", s.rejected);

    // A second DP index after the data: found, nothing extra.
    drive.locate_eod(1).unwrap();
    let w2 = write_index_construct(&mut drive, &placeholder_index('b', 12), BS).unwrap();
    assert_eq!(w2.start.block, 12);
    let s = scan(&mut drive, 1);
    assert_eq!(s.found.as_ref().unwrap().index, ('b', 12));
    assert_eq!(s.extra_blocks(), 0);

    // The IP index rewritten without its trailing FM (a crash before the FM).
    drive
        .locate(Position {
            partition: 0,
            block: 4,
        })
        .unwrap();
    drive.write_filemarks(1).unwrap();
    let ip = placeholder_index('a', 5);
    for chunk in ip.chunks(BS) {
        drive.write_block(chunk).unwrap();
    }
    drive.write_filemarks(0).unwrap();
    let files = tape_files(&dir);
    assert!(
        files.iter().any(|f| f == "0_7_E") && !files.iter().any(|f| f == "0_7_F"),
        "{files:?}"
    );
    let s = scan(&mut drive, 0);
    let f = s.found.as_ref().unwrap();
    assert_eq!(f.index, ('a', 5));
    assert!(!f.trailing_fm);
    assert_eq!((f.end_block, s.eod, s.extra_blocks()), (7, 7, 0));

    // A later index with a wrong self pointer on the IP: rejected; the one before it is found and the
    // bad construct counts as extra blocks.
    drive.locate_eod(0).unwrap();
    drive.write_filemarks(1).unwrap(); // the missing trailing FM
    write_index_construct(&mut drive, &placeholder_index('a', 99), BS).unwrap();
    let s = scan(&mut drive, 0);
    let f = s.found.as_ref().unwrap();
    assert_eq!((f.index, f.trailing_fm), (('a', 5), true));
    assert_eq!((s.eod, f.end_block, s.extra_blocks()), (12, 8, 4));
    assert!(!s.rejected.is_empty());

    // The labels are untouched by all this.
    read_labels(&mut drive).unwrap();
}
