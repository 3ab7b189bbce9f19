//! [`Backend`]: what the service asks of whatever runs sandboxes.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use warren_api::{PauseReceipt, Runtime};

use crate::egress::EgressPolicy;
use crate::error::BackendError;
use crate::images::Imported;
use crate::sandbox::{ContainerStatus, ForkFrom, Provisioned, SandboxSpec, Usage, VolumeBackup};

/// Runs sandboxes: makes, starts, stops, pauses and removes them, with their network and
/// volumes. What it names of the host stays inside it; the service passes ids, layer digests
/// and address slots.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Stores what a stopped sandbox changed in its files as a layer (blocking): refused over
    /// `max_bytes`; `keep` sees the layer's digest before it is stored.
    fn store_changes(
        &self,
        id: &str,
        max_bytes: u64,
        keep: &mut dyn FnMut(&Imported) -> Result<(), BackendError>,
    ) -> Result<Imported, BackendError>;

    /// Whether sandboxes run images by their registry reference (the nodes pull them), so an
    /// image imported or built on the server cannot run.
    fn pulls_images(&self) -> bool {
        false
    }

    /// Whether every server reaches every sandbox (they run on a cluster, not on the server's
    /// host): a sandbox of a stopped server is then another's to release.
    fn shared(&self) -> bool {
        false
    }

    /// A network lease index for a new sandbox (a warm one when the pool has one).
    fn claim_net_index(&self, used: &[u32]) -> Option<u32>;
    /// Reserves an index for a warm lease if the pool is short.
    fn reserve_warm_lease(&self, used: &[u32]) -> Option<u32>;
    /// Makes a reserved warm lease.
    async fn fill_warm_lease(&self, index: u32);
    /// At start: readies the firewall, then adopts or releases leases on the host that no
    /// sandbox holds.
    async fn setup_network(&self, used: &[u32]) -> Result<(), BackendError>;
    /// Whether the firewall's table is still on the host (a `flush ruleset` removes it).
    async fn firewall_intact(&self) -> bool;
    /// Replaces the egress policy of the sandbox on lease `index`, at once.
    async fn set_egress(&self, index: u32, policy: &EgressPolicy) -> Result<(), BackendError>;
    /// Resolves the domain names of every egress policy in force again, updating the rules of
    /// those whose addresses changed; how many changed.
    async fn refresh_egress_names(&self) -> usize;
    /// Makes and starts a sandbox; on failure nothing of it is left.
    async fn provision(&self, spec: &SandboxSpec) -> Result<Provisioned, BackendError>;
    /// The runtime's view of a sandbox.
    async fn status(&self, id: &str, runtime: Runtime) -> ContainerStatus;
    /// Asks a sandbox to stop, waiting up to `grace`.
    async fn stop(&self, id: &str, runtime: Runtime, grace: Duration);
    /// Releases all host resources of a sandbox but its files (idempotent).
    async fn release(&self, id: &str, runtime: Runtime, net_index: Option<u32>);
    /// Removes a sandbox's files.
    fn remove_files(&self, id: &str);
    /// A running sandbox's output as timed lines after `since_ns` (nanoseconds since the
    /// epoch), followed as it comes, where the backend keeps output behind an API rather than
    /// in [`log_files`](Self::log_files) (Kubernetes' `pods/log`). The stream ends when the
    /// API lets go; call again from the last line's time.
    async fn log_lines(
        &self,
        _id: &str,
        _since_ns: Option<i64>,
    ) -> Result<crate::LogLines, BackendError> {
        Err(BackendError::Unsupported(
            "this backend's output is in files".into(),
        ))
    }
    /// Whether output comes from [`log_lines`](Self::log_lines), not files.
    fn streams_logs(&self) -> bool {
        false
    }
    /// Where a sandbox's output goes, by stream name (`stdout`, `stderr`).
    fn log_files(&self, id: &str) -> Vec<(&'static str, PathBuf)>;
    /// Why a sandbox that should be running is not, when the backend can say more than its
    /// status (a Pod deleted or evicted from under it, a node lost); `None` otherwise.
    async fn why_gone(&self, _id: &str) -> Option<String> {
        None
    }
    /// OOM kills seen in the sandbox's memory cgroup.
    fn oom_kills(&self, id: &str) -> u64;
    /// Why [`usage`](Self::usage) measures nothing on this backend, if it does not.
    fn usage_unmeasured(&self) -> Option<&'static str> {
        None
    }
    /// CPU and memory use from the sandbox's cgroup (`None` without one).
    fn usage(&self, id: &str) -> Option<Usage>;
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
    ) -> Result<PauseReceipt, BackendError>;
    /// Whether a pause of the sandbox was begun and not finished (a crash in between).
    fn pause_begun(&self, id: &str) -> bool;
    /// How long ago an unfinished checkpoint's files last changed (`None` without one).
    fn pause_begun_ago(&self, id: &str) -> Option<Duration>;
    /// Whether a checkpoint or restore of the sandbox is running now.
    fn pause_busy(&self, id: &str, runtime: Runtime) -> bool;
    /// Finishes a pause whose checkpoint was written (its container has exited).
    async fn finish_pause(&self, id: &str, runtime: Runtime) -> Result<PauseReceipt, BackendError>;
    /// The receipt of the sandbox's pause image.
    fn pause_receipt(&self, id: &str) -> Result<PauseReceipt, BackendError>;
    /// Brings a paused sandbox back from its verified pause image.
    async fn resume(&self, spec: &SandboxSpec) -> Result<Provisioned, BackendError>;
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
    ) -> Result<(), BackendError>;

    /// Makes `spec`'s sandbox a paused copy of `from`'s state (image and disk copied,
    /// network and bundle made); the copied receipt.
    async fn prepare_fork(
        &self,
        spec: &SandboxSpec,
        from: ForkFrom<'_>,
    ) -> Result<PauseReceipt, BackendError>;
    /// Keeps a paused sandbox's disk (and, with `memory`, its image) as snapshot `name`.
    async fn save_snapshot(
        &self,
        id: &str,
        name: &str,
        memory: bool,
    ) -> Result<PauseReceipt, BackendError>;
    /// Removes a snapshot's files (blocking).
    fn remove_snapshot(&self, name: &str) -> std::io::Result<()>;
    /// Gives a new sandbox a copy of a snapshot's disk before it is provisioned.
    async fn seed_disk(&self, id: &str, snapshot: &str) -> Result<(), BackendError>;
    /// The sandbox address of network lease `index`.
    fn net_ip(&self, index: u32) -> Ipv4Addr;
    /// Makes a volume of `size_mb` unless it exists, and mounts it (blocking).
    fn ensure_volume(&self, name: &str, size_mb: u64) -> std::io::Result<()>;
    /// Bytes in use on a mounted volume.
    fn volume_usage(&self, name: &str) -> Option<u64>;
    /// Removes a volume and its files (blocking).
    fn remove_volume(&self, name: &str) -> std::io::Result<()>;
    /// Sends a copy of a volume to the object store.
    async fn backup_volume(&self, name: &str) -> Result<VolumeBackup, BackendError>;
    /// Removes a volume's copy from the object store (in the background).
    fn discard_volume_backup(&self, name: &str);
}
