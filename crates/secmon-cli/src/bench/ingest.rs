//! `secmon bench ingest`: N simulated agents publish M events through JetStream
//! (async publish with the event id as `Nats-Msg-Id`, acks pipelined, as the agent's
//! uplink does) into an in-process manager; measures publish and end-to-end ingest
//! rates and checks that exactly M events were stored.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, context::Publish};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use secmon_proto::payload::{FileActivity, FileKind, FileState};
use secmon_proto::{Envelope, EventClass, Severity};
use serde::Serialize;

use super::harness::{Harness, HarnessOptions};
use super::sim::{self, SimAgent};
use super::stats::{cpu_secs, rate, thousands};

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Simulated agents publishing in parallel.
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Events in total, spread evenly over the agents.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Events the manager fetches and stores per database transaction
    /// ([ingest] batch_size) [default: the manager's default].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Publishes awaiting their JetStream ack, over all agents.
    #[arg(long, default_value_t = 4096)]
    pub inflight: usize,
    /// NATS connections the simulated agents share.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Parent directory of the temp NATS store and database [default: system temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run these Sigma rule directories in the manager ([rules] dirs; repeatable),
    /// and wait until every event is evaluated as well as stored.
    #[arg(long = "rules")]
    pub rules: Vec<PathBuf>,
    /// Publish the mixed corpus of `secmon bench rules` (log lines, process starts,
    /// file changes, connections) instead of FIM modifications.
    #[arg(long)]
    pub mixed: bool,
    /// Secure mode: the manager runs with `[security] enabled` and
    /// `require_signatures` (material from `secmon-manager init`, HTTPS API), each
    /// simulated agent enrolls with its own NKey and signs every event.
    #[arg(long)]
    pub signed: bool,
}

#[derive(Debug, Serialize)]
pub struct IngestReport {
    pub bench: &'static str,
    pub agents: usize,
    pub events: u64,
    pub batch: Option<usize>,
    /// Events signed by enrolled agents and verified by the manager (`--signed`).
    pub signed: bool,
    /// `--signed`: how long the bench took to sign all events, before the clock.
    pub sign_secs: f64,
    pub avg_event_bytes: u64,
    pub publish_secs: f64,
    pub publish_events_per_sec: f64,
    pub ingest_secs: f64,
    pub ingest_events_per_sec: f64,
    pub stored: u64,
    pub lost: u64,
    pub extra: u64,
    pub publish_retries: u64,
    pub duplicates_dropped: u64,
    pub rejected: u64,
    pub seq_gap_events: u64,
    /// With `--rules`: rules the manager loaded, events it evaluated, matches, and
    /// the time from first publish until the last event was evaluated.
    pub rules_loaded: i64,
    pub rule_events_evaluated: u64,
    pub rule_matches: u64,
    pub evaluated_secs: f64,
    pub evaluated_events_per_sec: f64,
    /// CPU seconds from first publish to last event stored: the bench process
    /// (manager and simulated agents together) and the nats-server.
    pub cpu_secs_manager_and_agents: f64,
    pub cpu_secs_nats: f64,
    /// Events stored per CPU second of everything involved: a figure that holds
    /// on a busy machine, where wall-clock rates do not.
    pub events_per_cpu_sec: f64,
    pub ok: bool,
}

/// Longest the bench waits without any new event being stored before it gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of one publish whose ack failed (same message id, so never stored twice).
const MAX_RETRIES: u32 = 5;

