//! `backupd serve` as a user runs it: the real binary, a real HTTP client, real signals.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::daemon::*;

fn job(name: &str, source: &str, extra: &str) -> String {
    format!("[[job]]\nname = \"{name}\"\nsource = \"{source}\"\n{extra}\n")
}

fn small_source(dir: &Path, files: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        std::fs::write(
            dir.join(format!("f{i}.txt")),
            format!("file {i}\n").repeat(100),
        )
        .unwrap();
    }
}

/// A source that takes a while to copy (non-zero data, so every byte is written).
fn big_source(dir: &Path, mb: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let chunk = support::noise(1 << 20, 7);
    for f in 0..4 {
        let mut out = std::fs::File::create(dir.join(format!("big{f}.bin"))).unwrap();
        for _ in 0..mb / 4 {
            out.write_all(&chunk).unwrap();
        }
    }
}

fn store_snapshots(s: &Setup, job: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(s.path(&format!("store/{job}/snapshots")))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn api_runs_jobs_through_the_queue_with_auth_stats_and_metrics() {
    let s = Setup::new("", &job("a", "src", ""));
    small_source(&s.path("src"), 20);
    let d = s.start();

    let (st, h) = d.get("/api/v1/health");
    assert_eq!((st, h["status"].as_str()), (200, Some("ok")), "{h}");
    let (_, jobs) = d.get("/api/v1/jobs");
    assert_eq!(jobs[0]["name"], "a");
    assert_eq!(jobs[0]["state"], "idle");

    // Mutations need the token, compared in full.
    assert_eq!(d.post("/api/v1/jobs/a/run", None).0, 401);
    assert_eq!(
        d.post("/api/v1/jobs/a/run", Some("test-token-0123456789abcdeX"))
            .0,
        401
    );
    assert_eq!(d.post("/api/v1/jobs/nope/run", Some(TOKEN)).0, 404);
    let id = d.trigger("a");
    let r = d.wait_run(id);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["trigger"], "manual");
    assert_eq!(r["stats"]["scanned_files"], 20);
    assert!(
        r["progress"].is_null(),
        "no live progress after the end: {r}"
    );
    let (st, snaps) = d.get("/api/v1/jobs/a/snapshots");
    assert_eq!(st, 200);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["name"].as_str(), r["snapshot"].as_str());
    assert_eq!(snaps[0]["files"], 20);
    let (st, v) = d.post(&format!("/api/v1/runs/{id}/cancel"), Some(TOKEN));
    assert_eq!(st, 409, "a finished run cannot be cancelled: {v}");

    // The CLI hands its run to the daemon and waits for it.
    small_source(&s.path("src/more"), 3);
    let o = s.cli(&["run", "a"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("handed to backupd serve"));
    let (_, runs) = d.get("/api/v1/runs?job=a");
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter()
            .all(|r| r["status"] == "succeeded" && r["trigger"] == "manual")
    );
    assert_eq!(
        runs[0]["stats"]["new_files"], 3,
        "incremental: only the new files: {}",
        runs[0]
    );
    let (st, _) = d.get("/api/v1/runs?status=bogus");
    assert_eq!(st, 400);

    // The catalog holds the same history for `backupd runs`.
    let o = s.cli(&["runs", "--json"]);
    let cli_runs: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(cli_runs.as_array().unwrap().len(), 2);

    let (st, text) = d.get_text("/metrics");
    assert_eq!(st, 200);
    let ms = parse_metrics(&text);
    let now = jiff::Timestamp::now().as_second() as f64;
    let last_ok =
        metric(&ms, "backupd_last_success_timestamp_seconds", "job=\"a\"").expect("last success");
    assert!((now - last_ok).abs() < 120.0, "{last_ok} vs {now}");
    assert_eq!(
        metric(&ms, "backupd_runs_total", "job=\"a\",outcome=\"succeeded\""),
        Some(2.0)
    );
    assert_eq!(
        metric(&ms, "backupd_failures_total", "job=\"a\""),
        Some(0.0)
    );
    assert_eq!(metric(&ms, "backupd_snapshots", "job=\"a\""), Some(2.0));
    assert!(metric(&ms, "backupd_store_used_bytes", "job=\"a\"").unwrap() > 0.0);
    assert!(metric(&ms, "backupd_bytes_written_total", "job=\"a\"").unwrap() > 0.0);
    assert_eq!(
        metric(&ms, "backupd_scheduler_max_concurrent", ""),
        Some(1.0)
    );
    assert!(metric(&ms, "process_resident_memory_bytes", "").unwrap() > 1e6);

    let (status, took, log) = d.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(
        took < Duration::from_secs(10),
        "idle daemon stops at once, took {took:?}"
    );
    assert!(!s.path("state/daemon.json").exists());
}

