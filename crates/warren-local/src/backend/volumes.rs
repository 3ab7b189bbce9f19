//! A sandbox's volumes: mounted (made the first time) before its container starts, seen
//! through an ID-mapped view of their own under runc, unmounted again with its filesystem.
use std::fs;
use std::path::PathBuf;

use warren_api::Runtime;

use super::{step, LocalBackend, LocalError, SandboxSpec};

impl LocalBackend {
    /// The server's volumes.
    pub fn volumes(&self) -> &crate::volumes::Volumes {
        &self.volumes
    }

    fn volume_views(&self, id: &str) -> PathBuf {
        self.runc_files_dir(id).join("volumes")
    }

    /// Mounts the spec's volumes; what the bundle binds: host directory, path, read-only.
    pub(super) fn mount_volumes(
        &self,
        spec: &SandboxSpec,
    ) -> Result<Vec<(PathBuf, String, bool)>, LocalError> {
        let mut binds = Vec::new();
        for (i, v) in spec.volumes.iter().enumerate() {
            let fail = |e: std::io::Error| step("volumes")(format!("volume {}: {e}", v.name));
            let dir = self.volumes.ensure(&v.name, v.size_mb).map_err(fail)?;
            let source = match spec.runtime {
                Runtime::Gvisor => dir,
                Runtime::Runc => {
                    let map = self
                        .idmap
                        .as_ref()
                        .as_ref()
                        .map_err(|e| step("volumes")(e.clone()))?;
                    let view = self.volume_views(&spec.id).join(i.to_string());
                    fs::create_dir_all(&view).map_err(fail)?;
                    if !crate::rootfs::is_mounted(&view) {
                        map.mount_mapped(&dir, &view).map_err(fail)?;
                    }
                    view
                }
            };
            binds.push((source, v.path.clone(), v.read_only));
        }
        Ok(binds)
    }

    /// Unmounts a sandbox's ID-mapped volume views (idempotent).
    pub(super) fn unmount_volume_views(&self, id: &str) -> Result<(), String> {
        let mut first = Ok(());
        // The second is where servers before runc's pause made them.
        for dir in [self.volume_views(id), self.sandbox_dir(id).join("volumes")] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let view = e.path();
                if crate::rootfs::is_mounted(&view) {
                    if let Err(err) = nix::mount::umount2(&view, nix::mount::MntFlags::MNT_DETACH) {
                        tracing::warn!(sandbox = id, "unmounting {}: {err}", view.display());
                        first = first.and(Err(format!("unmounting {}: {err}", view.display())));
                        continue;
                    }
                }
                let _ = fs::remove_dir(&view);
            }
            let _ = fs::remove_dir(&dir);
        }
        first
    }
}
