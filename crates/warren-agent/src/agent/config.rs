//! The agent's configuration, read once from the `WARREN_AGENT_*` environment the server puts in
//! the OCI config, and the base environment every process the agent starts inherits.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the agent listens when `WARREN_AGENT_ADDR` is unset (envd's port).
const DEFAULT_ADDR: &str = "0.0.0.0:49983";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_HOME: &str = "/root";

/// Everything the server needs to know at start.
#[derive(Debug)]
pub struct Config {
    /// Required `X-Access-Token`; `None` disables the check.
    pub token: Option<String>,
    /// Listen address.
    pub addr: SocketAddr,
    /// The sandbox's main command, started with the agent.
    pub main_cmd: Option<Vec<String>>,
    /// Working directory of the main command.
    pub main_cwd: PathBuf,
    /// Environment of started processes before a request's `envs`.
    pub child_env: Vec<(OsString, OsString)>,
}

impl Config {
    /// Reads the configuration from this process's environment.
    pub fn from_env() -> Result<Config, String> {
        Config::from_vars(std::env::vars_os())
    }

    fn from_vars(vars: impl Iterator<Item = (OsString, OsString)>) -> Result<Config, String> {
        let vars: Vec<(OsString, OsString)> = vars.collect();
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };

        let addr_text = get("WARREN_AGENT_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr = addr_text
            .parse()
            .map_err(|e| format!("WARREN_AGENT_ADDR={addr_text:?} is not an address: {e}"))?;

        let main_cmd = match get("WARREN_AGENT_CMD") {
            None => None,
            Some(text) => {
                let argv: Vec<String> = serde_json::from_str(&text)
                    .map_err(|e| format!("WARREN_AGENT_CMD is not a JSON array of strings: {e}"))?;
                if argv.is_empty() {
                    return Err("WARREN_AGENT_CMD is an empty array".to_owned());
                }
                Some(argv)
            }
        };
        let main_cwd = PathBuf::from(get("WARREN_AGENT_CWD").unwrap_or_else(|| "/".to_owned()));

        // Nothing of the agent's own configuration (the token above all) may leak into the
        // sandboxed code's environment; the user's own `WARREN_*` variables stay.
        let mut child_env: Vec<(OsString, OsString)> = vars
            .iter()
            .filter(|(k, _)| !k.to_string_lossy().starts_with("WARREN_AGENT_"))
            .cloned()
            .collect();
        for (name, default) in [("PATH", DEFAULT_PATH), ("HOME", DEFAULT_HOME)] {
            if !child_env.iter().any(|(k, _)| k == name) {
                child_env.push((name.into(), default.into()));
            }
        }

        Ok(Config {
            token: get("WARREN_AGENT_TOKEN"),
            addr,
            main_cmd,
            main_cwd,
            child_env,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn defaults_and_scrubbed_environment() {
        let config = Config::from_vars(vars(&[
            ("WARREN_AGENT_TOKEN", "secret"),
            ("WARREN_AGENT_ROLE", "server"),
            ("WARREN_URL", "http://user.example"),
            ("LANG", "C.UTF-8"),
            ("HOME", "/home/u"),
        ]));
        let Ok(config) = config else {
            panic!("config rejected: {config:?}");
        };
        assert_eq!(config.token.as_deref(), Some("secret"));
        assert_eq!(config.addr.port(), 49983);
        assert!(config.main_cmd.is_none());
        assert_eq!(config.main_cwd, PathBuf::from("/"));
        let env: Vec<(String, String)> = config
            .child_env
            .iter()
            .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
            .collect();
        assert!(env.iter().all(|(k, _)| !k.starts_with("WARREN_AGENT_")));
        assert!(env.contains(&("WARREN_URL".into(), "http://user.example".into())));
        assert!(env.contains(&("HOME".into(), "/home/u".into())));
        assert!(env.contains(&("PATH".into(), DEFAULT_PATH.into())));
        assert!(env.contains(&("LANG".into(), "C.UTF-8".into())));
    }

    #[test]
    fn main_command_and_bad_values() {
        let config = Config::from_vars(vars(&[
            ("WARREN_AGENT_CMD", r#"["sleep","9"]"#),
            ("WARREN_AGENT_CWD", "/srv"),
            ("WARREN_AGENT_ADDR", "127.0.0.1:1"),
        ]));
        let Ok(config) = config else {
            panic!("config rejected: {config:?}");
        };
        assert_eq!(config.main_cmd, Some(vec!["sleep".into(), "9".into()]));
        assert_eq!(config.main_cwd, PathBuf::from("/srv"));
        assert!(Config::from_vars(vars(&[("WARREN_AGENT_CMD", "sleep 9")])).is_err());
        assert!(Config::from_vars(vars(&[("WARREN_AGENT_CMD", "[]")])).is_err());
        assert!(Config::from_vars(vars(&[("WARREN_AGENT_ADDR", "nope")])).is_err());
    }
}
