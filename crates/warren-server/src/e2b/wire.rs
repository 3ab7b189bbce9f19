//! E2B's JSON shapes, as its SDKs (`e2b` 2.63 on PyPI, 2.51 on npm) send and parse them.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use warren_api::{Egress, Sandbox, SandboxMetrics, SandboxState};

/// E2B's `clientID`: which cluster a sandbox runs on (one, here).
const CLIENT_ID: &str = "warren";

/// `POST /sandboxes` and `/v2/sandboxes`. Fields Warren has nothing to do with are ignored:
/// `secure` (the agent always wants its token, and the token is always returned).
/// `autoPause` pauses at the timeout (with `autoPauseMemory: false`, stops).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    /// The template: a Warren image name (or registry reference).
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Lifetime in seconds.
    pub timeout: Option<u64>,
    pub auto_pause: Option<bool>,
    /// With `autoPause`: keep the memory (default) or the files only (a stop).
    pub auto_pause_memory: Option<bool>,
    pub auto_resume: Option<Value>,
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    pub network: Option<NetworkConfig>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub env_vars: Option<BTreeMap<String, String>>,
    pub mcp: Option<Value>,
    pub iam: Option<Value>,
    pub volume_mounts: Option<Vec<VolumeMountE2b>>,
}

/// A create's `volumeMounts` entry.
#[derive(Debug, Deserialize)]
pub struct VolumeMountE2b {
    pub name: String,
    pub path: String,
}

/// `POST /sandboxes/{id}/pause` (the body is optional). `requireHealthyGuest` is ignored: a
/// Warren pause never asks the agent anything, so its health changes nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseRequest {
    /// Keep the memory (`true`, the default) or the files only.
    pub memory: Option<bool>,
}

/// A create's `network`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    pub allow_public_traffic: Option<bool>,
    pub allow_out: Option<Vec<String>>,
    pub deny_out: Option<Vec<String>>,
    pub dns_servers: Option<Value>,
    pub egress_proxy: Option<Value>,
    pub mask_request_host: Option<String>,
    pub https_ports: Option<Value>,
    pub rules: Option<Value>,
}

impl NewSandbox {
    /// What the timeout does: `autoPause` pauses (stops, with `autoPauseMemory: false`).
    pub fn on_timeout(&self) -> Option<warren_api::OnTimeout> {
        match (self.auto_pause, self.auto_pause_memory) {
            (Some(true), Some(false)) => Some(warren_api::OnTimeout::Stop),
            (Some(true), _) => Some(warren_api::OnTimeout::Pause),
            _ => None,
        }
    }

    /// `autoResume: {"enabled": true}` (older SDKs sent a bare boolean).
    pub fn auto_resume(&self) -> bool {
        match &self.auto_resume {
            Some(Value::Bool(b)) => *b,
            Some(Value::Object(o)) => o.get("enabled").and_then(Value::as_bool) == Some(true),
            _ => false,
        }
    }

    /// `volumeMounts`, as Warren's volumes (read-write: E2B's have no read-only flag).
    pub fn volume_mounts(&self) -> Vec<warren_api::VolumeMount> {
        self.volume_mounts
            .iter()
            .flatten()
            .map(|m| warren_api::VolumeMount {
                name: m.name.clone(),
                path: m.path.clone(),
                read_only: false,
            })
            .collect()
    }

    /// The options Warren has no counterpart for, when the request sets them.
    pub fn unsupported(&self) -> Vec<&'static str> {
        let set = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
        let mut out = Vec::new();
        if set(&self.mcp) {
            out.push("mcp");
        }
        if set(&self.iam) {
            out.push("iam");
        }
        if let Some(n) = &self.network {
            for (name, v) in [
                ("network.dnsServers", &n.dns_servers),
                ("network.egressProxy", &n.egress_proxy),
                ("network.httpsPorts", &n.https_ports),
                ("network.rules", &n.rules),
            ] {
                if set(v) {
                    out.push(name);
                }
            }
        }
        out
    }

    /// Warren's egress policy for the create's `allow_internet_access` and `network`.
    pub fn egress(&self) -> Result<Egress, String> {
        let net = self.network.as_ref();
        egress(
            self.allow_internet_access,
            net.and_then(|n| n.allow_out.as_deref()),
            net.and_then(|n| n.deny_out.as_deref()),
        )
    }

    /// The `Host` its ports are sent (`${PORT}` for the port).
    pub fn request_host(&self) -> Option<String> {
        self.network.as_ref()?.mask_request_host.clone()
    }

    /// Whether anyone may reach the sandbox's ports (E2B's default) or only holders of its
    /// traffic token.
    pub fn public(&self) -> bool {
        self.network
            .as_ref()
            .and_then(|n| n.allow_public_traffic)
            .unwrap_or(true)
    }
}

/// Warren's egress policy for E2B's `allow_internet_access` and `allowOut`/`denyOut`: what
/// `allowOut` names (networks, addresses, domain names) always passes, then `denyOut`
/// (networks, addresses) is refused, then the rest passes; no internet access is a `denyOut`
/// of everything. `Err` names what cannot be expressed.
fn egress(
    internet: Option<bool>,
    allow: Option<&[String]>,
    deny: Option<&[String]>,
) -> Result<Egress, String> {
    let allow = allow.unwrap_or_default().to_vec();
    let mut deny = deny.unwrap_or_default().to_vec();
    if internet == Some(false) {
        deny.push("0.0.0.0/0".to_owned());
    }
    let everything = |d: &String| d.trim() == "0.0.0.0/0";
    Ok(if deny.is_empty() {
        // Nothing denied: allowOut alone changes nothing.
        Egress::Allow
    } else if deny.iter().all(everything) {
        // Everything denied: only what allowOut names, Warren's allow-list.
        if allow.is_empty() {
            Egress::Deny
        } else {
            Egress::Only(allow)
        }
    } else {
        Egress::Rules { allow, deny }
    })
}

