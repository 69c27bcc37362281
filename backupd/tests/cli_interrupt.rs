//! Ctrl-C during `backupd run`: the run is cancelled cleanly, not killed.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

fn wait_for_file(p: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_cancels_the_run_kills_the_pre_hook_and_still_runs_post() {
    let t = tempfile::tempdir().unwrap();
    let q = |name: &str| t.path().join(name).display().to_string();
    let hooks = format!(
        // The mask is read with shell builtins only: while dash starts a command such as grep it
        // blocks every signal for a moment, and the child would read that transient mask.
        "[job.hooks]\npre = \"while read -r k v; do if [ $k = SigBlk: ]; then echo $v > {blk}; fi; done < /proc/$$/status; echo $$ > {pid}; sleep 30\"\npost = \"echo $RACKVAULT_OUTCOME > {post}\"\n",
        blk = q("blk"),
        pid = q("pre.pid"),
        post = q("post.out")
    );
    let env = Env::dir_store(&hooks);
    write(&env.source.join("a.txt"), b"a\n");
    let child = env
        .cmd(&["run", "j"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&t.path().join("pre.pid"));
    let started = Instant::now();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupt: cancelling the run"), "{stderr}");
    assert!(stderr.contains("was cancelled"), "{stderr}");
    // The hook ran with no signals blocked (the CLI blocks them in its own threads only).
    let blk = std::fs::read_to_string(t.path().join("blk")).unwrap();
    assert!(blk.trim().ends_with("0000000000000000"), "{blk}");
    // The post hook ran and knew why.
    assert_eq!(
        std::fs::read_to_string(t.path().join("post.out"))
            .unwrap()
            .trim(),
        "cancelled"
    );
    let pid: i32 = std::fs::read_to_string(t.path().join("pre.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the pre hook still runs"
    );
    assert!(env.snapshots().is_empty(), "nothing published");
    let runs = env.json(&["runs"]);
    assert_eq!(runs[0]["status"], "cancelled", "{runs}");
    // The next run is normal.
    std::fs::write(
        &env.config,
        std::fs::read_to_string(&env.config)
            .unwrap()
            .replace("sleep 30", "true"),
    )
    .unwrap();
    env.backup();
    assert_eq!(env.snapshots().len(), 1);
}

#[test]
fn a_run_past_the_job_timeout_is_stopped_and_fails() {
    let t = tempfile::tempdir().unwrap();
    let post = t.path().join("post.out");
    let extra = format!(
        "timeout = \"1s\"\n[job.hooks]\npre = \"sleep 30\"\npost = \"echo $RACKVAULT_OUTCOME > {}\"\n",
        post.display()
    );
    let env = Env::dir_store(&extra);
    write(&env.source.join("a.txt"), b"a\n");
    let started = Instant::now();
    let o = env.run(&["run", "j"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("longer than the job's timeout (1 s)"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&post).unwrap().trim(), "failed");
    assert!(env.snapshots().is_empty());
    let runs = env.json(&["runs"]);
    assert_eq!(runs[0]["status"], "failed", "{runs}");
}
