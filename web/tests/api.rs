//! The API over real HTTP: a server on 127.0.0.1:0 serving the real router, a real client
//! (ureq), and an in-memory stand-in for the daemon behind the `Backend` trait.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use web::model::{Health, JobView, RunQuery, RunView, SnapshotItem, Triggered};
use web::{ApiConfig, ApiError, Backend, Limits, ServeOptions};

const TOKEN: &str = "3f1c9a7e5b2d4f6081a3c5e7f9b1d3e5";

// ---- the daemon's stand-in ----

/// Jobs "home" and "db" exist; "boom" exists but every read of it panics (a bug in the
/// daemon); "slow" takes longer than the timeout of the test that asks for it.
#[derive(Default)]
struct FakeBackend {
    runs: Mutex<Vec<RunView>>,
}

const JOBS: [&str; 4] = ["home", "db", "boom", "slow"];

impl FakeBackend {
    fn known(&self, job: &str) -> Result<(), ApiError> {
        if JOBS.contains(&job) {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("no job named {job:?}")))
        }
    }

    fn view(&self, name: &str) -> JobView {
        let runs = self.runs.lock().unwrap();
        let last = runs.iter().rev().find(|r| r.job == name).cloned();
        let state = match last.as_ref().map(|r| r.status.as_str()) {
            Some("queued") => "queued",
            Some("running") => "running",
            _ => "idle",
        };
        JobView {
            name: name.into(),
            kind: "backup".into(),
            tape: None,
            source: format!("/srv/{name}"),
            consistency: "none".into(),
            schedule: Some("15 3 * * *".into()),
            next_run_at: Some("2026-11-26T03:15:00Z".into()),
            catch_up: true,
            stale_after_secs: Some(172800),
            stale: false,
            state: state.into(),
            last_run: last,
            last_success_at: None,
            snapshots: 2,
        }
    }
}

impl Backend for FakeBackend {
    fn health(&self) -> Health {
        let runs = self.runs.lock().unwrap();
        Health {
            status: "ok".into(),
            version: "0.1.0".into(),
            started_at: "2026-11-25T00:00:00Z".into(),
            uptime_secs: 42,
            jobs: JOBS.len(),
            running: 0,
            queued: runs.iter().filter(|r| r.status == "queued").count(),
            stale_jobs: vec![],
            failing_jobs: vec![],
            stopping: false,
        }
    }

    fn jobs(&self) -> Result<Vec<JobView>, ApiError> {
        Ok(["home", "db"].iter().map(|j| self.view(j)).collect())
    }

    fn job(&self, name: &str) -> Result<JobView, ApiError> {
        self.known(name)?;
        match name {
            "boom" => panic!("the fake daemon has a bug"),
            "slow" => std::thread::sleep(Duration::from_millis(1500)),
            _ => {}
        }
        Ok(self.view(name))
    }

