//! A sandbox's network: its own namespace, a veth pair to the host, and a /30 out of the
//! server's address range (host side `.1`, sandbox side `.2`), so no bridge is shared and
//! each sandbox is a point-to-point link the host can filter on its own.
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The addresses and names of one sandbox's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Index of the /30 within the range.
    pub index: u32,
    /// The host side's address (the sandbox's gateway).
    pub host_ip: Ipv4Addr,
    /// The sandbox's address.
    pub sandbox_ip: Ipv4Addr,
    /// Host-side veth name.
    pub host_veth: String,
    /// Network namespace name (under `/run/netns`).
    pub netns: String,
}

/// Names and addresses for one server's sandboxes.
#[derive(Debug, Clone)]
pub struct NetPlan {
    range: Ipv4Net,
    tag: String,
}

impl NetPlan {
    /// A plan over `range` whose host-visible names carry `tag` (4 characters, per server).
    pub fn new(range: Ipv4Net, tag: &str) -> Self {
        NetPlan {
            range: range.trunc(),
            tag: tag.to_owned(),
        }
    }

    /// How many sandboxes fit in the range.
    pub fn capacity(&self) -> u32 {
        let host_bits = 32 - u32::from(self.range.prefix_len());
        if host_bits < 2 {
            0
        } else {
            1u32 << (host_bits - 2).min(31)
        }
    }

    /// The lowest index not in `used` whose /30 the host does not already route: another
    /// server (or anything else) on this host may use the same range, and the routing table
    /// is the one truth all of them share.
    pub fn free_index(&self, used: &[u32]) -> Option<u32> {
        let mut used = used.to_vec();
        used.extend(self.routed_indexes(&host_routes()));
        used.sort_unstable();
        let mut want = 0u32;
        for u in used {
            if u == want {
                want += 1;
            } else if u > want {
                break;
            }
        }
        (want < self.capacity()).then_some(want)
    }

    /// Indexes whose /30 overlaps one of `routes` (destination, prefix length).
    fn routed_indexes(&self, routes: &[(Ipv4Addr, u8)]) -> Vec<u32> {
        let mut out = Vec::new();
        for &(dest, len) in routes {
            let Ok(route) = Ipv4Net::new(dest, len) else {
                continue;
            };
            // A default or wide route is not a claim on our addresses; only ones inside the range.
            if len < self.range.prefix_len() || !self.range.contains(&route.network()) {
                continue;
            }
            let base = u32::from(self.range.network());
            let first = (u32::from(route.network()) - base) / 4;
            let last = (u32::from(route.broadcast()) - base) / 4;
            out.extend(first..=last);
        }
        out
    }

    /// The lease for `index`. Names derive from the index alone, so a lease can be made
    /// ahead of time (warm pool) and handed to whichever sandbox comes next.
    pub fn lease(&self, index: u32) -> Lease {
        let base = u32::from(self.range.network()) + index * 4;
        Lease {
            index,
            host_ip: Ipv4Addr::from(base + 1),
            sandbox_ip: Ipv4Addr::from(base + 2),
            // Interface names are at most 15 bytes: "wr" + tag(4) + index (<= 9 digits).
            host_veth: format!("wr{}{}", self.tag, index),
            netns: format!("warren-{}-{}", self.tag, index),
        }
    }

