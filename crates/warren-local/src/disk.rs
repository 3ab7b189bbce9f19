//! A sandbox's own disk: an ext4 filesystem of `disk_mb` in a sparse file, mounted through a
//! loop device, holding the overlay's upper and work directories. What a sandbox writes can
//! never exceed its size (the writer gets `ENOSPC`), and its usage is one `statvfs`, not a
//! walk of its files. Formatting is done once per size into a template; a sandbox's disk is a
//! sparse copy of it (a few milliseconds).
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::MntFlags;

use crate::rootfs::is_mounted;

/// One sandbox's disk: `<sandbox dir>/disk.img` mounted at `<sandbox dir>/disk`.
#[derive(Debug, Clone)]
pub struct SandboxDisk {
    /// The filesystem image (a sparse file).
    pub image: PathBuf,
    /// Where it is mounted; the overlay's upper and work directories live in it.
    pub mount: PathBuf,
}

/// Used and total bytes of a mounted disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes in use (data and the filesystem's own metadata).
    pub used: u64,
    /// Bytes the filesystem holds in all.
    pub total: u64,
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| io::Error::other(format!("running {cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl SandboxDisk {
    /// The disk of the sandbox whose directory is `sandbox_dir`.
    pub fn new(sandbox_dir: &Path) -> Self {
        SandboxDisk {
            image: sandbox_dir.join("disk.img"),
            mount: sandbox_dir.join("disk"),
        }
    }

    /// Makes the image (a copy of the template of `size_mb`, from `templates`) unless it
    /// exists, and mounts it unless mounted. Idempotent.
    pub fn ensure(&self, size_mb: u64, templates: &Path) -> io::Result<()> {
        if is_mounted(&self.mount) {
            return Ok(());
        }
        if !self.image.exists() {
            if let Some(dir) = self.image.parent() {
                fs::create_dir_all(dir)?;
            }
            let template = template(templates, size_mb)?;
            let partial = self.image.with_extension("img.partial");
            run(Command::new("cp")
                .arg("--sparse=always")
                .arg(&template)
                .arg(&partial))?;
            fs::rename(&partial, &self.image)?;
        }
        fs::create_dir_all(&self.mount)?;
        // nodev: nothing on a sandbox's disk is a device to the host; the loop device is
        // released by itself when unmounted (util-linux sets autoclear).
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,nodev"])
            .arg(&self.image)
            .arg(&self.mount))
    }

    /// Unmounts it (idempotent); the image stays, with the sandbox's files.
    pub fn release(&self) -> io::Result<()> {
        if !is_mounted(&self.mount) {
            return Ok(());
        }
        nix::mount::umount2(&self.mount, MntFlags::empty())
            .or_else(|_| nix::mount::umount2(&self.mount, MntFlags::MNT_DETACH))
            .map_err(|e| io::Error::other(format!("umount {}: {e}", self.mount.display())))
    }

    /// Whether a loop device still has the image: its filesystem is not shut down yet (an
    /// unmount that went lazy because something still held it) and may still write to it.
    pub fn attached(&self) -> bool {
        let Ok(image) = fs::canonicalize(&self.image) else {
            return false;
        };
        fs::read_dir("/sys/block")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
            .any(|e| {
                fs::read_to_string(e.path().join("loop/backing_file"))
                    .is_ok_and(|b| Path::new(b.trim()) == image)
            })
    }

    /// Whether this sandbox has a disk (sandboxes made by servers before disks had none).
    pub fn exists(&self) -> bool {
        self.image.exists()
    }

    /// Usage of the mounted disk, `None` when it is not mounted.
    pub fn usage(&self) -> Option<DiskUsage> {
        if !is_mounted(&self.mount) {
            return None;
        }
        let st = nix::sys::statvfs::statvfs(&self.mount).ok()?;
        let block = st.fragment_size();
        Some(DiskUsage {
            used: (st.blocks() - st.blocks_free()) * block,
            total: st.blocks() * block,
        })
    }
}

/// The formatted template of `size_mb`, made once: ext4 with a journal (a host crash leaves a
/// disk that mounts), no blocks reserved for root (the sandbox's root is the only user), an
/// inode per 8 KiB (trees of small files), inode tables and journal initialised lazily so the
/// file stays sparse.
fn template(dir: &Path, size_mb: u64) -> io::Result<PathBuf> {
    let path = dir.join(format!("ext4-{size_mb}m.img"));
    if path.exists() {
        return Ok(path);
    }
    fs::create_dir_all(dir)?;
    let partial = dir.join(format!(
        "ext4-{size_mb}m.img.{}.partial",
        std::process::id()
    ));
    let file = fs::File::create(&partial)?;
    file.set_len(size_mb.saturating_mul(1024 * 1024))?;
    drop(file);
    let res = run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-i", "8192"])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
        .arg(&partial));
    if let Err(e) = res {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    // Concurrent creates may both format; either result is the same.
    fs::rename(&partial, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Needs root (loop devices, mounts), as every test of this crate that mounts.
    #[test]
    fn a_disk_holds_its_size_and_no_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = SandboxDisk::new(&dir.path().join("sb"));
        fs::create_dir_all(dir.path().join("sb")).expect("dir");
        disk.ensure(16, &dir.path().join("templates"))
            .expect("disk");
        let usage = disk.usage().expect("mounted");
        assert!(
            usage.total > 12 << 20 && usage.total <= 16 << 20,
            "{usage:?}"
        );
        let big = vec![0u8; 20 << 20];
        let err = fs::write(disk.mount.join("big"), &big).expect_err("20 MiB fit in 16");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(disk.usage().expect("mounted").used > 10 << 20);
        disk.release().expect("umount");
        disk.release().expect("idempotent");
        assert!(disk.usage().is_none());
        // Files survive a remount.
        disk.ensure(16, &dir.path().join("templates"))
            .expect("again");
        assert!(disk.mount.join("big").exists());
        disk.release().expect("umount");
    }
}
