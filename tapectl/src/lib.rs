//! Tape library control: the LTO drive and SCSI medium changer command sets over any [`scsi::Transport`].

pub mod backend;
pub mod catalog;
pub mod changer;
pub mod config;
pub mod drive;
pub mod expiry;
pub mod keys;
pub mod library;
pub mod lock;
pub mod pools;
pub mod rotation;
pub mod sets;
