//! Consistency providers on real components: hooks (sh), zfs-snapshot (a zfs-fuse pool named by
//! RACKVAULT_TEST_ZPOOL, as root) and btrfs-snapshot (a loop-mounted btrfs image, as root).
//! Missing components fail the tests with a message; nothing is skipped.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::*;

// ---------------------------------------------------------------- hooks

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

fn hooks_toml(pre: Option<&str>, post: Option<&str>, timeout: &str) -> String {
    let mut s = "\n[job.hooks]\n".to_string();
    if let Some(p) = pre {
        s += &format!("pre = {}\n", toml_str(p));
    }
    if let Some(p) = post {
        s += &format!("post = {}\n", toml_str(p));
    }
    s += &format!("timeout = \"{timeout}\"\n");
    s
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap() // a JSON string is a valid TOML basic string
}

fn env_file(p: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("hook did not write {}: {e}", p.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn hooks_pre_output_is_in_the_snapshot_and_env_is_passed() {
    let tmp = tempfile::tempdir().unwrap();
    let (pre_env, post_env) = (tmp.path().join("pre.env"), tmp.path().join("post.env"));
    let pre = format!(
        "echo made-by-pre > \"$RACKVAULT_SOURCE/from-pre.txt\"; env | grep ^RACKVAULT_ > {}",
        sh_quote(&pre_env)
    );
    let post = format!("env | grep ^RACKVAULT_ > {}", sh_quote(&post_env));
    let env = Env::dir_store(&format!(
        "\n[job.consistency]\nkind = \"hooks\"\n{}",
        hooks_toml(Some(&pre), Some(&post), "30s")
    ));
    write(&env.source.join("a.txt"), b"a");
    let s = env.backup();
    let snap = s["snapshot"].as_str().unwrap().to_string();
    let out = env.path("restored");
    env.ok(&["restore", "j", "latest", "--to", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(out.join("from-pre.txt")).unwrap(),
        b"made-by-pre\n"
    );
    let source = std::fs::canonicalize(&env.source).unwrap();
    let pre = env_file(&pre_env);
    assert_eq!(pre["RACKVAULT_HOOK"], "pre");
    assert_eq!(pre["RACKVAULT_JOB"], "j");
    assert_eq!(pre["RACKVAULT_SNAPSHOT"], snap);
    assert_eq!(pre["RACKVAULT_RUN_ID"], s["run_id"].to_string());
    assert_eq!(
        std::fs::canonicalize(&pre["RACKVAULT_SOURCE"]).unwrap(),
        source
    );
    assert!(!pre.contains_key("RACKVAULT_OUTCOME"), "{pre:?}");
    assert!(!pre.contains_key("RACKVAULT_VIEW"), "{pre:?}");
    let post = env_file(&post_env);
    assert_eq!(post["RACKVAULT_HOOK"], "post");
    assert_eq!(post["RACKVAULT_SNAPSHOT"], snap);
    assert_eq!(post["RACKVAULT_OUTCOME"], "succeeded");
    // Reading the live tree: the view is the source.
    assert_eq!(
        std::fs::canonicalize(&post["RACKVAULT_VIEW"]).unwrap(),
        source
    );
}

#[test]
fn hooks_failing_pre_fails_the_run_and_post_still_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let outcome = tmp.path().join("outcome");
    let post = format!("printf %s \"$RACKVAULT_OUTCOME\" > {}", sh_quote(&outcome));
    let env = Env::dir_store(&format!(
        "\n[job.consistency]\nkind = \"hooks\"\n{}",
        hooks_toml(
            Some("echo first line >&2; echo cannot freeze the app >&2; exit 7"),
            Some(&post),
            "30s"
        )
    ));
    write(&env.source.join("a.txt"), b"a");
    let o = env.run(&["run", "j"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pre hook"), "{err}");
    assert!(err.contains("exited with status 7"), "{err}");
    assert!(err.contains("cannot freeze the app"), "{err}");
    assert!(err.contains("no snapshot was made"), "{err}");
    assert!(env.snapshots().is_empty());
    assert_eq!(std::fs::read_to_string(&outcome).unwrap(), "failed");
    let runs = env.json(&["runs", "j"]);
    assert_eq!(runs[0]["status"], "failed", "{runs}");
    assert!(
        runs[0]["error"].as_str().unwrap().contains("pre hook"),
        "{runs}"
    );
}

fn process_gone(pid: i32) -> bool {
    // A zombie waiting for a reaper counts as gone: it runs no more.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn hooks_timeout_kills_the_hook_and_its_children() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    let pre = format!("sleep 100 & echo $! > {}; sleep 100", sh_quote(&pids));
    let env = Env::dir_store(&format!(
        "\n[job.consistency]\nkind = \"hooks\"\n{}",
        hooks_toml(Some(&pre), None, "1s")
    ));
    write(&env.source.join("a.txt"), b"a");
    let t = Instant::now();
    let o = env.run(&["run", "j"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(took < Duration::from_secs(20), "the run took {took:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pre hook"), "{err}");
    assert!(err.contains("timed out after 1 s"), "{err}");
    assert!(env.snapshots().is_empty());
    let bg: i32 = std::fs::read_to_string(&pids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_gone(bg) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        process_gone(bg),
        "the hook's background child {bg} survived"
    );
}

#[test]
fn hooks_failing_post_is_a_warning_on_a_successful_run() {
    let env = Env::dir_store(&format!(
        "\n[job.consistency]\nkind = \"hooks\"\n{}",
        hooks_toml(None, Some("echo could not thaw >&2; exit 4"), "30s")
    ));
    write(&env.source.join("a.txt"), b"a");
    let s = env.backup();
    let warnings = s["stats"]["warnings"].to_string();
    assert!(warnings.contains("post hook"), "{warnings}");
    assert!(warnings.contains("exited with status 4"), "{warnings}");
    assert!(warnings.contains("could not thaw"), "{warnings}");
    assert_eq!(env.snapshots().len(), 1);
}

// ---------------------------------------------------------------- zfs-snapshot

/// All zfs tests use job `j`, whose clones share `<pool>/rackvault-views`: one at a time, so
/// one test's leftover cleaning does not take another's clones.
static ZFS_LOCK: Mutex<()> = Mutex::new(());

fn zfs_lock() -> std::sync::MutexGuard<'static, ()> {
    ZFS_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Snapshots and clones of job `j` that the provider made (none may survive a run).
fn zfs_leftovers(parent: &str) -> Vec<String> {
    let mut out: Vec<String> = zfs(&["list", "-H", "-t", "snapshot", "-o", "name", "-r", parent])
        .lines()
        .filter(|l| l.contains("@rackvault-j-"))
        .map(String::from)
        .collect();
    let container = format!("{}/rackvault-views", test_pool());
    if Command::new("zfs")
        .args(["list", &container])
        .output()
        .unwrap()
        .status
        .success()
    {
        out.extend(
            zfs(&["list", "-H", "-o", "name,origin", "-r", &container])
                .lines()
                .filter(|l| l.contains(&format!("{parent}/")))
                .map(String::from),
        );
    }
    out
}

/// A source tree on ZFS: dataset `a` at `<tmp>/src`, its child `a/child` at `src/child`, and
/// dataset `b` elsewhere.
struct ZfsSource {
    env: Env,
    parent: Parent,
    a: String,
    child: String,
    b: String,
}

fn zfs_source(store_toml: Option<String>, consistency: &str, extra: &str) -> ZfsSource {
    let parent = Parent::new("cs", false);
    let env = match store_toml {
        Some(s) => Env::new(&s, ""),
        None => Env::dir_store(""),
    };
    std::fs::remove_dir(&env.source).unwrap();
    let a = parent.child("a", Some(&env.source));
    let child = parent.child("a/child", None);
    let b = parent.child("b", Some(&env.path("other")));
    write(&env.source.join("file.txt"), b"original\n");
    write(&env.source.join("big.bin"), &noise(2 << 20, 3));
    write(
        &env.source.join("child/data.txt"),
        b"in the child dataset\n",
    );
    write(&env.path("other/b.txt"), b"not under the source\n");
    let config = std::fs::read_to_string(&env.config).unwrap();
    let consistency = consistency
        .replace("@A", &a)
        .replace("@B", &b)
        .replace("@CHILD", &child);
    std::fs::write(
        &env.config,
        format!("{config}cross_filesystems = true\n\n[job.consistency]\n{consistency}\n{extra}"),
    )
    .unwrap();
    ZfsSource {
        env,
        parent,
        a,
        child,
        b,
    }
}

fn load_job(config: &Path) -> backupd::config::Config {
    backupd::config::Config::load(config).unwrap()
}

#[test]
fn zfs_snapshot_takes_datasets_atomically_and_reads_through_clones() {
    let _l = zfs_lock();
    let z = zfs_source(
        None,
        "kind = \"zfs-snapshot\"\ndatasets = [\"@A\", \"@B\"]\nrecursive = true",
        "",
    );
    let cfg = load_job(&z.env.config);
    let job = cfg.job("j").unwrap();
    let progress = backupd::progress::Progress::new(false);
    let ctx = backupd::consistency::Context {
        job,
        snapshot: "20261125T010203Z",
        state_dir: &cfg.state_dir,
        progress: &progress,
    };
    let view = backupd::consistency::prepare(&ctx).unwrap();
    let snap = "rackvault-j-20261125T010203Z";
    // One transaction group: one atomic snapshot of a, a/child and b.
    let txgs: Vec<String> = [&z.a, &z.child, &z.b]
        .iter()
        .map(|d| {
            zfs(&[
                "get",
                "-Hp",
                "-o",
                "value",
                "createtxg",
                &format!("{d}@{snap}"),
            ])
        })
        .collect();
    assert!(
        txgs.iter().all(|t| t == &txgs[0]),
        "snapshots in different txgs: {txgs:?}"
    );
    for d in [&z.a, &z.child, &z.b] {
        assert_eq!(
            zfs(&[
                "get",
                "-H",
                "-o",
                "value",
                "rackvault:view",
                &format!("{d}@{snap}")
            ])
            .trim(),
            "j"
        );
    }
    // No snapshot of the common parent was kept (zfs-fuse's one-operand fallback).
    assert!(
        !zfs(&[
            "list",
            "-H",
            "-t",
            "snapshot",
            "-o",
            "name",
            "-r",
            &z.parent.0
        ])
        .contains(&format!("{}@", z.parent.0))
    );
    assert!(view.point_in_time);
    assert!(
        view.root.starts_with(cfg.state_dir.join("views/j")),
        "{}",
        view.root.display()
    );
    assert_eq!(
        std::fs::read(view.root.join("file.txt")).unwrap(),
        b"original\n"
    );
    assert_eq!(
        std::fs::read(view.root.join("child/data.txt")).unwrap(),
        b"in the child dataset\n"
    );
    // The clones are read-only, and later writes to the source do not show.
    write(&z.env.source.join("file.txt"), b"changed\n");
    assert_eq!(
        std::fs::read(view.root.join("file.txt")).unwrap(),
        b"original\n"
    );
    assert!(std::fs::write(view.root.join("new"), b"x").is_err());
    // Two mounts (a and a/child), each mapped to a stable id; b is snapshotted but not read.
    assert_eq!(view.device_ids.len(), 2, "{:?}", view.device_ids);
    assert!(
        view.warnings
            .iter()
            .any(|w| w.contains(&z.b) && w.contains("not read")),
        "{:?}",
        view.warnings
    );
    let errors = view.release();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(zfs_leftovers(&z.parent.0), Vec::<String>::new());
    assert!(!cfg.state_dir.join("views/j").exists());
}

#[test]
fn zfs_snapshot_backup_is_point_in_time_incremental_and_leaves_nothing() {
    let _l = zfs_lock();
    let tmp = tempfile::tempdir().unwrap();
    let once = tmp.path().join("once");
    let view_seen = tmp.path().join("view");
    // The post hook runs as soon as the view exists: its writes must not reach this snapshot.
    let post = format!(
        "printf %s \"$RACKVAULT_VIEW\" > {seen}; if [ ! -e {once} ]; then touch {once}; \
         echo changed > \"$RACKVAULT_SOURCE/file.txt\"; echo new > \"$RACKVAULT_SOURCE/child/new.txt\"; fi",
        seen = sh_quote(&view_seen),
        once = sh_quote(&once)
    );
    let z = zfs_source(
        None,
        "kind = \"zfs-snapshot\"\ndatasets = [\"@A\"]",
        &hooks_toml(None, Some(&post), "30s"),
    );
    let env = &z.env;
    let s1 = env.backup();
    assert!(
        s1["stats"]["bytes_read"].as_u64().unwrap() > 2_000_000,
        "{s1}"
    );
    let out = env.path("restored1");
    env.ok(&["restore", "j", "latest", "--to", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("file.txt")).unwrap(), b"original\n");
    assert_eq!(
        std::fs::read(out.join("child/data.txt")).unwrap(),
        b"in the child dataset\n"
    );
    assert!(
        !out.join("child/new.txt").exists(),
        "a write after the snapshot leaked in"
    );
    assert_eq!(
        std::fs::read(out.join("big.bin")).unwrap(),
        noise(2 << 20, 3)
    );
    let seen = std::fs::read_to_string(&view_seen).unwrap();
    assert!(seen.contains("views/j"), "RACKVAULT_VIEW = {seen}");
    assert_eq!(zfs_leftovers(&z.parent.0), Vec::<String>::new());
    assert!(!env.path("state/views/j").exists());

    // The next run sees the post hook's writes; big.bin is recognised as unchanged.
    let s2 = env.backup();
    let read2 = s2["stats"]["bytes_read"].as_u64().unwrap();
    assert!(read2 > 0 && read2 < 1000, "{s2}");
    let out = env.path("restored2");
    env.ok(&["restore", "j", "latest", "--to", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("file.txt")).unwrap(), b"changed\n");
    assert_eq!(std::fs::read(out.join("child/new.txt")).unwrap(), b"new\n");

    // Nothing changed: clones keep inode numbers and ctimes, and the stable device ids make the
    // fast path recognise every file without reading it.
    let s3 = env.backup();
    assert_eq!(s3["stats"]["bytes_read"], 0, "{s3}");
    assert_eq!(s3["stats"]["new_files"], 0, "{s3}");
    assert_eq!(s3["stats"]["changed_files"], 0, "{s3}");
    assert_eq!(zfs_leftovers(&z.parent.0), Vec::<String>::new());
}

#[test]
fn zfs_snapshot_never_backs_up_the_state_or_store_inside_the_source() {
    let _l = zfs_lock();
    let z = zfs_source(None, "kind = \"zfs-snapshot\"\ndatasets = [\"@A\"]", "");
    let env = &z.env;
    // Both inside the snapshotted dataset: through the clone they have other (device, inode)s.
    let cfg = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("state_dir = \"state\"", "state_dir = \"src/state\"")
        .replace("path = \"store\"", "path = \"src/store\"");
    std::fs::write(&env.config, cfg).unwrap();
    env.backup();
    // The second run's view holds the first run's snapshot and catalog.
    env.backup();
    let ls = env.json(&["ls", "j", "latest", "-R"]);
    let paths: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"file.txt"), "{paths:?}");
    assert!(
        paths
            .iter()
            .all(|p| !p.starts_with("state") && !p.starts_with("store")),
        "{paths:?}"
    );
    assert_eq!(zfs_leftovers(&z.parent.0), Vec::<String>::new());
}

#[test]
fn zfs_snapshot_leaves_nothing_when_the_run_fails() {
    let _l = zfs_lock();
    // A ZFS store whose parent dataset does not exist fails after the view was taken.
    let missing = format!("{}/no-such-parent-{}", test_pool(), std::process::id());
    let z = zfs_source(
        Some(format!("kind = \"zfs\"\nparent = \"{missing}\"")),
        "kind = \"zfs-snapshot\"\ndatasets = [\"@A\"]",
        "",
    );
    let o = z.env.run(&["run", "j"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(zfs_leftovers(&z.parent.0), Vec::<String>::new());
    assert!(!z.env.path("state/views/j").exists());
}

#[test]
fn zfs_snapshot_undoes_its_snapshot_when_the_source_is_not_covered() {
    let _l = zfs_lock();
    // Only `b` is snapshotted, and the source is not in it: prepare fails after the snapshot.
    let z = zfs_source(None, "kind = \"zfs-snapshot\"\ndatasets = [\"@B\"]", "");
    let o = z.env.run(&["run", "j"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is not inside any of its snapshotted datasets"),
        "{err}"
    );
    assert!(err.contains("add the dataset that holds it"), "{err}");
    assert_eq!(zfs_leftovers(&z.parent.0), Vec::<String>::new());
    assert!(z.env.snapshots().is_empty());
}

#[test]
fn zfs_snapshot_cleans_what_a_killed_run_left() {
    let _l = zfs_lock();
    let tmp = tempfile::tempdir().unwrap();
    let (once, hook_pid) = (tmp.path().join("once"), tmp.path().join("hookpid"));
    // The first run stops in its post hook, with the view in place, and is killed there.
    let post = format!(
        "if [ ! -e {once} ]; then echo $$ > {pid}; touch {once}; sleep 60; fi",
        once = sh_quote(&once),
        pid = sh_quote(&hook_pid)
    );
    let z = zfs_source(
        None,
        "kind = \"zfs-snapshot\"\ndatasets = [\"@A\"]",
        &hooks_toml(None, Some(&post), "120s"),
    );
    let mut child = z
        .env
        .cmd(&["run", "j"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hook_pid.exists()
        || std::fs::read_to_string(&hook_pid)
            .unwrap()
            .trim()
            .is_empty()
    {
        assert!(Instant::now() < deadline, "the post hook never started");
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the run ended ({s}) before its post hook started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The hook's own process group (it is not killed with backupd).
    let pgid: i32 = std::fs::read_to_string(&hook_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let left = zfs_leftovers(&z.parent.0);
    // a@, a/child@ and their two clones.
    assert_eq!(
        left.len(),
        4,
        "expected the killed run's snapshots and clones: {left:?}"
    );

    let s = z.env.backup();
    assert!(s["stats"]["bytes_read"].as_u64().unwrap() > 0);
    assert_eq!(zfs_leftovers(&z.parent.0), Vec::<String>::new());
    assert!(!z.env.path("state/views/j").exists());
    let runs = z.env.json(&["runs", "j"]);
    assert!(runs.to_string().contains("interrupted"), "{runs}");
}

// ---------------------------------------------------------------- btrfs-snapshot

/// A loop-mounted btrfs image, unmounted when dropped (the loop device goes with it).
struct Btrfs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Btrfs {
    fn new() -> Btrfs {
        assert!(
            is_root(),
            "the btrfs-snapshot tests need root (mkfs.btrfs, mount -o loop); run them as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("btrfs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        run_ok("mkfs.btrfs", &["-q".as_ref(), img.as_os_str()]);
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        run_ok(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                img.as_os_str(),
                mnt.as_os_str(),
            ],
        );
        Btrfs { _dir: dir, mnt }
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn run_ok(prog: &str, args: &[&std::ffi::OsStr]) -> String {
    let o = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog} (install btrfs-progs / util-linux): {e}"));
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn btrfs_snapshot_backup_is_point_in_time_and_incremental() {
    let fs = Btrfs::new();
    let vol = fs.mnt.join("vol");
    run_ok(
        "btrfs",
        &["subvolume".as_ref(), "create".as_ref(), vol.as_os_str()],
    );
    let data = vol.join("data");
    write(&data.join("file.txt"), b"original\n");
    write(&data.join("big.bin"), &noise(2 << 20, 4));
    write(
        &vol.join("outside-source.txt"),
        b"in the subvolume, not in the source\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    let once = tmp.path().join("once");
    let post = format!(
        "if [ ! -e {once} ]; then touch {once}; echo changed > \"$RACKVAULT_SOURCE/file.txt\"; \
         echo new > \"$RACKVAULT_SOURCE/new.txt\"; fi",
        once = sh_quote(&once)
    );
    let env = Env::dir_store("");
    let config = std::fs::read_to_string(&env.config).unwrap().replace(
        "source = \"src\"",
        &format!("source = {}", toml_str(&data.display().to_string())),
    );
    std::fs::write(
        &env.config,
        format!(
            "{config}\n[job.consistency]\nkind = \"btrfs-snapshot\"\nsubvolume = {}\n{}",
            toml_str(&vol.display().to_string()),
            hooks_toml(None, Some(&post), "30s")
        ),
    )
    .unwrap();
    let snapdir = fs.mnt.join(".rackvault-snapshots");

    let s1 = env.backup();
    assert!(
        s1["stats"]["bytes_read"].as_u64().unwrap() > 2_000_000,
        "{s1}"
    );
    let out = env.path("restored1");
    env.ok(&["restore", "j", "latest", "--to", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(out.join("file.txt")).unwrap(), b"original\n");
    assert!(
        !out.join("new.txt").exists(),
        "a write after the snapshot leaked in"
    );
    assert!(
        !out.join("outside-source.txt").exists(),
        "read beyond the source"
    );
    assert_eq!(
        std::fs::read(out.join("big.bin")).unwrap(),
        noise(2 << 20, 4)
    );
    assert_eq!(
        std::fs::read_dir(&snapdir).unwrap().count(),
        0,
        "snapshot not removed"
    );

    let s2 = env.backup();
    let read2 = s2["stats"]["bytes_read"].as_u64().unwrap();
    assert!(read2 > 0 && read2 < 1000, "{s2}");

    // A leftover of a killed run (this job's name pattern) is deleted by the next run; another
    // job's snapshot is not.
    let leftover = snapdir.join("rackvault-j-20200101T000000Z");
    let other = snapdir.join("rackvault-j-x-20200101T000000Z");
    for p in [&leftover, &other] {
        run_ok(
            "btrfs",
            &[
                "subvolume".as_ref(),
                "snapshot".as_ref(),
                "-r".as_ref(),
                vol.as_os_str(),
                p.as_os_str(),
            ],
        );
    }
    let s3 = env.backup();
    assert_eq!(s3["stats"]["bytes_read"], 0, "{s3}");
    assert_eq!(s3["stats"]["changed_files"], 0, "{s3}");
    assert!(!leftover.exists(), "the leftover snapshot was not deleted");
    assert!(other.exists(), "another job's snapshot was deleted");
    run_ok(
        "btrfs",
        &["subvolume".as_ref(), "delete".as_ref(), other.as_os_str()],
    );

    // Without btrfs-progs: an error that says what to install.
    let o = env
        .cmd(&["run", "j"])
        .env("RACKVAULT_BTRFS", "/nonexistent/btrfs")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("install btrfs-progs"), "{err}");

    // A plain directory is not a subvolume: a clear error, no snapshot.
    let cfg = std::fs::read_to_string(&env.config).unwrap().replace(
        &format!("subvolume = {}", toml_str(&vol.display().to_string())),
        &format!("subvolume = {}", toml_str(&data.display().to_string())),
    );
    std::fs::write(&env.config, cfg).unwrap();
    let o = env.run(&["run", "j"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a btrfs subvolume"), "{err}");
    assert_eq!(env.snapshots().len(), 3);
}
