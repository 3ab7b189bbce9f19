//! Named volumes: filesystems of a fixed size that outlive sandboxes, mounted into any number
//! of them at once.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Its name: 1 to 63 of `a-z`, `0-9`, `-`, `_`, starting with a letter or digit.
    pub name: String,
    /// Its size, MiB (default 1024): writes past it fail with "no space left on device".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mb: Option<u64>,
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// Its size, MiB.
    pub size_mb: u64,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Bytes in use on it (its filesystem's own metadata included), when it is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Sandboxes (not deleted) that mount it.
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// `POST /v1/volumes/{name}/backup`: a copy of the volume sent to the server's object store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VolumeBackup {
    /// The volume.
    pub name: String,
    /// Where the copy is (`<store>/volumes/<name>`).
    pub stored: String,
    /// Bytes sent: its filesystem's data (holes are not sent).
    pub bytes: u64,
    /// When the copy was taken.
    pub backed_up_at: DateTime<Utc>,
    /// How long the backup took, ms.
    pub took_ms: u64,
}

/// `GET /v1/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeList {
    /// Every volume, by name.
    pub volumes: Vec<Volume>,
}

/// A volume mounted into a sandbox (`"volumes"` at create).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume's name.
    pub name: String,
    /// Where it appears inside the sandbox (absolute).
    pub path: String,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
}
