//! Pre and post hooks: shell commands run around a job's point-in-time view (freeze an
//! application, take a snapshot elsewhere, stop a service, …).
//!
//! A hook runs with `sh -c` in its own process group, stdin on /dev/null, and the run described
//! in `RACKVAULT_*` environment variables. Its output is captured (the last [`OUTPUT_LIMIT`]
//! bytes of each stream) and logged. When it outlives its timeout the whole group gets SIGTERM,
//! then SIGKILL after [`KILL_GRACE`]: a hook that started children (`sleep 100 & sleep 100`)
//! does not leave them running.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

/// Bytes kept of each of stdout and stderr (the end: that is where errors are).
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// Between SIGTERM and SIGKILL of a hook's process group.
pub const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long to keep reading output after the hook's shell exited while a background process it
/// started still holds the pipes open.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Lines of stderr quoted in an error.
const ERROR_LINES: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pre,
    Post,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hook is told, as environment variables (see `env`).
#[derive(Debug, Clone)]
pub struct HookEnv {
    pub job: String,
    pub snapshot: String,
    pub run_id: i64,
    /// The job's source directory.
    pub source: std::path::PathBuf,
    /// The directory being read (a snapshot or clone, or the source).
    pub view: Option<std::path::PathBuf>,
    /// For the post hook: "succeeded", "failed" or "cancelled" so far.
    pub outcome: Option<String>,
}

impl HookEnv {
    /// The `RACKVAULT_*` variables a hook of `phase` gets.
    pub fn vars(&self, phase: Phase) -> Vec<(&'static str, std::ffi::OsString)> {
        let mut v: Vec<(&'static str, std::ffi::OsString)> = vec![
            ("RACKVAULT_HOOK", phase.as_str().into()),
            ("RACKVAULT_JOB", self.job.clone().into()),
            ("RACKVAULT_SNAPSHOT", self.snapshot.clone().into()),
            ("RACKVAULT_RUN_ID", self.run_id.to_string().into()),
            ("RACKVAULT_SOURCE", self.source.clone().into_os_string()),
        ];
        if let Some(view) = &self.view {
            v.push(("RACKVAULT_VIEW", view.clone().into_os_string()));
        }
        if phase == Phase::Post
            && let Some(o) = &self.outcome
        {
            v.push(("RACKVAULT_OUTCOME", o.clone().into()));
        }
        v
    }
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot start the {phase} hook `{command}`: {source}")]
    Spawn {
        phase: Phase,
        command: String,
        source: std::io::Error,
    },
    #[error("the {phase} hook `{command}` {status}{}", stderr_suffix(.stderr))]
    Failed {
        phase: Phase,
        command: String,
        /// "exited with status 3" or "was killed by signal 9".
        status: String,
        stderr: String,
    },
    #[error(
        "the {phase} hook `{command}` timed out after {} s and was killed (raise [job.hooks] timeout if it needs longer){}",
        .timeout.as_secs_f64(), stderr_suffix(.stderr)
    )]
    TimedOut {
        phase: Phase,
        command: String,
        timeout: Duration,
        stderr: String,
    },
    #[error("the {phase} hook `{command}` was stopped: the run was cancelled")]
    Cancelled { phase: Phase, command: String },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with:\n{stderr}")
    }
}

/// Runs `command` with `sh -c`, killing it (and its process group) after `timeout`, or as soon
/// as `cancelled` says so (the pre hook of a cancelled run; a post hook is never cut short, it
/// may be what lets the application go on).
pub fn run(
    phase: Phase,
    command: &str,
    timeout: Duration,
    env: &HookEnv,
    cancelled: &dyn Fn() -> bool,
) -> Result<()> {
    run_hook(phase, command, timeout, env, cancelled).map_err(anyhow::Error::from)
}

