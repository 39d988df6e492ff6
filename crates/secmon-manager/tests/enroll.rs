//! Enrollment, per-agent NATS identities, signed events and revocation, end to end:
//! `secmon_manager::init::init` material, the real nats-server 2.9.10 in operator mode
//! with TLS (the generated nats-server.conf), and the real manager in secure mode
//! (HTTPS API, admin login). One deployment is initialised with mutual TLS, where
//! enrollment signs the agent's CSR and nats-server refuses a client without a
//! certificate from the CA.

mod common;

use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerError};
use futures::StreamExt;
use nkeys::KeyPair;
use secmon_manager::app::{Manager, ManagerHandle};
use secmon_manager::config::ManagerConfig;
use secmon_manager::init::{
    AdminInit, CA_CERT, InitOptions, MANAGER_CLIENT_CERT, MANAGER_CLIENT_KEY, MANAGER_CREDS, NATS_CONFIG,
};
use secmon_proto::{AgentId, EVENTS_STREAM, Envelope, Subjects};
use serde_json::{Value, json};

use common::{SimAgent, eventually};

const WAIT: Duration = Duration::from_secs(10);

fn nats_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(p.into());
    }
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A secure deployment: init material, nats-server in operator mode with TLS, the
/// manager in secure mode, and an HTTPS client logged in as the first admin.
struct Secure {
    dir: tempfile::TempDir,
    pki: PathBuf,
    nats_port: u16,
    nats: Option<Child>,
    manager: Option<ManagerHandle>,
    base: String,
    http: ureq::Agent,
    bearer: Option<String>,
    admin_password: String,
    mutual_tls: bool,
}

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

impl Secure {
    /// `None` (after saying why) when nats-server is missing outside CI.
    async fn start() -> Option<Self> {
        Self::start_with(false).await
    }