/// `PUT /sandboxes/{id}/network`: a running sandbox's new outbound policy (replaced whole, as
/// in E2B: what is left out is cleared) and, when given, whether its ports are public.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkUpdate {
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    /// As at create: `false` makes the ports need the traffic token, `true` opens them.
    pub allow_public_traffic: Option<bool>,
    pub allow_out: Option<Vec<String>>,
    pub deny_out: Option<Vec<String>>,
    pub dns_servers: Option<Value>,
    pub egress_proxy: Option<Value>,
    pub rules: Option<Value>,
}

impl NetworkUpdate {
    /// The new policy; `Err` for what Warren cannot do.
    pub fn egress(&self) -> Result<Egress, String> {
        let set = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
        for (name, v) in [
            ("dnsServers", &self.dns_servers),
            ("egressProxy", &self.egress_proxy),
            ("rules", &self.rules),
        ] {
            if set(v) {
                return Err(format!("not supported by Warren: {name}"));
            }
        }
        egress(
            self.allow_internet_access,
            self.allow_out.as_deref(),
            self.deny_out.as_deref(),
        )
    }
}

/// `POST /sandboxes/{id}/connect` and `/timeout`.
#[derive(Debug, Default, Deserialize)]
pub struct Timeout {
    pub timeout: Option<u64>,
}

/// The fields naming a sandbox in every E2B answer about it.
#[derive(Debug, Serialize)]
pub struct Identity {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub alias: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: &'static str,
}

impl Identity {
    fn of(sandbox: &Sandbox) -> Identity {
        Identity {
            template_id: sandbox.image.clone(),
            sandbox_id: sandbox.id.to_string(),
            client_id: CLIENT_ID,
            alias: sandbox.image.clone(),
            envd_version: warren_agent::ENVD_VERSION,
        }
    }
}

/// A created or connected sandbox.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    #[serde(flatten)]
    pub identity: Identity,
    pub envd_access_token: String,
    pub traffic_access_token: Option<String>,
    pub domain: String,
}

impl Created {
    pub fn of(sandbox: &Sandbox, envd_token: String, domain: String) -> Created {
        Created {
            identity: Identity::of(sandbox),
            envd_access_token: envd_token,
            traffic_access_token: (!sandbox.public)
                .then(|| sandbox.traffic_token.clone())
                .flatten(),
            domain,
        }
    }
}

/// `GET /sandboxes/{id}`, and each entry of the lists (which leave out the tokens).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    #[serde(flatten)]
    pub identity: Identity,
    pub started_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub cpu_count: u64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub state: &'static str,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// E2B's state for a Warren state: a stopped sandbox is what E2B calls paused (connect
/// brings it back, with its files); `None` for sandboxes E2B would not show.
pub fn state(s: SandboxState) -> Option<&'static str> {
    match s {
        SandboxState::Pending
        | SandboxState::Provisioning
        | SandboxState::Starting
        | SandboxState::Running
        | SandboxState::Resuming => Some("running"),
        SandboxState::Stopped
        | SandboxState::Pausing
        | SandboxState::Paused
        | SandboxState::Stopping => Some("paused"),
        SandboxState::Failed | SandboxState::Terminating | SandboxState::Deleted => None,
    }
}

/// What E2B shows as `endAt` for a sandbox with no time limit.
fn never() -> DateTime<Utc> {
    chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map_or(DateTime::<Utc>::MAX_UTC, |d| d.and_utc())
}

impl Detail {
    /// `None` for a sandbox E2B would not show.
    pub fn of(sandbox: &Sandbox) -> Option<Detail> {
        let started_at = sandbox.started_at.unwrap_or(sandbox.created_at);
        Some(Detail {
            identity: Identity::of(sandbox),
            started_at,
            end_at: sandbox.expires_at.unwrap_or_else(never),
            cpu_count: sandbox.cpu.ceil().max(1.0) as u64,
            memory_mb: sandbox.memory_mb,
            disk_size_mb: sandbox.disk_mb,
            state: state(sandbox.state)?,
            metadata: sandbox.metadata.clone(),
            envd_access_token: None,
            domain: None,
        })
    }
}

/// One entry of `GET /sandboxes/{id}/metrics`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    pub timestamp: DateTime<Utc>,
    pub timestamp_unix: i64,
    pub cpu_count: u64,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

impl From<SandboxMetrics> for Metric {
    fn from(m: SandboxMetrics) -> Self {
        Metric {
            timestamp: m.timestamp,
            timestamp_unix: m.timestamp.timestamp(),
            cpu_count: m.cpu_count.ceil().max(1.0) as u64,
            cpu_used_pct: m.cpu_used_pct,
            mem_used: m.mem_used,
            mem_total: m.mem_total,
            mem_cache: m.mem_cache,
            disk_used: m.disk_used,
            disk_total: m.disk_total,
        }
    }
}
