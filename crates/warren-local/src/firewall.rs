//! Sandbox isolation with nftables: one `inet` table per server (`warren_<tag>`), and in it one
//! chain per network lease (`sb_<index>`) that every packet a sandbox sends is checked against.
//!
//! The layout, and why:
//! - `forward` hands a packet from a sandbox veth to its lease's chain through a verdict map
//!   keyed by interface name, so the per-packet cost is one map lookup however many sandboxes
//!   there are. A veth with no chain (a warm lease, or one being set up) falls through to a
//!   drop: nothing leaves a sandbox before its policy is in place.
//! - Nothing new is forwarded *into* a sandbox; only replies to what it started. The server
//!   reaches agents and previews from the host itself (the output path), which this leaves alone.
//! - `input` drops everything a sandbox sends to the host but replies, so no host port (the API
//!   port among them) is reachable from inside, and (reverse-path check) anything whose source
//!   does not route back through the veth it came in on.
//! - A lease's chain drops a spoofed source, IPv6, metadata addresses (link-local and two
//!   clouds' others; name servers excepted, on port 53) and the whole
//!   sandbox range, then applies the egress policy. It is checked for every packet, not just
//!   the first of a connection, so narrowing a policy also cuts connections already open.
//! - `postrouting` masquerades what leaves the host from the range, whatever the interface.
//!
//! Every change is one `nft -f` transaction, so a policy is replaced atomically.
use std::io;
use std::net::Ipv4Addr;
use std::process::Stdio;

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::egress::{addresses, Names};
pub use crate::egress::{EgressPolicy, EgressRules};
use crate::net::Lease;

/// Never reachable from a sandbox: link-local (AWS, GCP, OpenStack metadata), Alibaba's
/// metadata address and Azure's wireserver.
const METADATA: [&str; 3] = ["169.254.0.0/16", "100.100.100.200/32", "168.63.129.16/32"];

