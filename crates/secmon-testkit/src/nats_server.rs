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
        let _ = std::fs::remove_file(self.log_path());
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(self.config_path())
            .arg("-l")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server: {e}: install it with `apt-get install nats-server`")
            });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if log.contains("Server is ready") && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("nats-server exited with {status} before it was ready:\n{log}");
            }
            if Instant::now() > deadline {
                panic!("nats-server on port {} not ready after 20 s:\n{log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

fn nats_server_binary() -> PathBuf {
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
