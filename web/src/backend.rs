//! What the HTTP layer needs from the daemon. Methods are synchronous and quick (catalog
//! queries, in-memory state); the router calls them on tokio's blocking pool.

use crate::model::{Health, JobView, RunQuery, RunView, SnapshotItem, Triggered};

/// An error the API reports with a status code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the request is malformed (bad query parameter, bad id).
    BadRequest(String),
    /// 404: no such job, run or snapshot.
    NotFound(String),
    /// 409: the request conflicts with the current state (e.g. cancelling a finished run).
    Conflict(String),
    /// 503: the daemon cannot do it now (shutting down).
    Unavailable(String),
    /// 500: something failed inside; the message says what.
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Unavailable(m)
            | ApiError::Internal(m) => m,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message(), self.status())
    }
}

impl std::error::Error for ApiError {}

pub trait Backend: Send + Sync + 'static {
    fn health(&self) -> Health;
    fn jobs(&self) -> Result<Vec<JobView>, ApiError>;
    fn job(&self, name: &str) -> Result<JobView, ApiError>;
    /// Runs matching `query`, newest (highest id) first. The router has validated the query
    /// and always sets `limit`.
    fn runs(&self, query: &RunQuery) -> Result<Vec<RunView>, ApiError>;
    fn run(&self, id: i64) -> Result<RunView, ApiError>;
    fn snapshots(&self, job: &str) -> Result<Vec<SnapshotItem>, ApiError>;
    /// Queues a run of `job` (one queued and one running per job at most: a second trigger
    /// returns the run already waiting).
    fn trigger(&self, job: &str) -> Result<Triggered, ApiError>;
    /// Cancels a queued or running run; returns it as it is after the request.
    fn cancel(&self, id: i64) -> Result<RunView, ApiError>;
    /// The Prometheus text exposition.
    fn metrics(&self) -> String;
}
