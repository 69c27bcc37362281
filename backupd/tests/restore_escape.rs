//! A restore never touches anything outside `--to`, whatever the manifest or the store holds: a
//! manifest that turns a directory into a symlink, or a snapshot tree in which a directory was
//! replaced by one, is refused or reported, and nothing outside the target is read or written.

mod support;

use std::path::Path;

use support::*;

fn manifest_path(env: &Env) -> std::path::PathBuf {
    env.path("store/j/snapshots")
        .join(&env.snapshots()[0])
        .join(".rackvault/manifest.zst")
}

/// Rewrites the snapshot's manifest, entry by entry.
fn edit_manifest(env: &Env, edit: impl Fn(&mut serde_json::Value)) {
    let mpath = manifest_path(env);
    let text =
        String::from_utf8(zstd::decode_all(std::fs::File::open(&mpath).unwrap()).unwrap()).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if i > 0 {
            edit(&mut v);
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    std::fs::write(&mpath, zstd::encode_all(out.as_bytes(), 1).unwrap()).unwrap();
}

fn tree_is_untouched(outside: &Path) {
    let names: Vec<_> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["victim.txt".to_string()],
        "something was made outside the target"
    );
    assert_eq!(
        std::fs::read(outside.join("victim.txt")).unwrap(),
        b"precious"
    );
}

#[test]
fn a_manifest_that_turns_a_directory_into_a_symlink_is_refused() {
    for target_kind in ["absolute", "relative"] {
        let env = Env::dir_store("");
        write(&env.source.join("d/victim.txt"), b"from the backup");
        write(&env.source.join("d/new.txt"), b"new");
        env.backup();
        let outside = env.path("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim.txt"), b"precious").unwrap();
        let to = env.path("target");
        let link = match target_kind {
            "absolute" => outside.display().to_string(),
            _ => "../outside".to_string(),
        };
        edit_manifest(&env, |v| {
            if v["path"] == "d" {
                v["type"] = "symlink".into();
                v["target"] = link.clone().into();
            }
        });
        for extra in [&[][..], &["--overwrite"][..]] {
            let mut args = vec!["restore", "j", "latest", "--to", to.to_str().unwrap()];
            args.extend_from_slice(extra);
            let o = env.run(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{target_kind} {extra:?}: {err}");
            assert!(
                err.contains("entry d/new.txt is inside d, which is a symlink, not a directory"),
                "{err}"
            );
            tree_is_untouched(&outside);
        }
        // verify names the damage the same way.
        let o = env.run(&["verify", "j"]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn a_symlink_that_replaced_a_directory_in_the_snapshot_is_not_followed() {
    let env = Env::dir_store("");
    write(&env.source.join("d/secret.txt"), b"backed up");
    env.backup();
    // Inside the published snapshot, d is replaced by a symlink to a directory holding a file of
    // the same name (say, root-only data elsewhere on the machine).
    let snap = env.path("store/j/snapshots").join(&env.snapshots()[0]);
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("secret.txt"), b"not yours").unwrap();
    std::fs::remove_dir_all(snap.join("d")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, snap.join("d")).unwrap();
    let to = env.path("target");
    let o = env.run(&["restore", "j", "latest", "--to", to.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("cannot read d/secret.txt from the snapshot"),
        "{err}"
    );
    assert!(err.contains("symlink"), "{err}");
    if let Ok(got) = std::fs::read(to.join("d/secret.txt")) {
        assert_ne!(
            got, b"not yours",
            "restore copied a file from outside the snapshot"
        );
    }
    let o = env.run(&["verify", "j"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        out.contains("d: is a symlink, the manifest says directory"),
        "{out}"
    );
}

#[test]
fn symlinks_are_restored_last_and_files_through_them_never() {
    // A legitimate tree with symlinks (to a directory, absolute and relative) restores exactly,
    // and a later restore over it with --overwrite does not write through them either.
    let env = Env::dir_store("");
    write(&env.source.join("real/f.txt"), b"f");
    std::os::unix::fs::symlink("real", env.source.join("rel")).unwrap();
    std::os::unix::fs::symlink("/etc", env.source.join("abs")).unwrap();
    env.backup();
    let to = env.path("target");
    let to_s = to.to_str().unwrap().to_string();
    env.ok(&["restore", "j", "latest", "--to", &to_s]);
    assert_eq!(
        std::fs::read_link(to.join("rel")).unwrap(),
        Path::new("real")
    );
    assert_eq!(
        std::fs::read_link(to.join("abs")).unwrap(),
        Path::new("/etc")
    );
    assert_eq!(std::fs::read(to.join("real/f.txt")).unwrap(), b"f");
    env.ok(&["restore", "j", "latest", "--to", &to_s, "--overwrite"]);
    assert_eq!(
        std::fs::read_link(to.join("abs")).unwrap(),
        Path::new("/etc")
    );
    assert_same_tree(&env.source, &to);
}
