//! The JSON API router: routes, extractors that turn bad input into JSON 400s, authentication
//! of the mutating calls, and the layers every request goes through (logging, a JSON safety
//! net for errors, a timeout, a body limit).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Version};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::{debug, error, warn};

use crate::auth::{TokenDigest, bearer_token};
use crate::backend::{ApiError, Backend};
use crate::host::{AllowedHosts, Refusal};
use crate::model::{ErrorBody, RunQuery};

/// How the API is set up by the daemon.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// Bearer token for the mutating (POST) endpoints; `None` disables them (403).
    pub token: Option<String>,
    /// Host names requests may be addressed to besides IP addresses and `localhost`
    /// (`serve.allowed_hosts`); any other Host gets a 421, against DNS rebinding.
    pub allowed_hosts: Vec<String>,
}

/// Bounds on each request. [`router`] uses the defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest a request may take before it gets a 503.
    pub request_timeout: Duration,
    /// Largest request body accepted; the API's requests take no body, so this is small.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 4096,
        }
    }
}

/// An oversized body is read and thrown away up to this much before the 413 goes out, so that
/// a client still writing its body sees the answer instead of a reset connection; beyond it the
/// connection is closed.
const DRAIN_BYTES: u64 = 1 << 20;

const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const RUN_STATUSES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
];
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// The API router with default [`Limits`]. GET endpoints need no authentication: the daemon
/// should listen on loopback (the default, 127.0.0.1:8480) or a management network only.
pub fn router(backend: Arc<dyn Backend>, cfg: ApiConfig) -> Router {
    router_with_limits(backend, cfg, Limits::default())
}

/// [`router`] with explicit per-request bounds.
pub fn router_with_limits(backend: Arc<dyn Backend>, cfg: ApiConfig, limits: Limits) -> Router {
    let token = match cfg.token.as_deref() {
        // An empty token would make every POST refuse anyway; say it plainly instead.
        Some("") => {
            warn!("the API token is empty: mutating API calls are disabled");
            None
        }
        Some(t) => Some(TokenDigest::new(t)),
        None => None,
    };
    let state = AppState { backend, token };
    let hosts = Arc::new(AllowedHosts::new(&cfg.allowed_hosts));
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{job}", get(job))
        .route("/api/v1/jobs/{job}/snapshots", get(snapshots))
        .route("/api/v1/jobs/{job}/run", post(trigger))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/runs/{id}/cancel", post(cancel))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // Must follow the routes: it is set on those registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // Layers: the last added runs first.
        .layer(middleware::from_fn_with_state(
            limits.max_body_bytes,
            limit_body,
        ))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            timeout,
        ))
        .layer(middleware::from_fn_with_state(hosts, check_host))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(log_request))
}

#[derive(Clone)]
struct AppState {
    backend: Arc<dyn Backend>,
    token: Option<TokenDigest>,
}

impl AppState {
    /// Runs a Backend method on the blocking pool; a panic in it becomes a 500, not a dropped
    /// connection.
    async fn call<T, F>(&self, what: &'static str, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T, ApiError> + Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        match tokio::task::spawn_blocking(move || f(&*backend)).await {
            Ok(result) => result.map_err(Failure::from),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let detail = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                error!(what, panic = %detail, "API backend call panicked");
                Err(Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "internal error while {what}: the daemon hit a bug; details are in its log"
                    ),
                ))
            }
            Err(_) => Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the daemon is shutting down; {what} was not finished"),
            )),
        }
    }
}

/// An error response: `ErrorBody` JSON, a status, and maybe extra headers.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Failure::new(status, e.message())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        for (name, value) in self.headers {
            res.headers_mut().insert(name, value);
        }
        res
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Failure::from(self).into_response()
    }
}

// ---- extractors: bad input becomes a JSON 400 that names what was wrong ----

/// The `{job}` path segment.
struct JobName(String);

impl<S: Send + Sync> FromRequestParts<S> for JobName {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|r| {
                Failure::bad_request(format!("bad job name in the path: {}", r.body_text()))
            })?;
        Ok(JobName(name))
    }
}

/// The `{id}` path segment: a positive run id.
struct RunId(i64);

impl<S: Send + Sync> FromRequestParts<S> for RunId {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|r| {
                Failure::bad_request(format!("bad run id in the path: {}", r.body_text()))
            })?;
        match raw.parse::<i64>() {
            Ok(id) if id > 0 => Ok(RunId(id)),
            _ => Err(Failure::bad_request(format!(
                "bad run id {raw:?} in the path: expected a positive integer"
            ))),
        }
    }
}

/// The query of `GET /api/v1/runs`, validated; `limit` is always filled in.
struct RunFilter(RunQuery);

impl<S: Send + Sync> FromRequestParts<S> for RunFilter {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Failure> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|r| Failure::bad_request(format!("bad query string: {}", r.body_text())))?;
        parse_run_query(&pairs)
            .map(RunFilter)
            .map_err(Failure::bad_request)
    }
}

