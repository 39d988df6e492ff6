//! Configuration loading shared by every secmon daemon.
//!
//! The config struct is the schema: its `Default` gives the defaults, and also tells
//! which sections exist and what type each key has, so that an environment override
//! `SECMON_<SECTION>_<KEY>` is typed the way the file would be. Errors name the key.
//!
//! Invariant: loading is deterministic given the file and the environment map; no
//! other crate reads `SECMON_*` variables for configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use toml::{Table, Value};

/// `#[serde(with = "secmon_config::duration")]` for `"15s"`-style durations.
pub use humantime_serde as duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("environment variable {var} (key `{key}`): {reason}")]
    Env { var: String, key: String, reason: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), reason: reason.into() }
    }
}

/// A config that can check itself after loading; errors name the key.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Loads `T` from `path` (or from defaults when `None`), then applies `SECMON_*`
/// overrides from the process environment, then validates.
pub fn load<T>(path: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    load_with_env(path, &env)
}

const ENV_PREFIX: &str = "SECMON_";

/// [`load`] with an explicit environment, for tests.
pub fn load_with_env<T>(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let text = match path {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.to_owned(), source })?
        }
        None => String::new(),
    };
    let origin = path.map(Path::to_owned).unwrap_or_else(|| PathBuf::from("<defaults>"));
    if is_yaml(&origin) {
        let table = yaml_to_table(&text, &origin)?;
        return from_table_with_env(table, env);
    }
    from_str_with_env(&text, &origin, env)
}

/// `.yaml` / `.yml` files are YAML (as Wazuh users write their configs); anything
/// else is TOML.
pub fn is_yaml(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Parses YAML into the same table TOML gives, so env overrides, defaults and key
/// errors work the same. YAML `null` has no TOML counterpart: leave the key out.
fn yaml_to_table(text: &str, origin: &Path) -> Result<Table, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Table::new());
    }
    yaml_serde::from_str::<Table>(text).map_err(|e| ConfigError::Syntax {
        path: origin.to_owned(),
        message: format!("{e} (YAML null is not a value here: leave the key out for its default)"),
    })
}

/// Parses TOML text, applies the overrides in `env`, deserializes and validates.
pub fn from_str_with_env<T>(
    text: &str,
    origin: &Path,
    env: &BTreeMap<String, String>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let table: Table = toml::from_str(text)
        .map_err(|e| ConfigError::Syntax { path: origin.to_owned(), message: e.to_string() })?;
    from_table_with_env(table, env)
}

fn from_table_with_env<T>(mut table: Table, env: &BTreeMap<String, String>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let schema = Value::try_from(T::default()).ok().and_then(|v| v.as_table().cloned()).unwrap_or_default();
    apply_env(&mut table, &schema, env)?;
    let cfg: T = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Invalid { key, reason: e.into_inner().to_string() }
    })?;
    cfg.validate()?;
    Ok(cfg)
}

fn apply_env(table: &mut Table, schema: &Table, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
        let rest = rest.to_ascii_lowercase();
        // The longest section name that prefixes the rest wins (`agents_` before `agent_`).
        let Some(section) = schema
            .iter()
            .filter(|(_, v)| v.is_table())
            .map(|(k, _)| k.as_str())
            .filter(|s| rest.len() > s.len() + 1 && rest.starts_with(s) && rest.as_bytes()[s.len()] == b'_')
            .max_by_key(|s| s.len())
        else {
            continue; // Not a section of this daemon (another daemon's, or unrelated).
        };
        let key = &rest[section.len() + 1..];
        let dotted = format!("{section}.{key}");
        let like = schema.get(section).and_then(|s| s.get(key));
        let value = typed_value(raw, like).map_err(|reason| ConfigError::Env {
            var: var.clone(),
            key: dotted.clone(),
            reason,
        })?;
        let sec = table.entry(section.to_owned()).or_insert_with(|| Value::Table(Table::new()));
        let Some(sec) = sec.as_table_mut() else {
            return Err(ConfigError::invalid(section, "must be a table"));
        };
        sec.insert(key.to_owned(), value);
    }
    Ok(())
}

