//! Facts about this host, sent at registration. Each fact degrades to a placeholder
//! rather than failing: an agent that cannot read os-release must still register.

use secmon_proto::HostFacts;

/// Collects hostname, OS, kernel, architecture and non-loopback IP addresses.
pub fn collect() -> HostFacts {
    let (kernel, arch) = match nix::sys::utsname::uname() {
        Ok(u) => (u.release().to_string_lossy().into_owned(), u.machine().to_string_lossy().into_owned()),
        Err(e) => {
            tracing::warn!(error = %e, "uname failed");
            ("unknown".into(), std::env::consts::ARCH.into())
        }
    };
    HostFacts { hostname: hostname(), os: os_pretty_name(), kernel, arch, ips: ip_addresses() }
}

/// The host name, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    hostname::get().ok().and_then(|h| h.into_string().ok()).filter(|h| !h.is_empty()).unwrap_or_else(|| {
        tracing::warn!("cannot read the host name; using \"localhost\"");
        "localhost".into()
    })
}

fn os_pretty_name() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| pretty_name(&text))
        .unwrap_or_else(|| "Linux".into())
}

/// `PRETTY_NAME` from os-release text, unquoted.
fn pretty_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| {
        let v = v.trim();
        v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v).to_owned()
    })
}

fn ip_addresses() -> Vec<String> {
    match if_addrs::get_if_addrs() {
        Ok(ifs) => {
            let mut ips: Vec<String> =
                ifs.into_iter().filter(|i| !i.is_loopback()).map(|i| i.ip().to_string()).collect();
            ips.sort();
            ips.dedup();
            ips
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list network interfaces");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pretty_name() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(pretty_name(text).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(pretty_name("PRETTY_NAME=Alpine\n").as_deref(), Some("Alpine"));
        assert_eq!(pretty_name("ID=x\n"), None);
    }

    #[test]
    fn collects_this_hosts_facts() {
        let f = collect();
        assert!(!f.hostname.is_empty());
        assert!(!f.kernel.is_empty() && f.kernel != "unknown");
        assert_eq!(f.arch, std::env::consts::ARCH);
        assert!(f.ips.iter().all(|ip| ip != "127.0.0.1" && ip != "::1"), "{:?}", f.ips);
    }
}
