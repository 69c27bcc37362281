//! The directory store end to end, through the real `backupd` binary.

mod support;

use std::process::Stdio;

use support::*;

#[test]
fn metadata_round_trip_and_restore_equality() {
    let env = Env::dir_store("");
    rich_tree(&env.source);
    let stats = env.backup();
    assert_eq!(
        stats["stats"]["warnings"].as_array().unwrap().len(),
        0,
        "{stats}"
    );
    let out = env.path("restored");
    env.ok(&["restore", "j", "latest", "--to", out.to_str().unwrap()]);
    assert_same_tree(&env.source, &out);
    // The snapshot itself is a plain tree equal to the source.
    let snap = env.path("store/j/snapshots").join(&env.snapshots()[0]);
    assert_same_tree(&env.source, &snap);
    // Holes survive in the snapshot and in the restore.
    assert!(allocated(&snap.join("sparse.raw")) < 1 << 20);
    assert!(allocated(&out.join("sparse.raw")) < 1 << 20);
    env.ok(&["verify", "j"]);
}

#[test]
fn unchanged_files_are_shared_not_rewritten() {
    let env = Env::dir_store("");
    for i in 0..50 {
        write(
            &env.source.join(format!("d{}/f{i}.bin", i % 5)),
            &noise(20_000, i),
        );
    }
    let first = env.backup();
    assert_eq!(first["stats"]["new_files"], 50);

    let nochange = env.backup();
    assert_eq!(nochange["stats"]["unchanged_files"], 50, "{nochange}");
    assert_eq!(nochange["stats"]["bytes_written"], 0);
    assert_eq!(nochange["stats"]["bytes_read"], 0);

    write(&env.source.join("d0/f0.bin"), b"changed");
    std::fs::remove_file(env.source.join("d1/f1.bin")).unwrap();
    write(&env.source.join("new.txt"), b"new");
    // Same content and metadata, new ctime: hashed, found equal, shared again.
    let t = std::fs::metadata(env.source.join("d2/f2.bin")).unwrap();
    std::fs::set_permissions(env.source.join("d2/f2.bin"), t.permissions()).unwrap();
    let third = env.backup();
    let s = &third["stats"];
    assert_eq!(
        (
            s["new_files"].as_u64(),
            s["changed_files"].as_u64(),
            s["deleted"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{third}"
    );
    assert_eq!(s["unchanged_files"], 48);
    assert_eq!(s["bytes_written"], 10);

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 3);
    let dir = |n: usize| env.path("store/j/snapshots").join(&snaps[n]);
    assert_eq!(
        ino(&dir(0).join("d3/f3.bin")),
        ino(&dir(2).join("d3/f3.bin")),
        "unchanged file was rewritten"
    );
    assert_eq!(
        ino(&dir(0).join("d2/f2.bin")),
        ino(&dir(2).join("d2/f2.bin")),
        "touched-but-equal file was rewritten"
    );
    assert_ne!(
        ino(&dir(0).join("d0/f0.bin")),
        ino(&dir(2).join("d0/f0.bin"))
    );
    assert!(!dir(2).join("d1/f1.bin").exists());
    assert!(dir(1).join("d1/f1.bin").exists(), "older snapshot damaged");
    let diff = env.ok(&["diff", "j", &snaps[0], "latest"]);
    assert!(
        diff.contains("M d0/f0.bin") && diff.contains("- d1/f1.bin") && diff.contains("+ new.txt"),
        "{diff}"
    );
    env.ok(&["verify", "j", "--all"]);
}

#[test]
fn metadata_change_alone_does_not_touch_the_older_snapshot() {
    let env = Env::dir_store("");
    write(&env.source.join("f"), b"data");
    chmod(&env.source.join("f"), 0o644);
    env.backup();
    chmod(&env.source.join("f"), 0o600);
    let s = env.backup();
    assert_eq!(s["stats"]["metadata_only"], 1, "{s}");
    let snaps = env.snapshots();
    use std::os::unix::fs::MetadataExt;
    let mode = |n: usize| {
        std::fs::metadata(env.path("store/j/snapshots").join(&snaps[n]).join("f"))
            .unwrap()
            .mode()
            & 0o777
    };
    assert_eq!((mode(0), mode(1)), (0o644, 0o600));
}

#[test]
fn verify_names_a_flipped_byte_and_a_missing_file() {
    let env = Env::dir_store("");
    write(&env.source.join("a/victim.bin"), &noise(400_000, 9));
    write(&env.source.join("b/gone.txt"), b"x");
    write(&env.source.join("ok.txt"), b"fine");
    env.backup();
    let snap = env.path("store/j/snapshots").join(&env.snapshots()[0]);
    let mut data = std::fs::read(snap.join("a/victim.bin")).unwrap();
    data[300_000] ^= 0x01;
    std::fs::write(snap.join("a/victim.bin"), data).unwrap();
    std::fs::remove_file(snap.join("b/gone.txt")).unwrap();
    let o = env.run(&["verify", "j"]);
    assert_eq!(o.status.code(), Some(3));
    let out = String::from_utf8_lossy(&o.stdout);
    // Directory-store manifests carry no block hashes (nothing there updates blocks), so verify
    // names the file but not the offset.
    assert!(out.contains("a/victim.bin: content differs"), "{out}");
    assert!(out.contains("b/gone.txt: missing"), "{out}");
    assert!(!out.contains("ok.txt"), "{out}");
}

#[test]
fn include_exclude_selection() {
    let env = Env::dir_store(
        "include = [\"docs/**\", \"*.toml\"]\nexclude = [\"*.tmp\", \"docs/private\"]",
    );
    for p in [
        "docs/a.md",
        "docs/sub/b.md",
        "docs/x.tmp",
        "docs/private/secret",
        "src/main.rs",
        "src/Cargo.toml",
        "top.toml",
    ] {
        write(&env.source.join(p), p.as_bytes());
    }
    env.backup();
    let listed = env.ok(&["ls", "j", "latest", "-R"]);
    let paths: Vec<&str> = listed
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![
            "docs",
            "docs/a.md",
            "docs/sub",
            "docs/sub/b.md",
            "src",
            "src/Cargo.toml",
            "top.toml"
        ],
        "{listed}"
    );
}

