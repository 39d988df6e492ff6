//! The publisher against real `nats-server` processes: JetStream stream creation,
//! order and exactly-once storage, deduplication, NATS killed mid-stream, a full
//! queue, draining shutdown, core NATS, user/password and token auth, mutual TLS.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::header::{HeaderName, NATS_MESSAGE_ID};
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use secmon_testkit::{NatsServer, NatsServerOptions};
use secmon_wazuh_bridge::audit::AuditLog;
use secmon_wazuh_bridge::breaker::BreakerState;
use secmon_wazuh_bridge::config::{BridgeConfig, JetStreamMode};
use secmon_wazuh_bridge::metrics::Metrics;
use secmon_wazuh_bridge::outgoing::Outgoing;
use secmon_wazuh_bridge::publish::{Publisher, QueueFull};

const STREAM: &str = "WAZUH_TEST";

fn config(url: &str) -> BridgeConfig {
    let mut c = BridgeConfig::default();
    c.nats.url = url.into();
    c.nats.subject_prefix = "wz".into();
    c.nats.reconnect_delay = Duration::from_millis(50);
    c.nats.connect_timeout = Duration::from_secs(1);
    c.nats.max_reconnects = 0;
    c.publish.create_stream = true;
    c.publish.stream_name = STREAM.into();
    c.publish.ack_timeout = Duration::from_secs(1);
    c.publish.retry_max_delay = Duration::from_millis(300);
    c.publish.breaker_threshold = 3;
    c.publish.breaker_cooldown = Duration::from_millis(200);
    c.publish.queue_capacity = 10_000;
    c.publish.max_in_flight = 64;
    c
}

fn item(i: u64) -> Outgoing {
    Outgoing {
        subject: format!("wz.agent.{:03}.status", i % 7),
        payload: Bytes::from(format!("payload-{i}")),
        headers: vec![("Secmon-Test".into(), format!("h{i}"))],
        msg_id: format!("evt_{i}"),
        kind: "status",
        seen_at: Some(Instant::now()),
    }
}

fn items(range: std::ops::RangeInclusive<u64>) -> Vec<Outgoing> {
    range.map(item).collect()
}

/// Waits until `acked()` reaches `target`; panics with the stats otherwise.
async fn wait_acked(p: &Publisher, target: u64, timeout: Duration) {
    let mut rx = p.acked();
    if tokio::time::timeout(timeout, rx.wait_for(|a| *a >= target)).await.is_err() {
        panic!("acked {} did not reach {target} in {timeout:?}: {:?}", *rx.borrow(), p.stats());
    }
}

/// Polls `cond` (without blocking the runtime) until it holds or `timeout` passes.
async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// `name{labels} value` from the Prometheus text, 0 when absent.
fn metric(m: &Metrics, series: &str) -> f64 {
    m.render().lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

async fn plain_client(url: &str) -> async_nats::Client {
    async_nats::connect(url).await.expect("test client connects")
}

/// Every message in the stream, in stream order: (payload, Nats-Msg-Id, test header).
async fn stored(url: &str) -> Vec<(String, String, String)> {
    stored_via(plain_client(url).await).await
}

async fn stored_via(client: async_nats::Client) -> Vec<(String, String, String)> {
    let js = jetstream::new(client);
    let mut stream = js.get_stream(STREAM).await.expect("the stream exists");
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let m = stream.get_raw_message(seq).await.unwrap();
        let h = |k: HeaderName| m.headers.get(k).map(|v| v.to_string()).unwrap_or_default();
        let (id, test) = (h(NATS_MESSAGE_ID), h(HeaderName::from_static("Secmon-Test")));
        out.push((String::from_utf8(m.payload.to_vec()).unwrap(), id, test));
    }
    assert_eq!(out.len() as u64, state.messages, "no gaps in the stream");
    out
}

