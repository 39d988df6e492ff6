//! `secmon bench`: ingest throughput and command latency (being written).

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub fn run(_a: BenchArgs, _g: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
