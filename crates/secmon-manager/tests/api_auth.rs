//! Secure mode of the REST API, against the real manager (in-process) with the PKI and
//! first admin from `secmon_manager::init::init`, a real nats-server and HTTPS clients
//! that trust only the init CA: TLS, bearer authentication, roles and the command
//! allowlist, API tokens, sessions, login lockout, the audit log, and the refusal of
//! plain HTTP on a non-loopback address.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use secmon_manager::app::{Manager, ManagerHandle};
use secmon_manager::config::ManagerConfig;
use secmon_manager::init::{AdminInit, InitOptions, init};
use secmon_testkit::NatsServer;
use serde_json::{Value, json};

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{} not JSON ({e}): {}", self.status, self.text))
    }

    /// Asserts status and error code; returns the message.
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.text);
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        v["error"]["message"].as_str().unwrap().to_owned()
    }
}

/// A secure-mode manager on HTTPS.
struct Secure {
    manager: Option<ManagerHandle>,
    /// `https://127.0.0.1:PORT`
    base: String,
    http: ureq::Agent,
    admin_password: String,
    /// The config the manager runs with, for [`Secure::restart`].
    cfg: ManagerConfig,
    _dir: tempfile::TempDir,
    _nats: NatsServer,
    rt: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn init_pki(data_dir: &std::path::Path) -> (String, Vec<u8>) {
    let out = init(&InitOptions {
        dir: data_dir.join("pki"),
        names: vec!["localhost".into(), "127.0.0.1".into()],
        nats_listen: "127.0.0.1:4222".into(),
        force: false,
        data_dir: None,
        mutual_tls: false,
    })
    .expect("init");
    let AdminInit::Created { password, .. } = out.admin.clone() else { panic!("first admin not created") };
    (password, std::fs::read(out.path(secmon_manager::init::CA_CERT)).unwrap())
}

fn secure_config(nats_url: &str, data_dir: &std::path::Path) -> ManagerConfig {
    let mut c = common::config(nats_url, data_dir);
    c.agents.heartbeat_timeout = Duration::from_secs(60);
    c.security.enabled = true;
    c
}

fn agent(ca_pem: Option<&[u8]>) -> ureq::Agent {
    let mut b = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)));
    if let Some(pem) = ca_pem {
        let ca = ureq::tls::Certificate::from_pem(pem).expect("CA PEM");
        b = b.tls_config(
            ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[ca])).build(),
        );
    }
    b.build().into()
}

impl Secure {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    fn start_with(tweak: impl FnOnce(&mut ManagerConfig)) -> Self {
        let rt = runtime();
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let (admin_password, ca_pem) = init_pki(dir.path());
        let mut cfg = secure_config(&nats.url(), dir.path());
        tweak(&mut cfg);
        let manager = rt.block_on(Manager::start(cfg.clone())).expect("secure manager starts");
        assert!(manager.api_tls(), "secure mode serves HTTPS");
        let base = manager.api_url();
        assert!(base.starts_with("https://127.0.0.1:"), "{base}");
        Self {
            manager: Some(manager),
            base,
            http: agent(Some(&ca_pem)),
            admin_password,
            cfg,
            _dir: dir,
            _nats: nats,
            rt,
        }
    }

    /// Stops the manager and starts a new one on the same data dir and config.
    fn restart(&mut self) {
        if let Some(m) = self.manager.take() {
            self.rt.block_on(m.shutdown());
        }
        let manager = self.rt.block_on(Manager::start(self.cfg.clone())).expect("secure manager restarts");
        self.base = manager.api_url();
        self.manager = Some(manager);
    }

    fn req(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        macro_rules! with_auth {
            ($r:expr) => {{
                let r = $r;
                match &auth {
                    Some(a) => r.header("Authorization", a),
                    None => r,
                }
            }};
        }
        let resp = match (method, body) {
            ("GET", _) => with_auth!(self.http.get(&url)).call(),
            ("DELETE", _) => with_auth!(self.http.delete(&url)).call(),
            ("POST", Some(b)) => with_auth!(self.http.post(&url)).send_json(b),
            ("POST", None) => with_auth!(self.http.post(&url)).send_empty(),
            ("PATCH", Some(b)) => with_auth!(self.http.patch(&url)).send_json(b),
            other => panic!("unsupported {other:?}"),
        };
        let mut resp = resp.expect("HTTPS exchange with the manager");
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let text = resp.body_mut().read_to_string().unwrap();
        Answer { status, retry_after, text }
    }

