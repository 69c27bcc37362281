//! The ZFS store on a real pool (zfs-fuse in the test command; OpenZFS works the same way).
//! `scripts/test.sh` creates the pool and exports RACKVAULT_TEST_ZPOOL.

mod support;

use std::process::{Command, Stdio};

use support::*;

fn zfs_env(job_extra: &str) -> (Env, Parent) {
    let p = Parent::new("t", true);
    (
        Env::new(&format!("kind = \"zfs\"\nparent = \"{}\"", p.0), job_extra),
        p,
    )
}

fn send_size(from: &str, to: &str) -> u64 {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("zfs send -i {from} {to} | wc -c"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn zfs_small_change_makes_a_small_snapshot() {
    let (env, parent) = zfs_env("");
    write(&env.source.join("vm.img"), &noise(24 << 20, 5));
    for i in 0..200 {
        write(&env.source.join(format!("docs/f{i}.txt")), &noise(3000, i));
    }
    env.backup();
    let ds = format!("{}/j", parent.0);
    let comp = zfs(&["get", "-Hp", "-o", "value", "compression", &ds]);
    assert!(
        ["zstd", "lz4", "lzjb"].contains(&comp.trim()),
        "compression {comp}"
    );

    // Rewrite three scattered 4 KiB pieces of the image in place, and one small file.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(env.source.join("vm.img"))
            .unwrap();
        for off in [1u64 << 20, 9 << 20, 20 << 20] {
            f.write_all_at(&noise(4096, off), off).unwrap();
        }
    }
    write(&env.source.join("docs/f7.txt"), b"edited");
    let s = env.backup();
    assert_eq!(s["stats"]["changed_files"], 2, "{s}");
    assert_eq!(
        s["stats"]["bytes_written"],
        3 * 128 * 1024 + 6,
        "only the changed records are rewritten"
    );
    let snaps = env.snapshots();
    let inc = send_size(&format!("{ds}@{}", snaps[0]), &format!("{ds}@{}", snaps[1]));
    assert!(
        inc < 1 << 20,
        "increment is {inc} bytes for a 12 KiB change to a 24 MiB file"
    );

    for s in &snaps {
        let full = format!("{ds}@{s}");
        assert_eq!(
            zfs(&["get", "-Hp", "-o", "value", "rackvault:managed", &full]).trim(),
            "yes"
        );
    }
    env.ok(&["verify", "j", "--all"]);
}

#[test]
fn zfs_metadata_round_trip_and_old_snapshot_restore() {
    let (env, _p) = zfs_env("");
    rich_tree(&env.source);
    env.backup();
    let v1 = env.path("v1");
    Command::new("cp")
        .arg("-a")
        .arg(&env.source)
        .arg(&v1)
        .status()
        .unwrap();

    write(&env.source.join("plain.txt"), b"second version");
    std::fs::remove_file(env.source.join("dir/hard-b")).unwrap();
    std::fs::remove_dir_all(env.source.join("odd names")).unwrap();
    std::fs::create_dir(env.source.join("link-rel-now-dir")).unwrap();
    std::fs::remove_file(env.source.join("link-rel")).unwrap();
    write(&env.source.join("link-rel"), b"now a file");
    env.backup();

    // Old snapshot (read through a temporary clone on zfs-fuse) equals the old tree.
    let snaps = env.snapshots();
    let out1 = env.path("out1");
    env.ok(&["restore", "j", &snaps[0], "--to", out1.to_str().unwrap()]);
    assert_same_tree(&v1, &out1);
    assert!(allocated(&out1.join("sparse.raw")) < 1 << 20);
    let out2 = env.path("out2");
    env.ok(&["restore", "j", "latest", "--to", out2.to_str().unwrap()]);
    assert_same_tree(&env.source, &out2);
    env.ok(&["verify", "j", "--all"]);
    // No temporary clones are left behind.
    let children = zfs(&["list", "-H", "-o", "name", "-r", &_p.0]);
    assert!(!children.contains("rvread"), "{children}");
}

#[test]
fn zfs_prune_never_touches_foreign_snapshots() {
    let (env, parent) = zfs_env("retention = { keep_last = 1 }");
    write(&env.source.join("f"), b"1");
    env.ok(&["run", "j", "--no-prune"]);
    let ds = format!("{}/j", parent.0);
    zfs(&["snapshot", &format!("{ds}@operator-made")]);
    write(&env.source.join("f"), b"2");
    env.ok(&["run", "j", "--no-prune"]);
    write(&env.source.join("f"), b"3");
    env.ok(&["run", "j"]);
    assert_eq!(env.snapshots().len(), 1);
    let all = zfs(&["list", "-H", "-t", "snapshot", "-o", "name", "-r", &ds]);
    assert!(all.contains("@operator-made"), "{all}");
    let o = env.run(&[
        "restore",
        "j",
        "operator-made",
        "--to",
        env.path("x").to_str().unwrap(),
    ]);
    assert!(
        !o.status.success(),
        "a foreign snapshot was treated as rackvault's"
    );
}

#[test]
fn zfs_kill_9_mid_run_rolls_back_and_recovers() {
    let (env, _p) = zfs_env("");
    for i in 0..600u64 {
        write(
            &env.source.join(format!("d{}/f{i}", i % 20)),
            &noise(4000, i),
        );
    }
    write(&env.source.join("big.bin"), &noise(24 << 20, 1));
    env.backup();
    let first = env.snapshots();
    for (round, delay) in [40u64, 150, 400, 900].into_iter().enumerate() {
        write(
            &env.source.join("big.bin"),
            &noise(24 << 20, 10 + round as u64),
        );
        for i in 0..600u64 {
            if i % 3 == round as u64 % 3 {
                write(
                    &env.source.join(format!("d{}/f{i}", i % 20)),
                    &noise(4000, i * 31 + round as u64),
                );
            }
        }
        let mut child = env
            .cmd(&["run", "j"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        child.wait().unwrap();
        let snaps = env.snapshots();
        assert!(snaps.starts_with(&first), "round {round}: {snaps:?}");
        env.ok(&["verify", "j", "--all"]);
    }
    env.backup();
    let runs = env.json(&["runs", "j", "--limit", "100"]);
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["status"] == "interrupted"),
        "no kill landed mid-run: {runs}"
    );
    let out = env.path("out");
    env.ok(&["restore", "j", "latest", "--to", out.to_str().unwrap()]);
    assert_same_tree(&env.source, &out);
    env.ok(&["verify", "j", "--all"]);
}

#[test]
fn zfs_full_target_fails_clearly_and_keeps_earlier_snapshots() {
    let (env, parent) = zfs_env("");
    write(&env.source.join("small"), &noise(100_000, 1));
    env.backup();
    zfs(&["set", "quota=6M", &parent.0]);
    write(&env.source.join("huge"), &noise(16 << 20, 2));
    let o = env.run(&["run", "j"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("store is full") && err.contains("earlier snapshots are intact"),
        "{err}"
    );
    assert_eq!(env.snapshots().len(), 1);
    env.ok(&["verify", "j", "--all"]);
    zfs(&["set", "quota=none", &parent.0]);
    env.backup();
    assert_eq!(env.snapshots().len(), 2);
    env.ok(&["verify", "j", "--all"]);
}

#[test]
fn zfs_missing_parent_is_a_clear_error() {
    let env = Env::new(
        &format!(
            "kind = \"zfs\"\nparent = \"{}/does-not-exist\"",
            test_pool()
        ),
        "",
    );
    write(&env.source.join("f"), b"x");
    let o = env.run(&["run", "j"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does-not-exist does not exist") && err.contains("zfs create"),
        "{err}"
    );
}

#[test]
fn zfs_stale_read_clone_of_a_dead_process_is_cleaned_and_does_not_block_prune() {
    let (env, parent) = zfs_env("retention = { keep_last = 1 }");
    write(&env.source.join("f"), b"1");
    env.ok(&["run", "j", "--no-prune"]);
    let first = env.snapshots()[0].clone();
    // A restore that crashed would leave this behind: a clone of the snapshot, owned by a dead pid.
    let mut dead = Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let clone = format!("{}/rvread-j-{pid}-0", parent.0);
    zfs(&[
        "clone",
        "-o",
        "rackvault:readclone=yes",
        "-o",
        "readonly=on",
        &format!("{}/j@{first}", parent.0),
        &clone,
    ]);
    write(&env.source.join("f"), b"2");
    env.ok(&["run", "j"]);
    assert_eq!(
        env.snapshots().len(),
        1,
        "prune was blocked by the stale clone"
    );
    let children = zfs(&["list", "-H", "-o", "name", "-r", &parent.0]);
    assert!(!children.contains("rvread"), "{children}");
}
