//! Tape sets on the virtual library through the `tapectl` binary: a full set spanning five and
//! more 64 MB cartridges with one file across three of them, an incremental set, point-in-time
//! restores compared byte for byte, a single-file restore counted in records read (the drive's own
//! volume statistics), `catalog find`, and cartridges that must be passed over.
//!
//! Snapshots are made here as backupd's directory store lays them out (a tree plus its manifest),
//! so these tests need nothing but the tape side.

mod support;

use support::sets::{Lab, assert_same_tree, copy_tree, make_tree, noise};
use support::{json, ok, tapectl};

#[test]
fn a_full_set_spans_tapes_and_an_incremental_restores_each_point_in_time() {
    let lab = Lab::new(12, 64, "");
    let t1 = lab.path("tree1");
    // 170 MiB: more than a 64 MB volume holds even at LTO compression (2.5:1), so only pieces fit.
    make_tree(&t1, 200, 30, 170);
    lab.snapshot("home", "20261201T020000Z", &t1);

    let r = json(
        &lab.config,
        &["set", "write", "home", "--snapshot", "20261201T020000Z"],
    );
    assert_eq!(r["kind"], "full");
    let tapes = r["copies"][0]["tapes"].as_array().unwrap();
    assert!(
        tapes.len() >= 5,
        "a 300 MB set on 64 MB tapes spans 5+: {r}"
    );
    let set1 = r["set"].as_str().unwrap().to_string();

    // The 170 MiB file is on three tapes, in order, and the catalog says so without a tape.
    let found = json(&lab.config, &["catalog", "find", "big.img"]);
    let holders = found[0]["tapes"][0][1].as_array().unwrap();
    assert_eq!(holders.len(), 3, "{found}");
    let thesis = json(&lab.config, &["catalog", "find", "**/thesis*.tex"]);
    assert_eq!(
        thesis[0]["path"], "docs/thesis/thesis-final.tex",
        "{thesis}"
    );
    assert_eq!(thesis[0]["set"], set1.as_str());

    let shown = json(&lab.config, &["set", "show", &set1[..8]]);
    assert_eq!(shown["set"]["state"], "complete");
    assert_eq!(
        shown["copies"][0]["tapes"].as_array().unwrap().len(),
        tapes.len()
    );

    // A day later: one file changed, one renamed, one deleted, one new.
    let t2 = lab.path("tree2");
    copy_tree(&t1, &t2);
    std::fs::write(t2.join("d01/f00001.txt"), b"changed").unwrap();
    std::fs::rename(t2.join("mid03.bin"), t2.join("mid03-renamed.bin")).unwrap();
    std::fs::remove_file(t2.join("d02/f00002.txt")).unwrap();
    std::fs::write(t2.join("new.txt"), noise(5000, 99)).unwrap();
    lab.snapshot("home", "20261202T020000Z", &t2);
    let r2 = json(
        &lab.config,
        &["set", "write", "home", "--snapshot", "latest"],
    );
    assert_eq!(r2["kind"], "incremental", "{r2}");
    assert_eq!(r2["base"], set1.as_str());
    assert_eq!(
        r2["files"], 2,
        "only the changed and the new file are stored: {r2}"
    );
    assert_eq!(r2["renamed"], 1);
    assert_eq!(
        r2["deleted"], 2,
        "the deleted file and the renamed file's old name: {r2}"
    );

    let out2 = lab.path("restored2");
    let rr = json(
        &lab.config,
        &[
            "restore",
            "home",
            "20261202T020000Z",
            "--to",
            out2.to_str().unwrap(),
        ],
    );
    assert!(rr["mismatches"].as_array().unwrap().is_empty());
    assert_same_tree(&t2, &out2);
    let out1 = lab.path("restored1");
    ok(
        &lab.config,
        &[
            "restore",
            "home",
            "20261201",
            "--to",
            out1.to_str().unwrap(),
        ],
    );
    assert_same_tree(&t1, &out1);

    // Nothing is overwritten without --overwrite, and nothing is written then.
    let o = tapectl(
        &lab.config,
        &[
            "restore",
            "home",
            "latest",
            "new.txt",
            "--to",
            out2.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nothing was written") && err.contains("new.txt exists"),
        "{err}"
    );
}

#[test]
fn restoring_one_file_reads_about_its_records_and_one_index() {
    let lab = Lab::new(3, 256, "");
    let t = lab.path("tree");
    make_tree(&t, 3000, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    let r = json(&lab.config, &["set", "write", "home"]);
    let tape = r["copies"][0]["tapes"][0]["barcode"]
        .as_str()
        .unwrap()
        .to_string();
    let written = records(&lab, &tape, "total data sets written");
    assert!(written > 3000, "one record or more per file: {written}");
    let before = records(&lab, &tape, "total data sets read");
    let out = lab.path("one");
    ok(
        &lab.config,
        &[
            "restore",
            "home",
            "latest",
            "d07/f01237.txt",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    let read = records(&lab, &tape, "total data sets read") - before;
    assert_eq!(
        std::fs::read(out.join("d07/f01237.txt")).unwrap(),
        std::fs::read(t.join("d07/f01237.txt")).unwrap()
    );
    // The labels, the index (a few records for 3000 files) and the file's one record.
    assert!(
        read <= 16,
        "restoring one file read {read} records of the set's {written}"
    );
}

/// The drive's volume statistics counter `name` for `barcode` (loaded to read it).
fn records(lab: &Lab, barcode: &str, name: &str) -> u64 {
    ok(&lab.config, &["load", barcode]);
    let st = json(&lab.config, &["drive", "status"]);
    st["volume_statistics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {st}"))["value"]["counter"]
        .as_u64()
        .unwrap()
}

#[test]
fn write_protected_and_foreign_tapes_are_passed_over_untouched() {
    let lab = Lab::new(3, 64, "[[pool]]\nname = \"weekly\"\nbarcodes = [\"RV*\"]\n");
    // RV0001L6: someone else's LTFS volume; RV0002L6: write-protected.
    ok(&lab.config, &["load", "RV0001L6"]);
    ok(&lab.config, &["ltfs", "format"]);
    ok(&lab.config, &["unload"]);
    ok(
        &lab.config,
        &[
            "vtl",
            "fault",
            r#"{"kind":"write_protect","barcode":"RV0002L6"}"#,
        ],
    );
    let t = lab.path("tree");
    make_tree(&t, 10, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    let r = json(&lab.config, &["set", "write", "home", "--pool", "weekly"]);
    assert_eq!(r["copies"][0]["tapes"][0]["barcode"], "RV0003L6", "{r}");
    let skipped: Vec<(String, String)> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["barcode"].as_str().unwrap().into(),
                s["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(skipped.len(), 2, "{r}");
    assert!(
        skipped[0].0 == "RV0001L6" && skipped[0].1.contains("does not know"),
        "{skipped:?}"
    );
    assert!(
        skipped[1].0 == "RV0002L6" && skipped[1].1.contains("write-protected"),
        "{skipped:?}"
    );
    // The foreign volume is as it was.
    ok(&lab.config, &["load", "RV0001L6"]);
    let ls = ok(&lab.config, &["ltfs", "ls", "/"]);
    assert!(ls.trim().is_empty(), "{ls}");
}

#[test]
fn two_copies_go_to_distinct_tapes_on_two_drives_and_each_restores_alone() {
    let lab = Lab::new(8, 64, "");
    let t = lab.path("tree");
    make_tree(&t, 50, 20, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    let r = json(
        &lab.config,
        &["set", "write", "home", "--full", "--copies", "2"],
    );
    let tapes = |c: usize| -> Vec<String> {
        r["copies"][c]["tapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["barcode"].as_str().unwrap().to_string())
            .collect()
    };
    let (a, b) = (tapes(0), tapes(1));
    assert!(
        a.len() >= 2 && b.len() >= 2,
        "80 MB spans two 64 MB tapes per copy: {r}"
    );
    assert!(
        a.iter().all(|x| !b.contains(x)),
        "copies share a tape: {a:?} {b:?}"
    );
    let drives: Vec<u64> = (0..2)
        .map(|c| r["copies"][c]["drive"].as_u64().unwrap())
        .collect();
    assert_eq!(drives, [0, 1], "both drives write at once: {r}");
    for copy in ["1", "2"] {
        let out = lab.path(&format!("copy{copy}"));
        let rr = json(
            &lab.config,
            &[
                "restore",
                "home",
                "latest",
                "--copy",
                copy,
                "--to",
                out.to_str().unwrap(),
            ],
        );
        let read: Vec<String> = rr["tapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().into())
            .collect();
        assert_eq!(read, if copy == "1" { a.clone() } else { b.clone() });
        assert_same_tree(&t, &out);
    }
    // Copy 1's first tape leaves the library: a restore without --copy reads copy 2 by itself.
    ok(&lab.config, &["export", &a[0]]);
    ok(&lab.config, &["vtl", "remove", &a[0]]);
    let out = lab.path("either");
    let rr = json(
        &lab.config,
        &["restore", "home", "latest", "--to", out.to_str().unwrap()],
    );
    let read: Vec<String> = rr["tapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().into())
        .collect();
    assert_eq!(read, b, "the copy that is in the library");
    assert_same_tree(&t, &out);
}

#[test]
fn verify_reads_a_copy_back_and_names_what_does_not_match() {
    let lab = Lab::new(4, 64, "");
    let t = lab.path("tree");
    make_tree(&t, 30, 5, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    let r = json(&lab.config, &["set", "write", "home"]);
    let set = r["set"].as_str().unwrap().to_string();
    let v = json(&lab.config, &["set", "verify", &set]);
    assert_eq!(v["files"], 37, "{v}");
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    let shown = ok(&lab.config, &["set", "show", &set]);
    assert!(shown.contains("verified"), "{shown}");

    // Flip one byte of mid02.bin's first record on tape.
    let m = tapectl::sets::write::copy_manifest(&lab.path("state"), &set, 1)
        .unwrap()
        .unwrap();
    let e = m
        .entries
        .iter()
        .find(|e| e.entry.path.display() == "mid02.bin")
        .unwrap();
    let part = e.parts[0];
    let barcode = &m.header.tapes[part.tape as usize - 1].barcode;
    let record = lab.path(&format!("vtl/cartridges/{barcode}/1_{}_R", part.block));
    let mut bytes = std::fs::read(&record).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&record, bytes).unwrap();
    let o = tapectl(&lab.config, &["set", "verify", &set]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mid02.bin: on tape it does not match the manifest's BLAKE3"),
        "{err}"
    );
    assert!(err.contains("does not verify"), "{err}");
    let shown = ok(&lab.config, &["set", "show", &set]);
    assert!(shown.contains("verify found 1 problems"), "{shown}");

    // A medium error where mid03.bin starts: reported by name, the rest still read.
    let e = m
        .entries
        .iter()
        .find(|e| e.entry.path.display() == "mid03.bin")
        .unwrap();
    let fault = format!(
        r#"{{"kind":"medium_error","barcode":"{}","partition":1,"block":{},"on":"read"}}"#,
        m.header.tapes[e.parts[0].tape as usize - 1].barcode,
        e.parts[0].block
    );
    ok(&lab.config, &["vtl", "fault", &fault]);
    let o = tapectl(&lab.config, &["--json", "set", "verify", &set]);
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("mid03.bin: cannot read")),
        "{problems:?}"
    );
    assert_eq!(v["files"], 36, "every other file was read: {v}");
}

#[test]
fn catalog_rebuild_from_the_tapes_alone_gives_the_same_answers() {
    let lab = Lab::new(10, 64, "");
    let t1 = lab.path("tree1");
    make_tree(&t1, 100, 20, 0);
    lab.snapshot("home", "20261201T020000Z", &t1);
    json(&lab.config, &["set", "write", "home", "--copies", "2"]);
    let t2 = lab.path("tree2");
    copy_tree(&t1, &t2);
    std::fs::write(t2.join("mid01.bin"), noise(6 << 20, 5)).unwrap();
    std::fs::remove_file(t2.join("d03/f00003.txt")).unwrap();
    lab.snapshot("home", "20261202T020000Z", &t2);
    json(&lab.config, &["set", "write", "home"]);

    // What no tape records: how long each tape took, what the drive said while it wrote.
    fn unrecorded(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k == "seconds" || k == "tape_alerts" || k == "write_health" {
                        *x = serde_json::Value::Null;
                    } else {
                        unrecorded(x);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(unrecorded),
            _ => {}
        }
    }
    let answers = || {
        let mut sets = json(&lab.config, &["set", "list"]);
        let found = json(&lab.config, &["catalog", "find", "**"]);
        let mut shown: Vec<serde_json::Value> = sets
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                json(
                    &lab.config,
                    &["set", "show", s["set"]["uuid"].as_str().unwrap()],
                )
            })
            .collect();
        unrecorded(&mut sets);
        shown.iter_mut().for_each(unrecorded);
        (sets, found, shown)
    };
    let before = answers();
    assert_eq!(before.0.as_array().unwrap().len(), 2);
    std::fs::rename(lab.path("state"), lab.path("lost-state")).unwrap();
    let r = json(&lab.config, &["catalog", "rebuild"]);
    assert_eq!(r["complete"].as_array().unwrap().len(), 2, "{r}");
    let after = answers();
    assert_eq!(before.0, after.0, "set list");
    assert_eq!(before.1, after.1, "catalog find");
    assert_eq!(before.2, after.2, "set show");
    // And the rebuilt catalog restores.
    let out = lab.path("restored");
    ok(
        &lab.config,
        &[
            "restore",
            "home",
            "latest",
            "--copy",
            "1",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    assert_same_tree(&t2, &out);
    // A second rebuild does not overwrite the catalog it made.
    let o = tapectl(&lab.config, &["catalog", "rebuild"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("move the old one away first"));
}

#[test]
fn a_drive_asking_for_cleaning_is_not_written_with() {
    let lab = Lab::new(2, 64, "");
    let t = lab.path("tree");
    make_tree(&t, 10, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    ok(
        &lab.config,
        &["vtl", "fault", r#"{"kind":"needs_cleaning","drive":0}"#],
    );
    let o = tapectl(&lab.config, &["set", "write", "home", "--drive", "0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("drive 0 reports a critical TapeAlert (clean now): writes to it are stopped; clean it with `tapectl clean --drive 0`"),
        "{err}"
    );
    let sets = json(&lab.config, &["set", "list"]);
    assert_eq!(sets[0]["set"]["state"], "interrupted", "{sets}");
    // The other drive writes.
    let r = json(&lab.config, &["set", "write", "home", "--drive", "1"]);
    assert_eq!(r["copies"][0]["drive"], 1);
}

#[test]
fn a_set_killed_mid_tape_leaves_readable_tapes_and_the_next_run_completes() {
    let lab = Lab::new(8, 64, "");
    let t = lab.path("tree");
    make_tree(&t, 20, 40, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tapectl"))
        .arg("--config")
        .arg(&lab.config)
        .args(["set", "write", "home", "--drive", "0"])
        .env_remove("RACKVAULT_VTL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until the second tape has data records on it; then kill -9.
    let second = lab.path("vtl/cartridges/RV0002L6");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let records = std::fs::read_dir(&second)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.starts_with("1_") && n.ends_with("_R")
                    })
                    .count()
            })
            .unwrap_or(0);
        if records > 20 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the set finished before it could be killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the second tape never got data"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // The killed writer's plan and parts are left in state/tmp until the next command settles it.
    let tmp_sets = || {
        std::fs::read_dir(lab.path("state/tmp"))
            .map(|d| d.filter_map(|e| e.ok()).count())
            .unwrap_or(0)
    };
    assert_eq!(tmp_sets(), 1);
    let sets = json(&lab.config, &["set", "list"]);
    assert_eq!(sets[0]["set"]["state"], "interrupted", "{sets}");
    assert_eq!(
        tmp_sets(),
        0,
        "the dead writer's temporary files are removed"
    );
    // Both tapes mount: each has a valid index (the second from its format, data after it unreferenced).
    for b in ["RV0001L6", "RV0002L6"] {
        ok(&lab.config, &["load", b]);
        ok(&lab.config, &["ltfs", "ls", "/"]);
    }
    let r = json(&lab.config, &["set", "write", "home", "--drive", "0"]);
    assert_eq!(r["kind"], "full", "the interrupted set is no base: {r}");
    let out = lab.path("restored");
    ok(
        &lab.config,
        &["restore", "home", "latest", "--to", out.to_str().unwrap()],
    );
    assert_same_tree(&t, &out);
}

#[test]
fn a_medium_error_while_writing_marks_the_tape_damaged_and_the_set_goes_on() {
    let lab = Lab::new(8, 64, "");
    let t = lab.path("tree");
    make_tree(&t, 20, 35, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    // The second tape fails a write in the middle of its data.
    ok(
        &lab.config,
        &[
            "vtl",
            "fault",
            r#"{"kind":"medium_error","barcode":"RV0002L6","partition":1,"block":40,"on":"write"}"#,
        ],
    );
    let r = json(&lab.config, &["set", "write", "home", "--drive", "0"]);
    let damaged = r["copies"][0]["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{r}");
    assert_eq!(damaged[0]["barcode"], "RV0002L6");
    assert!(
        damaged[0]["reason"]
            .as_str()
            .unwrap()
            .contains("medium error"),
        "{r}"
    );
    let tapes: Vec<&str> = r["copies"][0]["tapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["barcode"].as_str().unwrap())
        .collect();
    assert!(
        !tapes.contains(&"RV0002L6") && tapes.len() >= 3,
        "{tapes:?}"
    );
    // No file is anywhere only on the damaged tape: the catalog never names it, and all restores.
    let found = ok(&lab.config, &["catalog", "find", "**"]);
    assert!(!found.contains("RV0002L6"), "{found}");
    let out = lab.path("restored");
    ok(
        &lab.config,
        &["restore", "home", "latest", "--to", out.to_str().unwrap()],
    );
    assert_same_tree(&t, &out);
    let v = json(&lab.config, &["set", "verify", r["set"].as_str().unwrap()]);
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    // The damaged tape is not offered again.
    lab.snapshot("home", "20261202T020000Z", &t);
    let r2 = json(
        &lab.config,
        &["set", "write", "home", "--full", "--drive", "0"],
    );
    let tapes2 = r2["copies"][0]["tapes"].to_string();
    assert!(!tapes2.contains("RV0002L6"), "{tapes2}");
}

#[test]
fn a_pool_allocating_new_tapes_starts_each_set_on_its_own_tape() {
    let lab = Lab::new(
        4,
        64,
        "[[pool]]\nname = \"offsite\"\nbarcodes = [\"RV*\"]\nallocation = \"new\"\n",
    );
    let t = lab.path("tree");
    make_tree(&t, 10, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    let a = json(&lab.config, &["set", "write", "home"]);
    let b = json(&lab.config, &["set", "write", "home", "--full"]);
    let tape = |r: &serde_json::Value| {
        r["copies"][0]["tapes"][0]["barcode"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(tape(&a), "RV0001L6");
    assert_eq!(tape(&b), "RV0002L6", "a second set goes to a new tape: {b}");
}

#[test]
fn a_restore_names_the_tape_it_lacks_and_waits_for_it_when_asked() {
    use std::io::{BufRead, BufReader};
    let lab = Lab::new(3, 64, "");
    let t = lab.path("tree");
    make_tree(&t, 10, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    json(&lab.config, &["set", "write", "home"]);
    // The set's tape leaves the library.
    ok(&lab.config, &["export", "RV0001L6"]);
    ok(&lab.config, &["vtl", "remove", "RV0001L6"]);
    let out = lab.path("restored");
    let o = tapectl(
        &lab.config,
        &["restore", "home", "latest", "--to", out.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "the restore needs 1 tape(s) that are not in the library: RV0001L6 (recorded: slot 1)"
        ) && err.contains("--wait-tapes"),
        "{err}"
    );
    assert!(
        !out.join("docs").exists(),
        "nothing is written before the tapes are there"
    );

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tapectl"))
        .arg("--config")
        .arg(&lab.config)
        .args([
            "restore",
            "home",
            "latest",
            "--wait-tapes",
            "120",
            "--to",
            out.to_str().unwrap(),
        ])
        .env_remove("RACKVAULT_VTL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.contains("RV0001L6") && line.contains("waiting up to 120 s"),
        "{line}"
    );
    // The operator puts it into the import/export door.
    ok(&lab.config, &["vtl", "insert", "RV0001L6"]);
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert_same_tree(&t, &out);
}

#[test]
fn catalog_rebuild_leaves_out_what_it_cannot_trust_and_says_why() {
    let lab = Lab::new(
        5,
        64,
        "[[pool]]\nname = \"p\"\nbarcodes = [\"RV000[1-3]L6\"]\nallocation = \"new\"\n",
    );
    let t = lab.path("tree");
    make_tree(&t, 10, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    let full = json(&lab.config, &["set", "write", "home"]);
    std::fs::write(t.join("later.txt"), b"later").unwrap();
    lab.snapshot("home", "20261202T020000Z", &t);
    let inc = json(&lab.config, &["set", "write", "home"]);
    assert_eq!(inc["kind"], "incremental");
    // A tape that claims to hold a set, with a description that is not one.
    let fake = lab.path("fake/.rackvault/sets/0badc0de-0000-4000-8000-000000000000");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(
        fake.join("tape-0001.json"),
        b"{\"format\": \"rackvault-tape\", \"version\": 1, \"set\": 7}",
    )
    .unwrap();
    ok(&lab.config, &["load", "RV0005L6"]);
    ok(&lab.config, &["ltfs", "format"]);
    ok(
        &lab.config,
        &[
            "ltfs",
            "put",
            lab.path("fake/.rackvault").to_str().unwrap(),
            "/",
        ],
    );
    ok(&lab.config, &["unload"]);
    // The full set's tape is gone from the library.
    let base_tape = full["copies"][0]["tapes"][0]["barcode"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&lab.config, &["export", &base_tape]);
    ok(&lab.config, &["vtl", "remove", &base_tape]);

    std::fs::rename(lab.path("state"), lab.path("lost-state")).unwrap();
    let r = json(&lab.config, &["catalog", "rebuild"]);
    let skipped = r["skipped"].to_string();
    assert!(
        skipped.contains("RV0005L6") && skipped.contains("tape-0001.json"),
        "{r}"
    );
    let left = r["left_out"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{r}");
    assert_eq!(left[0]["set"], inc["set"]);
    assert!(
        left[0]["reason"]
            .as_str()
            .unwrap()
            .contains(full["set"].as_str().unwrap()),
        "{r}"
    );
    assert!(r["complete"].as_array().unwrap().is_empty(), "{r}");
}

#[test]
fn a_drive_asking_for_cleaning_is_cleaned_first_when_the_library_has_a_cleaner() {
    let lab = Lab::new(2, 64, "");
    ok(&lab.config, &["vtl", "insert", "CLN001L1"]);
    ok(&lab.config, &["import"]);
    let t = lab.path("tree");
    make_tree(&t, 10, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    ok(
        &lab.config,
        &["vtl", "fault", r#"{"kind":"needs_cleaning","drive":0}"#],
    );
    let r = json(&lab.config, &["set", "write", "home", "--drive", "0"]);
    assert_eq!(r["copies"][0]["drive"], 0, "{r}");
    let st = json(&lab.config, &["drive", "status", "--drive", "0"]);
    assert_eq!(st["needs_cleaning"], false, "{st}");
    let m = json(&lab.config, &["media", "list", "--state", "cleaning"]);
    assert_eq!(m[0]["barcode"], "CLN001L1");
    assert_eq!(m[0]["cleaning_uses"], 1, "{m}");
    let out = lab.path("restored");
    ok(
        &lab.config,
        &["restore", "home", "latest", "--to", out.to_str().unwrap()],
    );
    assert_same_tree(&t, &out);
}

/// The file named `name` somewhere under `dir`.
fn find_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            let f = find_file(&p, name);
            if f.exists() {
                return f;
            }
        } else if p.file_name().unwrap() == name {
            return p;
        }
    }
    dir.join("not-found").join(name)
}

#[test]
fn the_newest_tape_carries_a_catalog_copy_that_brings_back_a_lost_state_directory() {
    let lab = Lab::new(6, 64, "");
    let t1 = lab.path("tree1");
    make_tree(&t1, 60, 10, 0);
    lab.snapshot("home", "20261201T020000Z", &t1);
    json(&lab.config, &["set", "write", "home", "--copies", "2"]);
    let t2 = lab.path("tree2");
    copy_tree(&t1, &t2);
    std::fs::write(t2.join("mid01.bin"), noise(3 << 20, 9)).unwrap();
    lab.snapshot("home", "20261202T020000Z", &t2);
    json(&lab.config, &["set", "write", "home"]);

    let sets = json(&lab.config, &["set", "list"]);
    let newest = &sets[1];
    let uuid = newest["set"]["uuid"].as_str().unwrap();
    let last = newest["copies"][0]["tapes"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    let (barcode, seq) = (
        last["barcode"].as_str().unwrap(),
        last["seq"].as_u64().unwrap(),
    );
    // A person with only the newest tape: its description names the copy; `ltfs get` takes it.
    let got = lab.path("from-tape");
    ok(&lab.config, &["load", barcode, "--drive", "0"]);
    ok(
        &lab.config,
        &[
            "ltfs",
            "get",
            &format!("/.rackvault/sets/{uuid}/tape-{seq:04}.json"),
            &format!("/.rackvault/sets/{uuid}/catalog.sqlite.zst"),
            "--to",
            got.to_str().unwrap(),
        ],
    );
    ok(&lab.config, &["unload", "--drive", "0"]);
    let desc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(find_file(&got, &format!("tape-{seq:04}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        desc["catalog"],
        format!("/.rackvault/sets/{uuid}/catalog.sqlite.zst"),
        "{desc}"
    );

    // What the catalog answers, less what came after the copy went to tape (the set's
    // completion time; how long the last tape took and what the drive said at its close; the
    // tapes going back to their slots).
    let answers = || {
        let mut sets = json(&lab.config, &["set", "list"]);
        for s in sets.as_array_mut().unwrap() {
            s["set"]["completed_at"] = serde_json::Value::Null;
            for c in s["copies"].as_array_mut().unwrap() {
                for t in c["tapes"].as_array_mut().unwrap() {
                    for k in ["seconds", "tape_alerts", "write_health"] {
                        t[k] = serde_json::Value::Null;
                    }
                }
            }
        }
        let found = json(&lab.config, &["catalog", "find", "**"]);
        let media: Vec<(String, String)> = json(&lab.config, &["media", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["barcode"].to_string(), m["state"].to_string()))
            .collect();
        (sets, found, media)
    };
    let before = answers();
    std::fs::rename(lab.path("state"), lab.path("lost-state")).unwrap();
    std::fs::create_dir(lab.path("state")).unwrap();
    let copy = std::fs::File::open(find_file(&got, "catalog.sqlite.zst")).unwrap();
    let mut db = std::fs::File::create(lab.path("state/tapes.sqlite")).unwrap();
    zstd::stream::copy_decode(copy, &mut db).unwrap();
    drop(db);
    let after = answers();
    assert_eq!(before.0, after.0, "set list");
    assert_eq!(before.1, after.1, "catalog find");
    assert_eq!(before.2, after.2, "media");
    // The restore reads the sets' manifests back from their tapes (the state directory has none).
    let out = lab.path("restored");
    ok(
        &lab.config,
        &["restore", "home", "latest", "--to", out.to_str().unwrap()],
    );
    assert_same_tree(&t2, &out);
    assert!(
        lab.path(&format!("state/tape-sets/{uuid}/copy-1.manifest.zst"))
            .exists(),
        "kept for the next restore"
    );
}

#[test]
fn a_set_manifest_split_across_two_tapes_is_described_joined_and_read_back() {
    // Cartridges whose index partition holds the index of 16,000 files.
    let lab = Lab::new(3, 1024, "");
    let t = lab.path("tree");
    make_tree(&t, 16_000, 0, 0);
    lab.snapshot("home", "20261201T020000Z", &t);
    // Early warning just past the files' bytes on RV0001L6's data partition: the set manifest
    // (more than one 512 KiB record for 16,000 files) begins on it and ends on the next tape.
    let mut data = 0u64;
    let mut stack = vec![t.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                data += md.len();
            }
        }
    }
    let fault = format!(
        r#"{{"kind": "early_warning_at", "barcode": "RV0001L6", "partition": 1, "bytes": {}}}"#,
        data + (256 << 10)
    );
    ok(&lab.config, &["vtl", "fault", &fault]);
    // And the next tape fails its first data writes, where the rest of the manifest goes: the
    // copy goes on to a third tape from the same manifest bytes.
    for block in 7..40 {
        ok(
            &lab.config,
            &[
                "vtl",
                "fault",
                &format!(
                    r#"{{"kind":"medium_error","barcode":"RV0002L6","partition":1,"block":{block},"on":"write"}}"#
                ),
            ],
        );
    }
    let r = json(&lab.config, &["set", "write", "home", "--drive", "0"]);
    let uuid = r["set"].as_str().unwrap().to_string();
    assert_eq!(r["copies"][0]["damaged"][0]["barcode"], "RV0002L6", "{r}");
    let tapes: Vec<&str> = r["copies"][0]["tapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["barcode"].as_str().unwrap())
        .collect();
    assert_eq!(tapes, ["RV0001L6", "RV0003L6"], "{r}");

    // The descriptions: where the manifest breaks, in bytes of the manifest.
    let manifest = format!("/.rackvault/sets/{uuid}/manifest.zst");
    let got = lab.path("from-tape");
    let mut described = Vec::new();
    for (seq, barcode) in tapes.iter().enumerate() {
        let seq = seq + 1;
        ok(&lab.config, &["load", barcode, "--drive", "0"]);
        let dir = got.join(barcode);
        ok(
            &lab.config,
            &[
                "ltfs",
                "get",
                &format!("/.rackvault/sets/{uuid}/tape-{seq:04}.json"),
                &manifest,
                "--to",
                dir.to_str().unwrap(),
            ],
        );
        ok(&lab.config, &["unload", "--drive", "0"]);
        let d: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("tape-{seq:04}.json"))).unwrap(),
        )
        .unwrap();
        described.push((d, std::fs::read(dir.join("manifest.zst")).unwrap()));
    }
    let head = described[0].1.len() as u64;
    assert!(head > 0, "a piece of the manifest is on the first tape");
    assert_eq!(
        described[0].0["continues_on_next"],
        serde_json::json!({"tape_path": manifest, "offset": head}),
        "{}",
        described[0].0
    );
    assert_eq!(
        described[1].0["continued_from_previous"],
        serde_json::json!({"tape_path": manifest, "offset": head}),
        "{}",
        described[1].0
    );
    let joined = [described[0].1.clone(), described[1].1.clone()].concat();
    let local =
        std::fs::read(lab.path(&format!("state/tape-sets/{uuid}/copy-1.manifest.zst"))).unwrap();
    assert_eq!(joined, local, "the pieces joined are the manifest");

    // Without the state directory's manifests, a restore reads both pieces back from the tapes.
    std::fs::remove_dir_all(lab.path(&format!("state/tape-sets/{uuid}"))).unwrap();
    let out = lab.path("restored");
    ok(
        &lab.config,
        &[
            "restore",
            "home",
            "latest",
            "d03",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    assert_same_tree(&t.join("d03"), &out.join("d03"));
    let fetched =
        std::fs::read(lab.path(&format!("state/tape-sets/{uuid}/copy-1.manifest.zst"))).unwrap();
    assert_eq!(fetched, local);
}