/// One server's nftables table.
#[derive(Debug, Clone)]
pub struct Firewall {
    table: String,
    ifprefix: String,
    range: Ipv4Net,
    nameservers: Vec<Ipv4Addr>,
    names: Names,
    // Held across each change of a lease's chain together with what `names` remembers of it,
    // so a refresh cannot interleave with a new policy or a removal.
    changing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Runs `nft -f -` with `script` as one transaction.
async fn nft(script: &str) -> io::Result<String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::other(format!("running nft (apt-get install nftables): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Firewall {
    /// The table of the server whose resources carry `tag`, for sandboxes in `range`, whose
    /// `resolv.conf` names `nameservers`.
    pub fn new(tag: &str, range: Ipv4Net, nameservers: Vec<Ipv4Addr>) -> Self {
        Firewall {
            table: format!("warren_{tag}"),
            ifprefix: format!("wr{tag}"),
            range: range.trunc(),
            names: Names::new(nameservers.clone()),
            changing: std::sync::Arc::default(),
            nameservers,
        }
    }

    /// The table's name (family `inet`).
    pub fn table(&self) -> &str {
        &self.table
    }

    fn chain(index: u32) -> String {
        format!("sb_{index}")
    }

    /// Makes the table and its base chains, replacing the base rules but keeping every
    /// lease's chain (sandboxes outlive the server), and turns on IPv4 forwarding.
    pub async fn setup(&self) -> io::Result<()> {
        let t = &self.table;
        let p = &self.ifprefix;
        let range = self.range;
        let script = format!(
            "add table inet {t}\n\
             add map inet {t} leases {{ type ifname : verdict ; }}\n\
             add chain inet {t} forward {{ type filter hook forward priority -1 ; policy accept ; }}\n\
             add chain inet {t} input {{ type filter hook input priority -1 ; policy accept ; }}\n\
             add chain inet {t} postrouting {{ type nat hook postrouting priority srcnat ; }}\n\
             flush chain inet {t} forward\n\
             flush chain inet {t} input\n\
             flush chain inet {t} postrouting\n\
             add rule inet {t} forward iifname \"{p}*\" iifname vmap @leases\n\
             add rule inet {t} forward iifname \"{p}*\" drop\n\
             add rule inet {t} forward oifname \"{p}*\" ct state established,related accept\n\
             add rule inet {t} forward oifname \"{p}*\" drop\n\
             add rule inet {t} input iifname \"{p}*\" fib saddr . iif oif missing drop\n\
             add rule inet {t} input iifname \"{p}*\" ct state established,related accept\n\
             add rule inet {t} input iifname \"{p}*\" drop\n\
             add rule inet {t} postrouting iifname \"{p}*\" ip saddr {range} oifname != \"{p}*\" masquerade\n"
        );
        nft(&script).await?;
        // Egress is routed through the host; without forwarding nothing would leave.
        let path = "/proc/sys/net/ipv4/ip_forward";
        if std::fs::read_to_string(path)
            .map(|s| s.trim() != "1")
            .unwrap_or(true)
        {
            std::fs::write(path, "1")
                .map_err(|e| io::Error::other(format!("enabling {path}: {e}")))?;
            tracing::info!("enabled net.ipv4.ip_forward (sandbox egress is routed by the host)");
        }
        Ok(())
    }

    /// The rules of one lease's chain for `policy`, its domain names at `resolved`.
    fn rules(&self, lease: &Lease, policy: &EgressPolicy, resolved: &[Ipv4Addr]) -> Vec<String> {
        let mut r = vec![
            "meta nfproto ipv6 drop".to_owned(),
            format!("ip saddr != {} drop", lease.sandbox_ip),
        ];
        // Name servers first: a cloud's resolver may itself be link-local (GCP's is
        // 169.254.169.254), and names must resolve under every policy but deny.
        if *policy != EgressPolicy::Deny && !self.nameservers.is_empty() {
            let ns = join(self.nameservers.iter());
            r.push(format!("ip daddr {{ {ns} }} udp dport 53 accept"));
            r.push(format!("ip daddr {{ {ns} }} tcp dport 53 accept"));
        }
        r.push(format!("ip daddr {{ {} }} drop", METADATA.join(", ")));
        r.push(format!("ip daddr {} drop", self.range));
        // Overlapping networks would make nft refuse a set.
        let set = |nets: &[Ipv4Net], verdict: &str| {
            let nets = Ipv4Net::aggregate(&nets.to_vec());
            (!nets.is_empty()).then(|| format!("ip daddr {{ {} }} {verdict}", join(nets.iter())))
        };
        match policy {
            EgressPolicy::Allow => r.push("accept".to_owned()),
            EgressPolicy::Deny => {}
            EgressPolicy::Only(nets) => r.extend(set(nets, "accept")),
            EgressPolicy::Rules(rules) => {
                let mut allow = rules.allow.clone();
                allow.extend(resolved.iter().map(|a| Ipv4Net::from(*a)));
                r.extend(set(&allow, "accept"));
                r.extend(set(&rules.deny, "drop"));
                if !rules.deny_rest {
                    r.push("accept".to_owned());
                }
            }
        }
        r.push("drop".to_owned());
        r
    }

    /// Puts `policy` in force for the sandbox on `lease`, replacing whatever was there, in one
    /// transaction.
    pub async fn apply(&self, lease: &Lease, policy: &EgressPolicy) -> io::Result<()> {
        let resolved = self.names.resolve(policy.names(), None).await;
        let _changing = self.changing.lock().await;
        self.apply_resolved(lease, policy, &addresses(&resolved))
            .await?;
        self.names.remember(lease, policy, resolved);
        Ok(())
    }

    /// Resolves the domain names of every policy in force again, and rewrites the rules of
    /// those whose addresses changed (and that are still in force). Returns how many.
    pub async fn refresh_names(&self) -> usize {
        let mut changed = 0;
        for named in self.names.named() {
            let resolved = self
                .names
                .resolve(named.policy.names(), Some(&named.resolved))
                .await;
            if resolved == named.resolved {
                continue;
            }
            let _changing = self.changing.lock().await;
            if !self.names.still(named.lease.index, &named.policy) {
                continue;
            }
            match self
                .apply_resolved(&named.lease, &named.policy, &addresses(&resolved))
                .await
            {
                Ok(()) => {
                    self.names.remember(&named.lease, &named.policy, resolved);
                    changed += 1;
                }
                Err(e) => tracing::warn!("egress: renewing lease {}: {e}", named.lease.index),
            }
        }
        changed
    }

    async fn apply_resolved(
        &self,
        lease: &Lease,
        policy: &EgressPolicy,
        resolved: &[Ipv4Addr],
    ) -> io::Result<()> {
        let t = &self.table;
        let c = Self::chain(lease.index);
        let mut script = format!("add chain inet {t} {c}\nflush chain inet {t} {c}\n");
        for rule in self.rules(lease, policy, resolved) {
            script.push_str(&format!("add rule inet {t} {c} {rule}\n"));
        }
        // The element is the same for an index whatever the sandbox, so adding it is idempotent.
        script.push_str(&format!(
            "add element inet {t} leases {{ \"{}\" : jump {c} }}\n",
            lease.host_veth
        ));
        nft(&script).await.map(drop)
    }

    /// Removes a lease's chain and map entry; idempotent.
    pub async fn remove(&self, lease: &Lease) -> io::Result<()> {
        let _changing = self.changing.lock().await;
        self.names.forget(lease.index);
        let t = &self.table;
        let c = Self::chain(lease.index);
        if !self.table_exists().await {
            return Ok(());
        }
        // Added first so the deletes cannot fail on something already gone.
        let script = format!(
            "add chain inet {t} {c}\n\
             add element inet {t} leases {{ \"{v}\" : jump {c} }}\n\
             delete element inet {t} leases {{ \"{v}\" }}\n\
             delete chain inet {t} {c}\n",
            v = lease.host_veth
        );
        nft(&script).await.map(drop)
    }

    async fn table_exists(&self) -> bool {
        nft(&format!("list table inet {}\n", self.table))
            .await
            .is_ok()
    }

    /// Lease indexes that have a chain in the table.
    pub async fn lease_chains(&self) -> Vec<u32> {
        let Ok(text) = nft(&format!("list table inet {}\n", self.table)).await else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("chain sb_")?
                    .trim_end_matches(" {")
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// The rules in force for a lease, as nft prints them (empty when it has none).
    pub async fn lease_rules(&self, index: u32) -> Vec<String> {
        let script = format!("list chain inet {} {}\n", self.table, Self::chain(index));
        let Ok(text) = nft(&script).await else {
            return Vec::new();
        };
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("table") && !l.starts_with("chain"))
            .filter(|l| *l != "}")
            .map(str::to_owned)
            .collect()
    }

    /// Removes the whole table (when the server has no sandboxes left); idempotent.
    pub async fn remove_table(&self) {
        // Tried a few times: an nft call may fail while other transactions run on the host
        // (other servers' tables), and a failed `nft list` reads as no table, so absence is
        // believed only when seen twice. A table left behind outlives the server.
        let mut absent = 0;
        for _ in 0..6 {
            if !self.table_exists().await {
                absent += 1;
                if absent == 2 {
                    return;
                }
            } else if let Err(e) = nft(&format!("delete table inet {}\n", self.table)).await {
                tracing::warn!("removing nftables table {}: {e}", self.table);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Whether the table is on the host.
    pub async fn present(&self) -> bool {
        self.table_exists().await
    }
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// Name servers (IPv4) of a `resolv.conf` text.
pub fn nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NetPlan;

    #[test]
    fn rules_per_policy() {
        let range: Ipv4Net = "10.77.0.0/16".parse().expect("net");
        let fw = Firewall::new("abcd", range, vec![Ipv4Addr::new(10, 255, 255, 53)]);
        let lease = NetPlan::new(range, "abcd").lease(3);
        let allow = fw.rules(&lease, &EgressPolicy::Allow, &[]);
        assert_eq!(allow[1], "ip saddr != 10.77.0.14 drop");
        assert!(allow.contains(&"ip daddr 10.77.0.0/16 drop".to_owned()));
        let dns = allow
            .iter()
            .position(|r| r.contains("dport 53"))
            .expect("dns rule");
        let meta = allow
            .iter()
            .position(|r| r.contains("169.254.0.0/16"))
            .expect("meta");
        assert!(dns < meta, "name servers come before the link-local drop");
        assert_eq!(allow.last().map(String::as_str), Some("drop"));
        assert_eq!(allow[allow.len() - 2], "accept");
        let deny = fw.rules(&lease, &EgressPolicy::Deny, &[]);
        assert!(!deny.iter().any(|r| r.contains("accept")));
        let overlapping = fw.rules(
            &lease,
            &EgressPolicy::Only(vec![
                "10.0.0.0/8".parse().expect("net"),
                "10.1.0.0/16".parse().expect("net"),
            ]),
            &[],
        );
        assert!(overlapping.contains(&"ip daddr { 10.0.0.0/8 } accept".to_owned()));
        let only = fw.rules(
            &lease,
            &EgressPolicy::Only(vec!["198.18.0.0/30".parse().expect("net")]),
            &[],
        );
        assert!(only.contains(&"ip daddr { 198.18.0.0/30 } accept".to_owned()));
        assert!(only.contains(&"ip daddr { 10.255.255.53 } udp dport 53 accept".to_owned()));
        // E2B's rules: allowOut (with its names' addresses) over denyOut, the rest open.
        let rules = EgressPolicy::Rules(EgressRules {
            allow: vec!["198.18.0.4/30".parse().expect("net")],
            allow_names: vec!["example.test".into()],
            deny: vec!["198.18.0.0/24".parse().expect("net")],
            deny_rest: false,
        });
        let r = fw.rules(&lease, &rules, &[Ipv4Addr::new(198, 18, 0, 9)]);
        let tail: Vec<&str> = r.iter().rev().take(4).rev().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "ip daddr { 198.18.0.4/30, 198.18.0.9/32 } accept",
                "ip daddr { 198.18.0.0/24 } drop",
                "accept",
                "drop"
            ]
        );
        let closed = EgressPolicy::Rules(EgressRules {
            deny_rest: true,
            ..EgressRules::default()
        });
        assert!(!fw
            .rules(&lease, &closed, &[])
            .contains(&"accept".to_owned()));
    }

    #[test]
    fn parses_nameservers() {
        let ns =
            nameservers("# x\nnameserver 10.0.0.1\nnameserver ::1\nsearch a\nnameserver 1.1.1.1\n");
        assert_eq!(
            ns,
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(1, 1, 1, 1)]
        );
    }
}
