use crate::{AgentId, EventClass};

/// NATS subject names under a configurable prefix (default `secmon`).
///
/// Everything an agent publishes is under `<prefix>.agent.<its id>.`, and it only
/// subscribes to `<prefix>.cmd.<its id>` and `_INBOX_<its id>.>`, so per-agent NATS
/// permissions can pin each agent to its own subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new("secmon")
    }
}

/// What an agent-published subject carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSubject {
    Event(String),
    Register,
    Heartbeat,
    Shutdown,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn event(&self, agent: &AgentId, class: EventClass) -> String {
        format!("{}.agent.{agent}.event.{class}", self.prefix)
    }

    /// All events of all agents (the events stream's subject filter).
    pub fn all_events(&self) -> String {
        format!("{}.agent.*.event.>", self.prefix)
    }

    pub fn register(&self, agent: &AgentId) -> String {
        format!("{}.agent.{agent}.register", self.prefix)
    }

    pub fn all_registers(&self) -> String {
        format!("{}.agent.*.register", self.prefix)
    }

    pub fn heartbeat(&self, agent: &AgentId) -> String {
        format!("{}.agent.{agent}.heartbeat", self.prefix)
    }

    pub fn all_heartbeats(&self) -> String {
        format!("{}.agent.*.heartbeat", self.prefix)
    }

    pub fn shutdown(&self, agent: &AgentId) -> String {
        format!("{}.agent.{agent}.shutdown", self.prefix)
    }

    pub fn all_shutdowns(&self) -> String {
        format!("{}.agent.*.shutdown", self.prefix)
    }

    pub fn command(&self, agent: &AgentId) -> String {
        format!("{}.cmd.{agent}", self.prefix)
    }

    pub fn alert(&self, severity: crate::Severity) -> String {
        format!("{}.alert.{severity}", self.prefix)
    }

    pub fn all_alerts(&self) -> String {
        format!("{}.alert.>", self.prefix)
    }

    /// The inbox prefix an agent uses for its requests, so replies stay inside
    /// subjects its permissions allow.
    pub fn agent_inbox_prefix(agent: &AgentId) -> String {
        format!("_INBOX_{agent}")
    }

    /// Split an agent-published subject into the agent id and what it carries.
    /// Returns `None` for subjects outside `<prefix>.agent.` or with an invalid id.
    pub fn parse_agent_subject(&self, subject: &str) -> Option<(AgentId, AgentSubject)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".agent.")?;
        let (id, tail) = rest.split_once('.')?;
        let id = AgentId::new(id).ok()?;
        let kind = match tail {
            "register" => AgentSubject::Register,
            "heartbeat" => AgentSubject::Heartbeat,
            "shutdown" => AgentSubject::Shutdown,
            t => AgentSubject::Event(t.strip_prefix("event.")?.to_owned()),
        };
        Some((id, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_subjects() {
        let s = Subjects::default();
        let id = AgentId::new("a1").unwrap();
        assert_eq!(s.event(&id, EventClass::File), "secmon.agent.a1.event.file");
        assert_eq!(s.command(&id), "secmon.cmd.a1");
        assert_eq!(
            s.parse_agent_subject("secmon.agent.a1.event.file"),
            Some((id.clone(), AgentSubject::Event("file".into())))
        );
        assert_eq!(s.parse_agent_subject("secmon.agent.a1.heartbeat"), Some((id, AgentSubject::Heartbeat)));
        assert_eq!(s.parse_agent_subject("other.agent.a1.heartbeat"), None);
        assert_eq!(s.parse_agent_subject("secmon.agent.a1.bogus"), None);
        assert_eq!(Subjects::new("x").all_events(), "x.agent.*.event.>");
    }
}
