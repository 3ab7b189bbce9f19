//! Sandboxes as the API shows them, and the request that creates one.
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::egress::Egress;
use crate::id::SandboxId;

/// Which OCI runtime isolates a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// gVisor (`runsc`): a user-space kernel between the code and the host. For untrusted code.
    #[default]
    Gvisor,
    /// Plain namespaces and cgroups (`crun`): fastest, shares the host kernel.
    Runc,
}

impl Runtime {
    /// Every runtime, in a stable order.
    pub const ALL: [Runtime; 2] = [Runtime::Gvisor, Runtime::Runc];

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Gvisor => "gvisor",
            Runtime::Runc => "runc",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gvisor" | "runsc" => Ok(Runtime::Gvisor),
            "runc" | "crun" => Ok(Runtime::Runc),
            other => Err(format!(
                "unknown runtime {other:?} (expected gvisor or runc)"
            )),
        }
    }
}

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Recorded, not yet worked on.
    Pending,
    /// Image ready, rootfs and network being made.
    Provisioning,
    /// Runtime started, waiting for the agent.
    Starting,
    /// Agent healthy: usable.
    Running,
    /// Being stopped.
    Stopping,
    /// Stopped: its files are kept, `start` brings it back.
    Stopped,
    /// Being paused: its processes are being written to disk.
    Pausing,
    /// Paused: its processes, memory and files are on disk (`pause` says where and what),
    /// nothing of it runs; `resume` brings it back as it was, at the same address.
    Paused,
    /// Being resumed from its pause image.
    Resuming,
    /// Something failed; `error` says what. Its host resources are released.
    Failed,
    /// Being deleted.
    Terminating,
    /// Gone.
    Deleted,
}

impl SandboxState {
    /// Whether a sandbox in this state has its network (namespace, address, firewall rules).
    pub fn holds_network(self) -> bool {
        matches!(
            self,
            SandboxState::Starting
                | SandboxState::Running
                | SandboxState::Pausing
                | SandboxState::Paused
                | SandboxState::Resuming
                | SandboxState::Stopping
        )
    }

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Pending => "pending",
            SandboxState::Provisioning => "provisioning",
            SandboxState::Starting => "starting",
            SandboxState::Running => "running",
            SandboxState::Stopping => "stopping",
            SandboxState::Stopped => "stopped",
            SandboxState::Pausing => "pausing",
            SandboxState::Paused => "paused",
            SandboxState::Resuming => "resuming",
            SandboxState::Failed => "failed",
            SandboxState::Terminating => "terminating",
            SandboxState::Deleted => "deleted",
        }
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for SandboxState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown sandbox state {s:?}"))
    }
}

/// `PUT /v1/sandboxes/{id}/network`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetNetwork {
    /// The new outbound policy, in force at once (and across stop/start).
    pub egress: Egress,
}

/// A TCP port something listens on inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ListeningPort {
    /// The port.
    pub port: u16,
    /// The address bound (`0.0.0.0` or `::` for all). Only ports bound to all addresses or
    /// the sandbox's own are reachable through the preview proxy.
    pub address: String,
    /// Its preview URL, when the proxy can reach it (bound to all addresses or the sandbox's
    /// own; a port bound to loopback only is not reachable from outside the sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What happens to a sandbox when its `expires_at` passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Delete it and everything it holds.
    #[default]
    Delete,
    /// Stop it, keeping its files; `start` brings it back.
    Stop,
    /// Pause it, keeping its processes and memory too; `resume` brings it back as it was
    /// (where pause is not possible, as under runc without CRIU, it is stopped instead).
    Pause,
}

/// The image a create request that names none gets.
pub const DEFAULT_IMAGE: &str = "base";

/// `POST /v1/sandboxes`. Every field is optional.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// Image name or registry reference; [`DEFAULT_IMAGE`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When to pull the image from its registry: `missing` (default), `always`, `never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<crate::image::PullPolicy>,
    /// Runtime; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// CPU cores (fractions allowed). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory limit in MiB. Default 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Disk budget in MiB. Default 2048.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    /// Process limit. Default 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Environment for the main command and every exec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Main command, started by the agent; none when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// Working directory of the main command. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The user commands, files and terminals act as unless a request names another
    /// (a name from the image's `/etc/passwd`). Default `root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Lifetime in seconds (`0` = no limit). Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// What expiry does: `delete` (default), `stop` or `pause`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// Resume it, once paused, when a request reaches its preview URLs or its agent (exec,
    /// files, terminals): the request waits for the resume and then goes through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_resume: Option<bool>,
    /// Volumes to mount (`[{"name", "path", "read_only"}]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::VolumeMount>,
    /// Make it from this snapshot: its image, runtime, limits, command and volumes are the
    /// snapshot's sandbox's (the request may not set them), its files a copy of the
    /// snapshot's, and, for a snapshot with memory, its processes already running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Outbound network policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Egress>,
    /// Whether its ports are open to anyone through the preview proxy. Default false: a
    /// request needs the sandbox's `traffic_token` (or an API key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
    /// The `Host` header requests to its ports carry (E2B's `maskRequestHost`), `${PORT}`
    /// standing for the port, e.g. `localhost:${PORT}` for a dev server that checks it.
    /// Default: the host the client asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_host: Option<String>,
    /// Answer only once running (default) or at once with `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

