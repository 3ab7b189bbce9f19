//! The agent's configuration, read once from the `WARREN_AGENT_*` environment the server puts in
//! the OCI config, and the base environment every process the agent starts inherits.
//!
//! The access token itself is not in that environment: PID 1's environment is readable by every
//! user of the sandbox under gVisor (`/proc/1/environ` is 0444 there), and the token lets its
//! holder act as root through the agent. The server bind-mounts it as a root-only file and
//! names that file in `WARREN_AGENT_TOKEN_FILE`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the agent listens when `WARREN_AGENT_ADDR` is unset (envd's port).
const DEFAULT_ADDR: &str = "0.0.0.0:49983";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_HOME: &str = "/root";
/// Names the file holding the access token.
const TOKEN_FILE_VAR: &str = "WARREN_AGENT_TOKEN_FILE";
/// The token itself, for an agent started by hand or by tests on the host; the file wins.
const TOKEN_VAR: &str = "WARREN_AGENT_TOKEN";

/// Everything the server needs to know at start.
#[derive(Debug)]
pub struct Config {
    /// Required `X-Access-Token`; `None` (neither variable set) disables the check.
    pub token: Option<String>,
    /// The file the token came from: read again when a request brings another token, so a
    /// restored copy of this agent (a fork) takes its own sandbox's token.
    pub token_file: Option<std::path::PathBuf>,
    /// Listen address.
    pub addr: SocketAddr,
    /// The sandbox's main command, started with the agent.
    pub main_cmd: Option<Vec<String>>,
    /// Working directory of the main command.
    pub main_cwd: PathBuf,
    /// Environment of started processes before a request's `envs`.
    pub child_env: Vec<(OsString, OsString)>,
    /// The sandbox's process limit to hold from inside (`WARREN_AGENT_PIDS`, under gVisor).
    pub pids: Option<u64>,
    /// OOM score of started processes (`WARREN_AGENT_CHILD_OOM_SCORE_ADJ`, under runc).
    pub child_oom_score_adj: Option<i32>,
}

impl Config {
    /// Reads the configuration from this process's environment.
    pub fn from_env() -> Result<Config, String> {
        Config::from_vars(std::env::vars_os())
    }

    fn from_vars(vars: impl Iterator<Item = (OsString, OsString)>) -> Result<Config, String> {
        let vars: Vec<(OsString, OsString)> = vars.collect();
        let get_os = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let get = |name: &str| get_os(name).map(|v| v.to_string_lossy().into_owned());
        let token_file = get_os(TOKEN_FILE_VAR).map(std::path::PathBuf::from);
        let token = match get_os(TOKEN_FILE_VAR) {
            Some(path) => Some(read_token(Path::new(path))?),
            None => get(TOKEN_VAR),
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

        let pids = match get("WARREN_AGENT_PIDS") {
            None => None,
            Some(text) => Some(
                text.parse()
                    .map_err(|e| format!("WARREN_AGENT_PIDS={text:?} is not a number: {e}"))?,
            ),
        };

        let child_oom_score_adj = match get("WARREN_AGENT_CHILD_OOM_SCORE_ADJ") {
            None => None,
            Some(text) => Some(text.parse().map_err(|e| {
                format!("WARREN_AGENT_CHILD_OOM_SCORE_ADJ={text:?} is not a number: {e}")
            })?),
        };

        Ok(Config {
            pids,
            child_oom_score_adj,
            token,
            token_file,
            addr,
            main_cmd,
            main_cwd,
            child_env,
        })
    }
}

/// The token in `path`, without surrounding whitespace. Any failure is fatal to the caller: an
/// agent told to require a token must never serve without one.
fn read_token(path: &Path) -> Result<String, String> {
    if path.as_os_str().is_empty() {
        return Err(format!("{TOKEN_FILE_VAR} is set but empty"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the access token from {TOKEN_FILE_VAR}={}: {e}",
            path.display()
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "the access token file {TOKEN_FILE_VAR}={} is empty",
            path.display()
        ));
    }
    Ok(token.to_owned())
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

    fn token_of(pairs: &[(&str, &str)]) -> Result<Option<String>, String> {
        Config::from_vars(vars(pairs)).map(|c| c.token)
    }

    #[test]
    fn token_comes_from_its_file_and_the_file_wins() {
        let dir = std::env::temp_dir().join(format!("warren-token-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("token");
        assert!(std::fs::write(&file, "from-file\n").is_ok());
        let path = file.to_string_lossy().into_owned();
        assert_eq!(
            token_of(&[(TOKEN_FILE_VAR, &path)]),
            Ok(Some("from-file".into()))
        );
        assert_eq!(
            token_of(&[(TOKEN_FILE_VAR, &path), (TOKEN_VAR, "from-env")]),
            Ok(Some("from-file".into()))
        );
        assert_eq!(
            token_of(&[(TOKEN_VAR, "from-env")]),
            Ok(Some("from-env".into()))
        );
        assert_eq!(token_of(&[]), Ok(None));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unusable_token_file_is_fatal_never_unauthenticated() {
        let dir = std::env::temp_dir().join(format!("warren-token-bad-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let missing = dir.join("missing").to_string_lossy().into_owned();
        let Err(e) = token_of(&[(TOKEN_FILE_VAR, &missing), (TOKEN_VAR, "from-env")]) else {
            panic!("a missing token file was accepted");
        };
        assert!(e.contains(TOKEN_FILE_VAR) && e.contains(&missing), "{e}");
        let blank = dir.join("blank");
        assert!(std::fs::write(&blank, " \n").is_ok());
        let blank = blank.to_string_lossy().into_owned();
        assert!(token_of(&[(TOKEN_FILE_VAR, &blank)]).is_err());
        // A directory cannot be read as a file.
        let dir_path = dir.to_string_lossy().into_owned();
        assert!(token_of(&[(TOKEN_FILE_VAR, &dir_path)]).is_err());
        assert!(token_of(&[(TOKEN_FILE_VAR, "")]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
