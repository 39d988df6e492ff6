//! `secmon-manager init`: generates the secure deployment material in one directory —
//! the CA and the NATS/API server certificate, the NATS operator, SECMON and system
//! account identities with their JWTs, the manager's NATS user (creds file) and an
//! operator-mode nats-server configuration (TLS on, JetStream on) — and the first API
//! admin (`admin`, generated password) in `<data_dir>/security.db`.
//!
//! With `--mutual-tls` the nats-server configuration requires client certificates
//! signed by the CA (`verify: true`), and the manager gets its own client certificate
//! ([`MANAGER_CLIENT_CERT`]); agents get theirs at enrollment, from a CSR. The
//! configuration is the record of the choice: [`mutual_tls_required`] reads it back.
//!
//! Invariant: seeds and private keys are only ever written with
//! [`secmon_pki::write_secret`] (0600) and never appear in the summary, a log line or
//! Debug output. The admin's password appears once, in the summary, and nowhere else. Everything is generated in memory before the first file is written, so
//! a generation failure leaves the directory untouched.

use std::fmt::Write as _;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nkeys::KeyPair;
use secmon_pki::{
    JwtError, NatsIdentities, Permissions, PkiError, TlsFiles, ca_fingerprint_sha256, check_secret_mode,
    creds_file, generate_ca, issue_user_jwt, nats_server_config, write_secret,
};

/// CA certificate (public; agents pin its fingerprint).
pub const CA_CERT: &str = "ca.pem";
/// CA private key.
pub const CA_KEY: &str = "ca-key.pem";
/// Server certificate for NATS and the API.
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";
pub const OPERATOR_SEED: &str = "operator.seed";
pub const ACCOUNT_SEED: &str = "account.seed";
pub const SYSTEM_SEED: &str = "system.seed";
pub const OPERATOR_JWT: &str = "operator.jwt";
pub const ACCOUNT_JWT: &str = "account.jwt";
pub const SYSTEM_JWT: &str = "system.jwt";
/// The manager's NATS user: JWT + seed, allowed every subject of the SECMON account.
pub const MANAGER_CREDS: &str = "manager.creds";
/// The manager's TLS client certificate for a nats-server that requires one (mutual TLS).
pub const MANAGER_CLIENT_CERT: &str = "manager-client.pem";
pub const MANAGER_CLIENT_KEY: &str = "manager-client-key.pem";
/// Common name of the manager's client certificate.
pub const MANAGER_CLIENT_NAME: &str = "secmon-manager";
pub const NATS_CONFIG: &str = "nats-server.conf";
pub const FINGERPRINT: &str = "fingerprint.txt";
/// JetStream store directory, inside DIR so one deployment is one directory.
pub const JETSTREAM_DIR: &str = "jetstream";

/// Files holding a private key or seed: written 0600, refused when looser.
pub const SECRET_FILES: &[&str] =
    &[CA_KEY, SERVER_KEY, OPERATOR_SEED, ACCOUNT_SEED, SYSTEM_SEED, MANAGER_CREDS];
/// Public files (certificates, JWTs, config, fingerprint), written 0644.
pub const PUBLIC_FILES: &[&str] =
    &[CA_CERT, SERVER_CERT, OPERATOR_JWT, ACCOUNT_JWT, SYSTEM_JWT, NATS_CONFIG, FINGERPRINT];
/// Secret files written only with mutual TLS (0600, refused when looser).
pub const MUTUAL_TLS_SECRET_FILES: &[&str] = &[MANAGER_CLIENT_KEY];
/// Public files written only with mutual TLS (0644).
pub const MUTUAL_TLS_PUBLIC_FILES: &[&str] = &[MANAGER_CLIENT_CERT];

/// Name of the operator in its JWT.
const OPERATOR_NAME: &str = "secmon";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{} is already initialised (it holds {file}); refusing to overwrite it. \
         Re-run with --force to replace the CA and every NATS key (all agents will have to enroll again)",
        dir.display()
    )]
    AlreadyInitialised { dir: PathBuf, file: String },
    #[error("invalid --nats-listen {0:?}: expected HOST:PORT (e.g. 0.0.0.0:4222)")]
    BadListen(String),
    #[error("invalid --name {0:?}: must be a non-empty DNS name or IP address without whitespace")]
    BadName(String),
    #[error("no names for the server certificate (give --name)")]
    NoNames,
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("NATS identities: {0}")]
    Jwt(#[from] JwtError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot create the first admin in {}: {reason}", db.display())]
    Admin { db: PathBuf, reason: String },
    #[error(
        "{} requires NATS client certificates (mutual TLS): set [nats] tls_cert = \"{}\" and \
         tls_key = \"{}\"",
        conf.display(), cert.display(), key.display()
    )]
    ClientCertMissing { conf: PathBuf, cert: PathBuf, key: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |source| InitError::Io { path: path.to_path_buf(), source }
}

