//! Running a command in a sandbox through the API.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/sandboxes/{id}/exec`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
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
}

/// The answer of a synchronous exec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
}

/// The final `exit` event of a streamed exec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
