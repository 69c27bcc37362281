//! How the CLI behaves towards the person and the pipe: usage errors exit 2, a reader that goes
//! away ends the command quietly.

mod support;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use support::*;

#[test]
fn an_unknown_job_is_a_usage_error() {
    let env = Env::dir_store("");
    for args in [&["run", "nosuchjob"][..], &["snapshots", "nosuchjob"][..]] {
        let o = env.run(args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("no job named \"nosuchjob\""), "{stderr}");
        assert!(stderr.contains("(jobs: j)"), "{stderr}");
    }
    assert!(!env.path("state/catalog.sqlite").exists() || env.snapshots().is_empty());
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let env = Env::dir_store("");
    // Enough entries that `ls --json` writes far more than a pipe holds.
    for i in 0..3000 {
        write(&env.source.join(format!("file-{i:05}.txt")), b"x");
    }
    env.backup();
    let mut child = env
        .cmd(&["--json", "ls", "j", "latest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    // The reader is gone (stdout dropped above): like `backupd ls --json | head -c 16`.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.is_empty(),
        "nothing to say about a closed pipe: {stderr}"
    );
    assert!(
        out.status.signal() == Some(libc::SIGPIPE) || out.status.success(),
        "{:?}",
        out.status
    );
}

#[test]
fn file_names_cannot_drive_the_terminal_and_json_keeps_their_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::dir_store("");
    write(&env.source.join("plain.txt"), b"p");
    env.backup();
    write(&env.source.join("new\nline.txt"), b"n");
    write(&env.source.join("x\x1b[2J\x1b]0;owned\x07.txt"), b"x");
    write(
        &env.source.join(std::ffi::OsStr::from_bytes(b"caf\xE9.txt")),
        b"c",
    );
    env.backup();
    let snaps = env.snapshots();
    for args in [
        vec!["ls", "j", "latest"],
        vec!["diff", "j", &snaps[0], "latest"],
    ] {
        let out = env.ok(&args);
        assert!(
            !out.contains('\x1b') && !out.contains('\x07'),
            "{args:?}: {out:?}"
        );
        assert!(out.contains("new\\nline.txt"), "{args:?}: {out}");
        assert!(out.contains("x\\e[2J\\e]0;owned\\a.txt"), "{args:?}: {out}");
        assert!(out.contains("caf\\xE9.txt"), "{args:?}: {out}");
    }
    // Every name shown can be given back, bytes and all.
    let to = env.path("one");
    let o = env
        .cmd(&["restore", "j", "latest", "--to", to.to_str().unwrap()])
        .arg(std::ffi::OsStr::from_bytes(b"caf\xE9.txt"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(to.join(std::ffi::OsStr::from_bytes(b"caf\xE9.txt"))).unwrap(),
        b"c"
    );
    let o = env
        .cmd(&["ls", "j", "latest"])
        .arg(std::ffi::OsStr::from_bytes(b"caf\xE9.txt"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // JSON: the exact names, in one shape for ls and diff (a string, or hex for non-UTF-8).
    let diff = env.json(&["diff", "j", &snaps[0], "latest"]);
    let ls = env.json(&["ls", "j", "latest"]);
    for listing in [&diff, &ls] {
        let paths: Vec<&serde_json::Value> = listing
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["path"])
            .collect();
        assert!(
            paths.contains(&&serde_json::json!("new\nline.txt")),
            "{listing}"
        );
        assert!(
            paths.contains(&&serde_json::json!({"hex": "636166e92e747874"})),
            "{listing}"
        );
    }
}

#[test]
fn warnings_are_plain_lines_off_a_terminal_and_runs_count_them() {
    let env = Env::dir_store("");
    write(&env.source.join("a.txt"), b"a");
    // A FIFO is skipped with a warning, whoever runs the backup.
    let fifo = std::ffi::CString::new(env.source.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // Said once, in the summary, saying what the file is; not again as a log line.
    let o = env.cmd(&["run", "j"]).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    assert_eq!(
        stdout.matches("pipe: skipped, it is a FIFO").count(),
        1,
        "{stdout}"
    );
    assert!(!stderr.contains("pipe"), "{stderr}");
    // A log written to a file or the journal has no colour codes.
    let o = env
        .cmd(&["run", "j"])
        .env("RACKVAULT_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes in a log that is not a terminal: {stderr:?}"
    );
    let runs = env.json(&["runs", "j"]);
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["warnings"], 1, "{runs}");
    let text = env.ok(&["runs", "j"]);
    assert!(text.contains("with 1 warning"), "{text}");
}

#[test]
fn a_snapshot_counts_the_files_it_holds_not_those_it_could_not_read() {
    let env = Env::dir_store("");
    write(&env.source.join("a.txt"), b"a");
    write(&env.source.join("secret.txt"), b"s");
    chmod(&env.source.join("secret.txt"), 0o000);
    // root reads any file: run the backup as an ordinary user, who cannot read secret.txt.
    let mut cmd = env.cmd(&["--json", "run", "j"]);
    if is_root() {
        let st = std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(env.dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        let mut as_nobody = std::process::Command::new("setpriv");
        as_nobody
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env("RACKVAULT_LOG", "warn");
        cmd = as_nobody;
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let snaps = env.json(&["snapshots", "j"]);
    assert_eq!(
        snaps[0]["files"], 1,
        "the snapshot holds one file, not the two scanned: {snaps}"
    );
    let runs = env.json(&["runs", "j"]);
    assert_eq!(runs[0]["warnings"], 1, "{runs}");
}

/// Runs backupd with a pseudo-terminal as stdin/stdout/stderr (util-linux `script`), as a person
/// at a terminal would; returns everything it drew.
fn on_a_terminal(env: &Env, args: &[&str]) -> String {
    let mut cmdline = format!(
        "{} --config {}",
        env!("CARGO_BIN_EXE_backupd"),
        env.config.display()
    );
    for a in args {
        cmdline.push(' ');
        cmdline.push_str(a);
    }
    let o = std::process::Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .output()
        .expect("script (util-linux) runs a command on a pseudo-terminal");
    assert!(
        o.status.success(),
        "{cmdline}: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).replace('\r', "\n")
}

#[test]
fn verify_and_restore_show_progress_on_a_terminal_only() {
    let env = Env::dir_store("");
    for i in 0..20 {
        write(&env.source.join(format!("f{i}")), &noise(100_000, i));
    }
    env.backup();
    let to = env.path("out");
    let drawn = on_a_terminal(
        &env,
        &["restore", "j", "latest", "--to", to.to_str().unwrap()],
    );
    assert!(drawn.contains("restoring"), "{drawn}");
    let drawn = on_a_terminal(&env, &["verify", "j"]);
    assert!(drawn.contains("verifying"), "{drawn}");
    // Off a terminal: no bar at all.
    let o = env.run(&["verify", "j"]);
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = env.run(&[
        "restore",
        "j",
        "latest",
        "--to",
        env.path("out2").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Arguments and options in `BIN ARGS --help` that have no description (clap prints one on the
/// same line after two spaces, or, in its long layout, on the next lines, indented).
pub fn undescribed(bin: &str, args: &[&str]) -> Vec<String> {
    let o = std::process::Command::new(bin)
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut missing = Vec::new();
    let mut in_list = false;
    for (i, l) in lines.iter().enumerate() {
        if *l == "Arguments:" || *l == "Options:" {
            in_list = true;
            continue;
        }
        if l.is_empty() {
            in_list = false;
        }
        let entry = l
            .strip_prefix("  ")
            .is_some_and(|r| r.starts_with(['-', '<', '[']));
        if in_list && entry {
            let inline = l.trim().contains("  ");
            let below = lines
                .get(i + 1)
                .is_some_and(|n| n.starts_with("          "));
            if !inline && !below {
                missing.push(format!("{args:?}: {}", l.trim()));
            }
        }
    }
    missing
}

#[test]
fn every_argument_is_described_in_help() {
    let bin = env!("CARGO_BIN_EXE_backupd");
    let mut missing = undescribed(bin, &[]);
    for sub in [
        "run",
        "snapshots",
        "ls",
        "restore",
        "verify",
        "diff",
        "prune",
        "runs",
        "check-config",
        "serve",
    ] {
        missing.extend(undescribed(bin, &[sub]));
    }
    assert!(
        missing.is_empty(),
        "arguments without a description:\n{}",
        missing.join("\n")
    );
}