/// What `init` generates and where.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Output directory (created 0700 when missing).
    pub dir: PathBuf,
    /// DNS names and IP addresses of the server certificate; the first is its CN.
    pub names: Vec<String>,
    /// `HOST:PORT` nats-server listens on.
    pub nats_listen: String,
    /// Overwrite an initialised directory.
    pub force: bool,
    /// Where the first admin goes (`<data_dir>/security.db`) [default: the parent of
    /// `dir`, as in the default layout `<data_dir>/pki`].
    pub data_dir: Option<PathBuf>,
    /// Mutual TLS: nats-server requires a client certificate signed by the CA, and the
    /// manager's own is issued ([`MANAGER_CLIENT_CERT`], [`MANAGER_CLIENT_KEY`]).
    pub mutual_tls: bool,
}

/// What happened to the first admin user.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminInit {
    /// Created as [`crate::security::auth::users::FIRST_ADMIN`] with this generated
    /// password, shown once by [`InitOutput::summary`].
    Created { db: PathBuf, password: String },
    /// The database already had users: none was created or reset.
    Exists { db: PathBuf },
}

impl std::fmt::Debug for AdminInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Created { db, .. } => f.debug_struct("Created").field("db", db).finish_non_exhaustive(),
            Self::Exists { db } => f.debug_struct("Exists").field("db", db).finish(),
        }
    }
}

/// What `init` wrote. Its Debug holds no secret; [`InitOutput::summary`] holds one:
/// the first admin's password, meant to be shown once.
#[derive(Debug, Clone)]
pub struct InitOutput {
    /// The output directory, absolute.
    pub dir: PathBuf,
    /// Every file written (absolute paths), secrets included.
    pub files: Vec<PathBuf>,
    /// Lowercase hex SHA-256 of the CA certificate's DER (what enrollment pins).
    pub ca_fingerprint: String,
    pub operator_public_key: String,
    pub account_public_key: String,
    pub system_public_key: String,
    pub names: Vec<String>,
    pub nats_listen: String,
    pub admin: AdminInit,
    /// nats-server requires client certificates (see [`InitOptions::mutual_tls`]).
    pub mutual_tls: bool,
}

