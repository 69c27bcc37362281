//! rackvault's backup engine: selective, incremental backups into ZFS or a directory store,
//! with a manifest per snapshot, verification, restore, retention and a catalog.

pub mod alerts;
pub mod catalog;
pub mod catalog_backup;
pub mod config;
pub mod consistency;
pub mod content;
pub mod daemon;
pub mod diff;
pub mod engine;
pub mod interrupt;
pub mod metrics;
pub mod pending_post;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod run;
pub mod scan;
pub mod schedule;
pub mod select;
pub mod store;
pub mod tape_jobs;
pub mod tape_restore;
pub mod verify;
