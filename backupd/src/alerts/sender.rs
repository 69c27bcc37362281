//! Delivery of alerts over HTTP on one background thread, so the scheduler never waits on a
//! webhook. Each target has its own FIFO: a target that is down or rate-limited retries on its
//! own clock while the others keep delivering; order per target is kept.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::Value;

use super::format::{discord_body, event_name, webhook_body};
use super::policy::Alert;
use crate::config::{AlertEvent, AlertKind, AlertTarget};

pub const METRIC_SENT: &str = "backupd_alerts_sent_total";
pub const METRIC_FAILED: &str = "backupd_alerts_failed_total";
pub const METRIC_DROPPED: &str = "backupd_alerts_dropped_total";

#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// First retry delay after a 5xx or a connection error; doubles per attempt (with jitter).
    pub base_delay: Duration,
    /// Cap for one retry delay, including a server's Retry-After.
    pub max_delay: Duration,
    /// Attempts per alert and target, the first included.
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    /// Whole request, connect to last byte of the response.
    pub request_timeout: Duration,
    /// Alerts waiting for the sender thread; beyond this `send` drops.
    pub queue_capacity: usize,
    /// Reported in every alert body.
    pub host: String,
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_attempts: 6,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            queue_capacity: 256,
            host: hostname(),
        }
    }
}

/// The machine's host name, "unknown" when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

struct Shared {
    /// Set by `shutdown`: no attempt starts after it and none runs past it.
    deadline: Mutex<Option<Instant>>,
    dropped: AtomicU64,
}

impl Shared {
    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to the alert thread. `send` never blocks; `shutdown` flushes what it can in time.
pub struct AlertSender {
    tx: SyncSender<Alert>,
    shared: Arc<Shared>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl AlertSender {
    /// Start the sender thread. Install the metrics recorder first, or the per-target counters
    /// created here are lost.
    pub fn start(targets: Vec<AlertTarget>, opts: SenderOptions) -> AlertSender {
        let (tx, rx) = std::sync::mpsc::sync_channel(opts.queue_capacity.max(1));
        let (done_tx, done) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            deadline: Mutex::new(None),
            dropped: AtomicU64::new(0),
        });
        metrics::counter!(METRIC_DROPPED).increment(0);
        let targets: Vec<Target> = targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| Target::new(i, t))
            .collect();
        let worker = Worker {
            rx,
            shared: shared.clone(),
            agent: build_agent(&opts),
            targets,
            opts,
            rng: seed(),
        };
        let thread = std::thread::Builder::new()
            .name("alerts".into())
            .spawn(move || {
                worker.run();
                let _ = done_tx.send(());
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the alert sender thread"))
            .ok();
        AlertSender {
            tx,
            shared,
            done,
            thread,
        }
    }

    /// Queue an alert. Never blocks: with the queue full the alert is dropped, logged and
    /// counted. Returns whether it was queued.
    pub fn send(&self, alert: Alert) -> bool {
        match self.tx.try_send(alert) {
            Ok(()) => true,
            Err(TrySendError::Full(a)) | Err(TrySendError::Disconnected(a)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_DROPPED).increment(1);
                tracing::warn!(
                    job = %a.job,
                    event = event_name(a.event),
                    "alert queue full or closed; alert dropped"
                );
                false
            }
        }
    }

    /// Alerts dropped by `send` so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Stop accepting alerts, deliver what is queued until `deadline` from now, then return.
    /// Whatever is left at the deadline is abandoned (logged and counted as failed).
    pub fn shutdown(self, deadline: Duration) {
        let until = Instant::now() + deadline;
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(until);
        // Closing the channel wakes the worker; it drains the buffer before it sees the close.
        drop(self.tx);
        let Some(thread) = self.thread else { return };
        // A little slack past the deadline: the worker caps its requests at the deadline.
        let wait = until
            .saturating_duration_since(Instant::now())
            .saturating_add(Duration::from_millis(200));
        match self.done.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
            }
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!("alert sender did not finish by the shutdown deadline");
            }
        }
    }
}

struct Target {
    /// Metric label and log name: kind and position in the config, e.g. "webhook-1".
    name: String,
    kind: AlertKind,
    url: String,
    redacted: String,
    events: Vec<AlertEvent>,
    queue: VecDeque<Delivery>,
}

impl Target {
    fn new(index: usize, t: AlertTarget) -> Target {
        let kind = match t.kind {
            AlertKind::Discord => "discord",
            AlertKind::Webhook => "webhook",
        };
        let name = format!("{kind}-{index}");
        for e in &t.events {
            metrics::counter!(METRIC_SENT, "target" => name.clone(), "event" => event_name(*e))
                .increment(0);
            metrics::counter!(METRIC_FAILED, "target" => name.clone(), "event" => event_name(*e))
                .increment(0);
        }
        Target {
            redacted: redact_url(&t.url),
            name,
            kind: t.kind,
            url: t.url,
            events: t.events,
            queue: VecDeque::new(),
        }
    }

