//! Agent enrollment (secure mode only): an admin creates an enrollment token; an agent
//! presents it with the public half of an NKey it generated and gets an agent id and a
//! NATS user JWT (signed by the SECMON account key) that may publish only under
//! `<prefix>.agent.<id>.>` and subscribe only to its commands and inbox. The enrolled
//! key is what ingest verifies event signatures against ([`verify`]); removing the
//! agent revokes the JWT on the NATS server ([`revoke`]).
//!
//! Mutual TLS (`secmon-manager init --mutual-tls`, read back from nats-server.conf by
//! [`crate::init::mutual_tls_required`]): the agent also sends a CSR for a TLS key it
//! made, and the manager signs it with the CA as a clientAuth certificate named after
//! the agent id it assigns (never a name from the CSR). The manager's own NATS
//! connections present `[nats] tls_cert`/`tls_key`.
//!
//! Invariant: the token secret is never stored (SHA-256 only) nor logged; the agent's
//! seed and TLS private key never reach the manager.

pub mod keys;
pub mod revoke;
pub mod routes;
pub mod tokens;
pub mod verify;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use nkeys::KeyPair;
use secmon_proto::{AgentId, HostFacts};
use tokio_util::sync::CancellationToken;

use self::keys::{AgentKey, AgentKeys};
use self::revoke::{Revoker, SysConnection};
use self::tokens::Refusal;
use crate::config::ManagerConfig;
use crate::init::{ACCOUNT_SEED, CA_CERT, CA_KEY, NATS_CONFIG, OPERATOR_SEED, SYSTEM_SEED};
use crate::log_limit::LogLimiter;
use crate::registry::RegistryHandle;
use crate::security::SecurityDb;

pub use self::verify::SignatureVerifier;

/// How often a revocation list the server did not take at start is pushed again.
const REPUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Enrollment state shared by the API handlers and ingest.
pub struct Enrollment {
    db: SecurityDb,
    account: KeyPair,
    ca_pem: String,
    ca_fingerprint: String,
    keys: AgentKeys,
    revoker: Revoker,
    registry: RegistryHandle,
    subject_prefix: String,
    agent_nats_url: String,
    public_api_url: String,
    /// The CA with its key, loaded only when nats-server requires client certificates:
    /// it signs the agents' CSRs.
    client_ca: Option<secmon_pki::Ca>,
    /// Refused enrollments are logged at most this often.
    warn: LogLimiter,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("account", &self.account.public_key())
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("agents", &self.keys.len())
            .field("mutual_tls", &self.client_ca.is_some())
            .finish()
    }
}

/// What an agent sends to enroll (after the token is checked).
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub public_key: String,
    pub name: String,
    pub host: HostFacts,
    pub agent_version: String,
    /// PEM CSR for the agent's TLS client key; required with mutual TLS, else ignored.
    pub csr: Option<String>,
}

/// What the agent gets back. (No Debug: it holds the agent's JWT.)
#[derive(Clone)]
pub struct Enrolled {
    pub agent_id: AgentId,
    pub jwt: String,
    pub groups: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub token_id: String,
    /// The agent's TLS client certificate (PEM), signed from its CSR with mutual TLS.
    pub client_cert: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("invalid token: {}", .0.as_str())]
    Token(Refusal),
    #[error("public key already enrolled: generate a new key")]
    KeyInUse,
    #[error("csr: this deployment requires mutual TLS: send a PEM certificate signing request in `csr`")]
    CsrMissing,
    #[error("csr: {0}")]
    Csr(secmon_pki::PkiError),
    #[error("cannot issue the agent's NATS JWT: {0}")]
    Jwt(#[from] secmon_pki::JwtError),
    #[error(transparent)]
    Db(#[from] crate::security::SecurityDbError),
}

fn read_secret(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    secmon_pki::check_secret_mode(&path)
        .with_context(|| format!("[security] pki_dir: {}", path.display()))?;
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} ([security] pki_dir)", path.display()))?
        .trim()
        .to_string())
}

