//! The parts of a sandbox a provision, a resume and a fork share: its root filesystem (disk
//! and overlay), its network with its rules, its bundle.
use std::fs;
use std::path::{Path, PathBuf};

use warren_api::Runtime;

use super::{step, LocalBackend, LocalError, SandboxSpec, STDERR_LOG, STDOUT_LOG};
use crate::bundle::{self, BundleSpec};
use crate::confinement::USERNS_HOST_BASE;
use crate::firewall::EgressPolicy;
use crate::net::Lease;
use crate::rootfs::OverlayMount;

impl LocalBackend {
    /// Makes the sandbox's network namespace and link unless there, with its egress rules.
    pub(super) async fn ready_network(&self, spec: &SandboxSpec) -> Result<Lease, LocalError> {
        let lease = self.net.lease(spec.net_index);
        if !lease.exists() {
            lease
                .create()
                .await
                .map_err(|e| step("network")(e.to_string()))?;
        }
        // Before anything runs in the namespace: a veth without its rules can send nothing.
        let prepared = self.take_allow_ready(spec.net_index);
        if !(prepared && spec.egress == EgressPolicy::Allow) {
            self.firewall
                .apply(&lease, &spec.egress)
                .await
                .map_err(|e| step("network")(e.to_string()))?;
        }
        Ok(lease)
    }

    /// Runs the sandbox's container from its bundle. Under runc the runtime makes the network
    /// namespace (in the sandbox's user namespace) and the link goes in before anything runs
    /// there: create, adopt, start.
    pub(super) async fn start_container(
        &self,
        spec: &SandboxSpec,
        lease: &Lease,
        bundle: &Path,
    ) -> Result<(), LocalError> {
        let dir = self.sandbox_dir(&spec.id);
        let (stdout, stderr) = (dir.join(STDOUT_LOG), dir.join(STDERR_LOG));
        let rt = self.runtime(spec.runtime);
        let runtime = |e: std::io::Error| step("runtime")(e.to_string());
        match spec.runtime {
            Runtime::Gvisor => rt
                .run(&spec.id, bundle, &stdout, &stderr)
                .await
                .map_err(runtime),
            Runtime::Runc => {
                rt.create(&spec.id, bundle, &stdout, &stderr)
                    .await
                    .map_err(runtime)?;
                let pid = rt.pid(&spec.id).await.map_err(runtime)?;
                lease
                    .adopt(pid)
                    .await
                    .map_err(|e| step("network")(e.to_string()))?;
                rt.start(&spec.id).await.map_err(runtime)
            }
        }
    }

    /// Writes the sandbox's OCI bundle (its root filesystem at [`Self::rootfs_dir`]).
    pub(super) fn write_bundle_for(
        &self,
        spec: &SandboxSpec,
        lease: &Lease,
        volume_binds: &[(PathBuf, String, bool)],
    ) -> Result<(), LocalError> {
        let bundle_dir = self.sandbox_dir(&spec.id).join("bundle");
        let netns_path = lease.netns_path();
        let cgroups_path = self.cgroups_path(&spec.id);
        let rootfs = self.rootfs_dir(&spec.id);
        let (files_dir, agent) = match spec.runtime {
            Runtime::Gvisor => (bundle_dir.clone(), self.cfg.agent_binary.clone()),
            Runtime::Runc => (self.ready_runc_files(&spec.id)?, self.runc_agent()?),
        };
        bundle::write_bundle(
            &bundle_dir,
            &files_dir,
            &BundleSpec {
                id: &spec.id,
                runtime: spec.runtime,
                rootfs: &rootfs,
                agent: &agent,
                netns_path: &netns_path,
                cgroups_path: &cgroups_path,
                token: &spec.token,
                cmd: &spec.cmd,
                cwd: &spec.cwd,
                user: &spec.user,
                env: &spec.env,
                cpu: spec.cpu,
                memory_mb: spec.memory_mb,
                pids: spec.pids,
                ip: lease.sandbox_ip,
                resolv_conf: &self.resolv_conf,
                nofile: self.cfg.nofile,
                volumes: volume_binds,
            },
        )
        .map_err(|e| step("bundle")(e.to_string()))
    }