/// Types an override like the default value of the same key; keys without a default
/// take TOML syntax when it parses, else the raw string.
fn typed_value(raw: &str, like: Option<&Value>) -> Result<Value, String> {
    match like {
        Some(Value::String(_)) => Ok(Value::String(raw.to_owned())),
        Some(Value::Integer(_)) => {
            raw.trim().parse().map(Value::Integer).map_err(|_| format!("expected an integer, got {raw:?}"))
        }
        Some(Value::Float(_)) => {
            raw.trim().parse().map(Value::Float).map_err(|_| format!("expected a number, got {raw:?}"))
        }
        Some(Value::Boolean(_)) => match raw.trim() {
            "true" | "1" | "yes" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        Some(_) => parse_toml_value(raw).ok_or_else(|| format!("expected a TOML value, got {raw:?}")),
        None => Ok(parse_toml_value(raw).unwrap_or_else(|| Value::String(raw.to_owned()))),
    }
}

fn parse_toml_value(raw: &str) -> Option<Value> {
    let t: Table = toml::from_str(&format!("v = {raw}")).ok()?;
    t.get("v").cloned()
}

/// sha256 (hex) of the effective configuration, for `status` and registration.
pub fn digest<T: Serialize>(cfg: &T) -> String {
    let text = toml::to_string(cfg).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        agent: Agent,
        agents: Agents,
    }
    impl Default for Cfg {
        fn default() -> Self {
            Self { agent: Agent::default(), agents: Agents { heartbeat_timeout: Duration::from_secs(30) } }
        }
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Agent {
        name: String,
        port: u16,
        #[serde(with = "crate::duration")]
        heartbeat_interval: Duration,
    }
    impl Default for Agent {
        fn default() -> Self {
            Self { name: "host".into(), port: 1, heartbeat_interval: Duration::from_secs(5) }
        }
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Agents {
        #[serde(with = "crate::duration")]
        heartbeat_timeout: Duration,
    }
    impl Validate for Cfg {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.agent.heartbeat_interval.is_zero() {
                return Err(ConfigError::invalid("agent.heartbeat_interval", "must be greater than zero"));
            }
            Ok(())
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(text: &str, e: &[(&str, &str)]) -> Result<Cfg, ConfigError> {
        from_str_with_env(text, Path::new("t.toml"), &env(e))
    }

    #[test]
    fn file_values_durations_and_defaults() {
        let c = parse("[agent]\nname = \"web\"\nheartbeat_interval = \"15s\"\n", &[]).unwrap();
        assert_eq!(c.agent.name, "web");
        assert_eq!(c.agent.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(c.agents.heartbeat_timeout, Duration::from_secs(30));
    }

    #[test]
    fn env_overrides_are_typed_like_the_defaults() {
        let c = parse(
            "[agent]\nname = \"web\"\n",
            &[
                ("SECMON_AGENT_NAME", "123"),
                ("SECMON_AGENT_PORT", "8080"),
                ("SECMON_AGENT_HEARTBEAT_INTERVAL", "2s"),
                ("SECMON_AGENTS_HEARTBEAT_TIMEOUT", "1m"),
                ("SECMON_OTHER_THING", "ignored: not a section of this daemon"),
            ],
        )
        .unwrap();
        assert_eq!(c.agent.name, "123");
        assert_eq!(c.agent.port, 8080);
        assert_eq!(c.agent.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(c.agents.heartbeat_timeout, Duration::from_secs(60));
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[agent]\nheartbeat_interval = \"soon\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("agent.heartbeat_interval"), "{e}");
        let e = parse("[agent]\nnmae = \"x\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("nmae"), "{e}");
        let e = parse("", &[("SECMON_AGENT_PORT", "eighty")]).unwrap_err().to_string();
        assert!(e.contains("SECMON_AGENT_PORT") && e.contains("agent.port"), "{e}");
        let e = parse("[agent]\nheartbeat_interval = \"0s\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("agent.heartbeat_interval") && e.contains("greater than zero"), "{e}");
        let e = parse("[agent\n", &[]).unwrap_err().to_string();
        assert!(e.contains("t.toml"), "{e}");
    }

    #[test]
    fn yaml_files_load_like_toml() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "agent: { name: web, heartbeat_interval: \"15s\" }\n").unwrap();
        let c: Cfg = load_with_env(Some(&p), &env(&[("SECMON_AGENT_PORT", "9")])).unwrap();
        assert_eq!(c.agent.name, "web");
        assert_eq!(c.agent.port, 9);
        assert_eq!(c.agent.heartbeat_interval, Duration::from_secs(15));
        std::fs::write(&p, "agent:\n  nmae: x\n").unwrap();
        let e = load_with_env::<Cfg>(Some(&p), &env(&[])).unwrap_err().to_string();
        assert!(e.contains("nmae"), "{e}");
        std::fs::write(&p, "agent: [unclosed\n").unwrap();
        let e = load_with_env::<Cfg>(Some(&p), &env(&[])).unwrap_err().to_string();
        assert!(e.contains("c.yaml"), "{e}");
    }

    #[test]
    fn digest_changes_with_config() {
        let a = Cfg::default();
        let mut b = Cfg::default();
        b.agent.name = "other".into();
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a), digest(&Cfg::default()));
    }
}