fn assert_stored_in_order(stored: &[(String, String, String)], n: u64) {
    assert_eq!(stored.len() as u64, n, "every item stored exactly once");
    for (i, (payload, id, h)) in stored.iter().enumerate() {
        let i = i as u64 + 1;
        assert_eq!(
            (payload.as_str(), id.as_str(), h.as_str()),
            (format!("payload-{i}").as_str(), format!("evt_{i}").as_str(), format!("h{i}").as_str()),
            "stream position {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_the_stream_and_stores_every_item_once_in_order_with_audit_lines() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(AuditLog::open(&dir.path().join("audit.jsonl")).unwrap());
    let metrics = Arc::new(Metrics::new());
    let p = Publisher::start(&config(&server.url()), metrics.clone(), Some(audit.clone()));
    let mut last = 0;
    for chunk in 0..10 {
        last = p.try_enqueue(items(chunk * 50 + 1..=chunk * 50 + 50)).unwrap();
    }
    assert_eq!(last, 500, "items are numbered 1, 2, 3, ...");
    wait_acked(&p, 500, Duration::from_secs(15)).await;
    assert_stored_in_order(&stored(&server.url()).await, 500);

    let js = jetstream::new(plain_client(&server.url()).await);
    let info = js.get_stream(STREAM).await.unwrap().cached_info().config.clone();
    assert_eq!(info.subjects, vec!["wz.>".to_string()]);
    assert_eq!(info.duplicate_window, Duration::from_secs(3600));

    let s = p.stats();
    assert!(s.jetstream && s.connected, "{s:?}");
    assert_eq!((s.published, s.queue_len, s.breaker), (500, 0, BreakerState::Closed));
    assert_eq!(metric(&metrics, "secmon_wazuh_bridge_published_total{kind=\"status\"}"), 500.0);
    assert_eq!(metric(&metrics, "secmon_wazuh_bridge_publish_latency_seconds_count"), 500.0);
    assert_eq!(metric(&metrics, "secmon_wazuh_bridge_jetstream"), 1.0);
    assert_eq!(metric(&metrics, "secmon_wazuh_bridge_queue_len"), 0.0);

    let text = std::fs::read_to_string(audit.path()).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        (1..=500).map(|i| format!("evt_{i}")).collect::<Vec<_>>(),
        "one audit line per ack, in order"
    );
    assert!(p.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_msg_id_enqueued_twice_is_stored_once() {
    let server = NatsServer::start();
    let p = Publisher::start(&config(&server.url()), Arc::new(Metrics::new()), None);
    let again = Outgoing { payload: Bytes::from_static(b"copy"), ..item(1) };
    assert_eq!(p.try_enqueue(vec![item(1), item(2), again, item(3)]).unwrap(), 4);
    wait_acked(&p, 4, Duration::from_secs(10)).await;
    let s = stored(&server.url()).await;
    let payloads: Vec<&str> = s.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(payloads, ["payload-1", "payload-2", "payload-3"], "the copy of evt_1 was deduplicated");
    assert_eq!(p.stats().published, 4, "the duplicate was acknowledged too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_killed_twice_mid_stream_loses_nothing_and_duplicates_nothing() {
    let mut server = NatsServer::start();
    let metrics = Arc::new(Metrics::new());
    let p = Publisher::start(&config(&server.url()), metrics.clone(), None);
    // A producer trickling 2,000 items while the server goes away and comes back.
    let enqueued = Arc::new(AtomicU64::new(0));
    let producer = {
        let (p, enqueued) = (p.clone(), enqueued.clone());
        tokio::spawn(async move {
            for chunk in 0..100u64 {
                let last = p.try_enqueue(items(chunk * 20 + 1..=chunk * 20 + 20)).unwrap();
                enqueued.store(last, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        })
    };
    wait_acked(&p, 150, Duration::from_secs(10)).await;
    tokio::task::block_in_place(|| server.kill());
    assert!(eventually(Duration::from_secs(10), || enqueued.load(Ordering::SeqCst) >= 1000).await);
    assert!(*p.acked().borrow() < 1000, "some items were enqueued while NATS was down");
    tokio::task::block_in_place(|| server.restart());
    wait_acked(&p, 1100, Duration::from_secs(15)).await;
    tokio::task::block_in_place(|| server.kill());
    producer.await.unwrap();
    assert_eq!(enqueued.load(Ordering::SeqCst), 2000);
    tokio::task::block_in_place(|| server.restart());
    wait_acked(&p, 2000, Duration::from_secs(20)).await;

    assert_stored_in_order(&stored(&server.url()).await, 2000);
    let s = p.stats();
    assert!(s.errors > 0, "the outages were noticed: {s:?}");
    assert_eq!(s.queue_len, 0);
    assert!(metric(&metrics, "secmon_wazuh_bridge_publish_errors_total{reason=\"nats\"}") > 0.0);
    assert!(p.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_the_whole_batch_counts_it_and_drains_when_nats_returns() {
    let mut server = NatsServer::start();
    server.kill();
    let metrics = Arc::new(Metrics::new());
    let mut cfg = config(&server.url());
    cfg.publish.queue_capacity = 10;
    let p = Publisher::start(&cfg, metrics.clone(), None);
    assert_eq!(p.try_enqueue(items(1..=8)).unwrap(), 8);
    let err = p.try_enqueue(items(9..=11)).unwrap_err();
    assert_eq!(err, QueueFull { requested: 3, queued: 8, capacity: 10, closed: false });
    assert_eq!(p.stats().queue_len, 8, "all or nothing");
    assert_eq!(metric(&metrics, "secmon_wazuh_bridge_queue_overflow_total"), 1.0);
    assert_eq!(metric(&metrics, "secmon_wazuh_bridge_queue_capacity"), 10.0);
    assert_eq!(p.try_enqueue(items(9..=10)).unwrap(), 10, "a batch that fits still goes in");
    assert!(p.try_enqueue(items(11..=11)).is_err());
    assert_eq!(metric(&metrics, "secmon_wazuh_bridge_queue_overflow_total"), 2.0);
    // The connection attempts fail; the breaker opens (threshold 3).
    assert!(
        eventually(Duration::from_secs(10), || p.stats().breaker != BreakerState::Closed).await,
        "{:?}",
        p.stats()
    );
    assert!(!p.stats().connected);
    assert_eq!(*p.acked().borrow(), 0);

    tokio::task::block_in_place(|| server.restart());
    wait_acked(&p, 10, Duration::from_secs(10)).await;
    assert_stored_in_order(&stored(&server.url()).await, 10);
    assert!(eventually(Duration::from_secs(2), || p.stats().breaker == BreakerState::Closed).await);
    assert_eq!(metric(&metrics, "secmon_wazuh_bridge_nats_breaker_state"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_queue_and_reports_what_it_could_not_publish() {
    let server = NatsServer::start();
    let p = Publisher::start(&config(&server.url()), Arc::new(Metrics::new()), None);
    let other_handle = p.clone();
    p.try_enqueue(items(1..=1000)).unwrap();
    assert!(p.shutdown(Duration::from_secs(10)).await, "everything published before shutdown returned");
    assert_stored_in_order(&stored(&server.url()).await, 1000);
    let refused = other_handle.try_enqueue(items(1001..=1001)).unwrap_err();
    assert!(refused.closed, "{refused}");

    // NATS down: shutdown gives up after its timeout and says so.
    let mut dead = NatsServer::start();
    dead.kill();
    let p = Publisher::start(&config(&dead.url()), Arc::new(Metrics::new()), None);
    p.try_enqueue(items(1..=5)).unwrap();
    let t = Instant::now();
    assert!(!p.shutdown(Duration::from_millis(300)).await);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_stream_auto_mode_publishes_core_nats_with_headers() {
    // JetStream enabled but no stream, then a server without JetStream: both core.
    for jetstream in [true, false] {
        let server = NatsServer::start_with(NatsServerOptions { jetstream, ..Default::default() });
        let sub_client = plain_client(&server.url()).await;
        let mut sub = sub_client.subscribe("wz.>").await.unwrap();
        sub_client.flush().await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let mut cfg = config(&server.url());
        // No JetStream at all: even create_stream falls back to core NATS in auto mode.
        cfg.publish.create_stream = !jetstream;
        assert_eq!(cfg.publish.jetstream, JetStreamMode::Auto);
        let p = Publisher::start(&cfg, metrics.clone(), None);
        p.try_enqueue(items(1..=100)).unwrap();
        for i in 1..=100u64 {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap().unwrap();
            assert_eq!(
                m.payload,
                Bytes::from(format!("payload-{i}")),
                "in order (jetstream enabled: {jetstream})"
            );
            let h = m.headers.unwrap();
            assert_eq!(h.get("Secmon-Test").unwrap().as_str(), format!("h{i}"));
            assert_eq!(h.get(NATS_MESSAGE_ID).unwrap().as_str(), format!("evt_{i}"));
        }
        wait_acked(&p, 100, Duration::from_secs(5)).await;
        assert!(!p.stats().jetstream);
        assert_eq!(metric(&metrics, "secmon_wazuh_bridge_jetstream"), 0.0);
        assert_eq!(metric(&metrics, "secmon_wazuh_bridge_published_total{kind=\"status\"}"), 100.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_on_keeps_items_queued_until_a_stream_exists() {
    let server = NatsServer::start();
    let metrics = Arc::new(Metrics::new());
    let mut cfg = config(&server.url());
    cfg.publish.create_stream = false;
    cfg.publish.jetstream = JetStreamMode::On;
    let p = Publisher::start(&cfg, metrics.clone(), None);
    p.try_enqueue(items(1..=5)).unwrap();
    let no_stream = "secmon_wazuh_bridge_publish_errors_total{reason=\"no_stream\"}";
    assert!(eventually(Duration::from_secs(5), || metric(&metrics, no_stream) >= 2.0).await);
    assert_eq!((*p.acked().borrow(), p.stats().queue_len), (0, 5), "nothing went out by core NATS");
    assert_eq!(p.stats().breaker, BreakerState::Closed, "a missing stream is not NATS failing");

    let js = jetstream::new(plain_client(&server.url()).await);
    js.create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["wz.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    wait_acked(&p, 5, Duration::from_secs(10)).await;
    assert_stored_in_order(&stored(&server.url()).await, 5);
    assert!(p.stats().jetstream);
}

/// Captures every log line (trace level, but with async-nats' CONNECT line at debug
/// as the daemons configure it) on this thread.
fn capture_logs() -> (Arc<std::sync::Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = Buf(buf.clone());
    let sub = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "trace,{}",
            secmon_nats::QUIET_SECRETS_DIRECTIVE
        )))
        .with_writer(move || writer.clone())
        .finish();
    (buf, tracing::subscriber::set_default(sub))
}

fn auth_server(block: &str) -> NatsServer {
    NatsServer::start_with(NatsServerOptions {
        jetstream: true,
        extra_config: format!("authorization {{\n{block}\n}}\n"),
    })
}

// current_thread: the capturing subscriber covers the publisher's and async-nats' tasks.
#[tokio::test]
async fn user_password_and_token_auth_and_no_secret_in_logs_or_debug() {
    let (logs, _guard) = capture_logs();
    let server = auth_server("  user: bridge\n  password: \"pw-Right-7f3a\"");
    let mut cfg = config(&server.url());
    cfg.nats.user = Some("bridge".into());
    cfg.nats.password = Some("pw-Right-7f3a".into());
    let p = Publisher::start(&cfg, Arc::new(Metrics::new()), None);
    p.try_enqueue(items(1..=3)).unwrap();
    wait_acked(&p, 3, Duration::from_secs(10)).await;
    assert!(p.stats().connected);
    assert_stored_in_order(&stored_as(&server.url(), "bridge", "pw-Right-7f3a").await, 3);

    cfg.nats.password = Some("pw-Wrong-91c2".into());
    let wrong = Publisher::start(&cfg, Arc::new(Metrics::new()), None);
    wrong.try_enqueue(items(1..=3)).unwrap();
    assert!(eventually(Duration::from_secs(10), || wrong.stats().errors >= 2).await);
    assert!(!wrong.stats().connected);
    assert_eq!(*wrong.acked().borrow(), 0);

    let token_server = auth_server("  token: \"tok-Secret-55e1\"");
    let mut tcfg = config(&token_server.url());
    tcfg.nats.token = Some("tok-Secret-55e1".into());
    let tp = Publisher::start(&tcfg, Arc::new(Metrics::new()), None);
    tp.try_enqueue(items(1..=2)).unwrap();
    wait_acked(&tp, 2, Duration::from_secs(10)).await;
    tcfg.nats.token = Some("tok-Wrong-0000".into());
    let twrong = Publisher::start(&tcfg, Arc::new(Metrics::new()), None);
    twrong.try_enqueue(items(1..=2)).unwrap();
    assert!(eventually(Duration::from_secs(10), || twrong.stats().errors >= 2).await);
    assert_eq!(*twrong.acked().borrow(), 0);

    let debug = format!("{cfg:?} {:?} {tcfg:?} {:?}", cfg.nats_config(), tcfg.nats_config());
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap() + &debug;
    assert!(text.contains("NATS publish failed"), "the failures were logged");
    for secret in ["pw-Right-7f3a", "pw-Wrong-91c2", "tok-Secret-55e1", "tok-Wrong-0000"] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
}

async fn stored_as(url: &str, user: &str, password: &str) -> Vec<(String, String, String)> {
    let opts = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into());
    stored_via(opts.connect(url).await.expect("test client connects")).await
}

/// Runs openssl; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out =
        std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it.
fn make_certs(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca =
        vec!["req", "-x509", "-days", "2", "-subj", "/CN=secmon test CA", "-keyout", "ca.key", "-out"];
    ca.extend(["ca.pem", "-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    ca.extend(ec);
    openssl(dir, &ca);
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "subjectAltName=DNS:secmon-bridge\nextendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, extf) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        std::fs::write(dir.join(&extf), ext).unwrap();
        let mut req = vec!["req", "-subj", "/CN=secmon test", "-keyout", &key, "-out", &csr];
        req.extend(ec);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &extf,
            ],
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(&key), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_custom_ca_and_a_client_certificate() {
    if !Path::new("/usr/bin/openssl").exists()
        && std::process::Command::new("openssl").arg("version").output().is_err()
    {
        assert!(!secmon_testkit::in_ci(), "openssl is needed for the TLS test and CI=true");
        eprintln!("SKIPPED mutual TLS test: no openssl");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    make_certs(d);
    let tls = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 2\n}}\n",
        d.join("server.pem"),
        d.join("server.key"),
        d.join("ca.pem")
    );
    let server = NatsServer::start_with(NatsServerOptions { jetstream: true, extra_config: tls });
    let mut cfg = config(&server.url());
    cfg.nats.tls_ca = Some(d.join("ca.pem"));
    cfg.nats.tls_cert = Some(d.join("client.pem"));
    cfg.nats.tls_key = Some(d.join("client.key"));
    secmon_config::Validate::validate(&cfg).expect("valid TLS settings");
    let p = Publisher::start(&cfg, Arc::new(Metrics::new()), None);
    p.try_enqueue(items(1..=3)).unwrap();
    wait_acked(&p, 3, Duration::from_secs(10)).await;
    assert!(p.stats().connected && p.stats().jetstream);

    // Verified on the wire: a client trusting the CA but without a certificate is refused.
    let mut no_cert = cfg.clone();
    no_cert.nats.tls_cert = None;
    no_cert.nats.tls_key = None;
    let refused = Publisher::start(&no_cert, Arc::new(Metrics::new()), None);
    refused.try_enqueue(items(4..=4)).unwrap();
    assert!(eventually(Duration::from_secs(10), || refused.stats().errors >= 2).await);
    assert_eq!(*refused.acked().borrow(), 0);
    // Nor does a client that does not trust the server's CA get through.
    let mut no_ca = cfg.clone();
    no_ca.nats.tls_ca = None;
    let untrusting = Publisher::start(&no_ca, Arc::new(Metrics::new()), None);
    untrusting.try_enqueue(items(4..=4)).unwrap();
    assert!(eventually(Duration::from_secs(10), || untrusting.stats().errors >= 2).await);
    assert_eq!(*untrusting.acked().borrow(), 0);

    let ok = p.stats();
    assert_eq!((ok.published, ok.queue_len), (3, 0));
}
