//! A sandbox's root filesystem: an overlay of the image's layers (read-only, shared) under the
//! sandbox's own upper directory. Creating one copies nothing.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use nix::mount::{MntFlags, MsFlags};

/// The overlay of one sandbox, under `<data>/sandboxes/<id>/`.
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
    /// The overlay for a sandbox directory over `lowers` (bottom first).
    pub fn new(sandbox_dir: &Path, lowers: &[PathBuf]) -> Self {
        OverlayMount {
            lowers: lowers.to_vec(),
            upper: sandbox_dir.join("upper"),
            work: sandbox_dir.join("work"),
            merged: sandbox_dir.join("rootfs"),
        }
    }

    /// Mounts it (creating the directories); a no-op when already mounted.
    pub fn mount(&self) -> io::Result<()> {
        if is_mounted(&self.merged) {
            return Ok(());
        }
        for d in [&self.upper, &self.work, &self.merged] {
            fs::create_dir_all(d)?;
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
            .map(|l| {
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                    .open(l)
                    .map_err(|e| io::Error::other(format!("image layer {}: {e}", l.display())))
            })
            .collect::<io::Result<Vec<fs::File>>>()?;
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