impl InitOutput {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Human-readable report: files, fingerprint, public keys, the first admin and next
    /// steps. No seed, no private key; the admin password when it was just generated.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(s, "secmon-manager: initialised {}", self.dir.display());
        let _ = writeln!(s);
        let _ = writeln!(s, "Files (secrets are 0600):");
        for f in &self.files {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let secret = SECRET_FILES.contains(&name) || MUTUAL_TLS_SECRET_FILES.contains(&name);
            let tag = if secret { "  [secret]" } else { "" };
            let _ = writeln!(s, "  {}{tag}", f.display());
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "CA SHA-256 fingerprint: {}", self.ca_fingerprint);
        let _ = writeln!(s, "Server certificate names: {}", self.names.join(", "));
        let _ = writeln!(s, "NATS operator: {}", self.operator_public_key);
        let _ = writeln!(s, "NATS account SECMON: {}", self.account_public_key);
        let _ = writeln!(s, "NATS system account: {}", self.system_public_key);
        if self.mutual_tls {
            let _ = writeln!(
                s,
                "Mutual TLS: on. nats-server requires a client certificate signed by this CA; \
                 agents get theirs at enrollment."
            );
        } else {
            let _ = writeln!(s, "Mutual TLS: off (NATS clients authenticate with their creds over TLS).");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "Start NATS (operator mode, TLS, JetStream) on {}:", self.nats_listen);
        let _ = writeln!(s, "  nats-server -c {}", self.path(NATS_CONFIG).display());
        let _ = writeln!(s);
        let _ = writeln!(s, "Manager configuration ([nats] section):");
        let _ = writeln!(s, "  url = \"tls://{}\"", self.client_address());
        let _ = writeln!(s, "  credentials_file = \"{}\"", self.path(MANAGER_CREDS).display());
        let _ = writeln!(s, "  tls_ca = \"{}\"", self.path(CA_CERT).display());
        if self.mutual_tls {
            let _ = writeln!(s, "  tls_cert = \"{}\"", self.path(MANAGER_CLIENT_CERT).display());
            let _ = writeln!(s, "  tls_key = \"{}\"", self.path(MANAGER_CLIENT_KEY).display());
        }
        let _ = writeln!(s);
        match &self.admin {
            AdminInit::Created { db, password } => {
                let _ = writeln!(s, "API users ({}):", db.display());
                let _ = writeln!(s, "Admin user: {}", crate::security::auth::users::FIRST_ADMIN);
                let _ = writeln!(s, "Admin password (shown once): {password}");
                let _ =
                    writeln!(s, "  Store it now; `secmon-manager user reset-password admin` sets a new one.");
            }
            AdminInit::Exists { db } => {
                let _ = writeln!(
                    s,
                    "API users: {} already has users; no admin was created or reset \
                     (`secmon-manager user reset-password NAME` sets a new password).",
                    db.display()
                );
            }
        }
        let _ = writeln!(s);
        let _ =
            writeln!(s, "Manager configuration ([security] and [api] sections): [security] enabled = true");
        s
    }

    /// Where a client reaches NATS: the listen address, with a wildcard host replaced by
    /// the certificate's first name (a client must use a name the certificate holds).
    fn client_address(&self) -> String {
        let (host, port) = self.nats_listen.rsplit_once(':').unwrap_or((&self.nats_listen, "4222"));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if matches!(host, "" | "0.0.0.0" | "::") {
            self.names.first().map(String::as_str).unwrap_or("localhost")
        } else {
            host
        };
        if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
    }
}

/// Default server certificate names: this machine's hostname, `localhost`, `127.0.0.1`
/// and `::1`.
pub fn default_names() -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(h) = hostname::get()
        && let Some(h) = h.to_str()
        && !h.is_empty()
        && h != "localhost"
    {
        names.push(h.to_string());
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    names
}

fn check_listen(listen: &str) -> Result<(), InitError> {
    let bad = || InitError::BadListen(listen.to_string());
    let (host, port) = listen.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
        return Err(bad());
    }
    Ok(())
}

fn check_names(names: &[String]) -> Result<Vec<String>, InitError> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InitError::BadName(n.clone()));
        }
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    if out.is_empty() {
        return Err(InitError::NoNames);
    }
    Ok(out)
}

/// The first generated file found in `dir`, if any: its presence means `dir` holds a
/// deployment (maybe a half-written one) that agents may already trust.
fn existing_file(dir: &Path) -> Option<&'static str> {
    SECRET_FILES
        .iter()
        .chain(PUBLIC_FILES)
        .chain(MUTUAL_TLS_SECRET_FILES)
        .chain(MUTUAL_TLS_PUBLIC_FILES)
        .copied()
        .find(|f| dir.join(f).exists())
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), InitError> {
    std::fs::write(path, bytes).map_err(io_err(path))?;
    // Independent of the umask, and resets a file an older run left differently.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io_err(path))
}

fn seed(kp: &KeyPair) -> Result<String, InitError> {
    Ok(kp.seed().map_err(JwtError::from)?)
}

