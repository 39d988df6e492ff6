//! Enrollment with the manager (`secmon-agent enroll`, or `[enrollment]` on first start).
//!
//! 1. The token `SE1.<ca fingerprint>.<secret>` pins the manager's CA.
//! 2. `GET /api/ca.pem` is fetched without verification (we do not trust anything yet);
//!    its SHA-256 must be the pinned fingerprint, else we stop before the token is sent.
//! 3. The agent's NKey and a TLS key with its CSR are generated here; the seed and the
//!    TLS private key never leave this host.
//! 4. `POST /api/enroll` goes over TLS verified against that CA only, with the token, the
//!    public key, the CSR and the host facts; the manager answers with the agent id and a
//!    user JWT, and, when the deployment uses mutual TLS, a client certificate for the CSR.
//! 5. `<state_dir>/nats.creds` (0600), `ca.pem`, `identity.json`, with mutual TLS
//!    `client.pem` and `client-key.pem` (0600), and the config's `[nats]` keys are
//!    written. The manager's agent id is authoritative from then on.
//!
//! Invariant: the token, the seed, the TLS key and the JWT appear in no log line, error
//! or output.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use secmon_proto::AgentId;
use serde::{Deserialize, Serialize};

use crate::AgentConfig;
use crate::identity::{self, EnrolledWith, Identity, IdentityError, StateLock};

/// Version tag of the token format.
pub const TOKEN_PREFIX: &str = "SE1";
/// The agent's NATS creds file in the state dir (JWT + seed, mode 0600).
pub const CREDS_FILE: &str = "nats.creds";
/// The manager's CA certificate in the state dir.
pub const CA_FILE: &str = "ca.pem";
/// The agent's TLS client certificate (mutual TLS) in the state dir.
pub const CLIENT_CERT_FILE: &str = "client.pem";
/// Its private key (mode 0600), made on this host.
pub const CLIENT_KEY_FILE: &str = "client-key.pem";
/// Longest answer read from the manager; a CA or an enrollment answer is a few KiB.
const MAX_BODY: u64 = 256 * 1024;
/// Timeout of each HTTPS exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0}")]
    BadToken(String),
    #[error("--manager: {0}")]
    BadManager(String),
    #[error("--ca-fingerprint: {0}")]
    BadFingerprint(String),
    #[error("--ca-fingerprint {given} differs from the CA fingerprint the token carries ({in_token})")]
    FingerprintDisagrees { given: String, in_token: String },
    #[error("CA fingerprint mismatch: expected {expected}, the server presented {presented}; not enrolling")]
    FingerprintMismatch { expected: String, presented: String },
    #[error("already enrolled ({0} exists); pass --force to enroll again as a new agent")]
    AlreadyEnrolled(PathBuf),
    #[error("enrollment refused: the token is invalid, expired or used up")]
    Refused,
    #[error("cannot reach the manager at {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("the manager at {url} answered {status}: {message}")]
    Status { url: String, status: u16, message: String },
    #[error("the manager's answer is not usable: {0}")]
    BadAnswer(String),
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// A parsed enrollment token. Debug shows only the fingerprint.
#[derive(Clone)]
pub struct EnrollToken {
    raw: String,
    fingerprint: String,
}

impl std::fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollToken").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl EnrollToken {
    /// Parses `SE1.<64 hex>.<secret>`. Errors never quote the token.
    pub fn parse(s: &str) -> Result<Self, EnrollError> {
        let s = s.trim();
        let bad = |why: &str| EnrollError::BadToken(format!("the enrollment token is malformed: {why}"));
        let mut parts = s.splitn(3, '.');
        let (Some(tag), Some(fp), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected SE1.<ca fingerprint>.<secret>"));
        };
        if tag != TOKEN_PREFIX {
            return Err(bad("it does not start with SE1."));
        }
        if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the CA fingerprint part is not 64 hex digits"));
        }
        let secret_ok = secret.len() >= 16
            && secret.len() <= 512
            && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=');
        if !secret_ok {
            return Err(bad("the secret part is not base64url"));
        }
        Ok(EnrollToken { raw: s.to_owned(), fingerprint: fp.to_ascii_lowercase() })
    }

    /// The CA fingerprint the token pins, lowercase hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn secret_str(&self) -> &str {
        &self.raw
    }
}

/// A SHA-256 fingerprint as lowercase hex without separators; accepts `AB:CD:...`.
pub fn normalize_fingerprint(s: &str) -> Result<String, EnrollError> {
    let hex: String = s.trim().chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EnrollError::BadFingerprint(
            "not a SHA-256 fingerprint (64 hex digits, ':' separators allowed)".into(),
        ));
    }
    Ok(hex)
}

