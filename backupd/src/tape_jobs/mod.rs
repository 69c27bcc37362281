//! Tape jobs (`[[tape_job]]`): the daemon writes the latest snapshot of backup jobs to a tape pool
//! as full or incremental sets on their schedules, in its one queue beside the backup jobs.
//!
//! - `config`: the `[[tape_job]]` table, checked against the jobs, pools and rotation policy.
//! - `due`: whether a run writes a full or an incremental set (pure, time as a parameter).
//! - `run`: one run: for each backup job, its latest snapshot to tape, pausing for tapes.

pub mod config;
pub mod due;
pub mod run;

pub use config::TapeJob;
