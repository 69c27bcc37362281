//! Encrypted pools on the virtual library through the `tapectl` binary (docs/encryption.md): the
//! drive encrypts an encrypted pool's tapes (AES-256-GCM records on disk, no plaintext in them), a
//! restore without the key fails naming the tape and the key's fingerprint, with the key it
//! restores exactly; verify and catalog rebuild find the key by the fingerprint the tape names; a
//! plain pool's tapes stay plain LTFS; an encrypted tape is never formatted for a plain pool.

mod support;

use std::path::Path;

use support::sets::{Lab, assert_same_tree, make_tree};
use support::{json, ok, tapectl};

const MARKER: &[u8] = b"RACKVAULT-PLAINTEXT-MARKER-7f3a9c";

/// The record files of a cartridge (`<p>_<blk>_R`) and whether any holds `needle`, and how many
/// encrypted-record sidecars (`_K`) it has.
fn scan(lab: &Lab, barcode: &str, needle: &[u8]) -> (usize, bool, usize) {
    let dir = lab.path(&format!("vtl/cartridges/{barcode}"));
    let (mut records, mut found, mut sidecars) = (0, false, 0);
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.ends_with("_K") {
            sidecars += 1;
        }
        if !name.ends_with("_R") {
            continue;
        }
        records += 1;
        let b = std::fs::read(e.path()).unwrap();
        found |= b.windows(needle.len()).any(|w| w == needle);
    }
    (records, found, sidecars)
}

fn tapes_of(r: &serde_json::Value) -> Vec<String> {
    r["copies"][0]["tapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["barcode"].as_str().unwrap().to_string())
        .collect()
}

fn tree_with_marker(lab: &Lab, name: &str) -> std::path::PathBuf {
    let t = lab.path(name);
    make_tree(&t, 40, 4, 0);
    let mut text = Vec::new();
    for _ in 0..200 {
        text.extend_from_slice(MARKER);
        text.push(b'\n');
    }
    std::fs::write(t.join("docs/secret.txt"), &text).unwrap();
    t
}

fn empty_or_missing(p: &Path) -> bool {
    std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())
}

