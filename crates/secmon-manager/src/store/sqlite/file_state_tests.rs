//! File states in a real SQLite file: what each activity does, newest event wins,
//! one transaction with the events, and the list query.

use chrono::{DateTime, TimeZone, Utc};
use secmon_proto::payload::{FileActivity, FileKind, FileState, ProcessInfo};
use secmon_proto::{AgentId, Envelope, EventClass, Severity};

use super::*;
use crate::file_state;
use crate::store::FileChange;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 500).unwrap()
}

fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn state(size: u64, hash: &str, mode: u32) -> FileState {
    FileState {
        kind: FileKind::File,
        size,
        mode,
        uid: 1000,
        gid: 100,
        mtime: 1_700_000_000.25,
        ctime: 1_700_000_001.5,
        inode: u64::MAX - 1,
        hash: Some(hash.into()),
        hash_algo: Some("sha256".into()),
        hash_skipped: None,
        target: None,
    }
}

fn proc(pid: u32) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: Some(1),
        name: Some("vim".into()),
        exe: Some("/usr/bin/vim".into()),
        cmdline: Some("vim /etc/x".into()),
        uid: Some(0),
        user: Some("root".into()),
        exited: false,
    }
}

/// A file event of agent `a1` at `t(secs)`.
struct Ev {
    seq: u64,
    secs: i64,
    activity: &'static str,
    path: &'static str,
    old_path: Option<&'static str>,
    before: Option<FileState>,
    after: Option<FileState>,
    pid: Option<u32>,
}

impl Ev {
    fn new(seq: u64, secs: i64, activity: &'static str, path: &'static str) -> Ev {
        Ev { seq, secs, activity, path, old_path: None, before: None, after: None, pid: None }
    }

    fn stored(&self) -> StoredEvent {
        let a = FileActivity {
            path: self.path.into(),
            old_path: self.old_path.map(Into::into),
            kind: FileKind::File,
            watch: "/etc".into(),
            watch_description: String::new(),
            event_type: "FileModify".into(),
            detector: None,
            description: format!("{} {}", self.path, self.activity),
            before: self.before.clone(),
            after: self.after.clone(),
            changes: vec![],
            diff: None,
            diff_truncated: false,
            process: self.pid.map(proc),
            source: "realtime".into(),
            backend: "fanotify".into(),
        };
        let mut e = Envelope::new(
            id("a1"),
            self.seq,
            EventClass::File,
            self.activity,
            Severity::Low,
            serde_json::to_value(a).unwrap(),
        );
        e.time = t(self.secs);
        StoredEvent { envelope: e, received: t(1000) }
    }
}

/// Stores the events with their file updates, as ingest does.
async fn ingest(s: &SqliteStore, evs: &[StoredEvent]) -> InsertOutcome {
    let updates: Vec<FileUpdate> =
        evs.iter().flat_map(|e| file_state::updates(&e.envelope).unwrap()).collect();
    s.insert_events(evs, &[], &updates).await.unwrap()
}

async fn get(s: &SqliteStore, path: &str) -> FileStateRecord {
    s.get_file_state(&id("a1"), path).await.unwrap().unwrap_or_else(|| panic!("no state for {path}"))
}

