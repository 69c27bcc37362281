//! The daemon's copies of the catalogs (`catalog.sqlite`, runs and snapshots; `tapes.sqlite`, the
//! tape catalog): after each tape run and at least daily, a consistent copy of each into
//! `<state_dir>/catalog-backups/<time>/` (or `[serve] catalog_backup_dir`), the newest
//! [`KEEP`] kept. They guard against a damaged or wrongly migrated catalog; every tape set also
//! carries a copy of the tape catalog, against losing the disk, and `tapectl catalog rebuild`
//! is the last resort.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use jiff::Timestamp;

/// Copies kept.
pub const KEEP: usize = 7;

/// A copy is due when the newest is older than this.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

const CATALOGS: [&str; 2] = ["catalog.sqlite", "tapes.sqlite"];

/// Copies the catalogs that exist in `state_dir` into a new directory of `dest` named by `now`;
/// removes all but the newest [`KEEP`] copies. Returns the new directory.
pub fn back_up(state_dir: &Path, dest: &Path, now: Timestamp) -> Result<PathBuf> {
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let name = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let tmp = dest.join(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    for c in CATALOGS {
        let src = state_dir.join(c);
        if src.exists() {
            common::sqlite::copy_consistent(&src, &tmp.join(c))?;
        }
    }
    let done = dest.join(&name);
    if done.exists() {
        std::fs::remove_dir_all(&done)?;
    }
    std::fs::rename(&tmp, &done)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), done.display()))?;
    for old in copies(dest)?.into_iter().rev().skip(KEEP) {
        std::fs::remove_dir_all(dest.join(&old))
            .with_context(|| format!("cannot remove the old catalog copy {old}"))?;
    }
    Ok(done)
}

/// The names of the finished copies in `dest`, oldest first.
pub fn copies(dest: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dest) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dest.display())),
    };
    for e in rd {
        let name = e?.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && name.ends_with('Z') {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// When the newest copy in `dest` was made, from its name.
pub fn newest(dest: &Path) -> Option<Timestamp> {
    let name = copies(dest).ok()?.pop()?;
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", &name)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_consistent_named_by_time_and_the_newest_seven_kept() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let c = crate::catalog::Catalog::open(&state).unwrap();
        c.enqueue_run("home", crate::catalog::Trigger::Manual, Timestamp::now())
            .unwrap();
        let dest = d.path().join("backups");
        let t0: Timestamp = "2026-12-01T04:00:00Z".parse().unwrap();
        for day in 0..9 {
            let at = t0 + jiff::SignedDuration::from_hours(24 * day);
            back_up(&state, &dest, at).unwrap();
        }
        let names = copies(&dest).unwrap();
        assert_eq!(names.len(), KEEP);
        assert_eq!(names[0], "20261203T040000Z");
        assert_eq!(newest(&dest), Some("2026-12-09T04:00:00Z".parse().unwrap()));
        let copy = crate::catalog::Catalog::open(&dest.join(&names[6])).unwrap();
        assert_eq!(copy.runs(None, 10).unwrap().len(), 1);
        // No tape catalog in state_dir: none copied (nothing made up).
        assert!(!dest.join(&names[6]).join("tapes.sqlite").exists());
    }
}
