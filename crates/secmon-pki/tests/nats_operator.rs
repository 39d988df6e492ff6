//! What secmon-pki generates, checked against the real nats-server (2.9.10) in operator
//! mode with TLS: per-agent permissions hold, revocation and unknown issuers are
//! refused, plaintext and unpinned TLS are refused, JetStream works for SECMON.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use async_nats::{ConnectErrorKind, ConnectOptions, Event, ServerError};
use futures::StreamExt;
use nkeys::KeyPair;
use secmon_pki::{
    Ca, NatsIdentities, Permissions, TlsFiles, agent_permissions, creds_file, generate_ca, issue_user_jwt,
    nats_server_config, write_secret,
};
use tokio::sync::mpsc;

const NO_DELIVERY_WAIT: Duration = Duration::from_millis(300);

/// A secure deployment in a temp dir: CA, server cert, operator/account keys, and a
/// nats-server child running the generated config. Killed on drop.
struct Deployment {
    dir: tempfile::TempDir,
    port: u16,
    ca: Ca,
    ids: NatsIdentities,
    mutual_tls: bool,
    child: Option<Child>,
}

impl Deployment {
    fn start(mutual_tls: bool) -> Self {
        let dir = tempfile::Builder::new().prefix("secmon-pki-").tempdir().unwrap();
        let ca = generate_ca("secmon test CA").unwrap();
        let srv = ca.issue_server(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), &srv.cert_pem).unwrap();
        write_secret(&dir.path().join("server.key"), srv.key_pem.as_bytes()).unwrap();
        let mut d = Self {
            dir,
            port: secmon_testkit::free_port(),
            ca,
            ids: NatsIdentities::generate(),
            mutual_tls,
            child: None,
        };
        d.spawn(&BTreeMap::new());
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self, revocations: &BTreeMap<String, i64>) {
        let tls = TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            ca: self.path("ca.pem"),
            verify: self.mutual_tls,
        };
        let conf = nats_server_config(
            &format!("127.0.0.1:{}", self.port),
            &self.ids.operator_jwt("secmon-test").unwrap(),
            &self.ids.system.public_key(),
            &self.ids.account_jwts(revocations).unwrap(),
            Some(&tls),
            Some(&self.path("js")),
        );
        std::fs::write(self.path("nats.conf"), conf).unwrap();
        let child =
            secmon_testkit::spawn_nats_server(&self.path("nats.conf"), &self.path("nats.log"), self.port);
        self.child = Some(child);
    }

    fn restart(&mut self, revocations: &BTreeMap<String, i64>) {
        self.kill();
        self.spawn(revocations);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A user of the SECMON account: (its key, its creds file text).
    fn user(&self, name: &str, perms: &Permissions) -> (KeyPair, String) {
        let kp = KeyPair::new_user();
        let jwt = issue_user_jwt(&self.ids.account, &kp.public_key(), name, perms, None).unwrap();
        let creds = creds_file(&jwt, &kp.seed().unwrap());
        (kp, creds)
    }

    fn manager_creds(&self) -> String {
        let all =
            Permissions { pub_allow: vec![">".into()], sub_allow: vec![">".into()], ..Default::default() };
        self.user("manager", &all).1
    }

    /// Options trusting only this deployment's CA, TLS required.
    fn options(&self, creds: &str) -> ConnectOptions {
        ConnectOptions::with_credentials(creds)
            .unwrap()
            .add_root_certificates(self.path("ca.pem"))
            .require_tls(true)
            .connection_timeout(Duration::from_secs(5))
    }

    async fn connect(&self, creds: &str) -> async_nats::Client {
        self.options(creds).connect(self.url()).await.expect("connect over TLS with creds")
    }

    /// An agent connection with its own inbox prefix; server errors go to the channel.
    async fn connect_agent(
        &self,
        id: &str,
        creds: &str,
    ) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self
            .options(creds)
            .custom_inbox_prefix(format!("_INBOX_{id}"))
            .event_callback(move |ev| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(ServerError::Other(msg)) = ev {
                        let _ = tx.send(msg);
                    }
                }
            })
            .connect(self.url())
            .await
            .expect("agent connects over TLS with its creds");
        (client, rx)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the server has processed everything `client` sent before: a message to
/// itself makes a round trip (`flush` only writes the socket).
async fn sync(client: &async_nats::Client) {
    let subject = format!("sync.{}", client.new_inbox());
    let mut probe = client.subscribe(subject.clone()).await.unwrap();
    client.publish(subject, "".into()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), probe.next()).await.expect("sync round trip").unwrap();
}

async fn expect_violation(rx: &mut mpsc::UnboundedReceiver<String>, what: &str) {
    let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no permissions violation reported for {what}"))
        .unwrap();
    assert!(msg.to_lowercase().contains("permissions violation"), "{what}: {msg}");
    assert!(msg.contains(what), "{what}: {msg}");
}

