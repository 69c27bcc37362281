//! Importing a foreign cartridge directory (ltfs-format.md §7 "Importing a foreign image"): a
//! file-backend tree without `rackvault-cartridge.json`, put where a cartridge lives, is taken as it is:
//! partitions from the `<p>_*` files, capacity and type from `filedebug_tc_conf.xml` when present.

mod common;

use std::path::Path;

use common::*;
use scsi::{SenseKey, Transport};
use vtl::{CartridgeOptions, Library};

/// Two partitions: p0 = rec "a0", FM, rec "a2"; p1 = rec "b0", rec "b1", FM. No meta, no conf.
fn foreign_tree(dir: &Path) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    for (name, body) in [
        ("0_0_R", &b"a0"[..]),
        ("0_1_F", b""),
        ("0_2_R", b"a2"),
        ("0_3_E", b""),
        ("1_0_R", b"b0"),
        ("1_1_R", b"b1"),
        ("1_2_F", b""),
        ("1_3_E", b""),
    ] {
        std::fs::write(dir.join(name), body).unwrap();
    }
}

fn read_back(d: &mut dyn Transport) {
    good(&locate(d, 1, 1));
    let (c, b) = read(d, 64, true);
    good(&c);
    assert_eq!(b, b"b1");
    expect(&read(d, 64, true).0, SenseKey::NoSense, 0, 1); // filemark
    expect(&read(d, 64, true).0, SenseKey::BlankCheck, 0, 5); // EOD
    good(&locate(d, 0, 2));
    let (c, b) = read(d, 64, true);
    good(&c);
    assert_eq!(b, b"a2");
    assert_eq!(position(d), (0, 3, 1));
}

#[test]
fn a_replaced_cartridge_directory_is_imported_at_load() {
    let (_d, lib) = library(&["FOR001L5"]);
    let dir = lib.cartridge_dir("FOR001L5");
    foreign_tree(&dir);
    let mut d = load(&lib, 1, 0);
    read_back(&mut d);
    // The derived meta: two partitions, the reference's 5 % / rest split of its default 3072 MiB, LTO-5
    // from the barcode; a conf is written since there was none; the records are untouched.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("rackvault-cartridge.json")).unwrap())
            .unwrap();
    assert_eq!(meta["partitions"], 2);
    assert_eq!(meta["partition_mb"], serde_json::json!([153, 2919]));
    assert_eq!(meta["generation"], "LTO-5");
    let conf = std::fs::read_to_string(dir.join("filedebug_tc_conf.xml")).unwrap();
    assert!(conf.contains("<cart_type>L5</cart_type>"), "{conf}");
    assert_eq!(std::fs::read(dir.join("1_0_R")).unwrap(), b"b0");
    // Writing works like on any cartridge: overwrite in place on partition 0.
    good(&locate(&mut d, 0, 2));
    good(&write(&mut d, b"new"));
    good(&wfm(&mut d, 1));
    let t = tree(&dir);
    assert!(t.contains("0_3_F") && t.contains("0_4_E") && !t.contains("0_3_E"));
}

#[test]
fn a_foreign_directory_inserted_at_the_door_keeps_its_data_and_conf() {
    let (_d, lib) = library(&[]);
    let dir = lib.cartridge_dir("EXT001");
    foreign_tree(&dir);
    // The reference's conf: capacity and the read-only emulation are taken from it.
    std::fs::write(
        dir.join("filedebug_tc_conf.xml"),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<filedebug_cartridge_config>\n    <dummy_io>false</dummy_io>\n    \
         <emulate_readonly>true</emulate_readonly>\n    <capacity_mb>1000</capacity_mb>\n    <cart_type>L6</cart_type>\n    \
         <density_code>5a</density_code>\n</filedebug_cartridge_config>\n",
    )
    .unwrap();
    let conf_before = std::fs::read(dir.join("filedebug_tc_conf.xml")).unwrap();
    lib.insert("EXT001", Some(1), &CartridgeOptions::default())
        .unwrap();
    assert!(!dir.join("0_0_E").exists(), "insert must not make it blank");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("rackvault-cartridge.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            &meta["partitions"],
            &meta["partition_mb"],
            &meta["generation"]
        ),
        (
            &serde_json::json!(2),
            &serde_json::json!([50, 950]),
            &serde_json::json!("LTO-6")
        )
    );
    assert_eq!(meta["write_protected"], true);
    assert_eq!(
        std::fs::read(dir.join("filedebug_tc_conf.xml")).unwrap(),
        conf_before
    );
    // Import/export slot 1 (0x10) into drive 0; read-only as its conf says.
    let mut ch = lib.changer();
    clear_ua(&mut ch);
    good(&move_medium(&mut ch, 0x10, 0x100));
    let mut d = lib.drive(0).unwrap();
    clear_ua(&mut d);
    read_back(&mut d);
    good(&locate(&mut d, 0, 2));
    expect(&write(&mut d, b"x"), SenseKey::DataProtect, 0x27, 0);
}

