//! The audit log (`GET /v1/audit`): who changed what, when, from where, and how it ended.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Its place in the log (grows; `before` pages back by it).
    pub seq: u64,
    /// When the answer was sent.
    pub at: DateTime<Utc>,
    /// The API key that made the call (its id).
    pub key_id: String,
    /// That key's team.
    pub team: String,
    /// The HTTP method.
    pub method: String,
    /// The path called.
    pub path: String,
    /// The route, as the API names it (`/v1/sandboxes/{id}/exec`): with `method`, what was
    /// done.
    pub route: String,
    /// What it acted on (a sandbox id, a volume's name, ...), when the route names one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// The answer's status.
    pub status: u16,
    /// The client's address.
    pub client: String,
    /// The request's id (`X-Request-Id`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
}

/// `GET /v1/audit`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// The entries.
    pub entries: Vec<AuditEntry>,
}