#[tokio::test]
async fn agent_publishes_only_under_its_own_subjects_and_jetstream_works() {
    let d = Deployment::start(false);
    let manager = d.connect(&d.manager_creds()).await;
    let js = async_nats::jetstream::new(manager.clone());
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["secmon.agent.>".into()],
            ..Default::default()
        })
        .await
        .expect("JetStream is enabled for the SECMON account");
    let mut sub = manager.subscribe("secmon.agent.>").await.unwrap();
    sync(&manager).await;

    let (_, creds) = d.user("agent a1", &agent_permissions("a1", "secmon").unwrap());
    let (agent, mut errors) = d.connect_agent("a1", &creds).await;
    // Forbidden first: the server handles one connection's messages in order, so once
    // the allowed one arrives the forbidden one has been judged.
    agent.publish("secmon.agent.b2.event.x", "spoofed".into()).await.unwrap();
    agent.publish("secmon.agent.a1.event.x", "mine".into()).await.unwrap();
    agent.flush().await.unwrap();

    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
    assert_eq!(msg.subject.as_str(), "secmon.agent.a1.event.x");
    assert_eq!(&msg.payload[..], b"mine");
    assert!(tokio::time::timeout(NO_DELIVERY_WAIT, sub.next()).await.is_err(), "spoofed message delivered");
    expect_violation(&mut errors, "secmon.agent.b2.event.x").await;

    // The stream stores in order: once the later, allowed event is in, an earlier
    // spoofed one would be too.
    let deadline = Instant::now() + Duration::from_secs(5);
    let stored = loop {
        let n = stream.info().await.unwrap().state.messages;
        if n >= 1 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stored, 1, "only the agent's own event reaches the stream");
    let last = stream.get_last_raw_message_by_subject("secmon.agent.a1.event.x").await.unwrap();
    assert_eq!(&last.payload[..], b"mine");
}

#[tokio::test]
async fn agent_cannot_subscribe_to_another_agents_commands() {
    let d = Deployment::start(false);
    let manager = d.connect(&d.manager_creds()).await;
    let (_, creds) = d.user("agent a1", &agent_permissions("a1", "secmon").unwrap());
    let (agent, mut errors) = d.connect_agent("a1", &creds).await;
    let mut mine = agent.subscribe("secmon.cmd.a1").await.unwrap();
    let mut theirs = agent.subscribe("secmon.cmd.b2").await.unwrap();
    // The refusal of the later SUB proves the server has processed both.
    expect_violation(&mut errors, "secmon.cmd.b2").await;

    manager.publish("secmon.cmd.b2", "for b2".into()).await.unwrap();
    manager.publish("secmon.cmd.a1", "for a1".into()).await.unwrap();
    manager.flush().await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), mine.next()).await.unwrap().unwrap();
    assert_eq!(&msg.payload[..], b"for a1");
    assert!(
        tokio::time::timeout(NO_DELIVERY_WAIT, theirs.next()).await.map(|m| m.is_none()).unwrap_or(true),
        "agent a1 received agent b2's command"
    );

    // Its own inbox works (request/reply through the manager).
    let mut service = manager.subscribe("secmon.agent.a1.rpc").await.unwrap();
    sync(&manager).await;
    let responder = manager.clone();
    tokio::spawn(async move {
        if let Some(m) = service.next().await {
            responder.publish(m.reply.unwrap(), "pong".into()).await.unwrap();
        }
    });
    let reply =
        tokio::time::timeout(Duration::from_secs(5), agent.request("secmon.agent.a1.rpc", "ping".into()))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(&reply.payload[..], b"pong");
}

#[tokio::test]
async fn agent_answers_a_command_once_but_cannot_publish_to_other_inboxes() {
    let d = Deployment::start(false);
    let manager = d.connect(&d.manager_creds()).await;
    let (_, creds) = d.user("agent a1", &agent_permissions("a1", "secmon").unwrap());
    let (agent, mut errors) = d.connect_agent("a1", &creds).await;
    let mut commands = agent.subscribe("secmon.cmd.a1").await.unwrap();
    // The agent may not publish to a sync subject of its own: wait for its SUB by
    // asking until someone answers ("no responders" until then).
    agent.flush().await.unwrap();
    let replier = agent.clone();
    tokio::spawn(async move {
        if let Some(m) = commands.next().await {
            let reply = m.reply.unwrap();
            replier.publish(reply.clone(), "pong".into()).await.unwrap();
            // A second answer to the same request is beyond the one allowed.
            replier.publish(reply, "again".into()).await.unwrap();
        }
    });
    // The manager's request uses the default `_INBOX.` prefix, outside the agent's
    // publish allow list: only the response permission lets the answer through.
    let mut reply = None;
    for _ in 0..50 {
        match tokio::time::timeout(Duration::from_secs(5), manager.request("secmon.cmd.a1", "ping".into()))
            .await
        {
            Ok(Ok(r)) => {
                reply = Some(r);
                break;
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => panic!("the agent's reply did not arrive"),
        }
    }
    let reply = reply.expect("the agent subscribed to its commands");
    assert_eq!(&reply.payload[..], b"pong");
    expect_violation(&mut errors, "_INBOX.").await;

    // An inbox nobody asked it to answer is refused.
    let mut spy = manager.subscribe("_INBOX.spy.x").await.unwrap();
    sync(&manager).await;
    agent.publish("_INBOX.spy.x", "unsolicited".into()).await.unwrap();
    expect_violation(&mut errors, "_INBOX.spy.x").await;
    assert!(
        tokio::time::timeout(NO_DELIVERY_WAIT, spy.next()).await.map(|m| m.is_none()).unwrap_or(true),
        "an unsolicited publish to an inbox was delivered"
    );
}

#[tokio::test]
async fn revoked_user_cannot_connect_others_still_can() {
    let mut d = Deployment::start(false);
    let perms = agent_permissions("a1", "secmon").unwrap();
    let (revoked, revoked_creds) = d.user("agent a1", &perms);
    let (_, other_creds) = d.user("agent b2", &agent_permissions("b2", "secmon").unwrap());
    d.connect(&revoked_creds).await.drain().await.unwrap();

    let mut spec = secmon_pki::AccountSpec::secmon(d.ids.account.public_key());
    spec.revoke(&revoked.public_key());
    d.restart(&spec.revocations);

    let err = d.options(&revoked_creds).connect(d.url()).await.expect_err("revoked user connected");
    assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation, "{err}");
    d.connect(&other_creds).await;
}