#[tokio::test]
async fn each_activity_moves_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();

    let created =
        Ev { after: Some(state(10, "h1", 0o100644)), pid: Some(11), ..Ev::new(1, 1, "created", "/etc/a") };
    let e1 = created.stored();
    ingest(&s, std::slice::from_ref(&e1)).await;
    let st = get(&s, "/etc/a").await;
    assert_eq!(
        (st.kind, st.hash.as_deref(), st.hash_algo.as_deref(), st.size, st.mode, st.mode_octal.as_deref()),
        (FileKind::File, Some("h1"), Some("sha256"), Some(10), Some(0o100644), Some("100644"))
    );
    assert_eq!(
        (st.uid, st.gid, st.mtime, st.ctime),
        (Some(1000), Some(100), Some(1_700_000_000.25), Some(1_700_000_001.5))
    );
    assert_eq!(st.inode, Some(u64::MAX - 1), "all 64 bits of an inode come back");
    assert_eq!((st.deleted, st.last_activity.as_deref()), (false, Some("created")));
    assert_eq!((st.last_change, st.last_event_id, st.last_seq), (Some(t(1)), Some(e1.envelope.id), Some(1)));
    assert_eq!(st.who, Some(proc(11)));
    assert_eq!(st.last_access, None);

    let modified = Ev {
        before: Some(state(10, "h1", 0o100644)),
        after: Some(state(20, "h2", 0o100644)),
        pid: Some(12),
        ..Ev::new(2, 2, "modified", "/etc/a")
    };
    ingest(&s, &[modified.stored()]).await;
    let st = get(&s, "/etc/a").await;
    assert_eq!(
        (st.hash.as_deref(), st.size, st.last_activity.as_deref()),
        (Some("h2"), Some(20), Some("modified"))
    );
    assert_eq!(st.who.map(|p| p.pid), Some(12));

    // attributes_changed without a known process: `who` becomes null.
    let chmod =
        Ev { after: Some(state(20, "h2", 0o100600)), ..Ev::new(3, 3, "attributes_changed", "/etc/a") };
    ingest(&s, &[chmod.stored()]).await;
    let st = get(&s, "/etc/a").await;
    assert_eq!(
        (st.mode_octal.as_deref(), st.last_activity.as_deref(), st.who),
        (Some("100600"), Some("attributes_changed"), None)
    );

    let renamed = Ev {
        old_path: Some("/etc/a"),
        before: Some(state(20, "h2", 0o100600)),
        after: Some(state(20, "h2", 0o100600)),
        pid: Some(13),
        ..Ev::new(4, 4, "renamed", "/etc/b")
    };
    let e4 = renamed.stored();
    ingest(&s, std::slice::from_ref(&e4)).await;
    let old = get(&s, "/etc/a").await;
    assert_eq!(
        (old.deleted, old.renamed_to.as_deref(), old.last_activity.as_deref()),
        (true, Some("/etc/b"), Some("renamed"))
    );
    assert_eq!(
        (old.hash.as_deref(), old.mode_octal.as_deref()),
        (Some("h2"), Some("100600")),
        "last attributes kept"
    );
    assert_eq!(old.last_event_id, Some(e4.envelope.id));
    let new = get(&s, "/etc/b").await;
    assert_eq!((new.deleted, new.renamed_from.as_deref(), new.renamed_to), (false, Some("/etc/a"), None));
    assert_eq!((new.hash.as_deref(), new.last_seq), (Some("h2"), Some(4)));

    // deleted without a `before`: the last attributes stay.
    ingest(&s, &[Ev { pid: Some(14), ..Ev::new(5, 5, "deleted", "/etc/b") }.stored()]).await;
    let gone = get(&s, "/etc/b").await;
    assert_eq!(
        (gone.deleted, gone.last_activity.as_deref(), gone.hash.as_deref(), gone.size),
        (true, Some("deleted"), Some("h2"), Some(20))
    );
    assert_eq!(gone.renamed_from, None);
    assert_eq!(gone.who.map(|p| p.pid), Some(14));

    // Created again: alive, with the new attributes.
    ingest(
        &s,
        &[Ev { after: Some(state(1, "h3", 0o100644)), ..Ev::new(6, 6, "created", "/etc/b") }.stored()],
    )
    .await;
    let back = get(&s, "/etc/b").await;
    assert_eq!((back.deleted, back.hash.as_deref()), (false, Some("h3")));
    assert_eq!(s.get_file_state(&id("a1"), "/etc/none").await.unwrap(), None);
    assert_eq!(s.get_file_state(&id("a2"), "/etc/b").await.unwrap(), None, "states are per agent");
}

