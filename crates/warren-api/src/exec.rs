//! Running a command in a sandbox through the API.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/sandboxes/{id}/exec`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up on `PATH`.
    pub cmd: Vec<String>,
    /// Extra environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Text written to the command's standard input, which is then closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Kill the command after this many seconds. Default 60; `0` = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// A human label for the command history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Run as this user of the sandbox (from its `/etc/passwd`); default: the sandbox's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The answer of a synchronous exec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ExecResult {
    /// Exec id.
    pub id: String,
    /// Exit code; `128 + n` when killed by signal `n`.
    pub exit_code: i32,
    /// Standard output, as text (invalid UTF-8 replaced).
    pub stdout: String,
    /// Standard error, as text.
    pub stderr: String,
    /// Wall time from start to exit.
    pub duration_ms: u64,
    /// Whether the command was killed for exceeding `timeout_s`.
    pub timed_out: bool,
    /// Whether `stdout` or `stderr` was cut: each keeps at most the server's exec output
    /// limit (`warren serve --exec-output-limit`, 10 MiB by default) of the command's first
    /// bytes; the command still ran to its end. A streamed exec (SSE) carries all of it.
    #[serde(default)]
    pub truncated: bool,
    /// Bytes of standard output left out of `stdout` (0 unless `truncated`).
    #[serde(default)]
    pub stdout_dropped: u64,
    /// Bytes of standard error left out of `stderr`.
    #[serde(default)]
    pub stderr_dropped: u64,
}

/// The final `exit` event of a streamed exec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ExecExit {
    /// Exec id.
    pub id: String,
    /// Exit code; `128 + n` when killed by signal `n`.
    pub exit_code: i32,
    /// Wall time from start to exit.
    pub duration_ms: u64,
    /// Whether the command was killed for exceeding `timeout_s`.
    pub timed_out: bool,
}

/// Who ran a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecKind {
    /// A caller of the API.
    User,
    /// Warren itself, while provisioning (mounting, network, starting).
    System,
}

impl ExecKind {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecKind::User => "user",
            ExecKind::System => "system",
        }
    }
}

/// One entry of a sandbox's command history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ExecRecord {
    /// Exec id.
    pub id: String,
    /// What ran.
    pub cmd: Vec<String>,
    /// The label the caller gave, or Warren's description of a system step.
    pub label: Option<String>,
    /// Who ran it.
    pub kind: ExecKind,
    /// Exit code; none if it never finished.
    pub exit_code: Option<i32>,
    /// Standard output, truncated to 64 KiB.
    pub stdout: String,
    /// Standard error, truncated to 64 KiB.
    pub stderr: String,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// How long it took.
    pub duration_ms: u64,
}

/// `GET /v1/sandboxes/{id}/execs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecList {
    /// Oldest first.
    pub execs: Vec<ExecRecord>,
}

/// How much of each stream the history keeps.
pub const HISTORY_OUTPUT_LIMIT: usize = 64 * 1024;
