//! The property the ordered publisher rests on: a `connect_once` client never
//! reconnects, so nothing queued in it when its connection broke is sent later, on
//! another connection, ahead of the publisher's retries. The connection is cut by a
//! TCP proxy while the server stays up, so a reconnect would succeed if tried.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use secmon_testkit::NatsServer;

/// Cuts the client's connection, publishes `t.after` once the client has noticed
/// (it is down, or already reconnected), and returns whether that message reached a
/// subscriber within 2 s.
async fn published_after_cut_delivered(
    client: &async_nats::Client,
    proxy: &Proxy,
    watcher: &async_nats::Client,
) -> bool {
    let mut sub = watcher.subscribe("t.after").await.unwrap();
    watcher.flush().await.unwrap();
    let connects = || client.statistics().connects.load(std::sync::atomic::Ordering::Relaxed);
    let before = connects();
    proxy.cut();
    let noticed = eventually(Duration::from_secs(5), || {
        client.connection_state() != async_nats::connection::State::Connected || connects() > before
    })
    .await;
    assert!(noticed, "the cut was not noticed");
    let _ = client.publish("t.after", "after the cut".into()).await;
    tokio::time::timeout(Duration::from_secs(2), sub.next()).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_once_client_drops_what_was_queued_when_its_connection_broke() {
    let nats = NatsServer::start();
    let proxy = Proxy::start(nats.port()).await;
    let watcher = client(&nats.url()).await;
    let cfg = config(&proxy.url, std::path::Path::new("/unused")).nats;

    // Control: through this proxy a reconnect succeeds, and an ordinary client sends
    // what it was given after the cut.
    let ordinary = secmon_nats::connect(&cfg, "test ordinary", None, false).await.unwrap();
    assert!(published_after_cut_delivered(&ordinary, &proxy, &watcher).await, "control case: not delivered");

    let once = secmon_nats::connect_once(&cfg, "test once", None).await.unwrap();
    assert!(
        !published_after_cut_delivered(&once, &proxy, &watcher).await,
        "connect_once client sent stale data"
    );
    assert_eq!(once.statistics().connects.load(std::sync::atomic::Ordering::Relaxed), 1, "it reconnected");
    assert_ne!(once.connection_state(), async_nats::connection::State::Connected);
}