/// Whether two fingerprints are the same (case and ':' separators ignored).
pub fn same_fingerprint(a: &str, b: &str) -> bool {
    matches!((normalize_fingerprint(a), normalize_fingerprint(b)), (Ok(a), Ok(b)) if a == b)
}

/// The manager URL without a trailing '/': it must be `https://HOST[:PORT]`.
pub fn check_manager_url(url: &str) -> Result<String, EnrollError> {
    let url = url.trim().trim_end_matches('/');
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(EnrollError::BadManager(format!(
            "{url:?} is not an https:// URL; enrollment sends a secret token and only goes over HTTPS"
        )));
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(EnrollError::BadManager(format!("{url:?} must be https://HOST[:PORT], without a path")));
    }
    Ok(url.to_owned())
}

/// Path of the creds file enrollment writes for `state_dir`.
pub fn creds_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CREDS_FILE)
}

/// What to enroll with, and where to write the result.
#[derive(Clone)]
pub struct EnrollRequest {
    pub manager: String,
    pub token: String,
    pub ca_fingerprint: Option<String>,
    /// The agent config file to update (or create).
    pub config_path: PathBuf,
    /// Name sent to the manager; None sends the config's name, or the host name.
    pub name: Option<String>,
    /// Enroll again even when creds exist (a new agent id and key).
    pub force: bool,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("manager", &self.manager)
            .field("token", &"<redacted>")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("config_path", &self.config_path)
            .field("name", &self.name)
            .field("force", &self.force)
            .finish()
    }
}

/// The outcome of a successful enrollment.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub agent_id: AgentId,
    pub public_key: String,
    pub nats_url: String,
    pub groups: Vec<String>,
    /// Every file written, with what it holds.
    pub files: Vec<(PathBuf, &'static str)>,
    /// The previous spool (events of an older identity), moved aside and never published.
    pub old_spool: Option<PathBuf>,
}

/// The body of `POST /api/enroll`.
#[derive(Debug, Serialize)]
struct EnrollBody<'a> {
    token: &'a str,
    public_key: &'a str,
    hostname: &'a str,
    os: &'a str,
    arch: &'a str,
    agent_version: &'a str,
    name: &'a str,
    /// Always sent (a CSR is public); the manager signs it only with mutual TLS.
    csr: &'a str,
}

/// The manager's answer.
#[derive(Deserialize)]
struct EnrollAnswer {
    agent_id: String,
    jwt: String,
    ca_pem: String,
    nats_url: String,
    #[serde(default)]
    subject_prefix: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// The TLS client certificate for our CSR, when the deployment uses mutual TLS.
    #[serde(default)]
    client_cert: Option<String>,
}