    fn get(&self, path: &str, token: &str) -> Answer {
        self.req("GET", path, Some(token), None)
    }

    fn login(&self, user: &str, password: &str) -> Answer {
        self.req("POST", "/api/login", None, Some(json!({"username": user, "password": password})))
    }

    /// Logs in and returns the session token.
    fn token(&self, user: &str, password: &str) -> String {
        let a = self.login(user, password);
        assert_eq!(a.status, 200, "login {user}: {}", a.text);
        a.json()["token"].as_str().unwrap().to_owned()
    }

    fn admin(&self) -> String {
        self.token("admin", &self.admin_password)
    }

    /// Creates a user with a known password and returns its session token.
    fn user(&self, admin: &str, name: &str, role: &str) -> (String, String) {
        let password = format!("pw-{name}-0123456789");
        let a = self.req(
            "POST",
            "/api/users",
            Some(admin),
            Some(json!({"username": name, "role": role, "password": password})),
        );
        assert_eq!(a.status, 201, "{}", a.text);
        assert!(a.json().get("password").is_none(), "a given password is not echoed: {}", a.text);
        (self.token(name, &password), password)
    }

    fn audit(&self, admin: &str, query: &str) -> Vec<Value> {
        let a = self.get(&format!("/api/audit?{query}"), admin);
        assert_eq!(a.status, 200, "{}", a.text);
        a.json()["items"].as_array().unwrap().clone()
    }
}

impl Drop for Secure {
    fn drop(&mut self) {
        if let Some(m) = self.manager.take() {
            self.rt.block_on(m.shutdown());
        }
    }
}

#[test]
fn https_with_the_init_certificate_bearer_required_and_first_admin_logs_in() {
    let s = Secure::start();
    let health = s.req("GET", "/api/health", None, None);
    assert_eq!(health.status, 200, "health is public: {}", health.text);
    for public in ["/api/openapi.json", "/api/ca.pem"] {
        assert_eq!(s.req("GET", public, None, None).status, 200, "{public}");
    }

    // Enrollment is public: the handler answers (about the token), not the auth layer.
    let enroll = s.req("POST", "/api/enroll", None, Some(json!({"token": "x"})));
    assert_ne!(enroll.json()["error"]["code"], "unauthorized", "{}", enroll.text);

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = format!("{}/api/health", s.base.replacen("https://", "http://", 1));
    let r = agent(None).get(&plain).call();
    assert!(r.as_ref().map(|r| r.status() != 200).unwrap_or(true), "plain HTTP answered: {r:?}");
    // A client that does not trust the init CA refuses the server.
    let untrusted = agent(None).get(format!("{}/api/health", s.base)).call();
    assert!(untrusted.is_err(), "connected without trusting the CA");

    let m = s.req("GET", "/api/agents", None, None).error(401, "unauthorized");
    assert!(m.contains("Bearer"), "{m}");
    s.get("/api/agents", "sms_not-a-real-token").error(401, "unauthorized");
    s.get("/api/agents", "garbage").error(401, "unauthorized");
    // Unknown routes need a token too, then they are 404.
    s.req("GET", "/api/nope", None, None).error(401, "unauthorized");

    let a = s.login("admin", &s.admin_password);
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["username"], "admin");
    assert_eq!(v["role"], "admin");
    let token = v["token"].as_str().unwrap().to_owned();
    assert!(v["expires_at"].as_str().unwrap() > chrono::Utc::now().to_rfc3339().as_str());
    s.get("/api/nope", &token).error(404, "not_found");
    assert_eq!(s.get("/api/agents", &token).status, 200);
    let me = s.get("/api/me", &token).json();
    assert_eq!(me, json!({"name": "admin", "role": "admin", "auth": "session"}));

    // Wrong password and unknown user: the same answer.
    let wrong = s.login("admin", "not-the-password").error(401, "unauthorized");
    let unknown = s.login("nobody", "not-the-password").error(401, "unauthorized");
    assert_eq!(wrong, unknown);

    // Logout ends the session.
    assert_eq!(s.req("POST", "/api/logout", Some(&token), None).status, 204);
    s.get("/api/agents", &token).error(401, "unauthorized");
}

