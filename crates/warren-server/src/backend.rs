//! The [`Backend`] trait: what the service asks of whatever runs sandboxes, and its
//! implementation for the local backend (a Kubernetes one comes later).
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use warren_api::{PauseReceipt, Runtime};
use warren_local::images::{ImageError, Imported, IncomingTar};
use warren_local::pull::{Progress, PullError, Puller, Resolved};
use warren_local::runtime::ContainerStatus;
use warren_local::{EgressPolicy, ForkFrom, LocalBackend, LocalError, Provisioned, SandboxSpec};

/// Runs sandboxes and holds their images.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Starts receiving an image tar.
    fn image_begin(&self) -> Result<IncomingTar, ImageError>;
    /// Stores and unpacks a received tar (blocking).
    fn image_finish(&self, incoming: IncomingTar) -> Result<Imported, ImageError>;
    /// Stores and unpacks a received layer tar (compressed or not, whiteouts honoured).
    fn layer_finish(&self, incoming: IncomingTar) -> Result<Imported, ImageError>;
    /// Stores what a stopped sandbox changed in its files as a layer (blocking): refused over
    /// `max_bytes`; `keep` sees the layer's digest before it is stored.
    fn store_changes(
        &self,
        id: &str,
        max_bytes: u64,
        keep: &mut dyn FnMut(&Imported) -> Result<(), ImageError>,
    ) -> Result<Imported, LocalError>;
    /// The layer store, with its build cache and uploaded build files.
    fn image_store(&self) -> &warren_local::images::ImageStore;
    /// The unpacked tree of a layer.
    fn layer_dir(&self, digest: &str) -> PathBuf;
    /// Every stored layer.
    fn stored_layers(&self) -> Result<Vec<String>, ImageError>;
    /// Removes a layer (blocking); the bytes it held.
    fn remove_layer(&self, digest: &str) -> Result<u64, ImageError>;
    /// Fetches an image's manifest and config from its registry.
    async fn resolve_image(&self, reference: &str) -> Result<Resolved, PullError>;
    /// Stores every layer of a resolved image that is not stored yet.
    async fn fetch_layers(&self, image: &Resolved, progress: Progress) -> Result<(), PullError>;

    /// A network lease index for a new sandbox (a warm one when the pool has one).
    fn claim_net_index(&self, used: &[u32]) -> Option<u32>;
    /// Reserves an index for a warm lease if the pool is short.
    fn reserve_warm_lease(&self, used: &[u32]) -> Option<u32>;
    /// Makes a reserved warm lease.
    async fn fill_warm_lease(&self, index: u32);
    /// At start: readies the firewall, then adopts or releases leases on the host that no
    /// sandbox holds.
    async fn setup_network(&self, used: &[u32]) -> Result<(), LocalError>;
    /// Whether the firewall's table is still on the host (a `flush ruleset` removes it).
    async fn firewall_intact(&self) -> bool;
    /// Replaces the egress policy of the sandbox on lease `index`, at once.
    async fn set_egress(&self, index: u32, policy: &EgressPolicy) -> Result<(), LocalError>;
    /// Resolves the domain names of every egress policy in force again, updating the rules of
    /// those whose addresses changed; how many changed.
    async fn refresh_egress_names(&self) -> usize;
    /// Makes and starts a sandbox; on failure nothing of it is left.
    async fn provision(&self, spec: &SandboxSpec) -> Result<Provisioned, LocalError>;
    /// The runtime's view of a sandbox.
    async fn status(&self, id: &str, runtime: Runtime) -> ContainerStatus;
    /// Asks a sandbox to stop, waiting up to `grace`.
    async fn stop(&self, id: &str, runtime: Runtime, grace: Duration);
    /// Releases all host resources of a sandbox but its files (idempotent).
    async fn release(&self, id: &str, runtime: Runtime, net_index: Option<u32>);
    /// Removes a sandbox's files.
    fn remove_files(&self, id: &str);
    /// Where a sandbox's output goes, by stream name (`stdout`, `stderr`).
    fn log_files(&self, id: &str) -> Vec<(&'static str, PathBuf)>;
    /// OOM kills seen in the sandbox's memory cgroup.
    fn oom_kills(&self, id: &str) -> u64;
    /// CPU and memory use from the sandbox's cgroup (`None` without one).
    fn usage(&self, id: &str) -> Option<warren_local::cgroup::Usage>;
    /// Bytes the sandbox wrote to its own layer.
    fn disk_used(&self, id: &str) -> u64;
    /// Releases what the server keeps ready for future sandboxes (warm leases).
    async fn drain_warm(&self);
    /// Removes host-wide resources the server made for all its sandboxes (call when it has none).
    async fn remove_shared(&self);
    /// Host resources of a sandbox still present.
    async fn leftovers(&self, id: &str, runtime: Runtime, net_index: Option<u32>) -> Vec<String>;

    /// Writes a running sandbox's processes and memory to disk and stops it, keeping its
    /// network; on failure it still runs.
    async fn pause(
        &self,
        id: &str,
        runtime: Runtime,
        net_index: Option<u32>,
        offsite: bool,
    ) -> Result<PauseReceipt, LocalError>;
    /// Whether a pause of the sandbox was begun and not finished (a crash in between).
    fn pause_begun(&self, id: &str) -> bool;
    /// How long ago an unfinished checkpoint's files last changed (`None` without one).
    fn pause_begun_ago(&self, id: &str) -> Option<Duration>;
    /// Whether a checkpoint or restore of the sandbox is running now.
    fn pause_busy(&self, id: &str, runtime: Runtime) -> bool;
    /// Finishes a pause whose checkpoint was written (its container has exited).
    async fn finish_pause(&self, id: &str, runtime: Runtime) -> Result<PauseReceipt, LocalError>;
    /// The receipt of the sandbox's pause image.
    fn pause_receipt(&self, id: &str) -> Result<PauseReceipt, LocalError>;
    /// Brings a paused sandbox back from its verified pause image.
    async fn resume(&self, spec: &SandboxSpec) -> Result<Provisioned, LocalError>;
    /// Drops the pause image of a sandbox running again.
    fn discard_pause(&self, id: &str);
    /// Drops what a checkpoint that never took left.
    fn discard_unfinished_pause(&self, id: &str);
    /// Removes what a cut-off restore made, keeping the network and the pause image.
    async fn undo_restore(&self, id: &str, runtime: Runtime);
    /// Puts right the network of a sandbox whose pause (`restored`: resume) a crash cut off,
    /// now that its container runs.
    async fn renew_network(
        &self,
        id: &str,
        runtime: Runtime,
        net_index: Option<u32>,
        restored: bool,
    ) -> Result<(), LocalError>;

    /// Makes `spec`'s sandbox a paused copy of `from`'s state (image and disk copied,
    /// network and bundle made); the copied receipt.
    async fn prepare_fork(
        &self,
        spec: &SandboxSpec,
        from: ForkFrom<'_>,
    ) -> Result<PauseReceipt, LocalError>;
    /// Keeps a paused sandbox's disk (and, with `memory`, its image) as snapshot `name`.
    async fn save_snapshot(
        &self,
        id: &str,
        name: &str,
        memory: bool,
    ) -> Result<PauseReceipt, LocalError>;
    /// Removes a snapshot's files (blocking).
    fn remove_snapshot(&self, name: &str) -> std::io::Result<()>;
    /// Gives a new sandbox a copy of a snapshot's disk before it is provisioned.
    async fn seed_disk(&self, id: &str, snapshot: &str) -> Result<(), LocalError>;
    /// The sandbox address of network lease `index`.
    fn net_ip(&self, index: u32) -> std::net::Ipv4Addr;
    /// Makes a volume of `size_mb` unless it exists, and mounts it (blocking).
    fn ensure_volume(&self, name: &str, size_mb: u64) -> std::io::Result<()>;
    /// Bytes in use on a mounted volume.
    fn volume_usage(&self, name: &str) -> Option<u64>;
    /// Removes a volume and its files (blocking).
    fn remove_volume(&self, name: &str) -> std::io::Result<()>;
    /// Sends a copy of a volume to the object store.
    async fn backup_volume(
        &self,
        name: &str,
    ) -> Result<warren_local::backend::VolumeBackup, LocalError>;
    /// Removes a volume's copy from the object store (in the background).
    fn discard_volume_backup(&self, name: &str);
}