fn parse_run_query(pairs: &[(String, String)]) -> Result<RunQuery, String> {
    let mut q = RunQuery::default();
    let mut limit = None;
    for (key, value) in pairs {
        let dup = || format!("query parameter {key:?} is given more than once");
        match key.as_str() {
            "job" => {
                if value.is_empty() {
                    return Err(
                        "query parameter \"job\" is empty: give a job name or leave it out".into(),
                    );
                }
                if q.job.replace(value.clone()).is_some() {
                    return Err(dup());
                }
            }
            "status" => {
                if !RUN_STATUSES.contains(&value.as_str()) {
                    return Err(format!(
                        "query parameter \"status\" is {value:?}: expected one of {}",
                        RUN_STATUSES.join(", ")
                    ));
                }
                if q.status.replace(value.clone()).is_some() {
                    return Err(dup());
                }
            }
            "before" => {
                let before = match value.parse::<i64>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(format!(
                            "query parameter \"before\" is {value:?}: expected a positive run id"
                        ));
                    }
                };
                if q.before.replace(before).is_some() {
                    return Err(dup());
                }
            }
            "limit" => {
                let n = match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "query parameter \"limit\" is {value:?}: expected an integer from 1 to {MAX_LIMIT}"
                        ));
                    }
                };
                if limit.replace(n).is_some() {
                    return Err(dup());
                }
            }
            // A typo would otherwise silently widen the listing.
            other => {
                return Err(format!(
                    "unknown query parameter {other:?}: expected job, status, before or limit"
                ));
            }
        }
    }
    q.limit = Some(limit.unwrap_or(DEFAULT_LIMIT));
    Ok(q)
}

/// Proof that the request carries the configured bearer token.
struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let Some(expected) = &state.token else {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "mutating API calls are disabled: set serve.token or serve.token_file",
            ));
        };
        let Some(presented) = bearer_token(parts.headers.get(header::AUTHORIZATION)) else {
            return Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "authentication required: send the header `Authorization: Bearer <token>` with the daemon's serve.token",
            )
            .with_header(header::WWW_AUTHENTICATE, r#"Bearer realm="rackvault""#));
        };
        if !expected.matches(presented) {
            warn!(path = parts.uri.path(), peer = ?peer(&parts.extensions), "API call with a wrong bearer token");
            return Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "authentication failed: the bearer token is not the daemon's serve.token",
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                r#"Bearer realm="rackvault", error="invalid_token""#,
            ));
        }
        Ok(Authorized)
    }
}

fn peer(ext: &axum::http::Extensions) -> Option<SocketAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

// ---- handlers ----

async fn health(State(s): State<AppState>) -> Result<Response, Failure> {
    let h = s
        .call("reading the daemon's health", |b| Ok(b.health()))
        .await?;
    Ok(Json(h).into_response())
}

async fn jobs(State(s): State<AppState>) -> Result<Response, Failure> {
    Ok(Json(s.call("listing jobs", |b| b.jobs()).await?).into_response())
}

async fn job(State(s): State<AppState>, JobName(name): JobName) -> Result<Response, Failure> {
    Ok(Json(s.call("reading a job", move |b| b.job(&name)).await?).into_response())
}

async fn snapshots(State(s): State<AppState>, JobName(name): JobName) -> Result<Response, Failure> {
    Ok(Json(
        s.call("listing snapshots", move |b| b.snapshots(&name))
            .await?,
    )
    .into_response())
}

async fn trigger(
    State(s): State<AppState>,
    _auth: Authorized,
    JobName(name): JobName,
) -> Result<Response, Failure> {
    let t = s
        .call("triggering a run", move |b| b.trigger(&name))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(t)).into_response())
}

async fn runs(State(s): State<AppState>, RunFilter(q): RunFilter) -> Result<Response, Failure> {
    Ok(Json(s.call("listing runs", move |b| b.runs(&q)).await?).into_response())
}

async fn run(State(s): State<AppState>, RunId(id): RunId) -> Result<Response, Failure> {
    Ok(Json(s.call("reading a run", move |b| b.run(id)).await?).into_response())
}

async fn cancel(
    State(s): State<AppState>,
    _auth: Authorized,
    RunId(id): RunId,
) -> Result<Response, Failure> {
    Ok(Json(s.call("cancelling a run", move |b| b.cancel(id)).await?).into_response())
}

async fn metrics(State(s): State<AppState>) -> Result<Response, Failure> {
    let text = s.call("rendering metrics", |b| Ok(b.metrics())).await?;
    Ok(([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response())
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}; see docs/api.md", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Failure {
    // The router adds the `Allow` header to this response.
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed on {}; the Allow header lists those that are",
            uri.path()
        ),
    )
}

// ---- layers ----

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let start = Instant::now();
    let res = next.run(req).await;
    debug!(
        %method,
        path,
        status = res.status().as_u16(),
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        "API request"
    );
    res
}

