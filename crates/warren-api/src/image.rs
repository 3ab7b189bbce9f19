//! Images as the API shows them.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An image Warren can start sandboxes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Image {
    /// Its name: as imported (`busybox`), or the full reference it was pulled by
    /// (`registry.example.com/team/tools:v2`, `docker.io/library/alpine:3.20`).
    pub name: String,
    /// The manifest digest of a pulled image; `sha256:<hex>` of the tar of an imported one.
    pub digest: String,
    /// Bytes fetched for it: its layers as stored in the registry, or the imported tar.
    pub size: u64,
    /// When it was imported or pulled.
    pub created_at: DateTime<Utc>,
    /// The reference it was pulled from; absent for an imported image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Its layers' digests, bottom first; layers are stored once and shared between images.
    #[serde(default)]
    pub layers: Vec<String>,
    /// The defaults a sandbox made from it gets (from the image's OCI config).
    #[serde(default)]
    pub config: ImageConfig,
    /// The team whose image it is (imported, built or tagged by its keys): only that team
    /// sees and uses it. Absent for a pulled image, which is every team's (the registry's
    /// content).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub team: String,
}

/// The parts of an OCI image config a sandbox takes as its defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, ToSchema)]
pub struct ImageConfig {
    /// `KEY=value` entries, under the request's `env`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Prepended to `cmd` when the request gives no `cmd`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// The main command when the request gives none (after `entrypoint`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// The working directory when the request gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The user when the request gives none (`name`, `uid`, `name:group`, `uid:gid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// TCP ports the image says it serves; listed in its sandboxes' `urls`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<u16>,
    /// A shell command that succeeds once a new sandbox is ready (E2B's `readyCmd`): a create
    /// runs it until it exits 0 before answering. Set by image builds; not part of OCI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_cmd: Option<String>,
}

/// `POST /v1/images/pull`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullImage {
    /// `host/repo:tag`, `host/repo@sha256:…`, or a Docker Hub short form (`alpine`).
    #[serde(rename = "ref")]
    pub reference: String,
}

/// `POST /v1/images/tag`: image `source` recorded again as `name` (the same layers, config
/// and registry source), the caller's team's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagImage {
    /// An image the caller sees (`GET /v1/images`).
    pub source: String,
    /// The new name (without a registry host, unless the caller is the operator's team).
    pub name: String,
}

/// When a sandbox create pulls its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Only when no image of that name is here (the default).
    #[default]
    Missing,
    /// Every time (an unchanged image costs one manifest request).
    Always,
    /// Never: an absent image is a 404.
    Never,
}

/// One step of a pull, as `POST /v1/images/pull` streams them (`Accept: text/event-stream`,
/// one JSON object per `data:` line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PullEvent {
    /// The manifest is known: what will be fetched.
    Resolved {
        /// The canonical reference.
        reference: String,
        /// The manifest's digest.
        digest: String,
        /// Every layer, bottom first.
        layers: Vec<LayerProgress>,
    },
    /// A layer moved on.
    Layer(LayerProgress),
    /// The image is ready.
    Done {
        /// The image as `GET /v1/images` shows it.
        image: Box<Image>,
    },
    /// The pull failed; nothing of it is left half-done.
    Error {
        /// As in every API error.
        error: crate::ErrorDetail,
    },
}

/// Where one layer of a pull stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct LayerProgress {
    /// The layer's digest (as the registry stores it).
    pub digest: String,
    /// What is happening to it.
    pub status: LayerStatus,
    /// Bytes fetched so far.
    pub current: u64,
    /// Its size in the registry.
    pub total: u64,
}

/// What is happening to a layer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LayerStatus {
    /// Not started.
    Waiting,
    /// Already stored (by an earlier pull, or another image sharing it): nothing to fetch.
    Present,
    /// Being fetched and unpacked (the two overlap).
    Downloading,
    /// Fetched by another pull running at the same time, which this one waited for.
    Shared,
    /// Fetched, verified and unpacked by this pull.
    Done,
}

/// `POST /v1/images/prune`: what was removed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default, ToSchema)]
pub struct PruneResult {
    /// Layers no image or sandbox used, now deleted.
    pub layers_removed: Vec<String>,
    /// Bytes freed on disk.
    pub bytes_freed: u64,
    /// Build cache entries and uploaded build files forgotten (with `build_cache=true`).
    #[serde(default)]
    pub build_cache_cleared: usize,
}

/// `GET /v1/images`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    /// Every image, by name.
    pub images: Vec<Image>,
}

/// Whether `name` is acceptable as an image name: 1-255 characters of `[a-z0-9._/:@-]`,
/// starting with a letter or digit, no `..` (pulled images are named by their reference,
/// which may end in `@sha256:<hex>`).
pub fn valid_image_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/:@-".contains(&b))
}