/// Generates the deployment material into `opts.dir`. Refuses an initialised directory
/// unless `opts.force`.
pub fn init(opts: &InitOptions) -> Result<InitOutput, InitError> {
    check_listen(&opts.nats_listen)?;
    let names = check_names(&opts.names)?;
    if !opts.force
        && let Some(file) = existing_file(&opts.dir)
    {
        return Err(InitError::AlreadyInitialised { dir: opts.dir.clone(), file: file.to_string() });
    }

    // Generate everything first: nothing is written if any step fails.
    let ca = generate_ca("secmon CA")?;
    let server = ca.issue_server(&names)?;
    let ids = NatsIdentities::generate();
    let operator_jwt = ids.operator_jwt(OPERATOR_NAME)?;
    let accounts = ids.account_jwts(&Default::default())?;
    let account_jwt = lookup(&accounts, &ids.account.public_key())?;
    let system_jwt = lookup(&accounts, &ids.system.public_key())?;
    let manager = KeyPair::new_user();
    let all = Permissions { pub_allow: vec![">".into()], sub_allow: vec![">".into()], ..Default::default() };
    let manager_jwt = issue_user_jwt(&ids.account, &manager.public_key(), "secmon-manager", &all, None)?;
    let manager_creds = creds_file(&manager_jwt, &seed(&manager)?);
    let fingerprint = ca_fingerprint_sha256(ca.cert_pem())?;
    let client = if opts.mutual_tls { Some(ca.issue_client(MANAGER_CLIENT_NAME)?) } else { None };

    if !opts.dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.dir)
            .map_err(io_err(&opts.dir))?;
    }
    // Absolute, because nats-server resolves the config's paths from its own cwd.
    let dir = std::fs::canonicalize(&opts.dir).map_err(io_err(&opts.dir))?;
    let p = |name: &str| dir.join(name);
    let tls = TlsFiles { cert: p(SERVER_CERT), key: p(SERVER_KEY), ca: p(CA_CERT), verify: opts.mutual_tls };
    let conf = nats_server_config(
        &opts.nats_listen,
        &operator_jwt,
        &ids.system.public_key(),
        &accounts,
        Some(&tls),
        Some(&p(JETSTREAM_DIR)),
    );

    let mut secrets: Vec<(&str, String)> = vec![
        (CA_KEY, ca.key_pem().to_string()),
        (SERVER_KEY, server.key_pem.clone()),
        (OPERATOR_SEED, seed(&ids.operator)?),
        (ACCOUNT_SEED, seed(&ids.account)?),
        (SYSTEM_SEED, seed(&ids.system)?),
        (MANAGER_CREDS, manager_creds),
    ];
    let mut public: Vec<(&str, String)> = vec![
        (CA_CERT, ca.cert_pem().to_string()),
        (SERVER_CERT, server.cert_pem.clone()),
        (OPERATOR_JWT, format!("{operator_jwt}\n")),
        (ACCOUNT_JWT, format!("{account_jwt}\n")),
        (SYSTEM_JWT, format!("{system_jwt}\n")),
        (NATS_CONFIG, conf),
        (FINGERPRINT, format!("{fingerprint}\n")),
    ];
    if let Some(c) = &client {
        secrets.push((MANAGER_CLIENT_KEY, c.key_pem.clone()));
        public.push((MANAGER_CLIENT_CERT, c.cert_pem.clone()));
    }
    let mut files = Vec::new();
    for (name, bytes) in &secrets {
        write_secret(&p(name), bytes.as_bytes())?;
        files.push(p(name));
    }
    for (name, bytes) in &public {
        write_public(&p(name), bytes.as_bytes())?;
        files.push(p(name));
    }
    files.sort();
    let admin = first_admin(opts.data_dir.as_deref().or(dir.parent()).unwrap_or(&dir))?;
    tracing::info!(
        dir = %dir.display(),
        fingerprint = %fingerprint,
        mutual_tls = opts.mutual_tls,
        "initialised the secure deployment"
    );
    Ok(InitOutput {
        dir,
        files,
        ca_fingerprint: fingerprint,
        operator_public_key: ids.operator.public_key(),
        account_public_key: ids.account.public_key(),
        system_public_key: ids.system.public_key(),
        names,
        nats_listen: opts.nats_listen.clone(),
        admin,
        mutual_tls: opts.mutual_tls,
    })
}

/// Creates the first admin in `<data_dir>/security.db` unless it has users.
fn first_admin(data_dir: &Path) -> Result<AdminInit, InitError> {
    let db_path = data_dir.join(crate::security::db::SECURITY_DB);
    let err = |reason: String| InitError::Admin { db: db_path.clone(), reason };
    let db = crate::security::SecurityDb::open(data_dir).map_err(|e| err(e.to_string()))?;
    match crate::security::auth::users::create_first_admin(&db).map_err(|e| err(e.to_string()))? {
        Some(password) => Ok(AdminInit::Created { db: db_path, password }),
        None => Ok(AdminInit::Exists { db: db_path }),
    }
}

fn lookup(accounts: &[(String, String)], public_key: &str) -> Result<String, InitError> {
    accounts
        .iter()
        .find(|(k, _)| k == public_key)
        .map(|(_, jwt)| jwt.clone())
        .ok_or(InitError::Jwt(JwtError::Malformed("account JWT missing")))
}

