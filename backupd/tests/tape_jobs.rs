//! `[[tape_job]]` in `backupd serve` on the virtual library: a full set in two copies that waits
//! for a second tape (the API, an alert and a metric say what to insert; it goes on when the tape
//! is put into the door), then an incremental, then nothing when the snapshot is on tape already.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::daemon::*;
use support::{noise, write};

fn config() -> (Setup, Hook) {
    let hook = webhook_server();
    let jobs = format!(
        "[[job]]\nname = \"home\"\nsource = \"src\"\n\n\
         [library]\ntransport = \"virtual\"\ndir = \"vtl\"\nlock_dir = \"locks\"\n\n\
         [[pool]]\nname = \"weekly\"\nbarcodes = [\"RV*\"]\n\n\
         [rotation]\nvaults = [\"parents-house\"]\noffsite = [{{ kind = \"full\", copy = 2, vault = \"parents-house\" }}]\nkeep_offsite_fulls = 1\n\n\
         [[tape_job]]\nname = \"to-tape\"\njobs = [\"home\"]\npool = \"weekly\"\nfull_copies = 2\nwait_for_tape = \"10m\"\n\n\
         [[alert]]\nkind = \"webhook\"\nurl = \"{}\"\n",
        hook.url
    );
    (Setup::new("", &jobs), hook)
}

