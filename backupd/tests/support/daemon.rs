//! `backupd serve` in tests: a config with the API on an ephemeral port, the real daemon binary
//! started and stopped with signals, its API over HTTP, its metrics parsed, and a webhook that
//! records the alerts it sends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A config with a directory store, the API on an ephemeral port, and the given jobs/extras.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    pub fn new(serve_extra: &str, jobs: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("rackvault.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"state\"\n[store]\nkind = \"dir\"\npath = \"store\"\n\n[serve]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{serve_extra}\n\n{jobs}\n"
            ),
        )
        .unwrap();
        Setup { dir, config }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_backupd"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RACKVAULT_LOG", "warn")
            .output()
            .unwrap()
    }

    pub fn start(&self) -> Daemon {
        self.start_with(&[])
    }

    pub fn start_with(&self, env: &[(&str, &str)]) -> Daemon {
        self.spawn(env, None)
    }

    /// The daemon with its open-file limit (soft and hard) set to `nofile`.
    pub fn start_with_open_files(&self, nofile: u64) -> Daemon {
        self.spawn(&[], Some(nofile))
    }

    pub fn spawn(&self, env: &[(&str, &str)], nofile: Option<u64>) -> Daemon {
        use std::os::unix::process::CommandExt;
        let log = self.path(&format!("daemon-{}.log", rand_suffix()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backupd"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("RACKVAULT_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = nofile {
            // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap();
        let info = self.path("state/daemon.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut d = Daemon {
            child,
            base: String::new(),
            log,
        };
        loop {
            if let Ok(text) = std::fs::read_to_string(&info)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["pid"].as_u64() == Some(d.child.id() as u64)
            {
                d.base = format!("http://{}", v["listen"].as_str().unwrap());
                return d;
            }
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!(
                    "daemon exited with {status} before it was ready:\n{}",
                    d.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready in 30 s:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent()
}

impl Daemon {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get_text(&self, path: &str) -> (u16, String) {
        let mut r = agent().get(format!("{}{path}", self.base)).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let (s, t) = self.get_text(path);
        (
            s,
            serde_json::from_str(&t).unwrap_or_else(|e| panic!("{path}: {e}: {t}")),
        )
    }

    pub fn post(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = agent().post(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut r = req.send_empty().unwrap();
        let t = r.body_mut().read_to_string().unwrap();
        (
            r.status().as_u16(),
            serde_json::from_str(&t).unwrap_or_else(|e| panic!("{path}: {e}: {t}")),
        )
    }

    pub fn trigger(&self, job: &str) -> i64 {
        let (s, v) = self.post(&format!("/api/v1/jobs/{job}/run"), Some(TOKEN));
        assert_eq!(s, 202, "{v}");
        v["run_id"].as_i64().unwrap()
    }

    pub fn run(&self, id: i64) -> Value {
        let (s, v) = self.get(&format!("/api/v1/runs/{id}"));
        assert_eq!(s, 200, "{v}");
        v
    }

    pub fn wait_run(&self, id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.run(id);
            if !matches!(v["status"].as_str(), Some("queued" | "running")) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} did not end: {v}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until the run is copying and has copied something (but not everything).
    pub fn wait_copying(&self, id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.run(id);
            let p = &v["progress"];
            if p["phase"] == "copying" && p["bytes_done"].as_u64().unwrap_or(0) > 0 {
                assert!(
                    p["bytes_done"].as_u64() < p["bytes_total"].as_u64(),
                    "the copy finished before the test could interrupt it: {v}"
                );
                return v;
            }
            assert!(
                matches!(v["status"].as_str(), Some("queued" | "running")),
                "{v}"
            );
            assert!(Instant::now() < deadline, "run {id} never copied: {v}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// SIGTERM, then waits for the exit (bounded).
    pub fn stop(mut self) -> (std::process::ExitStatus, Duration, String) {
        let t0 = Instant::now();
        self.signal(libc::SIGTERM);
        let status = wait_bounded(&mut self.child, Duration::from_secs(60));
        (status, t0.elapsed(), self.log())
    }

    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        wait_bounded(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn wait_bounded(child: &mut Child, max: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + max;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "process did not exit in {max:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses the Prometheus text format into (name, labels, value); panics on anything malformed.
pub fn parse_metrics(text: &str) -> Vec<(String, String, f64)> {
    let mut types = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            types.insert(
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            );
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                l.strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels {line:?}")),
            ),
            None => (series, ""),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name {name:?}"
        );
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| types.contains_key(*b)))
            .unwrap_or(name);
        let ty = types
            .get(base)
            .unwrap_or_else(|| panic!("{name} has no # TYPE line"));
        if ty == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.push((name.to_string(), labels.to_string(), v));
    }
    out
}

pub fn metric(ms: &[(String, String, f64)], name: &str, labels: &str) -> Option<f64> {
    ms.iter()
        .find(|(n, l, _)| n == name && l == labels)
        .map(|m| m.2)
}

/// A local HTTP endpoint that records JSON bodies and answers 204.
pub struct Hook {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

pub fn webhook_server() -> Hook {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                b.lock().unwrap().push(v);
            }
            let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    Hook { url, bodies }
}

impl Hook {
    pub fn wait_for(&self, event: &str, job: &str) -> Value {
        self.wait_for_message(event, job, "")
    }

    /// The first `event` alert for `job` whose message contains `text`.
    pub fn wait_for_message(&self, event: &str, job: &str, text: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = self.bodies.lock().unwrap().iter().find(|v| {
                v["event"] == event
                    && v["job"] == job
                    && v["message"].as_str().is_some_and(|m| m.contains(text))
            }) {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {event} alert for {job}: {:?}",
                self.bodies.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