pub async fn run(a: IngestArgs, json_out: bool) -> anyhow::Result<()> {
    if a.agents == 0 || a.events == 0 || a.inflight == 0 || a.connections == 0 {
        bail!("--agents, --events, --inflight and --connections must be at least 1");
    }
    let opts = HarnessOptions {
        heartbeat_timeout: Duration::from_secs(30),
        check_interval: Duration::from_secs(1),
        batch_size: a.batch,
        dir: a.dir.clone(),
        rules_dirs: a.rules.clone(),
    };
    let h = if a.signed { Harness::start_secure(&opts).await? } else { Harness::start(&opts).await? };
    let a_rules_empty = a.rules.is_empty();
    if !json_out {
        eprintln!(
            "bench ingest: {} agents, {} events{}, manager batch {}, data in {}",
            a.agents,
            a.events,
            if a.signed { " signed (secure mode)" } else { "" },
            a.batch.map_or("default".into(), |b| b.to_string()),
            h.dir().display()
        );
    }
    let result = measure(&h, &a).await;
    h.stop().await;
    let r = result?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "ingest: {} agents, {} {}events of {} B on average, manager batch {}",
            r.agents,
            r.events,
            if r.signed { "signed " } else { "" },
            r.avg_event_bytes,
            r.batch.map_or("default".into(), |b| b.to_string())
        );
        if r.signed {
            println!("  signed before the clock    {:>9} events in {:>7.2} s", r.events, r.sign_secs);
        }
        println!(
            "  publish (JetStream acks)  {:>9} events in {:>7.2} s = {:>9} events/s",
            r.events,
            r.publish_secs,
            thousands(r.publish_events_per_sec)
        );
        println!(
            "  end to end (stored)       {:>9} events in {:>7.2} s = {:>9} events/s",
            r.stored,
            r.ingest_secs,
            thousands(r.ingest_events_per_sec)
        );
        println!(
            "  stored {} of {}: {} lost, {} extra (publish retries {}, redeliveries dropped {}, rejected {}, seq gaps {})",
            r.stored,
            r.events,
            r.lost,
            r.extra,
            r.publish_retries,
            r.duplicates_dropped,
            r.rejected,
            r.seq_gap_events
        );
        if !a_rules_empty {
            println!(
                "  rules: {} loaded; {} events evaluated in {:.2} s = {} events/s, {} matches",
                r.rules_loaded,
                r.rule_events_evaluated,
                r.evaluated_secs,
                thousands(r.evaluated_events_per_sec),
                r.rule_matches
            );
        }
        println!(
            "  CPU: {:.2} s manager + simulated agents, {:.2} s nats-server = {} events per CPU second",
            r.cpu_secs_manager_and_agents,
            r.cpu_secs_nats,
            thousands(r.events_per_cpu_sec)
        );
        println!("  {}", if r.ok { "OK" } else { "FAILED: events lost, duplicated or rejected" });
    }
    if !r.ok {
        bail!("ingest bench: stored {} events, published {}, rejected {}", r.stored, r.events, r.rejected);
    }
    Ok(())
}