#[test]
fn special_files_are_skipped_with_a_warning() {
    let env = Env::dir_store("");
    write(&env.source.join("regular"), b"r");
    let _sock = std::os::unix::net::UnixListener::bind(env.source.join("app.sock")).unwrap();
    let s = env.backup();
    let w = s["stats"]["warnings"].to_string();
    assert!(w.contains("app.sock: skipped, it is a socket"), "{w}");
    assert_eq!(s["stats"]["new_files"], 1);
}

#[test]
fn store_inside_source_is_not_backed_up_into_itself() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "state_dir = \"var/state\"\n[store]\nkind = \"dir\"\npath = \"var/store\"\n[[job]]\nname = \"j\"\nsource = \".\"\n").unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_backupd"))
            .arg("-c")
            .arg(&cfg)
            .args(["run", "j"])
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    assert!(run().status.success());
    let snaps = dir.path().join("var/store/j/snapshots");
    let latest = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    assert!(latest.join("c.toml").exists());
    assert!(
        !latest.join("var").join("store").exists(),
        "store was backed up into itself"
    );
}

#[test]
fn prune_applies_keep_last_with_dry_run_first() {
    let env = Env::dir_store("retention = { keep_last = 2 }");
    write(&env.source.join("f"), b"1");
    for i in 0..4 {
        write(&env.source.join("f"), format!("{i}").as_bytes());
        env.ok(&["run", "j", "--no-prune"]);
    }
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 4);
    let dry = env.ok(&["prune", "--dry-run"]);
    assert_eq!(dry.matches("would delete").count(), 2, "{dry}");
    assert!(
        dry.contains(&format!("keep   {}  (newest, last 1/2)", snaps[3])),
        "{dry}"
    );
    assert_eq!(env.snapshots().len(), 4, "dry run deleted something");
    let v = env.json(&["prune", "j"]);
    assert_eq!(v[0]["deleted"].as_array().unwrap().len(), 2);
    assert_eq!(env.snapshots(), snaps[2..].to_vec());
    env.ok(&["verify", "j", "--all"]);
    // `run` applies retention by itself.
    env.ok(&["run", "j"]);
    assert_eq!(env.snapshots().len(), 2);
}