    /// Hide the URL's secret parts in text that may quote it (error messages).
    fn scrub(&self, text: &str) -> String {
        let mut s = text.replace(&self.url, &self.redacted);
        if let Some(path) = url_path(&self.url).filter(|p| p.len() > 1) {
            s = s.replace(path, "/…");
        }
        s
    }
}

struct Delivery {
    job: String,
    event: AlertEvent,
    body: Value,
    /// Attempts made so far.
    attempts: u32,
    not_before: Instant,
}

struct Worker {
    rx: Receiver<Alert>,
    shared: Arc<Shared>,
    agent: ureq::Agent,
    targets: Vec<Target>,
    opts: SenderOptions,
    rng: u64,
}

fn build_agent(opts: &SenderOptions) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_global(Some(opts.request_timeout))
        .http_status_as_error(false)
        // A redirect would re-send the alert elsewhere (or as a GET); treat it as an error.
        .max_redirects(0)
        .user_agent(format!("rackvault-backupd/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

impl Worker {
    fn run(mut self) {
        let mut open = true;
        loop {
            let next_due = self
                .targets
                .iter()
                .filter_map(|t| t.queue.front())
                .map(|d| d.not_before)
                .min();
            if open {
                let received = match next_due {
                    None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(due) => {
                        let wait = due.saturating_duration_since(Instant::now());
                        if wait.is_zero() {
                            self.rx.try_recv().map_err(|e| match e {
                                std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                                std::sync::mpsc::TryRecvError::Disconnected => {
                                    RecvTimeoutError::Disconnected
                                }
                            })
                        } else {
                            self.rx.recv_timeout(wait)
                        }
                    }
                };
                match received {
                    Ok(alert) => {
                        self.enqueue(alert);
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        continue;
                    }
                }
            } else {
                // Shutting down: everything is queued already; wait only if the deadline allows.
                let Some(due) = next_due else { break };
                let deadline = self.shared.deadline();
                if deadline.is_some_and(|d| due >= d) {
                    self.abandon_all();
                    break;
                }
                let wait = due.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
            }
            self.attempt_due();
        }
    }

    fn enqueue(&mut self, alert: Alert) {
        let cap = self.opts.queue_capacity.max(1);
        for t in &mut self.targets {
            if !t.events.contains(&alert.event) {
                continue;
            }
            let body = match t.kind {
                AlertKind::Discord => discord_body(&alert, &self.opts.host),
                AlertKind::Webhook => webhook_body(&alert, &self.opts.host),
            };
            if t.queue.len() >= cap {
                // A long-dead target must not hold unbounded memory: its oldest alert goes.
                if let Some(old) = t.queue.pop_front() {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(METRIC_DROPPED).increment(1);
                    tracing::warn!(target_name = %t.name, url = %t.redacted, job = %old.job,
                        "alert target backlog full; oldest alert dropped");
                }
            }
            t.queue.push_back(Delivery {
                job: alert.job.clone(),
                event: alert.event,
                body,
                attempts: 0,
                not_before: Instant::now(),
            });
        }
    }

    fn abandon_all(&mut self) {
        for t in &mut self.targets {
            for d in t.queue.drain(..) {
                metrics::counter!(METRIC_FAILED, "target" => t.name.clone(), "event" => event_name(d.event))
                    .increment(1);
                tracing::error!(target_name = %t.name, url = %t.redacted, job = %d.job,
                    event = event_name(d.event), attempts = d.attempts,
                    "alert not delivered before the shutdown deadline");
            }
        }
    }

    /// Make one attempt for the target whose head delivery is due first, if any is due.
    fn attempt_due(&mut self) {
        let now = Instant::now();
        let Some(ti) = self
            .targets
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.queue.front().map(|d| (i, d.not_before)))
            .filter(|(_, due)| *due <= now)
            .min_by_key(|(_, due)| *due)
            .map(|(i, _)| i)
        else {
            return;
        };
        let deadline = self.shared.deadline();
        let mut timeout = self.opts.request_timeout;
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(now);
            if left.is_zero() {
                self.abandon_all();
                return;
            }
            timeout = timeout.min(left);
        }
        let verdict = {
            let t = &self.targets[ti];
            let d = t.queue.front().expect("chosen target has a head");
            post(
                &self.agent,
                &t.url,
                &d.body,
                timeout,
                self.opts.connect_timeout,
            )
        };
        let jitter = self.next_rand();
        let opts = &self.opts;
        let t = &mut self.targets[ti];
        let name = t.name.clone();
        let redacted = t.redacted.clone();
        let scrub = |why: &str| t.scrub(why);
        let (wait, why) = match &verdict {
            Verdict::Delivered => (None, String::new()),
            Verdict::RetryAfter(w, why) => (Some(*w), scrub(why)),
            Verdict::Retry(why) => (Some(None), scrub(why)),
            Verdict::GiveUp(why) => (None, scrub(why)),
        };
        let d = t.queue.front_mut().expect("chosen target has a head");
        d.attempts += 1;
        let event = event_name(d.event);
        let job = d.job.clone();
        let attempts = d.attempts;
        let wait = match (verdict, wait) {
            (Verdict::Delivered, _) => {
                metrics::counter!(METRIC_SENT, "target" => name.clone(), "event" => event)
                    .increment(1);
                tracing::debug!(target_name = %name, %job, event, attempts, "alert delivered");
                t.queue.pop_front();
                return;
            }
            (Verdict::GiveUp(_), _) | (_, None) => {
                metrics::counter!(METRIC_FAILED, "target" => name.clone(), "event" => event)
                    .increment(1);
                tracing::error!(target_name = %name, url = %redacted, %job, event, attempts,
                    reason = %why,
                    "alert target refused the alert; not retrying (check the target's URL and configuration)");
                t.queue.pop_front();
                return;
            }
            // The server's hint when it gave one (capped), else the exponential backoff.
            (_, Some(hint)) => hint
                .unwrap_or_else(|| backoff(opts.base_delay, opts.max_delay, attempts - 1, jitter))
                .min(opts.max_delay),
        };
        if attempts >= opts.max_attempts {
            metrics::counter!(METRIC_FAILED, "target" => name.clone(), "event" => event)
                .increment(1);
            tracing::error!(target_name = %name, url = %redacted, %job, event, attempts,
                reason = %why, "alert not delivered; giving up after the last attempt");
            t.queue.pop_front();
            return;
        }
        tracing::warn!(target_name = %name, url = %redacted, %job, event, attempts,
            retry_in_ms = wait.as_millis() as u64, reason = %why,
            "alert delivery failed; will retry");
        d.not_before = Instant::now() + wait;
    }

    /// Uniform in [0, 1), for jitter (xorshift: quality is irrelevant here).
    fn next_rand(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9E37_79B9_7F4A_7C15);
    h.finish() | 1
}

