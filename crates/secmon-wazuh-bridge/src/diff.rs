//! Change detection: the previous snapshot against the rows just read, in one
//! merge pass over both (sorted by agent id), and the events that result.
//!
//! Invariant: the new snapshot holds exactly the rows read (row 0 excluded); an
//! agent whose kept fields are unchanged is moved over without allocating, so a
//! cycle costs one pass and memory stays near one snapshot.

use sha2::{Digest, Sha256};

use crate::model::{
    AgentEvent, AgentRecord, AgentState, EventKind, FieldChange, FlappingInfo, SCHEMA_VERSION, Snapshot,
    Status, agent_id_str, epoch_rfc3339,
};

/// One agent that changed in a cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub kind: EventKind,
    pub previous: Option<AgentState>,
    /// `None` for a removal.
    pub current: Option<AgentState>,
    /// The fields that changed (`name`, `ip`, `version`, `groups`, `status`).
    pub changes: Vec<FieldChange>,
}

impl Detected {
    pub fn id(&self) -> i64 {
        self.current.as_ref().or(self.previous.as_ref()).map(|a| a.id).unwrap_or_default()
    }

    pub fn is_status_change(&self) -> bool {
        self.kind == EventKind::StatusChange
    }
}

/// Result of [`diff`]: the snapshot to keep and what changed.
#[derive(Debug, Default)]
pub struct DiffOutcome {
    pub snapshot: Snapshot,
    pub detected: Vec<Detected>,
    /// Whether anything kept in the snapshot changed (keepalives included), i.e.
    /// whether it is worth persisting.
    pub snapshot_changed: bool,
}

/// Compares `previous` with `rows` (any order; sorted here if needed).
pub fn diff(previous: Snapshot, mut rows: Vec<AgentRecord>) -> DiffOutcome {
    if !rows.is_sorted_by_key(|r| r.id) {
        rows.sort_by_key(|r| r.id);
    }
    let mut d = Differ::new(previous, rows.len());
    for r in &rows {
        d.push(r);
    }
    d.finish()
}

/// The merge pass, fed one row at a time in ascending id order (the reader's
/// `ORDER BY id`), so a cycle never holds all rows as full records.
pub struct Differ {
    prev: std::iter::Peekable<std::vec::IntoIter<AgentState>>,
    out: Vec<AgentState>,
    detected: Vec<Detected>,
    changed: bool,
    last_id: Option<i64>,
}

impl Differ {
    pub fn new(previous: Snapshot, expected_rows: usize) -> Self {
        Self {
            prev: previous.agents.into_iter().peekable(),
            out: Vec::with_capacity(expected_rows),
            detected: Vec::new(),
            changed: false,
            last_id: None,
        }
    }

    /// Rows must come in strictly ascending id order; a row out of order or
    /// repeated is ignored (the reader sorts, so this only guards the invariant).
    pub fn push(&mut self, row: &AgentRecord) -> bool {
        if row.id == 0 || self.last_id.is_some_and(|l| row.id <= l) {
            return false;
        }
        self.last_id = Some(row.id);
        let (prev, detected, out) = (&mut self.prev, &mut self.detected, &mut self.out);
        // Agents before this row that are no longer there were removed.
        while let Some(p) = prev.next_if(|p| p.id < row.id) {
            self.changed = true;
            detected.push(Detected {
                kind: EventKind::Removed,
                previous: Some(p),
                current: None,
                changes: vec![],
            });
        }
        match prev.next_if(|p| p.id == row.id) {
            Some(p) if p.same_as(row) => out.push(p),
            Some(p) => {
                self.changed = true;
                let mut cur = AgentState::from_record(row);
                cur.generation = p.generation;
                let changes = field_changes(&p, &cur);
                if !changes.is_empty() {
                    cur.generation += 1;
                }
                let kind = if p.status != cur.status { EventKind::StatusChange } else { EventKind::Updated };
                if !changes.is_empty() {
                    detected.push(Detected { kind, previous: Some(p), current: Some(cur.clone()), changes });
                }
                out.push(cur);
            }
            None => {
                self.changed = true;
                let cur = AgentState::from_record(row);
                detected.push(Detected {
                    kind: EventKind::Registered,
                    previous: None,
                    current: Some(cur.clone()),
                    changes: vec![],
                });
                out.push(cur);
            }
        }
        true
    }

