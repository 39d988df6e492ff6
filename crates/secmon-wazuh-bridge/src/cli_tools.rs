//! `verify`, `decrypt` and `subscribe`: the tools a consumer of the bridge's
//! messages uses, as subcommands of `secmon-wazuh-bridge`.
//!
//! - `verify --key K FILE|-`: checks a saved payload's signature (and, for a batch,
//!   each event's), decrypting and decompressing first as needed; exits non-zero when
//!   it does not verify.
//! - `decrypt --encryption-key K FILE|-`: prints the plaintext JSON (decompressed).
//! - `subscribe --key K [--subject 'wazuh.>']`: the example subscriber: one line per
//!   message with its verdict; a bad message is reported and skipped, never fatal.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::Value;

use crate::config::EncryptionAlgorithm;
use crate::crypto::{Cipher, parse_algorithm};
use crate::keys::{self, Key};
use crate::wire::{Decoder, MAX_DECOMPRESSED};

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Signing key file (hex, base64 or raw; mode 0600). Repeat to accept several
    /// keys (rotation): the message's key id picks one.
    #[arg(long = "key", value_name = "PATH", required = true)]
    pub keys: Vec<PathBuf>,
    /// Encryption key file, to verify an encrypted payload.
    #[arg(long, value_name = "PATH")]
    pub encryption_key: Option<PathBuf>,
    /// `chacha20-poly1305` or `aes-256-gcm`.
    #[arg(long, value_name = "ALG", default_value = "chacha20-poly1305", value_parser = parse_algorithm)]
    pub algorithm: EncryptionAlgorithm,
    /// The payload as published (JSON, zstd or encryption envelope); `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DecryptArgs {
    /// Encryption key file (hex, base64 or raw; 32 bytes; mode 0600).
    #[arg(long, value_name = "PATH")]
    pub encryption_key: PathBuf,
    /// `chacha20-poly1305` or `aes-256-gcm`.
    #[arg(long, value_name = "ALG", default_value = "chacha20-poly1305", value_parser = parse_algorithm)]
    pub algorithm: EncryptionAlgorithm,
    /// The encrypted payload; `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SubscribeArgs {
    #[arg(long, value_name = "URL", env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    #[arg(long, default_value = "wazuh.>")]
    pub subject: String,
    /// Signing key file; repeat to accept several keys.
    #[arg(long = "key", value_name = "PATH", required = true)]
    pub keys: Vec<PathBuf>,
    /// Encryption key file, when the bridge encrypts.
    #[arg(long, value_name = "PATH")]
    pub encryption_key: Option<PathBuf>,
    /// `chacha20-poly1305` or `aes-256-gcm`.
    #[arg(long, value_name = "ALG", default_value = "chacha20-poly1305", value_parser = parse_algorithm)]
    pub algorithm: EncryptionAlgorithm,
    /// Stop after this many messages (good or bad).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Print each verified message's JSON (one line each) instead of a summary line;
    /// messages that do not verify are reported on stderr.
    #[arg(long)]
    pub json: bool,
    /// NATS creds file (JWT + NKey seed).
    #[arg(long, value_name = "PATH")]
    pub creds: Option<PathBuf>,
    /// CA certificate(s) for the server's TLS certificate (PEM).
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM); goes with --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

fn load_signing_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<Key>> {
    paths.iter().map(|p| Ok(keys::load_key(p, keys::MIN_SIGNING_KEY_LEN)?)).collect()
}

fn load_cipher(path: Option<&Path>, alg: EncryptionAlgorithm) -> anyhow::Result<Option<Cipher>> {
    let Some(path) = path else { return Ok(None) };
    let key = keys::load_key(path, keys::ENCRYPTION_KEY_LEN)?;
    Ok(Some(Cipher::new(alg, &key)?))
}

/// The file's bytes, or stdin's for `-`; bounded (a payload is never this large).
fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    let limit = MAX_DECOMPRESSED as u64 + 1;
    let mut buf = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().lock().take(limit).read_to_end(&mut buf).context("cannot read stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut buf))
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    if buf.len() as u64 >= limit {
        bail!("{} is larger than {MAX_DECOMPRESSED} bytes: not a message", path.display());
    }
    Ok(buf)
}

