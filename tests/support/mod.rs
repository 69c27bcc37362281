//! What the scenarios share: the README's shell blocks, a private copy of the repository to run them
//! in, and a shell runner with a deadline.
#![allow(dead_code)] // each scenario binary uses part of it

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The ```sh blocks of a Markdown file, in order.
pub fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == "```sh" => current = Some(String::new()),
            Some(b) if line.trim_end() == "```" => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "README.md has an unclosed ```sh block");
    blocks
}

/// The README's blocks, each found by a command it must contain (so a rewritten README fails here
/// by name, not by running the wrong block).
pub struct Readme {
    blocks: Vec<String>,
}

impl Readme {
    pub fn load() -> Readme {
        let text = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
        Readme {
            blocks: shell_blocks(&text),
        }
    }

    pub fn block_with(&self, needle: &str) -> &str {
        let found: Vec<&String> = self.blocks.iter().filter(|b| b.contains(needle)).collect();
        assert_eq!(
            found.len(),
            1,
            "expected exactly one ```sh block of README.md containing {needle:?}"
        );
        found[0]
    }
}

/// A copy of the repository's files (tracked and untracked but not ignored, as the working tree has
/// them) at a fixed place in the target directory, so that `cargo run --release` there reuses the
/// release build of earlier runs; modification times are kept for the same reason. Its builds go
/// to a target directory of their own ([`scenario_target_dir`]): cargo names a workspace member's
/// artifacts by its path inside the workspace, so a copy sharing the repository's target directory
/// would overwrite (and be handed) the repository's own artifacts. The lock is held for as long as
/// the value lives, so scenarios using the same copy run one after the other; the README's data
/// (`var/`, the virtual library) is made anew.
pub struct Checkout {
    pub dir: PathBuf,
    pub scratch: tempfile::TempDir,
    _lock: std::fs::File,
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// Where the copies' own builds go (see [`Checkout`]).
pub fn scenario_target_dir() -> PathBuf {
    target_dir().join("scenarios/target")
}

impl Checkout {
    pub fn new(name: &str) -> Checkout {
        let base = target_dir().join("scenarios");
        std::fs::create_dir_all(&base).expect("create target/scenarios");
        let lock = std::fs::File::create(base.join(format!("{name}.lock"))).expect("lock file");
        // SAFETY: flock on a descriptor we own.
        assert_eq!(
            unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) },
            0
        );
        let dir = base.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("remove the previous checkout");
        }
        std::fs::create_dir_all(&dir).expect("create the checkout");
        let copy = format!(
            "git ls-files -z --cached --others --exclude-standard \
             | xargs -0 sh -c 'for f; do [ -f \"$f\" ] && printf \"%s\\0\" \"$f\"; done' _ \
             | xargs -0 cp -a --parents -t {}",
            shell_quote(&dir)
        );
        let st = Command::new("bash")
            .args(["-c", &format!("set -o pipefail; {copy}")])
            .current_dir(repo())
            .status()
            .expect("run git ls-files | cp");
        assert!(
            st.success(),
            "copying the repository to {} failed",
            dir.display()
        );
        Checkout {
            dir,
            scratch: tempfile::tempdir().expect("scratch dir"),
            _lock: lock,
        }
    }
}

pub fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

pub struct Ran {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    #[track_caller]
    pub fn ok(self, what: &str) -> Ran {
        assert!(
            self.status.success(),
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `script` with `bash -e -o pipefail` (each command echoed with -x) in `dir`, in a process
/// group of its own that is killed whole when the deadline passes or the script ends (a
/// backgrounded daemon cannot outlive it).
pub fn bash(dir: &Path, env: &[(&str, &Path)], script: &str, deadline: Duration) -> Ran {
    let mut cmd = Command::new("bash");
    cmd.args(["-x", "-e", "-o", "pipefail", "-c", script])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn bash");
    let pgid = child.id() as i32;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for bash") {
            break st;
        }
        if start.elapsed() > deadline {
            // SAFETY: signalling the process group we created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let st = child.wait().expect("wait for bash");
            let (o, e) = (out_t.join().unwrap(), err_t.join().unwrap());
            panic!(
                "script timed out after {deadline:?} ({st}):\n{script}\n--- stdout\n{o}\n--- stderr\n{e}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever the script left running in its group goes with it.
    // SAFETY: as above; ESRCH when nothing is left is fine.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    Ran {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}
