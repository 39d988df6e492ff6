//! Revocation: the SECMON account JWT is re-signed by the operator with the revoked
//! agent keys in its revocation list and pushed to nats-server through the system
//! account (`$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE`); the server then closes the
//! revoked users' connections and refuses their reconnects. The same JWT replaces the
//! account's preload in `<pki_dir>/nats-server.conf`, so a restarted server keeps the
//! list; and it is pushed again on every manager start.
//!
//! Checked against nats-server 2.9.10: the MEMORY resolver accepts claim updates from
//! a system-account user and answers `{"data":{"code":200,"message":"jwt updated"}}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nkeys::KeyPair;
use secmon_pki::{AccountSpec, Permissions, account_jwt, creds_file, issue_user_jwt};
use secmon_proto::AgentId;
use tokio::sync::Mutex;

use super::keys;
use crate::security::SecurityDb;

/// How long a claims update waits for the server's answer.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("cannot sign the SECMON account JWT: {0}")]
    Jwt(#[from] secmon_pki::JwtError),
    #[error(transparent)]
    Db(#[from] crate::security::SecurityDbError),
    #[error("cannot rewrite {}: {source}", path.display())]
    Config { path: PathBuf, source: std::io::Error },
    #[error("cannot reach nats-server as the system account: {0}")]
    Connect(String),
    #[error("nats-server did not take the account update: {0}")]
    Refused(String),
}

/// What the manager needs to connect as a system-account user.
#[derive(Clone)]
pub struct SysConnection {
    pub url: String,
    pub ca: PathBuf,
    /// Client certificate and key, for a server that requires mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Re-signs and pushes the SECMON account JWT. Holds the operator and system keys.
pub struct Revoker {
    db: SecurityDb,
    operator: KeyPair,
    system: KeyPair,
    account_pub: String,
    nats_config: PathBuf,
    conn: SysConnection,
    /// Held for a whole publish, so a push never overtakes a newer list.
    state: Mutex<PushState>,
}

#[derive(Default)]
struct PushState {
    /// Connected on first use (and again after a failure).
    client: Option<async_nats::Client>,
    /// The revocation list last written to the server config: a retried push does not
    /// rewrite the file.
    preloaded: Option<BTreeMap<String, i64>>,
}

impl std::fmt::Debug for Revoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revoker").field("account", &self.account_pub).finish()
    }
}

impl Revoker {
    pub fn new(
        db: SecurityDb,
        operator: KeyPair,
        system: KeyPair,
        account_pub: String,
        nats_config: PathBuf,
        conn: SysConnection,
    ) -> Self {
        Self { db, operator, system, account_pub, nats_config, conn, state: Mutex::default() }
    }

    /// Marks the agent's key revoked (when it enrolled) and publishes the new list.
    /// `Ok(None)`: the agent has no enrolled key. `Ok(Some(pushed))`: revoked and
    /// persisted; `pushed` says whether nats-server took it (else it applies when the
    /// server restarts or the manager starts again).
    pub async fn revoke(&self, agent: &AgentId) -> Result<Option<bool>, RevokeError> {
        let at = chrono::Utc::now().timestamp();
        let id = agent.clone();
        let Some(_key) = self.db.call(move |c| keys::revoke(c, &id, at)).await? else { return Ok(None) };
        tracing::info!(agent = %agent, "agent key revoked");
        Ok(Some(self.publish().await))
    }