#[test]
fn a_second_daemon_on_the_same_state_directory_refuses_to_start() {
    let s = Setup::new("", &job("a", "src", ""));
    small_source(&s.path("src"), 1);
    let d = s.start();
    let o = Command::new(env!("CARGO_BIN_EXE_backupd"))
        .arg("--config")
        .arg(&s.config)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already using state directory"), "{err}");
    assert!(err.contains(&format!("pid {}", d.child.id())), "{err}");
    let (st, _) = d.get("/api/v1/health");
    assert_eq!(st, 200, "the first daemon is unaffected");
}

#[test]
fn schedules_fire_one_run_at_a_time_under_the_global_limit() {
    // `tick` fires every second but takes ~1.5 s: fires while it runs queue one run, never more.
    let jobs = format!(
        "{}{}",
        job(
            "tick",
            "src",
            "schedule = \"* * * * * *\"\n[job.hooks]\npre = \"sleep 1.5\""
        ),
        job("other", "src", "[job.hooks]\npre = \"sleep 0.5\""),
    );
    let s = Setup::new("max_concurrent = 1", &jobs);
    small_source(&s.path("src"), 2);
    let d = s.start();
    let other = d.trigger("other");
    let t0 = Instant::now();
    let mut max_running = 0;
    let mut max_queued = 0;
    while t0.elapsed() < Duration::from_secs(7) {
        let (_, h) = d.get("/api/v1/health");
        max_running = max_running.max(h["running"].as_u64().unwrap());
        max_queued = max_queued.max(h["queued"].as_u64().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(d.wait_run(other)["status"], "succeeded");
    let (status, _, log) = d.stop();
    assert!(status.success(), "{log}");
    assert_eq!(max_running, 1, "global limit of 1");
    assert!(
        max_queued <= 2,
        "one queued run per job at most, saw {max_queued}"
    );

    let o = s.cli(&["runs", "tick", "--json", "--limit", "100"]);
    let runs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let done: Vec<&Value> = runs.iter().filter(|r| r["status"] == "succeeded").collect();
    assert!(done.len() >= 2, "scheduled runs happened: {runs:?}");
    assert!(
        done.len() <= 6,
        "7 s of 1.5 s runs cannot hold more: {runs:?}"
    );
    assert!(done.iter().all(|r| r["trigger"] == "schedule"));
    // Never overlapping: each run started after the one before it finished.
    let mut spans: Vec<(jiff::Timestamp, jiff::Timestamp)> = done
        .iter()
        .map(|r| {
            (
                r["started_at"].as_str().unwrap().parse().unwrap(),
                r["finished_at"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "overlapping runs: {w:?}");
    }
}

#[test]
fn sigterm_aborts_a_running_job_with_nothing_published_or_lets_it_finish() {
    let s = Setup::new("stop_grace = \"0s\"", &job("big", "src", ""));
    big_source(&s.path("src"), 768);
    let d = s.start();
    let id = d.trigger("big");
    d.wait_copying(id);
    let (status, took, log) = d.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(took < Duration::from_secs(20), "abort took {took:?}");
    let o = s.cli(&["runs", "big", "--json"]);
    let runs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs[0]["id"], id);
    assert_eq!(runs[0]["status"], "cancelled", "{:?}", runs[0]);
    assert!(store_snapshots(&s, "big").is_empty(), "nothing published");

    // With a grace period the run finishes and is published.
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("\"0s\"", "\"5m\""),
    )
    .unwrap();
    let d = s.start();
    let id = d.trigger("big");
    d.wait_copying(id);
    let (status, _, log) = d.stop();
    assert!(status.success(), "{status}\n{log}");
    let o = s.cli(&["runs", "big", "--json"]);
    let runs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs[0]["id"], id);
    assert_eq!(runs[0]["status"], "succeeded", "{:?}", runs[0]);
    assert_eq!(store_snapshots(&s, "big").len(), 1);
}

#[test]
fn a_daemon_killed_mid_run_marks_the_run_interrupted_and_loses_nothing() {
    let s = Setup::new("", &job("big", "src", ""));
    big_source(&s.path("src"), 512);
    // An earlier snapshot that must survive.
    let o = s.cli(&["run", "big"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = store_snapshots(&s, "big");
    assert_eq!(before.len(), 1);
    std::fs::write(s.path("src/big0.bin"), support::noise(300 << 20, 9)).unwrap();

    let d = s.start();
    let id = d.trigger("big");
    d.wait_copying(id);
    d.kill9();
    assert_eq!(
        store_snapshots(&s, "big"),
        before,
        "nothing published, nothing lost"
    );

    let d = s.start();
    let r = d.run(id);
    assert_eq!(r["status"], "interrupted", "{r}");
    let id2 = d.trigger("big");
    let r2 = d.wait_run(id2);
    assert_eq!(r2["status"], "succeeded", "{r2}");
    let after = store_snapshots(&s, "big");
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], before[0]);
    let o = s.cli(&["verify", "big", "--all"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        !s.path("store/big/.incomplete")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "staging cleaned"
    );
}

#[test]
fn a_missed_schedule_is_caught_up_once_after_downtime() {
    let jobs = format!(
        "{}{}",
        job("daily", "src", "schedule = \"0 3 * * *\""),
        job(
            "nocatch",
            "src",
            "schedule = \"0 3 * * *\"\ncatch_up = false"
        ),
    );
    let s = Setup::new("", &jobs);
    small_source(&s.path("src"), 2);
    for j in ["daily", "nocatch"] {
        let o = s.cli(&["run", j]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // Pretend those runs happened three days ago: three 03:00 runs were missed since.
    let db = rusqlite::Connection::open(s.path("state/catalog.sqlite")).unwrap();
    let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(72)).to_string();
    db.execute("UPDATE runs SET started_at = ?1, queued_at = ?1", [&old])
        .unwrap();
    drop(db);

    let d = s.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let caught = loop {
        let (_, runs) = d.get("/api/v1/runs?job=daily&status=succeeded");
        if let Some(r) = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["trigger"] == "catch-up")
        {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no catch-up run:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(caught["job"], "daily");
    std::thread::sleep(Duration::from_millis(500));
    let (_, all) = d.get("/api/v1/runs?limit=100");
    let all = all.as_array().unwrap();
    assert_eq!(
        all.iter().filter(|r| r["trigger"] == "catch-up").count(),
        1,
        "once: {all:?}"
    );
    assert!(
        all.iter()
            .all(|r| r["job"] != "nocatch" || r["trigger"] == "cli"),
        "{all:?}"
    );
    let (_, j) = d.get("/api/v1/jobs/daily");
    assert!(j["next_run_at"].as_str().is_some(), "{j}");
}

#[test]
fn alerts_on_failure_recovery_and_staleness_reach_a_webhook() {
    let hook = webhook_server();
    let jobs = format!(
        "{}{}[[alert]]\nkind = \"webhook\"\nurl = \"{}\"\n",
        job("flaky", "missing", ""),
        job("quiet", "src", "stale_after = \"2s\""),
        hook.url
    );
    let s = Setup::new("", &jobs);
    small_source(&s.path("src"), 1);
    let d = s.start();
    let id = d.trigger("flaky");
    assert_eq!(d.wait_run(id)["status"], "failed");
    let f = hook.wait_for("failure", "flaky");
    assert_eq!(f["run_id"], id);
    assert!(f["error"].as_str().unwrap().contains("missing"), "{f}");
    let (_, h) = d.get("/api/v1/health");
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["failing_jobs"][0], "flaky");

    small_source(&s.path("missing"), 1);
    let id = d.trigger("flaky");
    assert_eq!(d.wait_run(id)["status"], "succeeded");
    hook.wait_for("recovery", "flaky");

    // `quiet` never runs: stale 2 s after the daemon started.
    let st = hook.wait_for("stale", "quiet");
    assert_eq!(st["job"], "quiet");
    let (_, text) = d.get_text("/metrics");
    let ms = parse_metrics(&text);
    assert_eq!(metric(&ms, "backupd_job_stale", "job=\"quiet\""), Some(1.0));
    assert_eq!(
        metric(&ms, "backupd_failures_total", "job=\"flaky\""),
        Some(1.0)
    );
    let id = d.trigger("quiet");
    assert_eq!(d.wait_run(id)["status"], "succeeded");
    hook.wait_for("recovery", "quiet");
    let n_failure = hook
        .bodies
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["event"] == "failure")
        .count();
    assert_eq!(n_failure, 1);
}

#[test]
fn systemd_hears_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let s = Setup::new("", &job("a", "src", ""));
    small_source(&s.path("src"), 1);
    let sock_path = s.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let d = s.start_with(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains("STATUS=1 jobs"), "{msg}");
    let (status, _, log) = d.stop();
    assert!(status.success(), "{log}");
    let mut saw_stopping = false;
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        saw_stopping |= String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
    }
    assert!(saw_stopping);
}

