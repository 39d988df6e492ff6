//! NATS decentralized authentication (operator mode): operator, account and user JWTs
//! signed with NKeys, and creds files.
//!
//! No maintained Rust crate writes NATS v2 JWTs, so they are encoded here following
//! nats-io/jwt v2: header `{"typ":"JWT","alg":"ed25519-nkey"}`, segments base64url
//! without padding, the signature is Ed25519 by the issuer's NKey over
//! `header.payload`, and `jti` is the unpadded standard base32 of SHA-512/256 over the
//! JSON of the standard claims (aud, exp, iat, iss, name, nbf, sub) with `jti` empty.
//! nats-server does not check `jti`; it is there so tools like `nsc` see familiar ids.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512_256};

/// NATS limit value meaning "unlimited".
pub const NO_LIMIT: i64 = -1;
/// JWT header of NATS v2 JWTs.
pub const JWT_HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;
/// Name of the application account.
pub const SECMON_ACCOUNT: &str = "SECMON";
/// Name of the system account.
pub const SYSTEM_ACCOUNT: &str = "SYS";

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("nkey error: {0}")]
    Nkey(#[from] nkeys::error::Error),
    #[error("{0} is not a valid {1} public key")]
    BadPublicKey(String, &'static str),
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    #[error("JWT signature does not verify against its issuer")]
    BadSignature,
    #[error("invalid subject token {0:?}: must be non-empty, without '.', '*', '>' or whitespace")]
    BadToken(String),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Standard claims, in the field order Go's encoder writes them (so `jti` matches nsc).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct ClaimsData {
    #[serde(rename = "aud", default, skip_serializing_if = "String::is_empty")]
    audience: String,
    #[serde(rename = "exp", default, skip_serializing_if = "is_zero")]
    expires: i64,
    #[serde(rename = "jti", default, skip_serializing_if = "String::is_empty")]
    id: String,
    #[serde(rename = "iat", default, skip_serializing_if = "is_zero")]
    issued_at: i64,
    #[serde(rename = "iss", default, skip_serializing_if = "String::is_empty")]
    issuer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(rename = "nbf", default, skip_serializing_if = "is_zero")]
    not_before: i64,
    #[serde(rename = "sub", default, skip_serializing_if = "String::is_empty")]
    subject: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Serialize)]
struct Claims<'a, T: Serialize> {
    #[serde(flatten)]
    data: &'a ClaimsData,
    nats: &'a T,
}

/// Publish/subscribe allow lists of a user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    pub pub_allow: Vec<String>,
    pub sub_allow: Vec<String>,
    /// Allow one reply to each request received (NATS `resp`), to whatever reply
    /// subject the requester chose, without opening `_INBOX.>` for publishing.
    #[serde(default)]
    pub allow_responses: bool,
}

/// NATS response permission: `max` replies per request within `ttl` (ns; 0 = the
/// server's default, 2 minutes).
#[derive(Debug, Clone, Serialize)]
struct ResponsePermission {
    max: i64,
    ttl: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Permission {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deny: Vec<String>,
}

/// Account limits (nats-io/jwt `OperatorLimits`, flattened). [`AccountLimits::unlimited`]
/// sets every limit to -1: zero means "nothing allowed" to nats-server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLimits {
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
    pub imports: i64,
    pub exports: i64,
    pub wildcards: bool,
    pub conn: i64,
    pub leaf: i64,
    /// JetStream limits; 0 for both storages disables JetStream for the account.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mem_storage: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_storage: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub streams: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consumer: i64,
}

impl AccountLimits {
    /// Everything unlimited; JetStream unlimited too when `jetstream`, else disabled.
    pub fn unlimited(jetstream: bool) -> Self {
        let js = if jetstream { NO_LIMIT } else { 0 };
        Self {
            subs: NO_LIMIT,
            data: NO_LIMIT,
            payload: NO_LIMIT,
            imports: NO_LIMIT,
            exports: NO_LIMIT,
            wildcards: true,
            conn: NO_LIMIT,
            leaf: NO_LIMIT,
            mem_storage: js,
            disk_storage: js,
            streams: js,
            consumer: js,
        }
    }
}

#[derive(Serialize)]
struct OperatorNats<'a> {
    system_account: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

#[derive(Serialize)]
struct AccountNats<'a> {
    limits: &'a AccountLimits,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    revocations: &'a BTreeMap<String, i64>,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

