//! [`LocalBackend`]: sandboxes on this host, put together from the pieces of this crate.
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use warren_api::Runtime;

use crate::bundle::AGENT_PORT;
use crate::cgroup::{self, CgroupMode};
use crate::disk::SandboxDisk;
use crate::firewall::{self, Firewall};
use crate::host::{raise_nofile, resolv_conf, which};
use crate::idmap::IdMap;
use crate::images::ImageStore;
use crate::net::{Lease, NetPlan};
use crate::netpool::NetPool;
use crate::pull::Puller;
use crate::rootfs;
use crate::runtime::{CliRuntime, ContainerRuntime, ContainerStatus};

mod boundary;
pub use boundary::LocalLayers;
mod fork;
pub use fork::ForkFrom;
mod liveness;
mod network;
mod parts;
mod pause;
mod volumes;
pub use volumes::VolumeBackup;

/// Errors of the local backend.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The host lacks something Warren needs.
    #[error("host setup: {0}")]
    Setup(String),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    /// A provisioning step failed.
    #[error("{step}: {message}")]
    Step {
        /// Which step (`rootfs`, `network`, `bundle`, `runtime`).
        step: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The runtime cannot do this here.
    #[error("{0}")]
    Unsupported(String),
    /// A pause image is missing, incomplete or does not match its receipt.
    #[error("{0}")]
    PauseImage(String),
}

fn step(step: &'static str) -> impl FnOnce(String) -> LocalError {
    move |message| LocalError::Step { step, message }
}

/// File in a sandbox's directory receiving its init's (the agent's, so the main command's)
/// standard output; [`STDERR_LOG`] likewise.
pub const STDOUT_LOG: &str = "stdout.log";
/// See [`STDOUT_LOG`].
pub const STDERR_LOG: &str = "stderr.log";

/// Settings of one server's local backend. Everything host-wide it names carries `tag`, so two
/// servers on one host never touch each other's resources.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// Address range for sandboxes.
    pub subnet: Ipv4Net,
    /// Four characters naming this server's host resources.
    pub tag: String,
    /// The static agent binary to mount into sandboxes.
    pub agent_binary: PathBuf,
    /// How many network leases to keep made ahead of time.
    pub warm_leases: usize,
    /// Set the kernel's `rcu_expedited`: container runtimes wait on RCU grace periods, which
    /// an idle kernel stretches to tens of milliseconds. Host-wide, so opt-in.
    pub expedite_rcu: bool,
    /// Remount the cgroup2 hierarchy with `favordynmods` (see [`cgroup::favor_dynmods`]):
    /// host-wide until reboot, on by default since every sandbox start pays for its absence.
    pub favor_dynmods: bool,
    /// Name servers for sandboxes' `resolv.conf`; empty: the host's.
    pub dns: Vec<Ipv4Addr>,
    /// Registry credentials and plain-HTTP registries for image pulls.
    pub pull: crate::pull::PullConfig,
    /// Open files per sandbox process (`RLIMIT_NOFILE`).
    pub nofile: u64,
    /// Raise the host's `fs.file-max` (see [`crate::host::raise_file_max`]): host-wide.
    pub raise_file_max: bool,
    /// Raise the host's `kernel.pid_max` (see [`crate::host::raise_pid_max`]): host-wide.
    pub raise_pid_max: bool,
    /// How gVisor sandboxes run.
    pub gvisor: crate::runtime::GvisorConfig,
    /// Where pause images are kept besides local disk (`--object-store`).
    pub offsite: Option<crate::offsite::Offsite>,
}

/// Where sandboxes' merged root filesystems are mounted: outside the 0700 data dir (under a
/// 0700 home a runc sandbox's user namespace could never reach its own rootfs), in a
/// directory only root and that namespace's root group may enter.
pub const ROOTFS_PARENT: &str = "/run/warren";

pub use warren_backend::{Provisioned, SandboxSpec, SpecVolume};

