//! What several parts of rackvault read, so that none of them depends on another for it: the shared
//! parts of rackvault.toml and its error type, the snapshot manifest, relative paths, snapshot
//! names, file metadata as a manifest records it, published snapshots in a store (read side), and
//! reading and writing beneath a directory without following symlinks (restores).
//! backupd writes snapshots; the tape side and the web UI read them through this crate.

pub mod beneath;
pub mod bytes;
pub mod config;
pub mod escape;
pub mod fsmeta;
pub mod human;
pub mod jsonl;
pub mod manifest;
pub mod relpath;
pub mod report;
pub mod restore;
pub mod snapname;
pub mod snapshots;
pub mod sqlite;
pub mod zfs;
