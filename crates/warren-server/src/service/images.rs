//! Images: imported from a root-filesystem tar (here) or pulled from a registry (`pull.rs`),
//! listed, deleted, and the layers no image or sandbox uses collected.
use std::collections::HashSet;

use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt};
use warren_api::image::{valid_image_name, PruneResult};
use warren_api::{Image, DEFAULT_TEAM};

use crate::error::ApiError;

/// An upload's bytes could not be written where the layer store keeps them.
pub(crate) fn upload_failed(e: std::io::Error) -> ApiError {
    ApiError::Internal(format!("storing the upload: {e}"))
}

pub(super) fn check_name(name: &str) -> Result<(), ApiError> {
    // `/v1/images/{name}` shares its path with these routes: such an image could not be
    // read, replaced or deleted.
    if ["tag", "pull", "prune", "build", "builds"].contains(&name) {
        return Err(ApiError::Invalid(format!(
            "{name:?} names an API route (/v1/images/{name}): give the image another name"
        )));
    }
    if name.starts_with(SCRATCH_PREFIX) {
        return Err(ApiError::Invalid(format!(
            "image names starting with {SCRATCH_PREFIX:?} are the server's (image builds' \
             scratch images)"
        )));
    }
    if valid_image_name(name) {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "{name:?} is not a valid image name (1-255 of a-z 0-9 . _ / : @ -, starting with a letter or digit)"
        )))
    }
}

/// Where image builds keep their scratch images (`build-tmp/<server>/<build>-<n>`): the
/// server's own, never a team's name.
pub(crate) const SCRATCH_PREFIX: &str = "build-tmp/";

/// Whether an image name starts with a registry's host (`docker.io/…`, `localhost:5000/…`,
/// `ghcr.io/…`): a first component with a dot or a port, or `localhost`.
fn names_a_registry(name: &str) -> bool {
    name.split_once('/').is_some_and(|(first, _)| {
        first.contains('.') || first.contains(':') || first == "localhost"
    })
}

/// Whether `team` sees an image of `owner`'s: pulled images (no owner) and the operator's
/// team's are every team's catalogue; the rest only their own team's. The server's own
/// sandboxes (a build's steps: no team) see every image.
pub(crate) fn visible(owner: &str, team: &str) -> bool {
    team == crate::service::quotas::NO_TEAM
        || owner.is_empty()
        || owner == DEFAULT_TEAM
        || owner == team
}

/// Whether a write by `writer` (a team, or no one for a pull) may replace the image of
/// `owner`'s of the same name: its own team; the operator's team, any; a pull, another pull
/// or the operator's team's. A team never replaces a name every team uses.
fn may_replace(owner: &str, writer: &str) -> bool {
    owner == writer || writer == DEFAULT_TEAM || (writer.is_empty() && owner == DEFAULT_TEAM)
}

impl crate::service::Images<'_> {
    /// Imports `name` from a streamed root-filesystem tar; the body is written to disk as it
    /// arrives, never held whole. The image is one layer, named by the tar's digest.
    pub async fn import_image<S, E>(
        &self,
        name: &str,
        mut body: S,
        team: &str,
    ) -> Result<Image, ApiError>
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
                team: team.to_owned(),
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
    /// unused). A name another team's image holds is refused (409): see [`may_replace`].
    pub(super) async fn record_image(&self, image: &Image) -> Result<bool, ApiError> {
        // A registry's names are the registry's: a team that took one would stand in every
        // other team's way when they pull it (the operator's team may: its images are
        // everyone's anyway).
        if !image.team.is_empty()
            && image.team != DEFAULT_TEAM
            && !image.name.starts_with(SCRATCH_PREFIX)
            && names_a_registry(&image.name)
        {
            return Err(ApiError::Invalid(format!(
                "image name {:?} names a registry: a team's own images take a name without a \
                 registry host (e.g. \"myapp:v1\")",
                image.name
            )));
        }
        let previous = self.inner.store.get_image(&image.name).await?;
        if let Some(p) = &previous {
            if !may_replace(&p.team, &image.team) {
                return Err(ApiError::Conflict(format!(
                    "image name {:?} is taken by {}: choose another name",
                    image.name,
                    if p.team.is_empty() {
                        "a pulled image, every team's (only the operator's team replaces it)"
                            .to_owned()
                    } else {
                        "another team".to_owned()
                    }
                )));
            }
        }
        self.inner.store.put_image(image).await?;
        Ok(previous.is_some_and(|p| p.digest != image.digest))
    }

    /// `team`'s view of image `name`: its own, the operator's team's and pulled images; any
    /// other is not found.
    pub async fn image(&self, name: &str, team: &str) -> Result<Option<Image>, ApiError> {
        Ok(self
            .inner
            .store
            .get_image(name)
            .await?
            .filter(|i| visible(&i.team, team)))
    }

    /// Records image `from` again as `name` (a tag: the same layers and config), `team`'s; a
    /// previous image of that name is replaced when it is `team`'s to replace.
    pub async fn tag_image(&self, from: &str, name: &str, team: &str) -> Result<Image, ApiError> {
        check_name(name)?;
        // Held until the tag is recorded: a collection meanwhile (the source deleted or
        // pulled again) would take the layers the tag is about to name.
        let no_gc = self.inner.images_gc.read().await;
        let image = self
            .image(from, team)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("image {from:?} not found")))?;
        let tagged = Image {
            name: name.to_owned(),
            created_at: Utc::now(),
            team: team.to_owned(),
            ..image
        };
        let replaced = self.record_image(&tagged).await?;
        drop(no_gc);
        if replaced {
            self.collect_layers().await?;
        }
        Ok(tagged)
    }

    /// Every image `team` sees (every image, for [`crate::service::quotas::NO_TEAM`]: the
    /// server's own upkeep).
    pub async fn list_images(&self, team: &str) -> Result<Vec<Image>, ApiError> {
        let all = self.inner.store.list_images().await?;
        Ok(all.into_iter().filter(|i| visible(&i.team, team)).collect())
    }

    /// Deletes an image (409 while a sandbox uses it) and the layers no one else uses: a
    /// team's own, or, for the operator's team, any.
    pub async fn delete_image(&self, name: &str, team: &str) -> Result<(), ApiError> {
        // The operator's team removes any image, whoever's.
        let found = if team == DEFAULT_TEAM {
            self.inner.store.get_image(name).await?
        } else {
            self.image(name, team).await?
        };
        let Some(image) = found else {
            return Err(ApiError::NotFound(format!("image {name:?} not found")));
        };
        if !may_replace(&image.team, team) {
            return Err(ApiError::Forbidden(format!(
                "image {name:?} is every team's: only the operator's team removes it"
            )));
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

    /// The registry reference a sandbox of image `name` at `digest` can be pulled by again:
    /// the repository the image was pulled from, pinned to `digest` (an imported or built
    /// image has none).
    pub(super) async fn pull_ref(
        &self,
        name: &str,
        digest: &str,
    ) -> Result<Option<String>, ApiError> {
        let Some(image) = self.inner.store.get_image(name).await? else {
            return Ok(None);
        };
        // The sandbox's own digest, in the repository it was pulled from: a tag pulled again
        // since (to another digest) still names the repository.
        Ok(image
            .source
            .filter(|_| digest.starts_with("sha256:"))
            .map(|source| {
                let repo = source.split_once('@').map_or(source.as_str(), |(r, _)| r);
                format!("{repo}@{digest}")
            }))
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
