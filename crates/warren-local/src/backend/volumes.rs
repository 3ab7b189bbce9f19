//! A sandbox's volumes: mounted (made the first time) before its container starts, seen
//! through an ID-mapped view of their own under runc, unmounted again with its filesystem.
use std::fs;
use std::path::{Path, PathBuf};

use warren_api::Runtime;

use super::{step, LocalBackend, LocalError, SandboxSpec};

/// The object-store key of a volume's backup.
fn backup_key(name: &str) -> String {
    format!("volumes/{name}")
}

/// Runs `fsfreeze` (`-f` or `-u`) on a mounted filesystem.
fn fsfreeze(flag: &str, mount: &Path) -> std::io::Result<()> {
    let out = std::process::Command::new("fsfreeze")
        .arg(flag)
        .arg(mount)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "fsfreeze {flag} {}: {}",
            mount.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

pub use warren_backend::VolumeBackup;

impl LocalBackend {
    /// Sends a copy of volume `name` to the object store (`volumes/<name>`, replacing the
    /// last). A mounted volume is frozen (writes wait) while its image is copied aside, so
    /// the copy is a consistent filesystem; the copy is sent after, writes going on.
    pub async fn backup_volume(&self, name: &str) -> Result<VolumeBackup, LocalError> {
        let Some(offsite) = self.cfg.offsite.clone() else {
            return Err(LocalError::Unsupported(
                "volume backups go to an object store: this server has no --object-store".into(),
            ));
        };
        let _one = self.volume_copies.lock().await;
        let (image, mount) = self.volumes.paths(name);
        let staging = self.volumes.dir().join(format!(".backup-{name}"));
        let copy = staging.join("disk.img");
        let fail = |e: std::io::Error| step("backup")(format!("volume {name}: {e}"));
        let (image2, copy2, staging2) = (image.clone(), copy.clone(), staging.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if !image2.is_file() {
                return Err(std::io::Error::other("it is not on this host"));
            }
            if staging2.exists() {
                fs::remove_dir_all(&staging2)?;
            }
            fs::create_dir_all(&staging2)?;
            let frozen = crate::rootfs::is_mounted(&mount);
            if frozen {
                fsfreeze("-f", &mount)?;
            }
            let copied = crate::receipt::copy_extents(&image2, &copy2);
            let thawed = if frozen {
                fsfreeze("-u", &mount)
            } else {
                Ok(())
            };
            copied.and(thawed)
        })
        .await
        .map_err(|e| step("backup")(e.to_string()))?
        .map_err(fail)?;
        let key = backup_key(name);
        let sent = offsite.put(&key, &staging, None, &copy).await;
        let _ = fs::remove_dir_all(&staging);
        let sent = sent.map_err(fail)?;
        Ok(VolumeBackup {
            stored: offsite.url_of(&key),
            bytes: sent.bytes,
        })
    }

    /// Fetches the backups of the spec's volumes this host lacks (another server sharing the
    /// database and the store made them), before they are mounted: a volume is never made
    /// empty here while the store holds its files.
    pub(super) async fn fetch_volumes(&self, spec: &SandboxSpec) -> Result<(), LocalError> {
        let Some(offsite) = &self.cfg.offsite else {
            return Ok(());
        };
        for v in &spec.volumes {
            let (image, _) = self.volumes.paths(&v.name);
            if image.exists() {
                continue;
            }
            let _one = self.volume_copies.lock().await;
            // Another create may have fetched it meanwhile.
            if image.exists() {
                continue;
            }
            let key = backup_key(&v.name);
            let dir = self.volumes.dir();
            let (done, staging) = (
                dir.join(format!(".fetched-{}", v.name)),
                dir.join(format!(".fetching-{}", v.name)),
            );
            let partial = dir.join(format!(".{}.img.partial", v.name));
            fs::create_dir_all(dir).map_err(|e| step("volumes")(e.to_string()))?;
            let fetched = offsite.fetch_whole(&key, &done, &staging, &partial).await;
            let _ = fs::remove_dir_all(&done);
            match fetched {
                Ok(true) => {
                    fs::rename(&partial, &image).map_err(|e| step("volumes")(e.to_string()))?;
                    tracing::info!(
                        sandbox = %spec.id,
                        "volume {} fetched from {}",
                        v.name,
                        offsite.url_of(&key)
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    let _ = fs::remove_file(&partial);
                    return Err(step("volumes")(format!(
                        "fetching volume {} from {}: {e}",
                        v.name,
                        offsite.url_of(&key)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Removes a volume's backup from the object store (in the background).
    pub fn discard_volume_backup(&self, name: &str) {
        self.discard_offsite(backup_key(name));
    }

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
                    self.ready_runc_files(&spec.id)?;
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
