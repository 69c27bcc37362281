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
