//! Enrollment and signed events, with the real `secmon-agent` binary: events carry a
//! signature made with the creds file's key before they are spooled (so a spool
//! replayed after an outage verifies too), events are unsigned without creds, a wrong
//! CA fingerprint or a server that cannot prove the pinned CA never receives the token,
//! and the full flow against the real manager in secure mode (operator-mode NATS, TLS).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use common::*;
use nix::sys::signal::Signal;
use secmon_pki::{
    Ca, NatsIdentities, agent_permissions, creds_file, generate_ca, issue_user_jwt, write_secret,
};
use secmon_proto::signing::{SigError, verify_event};
use secmon_proto::{EVENTS_STREAM, Envelope};
use secmon_testkit::{ChildGuard, NatsServer, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_secmon-agent");
const SECRET: &str = "dGhpcy1pcy10aGUtc2VjcmV0LXBhcnQtb2YtdGhlLXRva2Vu";

/// An agent config in `dir` (state in `dir/state`), with `nats_extra` lines in [nats].
fn write_agent_config(dir: &Path, nats_url: &str, nats_extra: &str) -> PathBuf {
    let text = format!(
        "{}{nats_extra}\n[socket]\npath = \"\"\n\n[fim]\ncamera_paths = []\n",
        config_toml(nats_url, &dir.join("state"), "200ms")
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A creds file at `path` (a user JWT from a throwaway account, and a new NKey);
/// returns the key's public half.
fn make_creds(path: &Path) -> String {
    let ids = NatsIdentities::generate();
    let user = nkeys::KeyPair::new_user();
    let perms = agent_permissions("any", "secmon").unwrap();
    let jwt = issue_user_jwt(&ids.account, &user.public_key(), "test-agent", &perms, None).unwrap();
    write_secret(path, creds_file(&jwt, &user.seed().unwrap()).as_bytes()).unwrap();
    user.public_key()
}

/// Starts the agent binary with stderr in `<dir>/agent.log`.
fn spawn_agent(config: &Path, dir: &Path) -> ChildGuard {
    let log = std::fs::File::options().create(true).append(true).open(dir.join("agent.log")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    cmd.env_remove("RUST_LOG");
    ChildGuard::new(cmd.spawn().expect("spawn secmon-agent"))
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}

fn stop(agent: &mut ChildGuard, dir: &Path) {
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_timeout(Duration::from_secs(20)).expect("agent exits after SIGTERM");
    assert!(status.success(), "exit status {status}; log:\n{}", log_of(dir));
}

/// Raw payloads and subjects of the events stream, in order.
async fn raw_events(client: &async_nats::Client) -> Vec<(String, Vec<u8>)> {
    let mut s = jetstream::new(client.clone()).get_stream(EVENTS_STREAM).await.expect("events stream");
    let info = s.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for seq in info.first_sequence..=info.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap();
        out.push((m.subject.to_string(), m.payload.to_vec()));
    }
    out
}

fn agent_id_of(state: &Path) -> String {
    let id: secmon_agent::Identity =
        serde_json::from_slice(&std::fs::read(state.join("identity.json")).unwrap()).unwrap();
    id.agent_id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_signed_before_they_are_spooled() {
    // NATS down first: the first run's events wait in the spool.
    let mut nats = NatsServer::start();
    nats.kill();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("agent.creds");
    let public_key = make_creds(&creds);
    let config = write_agent_config(dir.path(), &nats.url(), &format!("credentials_file = {creds:?}\n"));
    let mut agent = spawn_agent(&config, dir.path());
    assert!(
        wait_until(Duration::from_secs(10), || log_of(dir.path()).contains("agent started")),
        "agent did not start; log:\n{}",
        log_of(dir.path())
    );
    stop(&mut agent, dir.path());
    assert!(log_of(dir.path()).contains(&public_key), "the log names the signing key");

    // NATS back: the second run publishes the first run's spooled events, then its own.
    nats.restart();
    let client = client(&nats.url()).await;
    create_events_stream(&client).await;
    let mut agent = spawn_agent(&config, dir.path());
    wait_stream_len(&client, 3, Duration::from_secs(15)).await;
    stop(&mut agent, dir.path());
    let agent_id = agent_id_of(&dir.path().join("state"));
    let events = raw_events(&client).await;
    let mut activities = Vec::new();
    for (subject, raw) in &events {
        assert!(subject.starts_with(&format!("secmon.agent.{agent_id}.event.")), "{subject}");
        verify_event(raw, &public_key).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(raw)));
        let env: Envelope = serde_json::from_slice(raw).unwrap();
        assert!(env.sig.as_deref().is_some_and(|s| s.starts_with("ed25519:")));
        activities.push((env.seq, env.activity));
    }
    assert_eq!(activities[..3], [(1, "started".into()), (2, "stopped".into()), (3, "started".into())]);
    // The check can fail: another key, or one changed byte, is refused.
    let (_, raw) = &events[0];
    assert_eq!(verify_event(raw, &nkeys::KeyPair::new_user().public_key()), Err(SigError::Forged));
    let tampered = String::from_utf8(raw.clone()).unwrap().replace("\"started\"", "\"stopped\"");
    assert_eq!(verify_event(tampered.as_bytes(), &public_key), Err(SigError::Forged));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_creds_events_are_unsigned() {
    let nats = NatsServer::start();
    let client = client(&nats.url()).await;
    create_events_stream(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_agent_config(dir.path(), &nats.url(), "");
    let mut agent = spawn_agent(&config, dir.path());
    wait_stream_len(&client, 1, Duration::from_secs(15)).await;
    stop(&mut agent, dir.path());
    let events = raw_events(&client).await;
    for (_, raw) in &events {
        assert_eq!(verify_event(raw, &nkeys::KeyPair::new_user().public_key()), Err(SigError::Unsigned));
    }
    assert!(log_of(dir.path()).contains("events are not signed"), "{}", log_of(dir.path()));
}

#[test]
fn an_unusable_creds_file_stops_the_start_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("agent.creds");
    write_secret(&creds, format!("-----BEGIN X-----\n{SECRET}\n-----END X-----\n").as_bytes()).unwrap();
    let config =
        write_agent_config(dir.path(), "nats://127.0.0.1:1", &format!("credentials_file = {creds:?}\n"));
    let mut agent = spawn_agent(&config, dir.path());
    let status = agent.wait_timeout(Duration::from_secs(10)).expect("the agent exits");
    assert!(!status.success());
    let log = log_of(dir.path());
    assert!(log.contains("nats.credentials_file"), "{log}");
    assert!(!log.contains(SECRET), "the creds content is in the log:\n{log}");
}

/// A TLS server with a certificate issued by `issuer`, answering `GET /api/ca.pem`
/// with `served_ca_pem` and 404 to anything else; records each request line.
fn tls_server(issuer: &Ca, served_ca_pem: String) -> (u16, Arc<Mutex<Vec<String>>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let srv = issuer.issue_server(&["127.0.0.1".into(), "localhost".into()]).unwrap();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(srv.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(srv.key_pem.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (config, seen, ca) = (config.clone(), seen.clone(), served_ca_pem.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
                    match tls.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return, // handshake refused by the client, or closed
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                seen.lock().unwrap().push(text.lines().next().unwrap_or_default().to_owned());
                let (status, body) = if text.starts_with("GET /api/ca.pem ") {
                    ("200 OK", ca)
                } else {
                    ("404 Not Found", String::new())
                };
                let _ = write!(
                    tls,
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, requests)
}

fn run_enroll(dir: &Path, manager: &str, token: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["enroll", "--manager", manager, "--token", token, "--config"])
        .arg(dir.join("agent.toml"))
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .expect("run secmon-agent enroll")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_wrong_ca_fingerprint_is_refused_before_the_token_is_sent() {
    let real = generate_ca("the server's CA").unwrap();
    let pinned = generate_ca("the CA the token pins").unwrap();
    let (port, requests) = tls_server(&real, real.cert_pem().to_owned());
    let dir = tempfile::tempdir().unwrap();
    write_agent_config(dir.path(), "nats://127.0.0.1:4222", "");
    let before = std::fs::read_to_string(dir.path().join("agent.toml")).unwrap();
    let token = format!("SE1.{}.{SECRET}", pinned.fingerprint_sha256());
    let out = run_enroll(dir.path(), &format!("https://127.0.0.1:{port}"), &token, &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let expected = format!(
        "CA fingerprint mismatch: expected {}, the server presented {}; not enrolling",
        pinned.fingerprint_sha256(),
        real.fingerprint_sha256()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(!err.contains(SECRET) && !text(&out.stdout).contains(SECRET), "the token is printed");
    assert_eq!(
        *requests.lock().unwrap(),
        ["GET /api/ca.pem HTTP/1.1"],
        "the server got more than the CA request"
    );
    assert!(!dir.path().join("state/nats.creds").exists());
    assert_eq!(std::fs::read_to_string(dir.path().join("agent.toml")).unwrap(), before, "config changed");

    // A server that serves the pinned CA's certificate (it is public) but cannot prove
    // it holds a certificate of that CA: the token request fails TLS verification.
    let (port, requests) = tls_server(&real, pinned.cert_pem().to_owned());
    let out = run_enroll(dir.path(), &format!("https://127.0.0.1:{port}"), &token, &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("/api/enroll") && err.contains("UnknownIssuer") && !err.contains(SECRET), "{err}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        *requests.lock().unwrap(),
        ["GET /api/ca.pem HTTP/1.1"],
        "the token request reached the server"
    );
    assert!(!dir.path().join("state/nats.creds").exists());

    // Plain HTTP is refused without any request.
    let out = run_enroll(dir.path(), &format!("http://127.0.0.1:{port}"), &token, &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not an https:// URL"), "{}", text(&out.stderr));
}

// ---- The full flow against the real manager ----

/// The manager in secure mode: `secmon-manager init`, nats-server in operator mode on
/// the generated config, and the manager serving HTTPS. Children killed on drop.
struct SecureManager {
    dir: tempfile::TempDir,
    api: String,
    nats_url: String,
    password: String,
    ca_pem: String,
    _nats: ChildGuard,
    _manager: ChildGuard,
}

impl SecureManager {
    fn start() -> Self {
        Self::start_with(false)
    }

    /// With `mutual_tls`: `init --mutual-tls`, and the manager presents its client certificate.
    fn start_with(mutual_tls: bool) -> Self {
        let manager_bin = secmon_testkit::workspace_bin("secmon-manager");
        let dir = tempfile::Builder::new().prefix("secmon-enroll-").tempdir().unwrap();
        let data = dir.path().join("data");
        let (nats_port, api_port) = (secmon_testkit::free_port(), secmon_testkit::free_port());
        let nats_url = format!("tls://127.0.0.1:{nats_port}");
        let api = format!("https://127.0.0.1:{api_port}");
        let pki = data.join("pki");
        let config = dir.path().join("manager.toml");
        // init reads the data dir from the config; the full config names files init writes.
        std::fs::write(&config, format!("[storage]\ndata_dir = {data:?}\n")).unwrap();
        let out = Command::new(&manager_bin)
            .arg("--config")
            .arg(&config)
            .args(["init", "--name", "127.0.0.1", "--name", "localhost", "--nats-listen"])
            .arg(format!("127.0.0.1:{nats_port}"))
            .args(if mutual_tls { &["--mutual-tls"][..] } else { &[] })
            .output()
            .unwrap();
        assert!(out.status.success(), "init failed: {}", text(&out.stderr));
        std::fs::write(
            &config,
            format!(
                "[storage]\ndata_dir = {data:?}\n\n[nats]\nurl = \"{nats_url}\"\ncredentials_file = {:?}\n\
                 tls_ca = {:?}\n{}\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n\n[security]\nenabled = true\n\
                 public_api_url = \"{api}\"\nagent_nats_url = \"{nats_url}\"\n",
                pki.join("manager.creds"),
                pki.join("ca.pem"),
                if mutual_tls {
                    format!(
                        "tls_cert = {:?}\ntls_key = {:?}\n",
                        pki.join("manager-client.pem"),
                        pki.join("manager-client-key.pem")
                    )
                } else {
                    String::new()
                },
            ),
        )
        .unwrap();
        let stdout = text(&out.stdout);
        let password = stdout
            .lines()
            .find_map(|l| l.split_once("Admin password (shown once):").map(|(_, p)| p.trim().to_owned()))
            .unwrap_or_else(|| panic!("init printed no admin password:\n{stdout}"));
        let nats_log = dir.path().join("nats.log");
        let nats = ChildGuard::new(secmon_testkit::spawn_nats_server(
            &pki.join("nats-server.conf"),
            &nats_log,
            nats_port,
        ));
        let log = std::fs::File::create(dir.path().join("manager.log")).unwrap();
        let manager = ChildGuard::new(
            Command::new(&manager_bin)
                .arg("--config")
                .arg(&config)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let ca_pem = std::fs::read_to_string(pki.join("ca.pem")).unwrap();
        let m = SecureManager { dir, api, nats_url, password, ca_pem, _nats: nats, _manager: manager };
        let up = wait_until(Duration::from_secs(30), || {
            m.http().get(format!("{}/api/health", m.api)).call().is_ok_and(|r| r.status() == 200)
        });
        assert!(up, "the manager's HTTPS API is not up:\n{}", m.log());
        m
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("manager.log")).unwrap_or_default()
    }

    fn http(&self) -> ureq::Agent {
        let cert = ureq::tls::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let tls =
            ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[cert])).build();
        ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().into()
    }

    fn login(&self) -> String {
        let mut r = self
            .http()
            .post(format!("{}/api/login", self.api))
            .send_json(serde_json::json!({"username": "admin", "password": self.password}))
            .unwrap();
        assert_eq!(r.status(), 200, "login: {}", r.body_mut().read_to_string().unwrap_or_default());
        let v: serde_json::Value = r.body_mut().read_json().unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    fn get(&self, bearer: &str, path: &str) -> serde_json::Value {
        let mut r = self
            .http()
            .get(format!("{}{path}", self.api))
            .header("Authorization", format!("Bearer {bearer}"))
            .call()
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.body_mut().read_json().unwrap()
    }

    fn enrollment_token(&self, bearer: &str, uses: u32) -> String {
        let mut r = self
            .http()
            .post(format!("{}/api/enrollment-tokens", self.api))
            .header("Authorization", format!("Bearer {bearer}"))
            .send_json(serde_json::json!({"uses": uses, "expires_in": "1h", "groups": ["web"]}))
            .unwrap();
        let status = r.status();
        let v: serde_json::Value = r.body_mut().read_json().unwrap_or_default();
        assert_eq!(status, 201, "POST /api/enrollment-tokens: {v}");
        v["token"].as_str().unwrap().to_owned()
    }
}

/// The agent's record in `GET /api/agents`, once it has `status`.
fn wait_agent_status(m: &SecureManager, bearer: &str, id: &str, status: &str, agent_dir: &Path) {
    let ok = wait_until(Duration::from_secs(30), || {
        let v = m.get(bearer, "/api/agents?limit=1000");
        v["items"].as_array().unwrap().iter().any(|a| a["id"] == id && a["status"] == status)
    });
    assert!(
        ok,
        "agent {id} not {status}: {}\nagent log:\n{}\nmanager log:\n{}",
        m.get(bearer, "/api/agents"),
        log_of(agent_dir),
        m.log()
    );
}

/// Waits for the agent's events in `GET /api/events`; each must carry a signature by
/// the key of the agent's creds file.
fn wait_events_stored(m: &SecureManager, bearer: &str, id: &str, agent_dir: &Path) {
    let path = format!("/api/events?agent={id}&limit=100");
    let ok = wait_until(Duration::from_secs(30), || m.get(bearer, &path)["total"].as_u64().unwrap_or(0) > 0);
    assert!(ok, "no event of {id} stored\nagent log:\n{}\nmanager log:\n{}", log_of(agent_dir), m.log());
    let creds = std::fs::read_to_string(agent_dir.join("state/nats.creds")).unwrap();
    let public_key = secmon_nats::parse_creds(&creds).unwrap().1.public_key();
    for mut e in m.get(bearer, &path)["items"].as_array().unwrap().clone() {
        assert_eq!(e["agent_id"], id);
        // `received` is the manager's, not the agent's.
        e.as_object_mut().unwrap().remove("received");
        secmon_proto::signing::verify_value(&e, &public_key).unwrap_or_else(|err| panic!("{err}: {e}"));
    }
}

#[test]
fn enrolls_with_the_real_manager_and_its_signed_events_are_stored() {
    let m = SecureManager::start();
    let bearer = m.login();

    // A: `secmon-agent enroll`.
    let a = tempfile::tempdir().unwrap();
    write_agent_config(a.path(), "nats://127.0.0.1:4222", "");
    let token = m.enrollment_token(&bearer, 1);
    let out = run_enroll(a.path(), &m.api, &token, &["--name", "web-a"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "enroll failed:\n{stderr}\nmanager log:\n{}", m.log());
    let state = a.path().join("state");
    let id = agent_id_of(&state);
    assert!(stdout.contains(&format!("agent id {id}")), "{stdout}");
    let creds = std::fs::read_to_string(state.join("nats.creds")).unwrap();
    let (jwt, key) = secmon_nats::parse_creds(&creds).unwrap();
    for secret in [token.as_str(), jwt.as_str(), &key.seed().unwrap()] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "enroll printed a secret");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(state.join("nats.creds")).unwrap().permissions().mode() & 0o777, 0o600);
    let cfg: secmon_agent::AgentConfig = secmon_config::load(Some(&a.path().join("agent.toml"))).unwrap();
    assert_eq!(cfg.nats.url, m.nats_url);
    assert_eq!(cfg.nats.credentials_file.as_deref(), Some(state.join("nats.creds").as_path()));
    assert_eq!(cfg.nats.tls_ca.as_deref(), Some(state.join("ca.pem").as_path()));
    assert_eq!(cfg.agent.name, "web-a");
    // No mutual TLS: no client certificate, and the TLS key made for the CSR is dropped.
    assert!(cfg.nats.tls_cert.is_none() && cfg.nats.tls_key.is_none());
    assert!(!state.join("client.pem").exists() && !state.join("client-key.pem").exists());

    // The token is spent, and this host is enrolled.
    let again = run_enroll(a.path(), &m.api, &token, &["--force"]);
    assert!(text(&again.stderr).contains("enrollment refused: the token is invalid, expired or used up"));
    let again = run_enroll(a.path(), &m.api, &token, &[]);
    assert!(text(&again.stderr).contains("already enrolled"), "{}", text(&again.stderr));
    assert_eq!(agent_id_of(&state), id, "a refused enrollment changed the identity");

    let mut agent_a = spawn_agent(&a.path().join("agent.toml"), a.path());
    wait_agent_status(&m, &bearer, &id, "active", a.path());
    wait_events_stored(&m, &bearer, &id, a.path());

    // B: enrollment on first start, from [enrollment] in the config.
    let b = tempfile::tempdir().unwrap();
    let config_b = write_agent_config(b.path(), "nats://127.0.0.1:4222", "");
    let token_b = m.enrollment_token(&bearer, 1);
    let mut text_b = std::fs::read_to_string(&config_b).unwrap();
    text_b += &format!("\n[enrollment]\nmanager = \"{}\"\ntoken = \"{token_b}\"\n", m.api);
    std::fs::write(&config_b, text_b).unwrap();
    let mut agent_b = spawn_agent(&config_b, b.path());
    assert!(
        wait_until(Duration::from_secs(20), || b.path().join("state/identity.json").exists()
            && b.path().join("state/nats.creds").exists()),
        "no first-start enrollment; log:\n{}",
        log_of(b.path())
    );
    let id_b = agent_id_of(&b.path().join("state"));
    assert_ne!(id_b, id);
    wait_agent_status(&m, &bearer, &id_b, "active", b.path());
    wait_events_stored(&m, &bearer, &id_b, b.path());
    let config_text = std::fs::read_to_string(&config_b).unwrap();
    assert!(!config_text.contains(&token_b), "the used token stayed in the config");
    assert!(!log_of(b.path()).contains(&token_b), "the token is in the agent's log");

    stop(&mut agent_a, a.path());
    stop(&mut agent_b, b.path());

    for dir in [a.path(), b.path()] {
        let log = log_of(dir);
        assert!(!log.contains("ERROR") && !log.contains("ermission"), "{log}");
    }
    // --force: a new identity; the old spool (the old id's events) is set aside, unsent.
    let out = run_enroll(a.path(), &m.api, &m.enrollment_token(&bearer, 1), &["--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new_id = agent_id_of(&state);
    assert_ne!(new_id, id);
    assert!(text(&out.stdout).contains("previous spool"), "{}", text(&out.stdout));
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("spool.before-enrollment-"))
        .collect();
    assert_eq!(aside.len(), 1);
}

#[test]
fn with_mutual_tls_enroll_writes_a_client_certificate_and_the_agent_runs() {
    use std::os::unix::fs::PermissionsExt;
    let m = SecureManager::start_with(true);
    let bearer = m.login();
    let a = tempfile::tempdir().unwrap();
    write_agent_config(a.path(), "nats://127.0.0.1:4222", "");
    let token = m.enrollment_token(&bearer, 1);
    let out = run_enroll(a.path(), &m.api, &token, &["--name", "mtls-a"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "enroll failed:\n{stderr}\nmanager log:\n{}", m.log());
    let state = a.path().join("state");
    let id = agent_id_of(&state);
    let (cert, key) = (state.join("client.pem"), state.join("client-key.pem"));
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(key_text.contains("PRIVATE KEY"));
    assert!(
        !stdout.contains(key_text.trim()) && !stderr.contains("PRIVATE KEY"),
        "enroll printed the TLS key"
    );
    assert!(stdout.contains("client.pem") && stdout.contains("client-key.pem"), "{stdout}");
    let cert_text = std::fs::read_to_string(&cert).unwrap();
    assert_eq!(secmon_pki::cert_common_name(&cert_text).unwrap(), id, "the certificate names the agent id");
    let cfg: secmon_agent::AgentConfig = secmon_config::load(Some(&a.path().join("agent.toml"))).unwrap();
    assert_eq!(cfg.nats.tls_cert.as_deref(), Some(cert.as_path()));
    assert_eq!(cfg.nats.tls_key.as_deref(), Some(key.as_path()));

    let mut agent = spawn_agent(&a.path().join("agent.toml"), a.path());
    wait_agent_status(&m, &bearer, &id, "active", a.path());
    wait_events_stored(&m, &bearer, &id, a.path());
    stop(&mut agent, a.path());
    let log = log_of(a.path());
    assert!(!log.contains("ERROR") && !log.contains("PRIVATE KEY"), "{log}");
}