#[test]
fn an_encrypted_pool_restores_exactly_with_its_key_and_not_at_all_without() {
    let lab = Lab::new(
        6,
        64,
        "[[pool]]\nname = \"offsite\"\nbarcodes = [\"RV000[1-3]L6\"]\nencryption = { key_file = \"keys/offsite.key\" }\n\
         [[pool]]\nname = \"onsite\"\nbarcodes = [\"RV000[4-6]L6\"]\n\
         [tape]\nkeys_dir = \"keys\"\n",
    );
    std::fs::create_dir(lab.path("keys")).unwrap();
    let key_file = lab.path("keys/offsite.key");
    let k = json(&lab.config, &["key", "create", key_file.to_str().unwrap()]);
    let fp = k["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fp.len(), 26, "{k}");
    // The key is in no output but the slip.
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    let key_line = key_text.lines().find(|l| l.starts_with("key 1:")).unwrap();
    assert!(!k.to_string().contains(key_line), "{k}");
    let shown = json(&lab.config, &["key", "show", key_file.to_str().unwrap()]);
    assert_eq!(shown["fingerprint"], fp.as_str());
    assert!(shown.get("key").is_none());
    let slip = ok(&lab.config, &["key", "show", key_file.to_str().unwrap()]);
    assert!(slip.contains(key_line) && slip.contains(&fp), "{slip}");

    let t1 = tree_with_marker(&lab, "tree1");
    lab.snapshot("home", "20261201T020000Z", &t1);
    let r = json(&lab.config, &["set", "write", "home", "--pool", "offsite"]);
    let set = r["set"].as_str().unwrap().to_string();
    let enc_tapes = tapes_of(&r);
    for b in &enc_tapes {
        let (records, plaintext, sidecars) = scan(&lab, b, MARKER);
        assert!(records > 0);
        assert!(!plaintext, "{b}: a record holds the plaintext");
        assert_eq!(sidecars, records, "{b}: every record is encrypted");
    }
    // The catalog and the tape's own description name the key by fingerprint.
    let media = json(&lab.config, &["media", "list"]);
    let row = media
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["barcode"] == enc_tapes[0].as_str())
        .unwrap_or_else(|| panic!("{media}"));
    assert_eq!(row["key_fingerprint"], fp.as_str(), "{row}");
    assert!(!media.to_string().contains(key_line));

    // The tape describes itself with the fingerprint; `ltfs get` reads it with the key found in
    // keys_dir.
    ok(&lab.config, &["load", &enc_tapes[0], "--drive", "0"]);
    let got = lab.path("got");
    ok(
        &lab.config,
        &[
            "ltfs",
            "get",
            &format!("/.rackvault/sets/{set}/tape-0001.json"),
            "--to",
            got.to_str().unwrap(),
        ],
    );
    let desc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(got.join("tape-0001.json")).unwrap()).unwrap();
    assert_eq!(desc["key_fingerprint"], fp.as_str(), "{desc}");
    ok(&lab.config, &["unload", "--drive", "0"]);

    // With the key: verify, and a restore byte for byte.
    let v = json(&lab.config, &["set", "verify", &set]);
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    let out = lab.path("restored-with-key");
    ok(
        &lab.config,
        &["restore", "home", "latest", "--to", out.to_str().unwrap()],
    );
    assert_same_tree(&t1, &out);

    // Without the key (the key file and keys_dir gone): the restore fails naming the tape and the
    // fingerprint, and writes nothing.
    std::fs::rename(lab.path("keys"), lab.path("keys-in-the-safe")).unwrap();
    let out = lab.path("restored-without-key");
    let o = tapectl(
        &lab.config,
        &["restore", "home", "latest", "--to", out.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("tape {} is encrypted with key {fp}", enc_tapes[0]))
            && err.contains("put its key file in")
            && err.contains("docs/encryption.md"),
        "{err}"
    );
    assert!(
        !err.contains(key_line) && !err.contains("Some(") && !err.contains("{ "),
        "{err}"
    );
    assert!(empty_or_missing(&out), "nothing restored without the key");
    let o = tapectl(&lab.config, &["set", "verify", &set]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&fp));

    // A plain pool's tapes stay plain LTFS: the marker is in their records, no sidecar.
    let r = json(&lab.config, &["set", "write", "home", "--pool", "onsite"]);
    let plain_tapes = tapes_of(&r);
    assert!(plain_tapes.iter().all(|b| !enc_tapes.contains(b)));
    // Its self-description has no key_fingerprint: byte for byte what it was before the field.
    let plain_set = r["set"].as_str().unwrap().to_string();
    ok(&lab.config, &["load", &plain_tapes[0], "--drive", "0"]);
    let got = lab.path("got-plain");
    ok(
        &lab.config,
        &[
            "ltfs",
            "get",
            &format!("/.rackvault/sets/{plain_set}/tape-0001.json"),
            "--to",
            got.to_str().unwrap(),
        ],
    );
    let text = std::fs::read_to_string(got.join("tape-0001.json")).unwrap();
    assert!(!text.contains("key_fingerprint"), "{text}");
    ok(&lab.config, &["unload", "--drive", "0"]);
    for b in &plain_tapes {
        let (_, plaintext, sidecars) = scan(&lab, b, MARKER);
        assert_eq!(sidecars, 0, "{b}");
        if b == &plain_tapes[0] {
            assert!(plaintext, "{b}: the plain tape holds the file as it is");
        }
    }

    // Catalog rebuild without the key: the encrypted tapes are left out, saying why.
    std::fs::rename(lab.path("state"), lab.path("lost-state")).unwrap();
    let rb = json(&lab.config, &["catalog", "rebuild"]);
    let skipped = rb["skipped"].as_array().unwrap();
    for b in &enc_tapes {
        let s = skipped
            .iter()
            .find(|s| s["barcode"] == b.as_str())
            .unwrap_or_else(|| panic!("{b} not skipped: {rb}"));
        assert!(s["reason"].as_str().unwrap().contains(&fp), "{s}");
    }
    assert_eq!(rb["complete"].as_array().unwrap().len(), 1, "{rb}");

    // A plain pool taking every barcode never formats an encrypted tape whose label it cannot
    // read: it is passed over, and its records are as they were.
    let before: Vec<_> = enc_tapes.iter().map(|b| scan(&lab, b, MARKER)).collect();
    let plain_all = lab.path("plain-all.toml");
    let cfg = std::fs::read_to_string(&lab.config).unwrap();
    let head = &cfg[..cfg.find("[[pool]]").unwrap()];
    std::fs::write(
        &plain_all,
        format!("{head}[[pool]]\nname = \"all\"\nbarcodes = [\"RV*\"]\n"),
    )
    .unwrap();
    let t2 = lab.path("tree2");
    make_tree(&t2, 10, 1, 0);
    lab.snapshot("home", "20261202T020000Z", &t2);
    let r = json(&plain_all, &["set", "write", "home", "--full"]);
    let skipped = r["skipped"].as_array().unwrap();
    for b in &enc_tapes {
        let s = skipped
            .iter()
            .find(|s| s["barcode"] == b.as_str())
            .unwrap_or_else(|| panic!("{b} was not passed over: {r}"));
        let why = s["reason"].as_str().unwrap();
        assert!(
            why.contains(&fp) && why.contains("never overwritten"),
            "{why}"
        );
    }
    let after: Vec<_> = enc_tapes.iter().map(|b| scan(&lab, b, MARKER)).collect();
    assert_eq!(before, after, "the encrypted tapes were not touched");

    // With the key back, a rebuild reads every tape, records the fingerprint, and the encrypted
    // set restores from the rebuilt catalog.
    std::fs::rename(lab.path("keys-in-the-safe"), lab.path("keys")).unwrap();
    std::fs::remove_dir_all(lab.path("state")).unwrap();
    let rb = json(&lab.config, &["catalog", "rebuild"]);
    assert!(
        rb["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !enc_tapes.contains(&s["barcode"].as_str().unwrap().to_string())),
        "{rb}"
    );
    let media = json(&lab.config, &["media", "list"]);
    for m in media.as_array().unwrap() {
        let b = m["barcode"].as_str().unwrap().to_string();
        if enc_tapes.contains(&b) {
            assert_eq!(m["key_fingerprint"], fp.as_str(), "{m}");
        } else {
            assert!(m["key_fingerprint"].is_null(), "{m}");
        }
    }
    let out = lab.path("restored-after-rebuild");
    ok(
        &lab.config,
        &[
            "restore",
            "home",
            "20261201T020000Z",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    assert_same_tree(&t1, &out);
}

#[test]
fn a_key_file_recreated_from_its_slip_restores() {
    let lab = Lab::new(
        3,
        64,
        "[[pool]]\nname = \"offsite\"\nbarcodes = [\"RV*\"]\nencryption = { key_file = \"offsite.key\" }\n",
    );
    let key_file = lab.path("offsite.key");
    ok(&lab.config, &["key", "create", key_file.to_str().unwrap()]);
    let slip = ok(&lab.config, &["key", "show", key_file.to_str().unwrap()]);
    let t1 = tree_with_marker(&lab, "tree1");
    lab.snapshot("home", "20261201T020000Z", &t1);
    json(&lab.config, &["set", "write", "home"]);
    // The key file is lost; an operator types the two key lines of the slip into a new one.
    std::fs::remove_file(&key_file).unwrap();
    let typed: String = slip
        .lines()
        .filter(|l| l.starts_with("key "))
        .map(|l| format!("{}\n", l.split('(').next().unwrap().trim()))
        .collect();
    std::fs::write(&key_file, typed).unwrap();
    let o = tapectl(&lab.config, &["key", "show", key_file.to_str().unwrap()]);
    assert!(!o.status.success(), "a key file others can read is refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("chmod 600"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = lab.path("restored");
    ok(
        &lab.config,
        &["restore", "home", "latest", "--to", out.to_str().unwrap()],
    );
    assert_same_tree(&t1, &out);
}
