use std::collections::BTreeMap;

use super::*;

const FP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I";

fn token() -> String {
    format!("SE1.{FP}.{SECRET}")
}

fn request(dir: &Path) -> EnrollRequest {
    EnrollRequest {
        manager: "https://127.0.0.1:1".into(),
        token: token(),
        ca_fingerprint: None,
        config_path: dir.join("agent.toml"),
        name: None,
        force: false,
    }
}

#[test]
fn parses_tokens_and_never_quotes_them() {
    let t = EnrollToken::parse(&format!("  {}\n", token())).unwrap();
    assert_eq!(t.fingerprint(), FP);
    assert_eq!(EnrollToken::parse(&token().replace(FP, &FP.to_uppercase())).unwrap().fingerprint(), FP);
    assert!(!format!("{t:?}").contains(SECRET));
    for bad in [
        String::new(),
        "SE1".into(),
        format!("SE2.{FP}.{SECRET}"),
        format!("SE1.{}.{SECRET}", &FP[..63]),
        format!("SE1.{}.{SECRET}", FP.replace('a', "g")),
        format!("SE1.{FP}.short"),
        format!("SE1.{FP}.{SECRET} x"),
        format!("SE1.{FP}.{SECRET}/.."),
    ] {
        let e = EnrollToken::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("malformed"), "{bad:?}: {e}");
        assert!(!e.contains(SECRET), "the error quotes the secret: {e}");
    }
}

#[test]
fn fingerprints_compare_without_case_or_separators() {
    let colons: String = FP
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(normalize_fingerprint(&colons).unwrap(), FP);
    assert!(same_fingerprint(&colons, FP));
    assert!(!same_fingerprint(&FP.replace('0', "1"), FP));
    assert!(!same_fingerprint("", ""), "nothing never matches nothing");
    assert!(normalize_fingerprint("abc").is_err());
}

#[test]
fn manager_must_be_https() {
    assert_eq!(check_manager_url("https://m.example:8443/").unwrap(), "https://m.example:8443");
    for bad in ["http://m.example:8443", "m.example:8443", "https://", "https://m/api", "https://u:p@m"] {
        let e = check_manager_url(bad).unwrap_err().to_string();
        assert!(e.contains("--manager"), "{bad}: {e}");
    }
    assert!(check_manager_url("http://m").unwrap_err().to_string().contains("only goes over HTTPS"));
}

#[test]
fn refusals_that_need_no_network() {
    let tmp = tempfile::tempdir().unwrap();
    // --ca-fingerprint must agree with the token.
    let mut r = request(tmp.path());
    r.ca_fingerprint = Some(FP.replace('0', "f"));
    let e = enroll(&r).unwrap_err();
    assert!(matches!(e, EnrollError::FingerprintDisagrees { .. }), "{e}");
    // ... and agreeing (with separators and in upper case) gets past that check.
    r.ca_fingerprint = Some(FP.to_uppercase());
    r.manager = "http://127.0.0.1:1".into();
    let e = enroll(&r).unwrap_err().to_string();
    assert!(e.contains("not an https:// URL"), "{e}");
    // Already enrolled: the creds in the config's state dir exist.
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join(CREDS_FILE), "x").unwrap();
    std::fs::write(tmp.path().join("agent.toml"), format!("[agent]\nstate_dir = {:?}\n", state)).unwrap();
    let e = enroll(&request(tmp.path())).unwrap_err();
    assert!(matches!(e, EnrollError::AlreadyEnrolled(_)), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    // With --force it goes on, to the network (nothing listens on port 1), even when
    // the config names creds that are gone (enrollment rewrites those keys).
    std::fs::write(
        tmp.path().join("agent.toml"),
        format!("[agent]\nstate_dir = {state:?}\n[nats]\ncredentials_file = \"/nonexistent/nats.creds\"\n"),
    )
    .unwrap();
    let mut r = request(tmp.path());
    r.force = true;
    let e = enroll(&r).unwrap_err();
    assert!(matches!(e, EnrollError::Http { .. }), "{e}");
    assert!(!e.to_string().contains(SECRET));
}

fn settings() -> NatsSettings {
    NatsSettings {
        url: "tls://manager.example:4222".into(),
        credentials_file: "/var/lib/secmon-agent/nats.creds".into(),
        tls_ca: "/var/lib/secmon-agent/ca.pem".into(),
        subject_prefix: Some("secmon".into()),
        name: None,
        client_cert: None,
    }
}

