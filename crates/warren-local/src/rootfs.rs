//! A sandbox's root filesystem: an overlay of the image's layers (read-only, shared) under the
//! sandbox's own upper directory. Creating one copies nothing. The upper directory lives in
//! the sandbox's directory under the 0700 data dir; the merged tree is mounted where a runc
//! sandbox's user namespace can reach it (see `LocalBackend::rootfs_dir`).
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use nix::mount::{MntFlags, MsFlags};

use crate::idmap::IdMap;

/// The overlay of one sandbox: upper and work under `<data>/sandboxes/<id>/`.
#[derive(Debug, Clone)]
pub struct OverlayMount {
    /// The image's layer trees, bottom first.
    pub lowers: Vec<PathBuf>,
    /// The sandbox's writes.
    pub upper: PathBuf,
    /// overlayfs's scratch directory.
    pub work: PathBuf,
    /// Where the merged tree is mounted.
    pub merged: PathBuf,
}

impl OverlayMount {
    /// The overlay for a sandbox directory over `lowers` (bottom first), mounted at `merged`.
    pub fn new(sandbox_dir: &Path, merged: PathBuf, lowers: &[PathBuf]) -> Self {
        OverlayMount {
            lowers: lowers.to_vec(),
            upper: sandbox_dir.join("upper"),
            work: sandbox_dir.join("work"),
            merged,
        }
    }

    /// Mounts it (creating the directories); a no-op when already mounted. With `idmap` the
    /// layers are seen through ID-mapped views, and the upper directory's files belong to
    /// `owner` (the sandbox's root on the host): a sandbox's upper directory made under
    /// another owner (before user namespaces, or another mapping) is shifted to it first.
    pub fn mount(&self, idmap: Option<&IdMap>, owner: u32) -> io::Result<()> {
        if is_mounted(&self.merged) {
            return Ok(());
        }
        for d in [&self.upper, &self.work, &self.merged] {
            fs::create_dir_all(d)?;
        }
        let was = std::os::unix::fs::MetadataExt::uid(&fs::symlink_metadata(&self.upper)?);
        if was != owner {
            shift_owner(&self.upper, was, owner)?;
        }
        if self.lowers.is_empty() {
            return Err(io::Error::other(
                "an overlay needs at least one image layer",
            ));
        }
        // Each layer is named by an open descriptor (`/proc/self/fd/N`) rather than its path:
        // the options must fit in one page, and 127 layer paths under a deep data dir do not.
        let fds = self
            .lowers
            .iter()
            .map(|l| match idmap {
                Some(map) => map.mapped_view(l),
                None => fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                    .open(l)
                    .map(Into::into)
                    .map_err(|e| io::Error::other(format!("image layer {}: {e}", l.display()))),
            })
            .collect::<io::Result<Vec<std::os::fd::OwnedFd>>>()?;
        // overlayfs lists the top layer first.
        let lowerdir = fds
            .iter()
            .rev()
            .map(|f| format!("/proc/self/fd/{}", f.as_raw_fd()))
            .collect::<Vec<_>>()
            .join(":");
        let opts = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            self.upper.display(),
            self.work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &self.merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| io::Error::other(format!("mount overlay at {}: {e}", self.merged.display())))
    }

    /// Unmounts it (idempotent).
    pub fn release(&self) -> io::Result<()> {
        if !is_mounted(&self.merged) {
            return Ok(());
        }
        nix::mount::umount2(&self.merged, MntFlags::MNT_DETACH)
            .map_err(|e| io::Error::other(format!("umount {}: {e}", self.merged.display())))
    }
}

/// Moves every file under `dir` (itself included) whose owner lies in the 65536 ids from
/// `from` to the same place from `to`, groups likewise: the upper directory of a sandbox that
/// ran without the user namespace (owned from 0) or under it, when it changes runtime mapping.
fn shift_owner(dir: &Path, from: u32, to: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let size = crate::confinement::USERNS_SIZE;
    let shift = |id: u32| (id.wrapping_sub(from) < size).then(|| to + (id - from));
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.map_err(io::Error::other)?;
        let meta = entry.metadata().map_err(io::Error::other)?;
        let (uid, gid) = (shift(meta.uid()), shift(meta.gid()));
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(entry.path(), uid, gid)?;
            // chown clears setuid/setgid bits; the sandbox's files keep the mode they had.
            if !meta.file_type().is_symlink() && meta.mode() & 0o6000 != 0 {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(meta.mode()))?;
            }
        }
    }
    Ok(())
}

/// Whether `path` is a mount point, from `/proc/self/mountinfo`.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want)
}

/// Mount points under `prefix` (for leak checks).
pub fn mounts_under(prefix: &Path) -> Vec<String> {
    let want = prefix.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|mp| mp.starts_with(&want))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo octal.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
