//! `secmon login` and `secmon logout`: trade a user name and password for a session
//! token at `POST /api/login` and keep it (with the API URL and the CA) in the stored
//! login; `logout` ends the session on the manager and forgets it here.
//!
//! The password comes from the terminal without echo, or from the first line of stdin
//! with `--password-stdin` (scripts); never from a flag, which `ps` would show.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::Global;
use crate::api_client::{ApiClient, Auth, error_line};
use crate::credentials::{self, Credentials};

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// User name [default: asked on the terminal].
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Read the password from the first line of stdin instead of the terminal.
    #[arg(long)]
    pub password_stdin: bool,
    /// CA certificate (PEM) the API's certificate must chain to: the deployment's
    /// `pki/ca.pem` [default: the one stored by the last login to this API, else SECMON_CA,
    /// else the system's roots].
    #[arg(long, value_name = "PATH")]
    pub ca: Option<PathBuf>,
}

/// `POST /api/login`'s answer.
#[derive(Deserialize)]
struct LoginAnswer {
    token: String,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    username: String,
    role: String,
}

pub fn login(a: LoginArgs, g: &Global) -> anyhow::Result<()> {
    let path = credentials::default_path()?;
    // A broken or loose stored login must not stop a fresh one.
    let previous = credentials::load(&path).ok().flatten().filter(|c| c.is_for(&g.api));
    let ca_pem = match (&a.ca, std::env::var_os("SECMON_CA").filter(|v| !v.is_empty())) {
        (Some(p), _) => Some(read_ca(p, "--ca")?),
        (None, Some(p)) => Some(read_ca(&PathBuf::from(p), "SECMON_CA")?),
        (None, None) => previous.as_ref().and_then(|c| c.ca_pem.clone()),
    };
    let user = match a.user {
        Some(u) => u,
        None => prompt_line("User: ").context("no --user given")?,
    };
    if user.trim().is_empty() {
        bail!("empty user name: pass --user NAME");
    }
    let password = if a.password_stdin { password_from_stdin()? } else { prompt_password(&user)? };
    let creds = authenticate(&g.api, ca_pem, &user, &password)?;
    credentials::save(&path, &creds)?;
    let until =
        creds.expires_at.map(|t| format!("; the session ends at {}", t.to_rfc3339())).unwrap_or_default();
    println!(
        "logged in to {} as {} ({}){until}; login stored in {}",
        creds.api,
        creds.username,
        creds.role,
        path.display()
    );
    Ok(())
}

/// Logs in at `api` and returns what to store. `ca_pem`: the CA to trust, if not the
/// system's.
pub fn authenticate(
    api: &str,
    ca_pem: Option<String>,
    user: &str,
    password: &str,
) -> anyhow::Result<Credentials> {
    check_transport(api)?;
    let client = ApiClient::with_auth(api, Auth { token: None, ca_pem: ca_pem.clone(), role: None });
    let r = client.post_raw("/api/login", json!({ "username": user, "password": password }))?;
    match r.status {
        200 => {}
        401 => bail!("login to {} failed: unknown user or wrong password", client.base()),
        429 => {
            let wait = r.retry_after.map(|s| format!(" for {s} s")).unwrap_or_default();
            bail!("too many failed logins: {user} (or this address) is locked out{wait}; try again later")
        }
        s => bail!("login to {} failed: {}", client.base(), error_line(s, &r.text)),
    }
    let ans: LoginAnswer = serde_json::from_str(&r.text).with_context(|| {
        format!("the manager API at {} answered the login with something unexpected", api)
    })?;
    Ok(Credentials {
        api: client.base().to_owned(),
        token: ans.token,
        expires_at: ans.expires_at,
        username: ans.username,
        role: ans.role,
        ca_pem,
    })
}

pub fn logout() -> anyhow::Result<()> {
    let path = credentials::default_path()?;
    let Some(c) = credentials::load(&path)? else {
        println!("not logged in");
        return Ok(());
    };
    // End the session on the manager too, so a copy of the token is worthless; a
    // manager that is gone or already forgot the session does not keep us logged in.
    let client = ApiClient::with_auth(&c.api, Auth::from_credentials(&c));
    let ended = client.post_raw("/api/logout", json!({}));
    credentials::remove(&path)?;
    match ended {
        Ok(r) if (200..300).contains(&r.status) || r.status == 401 => println!("logged out of {}", c.api),
        Ok(r) => println!(
            "forgot the login to {} ({}: the session lasts until it expires)",
            c.api,
            error_line(r.status, &r.text)
        ),
        Err(e) => {
            println!("forgot the login to {} ({e:#}: the session lasts until it expires)", c.api)
        }
    }
    Ok(())
}

/// A password goes over HTTPS, or over plain HTTP to this machine only.
fn check_transport(api: &str) -> anyhow::Result<()> {
    let lower = api.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("http://") else { return Ok(()) };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!(
            "refusing to send a password over plain HTTP to {api}: use the https:// URL of the manager (--api)"
        );
    }
    Ok(())
}

fn read_ca(path: &std::path::Path, key: &str) -> anyhow::Result<String> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {key} {}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!("{key} {} holds no PEM certificate", path.display());
    }
    Ok(pem)
}

fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the password from stdin")?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        bail!("--password-stdin: stdin held no password");
    }
    Ok(pw)
}

/// A line typed on the terminal (with echo).
fn prompt_line(prompt: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("not on a terminal, so cannot ask");
    }
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// Reads the password from the controlling terminal with echo off, restoring the
/// terminal even when reading fails.
fn prompt_password(user: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask the password on: pipe it in with --password-stdin")?;
    let saved = tcgetattr(&tty).context("cannot read the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).context("cannot turn off echo")?;
    let read = (|| -> std::io::Result<String> {
        let mut out = &tty;
        write!(out, "Password for {user}: ")?;
        out.flush()?;
        let mut line = String::new();
        std::io::BufReader::new(&tty).read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    })();
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
    let pw = read.context("cannot read the password")?;
    if pw.is_empty() {
        bail!("empty password");
    }
    Ok(pw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_go_over_https_or_loopback_only() {
        for ok in
            ["https://mgr.example:8443", "http://127.0.0.1:8080", "http://localhost:1/", "http://[::1]:8080"]
        {
            check_transport(ok).unwrap();
        }
        for bad in ["http://mgr.example:8080", "http://10.0.0.1:8080", "HTTP://192.0.2.1"] {
            let e = check_transport(bad).unwrap_err().to_string();
            assert!(e.contains("plain HTTP"), "{bad}: {e}");
        }
    }
}
