//! `btrfs-snapshot`: to be written.
use super::{Context, View};
use anyhow::Result;
use std::path::Path;

pub fn prepare(_ctx: &Context, _subvolume: &Path, _snapshot_dir: Option<&Path>) -> Result<View> {
    anyhow::bail!("the btrfs-snapshot consistency provider is not built yet")
}

pub fn clean_leftovers(
    _ctx: &Context,
    _subvolume: &Path,
    _snapshot_dir: Option<&Path>,
) -> Result<()> {
    Ok(())
}