async fn measure(h: &Harness, a: &IngestArgs) -> anyhow::Result<IngestReport> {
    let mut conns = Vec::new();
    for _ in 0..a.connections.min(a.agents) {
        conns.push(h.connect().await?);
    }
    let mut agents = sim::fleet(a.agents);
    if a.signed {
        agents = h.enroll(agents).await.context("enrolling the simulated agents")?;
    }
    sim::register_all(&conns[0], &h.subjects, &agents, Duration::from_secs(5)).await?;
    let alive = std::sync::Arc::new(agents.iter().map(|_| true.into()).collect::<Vec<_>>());
    let heartbeats = sim::spawn_heartbeats(
        conns[0].clone(),
        h.subjects.clone(),
        std::sync::Arc::new(agents.clone()),
        alive,
        Duration::from_secs(5),
    );

    let metrics = h.manager.metrics();
    let base = metrics.events_ingested.get();
    let (eval_base, match_base) = (metrics.rule_events_evaluated.get(), metrics.rule_matches.get());
    let window = (a.inflight / a.agents).max(1);
    let per_agent = a.events / a.agents as u64;
    let extra = a.events % a.agents as u64;

    // Signed: every event is signed before the clock starts, as real agents sign on
    // their own hosts; the clock then measures what the manager does with them.
    let counts: Vec<u64> = (0..a.agents).map(|i| per_agent + u64::from((i as u64) < extra)).collect();
    let t_sign = Instant::now();
    let mut presigned = Vec::with_capacity(a.agents);
    if a.signed {
        let tasks: Vec<_> = agents
            .iter()
            .zip(&counts)
            .map(|(agent, &count)| {
                let (agent, subjects, mixed) = (agent.clone(), h.subjects.clone(), a.mixed);
                tokio::task::spawn_blocking(move || {
                    (1..=count)
                        .map(|seq| build(&agent, &subjects, seq, mixed))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        for t in tasks {
            presigned.push(Some(t.await.context("signing task")??));
        }
    } else {
        presigned.resize_with(a.agents, || None);
    }
    let sign_elapsed = t_sign.elapsed();

    let nats_pid = h.nats_pid().to_string();
    let cpu0 = (cpu_secs("self").unwrap_or(0.0), cpu_secs(&nats_pid).unwrap_or(0.0));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(a.agents);
    for (i, (agent, events)) in agents.into_iter().zip(presigned).enumerate() {
        let js = jetstream::new(conns[i % conns.len()].clone());
        let subjects = h.subjects.clone();
        tasks.push(tokio::spawn(publish_agent(js, subjects, agent, counts[i], window, a.mixed, events)));
    }
    let (mut bytes, mut retries) = (0u64, 0u64);
    for t in tasks {
        let (b, r) = t.await.context("publisher task")??;
        bytes += b;
        retries += r;
    }
    let publish_elapsed = t0.elapsed();

    // End to end: until the manager has stored all of them.
    let mut last = (metrics.events_ingested.get(), Instant::now());
    let ingest_elapsed = loop {
        let n = metrics.events_ingested.get() - base;
        if n >= a.events {
            break t0.elapsed();
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > STALL_TIMEOUT {
            break t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // With rules: until the last stored event has been evaluated too.
    let mut last_eval = (metrics.rule_events_evaluated.get(), Instant::now());
    let evaluated_elapsed = loop {
        let n = metrics.rule_events_evaluated.get() - eval_base;
        if a.rules.is_empty() || n >= a.events {
            break t0.elapsed();
        }
        if n != last_eval.0 {
            last_eval = (n, Instant::now());
        } else if last_eval.1.elapsed() > STALL_TIMEOUT {
            break t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cpu = (cpu_secs("self").unwrap_or(0.0) - cpu0.0, cpu_secs(&nats_pid).unwrap_or(0.0) - cpu0.1);
    heartbeats.abort();
    // Anything still in flight would show up now as an extra event.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = h.manager.store().count_events().await.context("counting stored events")?;
    let rejected: u64 = [
        "malformed",
        "oversize",
        "version",
        "subject_mismatch",
        "removed_agent",
        "replay",
        // The signature check of secure mode.
        "unsigned",
        "forged",
        "bad_signature",
        "unknown_agent",
        "bad_key",
    ]
    .iter()
    .map(|r| metrics.rejected(r))
    .sum();
    Ok(IngestReport {
        bench: "ingest",
        agents: a.agents,
        events: a.events,
        batch: a.batch,
        signed: a.signed,
        sign_secs: sign_elapsed.as_secs_f64(),
        avg_event_bytes: bytes / a.events,
        publish_secs: publish_elapsed.as_secs_f64(),
        publish_events_per_sec: rate(a.events, publish_elapsed),
        ingest_secs: ingest_elapsed.as_secs_f64(),
        ingest_events_per_sec: rate(stored.min(a.events), ingest_elapsed),
        stored,
        lost: a.events.saturating_sub(stored),
        extra: stored.saturating_sub(a.events),
        publish_retries: retries,
        duplicates_dropped: metrics.events_duplicate.get(),
        rejected,
        seq_gap_events: metrics.seq_gap_events.get(),
        rules_loaded: metrics.rules_loaded.get(),
        rule_events_evaluated: metrics.rule_events_evaluated.get() - eval_base,
        rule_matches: metrics.rule_matches.get() - match_base,
        evaluated_secs: evaluated_elapsed.as_secs_f64(),
        evaluated_events_per_sec: rate(metrics.rule_events_evaluated.get() - eval_base, evaluated_elapsed),
        cpu_secs_manager_and_agents: cpu.0,
        cpu_secs_nats: cpu.1,
        events_per_cpu_sec: rate(stored.min(a.events), Duration::from_secs_f64(cpu.0 + cpu.1)),
        ok: stored == a.events && rejected == 0,
    })
}

/// One event of `agent` as published: (subject, event id, body), signed when the
/// agent has a key.
fn build(
    agent: &SimAgent,
    subjects: &secmon_proto::Subjects,
    seq: u64,
    mixed: bool,
) -> anyhow::Result<(String, String, Bytes)> {
    let mut env = if mixed { super::rules::corpus_event(&agent.id, seq) } else { sample_event(agent, seq) };
    if let Some(key) = &agent.key {
        key.sign(&mut env)?;
    }
    Ok((subjects.event(&agent.id, env.class), env.id.to_string(), serde_json::to_vec(&env)?.into()))
}

/// One agent's publisher: `count` events with sequence numbers 1..=count (built
/// here, or `prebuilt`), at most `window` awaiting their ack. Returns (bytes
/// published, retries).
async fn publish_agent(
    js: jetstream::Context,
    subjects: secmon_proto::Subjects,
    agent: SimAgent,
    count: u64,
    window: usize,
    mixed: bool,
    prebuilt: Option<Vec<(String, String, Bytes)>>,
) -> anyhow::Result<(u64, u64)> {
    let mut pending = FuturesUnordered::new();
    let (mut bytes, mut retries) = (0u64, 0u64);
    let mut prebuilt = prebuilt.map(Vec::into_iter);
    for seq in 1..=count {
        let (subject, id, body) = match prebuilt.as_mut().and_then(Iterator::next) {
            Some(e) => e,
            None => build(&agent, &subjects, seq, mixed)?,
        };
        bytes += body.len() as u64;
        let ack = js.send_publish(subject.clone(), publish(&body, &id)).await?;
        pending.push(async move { (ack.await, body, id, subject) });
        while pending.len() >= window {
            let (res, body, id, subject) = pending.next().await.expect("non-empty");
            retries += settle(&js, &subject, res, &body, &id).await?;
        }
    }
    while let Some((res, body, id, subject)) = pending.next().await {
        retries += settle(&js, &subject, res, &body, &id).await?;
    }
    Ok((bytes, retries))
}

fn publish(body: &Bytes, id: &str) -> Publish {
    Publish::build().payload(body.clone()).message_id(id)
}

/// Checks one ack; on failure republishes with the same id (JetStream drops it if
/// the first copy was stored after all) and waits, up to [`MAX_RETRIES`] times.
async fn settle(
    js: &jetstream::Context,
    subject: &str,
    mut res: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    body: &Bytes,
    id: &str,
) -> anyhow::Result<u64> {
    let mut tries = 0;
    while let Err(e) = res {
        tries += 1;
        if tries > MAX_RETRIES {
            bail!("publish of event {id} failed {MAX_RETRIES} times: {e}");
        }
        res = match js.send_publish(subject.to_owned(), publish(body, id)).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
    }
    Ok(tries as u64)
}

/// A file-modification event of typical size.
fn sample_event(agent: &SimAgent, seq: u64) -> Envelope {
    // A real FIM payload, so the bench also pays for the manager's file-state upserts.
    let path = format!("/etc/secmon-bench/{}/file-{}.conf", agent.name, seq % 1000);
    let state = |size: u64, hash: &str| FileState {
        mtime: 1_795_000_000.0 + seq as f64,
        ctime: 1_795_000_000.0 + seq as f64,
        inode: 1000 + seq % 1000,
        ..FileState::sha256_file(size, hash)
    };
    let payload = FileActivity {
        description: format!("{path} modified"),
        path,
        old_path: None,
        kind: FileKind::File,
        watch: "/etc/secmon-bench".into(),
        watch_description: String::new(),
        event_type: "FileModify".into(),
        detector: None,
        before: Some(state(4096, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")),
        after: Some(state(
            4096 + seq % 1024,
            "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
        )),
        changes: vec!["size".into(), "mtime".into(), "ctime".into(), "hash".into()],
        diff: None,
        diff_truncated: false,
        process: None,
        source: "realtime".into(),
        backend: "inotify".into(),
    };
    Envelope::new(
        agent.id.clone(),
        seq,
        EventClass::File,
        "modified",
        Severity::Low,
        serde_json::to_value(payload).expect("payload serializes"),
    )
}
