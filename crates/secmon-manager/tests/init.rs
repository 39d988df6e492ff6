//! `secmon-manager init`, run as the built binary: the files and their modes, a summary
//! that shows the fingerprint and never a secret, no silent overwrite, and a generated
//! deployment that the real nats-server (2.9.10) runs in operator mode with TLS and
//! JetStream, reachable with the manager's creds while pinning the CA.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use async_nats::ConnectOptions;
use futures::StreamExt;
use secmon_manager::init::{self, InitError, PUBLIC_FILES, SECRET_FILES};

fn manager() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_secmon-manager"));
    // Neither the caller's environment nor its config may change where files go.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SECMON_")) {
        c.env_remove(k);
    }
    c.env_remove("RUST_LOG");
    c
}

fn run_init(dir: &Path, port: u16, extra: &[&str]) -> Output {
    manager()
        .arg("init")
        .arg("--dir")
        .arg(dir)
        .args(["--name", "localhost", "--name", "127.0.0.1", "--nats-listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .output()
        .expect("run secmon-manager init")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// Every generated file's content, to prove a refused run changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<&'static str, Vec<u8>> {
    SECRET_FILES.iter().chain(PUBLIC_FILES).map(|f| (*f, std::fs::read(dir.join(f)).unwrap())).collect()
}

/// An nkey seed: `S` + type letter (O operator, A account, U user) + base32, 58 chars.
fn contains_seed(s: &str) -> bool {
    s.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
        w.len() == 58
            && (w.starts_with("SO") || w.starts_with("SA") || w.starts_with("SU"))
            && w.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
    })
}

fn assert_no_secret(out: &str, dir: &Path) {
    assert!(!out.contains("PRIVATE KEY"), "private key printed:\n{out}");
    assert!(!contains_seed(out), "seed printed:\n{out}");
    for f in ["operator.seed", "account.seed", "system.seed"] {
        let seed = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(!out.contains(seed.trim()), "{f} printed");
    }
    let creds = std::fs::read_to_string(dir.join("manager.creds")).unwrap();
    let user_seed = creds.lines().find(|l| l.starts_with("SU")).expect("user seed in manager.creds");
    assert!(!out.contains(user_seed), "manager seed printed");
}