#[tokio::test]
async fn user_signed_by_an_unknown_account_is_refused() {
    let d = Deployment::start(false);
    let rogue_account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let all = Permissions { pub_allow: vec![">".into()], sub_allow: vec![">".into()], ..Default::default() };
    let jwt = issue_user_jwt(&rogue_account, &user.public_key(), "rogue", &all, None).unwrap();
    let creds = creds_file(&jwt, &user.seed().unwrap());
    let err = d.options(&creds).connect(d.url()).await.expect_err("rogue user connected");
    assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation, "{err}");

    // A valid JWT presented with someone else's seed fails the nonce signature.
    let (_, good) = d.user("agent a1", &agent_permissions("a1", "secmon").unwrap());
    let stolen_jwt = good.lines().nth(1).unwrap();
    let creds = creds_file(stolen_jwt, &KeyPair::new_user().seed().unwrap());
    assert!(d.options(&creds).connect(d.url()).await.is_err(), "JWT without its seed connected");
}

#[tokio::test]
async fn plaintext_and_unpinned_connections_are_refused() {
    let d = Deployment::start(false);
    let (_, creds) = d.user("agent a1", &agent_permissions("a1", "secmon").unwrap());

    // Plain TCP: the server announces TLS and never answers a plaintext CONNECT/PING.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut info = [0u8; 4096];
    let n = s.read(&mut info).unwrap();
    let info = String::from_utf8_lossy(&info[..n]).to_string();
    assert!(info.starts_with("INFO ") && info.contains("\"tls_required\":true"), "{info}");
    s.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(!String::from_utf8_lossy(&rest).contains("PONG"), "plaintext client got PONG");

    // TLS without pinning our CA: the system roots do not trust it.
    let err = ConnectOptions::with_credentials(&creds)
        .unwrap()
        .require_tls(true)
        .connection_timeout(Duration::from_secs(5))
        .connect(d.url())
        .await
        .expect_err("connected without trusting the CA");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // Pinning another CA fails too.
    let other = generate_ca("attacker CA").unwrap();
    let other_pem = d.path("other-ca.pem");
    std::fs::write(&other_pem, other.cert_pem()).unwrap();
    let err = ConnectOptions::with_credentials(&creds)
        .unwrap()
        .add_root_certificates(other_pem)
        .require_tls(true)
        .connection_timeout(Duration::from_secs(5))
        .connect(d.url())
        .await
        .expect_err("connected while pinning another CA");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let d = Deployment::start(true);
    let (_, creds) = d.user("agent a1", &agent_permissions("a1", "secmon").unwrap());
    assert!(d.options(&creds).connect(d.url()).await.is_err(), "connected without a client certificate");

    let cli = d.ca.issue_client("agent-a1").unwrap();
    std::fs::write(d.path("client.pem"), &cli.cert_pem).unwrap();
    write_secret(&d.path("client.key"), cli.key_pem.as_bytes()).unwrap();
    let client = d
        .options(&creds)
        .add_client_certificate(d.path("client.pem"), d.path("client.key"))
        .connect(d.url())
        .await
        .expect("mutual TLS with a CA-signed client certificate");
    client.publish("secmon.agent.a1.event.x", "ok".into()).await.unwrap();
    client.flush().await.unwrap();

    // A client certificate from another CA is refused.
    let other = generate_ca("attacker CA").unwrap().issue_client("agent-a1").unwrap();
    std::fs::write(d.path("other.pem"), &other.cert_pem).unwrap();
    write_secret(&d.path("other.key"), other.key_pem.as_bytes()).unwrap();
    assert!(
        d.options(&creds)
            .add_client_certificate(d.path("other.pem"), d.path("other.key"))
            .connect(d.url())
            .await
            .is_err(),
        "connected with a client certificate from another CA"
    );
}
