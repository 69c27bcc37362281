//! Waiting for a person at the library: a set that needs a tape the library does not have pauses
//! until the library changes. Cartridges put into the import/export slots while it waits are taken
//! in (as `tapectl import` would), so an operator only has to use the door. Cartridges that were
//! in the slots already and are on their way to a vault stay there.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::allocate::reconcile;
use crate::catalog::TapeCatalog;
use crate::changer::Inventory;
use crate::library::Library;

/// How often the library's element status is read while waiting.
pub const POLL: Duration = Duration::from_secs(2);

/// Why a wait ended without a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// The library changed: try again.
    Changed,
    /// The deadline passed.
    TimedOut,
}

/// The wait was cancelled (the daemon is stopping, or someone cancelled the run).
#[derive(Debug, Clone, Copy)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// Every cartridge the library holds, wherever it is.
fn cartridges(inv: &Inventory) -> BTreeSet<String> {
    inv.storage
        .iter()
        .chain(&inv.drives)
        .chain(&inv.import_export)
        .filter(|e| e.full)
        .filter_map(|e| e.volume_tag.clone())
        .collect()
}

/// Waits until the library's cartridges change or `deadline` passes, reading its element status
/// every `poll`. Cartridges in the import/export slots not bound for a vault are imported first.
pub fn for_library_change(
    lib: &mut Library,
    cat: &TapeCatalog,
    actor: &str,
    deadline: Instant,
    poll: Duration,
    cancelled: &dyn Fn() -> bool,
) -> Result<WaitEnd> {
    let before = cartridges(&lib.inventory()?);
    loop {
        if import_arrivals(lib, cat, actor)? {
            return Ok(WaitEnd::Changed);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(WaitEnd::TimedOut);
        }
        // Short steps, so a cancel is seen within a fraction of a second.
        let until = (now + poll).min(deadline);
        while Instant::now() < until {
            if cancelled() {
                bail!(Cancelled);
            }
            std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
        }
        let inv = lib.inventory()?;
        if cartridges(&inv) != before {
            import_arrivals(lib, cat, actor)?;
            reconcile(cat, &lib.inventory()?, actor)?;
            return Ok(WaitEnd::Changed);
        }
    }
}

/// Imports the cartridges in the import/export slots that are not waiting to be carried to a
/// vault; true when any was moved.
fn import_arrivals(lib: &mut Library, cat: &TapeCatalog, actor: &str) -> Result<bool> {
    let outbound = |barcode: Option<&str>| {
        barcode.is_some_and(|b| {
            cat.media(b)
                .ok()
                .flatten()
                .is_some_and(|m| m.destination.is_some())
        })
    };
    let moves = lib.import_if(|b| !outbound(b))?;
    if moves.is_empty() {
        return Ok(false);
    }
    for m in &moves {
        tracing::info!(
            barcode = m.barcode.as_deref().unwrap_or("?"),
            "imported from the import/export door while waiting for a tape"
        );
    }
    reconcile(cat, &lib.inventory()?, actor)?;
    Ok(true)
}
