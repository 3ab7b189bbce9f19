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
