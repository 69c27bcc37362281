//! `tapectl media` on the virtual library: the list reconciled with what the library sees,
//! labelling new cartridges (never one holding data), and states changed by hand, each kept in the
//! cartridge's history and obeyed by the set writer.

mod support;

use support::sets::{Lab, make_tree};
use support::{json, ok, tapectl};

fn row<'a>(list: &'a serde_json::Value, barcode: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|m| m["barcode"] == barcode)
        .unwrap_or_else(|| panic!("{barcode} not listed: {list}"))
}

#[test]
fn new_cartridges_are_labelled_and_hand_made_states_are_kept_and_obeyed() {
    let lab = Lab::new(
        4,
        64,
        "[[pool]]\nname = \"weekly\"\nbarcodes = [\"RV000[1-3]L6\"]\n",
    );
    // RV0003L6 holds someone else's LTFS volume.
    ok(&lab.config, &["load", "RV0003L6"]);
    ok(&lab.config, &["ltfs", "format"]);
    ok(&lab.config, &["unload"]);

    let list = json(&lab.config, &["media", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");
    assert_eq!(row(&list, "RV0001L6")["state"], "new");
    assert_eq!(
        row(&list, "RV0001L6")["location"],
        serde_json::json!({"kind": "slot", "at": 1})
    );

    let o = tapectl(&lab.config, &["--json", "media", "label", "--all-new"]);
    assert!(
        !o.status.success(),
        "the foreign cartridge is a problem to report"
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let labelled: Vec<&str> = r["labelled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["barcode"].as_str().unwrap())
        .collect();
    assert_eq!(labelled, ["RV0001L6", "RV0002L6"], "{r}");
    assert!(
        r["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("RV0003L6: it holds LTFS volume"),
        "{r}"
    );
    let list = json(
        &lab.config,
        &["media", "list", "--pool", "weekly", "--state", "writable"],
    );
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(row(&list, "RV0001L6")["volume_uuid"].is_string());
    // RV0004L6 is outside the pool.
    let o = tapectl(&lab.config, &["media", "label", "RV0004L6"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("pool weekly does not take this barcode"));

    // Retired and damaged cartridges are not written; the history says who did what and why.
    ok(
        &lab.config,
        &["media", "retire", "RV0001L6", "--why", "worn out"],
    );
    ok(&lab.config, &["media", "damaged", "RV0002L6"]);
    let t = lab.path("tree");
    make_tree(&t, 5, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    let o = tapectl(&lab.config, &["set", "write", "home"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no writable tape of pool weekly"), "{err}");
    ok(&lab.config, &["media", "undamaged", "RV0002L6"]);
    let r = json(&lab.config, &["set", "write", "home"]);
    assert_eq!(r["copies"][0]["tapes"][0]["barcode"], "RV0002L6", "{r}");
    let h = json(&lab.config, &["media", "history", "RV0001L6"]);
    let last = h.as_array().unwrap().last().unwrap();
    assert_eq!(
        (last["what"].as_str(), last["new"].as_str()),
        (Some("state"), Some("retired"))
    );
    assert_eq!(
        (last["why"].as_str(), last["actor"].as_str()),
        (Some("worn out"), Some("tapectl media retire"))
    );
    let o = tapectl(&lab.config, &["media", "undamaged", "RV0001L6"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("RV0001L6 is retired, not damaged"));
    // Where they are: the list's filters.
    let onsite = json(&lab.config, &["media", "list", "--location", "onsite"]);
    assert_eq!(onsite.as_array().unwrap().len(), 4);
    let slots = json(&lab.config, &["media", "list", "--location", "slot"]);
    assert_eq!(
        slots.as_array().unwrap().len(),
        4,
        "the set writer puts its tape back: {slots}"
    );
}

#[test]
fn sets_expire_by_their_pools_retention_and_an_expired_tape_is_written_anew() {
    let lab = Lab::new(
        2,
        64,
        "[[pool]]\nname = \"p\"\nbarcodes = [\"RV*\"]\nallocation = \"new\"\nretention = { full_days = 30, incremental_days = 7 }\n",
    );
    let t = lab.path("tree");
    make_tree(&t, 5, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    let full = json(&lab.config, &["set", "write", "home"]);
    std::fs::write(t.join("later.txt"), b"later").unwrap();
    lab.snapshot("home", "20261202T020000Z", &t);
    let inc = json(&lab.config, &["set", "write", "home"]);
    let (old_tape, old_uuid) = {
        let l = json(&lab.config, &["media", "list"]);
        let r = row(&l, "RV0001L6");
        (
            r["barcode"].as_str().unwrap().to_string(),
            r["volume_uuid"].as_str().unwrap().to_string(),
        )
    };
    let at = |days: i64| {
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24 * days))
            .unwrap()
            .to_string()
    };
    // Day 10: the incremental is due and nothing builds on it; the full is not due.
    let r = json(
        &lab.config,
        &["media", "expire", "--dry-run", "--at", &at(10)],
    );
    let uuids: Vec<&str> = r["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(uuids, [inc["set"].as_str().unwrap()], "{r}");
    assert_eq!(r["tapes"], serde_json::json!(["RV0002L6"]));
    let sets = json(&lab.config, &["set", "list"]);
    assert!(
        sets.as_array()
            .unwrap()
            .iter()
            .all(|s| s["set"]["state"] == "complete"),
        "a dry run changes nothing"
    );
    // Day 40: both have expired; both tapes may be written anew.
    let r = json(&lab.config, &["media", "expire", "--at", &at(40)]);
    assert_eq!(r["sets"].as_array().unwrap().len(), 2, "{r}");
    let expired = json(&lab.config, &["media", "list", "--state", "expired"]);
    assert_eq!(expired.as_array().unwrap().len(), 2, "{expired}");
    let h = json(&lab.config, &["media", "history", &old_tape]);
    assert!(h.to_string().contains("every set on it has expired"), "{h}");

    // A new set goes over the expired full's tape: a new volume, and its old sets leave the catalog.
    lab.snapshot("home", "20261203T020000Z", &t);
    let r = json(&lab.config, &["set", "write", "home", "--full"]);
    assert_eq!(
        r["copies"][0]["tapes"][0]["barcode"],
        old_tape.as_str(),
        "{r}"
    );
    let l = json(&lab.config, &["media", "list"]);
    let m = row(&l, &old_tape);
    assert_eq!(m["state"], "writable");
    assert_ne!(
        m["volume_uuid"].as_str().unwrap(),
        old_uuid,
        "a new LTFS volume"
    );
    let sets = json(&lab.config, &["set", "list"]);
    let left: Vec<&str> = sets
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["set"]["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(
        left,
        [r["set"].as_str().unwrap()],
        "the old full and the incremental built on it are gone: {sets}"
    );
    assert!(
        !lab.path(&format!(
            "state/tape-sets/{}",
            full["set"].as_str().unwrap()
        ))
        .exists()
    );
    let out = lab.path("restored");
    ok(
        &lab.config,
        &["restore", "home", "latest", "--to", out.to_str().unwrap()],
    );
    support::sets::assert_same_tree(&t, &out);
}

#[test]
fn a_set_without_a_tape_waits_for_one_put_into_the_door_and_goes_on() {
    use std::io::{BufRead, BufReader};
    let lab = Lab::new(
        1,
        64,
        "[[pool]]\nname = \"offsite\"\nbarcodes = [\"NW*\"]\n",
    );
    let t = lab.path("tree");
    make_tree(&t, 5, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    // Without waiting it fails at once, saying what to insert.
    let o = tapectl(&lab.config, &["set", "write", "home"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no writable tape of pool offsite") && err.contains("NW*"),
        "{err}"
    );

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tapectl"))
        .arg("--config")
        .arg(&lab.config)
        .args(["--json", "set", "write", "home", "--wait-tapes", "300"])
        .env_remove("RACKVAULT_VTL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "tapectl ended before it waited"
        );
        if line.contains("waiting for it") {
            break;
        }
    }
    assert!(line.contains("no writable tape of pool offsite"), "{line}");
    // The operator puts a new cartridge into the door; the set takes it in and goes on.
    ok(&lab.config, &["vtl", "insert", "NW0001L6"]);
    let out = child.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(out.status.success(), "{rest}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["copies"][0]["tapes"][0]["barcode"], "NW0001L6", "{r}");
    let l = json(&lab.config, &["media", "list"]);
    let m = row(&l, "NW0001L6");
    assert_eq!(m["pool"], "offsite", "{m}");
    assert!(
        m["location"]["kind"] == "slot",
        "imported from the door and put back in a slot: {m}"
    );
}
