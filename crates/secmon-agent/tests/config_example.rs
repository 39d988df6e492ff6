//! `config/agent-config.toml` is a faithful example: it loads, shows every key, and
//! its values are the defaults (except the documented relative state dir and socket
//! path, and its one watch).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secmon_agent::AgentConfig;
use secmon_fim::WatchConfig;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/agent-config.toml")
}

#[test]
fn example_config_loads_and_holds_the_defaults() {
    let cfg: AgentConfig = secmon_config::load_with_env(Some(&example_path()), &BTreeMap::new()).unwrap();
    let mut expected = AgentConfig::default();
    expected.agent.state_dir = PathBuf::from("secmon-agent-state");
    expected.socket.path = PathBuf::from("secmon-agent.sock");
    expected.watches = vec![WatchConfig {
        path: PathBuf::from("/etc/ssh"),
        description: "SSH daemon configuration".into(),
        ..WatchConfig::default()
    }];
    assert_eq!(cfg, expected, "the example's values drifted from the defaults");
}

#[test]
fn example_config_shows_every_key() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    let defaults = serde_json::to_value(AgentConfig::default()).unwrap();
    for (section, keys) in defaults.as_object().unwrap() {
        if section == "watches" {
            continue; // An array; its entry is checked below.
        }
        for key in keys.as_object().unwrap().keys() {
            assert!(
                file.get(section).and_then(|s| s.get(key)).is_some(),
                "{section}.{key} missing from config/agent-config.toml"
            );
        }
    }
    let watch = &file["watches"].as_array().expect("[[watches]] present")[0];
    for key in serde_json::to_value(WatchConfig::default()).unwrap().as_object().unwrap().keys() {
        assert!(watch.get(key).is_some(), "watches.{key} missing from config/agent-config.toml");
    }
}
