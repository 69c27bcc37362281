//! rackvault's HTTP layer: the JSON API (`/api/v1/…`), `/metrics`, and later the web UI.
//!
//! The daemon (`backupd serve`) implements [`Backend`]; this crate knows nothing of stores,
//! catalogs or schedulers, only of the API's shapes ([`model`]), its routes, authentication and
//! errors, and the server that keeps idle or slow clients from starving it. See docs/api.md
//! and docs/daemon.md.

mod api;
mod auth;
pub mod backend;
mod host;
pub mod model;
mod server;

pub use api::{ApiConfig, Limits, router, router_with_limits};
pub use auth::tokens_equal;
pub use backend::{ApiError, Backend};
pub use host::allowed_host_name;
pub use server::{ServeOptions, serve, serve_with};