/// What one HTTP attempt means for the delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Rate-limited: wait this long (the server's hint; None = use the backoff).
    RetryAfter(Option<Duration>, String),
    /// Transient (5xx, connection, timeout): back off and retry.
    Retry(String),
    /// The target rejects this alert; retrying will not help.
    GiveUp(String),
}

fn post(
    agent: &ureq::Agent,
    url: &str,
    body: &Value,
    timeout: Duration,
    connect: Duration,
) -> Verdict {
    let req = agent
        .post(url)
        .config()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(connect.min(timeout)))
        .build();
    match req.send_json(body) {
        Ok(mut res) => {
            let status = res.status().as_u16();
            let retry_after = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let text = if (200..300).contains(&status) {
                None
            } else {
                res.body_mut()
                    .with_config()
                    .limit(64 * 1024)
                    .read_to_string()
                    .ok()
            };
            classify(
                status,
                retry_after.as_deref(),
                text.as_deref(),
                Timestamp::now(),
            )
        }
        Err(e) => match e {
            ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::RequireHttpsOnly(_)
            | ureq::Error::Json(_) => Verdict::GiveUp(e.to_string()),
            _ => Verdict::Retry(e.to_string()),
        },
    }
}

/// Decide from a response: 2xx delivered; 429 wait (Discord's JSON `retry_after`, else the
/// Retry-After header); 408 and 5xx retry; anything else gives up.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: Option<&str>,
    now: Timestamp,
) -> Verdict {
    let snippet = || {
        let b = body.unwrap_or("").trim();
        if b.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {}", super::format::truncate(b, 200))
        }
    };
    match status {
        200..=299 => Verdict::Delivered,
        429 => {
            // Discord's body value is fractional and more precise than its header.
            let wait = body
                .and_then(discord_retry_after)
                .or_else(|| retry_after.and_then(|h| parse_retry_after(h, now)));
            Verdict::RetryAfter(wait, snippet())
        }
        408 | 500..=599 => Verdict::Retry(snippet()),
        _ => Verdict::GiveUp(snippet()),
    }
}

