//! Images: imported from a root-filesystem tar (here) or pulled from a registry (`pull.rs`),
//! listed, deleted, and the layers no image or sandbox uses collected.
use std::collections::HashSet;

use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt};
use warren_api::image::{valid_image_name, PruneResult};
use warren_api::Image;

use crate::error::ApiError;

/// An upload's bytes could not be written where the layer store keeps them.
pub(crate) fn upload_failed(e: std::io::Error) -> ApiError {
    ApiError::Internal(format!("storing the upload: {e}"))
}

pub(super) fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_image_name(name) {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "{name:?} is not a valid image name (1-255 of a-z 0-9 . _ / : @ -, starting with a letter or digit)"
        )))
    }
}

impl crate::service::Images<'_> {
    /// Imports `name` from a streamed root-filesystem tar; the body is written to disk as it
    /// arrives, never held whole. The image is one layer, named by the tar's digest.
    pub async fn import_image<S, E>(&self, name: &str, mut body: S) -> Result<Image, ApiError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        check_name(name)?;
        let replaced = {
            let _no_gc = self.inner.images_gc.read().await;
            let layers = self.inner.layers.clone();
            let mut incoming = layers.begin()?;
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
                incoming.write(&chunk).map_err(upload_failed)?;
            }
            let imported = tokio::task::spawn_blocking(move || layers.finish(incoming))
                .await
                .map_err(|e| ApiError::Internal(format!("unpack task: {e}")))??;
            if imported.size == 0 {
                return Err(ApiError::Invalid(
                    "the body is empty: send a tar of a root filesystem".into(),
                ));
            }
            let image = Image {
                name: name.to_owned(),
                layers: vec![imported.digest.clone()],
                digest: imported.digest,
                size: imported.size,
                created_at: Utc::now(),
                source: None,
                config: Default::default(),
            };
            let replaced = self.record_image(&image).await?;
            (image, replaced)
        };
        if replaced.1 {
            self.collect_layers().await?;
        }
        Ok(replaced.0)
    }

    /// Records an image; whether it replaced one of another digest (whose layers may now be
    /// unused).
    pub(super) async fn record_image(&self, image: &Image) -> Result<bool, ApiError> {
        let previous = self.inner.store.get_image(&image.name).await?;
        self.inner.store.put_image(image).await?;
        Ok(previous.is_some_and(|p| p.digest != image.digest))
    }

    /// Records image `from` again as `name` (a tag: the same layers and config); a previous
    /// image of that name is replaced.
    pub async fn tag_image(&self, from: &str, name: &str) -> Result<Image, ApiError> {
        check_name(name)?;
        let image = self
            .inner
            .store
            .get_image(from)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("image {from:?} not found")))?;
        let tagged = Image {
            name: name.to_owned(),
            created_at: Utc::now(),
            ..image
        };
        if self.record_image(&tagged).await? {
            self.collect_layers().await?;
        }
        Ok(tagged)
    }

    /// Every image.
    pub async fn list_images(&self) -> Result<Vec<Image>, ApiError> {
        Ok(self.inner.store.list_images().await?)
    }

    /// Deletes an image (409 while a sandbox uses it) and the layers no one else uses.
    pub async fn delete_image(&self, name: &str) -> Result<(), ApiError> {
        if self.inner.store.get_image(name).await?.is_none() {
            return Err(ApiError::NotFound(format!("image {name:?} not found")));
        }
        let users = self.inner.store.count_sandboxes_using_image(name).await?;
        if users > 0 {
            return Err(ApiError::Conflict(format!(
                "image {name:?} is used by {users} sandbox(es); delete them first"
            )));
        }
        self.inner.store.delete_image(name).await?;
        self.collect_layers().await.map(drop)
    }

    /// Forgets the build cache and the uploaded build files (not while a build runs: its
    /// layers are kept by the cache until its image is recorded); how many entries went.
    pub async fn clear_build_cache(&self) -> Result<usize, ApiError> {
        let _gc = self.inner.images_gc.write().await;
        let running = self.running_builds();
        if running > 0 {
            return Err(ApiError::Conflict(format!(
                "{running} image build(s) running; clear the build cache when they end"
            )));
        }
        let layers = self.inner.layers.clone();
        Ok(
            tokio::task::spawn_blocking(move || layers.clear_build_cache())
                .await
                .map_err(|e| ApiError::Internal(format!("build cache task: {e}")))??,
        )
    }

    /// Removes every stored layer that no image and no sandbox uses.
    pub async fn prune_images(&self) -> Result<PruneResult, ApiError> {
        self.collect_layers().await
    }

    async fn collect_layers(&self) -> Result<PruneResult, ApiError> {
        // Pulls, imports and creates hold the read side from the moment they store or pick
        // layers until the image or sandbox naming them is recorded.
        let _gc = self.inner.images_gc.write().await;
        let mut live: HashSet<String> = self.inner.store.live_layers().await?.into_iter().collect();
        let layers = self.inner.layers.clone();
        // The build cache keeps what it names until it is cleared.
        live.extend(layers.cached_layers());
        Ok(tokio::task::spawn_blocking(move || {
            let mut result = PruneResult::default();
            for layer in layers.layers()? {
                if !live.contains(&layer) {
                    result.bytes_freed += layers.remove_layer(&layer)?;
                    result.layers_removed.push(layer);
                }
            }
            Ok::<_, warren_backend::BackendError>(result)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("layer collection task: {e}")))??)
    }

    /// The layers of an image digest, bottom first.
    pub(super) async fn image_layers(&self, digest: &str) -> Result<Vec<String>, ApiError> {
        self.inner
            .store
            .manifest_layers(digest)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("image {digest} has no layer record")))
    }

    /// Whether the image's `/etc/passwd` names user `name`.
    pub(super) async fn image_has_user(&self, digest: &str, name: &str) -> Result<bool, ApiError> {
        let image = self.image_layers(digest).await?;
        let (name, layers) = (name.to_owned(), self.inner.layers.clone());
        Ok(
            tokio::task::spawn_blocking(move || layers.passwd_names_user(&image, &name))
                .await
                .unwrap_or(false),
        )
    }
}