/// Whether the deployment in `pki_dir` requires NATS client certificates: its
/// nats-server configuration (written by [`init`], the file nats-server runs with) has
/// `verify: true` in its TLS block. A missing or unreadable file means no.
pub fn mutual_tls_required(pki_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(pki_dir.join(NATS_CONFIG)) else { return false };
    text.lines().any(|l| {
        let l = l.trim();
        let Some(rest) = l.strip_prefix("verify") else { return false };
        let rest = rest.trim_start();
        let value = rest.strip_prefix(':').or_else(|| rest.strip_prefix('=')).map(str::trim);
        matches!(value, Some("true" | "\"true\""))
    })
}

/// With mutual TLS on in `pki_dir`, the manager's NATS connections need a client
/// certificate: refuses a `[nats]` without `tls_cert` and `tls_key`, naming the files
/// `init` wrote for it.
pub fn check_manager_client_cert(
    pki_dir: &Path,
    tls_cert: Option<&Path>,
    tls_key: Option<&Path>,
) -> Result<(), InitError> {
    if mutual_tls_required(pki_dir) && (tls_cert.is_none() || tls_key.is_none()) {
        return Err(InitError::ClientCertMissing {
            conf: pki_dir.join(NATS_CONFIG),
            cert: pki_dir.join(MANAGER_CLIENT_CERT),
            key: pki_dir.join(MANAGER_CLIENT_KEY),
        });
    }
    Ok(())
}

/// Refuses (with the `chmod 600` hint) the first secret file in `dir` that group or
/// others can read or write. Missing files are skipped: a host may hold only some.
pub fn check_secrets(dir: &Path) -> Result<(), InitError> {
    for name in SECRET_FILES.iter().chain(MUTUAL_TLS_SECRET_FILES) {
        let path = dir.join(name);
        if path.exists() {
            check_secret_mode(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_and_names_are_validated() {
        for ok in ["0.0.0.0:4222", "127.0.0.1:1", "[::]:4222", "nats.example:4222"] {
            check_listen(ok).unwrap();
        }
        for bad in ["4222", "0.0.0.0", "host:99999", ":4222", "a b:1", "x\":1"] {
            assert!(matches!(check_listen(bad), Err(InitError::BadListen(_))), "{bad:?} accepted");
        }
        assert!(matches!(check_names(&[]), Err(InitError::NoNames)));
        assert!(matches!(check_names(&["".into()]), Err(InitError::BadName(_))));
        assert!(matches!(check_names(&["a b".into()]), Err(InitError::BadName(_))));
        let n = check_names(&["localhost".into(), "::1".into(), "localhost".into()]).unwrap();
        assert_eq!(n, ["localhost", "::1"]);
        let d = default_names();
        assert!(d.ends_with(&["localhost".into(), "127.0.0.1".into(), "::1".into()]), "{d:?}");
    }

    #[test]
    fn mutual_tls_is_read_from_the_nats_config() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!mutual_tls_required(tmp.path()), "no config");
        for (text, want) in [
            ("tls {\n  cert_file: \"a\"\n  verify: true\n}\n", true),
            ("tls {\n  verify = true\n}\n", true),
            ("tls {\n  cert_file: \"a\"\n}\n", false),
            ("tls {\n  verify: false\n}\n", false),
            ("tls {\n  verify_and_map: true\n}\n", false),
        ] {
            std::fs::write(tmp.path().join(NATS_CONFIG), text).unwrap();
            assert_eq!(mutual_tls_required(tmp.path()), want, "{text}");
        }
    }

    #[test]
    fn client_address_replaces_wildcard_hosts() {
        let out = |listen: &str, names: &[&str]| InitOutput {
            dir: "/d".into(),
            files: vec![],
            ca_fingerprint: String::new(),
            operator_public_key: String::new(),
            account_public_key: String::new(),
            system_public_key: String::new(),
            names: names.iter().map(|s| s.to_string()).collect(),
            nats_listen: listen.into(),
            admin: AdminInit::Exists { db: "/d/security.db".into() },
            mutual_tls: false,
        };
        assert_eq!(out("0.0.0.0:4222", &["mgr.example"]).client_address(), "mgr.example:4222");
        assert_eq!(out("[::]:4222", &["::1"]).client_address(), "[::1]:4222");
        assert_eq!(out("127.0.0.1:5000", &["x"]).client_address(), "127.0.0.1:5000");
    }
}
