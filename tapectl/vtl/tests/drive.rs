//! Raw-CDB tests of the virtual LTO drives and the file-backend cartridges behind them.

mod common;

use std::collections::BTreeSet;

use common::*;
use scsi::{SenseKey, Status, Transport};
use vtl::{CartridgeOptions, Fault, Library, ReadOrWrite};

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn inquiry_vpd_block_limits_and_no_medium() {
    let (_d, lib) = library(&[]);
    let mut d = lib.drive(0).unwrap();
    let (c, b) = run_in(&mut d, &[0x12, 0, 0, 0, 96, 0], 96);
    good(&c);
    let inq = scsi::Inquiry::decode(&b).unwrap();
    assert_eq!(inq.device_type, scsi::DeviceType::Tape);
    assert_eq!(
        (inq.vendor.as_str(), inq.product.as_str()),
        ("IBM", "ULT3580-HH6")
    );
    assert_eq!(inq.revision.len(), 4);
    let (_, b) = run_in(&mut d, &[0x12, 1, 0x80, 0, 255, 0], 255);
    assert_eq!(scsi::inquiry::decode_serial_vpd(&b).unwrap(), d.serial());
    let mut d1 = lib.drive(1).unwrap();
    let (_, b1) = run_in(&mut d1, &[0x12, 1, 0x80, 0, 255, 0], 255);
    assert_ne!(b, b1);
    let (_, b) = run_in(&mut d1, &[0x12, 0, 0, 0, 36, 0], 36);
    assert_eq!(scsi::Inquiry::decode(&b).unwrap().product, "ULT3580-HH8");
    let (c, b) = run_in(&mut d, &[0x05, 0, 0, 0, 0, 0], 6);
    good(&c);
    assert_eq!(b, vec![0, 0x80, 0, 0, 0, 1]);
    expect(&run(&mut d, &[0; 6]), SenseKey::NotReady, 0x3a, 0);
    expect(&read(&mut d, 10, false).0, SenseKey::NotReady, 0x3a, 0);
    expect(&write(&mut d, b"x"), SenseKey::NotReady, 0x3a, 0);
    let (c, s) = run_in(&mut d, &[0x03, 0, 0, 0, 252, 0], 252);
    good(&c);
    assert!(
        scsi::Sense::decode(&s)
            .unwrap()
            .is(SenseKey::NotReady, 0x3a, 0)
    );
    expect(
        &run(&mut d, &[0xc0, 0, 0, 0, 0, 0]),
        SenseKey::IllegalRequest,
        0x20,
        0,
    );
    expect(&run(&mut d, &[0x08]), SenseKey::IllegalRequest, 0x24, 0);
}

