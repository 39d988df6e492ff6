//! `secmon up --secure`: the stack in its production shape on one machine.
//!
//! First run: `secmon-manager init` into `<data>/manager/pki` (CA, server certificate,
//! NATS operator/account identities, manager creds, operator-mode nats-server config,
//! first admin). Every run: our own nats-server with that config (TLS, operator mode,
//! JetStream in the pki dir), the manager with `[security] enabled`, HTTPS and its
//! creds; the CLI logged in as the admin (first run) and the agent enrolled with a
//! single-use token (when it has no identity yet), then started with its own creds.
//!
//! The admin password is printed once, in the summary of the run that created it, and
//! stored nowhere; what stays is the CLI's session (`secmon login` renews it).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use tokio::process::Command;

use super::configs::{StackSettings, write_file};
use super::{
    AGENT_ACTIVE_TIMEOUT, Binaries, FALLBACK_NATS_PORTS, MANAGER_READY_TIMEOUT, OVERRIDDEN_ENV, Stack,
    cli_name, exited, pids_path, say, start_agent, start_manager, wait_ready, write_pids,
};
use crate::api_client::{ApiClient, Auth};
use crate::child_proc::describe;
use crate::credentials::{self, Credentials};
use crate::login::authenticate;
use crate::nats_child::{NatsAddr, Probe, find_nats_server, probe, spawn_until_ready};

/// File names `secmon-manager init` writes into the pki dir.
const CA_CERT: &str = "ca.pem";
const NATS_CONFIG: &str = "nats-server.conf";
const FINGERPRINT: &str = "fingerprint.txt";
/// How long nats-server gets to greet after it starts.
const NATS_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Lifetime of the token the stack's own agent enrolls with (used at once).
const ENROLL_TOKEN_TTL: &str = "15m";

/// The first admin `init` created (only on the run that created it).
struct FirstAdmin {
    user: String,
    password: String,
}

pub(super) async fn start(stack: &mut Stack, st: &StackSettings, bins: &Binaries) -> anyhow::Result<()> {
    let (ip, port) = nats_address(st).await?;
    let listen = NatsAddr { host: ip.to_string(), port };
    // The daemons on this machine connect through loopback, a name the certificate holds.
    let local =
        if ip.is_unspecified() { NatsAddr { host: "127.0.0.1".into(), port } } else { listen.clone() };
    let st = &StackSettings { nats_url: format!("tls://{local}"), ..st.clone() };

    let admin = if st.pki_dir().join(CA_CERT).exists() {
        say(format!("reusing the secure deployment in {}", st.pki_dir().display()));
        if st.mutual_tls && st.manager_client_cert().is_none() {
            say("warning: --mutual-tls is ignored: this deployment was initialised without it \
                 (use a new --data-dir for a mutual-TLS stack)");
        }
        None
    } else {
        run_init(st, bins, &listen).await?
    };
    let result = bring_up(stack, st, bins, (ip, port), admin.as_ref()).await;
    if result.is_err()
        && let Some(a) = &admin
    {
        // The password exists nowhere else: a failed first run must not lose it.
        say(format!("admin user: {}", a.user));
        say(format!("admin password (shown once, keep it): {}", a.password));
    }
    result
}

