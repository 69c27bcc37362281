//! Offsite rotation end to end on the virtual library, the person played by its door: a full set
//! in two copies, the offsite copy exported through the door and carried to the vault, the policy
//! met, then expiry, recall and the tape's return, with the catalog checked at each step.

mod support;

use support::sets::{Lab, make_tree};
use support::{json, ok};

fn location(lab: &Lab, barcode: &str) -> serde_json::Value {
    let l = json(&lab.config, &["media", "list"]);
    l.as_array()
        .unwrap()
        .iter()
        .find(|m| m["barcode"] == barcode)
        .unwrap_or_else(|| panic!("{barcode}: {l}"))["location"]
        .clone()
}

#[test]
fn the_offsite_copy_goes_out_through_the_door_and_comes_back_when_expired() {
    let lab = Lab::new(
        4,
        64,
        "[[pool]]\nname = \"p\"\nbarcodes = [\"RV*\"]\nallocation = \"new\"\nretention = { full_days = 30, incremental_days = 7 }\n\
         [rotation]\nvaults = [\"parents-house\"]\noffsite = [{ kind = \"full\", copy = 2, vault = \"parents-house\" }]\nkeep_offsite_fulls = 1\n",
    );
    let t = lab.path("tree");
    make_tree(&t, 10, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    let r = json(
        &lab.config,
        &["set", "write", "home", "--full", "--copies", "2"],
    );
    let offsite = r["copies"][1]["tapes"][0]["barcode"]
        .as_str()
        .unwrap()
        .to_string();

    // The plan: copy 2 goes to the vault; too few fulls offsite.
    let p = json(&lab.config, &["rotation", "plan"]);
    assert_eq!(
        p["export"]["parents-house"][0]["barcode"],
        offsite.as_str(),
        "{p}"
    );
    assert!(
        p["alerts"].to_string().contains("0 full set(s) offsite"),
        "{p}"
    );

    // Through the door.
    let moved = json(&lab.config, &["rotation", "export"]);
    assert_eq!(moved[0]["barcode"], offsite.as_str());
    assert_eq!(location(&lab, &offsite)["kind"], "import-export");
    let p = json(&lab.config, &["rotation", "plan"]);
    assert!(p["export"].as_object().unwrap().is_empty(), "{p}");
    assert!(
        p["in_transit"][0]["why"]
            .as_str()
            .unwrap()
            .contains("to be taken to parents-house"),
        "{p}"
    );
    // The person takes it out: the next look at the library has it on its way.
    ok(&lab.config, &["vtl", "remove", &offsite]);
    let p = json(&lab.config, &["rotation", "plan"]);
    assert_eq!(
        location(&lab, &offsite),
        serde_json::json!({"kind": "in-transit-to", "at": "parents-house"})
    );
    assert_eq!(
        p["in_transit"][0]["why"], "in transit to parents-house",
        "{p}"
    );
    // And says it arrived.
    ok(
        &lab.config,
        &["rotation", "arrived", "parents-house", &offsite],
    );
    assert_eq!(
        location(&lab, &offsite),
        serde_json::json!({"kind": "vault", "at": "parents-house"})
    );
    let p = json(&lab.config, &["rotation", "plan"]);
    assert_eq!(p["offsite_fulls"], 1);
    assert!(p["alerts"].as_array().unwrap().is_empty(), "{p}");
    // Restores read the copy that is onsite.
    let out = lab.path("restored");
    let rr = json(
        &lab.config,
        &["restore", "home", "latest", "--to", out.to_str().unwrap()],
    );
    assert_eq!(rr["tapes"][0], r["copies"][0]["tapes"][0]["barcode"]);

    // Forty days on every set has expired: the vault's tape is due back.
    let later = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * 40))
        .unwrap()
        .to_string();
    ok(&lab.config, &["media", "expire", "--at", &later]);
    let back = json(&lab.config, &["rotation", "recall"]);
    assert_eq!(
        back["parents-house"][0]["barcode"],
        offsite.as_str(),
        "{back}"
    );
    assert_eq!(
        location(&lab, &offsite),
        serde_json::json!({"kind": "in-transit-from", "at": "parents-house"})
    );
    // It comes back through the door.
    ok(&lab.config, &["vtl", "insert", &offsite]);
    ok(&lab.config, &["import"]);
    assert_eq!(location(&lab, &offsite)["kind"], "slot");
    let h = json(&lab.config, &["media", "history", &offsite]);
    let places: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["what"] == "location")
        .map(|r| r["new"].as_str().unwrap())
        .collect();
    assert!(
        places.windows(4).any(|w| w[0] == "to:parents-house"
            && w[1] == "vault:parents-house"
            && w[2] == "from:parents-house"
            && (w[3].starts_with("slot:") || w[3].starts_with("ie:"))),
        "{places:?}"
    );
}