    /// Indexes of this server's namespaces present on the host (`/run/netns/warren-<tag>-<i>`).
    pub fn present_indexes(&self) -> Vec<u32> {
        let prefix = format!("warren-{}-", self.tag);
        std::fs::read_dir("/run/netns")
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.strip_prefix(&prefix)?.parse().ok()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Settings of the sandbox's own network stack, as Docker makes them: any port may be bound
/// and any group may ping. Root of a runc sandbox is root of its user namespace, not of the
/// network namespace (the host's user namespace owns that), so without the first it could not
/// listen on port 80, and without `CAP_NET_RAW` the second is how `ping` works.
fn namespace_sysctls(netns: &str) -> io::Result<()> {
    write_sysctls(
        netns,
        &[
            ("net/ipv4/ip_unprivileged_port_start", "0"),
            ("net/ipv4/ping_group_range", PING_GROUPS),
        ],
    )
}

/// Any group may ping.
const PING_GROUPS: &str = "0 2147483647";
/// No group may ping (the kernel's default).
const NO_PING_GROUPS: &str = "1 0";

fn write_sysctls(netns: &str, pairs: &[(&'static str, &'static str)]) -> io::Result<()> {
    let ns = std::fs::File::open(netns)?;
    let netns = netns.to_owned();
    let pairs = pairs.to_vec();
    // A thread of its own: it enters the namespace and ends, so no pooled thread is left in it.
    std::thread::spawn(move || -> io::Result<()> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        // /proc/sys/net shows the namespace of the thread that opens the file.
        for (key, value) in pairs {
            std::fs::write(format!("/proc/sys/{key}"), value)
                .map_err(|e| io::Error::other(format!("setting {key} in {netns}: {e}")))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the sysctl thread panicked"))?
}

/// IPv4 routes of the host's main table, from `/proc/net/route` (hex, little-endian).
fn host_routes() -> Vec<(Ipv4Addr, u8)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            Some((
                Ipv4Addr::from(u32::from_be(dest)),
                u32::from_be(mask).count_ones() as u8,
            ))
        })
        .collect()
}

async fn ip(args: &[&str], batch: Option<String>) -> io::Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args)
        .stdin(if batch.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::other(format!("running ip: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (batch, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).await?;
        drop(stdin);
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Lease {
    /// Path of the namespace, for the OCI config.
    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }

    /// Makes the namespace and link. On failure whatever was made is released.
    pub async fn create(&self) -> io::Result<()> {
        let res = self.try_create().await;
        if res.is_err() {
            self.release().await;
        }
        res
    }

    async fn try_create(&self) -> io::Result<()> {
        // Two `ip` processes in all: the host side (namespace included) and the inside.
        let host = format!(
            "netns add {ns}\n\
             link add {veth} type veth peer name eth0 netns {ns}\n\
             addr add {hip}/30 dev {veth}\n\
             link set {veth} up\n",
            veth = self.host_veth,
            ns = self.netns,
            hip = self.host_ip
        );
        ip(&["-batch", "-"], Some(host)).await?;
        self.address_inside(false).await
    }

    /// Puts the sandbox's address and default route back on its side of the link. gVisor's
    /// own network stack takes them off when it boots (so the host kernel answers nothing
    /// there) and, restoring a checkpoint, skips a link without them.
    pub async fn readdress(&self) -> io::Result<()> {
        let inside = format!(
            "addr replace {sip}/30 dev eth0
             link set eth0 up
             route replace default via {hip}
",
            sip = self.sandbox_ip,
            hip = self.host_ip
        );
        ip(&["-n", &self.netns, "-batch", "-"], Some(inside)).await
    }

    /// The name the sandbox end of a link made for a runc restore has in the host's namespace
    /// until CRIU moves it into the restored one (as `eth0`).
    pub fn restore_link(&self) -> String {
        format!("wp{}", &self.host_veth[2..])
    }

    /// Runc: moves the sandbox's link into the namespace of the created container whose init
    /// is `pid` (made by its runtime, in its user namespace), which then carries the lease's
    /// namespace name, and addresses it there.
    pub async fn adopt(&self, pid: u32) -> io::Result<()> {
        let pid = pid.to_string();
        ip(
            &["-n", &self.netns, "link", "set", "eth0", "netns", &pid],
            None,
        )
        .await?;
        self.attach(&pid).await?;
        self.address_inside(false).await
    }

    /// Runc, before a restore: the lease's namespace and link go (the restore makes the
    /// namespace anew) and a fresh pair waits, host side addressed, the sandbox end as
    /// [`Self::restore_link`] in the host's namespace.
    pub async fn ready_for_restore(&self) -> io::Result<()> {
        self.release().await;
        let host = format!(
            "link add {veth} type veth peer name {peer}\n\
             addr add {hip}/30 dev {veth}\n\
             link set {veth} up\n",
            veth = self.host_veth,
            peer = self.restore_link(),
            hip = self.host_ip
        );
        let res = ip(&["-batch", "-"], Some(host)).await;
        if res.is_err() {
            self.release().await;
        }
        res
    }

    /// Runc, after a restore: names the restored container's namespace (init `pid`) and puts
    /// this lease's addresses on its `eth0` (a fork's image carries its source's).
    pub async fn adopt_restored(&self, pid: u32) -> io::Result<()> {
        self.attach(&pid.to_string()).await?;
        self.address_inside(true).await
    }

    /// Gives the namespace of process `pid` this lease's namespace name: never the host's own
    /// (a pid the runtime named that has since gone and been reused by a host process).
    async fn attach(&self, pid: &str) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
        if ns(&format!("/proc/{pid}/ns/net"))? == ns("/proc/self/ns/net")? {
            return Err(io::Error::other(format!(
                "process {pid} is on the host's network, not in a sandbox's namespace"
            )));
        }
        let names = format!("netns del {ns}\nnetns attach {ns} {pid}\n", ns = self.netns);
        // `netns del` of a name not there fails the batch: only when there.
        let names = if Path::new(&self.netns_path()).exists() {
            names
        } else {
            format!("netns attach {} {pid}\n", self.netns)
        };
        ip(&["-batch", "-"], Some(names)).await
    }

    /// Addresses the sandbox side of the link and sets the namespace's sysctls.
    async fn address_inside(&self, flush: bool) -> io::Result<()> {
        let inside = format!(
            "{flush}link set lo up\n\
             addr add {sip}/30 dev eth0\n\
             link set eth0 up\n\
             route replace default via {hip}\n",
            flush = if flush { "addr flush dev eth0\n" } else { "" },
            sip = self.sandbox_ip,
            hip = self.host_ip
        );
        ip(&["-n", &self.netns, "-batch", "-"], Some(inside)).await?;
        self.after_checkpoint().await
    }

    /// Runc, just before a checkpoint: CRIU restores `ping_group_range` from inside the
    /// sandbox's user namespace, where the host's "any group" names groups it does not map and
    /// is refused, failing the restore. The kernel's default goes into the image instead, and
    /// [`Self::adopt_restored`] (or, when the checkpoint fails, [`Self::after_checkpoint`])
    /// sets the range again.
    pub async fn before_checkpoint(&self) -> io::Result<()> {
        let path = self.netns_path();
        tokio::task::spawn_blocking(move || {
            write_sysctls(&path, &[("net/ipv4/ping_group_range", NO_PING_GROUPS)])
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Sets the namespace's sysctls ([`namespace_sysctls`]); also what undoes
    /// [`Self::before_checkpoint`] on a sandbox that goes on running.
    pub async fn after_checkpoint(&self) -> io::Result<()> {
        let path = self.netns_path();
        tokio::task::spawn_blocking(move || namespace_sysctls(&path))
            .await
            .map_err(io::Error::other)?
    }

    /// Ends the host's TCP connections to the sandbox's address (`ss -K`, the kernel's
    /// SOCK_DESTROY). A sandbox on gVisor's own network stack ends without closing its side of
    /// them, so a pooled connection (the agent client's, the proxy's) would stay open on the
    /// host and, once the address serves the next sandbox or a restored one, carry a request
    /// into a stack that answers it with a reset.
    pub async fn cut_host_connections(&self) {
        let out = Command::new("ss")
            .args(["-K", "-t", "-n", "dst", &self.sandbox_ip.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::warn!(
                "ss -K dst {}: {}",
                self.sandbox_ip,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => tracing::warn!("running ss: {e}"),
        }
    }

    /// Removes the link and namespace; idempotent, never fails on what is already gone.
    pub async fn release(&self) {
        // The second: a link readied for a runc restore that never took it.
        for link in [self.host_veth.clone(), self.restore_link()] {
            if Path::new("/sys/class/net").join(&link).exists() {
                let _ = ip(&["link", "del", &link], None).await;
            }
        }
        if Path::new(&self.netns_path()).exists() {
            let _ = ip(&["netns", "del", &self.netns], None).await;
        }
    }

    /// Whether both the namespace and the host veth exist (a complete lease to reuse).
    pub fn exists(&self) -> bool {
        Path::new(&self.netns_path()).exists()
            && Path::new("/sys/class/net").join(&self.host_veth).exists()
    }

    /// Whether anything of it is still on the host.
    pub fn leftovers(&self) -> Vec<String> {
        let mut v = Vec::new();
        for link in [self.host_veth.clone(), self.restore_link()] {
            if Path::new("/sys/class/net").join(&link).exists() {
                v.push(format!("veth {link}"));
            }
        }
        if Path::new(&self.netns_path()).exists() {
            v.push(format!("netns {}", self.netns));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_disjoint_30s() {
        let plan = NetPlan::new("10.77.0.0/16".parse().expect("net"), "abcd");
        assert_eq!(plan.capacity(), 16384);
        let a = plan.lease(0);
        let b = plan.lease(1);
        assert_eq!(a.host_ip, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(a.sandbox_ip, Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(b.host_ip, Ipv4Addr::new(10, 77, 0, 5));
        assert!(plan.lease(16383).host_veth.len() <= 15);
        let routed = plan.routed_indexes(&[
            (Ipv4Addr::new(10, 77, 0, 4), 30),
            (Ipv4Addr::new(0, 0, 0, 0), 0),
            (Ipv4Addr::new(10, 0, 0, 0), 8),
            (Ipv4Addr::new(10, 77, 1, 0), 24),
        ]);
        assert_eq!(routed[0], 1);
        assert_eq!(routed.len(), 1 + 64);
        assert!(routed.contains(&64) && routed.contains(&127));
    }
}
