//! `postgres`: to be written.
use super::{Context, View};
use crate::config::Postgres;
use anyhow::Result;

pub fn prepare(_ctx: &Context, _pg: &Postgres) -> Result<View> {
    anyhow::bail!("the postgres consistency provider is not built yet")
}