/// [`run`] with a typed error.
pub fn run_hook(
    phase: Phase,
    command: &str,
    timeout: Duration,
    env: &HookEnv,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), HookError> {
    let started = Instant::now();
    tracing::info!(hook = %phase, job = %env.job, command, "running hook");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout reaches every process the hook started.
        .process_group(0);
    crate::interrupt::unblock_signals(&mut cmd);
    for (k, v) in env.vars(phase) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        phase,
        command: command.to_string(),
        source,
    })?;
    let out = Capture::start(child.stdout.take());
    let err = Capture::start(child.stderr.take());
    let deadline = started + timeout;
    let status = wait_until(&mut child, deadline, cancelled);
    let timed_out = status.is_none();
    let was_cancelled = timed_out && cancelled();
    let status = match status {
        Some(s) => s,
        None => kill_group(&mut child),
    };
    // The shell is gone; a background process it left may still hold the pipes open.
    let drain_until = if timed_out {
        Instant::now() + KILL_GRACE
    } else {
        (Instant::now() + DRAIN_GRACE).min(deadline.max(Instant::now()))
    };
    let out_done = out.finish(drain_until);
    let err_done = err.finish(drain_until);
    if !(out_done && err_done) {
        tracing::warn!(hook = %phase, command, "a background process of the hook still holds its output open; no longer capturing it (redirect the output of background commands)");
    }
    let stdout = out.text();
    let stderr = err.text();
    let ok = !timed_out && status.success();
    log_output(phase, "stdout", &stdout, ok);
    log_output(phase, "stderr", &stderr, ok);
    if was_cancelled {
        return Err(HookError::Cancelled {
            phase,
            command: command.to_string(),
        });
    }
    if timed_out {
        return Err(HookError::TimedOut {
            phase,
            command: command.to_string(),
            timeout,
            stderr: last_lines(&stderr, ERROR_LINES),
        });
    }
    if !status.success() {
        return Err(HookError::Failed {
            phase,
            command: command.to_string(),
            status: describe(status),
            stderr: last_lines(&stderr, ERROR_LINES),
        });
    }
    tracing::info!(hook = %phase, job = %env.job, secs = started.elapsed().as_secs_f64(), "hook finished");
    Ok(())
}

/// Waits for the child until `deadline` or until `cancelled`; None when it is still running then.
fn wait_until(
    child: &mut Child,
    deadline: Instant,
    cancelled: &dyn Fn() -> bool,
) -> Option<ExitStatus> {
    let mut pause = Duration::from_millis(5);
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(e) => {
                // Cannot happen for our own child; treat it as gone rather than spin.
                tracing::warn!(error = %e, "cannot wait for a hook");
                return Some(ExitStatus::from_raw(1 << 8));
            }
        }
        let now = Instant::now();
        if now >= deadline || cancelled() {
            return None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// SIGTERM to the hook's process group, SIGKILL after the grace period; reaps the shell.
fn kill_group(child: &mut Child) -> ExitStatus {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: plain kill(2) on the group we created (process_group(0) makes pgid == pid).
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let status = wait_until(child, Instant::now() + KILL_GRACE, &|| false);
    // Children of the hook may ignore SIGTERM even when the shell did not: kill the rest too.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    match status {
        Some(s) => s,
        None => child.wait().unwrap_or(ExitStatus::from_raw(libc::SIGKILL)),
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("failed ({status})"),
    }
}