    fn runs(&self, q: &RunQuery) -> Result<Vec<RunView>, ApiError> {
        let runs = self.runs.lock().unwrap();
        Ok(runs
            .iter()
            .rev()
            .filter(|r| q.job.as_ref().is_none_or(|j| *j == r.job))
            .filter(|r| q.status.as_ref().is_none_or(|s| *s == r.status))
            .filter(|r| q.before.is_none_or(|b| r.id < b))
            .take(q.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    fn run(&self, id: i64) -> Result<RunView, ApiError> {
        let runs = self.runs.lock().unwrap();
        runs.iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("no run with id {id}")))
    }

    fn snapshots(&self, job: &str) -> Result<Vec<SnapshotItem>, ApiError> {
        self.known(job)?;
        if job == "boom" {
            panic!("the fake daemon has a bug");
        }
        Ok(vec![SnapshotItem {
            name: "2026-11-24T03:15:00Z".into(),
            time: Some("2026-11-24T03:15:00Z".into()),
            used_bytes: Some(4096),
            referenced_bytes: Some(1 << 20),
            files: Some(12),
            bytes: Some(1 << 20),
            bytes_written: Some(8192),
        }])
    }

    fn trigger(&self, job: &str) -> Result<Triggered, ApiError> {
        self.known(job)?;
        let mut runs = self.runs.lock().unwrap();
        if let Some(r) = runs.iter().find(|r| r.job == job && r.status == "queued") {
            return Ok(Triggered {
                run_id: r.id,
                state: "already-queued".into(),
            });
        }
        let id = runs.len() as i64 + 1;
        runs.push(RunView {
            id,
            job: job.into(),
            snapshot: None,
            trigger: "manual".into(),
            status: "queued".into(),
            queued_at: Some("2026-11-25T04:00:00Z".into()),
            started_at: None,
            finished_at: None,
            error: None,
            stats: None,
            warnings: 0,
            progress: None,
            cancel_requested: false,
        });
        Ok(Triggered {
            run_id: id,
            state: "queued".into(),
        })
    }

    fn cancel(&self, id: i64) -> Result<RunView, ApiError> {
        let mut runs = self.runs.lock().unwrap();
        let r = runs
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| ApiError::NotFound(format!("no run with id {id}")))?;
        if r.status != "queued" && r.status != "running" {
            return Err(ApiError::Conflict(format!(
                "run {id} is already {}",
                r.status
            )));
        }
        r.status = "cancelled".into();
        r.finished_at = Some("2026-11-25T04:00:01Z".into());
        Ok(r.clone())
    }

    fn metrics(&self) -> String {
        "# TYPE rackvault_jobs gauge\nrackvault_jobs 4\n".into()
    }
}

// ---- a real server and client ----

struct Server {
    rt: tokio::runtime::Runtime,
    base: String,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    agent: ureq::Agent,
}

impl Server {
    /// A server whose requests have 10 s: time enough on a loaded machine (a panicking backend
    /// prints a backtrace before its 500). The timeout itself is tested with a shorter one.
    fn start(token: Option<&str>) -> Server {
        Server::start_with(
            token,
            Limits {
                request_timeout: Duration::from_secs(10),
                ..Limits::default()
            },
        )
    }

    fn start_with(token: Option<&str>, limits: Limits) -> Server {
        Server::start_serving(token, limits, ServeOptions::default())
    }

