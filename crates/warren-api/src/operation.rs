//! Operations: what a mutating call does, recorded in the store and carried out by the server
//! whether or not the client that asked stays to see it.
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ErrorDetail;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// Makes a sandbox (and starts it, unless asked not to wait).
    Create,
    /// Starts a stopped sandbox.
    Start,
    /// Stops a running sandbox.
    Stop,
    /// Deletes a sandbox.
    Delete,
    /// Pauses a running sandbox.
    Pause,
    /// Resumes a paused sandbox.
    Resume,
    /// Forks a paused sandbox.
    Fork,
    /// Snapshots a sandbox.
    Snapshot,
    /// Pulls an image from a registry.
    Pull,
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// Recorded, waiting for a worker.
    Queued,
    /// Being carried out.
    Running,
    /// Done; `result` holds what the call answers.
    Succeeded,
    /// Given up; `error` says why.
    Failed,
}

impl OperationState {
    /// Whether it has ended (succeeded or failed).
    pub fn is_done(self) -> bool {
        matches!(self, OperationState::Succeeded | OperationState::Failed)
    }
}

macro_rules! names {
    ($ty:ident { $($variant:ident = $name:literal),* $(,)? }) => {
        impl $ty {
            /// The name the API and the store use.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($ty::$variant),)*
                    _ => Err(format!(
                        concat!("unknown ", stringify!($ty), " {:?} (expected one of: ", $($name, " ",)* ")"),
                        s
                    )),
                }
            }
        }
    };
}

names!(OperationKind {
    Create = "create",
    Start = "start",
    Stop = "stop",
    Delete = "delete",
    Pause = "pause",
    Resume = "resume",
    Fork = "fork",
    Snapshot = "snapshot",
    Pull = "pull",
});

names!(OperationState {
    Queued = "queued",
    Running = "running",
    Succeeded = "succeeded",
    Failed = "failed",
});

/// One operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    /// Its id (`op-` and 20 lowercase letters and digits).
    pub id: String,
    /// What it does.
    pub kind: OperationKind,
    /// What it acts on: a sandbox id, an image reference; empty for a create until its
    /// sandbox is recorded.
    pub target: String,
    /// Where it is.
    pub state: OperationState,
    /// Higher runs first when workers are short.
    pub priority: u8,
    /// How many times it was begun (a transient failure is retried; a restart resumes).
    pub attempts: u32,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// What the call answers once it succeeded (the sandbox, the image, the snapshot).
    /// (`null` for a delete.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When a worker began it (last attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// The team of the key that asked for it (only that team sees it).
    #[serde(default = "crate::key::default_team")]
    pub team: String,
}

/// `GET /v1/operations`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct OperationList {
    /// Newest first.
    pub operations: Vec<Operation>,
}