#[test]
fn init_writes_secrets_0600_prints_no_secret_and_never_overwrites_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = run_init(&dir, 4333, &[]);
    let stdout = text(&out.stdout);
    let all = format!("{stdout}{}", text(&out.stderr));
    assert!(out.status.success(), "init failed: {all}");

    for f in SECRET_FILES {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    for f in PUBLIC_FILES {
        assert_eq!(mode(&dir.join(f)), 0o644, "{f}");
    }
    assert_eq!(mode(&dir), 0o700);
    let fingerprint = std::fs::read_to_string(dir.join("fingerprint.txt")).unwrap().trim().to_string();
    assert_eq!(fingerprint.len(), 64, "{fingerprint}");
    assert_eq!(
        fingerprint,
        secmon_pki::ca_fingerprint_sha256(&std::fs::read_to_string(dir.join("ca.pem")).unwrap()).unwrap()
    );
    assert!(stdout.contains(&format!("CA SHA-256 fingerprint: {fingerprint}")), "{stdout}");
    let conf = dir.canonicalize().unwrap().join("nats-server.conf");
    assert!(stdout.contains(&format!("nats-server -c {}", conf.display())), "{stdout}");
    assert_no_secret(&all, &dir);
    let seed = std::fs::read_to_string(dir.join("operator.seed")).unwrap();
    assert!(seed.starts_with("SO"), "operator.seed holds an operator seed");
    assert!(std::fs::read_to_string(dir.join("ca-key.pem")).unwrap().contains("PRIVATE KEY"));

    // A second run without --force is refused, names the directory and changes nothing.
    let before = snapshot(&dir);
    let again = run_init(&dir, 4333, &[]);
    let err = text(&again.stderr);
    assert!(!again.status.success(), "second init succeeded: {}", text(&again.stdout));
    assert!(err.contains("already initialised") && err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(snapshot(&dir), before, "a refused init changed the files");

    // With --force: a new CA and new keys.
    let forced = run_init(&dir, 4333, &["--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let new_fp = std::fs::read_to_string(dir.join("fingerprint.txt")).unwrap().trim().to_string();
    assert_ne!(new_fp, fingerprint);
    assert_ne!(std::fs::read(dir.join("operator.seed")).unwrap(), seed.as_bytes());
    assert!(text(&forced.stdout).contains(&new_fp));
    assert_no_secret(&format!("{}{}", text(&forced.stdout), text(&forced.stderr)), &dir);
    for f in SECRET_FILES {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f} after --force");
    }
}

#[test]
fn bad_arguments_fail_with_a_clear_message_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out =
        manager().arg("init").arg("--dir").arg(&dir).args(["--nats-listen", "no-port"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("invalid --nats-listen"), "{}", text(&out.stderr));
    assert!(!dir.exists(), "a failed init created {}", dir.display());
}

/// nats-server running the generated config; killed on drop.
struct NatsChild(Child);

impl NatsChild {
    fn start(conf: &Path, log: &Path, port: u16) -> Self {
        Self(secmon_testkit::spawn_nats_server(conf, log, port))
    }
}

impl Drop for NatsChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn generated_files_run_nats_in_operator_mode_with_tls_and_jetstream() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let port = secmon_testkit::free_port();
    let out = run_init(&dir, port, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _nats = NatsChild::start(&dir.join("nats-server.conf"), &tmp.path().join("nats.log"), port);
    let url = format!("nats://127.0.0.1:{port}");

    let client = ConnectOptions::with_credentials_file(dir.join("manager.creds"))
        .await
        .expect("read manager.creds")
        .add_root_certificates(dir.join("ca.pem"))
        .require_tls(true)
        .connection_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .expect("manager connects over TLS with its creds, pinning ca.pem");

    // Plain publish/subscribe round trip on an agent subject (the manager may use all).
    let mut sub = client.subscribe("secmon.agent.a1.event.x").await.unwrap();
    client.flush().await.unwrap();
    client.publish("secmon.agent.a1.event.x", "hello".into()).await.unwrap();
    let msg =
        tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("message round trip").unwrap();
    assert_eq!(&msg.payload[..], b"hello");

    // JetStream is enabled for the SECMON account and stores what is published.
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["secmon.agent.>".into()],
            ..Default::default()
        })
        .await
        .expect("create a JetStream stream on secmon.agent.>");
    js.publish("secmon.agent.a1.event.y", "stored".into())
        .await
        .unwrap()
        .await
        .expect("JetStream acknowledges the event");
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let last = stream.get_last_raw_message_by_subject("secmon.agent.a1.event.y").await.unwrap();
    assert_eq!(&last.payload[..], b"stored");
    assert!(dir.join("jetstream").is_dir(), "JetStream stores under DIR/jetstream");

    // Plain TCP: the server demands TLS and never answers a plaintext CONNECT/PING.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut info = [0u8; 4096];
    let n = s.read(&mut info).unwrap();
    let info = text(&info[..n]);
    assert!(info.starts_with("INFO ") && info.contains("\"tls_required\":true"), "{info}");
    s.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(!text(&rest).contains("PONG"), "plaintext client got PONG");

    // Without creds (TLS and CA fine) operator mode refuses the connection.
    let err = ConnectOptions::new()
        .add_root_certificates(dir.join("ca.pem"))
        .require_tls(true)
        .connection_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .expect_err("connected without credentials");
    assert_eq!(err.kind(), async_nats::ConnectErrorKind::AuthorizationViolation, "{err}");
}