/// `verify`: prints `signature ok (key <id>)` or returns the reason as an error.
pub fn verify_cmd(args: &VerifyArgs) -> anyhow::Result<()> {
    verify_to(args, &mut std::io::stdout().lock())
}

fn verify_to(args: &VerifyArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let decoder = Decoder::new(
        load_signing_keys(&args.keys)?,
        load_cipher(args.encryption_key.as_deref(), args.algorithm)?,
    );
    let payload = read_input(&args.file)?;
    let line = verify_payload(&decoder, &payload)?;
    writeln!(out, "{line}")?;
    Ok(())
}

fn verify_payload(decoder: &Decoder, payload: &[u8]) -> anyhow::Result<String> {
    let v = decoder.open(payload).context("cannot read the message")?;
    match decoder.verify(&v) {
        Ok(()) => {
            let key_id = v["signature"]["key_id"].as_str().unwrap_or_default();
            let mut line = format!("signature ok (key {key_id})");
            if let Some(events) = v.get("events").and_then(Value::as_array) {
                line += &format!("; batch of {} events, each signature ok", events.len());
            }
            Ok(line)
        }
        Err(e) => bail!("BAD SIGNATURE: {e}"),
    }
}

/// `decrypt`: writes the plaintext JSON (decompressed) to stdout.
pub fn decrypt_cmd(args: &DecryptArgs) -> anyhow::Result<()> {
    decrypt_to(args, &mut std::io::stdout().lock())
}

