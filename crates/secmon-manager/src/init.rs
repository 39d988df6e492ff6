//! `secmon-manager init`: generates the secure deployment material in one directory —
//! the CA and the NATS/API server certificate, the NATS operator, SECMON and system
//! account identities with their JWTs, the manager's NATS user (creds file) and an
//! operator-mode nats-server configuration (TLS on, JetStream on).
//!
//! Invariant: seeds and private keys are only ever written with
//! [`secmon_pki::write_secret`] (0600) and never appear in the summary, a log line or
//! Debug output. Everything is generated in memory before the first file is written, so
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
}

/// What `init` wrote. Holds no secret, so Debug and [`InitOutput::summary`] are safe to
/// print.
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
}

impl InitOutput {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Human-readable report: files, fingerprint, public keys and next steps. No seed,
    /// no private key.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(s, "secmon-manager: initialised {}", self.dir.display());
        let _ = writeln!(s);
        let _ = writeln!(s, "Files (secrets are 0600):");
        for f in &self.files {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let tag = if SECRET_FILES.contains(&name) { "  [secret]" } else { "" };
            let _ = writeln!(s, "  {}{tag}", f.display());
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "CA SHA-256 fingerprint: {}", self.ca_fingerprint);
        let _ = writeln!(s, "Server certificate names: {}", self.names.join(", "));
        let _ = writeln!(s, "NATS operator: {}", self.operator_public_key);
        let _ = writeln!(s, "NATS account SECMON: {}", self.account_public_key);
        let _ = writeln!(s, "NATS system account: {}", self.system_public_key);
        let _ = writeln!(s);
        let _ = writeln!(s, "Start NATS (operator mode, TLS, JetStream) on {}:", self.nats_listen);
        let _ = writeln!(s, "  nats-server -c {}", self.path(NATS_CONFIG).display());
        let _ = writeln!(s);
        let _ = writeln!(s, "Manager configuration ([nats] section):");
        let _ = writeln!(s, "  url = \"tls://{}\"", self.client_address());
        let _ = writeln!(s, "  credentials_file = \"{}\"", self.path(MANAGER_CREDS).display());
        let _ = writeln!(s, "  tls_ca = \"{}\"", self.path(CA_CERT).display());
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
    SECRET_FILES.iter().chain(PUBLIC_FILES).copied().find(|f| dir.join(f).exists())
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
    let all = Permissions { pub_allow: vec![">".into()], sub_allow: vec![">".into()] };
    let manager_jwt = issue_user_jwt(&ids.account, &manager.public_key(), "secmon-manager", &all, None)?;
    let manager_creds = creds_file(&manager_jwt, &seed(&manager)?);
    let fingerprint = ca_fingerprint_sha256(ca.cert_pem())?;

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
    let tls = TlsFiles { cert: p(SERVER_CERT), key: p(SERVER_KEY), ca: p(CA_CERT), verify: false };
    let conf = nats_server_config(
        &opts.nats_listen,
        &operator_jwt,
        &ids.system.public_key(),
        &accounts,
        Some(&tls),
        Some(&p(JETSTREAM_DIR)),
    );

    let secrets: [(&str, String); 6] = [
        (CA_KEY, ca.key_pem().to_string()),
        (SERVER_KEY, server.key_pem.clone()),
        (OPERATOR_SEED, seed(&ids.operator)?),
        (ACCOUNT_SEED, seed(&ids.account)?),
        (SYSTEM_SEED, seed(&ids.system)?),
        (MANAGER_CREDS, manager_creds),
    ];
    let public: [(&str, String); 7] = [
        (CA_CERT, ca.cert_pem().to_string()),
        (SERVER_CERT, server.cert_pem.clone()),
        (OPERATOR_JWT, format!("{operator_jwt}\n")),
        (ACCOUNT_JWT, format!("{account_jwt}\n")),
        (SYSTEM_JWT, format!("{system_jwt}\n")),
        (NATS_CONFIG, conf),
        (FINGERPRINT, format!("{fingerprint}\n")),
    ];
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
    tracing::info!(dir = %dir.display(), fingerprint = %fingerprint, "initialised the secure deployment");
    Ok(InitOutput {
        dir,
        files,
        ca_fingerprint: fingerprint,
        operator_public_key: ids.operator.public_key(),
        account_public_key: ids.account.public_key(),
        system_public_key: ids.system.public_key(),
        names,
        nats_listen: opts.nats_listen.clone(),
    })
}

fn lookup(accounts: &[(String, String)], public_key: &str) -> Result<String, InitError> {
    accounts
        .iter()
        .find(|(k, _)| k == public_key)
        .map(|(_, jwt)| jwt.clone())
        .ok_or(InitError::Jwt(JwtError::Malformed("account JWT missing")))
}

/// Refuses (with the `chmod 600` hint) the first secret file in `dir` that group or
/// others can read or write. Missing files are skipped: a host may hold only some.
pub fn check_secrets(dir: &Path) -> Result<(), InitError> {
    for name in SECRET_FILES {
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
        };
        assert_eq!(out("0.0.0.0:4222", &["mgr.example"]).client_address(), "mgr.example:4222");
        assert_eq!(out("[::]:4222", &["::1"]).client_address(), "[::1]:4222");
        assert_eq!(out("127.0.0.1:5000", &["x"]).client_address(), "127.0.0.1:5000");
    }
}