/// Runs the whole enrollment (blocking: HTTPS and files).
pub fn enroll(req: &EnrollRequest) -> Result<Enrolled, EnrollError> {
    let token = EnrollToken::parse(&req.token)?;
    let pinned = match &req.ca_fingerprint {
        Some(given) if !given.trim().is_empty() => {
            let given = normalize_fingerprint(given)?;
            if given != token.fingerprint() {
                return Err(EnrollError::FingerprintDisagrees {
                    given,
                    in_token: token.fingerprint().to_owned(),
                });
            }
            given
        }
        _ => token.fingerprint().to_owned(),
    };
    let manager = check_manager_url(&req.manager)?;
    let config_err = |reason: String| EnrollError::Config { path: req.config_path.clone(), reason };
    if secmon_config::is_yaml(&req.config_path) {
        return Err(config_err(
            "enrollment updates TOML configs only; use a .toml config (or set [nats] by hand)".into(),
        ));
    }
    let (state_dir, config_name) = state_dir_and_name(&req.config_path).map_err(config_err)?;
    let creds = creds_path(&state_dir);
    if creds.exists() && !req.force {
        return Err(EnrollError::AlreadyEnrolled(creds));
    }
    identity::ensure_state_dir(&state_dir)?;
    // A running agent would keep publishing under its old identity.
    let _lock = StateLock::acquire(&state_dir)?;

    let ca_pem = fetch_ca(&manager)?;
    let presented = secmon_pki::ca_fingerprint_sha256(&ca_pem)
        .map_err(|e| EnrollError::BadAnswer(format!("GET /api/ca.pem is not a PEM certificate: {e}")))?;
    if presented != pinned {
        return Err(EnrollError::FingerprintMismatch { expected: pinned, presented });
    }
    tracing::info!(manager = %manager, fingerprint = %pinned, "the manager's CA matches the pinned fingerprint");

    let key = nkeys::KeyPair::new_user();
    let public_key = key.public_key();
    let facts = crate::host_facts::collect();
    let name = req.name.clone().or(config_name).unwrap_or_else(crate::host_facts::hostname);
    // The manager names the certificate after the agent id; this name is only a hint.
    let tls = secmon_pki::client_csr("secmon-agent")
        .map_err(|e| EnrollError::BadAnswer(format!("cannot make the TLS key and CSR: {e}")))?;
    let body = EnrollBody {
        token: token.secret_str(),
        public_key: &public_key,
        hostname: &facts.hostname,
        os: &facts.os,
        arch: &facts.arch,
        agent_version: crate::VERSION,
        name: &name,
        csr: &tls.csr_pem,
    };
    let answer = post_enroll(&manager, &ca_pem, &body)?;
    drop(token);

    let agent_id = AgentId::new(answer.agent_id.clone())
        .map_err(|_| EnrollError::BadAnswer("agent_id is not a valid agent id".into()))?;
    check_jwt(&answer.jwt, &public_key)?;
    if !same_fingerprint(&secmon_pki::ca_fingerprint_sha256(&answer.ca_pem).unwrap_or_default(), &pinned) {
        return Err(EnrollError::BadAnswer("ca_pem is not the pinned CA".into()));
    }
    if answer.nats_url.trim().is_empty() {
        return Err(EnrollError::BadAnswer("nats_url is empty".into()));
    }
    if let Some(cert) = &answer.client_cert {
        check_client_cert(cert, &agent_id)?;
    }
    let seed = key.seed().map_err(|e| EnrollError::BadAnswer(format!("cannot read the new key: {e}")))?;

    let mut files = Vec::new();
    let ca_path = state_dir.join(CA_FILE);
    write_file(&ca_path, answer.ca_pem.as_bytes(), 0o644)?;
    files.push((ca_path.clone(), "the manager's CA certificate"));
    write_file(&creds, secmon_pki::creds_file(&answer.jwt, &seed).as_bytes(), 0o600)?;
    files.push((creds.clone(), "NATS credentials (user JWT and NKey seed, mode 0600)"));
    let client_cert = match &answer.client_cert {
        Some(cert) => {
            let (cert_path, key_path) = (state_dir.join(CLIENT_CERT_FILE), state_dir.join(CLIENT_KEY_FILE));
            write_file(&key_path, tls.key_pem.as_bytes(), 0o600)?;
            files.push((key_path.clone(), "TLS client key for mutual TLS (made here, mode 0600)"));
            write_file(&cert_path, cert.as_bytes(), 0o644)?;
            files.push((cert_path.clone(), "TLS client certificate for mutual TLS (signed by the CA)"));
            Some((cert_path, key_path))
        }
        None => None,
    };
    drop(tls);

    let old_spool = set_aside_old_spool(&state_dir, &agent_id)?;
    let id = Identity {
        agent_id: agent_id.clone(),
        created_at: Utc::now(),
        enrolled: Some(EnrolledWith { manager: manager.clone(), public_key: public_key.clone() }),
    };
    id.store(&state_dir)?;
    files.push((state_dir.join(identity::IDENTITY_FILE), "the agent id the manager assigned"));

    let settings = NatsSettings {
        url: answer.nats_url.trim().to_owned(),
        credentials_file: creds.clone(),
        tls_ca: ca_path,
        subject_prefix: answer.subject_prefix.filter(|p| !p.trim().is_empty()),
        name: req.name.clone(),
        client_cert,
    };
    update_config_file(&req.config_path, &settings)?;
    let keys = if settings.client_cert.is_some() {
        "agent config ([nats] url, credentials_file, tls_ca, tls_cert, tls_key)"
    } else {
        "agent config ([nats] url, credentials_file, tls_ca)"
    };
    files.push((req.config_path.clone(), keys));
    // What we wrote must load; a broken config would only show at the next start.
    secmon_config::load::<AgentConfig>(Some(&req.config_path)).map_err(|e| config_err(e.to_string()))?;
    tracing::info!(agent_id = %agent_id, manager = %manager, "enrolled");
    Ok(Enrolled { agent_id, public_key, nats_url: settings.url, groups: answer.groups, files, old_spool })
}

