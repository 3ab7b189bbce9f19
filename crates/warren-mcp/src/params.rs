//! The tools' arguments: each field's doc comment is the description an agent reads in the
//! tool's JSON schema.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A new sandbox. Every field may be left out.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct Create {
    /// The image: a name from the server (`base`, the default, is Debian with python3, pip,
    /// node, npm, git and curl) or a registry reference (`python:3.12`, `ghcr.io/org/app:1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `gvisor` (the default: a user-space kernel, for untrusted code) or `runc` (plain
    /// namespaces, faster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// CPU cores (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory in MiB (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Disk in MiB for what the sandbox writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    /// Environment variables of every command in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Seconds until the sandbox is deleted (default 300; 0: never). Extend it later with
    /// `set_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Outbound network: `"allow"` (the default: the internet, never the host or other
    /// sandboxes), `"deny"`, or `{"allow": ["pypi.org", "10.0.0.0/8", ...]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Value>,
    /// Labels of yours, e.g. `{"task": "42"}`; `list_sandboxes` filters by them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// One sandbox.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Sandbox {
    /// The sandbox's id (from `create_sandbox` or `list_sandboxes`).
    pub id: String,
}

/// Which sandboxes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct List {
    /// Only those in this state (`running`, `stopped`, `paused`, `failed`, ...).
    #[serde(default)]
    pub state: Option<String>,
    /// Only those whose metadata has these values.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A shell command.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Run {
    /// The sandbox's id.
    pub id: String,
    /// A shell command line, run by `sh -c` (pipes, `&&` and redirections work).
    pub command: String,
    /// The working directory (default: the user's home).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Give up after this many seconds (default 60 for `run_command`); the command is killed.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Run as this user of the sandbox (default: its default user).
    #[serde(default)]
    pub user: Option<String>,
}

/// A background command's output.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Background {
    /// The sandbox's id.
    pub id: String,
    /// The command's handle, from `start_command`.
    pub handle: String,
    /// Bytes of its output already read: only what came after is returned (default 0).
    #[serde(default)]
    pub offset: Option<u64>,
}

/// A file to write.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Write {
    /// The sandbox's id.
    pub id: String,
    /// An absolute path; missing parent directories are made.
    pub path: String,
    /// The file's content.
    pub content: String,
    /// `text` (the default) or `base64` (binary content, encoded).
    #[serde(default)]
    pub encoding: Option<Encoding>,
}

/// How a file's content travels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Text,
    Base64,
}

/// A file or directory.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Path {
    /// The sandbox's id.
    pub id: String,
    /// An absolute path.
    pub path: String,
    /// For `read_file`: `text` (the default; invalid UTF-8 is an error) or `base64`.
    #[serde(default)]
    pub encoding: Option<Encoding>,
}

/// A port of a sandbox.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Port {
    /// The sandbox's id.
    pub id: String,
    /// The TCP port a server in the sandbox listens on.
    pub port: u16,
}

/// A new egress policy.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Egress {
    /// The sandbox's id.
    pub id: String,
    /// `"allow"`, `"deny"`, `{"allow": [...]}` or `{"allow": [...], "deny": [...]}`: networks,
    /// addresses or domain names. In force at once.
    pub egress: Value,
}

/// A new lifetime.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Timeout {
    /// The sandbox's id.
    pub id: String,
    /// Seconds from now until it is deleted.
    pub timeout_s: u64,
}

/// A snapshot to take.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Snapshot {
    /// The sandbox's id.
    pub id: String,
    /// The snapshot's name (new sandboxes are made from it by that name).
    pub name: String,
}
