//! `secmon-manager --config PATH`: loads the configuration, starts the manager and
//! runs it until SIGTERM or SIGINT; SIGHUP reloads the rules.
//! `secmon-manager init`: generates the secure deployment material ([`secmon_manager::init`])
//! and the first admin user.
//! `secmon-manager user add|reset-password`: manages API users in `<data_dir>/security.db`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use secmon_manager::app::Manager;
use secmon_manager::config::ManagerConfig;
use secmon_manager::init::{InitOptions, check_secrets, default_names, init};
use secmon_manager::security::auth::{AuditEntry, audit, users};
use secmon_manager::security::{Role, SecurityDb};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// secmon manager: ingest, fleet registry and lifecycle, storage, REST API.
#[derive(Parser)]
#[command(name = "secmon-manager", version, about)]
struct Args {
    /// Configuration file (TOML); defaults apply when absent. Any key can be set
    /// with SECMON_<SECTION>_<KEY>.
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// Without a subcommand, the manager runs.
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate the CA, the server certificate, the NATS operator/account keys and JWTs,
    /// the manager's NATS creds and an operator-mode nats-server config.
    Init {
        /// Output directory [default: <storage.data_dir>/pki].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// DNS name or IP address for the server certificate (repeatable)
        /// [default: this hostname, localhost, 127.0.0.1, ::1].
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
        /// Address nats-server listens on.
        #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:4222")]
        nats_listen: String,
        /// Overwrite an initialised directory (new CA and keys: agents must enroll again).
        /// Existing users are kept.
        #[arg(long)]
        force: bool,
        /// Where the first admin user is created (<DIR>/security.db)
        /// [default: storage.data_dir, or the parent of --dir when --dir is given without --config].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Mutual TLS for NATS: nats-server requires a client certificate signed by the CA;
        /// the manager's is written to DIR (manager-client.pem), agents get theirs when
        /// they enroll.
        #[arg(long)]
        mutual_tls: bool,
    },
    /// Manage API users (in <storage.data_dir>/security.db).
    User {
        #[command(subcommand)]
        action: UserCmd,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user with a generated password (printed once).
    Add {
        name: String,
        /// admin, analyst or readonly.
        #[arg(long, default_value = "readonly")]
        role: String,
    },
    /// Give a user a new generated password (printed once) and end its sessions.
    ResetPassword { name: String },
}

/// Loads the configuration or says why not (exit code 2).
fn load_config(path: Option<&std::path::Path>) -> Result<ManagerConfig, ExitCode> {
    secmon_config::load(path).map_err(|e| {
        eprintln!("secmon-manager: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Cmd::Init { dir, names, nats_listen, force, data_dir, mutual_tls }) => {
            let dir_given = dir.is_some();
            let opts =
                InitOptions { dir: dir.unwrap_or_default(), names, nats_listen, force, data_dir, mutual_tls };
            return run_init(args.config.as_deref(), dir_given, opts);
        }
        Some(Cmd::User { action }) => return run_user(args.config.as_deref(), action),
        None => {}
    }
    let cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let pki = cfg.pki_dir();
    if cfg.security.enabled && !pki.join(secmon_manager::init::CA_CERT).is_file() {
        eprintln!(
            "secmon-manager: secure mode ([security] enabled) needs the PKI in {}: run `secmon-manager init{}` first",
            pki.display(),
            args.config.as_deref().map(|p| format!(" --config {}", p.display())).unwrap_or_default()
        );
        return ExitCode::from(2);
    }
    // With mutual TLS the NATS connection fails in the handshake without a client
    // certificate: say which keys to set instead.
    if cfg.security.enabled
        && let Err(e) = secmon_manager::init::check_manager_client_cert(
            &pki,
            cfg.nats.tls_cert.as_deref(),
            cfg.nats.tls_key.as_deref(),
        )
    {
        eprintln!("secmon-manager: {e}");
        return ExitCode::from(2);
    }
    // A key file others can read may already be copied: refuse to run with it.
    if pki.is_dir()
        && let Err(e) = check_secrets(&pki)
    {
        eprintln!("secmon-manager: {e}");
        return ExitCode::from(2);
    }
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&cfg.log.level),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("secmon-manager: bad log filter (RUST_LOG or [log] level): {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("secmon-manager: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secmon-manager: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `opts.dir` is used when `dir_given`, else the config's pki_dir.
fn run_init(config: Option<&std::path::Path>, dir_given: bool, mut opts: InitOptions) -> ExitCode {
    // Only the library's own logs, and only warnings unless RUST_LOG asks for more: the
    // summary on stdout is the output.
    let filter = std::env::var("RUST_LOG").ok().and_then(|v| EnvFilter::try_new(v).ok());
    tracing_subscriber::fmt()
        .with_env_filter(filter.unwrap_or_else(|| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    // With only --dir, the deployment is that directory's parent (the default layout
    // is <data_dir>/pki), so no config is read.
    let cfg = if !dir_given || config.is_some() {
        match load_config(config) {
            Ok(cfg) => Some(cfg),
            Err(code) => return code,
        }
    } else {
        None
    };
    if !dir_given {
        let Some(dir) = cfg.as_ref().map(ManagerConfig::pki_dir) else { return ExitCode::from(2) };
        opts.dir = dir;
    }
    opts.data_dir = opts.data_dir.or_else(|| cfg.as_ref().map(|c| c.storage.data_dir.clone()));
    if opts.names.is_empty() {
        opts.names = default_names();
    }
    match init(&opts) {
        Ok(out) => {
            print!("{}", out.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("secmon-manager init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_user(config: Option<&std::path::Path>, action: UserCmd) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let db = match SecurityDb::open(&cfg.storage.data_dir) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("secmon-manager user: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (name, action, subcommand, done) = match action {
        UserCmd::Add { name, role } => {
            let role: Role = match role.parse() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("secmon-manager user add: --role: {e}");
                    return ExitCode::from(2);
                }
            };
            let r = users::add_user(&db, &name, role, None);
            (name, "user.create", "add", r.map(|pw| (format!("added with role {role}"), pw)))
        }
        UserCmd::ResetPassword { name } => {
            let r = users::reset_password(&db, &name, None);
            (
                name,
                "user.reset_password",
                "reset-password",
                r.map(|pw| ("has a new password; its sessions ended".to_owned(), pw)),
            )
        }
    };
    // Done from the host, not the API: still one audit record, by the OS user.
    let status = if done.is_ok() { 200 } else { 400 };
    let entry = AuditEntry {
        actor: format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into())),
        method: "CLI".into(),
        path: format!("secmon-manager user {subcommand}"),
        action: action.into(),
        target: Some(name.clone()),
        status,
        result: audit::result_for(status).into(),
        detail: done.as_ref().err().map(ToString::to_string),
        ..AuditEntry::default()
    };
    if let Err(e) = audit::record_blocking(&db, &entry) {
        eprintln!("secmon-manager user: cannot write the audit record: {e}");
    }
    match done {
        Ok((what, pw)) => {
            println!("User {name} {what}.");
            if let Some(pw) = pw {
                println!("Password (shown once): {pw}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("secmon-manager user: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: ManagerConfig) -> anyhow::Result<()> {
    if cfg.security.enabled {
        tracing::info!(
            pki = %cfg.pki_dir().display(),
            "secure mode: API authentication and roles on (bearer tokens from POST /api/login), HTTPS"
        );
    } else {
        tracing::warn!(
            "LOCAL MODE ([security] enabled = false): NATS connections and the REST API are NOT authenticated; \
             anyone who can reach them can act as an agent or an operator. Do not expose this manager; \
             run `secmon-manager init` and set [security] enabled = true for a real deployment."
        );
    }
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let manager = Manager::start(cfg).await?;
    tracing::info!(api = %manager.api_url(), version = env!("CARGO_PKG_VERSION"), "secmon-manager ready");
    let rules = manager.rules();
    let sig = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading rules");
                // The outcome (or why the old rules stay) is logged by reload.
                let _ = rules.reload().await;
            }
        }
    };
    tracing::info!(signal = sig, "stopping");
    manager.shutdown().await;
    Ok(())
}
