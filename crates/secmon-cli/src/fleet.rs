//! Fleet subcommands: agents, agent, command, events, alerts (being written).

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct AgentsArgs {}
#[derive(Debug, clap::Args)]
pub struct AgentArgs {}
#[derive(Debug, clap::Args)]
pub struct CommandArgs {}
#[derive(Debug, clap::Args)]
pub struct EventsArgs {}
#[derive(Debug, clap::Args)]
pub struct AlertsArgs {}

pub fn agents(_a: AgentsArgs, _g: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
pub fn agent(_a: AgentArgs, _g: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
pub fn command(_a: CommandArgs, _g: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
pub fn events(_a: EventsArgs, _g: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
pub fn alerts(_a: AlertsArgs, _g: &Global) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
