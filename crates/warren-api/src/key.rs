//! API keys: `/v1/keys`. A key's secret is shown once, at creation; the server keeps a hash.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /v1/keys`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A name to tell it by (1 to 64 printable characters; default `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Its public id (what `DELETE /v1/keys/{id}` takes).
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A new key, with its secret in both spellings every route accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyList {
    /// Oldest first.
    pub keys: Vec<ApiKey>,
}
