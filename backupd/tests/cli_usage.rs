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