#[tokio::test]
async fn only_newer_events_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let newer = Ev { after: Some(state(2, "new", 0o100644)), ..Ev::new(5, 50, "modified", "/etc/a") };
    ingest(&s, &[newer.stored()]).await;

    // Older by event time (a spool sent late), even with a higher sequence number.
    let older = Ev { after: Some(state(1, "old", 0o100644)), ..Ev::new(9, 40, "modified", "/etc/a") };
    assert_eq!(ingest(&s, &[older.stored()]).await.inserted, 1, "the late event is stored");
    let late_delete = Ev::new(4, 45, "deleted", "/etc/a");
    ingest(&s, &[late_delete.stored()]).await;
    let st = get(&s, "/etc/a").await;
    assert_eq!((st.hash.as_deref(), st.last_seq, st.deleted), (Some("new"), Some(5), false));

    // Same event time: the sequence number decides.
    let same_lower = Ev { after: Some(state(3, "lower", 0o100644)), ..Ev::new(4, 50, "modified", "/etc/a") };
    ingest(&s, &[same_lower.stored()]).await;
    assert_eq!(get(&s, "/etc/a").await.hash.as_deref(), Some("new"));
    let same_higher =
        Ev { after: Some(state(3, "higher", 0o100644)), ..Ev::new(6, 50, "modified", "/etc/a") };
    ingest(&s, &[same_higher.stored()]).await;
    assert_eq!(get(&s, "/etc/a").await.hash.as_deref(), Some("higher"));

    // In one batch, in any order, the newest wins.
    let batch = [
        Ev { after: Some(state(9, "b3", 0o100644)), ..Ev::new(12, 70, "modified", "/etc/b") }.stored(),
        Ev { after: Some(state(9, "b1", 0o100644)), ..Ev::new(10, 60, "created", "/etc/b") }.stored(),
        Ev { after: Some(state(9, "b2", 0o100644)), ..Ev::new(11, 65, "modified", "/etc/b") }.stored(),
    ];
    ingest(&s, &batch).await;
    assert_eq!(get(&s, "/etc/b").await.hash.as_deref(), Some("b3"));

    // A late rename does not mark a path deleted that changed after it.
    let late_rename = Ev {
        old_path: Some("/etc/b"),
        after: Some(state(9, "b0", 0o100644)),
        ..Ev::new(13, 62, "renamed", "/etc/c")
    };
    ingest(&s, &[late_rename.stored()]).await;
    assert!(!get(&s, "/etc/b").await.deleted);
    assert_eq!(get(&s, "/etc/c").await.renamed_from.as_deref(), Some("/etc/b"));
}

#[tokio::test]
async fn accesses_touch_only_the_access_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    // First an access: a row with no content state yet.
    let a1 = Ev { pid: Some(21), ..Ev::new(1, 10, "accessed", "/etc/shadow") }.stored();
    ingest(&s, std::slice::from_ref(&a1)).await;
    let st = get(&s, "/etc/shadow").await;
    assert_eq!((st.hash, st.last_activity, st.last_change, st.who), (None, None, None, None));
    let acc = st.last_access.unwrap();
    assert_eq!(
        (acc.time, acc.event_id, acc.seq, acc.process.map(|p| p.pid)),
        (t(10), a1.envelope.id, 1, Some(21))
    );

    // An older content event still lands (there was none), and leaves the access.
    ingest(
        &s,
        &[Ev { after: Some(state(5, "h", 0o100640)), ..Ev::new(2, 5, "modified", "/etc/shadow") }.stored()],
    )
    .await;
    let st = get(&s, "/etc/shadow").await;
    assert_eq!((st.hash.as_deref(), st.last_access.as_ref().map(|a| a.seq)), (Some("h"), Some(1)));

    // A newer access moves the access only; an older one does not.
    ingest(&s, &[Ev { pid: Some(22), ..Ev::new(3, 20, "accessed", "/etc/shadow") }.stored()]).await;
    ingest(&s, &[Ev { pid: Some(23), ..Ev::new(4, 15, "accessed", "/etc/shadow") }.stored()]).await;
    let st = get(&s, "/etc/shadow").await;
    let acc = st.last_access.unwrap();
    assert_eq!((acc.time, acc.process.map(|p| p.pid)), (t(20), Some(22)));
    assert_eq!(
        (st.hash.as_deref(), st.last_seq, st.last_activity.as_deref()),
        (Some("h"), Some(2), Some("modified"))
    );
}

#[tokio::test]
async fn updates_of_redelivered_events_are_not_applied_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let e = Ev { after: Some(state(1, "first", 0o100644)), ..Ev::new(1, 1, "created", "/etc/a") }.stored();
    ingest(&s, std::slice::from_ref(&e)).await;
    // The same event id again, with an update that would change the state: the
    // event is a duplicate, so its update is not applied.
    let mut forged = file_state::updates(&e.envelope).unwrap();
    forged[0].time = t(99);
    if let FileChange::Content { attrs: Some(a), .. } = &mut forged[0].change {
        a.hash = Some("second".into());
    }
    let out = s.insert_events(std::slice::from_ref(&e), &[], &forged).await.unwrap();
    assert_eq!((out.inserted, out.duplicates, out.stored), (0, 1, vec![false]));
    assert_eq!(get(&s, "/etc/a").await.hash.as_deref(), Some("first"));
}

