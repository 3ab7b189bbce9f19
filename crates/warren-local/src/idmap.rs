//! ID-mapped views of image layers for sandboxes with a user namespace: a layer's files, owned
//! by uid 0 on disk, appear owned by the sandbox's host root ([`USERNS_HOST_BASE`]) through
//! the mapped view, so root inside owns its image as before while the layers stay shared,
//! unchanged, with gVisor sandboxes. The overlay is mounted over these views; its upper
//! directory is not mapped, so what a sandbox writes is owned by unprivileged host uids.
#![allow(unsafe_code)]

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

use crate::confinement::{USERNS_HOST_BASE, USERNS_SIZE};

/// A user namespace holding the sandboxes' mapping, kept open to stamp mounts with it.
#[derive(Debug)]
pub struct IdMap {
    userns: OwnedFd,
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

impl IdMap {
    /// Makes the namespace: a child (`unshare -U`) enters a new one, we write its maps, keep
    /// a descriptor of it and end the child. No unsafe fork in this multi-threaded process.
    pub fn new() -> io::Result<Self> {
        let mut child = Command::new("unshare")
            .args(["--user", "sleep", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::other(format!("running unshare (util-linux): {e}")))?;
        let res = Self::adopt(child.id());
        let _ = child.kill();
        let _ = child.wait();
        res
    }

    fn adopt(pid: u32) -> io::Result<Self> {
        let own = fs::read_link("/proc/self/ns/user")?;
        let ns = format!("/proc/{pid}/ns/user");
        let deadline = Instant::now() + Duration::from_secs(5);
        // `unshare` enters the namespace after it starts: wait until it has.
        while fs::read_link(&ns)? == own {
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "unshare --user did not make a user namespace",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let map = format!("0 {USERNS_HOST_BASE} {USERNS_SIZE}\n");
        fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
        fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        Ok(IdMap {
            userns: fs::File::open(&ns)?.into(),
        })
    }

    /// A detached, ID-mapped clone of the directory tree at `dir`, to name by
    /// `/proc/self/fd/N` as an overlay layer while the descriptor is open.
    pub fn mapped_view(&self, dir: &Path) -> io::Result<OwnedFd> {
        let tree = open_tree(
            rustix::fs::CWD,
            dir,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(|e| io::Error::other(format!("open_tree {}: {e}", dir.display())))?;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: self.userns.as_raw_fd() as u64,
        };
        // SAFETY: `tree` is an open mount descriptor, the path is a NUL-terminated empty
        // string (AT_EMPTY_PATH acts on the descriptor itself), and `attr` is a live
        // `struct mount_attr` whose size we pass; the kernel only reads it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::other(format!(
                "ID-mapping {} (mount_setattr MOUNT_ATTR_IDMAP; needs Linux >= 5.12 and a \
                 filesystem that supports ID-mapped mounts): {e}",
                dir.display()
            )));
        }
        Ok(tree)
    }
}

impl IdMap {
    /// Mounts an ID-mapped view of `dir` at `target` (an existing directory): what root of a
    /// sandbox writes there is stored as uid 0, as gVisor sandboxes' root writes it.
    pub fn mount_mapped(&self, dir: &Path, target: &Path) -> io::Result<()> {
        let tree = self.mapped_view(dir)?;
        move_mount(
            &tree,
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| io::Error::other(format!("move_mount to {}: {e}", target.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    // Needs root, as every test of this crate that touches mounts.
    fn a_mapped_view_shows_root_files_as_the_sandbox_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("f"), "x").expect("write");
        let map = IdMap::new().expect("user namespace");
        let view = map.mapped_view(dir.path()).expect("mapped view");
        let through = format!("/proc/self/fd/{}/f", view.as_raw_fd());
        let meta = fs::metadata(&through).expect("stat through the view");
        assert_eq!(meta.uid(), USERNS_HOST_BASE);
        assert_eq!(fs::metadata(dir.path().join("f")).expect("stat").uid(), 0);
    }
}
