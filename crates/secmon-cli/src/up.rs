//! `secmon up`: the whole stack on one machine. Uses the NATS server at `--nats-url`
//! or starts one (JetStream on, store in the data dir), writes the manager's and the
//! agent's config files into the data dir, runs both as children with their output
//! prefixed, and prints the API URL once the manager answers.
//!
//! Stop order on Ctrl-C/SIGTERM: agent first (so its shutdown notice reaches a live
//! manager), then the manager, then the NATS server if we started it. The agent
//! dying on its own is reported but the rest keeps running, so the manager can show
//! it `disconnected`; the manager or our NATS server dying stops everything with an
//! error.

mod configs;
mod secure;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

use crate::child_proc::{ChildProc, Output, describe};
use crate::http::{Http, api_base};
use crate::nats_child::{NatsAddr, NatsChild, Probe, find_nats_server, probe};
use configs::{FOLLOWED_LOGS, StackSettings};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where the stack keeps its configs, NATS store, manager database and agent
    /// identity [default: /var/lib/secmon as root, else $XDG_DATA_HOME/secmon or
    /// ~/.local/share/secmon].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// NATS server to use. When nothing answers there and the address is on this
    /// machine, a nats-server with JetStream is started on it. Without this flag:
    /// nats://127.0.0.1:4222, and if a server there cannot serve us (JetStream off,
    /// as with the Debian package's default service), our own on the next free port.
    #[arg(long, env = "SECMON_NATS_URL")]
    pub nats_url: Option<String>,
    /// The address used without --nats-url (tests set it to stay off port 4222).
    #[arg(long, hide = true, default_value = "nats://127.0.0.1:4222")]
    pub default_nats_url: String,
    /// Address the manager's REST API listens on.
    #[arg(long, env = "SECMON_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub api_listen: SocketAddr,
    /// How often the agent sends a heartbeat.
    #[arg(long, env = "SECMON_AGENT_HEARTBEAT_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Silence after which the manager marks an agent `disconnected`.
    #[arg(long, env = "SECMON_AGENTS_HEARTBEAT_TIMEOUT", default_value = "6s", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Log level of the manager and the agent.
    #[arg(long, env = "SECMON_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Sigma rule directory the manager loads (its `[rules] dirs`) [default: ./rules,
    /// the source tree's rule pack, when it exists (as when run from the repository
    /// root, like scripts/up does); else no rules and no detection alerts].
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Secure mode: `secmon-manager init` (CA, certificates, NATS operator identities,
    /// first admin; once per data dir), our own nats-server in operator mode with TLS,
    /// the API over HTTPS with logins, and the agent enrolled with its own NATS identity
    /// and signing key. The first run prints the admin password once and logs the CLI in.
    #[arg(long)]
    pub secure: bool,
    /// With --secure, on the first run: mutual TLS for NATS (`secmon-manager init
    /// --mutual-tls`): nats-server requires a client certificate from the CA, the
    /// manager uses the one init issues and the agent gets its own at enrollment.
    #[arg(long, requires = "secure")]
    pub mutual_tls: bool,
}

/// How many ports after the default one are tried, in order, for our own
/// nats-server when the server at the default address is unusable.
const FALLBACK_NATS_PORTS: u16 = 10;

/// How long each child gets to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the manager gets to answer `GET /api/health` after it starts.
const MANAGER_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long we wait for the agent to show `active` before saying so and carrying on.
const AGENT_ACTIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Config keys `secmon up` sets in the files it writes; removed from the children's
/// environment so that the files (which our flags, and these variables, shaped) win.
const OVERRIDDEN_ENV: [&str; 18] = [
    "SECMON_NATS_URL",
    "SECMON_API_LISTEN",
    "SECMON_STORAGE_DATA_DIR",
    "SECMON_AGENTS_HEARTBEAT_TIMEOUT",
    "SECMON_AGENTS_CHECK_INTERVAL",
    "SECMON_AGENT_STATE_DIR",
    "SECMON_AGENT_HEARTBEAT_INTERVAL",
    "SECMON_LOG_LEVEL",
    "SECMON_RULES_DIRS",
    "SECMON_NATS_CREDENTIALS_FILE",
    "SECMON_NATS_TLS_CA",
    "SECMON_SECURITY_ENABLED",
    "SECMON_SECURITY_PUBLIC_API_URL",
    "SECMON_SECURITY_AGENT_NATS_URL",
    "SECMON_API_TLS_CERT",
    "SECMON_API_TLS_KEY",
    "SECMON_NATS_TLS_CERT",
    "SECMON_NATS_TLS_KEY",
];