#[derive(Serialize)]
struct UserNats {
    #[serde(rename = "pub")]
    publish: Permission,
    #[serde(rename = "sub")]
    subscribe: Permission,
    #[serde(skip_serializing_if = "Option::is_none")]
    resp: Option<ResponsePermission>,
    // User limits also default to 0 (= nothing) on the server: set them unlimited.
    subs: i64,
    data: i64,
    payload: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

/// What an account JWT says about an account.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    pub name: String,
    pub public_key: String,
    pub limits: AccountLimits,
    /// Revoked user public keys → unix seconds: user JWTs issued at or before that
    /// time are refused (`"*"` revokes every user).
    pub revocations: BTreeMap<String, i64>,
}

impl AccountSpec {
    /// The application account: unlimited, JetStream enabled.
    pub fn secmon(public_key: String) -> Self {
        Self {
            name: SECMON_ACCOUNT.into(),
            public_key,
            limits: AccountLimits::unlimited(true),
            revocations: BTreeMap::new(),
        }
    }

    /// The system account: unlimited, no JetStream.
    pub fn system(public_key: String) -> Self {
        Self {
            name: SYSTEM_ACCOUNT.into(),
            public_key,
            limits: AccountLimits::unlimited(false),
            revocations: BTreeMap::new(),
        }
    }

    /// Revokes every JWT of `user_public_key` issued up to now.
    pub fn revoke(&mut self, user_public_key: &str) {
        self.revocations.insert(user_public_key.to_string(), unix_now());
    }
}

/// The key pairs of a deployment. Debug shows public keys only.
pub struct NatsIdentities {
    pub operator: KeyPair,
    pub account: KeyPair,
    pub system: KeyPair,
}

impl std::fmt::Debug for NatsIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsIdentities")
            .field("operator", &self.operator.public_key())
            .field("account", &self.account.public_key())
            .field("system", &self.system.public_key())
            .finish()
    }
}

impl NatsIdentities {
    /// Fresh operator, SECMON account and system account keys.
    pub fn generate() -> Self {
        let ids = Self {
            operator: KeyPair::new_operator(),
            account: KeyPair::new_account(),
            system: KeyPair::new_account(),
        };
        tracing::info!(
            operator = %ids.operator.public_key(),
            account = %ids.account.public_key(),
            system = %ids.system.public_key(),
            "generated NATS operator and account keys"
        );
        ids
    }

    /// Loads them back from their seeds.
    pub fn from_seeds(operator: &str, account: &str, system: &str) -> Result<Self, JwtError> {
        let ids = Self {
            operator: KeyPair::from_seed(operator)?,
            account: KeyPair::from_seed(account)?,
            system: KeyPair::from_seed(system)?,
        };
        check_prefix(&ids.operator.public_key(), 'O', "operator")?;
        check_prefix(&ids.account.public_key(), 'A', "account")?;
        check_prefix(&ids.system.public_key(), 'A', "account")?;
        Ok(ids)
    }

    pub fn operator_jwt(&self, name: &str) -> Result<String, JwtError> {
        operator_jwt(&self.operator, name, &self.system.public_key())
    }

