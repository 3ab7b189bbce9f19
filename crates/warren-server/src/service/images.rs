//! Images without a registry: a root-filesystem tar in, an image out.
use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt};
use warren_api::image::valid_image_name;
use warren_api::Image;
use warren_local::images::ImageError;

use super::Service;
use crate::error::ApiError;

fn image_error(e: ImageError) -> ApiError {
    match e {
        ImageError::Rejected(e) => ApiError::Invalid(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_image_name(name) {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "{name:?} is not a valid image name (1-128 of a-z 0-9 . _ / : -, starting with a letter or digit)"
        )))
    }
}

impl Service {
    /// Imports `name` from a streamed root-filesystem tar; the body is written to disk as it
    /// arrives, never held whole.
    pub async fn import_image<S, E>(&self, name: &str, mut body: S) -> Result<Image, ApiError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        check_name(name)?;
        let backend = self.inner.backend.clone();
        let mut incoming = backend.image_begin().map_err(image_error)?;
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
            incoming.write(&chunk).map_err(image_error)?;
        }
        let imported = tokio::task::spawn_blocking(move || backend.image_finish(incoming))
            .await
            .map_err(|e| ApiError::Internal(format!("unpack task: {e}")))?
            .map_err(image_error)?;
        if imported.size == 0 {
            return Err(ApiError::Invalid(
                "the body is empty: send a tar of a root filesystem".into(),
            ));
        }
        let image = Image {
            name: name.to_owned(),
            digest: imported.digest,
            size: imported.size,
            created_at: Utc::now(),
        };
        let previous = self.inner.store.get_image(name).await?;
        self.inner.store.put_image(&image).await?;
        if let Some(prev) = previous {
            self.remove_unused_digest(&prev.digest).await?;
        }
        Ok(image)
    }

    /// Every image.
    pub async fn list_images(&self) -> Result<Vec<Image>, ApiError> {
        Ok(self.inner.store.list_images().await?)
    }

    /// Deletes an image; 409 while a sandbox uses it.
    pub async fn delete_image(&self, name: &str) -> Result<(), ApiError> {
        let image = self
            .inner
            .store
            .get_image(name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("image {name:?} not found")))?;
        let users = self.inner.store.count_sandboxes_using_image(name).await?;
        if users > 0 {
            return Err(ApiError::Conflict(format!(
                "image {name:?} is used by {users} sandbox(es); delete them first"
            )));
        }
        self.inner.store.delete_image(name).await?;
        self.remove_unused_digest(&image.digest).await
    }

    async fn remove_unused_digest(&self, digest: &str) -> Result<(), ApiError> {
        if self.inner.store.count_images_with_digest(digest).await? > 0 {
            return Ok(());
        }
        // A sandbox made from an image that was replaced still mounts the old tree.
        let in_use = self
            .inner
            .store
            .list_sandboxes()
            .await?
            .iter()
            .any(|r| r.sandbox.image_digest == digest);
        if !in_use {
            self.inner
                .backend
                .image_remove(digest)
                .map_err(image_error)?;
        }
        Ok(())
    }
}
