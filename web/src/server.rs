//! The API's HTTP server: an accept loop of its own over hyper's HTTP/1 connections, so that
//! idle and slow clients cannot starve it (`axum::serve` has neither a header timeout nor a
//! connection limit).
//!
//! - Header timeout: a connection must deliver a request's head (request line and headers)
//!   within [`ServeOptions::header_timeout`] of opening, and, kept alive, within as long of the
//!   previous response; otherwise hyper closes it. One byte every few seconds does not extend it.
//! - Connection limit: at most [`ServeOptions::max_connections`] connections (and never more
//!   than half the open-file limit). A connection beyond it makes room by closing the
//!   connection that has been idle the longest. Idle means the daemon is not working on a
//!   complete request there: a connection still sending its request's head or body, or slow to
//!   read its response, is idle. If every connection is busy, the new one waits for a request
//!   to end (the router's timeout bounds them), in the kernel's listen queue, not refused.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

/// Bounds on connections. [`serve`] uses the defaults.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long a client has to send a request's head (request line and headers), counted from
    /// when the connection opens or, on a kept-alive connection, from the previous response:
    /// so this is also how long an idle kept-alive connection stays open. Default 10 s.
    pub header_timeout: Duration,
    /// Most connections open at once (held to half the process's open-file limit). Default 256.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// How long the accept loop waits before trying again when `accept` fails for want of
/// resources (no file descriptors left), and between attempts to make room at the limit.
const RETRY: Duration = Duration::from_millis(50);
/// Warnings about the connection limit or failing accepts: at most one per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// [`serve_with`] with default [`ServeOptions`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, router, ServeOptions::default(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, closes idle
/// connections and waits for the requests in progress to finish.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let cap = connection_cap(opts.max_connections);
    let permits = Arc::new(Semaphore::new(cap));
    let conns = Arc::new(Conns::new());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .keep_alive(true);
    let service = TowerToHyperService::new(router);
    let mut warned_full: Option<Instant> = None;
    let mut warned_accept: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if is_per_connection(&e) {
                    continue;
                }
                // Out of file descriptors or memory: free an idle connection and try again
                // shortly, rather than spin on an error that will repeat.
                if due(&mut warned_accept) {
                    warn!(error = %e, "cannot accept API connections; closing idle ones and retrying");
                }
                conns.evict_longest_idle();
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if due(&mut warned_full) {
                    warn!(
                        limit = cap,
                        "the API has as many connections open as it allows: closing those idle the longest to serve new ones"
                    );
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    p = conns.make_room(&permits) => p,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let entry = conns.register();
        let svc = {
            let entry = entry.clone();
            let service = service.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let busy = Arc::new(Busy::new(entry.clone()));
                let (mut parts, body) = req.into_parts();
                parts.extensions.insert(ConnectInfo(peer));
                if body.is_end_stream() {
                    busy.start();
                }
                let body = Watched {
                    inner: body,
                    busy: busy.clone(),
                };
                let fut = hyper::service::Service::call(&service, Request::from_parts(parts, body));
                async move {
                    let res = fut.await;
                    busy.end();
                    res
                }
            })
        };
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conns = conns.clone();
        tokio::spawn(async move {
            let _permit: OwnedSemaphorePermit = permit;
            tokio::pin!(conn);
            let mut draining = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            debug!(%peer, error = %e, "API connection ended");
                        }
                        break;
                    }
                    _ = entry.close.notified(), if !draining => {
                        if entry.in_flight.load(Ordering::SeqCst) == 0 {
                            debug!(%peer, "closing an idle API connection");
                            break;
                        }
                        // A request is in progress: answer it, then close.
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                    }
                }
            }
            conns.unregister(entry.id);
        });
    }
    drop(listener);
    conns.close_all();
    // Every connection holds a permit until it ends.
    let _ = permits.acquire_many(cap as u32).await;
    Ok(())
}

