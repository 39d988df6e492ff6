//! secmon-wazuh-bridge: reads a Wazuh manager's `global.db` read-only, detects agent
//! status changes and publishes them, signed, to NATS. See ARCHITECTURE.md.

pub mod audit;
pub mod breaker;
pub mod metrics;
pub mod model;
pub mod config;
pub mod outgoing;