/// Everything after `init`: NATS, the manager, the CLI's login, the agent.
async fn bring_up(
    stack: &mut Stack,
    st: &StackSettings,
    bins: &Binaries,
    (ip, port): (IpAddr, u16),
    admin: Option<&FirstAdmin>,
) -> anyhow::Result<()> {
    let pids = pids_path(&st.data_dir);
    let pki = st.pki_dir();
    let ca_pem = std::fs::read_to_string(pki.join(CA_CERT))
        .with_context(|| format!("cannot read {}", pki.join(CA_CERT).display()))?;
    let fingerprint = std::fs::read_to_string(pki.join(FINGERPRINT)).unwrap_or_default().trim().to_owned();

    start_nats(stack, st, ip, port).await?;
    write_pids(&pids, stack);

    start_manager(stack, st, bins, &pids, ", secure mode")?;

    let api = st.api_url();
    let anon = Arc::new(ApiClient::with_auth(&api, Auth { ca_pem: Some(ca_pem.clone()), ..Auth::default() }));
    let health = anon.clone();
    wait_ready(stack, "the manager to answer GET /api/health over HTTPS", MANAGER_READY_TIMEOUT, move || {
        health.get("/api/health", &[]).is_ok()
    })
    .await?;

    let creds = cli_login(&api, &ca_pem, admin).await?;
    let client = creds.as_ref().map(|c| Arc::new(ApiClient::with_auth(&api, Auth::from_credentials(c))));
    if let Some(c) = &client {
        say_rules(c.clone(), st.rules_dir.as_deref()).await;
    }

    if !st.agent_enrolled() {
        let Some(c) = &client else {
            bail!(
                "the agent of this stack is not enrolled, and there is no admin login to create its \
                 enrollment token: run `{} login --api {api} --ca {} --user admin`, then this command again",
                cli_name(),
                pki.join(CA_CERT).display()
            );
        };
        enroll_agent(st, bins, c.clone(), &api).await?;
    }
    // Now with the creds file and CA the enrollment wrote.
    write_file(&st.agent_config_path(), &st.agent_toml())?;

    start_agent(stack, st, bins, &pids)?;
    if let Some(c) = &client {
        let c = c.clone();
        let active = wait_ready(stack, "the agent to be active", AGENT_ACTIVE_TIMEOUT, move || {
            c.get("/api/agents", &[("status", Some("active".into()))])
                .is_ok_and(|v| v["items"].as_array().is_some_and(|a| !a.is_empty()))
        })
        .await;
        match active {
            Ok(_) => {}
            Err(e) if exited(stack).is_some() => return Err(e),
            Err(e) => say(format!("warning: {e:#}; carrying on (see the agent's output above)")),
        }
    }

    summary(st, &api, &fingerprint, admin, creds.as_ref());
    Ok(())
}

/// Where our nats-server listens: `--nats-url` when given (it must be free and on
/// this machine: secure mode always runs its own server, with its own accounts), else
/// the port of the previous run, else the first free port from the default one on.
async fn nats_address(st: &StackSettings) -> anyhow::Result<(IpAddr, u16)> {
    let addr = NatsAddr::parse(&st.nats_url)?;
    let ip = addr.local_ip().ok_or_else(|| {
        anyhow!("--nats-url {addr} is not an address of this machine: secure mode starts its own nats-server")
    })?;
    // Reachable from other hosts when the API is (so they can enroll and connect).
    let ip = if st.api_listen.ip().is_unspecified() { st.api_listen.ip() } else { ip };
    let free = |port: u16| async move {
        let a = NatsAddr { host: ip.to_string(), port };
        let unanswered = tokio::task::spawn_blocking(move || probe(&a, Duration::from_secs(1))).await;
        matches!(unanswered, Ok(Probe::Unreachable(_))) && std::net::TcpListener::bind((ip, port)).is_ok()
    };
    if st.explicit_nats_url {
        if !free(addr.port).await {
            bail!(
                "--nats-url {addr} is in use: secure mode runs its own nats-server (operator mode, TLS), \
                 so give it a free port"
            );
        }
        return Ok((ip, addr.port));
    }
    let previous = previous_nats_port(&st.pki_dir().join(NATS_CONFIG));
    let candidates = previous
        .into_iter()
        .chain((0..=FALLBACK_NATS_PORTS).map(|i| addr.port.saturating_add(i)))
        .collect::<Vec<_>>();
    for port in candidates.iter().copied() {
        if free(port).await {
            return Ok((ip, port));
        }
    }
    bail!("no free port for our nats-server among {candidates:?}: pass --nats-url nats://127.0.0.1:PORT")
}

/// The port in the `listen:` line of the nats-server config `init` wrote.
fn previous_nats_port(conf: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(conf).ok()?;
    let line = text.lines().find_map(|l| l.trim().strip_prefix("listen:"))?;
    line.trim().trim_matches('"').rsplit_once(':')?.1.parse().ok()
}