#[test]
fn an_unrelated_directory_is_not_a_cartridge() {
    let (_d, lib) = library(&[]);
    let dir = lib.cartridge_dir("NEW001L6");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
    lib.insert("NEW001L6", None, &CartridgeOptions::default())
        .unwrap();
    // A blank cartridge as usual (the stray file stays).
    assert!(dir.join("0_0_E").exists() && dir.join("notes.txt").exists());
    let _ = Library::open(lib.dir()).unwrap();
}

/// What the reference's ltfsck does to a cartridge (it appends an index after the data): records and
/// a filemark after our end of data, and the end-of-data marker moved past them.
fn append_by_hand(dir: &Path, from: u64, records: &[&[u8]]) -> u64 {
    let mut b = from;
    for r in records {
        std::fs::write(dir.join(format!("0_{b}_R")), r).unwrap();
        b += 1;
    }
    std::fs::write(dir.join(format!("0_{b}_F")), b"").unwrap();
    b += 1;
    std::fs::rename(
        dir.join(format!("0_{from}_E")),
        dir.join(format!("0_{b}_E")),
    )
    .unwrap();
    b
}

fn read_rec(d: &mut dyn Transport) -> Vec<u8> {
    let (c, b) = read(d, 1 << 20, true);
    good(&c);
    b
}

/// A cartridge written by someone else between two loads: its end of data is where its marker now
/// is, not where this drive last saw it. LOAD after UNLOAD (same handle), a handle that saw the tape
/// before, and a move out and back by the changer all read what was appended, and writing at the new
/// end keeps it (the old model would have read BLANK CHECK there, and written over those records).
#[test]
fn records_appended_by_another_tool_between_loads_are_kept() {
    let (_d, lib) = library(&["AAA001L6"]);
    let dir = lib.cartridge_dir("AAA001L6");
    let mut d = load(&lib, 1, 0);
    let mut other = lib.drive(0).unwrap(); // another process's handle on the same drive
    let big = vec![0x5au8; 100 * 1024];
    for _ in 0..3 {
        good(&write(&mut d, &big));
    }
    good(&wfm(&mut d, 1));
    assert_eq!(position(&mut other), (0, 4, 1));
    // UNLOAD: the tape stays in the drive, unthreaded; meanwhile another tool appends.
    good(&run(&mut d, &[0x1b, 0, 0, 0, 0, 0]));
    let end = append_by_hand(&dir, 4, &[b"index part 1", b"index part 2"]);
    assert_eq!(end, 7);
    good(&run(&mut d, &[0x1b, 0, 0, 0, 1, 0])); // LOAD
    good(&space(&mut d, 3, 0));
    assert_eq!(position(&mut d), (0, 7, 2));
    good(&locate(&mut d, 0, 4));
    assert_eq!(read_rec(&mut d), b"index part 1");
    assert_eq!(read_rec(&mut other), b"index part 2");
    // Writing at the new end (with files pre-created for a stream) leaves them alone.
    good(&space(&mut d, 3, 0));
    for _ in 0..4 {
        good(&write(&mut d, &big));
    }
    good(&wfm(&mut d, 1));
    assert_eq!(std::fs::read(dir.join("0_4_R")).unwrap(), b"index part 1");
    assert_eq!(std::fs::read(dir.join("0_5_R")).unwrap(), b"index part 2");
    assert!(dir.join("0_12_E").exists() && !dir.join("0_7_E").exists());

    // Out to its slot and back by the changer, with another append in between.
    let mut ch = lib.changer();
    good(&move_medium(&mut ch, 0x100, 0x1000));
    let end = append_by_hand(&dir, 12, &[b"second index"]);
    good(&move_medium(&mut ch, 0x1000, 0x100));
    clear_ua(&mut d);
    good(&space(&mut d, 3, 0));
    assert_eq!(position(&mut d).1, end);
    good(&locate(&mut d, 0, 12));
    assert_eq!(read_rec(&mut d), b"second index");
    // A write in the middle cuts the tape there, like any tape: that is the only way records go.
    good(&locate(&mut d, 0, 5));
    good(&write(&mut d, b"new"));
    good(&locate(&mut d, 0, 4));
    assert_eq!(read_rec(&mut d), b"index part 1");
    assert_eq!(read_rec(&mut d), b"new");
    expect(&read(&mut d, 64, true).0, SenseKey::BlankCheck, 0, 5);
    let markers: Vec<String> = tree(&dir)
        .into_iter()
        .filter(|n| n.ends_with("_E"))
        .collect();
    assert_eq!(markers, vec!["0_6_E".to_string()]);
}
