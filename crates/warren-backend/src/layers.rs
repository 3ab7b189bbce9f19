//! [`LayerStore`]: where images' layers live, with the build cache and the files uploaded for
//! builds. The service names layers only by digest; where their trees are is the store's.
use async_trait::async_trait;

use crate::error::BackendError;
use crate::images::{BuildFiles, Copied, CopySpec, Imported, IncomingTar, Progress, Resolved};

/// Holds images' layers. Blocking calls say so: run them off the async workers.
#[async_trait]
pub trait LayerStore: Send + Sync + 'static {
    /// Starts receiving an image tar (or a layer tar, or build files).
    fn begin(&self) -> Result<IncomingTar, BackendError>;
    /// Stores and unpacks a received image tar as one layer (blocking).
    fn finish(&self, incoming: IncomingTar) -> Result<Imported, BackendError>;
    /// Stores and unpacks a received layer tar (compressed or not, whiteouts honoured;
    /// blocking).
    fn finish_layer(&self, incoming: IncomingTar) -> Result<Imported, BackendError>;
    /// Every stored layer's digest.
    fn layers(&self) -> Result<Vec<String>, BackendError>;
    /// Removes a layer (blocking); the bytes it held.
    fn remove_layer(&self, digest: &str) -> Result<u64, BackendError>;

    /// Whether the image made of `layers` has `name` in its `/etc/passwd` (blocking).
    fn passwd_names_user(&self, layers: &[String], name: &str) -> bool;
    /// The uid and gid `owner` (`user[:group]`, names or numbers) has in that image
    /// (blocking).
    fn owner_ids(&self, layers: &[String], owner: &str) -> Result<(u32, u32), BackendError>;
    /// `user`'s home directory in that image.
    fn home_of(&self, layers: &[String], user: &str) -> Option<String>;

    /// Stores the layer of a COPY step (blocking).
    fn store_copy(
        &self,
        files: &BuildFiles,
        spec: &CopySpec,
        layers: &[String],
    ) -> Result<Copied, BackendError>;
    /// Stores the layer that makes directory `dir`; `None` when the image has it (blocking).
    fn store_dir(&self, dir: &str, layers: &[String]) -> Result<Option<Imported>, BackendError>;
    /// A layer holding an empty `/tmp` with one file in it, so a build step's `/tmp` is the
    /// image's and not a runtime's tmpfs (blocking).
    fn store_tmp_keeper(&self) -> Result<Imported, BackendError>;

    /// The layer a build step of `key` made before, when it is still stored.
    fn cached_layer(&self, key: &str) -> Option<Imported>;
    /// Records that the step of `key` made `layer`.
    fn cache_layer(&self, key: &str, layer: &Imported) -> Result<(), BackendError>;
    /// Every layer the build cache names.
    fn cached_layers(&self) -> Vec<String>;
    /// Forgets the build cache; how many entries it held (blocking).
    fn clear_build_cache(&self) -> Result<usize, BackendError>;
    /// Whether files were uploaded under `hash`.
    fn has_files(&self, hash: &str) -> bool;
    /// Keeps a received tar as the files of `hash` (blocking).
    fn keep_files(&self, incoming: IncomingTar, hash: &str) -> Result<(), BackendError>;

    /// The canonical form of an image reference (`alpine` → `docker.io/library/alpine:latest`).
    fn canonical_reference(&self, reference: &str) -> Result<String, BackendError>;
    /// Fetches an image's manifest and config from its registry.
    async fn resolve_image(&self, reference: &str) -> Result<Resolved, BackendError>;
    /// Stores every layer of a resolved image that is not stored yet.
    async fn fetch_layers(&self, image: &Resolved, progress: Progress) -> Result<(), BackendError>;
}
