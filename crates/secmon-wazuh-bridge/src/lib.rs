//! secmon-wazuh-bridge: reads a Wazuh manager's `global.db` read-only, detects agent
//! status changes and publishes them, signed, to NATS. See ARCHITECTURE.md.

pub mod audit;
pub mod breaker;
pub mod cli_sim;
pub mod cli_tools;
pub mod config;
pub mod crypto;
pub mod db;
pub mod diff;
pub mod fixture;
pub mod flapping;
pub mod http;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod outgoing;
pub mod publish;
pub mod sign;
pub mod simulator;
pub mod snapshot_store;
pub mod source;
pub mod watch;
pub mod wire;