    /// Signs the account JWT with the stored revocations, rewrites the server config's
    /// preload and pushes the JWT. True when the server took it; failures are logged.
    pub async fn publish(&self) -> bool {
        match self.try_publish().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "revocation list not pushed to nats-server; it applies at its next start");
                false
            }
        }
    }

    async fn try_publish(&self) -> Result<(), RevokeError> {
        // Read under the lock: the last push then carries every committed revocation.
        let mut state = self.state.lock().await;
        let revocations: BTreeMap<String, i64> = self.db.call(|c| keys::revocations(c)).await?;
        let mut spec = AccountSpec::secmon(self.account_pub.clone());
        spec.revocations = revocations;
        let jwt = account_jwt(&self.operator, &spec)?;
        if state.preloaded.as_ref() != Some(&spec.revocations) {
            rewrite_preload(&self.nats_config, &self.account_pub, &jwt)?;
            state.preloaded = Some(spec.revocations.clone());
        }
        self.push(&mut state.client, &jwt).await?;
        tracing::info!(revoked = spec.revocations.len(), "account revocation list pushed to nats-server");
        Ok(())
    }

    async fn push(&self, guard: &mut Option<async_nats::Client>, jwt: &str) -> Result<(), RevokeError> {
        if guard.is_none() {
            *guard = Some(self.connect().await?);
        }
        let client = guard.as_ref().expect("connected above");
        let subject = format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", self.account_pub);
        let reply =
            match tokio::time::timeout(PUSH_TIMEOUT, client.request(subject, jwt.to_string().into())).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    *guard = None;
                    return Err(RevokeError::Connect(e.to_string()));
                }
                Err(_) => {
                    *guard = None;
                    return Err(RevokeError::Connect("no answer to the account update".into()));
                }
            };
        let answer: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
        if answer["data"]["code"].as_i64() == Some(200) {
            Ok(())
        } else {
            let msg = answer["data"]["message"]
                .as_str()
                .or(answer["error"]["description"].as_str())
                .unwrap_or("unexpected answer");
            Err(RevokeError::Refused(crate::log_limit::clip(msg.to_string())))
        }
    }

    /// A fresh system-account user (JWT issued now, key kept in memory) allowed only
    /// to send account updates and read their answers.
    async fn connect(&self) -> Result<async_nats::Client, RevokeError> {
        let user = KeyPair::new_user();
        let perms = Permissions {
            pub_allow: vec!["$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE".into()],
            sub_allow: vec!["_INBOX.>".into()],
            allow_responses: false,
        };
        let jwt = issue_user_jwt(&self.system, &user.public_key(), "secmon-manager-sys", &perms, None)?;
        let seed = user.seed().map_err(secmon_pki::JwtError::from)?;
        let mut opts = async_nats::ConnectOptions::with_credentials(&creds_file(&jwt, &seed))
            .map_err(|e| RevokeError::Connect(e.to_string()))?
            .name("secmon-manager-sys")
            .add_root_certificates(self.conn.ca.clone())
            .require_tls(true)
            .connection_timeout(PUSH_TIMEOUT);
        if let Some((cert, key)) = &self.conn.client_cert {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        opts.connect(self.conn.url.as_str()).await.map_err(|e| RevokeError::Connect(e.to_string()))
    }
}

/// Replaces the account's JWT in the `resolver_preload` block of the nats-server
/// config (written by `secmon-manager init`), through a temp file and a rename.
pub fn rewrite_preload(path: &Path, account_pub: &str, jwt: &str) -> Result<(), RevokeError> {
    let io = |source| RevokeError::Config { path: path.to_path_buf(), source };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let key = serde_json::Value::String(account_pub.to_string()).to_string();
    let value = serde_json::Value::String(jwt.to_string()).to_string();
    let mut found = false;
    let mut out = String::with_capacity(text.len() + jwt.len());
    for line in text.lines() {
        if let Some(rest) = line.trim_start().strip_prefix(&key)
            && rest.trim_start().starts_with(':')
        {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!("{indent}{key}: {value}\n"));
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no resolver_preload entry for account {account_pub}"),
        )));
    }
    let tmp = path.with_extension("conf.tmp");
    std::fs::write(&tmp, out).map_err(io)?;
    let mode = std::fs::metadata(path).map_err(io)?.permissions();
    std::fs::set_permissions(&tmp, mode).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_entry_is_replaced_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nats-server.conf");
        std::fs::write(
            &p,
            "listen: \"x\"\nresolver_preload: {\n  \"AAPP\": \"old\"\n  \"ASYS\": \"sys\"\n}\n",
        )
        .unwrap();
        rewrite_preload(&p, "AAPP", "new.jwt").unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        assert!(
            t.contains("  \"AAPP\": \"new.jwt\"\n") && t.contains("\"ASYS\": \"sys\"") && !t.contains("old"),
            "{t}"
        );
        assert!(rewrite_preload(&p, "ANONE", "x").is_err());
    }
}
