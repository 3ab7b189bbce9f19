//! Volumes on this host: each an ext4 image of its size (`<data>/volumes/<name>.img`, sparse),
//! mounted at `<data>/volumes/<name>/` while sandboxes use it, so its size is enforced by its
//! own filesystem and it outlives them. Sandboxes with a user namespace (runc) get an
//! ID-mapped view of it each, so every sandbox's root stores files as uid 0.
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::disk::{DiskUsage, SandboxDisk};

/// The volumes of one server.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
    templates: PathBuf,
}

impl Volumes {
    /// The volumes under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Volumes {
            dir: data_dir.join("volumes"),
            templates: data_dir.join("disk-templates"),
        }
    }

    fn disk(&self, name: &str) -> SandboxDisk {
        SandboxDisk {
            image: self.dir.join(format!("{name}.img")),
            mount: self.dir.join(name),
        }
    }

    /// Makes the volume (`size_mb`) unless it exists and mounts it unless mounted; where it
    /// is mounted. A new volume's top directory is open to every user of a sandbox.
    pub fn ensure(&self, name: &str, size_mb: u64) -> io::Result<PathBuf> {
        let disk = self.disk(name);
        let fresh = !disk.image.exists();
        disk.ensure(size_mb, &self.templates)?;
        if fresh {
            let _ = fs::remove_dir(disk.mount.join("lost+found"));
            fs::set_permissions(&disk.mount, fs::Permissions::from_mode(0o777))?;
        }
        Ok(disk.mount)
    }

    /// The volume's image file and where it is mounted when in use.
    pub fn paths(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.disk(name);
        (d.image, d.mount)
    }

    /// Where this host's volumes are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Usage of a mounted volume.
    pub fn usage(&self, name: &str) -> Option<DiskUsage> {
        self.disk(name).usage()
    }

    /// Unmounts a volume (idempotent); its files stay.
    pub fn release(&self, name: &str) -> io::Result<()> {
        self.disk(name).release()
    }

    /// Unmounts and removes a volume and its files.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let disk = self.disk(name);
        disk.release()?;
        for (p, dir) in [(&disk.mount, true), (&disk.image, false)] {
            let res = if dir {
                fs::remove_dir(p)
            } else {
                fs::remove_file(p)
            };
            match res {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// At start: thaws every mounted volume (a backup cut off by a crash may have left one
    /// frozen, every write to it waiting) and removes what cut-off backups and fetches left.
    pub fn recover(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".backup-")
                || name.starts_with(".fetching-")
                || name.starts_with(".fetched-")
            {
                let _ = fs::remove_dir_all(e.path());
            } else if name.starts_with('.') && name.ends_with(".partial") {
                let _ = fs::remove_file(e.path());
            } else if crate::rootfs::is_mounted(&e.path()) {
                // Not frozen is the usual answer ("Invalid argument"): nothing to do.
                let _ = std::process::Command::new("fsfreeze")
                    .arg("-u")
                    .arg(e.path())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }

    /// Unmounts every volume (when no sandbox is left to use one).
    pub fn release_all(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = name.strip_suffix(".img") {
                if let Err(err) = self.release(name) {
                    tracing::warn!("unmounting volume {name}: {err}");
                }
            }
        }
    }
}