/// `[agent] state_dir` and `name` of the config at `path` (defaults when it does not
/// exist), with their `SECMON_AGENT_*` overrides. Read without the full validation:
/// a config whose `[nats]` names creds that are gone must not stop a re-enrollment,
/// which rewrites those keys (the written config is validated afterwards).
fn state_dir_and_name(path: &Path) -> Result<(PathBuf, Option<String>), String> {
    let doc: toml_edit::DocumentMut = match std::fs::read_to_string(path) {
        Ok(text) => text.parse().map_err(|e| format!("not valid TOML: {e}"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let key = |k: &str| {
        std::env::var(format!("SECMON_AGENT_{}", k.to_ascii_uppercase()))
            .ok()
            .or_else(|| doc.get("agent").and_then(|a| a.get(k)).and_then(|v| v.as_str()).map(str::to_owned))
    };
    let state_dir =
        key("state_dir").map(PathBuf::from).unwrap_or_else(|| AgentConfig::default().agent.state_dir);
    if state_dir.as_os_str().is_empty() {
        return Err("agent.state_dir must not be empty".into());
    }
    Ok((state_dir, key("name").filter(|n| !n.trim().is_empty())))
}

fn http_agent(tls: ureq::tls::TlsConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into()
}

/// `GET /api/ca.pem`, trusting nothing yet: the fingerprint check decides.
fn fetch_ca(manager: &str) -> Result<String, EnrollError> {
    let url = format!("{manager}/api/ca.pem");
    let agent = http_agent(ureq::tls::TlsConfig::builder().disable_verification(true).build());
    let http = |e: ureq::Error| EnrollError::Http { url: url.clone(), reason: e.to_string() };
    let mut resp = agent.get(&url).call().map_err(http)?;
    let status = resp.status().as_u16();
    let text = read_body(resp.body_mut()).map_err(|reason| EnrollError::Http { url: url.clone(), reason })?;
    if status != 200 {
        return Err(EnrollError::Status { url, status, message: error_message(&text) });
    }
    Ok(text)
}

/// `POST /api/enroll` over TLS verified against `ca_pem` only.
fn post_enroll(manager: &str, ca_pem: &str, body: &EnrollBody) -> Result<EnrollAnswer, EnrollError> {
    let url = format!("{manager}/api/enroll");
    let cert = ureq::tls::Certificate::from_pem(ca_pem.as_bytes())
        .map_err(|e| EnrollError::BadAnswer(format!("the CA certificate does not parse: {e}")))?;
    let tls =
        ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[cert])).build();
    let agent = http_agent(tls);
    let mut resp = agent
        .post(&url)
        .send_json(body)
        .map_err(|e| EnrollError::Http { url: url.clone(), reason: e.to_string() })?;
    let status = resp.status().as_u16();
    let text = read_body(resp.body_mut()).map_err(|reason| EnrollError::Http { url: url.clone(), reason })?;
    match status {
        200 | 201 => serde_json::from_str(&text).map_err(|e| EnrollError::BadAnswer(e.to_string())),
        401 | 403 => Err(EnrollError::Refused),
        _ => Err(EnrollError::Status { url, status, message: error_message(&text) }),
    }
}

fn read_body(body: &mut ureq::Body) -> Result<String, String> {
    let mut text = String::new();
    body.as_reader()
        .take(MAX_BODY)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(text)
}

/// The `message` (or `error`) of an API error answer, cut short.
fn error_message(text: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let m = v
        .get("message")
        .or_else(|| v.get("error"))
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| text.chars().take(200).collect());
    m.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// The JWT must be a user JWT for our key (else our seed could never use it).
fn check_jwt(jwt: &str, public_key: &str) -> Result<(), EnrollError> {
    let claims = secmon_pki::decode_verified(jwt)
        .map_err(|e| EnrollError::BadAnswer(format!("the user JWT does not verify: {e}")))?;
    if claims.get("sub").and_then(|s| s.as_str()) != Some(public_key) {
        return Err(EnrollError::BadAnswer("the user JWT is not for this agent's key".into()));
    }
    Ok(())
}

/// The client certificate must be a certificate for this agent (the manager names it
/// after the agent id).
fn check_client_cert(cert_pem: &str, agent_id: &AgentId) -> Result<(), EnrollError> {
    let cn = secmon_pki::cert_common_name(cert_pem)
        .map_err(|e| EnrollError::BadAnswer(format!("client_cert is not a usable certificate: {e}")))?;
    if cn != agent_id.as_str() {
        return Err(EnrollError::BadAnswer("client_cert is not for this agent id".into()));
    }
    Ok(())
}

/// Writes `bytes` to `path` with `mode` through a temp file and a rename, so a crash
/// leaves the old file or the new one.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), EnrollError> {
    let err = |source| EnrollError::Write { path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("enroll-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(err)?;
    // The umask may have narrowed the mode; a secret must not be wider either way.
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::io::Write::write_all(&mut f, bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

/// Events spooled under another agent id were never signed for the new one: the old
/// spool is kept aside for inspection instead of being published.
fn set_aside_old_spool(state_dir: &Path, new_id: &AgentId) -> Result<Option<PathBuf>, EnrollError> {
    let spool = state_dir.join("spool");
    if !spool.exists() {
        return Ok(None);
    }
    if Identity::load(state_dir).ok().flatten().is_some_and(|old| &old.agent_id == new_id) {
        return Ok(None);
    }
    let aside = state_dir.join(format!("spool.before-enrollment-{}", Utc::now().format("%Y%m%dT%H%M%S")));
    std::fs::rename(&spool, &aside).map_err(|source| EnrollError::Write { path: aside.clone(), source })?;
    Ok(Some(aside))
}

/// The config keys enrollment sets.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: String,
    pub credentials_file: PathBuf,
    pub tls_ca: PathBuf,
    /// Set when the manager uses a prefix; written when it differs from the file's.
    pub subject_prefix: Option<String>,
    /// `[agent] name`, when given.
    pub name: Option<String>,
    /// `tls_cert` and `tls_key` (mutual TLS); `None` removes them.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Sets the `[nats]` keys in the config at `path` (created from the default template
/// when missing), keeping every other key and comment. Other NATS credentials are
/// removed (only one kind may be set), and so is the used `[enrollment] token`.
pub fn update_config_file(path: &Path, s: &NatsSettings) -> Result<(), EnrollError> {
    let err = |reason: String| EnrollError::Config { path: path.to_owned(), reason };
    let (text, mode) = match std::fs::read_to_string(path) {
        Ok(t) => {
            let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o640);
            (t, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (crate::default_config::TEMPLATE.to_owned(), 0o640)
        }
        Err(e) => return Err(err(format!("cannot read it: {e}"))),
    };
    let updated = update_config_text(&text, s).map_err(err)?;
    // The config may hold the token until now: never wider than group-readable.
    write_file(path, updated.as_bytes(), mode & 0o750)
}

/// [`update_config_file`] on the text.
pub fn update_config_text(text: &str, s: &NatsSettings) -> Result<String, String> {
    use toml_edit::{DocumentMut, Item, Table, value};
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    let path_str = |p: &Path| p.to_string_lossy().into_owned();
    let nats = doc.entry("nats").or_insert_with(|| Item::Table(Table::new()));
    let nats = nats.as_table_like_mut().ok_or("[nats] is not a table")?;
    nats.insert("url", value(s.url.clone()));
    nats.insert("credentials_file", value(path_str(&s.credentials_file)));
    nats.insert("tls_ca", value(path_str(&s.tls_ca)));
    for other in ["user", "password", "token"] {
        nats.remove(other);
    }
    // A certificate from an earlier enrollment is for another agent id.
    match &s.client_cert {
        Some((cert, key)) => {
            nats.insert("tls_cert", value(path_str(cert)));
            nats.insert("tls_key", value(path_str(key)));
        }
        None => {
            nats.remove("tls_cert");
            nats.remove("tls_key");
        }
    }
    if let Some(prefix) = &s.subject_prefix {
        let current = nats.get("subject_prefix").and_then(|v| v.as_str()).unwrap_or("secmon");
        if current != prefix || nats.contains_key("subject_prefix") {
            nats.insert("subject_prefix", value(prefix.clone()));
        }
    }
    if let Some(name) = &s.name {
        let agent = doc.entry("agent").or_insert_with(|| Item::Table(Table::new()));
        agent.as_table_like_mut().ok_or("[agent] is not a table")?.insert("name", value(name.clone()));
    }
    if let Some(e) = doc.get_mut("enrollment").and_then(Item::as_table_like_mut) {
        e.remove("token");
    }
    Ok(doc.to_string())
}

/// What `secmon-agent enroll` prints: the id and the files, never a secret.
pub fn summary(e: &Enrolled) -> String {
    let mut out = format!("Enrolled: agent id {}\nNATS: {}\n", e.agent_id, e.nats_url);
    if !e.groups.is_empty() {
        out += &format!("Groups: {}\n", e.groups.join(", "));
    }
    out += "Files written:\n";
    for (p, what) in &e.files {
        out += &format!("  {}  ({what})\n", p.display());
    }
    if let Some(aside) = &e.old_spool {
        out += &format!(
            "The previous spool (events of the old identity, not sent) was moved to {}\n",
            aside.display()
        );
    }
    out
}

#[cfg(test)]
mod tests;