#[test]
fn a_loose_secret_is_refused_by_check_secrets_and_by_the_manager() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("manager.toml");
    // Nothing listens on this port: if the manager got past the check it would only retry.
    let nats_port = secmon_testkit::free_port();
    std::fs::write(
        &cfg,
        format!(
            "[storage]\ndata_dir = {:?}\n[nats]\nurl = \"nats://127.0.0.1:{nats_port}\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();

    // No --dir: the default is <storage.data_dir>/pki; no --name: the default names.
    let out = manager().arg("init").arg("--config").arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pki = data.join("pki");
    assert!(text(&out.stdout).contains(&pki.canonicalize().unwrap().display().to_string()));
    let server = std::fs::read_to_string(pki.join("server.pem")).unwrap();
    let der = secmon_pki::cert_der(&server).unwrap();
    // DNS "localhost" and IP 127.0.0.1 are in the SAN extension.
    assert!(der.windows(9).any(|w| w == b"localhost"), "localhost not in the default names");
    assert!(der.windows(4).any(|w| w == [127, 0, 0, 1]), "127.0.0.1 not in the default names");
    init::check_secrets(&pki).unwrap();

    let seed = pki.join("account.seed");
    std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = init::check_secrets(&pki).unwrap_err();
    assert!(matches!(err, InitError::Pki(secmon_pki::PkiError::InsecureMode { mode: 0o644, .. })), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("account.seed") && msg.contains("chmod 600"), "{msg}");

    // The manager refuses to start with it.
    let child =
        manager().arg("--config").arg(&cfg).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut guard = secmon_testkit::ChildGuard::new(child);
    let status = guard.wait_timeout(Duration::from_secs(15));
    let Some(status) = status else {
        guard.kill();
        panic!("the manager started despite a 0644 seed");
    };
    let mut stderr = String::new();
    guard.0.as_mut().unwrap().stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("account.seed") && stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o600)).unwrap();
    init::check_secrets(&pki).unwrap();
}

/// The value after `prefix` on its line of `out`.
fn line_value<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(prefix)).map(str::trim)
}

fn stored_hash(data_dir: &Path, user: &str) -> String {
    let db = secmon_manager::security::SecurityDb::open(data_dir).unwrap();
    db.with_conn(|c| c.query_row("SELECT password_hash FROM users WHERE username = ?1", [user], |r| r.get(0)))
        .unwrap()
}