/// `secmon-manager init` into the stack's manager data dir. Its summary holds the
/// admin password, so it is parsed, never forwarded.
async fn run_init(
    st: &StackSettings,
    bins: &Binaries,
    listen: &NatsAddr,
) -> anyhow::Result<Option<FirstAdmin>> {
    let data = st.manager_data_dir();
    if !data.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", data.display()))?;
    }
    // Only the data dir: the full config names pki files that do not exist yet.
    write_file(&st.manager_config_path(), &st.manager_init_toml())?;
    say(format!("first secure run: secmon-manager init into {} (NATS on {listen})", st.pki_dir().display()));
    let mut cmd = Command::new(&bins.manager);
    cmd.arg("--config")
        .arg(st.manager_config_path())
        .arg("init")
        .arg("--nats-listen")
        .arg(listen.to_string())
        .stdin(std::process::Stdio::null());
    if st.mutual_tls {
        cmd.arg("--mutual-tls");
    }
    for k in OVERRIDDEN_ENV {
        cmd.env_remove(k);
    }
    let out = cmd.output().await.with_context(|| format!("cannot run {} init", bins.manager.display()))?;
    if !out.status.success() {
        bail!(
            "secmon-manager init failed ({}): {}",
            describe(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let admin = parse_first_admin(&text);
    if admin.is_none() {
        say("warning: secmon-manager init printed no first admin; log in with `secmon login` yourself");
    }
    Ok(admin)
}

/// `Admin user: NAME` and `Admin password (shown once): PASSWORD` from init's summary.
fn parse_first_admin(text: &str) -> Option<FirstAdmin> {
    let value =
        |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()));
    let password = value("Admin password (shown once):").filter(|p| !p.is_empty())?;
    let user = value("Admin user:").filter(|u| !u.is_empty()).unwrap_or_else(|| "admin".into());
    Some(FirstAdmin { user, password })
}

/// Starts nats-server with the operator-mode config `init` wrote, on `ip:port`
/// (command-line flags override the config's `listen`), and waits for its greeting.
async fn start_nats(stack: &mut Stack, st: &StackSettings, ip: IpAddr, port: u16) -> anyhow::Result<()> {
    let bin = find_nats_server()?;
    let conf = st.pki_dir().join(NATS_CONFIG);
    let log = st.data_dir.join("nats.log");
    say(format!(
        "starting {} in operator mode with TLS on {} (config {}, log {})",
        bin.display(),
        NatsAddr { host: ip.to_string(), port },
        conf.display(),
        log.display()
    ));
    let mut cmd = Command::new(&bin);
    cmd.arg("-c")
        .arg(&conf)
        .arg("-a")
        .arg(ip.to_string())
        .arg("-p")
        .arg(port.to_string())
        .arg("-l")
        .arg(&log);
    let addr = NatsAddr { host: if ip.is_unspecified() { "127.0.0.1".into() } else { ip.to_string() }, port };
    let proc = spawn_until_ready(&bin, cmd, &addr, &log, NATS_READY_TIMEOUT, false).await?;
    say(format!("nats-server is ready at tls://{addr} (pid {})", proc.pid()));
    stack.nats = Some(proc);
    Ok(())
}

/// The CLI's login for this stack: on the first run, the first admin logs in and the
/// session is stored for the `secmon` commands; later, the stored session for this
/// API, if it has not expired.
async fn cli_login(
    api: &str,
    ca_pem: &str,
    admin: Option<&FirstAdmin>,
) -> anyhow::Result<Option<Credentials>> {
    let path = credentials::default_path()?;
    let Some(a) = admin else {
        let stored = credentials::load(&path).ok().flatten();
        return Ok(stored.filter(|c| c.is_for(api) && !c.expired(chrono::Utc::now())));
    };
    let (api, ca, user, pw) = (api.to_owned(), ca_pem.to_owned(), a.user.clone(), a.password.clone());
    let creds = tokio::task::spawn_blocking(move || authenticate(&api, Some(ca), &user, &pw))
        .await?
        .context("cannot log in as the first admin")?;
    credentials::save(&path, &creds)?;
    say(format!("the CLI is logged in as {} (login stored in {})", creds.username, path.display()));
    Ok(Some(creds))
}