    /// Account JWTs of SECMON (with `revocations`) and SYS, as `(public key, jwt)`.
    pub fn account_jwts(
        &self,
        revocations: &BTreeMap<String, i64>,
    ) -> Result<Vec<(String, String)>, JwtError> {
        let mut secmon = AccountSpec::secmon(self.account.public_key());
        secmon.revocations = revocations.clone();
        let sys = AccountSpec::system(self.system.public_key());
        Ok(vec![
            (secmon.public_key.clone(), account_jwt(&self.operator, &secmon)?),
            (sys.public_key.clone(), account_jwt(&self.operator, &sys)?),
        ])
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn check_prefix(key: &str, prefix: char, what: &'static str) -> Result<(), JwtError> {
    if key.starts_with(prefix) && KeyPair::from_public_key(key).is_ok() {
        Ok(())
    } else {
        Err(JwtError::BadPublicKey(key.to_string(), what))
    }
}

/// `jti` as nats-io/jwt computes it: base32 (no padding) of SHA-512/256 of the JSON of
/// the standard claims with `jti` empty.
fn compute_jti(data: &ClaimsData) -> Result<String, JwtError> {
    let mut d = data.clone();
    d.id.clear();
    let json = serde_json::to_vec(&d)?;
    Ok(BASE32_NOPAD.encode(&Sha512_256::digest(json)))
}

fn encode<T: Serialize>(issuer: &KeyPair, mut data: ClaimsData, nats: &T) -> Result<String, JwtError> {
    data.issuer = issuer.public_key();
    data.issued_at = unix_now();
    data.id = compute_jti(&data)?;
    let payload = serde_json::to_vec(&Claims { data: &data, nats })?;
    let to_sign =
        format!("{}.{}", BASE64URL_NOPAD.encode(JWT_HEADER.as_bytes()), BASE64URL_NOPAD.encode(&payload));
    let sig = issuer.sign(to_sign.as_bytes())?;
    Ok(format!("{to_sign}.{}", BASE64URL_NOPAD.encode(&sig)))
}

/// Self-signed operator JWT naming the system account.
pub fn operator_jwt(operator_kp: &KeyPair, name: &str, system_account_pub: &str) -> Result<String, JwtError> {
    check_prefix(&operator_kp.public_key(), 'O', "operator")?;
    check_prefix(system_account_pub, 'A', "account")?;
    let data = ClaimsData { name: name.to_string(), subject: operator_kp.public_key(), ..Default::default() };
    encode(
        operator_kp,
        data,
        &OperatorNats { system_account: system_account_pub, kind: "operator", version: 2 },
    )
}

/// Account JWT signed by the operator.
pub fn account_jwt(operator_kp: &KeyPair, spec: &AccountSpec) -> Result<String, JwtError> {
    check_prefix(&operator_kp.public_key(), 'O', "operator")?;
    check_prefix(&spec.public_key, 'A', "account")?;
    for k in spec.revocations.keys().filter(|k| k.as_str() != "*") {
        check_prefix(k, 'U', "user")?;
    }
    let data = ClaimsData { name: spec.name.clone(), subject: spec.public_key.clone(), ..Default::default() };
    let nats =
        AccountNats { limits: &spec.limits, revocations: &spec.revocations, kind: "account", version: 2 };
    encode(operator_kp, data, &nats)
}

/// User JWT signed by the account key itself (so no `issuer_account`), with the given
/// allow lists and optional expiry.
pub fn issue_user_jwt(
    account_kp: &KeyPair,
    user_public_key: &str,
    name: &str,
    permissions: &Permissions,
    expires: Option<SystemTime>,
) -> Result<String, JwtError> {
    check_prefix(&account_kp.public_key(), 'A', "account")?;
    check_prefix(user_public_key, 'U', "user")?;
    let expires = expires.map(|t| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(1));
    let data = ClaimsData {
        name: name.to_string(),
        subject: user_public_key.to_string(),
        expires: expires.unwrap_or(0),
        ..Default::default()
    };
    let nats = UserNats {
        publish: Permission { allow: permissions.pub_allow.clone(), deny: vec![] },
        subscribe: Permission { allow: permissions.sub_allow.clone(), deny: vec![] },
        resp: permissions.allow_responses.then_some(ResponsePermission { max: 1, ttl: 0 }),
        subs: NO_LIMIT,
        data: NO_LIMIT,
        payload: NO_LIMIT,
        kind: "user",
        version: 2,
    };
    let jwt = encode(account_kp, data, &nats)?;
    tracing::info!(user = user_public_key, name, "issued NATS user JWT");
    Ok(jwt)
}

/// A creds file in the `nsc` format (JWT block, then seed block). It holds the seed:
/// write it with [`crate::write_secret`].
pub fn creds_file(user_jwt: &str, user_seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

fn check_token(t: &str) -> Result<(), JwtError> {
    if t.is_empty() || t.contains(['.', '*', '>']) || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(JwtError::BadToken(t.to_string()));
    }
    Ok(())
}

/// Permissions of an agent: publish only under `<prefix>.agent.<id>.>`, subscribe only to
/// its command subject `<prefix>.cmd.<id>` and its own inbox `_INBOX_<id>.>` (the agent
/// connects with that custom inbox prefix), plus one reply to each request it receives
/// (the manager's commands). A wildcard or dot in `agent_id` would widen these, so it
/// is refused.
pub fn agent_permissions(agent_id: &str, prefix: &str) -> Result<Permissions, JwtError> {
    check_token(agent_id)?;
    for t in prefix.split('.') {
        check_token(t)?;
    }
    Ok(Permissions {
        pub_allow: vec![format!("{prefix}.agent.{agent_id}.>")],
        sub_allow: vec![format!("{prefix}.cmd.{agent_id}"), format!("_INBOX_{agent_id}.>")],
        allow_responses: true,
    })
}

/// Splits a JWT, checks its header, verifies its signature against its `iss` NKey and
/// returns the claims. Does not check expiry or who the issuer is: the caller trusts or
/// not the returned `iss`.
pub fn decode_verified(jwt: &str) -> Result<serde_json::Value, JwtError> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("expected three dot-separated segments"));
    };
    let header: serde_json::Value = serde_json::from_slice(
        &BASE64URL_NOPAD.decode(h.as_bytes()).map_err(|_| JwtError::Malformed("header"))?,
    )?;
    if header["alg"] != "ed25519-nkey" || header["typ"] != "JWT" {
        return Err(JwtError::Malformed("unexpected header"));
    }
    let claims: serde_json::Value = serde_json::from_slice(
        &BASE64URL_NOPAD.decode(p.as_bytes()).map_err(|_| JwtError::Malformed("payload"))?,
    )?;
    let sig = BASE64URL_NOPAD.decode(s.as_bytes()).map_err(|_| JwtError::Malformed("signature"))?;
    let iss = claims["iss"].as_str().ok_or(JwtError::Malformed("no iss"))?;
    let kp = KeyPair::from_public_key(iss)?;
    kp.verify(format!("{h}.{p}").as_bytes(), &sig).map_err(|_| JwtError::BadSignature)?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_user() -> (KeyPair, KeyPair, String) {
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let perms = agent_permissions("a1", "secmon").unwrap();
        let jwt = issue_user_jwt(&account, &user.public_key(), "agent a1", &perms, None).unwrap();
        (account, user, jwt)
    }

    #[test]
    fn user_jwt_round_trips_and_signature_verifies() {
        let (account, user, jwt) = sample_user();
        let header = BASE64URL_NOPAD.decode(jwt.split('.').next().unwrap().as_bytes()).unwrap();
        assert_eq!(header, JWT_HEADER.as_bytes());
        assert!(!jwt.contains('='), "base64url must be unpadded");
        let c = decode_verified(&jwt).unwrap();
        assert_eq!(c["iss"], account.public_key());
        assert_eq!(c["sub"], user.public_key());
        assert_eq!(c["name"], "agent a1");
        assert_eq!(c["nats"]["type"], "user");
        assert_eq!(c["nats"]["version"], 2);
        assert_eq!(c["nats"]["pub"]["allow"], serde_json::json!(["secmon.agent.a1.>"]));
        assert_eq!(c["nats"]["sub"]["allow"], serde_json::json!(["secmon.cmd.a1", "_INBOX_a1.>"]));
        for k in ["subs", "data", "payload"] {
            assert_eq!(c["nats"][k], -1, "user limit {k}");
        }
        assert!(c.get("exp").is_none());
        assert!((c["iat"].as_i64().unwrap() - unix_now()).abs() < 5);

        // Any change to the payload breaks the signature.
        let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
        let forged = String::from_utf8(BASE64URL_NOPAD.decode(parts[1].as_bytes()).unwrap())
            .unwrap()
            .replace("secmon.agent.a1.>", "secmon.agent.*.>");
        parts[1] = BASE64URL_NOPAD.encode(forged.as_bytes());
        assert!(matches!(decode_verified(&parts.join(".")), Err(JwtError::BadSignature)));
        assert!(matches!(decode_verified("a.b"), Err(JwtError::Malformed(_))));
    }

    #[test]
    fn expiry_is_written_in_unix_seconds() {
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let at = UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000);
        let jwt =
            issue_user_jwt(&account, &user.public_key(), "u", &Permissions::default(), Some(at)).unwrap();
        assert_eq!(decode_verified(&jwt).unwrap()["exp"], 2_000_000_000i64);
    }

    #[test]
    fn jti_is_base32_of_sha512_256_of_standard_claims_without_jti() {
        let (_, _, jwt) = sample_user();
        let c = decode_verified(&jwt).unwrap();
        let jti = c["jti"].as_str().unwrap();
        // 32 bytes → 52 unpadded base32 characters, upper-case alphabet.
        assert_eq!(jti.len(), 52);
        assert!(jti.chars().all(|ch| ch.is_ascii_uppercase() || ('2'..='7').contains(&ch)));
        // Recompute from the standard claims as nats-io/jwt does (Go field order).
        let std_claims = format!(
            r#"{{"iat":{},"iss":"{}","name":"{}","sub":"{}"}}"#,
            c["iat"],
            c["iss"].as_str().unwrap(),
            c["name"].as_str().unwrap(),
            c["sub"].as_str().unwrap()
        );
        assert_eq!(jti, BASE32_NOPAD.encode(&Sha512_256::digest(std_claims.as_bytes())));
    }

    #[test]
    fn account_limits_are_unlimited_and_jetstream_only_for_secmon() {
        let ids = NatsIdentities::generate();
        let mut rev = BTreeMap::new();
        let revoked = KeyPair::new_user().public_key();
        rev.insert(revoked.clone(), 1_700_000_000);
        let accounts = ids.account_jwts(&rev).unwrap();
        let secmon = decode_verified(&accounts[0].1).unwrap();
        let sys = decode_verified(&accounts[1].1).unwrap();
        assert_eq!(accounts[0].0, ids.account.public_key());
        assert_eq!(accounts[1].0, ids.system.public_key());
        for c in [&secmon, &sys] {
            assert_eq!(c["iss"], ids.operator.public_key());
            assert_eq!(c["nats"]["type"], "account");
            for k in ["subs", "data", "payload", "imports", "exports", "conn", "leaf"] {
                assert_eq!(c["nats"]["limits"][k], -1, "{k} in {c}");
            }
        }
        assert_eq!(secmon["name"], "SECMON");
        for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
            assert_eq!(secmon["nats"]["limits"][k], -1, "{k}");
            assert!(sys["nats"]["limits"].get(k).is_none(), "SYS must not get JetStream");
        }
        assert_eq!(secmon["nats"]["revocations"][&revoked], 1_700_000_000i64);
        assert!(sys["nats"].get("revocations").is_none());

        let op = decode_verified(&ids.operator_jwt("secmon").unwrap()).unwrap();
        assert_eq!(op["iss"], op["sub"]);
        assert_eq!(op["nats"]["type"], "operator");
        assert_eq!(op["nats"]["system_account"], ids.system.public_key());
    }

    #[test]
    fn keys_of_the_wrong_kind_are_refused() {
        let ids = NatsIdentities::generate();
        let user = KeyPair::new_user().public_key();
        // An account key where a user key belongs, and an operator signing a user.
        assert!(
            issue_user_jwt(&ids.account, &ids.system.public_key(), "x", &Permissions::default(), None)
                .is_err()
        );
        assert!(issue_user_jwt(&ids.operator, &user, "x", &Permissions::default(), None).is_err());
        assert!(operator_jwt(&ids.account, "x", &ids.system.public_key()).is_err());
        let mut spec = AccountSpec::secmon(ids.account.public_key());
        spec.revocations.insert("not-a-key".into(), 1);
        assert!(account_jwt(&ids.operator, &spec).is_err());
        let seeds = |kp: &KeyPair| kp.seed().unwrap();
        let again =
            NatsIdentities::from_seeds(&seeds(&ids.operator), &seeds(&ids.account), &seeds(&ids.system))
                .unwrap();
        assert_eq!(again.account.public_key(), ids.account.public_key());
        assert!(
            NatsIdentities::from_seeds(&seeds(&ids.account), &seeds(&ids.account), &seeds(&ids.system))
                .is_err()
        );
        let dbg = format!("{ids:?}");
        assert!(!dbg.contains(&seeds(&ids.operator)) && dbg.contains(&ids.operator.public_key()));
    }

    #[test]
    fn agent_ids_that_would_widen_permissions_are_refused() {
        for bad in ["", "a.b", "*", ">", "a b", "x\n", "a>"] {
            assert!(agent_permissions(bad, "secmon").is_err(), "{bad:?} accepted");
        }
        assert!(agent_permissions("a1", "sec.*").is_err());
        let p = agent_permissions("0193-abc", "org.secmon").unwrap();
        assert_eq!(p.pub_allow, ["org.secmon.agent.0193-abc.>"]);
        assert_eq!(p.sub_allow, ["org.secmon.cmd.0193-abc", "_INBOX_0193-abc.>"]);
    }

    #[test]
    fn creds_file_has_the_nsc_blocks() {
        let (_, user, jwt) = sample_user();
        let seed = user.seed().unwrap();
        let creds = creds_file(&jwt, &seed);
        let lines: Vec<&str> = creds.lines().collect();
        assert_eq!(lines[0], "-----BEGIN NATS USER JWT-----");
        assert_eq!(lines[1], jwt);
        assert_eq!(lines[2], "------END NATS USER JWT------");
        let i = lines.iter().position(|l| *l == "-----BEGIN USER NKEY SEED-----").unwrap();
        assert_eq!(lines[i + 1], seed);
        assert_eq!(lines[i + 2], "------END USER NKEY SEED------");
        assert!(creds.ends_with('\n'));
    }
}