fn decrypt_to(args: &DecryptArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let cipher = load_cipher(Some(&args.encryption_key), args.algorithm)?;
    let decoder = Decoder::new(Vec::new(), cipher);
    let plain = decoder.open_bytes(&read_input(&args.file)?).context("cannot decrypt the message")?;
    out.write_all(&plain)?;
    if !plain.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// `subscribe`: prints one line per message until `--count` messages (or forever).
pub async fn subscribe_cmd(args: &SubscribeArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    run_subscriber(args, &mut out, &mut err, || {}).await.map(|_| ())
}

/// The subscriber proper; `ready` is called once the subscription is in place (tests
/// publish only then). Returns the number of messages seen.
async fn run_subscriber(
    args: &SubscribeArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    ready: impl FnOnce(),
) -> anyhow::Result<u64> {
    let decoder = Decoder::new(
        load_signing_keys(&args.keys)?,
        load_cipher(args.encryption_key.as_deref(), args.algorithm)?,
    );
    let nats = secmon_nats::NatsConfig {
        url: args.nats_url.clone(),
        credentials_file: args.creds.clone(),
        tls_ca: args.tls_ca.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        ..Default::default()
    };
    secmon_nats::NatsConfig::validate(&nats)?;
    let client = secmon_nats::connect(&nats, "secmon-wazuh-subscribe", None, false).await?;
    let mut sub = client.subscribe(args.subject.clone()).await.context("cannot subscribe")?;
    // The SUB must reach the server before anyone is told we listen.
    client.flush().await.context("cannot flush the subscription")?;
    ready();
    let mut seen = 0u64;
    while args.count.is_none_or(|n| seen < n) {
        let Some(msg) = sub.next().await else { break };
        seen += 1;
        let subject = clean(msg.subject.as_str());
        let outcome = match decoder.open(&msg.payload) {
            Err(e) => Err((None, e)),
            Ok(v) => match decoder.verify(&v) {
                Ok(()) => Ok(v),
                Err(e) => Err((Some(v), e)),
            },
        };
        match (&outcome, args.json) {
            (Ok(v), true) => writeln!(out, "{v}")?,
            (Ok(v), false) => writeln!(out, "{subject} {} signature ok", describe(v))?,
            (Err((Some(v), e)), json) => {
                let w: &mut dyn Write = if json { &mut *err } else { &mut *out };
                writeln!(w, "{subject} {} BAD SIGNATURE: {}", describe(v), clean_text(&e.to_string()))?;
            }
            (Err((None, e)), json) => {
                let w: &mut dyn Write = if json { &mut *err } else { &mut *out };
                writeln!(w, "{subject} - - - UNREADABLE: {}", clean_text(&e.to_string()))?;
            }
        }
        out.flush()?;
    }
    Ok(seen)
}

/// `<event_id> <agent_id> <previous>→<current>` for an event, `<batch_id>
/// <manager_node> <n> events` for a batch, `heartbeat <manager_node> ...` for a
/// heartbeat. Fields come from the message, which may be forged: cleaned.
fn describe(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(clean).unwrap_or_else(|| "-".into());
    if v.get("event_id").is_some() {
        format!("{} {} {}→{}", s("event_id"), s("agent_id"), s("previous_status"), s("current_status"))
    } else if let Some(events) = v.get("events").and_then(Value::as_array) {
        format!("{} {} {} events", s("batch_id"), s("manager_node"), events.len())
    } else if v.get("bridge_version").is_some() {
        let n = |k: &str| v["agents"].get(k).and_then(Value::as_u64).unwrap_or(0);
        format!(
            "heartbeat {} {} agents ({} active, {} disconnected)",
            s("manager_node"),
            n("total_agents"),
            n("active_agents"),
            n("disconnected_agents")
        )
    } else {
        "- - -".into()
    }
}

/// Error text (which may quote the message): bounded, no control characters.
fn clean_text(s: &str) -> String {
    s.chars().take(300).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// One bounded token for a terminal: no control characters or whitespace, at most
/// 128 characters.
fn clean(s: &str) -> String {
    let mut out: String =
        s.chars().take(128).map(|c| if c.is_control() || c.is_whitespace() { '_' } else { c }).collect();
    if s.chars().nth(128).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::sign::tests::{batch, event, heartbeat};
    use crate::wire::Encoder;
    use std::os::unix::fs::PermissionsExt;

    struct Fixture {
        dir: tempfile::TempDir,
        signing: PathBuf,
        enc_key: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let signing = dir.path().join("signing.key");
        keys::load_or_generate(&signing).unwrap();
        let enc_key = dir.path().join("enc.key");
        std::fs::write(&enc_key, format!("{}\n", hex::encode([0x42u8; 32]))).unwrap();
        std::fs::set_permissions(&enc_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        Fixture { dir, signing, enc_key }
    }

    impl Fixture {
        fn encoder(&self, alg: Option<EncryptionAlgorithm>, compress: bool) -> Encoder {
            let signing = keys::load_key(&self.signing, 32).unwrap();
            let cipher = alg.map(|a| Cipher::new(a, &keys::load_key(&self.enc_key, 32).unwrap()).unwrap());
            Encoder::new(signing, cipher, compress)
        }

        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        }

        fn verify_args(&self, file: PathBuf, enc: bool) -> VerifyArgs {
            VerifyArgs {
                keys: vec![self.signing.clone()],
                encryption_key: enc.then(|| self.enc_key.clone()),
                algorithm: EncryptionAlgorithm::Aes256Gcm,
                file,
            }
        }
    }

    #[test]
    fn verify_prints_ok_with_key_id_and_fails_on_tamper() {
        let f = fixture();
        let key_id = keys::load_key(&f.signing, 32).unwrap().id().to_owned();
        let enc = f.encoder(None, false);
        let payload = enc.encode_event(&mut event(1, Some(Status::Active), Status::Disconnected)).payload;
        let mut out = Vec::new();
        verify_to(&f.verify_args(f.write("ev.json", &payload), false), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("signature ok (key {key_id})\n"));

        let tampered = String::from_utf8(payload.to_vec()).unwrap().replace("Disconnected", "Active");
        let err = verify_to(&f.verify_args(f.write("bad.json", tampered.as_bytes()), false), &mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("BAD SIGNATURE: signature mismatch"), "{err:#}");

        // An encrypted, compressed batch: needs the encryption key, then verifies all.
        let enc = f.encoder(Some(EncryptionAlgorithm::Aes256Gcm), true);
        let p = f.write("batch.bin", &enc.encode_batch(&mut batch(4)).payload);
        let err = verify_to(&f.verify_args(p.clone(), false), &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("--encryption-key"), "{err:#}");
        let mut out = Vec::new();
        verify_to(&f.verify_args(p, true), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("signature ok (key {key_id}); batch of 4 events, each signature ok\n")
        );

        // Another signing key: refused, naming the key id it was signed with.
        let other = f.dir.path().join("other.key");
        keys::load_or_generate(&other).unwrap();
        let mut args = f.verify_args(f.write("ev2.json", &payload), false);
        args.keys = vec![other];
        let err = verify_to(&args, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains(&key_id), "{err:#}");
    }

    #[test]
    fn verify_refuses_a_world_readable_key_file() {
        let f = fixture();
        std::fs::set_permissions(&f.signing, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = verify_to(&f.verify_args(f.write("x.json", b"{}"), false), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err:#}");
    }

    #[test]
    fn decrypt_writes_the_plaintext_json_decompressed() {
        let f = fixture();
        let enc = f.encoder(Some(EncryptionAlgorithm::ChaCha20Poly1305), true);
        let mut b = batch(2);
        let p = f.write("batch.bin", &enc.encode_batch(&mut b).payload);
        let args = DecryptArgs {
            encryption_key: f.enc_key.clone(),
            algorithm: EncryptionAlgorithm::ChaCha20Poly1305,
            file: p.clone(),
        };
        let mut out = Vec::new();
        decrypt_to(&args, &mut out).unwrap();
        let mut want = serde_json::to_vec(&b).unwrap();
        want.push(b'\n');
        assert_eq!(out, want);

        let wrong = DecryptArgs { algorithm: EncryptionAlgorithm::Aes256Gcm, ..args };
        let err = decrypt_to(&wrong, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("chacha20-poly1305"), "{err:#}");
    }

    #[derive(clap::Parser)]
    enum Cli {
        Verify(VerifyArgs),
        Decrypt(DecryptArgs),
        Subscribe(SubscribeArgs),
    }

    #[test]
    fn arguments_parse_as_documented() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let Cli::Verify(v) = Cli::try_parse_from(["t", "verify", "--key", "a", "--key", "b", "-"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(v.keys, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(v.file, PathBuf::from("-"));
        assert_eq!(v.algorithm, EncryptionAlgorithm::ChaCha20Poly1305);
        let Cli::Decrypt(d) =
            Cli::try_parse_from(["t", "decrypt", "--encryption-key", "k", "--algorithm", "aes-256-gcm", "f"])
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(d.algorithm, EncryptionAlgorithm::Aes256Gcm);
        let Cli::Subscribe(s) =
            Cli::try_parse_from(["t", "subscribe", "--key", "k", "--count", "3", "--json"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((s.subject.as_str(), s.count, s.json), ("wazuh.>", Some(3), true));
        assert!(Cli::try_parse_from(["t", "verify", "f"]).is_err(), "--key is required");
        assert!(
            Cli::try_parse_from(["t", "decrypt", "--encryption-key", "k", "--algorithm", "des", "f"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["t", "subscribe", "--key", "k", "--tls-cert", "c"]).is_err(),
            "cert needs key"
        );
    }

    #[test]
    fn clean_bounds_and_neutralizes_terminal_text() {
        assert_eq!(clean("a b\x1b[31m\n"), "a_b_[31m_");
        assert_eq!(clean(&"x".repeat(500)).chars().count(), 129);
        assert_eq!(clean_text("bad\r\nline"), "bad??line");
    }

    /// The example subscriber against a real nats-server: one line per message,
    /// verdicts right, bad messages reported and skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscriber_prints_one_line_per_message_and_survives_bad_ones() {
        let server = secmon_testkit::NatsServer::start();
        let f = fixture();
        let args = SubscribeArgs {
            nats_url: server.url(),
            subject: "wazuh.>".into(),
            keys: vec![f.signing.clone()],
            encryption_key: Some(f.enc_key.clone()),
            algorithm: EncryptionAlgorithm::ChaCha20Poly1305,
            count: Some(6),
            json: false,
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let args = args.clone();
            async move {
                let (mut out, mut err) = (Vec::new(), Vec::new());
                let n = run_subscriber(&args, &mut out, &mut err, move || {
                    let _ = ready_tx.send(());
                })
                .await
                .unwrap();
                (n, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), ready_rx).await.unwrap().unwrap();

        let plain = f.encoder(None, false);
        let secret = f.encoder(Some(EncryptionAlgorithm::ChaCha20Poly1305), true);
        let good = plain.encode_event(&mut event(7, Some(Status::Active), Status::Disconnected)).payload;
        let forged = String::from_utf8(good.to_vec()).unwrap().replace("\"007\"", "\"008\"");
        let client = async_nats::connect(server.url()).await.unwrap();
        let msgs: Vec<(&str, bytes::Bytes)> = vec![
            ("wazuh.agent.007.status", good),
            ("wazuh.agent.008.status", forged.into()),
            ("wazuh.security.agent_events", secret.encode_batch(&mut batch(3)).payload),
            (
                "wazuh.manager.wazuh-manager-01.heartbeat",
                secret.encode_heartbeat(&mut heartbeat(Some(2.5))).payload,
            ),
            ("wazuh.agent.009.status", bytes::Bytes::from_static(b"\x00garbage")),
            ("wazuh.agent.010.status", plain.encode_event(&mut event(10, None, Status::Active)).payload),
        ];
        for (subject, payload) in msgs {
            client.publish(subject, payload).await.unwrap();
        }
        client.flush().await.unwrap();
        let (n, out, err) =
            tokio::time::timeout(std::time::Duration::from_secs(10), task).await.unwrap().unwrap();
        assert_eq!(n, 6);
        assert!(err.is_empty(), "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6, "{out}");
        assert_eq!(
            lines[0],
            "wazuh.agent.007.status evt_007_1716897300_status_change 007 Active→Disconnected signature ok"
        );
        assert!(
            lines[1].starts_with("wazuh.agent.008.status evt_007_1716897300_status_change 008 Active→Disconnected BAD SIGNATURE: signature mismatch"),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            "wazuh.security.agent_events batch_wazuh-manager-01_0123456789abcdef wazuh-manager-01 3 events signature ok"
        );
        assert_eq!(
            lines[3],
            "wazuh.manager.wazuh-manager-01.heartbeat heartbeat wazuh-manager-01 3 agents (2 active, 0 disconnected) signature ok"
        );
        assert!(lines[4].starts_with("wazuh.agent.009.status - - - UNREADABLE: not JSON"), "{}", lines[4]);
        assert_eq!(
            lines[5],
            "wazuh.agent.010.status evt_010_1716897300_status_change 010 -→Active signature ok"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscriber_json_mode_prints_verified_messages_only() {
        let server = secmon_testkit::NatsServer::start();
        let f = fixture();
        let args = SubscribeArgs {
            nats_url: server.url(),
            subject: "wazuh.agent.*.status".into(),
            keys: vec![f.signing.clone()],
            encryption_key: None,
            algorithm: EncryptionAlgorithm::ChaCha20Poly1305,
            count: Some(2),
            json: true,
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            run_subscriber(&args, &mut out, &mut err, move || {
                let _ = ready_tx.send(());
            })
            .await
            .unwrap();
            (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), ready_rx).await.unwrap().unwrap();
        let enc = f.encoder(None, false);
        let mut ev = event(1, Some(Status::Pending), Status::Active);
        let good = enc.encode_event(&mut ev).payload;
        let client = async_nats::connect(server.url()).await.unwrap();
        client.publish("wazuh.agent.001.status", b"{\"event_id\":\"x\"}".to_vec().into()).await.unwrap();
        client.publish("wazuh.agent.001.status", good).await.unwrap();
        client.flush().await.unwrap();
        let (out, err) =
            tokio::time::timeout(std::time::Duration::from_secs(10), task).await.unwrap().unwrap();
        let v: Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v, serde_json::to_value(&ev).unwrap());
        assert_eq!(out.lines().count(), 1);
        assert!(err.contains("BAD SIGNATURE: no signature"), "{err}");
    }
}
