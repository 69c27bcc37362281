//! Tape sets: one backup snapshot written to LTFS tapes as a full or incremental set, in one or more
//! copies on distinct tapes, spanning tapes when it must; and read back (verify, restore).
//!
//! - `layout`: the names, self-description and set manifest on tape (docs/tape-sets.md).
//! - `plan`: what a set stores, from manifests alone.
//! - `source`: the snapshot read once, ahead of the drives.
//! - `allocate`: the next tape of a pool, loaded and ready.
//! - `catalog_copy`: the tape catalog copied onto each copy's last tape.
//! - `fetch`: a set manifest the state directory lacks, read back from the set's tapes.
//! - `crypt`: the drive's key set for an encrypted pool's tapes, and found for an encrypted tape.
//! - `write`: the writers of a set's copies.
//! - `restore`: a snapshot or paths of it back from the sets holding it.
//! - `verify`: a copy read back against the manifest's hashes.
//! - `mount`: a set's tape loaded and mounted for reading.
//! - `rebuild`: the catalog made anew from the tapes alone.
//! - `wait`: a set paused until a person brings a tape.

pub mod allocate;
pub mod catalog_copy;
pub mod crypt;
pub mod fetch;
pub mod layout;
pub mod mount;
pub mod plan;
pub mod rebuild;
pub mod restore;
pub mod source;
pub mod verify;
pub mod wait;
pub mod write;
