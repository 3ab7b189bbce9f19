//! Facts about the host and the small fixes made to it at setup: which tools are on PATH, the
//! open-file limit, the `resolv.conf` sandboxes get.
use std::fs;
use std::net::Ipv4Addr;

/// Whether `bin` is on PATH.
pub fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// Sandboxes inherit the open-file limit the bundle names, which may not exceed ours: as root
/// we lift ours to Docker's 1048576 (or the kernel's `nr_open`, if lower).
pub fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1_048_576);
    let want = nr_open.min(1_048_576);
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
            tracing::debug!("could not raise RLIMIT_NOFILE to {want}");
        }
    }
}

/// The `resolv.conf` sandboxes get: `dns` when given; else the host's, unless it names only
/// loopback resolvers (systemd-resolved's stub, unreachable from a sandbox), in which case
/// systemd-resolved's list of upstream servers; else a public resolver.
pub fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    if !dns.is_empty() {
        return dns.iter().map(|a| format!("nameserver {a}\n")).collect();
    }
    let usable = |text: &String| {
        text.lines().any(|l| {
            l.trim()
                .strip_prefix("nameserver")
                .and_then(|a| a.trim().parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| !a.is_loopback())
        })
    };
    ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .find(usable)
        .unwrap_or_else(|| "nameserver 1.1.1.1\n".to_owned())
}

/// Closes the data dir to other host users, fixing trees made by older servers: the dir and
/// each directory in it 0700; its own files (database, keys) and each sandbox's logs and
/// `config.json` (which hold output, env and tokens) 0600. Image layers and sandboxes' own
/// files keep their modes: sandboxes need them, and nothing reaches them through a 0700 dir.
/// Makes `rootfs_root`, where merged root filesystems are mounted, open to root and to the
/// runc sandboxes' root group only.
pub fn private_dirs(
    data_dir: &std::path::Path,
    rootfs_root: &std::path::Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let chmod =
        |p: &std::path::Path, mode: u32| fs::set_permissions(p, fs::Permissions::from_mode(mode));
    chmod(data_dir, 0o700)?;
    for entry in fs::read_dir(data_dir)?.flatten() {
        let kind = entry.file_type()?;
        if kind.is_dir() {
            chmod(&entry.path(), 0o700)?;
        } else if kind.is_file() {
            chmod(&entry.path(), 0o600)?;
        }
    }
    for sandbox in fs::read_dir(data_dir.join("sandboxes"))?.flatten() {
        let dir = sandbox.path();
        chmod(&dir, 0o700)?;
        for file in [
            "stdout.log",
            "stderr.log",
            "bundle/config.json",
            "bundle/token",
        ] {
            match chmod(
                &dir.join(file),
                if file.ends_with("token") {
                    0o400
                } else {
                    0o600
                },
            ) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    if let Some(parent) = rootfs_root.parent() {
        fs::create_dir_all(parent)?;
        chmod(parent, 0o711)?;
    }
    fs::create_dir_all(rootfs_root)?;
    std::os::unix::fs::chown(
        rootfs_root,
        Some(0),
        Some(crate::confinement::USERNS_HOST_BASE),
    )?;
    chmod(rootfs_root, 0o710)
}

/// The kernel's limit of process ids (and so of threads) host-wide, raised to the 64-bit
/// most (as systemd does on most distributions) when below it: a gVisor sandbox holds some
/// thirty threads, so the old default of 32768 ends the host's room near a thousand
/// sandboxes, whatever their memory. Each sandbox's own are bounded by its `pids` limit.
/// Returns whether it changed anything.
pub fn raise_pid_max() -> std::io::Result<bool> {
    // The 64-bit kernel's most, and systemd's own setting on most distributions.
    const MAX: u64 = 4_194_304;
    let now: u64 = fs::read_to_string("/proc/sys/kernel/pid_max")?
        .trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if now >= MAX {
        return Ok(false);
    }
    fs::write("/proc/sys/kernel/pid_max", MAX.to_string())?;
    Ok(true)
}

/// The kernel's limit of open files host-wide, raised to the largest value (as systemd does
/// on most distributions) when below it. Each open file is charged to its sandbox's memory
/// cgroup, so `memory_mb` bounds what one sandbox may hold; with the default limit (a tenth
/// of RAM's worth) two or three sandboxes within their memory could fill the table for the
/// whole host. Returns whether it changed anything.
pub fn raise_file_max() -> std::io::Result<bool> {
    const MAX: &str = "9223372036854775807";
    let now = fs::read_to_string("/proc/sys/fs/file-max")?;
    if now.trim() == MAX {
        return Ok(false);
    }
    fs::write("/proc/sys/fs/file-max", MAX)?;
    Ok(true)
}