#[test]
fn roles_and_the_command_allowlist_are_enforced_and_audited() {
    let s = Secure::start();
    let admin = s.admin();
    let (analyst, analyst_pw) = s.user(&admin, "ann", "analyst");
    let (readonly, readonly_pw) = s.user(&admin, "rob", "readonly");
    let alert = "/api/alerts/0190a0b0-0000-7000-8000-000000000001";
    let command = |tok: &str, name: &str| {
        s.req("POST", "/api/agents/agent-1/command", Some(tok), Some(json!({"command": name})))
    };

    // readonly: reads, nothing else.
    assert_eq!(s.get("/api/agents", &readonly).status, 200);
    let m = command(&readonly, "ping").error(403, "forbidden");
    assert!(m.contains("readonly"), "{m}");
    s.req("PATCH", alert, Some(&readonly), Some(json!({"status": "acknowledged"}))).error(403, "forbidden");

    // analyst: commands of its allowlist only; ping passes the auth layer and meets
    // the unknown agent.
    let m = command(&analyst, "reload-config").error(403, "forbidden");
    assert!(m.contains("\"reload-config\"") && m.contains("analyst"), "{m}");
    command(&analyst, "ping").error(404, "not_found");
    s.req("PATCH", alert, Some(&analyst), Some(json!({"status": "acknowledged"}))).error(404, "not_found");
    for admin_only in ["/api/audit", "/api/users", "/api/tokens", "/api/enrollment-tokens"] {
        s.get(admin_only, &analyst).error(403, "forbidden");
        s.get(admin_only, &readonly).error(403, "forbidden");
    }
    s.req("POST", "/api/tokens", Some(&analyst), Some(json!({"name": "x", "role": "admin"})))
        .error(403, "forbidden");
    s.req("DELETE", "/api/agents/agent-1", Some(&analyst), None).error(403, "forbidden");

    // admin: any command.
    command(&admin, "reload-config").error(404, "not_found");
    let users = s.get("/api/users", &admin).json();
    let names: Vec<&str> =
        users.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "ann", "rob"]);
    assert!(!users.to_string().contains("argon2"), "hashes listed: {users}");

    // A deleted user's sessions stop working.
    assert_eq!(s.req("DELETE", "/api/users/rob", Some(&admin), None).status, 204);
    s.get("/api/agents", &readonly).error(401, "unauthorized");
    s.req("DELETE", "/api/users/admin", Some(&admin), None).error(409, "last_admin");

    // The audit log: the state change, the denials, with who, role, where, status.
    let created = s.audit(&admin, "action=user.create");
    let ann = created.iter().find(|r| r["target"] == "ann").expect("user.create ann audited");
    assert_eq!(ann["actor"], "admin");
    assert_eq!(ann["role"], "admin");
    assert_eq!(ann["method"], "POST");
    assert_eq!(ann["path"], "/api/users");
    assert_eq!(ann["status"], 201);
    assert_eq!(ann["result"], "ok");
    assert!(ann["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{ann}");
    let t = chrono::DateTime::parse_from_rfc3339(ann["time"].as_str().unwrap()).unwrap();
    assert!((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds().abs() < 60, "{ann}");

    let commands = s.audit(&admin, "action=agent.command");
    let denied = commands.iter().find(|r| r["actor"] == "rob").expect("denied command audited");
    assert_eq!((denied["status"].as_u64(), denied["result"].as_str()), (Some(403), Some("denied")));
    assert_eq!(denied["target"], "agent-1");
    let refused =
        commands.iter().find(|r| r["actor"] == "ann" && r["status"] == 403).expect("analyst refusal");
    assert!(refused["detail"].as_str().unwrap().contains("reload-config"), "{refused}");
    let by_admin = commands.iter().find(|r| r["actor"] == "admin").expect("admin command audited");
    assert_eq!((by_admin["status"].as_u64(), by_admin["result"].as_str()), (Some(404), Some("error")));
    // Denied reads are audited too.
    let reads = s.audit(&admin, "actor=ann&action=read");
    assert!(reads.iter().any(|r| r["path"] == "/api/audit" && r["status"] == 403), "{reads:?}");
    // Paging and the total.
    let page = s.get("/api/audit?actor=ann&limit=1", &admin).json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["total"].as_u64().unwrap() >= 4, "{page}");
    s.get("/api/audit?limit=abc", &admin).error(400, "bad_parameter");

    let all = s.get("/api/audit?limit=1000", &admin).text;
    for secret in [&s.admin_password, &analyst_pw, &readonly_pw, &admin, &analyst, &readonly] {
        assert!(!all.contains(secret.as_str()), "a secret is in the audit log");
    }
}