#[test]
fn write_read_filemarks_and_ili() {
    let (_d, lib) = library(&["AAA001L6"]);
    let mut d = load(&lib, 1, 0);
    assert_eq!(position(&mut d), (0, 0, 0));
    good(&write(&mut d, &[1u8; 100]));
    good(&write(&mut d, &[2u8; 200]));
    good(&wfm(&mut d, 1));
    good(&write(&mut d, &[3u8; 50]));
    assert_eq!(position(&mut d), (0, 4, 1));
    // READ POSITION keeps a write run open; any other command (here TEST UNIT READY) ends it.
    good(&run(&mut d, &[0; 6]));
    let dir = lib.cartridge_dir("AAA001L6");
    assert_eq!(
        tree(&dir)
            .into_iter()
            .filter(|n| n.starts_with("0_"))
            .collect::<BTreeSet<_>>(),
        names(&["0_0_R", "0_1_R", "0_2_F", "0_3_R", "0_4_E"])
    );
    assert_eq!(std::fs::read(dir.join("0_1_R")).unwrap(), vec![2u8; 200]);

    good(&run(&mut d, &[0x01, 0, 0, 0, 0, 0]));
    // Exact length.
    let (c, b) = read(&mut d, 100, false);
    good(&c);
    assert_eq!(b, vec![1u8; 100]);
    // Record shorter than requested, SILI=0: ILI, information = requested - actual, data transferred.
    let (c, b) = read(&mut d, 300, false);
    let s = sense(&c);
    assert!(s.ili && s.key == SenseKey::NoSense);
    assert_eq!(s.information, Some(100));
    assert_eq!(b, vec![2u8; 200]);
    // Filemark: FM bit, information = requested length, positioned after it.
    let (c, _) = read(&mut d, 64, true);
    let s = expect(&c, SenseKey::NoSense, 0, 1);
    assert!(s.filemark);
    assert_eq!(s.information, Some(64));
    assert_eq!(c.transferred, 0);
    assert_eq!(position(&mut d), (0, 3, 1));
    // Record longer than requested: ILI, negative information, requested bytes moved, position past it.
    let (c, b) = read(&mut d, 20, true);
    let s = sense(&c);
    assert!(s.ili);
    assert_eq!(s.information, Some(-30));
    assert_eq!(b, vec![3u8; 20]);
    assert_eq!(position(&mut d), (0, 4, 1));
    // EOD: BLANK CHECK 00/05, position unchanged.
    expect(&read(&mut d, 20, true).0, SenseKey::BlankCheck, 0, 5);
    assert_eq!(position(&mut d), (0, 4, 1));
    // Short record with SILI: GOOD, residual in transferred.
    good(&locate(&mut d, 0, 0));
    let (c, b) = read(&mut d, 1000, true);
    good(&c);
    assert_eq!(b.len(), 100);
    // Fixed-block mode is refused.
    expect(
        &run_in(&mut d, &[0x08, 1, 0, 0, 1, 0], 512).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
    expect(
        &run_out(&mut d, &[0x0a, 1, 0, 0, 1, 0], &[0; 512]),
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
    // Zero-length transfers do nothing.
    good(&read(&mut d, 0, false).0);
    assert_eq!(position(&mut d), (0, 1, 0));
}

#[test]
fn space_locate_and_read_position() {
    let (_d, lib) = library(&["AAA001L6"]);
    let mut d = load(&lib, 1, 0);
    // Blocks: 0 R, 1 R, 2 F, 3 R, 4 R, 5 F, 6 R; EOD 7.
    for k in 0..7u8 {
        if k == 2 || k == 5 {
            good(&wfm(&mut d, 1));
        } else {
            good(&write(&mut d, &[k; 10]));
        }
    }
    good(&run(&mut d, &[0x01, 0, 0, 0, 0, 0]));
    good(&space(&mut d, 0, 1));
    assert_eq!(position(&mut d).1, 1);
    // Blocks forward into a filemark: stop after it, FM, information = remaining count.
    let s = expect(&space(&mut d, 0, 5), SenseKey::NoSense, 0, 1);
    assert!(s.filemark);
    assert_eq!(s.information, Some(4));
    assert_eq!(position(&mut d), (0, 3, 1));
    // Backwards over a filemark: stop on its BOP side.
    let s = expect(&space(&mut d, 0, -3), SenseKey::NoSense, 0, 1);
    assert_eq!(s.information, Some(3));
    assert_eq!(position(&mut d).1, 2);
    // Filemarks forward.
    good(&space(&mut d, 1, 1));
    assert_eq!(position(&mut d).1, 3);
    good(&space(&mut d, 1, 1));
    assert_eq!(position(&mut d), (0, 6, 2));
    // Past EOD: BLANK CHECK, at EOD, information = remaining.
    let s = expect(&space(&mut d, 1, 3), SenseKey::BlankCheck, 0, 5);
    assert_eq!(s.information, Some(3));
    assert_eq!(position(&mut d).1, 7);
    good(&locate(&mut d, 0, 4));
    let s = expect(&space(&mut d, 0, 10), SenseKey::NoSense, 0, 1);
    assert_eq!(s.information, Some(9));
    let s = expect(&space(&mut d, 0, 5), SenseKey::BlankCheck, 0, 5);
    assert_eq!(s.information, Some(4));
    // Filemarks backward: BOP side of the n-th.
    good(&space(&mut d, 1, -2));
    assert_eq!(position(&mut d).1, 2);
    // Back over BOP: NO SENSE 00/04 with EOM, at block 0.
    let s = expect(&space(&mut d, 1, -5), SenseKey::NoSense, 0, 4);
    assert!(s.eom);
    assert_eq!(
        s.information,
        Some(5),
        "the filemark at the position is not behind it"
    );
    assert_eq!(position(&mut d).1, 0);
    good(&locate(&mut d, 0, 1));
    let s = expect(&space(&mut d, 0, -3), SenseKey::NoSense, 0, 4);
    assert_eq!(s.information, Some(2));
    // End of data.
    good(&space(&mut d, 3, 0));
    assert_eq!(position(&mut d), (0, 7, 2));
    // SPACE(16).
    let mut cdb = [0u8; 16];
    cdb[0] = 0x91;
    cdb[4..12].copy_from_slice(&(-7i64).to_be_bytes());
    expect(&run(&mut d, &cdb), SenseKey::NoSense, 0, 1);
    assert_eq!(position(&mut d).1, 5);
    // LOCATE(10) and LOCATE beyond EOD.
    good(&run(&mut d, &[0x2b, 0, 0, 0, 0, 0, 3, 0, 0, 0]));
    assert_eq!(position(&mut d), (0, 3, 1));
    expect(&locate(&mut d, 0, 100), SenseKey::BlankCheck, 0, 5);
    assert_eq!(position(&mut d).1, 7);
    expect(&locate(&mut d, 1, 0), SenseKey::IllegalRequest, 0x24, 0);
    // LOCATE(16) to a logical file: the BOP side of that filemark.
    let mut cdb = [0u8; 16];
    cdb[0] = 0x92;
    cdb[1] = 1 << 3;
    cdb[4..12].copy_from_slice(&2u64.to_be_bytes());
    good(&run(&mut d, &cdb));
    assert_eq!(position(&mut d).1, 5);
    // Short form READ POSITION.
    let (c, b) = run_in(&mut d, &[0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0], 20);
    good(&c);
    assert_eq!(b.len(), 20);
    assert_eq!(b[1], 0);
    assert_eq!(u32::from_be_bytes(b[4..8].try_into().unwrap()), 5);
    assert_eq!(b[0] & 0x80, 0);
    good(&run(&mut d, &[0x01, 0, 0, 0, 0, 0]));
    let (_, b) = run_in(&mut d, &[0x34, 6, 0, 0, 0, 0, 0, 0, 0, 0], 32);
    assert_eq!(b[0] & 0x80, 0x80, "BOP");
    expect(
        &run_in(&mut d, &[0x34, 3, 0, 0, 0, 0, 0, 0, 0, 0], 32).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
}

#[test]
fn format_two_partitions_and_ltfs_label_tree() {
    let (_d, lib) = library(&["AAA001L6"]);
    let mut d = load(&lib, 1, 0);
    good(&write(&mut d, b"old data"));
    lib.cartridge_dir("AAA001L6");
    // FORMAT refuses when not at BOP 0.
    expect(
        &run(&mut d, &[0x04, 0, 0x01, 0, 0, 0]),
        SenseKey::IllegalRequest,
        0x3b,
        0x0c,
    );
    good(&run(&mut d, &[0x1b, 0, 0, 0, 1, 0]));
    // A host attribute that the format must clear, and the VCR that it keeps.
    let attr = [
        0u8, 0, 0, 13, 0x08, 0x06, 0x01, 0, 8, b'A', b'A', b'A', b'0', b'0', b'1', b'L', b'6',
    ];
    good(&run_out(
        &mut d,
        &[0x8d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0],
        &attr,
    ));
    format_two_partitions(&mut d);
    let dir = lib.cartridge_dir("AAA001L6");
    let t = tree(&dir);
    assert!(
        t.contains("0_0_E")
            && t.contains("1_0_E")
            && !t.contains("0_0_R")
            && !t.contains("attr_0_806"),
        "{t:?}"
    );
    assert!(
        t.contains("attr_0_9")
            && t.contains("filedebug_tc_conf.xml")
            && t.contains("rackvault-cartridge.json")
    );
    // Page 0x11 now shows two partitions; the sizes are those LTFS asked for, cut to fit the cartridge.
    let (_, b) = run_in(&mut d, &[0x5a, 0x08, 0x11, 0, 0, 0, 0, 0, 64, 0], 64);
    let p = &b[8..];
    assert_eq!((p[0], p[2], p[3]), (0x11, 3, 1));
    // Log page 0x31: remaining/maximum per partition in MiB.
    let (_, b) = run_in(&mut d, &[0x4d, 0, 0x31, 0, 0, 0, 0, 0, 64, 0], 64);
    let v = |k: usize| u32::from_be_bytes(b[4 + 8 * k + 4..4 + 8 * k + 8].try_into().unwrap());
    assert_eq!((v(2), v(3)), (3, 61));
    assert_eq!((v(0), v(1)), (3, 61));

    // An LTFS format: on each partition VOL1, FM, label, FM, FM, index, FM (blocks 0..6), EOD at 7.
    for part in [1u8, 0] {
        good(&locate(&mut d, part, 0));
        good(&write(&mut d, &[b'V'; 80]));
        good(&wfm(&mut d, 1));
        good(&write(&mut d, b"<ltfslabel/>"));
        good(&wfm(&mut d, 1));
        good(&wfm(&mut d, 1));
        good(&write(&mut d, b"<ltfsindex/>"));
        good(&wfm(&mut d, 1));
    }
    let mut expected = names(&[
        "attr_0_9",
        "filedebug_tc_conf.xml",
        "rackvault-cartridge.json",
    ]);
    for p in 0..2 {
        for n in ["0_R", "1_F", "2_R", "3_F", "4_F", "5_R", "6_F", "7_E"] {
            expected.insert(format!("{p}_{n}"));
        }
    }
    assert_eq!(tree(&dir), expected);
    let conf = std::fs::read_to_string(dir.join("filedebug_tc_conf.xml")).unwrap();
    assert!(
        conf.contains("<cart_type>L6</cart_type>")
            && conf.contains("<density_code>5a</density_code>")
            && conf.contains("<capacity_mb>64</capacity_mb>")
    );
    // VCR went 1 -> 2 at the first write of this load and stays for the rest of it.
    let vcr = std::fs::read(dir.join("attr_0_9")).unwrap();
    assert_eq!(vcr, vec![0, 9, 0, 0, 4, 0, 0, 0, 2]);

    // Overwrite in place: the index partition from block 4 (FM in front of the index) on.
    good(&locate(&mut d, 0, 4));
    good(&wfm(&mut d, 1));
    good(&write(&mut d, b"<ltfsindex gen=2/>"));
    good(&write(&mut d, b"more"));
    good(&wfm(&mut d, 1));
    let p0: BTreeSet<String> = tree(&dir)
        .into_iter()
        .filter(|n| n.starts_with("0_"))
        .collect();
    assert_eq!(
        p0,
        names(&[
            "0_0_R", "0_1_F", "0_2_R", "0_3_F", "0_4_F", "0_5_R", "0_6_R", "0_7_F", "0_8_E"
        ])
    );
    // Overwrite shorter than before: everything after is gone, EOD follows the last object.
    good(&locate(&mut d, 0, 5));
    good(&write(&mut d, b"x"));
    good(&locate(&mut d, 1, 7));
    let p0: BTreeSet<String> = tree(&dir)
        .into_iter()
        .filter(|n| n.starts_with("0_"))
        .collect();
    assert_eq!(
        p0,
        names(&[
            "0_0_R", "0_1_F", "0_2_R", "0_3_F", "0_4_F", "0_5_R", "0_6_E"
        ])
    );
    assert_eq!(std::fs::read(dir.join("0_5_R")).unwrap(), b"x");
    assert_eq!(position(&mut d), (1, 7, 4));

    // Format 0 goes back to one partition.
    good(&run(&mut d, &[0x1b, 0, 0, 0, 1, 0]));
    good(&run(&mut d, &[0x04, 0, 0x00, 0, 0, 0]));
    let t: BTreeSet<String> = tree(&dir)
        .into_iter()
        .filter(|n| n.as_bytes()[0].is_ascii_digit())
        .collect();
    assert_eq!(t, names(&["0_0_E"]));
}

#[test]
fn reopen_shows_the_same_state() {
    let (_d, lib) = library(&["AAA001L8"]);
    {
        let mut d = load(&lib, 1, 1);
        good(&write(&mut d, &[7u8; 1000]));
        good(&wfm(&mut d, 1));
        good(&write(&mut d, &[8u8; 10]));
    }
    // Another "process": a new handle on the library directory.
    let other = Library::open(lib.dir()).unwrap();
    let st = other.status().unwrap();
    assert_eq!(st.drives[1].barcode.as_deref(), Some("AAA001L8"));
    assert_eq!(
        (
            st.drives[1].partition,
            st.drives[1].block,
            st.drives[1].threaded
        ),
        (0, 3, true)
    );
    assert_eq!(st.drives[1].source, Some(0x1000));
    let mut d = other.drive(1).unwrap();
    assert_eq!(position(&mut d), (0, 3, 1));
    expect(&read(&mut d, 10, false).0, SenseKey::BlankCheck, 0, 5);
    good(&space(&mut d, 1, -1));
    good(&space(&mut d, 0, -1));
    let (c, b) = read(&mut d, 1000, false);
    good(&c);
    assert_eq!(b, vec![7u8; 1000]);
    // Two handles on one drive: a write through one is seen by the other.
    let mut d2 = other.drive(1).unwrap();
    good(&locate(&mut d2, 0, 3));
    good(&write(&mut d2, b"from d2"));
    good(&run(&mut d2, &[0; 6]));
    good(&locate(&mut d, 0, 3));
    let (c, b) = read(&mut d, 100, true);
    good(&c);
    assert_eq!(b, b"from d2");
}

/// The record and EOD files of partition 0, and whether every `_R` holds data.
fn layout(dir: &std::path::Path) -> BTreeSet<String> {
    let t: BTreeSet<String> = tree(dir)
        .into_iter()
        .filter(|n| n.starts_with("0_"))
        .collect();
    for n in t.iter().filter(|n| n.ends_with("_R")) {
        assert!(
            std::fs::metadata(dir.join(n)).unwrap().len() > 0,
            "{n} is empty"
        );
    }
    t
}

#[test]
fn the_eod_marker_follows_every_record_even_mid_stream() {
    let (_d, lib) = library(&["AAA001L6"]);
    let dir = lib.cartridge_dir("AAA001L6");
    let mut d = load(&lib, 1, 0);
    for k in 0..5u8 {
        good(&write(&mut d, &[k; 4096]));
        // Mid-stream, after every record, the directory is the tape: one marker right after it.
        let mut want: BTreeSet<String> = (0..=k).map(|b| format!("0_{b}_R")).collect();
        want.insert(format!("0_{}_E", k + 1));
        assert_eq!(layout(&dir), want);
    }
    // A handle that vanishes mid-stream (no drop, as in a crash) leaves nothing to repair.
    std::mem::forget(d);
    let before = layout(&dir);
    let mut d = lib.drive(0).unwrap();
    good(&run(&mut d, &[0; 6]));
    assert_eq!(layout(&dir), before);
    assert_eq!(
        before,
        names(&["0_0_R", "0_1_R", "0_2_R", "0_3_R", "0_4_R", "0_5_E"])
    );
    good(&space(&mut d, 3, 0));
    assert_eq!(position(&mut d).1, 5);
    for k in 0..3u8 {
        good(&write(&mut d, &[k; 10]));
    }
    assert!(layout(&dir).contains("0_8_E"));
    // The changer taking the tape out mid-stream finds it complete too.
    good(&write(&mut d, b"x"));
    let mut ch = lib.changer();
    good(&move_medium(&mut ch, 0x100, 0x1000));
    expect(&run(&mut d, &[0; 6]), SenseKey::NotReady, 0x3a, 0);
    let t = layout(&dir);
    assert!(t.contains("0_9_E") && t.contains("0_8_R"), "{t:?}");
    assert_eq!(t.iter().filter(|n| n.ends_with("_E")).count(), 1);
}

#[test]
fn files_pre_created_for_a_large_record_stream_are_never_records() {
    let (_d, lib) = library(&["AAA001L6"]);
    let dir = lib.cartridge_dir("AAA001L6");
    let mut d = load(&lib, 1, 0);
    let rec = vec![9u8; 256 * 1024];
    let stream = |n: u64| {
        let mut want: BTreeSet<String> = (0..n).map(|b| format!("0_{b}_R")).collect();
        want.insert(format!("0_{n}_E"));
        want
    };
    for n in 1..=6 {
        good(&write(&mut d, &rec));
        // Files for the next records are being created meanwhile, under temporary (hidden) names.
        assert_eq!(layout(&dir), stream(n));
    }
    let hidden = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".rec."))
            .count()
    };
    // A clean run end removes the unused pre-created files.
    good(&run(&mut d, &[0x01, 0, 0, 0, 0, 0]));
    assert_eq!(hidden(), 0);
    good(&space(&mut d, 3, 0));
    for _ in 0..5 {
        good(&write(&mut d, &rec));
    }
    good(&run(&mut d, &[0x01, 0, 0, 0, 0, 0]));
    assert_eq!(hidden(), 0);
    let t = layout(&dir);
    assert_eq!(t, stream(11));
    assert!(
        t.iter().all(|n| n.ends_with("_E")
            || std::fs::metadata(dir.join(n)).unwrap().len() == rec.len() as u64)
    );
}

