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
        &["drive", "write", "--drive", "1", "/etc/hostname"][..],
    ] {
        let e = fails(args);
        assert_eq!(
            e.trim_end(),
            "tapectl: drive 1 is empty; load a cartridge first: tapectl load BARCODE --drive 1",
            "{args:?}"
        );
    }
    // With --json the failure is one JSON line on stderr, for scripts.
    let e = fails(&["--json", "ltfs", "ls", "--drive", "1"]);
    let v: serde_json::Value = serde_json::from_str(e.trim()).expect("one JSON document");
    assert_eq!(v["message_type"], "exit_error");
    assert_eq!(v["code"], 1);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("drive 1 is empty"),
        "{v}"
    );
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

/// Runs tapectl on a pseudo-terminal (util-linux `script`); returns what it drew.
fn on_a_terminal(dir: &std::path::Path, locks: &std::path::Path, args: &[&str]) -> String {
    let mut cmdline = format!(
        "RACKVAULT_LOCK_DIR={} {} --vtl {}",
        locks.display(),
        env!("CARGO_BIN_EXE_tapectl"),
        dir.display()
    );
    for a in args {
        cmdline.push(' ');
        cmdline.push_str(a);
    }
    let o = std::process::Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .output()
        .expect("script (util-linux) runs a command on a pseudo-terminal");
    let drawn = String::from_utf8_lossy(&o.stdout).replace('\r', "\n");
    assert!(o.status.success(), "{cmdline}: {drawn}");
    drawn
}

#[test]
fn ltfs_put_and_get_show_progress_on_a_terminal_and_names_escaped() {
    let t = tempfile::tempdir().unwrap();
    let (dir, locks) = (t.path().join("vtl"), t.path().join("locks"));
    for args in [
        &["vtl", "create", "--capacity-mb", "64"][..],
        &["load", "RV0001L6", "--drive", "0"][..],
        &["ltfs", "format"][..],
    ] {
        let o = tapectl(&dir, &locks, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big.bin"), vec![7u8; 3 << 20]).unwrap();
    std::fs::write(src.join("x\x1b[2J.txt"), b"x").unwrap();
    let drawn = on_a_terminal(&dir, &locks, &["ltfs", "put", src.to_str().unwrap(), "/"]);
    assert!(drawn.contains("writing"), "{drawn}");
    assert!(drawn.contains("copied 2 files, 3.0 MiB"), "{drawn}");
    let out = t.path().join("out");
    let drawn = on_a_terminal(
        &dir,
        &locks,
        &["ltfs", "get", "/src", "--to", out.to_str().unwrap()],
    );
    assert!(drawn.contains("reading"), "{drawn}");
    // Names with control characters are escaped in listings for people.
    let o = tapectl(&dir, &locks, &["ltfs", "ls", "/src"]);
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        listing.contains("x\\e[2J.txt") && !listing.contains('\x1b'),
        "{listing}"
    );
    // Off a terminal: nothing but the result.
    let o = tapectl(
        &dir,
        &locks,
        &[
            "ltfs",
            "get",
            "/src",
            "--to",
            t.path().join("out2").to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Arguments and options in `tapectl ARGS --help` that have no description (clap prints one on the
/// same line after two spaces, or, in its long layout, on the next lines, indented).
fn undescribed(args: &[&str]) -> Vec<String> {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tapectl"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut in_list = false;
    let mut missing = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        in_list = match *l {
            "Arguments:" | "Options:" => true,
            "" => false,
            _ => in_list,
        };
        let entry = l
            .strip_prefix("  ")
            .is_some_and(|r| r.starts_with(['-', '<', '[']));
        let inline = l.trim().contains("  ");
        let below = lines
            .get(i + 1)
            .is_some_and(|n| n.starts_with("          "));
        if in_list && entry && !inline && !below {
            missing.push(format!("{args:?}: {}", l.trim()));
        }
    }
    missing
}

#[test]
fn every_argument_is_described_in_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["devices"],
        &["library", "status"],
        &["library", "inventory"],
        &["library", "door"],
        &["load"],
        &["unload"],
        &["move"],
        &["export"],
        &["import"],
        &["clean"],
        &["drive", "status"],
        &["drive", "rewind"],
        &["drive", "write"],
        &["drive", "read"],
        &["ltfs", "format"],
        &["ltfs", "ls"],
        &["ltfs", "put"],
        &["ltfs", "get"],
        &["ltfs", "generations"],
        &["ltfs", "mount"],
        &["ltfs", "check"],
        &["vtl", "create"],
        &["vtl", "insert"],
        &["vtl", "remove"],
        &["vtl", "fault"],
        &["vtl", "status"],
    ];
    let missing: Vec<String> = commands.iter().flat_map(|c| undescribed(c)).collect();
    assert!(
        missing.is_empty(),
        "arguments without a description:\n{}",
        missing.join("\n")
    );
}