    /// The agent binary as runc sandboxes bind it: a copy beside their root filesystems, where
    /// CRIU can mount it again at restore as their root. Its name carries the binary's hash,
    /// so a new agent is a new copy.
    fn runc_agent(&self) -> Result<PathBuf, LocalError> {
        let name = self.cfg.agent_binary.file_name().unwrap_or_default();
        let copy = self.rootfs_dir("").join(name);
        let src = fs::metadata(&self.cfg.agent_binary)
            .map_err(|e| step("bundle")(format!("the agent binary: {e}")))?;
        if fs::metadata(&copy).is_ok_and(|m| m.len() == src.len()) {
            return Ok(copy);
        }
        // A name of this call's own: creates at once each write their copy, the last rename
        // wins, and every rename puts a whole one in place.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = copy.with_extension(format!("{}-{nanos}.partial", std::process::id()));
        let copied = fs::copy(&self.cfg.agent_binary, &tmp).and_then(|_| fs::rename(&tmp, &copy));
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(step("bundle")(format!("copying the agent binary: {e}")));
        }
        Ok(copy)
    }

    /// Makes a runc sandbox's [`Self::runc_files_dir`] `0710`, root's and runc sandboxes'
    /// group's (whatever the umask), as its parent is.
    pub(super) fn ready_runc_files(&self, id: &str) -> Result<PathBuf, LocalError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.runc_files_dir(id);
        let made = fs::create_dir_all(&dir)
            .and_then(|()| std::os::unix::fs::chown(&dir, Some(0), Some(USERNS_HOST_BASE)))
            .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o710)));
        made.map_err(|e| step("bundle")(format!("{}: {e}", dir.display())))?;
        Ok(dir)
    }

    /// Removes a runc sandbox's bound files (not its volume views: [`Self::unmount_rootfs`]
    /// unmounts them first).
    fn remove_runc_files(&self, id: &str) {
        let dir = self.runc_files_dir(id);
        for f in bundle::BOUND_FILES {
            let _ = fs::remove_file(dir.join(f));
        }
        let _ = fs::remove_dir(&dir);
    }

    /// Mounts a sandbox's root filesystem: its own disk (made the first time), and the
    /// overlay of the image's layers with the disk's upper directory.
    pub(super) fn mount_rootfs(&self, spec: &SandboxSpec) -> Result<OverlayMount, LocalError> {
        let upper_root = self.upper_root(&spec.id);
        let disk = self.disk(&spec.id);
        if upper_root == disk.mount {
            disk.ensure(spec.disk_mb, &self.cfg.data_dir.join("disk-templates"))
                .map_err(|e| step("rootfs")(format!("its disk: {e}")))?;
        }
        let layers: Vec<_> = spec
            .layers
            .iter()
            .map(|d| self.images.layer_dir(d))
            .collect();
        let overlay = OverlayMount::new(&upper_root, self.rootfs_dir(&spec.id), &layers);
        let (idmap, owner) = match spec.runtime {
            Runtime::Runc => {
                let map = self
                    .idmap
                    .as_ref()
                    .as_ref()
                    .map_err(|e| step("rootfs")(e.clone()))?;
                (Some(map), USERNS_HOST_BASE)
            }
            Runtime::Gvisor => (None, 0),
        };
        overlay
            .mount(idmap, owner)
            .map_err(|e| step("rootfs")(e.to_string()))?;
        Ok(overlay)
    }

    /// Stores what a stopped sandbox changed in its root filesystem as an image layer (an
    /// image build's step). Its disk is mounted for the reading when it is not.
    pub fn store_changes(
        &self,
        id: &str,
        max_bytes: u64,
        keep: &mut dyn FnMut(&crate::images::Imported) -> Result<(), crate::images::ImageError>,
    ) -> Result<crate::images::Imported, LocalError> {
        let upper_root = self.upper_root(id);
        let disk = self.disk(id);
        let mount_here = upper_root == disk.mount && !crate::rootfs::is_mounted(&disk.mount);
        if mount_here {
            disk.ensure(0, &self.cfg.data_dir.join("disk-templates"))
                .map_err(|e| step("changes")(format!("mounting its disk: {e}")))?;
        }
        let stored = self
            .images
            .store_changes(&upper_root.join("upper"), max_bytes, keep);
        if mount_here {
            let _ = disk.release();
        }
        Ok(stored?)
    }

    /// Unmounts a sandbox's root filesystem and its disk (idempotent); the first failure.
    pub(super) fn unmount_rootfs(&self, id: &str) -> Result<(), String> {
        let mut first = Ok(());
        // The second is where servers before 0.1 mounted it.
        for merged in [self.rootfs_dir(id), self.sandbox_dir(id).join("rootfs")] {
            let overlay = OverlayMount::new(&self.sandbox_dir(id), merged.clone(), &[]);
            match overlay.release() {
                Ok(()) => {
                    let _ = fs::remove_dir(&merged);
                }
                Err(e) => {
                    tracing::warn!(sandbox = id, "unmounting {}: {e}", merged.display());
                    first = first.and(Err(format!("unmounting {}: {e}", merged.display())));
                }
            }
        }
        if let Err(e) = self.disk(id).release() {
            tracing::warn!(sandbox = id, "unmounting its disk: {e}");
            first = first.and(Err(format!("unmounting its disk: {e}")));
        }
        let views = self.unmount_volume_views(id);
        self.remove_runc_files(id);
        first.and(views)
    }
}