#[test]
fn write_protect_tab_and_fault() {
    let (_d, lib) = library(&["AAA001L7"]);
    lib.insert(
        "WP0001L6",
        None,
        &CartridgeOptions {
            write_protected: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut ch = lib.changer();
    clear_ua(&mut ch);
    good(&move_medium(&mut ch, 0x10, 0x100));
    let mut d = lib.drive(0).unwrap();
    clear_ua(&mut d);
    expect(&write(&mut d, b"x"), SenseKey::DataProtect, 0x27, 0);
    expect(&wfm(&mut d, 1), SenseKey::DataProtect, 0x27, 0);
    expect(
        &run(&mut d, &[0x19, 1, 0, 0, 0, 0]),
        SenseKey::DataProtect,
        0x27,
        0,
    );
    expect(
        &run(&mut d, &[0x04, 0, 0, 0, 0, 0]),
        SenseKey::DataProtect,
        0x27,
        0,
    );
    let (_, b) = run_in(&mut d, &[0x1a, 0, 0x3f, 0, 255, 0], 255);
    assert_eq!(b[2] & 0x80, 0x80, "WP in the mode header");
    assert_eq!(b[2] & 0x10, 0x10, "buffered mode");
    // WRITE FILEMARKS 0 (flush) is allowed.
    good(&wfm(&mut d, 0));
    let conf = std::fs::read_to_string(lib.cartridge_dir("WP0001L6").join("filedebug_tc_conf.xml"))
        .unwrap();
    assert!(conf.contains("<emulate_readonly>true</emulate_readonly>"));

    let mut d1 = load(&lib, 1, 1);
    good(&write(&mut d1, b"ok"));
    lib.set_fault(Fault::WriteProtect {
        barcode: "AAA001L7".into(),
    })
    .unwrap();
    good(&run(&mut d1, &[0; 6]));
    expect(&write(&mut d1, b"no"), SenseKey::DataProtect, 0x27, 0);
    lib.clear_faults().unwrap();
    good(&run(&mut d1, &[0; 6]));
    good(&write(&mut d1, b"ok again"));
    // TapeAlert 0x09 (write protect) was latched by the refused write.
    let (_, b) = run_in(&mut d1, &[0x4d, 0, 0x2e, 0, 0, 0, 0, 2, 0, 0], 512);
    assert_eq!(b[4 + 5 * 8 + 4], 1);
}

#[test]
fn early_warning_then_hard_end_of_medium() {
    let (_d, lib) = library(&[]);
    lib.insert(
        "SMALL1L6",
        None,
        &CartridgeOptions {
            capacity_mb: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    let mut ch = lib.changer();
    clear_ua(&mut ch);
    good(&move_medium(&mut ch, 0x10, 0x100));
    let mut d = lib.drive(0).unwrap();
    clear_ua(&mut d);
    // 4 MiB cartridge: early warning 1 MiB before the end (at 3 MiB), hard end at 4 MiB.
    let rec = vec![0x55u8; 256 * 1024];
    for _ in 0..11 {
        good(&write(&mut d, &rec));
    }
    let c = write(&mut d, &rec);
    let s = expect(&c, SenseKey::NoSense, 0, 2);
    assert!(s.eom);
    assert_eq!(s.information, Some(0));
    assert_eq!(c.transferred, rec.len());
    let (_, b) = run_in(&mut d, &[0x34, 6, 0, 0, 0, 0, 0, 0, 0, 0], 32);
    assert_eq!(b[0] & 0x40, 0x40, "EOP in the early-warning zone");
    for _ in 0..4 {
        expect(&write(&mut d, &rec), SenseKey::NoSense, 0, 2);
    }
    // 16 records = 4 MiB: the next one does not fit.
    let c = write(&mut d, &rec);
    let s = expect(&c, SenseKey::VolumeOverflow, 0, 2);
    assert!(s.eom);
    assert_eq!(c.transferred, 0);
    assert_eq!(position(&mut d).1, 16);
    good(&run(&mut d, &[0; 6]));
    let t = tree(&lib.cartridge_dir("SMALL1L6"));
    assert!(t.contains("0_15_R") && !t.contains("0_16_R") && t.contains("0_16_E"));
    let s = expect(&wfm(&mut d, 1), SenseKey::VolumeOverflow, 0, 2);
    assert!(s.eom);

    // Injected limits on a roomy cartridge.
    lib.insert("BIG001L8", None, &CartridgeOptions::default())
        .unwrap();
    lib.set_fault(Fault::EarlyWarningAt {
        barcode: "BIG001L8".into(),
        partition: 0,
        bytes: 2500,
    })
    .unwrap();
    lib.set_fault(Fault::EndOfMediumAt {
        barcode: "BIG001L8".into(),
        partition: 0,
        bytes: 4000,
    })
    .unwrap();
    clear_ua(&mut ch);
    good(&move_medium(&mut ch, 0x10, 0x101));
    let mut d = lib.drive(1).unwrap();
    clear_ua(&mut d);
    good(&write(&mut d, &[0; 1000]));
    good(&write(&mut d, &[0; 1000]));
    expect(&write(&mut d, &[0; 1000]), SenseKey::NoSense, 0, 2);
    expect(&write(&mut d, &[0; 1001]), SenseKey::VolumeOverflow, 0, 2);
    let s = expect(&wfm(&mut d, 1), SenseKey::NoSense, 0, 2);
    assert!(s.eom);
}

#[test]
fn faults_medium_error_not_ready_unit_attention() {
    let (_d, lib) = library(&["AAA001L6"]);
    let mut d = load(&lib, 1, 0);
    for k in 0..3u8 {
        good(&write(&mut d, &[k; 10]));
    }
    lib.set_fault(Fault::MediumError {
        barcode: "AAA001L6".into(),
        partition: 0,
        block: 1,
        on: ReadOrWrite::Read,
    })
    .unwrap();
    lib.set_fault(Fault::MediumError {
        barcode: "AAA001L6".into(),
        partition: 0,
        block: 3,
        on: ReadOrWrite::Write,
    })
    .unwrap();
    expect(&write(&mut d, b"z"), SenseKey::MediumError, 0x0c, 0);
    good(&run(&mut d, &[0x01, 0, 0, 0, 0, 0]));
    good(&read(&mut d, 10, false).0);
    expect(&read(&mut d, 10, false).0, SenseKey::MediumError, 0x11, 0);
    // TapeAlert: hard error and read failure; page 0x12 keeps them, page 0x2E clears them.
    let (_, b) = run_in(&mut d, &[0x4d, 0, 0x12, 0, 0, 0, 0, 0, 64, 0], 64);
    assert_eq!(&b[4..8], &[0, 0, 3, 8]);
    let bits = u64::from_be_bytes(b[8..16].try_into().unwrap());
    assert_eq!(
        bits,
        (1 << (64 - 3)) | (1 << (64 - 5)) | (1 << (64 - 6)),
        "hard error, read and write failure"
    );
    let (_, b) = run_in(&mut d, &[0x4d, 0, 0x2e, 0, 0, 0, 0, 2, 0, 0], 512);
    assert_eq!(u16::from_be_bytes([b[2], b[3]]), 64 * 5);
    assert_eq!(
        (b[4 + 5 * 2 + 4], b[4 + 5 * 4 + 4], b[4 + 5 * 3 + 4]),
        (1, 1, 0)
    );
    let (_, b) = run_in(&mut d, &[0x4d, 0, 0x2e, 0, 0, 0, 0, 2, 0, 0], 512);
    assert!(b[4..].chunks(5).all(|p| p[4] == 0));
    lib.clear_faults().unwrap();
    good(&locate(&mut d, 0, 1));
    good(&read(&mut d, 10, false).0);

    lib.set_fault(Fault::NotReadyFor {
        drive: 0,
        seconds: 3600,
    })
    .unwrap();
    expect(&run(&mut d, &[0; 6]), SenseKey::NotReady, 0x04, 0x01);
    expect(&read(&mut d, 10, false).0, SenseKey::NotReady, 0x04, 0x01);
    good(&run_in(&mut d, &[0x12, 0, 0, 0, 36, 0], 36).0);
    lib.clear_faults().unwrap();
    good(&run(&mut d, &[0; 6]));
    lib.set_fault(Fault::NotReadyFor {
        drive: 0,
        seconds: 0,
    })
    .unwrap();
    good(&run(&mut d, &[0; 6]));

    lib.set_fault(Fault::UnitAttention { drive: Some(0) })
        .unwrap();
    good(&run_in(&mut d, &[0x12, 0, 0, 0, 36, 0], 36).0);
    expect(&run(&mut d, &[0; 6]), SenseKey::UnitAttention, 0x29, 0);
    good(&run(&mut d, &[0; 6]));
    assert!(lib.status().unwrap().faults.is_empty());
}

#[test]
fn cleaning() {
    let (_d, lib) = library(&["AAA001L6", "CLN001L1"]);
    lib.set_fault(Fault::NeedsCleaning { drive: 0 }).unwrap();
    let mut d = load(&lib, 1, 0);
    // Real drives stay ready while asking for cleaning.
    good(&run(&mut d, &[0; 6]));
    let (_, b) = run_in(&mut d, &[0x4d, 0, 0x12, 0, 0, 0, 0, 0, 64, 0], 64);
    assert_eq!(
        u64::from_be_bytes(b[8..16].try_into().unwrap()),
        1 << (64 - 0x14)
    );
    // Reading 0x2E does not clear a condition that is still there.
    run_in(&mut d, &[0x4d, 0, 0x2e, 0, 0, 0, 0, 2, 0, 0], 512);
    let (_, b) = run_in(&mut d, &[0x4d, 0, 0x2e, 0, 0, 0, 0, 2, 0, 0], 512);
    assert_eq!(b[4 + 5 * 19 + 4], 1);
    assert_eq!(lib.status().unwrap().drives[0].tapealert, vec![0x14]);
    let mut ch = lib.changer();
    good(&move_medium(&mut ch, 0x100, 0x1000));
    good(&move_medium(&mut ch, 0x1001, 0x100));
    clear_ua(&mut d);
    expect(&read(&mut d, 10, false).0, SenseKey::NotReady, 0x30, 0x03);
    expect(&write(&mut d, b"x"), SenseKey::NotReady, 0x30, 0x03);
    assert!(lib.status().unwrap().drives[0].tapealert.is_empty());
    assert!(lib.status().unwrap().faults.is_empty());
    let (_, b) = run_in(
        &mut d,
        &[0x8c, 0, 0, 0, 0, 0, 0, 0, 0x04, 0x08, 0, 0, 0, 64, 0, 0],
        64,
    );
    assert_eq!(
        (b[4], b[5], b[9]),
        (0x04, 0x08, 0x01),
        "medium type: cleaning"
    );

    // Use up the cleaner: an expired one sets TapeAlert 0x16.
    let dir = lib.cartridge_dir("CLN001L1");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("rackvault-cartridge.json")).unwrap())
            .unwrap();
    assert_eq!(meta["cleaning_uses_left"], 49);
    meta["cleaning_uses_left"] = 0.into();
    std::fs::write(
        dir.join("rackvault-cartridge.json"),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    good(&move_medium(&mut ch, 0x100, 0x1001));
    good(&move_medium(&mut ch, 0x1001, 0x100));
    assert_eq!(lib.status().unwrap().drives[0].tapealert, vec![0x16]);
}

#[test]
fn mode_pages_select_and_density() {
    let (_d, lib) = library(&["AAA001L6", "OLD001L5"]);
    let mut d = load(&lib, 1, 0);
    let (c, b) = run_in(&mut d, &[0x1a, 0, 0x3f, 0, 255, 0], 255);
    good(&c);
    assert_eq!(b[0] as usize + 1, b.len());
    assert_eq!(b[3], 8);
    assert_eq!(b[4], 0x5a, "LTO-6 density");
    assert_eq!(&b[9..12], &[0, 0, 0], "variable block length");
    let pages: Vec<u8> = {
        let mut v = Vec::new();
        let mut at = 12;
        while at < b.len() {
            v.push(b[at]);
            at += 2 + b[at + 1] as usize;
        }
        v
    };
    assert_eq!(pages, vec![0x0f, 0x10, 0x11, 0x1d]);
    assert_eq!(b[14] & 0x80, 0x80, "compression on by default");
    // MODE SELECT(6): compression off.
    let mut sel = vec![0, 0, 0x10, 8, 0, 0, 0, 0, 0, 0, 0, 0];
    sel.extend_from_slice(&[0x0f, 0x0e, 0x40, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
    good(&run_out(
        &mut d,
        &[0x15, 0x10, 0, 0, sel.len() as u8, 0],
        &sel,
    ));
    let (_, b) = run_in(&mut d, &[0x1a, 0x08, 0x0f, 0, 255, 0], 255);
    assert_eq!(b[4], 0x0f);
    assert_eq!(b[6] & 0x80, 0);
    // Fixed block length in the descriptor is refused; a truncated page is a length error.
    let mut fixed = sel.clone();
    fixed[11] = 0x02;
    expect(
        &run_out(&mut d, &[0x15, 0x10, 0, 0, fixed.len() as u8, 0], &fixed),
        SenseKey::IllegalRequest,
        0x26,
        0,
    );
    let cut = &sel[..14];
    expect(
        &run_out(&mut d, &[0x15, 0x10, 0, 0, cut.len() as u8, 0], cut),
        SenseKey::IllegalRequest,
        0x1a,
        0,
    );
    // Too many partitions for the drive.
    let mut p11 = vec![
        0u8, 0, 0x10, 0, 0x11, 0x0e, 3, 4, 0x3c, 3, 6, 0, 0, 1, 0, 1, 0, 1, 0xff, 0xff,
    ];
    expect(
        &run_out(&mut d, &[0x15, 0x10, 0, 0, p11.len() as u8, 0], &p11),
        SenseKey::IllegalRequest,
        0x26,
        0,
    );
    p11[7] = 3;
    good(&run_out(
        &mut d,
        &[0x15, 0x10, 0, 0, p11.len() as u8, 0],
        &p11,
    ));
    good(&run(&mut d, &[0x04, 0, 0x01, 0, 0, 0]));
    let t = tree(&lib.cartridge_dir("AAA001L6"));
    for p in 0..4 {
        assert!(t.contains(&format!("{p}_0_E")));
    }
    good(&locate(&mut d, 3, 0));
    good(&write(&mut d, b"p3"));
    assert_eq!(position(&mut d), (3, 1, 0));
    // Changeable values.
    let (c, _) = run_in(&mut d, &[0x1a, 0, 0x40 | 0x11, 0, 255, 0], 255);
    good(&c);
    expect(
        &run_in(&mut d, &[0x1a, 0, 0xc0 | 0x11, 0, 255, 0], 255).0,
        SenseKey::IllegalRequest,
        0x39,
        0,
    );
    expect(
        &run_in(&mut d, &[0x1a, 0, 0x01, 0, 255, 0], 255).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );

    // REPORT DENSITY SUPPORT: drive (LTO-6 reads 4, 5, 6; writes 5, 6) and medium.
    let (c, b) = run_in(&mut d, &[0x44, 0, 0, 0, 0, 0, 0, 0x10, 0, 0], 4096);
    good(&c);
    assert_eq!(u16::from_be_bytes([b[0], b[1]]) as usize + 2, b.len());
    let codes: Vec<(u8, u8)> = b[4..].chunks(52).map(|x| (x[0], x[2] & 0xa0)).collect();
    assert_eq!(codes, vec![(0x5a, 0xa0), (0x58, 0x80), (0x46, 0x00)]);
    assert_eq!(&b[4 + 16..4 + 32], b"LTO-CVE U-616   ");
    assert_eq!(
        u32::from_be_bytes(b[4 + 12..4 + 16].try_into().unwrap()),
        2_500_000
    );
    let (_, b) = run_in(&mut d, &[0x44, 1, 0, 0, 0, 0, 0, 0x10, 0, 0], 4096);
    assert_eq!(b.len(), 4 + 52);
    assert_eq!(b[4], 0x5a);

    // An LTO-5 cartridge in the LTO-8 drive: cannot be read.
    let mut d8 = load(&lib, 2, 1);
    expect(&read(&mut d8, 10, false).0, SenseKey::MediumError, 0x30, 0);
    expect(&write(&mut d8, b"x"), SenseKey::DataProtect, 0x30, 0x05);
    let (_, b) = run_in(&mut d8, &[0x1a, 0, 0x3f, 0, 255, 0], 255);
    assert_eq!((b[2] & 0x80, b[4]), (0x80, 0x58));
}

#[test]
fn attributes() {
    let (_d, lib) = library(&["AAA001L6"]);
    let mut d = load(&lib, 1, 0);
    let read_attr = |d: &mut vtl::VirtualDrive, sa: u8, p: u8, first: u16, alloc: u32| {
        let f = first.to_be_bytes();
        let a = alloc.to_be_bytes();
        run_in(
            d,
            &[
                0x8c, sa, 0, 0, 0, 0, 0, p, f[0], f[1], a[0], a[1], a[2], a[3], 0, 0,
            ],
            alloc as usize,
        )
    };
    // Device attributes: remaining and maximum capacity (MiB), VCR.
    let (c, b) = read_attr(&mut d, 0, 0, 0x0000, 4096);
    good(&c);
    assert_eq!(
        u32::from_be_bytes(b[0..4].try_into().unwrap()) as usize + 4,
        b.len()
    );
    assert_eq!(&b[4..9], &[0, 0, 0x80, 0, 8]);
    assert_eq!(u64::from_be_bytes(b[9..17].try_into().unwrap()), 64);
    let (_, b) = read_attr(&mut d, 0, 0, 0x0009, 64);
    assert_eq!(&b[4..13], &[0, 9, 0x80, 0, 4, 0, 0, 0, 1]);
    // Write host attributes, including the per-partition coherency attribute.
    let mut list = vec![0u8; 4];
    for (id, fmt, v) in [
        (0x0800u16, 1u8, b"IBM     ".to_vec()),
        (0x080c, 0, vec![7u8; 70]),
    ] {
        list.extend_from_slice(&id.to_be_bytes());
        list.push(fmt);
        list.extend_from_slice(&(v.len() as u16).to_be_bytes());
        list.extend_from_slice(&v);
    }
    let n = (list.len() - 4) as u32;
    list[0..4].copy_from_slice(&n.to_be_bytes());
    let l = (list.len() as u32).to_be_bytes();
    good(&run_out(
        &mut d,
        &[
            0x8d, 0, 0, 0, 0, 0, 0, 0, 0, 0, l[0], l[1], l[2], l[3], 0, 0,
        ],
        &list,
    ));
    let dir = lib.cartridge_dir("AAA001L6");
    assert_eq!(
        std::fs::read(dir.join("attr_0_800")).unwrap(),
        b"\x08\x00\x01\x00\x08IBM     "
    );
    assert_eq!(std::fs::read(dir.join("attr_0_80c")).unwrap().len(), 75);
    let (c, b) = read_attr(&mut d, 0, 0, 0x0800, 4096);
    good(&c);
    assert_eq!(u32::from_be_bytes(b[0..4].try_into().unwrap()), 13 + 75);
    assert_eq!(&b[4..9], &[8, 0, 1, 0, 8]);
    // The list of identifiers.
    let (_, b) = read_attr(&mut d, 1, 0, 0, 4096);
    let ids: Vec<u16> = b[4..]
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    assert!(
        ids.contains(&0x0000)
            && ids.contains(&0x0009)
            && ids.contains(&0x0220)
            && ids.contains(&0x080c)
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // Nothing at or after the first requested id.
    expect(
        &read_attr(&mut d, 0, 0, 0x0900, 4096).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
    // Allocation length truncates, available length still tells the whole size.
    let (c, b) = read_attr(&mut d, 0, 0, 0x0800, 10);
    good(&c);
    assert_eq!(b.len(), 10);
    assert_eq!(u32::from_be_bytes(b[0..4].try_into().unwrap()), 13 + 75);
    // Device attributes are read-only.
    let ro = [0u8, 0, 0, 9, 0x00, 0x09, 0x00, 0, 4, 0, 0, 0, 5];
    expect(
        &run_out(
            &mut d,
            &[0x8d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 13, 0, 0],
            &ro,
        ),
        SenseKey::IllegalRequest,
        0x26,
        0,
    );
    // Zero length deletes.
    let del = [0u8, 0, 0, 5, 0x08, 0x00, 0x01, 0, 0];
    good(&run_out(
        &mut d,
        &[0x8d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0],
        &del,
    ));
    assert!(!dir.join("attr_0_800").exists());
    // A partition the cartridge does not have.
    expect(
        &read_attr(&mut d, 0, 1, 0, 4096).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
    let (_, b) = read_attr(&mut d, 3, 0, 0, 64);
    assert_eq!(b, vec![0, 2, 0, 1]);
    // The lifetime counters follow the data.
    good(&write(&mut d, &vec![1u8; 3 << 20]));
    good(&wfm(&mut d, 0));
    let (_, b) = read_attr(&mut d, 0, 0, 0x0220, 64);
    assert_eq!(&b[4..9], &[0x02, 0x20, 0x80, 0, 8]);
    assert_eq!(u64::from_be_bytes(b[9..17].try_into().unwrap()), 3);
}

#[test]
fn load_unload_rewind_erase_and_volume_statistics() {
    let (_d, lib) = library(&["AAA001L6"]);
    let mut d = load(&lib, 1, 0);
    good(&write(&mut d, &[1; 100]));
    good(&write(&mut d, &[2; 100]));
    good(&write(&mut d, &[3; 100]));
    good(&locate(&mut d, 0, 1));
    good(&run(&mut d, &[0x19, 1, 0, 0, 0, 0]));
    let t: BTreeSet<String> = tree(&lib.cartridge_dir("AAA001L6"))
        .into_iter()
        .filter(|n| n.starts_with("0_"))
        .collect();
    assert_eq!(t, names(&["0_0_R", "0_1_E"]));
    // PREVENT blocks UNLOAD.
    good(&run(&mut d, &[0x1e, 0, 0, 0, 1, 0]));
    expect(
        &run(&mut d, &[0x1b, 0, 0, 0, 0, 0]),
        SenseKey::IllegalRequest,
        0x53,
        0x02,
    );
    good(&run(&mut d, &[0x1e, 0, 0, 0, 0, 0]));
    good(&run(&mut d, &[0x1b, 1, 0, 0, 0, 0]));
    expect(&run(&mut d, &[0; 6]), SenseKey::NotReady, 0x3a, 0);
    assert!(!lib.status().unwrap().drives[0].threaded);
    good(&run(&mut d, &[0x1b, 0, 0, 0, 1, 0]));
    good(&run(&mut d, &[0; 6]));
    assert_eq!(position(&mut d), (0, 0, 0));
    let (c, b) = run_in(&mut d, &[0x4d, 0, 0x17, 0, 0, 0, 0, 4, 0, 0], 1024);
    good(&c);
    let mut at = 4;
    let mut mounts = None;
    let mut serial = None;
    while at < b.len() {
        let code = u16::from_be_bytes([b[at], b[at + 1]]);
        let len = b[at + 3] as usize;
        let v = &b[at + 4..at + 4 + len];
        match code {
            0x0001 => mounts = Some(u32::from_be_bytes(v.try_into().unwrap())),
            0x0040 => serial = Some(scsi::be::ascii(v)),
            _ => {}
        }
        at += 4 + len;
    }
    assert_eq!(mounts, Some(2));
    assert_eq!(serial.as_deref(), Some("AAA001L6"));
    let (_, b) = run_in(&mut d, &[0x4d, 0, 0x00, 0, 0, 0, 0, 0, 64, 0], 64);
    assert_eq!(&b[4..], &[0x00, 0x12, 0x17, 0x2e, 0x31]);
    expect(
        &run_in(&mut d, &[0x4d, 0, 0x33, 0, 0, 0, 0, 0, 64, 0], 64).0,
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
    good(&run(&mut d, &[0x01, 0, 0, 0, 0, 0]));
    assert_eq!(run(&mut d, &[0x00; 6]).status, Status::GOOD);
}

#[test]
fn streaming_many_records_is_consistent() {
    let (_d, lib) = library(&[]);
    lib.insert(
        "STRM01L6",
        None,
        &CartridgeOptions {
            capacity_mb: Some(256),
            ..Default::default()
        },
    )
    .unwrap();
    let mut ch = lib.changer();
    clear_ua(&mut ch);
    good(&move_medium(&mut ch, 0x10, 0x100));
    let mut d = lib.drive(0).unwrap();
    clear_ua(&mut d);
    let rec: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
    for _ in 0..200 {
        good(&write(&mut d, &rec));
    }
    good(&wfm(&mut d, 1));
    good(&run(&mut d, &[0x01, 0, 0, 0, 0, 0]));
    for _ in 0..200 {
        let (c, b) = read(&mut d, 65536, false);
        good(&c);
        assert_eq!(b, rec);
    }
    expect(&read(&mut d, 65536, false).0, SenseKey::NoSense, 0, 1);
    let t = tree(&lib.cartridge_dir("STRM01L6"));
    assert_eq!(t.iter().filter(|n| n.ends_with("_R")).count(), 200);
    assert!(t.contains("0_200_F") && t.contains("0_201_E"));
    drop(d);
    let st = lib.status().unwrap();
    assert_eq!(st.drives[0].block, 201);
    d_transport_is_send::<vtl::VirtualDrive>();
}

/// A stream of full 64 KiB records ending in a short one, then a filemark: the short record's file
/// was pre-created for the stream and must survive the end of the run (it used to be deleted).
#[test]
fn short_record_after_a_stream_survives_the_filemark() {
    let (_d, lib) = library(&[]);
    lib.insert(
        "STRM02L6",
        None,
        &CartridgeOptions {
            capacity_mb: Some(256),
            ..Default::default()
        },
    )
    .unwrap();
    let mut ch = lib.changer();
    clear_ua(&mut ch);
    good(&move_medium(&mut ch, 0x10, 0x100));
    let mut d = lib.drive(0).unwrap();
    clear_ua(&mut d);
    let rec: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
    for _ in 0..5 {
        good(&write(&mut d, &rec));
    }
    good(&write(&mut d, &rec[..1000]));
    good(&wfm(&mut d, 1));
    good(&run(&mut d, &[0x01, 0, 0, 0, 0, 0]));
    for _ in 0..5 {
        let (c, b) = read(&mut d, 65536, false);
        good(&c);
        assert_eq!(b, rec);
    }
    let (c, b) = read(&mut d, 65536, true);
    assert_eq!(b, &rec[..1000], "{c:?}");
    let t = tree(&lib.cartridge_dir("STRM02L6"));
    assert!(
        t.contains("0_5_R") && t.contains("0_6_F") && t.contains("0_7_E"),
        "{t:?}"
    );
}

fn d_transport_is_send<T: Transport + Send>() {}

/// READ POSITION between streamed records (LTFS asks where each file starts) is answered from memory:
/// correct position, `library.json` untouched, the write run stays open; the layout is exact at the end.
#[test]
fn read_position_between_streamed_records_keeps_the_stream() {
    let (_d, lib) = library(&["STRM03L6"]);
    let mut d = load(&lib, 1, 0);
    let rec: Vec<u8> = (0..65536u32).map(|i| (i % 253) as u8).collect();
    good(&write(&mut d, &rec));
    good(&write(&mut d, &rec));
    let state = lib.dir().join("library.json");
    let before = std::fs::read(&state).unwrap();
    let ino =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let ino_before = ino(&state);
    for k in 0..3u64 {
        assert_eq!(position(&mut d), (0, 2 + k, 0));
        good(&write(&mut d, &rec[..1000 + k as usize]));
    }
    assert_eq!(position(&mut d), (0, 5, 0));
    assert_eq!(std::fs::read(&state).unwrap(), before);
    assert_eq!(
        ino(&state),
        ino_before,
        "no state transaction rewrote library.json"
    );
    good(&wfm(&mut d, 1));
    assert_eq!(position(&mut d), (0, 6, 1));
    let t = tree(&lib.cartridge_dir("STRM03L6"));
    assert!(
        t.contains("0_4_R") && t.contains("0_5_F") && t.contains("0_6_E"),
        "{t:?}"
    );
    assert_eq!(t.iter().filter(|n| n.ends_with("_E")).count(), 1, "{t:?}");
    good(&run(&mut d, &[0x01, 0, 0, 0, 0, 0]));
    for k in 0..5usize {
        let (c, b) = read(&mut d, 65536, true);
        good(&c);
        assert_eq!(b.len(), if k < 2 { 65536 } else { 1000 + k - 2 });
    }
}

/// LOCATE to where the tape already is (LTFS reading files in tape order) is answered without a state
/// transaction; it still ends a write run (EOD marker back). Any other LOCATE moves the tape as before.
#[test]
fn locate_to_the_current_block_is_cheap_and_ends_a_write_run() {
    let (_d, lib) = library(&["STRM04L6"]);
    let mut d = load(&lib, 1, 0);
    let rec = |k: u8| vec![k; 1000 + k as usize];
    for k in 0..4 {
        good(&write(&mut d, &rec(k)));
    }
    good(&locate(&mut d, 0, 4));
    let t = tree(&lib.cartridge_dir("STRM04L6"));
    assert!(t.contains("0_4_E"), "the run ended: {t:?}");
    good(&locate(&mut d, 0, 1));
    let (c, b) = read(&mut d, 4096, true);
    good(&c);
    assert_eq!(b, rec(1));
    let state = lib.dir().join("library.json");
    let before = std::fs::read(&state).unwrap();
    let ino =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let ino_before = ino(&state);
    for k in 2..4u8 {
        good(&locate(&mut d, 0, k as u64));
        let (c, b) = read(&mut d, 4096, true);
        good(&c);
        assert_eq!(b, rec(k));
    }
    assert_eq!(
        (std::fs::read(&state).unwrap(), ino(&state)),
        (before, ino_before)
    );
    // LOCATE(10) to the current block too; then a real move backwards.
    good(&run(&mut d, &[0x2b, 0, 0, 0, 0, 0, 4, 0, 0, 0]));
    assert_eq!(position(&mut d), (0, 4, 0));
    good(&locate(&mut d, 0, 0));
    let (c, b) = read(&mut d, 4096, true);
    good(&c);
    assert_eq!(b, rec(0));
}