#[test]
fn restore_chosen_paths_and_overwrite_rules() {
    let env = Env::dir_store("");
    write(&env.source.join("a/one.txt"), b"one");
    write(&env.source.join("a/two.txt"), b"two");
    write(&env.source.join("b/three.txt"), b"three");
    env.backup();
    let out = env.path("out");
    env.ok(&[
        "restore",
        "j",
        "latest",
        "a/one.txt",
        "/b",
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(out.join("a/one.txt")).unwrap(), b"one");
    assert!(!out.join("a/two.txt").exists());
    assert_eq!(std::fs::read(out.join("b/three.txt")).unwrap(), b"three");

    std::fs::write(out.join("a/one.txt"), b"local edit").unwrap();
    let o = env.run(&["restore", "j", "latest", "a", "--to", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("one.txt exists")
            && err.contains("--overwrite")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("a/one.txt")).unwrap(), b"local edit");
    assert!(
        !out.join("a/two.txt").exists(),
        "a refused restore wrote something"
    );
    env.ok(&[
        "restore",
        "j",
        "latest",
        "a",
        "--to",
        out.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_eq!(std::fs::read(out.join("a/one.txt")).unwrap(), b"one");

    let o = env.run(&[
        "restore",
        "j",
        "latest",
        "nope",
        "--to",
        out.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope is not in snapshot"));
    let o = env.run(&[
        "restore",
        "j",
        "latest",
        "../etc",
        "--to",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(".."));
}

#[test]
fn restore_never_follows_a_symlink_out_of_the_target() {
    let env = Env::dir_store("");
    write(&env.source.join("etc/passwd"), b"from backup");
    env.backup();
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let target = env.path("target");
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("etc")).unwrap();
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut args = vec!["restore", "j", "latest", "--to", target.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = env.run(&args);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr)
                .contains("is a symlink where the snapshot has a directory")
        );
        assert!(
            !outside.join("passwd").exists(),
            "restore wrote through a symlink"
        );
    }
}

#[test]
fn hostile_manifest_paths_are_rejected() {
    let env = Env::dir_store("");
    write(&env.source.join("f"), b"x");
    env.backup();
    let snap = env.path("store/j/snapshots").join(&env.snapshots()[0]);
    let mpath = snap.join(".rackvault/manifest.zst");
    let text =
        String::from_utf8(zstd::decode_all(std::fs::File::open(&mpath).unwrap()).unwrap()).unwrap();
    for evil in ["../../escaped", "/tmp/abs", "a/../../b"] {
        let bad = text.replace("\"path\":\"f\"", &format!("\"path\":\"{evil}\""));
        assert_ne!(bad, text);
        std::fs::write(&mpath, zstd::encode_all(bad.as_bytes(), 1).unwrap()).unwrap();
        let out = env.path("out");
        let o = env.run(&["restore", "j", "latest", "--to", out.to_str().unwrap()]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("manifest") && err.contains("line 3"), "{err}");
        assert!(!env.path("escaped").exists() && !std::path::Path::new("/tmp/abs").exists());
        let o = env.run(&["verify", "j"]);
        assert_eq!(o.status.code(), Some(3));
    }
}

#[test]
fn bad_configs_name_the_line() {
    let cases = [
        (
            "[store]\nkind = \"dir\"\npath = \"s\"\n[[job]]\nname = \"j\"\nsource = \"x\"\nschedule = \"99 * * * *\"\n",
            ":7:",
            "schedule",
        ),
        (
            "[store]\nkind = \"dir\"\npath = \"s\"\n\n[[job]]\nname = \"j\"\nsource = \"x\"\nexclude = [\"[oops\"]\n",
            ":8:",
            "exclude",
        ),
        (
            "[store]\nkind = \"dir\"\npath = \"s\"\n[[job]]\nname = \"a b\"\nsource = \"x\"\n",
            ":5:",
            "invalid job name",
        ),
        ("[store]\nkind = \"dir\"\npaht = \"s\"\n", ":3:", "paht"),
        ("[store]\nkind = \"zfs\"\n", ":1:", "needs `parent`"),
        (
            "[store]\nkind = \"dir\"\npath = \"s\"\n[[job]]\nname = \"j\"\nsource = \"x\"\nretention = { keep_last = -1 }\n",
            ":7:",
            "-1",
        ),
    ];
    for (text, line, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, text).unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_backupd"))
            .arg("-c")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("bad.toml{line}")) && err.contains(needle),
            "expected {line} {needle}: {err}"
        );
    }
}