#[test]
fn runs_are_cancelled_through_the_api_queued_or_running() {
    let jobs = format!("{}{}", job("big", "src", ""), job("small", "small", ""));
    let s = Setup::new("max_concurrent = 1", &jobs);
    big_source(&s.path("src"), 512);
    small_source(&s.path("small"), 2);
    let d = s.start();
    let big = d.trigger("big");
    d.wait_copying(big);
    // `small` waits behind `big` (limit 1); cancelling it drops it from the queue.
    let small = d.trigger("small");
    assert_eq!(d.run(small)["status"], "queued");
    assert_eq!(d.post(&format!("/api/v1/runs/{small}/cancel"), None).0, 401);
    let (st, v) = d.post(&format!("/api/v1/runs/{small}/cancel"), Some(TOKEN));
    assert_eq!((st, v["status"].as_str()), (200, Some("cancelled")), "{v}");
    // Cancelling the running one stops its copy; nothing is published.
    let (st, v) = d.post(&format!("/api/v1/runs/{big}/cancel"), Some(TOKEN));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["cancel_requested"], true, "{v}");
    let r = d.wait_run(big);
    assert_eq!(r["status"], "cancelled", "{r}");
    assert!(store_snapshots(&s, "big").is_empty());
    assert!(
        store_snapshots(&s, "small").is_empty(),
        "the cancelled queued run never ran"
    );
    assert_eq!(d.post("/api/v1/runs/999999/cancel", Some(TOKEN)).0, 404);
    // The job runs normally afterwards.
    let again = d.trigger("big");
    assert_eq!(d.wait_run(again)["status"], "succeeded");
}

