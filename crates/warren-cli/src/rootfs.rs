//! Root filesystems made on this machine: a tar of a directory (what `image import` sends),
//! and a minimal busybox tree from the host's static busybox (for demos, tests and bench).
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Where Debian's busybox-static puts its binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Writes a tar of `dir`'s contents (paths relative to it, symlinks kept as links) to `out`.
pub fn tar_dir(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(file));
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    b.append_dir_all(".", dir)
        .with_context(|| format!("archiving {}", dir.display()))?;
    b.into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .context("finishing the tar")?;
    Ok(())
}

/// Makes a busybox root filesystem in `dir`: `/bin/busybox`, a link per applet, `/etc/passwd`.
pub fn busybox_tree(dir: &Path) -> anyhow::Result<()> {
    let busybox = Path::new(HOST_BUSYBOX);
    if !busybox.is_file() {
        bail!("{HOST_BUSYBOX} not found: apt-get install busybox-static");
    }
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .context("running busybox --list-full")?;
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "proc", "sys", "dev",
    ] {
        fs::create_dir_all(dir.join(d))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::copy(busybox, dir.join("bin/busybox")).context("copying busybox")?;
    for applet in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path: PathBuf = dir.join(applet);
        if applet == "bin/busybox" || path.exists() {
            continue;
        }
        symlink("/bin/busybox", &path).with_context(|| format!("linking {}", path.display()))?;
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
    )?;
    Ok(())
}