/// A single-use enrollment token from the API, then `secmon-agent enroll` with it.
async fn enroll_agent(
    st: &StackSettings,
    bins: &Binaries,
    client: Arc<ApiClient>,
    api: &str,
) -> anyhow::Result<()> {
    // The enroll command reads the config for the state dir and writes [nats] into it.
    write_file(&st.agent_config_path(), &st.agent_toml())?;
    let created = tokio::task::spawn_blocking(move || {
        client.post("/api/enrollment-tokens", json!({ "uses": 1, "expires_in": ENROLL_TOKEN_TTL }))
    })
    .await?
    .context("cannot create an enrollment token for the stack's agent")?;
    let token = created["token"].as_str().context("the enrollment token answer holds no token")?.to_owned();
    say("enrolling the agent with a single-use token");
    let mut cmd = Command::new(&bins.agent);
    cmd.arg("enroll")
        .arg("--manager")
        .arg(api)
        .arg("--config")
        .arg(st.agent_config_path())
        // Through the environment: a flag would show the token in the process list.
        .env("SECMON_ENROLL_TOKEN", &token)
        .stdin(std::process::Stdio::null());
    for k in OVERRIDDEN_ENV {
        cmd.env_remove(k);
    }
    let out = cmd.output().await.with_context(|| format!("cannot run {} enroll", bins.agent.display()))?;
    for line in
        String::from_utf8_lossy(&out.stdout).lines().chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        // The token is single-use and spent, but it still has no business in our output.
        println!("{:<8}| {}", "enroll", line.replace(&token, "<token>"));
    }
    if !out.status.success() {
        bail!("secmon-agent enroll failed ({}); its output is above", describe(out.status));
    }
    if !st.agent_enrolled() {
        bail!(
            "secmon-agent enroll succeeded but wrote no {} (with ca.pem and identity.json)",
            st.agent_creds_path().display()
        );
    }
    Ok(())
}

/// Says which rules the manager loaded (`GET /api/rules`, as the admin).
async fn say_rules(client: Arc<ApiClient>, dir: Option<&Path>) {
    let Some(dir) = dir else {
        say("no rules loaded (no ./rules directory here and no --rules): no detection alerts");
        return;
    };
    match tokio::task::spawn_blocking(move || client.get("/api/rules", &[])).await {
        Ok(Ok(body)) => {
            let count = |k: &str| body[k].as_array().map_or(0, Vec::len);
            say(format!(
                "rules: {} loaded from {} ({} problem(s))",
                count("rules"),
                dir.display(),
                count("problems")
            ));
        }
        _ => say(format!("rules: loading {} (GET /api/rules did not answer)", dir.display())),
    }
}

fn summary(
    st: &StackSettings,
    api: &str,
    fingerprint: &str,
    admin: Option<&FirstAdmin>,
    creds: Option<&Credentials>,
) {
    let cli = cli_name();
    say(format!(
        "secmon is up in secure mode: API {api}  NATS {}  data {}",
        st.nats_url,
        st.data_dir.display()
    ));
    say(format!("CA SHA-256 fingerprint: {fingerprint}"));
    if st.manager_client_cert().is_some() {
        say("mutual TLS: on (NATS clients present a certificate from this CA)");
    }
    if let Some(a) = admin {
        say(format!("admin user: {}", a.user));
        say(format!("admin password (shown once, keep it): {}", a.password));
    }
    let ca = st.pki_dir().join(CA_CERT);
    match creds {
        Some(c) => {
            let until = c.expires_at.map(|t| format!(" until {}", t.to_rfc3339())).unwrap_or_default();
            say(format!("the CLI is logged in as {}{until}: try `{cli} agents`", c.username));
        }
        None => say(format!("log in: {cli} login --api {api} --ca {} --user admin", ca.display())),
    }
    say(format!(
        "enroll another agent: `{cli} enroll-token create`, then on its host `secmon-agent enroll --manager {} \
         --token <token>` (or `{cli} agent-config > agent.toml` for a ready config)",
        st.public_api_url()
    ));
    say(format!("curl needs the CA: curl --cacert {} {api}/api/health", ca.display()));
    say("Ctrl-C stops everything");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_admin_is_parsed_from_the_init_summary() {
        let text =
            "secmon-manager: initialised /d\n\nAdmin user: admin\nAdmin password (shown once): pw-Xy_1\n";
        let a = parse_first_admin(text).unwrap();
        assert_eq!((a.user.as_str(), a.password.as_str()), ("admin", "pw-Xy_1"));
        assert!(parse_first_admin("secmon-manager: initialised /d\n").is_none());
    }

    #[test]
    fn previous_port_is_read_from_the_nats_config() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nats-server.conf");
        std::fs::write(&p, "# x\nlisten: \"127.0.0.1:4333\"\njetstream {}\n").unwrap();
        assert_eq!(previous_nats_port(&p), Some(4333));
        assert_eq!(previous_nats_port(&d.path().join("missing")), None);
    }
}
