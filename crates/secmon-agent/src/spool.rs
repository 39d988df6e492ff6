//! The on-disk event spool: every event is appended here before it is published, so
//! nothing is lost while NATS is down or when the agent crashes.
//!
//! Written by hand because the maintained on-disk queue crates (queue-file, yaque)
//! remove an entry when it is read and have no byte bound with drop counting, while
//! a pipelined publisher needs to read ahead, rewind to an acknowledgement cursor and
//! free space only over the acknowledged prefix; the format below is small.
//!
//! Layout of `<state_dir>/spool/`:
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: append-only segment files, oldest id first. A record
//!   is `len: u32 LE | crc32(body): u32 LE | body`, body = `seq: u64 LE | event id:
//!   16 bytes | class: u8 | envelope JSON`. With a signing key (the agent's NKey,
//!   from its creds file) the JSON already carries its `sig`: what is published, also
//!   after a crash or an outage, is byte for byte what was signed and stored.
//! - `cursor`: position of the first record not yet acknowledged by JetStream
//!   (`segment: u64 | offset: u64 | crc32`), rewritten by rename at most every 100 ms
//!   while acknowledgements flow, and when they pause.
//! - `last_seq`: the highest sequence number of closed segments, written (and
//!   synced) when a segment is closed, so sequence numbers continue after restart even
//!   when every segment has been published and deleted.
//!
//! Invariants: the sequence number is assigned here, under the spool's lock, strictly
//! increasing from 1 and never reused; the last segment is the one being written and
//! is never deleted; a segment is deleted only when the cursor is past it; the bytes
//! of all segment files never exceed `max_bytes` (events that do not fit are dropped
//! and counted, and an `agent`/`event_loss` event reports them once space frees). A
//! torn or corrupt tail found at open is truncated with a warning.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use secmon_proto::payload::EventLoss;
use secmon_proto::{AgentId, Envelope, EventClass, Severity, SpoolStats};
use serde_json::Value;
use uuid::Uuid;

const HEADER_LEN: u64 = 8;
/// seq (8) + event id (16) + class (1).
const BODY_PREFIX_LEN: usize = 25;
/// Largest envelope the spool accepts; larger ones would be refused downstream.
pub const MAX_EVENT_BYTES: usize = secmon_proto::DEFAULT_MAX_EVENT_BYTES;
const MAX_BODY_LEN: usize = BODY_PREFIX_LEN + MAX_EVENT_BYTES;
const CURSOR_FILE: &str = "cursor";
const LAST_SEQ_FILE: &str = "last_seq";
const SEGMENT_EXT: &str = "seg";
/// Cursor writes are throttled: after a crash, at most this much acknowledged work
/// is published again, and JetStream's duplicate window drops the repeats.
const CURSOR_PERSIST_EVERY: Duration = Duration::from_millis(100);
/// Upper bound of one [`Spool::read_batch`], so a read-ahead never holds much memory.
const READ_BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Size limits of a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    pub max_bytes: u64,
    pub segment_bytes: u64,
}

/// Where a record starts in the spool. Orders like the records do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// An event as a sensor hands it over; the spool gives it its id and sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    /// When the thing happened.
    pub time: DateTime<Utc>,
    pub class: EventClass,
    pub activity: String,
    pub severity: Severity,
    pub payload: Value,
}

impl EventDraft {
    pub fn now(class: EventClass, activity: impl Into<String>, severity: Severity, payload: Value) -> Self {
        Self { time: Utc::now(), class, activity: activity.into(), severity, payload }
    }
}

/// A stored event as the publisher reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledEvent {
    pub seq: u64,
    pub id: Uuid,
    pub class: EventClass,
    /// The encoded [`Envelope`], published as is.
    pub json: Bytes,
    /// Where this record starts.
    pub pos: Position,
    /// Where the next record starts: the cursor value once this one is acknowledged.
    pub next: Position,
}

/// Why events were lost; the label is the `reason` of the `event_loss` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// The spool reached `max_bytes`.
    SpoolFull,
    /// The in-memory channel in front of the spool was full.
    ChannelFull,
    /// The encoded event exceeded [`MAX_EVENT_BYTES`].
    Oversize,
    /// Writing the segment file failed (disk error).
    SpoolError,
}

impl LossReason {
    const ALL: [LossReason; 4] =
        [LossReason::SpoolFull, LossReason::ChannelFull, LossReason::Oversize, LossReason::SpoolError];

    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::SpoolFull => "spool_full",
            LossReason::ChannelFull => "channel_full",
            LossReason::Oversize => "oversize",
            LossReason::SpoolError => "spool_error",
        }
    }
}