/// Discord's `{"retry_after": 0.25, ...}` (seconds, maybe fractional).
pub fn discord_retry_after(body: &str) -> Option<Duration> {
    let v: Value = serde_json::from_str(body).ok()?;
    let secs = v.get("retry_after")?.as_f64()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// A Retry-After header: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // Not in the RFC, but seen in the wild (and harmless to accept).
    if let Ok(secs) = v.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    let at = PARSER.parse_timestamp(v).ok()?;
    let d = now.duration_until(at);
    Some(Duration::try_from(d).unwrap_or(Duration::ZERO))
}

/// `base × 2^retry`, capped at `max`, with "equal jitter" (between half and all of it) so many
/// daemons hit by the same outage do not retry in lockstep. `rand01` is in [0, 1).
pub fn backoff(base: Duration, max: Duration, retry: u32, rand01: f64) -> Duration {
    let full = base
        .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
        .min(max);
    let half = full / 2;
    half + half.mul_f64(rand01.clamp(0.0, 1.0))
}

/// `scheme://host[:port]/…`: webhook URLs carry their secret in the path (Discord's token) or
/// query, and sometimes in user info; none of that may reach a log.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid url>".to_string();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let tail = if rest.len() > authority.len() {
        "/…"
    } else {
        ""
    };
    format!("{scheme}://{host}{tail}")
}

fn url_path(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let i = rest.find(['/', '?', '#'])?;
    Some(&rest[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn redaction_hides_path_query_and_userinfo() {
        assert_eq!(
            redact_url("https://discord.com/api/webhooks/123/sEcReT-token"),
            "https://discord.com/…"
        );
        assert_eq!(
            redact_url("http://user:pw@hooks.lan:8080/x?k=secret"),
            "http://hooks.lan:8080/…"
        );
        assert_eq!(redact_url("http://hooks.lan"), "http://hooks.lan");
        assert_eq!(redact_url("http://hooks.lan?token=1"), "http://hooks.lan/…");
        assert_eq!(redact_url("not a url"), "<invalid url>");
    }

    #[test]
    fn scrub_removes_url_and_path() {
        let t = Target::new(
            0,
            AlertTarget {
                kind: AlertKind::Discord,
                url: "https://discord.com/api/webhooks/1/tok".into(),
                events: vec![],
            },
        );
        assert_eq!(t.name, "discord-0");
        let s = t.scrub("error for https://discord.com/api/webhooks/1/tok and /api/webhooks/1/tok");
        assert!(!s.contains("tok"), "{s}");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("0", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(" 120 ", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("0.5", now()),
            Some(Duration::from_millis(500))
        );
        // 1_800_000_000 is Fri, 15 Jan 2027 08:00:00 GMT.
        assert_eq!(
            parse_retry_after("Fri, 15 Jan 2027 08:00:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Fri, 15 Jan 2027 07:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-1", now()), None);
        assert_eq!(
            discord_retry_after(r#"{"retry_after": 0.05, "global": false}"#),
            Some(Duration::from_millis(50))
        );
        assert_eq!(discord_retry_after(r#"{"retry_after": -3}"#), None);
        assert_eq!(discord_retry_after("<html>"), None);
    }

    #[test]
    fn classify_statuses() {
        assert_eq!(classify(204, None, None, now()), Verdict::Delivered);
        assert!(
            matches!(classify(429, Some("2"), Some(r#"{"retry_after":0.25}"#), now()),
            Verdict::RetryAfter(Some(d), _) if d == Duration::from_millis(250))
        );
        assert!(matches!(classify(429, Some("2"), Some(""), now()),
            Verdict::RetryAfter(Some(d), _) if d == Duration::from_secs(2)));
        assert!(matches!(
            classify(429, None, None, now()),
            Verdict::RetryAfter(None, _)
        ));
        assert!(matches!(
            classify(503, None, None, now()),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            classify(408, None, None, now()),
            Verdict::Retry(_)
        ));
        assert!(
            matches!(classify(404, None, Some(r#"{"message":"Unknown Webhook"}"#), now()),
            Verdict::GiveUp(m) if m.contains("Unknown Webhook"))
        );
        assert!(matches!(
            classify(301, None, None, now()),
            Verdict::GiveUp(_)
        ));
    }

    #[test]
    fn backoff_grows_jitters_and_caps() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(60);
        assert_eq!(backoff(b, m, 0, 0.0), Duration::from_millis(500));
        let top = backoff(b, m, 0, 0.999_999);
        assert!(top > Duration::from_millis(999) && top < b, "{top:?}");
        assert_eq!(backoff(b, m, 3, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(b, m, 10, 0.0), Duration::from_secs(30));
        assert!(backoff(b, m, 10, 0.99) <= m);
        assert!(backoff(b, m, 400, 0.5) <= m);
    }
}