/// Where the rule pack is found without `--rules`, relative to the current directory.
const DEFAULT_RULES_DIR: &str = "rules";

pub fn run(a: UpArgs) -> anyhow::Result<()> {
    if a.heartbeat_interval.is_zero() || a.heartbeat_timeout <= a.heartbeat_interval {
        bail!(
            "--heartbeat-timeout must be longer than --heartbeat-interval, which must be greater than zero"
        );
    }
    if a.api_listen.port() == 0 {
        bail!("--api-listen needs a fixed port (got {})", a.api_listen);
    }
    let data_dir = match a.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let rules_dir = rules_dir(a.rules)?;
    let settings = StackSettings {
        data_dir,
        explicit_nats_url: a.nats_url.is_some(),
        nats_url: a.nats_url.unwrap_or(a.default_nats_url),
        api_listen: a.api_listen,
        heartbeat_interval: a.heartbeat_interval,
        heartbeat_timeout: a.heartbeat_timeout,
        log_level: a.log_level,
        rules_dir,
        secure: a.secure,
        mutual_tls: a.mutual_tls,
    };
    let bins = Binaries::next_to_current_exe()?;
    prepare_data_dir(&settings.data_dir)?;
    let _lock = lock_data_dir(&settings.data_dir)?;
    check_api_port_free(settings.api_listen)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(supervise(&settings, &bins));
    let _ = std::fs::remove_file(pids_path(&settings.data_dir));
    result
}

/// Our own lines, aligned with the children's prefixed ones.
fn say(msg: impl std::fmt::Display) {
    println!("{:<8}| {msg}", "up");
}

/// The rules directory for the manager, made absolute (the manager does not run in
/// our current directory's terms): `--rules` must exist; without it `./rules` is used
/// when it is a directory, else none.
fn rules_dir(flag: Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    let (dir, explicit) = match flag {
        Some(d) => (d, true),
        None => (PathBuf::from(DEFAULT_RULES_DIR), false),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {
            let abs = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
            Ok(Some(abs))
        }
        Ok(_) if explicit => bail!("--rules {} is not a directory", dir.display()),
        Err(e) if explicit => Err(anyhow!(e).context(format!("cannot use --rules {}", dir.display()))),
        _ => Ok(None),
    }
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if nix::unistd::Uid::effective().is_root() {
        return Ok("/var/lib/secmon".into());
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("secmon"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("cannot choose a data directory: neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/secmon"))
}

/// Creates the data dir; one we create is private to the user (it will hold the
/// agent's identity and the manager's database).
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    Ok(())
}

/// One `secmon up` per data dir: two would share the NATS store and the database.
fn lock_data_dir(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("up.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut f, _)) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            bail!(
                "another `secmon up` (pid {}) is running with data dir {}: stop it first, or use another --data-dir",
                pid.trim(),
                dir.display()
            );
        }
    };
    lock.set_len(0)?;
    lock.rewind()?;
    write!(lock, "{}", std::process::id())?;
    Ok(lock)
}

fn check_api_port_free(listen: SocketAddr) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(listen) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "--api-listen {listen} is already in use (another secmon up or manager?): stop it, or pick another address with --api-listen"
        ),
        Err(e) => Err(anyhow!(e).context(format!("cannot listen on --api-listen {listen}"))),
    }
}

/// The daemons' binaries, installed or built next to `secmon`.
struct Binaries {
    manager: PathBuf,
    agent: PathBuf,
}

impl Binaries {
    fn next_to_current_exe() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the secmon executable")?;
        let dir = exe.parent().context("secmon executable has no directory")?;
        let find = |name: &str| -> anyhow::Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                bail!(
                    "{name} not found next to secmon in {}: build them with `cargo build --workspace --bins`",
                    dir.display()
                )
            }
        };
        Ok(Self { manager: find("secmon-manager")?, agent: find("secmon-agent")? })
    }
}

fn pids_path(data_dir: &Path) -> PathBuf {
    data_dir.join("pids.json")
}

/// SIGINT and SIGTERM, as one stream.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "interrupted",
            _ = self.term.recv() => "terminated",
        }
    }
}

/// The running children, in start order.
#[derive(Default)]
struct Stack {
    nats: Option<ChildProc>,
    manager: Option<ChildProc>,
    agent: Option<ChildProc>,
}

