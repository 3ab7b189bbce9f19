//! Images as the API shows them.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An image Warren can start sandboxes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    /// Its name (`busybox`, `team/tools:v2`).
    pub name: String,
    /// `sha256:<hex>` of the root filesystem tar it was made from.
    pub digest: String,
    /// Size of that tar in bytes.
    pub size: u64,
    /// When it was imported.
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/images`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageList {
    /// Every image, by name.
    pub images: Vec<Image>,
}

/// Whether `name` is acceptable as an image name: 1-128 characters of `[a-z0-9._/:-]`,
/// starting with a letter or digit, no `..`.
pub fn valid_image_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/:-".contains(&b))
}