    /// [`Secure::start`], initialised with `--mutual-tls` when `mutual_tls`.
    async fn start_with(mutual_tls: bool) -> Option<Self> {
        if nats_server_binary().is_none() {
            assert!(
                !secmon_testkit::in_ci(),
                "nats-server is missing and CI=true: install nats-server 2.9.10"
            );
            eprintln!("SKIPPED: nats-server not installed");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("secmon-enroll-").tempdir().unwrap();
        let nats_port = secmon_testkit::free_port();
        let out = secmon_manager::init::init(&InitOptions {
            dir: dir.path().join("pki"),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            nats_listen: format!("127.0.0.1:{nats_port}"),
            force: false,
            data_dir: Some(dir.path().to_path_buf()),
            mutual_tls,
        })
        .expect("secmon-manager init");
        let admin_password = match &out.admin {
            AdminInit::Created { password, .. } => password.clone(),
            AdminInit::Exists { .. } => panic!("init of a fresh dir found an admin already"),
        };
        let mut s = Self {
            pki: out.dir.clone(),
            dir,
            nats_port,
            nats: None,
            manager: None,
            base: String::new(),
            http: ureq::Agent::new_with_defaults(),
            bearer: None,
            admin_password,
            mutual_tls,
        };
        s.start_nats();
        s.start_manager().await;
        Some(s)
    }

    fn start_nats(&mut self) {
        let log = self.dir.path().join("nats.log");
        self.nats =
            Some(secmon_testkit::spawn_nats_server(&self.pki.join(NATS_CONFIG), &log, self.nats_port));
    }

    fn config(&self) -> ManagerConfig {
        let mut c = common::config(&self.nats_url(), self.dir.path());
        c.nats.credentials_file = Some(self.pki.join(MANAGER_CREDS));
        c.nats.tls_ca = Some(self.pki.join(CA_CERT));
        if self.mutual_tls {
            c.nats.tls_cert = Some(self.pki.join(MANAGER_CLIENT_CERT));
            c.nats.tls_key = Some(self.pki.join(MANAGER_CLIENT_KEY));
        }
        c.security.enabled = true;
        c.agents.heartbeat_timeout = Duration::from_secs(30);
        c
    }

    async fn start_manager(&mut self) {
        let m = Manager::start(self.config()).await.expect("manager starts in secure mode");
        self.base = format!("https://127.0.0.1:{}", m.api_addr().port());
        self.manager = Some(m);
        let ca = std::fs::read(self.pki.join(CA_CERT)).unwrap();
        let cert = ureq::tls::Certificate::from_pem(&ca).unwrap();
        let tls =
            ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[cert])).build();
        self.http = ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().into();
        self.login();
    }

    /// Logs in as the first admin (H1's `POST /api/login`).
    fn login(&mut self) {
        let pw = self.admin_password.clone();
        self.bearer = None;
        let a = self.call("POST", "/api/login", Some(json!({"username": "admin", "password": pw})));
        assert_eq!(a.status, 200, "admin login: {}", a.body);
        self.bearer = Some(a.json()["token"].as_str().unwrap().to_string());
    }

    fn manager(&self) -> &ManagerHandle {
        self.manager.as_ref().unwrap()
    }

    fn nats_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.nats_port)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        tokio::task::block_in_place(|| {
            let url = format!("{}{path}", self.base);
            let auth = self.bearer.as_ref().map(|t| format!("Bearer {t}"));
            let res = match (method, body) {
                ("GET", _) => {
                    let mut r = self.http.get(&url);
                    if let Some(a) = &auth {
                        r = r.header("Authorization", a);
                    }
                    r.call()
                }
                ("DELETE", _) => {
                    let mut r = self.http.delete(&url);
                    if let Some(a) = &auth {
                        r = r.header("Authorization", a);
                    }
                    r.call()
                }
                (_, b) => {
                    let mut r = self.http.post(&url);
                    if let Some(a) = &auth {
                        r = r.header("Authorization", a);
                    }
                    r.send_json(b.unwrap_or(json!({})))
                }
            };
            let mut res = res.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            Answer {
                status: res.status().as_u16(),
                body: res.body_mut().read_to_string().unwrap_or_default(),
            }
        })
    }

    fn new_token(&self, body: Value) -> Value {
        let a = self.call("POST", "/api/enrollment-tokens", Some(body));
        assert_eq!(a.status, 201, "{}", a.body);
        a.json()
    }

    /// Enrolls a fresh key with `token`.
    fn enroll_with(&self, token: &str, key: &KeyPair, name: &str) -> Answer {
        // Enrollment is public: no bearer.
        tokio::task::block_in_place(|| {
            let body = json!({
                "token": token, "public_key": key.public_key(), "hostname": format!("{name}.example"),
                "os": "Debian GNU/Linux 12", "arch": "x86_64", "agent_version": "0.1.0", "name": name,
            });
            let mut res = self.http.post(format!("{}/api/enroll", self.base)).send_json(body).unwrap();
            Answer {
                status: res.status().as_u16(),
                body: res.body_mut().read_to_string().unwrap_or_default(),
            }
        })
    }

    /// A token for one enrollment, used now: (agent id, key, creds text).
    fn enroll(&self, name: &str) -> (AgentId, KeyPair, String) {
        let t = self.new_token(json!({}));
        let key = KeyPair::new_user();
        let a = self.enroll_with(t["token"].as_str().unwrap(), &key, name);
        assert_eq!(a.status, 201, "{}", a.body);
        let v = a.json();
        let id = AgentId::new(v["agent_id"].as_str().unwrap()).unwrap();
        let creds = secmon_pki::creds_file(v["jwt"].as_str().unwrap(), &key.seed().unwrap());
        (id, key, creds)
    }

    fn options(&self, creds: &str) -> ConnectOptions {
        ConnectOptions::with_credentials(creds)
            .unwrap()
            .add_root_certificates(self.pki.join(CA_CERT))
            .require_tls(true)
            .connection_timeout(Duration::from_secs(5))
    }

    /// An agent connection with its inbox prefix; server errors and events are kept.
    async fn connect_agent(
        &self,
        id: &AgentId,
        creds: &str,
    ) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let client = self
            .options(creds)
            .custom_inbox_prefix(Subjects::agent_inbox_prefix(id))
            .event_callback(move |ev| {
                let s = s.clone();
                async move {
                    let text = match ev {
                        Event::ServerError(ServerError::Other(m)) => m,
                        other => format!("{other:?}"),
                    };
                    s.lock().unwrap().push(text);
                }
            })
            .connect(self.nats_url())
            .await
            .expect("enrolled agent connects over TLS with its creds");
        (client, seen)
    }

    async fn manager_nats(&self) -> async_nats::Client {
        let creds = std::fs::read_to_string(self.pki.join(MANAGER_CREDS)).unwrap();
        let mut opts = self.options(&creds);
        if self.mutual_tls {
            opts = opts.add_client_certificate(
                self.pki.join(MANAGER_CLIENT_CERT),
                self.pki.join(MANAGER_CLIENT_KEY),
            );
        }
        opts.connect(self.nats_url()).await.unwrap()
    }

    /// `POST /api/enroll` with this body (no bearer).
    fn enroll_raw(&self, body: Value) -> Answer {
        tokio::task::block_in_place(|| {
            let mut res = self.http.post(format!("{}/api/enroll", self.base)).send_json(body).unwrap();
            Answer {
                status: res.status().as_u16(),
                body: res.body_mut().read_to_string().unwrap_or_default(),
            }
        })
    }
}

