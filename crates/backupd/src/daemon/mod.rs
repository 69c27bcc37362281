//! `backupd serve`: the daemon.
pub mod scheduler;
