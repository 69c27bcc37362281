//! rackvault's HTTP layer: the JSON API (`/api/v1/…`), `/metrics`, and later the web UI.
//!
//! The daemon (`backupd serve`) implements [`Backend`]; this crate knows nothing of stores,
//! catalogs or schedulers, only of the API's shapes ([`model`]), its routes, authentication and
//! errors. See docs/api.md.

mod api;
mod auth;
pub mod backend;
pub mod model;

pub use api::{ApiConfig, Limits, router, router_with_limits, serve};
pub use auth::tokens_equal;
pub use backend::{ApiError, Backend};
