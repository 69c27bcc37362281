//! What tapectl shows people: values as values (no Rust debug text), causes once.

mod support;

fn tapectl(dir: &std::path::Path, locks: &std::path::Path, args: &[&str]) -> std::process::Output {
    support::tapectl_on_vtl(dir, locks)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn drive_status_shows_values_not_debug_text() {
    let t = tempfile::tempdir().unwrap();
    let (dir, locks) = (t.path().join("vtl"), t.path().join("locks"));
    for args in [
        &["vtl", "create", "--capacity-mb", "64"][..],
        &["load", "RV0001L6", "--drive", "0"][..],
        &["drive", "write", "/etc/hostname"][..],
    ] {
        let o = tapectl(&dir, &locks, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = tapectl(&dir, &locks, &["drive", "status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("  stat "),
        "volume statistics are shown: {out}"
    );
    for debug in ["Counter(", "Text(", "Some(", "Partitions(", "Raw("] {
        assert!(!out.contains(debug), "{debug} in:\n{out}");
    }
    assert!(out.contains("volume serial number = RV0001L6"), "{out}");
}

#[test]
fn ltfs_errors_say_the_cause_once_and_what_to_do() {
    let t = tempfile::tempdir().unwrap();
    let (dir, locks) = (t.path().join("vtl"), t.path().join("locks"));
    let ok = |args: &[&str]| {
        let o = tapectl(&dir, &locks, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let fails = |args: &[&str]| -> String {
        let o = tapectl(&dir, &locks, args);
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    ok(&["vtl", "create", "--capacity-mb", "64"]);
    for args in [
        &["ltfs", "format", "--drive", "1"][..],
        &["ltfs", "ls", "--drive", "1"][..],
    ] {
        let e = fails(args);
        assert_eq!(
            e.trim_end(),
            "tapectl: drive 1 is empty; load a cartridge first: tapectl load BARCODE --drive 1",
            "{args:?}"
        );
    }
    ok(&["load", "RV0004L6", "--drive", "0"]);
    let e = fails(&["ltfs", "ls"]);
    assert_eq!(
        e.trim_end(),
        "tapectl: drive 0: RV0004L6 is not an LTFS volume (1 partition; LTFS needs 2)\nformat it with: tapectl ltfs format --drive 0"
    );
    // A cause printed by its error and again as its source shows once.
    let e = fails(&["drive", "write", "/nonexistent/file"]);
    let parts: Vec<&str> = e.trim_end().split(": ").collect();
    for w in parts.windows(2) {
        assert_ne!(w[0], w[1], "repeated cause in {e}");
    }
}