#[test]
fn init_creates_the_first_admin_once_with_a_password_shown_once() {
    use secmon_manager::security::auth::password::verify;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = run_init(&dir, 4334, &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.lines().any(|l| l == "Admin user: admin"), "{stdout}");
    let password = line_value(&stdout, "Admin password (shown once): ").expect("password line").to_owned();
    assert!(password.len() >= 20, "weak generated password");
    // The admin lives in <data_dir>/security.db (data_dir = the parent of --dir), 0600,
    // as an argon2id hash only.
    let db_path = tmp.path().join("security.db");
    assert_eq!(mode(&db_path), 0o600);
    let hash = stored_hash(tmp.path(), "admin");
    assert!(hash.starts_with("$argon2id$") && verify(&password, &hash), "{hash}");
    for f in std::fs::read_dir(tmp.path()).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(password.len()).any(|w| w == password.as_bytes()),
                "password in {}",
                p.display()
            );
        }
    }

    // Re-running (--force) keeps the admin and says so; no password is printed.
    let again = run_init(&dir, 4334, &["--force"]);
    let again_out = text(&again.stdout);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(again_out.contains("already has users"), "{again_out}");
    assert!(!again_out.contains("Admin password"), "{again_out}");
    assert_eq!(stored_hash(tmp.path(), "admin"), hash, "the admin was reset");

    // `user add` and `user reset-password` print a new password once.
    let cfg = tmp.path().join("manager.toml");
    std::fs::write(&cfg, format!("[storage]\ndata_dir = {:?}\n", tmp.path().display().to_string())).unwrap();
    let add = manager()
        .arg("--config")
        .arg(&cfg)
        .args(["user", "add", "ann", "--role", "analyst"])
        .output()
        .unwrap();
    let add_out = text(&add.stdout);
    assert!(add.status.success(), "{}", text(&add.stderr));
    let ann_pw = line_value(&add_out, "Password (shown once): ").expect("password").to_owned();
    assert!(verify(&ann_pw, &stored_hash(tmp.path(), "ann")));
    let reset =
        manager().arg("--config").arg(&cfg).args(["user", "reset-password", "admin"]).output().unwrap();
    assert!(reset.status.success(), "{}", text(&reset.stderr));
    let new_pw = line_value(&text(&reset.stdout), "Password (shown once): ").expect("password").to_owned();
    let new_hash = stored_hash(tmp.path(), "admin");
    assert!(verify(&new_pw, &new_hash) && !verify(&password, &new_hash));
    let db = secmon_manager::security::SecurityDb::open(tmp.path()).unwrap();
    let audited: i64 = db
        .with_conn(|c| {
            c.query_row(
                "SELECT count(*) FROM audit WHERE action = 'user.create' AND target = 'ann' AND actor LIKE 'cli:%'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert_eq!(audited, 1, "user add is audited");
    let bad =
        manager().arg("--config").arg(&cfg).args(["user", "add", "x", "--role", "root"]).output().unwrap();
    assert!(!bad.status.success() && text(&bad.stderr).contains("--role"), "{}", text(&bad.stderr));
}

#[test]
fn secure_mode_without_init_refuses_to_start_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("manager.toml");
    let data = tmp.path().join("data");
    std::fs::write(
        &cfg,
        format!("[storage]\ndata_dir = {:?}\n[security]\nenabled = true\n", data.display().to_string()),
    )
    .unwrap();
    let out = manager().arg("--config").arg(&cfg).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("secmon-manager init") && err.contains("pki"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[tokio::test]
async fn mutual_tls_init_issues_the_manager_client_cert_and_nats_requires_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let port = secmon_testkit::free_port();
    let out = run_init(&dir, port, &["--mutual-tls"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_no_secret(&format!("{stdout}{}", text(&out.stderr)), &dir);
    for f in init::MUTUAL_TLS_SECRET_FILES {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    for f in init::MUTUAL_TLS_PUBLIC_FILES {
        assert_eq!(mode(&dir.join(f)), 0o644, "{f}");
    }
    let key_text = std::fs::read_to_string(dir.join(init::MANAGER_CLIENT_KEY)).unwrap();
    assert!(key_text.contains("PRIVATE KEY") && !stdout.contains(key_text.trim()));
    assert!(stdout.contains("Mutual TLS: on"), "{stdout}");
    let abs = dir.canonicalize().unwrap();
    for f in [init::MANAGER_CLIENT_CERT, init::MANAGER_CLIENT_KEY] {
        assert!(
            stdout.contains(&format!("\"{}\"", abs.join(f).display())),
            "{f} not in the [nats] hint:\n{stdout}"
        );
    }
    assert!(init::mutual_tls_required(&dir));
    let conf = std::fs::read_to_string(dir.join("nats-server.conf")).unwrap();
    assert!(conf.contains("verify: true"), "{conf}");

    // A second run refuses, even if only the mutual-TLS files were left behind.
    for f in SECRET_FILES.iter().chain(PUBLIC_FILES) {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    let again = run_init(&dir, port, &["--mutual-tls"]);
    assert!(!again.status.success() && text(&again.stderr).contains("already initialised"));
    let forced = run_init(&dir, port, &["--mutual-tls", "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));

    let _nats = NatsChild::start(&dir.join("nats-server.conf"), &tmp.path().join("nats.log"), port);
    let url = format!("tls://127.0.0.1:{port}");
    let opts = || async {
        ConnectOptions::with_credentials_file(dir.join("manager.creds"))
            .await
            .unwrap()
            .add_root_certificates(dir.join("ca.pem"))
            .require_tls(true)
            .connection_timeout(Duration::from_secs(5))
    };
    let client = opts()
        .await
        .add_client_certificate(dir.join(init::MANAGER_CLIENT_CERT), dir.join(init::MANAGER_CLIENT_KEY))
        .connect(&url)
        .await
        .expect("manager connects with its creds and its client certificate");
    client.publish("secmon.agent.a1.event.x", "hello".into()).await.unwrap();
    client.flush().await.unwrap();
    let err = opts().await.connect(&url).await.expect_err("connected without a client certificate");
    assert_ne!(err.kind(), async_nats::ConnectErrorKind::AuthorizationViolation, "{err}");

    // The manager in secure mode without [nats] tls_cert says which keys to set.
    let cfg = tmp.path().join("manager.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\ndata_dir = {:?}\n[nats]\nurl = {url:?}\n[security]\nenabled = true\n",
            tmp.path().display().to_string()
        ),
    )
    .unwrap();
    let out = manager().arg("--config").arg(&cfg).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("tls_cert") && err.contains(init::MANAGER_CLIENT_CERT), "{err}");
}

#[test]
fn without_mutual_tls_no_client_certificate_is_required_or_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = run_init(&dir, 4334, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Mutual TLS: off"), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("tls_cert"), "{}", text(&out.stdout));
    for f in init::MUTUAL_TLS_SECRET_FILES.iter().chain(init::MUTUAL_TLS_PUBLIC_FILES) {
        assert!(!dir.join(f).exists(), "{f} written without --mutual-tls");
    }
    assert!(!init::mutual_tls_required(&dir));
    assert!(!std::fs::read_to_string(dir.join("nats-server.conf")).unwrap().contains("verify"));
}
