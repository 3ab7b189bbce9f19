//! Registry credentials from a Docker `config.json` (`--registry-auth FILE`): the `auths` map,
//! each entry `auth` (base64 `user:password`), `username`/`password`, `identitytoken` or
//! `registrytoken`. Credential helpers (`credsStore`) are not run.
use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::PullError;

#[derive(Debug, Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Debug, Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
    registrytoken: Option<String>,
}

/// Credentials by registry host.
#[derive(Debug, Clone, Default)]
pub struct RegistryAuths {
    by_host: HashMap<String, RegistryAuth>,
}

/// `https://index.docker.io/v1/` → `index.docker.io`: config keys are URLs or bare hosts.
fn host_of(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

/// Docker Hub goes by several names; oci-client speaks to `index.docker.io`.
fn canonical_host(host: &str) -> &str {
    match host {
        "docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "index.docker.io",
        h => h,
    }
}

impl RegistryAuths {
    /// Reads a Docker `config.json`.
    pub fn load(path: &Path) -> Result<Self, PullError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PullError::Config(format!("reading registry auth {}: {e}", path.display()))
        })?;
        Self::parse(&text)
            .map_err(|e| PullError::Config(format!("registry auth {}: {e}", path.display())))
    }

    /// Parses a Docker `config.json`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: DockerConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut by_host = HashMap::new();
        for (key, entry) in cfg.auths {
            let host = host_of(&key);
            let auth = entry_auth(&entry).map_err(|e| format!("entry {key:?}: {e}"))?;
            if let Some(auth) = auth {
                by_host.insert(canonical_host(&host).to_owned(), auth);
            }
        }
        Ok(RegistryAuths { by_host })
    }

    /// What to present to `registry` (as oci-client resolves it); anonymous when unknown.
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        self.by_host
            .get(canonical_host(&registry.to_ascii_lowercase()))
            .cloned()
            .unwrap_or(RegistryAuth::Anonymous)
    }
}

fn entry_auth(e: &AuthEntry) -> Result<Option<RegistryAuth>, String> {
    if let Some(token) = e.registrytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(RegistryAuth::Bearer(token.clone())));
    }
    if let (Some(user), Some(pass)) = (&e.username, &e.password) {
        return Ok(Some(RegistryAuth::Basic(user.clone(), pass.clone())));
    }
    if let Some(b64) = e.auth.as_ref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("auth is not base64: {e}"))?;
        let text = String::from_utf8(raw).map_err(|_| "auth is not UTF-8".to_owned())?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| "auth is not base64 of user:password".to_owned())?;
        // An identity token goes where the password would, under a placeholder user.
        let pass = e.identitytoken.clone().unwrap_or_else(|| pass.to_owned());
        return Ok(Some(RegistryAuth::Basic(user.to_owned(), pass)));
    }
    if let Some(token) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(RegistryAuth::Basic("<token>".into(), token.clone())));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config_entries() {
        let cfg = r#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "YWxpY2U6czNjcmV0"},
            "127.0.0.1:5001": {"username": "bob", "password": "pw"},
            "ghcr.io": {"registrytoken": "tok"},
            "empty.example": {}
        }}"#;
        let auths = RegistryAuths::parse(cfg).expect("parse");
        assert!(matches!(
            auths.for_registry("index.docker.io"),
            RegistryAuth::Basic(u, p) if u == "alice" && p == "s3cret"
        ));
        assert!(matches!(
            auths.for_registry("docker.io"),
            RegistryAuth::Basic(u, _) if u == "alice"
        ));
        assert!(matches!(
            auths.for_registry("127.0.0.1:5001"),
            RegistryAuth::Basic(u, p) if u == "bob" && p == "pw"
        ));
        assert!(matches!(auths.for_registry("ghcr.io"), RegistryAuth::Bearer(t) if t == "tok"));
        assert!(matches!(
            auths.for_registry("empty.example"),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(
            auths.for_registry("elsewhere.example"),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn refuses_garbage() {
        assert!(RegistryAuths::parse("not json").is_err());
        assert!(RegistryAuths::parse(r#"{"auths": {"h": {"auth": "%%%"}}}"#).is_err());
    }
}
