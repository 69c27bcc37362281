//! tapectl against someone else's SCSI target: tgt's virtual tape library over iSCSI. Changer and basic
//! drive paths only; tgt has no LOCATE, READ POSITION (zeros), MAM, LOG SENSE or partitions, and those
//! gaps must show up as notes, not failures.

mod support;

use support::{Tgt, json, ok};

#[test]
fn changer_and_drive_over_iscsi() {
    let tgt = Tgt::start();
    let cfg = tgt.config(&tgt.dir.path().join("locks"));

    let devs = json(&cfg, &["devices"]);
    let kinds: Vec<&str> = devs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["medium changer", "tape drive", "tape drive"],
        "{devs}"
    );

    let st = json(&cfg, &["library", "status"]);
    assert_eq!(st["changer"]["product"], "3573-TL");
    assert_eq!(st["slots"].as_array().unwrap().len(), 24);
    assert_eq!(st["import_export"].as_array().unwrap().len(), 3);
    // tgt cuts the last descriptor of each type short; the barcode must survive.
    assert_eq!(st["slots"][8]["volume_tag"], "CLN001L1", "{}", st["slots"]);
    assert_eq!(st["slots"][8]["cleaning"], true);

    ok(&cfg, &["load", "RV0001L6", "--drive", "0"]);
    let st = json(&cfg, &["library", "status"]);
    assert_eq!(st["drives"][0]["volume_tag"], "RV0001L6");

    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let src = tgt.dir.path().join("src.bin");
    let back = tgt.dir.path().join("back.bin");
    std::fs::write(&src, &data).unwrap();
    ok(
        &cfg,
        &[
            "drive",
            "write",
            "--drive",
            "0",
            src.to_str().unwrap(),
            "--block-size",
            "64K",
        ],
    );
    ok(&cfg, &["drive", "rewind", "--drive", "0"]);
    ok(
        &cfg,
        &[
            "drive",
            "read",
            "--drive",
            "0",
            "--to",
            back.to_str().unwrap(),
            "--block-size",
            "64K",
        ],
    );
    assert!(
        std::fs::read(&back).unwrap() == data,
        "data read back over iSCSI differs"
    );

    // Status degrades gracefully where tgt lacks commands.
    let ds = json(&cfg, &["drive", "status", "--drive", "0"]);
    assert_eq!(ds["serial"], "10WT00001", "{ds}");

    ok(&cfg, &["unload", "--drive", "0"]);
    let m = json(&cfg, &["export", "RV0002L6"]);
    assert_eq!(m[0]["to"], serde_json::json!({"kind": "ie", "number": 1}));
    let st = json(&cfg, &["library", "status"]);
    assert_eq!(
        st["slots"][0]["volume_tag"], "RV0001L6",
        "unloaded back home"
    );
    assert_eq!(st["import_export"][0]["volume_tag"], "RV0002L6");
    let m = json(&cfg, &["import"]);
    assert_eq!(m.as_array().unwrap().len(), 1);
}

/// The set writer's changer path over iSCSI: the inventory is reconciled into the tape catalog, a
/// tape of the pool is loaded; tgt's drives cannot partition, which is said plainly.
#[test]
fn a_set_over_iscsi_loads_a_tape_and_says_the_drive_cannot_hold_ltfs() {
    let tgt = Tgt::start();
    let lab = tgt.dir.path();
    let cfg = tgt.config(&lab.join("locks"));
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("state_dir = \"state\"\n[store]\nkind = \"dir\"\npath = \"store\"\n{text}"),
    )
    .unwrap();
    let tree = lab.join("tree");
    support::sets::make_tree(&tree, 5, 0, 0);
    support::sets::publish(
        &tree,
        &lab.join("store/home/snapshots/20261201T020000Z"),
        "home",
        "20261201T020000Z",
    );
    let o = support::tapectl(&cfg, &["set", "write", "home", "--drive", "0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("drive 0 cannot make the two partitions an LTFS volume needs")
            && err.contains("LTO-5 or later"),
        "{err}"
    );
    // The changer loaded the pool's first tape, and the catalog knows where every cartridge is.
    let st = json(&cfg, &["library", "status"]);
    assert_eq!(st["drives"][0]["volume_tag"], "RV0001L6", "{st}");
    let cat = tapectl::catalog::TapeCatalog::open(&lab.join("state")).unwrap();
    let m = cat.media("RV0001L6").unwrap().unwrap();
    assert_eq!(m.location, tapectl::catalog::Location::Drive(0));
    assert_eq!(
        cat.media("RV0002L6").unwrap().unwrap().location,
        tapectl::catalog::Location::Slot(2)
    );
    let sets = json(&cfg, &["set", "list"]);
    assert_eq!(sets[0]["set"]["state"], "interrupted", "{sets}");
}