#[async_trait]
impl Backend for LocalBackend {
    fn image_begin(&self) -> Result<IncomingTar, ImageError> {
        self.images().begin()
    }
    fn image_finish(&self, incoming: IncomingTar) -> Result<Imported, ImageError> {
        self.images().finish(incoming)
    }
    fn layer_finish(&self, incoming: IncomingTar) -> Result<Imported, ImageError> {
        self.images().finish_layer(incoming)
    }
    fn store_changes(
        &self,
        id: &str,
        max_bytes: u64,
        keep: &mut dyn FnMut(&Imported) -> Result<(), ImageError>,
    ) -> Result<Imported, LocalError> {
        LocalBackend::store_changes(self, id, max_bytes, keep)
    }
    fn image_store(&self) -> &warren_local::images::ImageStore {
        self.images()
    }
    fn layer_dir(&self, digest: &str) -> PathBuf {
        self.images().layer_dir(digest)
    }
    fn stored_layers(&self) -> Result<Vec<String>, ImageError> {
        self.images().layers()
    }
    fn remove_layer(&self, digest: &str) -> Result<u64, ImageError> {
        self.images().remove_layer(digest)
    }
    async fn resolve_image(&self, reference: &str) -> Result<Resolved, PullError> {
        let reference = Puller::parse_reference(reference)?;
        self.puller().resolve(&reference).await
    }
    async fn fetch_layers(&self, image: &Resolved, progress: Progress) -> Result<(), PullError> {
        let reference = Puller::parse_reference(&image.reference)?;
        self.puller()
            .fetch_layers(&reference, image, progress)
            .await
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
    async fn setup_network(&self, used: &[u32]) -> Result<(), LocalError> {
        LocalBackend::setup_network(self, used).await
    }
    async fn set_egress(&self, index: u32, policy: &EgressPolicy) -> Result<(), LocalError> {
        LocalBackend::set_egress(self, index, policy).await
    }
    async fn firewall_intact(&self) -> bool {
        self.firewall().present().await
    }
    async fn refresh_egress_names(&self) -> usize {
        self.firewall().refresh_names().await
    }
    async fn provision(&self, spec: &SandboxSpec) -> Result<Provisioned, LocalError> {
        LocalBackend::provision(self, spec).await
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
    fn usage(&self, id: &str) -> Option<warren_local::cgroup::Usage> {
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
    ) -> Result<PauseReceipt, LocalError> {
        LocalBackend::pause(self, id, runtime, net_index, offsite).await
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
    async fn finish_pause(&self, id: &str, runtime: Runtime) -> Result<PauseReceipt, LocalError> {
        LocalBackend::finish_pause(self, id, runtime, std::time::Instant::now(), true).await
    }
    fn pause_receipt(&self, id: &str) -> Result<PauseReceipt, LocalError> {
        LocalBackend::pause_receipt(self, id)
    }
    async fn resume(&self, spec: &SandboxSpec) -> Result<Provisioned, LocalError> {
        LocalBackend::resume(self, spec).await
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
    ) -> Result<(), LocalError> {
        LocalBackend::renew_network(self, id, runtime, net_index, restored).await
    }
    async fn prepare_fork(
        &self,
        spec: &SandboxSpec,
        from: ForkFrom<'_>,
    ) -> Result<PauseReceipt, LocalError> {
        LocalBackend::prepare_fork(self, spec, from).await
    }
    async fn save_snapshot(
        &self,
        id: &str,
        name: &str,
        memory: bool,
    ) -> Result<PauseReceipt, LocalError> {
        LocalBackend::save_snapshot(self, id, name, memory).await
    }
    fn remove_snapshot(&self, name: &str) -> std::io::Result<()> {
        LocalBackend::remove_snapshot(self, name)
    }
    async fn seed_disk(&self, id: &str, snapshot: &str) -> Result<(), LocalError> {
        LocalBackend::seed_disk(self, id, snapshot).await
    }
    fn net_ip(&self, index: u32) -> std::net::Ipv4Addr {
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
    async fn backup_volume(
        &self,
        name: &str,
    ) -> Result<warren_local::backend::VolumeBackup, LocalError> {
        LocalBackend::backup_volume(self, name).await
    }
    fn discard_volume_backup(&self, name: &str) {
        LocalBackend::discard_volume_backup(self, name)
    }
}
