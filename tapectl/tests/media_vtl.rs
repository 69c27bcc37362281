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
