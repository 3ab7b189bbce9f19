//! API keys (`/v1/keys`) and teams (`/v1/teams`). A key's secret is shown once, at creation;
//! the server keeps a hash. Every key belongs to one team and sees only that team's sandboxes.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The team every server starts with: its admin keys are the operator's, which manage teams.
pub const DEFAULT_TEAM: &str = "default";

/// What a key may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Reads only: lists, gets, logs, events, file reads. No exec, terminal or writes.
    Read,
    /// Everything on the team's sandboxes, images, volumes, snapshots and pools.
    Sandboxes,
    /// That, and the team's keys and audit log. An admin key of the `default` team is the
    /// operator's: it also manages teams and reads `/metrics`.
    Admin,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Sandboxes => "sandboxes",
            Scope::Admin => "admin",
        })
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Scope::Read),
            "sandboxes" => Ok(Scope::Sandboxes),
            "admin" => Ok(Scope::Admin),
            _ => Err(format!(
                "unknown scope {s:?} (one of: read, sandboxes, admin)"
            )),
        }
    }
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A name to tell it by (1 to 64 printable characters; default `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its team (default: the caller's; only the operator names another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// What it may do (default `sandboxes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// When it stops working (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per second it may make (default: its team's limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// Its public id (what `DELETE /v1/keys/{id}` takes).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its team.
    #[serde(default = "default_team")]
    pub team: String,
    /// What it may do.
    #[serde(default = "admin")]
    pub scope: Scope,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked (it no longer works; kept so the audit log can name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it last made a request (to the minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    /// Its own request rate limit (requests per second), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
}

pub(crate) fn default_team() -> String {
    DEFAULT_TEAM.to_owned()
}

fn admin() -> Scope {
    Scope::Admin
}

/// A new key, with its secret in both spellings every route accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret, `wk_…`.
    pub secret: String,
    /// The same secret in E2B's spelling, `e2b_` + 40 hex digits (E2B's SDKs accept no other).
    pub e2b_secret: String,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    /// Oldest first.
    pub keys: Vec<ApiKey>,
}

/// A team's limits; each absent one is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Sandboxes running (or starting, or being made) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<u64>,
    /// CPU cores of those sandboxes together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory of those sandboxes together, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Disk of every sandbox the team keeps (stopped and paused ones too), MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
}

/// What a team holds now, measured as its [`Quotas`] count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TeamUsage {
    /// Sandboxes running (or starting, or being made).
    pub sandboxes: u64,
    /// Their CPU cores.
    pub cpu: f64,
    /// Their memory, MiB.
    pub memory_mb: u64,
    /// Disk of every sandbox kept, MiB.
    pub disk_mb: u64,
}

/// `POST /v1/teams` (the operator only).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    /// Its name: 1 to 63 lower-case letters, digits and `-`, starting with a letter or digit.
    pub name: String,
    /// Its limits.
    #[serde(default)]
    pub quotas: Quotas,
    /// Requests per second each of its keys may make (default: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
}

/// `PATCH /v1/teams/{name}`: what is given replaces what was.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTeam {
    /// New limits (all four: an absent one becomes unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
    /// New rate limit per key; `0` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
}

/// A team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Team {
    /// Its name.
    pub name: String,
    /// Its limits.
    pub quotas: Quotas,
    /// Requests per second each of its keys may make, when limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// What it holds now.
    pub usage: TeamUsage,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/teams`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamList {
    /// By name.
    pub teams: Vec<Team>,
}
