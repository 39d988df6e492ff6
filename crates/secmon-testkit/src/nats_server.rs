use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Options for a test `nats-server`.
#[derive(Debug, Clone)]
pub struct NatsServerOptions {
    pub jetstream: bool,
    /// Extra lines appended to the generated server config.
    pub extra_config: String,
}

impl Default for NatsServerOptions {
    fn default() -> Self {
        Self { jetstream: true, extra_config: String::new() }
    }
}

/// A real `nats-server` child process. Keeps its port and store dir across
/// [`NatsServer::restart`], so clients reconnect to the same address and JetStream
/// finds its data again. Killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    opts: NatsServerOptions,
}

impl NatsServer {
    /// Starts a JetStream-enabled server on a free port.
    pub fn start() -> Self {
        Self::start_with(NatsServerOptions::default())
    }

    pub fn start_with(opts: NatsServerOptions) -> Self {
        let dir = tempfile::Builder::new().prefix("secmon-nats-").tempdir().expect("temp dir");
        let port = crate::free_port();
        let mut s = Self { child: None, port, dir, opts };
        // Another process may bind the port between the check and the server's bind;
        // a fresh server can then move to another one (a restart cannot).
        for _ in 0..5 {
            match s.try_spawn() {
                Ok(child) => {
                    s.child = Some(child);
                    return s;
                }
                Err(e) if e.contains("address already in use") => s.port = crate::free_port(),
                Err(e) => panic!("{e}"),
            }
        }
        s.spawn();
        s
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("nats.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn spawn(&mut self) {
        let child = self.try_spawn().unwrap_or_else(|e| panic!("{e}"));
        self.child = Some(child);
    }

    fn try_spawn(&mut self) -> Result<Child, String> {
        let store = self.dir.path().join("store");
        let mut conf = format!("listen: \"127.0.0.1:{}\"\nmax_payload: 4MB\n", self.port);
        if self.opts.jetstream {
            conf += &format!(
                "jetstream {{\n  store_dir: {:?}\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}}\n",
                store
            );
        }
        conf += &self.opts.extra_config;
        std::fs::write(self.config_path(), conf).expect("write nats.conf");
        try_spawn_nats_server(&self.config_path(), &self.log_path(), self.port)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the config, log and JetStream store.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILLs the server: no goodbye to clients, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `nats-server -c conf -l log` (any config: the tests of the secure mode run
/// the operator-mode config `secmon-manager init` writes) and waits until it logged
/// "Server is ready" and answers on `port`; panics with its log otherwise. The caller
/// owns the child (kill it, or wrap it in a [`crate::ChildGuard`]).
pub fn spawn_nats_server(conf: &Path, log: &Path, port: u16) -> Child {
    try_spawn_nats_server(conf, log, port).unwrap_or_else(|e| panic!("{e}"))
}

/// [`spawn_nats_server`], with the failure (and the server's log) as an error.
fn try_spawn_nats_server(conf: &Path, log: &Path, port: u16) -> Result<Child, String> {
    let _ = std::fs::remove_file(log);
    let mut child = Command::new(nats_server_binary())
        .arg("-c")
        .arg(conf)
        .arg("-l")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start nats-server: {e}: install it with `apt-get install nats-server`")
        });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("Server is ready") && TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or(text);
            return Err(format!("nats-server exited with {status} before it was ready:\n{text}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("nats-server on port {port} not ready after 20 s:\n{text}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The nats-server binary: `$NATS_SERVER_BIN`, Debian's paths, else `nats-server` on PATH.
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return p.into();
    }
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "nats-server".into()
}