/// Which child exited on its own, and how.
enum Event {
    Signal(&'static str),
    Exited(&'static str, ExitStatus),
}

async fn supervise(st: &StackSettings, bins: &Binaries) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let mut stack = Stack::default();
    let started = tokio::select! {
        r = start(&mut stack, st, bins) => Some(r),
        s = signals.recv() => {
            say(format!("{s} during startup: stopping"));
            None
        }
    };
    let result = match started {
        None => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok(())) => watch(&mut stack, &mut signals, &pids_path(&st.data_dir)).await,
    };
    stop(&mut stack, &mut signals).await;
    if result.is_ok() {
        say("stopped");
    }
    result
}

async fn start(stack: &mut Stack, st: &StackSettings, bins: &Binaries) -> anyhow::Result<()> {
    if st.secure {
        return secure::start(stack, st, bins).await;
    }
    let pids = pids_path(&st.data_dir);
    let addr = NatsAddr::parse(&st.nats_url)?;
    let nats_url = ensure_nats(stack, st, &addr).await?;
    write_pids(&pids, stack);
    // The daemons use the server we settled on, which may be our own on another port.
    let st = &StackSettings { nats_url: nats_url.clone(), ..st.clone() };

    start_manager(stack, st, bins, &pids, "")?;

    let api = api_base(st.api_listen);
    let http = Http::new(Duration::from_secs(2));
    let (h, health) = (http.clone(), format!("{api}/api/health"));
    wait_ready(stack, "the manager to answer GET /api/health", MANAGER_READY_TIMEOUT, move || {
        matches!(h.get(&health), Ok((200, _)))
    })
    .await?;
    say_rules(&http, &api, st.rules_dir.as_deref()).await;

    start_agent(stack, st, bins, &pids)?;
    let active_url = format!("{api}/api/agents?status=active");
    let active = wait_ready(stack, "the agent to be active", AGENT_ACTIVE_TIMEOUT, move || {
        matches!(http.get(&active_url),
            Ok((200, body)) if body["items"].as_array().is_some_and(|a| !a.is_empty()))
    })
    .await;
    match active {
        Ok(true) => {}
        // It died on its own: `watch` reports it, the rest keeps running.
        Ok(false) => {}
        Err(e) if exited(stack).is_some() => return Err(e),
        Err(e) => say(format!("warning: {e:#}; carrying on (see the agent's output above)")),
    }

    say(format!("secmon is up: API {api}  NATS {}  data {}", redact(&nats_url), st.data_dir.display()));
    let cli_api =
        if st.api_listen.to_string() == "127.0.0.1:8080" { String::new() } else { format!(" --api {api}") };
    say(format!("try: curl {api}/api/agents   or   {} agents{cli_api}", cli_name()));
    say(format!(
        "file changes under /etc, live: {} events --socket {}",
        cli_name(),
        st.agent_socket_path().display()
    ));
    say("local development mode: NATS and the API are unauthenticated; keep them on this machine");
    say("Ctrl-C stops everything");
    Ok(())
}

/// Uses the NATS server at `addr`, or starts one when the address is ours and free.
/// Returns the URL the daemons should use.
async fn ensure_nats(stack: &mut Stack, st: &StackSettings, addr: &NatsAddr) -> anyhow::Result<String> {
    let problem = match probe_blocking(addr).await? {
        Probe::Nats(info) if !info.jetstream => format!(
            "the NATS server at {addr} has JetStream off, and the manager needs it: restart it with -js \
             (or a `jetstream {{}}` block in its config), or point --nats-url at another server"
        ),
        Probe::Nats(info) if info.auth_required && !st.nats_url.contains('@') => format!(
            "the NATS server at {addr} requires authentication, and secmon up's local mode has none: \
             point --nats-url at a server without auth, or at a free local port to start one"
        ),
        Probe::Nats(info) => {
            say(format!("using the NATS server at {addr} (nats-server {}, JetStream on)", info.version));
            return Ok(st.nats_url.clone());
        }
        Probe::NotNats(why) => format!(
            "something listens at {addr} but it is not a NATS server ({why}): point --nats-url at a NATS \
             server, or at a free local port to start one"
        ),
        Probe::Unreachable(why) => {
            let ip = addr.local_ip().ok_or_else(|| {
                anyhow!(
                    "no NATS server answers at {addr} ({why}) and that address is not on this machine, so \
                     secmon up cannot start one there: start it, or use a local --nats-url such as \
                     nats://127.0.0.1:4222"
                )
            })?;
            say(format!("no NATS server at {addr}"));
            return start_own_nats(stack, st, ip, addr.port).await;
        }
    };
    if st.explicit_nats_url {
        bail!(problem);
    }
    // The default address is taken by a server we cannot use (typically the Debian
    // package's service, which runs without JetStream): run our own next to it.
    let ports = addr.port.saturating_add(1)..=addr.port.saturating_add(FALLBACK_NATS_PORTS);
    for port in ports.clone() {
        let alt = NatsAddr { host: addr.host.clone(), port };
        if let Probe::Unreachable(_) = probe_blocking(&alt).await? {
            say(problem);
            say(format!("so starting a nats-server of our own on port {port} instead"));
            let ip = alt.local_ip().context("no local address for our nats-server")?;
            return start_own_nats(stack, st, ip, port).await;
        }
    }
    bail!("{problem}; ports {ports:?} are taken too, so secmon up cannot start its own")
}