    fn start_serving(token: Option<&str>, limits: Limits, opts: ServeOptions) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let router = web::router_with_limits(
            Arc::new(FakeBackend::default()),
            ApiConfig {
                token: token.map(String::from),
                allowed_hosts: vec!["backup.example.lan".into()],
            },
            limits,
        );
        let (tx, rx) = oneshot::channel::<()>();
        let done = rt.spawn(web::serve_with(listener, router, opts, async {
            let _ = rx.await;
        }));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        Server {
            rt,
            base: format!("http://{addr}"),
            stop: Some(tx),
            done: Some(done),
            agent,
        }
    }

    fn send(&self, method: &str, path: &str, auth: Option<&str>, body: Option<Vec<u8>>) -> Reply {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let res = match body {
            Some(b) => self.agent.run(req.body(b).unwrap()),
            None => self.agent.run(req.body(()).unwrap()),
        };
        let mut res = res.unwrap_or_else(|e| panic!("{method} {path}: no HTTP response: {e}"));
        let header = |n: &str| {
            res.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let content_type = header("content-type");
        let allow = header("allow");
        let www_authenticate = header("www-authenticate");
        let status = res.status().as_u16();
        let text = res
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("{method} {path}: body: {e}"));
        Reply {
            status,
            content_type,
            allow,
            www_authenticate,
            text,
        }
    }

    fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, None)
    }

    fn post(&self, path: &str, auth: Option<&str>) -> Reply {
        self.send("POST", path, auth, None)
    }

    fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Sends `head` (request line and headers, without the blank line) as it is, with
    /// `Connection: close`, and returns the status and body.
    fn raw(&self, head: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(self.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(c, "{head}\r\nConnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply)
            .unwrap_or_else(|e| panic!("{head:?}: no complete answer: {e}"));
        let status = reply
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{head:?}: not an HTTP answer: {reply:?}"));
        let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: Option<String>,
    allow: Option<String>,
    www_authenticate: Option<String>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Asserts an `ErrorBody` with this status and returns its message.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        let obj = v.as_object().expect("error body is an object");
        assert_eq!(obj.len(), 1, "{self:?}");
        obj["error"]
            .as_str()
            .expect("error is a string")
            .to_string()
    }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

// ---- routes ----

#[test]
fn health_returns_the_backend_health() {
    let s = Server::start(None);
    let r = s.get("/api/v1/health");
    assert_eq!(r.status, 200);
    let h: Health = serde_json::from_value(r.json()).unwrap();
    assert_eq!(h.status, "ok");
    assert_eq!(h.jobs, 4);
}

#[test]
fn jobs_job_and_snapshots() {
    let s = Server::start(None);
    let r = s.get("/api/v1/jobs");
    assert_eq!(r.status, 200);
    let jobs: Vec<JobView> = serde_json::from_value(r.json()).unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["home", "db"]
    );

    let r = s.get("/api/v1/jobs/home");
    assert_eq!(r.status, 200);
    let job: JobView = serde_json::from_value(r.json()).unwrap();
    assert_eq!(job.name, "home");
    assert_eq!(job.state, "idle");

    let r = s.get("/api/v1/jobs/home/snapshots");
    assert_eq!(r.status, 200);
    let snaps: Vec<SnapshotItem> = serde_json::from_value(r.json()).unwrap();
    assert_eq!(snaps.len(), 1);

    let msg = s.get("/api/v1/jobs/nope").error(404);
    assert!(msg.contains("nope"), "{msg}");
    let msg = s.get("/api/v1/jobs/nope/snapshots").error(404);
    assert!(msg.contains("nope"), "{msg}");
}

#[test]
fn head_works_on_gets() {
    let s = Server::start(None);
    let r = s.send("HEAD", "/api/v1/jobs", None, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(r.text, "");
}

#[test]
fn trigger_list_get_and_cancel_runs() {
    let s = Server::start(Some(TOKEN));
    let auth = bearer(TOKEN);

    let r = s.post("/api/v1/jobs/home/run", Some(&auth));
    assert_eq!(r.status, 202);
    let t: Triggered = serde_json::from_value(r.json()).unwrap();
    assert_eq!(
        t,
        Triggered {
            run_id: 1,
            state: "queued".into()
        }
    );

    let r = s.post("/api/v1/jobs/home/run", Some(&auth));
    assert_eq!(r.status, 202);
    let t: Triggered = serde_json::from_value(r.json()).unwrap();
    assert_eq!(
        t,
        Triggered {
            run_id: 1,
            state: "already-queued".into()
        }
    );

    assert_eq!(s.post("/api/v1/jobs/db/run", Some(&auth)).status, 202);
    let msg = s.post("/api/v1/jobs/nope/run", Some(&auth)).error(404);
    assert!(msg.contains("nope"), "{msg}");

    let r = s.get("/api/v1/runs");
    assert_eq!(r.status, 200);
    let runs: Vec<RunView> = serde_json::from_value(r.json()).unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 1]);

    let runs: Vec<RunView> =
        serde_json::from_value(s.get("/api/v1/runs?job=home&status=queued&limit=10").json())
            .unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
    let runs: Vec<RunView> = serde_json::from_value(s.get("/api/v1/runs?before=2").json()).unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
    let runs: Vec<RunView> = serde_json::from_value(s.get("/api/v1/runs?limit=1").json()).unwrap();
    assert_eq!(runs.len(), 1);

    let r = s.get("/api/v1/runs/1");
    assert_eq!(r.status, 200);
    let run: RunView = serde_json::from_value(r.json()).unwrap();
    assert_eq!(
        (run.id, run.job.as_str(), run.status.as_str()),
        (1, "home", "queued")
    );
    s.get("/api/v1/runs/99").error(404);

    let r = s.post("/api/v1/runs/1/cancel", Some(&auth));
    assert_eq!(r.status, 200);
    let run: RunView = serde_json::from_value(r.json()).unwrap();
    assert_eq!(run.status, "cancelled");
    let msg = s.post("/api/v1/runs/1/cancel", Some(&auth)).error(409);
    assert!(msg.contains("cancelled"), "{msg}");
    s.post("/api/v1/runs/99/cancel", Some(&auth)).error(404);
}

