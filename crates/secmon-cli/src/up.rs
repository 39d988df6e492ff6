//! `secmon up`: the whole stack on one machine (being written).

#[derive(Debug, clap::Args)]
pub struct UpArgs {}

pub fn run(_a: UpArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
