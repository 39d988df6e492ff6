//! Finding, probing and starting a local `nats-server` for `secmon up` and
//! `secmon bench`.
//!
//! A NATS server greets every client with an `INFO {json}` line, so a TCP connect and
//! one line tell us whether a NATS server answers and whether it has JetStream, with
//! no client library and no side effects on the server.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde::Deserialize;
use tokio::process::Command;

use crate::child_proc::{ChildProc, Output};

/// Where a `nats://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsAddr {
    pub host: String,
    pub port: u16,
}

impl NatsAddr {
    /// Parses the first server of a (comma-separated) NATS URL: scheme and
    /// credentials are optional, the port defaults to 4222.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let first = url.split(',').next().unwrap_or_default().trim();
        let rest = match first.split_once("://") {
            Some(("nats" | "tls", rest)) => rest,
            Some((scheme, _)) => {
                bail!("unsupported scheme {scheme:?} in NATS URL {url:?}: use nats://HOST:PORT")
            }
            None => first,
        };
        let hostport = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp).trim_end_matches('/');
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once(']').with_context(|| format!("bad IPv6 address in {url:?}"))?;
            (h, p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            bail!("no host in NATS URL {url:?}: use nats://HOST:PORT");
        }
        let port = match port {
            Some(p) => p.parse().with_context(|| format!("bad port {p:?} in NATS URL {url:?}"))?,
            None => 4222,
        };
        Ok(Self { host: host.to_owned(), port })
    }

    fn resolve(&self) -> Vec<SocketAddr> {
        (self.host.as_str(), self.port).to_socket_addrs().map(|a| a.collect()).unwrap_or_default()
    }

    /// The local IP this address refers to, if it is on this machine (we can bind
    /// to it). That is where we may start a server ourselves.
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.resolve().into_iter().map(|a| a.ip()).find(|ip| TcpListener::bind((*ip, 0)).is_ok())
    }
}

impl std::fmt::Display for NatsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The fields of a server's `INFO` greeting we look at.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerInfo {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub jetstream: bool,
    #[serde(default)]
    pub auth_required: bool,
}

/// What answered at an address.
#[derive(Debug)]
pub enum Probe {
    /// A NATS server, with its greeting.
    Nats(ServerInfo),
    /// Something accepted the connection but did not greet like NATS.
    NotNats(String),
    /// Nothing accepted a connection.
    Unreachable(String),
}

/// Connects to `addr` and reads the server's greeting (bounded by `timeout` per step).
pub fn probe(addr: &NatsAddr, timeout: Duration) -> Probe {
    let addrs = addr.resolve();
    if addrs.is_empty() {
        return Probe::Unreachable(format!("cannot resolve {}", addr.host));
    }
    let mut last_err = String::new();
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return read_greeting(s, timeout),
            Err(e) => last_err = e.to_string(),
        }
    }
    Probe::Unreachable(last_err)
}

fn read_greeting(stream: TcpStream, timeout: Duration) -> Probe {
    let _ = stream.set_read_timeout(Some(timeout));
    let mut line = String::new();
    // Bounded: a NATS INFO line is a few hundred bytes.
    let mut reader = BufReader::new(std::io::Read::take(&stream, 64 * 1024));
    match reader.read_line(&mut line) {
        Ok(_) => match line.strip_prefix("INFO ") {
            Some(json) => match serde_json::from_str::<ServerInfo>(json.trim()) {
                Ok(info) => Probe::Nats(info),
                Err(e) => Probe::NotNats(format!("unreadable INFO greeting: {e}")),
            },
            None if line.is_empty() => Probe::NotNats("no greeting".into()),
            None => Probe::NotNats(format!("greeting {:?}", line.chars().take(60).collect::<String>())),
        },
        Err(e) => Probe::NotNats(format!("no greeting: {e}")),
    }
}

/// The `nats-server` binary: `$NATS_SERVER_BIN`, then `$PATH`, then the sbin and
/// local directories Debian and manual installs use (often not on a user's PATH).
pub fn find_nats_server() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !is_executable(&p) {
            bail!("NATS_SERVER_BIN={} is not an executable file", p.display());
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join("nats-server"))
        .find(|p| is_executable(p))
        .context(
            "nats-server not found: install it with `apt-get install nats-server`, \
             or point --nats-url at a running server",
        )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// A `nats-server` child with JetStream, storing under `dir`.
pub struct NatsChild {
    pub proc: ChildProc,
    pub url: String,
}

