//! Fleet registry: registration, heartbeats, shutdown notices, heartbeat timeouts.
//! (being written)

use secmon_proto::AgentId;

use crate::store::{AgentRecord, StoreError};

/// Cloneable handle the API uses to act on the registry.
#[derive(Clone)]
pub struct RegistryHandle {}

impl RegistryHandle {
    /// Marks an agent `removed` (its registrations and events are refused from now
    /// on). `Ok(None)` when the agent is unknown.
    pub async fn remove(&self, id: &AgentId, reason: &str) -> Result<Option<AgentRecord>, StoreError> {
        let _ = (id, reason);
        unimplemented!("registry being written")
    }
}
