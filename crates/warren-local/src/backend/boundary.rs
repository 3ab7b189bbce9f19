//! Where the local backend meets the service: [`Backend`] for [`LocalBackend`], [`LayerStore`]
//! for [`LocalLayers`], and this crate's errors turned into [`BackendError`]s.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use warren_api::{PauseReceipt, Runtime};
use warren_backend::images::{
    BuildFiles, Copied, CopySpec, Imported, IncomingTar, Progress, Resolved,
};
use warren_backend::{
    Backend, BackendError, ContainerStatus, EgressPolicy, ForkFrom, LayerStore, Provisioned,
    SandboxSpec, Usage, VolumeBackup,
};

use super::{LocalBackend, LocalError};
use crate::images::copy::CopyError;
use crate::images::{inside, ImageError, ImageStore};
use crate::pull::{PullError, Puller};

impl From<LocalError> for BackendError {
    fn from(e: LocalError) -> Self {
        match e {
            LocalError::Setup(m) => BackendError::Setup(m),
            LocalError::Image(e) => e.into(),
            LocalError::Step { step, message } => BackendError::Step { step, message },
            LocalError::Unsupported(m) => BackendError::Unsupported(m),
            LocalError::PauseImage(m) => BackendError::PauseImage(m),
        }
    }
}

impl From<ImageError> for BackendError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Rejected(e) => BackendError::Invalid(e.to_string()),
            e @ ImageError::Io { .. } => BackendError::Internal(e.to_string()),
        }
    }
}

impl From<PullError> for BackendError {
    fn from(e: PullError) -> Self {
        match e {
            PullError::InvalidReference { .. } | PullError::Unsupported(_) => {
                BackendError::Invalid(e.to_string())
            }
            PullError::BadLayer { .. } => BackendError::Invalid(e.to_string()),
            PullError::NotFound(m) => BackendError::NotFound(m),
            PullError::Unauthorized(m) => BackendError::Denied(m),
            PullError::NotAllowed(_) => BackendError::Denied(e.to_string()),
            PullError::DigestMismatch(m) | PullError::Registry(m) => BackendError::Upstream(m),
            PullError::Store(e) => e.into(),
            PullError::Config(m) => BackendError::Internal(m),
        }
    }
}

impl From<CopyError> for BackendError {
    fn from(e: CopyError) -> Self {
        match e {
            CopyError::Invalid(m) => BackendError::Invalid(m),
            e @ CopyError::Io(_) => BackendError::Internal(e.to_string()),
        }
    }
}

/// The local layer store and the puller that fills it, as the service sees them.
#[derive(Clone)]
pub struct LocalLayers {
    images: ImageStore,
    puller: Arc<Puller>,
}

impl LocalBackend {
    /// The layer store this backend makes sandboxes from.
    pub fn layer_store(&self) -> LocalLayers {
        LocalLayers {
            images: self.images.clone(),
            puller: self.puller.clone(),
        }
    }
}

impl LocalLayers {
    /// The layer store under `data_dir` on its own, for a server whose sandboxes run
    /// elsewhere (its images are still pulled and inspected here).
    pub fn open(
        data_dir: &std::path::Path,
        pull: &crate::pull::PullConfig,
    ) -> Result<LocalLayers, crate::LocalError> {
        let images = ImageStore::open(&data_dir.join("images"))?;
        let puller = Arc::new(
            Puller::new(images.clone(), pull)
                .map_err(|e| crate::LocalError::Setup(e.to_string()))?,
        );
        Ok(LocalLayers { images, puller })
    }

    /// The layer trees of `layers` (digests), bottom first; a digest that is not one names
    /// no tree (and so nothing is found in it).
    fn dirs(&self, layers: &[String]) -> Vec<PathBuf> {
        layers
            .iter()
            .filter(|d| crate::images::valid_digest(d))
            .map(|d| self.images.layer_dir(d))
            .collect()
    }
}