/// Sandboxes on this host.
#[derive(Clone)]
pub struct LocalBackend {
    cfg: Arc<LocalConfig>,
    images: ImageStore,
    puller: Arc<Puller>,
    net: NetPlan,
    pool: Arc<NetPool>,
    cgroups: CgroupMode,
    runsc: Arc<dyn ContainerRuntime>,
    crun: Arc<dyn ContainerRuntime>,
    resolv_conf: String,
    firewall: Firewall,
    // The user namespace stamping runc sandboxes' layer views; an error says why runc
    // sandboxes cannot start.
    idmap: Arc<Result<IdMap, String>>,
    // Warm leases whose chain already holds the default policy (`allow`): a create with that
    // policy skips its `nft` run (a process spawn, ~2.5 ms).
    allow_ready: Arc<std::sync::Mutex<std::collections::HashSet<u32>>>,
    // Running containers' init processes, checked in /proc instead of asking the runtime.
    live: Arc<liveness::Known>,
    volumes: crate::volumes::Volumes,
    // Volume backups and fetches, one at a time: they share staging names, a backup freezes
    // the volume, and a fetch must not land twice.
    volume_copies: Arc<tokio::sync::Mutex<()>>,
}

impl LocalBackend {
    /// Prepares the host (directories, the cgroup hybrid-mode fix) and checks the tools.
    pub fn new(cfg: LocalConfig) -> Result<Self, LocalError> {
        let setup = |m: String| LocalError::Setup(m);
        for sub in ["sandboxes", "run/runsc", "run/crun"] {
            let p = cfg.data_dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| setup(format!("creating {}: {e}", p.display())))?;
        }
        crate::host::private_dirs(&cfg.data_dir, &Self::rootfs_root(&cfg.tag))
            .map_err(|e| setup(format!("securing directories: {e}")))?;
        let idmap = IdMap::new().map_err(|e| {
            tracing::error!(
                "runc sandboxes cannot start: their user namespace could not be made: {e}"
            );
            format!("no user namespace for runc sandboxes: {e}")
        });
        let mut missing: Vec<&str> = ["ip", "crun"].into_iter().filter(|b| !which(b)).collect();
        let runsc = &cfg.gvisor.binary;
        let runsc_found = if runsc.components().count() > 1 {
            runsc.is_file()
        } else {
            which(&runsc.to_string_lossy())
        };
        if !runsc_found {
            missing.push("runsc");
        }
        if missing.contains(&"ip") {
            return Err(setup(
                "`ip` (iproute2) is not on PATH: apt-get install iproute2".into(),
            ));
        }
        for m in &missing {
            let how = if *m == "runsc" {
                format!(
                    "{} not found: scripts/install-deps.sh builds it (or --runsc names one)",
                    runsc.display()
                )
            } else {
                format!("{m} is not on PATH (apt-get install {m})")
            };
            tracing::warn!("{how}: sandboxes of that runtime will fail to start");
        }
        raise_nofile();
        let cgroups = CgroupMode::detect();
        match cgroup::fix_hybrid_hugetlb(cgroups) {
            Ok(true) => tracing::info!(
                "mounted the hugetlb cgroup hierarchy (crun needs it in hybrid mode)"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!("{e}"),
        }
        if cfg.favor_dynmods {
            match cgroup::favor_dynmods(cgroups) {
                Ok(true) => tracing::info!(
                    "remounted the cgroup2 hierarchy with favordynmods (sandbox starts no longer \
                     wait for an RCU grace period; --cgroup-favordynmods=false leaves it)"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        if cfg.raise_file_max {
            match crate::host::raise_file_max() {
                Ok(true) => tracing::info!(
                    "raised fs.file-max to its maximum: each sandbox's open files are bounded \
                     by its memory limit, not by a host-wide table it could fill \
                     (--raise-file-max=false leaves it)"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!("raising fs.file-max: {e}"),
            }
        }
        if cfg.raise_pid_max {
            match crate::host::raise_pid_max() {
                Ok(true) => tracing::info!(
                    "raised kernel.pid_max to 4194304: gVisor sandboxes hold some thirty \
                     threads each (--raise-pid-max=false leaves it)"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!("raising kernel.pid_max: {e}"),
            }
        }
        let images = ImageStore::open(&cfg.data_dir.join("images"))?;
        let puller =
            Arc::new(Puller::new(images.clone(), &cfg.pull).map_err(|e| setup(e.to_string()))?);
        let resolv_conf = resolv_conf(&cfg.dns);
        if !which("nft") {
            return Err(setup(
                "`nft` (nftables) is not on PATH: apt-get install nftables".into(),
            ));
        }
        if cfg.expedite_rcu {
            match fs::write("/sys/kernel/rcu_expedited", "1") {
                Ok(()) => tracing::info!("set /sys/kernel/rcu_expedited = 1"),
                Err(e) => tracing::warn!("setting /sys/kernel/rcu_expedited: {e}"),
            }
        }
        let net = NetPlan::new(cfg.subnet, &cfg.tag);
        let firewall = Firewall::new(&cfg.tag, cfg.subnet, firewall::nameservers(&resolv_conf));
        let volumes = crate::volumes::Volumes::new(&cfg.data_dir);
        volumes.recover();
        Ok(LocalBackend {
            volumes,
            volume_copies: Arc::default(),
            firewall,
            allow_ready: Arc::default(),
            live: Arc::default(),
            pool: Arc::new(NetPool::new(net.clone(), cfg.warm_leases)),
            net,
            runsc: Arc::new(CliRuntime::gvisor(
                &cfg.gvisor,
                &cfg.data_dir.join("run/runsc"),
            )),
            crun: Arc::new(CliRuntime::crun(&cfg.data_dir.join("run/crun"))),
            cfg: Arc::new(cfg),
            idmap: Arc::new(idmap),
            images,
            puller,
            cgroups,
            resolv_conf,
        })
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// The registry client.
    pub fn puller(&self) -> &Puller {
        &self.puller
    }

    /// The address plan.
    pub fn net_plan(&self) -> &NetPlan {
        &self.net
    }

    /// The host's cgroup layout.
    pub fn cgroup_mode(&self) -> CgroupMode {
        self.cgroups
    }

    /// Whether the runtime's sandboxes run on gVisor's own network stack, which ends without
    /// closing the host's connections to them (see [`crate::net::Lease::cut_host_connections`]).
    fn on_netstack(&self, runtime: Runtime) -> bool {
        runtime == Runtime::Gvisor && self.cfg.gvisor.network == "sandbox"
    }

    /// The driver of a runtime.
    pub fn runtime(&self, runtime: Runtime) -> Arc<dyn ContainerRuntime> {
        match runtime {
            Runtime::Gvisor => self.runsc.clone(),
            Runtime::Runc => self.crun.clone(),
        }
    }

    /// A sandbox's directory.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("sandboxes").join(id)
    }

    /// The cgroup path of a sandbox.
    pub fn cgroups_path(&self, id: &str) -> String {
        format!("/warren-{}/{}", self.cfg.tag, id)
    }

    fn rootfs_root(tag: &str) -> PathBuf {
        PathBuf::from(ROOTFS_PARENT).join(tag)
    }

    /// Where a sandbox's merged root filesystem is mounted.
    pub fn rootfs_dir(&self, id: &str) -> PathBuf {
        Self::rootfs_root(&self.cfg.tag).join(id)
    }

    /// Where a runc sandbox's bind-mounted files (its `/etc` files, token, agent and volume
    /// views) are: beside its root filesystem, in the directory only root and runc sandboxes'
    /// root may enter, because CRIU mounts them again at restore as that root.
    pub fn runc_files_dir(&self, id: &str) -> PathBuf {
        Self::rootfs_root(&self.cfg.tag).join(format!("{id}.files"))
    }

    fn disk(&self, id: &str) -> SandboxDisk {
        SandboxDisk::new(&self.sandbox_dir(id))
    }

    /// Where the overlay's upper and work directories of a sandbox live: on its own disk, or,
    /// for a sandbox made by a server before disks, in its directory.
    fn upper_root(&self, id: &str) -> PathBuf {
        let disk = self.disk(id);
        if !disk.exists() && self.sandbox_dir(id).join("upper").exists() {
            self.sandbox_dir(id)
        } else {
            disk.mount
        }
    }

    /// Makes the rootfs, network and bundle and starts the container. On failure every
    /// partial resource is released before the error returns.
    pub async fn provision(&self, spec: &SandboxSpec) -> Result<Provisioned, LocalError> {
        let res = self.try_provision(spec).await;
        if res.is_err() {
            self.release(&spec.id, spec.runtime, Some(spec.net_index))
                .await;
        }
        res
    }

    async fn try_provision(&self, spec: &SandboxSpec) -> Result<Provisioned, LocalError> {
        let mut steps = Vec::new();
        let t = Instant::now();
        if let Some(missing) = spec.layers.iter().find(|l| !self.images.has_layer(l)) {
            return Err(step("rootfs")(format!("image layer {missing} is missing")));
        }
        self.mount_rootfs(spec)?;
        self.fetch_volumes(spec).await?;
        let volume_binds = self.mount_volumes(spec)?;
        steps.push(("rootfs", t.elapsed()));

        let t = Instant::now();
        let lease = self.ready_network(spec).await?;
        steps.push(("network", t.elapsed()));

        let t = Instant::now();
        self.write_bundle_for(spec, &lease, &volume_binds)?;
        steps.push(("bundle", t.elapsed()));
        let dir = self.sandbox_dir(&spec.id);
        let bundle_dir = dir.join("bundle");

        let t = Instant::now();
        self.start_container(spec, &lease, &bundle_dir).await?;
        steps.push(("runtime", t.elapsed()));
        Ok(Provisioned {
            ip: lease.sandbox_ip,
            agent_addr: SocketAddr::from((lease.sandbox_ip, AGENT_PORT)),
            steps,
        })
    }

    /// Asks the container to stop (SIGTERM to the agent, which passes it on), waiting up to
    /// `grace` before the release kills it.
    pub async fn stop(&self, id: &str, runtime: Runtime, grace: Duration) {
        let rt = self.runtime(runtime);
        if rt.kill(id, "TERM").await.is_ok() {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                match rt.status(id).await {
                    Ok(ContainerStatus::Running) | Ok(ContainerStatus::Paused) => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    _ => break,
                }
            }
        }
    }

    /// How many OOM kills the sandbox's memory cgroup has seen.
    pub fn oom_kills(&self, id: &str) -> u64 {
        cgroup::oom_kills(self.cgroups, &self.cgroups_path(id))
    }

    /// What the sandbox's cgroup has used (`None` when it has none, e.g. stopped).
    pub fn usage(&self, id: &str) -> Option<cgroup::Usage> {
        cgroup::usage(self.cgroups, &self.cgroups_path(id))
    }

    /// Bytes the sandbox has written to its own layer (what it adds to its image): its disk's
    /// usage, or for a sandbox without a disk, the size of its upper directory.
    pub fn disk_used(&self, id: &str) -> u64 {
        if let Some(usage) = self.disk(id).usage() {
            return usage.used;
        }
        let upper = self.sandbox_dir(id).join("upper");
        walkdir::WalkDir::new(upper)
            .into_iter()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .sum()
    }

    /// Releases every host resource of a sandbox but its files: container, cgroup, overlay
    /// mount, network. Idempotent; logs but never fails, so it is safe after any failure.
    pub async fn release(&self, id: &str, runtime: Runtime, net_index: Option<u32>) {
        self.live.forget(id);
        if let Err(e) = self.runtime(runtime).delete(id).await {
            tracing::warn!(sandbox = id, "deleting container: {e}");
        }
        // A runtime's delete can return while the killed tasks still exit (a gVisor sandbox
        // restored from a large image, on a loaded host): their cgroup answers EBUSY until
        // then, and a server whose last sandbox's cgroup stays cannot remove its parent.
        self.wait_processes_gone(id).await;
        let (mode, path) = (self.cgroups, self.cgroups_path(id));
        let _ = tokio::task::spawn_blocking(move || {
            cgroup::remove_patiently(mode, &path, Duration::from_secs(3))
        })
        .await;
        let _ = self.unmount_rootfs(id);
        if let Some(i) = net_index {
            let lease = self.net.lease(i);
            if self.on_netstack(runtime) {
                lease.cut_host_connections().await;
            }
            self.take_allow_ready(i);
            if let Err(e) = self.firewall.remove(&lease).await {
                tracing::warn!(sandbox = id, "removing its nftables rules: {e}");
            }
            lease.release().await;
        }
    }

    /// The files a sandbox's output goes to: (`stdout`, path), (`stderr`, path).
    pub fn log_files(&self, id: &str) -> [(&'static str, PathBuf); 2] {
        let dir = self.sandbox_dir(id);
        [
            ("stdout", dir.join(STDOUT_LOG)),
            ("stderr", dir.join(STDERR_LOG)),
        ]
    }

    /// The warm lease pool.
    pub fn net_pool(&self) -> &NetPool {
        &self.pool
    }

    /// Removes the sandbox's directory (its writes). Call after [`release`](Self::release).
    pub fn remove_files(&self, id: &str) {
        self.discard_offsite(pause::pause_key(id));
        let dir = self.sandbox_dir(id);
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(sandbox = id, "removing {}: {e}", dir.display());
            }
        }
    }

    /// Everything of a sandbox still on the host (empty after a delete): for tests and checks.
    pub async fn leftovers(
        &self,
        id: &str,
        runtime: Runtime,
        net_index: Option<u32>,
    ) -> Vec<String> {
        let mut v: Vec<String> = rootfs::mounts_under(&self.sandbox_dir(id))
            .into_iter()
            .chain(rootfs::mounts_under(&self.rootfs_dir(id)))
            .map(|m| format!("mount {m}"))
            .collect();
        if self.rootfs_dir(id).exists() {
            v.push(format!("dir {}", self.rootfs_dir(id).display()));
        }
        v.extend(
            cgroup::leftovers(self.cgroups, &self.cgroups_path(id))
                .into_iter()
                .map(|d| format!("cgroup {}", d.display())),
        );
        if let Some(i) = net_index {
            v.extend(self.net.lease(i).leftovers());
            if self.firewall.lease_chains().await.contains(&i) {
                v.push(format!("nftables chain {} sb_{i}", self.firewall.table()));
            }
        }
        if self.runtime(runtime).status(id).await.ok() != Some(ContainerStatus::Missing) {
            v.push(format!("container {id}"));
        }
        if self.sandbox_dir(id).exists() {
            v.push(format!("dir {}", self.sandbox_dir(id).display()));
        }
        v
    }

    /// The lease of an index.
    pub fn lease(&self, index: u32) -> Lease {
        self.net.lease(index)
    }

    /// The sandboxes' firewall.
    pub fn firewall(&self) -> &Firewall {
        &self.firewall
    }

    /// Removes what the server shares among all its sandboxes (the parent cgroup, the
    /// firewall table); only when it has none left.
    pub async fn remove_shared(&self) {
        // The last sandboxes' cgroups may still be going (their tasks just killed): their
        // parent goes once they have.
        let (mode, parent) = (self.cgroups, format!("/warren-{}", self.cfg.tag));
        let left = tokio::task::spawn_blocking(move || {
            cgroup::remove_patiently(mode, &parent, Duration::from_secs(10));
            cgroup::leftovers(mode, &parent)
        })
        .await
        .unwrap_or_default();
        if !left.is_empty() {
            tracing::warn!(
                "the sandboxes' parent cgroup is still there after 10 s (a task in it did not \
                 exit): {left:?}"
            );
        }
        let root = Self::rootfs_root(&self.cfg.tag);
        // The agent's copies runc sandboxes bind (the only files there).
        for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        let _ = fs::remove_dir(root);
        self.firewall.remove_table().await;
        release_runsc_pins(&self.cfg.data_dir.join("run/runsc"));
        self.volumes.release_all();
    }
}

/// Unmounts the empty network namespace runsc pins under its root (`null-netns`) so its gofers
/// start faster; concurrent runsc starts may stack several there. Left alone it keeps the
/// data dir's `run/runsc` busy (EBUSY on removal) after the last sandbox is gone.
pub fn release_runsc_pins(runsc_root: &Path) {
    let pin = runsc_root.join("null-netns");
    while rustix::mount::unmount(&pin, rustix::mount::UnmountFlags::DETACH).is_ok() {}
}