/// What [`Spool::append`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Stored { seq: u64 },
    Dropped(LossReason),
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_owned(), source }
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    id: u64,
    size: u64,
}

/// Sees every event the spool stores, right after it is written: the envelope and its
/// encoded JSON (the local event socket broadcasts from here, so what it shows carries
/// the event's id and sequence number). Runs under the spool's lock: it must be quick
/// and must not block.
pub type Tap = Box<dyn Fn(&Envelope, &[u8]) + Send>;

/// The spool. Not internally synchronized: the agent shares it behind a mutex between
/// the writer task (appends) and the publisher (reads, acknowledgements).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    agent_id: AgentId,
    opts: SpoolOptions,
    /// Oldest first; never empty; the last one is being written.
    segments: VecDeque<Segment>,
    writer: File,
    /// First record not yet acknowledged.
    cursor: Position,
    /// Next record the publisher reads; at or after the cursor.
    read_pos: Position,
    read_file: Option<(u64, File)>,
    /// Records at or after the cursor.
    depth: u64,
    disk_bytes: u64,
    last_seq: u64,
    /// Losses not yet reported by an `event_loss` event, by [`LossReason::ALL`] index.
    unreported: [u64; 4],
    /// Events the spool dropped since it was opened.
    dropped: u64,
    unsynced: bool,
    cursor_dirty: bool,
    cursor_persisted_at: Instant,
    tap: TapSlot,
    /// Local-only mode: written records count as acknowledged (nothing publishes them).
    auto_ack: bool,
    /// Signs every envelope before it is written, so a replayed spool is byte-identical.
    signer: SignerSlot,
}

/// The agent's NKey (from its creds file); Debug never shows the key.
#[derive(Default)]
struct SignerSlot(Option<nkeys::KeyPair>);

impl std::fmt::Debug for SignerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(k) => write!(f, "Some({})", k.public_key()),
            None => f.write_str("None"),
        }
    }
}

#[derive(Default)]
struct TapSlot(Option<Tap>);

