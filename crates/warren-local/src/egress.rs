//! What a sandbox may reach outside ([`EgressPolicy`]), and the names in a policy: E2B's
//! `allowOut` may name domains, which the firewall cannot match, so they are resolved (with
//! the sandbox's own name servers, the ones its `resolv.conf` names) to the addresses it lets
//! through, and resolved again now and then so the rules follow the records.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use tokio::sync::OnceCell;

use crate::net::Lease;

pub use warren_backend::{EgressPolicy, EgressRules};

/// How long a resolution may take before the name counts as resolving to nothing.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Each name's addresses (none for a name that did not resolve).
pub(crate) type Resolved = std::collections::BTreeMap<String, Vec<Ipv4Addr>>;

/// The addresses of every name, sorted, without repeats.
pub(crate) fn addresses(resolved: &Resolved) -> Vec<Ipv4Addr> {
    let mut all: Vec<Ipv4Addr> = resolved.values().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// A policy in force that names domains, with the addresses they had when it was applied.
#[derive(Debug, Clone)]
pub(crate) struct Named {
    pub lease: Lease,
    pub policy: EgressPolicy,
    pub resolved: Resolved,
}

/// The resolver of the sandboxes' name servers, and the policies whose names it keeps current.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    nameservers: Vec<Ipv4Addr>,
    resolver: Arc<OnceCell<TokioResolver>>,
    in_force: Arc<Mutex<HashMap<u32, Named>>>,
}

impl Names {
    pub fn new(nameservers: Vec<Ipv4Addr>) -> Self {
        Names {
            nameservers,
            resolver: Arc::default(),
            in_force: Arc::default(),
        }
    }

    async fn resolver(&self) -> &TokioResolver {
        self.resolver
            .get_or_init(|| async {
                let ips: Vec<IpAddr> = self.nameservers.iter().copied().map(IpAddr::V4).collect();
                let group = NameServerConfigGroup::from_ips_clear(&ips, 53, true);
                let mut opts = ResolverOpts::default();
                opts.timeout = RESOLVE_TIMEOUT;
                opts.attempts = 2;
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), group),
                    TokioConnectionProvider::default(),
                )
                .with_options(opts)
                .build()
            })
            .await
    }

    /// The IPv4 addresses of each of `names`, looked up at once (each lookup bounded by the
    /// resolver's timeout); a name that does not resolve gets what `before` had for it (none
    /// at first), so a passing DNS failure does not cut connections that work.
    pub async fn resolve(&self, names: &[String], before: Option<&Resolved>) -> Resolved {
        if names.is_empty() {
            return Resolved::new();
        }
        let resolver = self.resolver().await;
        let lookups = names.iter().map(|name| async move {
            // A trailing dot: the name as given, never one of a search list.
            let fqdn = format!("{}.", name.trim_end_matches('.'));
            let found = match resolver.ipv4_lookup(fqdn.as_str()).await {
                Ok(found) => Some(found.iter().map(|a| a.0).collect::<Vec<_>>()),
                Err(e) => {
                    tracing::warn!("egress: {name} did not resolve: {e}");
                    None
                }
            };
            (name.clone(), found)
        });
        futures::future::join_all(lookups)
            .await
            .into_iter()
            .map(|(name, found)| {
                let addrs = found
                    .or_else(|| before.and_then(|b| b.get(&name).cloned()))
                    .unwrap_or_default();
                (name, addrs)
            })
            .collect()
    }

    fn in_force(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Named>> {
        self.in_force.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes what is now in force for a lease (forgotten when it names no domains).
    pub fn remember(&self, lease: &Lease, policy: &EgressPolicy, resolved: Resolved) {
        let mut map = self.in_force();
        if policy.names().is_empty() {
            map.remove(&lease.index);
        } else {
            map.insert(
                lease.index,
                Named {
                    lease: lease.clone(),
                    policy: policy.clone(),
                    resolved,
                },
            );
        }
    }

    pub fn forget(&self, index: u32) {
        self.in_force().remove(&index);
    }

    /// Whether `policy` is still the one in force on lease `index` (a refresh must not put back
    /// a policy replaced or removed while it resolved).
    pub fn still(&self, index: u32, policy: &EgressPolicy) -> bool {
        self.in_force()
            .get(&index)
            .is_some_and(|n| n.policy == *policy)
    }

    /// The policies in force that name domains.
    pub fn named(&self) -> Vec<Named> {
        self.in_force().values().cloned().collect()
    }
}
