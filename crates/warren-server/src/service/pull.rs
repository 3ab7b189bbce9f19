//! Images from registries: `POST /v1/images/pull`, and the image a create request names,
//! pulled when it is not here (`"pull": "missing"`), always, or never.
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc::UnboundedSender;
use warren_api::image::{LayerProgress, LayerStatus, PullPolicy};
use warren_api::sandbox::DEFAULT_IMAGE;
use warren_api::{Image, PullEvent};
use warren_backend::images::Progress;

use crate::error::ApiError;

impl crate::service::Images<'_> {
    /// Pulls `reference` and records it as an image named by its canonical reference.
    /// `events`, when given, receives the pull's progress (its end is the caller's to report).
    pub async fn pull_image(
        &self,
        reference: &str,
        events: Option<UnboundedSender<PullEvent>>,
    ) -> Result<Image, ApiError> {
        let (image, replaced) = {
            let _no_gc = self.inner.images_gc.read().await;
            self.pull_unguarded(reference, events).await?
        };
        if replaced {
            self.collect_layers_quietly().await;
        }
        Ok(image)
    }

    /// A pull; the caller holds the read side of `images_gc`.
    async fn pull_unguarded(
        &self,
        reference: &str,
        events: Option<UnboundedSender<PullEvent>>,
    ) -> Result<(Image, bool), ApiError> {
        if reference.trim().is_empty() {
            return Err(ApiError::Invalid("ref must not be empty".into()));
        }
        let layers = &self.inner.layers;
        let resolved = layers.resolve_image(reference).await?;
        let send = move |e: PullEvent| {
            if let Some(tx) = &events {
                let _ = tx.send(e);
            }
        };
        send(PullEvent::Resolved {
            reference: resolved.reference.clone(),
            digest: resolved.digest.clone(),
            layers: resolved
                .layers
                .iter()
                .map(|l| LayerProgress {
                    digest: l.digest.clone(),
                    status: LayerStatus::Waiting,
                    current: 0,
                    total: l.size,
                })
                .collect(),
        });
        let send = Arc::new(send);
        let progress: Progress = Arc::new(move |p| send(PullEvent::Layer(p)));
        layers.fetch_layers(&resolved, progress).await?;
        let image = Image {
            name: resolved.reference.clone(),
            digest: resolved.digest,
            size: resolved.layers.iter().map(|l| l.size).sum(),
            created_at: Utc::now(),
            source: Some(resolved.reference),
            layers: resolved.layers.into_iter().map(|l| l.digest).collect(),
            config: resolved.config,
            // The registry's content: every team's.
            team: String::new(),
        };
        let replaced = self.record_image(&image).await?;
        tracing::info!(image = %image.name, digest = %image.digest, "pulled");
        Ok((image, replaced))
    }

    async fn collect_layers_quietly(&self) {
        if let Err(e) = self.prune_images().await {
            tracing::warn!("collecting unused layers after a pull: {e}");
        }
    }

    /// The image a create request names (or the default), pulled as `policy` says. The caller
    /// holds the read side of `images_gc` until the sandbox is recorded.
    pub(super) async fn image_for_create(
        &self,
        name: Option<&str>,
        policy: PullPolicy,
        team: &str,
    ) -> Result<Image, ApiError> {
        let name = name.map(str::trim).unwrap_or(DEFAULT_IMAGE);
        let local = self.find_image(name, team).await?;
        let pull = match (&local, policy) {
            (_, PullPolicy::Never) | (Some(_), PullPolicy::Missing) => false,
            // An imported image has no registry to ask.
            (Some(image), PullPolicy::Always) => image.source.is_some(),
            (None, _) => true,
        };
        if !pull {
            return local.ok_or_else(|| not_here(name));
        }
        if name == DEFAULT_IMAGE {
            return Err(not_here(name));
        }
        let source = local
            .as_ref()
            .and_then(|i| i.source.clone())
            .unwrap_or_else(|| name.to_owned());
        self.pull_unguarded(&source, None)
            .await
            .map(|(image, _)| image)
    }

    /// `team`'s image by its name as given, or by the canonical form of that reference
    /// (`alpine` → `docker.io/library/alpine:latest`).
    async fn find_image(&self, name: &str, team: &str) -> Result<Option<Image>, ApiError> {
        if let Some(image) = self.image(name, team).await? {
            return Ok(Some(image));
        }
        match self.inner.layers.canonical_reference(name) {
            Ok(r) if r != name => self.image(&r, team).await,
            _ => Ok(None),
        }
    }
}

fn not_here(name: &str) -> ApiError {
    if name == DEFAULT_IMAGE {
        ApiError::NotFound(format!(
            "image {DEFAULT_IMAGE:?} not found: build it with `warren image build-base` \
             (or name another image)"
        ))
    } else {
        ApiError::NotFound(format!(
            "image {name:?} not found (pull it with `warren image pull REF`, or import one \
             with `warren image import NAME DIR`)"
        ))
    }
}
