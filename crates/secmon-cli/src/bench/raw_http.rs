//! A minimal keep-alive HTTP/1.1 client for timing API round trips: one write per
//! request, `Content-Length` bodies only. ureq (used everywhere else) adds about
//! 4 ms to a quarter or more of keep-alive POSTs on its side of the socket (seen
//! with strace: the server answers in ~0.2 ms, the next request leaves the client
//! ~4 ms later), which would swamp the manager's own latency in the percentiles.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};

pub struct KeepAlive {
    host: String,
    conn: Option<(BufReader<TcpStream>, TcpStream)>,
}

/// Largest response body we accept.
const MAX_BODY: usize = 4 * 1024 * 1024;

impl KeepAlive {
    /// For an API base URL `http://HOST:PORT`.
    pub fn new(api: &str) -> anyhow::Result<Self> {
        let host =
            api.strip_prefix("http://").with_context(|| format!("{api}: only http:// is supported"))?;
        Ok(Self { host: host.trim_end_matches('/').to_owned(), conn: None })
    }

    fn connect(&mut self) -> anyhow::Result<&mut (BufReader<TcpStream>, TcpStream)> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.host).with_context(|| format!("connect {}", self.host))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            let w = s.try_clone()?;
            self.conn = Some((BufReader::new(s), w));
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// POSTs `body` (JSON) to `path`; returns the status and the response body.
    pub fn post_json(&mut self, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let r = self.exchange(&req);
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    fn exchange(&mut self, req: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let (reader, writer) = self.connect()?;
        writer.write_all(req)?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut len, mut close) = (None, false);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("connection closed in the response headers");
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = Some(v.trim().parse::<usize>().context("bad content-length")?);
            } else if l.starts_with("transfer-encoding:") {
                bail!("chunked responses are not supported here");
            } else if l == "connection: close" {
                close = true;
            }
        }
        let len = len.context("response without content-length")?;
        if len > MAX_BODY {
            bail!("response body of {len} bytes is too large");
        }
        let mut buf = vec![0; len];
        reader.read_exact(&mut buf)?;
        if close {
            self.conn = None;
        }
        Ok((status, buf))
    }
}