#[test]
fn api_tokens_and_sessions_expire_and_are_revoked() {
    let s = Secure::start_with(|c| c.security.session_ttl = Duration::from_secs(2));
    let admin = s.admin();
    let a = s.req("POST", "/api/tokens", Some(&admin), Some(json!({"name": "ci", "role": "readonly"})));
    assert_eq!(a.status, 201, "{}", a.text);
    let created = a.json();
    let (id, token) =
        (created["id"].as_str().unwrap().to_owned(), created["token"].as_str().unwrap().to_owned());
    assert_eq!(created["expires_at"], Value::Null);
    let me = s.get("/api/me", &token).json();
    assert_eq!(me, json!({"name": "token:ci", "role": "readonly", "auth": "api_token"}));
    s.req(
        "PATCH",
        "/api/alerts/0190a0b0-0000-7000-8000-000000000001",
        Some(&token),
        Some(json!({"status": "closed"})),
    )
    .error(403, "forbidden");
    let listed = s.get("/api/tokens", &admin).text;
    assert!(listed.contains(&id) && !listed.contains(&token), "{listed}");

    let short = s.req(
        "POST",
        "/api/tokens",
        Some(&admin),
        Some(json!({"name": "brief", "role": "admin", "expires_in": "1s"})),
    );
    assert_eq!(short.status, 201, "{}", short.text);
    let short = short.json()["token"].as_str().unwrap().to_owned();
    s.req("POST", "/api/tokens", Some(&admin), Some(json!({"name": "x", "role": "root"})))
        .error(400, "bad_request");
    s.req(
        "POST",
        "/api/tokens",
        Some(&admin),
        Some(json!({"name": "x", "role": "admin", "expires_in": "soon"})),
    )
    .error(400, "bad_request");

    // Revoked token: 401.
    assert_eq!(s.req("DELETE", &format!("/api/tokens/{id}"), Some(&admin), None).status, 204);
    s.get("/api/agents", &token).error(401, "unauthorized");
    s.req("DELETE", &format!("/api/tokens/{id}"), Some(&admin), None).error(404, "not_found");

    // Expired token and expired session: 401.
    std::thread::sleep(Duration::from_millis(2200));
    s.get("/api/agents", &short).error(401, "unauthorized");
    s.get("/api/agents", &admin).error(401, "unauthorized");
    assert_eq!(s.get("/api/agents", &s.admin()).status, 200);
}

/// A manager locking after 3 failures for 120 s, and user `victim` (analyst) after 3
/// wrong passwords: (stack, admin token, victim's password).
fn locked_out_victim() -> (Secure, String, String) {
    let s = Secure::start_with(|c| {
        c.security.login_max_failures = 3;
        c.security.lockout = Duration::from_secs(120);
    });
    let admin = s.admin();
    let (_, victim_pw) = s.user(&admin, "victim", "analyst");
    for _ in 0..3 {
        s.login("victim", "wrong-password-1").error(401, "unauthorized");
    }
    (s, admin, victim_pw)
}

