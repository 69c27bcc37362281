//! `backupd restore` of a snapshot the store no longer has (pruned, or the store lost): when a
//! complete tape set holds it, the restore comes from tape, saying so and which tapes it needs.

use std::path::Path;

use anyhow::Result;
use common::relpath::RelPath;
use tapectl::catalog::{SetRow, TapeCatalog};
use tapectl::sets::restore::{RestoreRequest, TapeRestoreReport, find_set};

use crate::config::Config;

/// The complete tape set holding `job`'s `snapshot`, when the tape catalog has one.
pub fn set_on_tape(cfg: &Config, job: &str, snapshot: &str) -> Option<(SetRow, Vec<String>)> {
    if !cfg.state_dir.join("tapes.sqlite").exists() {
        return None;
    }
    let cat = TapeCatalog::open(&cfg.state_dir).ok()?;
    let set = find_set(&cat, job, snapshot).ok()?;
    let mut tapes = Vec::new();
    for s in cat.chain(&set).ok()? {
        for t in cat.tapes_of_set(s.id).ok()? {
            if !tapes.contains(&t) {
                tapes.push(t);
            }
        }
    }
    Some((set, tapes))
}

/// Restores from the set's tapes with the library the configuration names.
pub fn restore(
    cfg: &Config,
    set: &SetRow,
    paths: &[RelPath],
    to: &Path,
    overwrite: bool,
) -> Result<TapeRestoreReport> {
    let settings = tapectl::config::Settings::load(&cfg.path)?;
    let mut lib = tapectl::library::Library::open(
        settings,
        std::time::Duration::from_secs(0),
        &format!("backupd restore {} {}", set.job, set.snapshot),
    )?;
    // An encrypted tape's key is found by its fingerprint in the pools' key files and
    // `[tape] keys_dir` (docs/encryption.md).
    let cf = common::config::ConfigFile::load(&cfg.path)?;
    lib.keys = tapectl::pools::TapeSettings::from_file(&cf)?.keyring();
    let cat = TapeCatalog::open(&cfg.state_dir)?;
    tapectl::sets::restore::restore(
        &mut lib,
        &cat,
        &RestoreRequest {
            job: &set.job,
            snapshot: &set.snapshot,
            paths,
            to,
            overwrite,
            copy: None,
            drive: 0,
            state_dir: &cfg.state_dir,
            wait_tapes: None,
        },
        &tapectl::sets::write::NoProgress,
    )
}
