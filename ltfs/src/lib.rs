//! LTFS 2.4: the on-tape format, written and read over the [`TapeDevice`] trait.
//!
//! This crate knows nothing about SCSI: `tapectl` implements [`TapeDevice`] for real and virtual drives.

pub mod coherency;
pub mod construct;
pub mod device;
pub mod index;
pub mod label;
pub mod mam;
pub mod scan;
pub mod time;
pub mod volume;

pub use device::{DeviceError, Position, ReadOutcome, TapeDevice, WriteOutcome};
pub use mam::{Attribute, AttributeFormat};