/// A sandbox as every route shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Sandbox {
    /// Its id.
    pub id: SandboxId,
    /// Where it is in its life.
    pub state: SandboxState,
    /// Image name.
    pub image: String,
    /// Digest of that image when the sandbox was made.
    pub image_digest: String,
    /// Its runtime.
    pub runtime: Runtime,
    /// CPU cores.
    pub cpu: f64,
    /// Memory limit, MiB.
    pub memory_mb: u64,
    /// Disk budget, MiB.
    pub disk_mb: u64,
    /// Process limit.
    pub pids: u64,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Main command.
    pub cmd: Vec<String>,
    /// Working directory of the main command.
    pub cwd: String,
    /// The default user inside.
    #[serde(default = "root")]
    pub user: String,
    /// Labels.
    pub metadata: BTreeMap<String, String>,
    /// Volumes mounted into it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::VolumeMount>,
    /// Outbound network policy.
    pub egress: Egress,
    /// Whether its ports are open to anyone through the preview proxy.
    #[serde(default)]
    pub public: bool,
    /// The token that opens its private ports through the preview proxy (header
    /// `X-Warren-Traffic-Token`, or `?warren_token=` once in a browser).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_token: Option<String>,
    /// The `Host` header requests to its ports carry, `${PORT}` standing for the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_host: Option<String>,
    /// Its address on the host's sandbox network, while it has one.
    pub ip: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last became running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it will be reaped, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// What happens then.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// Whether a request to it resumes it when it is paused.
    #[serde(default)]
    pub auto_resume: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// Preview URLs by port: the ports listening now and those its image exposes.
    pub urls: BTreeMap<String, String>,
    /// Ports its image declares (`ExposedPorts`); their URLs are in `urls` even before
    /// anything listens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<u16>,
    /// TCP ports listening inside now (read from its agent when the sandbox is running; only
    /// on `GET /v1/sandboxes/{id}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ListeningPort>,
    /// The receipt of its last pause, while it is paused (or being resumed from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<crate::PauseReceipt>,
    /// The warm pool it waits in, until a create takes it (such sandboxes are not listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The team it belongs to: only that team's keys see it.
    #[serde(default = "crate::key::default_team")]
    pub team: String,
    /// The Warren server whose host runs it (several servers may share one database); calls
    /// that act on it go to that server.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
}

impl Sandbox {
    /// Its address, while it has one.
    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        self.ip.as_deref().and_then(|ip| ip.parse().ok())
    }
}

fn root() -> String {
    "root".to_owned()
}

/// `GET /v1/sandboxes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    /// The caller's sandboxes, newest first.
    pub sandboxes: Vec<Sandbox>,
}

/// `POST /v1/sandboxes/{id}/resume` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeSandbox {
    /// Lifetime in seconds from the resume; `0` = no limit. Without it: the default lifetime
    /// if the sandbox had one, else none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

/// `POST /v1/sandboxes/{id}/fork` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkSandbox {
    /// The fork's labels [default: the source's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The fork's lifetime in seconds; `0` = no limit [default: 300].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

/// `POST /v1/sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTimeout {
    /// New lifetime in seconds from now; `0` = no limit.
    pub timeout_s: u64,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The main command's standard output.
    Stdout,
    /// The main command's standard error (and the agent's own notes).
    Stderr,
    /// A lifecycle event of the sandbox.
    Event,
}

impl LogStream {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Event => "event",
        }
    }
}

/// One line of a sandbox's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct LogLine {
    /// Position in the sandbox's log: 1, 2, 3, ... with no gaps.
    pub seq: u64,
    /// When Warren read it.
    pub ts: DateTime<Utc>,
    /// Where it came from.
    pub stream: LogStream,
    /// The line, without its newline.
    pub text: String,
}

/// `GET /v1/sandboxes/{id}/logs?follow=false`: one page of the stored log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogList {
    /// Lines after the requested position, oldest first: at most `limit`, and at most a few
    /// MiB of text (always at least one line when any is stored).
    pub lines: Vec<LogLine>,
    /// Where the next page starts: pass it as `after` (the last line's `seq`, or the `after`
    /// asked for when the page is empty).
    #[serde(default)]
    pub next: u64,
    /// Whether more lines were stored after this page when it was read.
    #[serde(default)]
    pub more: bool,
    /// Lines dropped from the start of the log to keep it within the server's caps
    /// (`--log-keep-lines`, `--log-keep-bytes`): `seq`s 1 to `dropped` are gone.
    #[serde(default)]
    pub dropped: u64,
}

/// `GET /v1/sandboxes/{id}/metrics`: what a running sandbox uses now, from its cgroup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SandboxMetrics {
    /// When it was measured.
    pub timestamp: DateTime<Utc>,
    /// CPU cores it may use.
    pub cpu_count: f64,
    /// CPU used over a short window just before `timestamp`, in percent of `cpu_count`.
    pub cpu_used_pct: f64,
    /// Memory charged to it now (page cache included), bytes.
    pub mem_used: u64,
    /// The page-cache part of `mem_used`, bytes.
    pub mem_cache: u64,
    /// Its memory limit, bytes.
    pub mem_total: u64,
    /// Bytes it has written to its own layer.
    pub disk_used: u64,
    /// Its disk budget, bytes.
    pub disk_total: u64,
}