impl Drop for Secure {
    fn drop(&mut self) {
        self.manager.take();
        if let Some(mut c) = self.nats.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn seen_contains(seen: &Arc<Mutex<Vec<String>>>, what: &str) -> bool {
    seen.lock().unwrap().iter().any(|m| m.to_lowercase().contains(&what.to_lowercase()))
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_enroll_once_and_bad_tokens_are_refused() {
    let Some(s) = Secure::start().await else { return };
    let fp = std::fs::read_to_string(s.pki.join("fingerprint.txt")).unwrap().trim().to_string();

    let t = s.new_token(json!({"uses": 1, "groups": ["web"], "labels": {"env": "prod"}}));
    let token = t["token"].as_str().unwrap().to_string();
    assert!(token.starts_with(&format!("SE1.{fp}.")), "token does not carry the CA fingerprint");
    assert_eq!(t["ca_fingerprint"], fp);
    assert_eq!(t["uses_left"], 1);
    let listed = s.call("GET", "/api/enrollment-tokens", None);
    assert_eq!(listed.status, 200, "{}", listed.body);
    let secret = token.rsplit('.').next().unwrap();
    assert!(!listed.body.contains(secret), "token secret listed: {}", listed.body);
    assert_eq!(listed.json()[0]["id"], t["id"]);

    let doc = s.call("GET", "/api/openapi.json", None).json();
    for p in [
        "/api/enrollment-tokens",
        "/api/enrollment-tokens/{id}",
        "/api/ca.pem",
        "/api/enroll",
        "/api/agent-config",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from the OpenAPI document");
    }
    let ca = s.call("GET", "/api/ca.pem", None);
    assert_eq!(ca.status, 200);
    assert_eq!(ca.body, std::fs::read_to_string(s.pki.join(CA_CERT)).unwrap());

    // Bad public key: 400, and the token is not used.
    let bad = tokio::task::block_in_place(|| {
        let mut r = s
            .http
            .post(format!("{}/api/enroll", s.base))
            .send_json(json!({"token": token, "public_key": "AXXX", "hostname": "h"}))
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    });
    assert_eq!(bad.0, 400, "{}", bad.1);

    let key = KeyPair::new_user();
    let a = s.enroll_with(&token, &key, "web-1");
    assert_eq!(a.status, 201, "{}", a.body);
    let v = a.json();
    let id = AgentId::new(v["agent_id"].as_str().unwrap()).unwrap();
    assert_eq!(v["groups"], json!(["web"]));
    assert_eq!(v["labels"], json!({"env": "prod"}));
    assert_eq!(v["subject_prefix"], "secmon");
    assert_eq!(v["nats_url"], s.nats_url());
    assert!(v["ca_pem"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    let claims = secmon_pki::decode_verified(v["jwt"].as_str().unwrap()).unwrap();
    assert_eq!(claims["sub"], key.public_key());
    assert_eq!(claims["nats"]["pub"]["allow"], json!([format!("secmon.agent.{id}.>")]));
    assert!(!a.body.contains(&key.seed().unwrap()));

    // The agent is in the fleet, never connected, with its name and host facts.
    let agent = s.call("GET", &format!("/api/agents/{id}"), None);
    assert_eq!(agent.status, 200, "{}", agent.body);
    assert_eq!(agent.json()["status"], "never_connected");
    assert_eq!(agent.json()["name"], "web-1");
    assert_eq!(agent.json()["host"]["hostname"], "web-1.example");

    // A key already enrolled cannot be enrolled again (that would take over the
    // agent's identity), and the refusal does not use up the token.
    let again = s.new_token(json!({}));
    let again = again["token"].as_str().unwrap();
    let a = s.enroll_with(again, &key, "web-1-again");
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(a.body.contains("key_in_use"), "{}", a.body);
    let a = s.enroll_with(again, &KeyPair::new_user(), "web-2");
    assert_eq!(a.status, 201, "the refused enrollment used up the token: {}", a.body);

    // Used up, expired, forged (right format and CA, wrong secret), another CA's,
    // unknown garbage, revoked: all the same 401 invalid_token.
    let expired = s.new_token(json!({"expires_in": "1s"}));
    let revoked = s.new_token(json!({}));
    let del = s.call("DELETE", &format!("/api/enrollment-tokens/{}", revoked["id"].as_str().unwrap()), None);
    assert_eq!(del.status, 204, "{}", del.body);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let forged = secmon_manager::security::enroll::tokens::new_token(&fp);
    let other_ca = secmon_manager::security::enroll::tokens::new_token(&"ab".repeat(32));
    for (what, tok) in [
        ("used up", token.as_str()),
        ("expired", expired["token"].as_str().unwrap()),
        ("forged", forged.as_str()),
        ("other CA", other_ca.as_str()),
        ("garbage", "not-a-token"),
        ("revoked", revoked["token"].as_str().unwrap()),
    ] {
        let a = s.enroll_with(tok, &KeyPair::new_user(), "intruder");
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        assert_eq!(a.code(), "invalid_token", "{what}: {}", a.body);
        assert!(!a.body.contains(tok), "{what}: token echoed");
    }
    let m = s.manager().metrics();
    for (reason, n) in
        [("used_up", 1), ("expired", 1), ("unknown", 1), ("wrong_ca", 1), ("malformed", 1), ("revoked", 1)]
    {
        assert_eq!(m.enroll_refusals(reason), n, "{reason}");
    }
    // web-1 and web-2 (the key reuse was refused).
    assert_eq!(m.enrollments.get(), 2);

    // Without a bearer the admin routes are closed.
    let anon = Secure::call_without_bearer(&s, "/api/enrollment-tokens");
    assert_eq!(anon.0, 401, "{}", anon.1);

    // Using a token is atomic: 8 enrollments race for 2 uses, exactly 2 win.
    let two = s.new_token(json!({"uses": 2}));
    let two = two["token"].as_str().unwrap();
    let statuses: Vec<u16> = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
            .map(|i| {
                let (http, base) = (s.http.clone(), s.base.clone());
                scope.spawn(move || {
                    let body = json!({"token": two, "public_key": KeyPair::new_user().public_key(), "hostname": format!("race-{i}")});
                    http.post(format!("{base}/api/enroll")).send_json(body).unwrap().status().as_u16()
                })
            })
            .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    });
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 6, "{statuses:?}");

    // The downloaded agent config holds a working single-use token and the URLs.
    let cfg = s.call("POST", "/api/agent-config", Some(json!({"name": "web-2", "groups": ["web"]})));
    assert_eq!(cfg.status, 200, "{}", cfg.body);
    let toml: toml::Value = toml::from_str(&cfg.body).expect("agent config parses as TOML");
    assert_eq!(toml["agent"]["name"].as_str(), Some("web-2"));
    assert_eq!(toml["enrollment"]["manager"].as_str(), Some(s.base.as_str()));
    assert_eq!(toml["enrollment"]["ca_fingerprint"].as_str(), Some(fp.as_str()));
    assert_eq!(toml["nats"]["url"].as_str(), Some(s.nats_url().as_str()));
    let cfg_token = toml["enrollment"]["token"].as_str().unwrap();
    assert_eq!(s.enroll_with(cfg_token, &KeyPair::new_user(), "web-2").status, 201);
    assert_eq!(s.enroll_with(cfg_token, &KeyPair::new_user(), "web-3").status, 401);
}

impl Secure {
    fn call_without_bearer(&self, path: &str) -> (u16, String) {
        tokio::task::block_in_place(|| {
            let mut r = self.http.get(format!("{}{path}", self.base)).call().unwrap();
            (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_publishes_and_subscribes_only_as_itself() {
    let Some(s) = Secure::start().await else { return };
    let (a_id, _, a_creds) = s.enroll("a");
    let (b_id, _, _) = s.enroll("b");
    let manager = s.manager_nats().await;
    let js = async_nats::jetstream::new(manager.clone());
    let mut stream = js.get_stream(EVENTS_STREAM).await.unwrap();
    let before = stream.info().await.unwrap().state.messages;

    let (agent, seen) = s.connect_agent(&a_id, &a_creds).await;
    let subjects = Subjects::default();
    let theirs = subjects.event(&b_id, secmon_proto::EventClass::File);
    let mine = subjects.event(&a_id, secmon_proto::EventClass::File);
    // Forbidden first: the server handles one connection in order, so once the
    // allowed message is stored the forbidden one has been judged.
    agent.publish(theirs.clone(), "spoofed".into()).await.unwrap();
    agent.publish(mine.clone(), "mine".into()).await.unwrap();
    agent.flush().await.unwrap();
    eventually(WAIT, "the agent's own message stored", || {
        let s2 = stream.clone();
        async move {
            let mut s2 = s2;
            s2.info().await.unwrap().state.messages > before
        }
    })
    .await;
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        before + 1,
        "only the agent's own message is stored"
    );
    assert!(
        stream.get_last_raw_message_by_subject(&theirs).await.is_err(),
        "spoofed message reached the stream"
    );
    eventually(WAIT, "publish permissions violation", || seen_contains(&seen, &theirs)).await;

    // Another agent's commands: refused; its own: delivered.
    let mut own = agent.subscribe(subjects.command(&a_id)).await.unwrap();
    let _other = agent.subscribe(subjects.command(&b_id)).await.unwrap();
    let other_cmd = subjects.command(&b_id);
    eventually(WAIT, "subscribe permissions violation", || seen_contains(&seen, &other_cmd)).await;
    manager.publish(subjects.command(&a_id), "for a".into()).await.unwrap();
    manager.flush().await.unwrap();
    let got = tokio::time::timeout(WAIT, own.next()).await.unwrap().unwrap();
    assert_eq!(&got.payload[..], b"for a");
}

/// Publishes an event as the agent (core NATS; the stream stores it).
async fn publish(agent: &async_nats::Client, env: &Envelope, raw: Vec<u8>) {
    let subject = Subjects::default().event(&env.agent_id, env.class);
    agent.publish(subject, raw.into()).await.unwrap();
    agent.flush().await.unwrap();
}

fn signed(env: &mut Envelope, key: &KeyPair) -> Vec<u8> {
    secmon_proto::signing::sign_envelope(env, key).unwrap();
    serde_json::to_vec(env).unwrap()
}

async fn stored(s: &Secure, env: &Envelope) -> bool {
    s.manager().store().existing_event_ids(&[env.id]).await.unwrap().contains(&env.id)
}

fn spoofing_alerts(s: &Secure, agent: &AgentId) -> Vec<Value> {
    let a = s.call("GET", "/api/alerts", None);
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["title"] == "spoofing attempt" && x["agent_id"] == agent.as_str())
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_forged_and_unknown_events_are_rejected_and_alerted_replays_dropped() {
    let Some(s) = Secure::start().await else { return };
    let (id, key, creds) = s.enroll("signer");
    let (agent, _) = s.connect_agent(&id, &creds).await;
    let mut sim = SimAgent::new(&agent, id.as_str());
    let m = s.manager().metrics();

    let mut good = sim.next_event();
    let good_raw = signed(&mut good, &key);
    publish(&agent, &good, good_raw.clone()).await;
    eventually(WAIT, "signed event stored", || stored(&s, &good)).await;
    assert!(spoofing_alerts(&s, &id).is_empty(), "a signed event raised an alert");

    let unsigned = sim.next_event();
    publish(&agent, &unsigned, serde_json::to_vec(&unsigned).unwrap()).await;
    let mut tampered = sim.next_event();
    let raw = String::from_utf8(signed(&mut tampered, &key)).unwrap();
    let forged_raw = raw.replace(&format!("/etc/file-{}", tampered.seq), "/etc/shadow");
    assert_ne!(raw, forged_raw);
    publish(&agent, &tampered, forged_raw.into_bytes()).await;
    // Signed by a key that is not the agent's.
    let mut stranger = sim.next_event();
    let stranger_raw = signed(&mut stranger, &KeyPair::new_user());
    publish(&agent, &stranger, stranger_raw).await;

    eventually(WAIT, "rejections counted", || async {
        m.rejected("unsigned") == 1 && m.rejected("forged") == 2
    })
    .await;
    for e in [&unsigned, &tampered, &stranger] {
        assert!(!stored(&s, e).await, "rejected event {} stored", e.seq);
    }
    eventually(WAIT, "one critical spoofing attempt alert", || async {
        !spoofing_alerts(&s, &id).is_empty()
    })
    .await;
    let alerts = spoofing_alerts(&s, &id);
    assert_eq!(alerts.len(), 1, "repeats fold into one alert: {alerts:?}");
    assert_eq!(alerts[0]["severity"], "critical");
    assert_eq!(alerts[0]["rule_id"], secmon_manager::ingest::SPOOFING_RULE_ID);

    // An agent without an enrolled key (here published with the manager's own creds,
    // which may publish anywhere): unknown_agent.
    let manager = s.manager_nats().await;
    let ghost = SimAgent::new(&manager, AgentId::generate().as_str());
    let mut ghost_ev = ghost.event(1);
    let ghost_raw = signed(&mut ghost_ev, &KeyPair::new_user());
    publish(&manager, &ghost_ev, ghost_raw).await;
    eventually(WAIT, "unknown agent rejected", || async { m.rejected("unknown_agent") == 1 }).await;
    eventually(WAIT, "alert for the unknown agent", || async { !spoofing_alerts(&s, &ghost.id).is_empty() })
        .await;

    // Replays: the same signed event again (same id) is not stored twice; a validly
    // signed event reusing a seen sequence number is dropped as a replay.
    let dup_before = m.events_duplicate.get();
    publish(&agent, &good, good_raw).await;
    eventually(WAIT, "duplicate counted", || async { m.events_duplicate.get() > dup_before }).await;
    let mut replay = sim.event(good.seq);
    let replay_raw = signed(&mut replay, &key);
    publish(&agent, &replay, replay_raw).await;
    eventually(WAIT, "replay counted", || async { m.rejected("replay") == 1 }).await;
    assert!(!stored(&s, &replay).await, "replayed sequence number stored");
    // Still exactly one stored copy of the good event, and later signed events flow.
    let mut next = sim.next_event();
    let next_raw = signed(&mut next, &key);
    publish(&agent, &next, next_raw).await;
    eventually(WAIT, "next signed event stored", || stored(&s, &next)).await;
    assert_eq!(spoofing_alerts(&s, &id).len(), 1);
}

/// A burst (published without a flush in between, so ingest fetches it in large
/// batches that it verifies on several threads): each event is judged by its own
/// signature, whatever its position in the batch.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_events_is_verified_event_by_event() {
    let Some(s) = Secure::start().await else { return };
    let (id, key, creds) = s.enroll("burst");
    let (agent, _) = s.connect_agent(&id, &creds).await;
    let mut sim = SimAgent::new(&agent, id.as_str());
    let m = s.manager().metrics();
    let stranger = KeyPair::new_user();
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for i in 0..400 {
        let mut ev = sim.next_event();
        let forged = i % 37 == 5;
        let raw = signed(&mut ev, if forged { &stranger } else { &key });
        let subject = Subjects::default().event(&ev.agent_id, ev.class);
        agent.publish(subject, raw.into()).await.unwrap();
        if forged { bad.push(ev.id) } else { good.push(ev.id) }
    }
    agent.flush().await.unwrap();
    let store = s.manager().store();
    eventually(WAIT, "every signed event of the burst stored", || async {
        store.existing_event_ids(&good).await.unwrap().len() == good.len()
    })
    .await;
    eventually(WAIT, "every forged event rejected", || async { m.rejected("forged") == bad.len() as u64 })
        .await;
    assert!(store.existing_event_ids(&bad).await.unwrap().is_empty(), "a forged event was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_an_agent_revokes_it_on_the_nats_server() {
    let Some(mut s) = Secure::start().await else { return };
    let (id, key, creds) = s.enroll("doomed");
    let (other_id, _, other_creds) = s.enroll("survivor");
    let (agent, seen) = s.connect_agent(&id, &creds).await;
    let (other, _) = s.connect_agent(&other_id, &other_creds).await;

    let conf_before = std::fs::read_to_string(s.pki.join(NATS_CONFIG)).unwrap();
    let a = s.call("DELETE", &format!("/api/agents/{id}"), None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["status"], "removed");
    assert_eq!(a.json()["revocation"], json!({"revoked": true, "pushed": true}), "{}", a.body);

    eventually(Duration::from_secs(5), "the revoked agent's connection closed", || async {
        seen_contains(&seen, "revoked").await
            && agent.connection_state() != async_nats::connection::State::Connected
    })
    .await;
    let err = s.options(&creds).connect(s.nats_url()).await.expect_err("revoked agent reconnected");
    assert_eq!(err.kind(), async_nats::ConnectErrorKind::AuthorizationViolation, "{err}");
    assert_eq!(
        other.connection_state(),
        async_nats::connection::State::Connected,
        "another agent was cut off"
    );
    let rendered = s.manager().metrics().render();
    assert!(rendered.contains("secmon_revocations_total{result=\"pushed\"} 1"), "{rendered}");

    // The server's config carries the list, so a restarted server keeps refusing it.
    let revoked_in_config = |s: &Secure| {
        let conf = std::fs::read_to_string(s.pki.join(NATS_CONFIG)).unwrap();
        let account_jwt = conf
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .find(|v| secmon_pki::decode_verified(v).is_ok_and(|c| c["name"] == "SECMON"))
            .expect("SECMON account JWT in the config");
        let claims = secmon_pki::decode_verified(&account_jwt).unwrap();
        claims["nats"]["revocations"].get(key.public_key()).is_some()
    };
    assert!(revoked_in_config(&s));

    // A server started from a config without the list (an old copy) learns it again
    // when the manager starts.
    s.manager.take().unwrap().shutdown().await;
    if let Some(mut c) = s.nats.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    std::fs::write(s.pki.join(NATS_CONFIG), &conf_before).unwrap();
    s.start_nats();
    assert!(!revoked_in_config(&s));
    s.start_manager().await;
    assert!(revoked_in_config(&s), "the manager rewrote the config at start");
    let err =
        s.options(&creds).connect(s.nats_url()).await.expect_err("revoked agent reconnected after restart");
    assert_eq!(err.kind(), async_nats::ConnectErrorKind::AuthorizationViolation, "{err}");
    s.connect_agent(&other_id, &other_creds).await;
    // Its events stay refused as a removed agent's.
    assert_eq!(s.call("GET", &format!("/api/agents/{id}"), None).json()["status"], "removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_routes_need_secure_mode() {
    let nats = secmon_testkit::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(common::config(&nats.url(), dir.path())).await.unwrap();
    let base = format!("http://{}", m.api_addr());
    let (status, body) = tokio::task::block_in_place(|| {
        let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut r = http.post(format!("{base}/api/enrollment-tokens")).send_json(json!({})).unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    });
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("secure_mode_required") && body.contains("[security] enabled"), "{body}");
    m.shutdown().await;
}

/// Enrollment body with a CSR (and whatever else the test adds).
fn enroll_body(token: &str, key: &KeyPair, name: &str, csr: Option<&str>) -> Value {
    let mut b = json!({"token": token, "public_key": key.public_key(), "hostname": format!("{name}.example"), "name": name});
    if let Some(csr) = csr {
        b["csr"] = json!(csr);
    }
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn without_mutual_tls_a_csr_is_ignored_and_no_certificate_issued() {
    let Some(s) = Secure::start().await else { return };
    assert!(!secmon_manager::init::mutual_tls_required(&s.pki));
    assert!(!s.pki.join(MANAGER_CLIENT_CERT).exists() && !s.pki.join(MANAGER_CLIENT_KEY).exists());
    let t = s.new_token(json!({}));
    let csr = secmon_pki::client_csr("x").unwrap();
    let a = s.enroll_raw(enroll_body(
        t["token"].as_str().unwrap(),
        &KeyPair::new_user(),
        "plain",
        Some(&csr.csr_pem),
    ));
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(a.json().get("client_cert").is_none(), "{}", a.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_agents_connect_only_with_the_certificate_issued_for_their_csr() {
    const NOT_A_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
    let Some(s) = Secure::start_with(true).await else { return };
    assert!(secmon_manager::init::mutual_tls_required(&s.pki));
    let conf = std::fs::read_to_string(s.pki.join(NATS_CONFIG)).unwrap();
    assert!(conf.contains("verify: true"), "{conf}");
    assert_eq!(
        secmon_pki::cert_common_name(&std::fs::read_to_string(s.pki.join(MANAGER_CLIENT_CERT)).unwrap())
            .unwrap(),
        secmon_manager::init::MANAGER_CLIENT_NAME
    );

    // No CSR: 400 naming csr, and the token is not used up.
    let t = s.new_token(json!({}));
    let token = t["token"].as_str().unwrap().to_string();
    let key = KeyPair::new_user();
    let a = s.enroll_raw(enroll_body(&token, &key, "mtls-1", None));
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.json()["error"]["parameter"], "csr", "{}", a.body);
    // A CSR that is not one: 400 naming csr.
    let a = s.enroll_raw(enroll_body(&token, &key, "mtls-1", Some(NOT_A_CSR)));
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.json()["error"]["parameter"], "csr", "{}", a.body);

    assert_eq!(s.manager().metrics().enroll_refusals("csr"), 2);

    // A forged token is refused before its CSR is read (401, not 400 for the CSR): a
    // refused token never gets a CSR signed.
    let fp = std::fs::read_to_string(s.pki.join("fingerprint.txt")).unwrap().trim().to_string();
    let forged = secmon_manager::security::enroll::tokens::new_token(&fp);
    let a = s.enroll_raw(enroll_body(&forged, &key, "mtls-1", Some(NOT_A_CSR)));
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(s.manager().metrics().enroll_refusals("csr"), 2);

    // The CSR asks to be the manager; the certificate is named after the agent id.
    let tls = secmon_pki::client_csr(secmon_manager::init::MANAGER_CLIENT_NAME).unwrap();
    let a = s.enroll_raw(enroll_body(&token, &key, "mtls-1", Some(&tls.csr_pem)));
    assert_eq!(a.status, 201, "the refused enrollments used up the token: {}", a.body);
    let v = a.json();
    assert!(!a.body.contains("PRIVATE KEY"));
    let id = AgentId::new(v["agent_id"].as_str().unwrap()).unwrap();
    let cert = v["client_cert"].as_str().expect("client_cert with mutual TLS");
    assert_eq!(secmon_pki::cert_common_name(cert).unwrap(), id.as_str());
    let creds = secmon_pki::creds_file(v["jwt"].as_str().unwrap(), &key.seed().unwrap());
    let (cert_path, key_path) =
        (s.dir.path().join("agent-client.pem"), s.dir.path().join("agent-client-key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    secmon_pki::write_secret(&key_path, tls.key_pem.as_bytes()).unwrap();

    // With its certificate the agent connects, and its signed events are stored.
    let agent = s
        .options(&creds)
        .add_client_certificate(cert_path.clone(), key_path.clone())
        .custom_inbox_prefix(Subjects::agent_inbox_prefix(&id))
        .connect(s.nats_url())
        .await
        .expect("agent with its issued client certificate connects");
    let sim = SimAgent::new(&agent, id.as_str());
    let mut ev = sim.event(1);
    let raw = signed(&mut ev, &key);
    publish(&agent, &ev, raw).await;
    eventually(WAIT, "the mutual-TLS agent's signed event stored", || stored(&s, &ev)).await;

    // The same creds without a client certificate, or with one from another CA: refused
    // by nats-server in the TLS handshake.
    let err =
        s.options(&creds).connect(s.nats_url()).await.expect_err("connected without a client certificate");
    assert_ne!(err.kind(), async_nats::ConnectErrorKind::AuthorizationViolation, "{err}");
    let stranger = secmon_pki::generate_ca("other CA").unwrap().issue_client(id.as_str()).unwrap();
    let (sc, sk) = (s.dir.path().join("stranger.pem"), s.dir.path().join("stranger-key.pem"));
    std::fs::write(&sc, &stranger.cert_pem).unwrap();
    secmon_pki::write_secret(&sk, stranger.key_pem.as_bytes()).unwrap();
    s.options(&creds)
        .add_client_certificate(sc, sk)
        .connect(s.nats_url())
        .await
        .expect_err("connected with a client certificate from another CA");
    // A valid certificate does not replace the creds: another key with it is refused.
    let err = s
        .options(&secmon_pki::creds_file(v["jwt"].as_str().unwrap(), &KeyPair::new_user().seed().unwrap()))
        .add_client_certificate(cert_path, key_path)
        .connect(s.nats_url())
        .await
        .expect_err("connected with the certificate and someone else's key");
    assert_eq!(err.kind(), async_nats::ConnectErrorKind::AuthorizationViolation, "{err}");

    // The manager's system-account connection presents its own certificate: revocation
    // reaches the server.
    let a = s.call("DELETE", &format!("/api/agents/{id}"), None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["revocation"], json!({"revoked": true, "pushed": true}), "{}", a.body);
    eventually(Duration::from_secs(5), "the revoked agent's connection closed", || async {
        agent.connection_state() != async_nats::connection::State::Connected
    })
    .await;
}