async fn probe_blocking(addr: &NatsAddr) -> anyhow::Result<Probe> {
    let a = addr.clone();
    Ok(tokio::task::spawn_blocking(move || probe(&a, Duration::from_secs(2))).await?)
}

async fn start_own_nats(
    stack: &mut Stack,
    st: &StackSettings,
    ip: std::net::IpAddr,
    port: u16,
) -> anyhow::Result<String> {
    let bin = find_nats_server()?;
    say(format!(
        "starting {} with JetStream on {ip}:{port} (store {}, log {})",
        bin.display(),
        st.data_dir.join("nats").display(),
        st.data_dir.join("nats.log").display()
    ));
    let child = NatsChild::start(&st.data_dir, ip, port, Duration::from_secs(20)).await?;
    say(format!("nats-server is ready at {} (pid {})", child.url, child.proc.pid()));
    stack.nats = Some(child.proc);
    Ok(child.url)
}

/// How to call this CLI from the user's shell: `secmon` when it is on PATH, else
/// its path (relative to the working directory when under it, as after a build).
fn cli_name() -> String {
    let Ok(exe) = std::env::current_exe() else { return "secmon".into() };
    let on_path =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("secmon") == exe));
    if on_path {
        return "secmon".into();
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    exe.strip_prefix(&cwd).map(|p| p.display().to_string()).unwrap_or_else(|_| exe.display().to_string())
}

/// NATS URLs may carry credentials; never print them.
fn redact(url: &str) -> String {
    NatsAddr::parse(url).map(|a| format!("nats://{a}")).unwrap_or_else(|_| "<nats url>".into())
}

/// Writes the stack's config files and starts the manager on its own (`mode` is said
/// after the config, e.g. ", secure mode").
fn start_manager(
    stack: &mut Stack,
    st: &StackSettings,
    bins: &Binaries,
    pids: &Path,
    mode: &str,
) -> anyhow::Result<()> {
    st.write().context("cannot write the stack's config files")?;
    let manager = spawn_daemon("manager", &bins.manager, &st.manager_config_path())?;
    say(format!(
        "started secmon-manager (pid {}, config {}{mode})",
        manager.pid(),
        st.manager_config_path().display()
    ));
    stack.manager = Some(manager);
    write_pids(pids, stack);
    Ok(())
}

/// Starts the agent on its config file.
fn start_agent(stack: &mut Stack, st: &StackSettings, bins: &Binaries, pids: &Path) -> anyhow::Result<()> {
    let agent = spawn_daemon("agent", &bins.agent, &st.agent_config_path())?;
    say(format!("started secmon-agent (pid {}, config {})", agent.pid(), st.agent_config_path().display()));
    say(format!(
        "the agent follows {} (missing files are picked up when they appear)",
        FOLLOWED_LOGS.join(", ")
    ));
    stack.agent = Some(agent);
    write_pids(pids, stack);
    Ok(())
}

fn spawn_daemon(label: &str, bin: &Path, config: &Path) -> anyhow::Result<ChildProc> {
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config);
    for k in OVERRIDDEN_ENV {
        cmd.env_remove(k);
    }
    // Colours only when a person reads our output.
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        cmd.env("NO_COLOR", "1");
    }
    // SIGTERM when we die, so even a SIGKILLed `secmon up` leaves nothing running.
    ChildProc::spawn(label, cmd, Output::Forward, Signal::SIGTERM)
}

/// Says which rules the manager loaded, as `GET /api/rules` reports them.
async fn say_rules(http: &Http, api: &str, dir: Option<&Path>) {
    let Some(dir) = dir else {
        say(format!(
            "no rules loaded (no ./{DEFAULT_RULES_DIR} directory here and no --rules): no detection alerts"
        ));
        return;
    };
    let (h, url) = (http.clone(), format!("{api}/api/rules"));
    let answer = tokio::task::spawn_blocking(move || h.get(&url)).await;
    match answer {
        Ok(Ok((200, body))) => {
            let count = |k: &str| body[k].as_array().map_or(0, Vec::len);
            let problems = match count("problems") {
                0 => String::new(),
                n => format!(", {n} problem(s): see GET {api}/api/rules"),
            };
            say(format!("rules: {} loaded from {}{problems}", count("rules"), dir.display()));
        }
        _ => say(format!("rules: loading {} (GET {api}/api/rules did not answer)", dir.display())),
    }
}