#[test]
fn metrics_is_prometheus_text() {
    let s = Server::start(None);
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(r.text.contains("rackvault_jobs 4"), "{r:?}");
}

// ---- authentication ----

#[test]
fn trigger_needs_the_right_token() {
    let s = Server::start(Some(TOKEN));
    let r = s.post("/api/v1/jobs/home/run", None);
    let missing = r.error(401);
    assert_eq!(
        r.www_authenticate.as_deref(),
        Some(r#"Bearer realm="rackvault""#)
    );
    assert!(missing.contains("Authorization: Bearer"), "{missing}");

    for garbled in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", TOKEN] {
        let r = s.post("/api/v1/jobs/home/run", Some(garbled));
        r.error(401);
        assert_eq!(
            r.www_authenticate.as_deref(),
            Some(r#"Bearer realm="rackvault""#),
            "{garbled}"
        );
    }

    let wrong_tokens = [
        "3f1c9a7e5b2d4f6081a3c5e7f9b1d3e6".to_string(),
        TOKEN[..TOKEN.len() - 1].to_string(),
        format!("{TOKEN}0"),
        "x".into(),
    ];
    for wrong in &wrong_tokens {
        let r = s.post("/api/v1/jobs/home/run", Some(&bearer(wrong)));
        let msg = r.error(401);
        assert!(
            r.www_authenticate
                .as_deref()
                .unwrap()
                .starts_with(r#"Bearer realm="rackvault""#)
        );
        assert!(!msg.contains(TOKEN), "{msg}");
    }
    // Nothing was queued by the refused calls.
    assert_eq!(s.get("/api/v1/runs").json(), serde_json::json!([]));

    assert_eq!(
        s.post("/api/v1/jobs/home/run", Some(&bearer(TOKEN))).status,
        202
    );
    assert_eq!(
        s.post("/api/v1/jobs/home/run", Some(&format!("bearer {TOKEN}")))
            .status,
        202
    );

    // Cancel is guarded the same way.
    s.post("/api/v1/runs/1/cancel", None).error(401);
    s.post(
        "/api/v1/runs/1/cancel",
        Some(&bearer("wrong-token-wrong-token")),
    )
    .error(401);
    assert_eq!(
        s.post("/api/v1/runs/1/cancel", Some(&bearer(TOKEN))).status,
        200
    );
}

#[test]
fn mutations_are_forbidden_without_a_configured_token() {
    let s = Server::start(None);
    for auth in [None, Some(bearer(TOKEN))] {
        let msg = s.post("/api/v1/jobs/home/run", auth.as_deref()).error(403);
        assert_eq!(
            msg,
            "mutating API calls are disabled: set serve.token or serve.token_file"
        );
        s.post("/api/v1/runs/1/cancel", auth.as_deref()).error(403);
    }
    // Reads stay open.
    assert_eq!(s.get("/api/v1/jobs").status, 200);
}

#[test]
fn token_comparison_is_exact() {
    assert!(web::tokens_equal(TOKEN, TOKEN));
    assert!(!web::tokens_equal(
        TOKEN,
        "3f1c9a7e5b2d4f6081a3c5e7f9b1d3e6"
    ));
    assert!(!web::tokens_equal(TOKEN, &TOKEN[..10]));
    assert!(!web::tokens_equal(TOKEN, &format!("{TOKEN}{TOKEN}")));
    assert!(!web::tokens_equal(TOKEN, ""));
}

// ---- bad input ----

#[test]
fn bad_query_parameters_are_400s_naming_the_parameter() {
    let s = Server::start(None);
    for (query, name) in [
        ("status=done", "status"),
        ("status=", "status"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("before=0", "before"),
        ("before=-5", "before"),
        ("before=abc", "before"),
        ("before=99999999999999999999", "before"),
        ("job=", "job"),
        ("job=a&job=b", "job"),
        ("colour=blue", "colour"),
    ] {
        let msg = s.get(&format!("/api/v1/runs?{query}")).error(400);
        assert!(msg.contains(&format!("\"{name}\"")), "{query}: {msg}");
    }
    // The boundaries are accepted.
    assert_eq!(s.get("/api/v1/runs?limit=1").status, 200);
    assert_eq!(s.get("/api/v1/runs?limit=1000&before=1").status, 200);
}

#[test]
fn bad_run_ids_are_400s() {
    let s = Server::start(Some(TOKEN));
    for id in [
        "0",
        "-1",
        "abc",
        "1.5",
        "99999999999999999999",
        "%FF",
        "%20",
    ] {
        let msg = s.get(&format!("/api/v1/runs/{id}")).error(400);
        assert!(msg.contains("run id"), "{id}: {msg}");
        let msg = s
            .post(&format!("/api/v1/runs/{id}/cancel"), Some(&bearer(TOKEN)))
            .error(400);
        assert!(msg.contains("run id"), "{id}: {msg}");
    }
    // A job name that is not UTF-8 once decoded is a 400 too, not axum's plain text.
    let msg = s.get("/api/v1/jobs/%FF").error(400);
    assert!(msg.contains("job name"), "{msg}");
}

#[test]
fn unknown_routes_are_404_json() {
    let s = Server::start(None);
    for path in [
        "/",
        "/api",
        "/api/v1",
        "/api/v1/jobs/",
        "/api/v2/jobs",
        "/api/v1/jobs/home/extra/deep",
    ] {
        let msg = s.get(path).error(404);
        assert!(msg.contains("no such endpoint"), "{path}: {msg}");
    }
    s.post("/nowhere", Some(&bearer(TOKEN))).error(404);
}

#[test]
fn wrong_methods_are_405_json_with_allow() {
    let s = Server::start(Some(TOKEN));
    let r = s.send("DELETE", "/api/v1/jobs/home", None, None);
    let msg = r.error(405);
    assert!(
        msg.contains("DELETE") && msg.contains("/api/v1/jobs/home"),
        "{msg}"
    );
    assert_eq!(r.allow.as_deref(), Some("GET,HEAD"));
    let r = s.send("GET", "/api/v1/jobs/home/run", None, None);
    r.error(405);
    assert_eq!(r.allow.as_deref(), Some("POST"));
    let r = s.send("PUT", "/metrics", None, Some(b"x".to_vec()));
    r.error(405);
    assert_eq!(r.allow.as_deref(), Some("GET,HEAD"));
}

#[test]
fn oversized_bodies_are_413() {
    let s = Server::start(Some(TOKEN));
    let auth = bearer(TOKEN);
    let msg = s
        .send(
            "POST",
            "/api/v1/jobs/home/run",
            Some(&auth),
            Some(vec![b'x'; 64 * 1024]),
        )
        .error(413);
    assert!(msg.contains("4096 bytes"), "{msg}");
    // Even unauthenticated: the body is judged before anything else.
    s.send(
        "POST",
        "/api/v1/jobs/home/run",
        None,
        Some(vec![b'x'; 5000]),
    )
    .error(413);
    // A small body is tolerated (and ignored).
    assert_eq!(
        s.send(
            "POST",
            "/api/v1/jobs/home/run",
            Some(&auth),
            Some(b"{}".to_vec())
        )
        .status,
        202
    );
    // A chunked body (no Content-Length) is counted as it arrives.
    let chunked = ureq::SendBody::from_owned_reader(std::io::Cursor::new(vec![b'y'; 64 * 1024]));
    let mut res = s
        .agent
        .post(format!("{}/api/v1/jobs/home/run", s.base))
        .header("Authorization", &auth)
        .send(chunked)
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    let body: Value = res.body_mut().read_json().unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("4096 bytes"),
        "{body}"
    );
    // Beyond what the server drains (1 MiB) it answers at once and closes the connection; a
    // client that reads while it writes (here: one that sends only the headers) sees the 413.
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://");
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        raw,
        "POST /api/v1/runs/1/cancel HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    )
    .unwrap();
    let mut reply = String::new();
    raw.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert!(reply.contains(r#"{"error":"#), "{reply}");
    // Still serving.
    assert_eq!(s.get("/api/v1/health").status, 200);
}

// ---- robustness ----

#[test]
fn a_panicking_backend_is_a_500_and_the_server_keeps_serving() {
    let s = Server::start(None);
    for path in ["/api/v1/jobs/boom", "/api/v1/jobs/boom/snapshots"] {
        let msg = s.get(path).error(500);
        assert!(msg.contains("internal error"), "{msg}");
    }
    assert_eq!(s.get("/api/v1/jobs/home").status, 200);
    assert_eq!(s.get("/api/v1/health").status, 200);
}

#[test]
fn a_slow_request_times_out_with_503() {
    let s = Server::start_with(
        None,
        Limits {
            request_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
    );
    let msg = s.get("/api/v1/jobs/slow").error(503);
    assert!(msg.contains("timed out"), "{msg}");
    assert_eq!(s.get("/api/v1/health").status, 200);
}

#[test]
fn graceful_shutdown_completes() {
    let mut s = Server::start(None);
    assert_eq!(s.get("/api/v1/health").status, 200);
    s.stop.take().unwrap().send(()).unwrap();
    let done = s.done.take().unwrap();
    let result =
        s.rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), done).await })
            .expect("serve returned within 10 s of the shutdown signal")
            .expect("serve task did not panic");
    result.expect("serve returned Ok");
    // The listener is gone.
    let fresh: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    assert!(
        fresh
            .get(format!("{}/api/v1/health", s.base))
            .call()
            .is_err()
    );
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn random_requests_always_get_json_or_success() {
    let s = Server::start(Some(TOKEN));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut seen = std::collections::BTreeSet::new();
    let segments: [&str; 22] = [
        "api",
        "v1",
        "jobs",
        "runs",
        "home",
        "db",
        "boom",
        "nope",
        "run",
        "cancel",
        "snapshots",
        "health",
        "metrics",
        "1",
        "0",
        "-7",
        "%FF",
        "%2F",
        "%00",
        "..",
        "9223372036854775808",
        "",
    ];
    let queries: [&str; 12] = [
        "",
        "?",
        "?job=home",
        "?status=failed",
        "?status=x",
        "?limit=0",
        "?limit=5&before=3",
        "?before=%FF",
        "?limit=%00",
        "?a=b&c",
        "?job=home&job=db",
        "?%FF=1",
    ];
    let routes: [&str; 9] = [
        "/api/v1/health",
        "/api/v1/jobs",
        "/api/v1/jobs/{}",
        "/api/v1/jobs/{}/snapshots",
        "/api/v1/jobs/{}/run",
        "/api/v1/runs",
        "/api/v1/runs/{}",
        "/api/v1/runs/{}/cancel",
        "/metrics",
    ];
    let methods: [&str; 10] = [
        "GET", "GET", "GET", "HEAD", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
    ];
    let auths: [&str; 4] = [
        "",
        "Bearer nope",
        "Bearer 3f1c9a7e5b2d4f6081a3c5e7f9b1d3e5",
        "Basic x",
    ];
    for i in 0..200 {
        let mut path = String::new();
        if rng.next().is_multiple_of(2) {
            // A real route with a random job or id, so requests reach the handlers and checks.
            let seg = rng.pick(&segments);
            path.push_str(&rng.pick(&routes).replace("{}", seg));
        } else {
            if !rng.next().is_multiple_of(3) {
                path.push_str("/api/v1");
            }
            for _ in 0..(rng.next() % 4) {
                path.push('/');
                path.push_str(rng.pick(&segments));
            }
            if path.is_empty() {
                path.push('/');
            }
        }
        path.push_str(rng.pick(&queries));
        let method = rng.pick(&methods);
        let auth = Some(rng.pick(&auths)).filter(|a| !a.is_empty());
        let body = match method {
            "POST" | "PUT" | "PATCH" => match rng.next() % 3 {
                0 => None,
                1 => Some(vec![b'a'; 10]),
                _ => Some(vec![b'b'; 5000]),
            },
            _ => None,
        };
        let r = s.send(method, &path, auth, body);
        let ctx = format!("#{i} {method} {path} -> {r:?}");
        seen.insert(r.status);
        if method == "HEAD" {
            assert_eq!(r.text, "", "{ctx}");
            continue;
        }
        if r.status < 400 {
            assert!(matches!(r.status, 200 | 202), "{ctx}");
            if r.content_type.as_deref() != Some("text/plain; version=0.0.4; charset=utf-8") {
                r.json();
            }
        } else {
            assert!(![408, 502].contains(&r.status), "{ctx}");
            let msg = r.error(r.status);
            assert!(!msg.is_empty(), "{ctx}");
        }
    }
    // The mix reached the handlers, the checks and the fallbacks, not only the 404.
    for status in [200, 400, 401, 404, 405, 413] {
        assert!(seen.contains(&status), "no {status} among {seen:?}");
    }
    assert_eq!(s.get("/api/v1/health").status, 200);
}

// ---- Host check (DNS rebinding) ----

/// The message of a JSON error body.
fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

#[test]
fn requests_for_unknown_host_names_are_refused() {
    let s = Server::start(None);
    let port = s.addr().rsplit_once(':').unwrap().1.to_string();
    // A page on evil.example whose name now points at 127.0.0.1 (DNS rebinding).
    for path in ["/api/v1/jobs", "/metrics", "/api/v1/nothing"] {
        let (status, body) = s.raw(&format!("GET {path} HTTP/1.1\r\nHost: evil.example:{port}"));
        assert_eq!(status, 421, "{path}: {body}");
        let msg = error_of(&body);
        assert!(
            msg.contains("\"evil.example\"") && msg.contains("serve.allowed_hosts"),
            "{msg}"
        );
    }
    // The host named by an absolute request target counts, not the Host header.
    let (status, body) = s.raw(&format!(
        "GET http://evil.example:{port}/api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}"
    ));
    assert_eq!(status, 421, "{body}");
    // The address itself, loopback names, IP addresses and the configured name are answered.
    for host in [
        s.addr().to_string(),
        format!("localhost:{port}"),
        format!("LocalHost.:{port}"),
        format!("[::1]:{port}"),
        "10.1.2.3".into(),
        format!("backup.example.lan:{port}"),
        "Backup.Example.Lan".into(),
    ] {
        let (status, body) = s.raw(&format!("GET /api/v1/jobs HTTP/1.1\r\nHost: {host}"));
        assert_eq!(status, 200, "{host}: {body}");
    }
    // HTTP/1.0 without Host (no browser sends that) is answered; HTTP/1.1 requires one.
    let (status, body) = s.raw("GET /api/v1/health HTTP/1.0");
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.raw("GET /api/v1/health HTTP/1.1");
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("no Host header"), "{body}");
    let (status, body) = s.raw(&format!(
        "GET /api/v1/health HTTP/1.1\r\nHost: {}\r\nHost: evil.example",
        s.addr()
    ));
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("more than one Host"), "{body}");
    for bad in ["user@127.0.0.1", "127.0.0.1:x", "a b"] {
        let (status, body) = s.raw(&format!("GET /api/v1/health HTTP/1.1\r\nHost: {bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(error_of(&body).contains("not a host name"), "{body}");
    }
    // The real client (ureq sends Host: 127.0.0.1:port) is unaffected.
    assert_eq!(s.get("/api/v1/jobs").status, 200);
}

// ---- idle and slow clients ----

/// Makes sure this process may open `n` more descriptors than it has now, raising the soft
/// limit up to the hard one if needed.
fn ensure_open_files(n: u64) {
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    let want = open + n + 256;
    if r.rlim_cur != libc::RLIM_INFINITY && r.rlim_cur < want {
        assert!(
            r.rlim_max == libc::RLIM_INFINITY || r.rlim_max >= want,
            "this test needs {want} open files; the hard limit is {}",
            r.rlim_max
        );
        r.rlim_cur = want;
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
    }
}

/// Whether the server closed `c` within `within`; `poke` is written every 100 ms meanwhile
/// (empty: nothing is written).
fn closed_within(c: &mut std::net::TcpStream, within: Duration, poke: &[u8]) -> bool {
    use std::io::{ErrorKind, Read, Write};
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = std::time::Instant::now() + within;
    let mut poke = poke.iter().cycle();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        if let Some(b) = poke.next()
            && c.write_all(&[*b]).is_err()
        {
            return true;
        }
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn slow_and_idle_connections_are_closed_after_the_header_timeout() {
    use std::io::{Read, Write};
    let s = Server::start_serving(
        None,
        Limits::default(),
        ServeOptions {
            header_timeout: Duration::from_secs(1),
            ..ServeOptions::default()
        },
    );
    let connect = || std::net::TcpStream::connect(s.addr()).unwrap();
    // Nothing sent.
    assert!(closed_within(&mut connect(), Duration::from_secs(15), b""));
    // A request head trickling in a byte at a time (slowloris): the timeout is for the whole
    // head, not between bytes.
    let mut c = connect();
    write!(c, "GET /api/v1/health HTTP/1.1\r\nHost: {}\r\n", s.addr()).unwrap();
    assert!(closed_within(
        &mut c,
        Duration::from_secs(15),
        b"X-Slow: a\r\n"
    ));
    // Kept alive after a response, then idle.
    let mut c = connect();
    write!(
        c,
        "GET /api/v1/health HTTP/1.1\r\nHost: {}\r\n\r\n",
        s.addr()
    )
    .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"stopping\"") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the response was complete");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(closed_within(&mut c, Duration::from_secs(15), b""));
    // Meanwhile others are served.
    assert_eq!(s.get("/api/v1/health").status, 200);
}

#[test]
fn at_the_connection_limit_the_longest_idle_connection_makes_room() {
    const IDLE: usize = 300;
    ensure_open_files(IDLE as u64 + 64);
    let s = Server::start_serving(
        None,
        Limits::default(),
        ServeOptions {
            // Long enough that no connection times out during the test: room is made by the
            // limit alone.
            header_timeout: Duration::from_secs(120),
            max_connections: 16,
        },
    );
    let mut idle: Vec<std::net::TcpStream> = (0..IDLE)
        .map(|_| std::net::TcpStream::connect(s.addr()).unwrap())
        .collect();
    let start = std::time::Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let r = agent
        .get(format!("{}/api/v1/health", s.base))
        .call()
        .unwrap_or_else(|e| {
            panic!(
                "health did not answer with {IDLE} idle connections open ({:?}): {e}",
                start.elapsed()
            )
        });
    assert_eq!(r.status().as_u16(), 200);
    // The oldest idle connection was closed to make room; the newest is still open.
    assert!(closed_within(&mut idle[0], Duration::from_secs(10), b""));
    assert!(!closed_within(
        &mut idle[IDLE - 1],
        Duration::from_millis(300),
        b""
    ));
    // A connection whose request the server is working on is not closed: a slow request
    // started before a wave of new connections still gets its answer.
    let slow = std::thread::spawn({
        let base = s.base.clone();
        let agent = agent.clone();
        move || {
            agent
                .get(format!("{base}/api/v1/jobs/slow"))
                .call()
                .map(|r| r.status().as_u16())
        }
    });
    // A request whose body is still arriving is not busy: a slow client could hold its
    // connection that way.
    let mut trickling = std::net::TcpStream::connect(s.addr()).unwrap();
    {
        use std::io::Write;
        write!(
            trickling,
            "POST /api/v1/jobs/home/run HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\nx",
            s.addr()
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let more: Vec<std::net::TcpStream> = (0..32)
        .map(|_| std::net::TcpStream::connect(s.addr()).unwrap())
        .collect();
    assert_eq!(s.get("/api/v1/health").status, 200);
    // "slow" takes 1.5 s, well within the request timeout (30 s by default).
    assert_eq!(slow.join().unwrap().unwrap(), 200);
    assert!(closed_within(&mut trickling, Duration::from_secs(10), b""));
    drop(more);
    drop(idle);
}
