//! A tape's life through the real binaries, as the lab runs it: a backup job, a scheduled full tape
//! set in two copies, the second copy exported through the door and carried to the vault,
//! incrementals, expiry, the offsite tape recalled and put back through the door, and a new full set
//! written over it. The tape catalog is checked at each step.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Checkout, bash, scenario_target_dir};

const BUILD: Duration = Duration::from_secs(40 * 60);
const TOKEN: &str = "e2e-token-0123456789abcdef";

struct Lab {
    dir: PathBuf,
    config: PathBuf,
}

impl Lab {
    fn bin(name: &str) -> PathBuf {
        scenario_target_dir().join("release").join(name)
    }

    fn run(&self, bin: &str, args: &[&str]) -> std::process::Output {
        Command::new(Self::bin(bin))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir)
            .env("RACKVAULT_LOG", "warn")
            .output()
            .unwrap()
    }

    #[track_caller]
    fn ok(&self, bin: &str, args: &[&str]) -> String {
        let o = self.run(bin, args);
        assert!(
            o.status.success(),
            "{bin} {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    #[track_caller]
    fn json(&self, bin: &str, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(bin, &a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{bin} {args:?}: {e}: {out}"))
    }

    fn media(&self, barcode: &str) -> Value {
        let list = self.json("tapectl", &["media", "list"]);
        list.as_array()
            .unwrap()
            .iter()
            .find(|m| m["barcode"] == barcode)
            .unwrap_or_else(|| panic!("no {barcode} in {list}"))
            .clone()
    }

    fn sets(&self) -> Vec<Value> {
        self.json("tapectl", &["set", "list"])
            .as_array()
            .unwrap()
            .clone()
    }

    fn write_source(&self, name: &str, len: usize) {
        let p = self.dir.join("src").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        std::fs::write(p, data).unwrap();
    }

    /// The tape job's runs, newest first.
    fn tape_runs(&self) -> Vec<Value> {
        let runs = self.json("backupd", &["runs", "--limit", "100"]);
        runs.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["job"] == "to-tape")
            .cloned()
            .collect()
    }

    /// Waits for the tape job's run `pick` finds to finish successfully; returns it.
    fn wait_tape_run(&self, what: &str, pick: impl Fn(&[Value]) -> Option<Value>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(r) = pick(&self.tape_runs())
                && !matches!(r["status"].as_str(), Some("queued" | "running"))
            {
                assert_eq!(r["status"], "succeeded", "{what}: {r}");
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no run in 5 min: {:?}",
                self.tape_runs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

struct Daemon {
    child: Child,
    base: String,
}

impl Daemon {
    fn start(lab: &Lab) -> Daemon {
        let child = Command::new(Lab::bin("backupd"))
            .arg("--config")
            .arg(&lab.config)
            .arg("serve")
            .current_dir(&lab.dir)
            .env("RACKVAULT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(lab.dir.join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(lab.dir.join("state/daemon.json"))
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["pid"].as_u64() == Some(child.id() as u64)
            {
                let base = format!("http://{}", v["listen"].as_str().unwrap());
                return Daemon { child, base };
            }
            assert!(Instant::now() < deadline, "the daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Queues a run of `job` through the API.
    fn trigger(&self, job: &str) {
        let o = Command::new("curl")
            .args(["-sS", "--fail-with-body", "-X", "POST"])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg(format!("{}/api/v1/jobs/{job}/run", self.base))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "trigger {job}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// `date` in the shell, formatted (local time for cron, UTC for `--at`).
fn date(args: &[&str]) -> String {
    let o = Command::new("date").args(args).output().unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn tapes_of(set: &Value, copy: usize) -> Vec<String> {
    set["copies"][copy]["tapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["barcode"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn backup_full_offsite_incrementals_expiry_recall_and_reuse() {
    // The release binaries, built where the README's scenarios build them (shared, so built once).
    let co = Checkout::new("readme");
    let env = [("CARGO_TARGET_DIR", scenario_target_dir())];
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    bash(
        &co.dir,
        &env,
        "cargo build --release --locked -p backupd -p tapectl",
        BUILD,
    )
    .ok("building the release binaries");

    let dir = co.scratch.path().join("lab");
    std::fs::create_dir_all(&dir).unwrap();
    let lab = Lab {
        config: dir.join("rackvault.toml"),
        dir,
    };
    let write_config = |full: &str| {
        std::fs::write(
            &lab.config,
            format!(
                r#"state_dir = "state"
[store]
kind = "dir"
path = "store"
[serve]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[[job]]
name = "home"
source = "src"
[library]
transport = "virtual"
dir = "vtl"
lock_dir = "locks"
[[pool]]
name = "monthly"
barcodes = ["RV*"]
allocation = "new"
retention = {{ full_days = 30, incremental_days = 7 }}
[rotation]
vaults = ["parents-house"]
offsite = [{{ kind = "full", copy = 2, vault = "parents-house" }}]
keep_offsite_fulls = 1
[[tape_job]]
name = "to-tape"
jobs = ["home"]
pool = "monthly"
full = "{full}"
full_copies = 2
wait_for_tape = "2m"
"#
            ),
        )
        .unwrap();
    };
    write_config("0 0 4 1 * *");
    lab.ok(
        "tapectl",
        &[
            "vtl",
            "create",
            "--capacity-mb",
            "64",
            "--barcodes",
            "RV0001L6,RV0002L6,RV0003L6,RV0004L6,CLN001L1",
        ],
    );
    for i in 0..30 {
        lab.write_source(&format!("d{}/f{i}.dat", i % 3), 10_000 + i * 777);
    }
    // The first backup, before the daemon (which would otherwise take it over).
    lab.ok("backupd", &["run", "home"]);

    // 1. The full set comes from the tape job's schedule: 20 seconds from now, local time.
    let at = date(&["-d", "+20 seconds", "+%-S %-M %-H"]);
    write_config(&format!("{at} * * *"));
    let d = Daemon::start(&lab);
    let full_run = lab.wait_tape_run("the scheduled full set", |runs| {
        runs.iter().find(|r| r["trigger"] == "schedule").cloned()
    });
    assert_eq!(full_run["stats"]["sets"][0]["kind"], "full", "{full_run}");
    let sets = lab.sets();
    assert_eq!(sets.len(), 1, "{sets:?}");
    let full = &sets[0];
    assert_eq!(full["set"]["kind"], "full");
    assert_eq!(full["set"]["state"], "complete");
    let (keep, offsite) = (tapes_of(full, 0), tapes_of(full, 1));
    assert_eq!((keep.len(), offsite.len()), (1, 1), "{full}");
    assert_ne!(keep, offsite, "copies on distinct tapes");
    let away = offsite[0].clone();
    let old_volume = lab.media(&away)["volume_uuid"].clone();

    // 2. The offsite copy goes out through the door and reaches the vault.
    let plan = lab.json("tapectl", &["rotation", "plan"]);
    assert_eq!(
        plan["export"]["parents-house"][0]["barcode"],
        away.as_str(),
        "{plan}"
    );
    lab.json(
        "tapectl",
        &["rotation", "export", "--vault", "parents-house"],
    );
    assert_eq!(lab.media(&away)["location"]["kind"], "import-export");
    lab.ok("tapectl", &["vtl", "remove", &away]);
    assert_eq!(
        lab.media(&away)["location"],
        serde_json::json!({"kind": "in-transit-to", "at": "parents-house"})
    );
    lab.ok("tapectl", &["rotation", "arrived", "parents-house", &away]);
    assert_eq!(
        lab.media(&away)["location"],
        serde_json::json!({"kind": "vault", "at": "parents-house"})
    );
    let plan = lab.json("tapectl", &["rotation", "plan"]);
    assert_eq!(plan["offsite_fulls"], 1, "{plan}");
    assert_eq!(plan["alerts"], serde_json::json!([]), "{plan}");

    // 3. Two days of changes: each backup then an incremental set (one copy).
    for day in 0..2 {
        lab.write_source(&format!("d0/day{day}.dat"), 5_000 + day);
        lab.ok("backupd", &["run", "home"]);
        let before = lab.tape_runs().len();
        d.trigger("to-tape");
        let r = lab.wait_tape_run("an incremental set", |runs| {
            (runs.len() > before).then(|| runs[0].clone())
        });
        assert_eq!(r["stats"]["sets"][0]["kind"], "incremental", "{r}");
        assert_eq!(r["stats"]["sets"][0]["files"], 1, "{r}");
    }
    let sets = lab.sets();
    let kinds: Vec<&str> = sets
        .iter()
        .map(|s| s["set"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["full", "incremental", "incremental"]);
    assert!(sets.iter().all(|s| s["set"]["state"] == "complete"));
    assert_eq!(sets[1]["copies"].as_array().unwrap().len(), 1);

    // 4. Forty days on, everything has expired: the sets and every tape that holds them.
    let later = date(&["-u", "-d", "+40 days", "+%Y-%m-%dT%H:%M:%SZ"]);
    let r = lab.json("tapectl", &["media", "expire", "--at", &later]);
    assert_eq!(r["sets"].as_array().unwrap().len(), 3, "{r}");
    assert!(lab.sets().iter().all(|s| s["set"]["state"] == "expired"));
    assert_eq!(lab.media(&away)["state"], "expired");

    // 5. The expired offsite tape is recalled and comes back through the door.
    let recall = lab.json("tapectl", &["rotation", "recall"]);
    assert_eq!(
        recall["parents-house"][0]["barcode"],
        away.as_str(),
        "{recall}"
    );
    assert_eq!(
        lab.media(&away)["location"],
        serde_json::json!({"kind": "in-transit-from", "at": "parents-house"})
    );
    lab.ok("tapectl", &["vtl", "insert", &away]);
    lab.ok("tapectl", &["import"]);
    assert_eq!(lab.media(&away)["location"]["kind"], "slot");

    // 6. The next run owes a full set (none is left); it goes on expired tapes, the returned one
    // among them: a new LTFS volume, the old sets gone from the catalog.
    lab.write_source("d1/after.dat", 7_000);
    lab.ok("backupd", &["run", "home"]);
    let before = lab.tape_runs().len();
    d.trigger("to-tape");
    let r = lab.wait_tape_run("the full set on returned tapes", |runs| {
        (runs.len() > before).then(|| runs[0].clone())
    });
    assert_eq!(r["stats"]["sets"][0]["kind"], "full", "{r}");
    let sets = lab.sets();
    assert_eq!(sets.len(), 1, "the expired sets left the catalog: {sets:?}");
    let tapes = [tapes_of(&sets[0], 0), tapes_of(&sets[0], 1)].concat();
    assert!(tapes.contains(&away), "{away} is written again: {tapes:?}");
    let m = lab.media(&away);
    assert_eq!(m["state"], "writable", "{m}");
    assert_ne!(m["volume_uuid"], old_volume, "a new LTFS volume: {m}");
    let history = lab
        .json("tapectl", &["media", "history", &away])
        .to_string();
    for step in ["parents-house", "expired", "recalled"] {
        assert!(history.contains(step), "{step} in the history: {history}");
    }
    drop(d);
}
