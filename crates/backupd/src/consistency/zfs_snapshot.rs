//! `zfs-snapshot`: to be written.
use super::{Context, View};
use anyhow::Result;

pub fn prepare(_ctx: &Context, _datasets: &[String], _recursive: bool) -> Result<View> {
    anyhow::bail!("the zfs-snapshot consistency provider is not built yet")
}

pub fn clean_leftovers(_ctx: &Context, _datasets: &[String]) -> Result<()> {
    Ok(())
}