/// Polls `ready` (a blocking check) every 100 ms until it holds (`Ok(true)`), failing
/// early when the manager or our NATS server exits. `Ok(false)`: the agent exited.
async fn wait_ready(
    stack: &mut Stack,
    what: &str,
    timeout: Duration,
    ready: impl Fn() -> bool + Send + Sync + Clone + 'static,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((name, status)) = exited(stack) {
            bail!("{name} exited while waiting for {what} ({}); its output is above", describe(status));
        }
        if stack.agent.as_mut().and_then(ChildProc::try_exit).is_some() {
            return Ok(false);
        }
        let r = ready.clone();
        if tokio::task::spawn_blocking(r).await? {
            return Ok(true);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first of the children the stack cannot run without that has exited.
fn exited(stack: &mut Stack) -> Option<(&'static str, ExitStatus)> {
    let Stack { nats, manager, agent: _ } = stack;
    [("nats-server", nats), ("secmon-manager", manager)]
        .into_iter()
        .find_map(|(n, c)| c.as_mut().and_then(ChildProc::try_exit).map(|s| (n, s)))
}

/// Runs until a signal (Ok) or the manager or our NATS server exits (Err).
async fn watch(stack: &mut Stack, signals: &mut Signals, pids: &Path) -> anyhow::Result<()> {
    loop {
        let ev = {
            let Stack { nats, manager, agent } = stack;
            tokio::select! {
                s = signals.recv() => Event::Signal(s),
                st = wait_opt(agent) => Event::Exited("secmon-agent", st),
                st = wait_opt(manager) => Event::Exited("secmon-manager", st),
                st = wait_opt(nats) => Event::Exited("nats-server", st),
            }
        };
        match ev {
            Event::Signal(s) => {
                say(format!("{s}: stopping the agent, then the manager, then NATS if started here"));
                return Ok(());
            }
            Event::Exited("secmon-agent", st) => {
                stack.agent = None;
                write_pids(pids, stack);
                say(format!(
                    "secmon-agent exited unexpectedly ({}); the manager keeps running and will show it \
                     disconnected. Ctrl-C, then `secmon up` again to restart it",
                    describe(st)
                ));
            }
            Event::Exited(name, st) => {
                say(format!("{name} exited unexpectedly ({}): stopping the rest", describe(st)));
                return Err(anyhow!("{name} exited unexpectedly ({}); its output is above", describe(st)));
            }
        }
    }
}

async fn wait_opt(c: &mut Option<ChildProc>) -> ExitStatus {
    match c {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// Stops the children in order: agent, manager, NATS. A second signal kills what is
/// left at once.
async fn stop(stack: &mut Stack, signals: &mut Signals) {
    let mut hurry = false;
    for (name, slot) in
        [("agent", &mut stack.agent), ("manager", &mut stack.manager), ("nats-server", &mut stack.nats)]
    {
        let Some(mut child) = slot.take() else { continue };
        if hurry {
            child.kill().await;
            say(format!("killed {name}"));
            continue;
        }
        let outcome = tokio::select! {
            r = child.stop(STOP_GRACE) => Some(r),
            s = signals.recv() => {
                say(format!("{s} again: killing what is left"));
                None
            }
        };
        match outcome {
            // nats-server exits with 1 after a clean SIGTERM; its status says nothing.
            Some((_, false)) if name == "nats-server" => say("stopped nats-server"),
            Some((st, false)) => say(format!("stopped {name} ({})", describe(st))),
            Some((_, true)) => say(format!("{name} did not stop within {STOP_GRACE:?}: killed")),
            None => {
                hurry = true;
                child.kill().await;
                say(format!("killed {name}"));
            }
        }
    }
}

/// `pids.json` in the data dir: our children's pids, for scripts and tests.
fn write_pids(path: &Path, stack: &Stack) {
    let pid = |c: &Option<ChildProc>| c.as_ref().map(ChildProc::pid);
    let v: Value = json!({
        "up": std::process::id(),
        "nats": pid(&stack.nats),
        "manager": pid(&stack.manager),
        "agent": pid(&stack.agent),
    });
    let tmp = path.with_extension("json.tmp");
    let ok = std::fs::write(&tmp, v.to_string()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        say(format!("warning: cannot write {}: {e}", path.display()));
    }
}
