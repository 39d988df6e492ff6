//! `config/agent-config.toml` is a faithful example: it loads, shows every key, and
//! its values are the defaults (except the documented relative state dir).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secmon_agent::AgentConfig;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/agent-config.toml")
}

#[test]
fn example_config_loads_and_holds_the_defaults() {
    let cfg: AgentConfig = secmon_config::load_with_env(Some(&example_path()), &BTreeMap::new()).unwrap();
    let mut expected = AgentConfig::default();
    expected.agent.state_dir = PathBuf::from("secmon-agent-state");
    assert_eq!(cfg, expected, "the example's values drifted from the defaults");
}

#[test]
fn example_config_shows_every_key() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    let defaults = serde_json::to_value(AgentConfig::default()).unwrap();
    for (section, keys) in defaults.as_object().unwrap() {
        for key in keys.as_object().unwrap().keys() {
            assert!(
                file.get(section).and_then(|s| s.get(key)).is_some(),
                "{section}.{key} missing from config/agent-config.toml"
            );
        }
    }
}