impl NatsChild {
    /// Starts `nats-server -js` listening on `ip:port` with its store in `dir/nats`
    /// and its log in `dir/nats.log`, and waits (up to `ready_timeout`) until it
    /// greets with JetStream on.
    pub async fn start(dir: &Path, ip: IpAddr, port: u16, ready_timeout: Duration) -> anyhow::Result<Self> {
        let bin = find_nats_server()?;
        let store = dir.join("nats");
        let log = dir.join("nats.log");
        std::fs::create_dir_all(&store).with_context(|| format!("cannot create {}", store.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-js")
            .arg("-sd")
            .arg(&store)
            .arg("-a")
            .arg(ip.to_string())
            .arg("-p")
            .arg(port.to_string())
            .arg("-l")
            .arg(&log);
        let addr = NatsAddr { host: ip.to_string(), port };
        let url = format!("nats://{addr}");
        let proc = spawn_until_ready(&bin, cmd, &addr, &log, ready_timeout, true).await?;
        Ok(Self { proc, url })
    }
}

/// Spawns the `nats-server` command `cmd` (its log at `log`) and waits up to
/// `ready_timeout` until it greets at `addr`, with JetStream on when `jetstream`. The
/// child gets SIGTERM on parent death, so it flushes JetStream cleanly.
pub async fn spawn_until_ready(
    bin: &Path,
    cmd: Command,
    addr: &NatsAddr,
    log: &Path,
    ready_timeout: Duration,
    jetstream: bool,
) -> anyhow::Result<ChildProc> {
    let mut proc = ChildProc::spawn("nats", cmd, Output::Discard, Signal::SIGTERM)
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let deadline = Instant::now() + ready_timeout;
    loop {
        if let Some(st) = proc.try_exit() {
            bail!(
                "nats-server exited ({}) before it was ready; last lines of {}:\n{}",
                crate::child_proc::describe(st),
                log.display(),
                tail(log, 10)
            );
        }
        let a = addr.clone();
        let p = tokio::task::spawn_blocking(move || probe(&a, Duration::from_millis(500))).await?;
        if let Probe::Nats(info) = p
            && (info.jetstream || !jetstream)
        {
            return Ok(proc);
        }
        if Instant::now() > deadline {
            proc.kill().await;
            bail!(
                "nats-server not ready at {addr} after {ready_timeout:?}; last lines of {}:\n{}",
                log.display(),
                tail(log, 10)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `n` lines of a text file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn parses_urls() {
        let p = |u| NatsAddr::parse(u).unwrap();
        assert_eq!(p("nats://127.0.0.1:4222"), NatsAddr { host: "127.0.0.1".into(), port: 4222 });
        assert_eq!(p("localhost"), NatsAddr { host: "localhost".into(), port: 4222 });
        assert_eq!(p("nats://u:pw@h:5000,nats://other:1"), NatsAddr { host: "h".into(), port: 5000 });
        assert_eq!(p("nats://[::1]:4333"), NatsAddr { host: "::1".into(), port: 4333 });
        assert_eq!(p("tls://h:1/").port, 1);
        assert!(NatsAddr::parse("http://h:1").unwrap_err().to_string().contains("unsupported scheme"));
        assert!(NatsAddr::parse("nats://h:x").unwrap_err().to_string().contains("bad port"));
        assert!(NatsAddr::parse("nats://:1").is_err());
    }

    #[test]
    fn loopback_is_local_and_foreign_is_not() {
        assert!(NatsAddr::parse("nats://127.0.0.1:1").unwrap().local_ip().is_some());
        assert!(NatsAddr::parse("nats://localhost:1").unwrap().local_ip().is_some());
        // TEST-NET-1 (RFC 5737) is never assigned to a host.
        assert!(NatsAddr::parse("nats://192.0.2.1:1").unwrap().local_ip().is_none());
    }

    /// A one-shot TCP server that writes `greeting` to its first client.
    fn fake_server(greeting: &'static [u8]) -> NatsAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let _ = s.write_all(greeting);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        NatsAddr { host: "127.0.0.1".into(), port }
    }

    #[test]
    fn probe_reads_jetstream_flag_and_spots_strangers() {
        let t = Duration::from_secs(2);
        let on = fake_server(b"INFO {\"version\":\"2.9.10\",\"jetstream\":true}\r\n");
        assert!(matches!(probe(&on, t), Probe::Nats(i) if i.jetstream && i.version == "2.9.10"));
        let off = fake_server(b"INFO {\"version\":\"2.9.10\"}\r\n");
        assert!(matches!(probe(&off, t), Probe::Nats(i) if !i.jetstream));
        let http = fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert!(matches!(probe(&http, t), Probe::NotNats(m) if m.contains("HTTP/1.1")));
        let closed = NatsAddr { host: "127.0.0.1".into(), port: free_port() };
        assert!(matches!(probe(&closed, t), Probe::Unreachable(_)));
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }
}