#[test]
fn lockout_refuses_even_the_right_password_with_retry_after() {
    let (s, admin, victim_pw) = locked_out_victim();
    let locked = s.login("victim", &victim_pw);
    locked.error(429, "locked");
    let wait: u64 = locked.retry_after.as_deref().expect("Retry-After").parse().unwrap();
    assert!((100..=120).contains(&wait), "Retry-After {wait}");
    // Other users are not locked by one user's failures.
    assert_eq!(s.login("admin", &s.admin_password).status, 200);

    let logins = s.audit(&admin, "action=login");
    let failed = logins.iter().filter(|r| r["actor"] == "victim" && r["status"] == 401).count();
    assert_eq!(failed, 3, "{logins:?}");
    let lock =
        logins.iter().find(|r| r["actor"] == "victim" && r["status"] == 429).expect("locked login audited");
    assert_eq!(lock["result"], "denied");
    assert!(lock["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    let text = serde_json::to_string(&logins).unwrap();
    assert!(
        !text.contains("wrong-password-1") && !text.contains(&victim_pw),
        "a password is in the audit log"
    );

    // One address guessing across names is locked too (4 x the per-user limit).
    for i in 0..9 {
        s.login(&format!("guess{i}"), "wrong-password-2").error(401, "unauthorized");
    }
    s.login("admin", &s.admin_password).error(429, "locked");
}

#[test]
fn a_lockout_outlasts_a_manager_restart() {
    let (mut s, _, victim_pw) = locked_out_victim();
    s.login("victim", &victim_pw).error(429, "locked");
    s.restart();
    let locked = s.login("victim", &victim_pw);
    locked.error(429, "locked");
    let wait: u64 = locked.retry_after.as_deref().expect("Retry-After").parse().unwrap();
    assert!((60..=120).contains(&wait), "Retry-After {wait}");
    // Only the locked user: the others log in after the restart.
    assert_eq!(s.login("admin", &s.admin_password).status, 200);
}

#[test]
fn local_mode_is_open_and_still_audited() {
    let rt = runtime();
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let manager = rt.block_on(Manager::start(common::config(&nats.url(), dir.path()))).unwrap();
    assert!(manager.api_url().starts_with("http://127.0.0.1:"));
    let http = agent(None);
    let base = manager.api_url();
    let r = http
        .patch(format!("{base}/api/alerts/0190a0b0-0000-7000-8000-000000000001"))
        .send_json(json!({"status": "closed"}))
        .unwrap();
    assert_eq!(r.status(), 404);
    let mut r = http.get(format!("{base}/api/audit?actor=local")).call().unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let rec = &v["items"][0];
    assert_eq!(rec["action"], "alert.update");
    assert_eq!(rec["role"], "admin");
    assert_eq!(rec["status"], 404);
    rt.block_on(manager.shutdown());
}

#[test]
fn plain_http_on_a_non_loopback_address_is_refused_unless_allowed() {
    let rt = runtime();
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(&nats.url(), dir.path());
    cfg.api.listen = "0.0.0.0:0".into();
    let e = rt.block_on(Manager::start(cfg.clone())).err().expect("plain HTTP on 0.0.0.0 refused");
    let msg = format!("{e:#}");
    assert!(msg.contains("plain HTTP") && msg.contains("allow_plain_http"), "{msg}");

    cfg.security.allow_plain_http = true;
    let m = rt.block_on(Manager::start(cfg)).expect("explicitly allowed");
    assert!(m.api_url().starts_with("http://"));
    rt.block_on(m.shutdown());

    // Secure mode without `init`: a clear refusal naming it.
    let empty = tempfile::tempdir().unwrap();
    let e =
        rt.block_on(Manager::start(secure_config(&nats.url(), empty.path()))).err().expect("no PKI refused");
    let msg = format!("{e:#}");
    assert!(msg.contains("secmon-manager init"), "{msg}");
}
