//! Alerts for `backupd serve`: [`policy`] decides when a job's state is worth a message,
//! [`format`] renders it for Discord or a generic JSON webhook, and [`sender`] delivers it from a
//! background thread with retries, so neither a slow webhook nor an outage stalls the scheduler.
//!
//! The daemon's wiring: seed an [`AlertPolicy`] from the catalog, feed it `run_finished` and a
//! periodic `check_stale`, and pass every returned [`Alert`] to [`AlertSender::send`].

pub mod format;
pub mod policy;
pub mod sender;

pub use policy::{Alert, AlertPolicy, JobAlertState, StaleCheck};
pub use sender::{AlertSender, SenderOptions};