#[test]
fn second_run_of_the_same_job_is_refused_while_one_holds_the_lock() {
    let env = Env::dir_store("");
    write(&env.source.join("f"), b"x");
    std::fs::create_dir_all(env.path("state/locks")).unwrap();
    let lock = std::fs::File::create(env.path("state/locks/j.lock")).unwrap();
    lock.lock().unwrap();
    let o = env.run(&["run", "j"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("busy"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    drop(lock);
    env.backup();
}

#[test]
fn kill_9_mid_run_leaves_earlier_snapshots_intact() {
    let env = Env::dir_store("");
    for i in 0..2000u64 {
        write(
            &env.source.join(format!("d{}/f{i}", i % 40)),
            &noise(2_000 + (i as usize % 7) * 1000, i),
        );
    }
    write(&env.source.join("big.bin"), &noise(48 << 20, 77));
    env.backup();
    let first = env.snapshots();
    for (round, delay_ms) in [15u64, 60, 150, 400, 900].into_iter().enumerate() {
        write(
            &env.source.join("big.bin"),
            &noise(48 << 20, 100 + round as u64),
        );
        write(&env.source.join(format!("round{round}")), b"r");
        let mut child = env
            .cmd(&["run", "j"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let snaps = env.snapshots();
        assert!(
            snaps.starts_with(&first),
            "round {round}: earlier snapshots changed: {snaps:?}"
        );
        // Only complete snapshots are ever visible: each one verifies.
        env.ok(&["verify", "j", "--all"]);
        let _ = status;
    }
    env.backup();
    let runs = env.json(&["runs", "j", "--limit", "100"]);
    let runs = runs.as_array().unwrap();
    assert!(
        !runs.iter().any(|r| r["status"] == "running"),
        "stale running rows: {runs:?}"
    );
    assert!(
        runs.iter().any(|r| r["status"] == "interrupted"),
        "no kill landed mid-run; the test proved nothing: {runs:?}"
    );
    assert!(
        env.path("store/j/.incomplete")
            .read_dir()
            .unwrap()
            .next()
            .is_none(),
        "leftovers not cleaned"
    );
    let out = env.path("restored");
    env.ok(&["restore", "j", "latest", "--to", out.to_str().unwrap()]);
    assert_same_tree(&env.source, &out);
}

/// A tmpfs mounted for one test and unmounted afterwards.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let o = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "this test needs root to mount a small tmpfs as a full disk: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_target_fails_clearly_and_keeps_earlier_snapshots() {
    let env = Env::dir_store("");
    let _fs = Tmpfs::mount(&env.path("store"), "8m");
    write(&env.source.join("small"), &noise(200_000, 1));
    env.backup();
    write(&env.source.join("huge"), &noise(12 << 20, 2));
    let o = env.run(&["run", "j"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("store is full") && err.contains("earlier snapshots are intact"),
        "{err}"
    );
    assert_eq!(env.snapshots().len(), 1);
    env.ok(&["verify", "j", "--all"]);
    assert!(
        env.path("store/j/.incomplete")
            .read_dir()
            .unwrap()
            .next()
            .is_none(),
        "the failed run left its work behind"
    );
    std::fs::remove_file(env.source.join("huge")).unwrap();
    write(&env.source.join("medium"), &noise(1 << 20, 3));
    env.backup();
    assert_eq!(env.snapshots().len(), 2);
    env.ok(&["verify", "j", "--all"]);
}

#[test]
fn xattr_change_alone_is_picked_up() {
    let env = Env::dir_store("");
    write(&env.source.join("f"), b"data");
    xattr::set(env.source.join("f"), "user.tag", b"one").unwrap();
    env.backup();
    let unchanged = env.backup();
    assert_eq!(unchanged["stats"]["unchanged_files"], 1);
    xattr::set(env.source.join("f"), "user.tag", b"two").unwrap();
    let s = env.backup();
    assert_eq!(s["stats"]["metadata_only"], 1, "{s}");
    let snaps = env.snapshots();
    let tag = |n: usize| {
        xattr::get(
            env.path("store/j/snapshots").join(&snaps[n]).join("f"),
            "user.tag",
        )
        .unwrap()
        .unwrap()
    };
    assert_eq!((tag(0), tag(2)), (b"one".to_vec(), b"two".to_vec()));
}

#[test]
fn a_setgid_store_directory_with_a_default_acl_does_not_leak_into_snapshots() {
    let env = Env::dir_store("");
    write(&env.source.join("d/f"), b"data");
    chmod(&env.source.join("d/f"), 0o640);
    let store = env.path("store");
    std::fs::create_dir(&store).unwrap();
    // A shared group directory: setgid, another group, and a default ACL granting user 1234 rwx.
    std::os::unix::fs::chown(&store, None, Some(4242)).unwrap();
    chmod(&store, 0o2775);
    let mut acl = sample_acl();
    acl[4..6].copy_from_slice(&1u16.to_le_bytes());
    xattr::set(&store, "system.posix_acl_default", &acl).unwrap();
    env.backup();
    let snap = env.path("store/j/snapshots").join(&env.snapshots()[0]);
    assert_same_tree(&env.source, &snap);
}