#[test]
fn config_update_sets_nats_and_keeps_the_rest() {
    let text = format!(
        "# my notes\n[agent]\nname = \"web-1\" # keep me\nheartbeat_interval = \"7s\"\n\n\
         [nats]\nurl = \"nats://old:4222\"\nuser = \"u\"\npassword = \"p\"\nrequest_timeout = \"3s\"\n\n\
         [enrollment]\nmanager = \"https://m:8443\"\ntoken = \"{}\"\n\n[[watches]]\npath = \"/etc/ssh\"\n",
        token()
    );
    let out = update_config_text(&text, &settings()).unwrap();
    assert!(out.contains("# my notes") && out.contains("# keep me"), "{out}");
    assert!(!out.contains(SECRET), "the used token stays in the file:\n{out}");
    let t: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(t["agent"]["name"].as_str(), Some("web-1"));
    assert_eq!(t["agent"]["heartbeat_interval"].as_str(), Some("7s"));
    let nats = t["nats"].as_table().unwrap();
    assert_eq!(nats["url"].as_str(), Some("tls://manager.example:4222"));
    assert_eq!(nats["credentials_file"].as_str(), Some("/var/lib/secmon-agent/nats.creds"));
    assert_eq!(nats["tls_ca"].as_str(), Some("/var/lib/secmon-agent/ca.pem"));
    assert_eq!(nats["request_timeout"].as_str(), Some("3s"));
    assert!(!nats.contains_key("user") && !nats.contains_key("password"), "one credential kind only");
    assert!(!nats.contains_key("subject_prefix"), "the default prefix is not added");
    assert_eq!(t["enrollment"]["manager"].as_str(), Some("https://m:8443"));
    assert_eq!(t["watches"][0]["path"].as_str(), Some("/etc/ssh"));

    let mut s = settings();
    s.subject_prefix = Some("acme".into());
    s.name = Some("db-2".into());
    let t: toml::Table = toml::from_str(&update_config_text("", &s).unwrap()).unwrap();
    assert_eq!(t["nats"]["subject_prefix"].as_str(), Some("acme"));
    assert_eq!(t["agent"]["name"].as_str(), Some("db-2"));
    assert!(!t["nats"].as_table().unwrap().contains_key("tls_cert"));

    // Mutual TLS: the client certificate and key are set, and removed again by an
    // enrollment without them (they belong to the earlier agent id).
    s.client_cert = Some(("/s/client.pem".into(), "/s/client-key.pem".into()));
    let with = update_config_text("[nats]\nurl = \"x\"\n", &s).unwrap();
    let t: toml::Table = toml::from_str(&with).unwrap();
    assert_eq!(t["nats"]["tls_cert"].as_str(), Some("/s/client.pem"));
    assert_eq!(t["nats"]["tls_key"].as_str(), Some("/s/client-key.pem"));
    s.client_cert = None;
    let t: toml::Table = toml::from_str(&update_config_text(&with, &s).unwrap()).unwrap();
    assert!(!t["nats"].as_table().unwrap().contains_key("tls_cert"));
    assert!(!t["nats"].as_table().unwrap().contains_key("tls_key"));
    assert!(update_config_text("nats = 3\n", &s).unwrap_err().contains("[nats]"));
    assert!(update_config_text("[nats\n", &s).unwrap_err().contains("not valid TOML"));
}

#[test]
fn config_file_is_created_from_the_template_or_updated_in_place() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("etc/agent.toml");
    let mut s = settings();
    // Files that exist, so the written config validates.
    s.credentials_file = tmp.path().join("nats.creds");
    s.tls_ca = tmp.path().join("ca.pem");
    write_file(&s.credentials_file, b"creds", 0o600).unwrap();
    write_file(&s.tls_ca, b"ca", 0o644).unwrap();
    assert_eq!(std::fs::metadata(&s.credentials_file).unwrap().permissions().mode() & 0o777, 0o600);
    update_config_file(&path, &s).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# secmon-agent configuration."), "from the template");
    let cfg: AgentConfig = secmon_config::load_with_env(Some(&path), &BTreeMap::new()).unwrap();
    assert_eq!(cfg.nats.url, "tls://manager.example:4222");
    assert_eq!(cfg.nats.credentials_file.as_deref(), Some(s.credentials_file.as_path()));
    assert!(cfg.nats.tls_required());
    assert_eq!(cfg.socket.path, PathBuf::from("/run/secmon/agent.sock"), "template values kept");
    // In place: the mode is kept (never wider than 0750).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    s.url = "tls://other:4222".into();
    update_config_file(&path, &s).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let cfg: AgentConfig = secmon_config::load_with_env(Some(&path), &BTreeMap::new()).unwrap();
    assert_eq!(cfg.nats.url, "tls://other:4222");
}

#[test]
fn enrollment_section_is_checked_and_never_shows_the_token() {
    let parse = |text: &str| -> Result<AgentConfig, secmon_config::ConfigError> {
        secmon_config::from_str_with_env(text, Path::new("agent.toml"), &BTreeMap::new())
    };
    let ok =
        parse(&format!("[enrollment]\nmanager = \"https://m:8443\"\ntoken = \"{}\"\n", token())).unwrap();
    assert!(ok.enrollment.is_configured());
    assert!(!format!("{ok:?}").contains(SECRET), "Debug shows the token");
    // What enrollment leaves behind (the token removed) is valid and not configured.
    assert!(!parse("[enrollment]\nmanager = \"https://m:8443\"\n").unwrap().enrollment.is_configured());
    for (text, key) in [
        (format!("[enrollment]\ntoken = \"{}\"\n", token()), "enrollment.manager"),
        (format!("[enrollment]\nmanager = \"http://m\"\ntoken = \"{}\"\n", token()), "enrollment.manager"),
        (format!("[enrollment]\nmanager = \"https://m\"\ntoken = \"{SECRET}\"\n"), "enrollment.token"),
        (
            format!(
                "[enrollment]\nmanager = \"https://m\"\ntoken = \"{}\"\nca_fingerprint = \"{}\"\n",
                token(),
                FP.replace('0', "e")
            ),
            "enrollment.ca_fingerprint",
        ),
        ("[enrollment]\nca_fingerprint = \"xyz\"\n".into(), "enrollment.ca_fingerprint"),
        ("[enrollment]\nmanger = \"https://m\"\n".into(), "manger"),
    ] {
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(key), "{text:?}: {e}");
        assert!(!e.contains(SECRET), "the error quotes the token: {e}");
    }
}

#[test]
fn summary_lists_files_and_no_secret() {
    let e = Enrolled {
        agent_id: AgentId::new("ag-1").unwrap(),
        public_key: "UKEY".into(),
        nats_url: "tls://m:4222".into(),
        groups: vec!["web".into()],
        files: vec![(PathBuf::from("/s/nats.creds"), "NATS credentials")],
        old_spool: None,
    };
    let s = summary(&e);
    assert!(s.contains("agent id ag-1") && s.contains("/s/nats.creds") && s.contains("web"), "{s}");
}
