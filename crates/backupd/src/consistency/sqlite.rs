//! `sqlite`: to be written.
use super::{Context, View};
use anyhow::Result;
use std::path::PathBuf;

pub fn prepare(_ctx: &Context, _databases: &[PathBuf]) -> Result<View> {
    anyhow::bail!("the sqlite consistency provider is not built yet")
}
