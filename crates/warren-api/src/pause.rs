//! What a pause leaves behind, and says of itself: the receipt (`GET /v1/sandboxes/{id}`
//! `pause`), written beside the image and checked before a resume trusts it.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::sandbox::Runtime;

/// One part of a pause image: the memory (the runtime's checkpoint files) or the filesystem
/// (the sandbox's own writable layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImagePart {
    /// Bytes of data: the checkpoint files' lengths, or the data extents of the layer's disk
    /// (its holes are not counted).
    pub bytes: u64,
    /// SHA-256, hex, over the part's canonical form (see [`PauseReceipt`]).
    pub sha256: String,
}

/// A pause's manifest. `memory.sha256` covers, per checkpoint file in name order, its name,
/// length and bytes; `filesystem.sha256` covers, per data extent of the sandbox's disk image
/// (holes skipped), its offset, length and bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PauseReceipt {
    /// Format of this manifest.
    pub version: u32,
    /// When the pause finished.
    pub paused_at: DateTime<Utc>,
    /// How long the pause took, ms (checkpoint, unmount, hashing).
    pub took_ms: u64,
    /// The runtime that wrote the image.
    pub runtime: Runtime,
    /// Its version, as it reports it (an image is restored only by the same one).
    pub runtime_version: String,
    /// The processes' memory and state.
    pub memory: ImagePart,
    /// The sandbox's writable filesystem layer.
    pub filesystem: ImagePart,
    /// Where the image is kept besides this host: its URL in the object store
    /// (`warren serve --object-store`), once it was sent there whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
}

/// `POST /v1/sandboxes/{id}/snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Its name (as a volume's: a-z, 0-9, '-', '_').
    pub name: String,
    /// Keep the processes and their memory too (default), or the files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
}

/// A named, immutable snapshot of a sandbox: new sandboxes are made from it
/// (`"snapshot": NAME` at create).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// Its name.
    pub name: String,
    /// The sandbox it was taken of.
    pub source: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Whether it holds the processes and their memory (else the files only).
    pub memory: bool,
    /// The image and runtime of the sandbox (new sandboxes from it have the same).
    pub image: String,
    /// Its runtime.
    pub runtime: Runtime,
    /// The receipt of what it holds.
    pub receipt: PauseReceipt,
}

/// `GET /v1/snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    /// Every snapshot, by name.
    pub snapshots: Vec<Snapshot>,
}