/// `max` held to half the soft open-file limit, so that `accept` does not run out of file
/// descriptors before the limit is reached (the other half is left to the daemon's jobs).
fn connection_cap(max: usize) -> usize {
    let max = max.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0
        || r.rlim_cur == libc::RLIM_INFINITY
    {
        return max;
    }
    let half = usize::try_from(r.rlim_cur / 2).unwrap_or(usize::MAX).max(1);
    if half < max {
        warn!(
            connections = half,
            open_file_limit = r.rlim_cur,
            "the API serves at most {half} connections at once, half the open-file limit; raise the limit (e.g. LimitNOFILE= in the systemd unit) to allow {max}"
        );
        return half;
    }
    max
}

/// Errors of `accept` that concern only the connection being accepted.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// True at most once per [`WARN_EVERY`].
fn due(last: &mut Option<Instant>) -> bool {
    if last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// The open connections, so that the one idle the longest can be closed to make room.
struct Conns {
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

struct Conn {
    id: u64,
    /// The `Conns` epoch `idle_since` counts from.
    epoch: Instant,
    /// Complete requests being answered (0 or 1: HTTP/1 answers one at a time); see [`Busy`].
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened), in ns since `Conns::epoch`.
    idle_since: AtomicU64,
    /// Set when the connection was asked to close.
    closing: AtomicBool,
    close: Notify,
}

impl Conns {
    fn new() -> Conns {
        Conns {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // The map stays consistent even if a holder panicked: each operation is one call.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(self: &Arc<Self>) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            epoch: self.epoch,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(nanos_since(self.epoch)),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        self.open().insert(id, conn.clone());
        conn
    }

    fn unregister(&self, id: u64) {
        self.open().remove(&id);
    }

    /// Asks the connection idle the longest to close; false if every connection is busy.
    fn evict_longest_idle(&self) -> bool {
        let open = self.open();
        let victim = open
            .values()
            .filter(|c| {
                c.in_flight.load(Ordering::SeqCst) == 0 && !c.closing.load(Ordering::SeqCst)
            })
            .min_by_key(|c| c.idle_since.load(Ordering::SeqCst));
        match victim {
            Some(c) => {
                c.closing.store(true, Ordering::SeqCst);
                c.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Waits for a free connection slot, closing idle connections to make one.
    async fn make_room(&self, permits: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = permits.clone().try_acquire_owned() {
                return p;
            }
            self.evict_longest_idle();
            // The connection closes at once; if it had just started a request, or none was
            // idle, look again shortly (a request ending leaves its connection idle).
            tokio::select! {
                p = permits.clone().acquire_owned() => {
                    if let Ok(p) = p {
                        return p;
                    }
                }
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// Shutdown: idle connections close now, busy ones after their response.
    fn close_all(&self) {
        for c in self.open().values() {
            c.closing.store(true, Ordering::SeqCst);
            c.close.notify_one();
        }
    }
}

/// A request on a connection. The connection is busy, and so not closed to make room, from
/// when the request is complete (its body, if any, received) until its response is ready: a
/// client cannot keep its connection busy by sending slowly, and the daemon's part is bounded
/// by the router's request timeout. (A response the client is slow to read does not count.)
struct Busy {
    conn: Arc<Conn>,
    /// [`WAITING`], [`BUSY`] or [`DONE`].
    state: AtomicU8,
}

const WAITING: u8 = 0;
const BUSY: u8 = 1;
const DONE: u8 = 2;

impl Busy {
    fn new(conn: Arc<Conn>) -> Busy {
        Busy {
            conn,
            state: AtomicU8::new(WAITING),
        }
    }

    /// The request is complete.
    fn start(&self) {
        if self
            .state
            .compare_exchange(WAITING, BUSY, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.conn.in_flight.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The response is ready (or the request was dropped).
    fn end(&self) {
        if self.state.swap(DONE, Ordering::SeqCst) == BUSY {
            let c = &self.conn;
            c.idle_since.store(nanos_since(c.epoch), Ordering::SeqCst);
            c.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.end();
    }
}

/// A request body that marks its request complete once it has all arrived.
struct Watched {
    inner: Incoming,
    busy: Arc<Busy>,
}

impl hyper::body::Body for Watched {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.busy.start();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