    /// Gives the previous snapshot back when a read fails midway: every agent as it
    /// was, except that keepalive-only updates already merged are kept (they never
    /// make events).
    pub fn abort(self) -> Snapshot {
        let mut before: std::collections::HashMap<i64, Option<AgentState>> =
            self.detected.into_iter().map(|d| (d.id(), d.previous)).collect();
        let mut agents: Vec<AgentState> = Vec::with_capacity(self.out.len());
        for a in self.out {
            match before.remove(&a.id) {
                None => agents.push(a),
                Some(Some(p)) => agents.push(p),
                Some(None) => {} // registered in this read: not in the previous snapshot
            }
        }
        agents.extend(before.into_values().flatten()); // removed in this read
        agents.extend(self.prev);
        agents.sort_by_key(|a| a.id);
        Snapshot { agents }
    }

    pub fn finish(mut self) -> DiffOutcome {
        for p in self.prev {
            self.changed = true;
            self.detected.push(Detected {
                kind: EventKind::Removed,
                previous: Some(p),
                current: None,
                changes: vec![],
            });
        }
        DiffOutcome {
            snapshot: Snapshot { agents: self.out },
            detected: self.detected,
            snapshot_changed: self.changed,
        }
    }
}

fn field_changes(p: &AgentState, c: &AgentState) -> Vec<FieldChange> {
    let mut v = Vec::new();
    let mut cmp = |field: &str, a: Option<&str>, b: Option<&str>| {
        if a != b {
            v.push(FieldChange {
                field: field.into(),
                previous: a.map(Into::into),
                current: b.map(Into::into),
            });
        }
    };
    cmp("status", Some(p.status.as_str()), Some(c.status.as_str()));
    cmp("name", Some(p.name()), Some(c.name()));
    cmp("ip", p.ip(), c.ip());
    cmp("version", p.version(), c.version());
    cmp("groups", p.groups(), c.groups());
    v
}

/// The database time an event is named after, so the same change derived twice
/// (a restart before its publish was acknowledged) gets the same event id:
/// registration → `date_add`; removal → the removed row's `date_add`; became
/// disconnected → `disconnection_time`; otherwise → `last_keepalive` (then `date_add`).
pub fn event_time(d: &Detected) -> i64 {
    let pick = |a: &AgentState, primary: Option<i64>| {
        primary.filter(|t| *t > 0).or(a.last_keepalive().filter(|t| *t > 0)).or(a.date_add()).unwrap_or(0)
    };
    match (d.kind, &d.previous, &d.current) {
        (EventKind::Registered, _, Some(c)) => c.date_add().unwrap_or(0),
        (EventKind::Removed, Some(p), _) => p.date_add().unwrap_or(0),
        (_, _, Some(c)) if c.status == Status::Disconnected => pick(c, c.disconnection_time()),
        (_, _, Some(c)) => pick(c, c.last_keepalive()),
        (_, Some(p), None) => pick(p, None),
        _ => 0,
    }
}