fn log_output(phase: Phase, stream: &str, text: &str, ok: bool) {
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    if ok {
        tracing::info!(hook = %phase, stream, "hook output:\n{text}");
    } else {
        tracing::warn!(hook = %phase, stream, "hook output:\n{text}");
    }
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One output stream read in a thread into a bounded buffer that keeps the end.
struct Capture {
    buf: Arc<Mutex<Tail>>,
    thread: Option<JoinHandle<()>>,
    done: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

#[derive(Default)]
struct Tail {
    bytes: VecDeque<u8>,
    dropped: bool,
}

impl Capture {
    fn start(pipe: Option<impl Read + Send + 'static>) -> Capture {
        let buf = Arc::new(Mutex::new(Tail::default()));
        let done = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let thread = pipe.map(|mut pipe| {
            let (buf, done) = (buf.clone(), done.clone());
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            let mut t = buf.lock().unwrap_or_else(|p| p.into_inner());
                            t.bytes.extend(&chunk[..n]);
                            let excess = t.bytes.len().saturating_sub(OUTPUT_LIMIT);
                            if excess > 0 {
                                t.bytes.drain(..excess);
                                t.dropped = true;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let (m, cv) = &*done;
                *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
                cv.notify_all();
            })
        });
        if thread.is_none() {
            *done.0.lock().unwrap() = true;
        }
        Capture { buf, thread, done }
    }

    /// Waits for the end of the stream until `until`; false when it is still open then (the
    /// thread is left to drain it in the background).
    fn finish(&self, until: Instant) -> bool {
        let (m, cv) = &*self.done;
        let mut finished = m.lock().unwrap_or_else(|p| p.into_inner());
        while !*finished {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            finished = cv
                .wait_timeout(finished, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    fn text(&self) -> String {
        let t = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b) = t.bytes.as_slices();
        let mut s = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        if t.dropped {
            s.insert_str(0, "[…earlier output dropped…]\n");
        }
        s
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Join only a finished reader; one still blocked on a pipe is detached.
        if *self.done.0.lock().unwrap_or_else(|p| p.into_inner())
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HookEnv {
        HookEnv {
            job: "j".into(),
            snapshot: "20261125T000000Z".into(),
            run_id: 7,
            source: "/src".into(),
            view: None,
            outcome: Some("failed".into()),
        }
    }

    #[test]
    fn passes_environment_and_reports_failure_with_stderr() {
        run(
            Phase::Post,
            "test \"$RACKVAULT_JOB/$RACKVAULT_RUN_ID/$RACKVAULT_HOOK/$RACKVAULT_OUTCOME\" = j/7/post/failed",
            Duration::from_secs(10),
            &env(),
            &|| false,
        )
        .unwrap();
        // The outcome is for post hooks only.
        run(
            Phase::Pre,
            "test -z \"$RACKVAULT_OUTCOME\" && test -z \"${RACKVAULT_VIEW+x}\"",
            Duration::from_secs(10),
            &env(),
            &|| false,
        )
        .unwrap();
        let e = run(
            Phase::Pre,
            "echo out; echo bad thing >&2; exit 3",
            Duration::from_secs(10),
            &env(),
            &|| false,
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("pre hook"), "{msg}");
        assert!(msg.contains("exited with status 3"), "{msg}");
        assert!(msg.contains("bad thing"), "{msg}");
        assert!(!msg.contains("out\n"), "{msg}");
    }

    #[test]
    fn timeout_kills_the_group() {
        let t = Instant::now();
        let e = run(
            Phase::Pre,
            "sleep 100 & sleep 100",
            Duration::from_millis(300),
            &env(),
            &|| false,
        )
        .unwrap_err();
        assert!(format!("{e}").contains("timed out after 0.3 s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    }

    #[test]
    fn a_cancelled_run_stops_its_pre_hook_at_once() {
        let t = Instant::now();
        let e = run_hook(
            Phase::Pre,
            "sleep 100 & sleep 100",
            Duration::from_secs(60),
            &env(),
            &|| t.elapsed() > Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(e, HookError::Cancelled { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    }

    #[test]
    fn background_child_holding_the_pipes_does_not_block() {
        let t = Instant::now();
        run(
            Phase::Post,
            "sleep 5 & echo started",
            Duration::from_secs(60),
            &env(),
            &|| false,
        )
        .unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[test]
    fn output_is_bounded() {
        let c = Capture::start(Some(std::io::Cursor::new(vec![b'x'; 3 * OUTPUT_LIMIT])));
        assert!(c.finish(Instant::now() + Duration::from_secs(5)));
        let s = c.text();
        assert!(s.starts_with("[…earlier output dropped…]"));
        assert!(s.len() < OUTPUT_LIMIT + 100);
    }
}