#[tokio::test]
async fn events_and_file_states_commit_or_fail_together() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    // Break the file state write: the whole batch must fail, events included.
    let other = Connection::open(s.path()).unwrap();
    other.execute_batch("ALTER TABLE file_states RENAME TO file_states_gone").unwrap();
    let e = Ev { after: Some(state(1, "h", 0o100644)), ..Ev::new(1, 1, "created", "/etc/a") }.stored();
    let updates = file_state::updates(&e.envelope).unwrap();
    assert!(s.insert_events(std::slice::from_ref(&e), &[], &updates).await.is_err());
    assert_eq!(s.count_events().await.unwrap(), 0, "no event stored without its file state");
    let n: i64 = other.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
    other.execute_batch("ALTER TABLE file_states_gone RENAME TO file_states").unwrap();
    drop(other);
    // Retried (as ingest does), both land.
    s.insert_events(std::slice::from_ref(&e), &[], &updates).await.unwrap();
    assert_eq!(s.count_events().await.unwrap(), 1);
    assert_eq!(get(&s, "/etc/a").await.hash.as_deref(), Some("h"));
}

#[tokio::test]
async fn list_filters_by_prefix_and_deleted_and_pages_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let paths =
        ["/etc/passwd", "/etc/ssh/sshd_config", "/etc%/x", "/etc_x", "/etcetera", "/usr/bin/ls", "/etc/é"];
    let mut evs: Vec<StoredEvent> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ev { after: Some(state(1, "h", 0o100644)), ..Ev::new(i as u64 + 1, i as i64, "created", p) }
                .stored()
        })
        .collect();
    evs.push(Ev::new(20, 20, "deleted", "/etc/passwd").stored());
    ingest(&s, &evs).await;
    // Another agent's files never show.
    let mut other =
        Ev { after: Some(state(1, "h", 0o100644)), ..Ev::new(1, 1, "created", "/etc/other") }.stored();
    other.envelope.agent_id = id("a2");
    ingest(&s, &[other]).await;

    let list = |prefix: Option<&str>, include_deleted: bool, offset: u64, limit: u64| {
        let q = FileQuery { agent: id("a1"), prefix: prefix.map(Into::into), include_deleted, offset, limit };
        let s = &s;
        async move {
            let p = s.list_file_states(&q).await.unwrap();
            (p.items.into_iter().map(|f| f.path).collect::<Vec<_>>(), p.total)
        }
    };
    let (all, total) = list(None, true, 0, 100).await;
    assert_eq!(total, 7);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "ordered by path");
    assert_eq!(list(None, false, 0, 100).await.1, 6, "deleted left out by default");
    assert_eq!(
        list(Some("/etc/"), false, 0, 100).await,
        (vec!["/etc/ssh/sshd_config".to_string(), "/etc/é".into()], 2)
    );
    assert_eq!(list(Some("/etc/"), true, 0, 100).await.0, ["/etc/passwd", "/etc/ssh/sshd_config", "/etc/é"]);
    // No wildcards: % and _ are plain characters.
    assert_eq!(list(Some("/etc%"), true, 0, 100).await.0, ["/etc%/x"]);
    assert_eq!(list(Some("/etc_"), true, 0, 100).await.0, ["/etc_x"]);
    assert_eq!(list(Some("/etc"), true, 0, 100).await.1, 6);
    assert_eq!(list(Some("/nothing"), true, 0, 100).await, (vec![], 0));
    assert_eq!(
        list(Some("/etc"), true, 1, 2).await,
        (vec!["/etc/passwd".to_string(), "/etc/ssh/sshd_config".into()], 6)
    );
    assert_eq!(
        list(Some(""), true, 0, 0).await,
        (vec![], 7),
        "empty prefix: no filter; limit 0: only the total"
    );
    assert!(s.has_file_states(&id("a1")).await.unwrap());
    assert!(!s.has_file_states(&id("a3")).await.unwrap());
}