/// Polls the run until `ready` holds of it (bounded).
fn wait_until(d: &Daemon, id: i64, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = d.run(id);
        if ready(&v) {
            return v;
        }
        assert!(
            matches!(v["status"].as_str(), Some("queued" | "running")),
            "run {id} ended before {what}: {v}\n{}",
            d.log()
        );
        assert!(Instant::now() < deadline, "no {what}: {v}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_done(d: &Daemon, id: i64) -> Value {
    wait_until(d, id, "end", |v| {
        !matches!(v["status"].as_str(), Some("queued" | "running"))
    })
}

#[test]
fn a_tape_job_writes_full_and_incremental_sets_and_waits_for_a_tape_it_lacks() {
    let (s, hook) = config();
    for i in 0..20 {
        write(
            &s.path(&format!("src/d{}/f{i}.bin", i % 3)),
            &noise(20_000 + i * 500, i as u64),
        );
    }
    // One cartridge only: the full set's second copy has no tape.
    vtl::Library::create(
        &s.path("vtl"),
        &vtl::LibrarySpec {
            cartridge_capacity_mb: 64,
            barcodes: vec!["RV0001L6".into(), "CLN001L1".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let d = s.start();
    let (_, j) = d.get("/api/v1/jobs/to-tape");
    assert_eq!(j["kind"], "tape", "{j}");
    assert_eq!(j["tape"]["pool"], "weekly");
    assert_eq!(j["tape"]["full_copies"], 2);

    let id = d.trigger("home");
    assert_eq!(wait_done(&d, id)["status"], "succeeded");

    let id = d.trigger("to-tape");
    let v = wait_until(&d, id, "a wait for a tape", |v| {
        v["progress"]["waiting"].is_string()
    });
    let what = v["progress"]["waiting"].as_str().unwrap();
    assert!(
        what.contains("no writable tape of pool weekly") && what.contains("RV*"),
        "{what}"
    );
    let (_, j) = d.get("/api/v1/jobs/to-tape");
    assert_eq!(j["tape"]["waiting"], what, "{j}");
    let alert = hook.wait_for("attention", "to-tape");
    assert!(
        alert["message"].as_str().unwrap().contains("pool weekly"),
        "{alert}"
    );
    let (_, text) = d.get_text("/metrics");
    assert_eq!(
        metric(
            &parse_metrics(&text),
            "backupd_tape_job_waiting",
            "job=\"to-tape\""
        ),
        Some(1.0),
        "{text}"
    );

    // The operator puts a new cartridge into the door: the run takes it in and finishes.
    vtl::Library::open(&s.path("vtl"))
        .unwrap()
        .insert("RV0002L6", None, &vtl::CartridgeOptions::default())
        .unwrap();
    let v = wait_done(&d, id);
    assert_eq!(v["status"], "succeeded", "{v}\n{}", d.log());
    let set = &v["stats"]["sets"][0];
    assert_eq!(set["kind"], "full", "{v}");
    assert_eq!(set["job"], "home");
    let mut tapes: Vec<&str> = set["tapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    tapes.sort();
    assert_eq!(
        tapes,
        ["RV0001L6", "RV0002L6"],
        "two copies on two tapes: {v}"
    );
    assert!(v["progress"].is_null(), "{v}");
    // The daemon copied the catalogs after the run: the newest copy knows the set.
    let copies = s.path("state/catalog-backups");
    let mut names: Vec<String> = std::fs::read_dir(&copies)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let newest = copies.join(names.last().expect("a copy of the catalogs"));
    assert!(newest.join("catalog.sqlite").exists());
    let copy = tapectl::catalog::TapeCatalog::open(&newest).unwrap();
    let sets = copy.sets(None, None).unwrap();
    assert_eq!(sets.len(), 1, "{newest:?}");
    assert_eq!(sets[0].uuid, set["set"].as_str().unwrap());
    let (_, text) = d.get_text("/metrics");
    let ms = parse_metrics(&text);
    assert_eq!(
        metric(&ms, "backupd_tape_job_waiting", "job=\"to-tape\""),
        Some(0.0)
    );
    assert_eq!(
        metric(&ms, "backupd_last_run_success", "job=\"to-tape\""),
        Some(1.0)
    );

    // A new backup: the next run writes an incremental, one copy.
    write(&s.path("src/d0/new.bin"), &noise(30_000, 99));
    let id = d.trigger("home");
    assert_eq!(wait_done(&d, id)["status"], "succeeded");
    let v = wait_done(&d, d.trigger("to-tape"));
    assert_eq!(v["status"], "succeeded", "{v}");
    let set = &v["stats"]["sets"][0];
    assert_eq!(set["kind"], "incremental", "{v}");
    assert_eq!(set["files"], 1, "only the new file: {v}");
    assert_eq!(set["tapes"].as_array().unwrap().len(), 1);

    // Nothing new: nothing written, and the run says why.
    let v = wait_done(&d, d.trigger("to-tape"));
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["stats"]["sets"], serde_json::json!([]));
    assert!(
        v["stats"]["skipped"][0]["why"]
            .as_str()
            .unwrap()
            .contains("on tape already"),
        "{v}"
    );
    let (_, runs) = d.get("/api/v1/runs?job=to-tape&limit=3");
    assert_eq!(runs.as_array().unwrap().len(), 3, "{runs}");
    // The rotation policy wants a full set offsite and none is: a person is told.
    let a = hook.wait_for_message("attention", "tape library", "the policy wants 1");
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains("0 full set(s) offsite"),
        "{a}"
    );

    // Between jobs, a drive asking for cleaning is cleaned with the library's cleaner...
    let lib = vtl::Library::open(&s.path("vtl")).unwrap();
    lib.set_fault(vtl::Fault::NeedsCleaning { drive: 1 })
        .unwrap();
    assert_eq!(wait_done(&d, d.trigger("to-tape"))["status"], "succeeded");
    let (_, text) = d.get_text("/metrics");
    let ms = parse_metrics(&text);
    assert_eq!(
        metric(
            &ms,
            "rackvault_cleaning_cartridge_uses_left",
            "barcode=\"CLN001L1\""
        ),
        Some(49.0),
        "{text}"
    );
    assert_eq!(
        metric(&ms, "rackvault_drives_needing_cleaning", ""),
        Some(0.0)
    );
    // ...and when the cleaner is used up, the drive waits for a new one and a person is told.
    tapectl::catalog::TapeCatalog::open(&s.path("state"))
        .unwrap()
        .cleaner_used_up("CLN001L1")
        .unwrap();
    lib.set_fault(vtl::Fault::NeedsCleaning { drive: 1 })
        .unwrap();
    assert_eq!(wait_done(&d, d.trigger("to-tape"))["status"], "succeeded");
    let a = hook.wait_for_message("attention", "tape library", "drive 1 asks for cleaning");
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains("insert a new CLN cartridge"),
        "{a}"
    );
    hook.wait_for_message("attention", "tape library", "CLN001L1 is used up");
    let (_, text) = d.get_text("/metrics");
    assert_eq!(
        metric(
            &parse_metrics(&text),
            "rackvault_drives_needing_cleaning",
            ""
        ),
        Some(1.0)
    );
    let (status, _, log) = d.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn a_tape_job_naming_an_unknown_job_or_too_few_offsite_copies_is_refused() {
    let base = "[[job]]\nname = \"home\"\nsource = \"src\"\n[rotation]\nvaults = [\"v\"]\noffsite = [{ kind = \"full\", copy = 2, vault = \"v\" }]\n";
    for (tape_job, expect) in [
        (
            "[[tape_job]]\nname = \"t\"\njobs = [\"nope\"]\nfull_copies = 2\n",
            "no backup job named \"nope\"",
        ),
        (
            "[[tape_job]]\nname = \"t\"\njobs = [\"home\"]\n",
            "sends copy 2 of full sets to vault \"v\", but this job writes 1 copy(ies) of them; set full_copies = 2",
        ),
        (
            "[[tape_job]]\nname = \"home\"\njobs = [\"home\"]\nfull_copies = 2\n",
            "the name is taken",
        ),
    ] {
        let s = Setup::new("", &format!("{base}{tape_job}"));
        let o = s.cli(&["check-config"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{tape_job}");
        assert!(err.contains(expect), "{tape_job}: {err}");
        assert!(err.contains("rackvault.toml:"), "names file:line: {err}");
    }
}

#[test]
fn backupd_run_runs_a_tape_job_itself_or_hands_it_to_the_daemon() {
    let (s, _hook) = config();
    write(&s.path("src/a.bin"), &noise(40_000, 1));
    vtl::Library::create(
        &s.path("vtl"),
        &vtl::LibrarySpec {
            cartridge_capacity_mb: 64,
            barcodes: vec!["RV0001L6".into(), "RV0002L6".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let ok = |args: &[&str]| {
        let o = s.cli(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let out = ok(&["check-config"]);
    assert!(out.contains("OK (1 job(s), 1 tape job(s))"), "{out}");
    ok(&["run", "home"]);
    let out = ok(&["run", "to-tape"]);
    assert!(
        out.starts_with("to-tape: full set ") && out.contains(" of home "),
        "{out}"
    );
    // The two copies' writers take tapes as they come: either copy may have either tape.
    assert!(
        out.contains("on tapes RV0001L6 | RV0002L6")
            || out.contains("on tapes RV0002L6 | RV0001L6"),
        "{out}"
    );
    let runs: Value = serde_json::from_str(&ok(&["--json", "runs", "to-tape"])).unwrap();
    assert_eq!(runs[0]["trigger"], "cli", "{runs}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");

    let d = s.start();
    let o = s.cli(&["run", "to-tape"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert!(err.contains("handed to backupd serve"), "{err}");
    assert!(
        out.contains("nothing written for home") && out.contains("on tape already"),
        "{out}"
    );
    drop(d);
}
