//! The alert sender against a real HTTP server on 127.0.0.1 (written here: request line,
//! headers, Content-Length body; scripted replies).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backupd::alerts::{Alert, AlertSender, SenderOptions};
use backupd::config::{AlertEvent, AlertKind, AlertTarget};
use jiff::Timestamp;
use serde_json::Value;

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: String::new(),
        delay: Duration::ZERO,
    }
}

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// A scripted server: the n-th request gets `script[n]`, later ones 204. With `hang`, it
/// accepts connections and never answers.
struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(script: Vec<Reply>) -> Server {
        Self::spawn(script, false)
    }

    fn hanging() -> Server {
        Self::spawn(Vec::new(), true)
    }

    fn spawn(script: Vec<Reply>, hang: bool) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.into_iter()));
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (reqs, script) = (reqs.clone(), script.clone());
                std::thread::spawn(move || {
                    if hang {
                        std::thread::sleep(Duration::from_secs(3600));
                        drop(conn);
                        return;
                    }
                    serve(conn, &reqs, &script);
                });
            }
        });
        Server { addr, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Wait until `n` requests arrived (generous timeout: a failure, never a speed check).
    fn wait_for(&self, n: usize) -> Vec<Request> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.requests();
            if r.len() >= n || Instant::now() > until {
                return r;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One request per connection (replies say `Connection: close`).
fn serve(conn: TcpStream, reqs: &Mutex<Vec<Request>>, script: &Mutex<std::vec::IntoIter<Reply>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    // Record and pick the reply under one lock, so the n-th request gets the n-th reply.
    let r = {
        let mut reqs = reqs.lock().unwrap();
        reqs.push(Request {
            method,
            path,
            headers,
            body,
            at: Instant::now(),
        });
        script.lock().unwrap().next().unwrap_or_else(|| reply(204))
    };
    std::thread::sleep(r.delay);
    let mut out = format!(
        "HTTP/1.1 {} Scripted\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        r.body.len()
    );
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&r.body);
    let mut conn = conn;
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.flush();
}

fn opts() -> SenderOptions {
    SenderOptions {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        max_attempts: 6,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        queue_capacity: 256,
        host: "rack1".into(),
    }
}

fn target(kind: AlertKind, url: String) -> AlertTarget {
    AlertTarget {
        kind,
        url,
        events: vec![AlertEvent::Failure, AlertEvent::Stale, AlertEvent::Recovery],
    }
}

fn alert(job: &str, event: AlertEvent) -> Alert {
    Alert {
        job: job.into(),
        event,
        at: Timestamp::from_second(1_800_000_000).unwrap(),
        title: format!("job {job} failed"),
        message: "Run #3 of job db failed.".into(),
        run_id: Some(3),
        error: Some("disk full".into()),
        last_success: Some(Timestamp::from_second(1_799_990_000).unwrap()),
    }
}

/// Targets that subscribe to nothing, so the real one gets a metric label of its own
/// (tests in this file share one process-wide recorder).
fn padded(n: usize, real: AlertTarget) -> Vec<AlertTarget> {
    let mut v: Vec<AlertTarget> = (0..n)
        .map(|_| AlertTarget {
            kind: AlertKind::Webhook,
            url: "http://127.0.0.1:9/".into(),
            events: vec![],
        })
        .collect();
    v.push(real);
    v
}

#[test]
fn discord_and_webhook_bodies() {
    let discord = Server::start(vec![]);
    let hook = Server::start(vec![]);
    let sender = AlertSender::start(
        vec![
            target(AlertKind::Discord, discord.url("/api/webhooks/1/secret")),
            target(AlertKind::Webhook, hook.url("/hook?token=x")),
        ],
        opts(),
    );
    assert!(sender.send(alert("db", AlertEvent::Failure)));
    let d = discord.wait_for(1);
    let h = hook.wait_for(1);
    sender.shutdown(Duration::from_secs(5));

    assert_eq!(d.len(), 1);
    assert_eq!(d[0].method, "POST");
    assert_eq!(d[0].path, "/api/webhooks/1/secret");
    assert!(
        d[0].header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let b = d[0].json();
    assert_eq!(b["content"], "🔴 rack1: job db failed");
    assert_eq!(b["allowed_mentions"], serde_json::json!({"parse": []}));
    let e = &b["embeds"][0];
    assert_eq!(e["title"], "job db failed");
    assert_eq!(e["description"], "Run #3 of job db failed.");
    assert_eq!(e["color"], 0xE74C3C);
    assert_eq!(e["timestamp"], "2027-01-15T08:00:00Z");
    assert!(e["fields"].as_array().unwrap().len() >= 4);

    assert_eq!(h.len(), 1);
    assert_eq!(h[0].path, "/hook?token=x");
    assert_eq!(
        h[0].json(),
        serde_json::json!({
            "event": "failure",
            "job": "db",
            "at": "2027-01-15T08:00:00Z",
            "title": "job db failed",
            "message": "Run #3 of job db failed.",
            "run_id": 3,
            "error": "disk full",
            "last_success": "2027-01-15T05:13:20Z",
            "host": "rack1",
        })
    );
}

#[test]
fn targets_get_only_their_events() {
    let all = Server::start(vec![]);
    let recov = Server::start(vec![]);
    let sender = AlertSender::start(
        vec![
            target(AlertKind::Webhook, all.url("/")),
            AlertTarget {
                kind: AlertKind::Webhook,
                url: recov.url("/"),
                events: vec![AlertEvent::Recovery],
            },
        ],
        opts(),
    );
    sender.send(alert("a", AlertEvent::Failure));
    sender.send(alert("a", AlertEvent::Recovery));
    sender.shutdown(Duration::from_secs(5));
    let events = |s: &Server| -> Vec<String> {
        s.requests()
            .iter()
            .map(|r| r.json()["event"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(events(&all), ["failure", "recovery"]);
    assert_eq!(events(&recov), ["recovery"]);
}

#[test]
fn retries_on_429_and_5xx_until_success() {
    let mut limited = reply(429);
    limited.headers.push(("Retry-After", "0".into()));
    let mut discord_limited = reply(429);
    discord_limited
        .headers
        .push(("Content-Type", "application/json".into()));
    discord_limited.body =
        r#"{"message": "You are being rate limited.", "retry_after": 0.05, "global": false}"#
            .into();
    let server = Server::start(vec![limited, discord_limited, reply(500), reply(204)]);
    let sender = AlertSender::start(vec![target(AlertKind::Discord, server.url("/x"))], opts());
    sender.send(alert("db", AlertEvent::Failure));
    let r = server.wait_for(4);
    // Nothing more after the 204.
    std::thread::sleep(Duration::from_millis(300));
    sender.shutdown(Duration::from_secs(5));
    let r2 = server.requests();
    assert_eq!(r.len(), 4);
    assert_eq!(r2.len(), 4, "no retry after success");
    assert!(
        r.iter().all(|q| q.body == r[0].body),
        "same body every attempt"
    );
    // The JSON retry_after (50 ms) was honoured before the third attempt.
    assert!(r[2].at.duration_since(r[1].at) >= Duration::from_millis(50));
}

#[test]
fn retry_after_is_capped_by_max_delay() {
    let mut limited = reply(429);
    limited.headers.push(("Retry-After", "3600".into()));
    let server = Server::start(vec![limited]);
    let sender = AlertSender::start(vec![target(AlertKind::Webhook, server.url("/"))], opts());
    sender.send(alert("db", AlertEvent::Stale));
    let r = server.wait_for(2);
    sender.shutdown(Duration::from_secs(5));
    assert_eq!(r.len(), 2, "retried after the capped delay, not an hour");
}

#[test]
fn no_retry_on_400_and_the_queue_moves_on() {
    let mut bad = reply(400);
    bad.body = r#"{"message": "Cannot send an empty message", "code": 50006}"#.into();
    let server = Server::start(vec![bad]);
    let sender = AlertSender::start(vec![target(AlertKind::Discord, server.url("/t"))], opts());
    sender.send(alert("one", AlertEvent::Failure));
    server.wait_for(1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.requests().len(), 1, "a 400 is not retried");
    sender.send(alert("two", AlertEvent::Failure));
    let r = server.wait_for(2);
    sender.shutdown(Duration::from_secs(5));
    assert_eq!(r.len(), 2);
    assert!(r[1].json()["content"].as_str().unwrap().contains("two"));
}

#[test]
fn gives_up_after_max_attempts_and_counts() {
    let metrics = backupd::metrics::install().unwrap();
    let server = Server::start(vec![reply(503), reply(502), reply(500)]);
    let mut o = opts();
    o.max_attempts = 3;
    let sender = AlertSender::start(padded(7, target(AlertKind::Webhook, server.url("/"))), o);
    sender.send(alert("one", AlertEvent::Failure));
    server.wait_for(3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.requests().len(), 3, "exactly max_attempts attempts");
    sender.send(alert("two", AlertEvent::Failure));
    let r = server.wait_for(4);
    sender.shutdown(Duration::from_secs(5));
    assert_eq!(r.len(), 4);
    assert_eq!(r[3].json()["job"], "two");
    let text = metrics.render();
    assert!(
        text.contains(r#"backupd_alerts_failed_total{target="webhook-7",event="failure"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"backupd_alerts_sent_total{target="webhook-7",event="failure"} 1"#),
        "{text}"
    );
    // Created at 0 for every subscribed event, so dashboards see the series at once.
    assert!(
        text.contains(r#"backupd_alerts_sent_total{target="webhook-7",event="stale"} 0"#),
        "{text}"
    );
}

#[test]
fn connection_refused_is_retried_then_abandoned() {
    // A port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut o = opts();
    o.max_attempts = 3;
    let sender = AlertSender::start(
        vec![target(
            AlertKind::Webhook,
            format!("http://127.0.0.1:{port}/"),
        )],
        o,
    );
    assert!(sender.send(alert("db", AlertEvent::Failure)));
    let start = Instant::now();
    sender.shutdown(Duration::from_secs(5));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn send_never_blocks_when_the_server_never_answers() {
    let server = Server::hanging();
    let mut o = opts();
    o.queue_capacity = 4;
    o.request_timeout = Duration::from_secs(30);
    let sender = AlertSender::start(vec![target(AlertKind::Webhook, server.url("/"))], o);
    let start = Instant::now();
    let queued = (0..100)
        .filter(|i| sender.send(alert(&format!("j{i}"), AlertEvent::Failure)))
        .count();
    let took = start.elapsed();
    // Bounded: 4 in the channel plus a backlog of 4 for the target (its head in flight); the
    // rest is dropped, by send() or by the backlog cap, and counted.
    let until = Instant::now() + Duration::from_secs(10);
    while sender.dropped() < 92 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(sender.dropped() >= 92, "{} dropped", sender.dropped());
    assert!(sender.dropped() >= 100 - queued as u64);
    // Not a speed test: 100 blocking sends would take 100 × 30 s.
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Shutdown returns by its deadline even with a request hanging.
    let start = Instant::now();
    sender.shutdown(Duration::from_millis(200));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_dead_target_does_not_hold_up_the_others() {
    let dead = Server::hanging();
    let live = Server::start(vec![]);
    let mut o = opts();
    o.request_timeout = Duration::from_millis(300);
    o.base_delay = Duration::from_secs(30);
    o.max_delay = Duration::from_secs(60);
    let sender = AlertSender::start(
        vec![
            target(AlertKind::Webhook, dead.url("/")),
            target(AlertKind::Webhook, live.url("/")),
        ],
        o,
    );
    for i in 0..3 {
        sender.send(alert(&format!("j{i}"), AlertEvent::Failure));
    }
    // The dead target waits 15 s or more between attempts; the live one gets all three
    // meanwhile, in order.
    let r = live.wait_for(3);
    sender.shutdown(Duration::from_millis(100));
    let jobs: Vec<String> = r
        .iter()
        .map(|q| q.json()["job"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(jobs, ["j0", "j1", "j2"]);
}

#[test]
fn shutdown_flushes_the_queue_within_the_deadline() {
    let slow = Reply {
        delay: Duration::from_millis(50),
        ..reply(204)
    };
    let server = Server::start(vec![slow; 5]);
    let sender = AlertSender::start(vec![target(AlertKind::Webhook, server.url("/"))], opts());
    for i in 0..5 {
        assert!(sender.send(alert(&format!("j{i}"), AlertEvent::Failure)));
    }
    sender.shutdown(Duration::from_secs(10));
    let jobs: Vec<String> = server
        .requests()
        .iter()
        .map(|q| q.json()["job"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(jobs, ["j0", "j1", "j2", "j3", "j4"]);
}

#[test]
fn shutdown_abandons_retries_past_the_deadline() {
    let server = Server::start(vec![reply(500); 10]);
    let mut o = opts();
    o.base_delay = Duration::from_secs(20);
    o.max_delay = Duration::from_secs(60);
    let sender = AlertSender::start(vec![target(AlertKind::Webhook, server.url("/"))], o);
    sender.send(alert("db", AlertEvent::Failure));
    server.wait_for(1);
    let start = Instant::now();
    sender.shutdown(Duration::from_millis(300));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        server.requests().len(),
        1,
        "the retry would fall after the deadline"
    );
}