// ---- idle and slow clients; the Host check ----

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

/// Whether the daemon closed `c` within `within`; `poke` is written a byte every 100 ms
/// meanwhile (empty: nothing is written).
fn closed_within(c: &mut std::net::TcpStream, within: Duration, poke: &[u8]) -> bool {
    use std::io::ErrorKind;
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut poke = poke.iter().cycle();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
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
fn idle_and_slow_connections_do_not_starve_the_api() {
    const IDLE: usize = 300;
    ensure_open_files(IDLE as u64 + 64);
    let s = Setup::new("", "");
    // 256 open files: without a connection limit, 300 idle connections use them all and
    // `accept` fails, so nothing more is served.
    let d = s.start_with_open_files(256);
    let addr = d.base.trim_start_matches("http://").to_string();
    let idle: Vec<std::net::TcpStream> = (0..IDLE)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let quick = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let t0 = Instant::now();
    let r = quick.get(format!("{}/api/v1/health", d.base)).call();
    let status = r.map(|r| r.status().as_u16()).unwrap_or_else(|e| {
        panic!(
            "/api/v1/health did not answer with {IDLE} idle connections open ({:?}): {e}\n{}",
            t0.elapsed(),
            d.log()
        )
    });
    assert_eq!(status, 200);

    // A request head sent a byte at a time, and a kept-alive connection left idle, are
    // closed by the daemon (header timeout: 10 s) while others are served.
    let slow = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            write!(c, "GET /api/v1/health HTTP/1.1\r\nHost: {addr}\r\n").unwrap();
            closed_within(&mut c, Duration::from_secs(40), b"X-Slow: a\r\n")
        }
    });
    let kept = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            write!(c, "GET /api/v1/health HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("\"stopping\"") {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0, "closed before the response was complete");
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
            closed_within(&mut c, Duration::from_secs(40), b"")
        }
    });
    for _ in 0..5 {
        assert_eq!(d.get("/api/v1/health").0, 200);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        slow.join().unwrap(),
        "a request head trickling in was not cut off in 40 s"
    );
    assert!(
        kept.join().unwrap(),
        "an idle kept-alive connection was not closed in 40 s"
    );
    assert_eq!(d.get("/api/v1/health").0, 200);
    let (status, took, log) = d.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    assert!(log.contains("half the open-file limit"), "{log}");
    drop(idle);
}