/// Safety net: any error response not already JSON (one axum or a layer made) gets an
/// `ErrorBody` in place of its body, keeping its status and headers (e.g. `Allow`).
async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (mut parts, _) = res.into_parts();
    let message = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    );
    let body = serde_json::to_vec(&ErrorBody { error: message }).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Answers only requests addressed to a host the daemon answers to (see `crate::host`): a page
/// on another name that DNS rebinding pointed at the daemon gets a 421 it cannot read past.
/// HTTP/1.0 requests without a Host header pass: browsers always send one.
async fn check_host(State(hosts): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    // An absolute request target (`GET http://host/path`) names the host; Host is then ignored.
    let named = match req.uri().authority() {
        Some(a) => Some(Ok(a.as_str())),
        None => {
            let mut values = req.headers().get_all(header::HOST).iter();
            match (values.next(), values.next()) {
                (_, Some(_)) => {
                    return Failure::bad_request(
                        "the request has more than one Host header; send one, naming the daemon",
                    )
                    .into_response();
                }
                (Some(v), None) => Some(v.to_str().map_err(|_| v)),
                (None, None) => None,
            }
        }
    };
    let authority = match named {
        Some(Ok(a)) => a,
        Some(Err(raw)) => {
            return Failure::bad_request(format!(
                "the Host header {:?} is not a host name or address",
                String::from_utf8_lossy(raw.as_bytes())
            ))
            .into_response();
        }
        None if req.version() <= Version::HTTP_10 => return next.run(req).await,
        None => {
            return Failure::bad_request(
                "the request has no Host header; HTTP/1.1 requires one, naming the daemon (e.g. Host: 127.0.0.1:8480)",
            )
            .into_response();
        }
    };
    match hosts.check(authority) {
        Ok(()) => next.run(req).await,
        Err(Refusal::Malformed) => Failure::bad_request(format!(
            "the Host header {:?} is not a host name or address with an optional port",
            shorten(authority)
        ))
        .into_response(),
        Err(Refusal::Unknown(name)) => {
            warn!(host = shorten(&name), peer = ?peer(req.extensions()), path = req.uri().path(), "API request for a host name the daemon does not answer to");
            Failure::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "the request is addressed to host {:?}, which this daemon does not answer to (a guard against DNS rebinding): connect by IP address or localhost, or add the name to serve.allowed_hosts",
                    shorten(&name)
                ),
            )
            .into_response()
        }
    }
}

/// At most 100 characters of a client's string, for messages and logs.
fn shorten(s: &str) -> &str {
    match s.char_indices().nth(100) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            warn!(%method, path, "API request timed out after {limit:?}");
            Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request timed out after {} s: the daemon is busy; try again",
                    limit.as_secs_f64()
                ),
            )
            .into_response()
        }
    }
}

/// Rejects bodies over `max` bytes with 413. Bodies up to the limit are passed on buffered.
async fn limit_body(State(max): State<usize>, req: Request, next: Next) -> Response {
    let (parts, mut body) = req.into_parts();
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {max} bytes; the API's requests take no body"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_BYTES) {
        return too_large()
            .with_header(header::CONNECTION, "close")
            .into_response();
    }
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let mut kept = Vec::new();
    let mut seen: u64 = 0;
    loop {
        match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break,
            Some(Err(e)) => {
                return Failure::bad_request(format!("cannot read the request body: {e}"))
                    .into_response();
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                seen += data.len() as u64;
                if seen > DRAIN_BYTES {
                    return too_large()
                        .with_header(header::CONNECTION, "close")
                        .into_response();
                }
                if seen <= max as u64 {
                    kept.extend_from_slice(&data);
                }
            }
        }
    }
    if seen > max as u64 {
        return too_large().into_response();
    }
    next.run(Request::from_parts(parts, Body::from(kept))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<RunQuery, String> {
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_run_query(&pairs)
    }

    #[test]
    fn run_query_defaults_limit() {
        assert_eq!(
            q(&[]).unwrap(),
            RunQuery {
                limit: Some(50),
                ..Default::default()
            }
        );
    }

    #[test]
    fn run_query_accepts_all_parameters() {
        let got = q(&[
            ("job", "home"),
            ("status", "failed"),
            ("before", "10"),
            ("limit", "1000"),
        ])
        .unwrap();
        assert_eq!(
            got,
            RunQuery {
                job: Some("home".into()),
                status: Some("failed".into()),
                before: Some(10),
                limit: Some(1000)
            }
        );
    }

    #[test]
    fn run_query_errors_name_the_parameter() {
        for (pairs, name) in [
            (&[("limit", "0")][..], "limit"),
            (&[("limit", "1001")][..], "limit"),
            (&[("limit", "x")][..], "limit"),
            (&[("before", "0")][..], "before"),
            (&[("before", "-3")][..], "before"),
            (&[("status", "done")][..], "status"),
            (&[("job", "")][..], "job"),
            (&[("job", "a"), ("job", "b")][..], "job"),
            (&[("jbo", "a")][..], "jbo"),
        ] {
            let err = q(pairs).unwrap_err();
            assert!(err.contains(&format!("\"{name}\"")), "{err}");
        }
    }
}
