//! The JetStream streams the manager depends on: created when missing, checked
//! when present. A stream with other subjects is someone else's (or a different
//! prefix's) and is never rewritten; limits (retention, size, dedup window) follow
//! the configuration.
//!
//! Only fields nats-server 2.9 knows are set: everything newer (compression,
//! subject transforms, metadata, message TTLs) stays at its default, which the
//! client leaves out of the request.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, ErrorCode, context::GetStreamErrorKind, stream};
use secmon_proto::{ALERTS_STREAM, EVENTS_STREAM, Subjects};

/// Alerts are few; a month of them is kept for integrations that catch up.
const ALERTS_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Limits of the events stream, from `[ingest]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventStreamLimits {
    pub max_age: Duration,
    /// 0 = no size limit besides the server's.
    pub max_bytes: u64,
    pub duplicate_window: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error(
        "JetStream stream {stream} exists with subjects {found:?}, expected {expected:?}; \
         it belongs to another setup: use another [nats] subject_prefix or delete the stream"
    )]
    SubjectMismatch { stream: String, found: Vec<String>, expected: Vec<String> },
    #[error("cannot look up JetStream stream {stream} (is JetStream enabled on the server?): {source}")]
    Lookup { stream: String, source: async_nats::jetstream::context::GetStreamError },
    #[error("cannot create JetStream stream {stream}: {source}")]
    Create { stream: String, source: async_nats::jetstream::context::CreateStreamError },
    #[error("cannot update the limits of JetStream stream {stream}: {source}")]
    Update { stream: String, source: async_nats::jetstream::context::UpdateStreamError },
}

fn events_config(subjects: &Subjects, limits: &EventStreamLimits) -> stream::Config {
    stream::Config {
        name: EVENTS_STREAM.into(),
        description: Some("secmon agent events".into()),
        subjects: vec![subjects.all_events()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: limits.max_age,
        max_bytes: if limits.max_bytes == 0 {
            -1
        } else {
            i64::try_from(limits.max_bytes).unwrap_or(i64::MAX)
        },
        max_messages: -1,
        max_messages_per_subject: -1,
        duplicate_window: limits.duplicate_window,
        num_replicas: 1,
        ..Default::default()
    }
}

fn alerts_config(subjects: &Subjects) -> stream::Config {
    stream::Config {
        name: ALERTS_STREAM.into(),
        description: Some("secmon alerts".into()),
        subjects: vec![subjects.all_alerts()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: ALERTS_MAX_AGE,
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        duplicate_window: Duration::from_secs(120),
        num_replicas: 1,
        ..Default::default()
    }
}

/// Creates or checks `SECMON_EVENTS` and `SECMON_ALERTS`.
pub async fn ensure_streams(
    js: &jetstream::Context,
    subjects: &Subjects,
    limits: &EventStreamLimits,
) -> Result<(), StreamsError> {
    ensure(js, events_config(subjects, limits)).await?;
    ensure(js, alerts_config(subjects)).await?;
    Ok(())
}

async fn ensure(js: &jetstream::Context, want: stream::Config) -> Result<(), StreamsError> {
    let name = want.name.clone();
    let existing = match js.get_stream(&name).await {
        Ok(s) => s.cached_info().config.clone(),
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            js.create_stream(want)
                .await
                .map_err(|source| StreamsError::Create { stream: name.clone(), source })?;
            tracing::info!(stream = %name, "created JetStream stream");
            return Ok(());
        }
        Err(source) => return Err(StreamsError::Lookup { stream: name, source }),
    };
    let found: BTreeSet<_> = existing.subjects.iter().cloned().collect();
    let expected: BTreeSet<_> = want.subjects.iter().cloned().collect();
    if found != expected {
        return Err(StreamsError::SubjectMismatch {
            stream: name,
            found: found.into_iter().collect(),
            expected: expected.into_iter().collect(),
        });
    }
    let limits_differ = existing.max_age != want.max_age
        || existing.max_bytes != want.max_bytes
        || existing.duplicate_window != want.duplicate_window
        || existing.discard != want.discard;
    if limits_differ {
        // Keep what operators may have set (replicas, placement); change the limits only.
        let update = stream::Config {
            max_age: want.max_age,
            max_bytes: want.max_bytes,
            duplicate_window: want.duplicate_window,
            discard: want.discard,
            ..existing
        };
        js.update_stream(update)
            .await
            .map_err(|source| StreamsError::Update { stream: name.clone(), source })?;
        tracing::info!(stream = %name, "updated JetStream stream limits");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stream_takes_the_configured_limits() {
        let limits = EventStreamLimits {
            max_age: Duration::from_secs(60),
            max_bytes: 0,
            duplicate_window: Duration::from_secs(10),
        };
        let c = events_config(&Subjects::new("x"), &limits);
        assert_eq!(c.subjects, ["x.agent.*.event.>"]);
        assert_eq!(c.max_bytes, -1, "0 means unlimited");
        assert_eq!(c.max_age, Duration::from_secs(60));
        assert_eq!(c.storage, stream::StorageType::File);
        assert_eq!(c.discard, stream::DiscardPolicy::Old);
        let c = events_config(&Subjects::default(), &EventStreamLimits { max_bytes: 1 << 30, ..limits });
        assert_eq!(c.max_bytes, 1 << 30);
        assert_eq!(alerts_config(&Subjects::default()).subjects, ["secmon.alert.>"]);
    }
}