#[async_trait]
impl LayerStore for LocalLayers {
    fn begin(&self) -> Result<IncomingTar, BackendError> {
        Ok(self.images.begin()?)
    }
    fn finish(&self, incoming: IncomingTar) -> Result<Imported, BackendError> {
        Ok(self.images.finish(incoming)?)
    }
    fn finish_layer(&self, incoming: IncomingTar) -> Result<Imported, BackendError> {
        Ok(self.images.finish_layer(incoming)?)
    }
    fn layers(&self) -> Result<Vec<String>, BackendError> {
        Ok(self.images.layers()?)
    }
    fn remove_layer(&self, digest: &str) -> Result<u64, BackendError> {
        Ok(self.images.remove_layer(digest)?)
    }
    fn passwd_names_user(&self, layers: &[String], name: &str) -> bool {
        inside::passwd_names_user(&self.dirs(layers), name)
    }
    fn owner_ids(&self, layers: &[String], owner: &str) -> Result<(u32, u32), BackendError> {
        Ok(inside::owner_ids(&self.dirs(layers), owner)?)
    }
    fn home_of(&self, layers: &[String], user: &str) -> Option<String> {
        inside::home_of(&self.dirs(layers), user)
    }
    fn store_copy(
        &self,
        files: &BuildFiles,
        spec: &CopySpec,
        layers: &[String],
    ) -> Result<Copied, BackendError> {
        let path = match files {
            BuildFiles::Uploaded(hash) => self.images.uploaded_files(hash).ok_or_else(|| {
                BackendError::Invalid(format!("files {hash:?} were not uploaded"))
            })?,
            BuildFiles::Context(tar) => tar.path().to_owned(),
        };
        Ok(self.images.store_copy(&path, spec, &self.dirs(layers))?)
    }
    fn store_dir(&self, dir: &str, layers: &[String]) -> Result<Option<Imported>, BackendError> {
        Ok(self.images.store_dir(dir, &self.dirs(layers))?)
    }
    fn store_tmp_keeper(&self) -> Result<Imported, BackendError> {
        Ok(self.images.store_tmp_keeper()?)
    }
    fn cached_layer(&self, key: &str) -> Option<Imported> {
        self.images.cached_layer(key)
    }
    fn cache_layer(&self, key: &str, layer: &Imported) -> Result<(), BackendError> {
        Ok(self.images.cache_layer(key, layer)?)
    }
    fn cached_layers(&self) -> Vec<String> {
        self.images.cached_layers()
    }
    fn clear_build_cache(&self) -> Result<usize, BackendError> {
        Ok(self.images.clear_build_cache()?)
    }
    fn has_files(&self, hash: &str) -> bool {
        self.images.uploaded_files(hash).is_some()
    }
    fn keep_files(&self, incoming: IncomingTar, hash: &str) -> Result<(), BackendError> {
        Ok(self.images.keep_files(incoming, hash)?)
    }
    fn canonical_reference(&self, reference: &str) -> Result<String, BackendError> {
        Ok(Puller::parse_reference(reference)?.whole())
    }
    async fn resolve_image(&self, reference: &str) -> Result<Resolved, BackendError> {
        let reference = Puller::parse_reference(reference)?;
        Ok(self.puller.resolve(&reference).await?)
    }
    async fn fetch_layers(&self, image: &Resolved, progress: Progress) -> Result<(), BackendError> {
        let reference = Puller::parse_reference(&image.reference)?;
        Ok(self
            .puller
            .fetch_layers(&reference, image, progress)
            .await?)
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn store_changes(
        &self,
        id: &str,
        max_bytes: u64,
        keep: &mut dyn FnMut(&Imported) -> Result<(), BackendError>,
    ) -> Result<Imported, BackendError> {
        // The store's callback speaks the image store's errors: carry the caller's own error
        // through it untouched.
        let mut refused = None;
        let res = LocalBackend::store_changes(self, id, max_bytes, &mut |layer| {
            keep(layer).map_err(|e| {
                let what = e.to_string();
                refused = Some(e);
                ImageError::Io {
                    what,
                    source: std::io::Error::other("refused by the caller"),
                }
            })
        });
        match (res, refused) {
            (Err(_), Some(e)) => Err(e),
            (res, _) => res.map_err(Into::into),
        }
    }
    fn claim_net_index(&self, used: &[u32]) -> Option<u32> {
        self.net_pool().claim(used).map(|(i, _warm)| i)
    }
    fn reserve_warm_lease(&self, used: &[u32]) -> Option<u32> {
        self.net_pool().reserve(used)
    }
    async fn fill_warm_lease(&self, index: u32) {
        LocalBackend::fill_warm_lease(self, index).await
    }
    async fn setup_network(&self, used: &[u32]) -> Result<(), BackendError> {
        LocalBackend::setup_network(self, used)
            .await
            .map_err(Into::into)
    }
    async fn set_egress(&self, index: u32, policy: &EgressPolicy) -> Result<(), BackendError> {
        LocalBackend::set_egress(self, index, policy)
            .await
            .map_err(Into::into)
    }
    async fn firewall_intact(&self) -> bool {
        self.firewall().present().await
    }
    async fn refresh_egress_names(&self) -> usize {
        self.firewall().refresh_names().await
    }
    async fn provision(&self, spec: &SandboxSpec) -> Result<Provisioned, BackendError> {
        LocalBackend::provision(self, spec)
            .await
            .map_err(Into::into)
    }
    async fn status(&self, id: &str, runtime: Runtime) -> ContainerStatus {
        LocalBackend::status(self, id, runtime).await
    }
    async fn stop(&self, id: &str, runtime: Runtime, grace: Duration) {
        LocalBackend::stop(self, id, runtime, grace).await
    }
    async fn release(&self, id: &str, runtime: Runtime, net_index: Option<u32>) {
        LocalBackend::release(self, id, runtime, net_index).await
    }
    fn remove_files(&self, id: &str) {
        LocalBackend::remove_files(self, id)
    }
    fn log_files(&self, id: &str) -> Vec<(&'static str, PathBuf)> {
        LocalBackend::log_files(self, id).into_iter().collect()
    }
    fn oom_kills(&self, id: &str) -> u64 {
        LocalBackend::oom_kills(self, id)
    }
    fn usage(&self, id: &str) -> Option<Usage> {
        LocalBackend::usage(self, id)
    }
    fn disk_used(&self, id: &str) -> u64 {
        LocalBackend::disk_used(self, id)
    }
    async fn drain_warm(&self) {
        LocalBackend::drain_warm(self).await
    }
    async fn remove_shared(&self) {
        LocalBackend::remove_shared(self).await
    }
    async fn leftovers(&self, id: &str, runtime: Runtime, net_index: Option<u32>) -> Vec<String> {
        LocalBackend::leftovers(self, id, runtime, net_index).await
    }
    async fn pause(
        &self,
        id: &str,
        runtime: Runtime,
        net_index: Option<u32>,
        offsite: bool,
    ) -> Result<PauseReceipt, BackendError> {
        LocalBackend::pause(self, id, runtime, net_index, offsite)
            .await
            .map_err(Into::into)
    }
    fn pause_begun(&self, id: &str) -> bool {
        LocalBackend::pause_begun(self, id)
    }
    fn pause_begun_ago(&self, id: &str) -> Option<Duration> {
        LocalBackend::pause_begun_ago(self, id)
    }
    fn pause_busy(&self, id: &str, runtime: Runtime) -> bool {
        LocalBackend::pause_busy(self, id, runtime)
    }
    async fn finish_pause(&self, id: &str, runtime: Runtime) -> Result<PauseReceipt, BackendError> {
        LocalBackend::finish_pause(self, id, runtime, std::time::Instant::now(), true)
            .await
            .map_err(Into::into)
    }
    fn pause_receipt(&self, id: &str) -> Result<PauseReceipt, BackendError> {
        LocalBackend::pause_receipt(self, id).map_err(Into::into)
    }
    async fn resume(&self, spec: &SandboxSpec) -> Result<Provisioned, BackendError> {
        LocalBackend::resume(self, spec).await.map_err(Into::into)
    }
    fn discard_pause(&self, id: &str) {
        LocalBackend::discard_pause(self, id)
    }
    fn discard_unfinished_pause(&self, id: &str) {
        LocalBackend::discard_unfinished_pause(self, id)
    }
    async fn undo_restore(&self, id: &str, runtime: Runtime) {
        LocalBackend::undo_restore(self, id, runtime).await
    }
    async fn renew_network(
        &self,
        id: &str,
        runtime: Runtime,
        net_index: Option<u32>,
        restored: bool,
    ) -> Result<(), BackendError> {
        LocalBackend::renew_network(self, id, runtime, net_index, restored)
            .await
            .map_err(Into::into)
    }
    async fn prepare_fork(
        &self,
        spec: &SandboxSpec,
        from: ForkFrom<'_>,
    ) -> Result<PauseReceipt, BackendError> {
        LocalBackend::prepare_fork(self, spec, from)
            .await
            .map_err(Into::into)
    }
    async fn save_snapshot(
        &self,
        id: &str,
        name: &str,
        memory: bool,
    ) -> Result<PauseReceipt, BackendError> {
        LocalBackend::save_snapshot(self, id, name, memory)
            .await
            .map_err(Into::into)
    }
    fn remove_snapshot(&self, name: &str) -> std::io::Result<()> {
        LocalBackend::remove_snapshot(self, name)
    }
    async fn seed_disk(&self, id: &str, snapshot: &str) -> Result<(), BackendError> {
        LocalBackend::seed_disk(self, id, snapshot)
            .await
            .map_err(Into::into)
    }
    fn net_ip(&self, index: u32) -> Ipv4Addr {
        self.lease(index).sandbox_ip
    }
    fn ensure_volume(&self, name: &str, size_mb: u64) -> std::io::Result<()> {
        self.volumes().ensure(name, size_mb).map(|_| ())
    }
    fn volume_usage(&self, name: &str) -> Option<u64> {
        self.volumes().usage(name).map(|u| u.used)
    }
    fn remove_volume(&self, name: &str) -> std::io::Result<()> {
        self.volumes().remove(name)
    }
    async fn backup_volume(&self, name: &str) -> Result<VolumeBackup, BackendError> {
        LocalBackend::backup_volume(self, name)
            .await
            .map_err(Into::into)
    }
    fn discard_volume_backup(&self, name: &str) {
        LocalBackend::discard_volume_backup(self, name)
    }
}