impl std::fmt::Debug for TapSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(Tap)" } else { "None" })
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering from a crash: a torn or
    /// corrupt tail is truncated, the cursor and the sequence number are restored.
    pub fn open(dir: &Path, agent_id: AgentId, opts: SpoolOptions) -> Result<Spool, SpoolError> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
        let mut ids = list_segments(dir)?;
        let saved_cursor = read_cursor(&dir.join(CURSOR_FILE));
        let mut last_seq = read_last_seq(&dir.join(LAST_SEQ_FILE));

        // Place the cursor on an existing segment; segments before it are acknowledged.
        let mut cursor = match (saved_cursor, ids.first(), ids.last()) {
            (_, None, _) => Position { segment: saved_cursor.map_or(1, |c| c.segment + 1), offset: 0 },
            (Some(c), Some(_), Some(&last)) if c.segment <= last => {
                match ids.iter().find(|&&id| id >= c.segment) {
                    Some(&id) if id == c.segment => c,
                    Some(&id) => Position { segment: id, offset: 0 },
                    None => unreachable!("c.segment <= last"),
                }
            }
            (c, Some(&first), _) => {
                if c.is_some() {
                    tracing::warn!(dir = %dir.display(), "spool cursor points past the last segment; publishing from the oldest");
                }
                Position { segment: first, offset: 0 }
            }
        };
        for &id in ids.iter().filter(|&&id| id < cursor.segment) {
            let p = segment_path(dir, id);
            fs::remove_file(&p).map_err(io_err(&p))?;
        }
        ids.retain(|&id| id >= cursor.segment);
        if ids.is_empty() {
            ids.push(cursor.segment);
            create_segment(dir, cursor.segment)?;
        }

        let mut segments = VecDeque::with_capacity(ids.len());
        let mut depth = 0;
        for &id in &ids {
            let scan = scan_segment(&segment_path(dir, id))?;
            if id == cursor.segment
                && !scan.starts.contains(&cursor.offset)
                && cursor.offset != scan.valid_len
            {
                let next = scan.starts.iter().copied().find(|&s| s > cursor.offset).unwrap_or(scan.valid_len);
                tracing::warn!(
                    segment = id,
                    offset = cursor.offset,
                    moved_to = next,
                    "spool cursor not on a record; moved"
                );
                cursor.offset = next;
            }
            let from = if id == cursor.segment { cursor.offset } else { 0 };
            depth += scan.starts.iter().filter(|&&s| s >= from).count() as u64;
            last_seq = last_seq.max(scan.max_seq);
            segments.push_back(Segment { id, size: scan.valid_len });
        }
        let disk_bytes = segments.iter().map(|s| s.size).sum();
        let last = segments.back().expect("at least one segment").id;
        let wpath = segment_path(dir, last);
        let writer = OpenOptions::new().append(true).open(&wpath).map_err(io_err(&wpath))?;
        let spool = Spool {
            dir: dir.to_owned(),
            agent_id,
            opts,
            segments,
            writer,
            cursor,
            read_pos: cursor,
            read_file: None,
            depth,
            disk_bytes,
            last_seq,
            unreported: [0; 4],
            dropped: 0,
            unsynced: false,
            cursor_dirty: saved_cursor != Some(cursor),
            cursor_persisted_at: Instant::now(),
            tap: TapSlot::default(),
            auto_ack: false,
            signer: SignerSlot::default(),
        };
        tracing::debug!(dir = %dir.display(), depth, disk_bytes, last_seq, "spool opened");
        Ok(spool)
    }

    /// Gives `draft` the next sequence number and appends it, unless the spool is full
    /// (or the event too large, or the disk fails): then it is dropped and counted.
    /// Losses not yet reported are reported first, so the `event_loss` event sits
    /// where the gap is.
    pub fn append(&mut self, draft: EventDraft) -> Appended {
        if self.auto_ack
            && let Err(e) = self.ack_all()
        {
            tracing::error!(error = %e, "cannot free acknowledged spool segments");
        }
        if !self.report_losses() {
            return self.drop_event(LossReason::SpoolFull);
        }
        match self.try_write(draft) {
            Ok(seq) => Appended::Stored { seq },
            Err(reason) => self.drop_event(reason),
        }
    }

    /// Counts events lost before they reached the spool (e.g. a full channel); they
    /// are reported with the next `event_loss` event.
    pub fn note_loss(&mut self, reason: LossReason, count: u64) {
        self.unreported[reason as usize] += count;
    }

    fn drop_event(&mut self, reason: LossReason) -> Appended {
        self.dropped += 1;
        self.unreported[reason as usize] += 1;
        Appended::Dropped(reason)
    }

    /// Writes one `event_loss` event per reason with unreported losses; returns false
    /// when one could not be written (no space yet). Appends and acknowledgements that
    /// free space call it; the writer also calls it periodically.
    pub fn report_losses(&mut self) -> bool {
        for reason in LossReason::ALL {
            let lost = self.unreported[reason as usize];
            if lost == 0 {
                continue;
            }
            let payload = EventLoss { lost, reason: reason.as_str().into() };
            let draft = EventDraft::now(
                EventClass::Agent,
                "event_loss",
                Severity::Medium,
                serde_json::to_value(payload).expect("payload serializes"),
            );
            match self.try_write(draft) {
                Ok(seq) => {
                    self.unreported[reason as usize] = 0;
                    tracing::warn!(
                        lost,
                        reason = reason.as_str(),
                        seq,
                        "events were lost; event_loss recorded"
                    );
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Encodes and appends one event with the next sequence number; the sequence
    /// number is only taken when the record is written.
    fn try_write(&mut self, draft: EventDraft) -> Result<u64, LossReason> {
        let seq = self.last_seq + 1;
        let mut env = Envelope::new(
            self.agent_id.clone(),
            seq,
            draft.class,
            draft.activity,
            draft.severity,
            draft.payload,
        );
        env.time = draft.time;
        if let Some(key) = &self.signer.0
            && let Err(e) = secmon_proto::signing::sign_envelope(&mut env, key)
        {
            tracing::error!(error = %e, "cannot sign the event; dropped");
            return Err(LossReason::SpoolError);
        }
        let json = serde_json::to_vec(&env).expect("envelope serializes");
        if json.len() > MAX_EVENT_BYTES {
            tracing::warn!(bytes = json.len(), max = MAX_EVENT_BYTES, class = %env.class, activity = %env.activity, "event too large; dropped");
            return Err(LossReason::Oversize);
        }
        let rec = encode_record(seq, env.id, env.class, &json);
        if self.disk_bytes + rec.len() as u64 > self.opts.max_bytes {
            return Err(LossReason::SpoolFull);
        }
        if let Err(e) = self.roll_if_needed() {
            tracing::error!(error = %e, "cannot start a new spool segment; event dropped");
            return Err(LossReason::SpoolError);
        }
        let seg = self.segments.back_mut().expect("write segment");
        if let Err(e) = self.writer.write_all(&rec) {
            // Cut a partial record off, so the next append starts on a boundary.
            let _ = self.writer.set_len(seg.size);
            tracing::error!(error = %e, segment = seg.id, "spool write failed; event dropped");
            return Err(LossReason::SpoolError);
        }
        seg.size += rec.len() as u64;
        self.disk_bytes += rec.len() as u64;
        self.depth += 1;
        self.last_seq = seq;
        self.unsynced = true;
        if let Some(tap) = &self.tap.0 {
            tap(&env, &json);
        }
        Ok(seq)
    }

    /// Starts a new segment when the write segment has reached `segment_bytes`.
    fn roll_if_needed(&mut self) -> Result<(), SpoolError> {
        let cur = *self.segments.back().expect("write segment");
        if cur.size < self.opts.segment_bytes {
            return Ok(());
        }
        let cur_path = segment_path(&self.dir, cur.id);
        self.writer.sync_data().map_err(io_err(&cur_path))?;
        // Record the last sequence number before the segment can ever be deleted.
        let p = self.dir.join(LAST_SEQ_FILE);
        replace_file(&p, self.last_seq.to_string().as_bytes(), true).map_err(io_err(&p))?;
        let id = cur.id + 1;
        self.writer = create_segment(&self.dir, id)?;
        self.segments.push_back(Segment { id, size: 0 });
        self.unsynced = false;
        Ok(())
    }

    /// Reads up to `max` records from the read position on, advancing it.
    pub fn read_batch(&mut self, max: usize) -> Result<Vec<SpooledEvent>, SpoolError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < max && bytes < READ_BATCH_MAX_BYTES {
            let Some(idx) = self.segment_index(self.read_pos.segment) else { break };
            let seg = self.segments[idx];
            if self.read_pos.offset >= seg.size {
                match self.segments.get(idx + 1) {
                    Some(next) => {
                        self.read_pos = Position { segment: next.id, offset: 0 };
                        continue;
                    }
                    None => break,
                }
            }
            match self.read_record(seg)? {
                Some(ev) => {
                    bytes += ev.json.len();
                    self.read_pos = ev.next;
                    out.push(ev);
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Reads the record at the read position of `seg`. A record that went bad on disk
    /// after it was written is cut off with the rest of its segment (and logged), so
    /// the publisher is never stuck on it.
    fn read_record(&mut self, seg: Segment) -> Result<Option<SpooledEvent>, SpoolError> {
        let path = segment_path(&self.dir, seg.id);
        if self.read_file.as_ref().is_none_or(|(id, _)| *id != seg.id) {
            let f = File::open(&path).map_err(io_err(&path))?;
            self.read_file = Some((seg.id, f));
        }
        let (_, file) = self.read_file.as_ref().expect("opened above");
        let at = self.read_pos.offset;
        let mut header = [0u8; HEADER_LEN as usize];
        let decoded = file.read_exact_at(&mut header, at).ok().and_then(|_| {
            let (len, crc) = parse_header(&header)?;
            if at + HEADER_LEN + len as u64 > seg.size {
                return None;
            }
            let mut body = vec![0u8; len];
            file.read_exact_at(&mut body, at + HEADER_LEN).ok()?;
            (crc32fast::hash(&body) == crc).then_some(body)
        });
        let Some(body) = decoded else {
            tracing::error!(
                segment = seg.id,
                offset = at,
                lost_bytes = seg.size - at,
                "corrupt spool record; cutting the segment there"
            );
            self.truncate_segment(seg.id, at)?;
            return Ok(None);
        };
        let (seq, id, class) = parse_body_prefix(&body).expect("length checked by parse_header");
        let next = Position { segment: seg.id, offset: at + HEADER_LEN + body.len() as u64 };
        let json = Bytes::from(body).slice(BODY_PREFIX_LEN..);
        Ok(Some(SpooledEvent { seq, id, class, json, pos: self.read_pos, next }))
    }

    fn truncate_segment(&mut self, id: u64, len: u64) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, id);
        let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
        f.set_len(len).map_err(io_err(&path))?;
        let idx = self.segment_index(id).expect("segment exists");
        self.disk_bytes -= self.segments[idx].size - len;
        self.segments[idx].size = len;
        self.depth = self.count_from(self.cursor)?;
        Ok(())
    }

    fn count_from(&self, from: Position) -> Result<u64, SpoolError> {
        let mut n = 0;
        for seg in self.segments.iter().filter(|s| s.id >= from.segment) {
            let scan = scan_segment(&segment_path(&self.dir, seg.id))?;
            let start = if seg.id == from.segment { from.offset } else { 0 };
            n += scan.starts.iter().filter(|&&s| s >= start && s < seg.size).count() as u64;
        }
        Ok(n)
    }

    /// Moves the read position back to the cursor, so everything not yet acknowledged
    /// is read (and published) again, in order.
    pub fn rewind(&mut self) {
        self.read_pos = self.cursor;
    }

    /// Acknowledges the `count` records before `upto` (a [`SpooledEvent::next`]):
    /// advances the cursor, deletes segments it has passed, and reports pending
    /// losses when that freed space.
    pub fn ack(&mut self, upto: Position, count: u64) -> Result<(), SpoolError> {
        if upto <= self.cursor {
            return Ok(());
        }
        self.cursor = upto;
        self.depth = self.depth.saturating_sub(count);
        self.cursor_dirty = true;
        // Step over segment ends, so finished segments can go.
        while let Some(idx) = self.segment_index(self.cursor.segment) {
            match self.segments.get(idx + 1) {
                Some(next) if self.cursor.offset >= self.segments[idx].size => {
                    self.cursor = Position { segment: next.id, offset: 0 };
                }
                _ => break,
            }
        }
        if self.read_pos < self.cursor {
            self.read_pos = self.cursor;
        }
        let mut freed = false;
        while self.segments.front().is_some_and(|s| s.id < self.cursor.segment) {
            let seg = self.segments.pop_front().expect("checked");
            if self.read_file.as_ref().is_some_and(|(id, _)| *id == seg.id) {
                self.read_file = None;
            }
            let p = segment_path(&self.dir, seg.id);
            fs::remove_file(&p).map_err(io_err(&p))?;
            self.disk_bytes -= seg.size;
            freed = true;
        }
        if self.cursor_persisted_at.elapsed() >= CURSOR_PERSIST_EVERY {
            self.persist_cursor()?;
        }
        if freed {
            self.report_losses();
        }
        Ok(())
    }

    /// Acknowledges everything written so far, without reading it: the local-only mode
    /// (no NATS) has nobody to publish to, and this keeps the spool from filling.
    pub fn ack_all(&mut self) -> Result<(), SpoolError> {
        let last = *self.segments.back().expect("write segment");
        let end = Position { segment: last.id, offset: last.size };
        let depth = self.depth;
        self.ack(end, depth)
    }

    /// Local-only mode: every append first acknowledges what was written before it, so
    /// the spool holds at most the write segment and never fills, however large a
    /// burst is.
    pub fn set_auto_ack(&mut self, on: bool) {
        self.auto_ack = on;
    }

    /// Signs every event written from now on with `key` (the agent's NKey).
    pub fn set_signer(&mut self, key: nkeys::KeyPair) {
        self.signer = SignerSlot(Some(key));
    }

    /// Installs the [`Tap`] that sees every stored event.
    pub fn set_tap(&mut self, tap: Tap) {
        self.tap = TapSlot(Some(tap));
    }

    /// Writes the cursor file when it changed. [`Spool::ack`] does it at most every
    /// 100 ms; the publisher calls this when acknowledgements pause.
    pub fn persist_cursor(&mut self) -> Result<(), SpoolError> {
        if !self.cursor_dirty {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(20);
        buf.extend_from_slice(&self.cursor.segment.to_le_bytes());
        buf.extend_from_slice(&self.cursor.offset.to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&buf).to_le_bytes());
        let p = self.dir.join(CURSOR_FILE);
        replace_file(&p, &buf, false).map_err(io_err(&p))?;
        self.cursor_dirty = false;
        self.cursor_persisted_at = Instant::now();
        Ok(())
    }

    /// Flushes written records to disk (called periodically, not per event).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.unsynced {
            let p = segment_path(&self.dir, self.segments.back().expect("write segment").id);
            self.writer.sync_data().map_err(io_err(&p))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Persists everything for a clean stop: records, cursor and sequence number.
    pub fn close(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        self.persist_cursor()?;
        let p = self.dir.join(LAST_SEQ_FILE);
        replace_file(&p, self.last_seq.to_string().as_bytes(), true).map_err(io_err(&p))
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats { depth: self.depth, bytes: self.disk_bytes, dropped: self.dropped }
    }

    /// Sequence number of the last stored event (0 if none ever).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn cursor(&self) -> Position {
        self.cursor
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files (for tests and diagnostics).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn segment_index(&self, id: u64) -> Option<usize> {
        self.segments.binary_search_by_key(&id, |s| s.id).ok()
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{SEGMENT_EXT}"))
}

fn create_segment(dir: &Path, id: u64) -> Result<File, SpoolError> {
    let p = segment_path(dir, id);
    OpenOptions::new().append(true).create(true).mode(0o600).open(&p).map_err(io_err(&p))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".seg").and_then(|n| n.parse::<u64>().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn encode_record(seq: u64, id: Uuid, class: EventClass, json: &[u8]) -> Vec<u8> {
    let body_len = BODY_PREFIX_LEN + json.len();
    let mut rec = Vec::with_capacity(HEADER_LEN as usize + body_len);
    rec.extend_from_slice(&(body_len as u32).to_le_bytes());
    rec.extend_from_slice(&[0; 4]); // crc, filled below
    rec.extend_from_slice(&seq.to_le_bytes());
    rec.extend_from_slice(id.as_bytes());
    rec.push(class_code(class));
    rec.extend_from_slice(json);
    let crc = crc32fast::hash(&rec[HEADER_LEN as usize..]);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    rec
}

fn class_code(class: EventClass) -> u8 {
    EventClass::ALL.iter().position(|c| *c == class).expect("class in ALL") as u8
}

/// Body length and crc, when the length is plausible.
fn parse_header(h: &[u8; HEADER_LEN as usize]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes(h[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(h[4..8].try_into().ok()?);
    (BODY_PREFIX_LEN..=MAX_BODY_LEN).contains(&len).then_some((len, crc))
}

fn parse_body_prefix(body: &[u8]) -> Option<(u64, Uuid, EventClass)> {
    let seq = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let id = Uuid::from_slice(body.get(8..24)?).ok()?;
    let class = *EventClass::ALL.get(*body.get(24)? as usize)?;
    Some((seq, id, class))
}

struct Scan {
    /// Offsets of the valid records, in order.
    starts: Vec<u64>,
    valid_len: u64,
    max_seq: u64,
}

/// Validates a segment record by record and truncates it after the last valid one
/// (a torn write from a crash, or corruption).
fn scan_segment(path: &Path) -> Result<Scan, SpoolError> {
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut r = BufReader::with_capacity(256 * 1024, &file);
    let mut scan = Scan { starts: Vec::new(), valid_len: 0, max_seq: 0 };
    let mut body = Vec::new();
    loop {
        let at = scan.valid_len;
        if at == file_len {
            break;
        }
        let mut header = [0u8; HEADER_LEN as usize];
        let ok = r.read_exact(&mut header).is_ok()
            && parse_header(&header).is_some_and(|(len, crc)| {
                body.resize(len, 0);
                at + HEADER_LEN + len as u64 <= file_len
                    && r.read_exact(&mut body).is_ok()
                    && crc32fast::hash(&body) == crc
                    && parse_body_prefix(&body).is_some()
            });
        if !ok {
            break;
        }
        let (seq, _, _) = parse_body_prefix(&body).expect("checked");
        scan.starts.push(at);
        scan.max_seq = scan.max_seq.max(seq);
        scan.valid_len = at + HEADER_LEN + body.len() as u64;
    }
    if scan.valid_len < file_len {
        tracing::warn!(
            segment = %path.display(),
            at = scan.valid_len,
            cut_bytes = file_len - scan.valid_len,
            "torn or corrupt spool record (e.g. after a crash); truncated"
        );
        file.set_len(scan.valid_len).map_err(io_err(path))?;
    }
    Ok(scan)
}

fn read_cursor(path: &Path) -> Option<Position> {
    let b = fs::read(path).ok()?;
    if b.len() != 20 || crc32fast::hash(&b[..16]).to_le_bytes() != b[16..20] {
        tracing::warn!(path = %path.display(), "spool cursor unreadable; publishing from the oldest segment");
        return None;
    }
    Some(Position {
        segment: u64::from_le_bytes(b[0..8].try_into().ok()?),
        offset: u64::from_le_bytes(b[8..16].try_into().ok()?),
    })
}

fn read_last_seq(path: &Path) -> u64 {
    match fs::read_to_string(path) {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(path = %path.display(), "spool last_seq unreadable; using the spooled records");
            0
        }),
        Err(_) => 0,
    }
}

/// Replaces `path` by rename; `sync` also makes it durable across power loss.
fn replace_file(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    if sync {
        return crate::identity::write_atomically(path, bytes);
    }
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests;
