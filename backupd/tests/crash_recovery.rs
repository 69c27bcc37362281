//! The catalog survives a full disk and a crash: with state_dir's filesystem full, reading
//! commands keep working and `run` says what is full; after kill -9 at the worst instants the
//! catalog and the store agree at the next start, and an application frozen by a pre hook is
//! thawed by the post hook the killed run owed.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use support::*;

/// A small tmpfs, unmounted when dropped (a full disk that costs nothing).
struct SmallFs {
    dir: std::path::PathBuf,
}

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        assert!(
            is_root(),
            "this test mounts a small tmpfs and needs root (scripts/test.sh runs as root)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "rvtest"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        SmallFs {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes until the filesystem says ENOSPC.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
        let block = vec![0xa5u8; 64 * 1024];
        loop {
            match f.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.dir.display()),
            }
        }
        // Whatever a partial write left: the last bytes too.
        while f.write(&[0]).is_ok_and(|n| n > 0) {}
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn a_full_state_dir_keeps_reading_commands_working_and_run_says_so() {
    let env = Env::new("kind = \"dir\"\npath = \"store\"", "");
    // state_dir = "state" in the config: mount the small filesystem there.
    let fs = SmallFs::mount(&env.path("state"), "1m");
    write(&env.source.join("a.txt"), b"a");
    env.backup();
    fs.fill();
    let snap = env.snapshots()[0].clone();
    let to = env.path("restored");
    for args in [
        vec!["runs"],
        vec!["snapshots"],
        vec!["ls", "j", "latest"],
        vec!["verify", "j"],
        vec!["prune", "--dry-run"],
        vec!["restore", "j", &snap, "--to", to.to_str().unwrap()],
    ] {
        let o = env.run(&args);
        assert!(
            o.status.success(),
            "backupd {args:?} with a full state_dir: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(std::fs::read(to.join("a.txt")).unwrap(), b"a");
    write(&env.source.join("b.txt"), b"b");
    let o = env.run(&["run", "j"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("state_dir") && err.contains("is full"),
        "{err}"
    );
    assert_eq!(
        env.snapshots().len(),
        1,
        "nothing published without a catalog record"
    );
    drop(fs);
}

#[test]
fn a_run_killed_right_after_publishing_is_recorded_at_the_next_start() {
    // With a live source the post hook runs after the publish and before the run is recorded:
    // it kills backupd (its parent) with SIGKILL at exactly that instant.
    let env = Env::dir_store("[job.hooks]\npost = \"kill -9 $PPID\"\n");
    write(&env.source.join("a.txt"), b"a");
    let o = env.run(&["run", "j"]);
    assert_eq!(o.status.signal(), Some(libc::SIGKILL), "{o:?}");
    let published = env.snapshots();
    assert_eq!(
        published.len(),
        1,
        "the snapshot was published before the kill"
    );
    // The hook no longer kills: the next run settles the dead one first.
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, cfg.replace("kill -9 $PPID", "true")).unwrap();
    env.backup();
    let runs = env.json(&["runs", "j"]);
    let first = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["snapshot"] == published[0].as_str())
        .expect("the first run is listed");
    assert_eq!(first["status"], "succeeded", "{runs}");
    let snaps = env.json(&["snapshots", "j"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
    assert!(
        snaps[0]["files"].as_u64().is_some_and(|n| n >= 1),
        "the recovered snapshot's row has its files: {snaps}"
    );
}

/// A job whose pre hook kills backupd (its parent) with SIGKILL, run once: the run dies between
/// its pre and post hook. The post hook appends its RACKVAULT_OUTCOME to `post_out`.
fn killed_after_its_pre_hook(post_out: &Path) -> Env {
    let env = Env::dir_store(&format!(
        "[job.hooks]\npre = \"kill -9 $PPID\"\npost = \"echo $RACKVAULT_OUTCOME >> {}\"\n",
        post_out.display()
    ));
    write(&env.source.join("a.txt"), b"a");
    let o = env.run(&["run", "j"]);
    assert_eq!(o.status.signal(), Some(libc::SIGKILL), "{o:?}");
    env
}

#[test]
fn a_run_killed_between_pre_and_post_hook_owes_its_post_hook() {
    let t = tempfile::tempdir().unwrap();
    let post_out = t.path().join("post.out");
    let env = killed_after_its_pre_hook(&post_out);
    assert!(
        !post_out.exists(),
        "the killed run could not run its post hook"
    );
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, cfg.replace("kill -9 $PPID", "true")).unwrap();
    env.backup();
    // First the owed post hook (interrupted), then this run's own (succeeded).
    assert_eq!(
        std::fs::read_to_string(&post_out).unwrap(),
        "interrupted\nsucceeded\n"
    );
    env.backup();
    assert_eq!(
        std::fs::read_to_string(&post_out).unwrap(),
        "interrupted\nsucceeded\nsucceeded\n",
        "owed only once"
    );
}

#[test]
fn the_daemon_settles_what_a_killed_run_left_when_it_starts() {
    let t = tempfile::tempdir().unwrap();
    let post_out = t.path().join("post.out");
    let env = killed_after_its_pre_hook(&post_out);
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!("{cfg}\n[serve]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let mut daemon = env
        .cmd(&["serve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let settled = loop {
        let runs = env.json(&["runs", "j"]);
        let post = std::fs::read_to_string(&post_out).unwrap_or_default();
        if runs[0]["status"] == "interrupted" && post == "interrupted\n" {
            break true;
        }
        if std::time::Instant::now() > deadline || daemon.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(
        settled,
        "the daemon ran the owed post hook and settled the run"
    );
    assert!(status.success(), "{status:?}");
}