/// Sends a GET with this Host header (none: no header, HTTP/1.0) and returns status and body.
fn get_as(addr: &str, path: &str, host: Option<&str>) -> (u16, String) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    match host {
        Some(h) => write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"
        ),
        None => write!(c, "GET {path} HTTP/1.0\r\n\r\n"),
    }
    .unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {reply:?}"));
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

#[test]
fn requests_for_host_names_the_daemon_does_not_answer_to_are_refused() {
    let s = Setup::new(
        "allowed_hosts = [\"backup.example.lan\"]",
        &job("a", "src", ""),
    );
    small_source(&s.path("src"), 3);
    let d = s.start();
    let addr = d.base.trim_start_matches("http://").to_string();
    let port = addr.rsplit_once(':').unwrap().1;

    // A DNS-rebinding page: its own name, now pointing at 127.0.0.1.
    for path in ["/api/v1/jobs", "/metrics"] {
        let (st, body) = get_as(&addr, path, Some(&format!("evil.example:{port}")));
        assert_eq!(st, 421, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains("\"evil.example\"") && msg.contains("serve.allowed_hosts"),
            "{msg}"
        );
    }
    // The listen address (what curl and Prometheus send for http://127.0.0.1:port), localhost,
    // the configured name, and HTTP/1.0 without Host are answered.
    for host in [
        Some(addr.clone()),
        Some(format!("localhost:{port}")),
        Some(format!("backup.example.lan:{port}")),
        None,
    ] {
        let (st, body) = get_as(&addr, "/api/v1/jobs", host.as_deref());
        assert_eq!(st, 200, "{host:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v[0]["name"], "a", "{v}");
    }
    assert_eq!(d.get_text("/metrics").0, 200);
    // The CLI's hand-off to the daemon still works.
    let o = s.cli(&["run", "a"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("handed to backupd serve"));
    assert!(d.log().contains("does not answer to"), "{}", d.log());
}

#[test]
fn the_api_counts_a_runs_warnings() {
    let s = Setup::new("", "[[job]]\nname = \"j\"\nsource = \"src\"\n");
    std::fs::create_dir(s.path("src")).unwrap();
    std::fs::write(s.path("src/a.txt"), b"a").unwrap();
    // A FIFO is skipped with a warning.
    let fifo = std::ffi::CString::new(s.path("src/pipe").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let o = s.cli(&["run", "j"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = s.start();
    let (code, runs) = d.get("/api/v1/runs?job=j");
    assert_eq!(code, 200, "{runs}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");
    assert_eq!(runs[0]["warnings"], 1, "{runs}");
}