/// `evt_<agent>_<time>_<kind>_<digest>`: the digest (8 hex) covers the previous
/// and current state, because times have one-second resolution and an agent can
/// change twice within a second; derived again from the same snapshot and row, the
/// id is the same.
pub fn event_id(d: &Detected, kind: EventKind) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_str().as_bytes());
    for a in [&d.previous, &d.current] {
        match a {
            Some(a) => {
                h.update([1, a.status as u8]);
                h.update(a.generation.to_le_bytes());
                for t in [a.last_keepalive(), a.disconnection_time(), a.date_add()] {
                    h.update(t.unwrap_or(-1).to_le_bytes());
                }
            }
            None => h.update([0]),
        }
    }
    for c in &d.changes {
        h.update(c.field.as_bytes());
        h.update([0]);
        h.update(c.previous.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        h.update(c.current.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
    }
    let digest = hex::encode(h.finalize());
    format!("evt_{}_{}_{}_{}", agent_id_str(d.id()), event_time(d), kind.as_str(), &digest[..8])
}

/// The event for a detected change (unsigned). `kind` is normally `d.kind`;
/// flapping handling passes `Flapping` with its figures.
pub fn build_event(
    d: &Detected,
    kind: EventKind,
    manager_node: &str,
    timestamp: &str,
    flapping: Option<FlappingInfo>,
) -> AgentEvent {
    let a = d.current.as_ref().or(d.previous.as_ref()).expect("a change has a previous or a current state");
    let current_status = d.current.as_ref().map(|c| c.status).unwrap_or(Status::Unknown);
    let event_id = match kind {
        // Flapping events are named after the transition that started flapping;
        // `flapping_ended` after the moment it ended (no database time marks it).
        EventKind::FlappingEnded => format!(
            "evt_{}_{}_{}",
            agent_id_str(a.id),
            chrono::DateTime::parse_from_rfc3339(timestamp).map(|t| t.timestamp()).unwrap_or(0),
            kind.as_str()
        ),
        _ => event_id(d, kind),
    };
    AgentEvent {
        schema_version: SCHEMA_VERSION,
        event_id,
        kind,
        agent_id: agent_id_str(a.id),
        agent_name: a.name().to_owned(),
        previous_status: d.previous.as_ref().map(|p| p.status),
        current_status,
        ip_address: a.ip().map(str::to_owned),
        last_keepalive: a.last_keepalive().and_then(epoch_rfc3339),
        manager_node: manager_node.to_owned(),
        timestamp: timestamp.to_owned(),
        changes: d.changes.clone(),
        version: a.version().map(str::to_owned),
        groups: a
            .groups()
            .map(|g| g.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default(),
        os_name: a.os_name().map(str::to_owned),
        os_platform: a.os_platform().map(str::to_owned),
        registered_at: a.date_add().and_then(epoch_rfc3339),
        disconnection_time: a.disconnection_time().filter(|t| *t > 0).and_then(epoch_rfc3339),
        status_code: a.status_code(),
        flapping,
        signature: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: i64, name: &str, status: Status) -> AgentRecord {
        let mut r = AgentRecord::new(id, name, status);
        r.ip = Some(format!("10.0.0.{id}"));
        r.version = Some("Wazuh v4.7.2".into());
        r.groups = Some("default".into());
        r.date_add = Some(1_700_000_000 + id);
        r.last_keepalive = Some(1_716_897_000);
        r.disconnection_time = Some(0);
        r
    }

    #[test]
    fn first_diff_registers_everyone_and_row_zero_is_not_an_agent() {
        let rows = vec![
            rec(0, "manager", Status::Active),
            rec(2, "b", Status::Active),
            rec(1, "a", Status::Pending),
        ];
        let o = diff(Snapshot::default(), rows);
        assert_eq!(o.snapshot.agents.iter().map(|a| a.id).collect::<Vec<_>>(), vec![1, 2]);
        assert!(o.detected.iter().all(|d| d.kind == EventKind::Registered));
        assert_eq!(o.detected.len(), 2);
    }

    #[test]
    fn transitions_registrations_removals_and_field_changes() {
        let before =
            vec![rec(1, "a", Status::Active), rec(2, "b", Status::Active), rec(3, "c", Status::Active)];
        let snap = diff(Snapshot::default(), before).snapshot;
        let mut r1 = rec(1, "a", Status::Disconnected);
        r1.disconnection_time = Some(1_716_897_300);
        let mut r3 = rec(3, "c2", Status::Active);
        r3.ip = Some("192.168.1.3".into());
        r3.groups = Some("default,web".into());
        let r4 = rec(4, "d", Status::NeverConnected);
        let o = diff(snap, vec![r1, r3, r4]);
        let kinds: Vec<_> = o.detected.iter().map(|d| (d.id(), d.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (1, EventKind::StatusChange),
                (2, EventKind::Removed),
                (3, EventKind::Updated),
                (4, EventKind::Registered)
            ]
        );
        let d1 = &o.detected[0];
        assert!(
            event_id(d1, d1.kind).starts_with("evt_001_1716897300_status_change_"),
            "{}",
            event_id(d1, d1.kind)
        );
        let e = build_event(d1, d1.kind, "node1", "2024-05-28T12:00:00.000Z", None);
        assert_eq!(e.previous_status, Some(Status::Active));
        assert_eq!(e.current_status, Status::Disconnected);
        assert_eq!(e.disconnection_time.as_deref(), Some("2024-05-28T11:55:00Z"));
        let fields: Vec<_> = o.detected[2].changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["name", "ip", "groups"]);
        let e3 = build_event(&o.detected[2], EventKind::Updated, "n", "t", None);
        assert_eq!(e3.groups, vec!["default", "web"]);
        assert!(e3.event_id.starts_with("evt_003_1716897000_updated_"), "{}", e3.event_id);
        let removed = build_event(&o.detected[1], EventKind::Removed, "n", "t", None);
        assert_eq!(removed.previous_status, Some(Status::Active));
        assert_eq!(removed.current_status, Status::Unknown);
        assert!(removed.event_id.starts_with("evt_002_1700000002_removed_"), "{}", removed.event_id);
    }

    #[test]
    fn keepalive_only_changes_update_the_snapshot_without_events() {
        let snap = diff(Snapshot::default(), vec![rec(1, "a", Status::Active)]).snapshot;
        let mut r = rec(1, "a", Status::Active);
        r.last_keepalive = Some(1_716_899_999);
        let o = diff(snap.clone(), vec![r]);
        assert!(o.detected.is_empty());
        assert!(o.snapshot_changed);
        assert_eq!(o.snapshot.agents[0].last_keepalive(), Some(1_716_899_999));
        let o = diff(
            o.snapshot.clone(),
            vec![{
                let mut r = rec(1, "a", Status::Active);
                r.last_keepalive = Some(1_716_899_999);
                r
            }],
        );
        assert!(!o.snapshot_changed && o.detected.is_empty());
    }

    #[test]
    fn the_same_change_derived_twice_has_the_same_id() {
        let snap = diff(Snapshot::default(), vec![rec(7, "a", Status::Active)]).snapshot;
        let mut r = rec(7, "a", Status::Disconnected);
        r.disconnection_time = Some(1_716_897_301);
        let a = diff(snap.clone(), vec![r.clone()]);
        let b = diff(snap, vec![r]);
        assert_eq!(
            event_id(&a.detected[0], EventKind::StatusChange),
            event_id(&b.detected[0], EventKind::StatusChange)
        );
    }

    #[test]
    fn an_aborted_diff_gives_the_previous_snapshot_back() {
        let before =
            vec![rec(1, "a", Status::Active), rec(2, "b", Status::Active), rec(4, "d", Status::Active)];
        let snap = diff(Snapshot::default(), before).snapshot;
        let mut d = Differ::new(snap.clone(), 3);
        d.push(&rec(1, "a", Status::Disconnected));
        d.push(&rec(3, "c", Status::Active)); // new; 2 removed
        assert_eq!(d.abort(), snap);
    }

    #[test]
    fn two_flips_within_one_second_get_different_ids() {
        let mut up = rec(3, "a", Status::Active);
        up.last_keepalive = Some(100);
        let mut down = rec(3, "a", Status::Disconnected);
        down.disconnection_time = Some(100);
        down.last_keepalive = Some(100);
        let s0 = diff(Snapshot::default(), vec![up.clone()]).snapshot;
        let d1 = diff(s0, vec![down.clone()]);
        let d2 = diff(d1.snapshot.clone(), vec![up]);
        let d3 = diff(d2.snapshot.clone(), vec![down]);
        let ids: std::collections::HashSet<_> =
            [&d1, &d2, &d3].iter().map(|o| event_id(&o.detected[0], EventKind::StatusChange)).collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
    }

    #[test]
    fn snapshot_round_trips_through_json_and_keeps_texts_apart() {
        let mut r = rec(5, "we\u{1f}ird", Status::Unknown);
        r.os_name = Some("Ubuntu".into());
        let s = Snapshot::from_records(vec![r]);
        let text = serde_json::to_string(&s).unwrap();
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.agents[0].name(), "weird");
        assert_eq!(back.agents[0].os_name(), Some("Ubuntu"));
        assert_eq!(back.agents[0].os_platform(), None);
    }
}