impl Enrollment {
    /// Loads the PKI from `[security] pki_dir`, the enrolled keys from `db` (security.db,
    /// shared with [`crate::security::auth`]), and
    /// pushes the current revocation list to nats-server (retried in the background
    /// until it is taken or `stop`). `None` in local mode.
    pub async fn start(
        cfg: &ManagerConfig,
        db: SecurityDb,
        api_addr: SocketAddr,
        registry: RegistryHandle,
        stop: CancellationToken,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if !cfg.security.enabled {
            return Ok(None);
        }
        let pki = cfg.pki_dir();
        let ca_path = pki.join(CA_CERT);
        let ca_pem = std::fs::read_to_string(&ca_path).with_context(|| {
            format!("cannot read {} ([security] pki_dir; run secmon-manager init)", ca_path.display())
        })?;
        let ca_fingerprint = secmon_pki::ca_fingerprint_sha256(&ca_pem)
            .with_context(|| format!("{}: not a certificate", ca_path.display()))?;
        let operator = KeyPair::from_seed(&read_secret(&pki, OPERATOR_SEED)?).context("operator.seed")?;
        let account = KeyPair::from_seed(&read_secret(&pki, ACCOUNT_SEED)?).context("account.seed")?;
        let system = KeyPair::from_seed(&read_secret(&pki, SYSTEM_SEED)?).context("system.seed")?;

        db.ensure_schema(tokens::SCHEMA)?;
        db.ensure_schema(keys::SCHEMA)?;
        let keys = AgentKeys::new(db.with_conn(|c| keys::load_active(c))?);

        let client_ca = if crate::init::mutual_tls_required(&pki) {
            // Else the revocation pushes could not reach the server.
            crate::init::check_manager_client_cert(
                &pki,
                cfg.nats.tls_cert.as_deref(),
                cfg.nats.tls_key.as_deref(),
            )?;
            let ca = secmon_pki::Ca::from_pem(&ca_pem, &read_secret(&pki, CA_KEY)?)
                .with_context(|| format!("{} with {}", ca_path.display(), pki.join(CA_KEY).display()))?;
            Some(ca)
        } else {
            None
        };

        let sys = SysConnection {
            url: cfg.nats.url.clone(),
            ca: cfg.nats.tls_ca.clone().unwrap_or_else(|| ca_path.clone()),
            client_cert: cfg.nats.tls_cert.clone().zip(cfg.nats.tls_key.clone()),
        };
        let revoker =
            Revoker::new(db.clone(), operator, system, account.public_key(), pki.join(NATS_CONFIG), sys);
        let public_api_url = if cfg.security.public_api_url.is_empty() {
            format!("https://{api_addr}")
        } else {
            cfg.security.public_api_url.clone()
        };
        let agent_nats_url = if cfg.security.agent_nats_url.is_empty() {
            cfg.nats.url.clone()
        } else {
            cfg.security.agent_nats_url.clone()
        };
        let me = Arc::new(Self {
            db,
            account,
            ca_pem,
            ca_fingerprint,
            keys,
            revoker,
            registry,
            subject_prefix: cfg.nats.subject_prefix.clone(),
            agent_nats_url,
            public_api_url,
            client_ca,
            warn: LogLimiter::new(Duration::from_secs(10)),
        });
        tracing::info!(agents = me.keys.len(), mutual_tls = me.mutual_tls(), "enrollment ready");
        // A restarted nats-server may hold an older list: push ours now, and again
        // until it is taken.
        if !me.revoker.publish().await {
            let again = me.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(REPUSH_INTERVAL) => {}
                    }
                    if again.revoker.publish().await {
                        return;
                    }
                }
            });
        }
        Ok(Some(me))
    }

    /// The enrolled keys, shared with ingest.
    pub fn keys(&self) -> AgentKeys {
        self.keys.clone()
    }

    pub fn verifier(&self) -> SignatureVerifier {
        SignatureVerifier::new(self.keys.clone())
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }

    pub fn db(&self) -> &SecurityDb {
        &self.db
    }

    /// Whether agents must send a CSR and get a TLS client certificate.
    pub fn mutual_tls(&self) -> bool {
        self.client_ca.is_some()
    }

    /// Enrolls an agent: checks and uses the token, records the key, issues the JWT
    /// and adds the agent to the registry as `never_connected`.
    pub async fn enroll(&self, token: &str, req: EnrollRequest) -> Result<Enrolled, EnrollError> {
        tokens::check_format(token, &self.ca_fingerprint).map_err(EnrollError::Token)?;
        let agent_id = AgentId::generate();
        let perms = secmon_pki::agent_permissions(agent_id.as_str(), &self.subject_prefix)?;
        let jwt =
            secmon_pki::issue_user_jwt(&self.account, &req.public_key, agent_id.as_str(), &perms, None)?;
        // Signed after the token is checked, so a refused token costs no signature, and
        // before its use is taken, so a bad CSR does not use it up.
        let client_cert = match (&self.client_ca, &req.csr) {
            (None, _) => None,
            (Some(_), None) => return Err(EnrollError::CsrMissing),
            (Some(ca), Some(csr)) => {
                let t = token.to_string();
                self.db.call(move |c| tokens::check(c, &t, Utc::now())).await?.map_err(EnrollError::Token)?;
                Some(ca.sign_client_csr(csr, agent_id.as_str()).map_err(EnrollError::Csr)?)
            }
        };
        let token = token.to_string();
        let (id, public_key, name) = (agent_id.clone(), req.public_key.clone(), req.name.clone());
        let used = self
            .db
            .call(move |c| {
                // IMMEDIATE: take the write lock first (waiting on the busy timeout), so
                // a read-then-write cannot fail on another connection's write (the
                // audit log shares the file).
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let taken: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM agent_keys WHERE public_key = ?1)",
                    [&public_key],
                    |r| r.get(0),
                )?;
                if taken {
                    return Ok(Err(EnrollError::KeyInUse));
                }
                let info = match tokens::consume(&tx, &token, Utc::now())? {
                    Ok(i) => i,
                    Err(r) => return Ok(Err(EnrollError::Token(r))),
                };
                let key = AgentKey {
                    agent_id: id,
                    public_key,
                    name,
                    groups: info.groups.clone(),
                    labels: info.labels.clone(),
                    enrolled_at: Utc::now(),
                    token_id: info.id.clone(),
                    revoked_at: None,
                };
                keys::insert(&tx, &key)?;
                tx.commit()?;
                Ok(Ok(info))
            })
            .await??;
        self.keys.insert(agent_id.clone(), req.public_key.clone());
        if let Err(e) = self.registry.enroll(&agent_id, &req.name, req.host.clone(), &req.agent_version).await
        {
            // The key is enrolled; the agent appears when it registers.
            tracing::warn!(agent = %agent_id, error = %e, "enrolled agent not added to the registry yet");
        }
        tracing::info!(agent = %agent_id, name = %req.name, token = %used.id, "agent enrolled");
        Ok(Enrolled {
            agent_id,
            jwt,
            groups: used.groups,
            labels: used.labels,
            token_id: used.id,
            client_cert,
        })
    }

    /// Revokes an agent's key (see [`Revoker::revoke`]) and forgets it for signature
    /// checks.
    pub async fn revoke(&self, agent: &AgentId) -> Result<Option<bool>, revoke::RevokeError> {
        self.keys.remove(agent);
        self.revoker.revoke(agent).await
    }
}
