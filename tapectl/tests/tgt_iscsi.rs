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
